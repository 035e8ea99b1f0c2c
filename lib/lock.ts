/**
 * {@link Lock}: a futex lock word in shared memory. The uncontended acquire and release
 * are one `Atomics` compare-and-swap each, in JavaScript; only waiting and waking cross
 * into Rust (`src-rs/sync/lock.rs`, which documents the record layout and the word's states).
 * Async acquisitions wait on the process's dedicated waiter threads (`lib/waits.ts`).
 * @module
 */
import { checkIndex, checkTimeoutArg, describe } from './args.js'
import { closedError, native, notOwner, rangeError, ShmError, typeError } from './errors.js'
import { type Handle, handleIn, handleOf, registerReviver } from './handles.js'
import { START_HI, START_LO, TID } from './identity.js'
import { internals, MappedMemory, memoryOfHandle } from './memory.js'
import { binding } from './native.js'
import { acquireAsyncWith, Code, outcome, throwIfFailed } from './waits.js'

/** Owner thread id bits of the lock word. */
const TID_MASK = 0x3fff_ffff
/** The holder recovered the lock from a dead owner and has not marked it consistent. */
const OWNER_DIED = 1 << 30
/** The word's value once a recovered lock was released without `markConsistent()`. */
const NOT_RECOVERABLE = TID_MASK
/** Bytes of a lock (and of every other synchronization) record. */
export const LOCK_SIZE = 32
/** Alignment a record needs. */
export const LOCK_ALIGN = 4

/**
 * Options of the blocking waits ({@link Lock.acquire}, `Condition.wait`,
 * `Semaphore.acquire`). Each also takes the timeout alone: `acquire(10)` is
 * `acquire({ timeout: 10 })`.
 * @category Locks and waiting
 */
export interface AcquireOptions {
  /** Milliseconds to wait at most; default forever. `0` tries once. */
  timeout?: number
}

/**
 * Options of the async waits ({@link Lock.acquireAsync} and the others). Each also takes
 * the timeout alone: `acquireAsync(10)` is `acquireAsync({ timeout: 10 })`.
 * @category Locks and waiting
 */
export interface AsyncWaitOptions {
  /** Milliseconds to wait at most; default forever. `0` tries once. */
  timeout?: number
  /**
   * Aborts the wait: the promise rejects with a `DOMException` named `'AbortError'`
   * (its `cause` is the signal's reason) as soon as the native waiter noticed, which is
   * at once.
   */
  signal?: AbortSignal
}

/**
 * Where a new lock's state is allocated: a heap, or a managed mapping's heap.
 * @category Locks and waiting
 */
export interface LockHome {
  /** Allocates `size` bytes aligned to `align`; returns the offset in `memory`. */
  malloc(size: number, align?: number): number
  /** The mapping the heap lives in. */
  readonly memory: MappedMemory
}

/** Where a record lives. */
interface Place {
  memory: MappedMemory
  offset: number
}

let allocateIn: ((where: unknown) => Place) | null = null

/**
 * @internal How `new Lock(where)` (and `new Condition`, `new Semaphore`) allocate their
 * {@link LOCK_SIZE}-byte records; set by the heap module.
 */
export function setLockAllocator(fn: (where: unknown) => Place): void {
  allocateIn = fn
}

/** @internal Allocates a synchronization record through the heap module's hook. */
export function allocateRecord(where: unknown, what: string): Place {
  if (!allocateIn) throw typeError(`new ${what}(where) needs the heap module`)
  return allocateIn(where)
}

/** @internal Checks that a {@link LOCK_SIZE}-byte record fits at `offset` in `memory`. */
export function checkRecordAt(memory: unknown, offset: unknown): asserts memory is MappedMemory {
  if (!(memory instanceof MappedMemory)) throw typeError(`The "memory" argument must be a MappedMemory; got ${describe(memory)}`)
  checkIndex('offset', offset)
  const off = offset as number
  if (off % LOCK_ALIGN !== 0) throw rangeError(`The "offset" argument must be a multiple of ${LOCK_ALIGN}; got ${off}`)
  if (off + LOCK_SIZE > memory.size) throw rangeError(`The "offset" argument ${off} leaves no room for a ${LOCK_SIZE}-byte record in ${memory.size} bytes`)
  internals(memory)
}

/** @internal Sets a lock's {@link Lock.ownerDied} (after a condition wait re-acquired it). */
export let setOwnerDied: (lock: Lock, died: boolean) => void
/** @internal Whether this thread holds `lock`. */
export let heldHere: (lock: Lock) => boolean
/** @internal Makes `lock` reentrant (the RLock constructor). */
export let makeReentrant: (lock: Lock) => void
/** @internal How many times this thread holds a reentrant `lock` (0 if it does not). */
export let depthHere: (lock: Lock) => number

/** The deepest recursion the 32-bit depth field of a reentrant lock allows. */
const MAX_DEPTH = 0x7fff_ffff

let atPlace: Place | null = null

