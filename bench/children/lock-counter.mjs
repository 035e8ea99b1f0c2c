// Child: increments an int32 counter in shared memory under a shmutils Lock, either until
// it reaches `limit` (racing the other children) or `each` times; returns its increments.
// Before the barrier it does the same work on a private lock and counter, so that the
// timed run sees optimized code, as the C reference does.
import { Lock, revive } from '../../dist/index.js'
import { serve } from './serve.mjs'

/** Byte offset of the children's private warm-up records (one 128-byte slot each). */
const WARMUP_BASE = 1024
const WARMUP_COUNT = 20_000

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

serve((job, { index }) => {
  const { lock, counterIndex, limit, each } = /** @type {any} */ (revive(job))
  const c = new Int32Array(lock.memory.buffer)
  const work = limit !== undefined ? raceTo : repeat
  const n = limit ?? each
  const slot = WARMUP_BASE + index * 128
  const own = Lock.at(lock.memory, slot)
  c[(slot + 64) >> 2] = 0
  work(own, c, (slot + 64) >> 2, Math.min(n, WARMUP_COUNT))
  return () => work(lock, c, counterIndex, n)
})
