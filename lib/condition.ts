/**
 * {@link Condition}: a process-shared condition variable bound to a {@link Lock} or
 * `RLock`. Its 32-byte record holds a futex sequence word and the counts of waiters and
 * granted notifications; `src-rs/sync/condition.rs` documents the protocol.
 * @module
 */
import { checkIndex, checkTimeoutArg, checkWaitOptions, describe } from './args.js'
import { abortError, native, notOwner, typeError } from './errors.js'
import { type Handle, handleIn, handleOf, registerReviver, revive } from './handles.js'
import { type AcquireOptions, allocateRecord, type AsyncWaitOptions, checkKind, checkRecordAt, heldHere, Kind, Lock, LOCK_SIZE, lockHome, setOwnerDied } from './lock.js'
import { internals, type MappedMemory, memoryOfHandle } from './memory.js'
import { binding } from './native.js'
import { Code, outcome, throwIfFailed, waitNative } from './waits.js'

/** `n` meaning "every waiter" for the native notify. */
const ALL = 0xffff_ffff

let atPlace: { memory: MappedMemory; offset: number } | null = null

/**
 * A new condition record where `lock`'s record was allocated (the heap it was made in, or
 * its managed mapping's heap).
 * @throws TypeError for a lock made with `Lock.at()` in a raw mapping (no heap to use)
 */
function recordBeside(lock: Lock): { memory: MappedMemory; offset: number } {
  const home = lockHome(lock) ?? lock.memory
  if (home === lock.memory && !lock.memory.managed) {
    throw typeError('new Condition(lock) puts its record in the heap the lock came from, and this lock is at a fixed offset of a raw mapping: use Condition.at(memory, offset, lock), or make the lock in a heap (new Lock(heap))')
  }
  return allocateRecord(home, 'Condition', Kind.CONDITION)
}

/**
 * A condition variable shared between processes and worker threads, used with its lock
 * held: {@link wait} releases the lock (all levels of an `RLock`), sleeps until notified,
 * and re-acquires the lock before it returns, also on timeout and abort.
 *
 * Like every condition variable it can wake spuriously (here: rarely, after a waiter
 * died while waiting), and another thread may change the state between the notify and
 * the waiter's return: always wait in a loop that re-checks the predicate.
 *
 * If the lock's holder died while a waiter was waiting, the waiter re-acquires it with
 * `lock.ownerDied` set: repair, `markConsistent()`, as after any acquire. Mark a
 * recovered lock consistent *before* waiting on it: waiting releases the lock, and
 * releasing it inconsistent makes it unrecoverable (as glibc's robust mutexes do).
 * @example
 * ```ts
 * const cond = new Condition(lock)
 * // consumer
 * lock.withLock(() => {
 *   while (count.value === 0) cond.wait()     // or wait(100) / await cond.waitAsync()
 *   count.value -= 1
 * })
 * // producer, in any process
 * lock.withLock(() => {
 *   count.value += 1
 *   cond.notify()
 * })
 * ```
 * @category Locks and waiting
 */
export class Condition {
  /** The lock the condition is used with. */
  readonly lock: Lock
  /** The mapping holding the condition's record. */
  readonly memory: MappedMemory
  /** Byte offset of the record in {@link memory}. */
  readonly offset: number
  /**
   * The condition's handle ({@link toJSON}), as an own property so a structured clone
   * carries it (see `revive`); a symbol if the mapping cannot be shared.
   */
  readonly $shmutils: Handle | symbol
  #i32: Int32Array
  #w: number

  /**
   * Allocates a new condition's record in the lock's memory (through its heap).
   * @param lock - the `Lock` or `RLock` it is used with
   */
  constructor(lock: Lock) {
    if (!(lock instanceof Lock)) throw typeError(`The "lock" argument must be a Lock or RLock; got ${describe(lock)}`)
    this.lock = lock
    ;({ memory: this.memory, offset: this.offset } = atPlace ?? recordBeside(lock))
    atPlace = null
    const win = internals(this.memory).window(this.offset, LOCK_SIZE)
    this.#i32 = win.i32
    this.#w = (this.offset - win.start) >>> 2
    const lockHandle = lock.$shmutils
    this.$shmutils =
      typeof lockHandle === 'symbol'
        ? lockHandle
        : handleIn(this.memory, (m) => Object.freeze({ $shmutils: 'Condition', segment: m.segment, offset: this.offset, memory: m, lock: lockHandle }))
  }

