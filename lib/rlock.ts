/**
 * {@link RLock}: the reentrant lock. Same record and word as {@link Lock}; the record's
 * `count` field holds the recursion depth, written only by the holder.
 * @module
 */
import { registerReviver } from './handles.js'
import { depthHere, Kind, Lock, type LockHome, makeReentrant } from './lock.js'
import { type MappedMemory, memoryOfHandle } from './memory.js'

/**
 * A reentrant lock: the thread (of a process, or a worker thread) that holds it may
 * acquire it again, and must release it as many times. Releasing it from any other
 * thread, or more times than it was acquired, throws `ERR_SHM_NOT_OWNER`.
 *
 * Reentry is per thread, not per async task: {@link acquireAsync} on an RLock this thread
 * already holds resolves at once, one level deeper. The thread holds it once an
 * acquisition has returned or resolved: while the lock is on its way to a pending
 * `acquireAsync` of this thread (taken for it, the result not delivered yet), the thread's
 * other acquisitions queue behind that one ({@link tryAcquire} is `false`, a blocking
 * {@link acquire} throws `ERR_SHM_DEADLOCK`). A condition wait releases every level
 * and restores them when it returns. When the holder dies, the next acquirer gets the
 * lock at depth 1 with {@link ownerDied} set (the dead holder's depth is discarded).
 * @category Locks and waiting
 */
export class RLock extends Lock {
  /** @internal The `kind` tag of records this class allocates. */
  protected static override readonly _kind: number = Kind.RLOCK
  /** @internal See `Lock._kindName`. */
  protected static override readonly _kindName = 'RLock'

  /**
   * Allocates a new reentrant lock's record in shared memory.
   * @param where - a `Heap`, or a managed `MappedMemory` (its heap is used)
   */
  constructor(where: LockHome | MappedMemory) {
    super(where)
    makeReentrant(this)
  }

  /** How many times this thread holds the lock (0 when another thread or nobody does). */
  get depth(): number {
    return depthHere(this)
  }
}

registerReviver('RLock', (h) => RLock.at(memoryOfHandle(h), h.offset))
