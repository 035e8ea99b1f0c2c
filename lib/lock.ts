/**
 * {@link Lock}: a futex lock word in shared memory. The uncontended acquire and release
 * are one `Atomics` compare-and-swap each, in JavaScript; only waiting and waking cross
 * into Rust (`src-rs/lock.rs`, which documents the record layout and the word's states).
 * @module
 */
import { checkIndex, checkTimeout, describe } from './args.js'
import { closedError, native, rangeError, ShmError, typeError } from './errors.js'
import { type Handle, registerReviver } from './handles.js'
import { START_HI, START_LO, TID } from './identity.js'
import { internals, MappedMemory, memoryFromHandle } from './memory.js'

/** Owner thread id bits of the lock word. */
const TID_MASK = 0x3fff_ffff
/** The holder recovered the lock from a dead owner and has not marked it consistent. */
const OWNER_DIED = 1 << 30
/** The word's value once a recovered lock was released without `markConsistent()`. */
const NOT_RECOVERABLE = TID_MASK
/** Bytes of a lock record. */
export const LOCK_SIZE = 32
/** Alignment a lock record needs. */
export const LOCK_ALIGN = 4

/** Options of {@link Lock.acquire}. */
export interface AcquireOptions {
  /** Milliseconds to wait at most; default forever. `0` tries once. */
  timeout?: number
}

/** Where a new lock's state is allocated: a heap, or a managed mapping's heap. */
export interface LockHome {
  /** Allocates `size` bytes aligned to `align`; returns the offset in `memory`. */
  malloc(size: number, align?: number): number
  /** The mapping the heap lives in. */
  readonly memory: MappedMemory
}

let allocateIn: ((where: unknown) => { memory: MappedMemory; offset: number }) | null = null

/** @internal How `new Lock(where)` allocates; set by the heap module. */
export function setLockAllocator(fn: (where: unknown) => { memory: MappedMemory; offset: number }): void {
  allocateIn = fn
}

let atArgs: { memory: MappedMemory; offset: number } | null = null

/**
 * A process-shared lock: a futex word in shared memory, usable from any process or
 * worker thread that maps the segment. Not reentrant (see `RLock`).
 *
 * If a holder dies (killed, exits, worker terminated) the next acquirer gets the lock
 * and {@link ownerDied} is `true`; repair the data, call {@link markConsistent}, then
 * {@link release}. Releasing without it makes the lock permanently unusable
 * (`ERR_SHM_NOT_RECOVERABLE`), as POSIX robust mutexes do.
 */
export class Lock implements Disposable {
  /** The mapping holding the lock record. */
  readonly memory: MappedMemory
  /** Byte offset of the lock record in {@link memory}. */
  readonly offset: number
  #i32: Int32Array
  #w: number
  #ownerDied = false

  /**
   * Allocates a new lock's record in shared memory (cache-line aligned).
   * @param where - a `Heap`, or a managed `MappedMemory` (its heap is used)
   */
  constructor(where: LockHome | MappedMemory) {
    if (atArgs) {
      ;({ memory: this.memory, offset: this.offset } = atArgs)
      atArgs = null
    } else {
      if (!allocateIn) throw typeError('new Lock(where) needs the heap module')
      ;({ memory: this.memory, offset: this.offset } = allocateIn(where))
    }
    this.#i32 = internals(this.memory).i32
    this.#w = this.offset >> 2
  }

  /**
   * A lock whose 32-byte record is at `offset` in `memory` (4-byte aligned). A zeroed
   * record is a free lock.
   * @throws RangeError for an offset that is misaligned or does not fit
   */
  static at(memory: MappedMemory, offset: number): Lock {
    if (!(memory instanceof MappedMemory)) throw typeError(`The "memory" argument must be a MappedMemory; got ${describe(memory)}`)
    checkIndex('offset', offset)
    if (offset % LOCK_ALIGN !== 0) throw rangeError(`The "offset" argument must be a multiple of ${LOCK_ALIGN}; got ${offset}`)
    if (offset + LOCK_SIZE > memory.size) throw rangeError(`The "offset" argument ${offset} leaves no room for a ${LOCK_SIZE}-byte lock in ${memory.size} bytes`)
    internals(memory)
    atArgs = { memory, offset }
    try {
      return new this(memory)
    } finally {
      atArgs = null
    }
  }

