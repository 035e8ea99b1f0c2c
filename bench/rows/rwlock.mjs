/**
 * Rows 10.x: the uncontended RWLock read hold, and write hold, against a Lock pair on
 * the same mapping.
 * @module
 */
import { Lock, RWLock } from '../../dist/index.js'
import { alternate, perCall } from '../measure.mjs'
import { withSegment } from '../segments.mjs'

/**
 * An RWLock hold (`take`, `give` back) against a Lock pair, uncontended.
 * @param {import('./row.mjs').Context} ctx
 * @param {(rw: RWLock) => void} hold
 */
const againstLock = (ctx, hold) =>
  withSegment('rwlock', { size: 4096 }, (mem) => {
    const rw = RWLock.at(mem, 0)
    const lock = Lock.at(mem, 1024)
    return alternate(
      perCall(() => hold(rw), ctx.effort),
      perCall(() => {
        lock.acquire()
        lock.release()
      }, ctx.effort),
      ctx.effort.rounds,
    )
  })

/** @type {import('./row.mjs').Row[]} */
export const rwlockRows = [
  {
    id: '10',
    key: 'rwlock-read-vs-lock',
    subject: 'RWLock acquireRead()+releaseRead(), uncontended',
    baseline: 'Lock acquire()+release(), same mapping',
    per: 'acquire+release',
    goal: 2,
    run: (ctx) =>
      againstLock(ctx, (rw) => {
        rw.acquireRead()
        rw.releaseRead()
      }),
  },
  {
    id: '10.1',
    key: 'rwlock-write-vs-lock',
    subject: 'RWLock acquireWrite()+releaseWrite(), uncontended',
    baseline: 'Lock acquire()+release(), same mapping',
    per: 'acquire+release',
    run: (ctx) =>
      againstLock(ctx, (rw) => {
        rw.acquireWrite()
        rw.releaseWrite()
      }),
  },
]
