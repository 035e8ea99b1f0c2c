// Child: increments an int32 counter in shared memory under a shmutils Lock, either until
// it reaches `limit` (racing the other children) or `each` times; returns its increments.
// Before the barrier the children race a warm-up counter under a shared Lock of their
// own (./warmup.mjs), so that the timed run sees code optimized for contention.
import { Lock, revive } from '../../dist/index.js'
import { serve } from './serve.mjs'
import { meet, WARMUP_AREA, WARMUP_COUNT, warmupLimit } from './warmup.mjs'

/**
 * Increments `c[k]` under `lock` until it reaches `limit`; returns how many times.
 * @param {import('../../dist/index.js').Lock} lock
 * @param {Int32Array} c
 * @param {number} k
 * @param {number} limit
 */
function raceTo(lock, c, k, limit) {
  let mine = 0
  for (;;) {
    lock.acquire()
    const v = c[k]
    if (v >= limit) {
      lock.release()
      return mine
    }
    c[k] = v + 1
    lock.release()
    mine++
  }
}

/**
 * Increments `c[k]` under `lock` `n` times.
 * @param {import('../../dist/index.js').Lock} lock
 * @param {Int32Array} c
 * @param {number} k
 * @param {number} n
 */
function repeat(lock, c, k, n) {
  for (let i = 0; i < n; i++) {
    lock.acquire()
    c[k]++
    lock.release()
  }
  return n
}

serve((job, { n: children }) => {
  const { lock, counterIndex, limit, each } = /** @type {any} */ (revive(job))
  const c = new Int32Array(lock.memory.buffer)
  // The warm-up runs the function the timed run will, on the shared warm-up lock.
  const warm = Lock.at(lock.memory, WARMUP_AREA.lock)
  meet(c, WARMUP_AREA.meet >> 2, children)
  if (limit !== undefined) {
    raceTo(warm, c, WARMUP_AREA.counter >> 2, warmupLimit(children, limit))
    return () => raceTo(lock, c, counterIndex, limit)
  }
  repeat(warm, c, WARMUP_AREA.counter >> 2, Math.min(each, WARMUP_COUNT))
  return () => repeat(lock, c, counterIndex, each)
})