/**
 * A process-shared lock: a futex word in shared memory, usable from any process or
 * worker thread that maps the segment. Not reentrant (see `RLock`). Ownership belongs to
 * the thread (a worker thread is a thread of its own): the thread that acquired it
 * releases it, also when it was acquired with {@link acquireAsync}.
 *
 * If a holder dies (killed, exits, worker terminated) the next acquirer gets the lock
 * within about 50 ms and {@link ownerDied} is `true`; repair the data, call
 * {@link markConsistent}, then {@link release}. Releasing without it makes the lock
 * permanently unusable (`ERR_SHM_NOT_RECOVERABLE`), as POSIX robust mutexes do.
 * @example
 * ```ts
 * const lock = new Lock(mem)                 // 32 bytes in mem's heap
 * lock.withLock(() => { hits.value += 1n })  // released even if the function throws
 * if (lock.acquire(100)) {                   // or { timeout: 100 }: false after 100 ms
 *   try { ... } finally { lock.release() }
 * }
 * await lock.withLockAsync(async () => { ... })   // never blocks the event loop
 * child.send({ lock })                       // revive(msg).lock there: the same lock
 * ```
 * @category Locks and waiting
 */
export class Lock implements Disposable {
  /** The mapping holding the lock record. */
  readonly memory: MappedMemory
  /** Byte offset of the lock record in {@link memory}. */
  readonly offset: number
  /**
   * The lock's handle ({@link toJSON}), as an own property so a structured clone carries
   * it (see `revive`); a symbol if the mapping cannot be shared.
   */
  readonly $shmutils: Handle | symbol
  #i32: Int32Array
  #w: number
  #ownerDied = false
  /** An RLock: the record's `count` field holds this thread's recursion depth. */
  #reentrant = false

  /**
   * Allocates a new lock's record in shared memory.
   * @param where - a `Heap`, or a managed `MappedMemory` (its heap is used)
   */
  constructor(where: LockHome | MappedMemory) {
    ;({ memory: this.memory, offset: this.offset } = atPlace ?? allocateRecord(where, new.target.name))
    atPlace = null
    this.#i32 = internals(this.memory).i32
    this.#w = this.offset >> 2
    const kind = new.target.name
    this.$shmutils = handleIn(this.memory, (m) => Object.freeze({ $shmutils: kind, segment: m.segment, offset: this.offset, memory: m }))
  }

  static {
    setOwnerDied = (lock, died) => {
      lock.#ownerDied = died
    }
    heldHere = (lock) => lock.#heldHere()
    makeReentrant = (lock) => {
      lock.#reentrant = true
    }
    depthHere = (lock) => (lock.#heldHere() ? lock.#word()[lock.#w + 1] : 0)
  }

  /**
   * A lock whose 32-byte record is at `offset` in `memory` (4-byte aligned). A zeroed
   * record is a free lock.
   * @throws RangeError for an offset that is misaligned or does not fit
   */
  static at<T extends Lock>(this: new (where: MappedMemory) => T, memory: MappedMemory, offset: number): T {
    checkRecordAt(memory, offset)
    atPlace = { memory, offset }
    try {
      return new this(memory)
    } finally {
      atPlace = null
    }
  }

  #word(): Int32Array {
    const a = this.#i32
    if (a.length === 0) throw closedError('the lock\'s mapping')
    return a
  }

  /** Whether this thread holds the lock. */
  #heldHere(): boolean {
    const v = Atomics.load(this.#word(), this.#w)
    return (v & TID_MASK) === TID && v !== NOT_RECOVERABLE
  }

  // Reentrant locks (RLock): the record's second word holds this thread's recursion
  // depth, written only by the holder. Each hook reads the lock word once.

  /** Re-entry: `true` if the acquire is already satisfied (a reentrant lock held here). */
  #reenter(): boolean {
    if (!this.#reentrant) return false
    const a = this.#word()
    const w = this.#w
    const v = Atomics.load(a, w)
    if ((v & TID_MASK) !== TID || v === NOT_RECOVERABLE) return false
    const d = a[w + 1]
    if (d >= MAX_DEPTH) throw rangeError(`The RLock is already held ${MAX_DEPTH} times`)
    a[w + 1] = d + 1
    return true
  }