  /**
   * The condition whose 32-byte record is at `offset` in `memory` (4-byte aligned; a
   * zeroed record is a condition nobody waits on), used with `lock`.
   * @throws RangeError for an offset that is misaligned or does not fit
   */
  static at(memory: MappedMemory, offset: number, lock: Lock): Condition {
    checkRecordAt(memory, offset)
    if (!(lock instanceof Lock)) throw typeError(`The "lock" argument must be a Lock or RLock; got ${describe(lock)}`)
    checkKind(memory, offset, [Kind.CONDITION], 'Condition')
    atPlace = { memory, offset }
    try {
      return new Condition(lock)
    } finally {
      atPlace = null
    }
  }

  /** Settles a wait's completion code: re-acquired lock state, then the result. */
  #woke(code: number, signal?: AbortSignal): boolean {
    throwIfFailed(code, this.memory)
    setOwnerDied(this.lock, (code & Code.OWNER_DIED) !== 0)
    if (outcome(code) === Code.CANCELLED) throw abortError(signal as AbortSignal)
    return outcome(code) === Code.OK
  }

  /**
   * Releases the lock, blocks this thread until notified or `timeout` ms passed, and
   * re-acquires the lock.
   * @param options - the timeout in milliseconds, alone or as `{ timeout }`; default forever
   * @returns `true` when notified (or spuriously woken), `false` on timeout; the lock is
   *   held again either way
   * @throws ShmError `ERR_SHM_NOT_OWNER` when this thread does not hold the lock,
   *   `ERR_SHM_NOT_RECOVERABLE`
   */
  wait(options?: number | AcquireOptions): boolean {
    const t = checkTimeoutArg(options)
    const { id } = internals(this.memory)
    const lockId = internals(this.lock.memory).id
    return this.#woke(native(() => binding.condWait(id, this.offset, lockId, this.lock.offset, t)))
  }

  /**
   * {@link wait} without blocking the event loop: releases the lock now, waits on a
   * dedicated native thread, and re-acquires the lock for this thread before the promise
   * settles, also on timeout and on abort (the AbortError rejection comes with the lock
   * held, so a `finally` that releases it stays correct).
   * @returns `true` when notified, `false` on timeout
   * @throws (rejects) AbortError, ShmError `ERR_SHM_NOT_OWNER`, `ERR_SHM_CLOSED`
   */
  waitAsync(options?: number | AsyncWaitOptions): Promise<boolean> {
    try {
      const { timeout, signal } = checkWaitOptions(options)
      if (!heldHere(this.lock)) throw notOwner()
      if (signal?.aborted) throw abortError(signal)
      const { id } = internals(this.memory)
      const lockId = internals(this.lock.memory).id
      return waitNative(() => binding.condWaitAsync(id, this.offset, lockId, this.lock.offset, timeout), signal).then((code) =>
        this.#woke(code, signal),
      )
    } catch (e) {
      return Promise.reject(e)
    }
  }

  /**
   * Wakes up to `n` waiters (in any process). Call it holding the lock: the woken wait
   * for it, one per release. Waiters are moved from the condition's word onto the lock's
   * word (futex requeue) rather than woken all at once, so even {@link notifyAll} wakes
   * one thread per release of the lock instead of a stampede.
   * @throws ShmError `ERR_SHM_NOT_OWNER` when this thread does not hold the lock;
   *   TypeError/RangeError for a bad `n`
   */
  notify(n = 1): void {
    checkIndex('n', n)
    this.#notify(Math.min(n, ALL))
  }

  /** Wakes every waiter; see {@link notify}. */
  notifyAll(): void {
    this.#notify(ALL)
  }

  #notify(n: number): void {
    const { id } = internals(this.memory)
    const lockId = internals(this.lock.memory).id
    if (!heldHere(this.lock)) throw notOwner()
    // No waiters registered (they register holding the lock, which we hold): done.
    if (n === 0 || (Atomics.load(this.#i32, this.#w + 1) & 0xffff) === 0) return
    native(() => binding.condNotify(id, this.offset, lockId, this.lock.offset, n))
  }

  /** A handle that `revive` turns into the same condition (and its lock) elsewhere. */
  toJSON(): Handle {
    return handleOf(this.$shmutils, 'condition')
  }
}

registerReviver('Condition', (h) => {
  const lock = revive<unknown>(h.lock)
  if (!(lock instanceof Lock)) throw typeError('Malformed Condition handle: its "lock" is not a lock handle')
  return Condition.at(memoryOfHandle(h), h.offset, lock)
})
