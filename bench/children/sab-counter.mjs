// Worker thread: increments a counter in a SharedArrayBuffer `each` times under the
// three-state mutex built on Atomics.wait/notify (what threads can do without shmutils).
// Warms up contended on a shared warm-up lock first, as the Lock children do
// (./warmup.mjs): `job.warm` holds its meeting word, lock word and counter.
import { serve } from './serve.mjs'
import { meet, WARMUP_COUNT } from './warmup.mjs'

const LOCK = 0
const COUNTER = 1

/** @param {Int32Array} a */
function lock(a) {
  let c = Atomics.compareExchange(a, LOCK, 0, 1)
  if (c === 0) return
  if (c !== 2) c = Atomics.exchange(a, LOCK, 2)
  while (c !== 0) {
    Atomics.wait(a, LOCK, 2)
    c = Atomics.exchange(a, LOCK, 2)
  }
}

/** @param {Int32Array} a */
function unlock(a) {
  if (Atomics.exchange(a, LOCK, 0) === 2) Atomics.notify(a, LOCK, 1)
}

/**
 * @param {Int32Array} a - lock word and counter
 * @param {number} n
 */
function repeat(a, n) {
  for (let i = 0; i < n; i++) {
    lock(a)
    a[COUNTER]++
    unlock(a)
  }
  return n
}

serve((job, { n: children }) => {
  const warm = new Int32Array(job.warm)
  meet(warm, 2, children)
  repeat(warm, Math.min(job.each, WARMUP_COUNT))
  const a = new Int32Array(job.sab)
  return () => repeat(a, job.each)
})
