/**
 * Rows 1.x: the uncontended Lock, against the bare JavaScript floor and an empty call
 * into the native binding.
 * @module
 */
import { createRequire } from 'node:module'
import { Lock } from '../../dist/index.js'
import { alternate, perCall } from '../measure.mjs'
import { withSegment } from '../segments.mjs'

/**
 * The raw native binding. Its `pageSize()` is the "empty native call": it takes nothing
 * and returns one u32 from `sysconf(_SC_PAGESIZE)`, a libc read with no system call.
 */
const binding = createRequire(import.meta.url)('../../index.js')

/** Int32 index of the floor's word: byte 64, beside the lock record in the same mapping. */
const FLOOR_WORD = 16

/**
 * Times `lock.acquire(); lock.release()` against `baseline(i32)` over one mapping.
 * @param {import('./row.mjs').Context} ctx
 * @param {(i32: Int32Array) => () => unknown} baseline
 */
function lockAgainst(ctx, baseline) {
  return withSegment('lock', { size: 4096 }, (mem) => {
    const lock = Lock.at(mem, 0)
    const i32 = new Int32Array(mem.buffer)
    return alternate(
      perCall(() => {
        lock.acquire()
        lock.release()
      }, ctx.effort),
      perCall(baseline(i32), ctx.effort),
      ctx.effort.rounds,
    )
  })
}

/** @type {import('./row.mjs').Row[]} */
export const lockRows = [
  {
    id: '1.1',
    key: 'lock-uncontended-vs-atomics',
    subject: 'Lock acquire()+release(), uncontended',
    baseline: 'Atomics.compareExchange + Atomics.exchange, same mapping',
    per: 'acquire+release',
    goal: 2,
    run: (ctx) =>
      lockAgainst(ctx, (i32) => () => {
        Atomics.compareExchange(i32, FLOOR_WORD, 0, 1)
        Atomics.exchange(i32, FLOOR_WORD, 0)
      }),
  },
  {
    id: '1.2',
    key: 'lock-uncontended-vs-native-call',
    subject: 'Lock acquire()+release(), uncontended',
    baseline: 'empty native call (binding.pageSize())',
    per: 'acquire+release',
    run: (ctx) => lockAgainst(ctx, () => () => binding.pageSize()),
  },
]