  #word(): Int32Array {
    const a = this.#i32
    if (a.length === 0) throw closedError('the lock\'s mapping')
    return a
  }

  /**
   * Takes the lock, blocking this thread while another holds it.
   * @returns `true` when acquired, `false` when `timeout` ran out
   * @throws ShmError `ERR_SHM_NOT_RECOVERABLE`, `ERR_SHM_DEADLOCK` (this thread holds it),
   *   `ERR_SHM_CLOSED`
   */
  acquire(options?: AcquireOptions): boolean {
    const timeout = options === undefined ? undefined : checkTimeout(options.timeout)
    const a = this.#word()
    const w = this.#w
    // Fast path: free → ours. Atomics are sequentially consistent, which includes the
    // acquire ordering the lock needs.
    if (Atomics.compareExchange(a, w, 0, TID) === 0) {
      this.#recordOwner(a, w)
      return true
    }
    return this.#acquireSlow(timeout)
  }

  #recordOwner(a: Int32Array, w: number): void {
    a[w + 3] = TID
    a[w + 4] = START_LO
    a[w + 5] = START_HI
    this.#ownerDied = false
  }

  #acquireSlow(timeout: number | undefined): boolean {
    const mapping = internals(this.memory).mapping
    // Completion codes of `src-rs/sync/mod.rs`: 0 acquired, 1 timed out, 0x100 flag:
    // taken over from a dead holder.
    const r = native(() => mapping.lockAcquire(this.offset, timeout))
    if (r === 1) return false
    this.#ownerDied = (r & 0x100) !== 0
    return true
  }

  /**
   * Takes the lock only if it is free now.
   * @throws ShmError `ERR_SHM_NOT_RECOVERABLE`
   */
  tryAcquire(): boolean {
    const a = this.#word()
    const w = this.#w
    const seen = Atomics.compareExchange(a, w, 0, TID)
    if (seen === 0) {
      this.#recordOwner(a, w)
      return true
    }
    if (seen === NOT_RECOVERABLE) return this.#acquireSlow(0)
    return false
  }

  /**
   * Releases the lock.
   * @throws ShmError `ERR_SHM_NOT_OWNER` when this thread does not hold it
   */
  release(): void {
    const a = this.#word()
    const w = this.#w
    // Fast path: ours with nobody waiting → free.
    if (Atomics.compareExchange(a, w, TID, 0) === TID) return
    const cur = Atomics.load(a, w)
    if ((cur & TID_MASK) !== TID || cur === NOT_RECOVERABLE) {
      throw new ShmError('the lock is not held by this thread', { code: 'ERR_SHM_NOT_OWNER' })
    }
    const mapping = internals(this.memory).mapping
    if (cur & OWNER_DIED) {
      this.#ownerDied = false
      native(() => mapping.lockRelease(this.offset))
      return
    }
    // Waiters (bit 31 makes the int32 negative): free it, then wake one.
    if (Atomics.exchange(a, w, 0) < 0) native(() => mapping.lockWake(this.offset))
  }

  /** Runs `fn` holding the lock, releasing it afterwards even if `fn` throws. */
  withLock<R>(fn: () => R): R {
    if (typeof fn !== 'function') throw typeError(`The "fn" argument must be a function; got ${describe(fn)}`)
    this.acquire()
    try {
      return fn()
    } finally {
      this.release()
    }
  }

  /** Acquires and returns a disposable that releases: `using _ = lock.hold()`. */
  hold(): Disposable {
    this.acquire()
    let held = true
    return {
      [Symbol.dispose]: () => {
        if (held) {
          held = false
          this.release()
        }
      },
    }
  }

  /** Whether any thread (in any process) holds the lock now. */
  get locked(): boolean {
    return (Atomics.load(this.#word(), this.#w) & TID_MASK) !== 0
  }

  /** `true` after an acquire that took the lock over from a holder that died. */
  get ownerDied(): boolean {
    return this.#ownerDied
  }

  /**
   * Declares the data guarded by a recovered lock repaired, so it can be released
   * normally.
   * @throws ShmError `ERR_SHM_NOT_OWNER`
   */
  markConsistent(): void {
    const mapping = internals(this.memory).mapping
    native(() => mapping.lockMarkConsistent(this.offset))
    this.#ownerDied = false
  }

  /** For `using`: releases if this thread holds the lock. */
  [Symbol.dispose](): void {
    if (this.#i32.length !== 0 && (Atomics.load(this.#i32, this.#w) & TID_MASK) === TID) this.release()
  }

  /** A handle that `revive` turns into a lock on the same record in another process. */
  toJSON(): Handle {
    const m = this.memory.toJSON()
    return { $shmutils: this.constructor.name, segment: m.segment, offset: this.offset, memory: m }
  }
}

registerReviver('Lock', (h) => Lock.at(memoryFromHandle((h.memory as Handle | undefined) ?? { ...h, $shmutils: 'MappedMemory', offset: 0 }), h.offset))
