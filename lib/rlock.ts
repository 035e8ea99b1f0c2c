/**
 * {@link RLock}: the reentrant lock. Same record and word as {@link Lock}; the record's
 * `count` field holds the recursion depth, written only by the holder.
 * @module
 */
import { notOwner, rangeError } from './errors.js'
import { registerReviver } from './handles.js'
import { Kind, Lock } from './lock.js'
import { memoryOfHandle } from './memory.js'

/** The deepest recursion the 32-bit depth field allows. */
const MAX_DEPTH = 0x7fff_ffff

/**
 * A reentrant lock: the thread (of a process, or a worker thread) that holds it may
 * acquire it again, and must release it as many times. Releasing it from any other
 * thread, or more times than it was acquired, throws `ERR_SHM_NOT_OWNER`.
 *
 * Reentry is per thread, not per async task: {@link acquireAsync} on an RLock this thread
 * already holds resolves at once, one level deeper. A condition wait releases every level
 * and restores them when it returns. When the holder dies, the next acquirer gets the
 * lock at depth 1 with {@link ownerDied} set (the dead holder's depth is discarded).
 */
export class RLock extends Lock {
  protected static override readonly _kind: number = Kind.RLOCK

  /** How many times this thread holds the lock (0 when another thread or nobody does). */
  get depth(): number {
    return this._heldHere() ? this._depth : 0
  }

  protected override _reenter(): boolean {
    if (!this._heldHere()) return false
    const d = this._depth
    if (d >= MAX_DEPTH) throw rangeError(`The RLock is already held ${MAX_DEPTH} times`)
    this._depth = d + 1
    return true
  }

  protected override _entered(): void {
    // The depth of a freshly taken word is 0 (every release and every takeover from a
    // dead holder zero it). Adding rather than setting keeps an acquireAsync whose
    // completion was still queued while this thread re-entered synchronously counted.
    this._depth = this._depth + 1
  }

  protected override _leave(): boolean {
    if (!this._heldHere()) throw notOwner()
    const d = this._depth
    if (d > 1) {
      this._depth = d - 1
      return true
    }
    this._depth = 0
    return false
  }
}

registerReviver('RLock', (h) => RLock.at(memoryOfHandle(h), h.offset))
