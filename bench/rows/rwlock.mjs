/**
 * Row 10: the uncontended RWLock read hold against a Lock pair on the same mapping.
 * @module
 */
import { Lock, RWLock } from '../../dist/index.js'
import { alternate, perCall } from '../measure.mjs'
import { withSegment } from '../segments.mjs'

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
      withSegment('rwlock', { size: 4096 }, (mem) => {
        const rw = RWLock.at(mem, 0)
        const lock = Lock.at(mem, 1024)
        return alternate(
          perCall(() => {
            rw.acquireRead()
            rw.releaseRead()
          }, ctx.effort),
          perCall(() => {
            lock.acquire()
            lock.release()
          }, ctx.effort),
          ctx.effort.rounds,
        )
      }),
  },
]
