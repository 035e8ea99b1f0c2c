// Child: the floor of a lock written in JavaScript alone, as the counter rows measure it:
// a compare-and-swap lock on an int32 of a shared segment with exponential backoff (a
// doubling delay loop between probes, capped) and no sleeping at all. Increments the
// int32 counter beside it until it reaches `limit` (racing the other children) or `each`
// times; returns its increments. Warms up contended on a shared word first, as the Lock
// children do (./warmup.mjs).
import { revive } from '../../dist/index.js'
import { serve } from './serve.mjs'
import { meet, WARMUP_AREA, warmupLimit } from './warmup.mjs'
/** Longest delay between two probes, in loop iterations. */
const MAX_DELAY = 1024

let sink = 0

/**
 * @param {Int32Array} a
 * @param {number} w - index of the lock word
 */
function lock(a, w) {
  let delay = 1
  while (Atomics.compareExchange(a, w, 0, 1) !== 0) {
    let x = 0
    for (let k = 0; k < delay; k++) x = (x * 31 + k) | 0
    sink ^= x
    if (delay < MAX_DELAY) delay *= 2
  }
}

/**
 * @param {Int32Array} a
 * @param {number} w
 */
function unlock(a, w) {
  Atomics.store(a, w, 0)
}

/**
 * Increments `a[k]` under the lock at `a[w]` until it reaches `limit`, or `n` times.
 * @param {Int32Array} a
 * @param {number} w
 * @param {number} k
 * @param {number | undefined} limit
 * @param {number} n
 */
function work(a, w, k, limit, n) {
  let mine = 0
  for (;;) {
    lock(a, w)
    const v = a[k]
    if (limit !== undefined ? v >= limit : mine >= n) {
      unlock(a, w)
      return mine
    }
    a[k] = v + 1
    unlock(a, w)
    mine++
  }
}

serve((job, { n: children }) => {
  const { memory, word, counterIndex, limit, each } = /** @type {any} */ (revive(job))
  const a = new Int32Array(memory.buffer)
  meet(a, WARMUP_AREA.meet >> 2, children)
  work(a, WARMUP_AREA.lock >> 2, WARMUP_AREA.counter >> 2, warmupLimit(children, limit ?? each), 0)
  return () => {
    const r = work(a, word, counterIndex, limit, each)
    return sink === 0.5 ? -1 : r
  }
})