  /** Called after every acquisition of the lock word. */
  #entered(): void {
    // The depth of a freshly taken word is 0 (every release and every takeover from a
    // dead holder zero it). Adding rather than setting keeps an acquireAsync whose
    // completion was still queued while this thread re-entered synchronously counted.
    if (!this.#reentrant) return
    const a = this.#word()
    a[this.#w + 1] += 1
  }

  /**
   * Called first by {@link release}: `true` if the release is complete without freeing
   * the word (a reentrant lock leaving an inner level).
   */
  #leave(): boolean {
    if (!this.#reentrant) return false
    const a = this.#word()
    const w = this.#w
    const v = Atomics.load(a, w)
    if ((v & TID_MASK) !== TID || v === NOT_RECOVERABLE) throw notOwner()
    const d = a[w + 1]
    if (d > 1) {
      a[w + 1] = d - 1
      return true
    }
    a[w + 1] = 0
    return false
  }

  /**
   * Takes the lock, blocking this thread while another holds it.
   * @returns `true` when acquired, `false` when `timeout` ran out
   * @throws ShmError `ERR_SHM_NOT_RECOVERABLE`, `ERR_SHM_DEADLOCK` (this thread holds it),
   *   `ERR_SHM_CLOSED`
   */
  acquire(options?: number | AcquireOptions): boolean {
    const timeout = options === undefined ? undefined : checkTimeoutArg(options)
    if (this.#reenter()) return true
    const a = this.#word()
    const w = this.#w
    // Fast path: free → ours. Atomics are sequentially consistent, which includes the
    // acquire ordering the lock needs.
    if (Atomics.compareExchange(a, w, 0, TID) === 0) {
      this.#recordOwner(a, w)
      return true
    }
    const { id } = internals(this.memory)
    return this.#acquired(native(() => binding.lockAcquire(id, this.offset, timeout)))
  }

  #recordOwner(a: Int32Array, w: number): void {
    a[w + 3] = TID
    a[w + 4] = START_LO
    a[w + 5] = START_HI
    this.#ownerDied = false
    this.#entered()
  }

  /** Applies a native acquisition's completion code; `false` if it timed out. */
  #acquired(code: number): boolean {
    throwIfFailed(code)
    if (outcome(code) === Code.TIMED_OUT) return false
    this.#ownerDied = (code & Code.OWNER_DIED) !== 0
    this.#entered()
    return true
  }

  /**
   * Takes the lock only if it is free now.
   * @throws ShmError `ERR_SHM_NOT_RECOVERABLE`
   */
  tryAcquire(): boolean {
    if (this.#reenter()) return true
    const a = this.#word()
    const w = this.#w
    const seen = Atomics.compareExchange(a, w, 0, TID)
    if (seen === 0) {
      this.#recordOwner(a, w)
      return true
    }
    if (seen === NOT_RECOVERABLE) return this.acquire({ timeout: 0 })
    return false
  }

  /**
   * Takes the lock without blocking the event loop: the wait runs on a dedicated native
   * thread (never a libuv pool thread, so any number of pending waits leave `fs`,
   * `crypto` and friends alone), and the lock is taken for this thread.
   *
   * Several pending acquisitions by the same thread queue up: each resolves once the
   * previous holder (possibly another task of this thread) released. If the lock is
   * acquired at the very moment of an abort, the promise may still resolve `true`: the
   * lock is then held.
   * @returns `true` when acquired, `false` when `timeout` ran out
   * @throws (rejects) AbortError, ShmError `ERR_SHM_NOT_RECOVERABLE`, `ERR_SHM_CLOSED`
   *   (also when the mapping is closed while waiting); TypeError/RangeError for bad options
   */
  acquireAsync(options?: number | AsyncWaitOptions): Promise<boolean> {
    return acquireAsyncWith(
      options,
      () => this.tryAcquire(),
      (timeout) => binding.lockAcquireAsync(internals(this.memory).id, this.offset, timeout),
      (code) => this.#acquired(code),
    )
  }

  /**
   * Releases the lock.
   * @throws ShmError `ERR_SHM_NOT_OWNER` when this thread does not hold it
   */
  release(): void {
    const a = this.#word()
    const w = this.#w
    if (this.#leave()) return
    // Fast path: ours with nobody waiting → free.
    if (Atomics.compareExchange(a, w, TID, 0) === TID) return
    const cur = Atomics.load(a, w)
    if ((cur & TID_MASK) !== TID || cur === NOT_RECOVERABLE) throw notOwner()
    const { id } = internals(this.memory)
    if (cur & OWNER_DIED) {
      this.#ownerDied = false
      native(() => binding.lockRelease(id, this.offset))
      return
    }
    // Waiters (bit 31 makes the int32 negative): free it, then wake one.
    if (Atomics.exchange(a, w, 0) < 0) native(() => binding.lockWake(id, this.offset))
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

  /**
   * Runs `fn` (which may be async) holding the lock, acquired with {@link acquireAsync},
   * and releases it when `fn`'s promise settles.
   * @throws (rejects) ShmError `ETIMEDOUT` when `options.timeout` ran out; AbortError
   */
  async withLockAsync<R>(fn: () => Promise<R> | R, options?: number | AsyncWaitOptions): Promise<R> {
    if (typeof fn !== 'function') throw typeError(`The "fn" argument must be a function; got ${describe(fn)}`)
    if (!(await this.acquireAsync(options))) {
      throw new ShmError('timed out waiting for the lock', { code: 'ETIMEDOUT' })
    }
    try {
      return await fn()
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
    const { id } = internals(this.memory)
    native(() => binding.lockMarkConsistent(id, this.offset))
    this.#ownerDied = false
  }

  /** For `using`: releases (one level, for an RLock) if this thread holds the lock. */
  [Symbol.dispose](): void {
    if (this.#i32.length !== 0 && this.#heldHere()) this.release()
  }

  /** A handle that `revive` turns into a lock on the same record in another process. */
  toJSON(): Handle {
    return handleOf(this.$shmutils, 'lock')
  }
}

registerReviver('Lock', (h) => Lock.at(memoryOfHandle(h), h.offset))
