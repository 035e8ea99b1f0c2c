/**
 * {@link Lock}: a futex lock word in shared memory. The uncontended acquire and release
 * are one `Atomics` compare-and-swap each, in JavaScript; only waiting and waking cross
 * into Rust (`src-rs/sync/lock.rs`, which documents the record layout and the word's states).
 * The word's owner bits are this thread's liveness token for the segment
 * (`lib/identity.ts`), fetched once per lock object.
 * Async acquisitions wait on the process's dedicated waiter threads (`lib/waits.ts`).
 * @module
 */
import { checkIndex, checkTimeoutArg, describe } from './args.js'
import { closedError, native, notOwner, rangeError, ShmError, typeError } from './errors.js'
import { type Handle, handleIn, handleOf, registerReviver } from './handles.js'
import { PID, START_HI, START_LO, TID, tokenIn } from './identity.js'
import { checkIntact, checkMemory, GUARD, internals, MappedMemory, memoryOfHandle, writable } from './memory.js'
import { binding } from './native.js'
import { lockOwnerAt, type LockOwner } from './records.js'
import { traceOwnerDied, traceWait, waitStart } from './trace.js'
import { acquireAsyncWith, Code, outcome, RECHECK_MS, throwIfFailed } from './waits.js'
import { wakeWord } from './word.js'

/** Owner token bits of the lock word; all ones: dead forever (`NOT_RECOVERABLE`). */
const TOKEN_MASK = 0x3fff_ffff
/** @internal Lock word bit: the holder recovered the lock from a dead owner and has not marked it consistent. */
export const OWNER_DIED = 1 << 30
/**
 * @internal The word's bits but WAITERS: `(word & HELD_MASK) === token` says held by
 * that token, consistent (what a release inline, without calls, checks: see withLock).
 */
export const HELD_MASK = TOKEN_MASK | OWNER_DIED
/** Bytes of a lock (and of every other synchronization) record. */
export const LOCK_SIZE = 32

/** Probes of a held word before sleeping in the kernel (see {@link spin}). */
const SPIN_PROBES = 20
/** The longest pause between two probes, in iterations of the delay loop. */
const SPIN_MAX_DELAY = 1024
/** Where the delay loop's result goes, so that no compiler drops the loop. */
let _spinSink = 0

/**
 * At most one contended release this often (per lock object) hands the lock to the
 * sleeper it wakes, instead of freeing it for whoever comes first (`src-rs/sync/lock.rs`,
 * "Eventual fairness"; RWLock's writer the same way): a woken waiter on another core
 * otherwise loses to a holder that takes the lock again at once, release after release.
 * Rare enough that the lock's idle moment while the sleeper wakes (tens of µs) costs a
 * looping holder about 1%.
 */
const FAIR_MS = 4
/**
 * @internal How long a wait that finds a lock handed off (and has not slept) leaves it
 * to the woken sleeper before it takes the lock itself: a sleeper slow to run (a busy or
 * throttled core) must not keep the lock idle (`HANDOFF_GRACE_MS` in `src-rs/sync/lock.rs`).
 */
export const HANDOFF_GRACE_MS = 1

/**
 * @internal When a lock object's contended releases may hand the lock off: {@link due}
 * answers `true` at most once per {@link FAIR_MS}.
 */
export class HandOffs {
  #at = 0
  /** Whether this contended release hands the lock off (and none may for FAIR_MS). */
  due(): boolean {
    const now = performance.now()
    if (now < this.#at) return false
    this.#at = now + FAIR_MS
    return true
  }
}

/**
 * Contention's first answer, before any native call: probe the held word `a[w]` again
 * after pauses that double (1, 2, 4, ... up to {@link SPIN_MAX_DELAY} iterations of a
 * loop that touches no memory, so the holder's cache line is left alone), and take it
 * for `me` as soon as it is free: a few microseconds at most. Most holders let go within
 * that time, and a lock passed on this way costs neither acquirer nor holder a system
 * call (a sleeper costs both: a futex wait, then a wake). Gives up at once when sleepers
 * are queued (WAITERS set: they came first), when this thread holds the word, and on a
 * word that can never be taken; the native path then decides.
 * @returns whether the word was taken
 */
function spin(a: Int32Array, w: number, me: number): boolean {
  let delay = 1
  for (let probe = 0; probe < SPIN_PROBES; probe++) {
    let x = 0
    for (let k = 0; k < delay; k++) x = (x * 31 + k) | 0
    _spinSink ^= x
    if (delay < SPIN_MAX_DELAY) delay *= 2
    const v = Atomics.load(a, w)
    if (v === 0) {
      if (Atomics.compareExchange(a, w, 0, me) === 0) return true
    } else if (v < 0 || (v & TOKEN_MASK) === me || (v & TOKEN_MASK) === TOKEN_MASK) {
      return false
    }
  }
  return false
}
/** Alignment a record needs. */
export const LOCK_ALIGN = 4

/**
 * @internal The `kind` tag at offset 8 of every synchronization record
 * (`src-rs/sync/mod.rs`, `docs/FORMAT.md` §6); 0 is untagged.
 */
export const Kind = Object.freeze({
  LOCK: 1,
  RLOCK: 2,
  CONDITION: 3,
  SEMAPHORE: 4,
  RWLOCK: 5,
  BARRIER: 6,
  EVENT: 7,
  SHARED_MAP: 16,
  CHANNEL: 17,
})

const KIND_NAMES = new Map<number, string>(Object.entries(Kind).map(([name, k]) => [k, name]))

/** The `kind` word of the record at `offset` (through the window holding it). */
function kindWord(memory: MappedMemory, offset: number): { i32: Int32Array; at: number } {
  const win = internals(memory).window(offset, LOCK_SIZE)
  return { i32: win.i32, at: ((offset - win.start) >>> 2) + 2 }
}

/**
 * @internal Refuses to use a record tagged as something else: `kinds` are the tags
 * accepted besides 0 (untagged). Unknown values are left alone (not ours to judge).
 * @throws TypeError naming what the record is
 */
export function checkKind(memory: MappedMemory, offset: number, kinds: readonly number[], what: string): void {
  const { i32, at } = kindWord(memory, offset)
  const k = i32[at]!
  if (k !== 0 && !kinds.includes(k) && KIND_NAMES.has(k)) {
    throw typeError(`The record at offset ${offset} is a ${KIND_NAMES.get(k)} (kind ${k}), not a ${what}`)
  }
}

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

let allocateIn: ((where: unknown, size: number) => Place) | null = null

/**
 * @internal How `new Lock(where)` (and `new Condition`, `new Semaphore`) allocate their
 * records (`size` zeroed bytes, 64-aligned); set by the heap module.
 */
export function setLockAllocator(fn: (where: unknown, size: number) => Place): void {
  allocateIn = fn
}

/**
 * @internal Allocates a zeroed synchronization record (and `size - 32` bytes after it)
 * through the heap module's hook, tagged `kind`.
 */
export function allocateRecord(where: unknown, what: string, kind: number, size = 64): Place {
  if (!allocateIn) throw typeError(`new ${what}(where) needs the heap module`)
  const place = allocateIn(where, size)
  const { i32, at } = kindWord(place.memory, place.offset)
  i32[at] = kind
  return place
}

/** Where each lock made with `new` was allocated (the `where` it was given). */
const homes = new WeakMap<object, unknown>()

/**
 * @internal Where `lock`'s record was allocated (a heap, or a managed mapping's), for the
 * records that go with it (a Condition's); `undefined` for a lock made with `at()`.
 */
export function lockHome(lock: object): unknown {
  return homes.get(lock)
}

/** @internal Checks that a {@link LOCK_SIZE}-byte record fits at `offset` in `memory`. */
export function checkRecordAt(memory: unknown, offset: unknown): asserts memory is MappedMemory {
  checkMemory(memory)
  checkIndex('offset', offset)
  const off = offset as number
  if (off % LOCK_ALIGN !== 0) throw rangeError(`The "offset" argument must be a multiple of ${LOCK_ALIGN}; got ${off}`)
  if (off + LOCK_SIZE > memory.size) throw rangeError(`The "offset" argument ${off} leaves no room for a ${LOCK_SIZE}-byte record in ${memory.size} bytes`)
  writable(memory)
}

/** @internal Sets a lock's {@link Lock.ownerDied} (after a condition wait re-acquired it). */
export let setOwnerDied: (lock: Lock, died: boolean) => void
/**
 * @internal Whether `lock`'s own last acquisition took it over from a dead holder: for a
 * container's own lock objects, which nothing else acquires, on every operation, without
 * the word read {@link Lock.ownerDied} makes for objects that share a record.
 */
export let tookOverDead: (lock: Lock) => boolean
/** @internal Whether this thread holds `lock`. */
export let heldHere: (lock: Lock) => boolean
/** @internal Makes `lock` reentrant (the RLock constructor). */
export let makeReentrant: (lock: Lock) => void
/** @internal How many times this thread holds a reentrant `lock` (0 if it does not). */
export let depthHere: (lock: Lock) => number

/** The deepest recursion the 32-bit depth field of a reentrant lock allows. */
const MAX_DEPTH = 0x7fff_ffff

/**
 * A blocking acquire of an RLock whose word a waiter thread took for a pending
 * acquisition of this thread, not delivered yet (see `Lock.#reenter`).
 */
function pendingHere(): ShmError {
  return new ShmError(
    'the RLock is being handed to a pending acquireAsync (or condition waitAsync) of this thread, whose completion has not been delivered: a blocking acquire would wait for ever (await it, or acquire it with acquireAsync)',
    { code: 'ERR_SHM_DEADLOCK' },
  )
}

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
 * permanently unusable (`ERR_SHM_NOT_RECOVERABLE`), as POSIX robust mutexes do. This works
 * across PID namespaces (containers sharing `/dev/shm`): the word names the holder by a
 * liveness token the kernel tracks for the segment. A thread that closes its last mapping
 * of the segment gives up the locks it holds there the same way.
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
  /** This thread's liveness token in {@link memory}; 0 until first needed. */
  #me = 0
  #ownerDied = false
  /** When a contended release of this object hands the lock off. */
  readonly #handOffs = new HandOffs()
  /**
   * When {@link tryAcquire} last had the native side ask whether the holder lives
   * (`performance.now()`: monotonic, so a wall clock set back cannot stop the asking).
   */
  #askedAt = -Infinity
  /** An RLock: the record's `count` field holds this thread's recursion depth. */
  #reentrant = false
  /**
   * Whether {@link acquire} and {@link release} may take their short paths: a plain lock
   * whose token is known. Those paths are a few dozen bytes of bytecode, so that V8
   * inlines both into the caller's loop (its budget is 920 bytes per function); the rest
   * (options, re-entry, the owner fields changing hands, contention) is out of line.
   */
  #short = false

  /**
   * Allocates a new lock's record in shared memory.
   * @param where - a `Heap`, or a managed `MappedMemory` (its heap is used)
   */
  constructor(where: LockHome | MappedMemory) {
    const { _kind: tag, _kindName: kind } = new.target as typeof Lock
    if (atPlace === null) homes.set(this, where)
    ;({ memory: this.memory, offset: this.offset } = atPlace ?? allocateRecord(where, kind, tag))
    atPlace = null
    const win = internals(this.memory).window(this.offset, LOCK_SIZE)
    this.#i32 = win.i32
    this.#w = (this.offset - win.start) >>> 2
    this.$shmutils = handleIn(this.memory, (m) => Object.freeze({ $shmutils: kind, segment: m.segment, offset: this.offset, memory: m }))
  }

  /** @internal The `kind` tag of records this class allocates. */
  protected static readonly _kind: number = Kind.LOCK
  /**
   * @internal The kind its handles name (FORMAT.md §8.1) and its messages: a literal, not
   * the class's name, which a bundler or minifier renames (and a subclass has its own).
   */
  protected static readonly _kindName: 'Lock' | 'RLock' = 'Lock'

  static {
    setOwnerDied = (lock, died) => {
      lock.#ownerDied = died
      if (died) traceOwnerDied(lock, (lock.constructor as typeof Lock)._kindName)
    }
    heldHere = (lock) => lock.#heldHere()
    tookOverDead = (lock) => lock.#ownerDied
    makeReentrant = (lock) => {
      lock.#reentrant = true
      lock.#short = false
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
    checkKind(memory, offset, [Kind.LOCK, Kind.RLOCK], this.name)
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

  /** This thread's token (claimed on first use; see `lib/identity.ts`). */
  #token(): number {
    return this.#me || this.#claim()
  }

  #claim(): number {
    this.#me = tokenIn(this.memory)
    this.#short = !this.#reentrant
    return this.#me
  }

  /** Whether word `v` names this thread (the token is claimed only for a held word). */
  #mine(v: number): boolean {
    const owner = v & TOKEN_MASK
    return owner !== 0 && owner === this.#token()
  }

  /**
   * Whether this thread holds the lock: the word names it (and, for an RLock, at a depth
   * above 0: see {@link #reenter}).
   */
  #heldHere(): boolean {
    const a = this.#word()
    const v = Atomics.load(a, this.#w)
    if (GUARD[0] !== 0) checkIntact(this.memory)
    return this.#mine(v) && (!this.#reentrant || a[this.#w + 1] !== 0)
  }

  // Reentrant locks (RLock): the record's second word holds this thread's recursion
  // depth, written only by the holder. Each hook reads the lock word once.
  //
  // The depth is the number of acquisitions this thread's JavaScript has been told
  // succeeded and not yet released. A word naming this thread at depth 0 was taken by a
  // waiter thread for an acquisition (acquireAsync, a condition's waitAsync) whose
  // completion has not been delivered yet: no task of the thread holds it yet, so nothing
  // may re-enter or release it. Another async acquisition queues behind it (its native
  // wait sees the word held by this thread and waits for the release); a try fails; a
  // blocking acquire throws ERR_SHM_DEADLOCK (the completion needs this thread's event
  // loop). Re-entering there instead would let that task's release free a word the
  // pending acquisition is about to be told it holds.

  /** Re-entry: `true` if the acquire is already satisfied (a reentrant lock held here). */
  #reenter(): boolean {
    if (!this.#reentrant) return false
    const a = this.#word()
    const w = this.#w
    if (!this.#mine(Atomics.load(a, w))) return false
    // Atomics: a condition's waitAsync that re-took the word restores the depth from its
    // waiter thread.
    const d = Atomics.load(a, w + 1)
    if (d === 0) return false
    if (d >= MAX_DEPTH) throw rangeError(`The RLock is already held ${MAX_DEPTH} times`)
    a[w + 1] = d + 1
    return true
  }

  /** Called after every acquisition of the lock word: the first level of an RLock. */
  #entered(): void {
    // A freshly taken word is at depth 0 (every release and every takeover from a dead
    // holder zero it, and nothing re-enters a word at depth 0).
    if (!this.#reentrant) return
    const a = this.#word()
    a[this.#w + 1] = 1
  }

  /**
   * Called first by {@link release}: `true` if the release is complete without freeing
   * the word (a reentrant lock leaving an inner level).
   */
  #leave(): boolean {
    if (!this.#reentrant) return false
    const a = this.#word()
    const w = this.#w
    if (!this.#mine(Atomics.load(a, w))) {
      // A word on a page the mapping lost reads 0: say so, not "not the owner".
      if (GUARD[0] !== 0) checkIntact(this.memory)
      throw notOwner()
    }
    const d = a[w + 1]
    if (d > 1) {
      a[w + 1] = d - 1
      return true
    }
    // Depth 0: taken for an acquisition not delivered yet, which no task holds.
    if (d === 0) throw notOwner()
    a[w + 1] = 0
    return false
  }

  /**
   * Takes the lock, blocking this thread while another holds it.
   * @returns `true` when acquired, `false` when `timeout` ran out
   * @throws ShmError `ERR_SHM_NOT_RECOVERABLE`, `ERR_SHM_DEADLOCK` (this thread holds it,
   *   or it was taken for a pending {@link acquireAsync} of this thread), `ERR_SHM_CLOSED`
   */
  acquire(options?: number | AcquireOptions): boolean {
    if (this.#short && options === undefined) {
      // Free → ours (Atomics are sequentially consistent, which includes the acquire
      // ordering the lock needs), the owner fields already ours, nothing lost.
      const a = this.#i32
      const w = this.#w
      const me = this.#me
      let seen: number
      try {
        seen = Atomics.compareExchange(a, w, 0, me)
      } catch {
        // A closed mapping's array (detached): the slow path says so.
        return this.#acquireSlow(options)
      }
      if (seen === 0) {
        if (a[w + 5] !== me || a[w + 6] !== START_LO || a[w + 7] !== START_HI || GUARD[0] !== 0 || this.#ownerDied) {
          try {
            this.#recordOwner(a, w, me)
          } catch (e) {
            // Given back inline (see #recordOwner).
            let v = a[w]
            while ((v & TOKEN_MASK) === me && Atomics.compareExchange(a, w, v, v & OWNER_DIED ? TOKEN_MASK : 0) !== v) v = a[w]
            if ((v & TOKEN_MASK) === me && v !== me) this.#wakeGivenBack(v)
            throw e
          }
        }
        return true
      }
    }
    return this.#acquireSlow(options)
  }

  #acquireSlow(options?: number | AcquireOptions): boolean {
    const timeout = options === undefined ? undefined : checkTimeoutArg(options)
    if (this.#reenter()) return true
    const a = this.#word()
    const w = this.#w
    const me = this.#token()
    let took = false
    try {
      // Fast path: free → ours. Atomics are sequentially consistent, which includes the
      // acquire ordering the lock needs.
      if (Atomics.compareExchange(a, w, 0, me) === 0 || (timeout !== 0 && spin(a, w, me))) {
        took = true
        this.#recordOwner(a, w, me)
        return true
      }
      const { id } = internals(this.memory)
      const t0 = waitStart()
      let code: number
      try {
        code = native(() => binding.lockAcquire(id, this.offset, timeout ?? -1))
      } catch (e) {
        // The word names this thread at depth 0 (#reenter declined it): an acquireAsync of
        // this thread took it, before or while this thread waited.
        if (this.#reentrant && e instanceof ShmError && e.code === 'ERR_SHM_DEADLOCK') throw pendingHere()
        throw e
      }
      took = outcome(code) === Code.OK
      return this.#acquired(code, t0, false)
    } catch (e) {
      if (took) {
        // Given back inline (see #recordOwner).
        let v = a[w]
        while ((v & TOKEN_MASK) === me && Atomics.compareExchange(a, w, v, v & OWNER_DIED ? TOKEN_MASK : 0) !== v) v = a[w]
        if ((v & TOKEN_MASK) === me && v !== me) this.#wakeGivenBack(v)
      }
      throw e
    }
  }

  // Memory safety: every path that takes, gives back or reads the word then checks the
  // process-wide GUARD (lib/memory.ts), so a word on a page the mapping lost (the object
  // was shrunk by another process) gives ERR_SHM_TRUNCATED, never a "lock" on a private
  // zero page. The owner fields say who holds it, for diagnostics (and macOS's pid-reuse
  // check); the token last.
  //
  // Exception safety: an acquire that throws never leaves the lock held. Whatever throws
  // after the word was taken, by a compare-and-swap or natively (a lost page here; a stack
  // overflow anywhere, also at the call of this method: a RangeError a program may catch,
  // as a server's error handler does, and go on), is caught by the frame that took it or
  // one of its callers (acquire's short path, #acquireSlow, #try), which gives the word
  // back *inline*: plain loads and a compare-and-swap loop. At a frame no deeper than one
  // where that builtin ran, it has the stack it needs, where a call (or a getter) might
  // not. A word taken over from a dead holder is given back NOT_RECOVERABLE (as a release
  // without markConsistent: nobody was told to repair it). Only the wake that follows is
  // a call; if it overflows too, sleepers re-check within RECHECK_MS. (An RLock's depth is
  // still 0 then: #entered, which sets it, is the last step.)
  #recordOwner(a: Int32Array, w: number, me: number): void {
    // Written only when they change: a thread taking the lock again (the common case
    // under contention, where every store to this cache line may cost a transfer from the
    // core that is probing it) finds its own fields there. Its token and start time say
    // they are its own (pid and tid are informational).
    if (a[w + 5] !== me || a[w + 6] !== START_LO || a[w + 7] !== START_HI) {
      a[w + 3] = PID
      a[w + 4] = TID
      a[w + 6] = START_LO
      a[w + 7] = START_HI
      a[w + 5] = me
    }
    if (GUARD[0] !== 0) checkIntact(this.memory)
    if (this.#ownerDied) this.#ownerDied = false
    this.#entered()
  }

  /**
   * Wakes the sleepers of a word given back inline (see #recordOwner) that was `v`: one if
   * it had WAITERS; all if it was taken over from a dead holder (OWNER_DIED), which the
   * give-back made `NOT_RECOVERABLE` for everyone, as a release without
   * `markConsistent()` does (nobody was told to repair it). If the wake cannot be made
   * (the stack overflowed again), sleepers still see the word at their next re-check,
   * within {@link RECHECK_MS}.
   */
  #wakeGivenBack(v: number): void {
    if (v & OWNER_DIED) wakeWord(this.memory, this.offset)
    else if (v < 0) native(() => binding.lockWake(internals(this.memory).id, this.offset, 0))
  }

  /**
   * Applies a native acquisition's completion code; `false` if it timed out. `t0`: when
   * the wait started, for tracing (0: nobody listens).
   */
  #acquired(code: number, t0: number, async: boolean): boolean {
    throwIfFailed(code, this.memory)
    if (GUARD[0] !== 0) checkIntact(this.memory)
    const died = (code & Code.OWNER_DIED) !== 0
    if (t0 !== 0) traceWait(this, (this.constructor as typeof Lock)._kindName, t0, outcome(code) === Code.TIMED_OUT ? 'timed-out' : died ? 'owner-died' : 'acquired', async)
    if (outcome(code) === Code.TIMED_OUT) return false
    this.#ownerDied = died
    if (died) traceOwnerDied(this, (this.constructor as typeof Lock)._kindName)
    this.#entered()
    return true
  }

  /**
   * Takes the lock only if it is free now, or if its holder died: whether a holder lives
   * is asked (a system call) at most once per 50 ms per object; a dead one's lock is
   * taken over with {@link ownerDied} set, as a blocking `acquire` would. `false` also
   * while the lock is held by this thread (an RLock: re-entered instead) or on its way to a
   * pending {@link acquireAsync} of this thread.
   * @throws ShmError `ERR_SHM_NOT_RECOVERABLE`
   */
  tryAcquire(): boolean {
    return this.#try(true)
  }

  /**
   * {@link tryAcquire} (`dead`: also a dead holder's lock), giving back a word a throw left
   * taken (see #recordOwner; #tryOnce and #takeFromDead set #took once they take it).
   */
  #try(dead: boolean): boolean {
    this.#took = false
    try {
      return this.#tryOnce() || (dead && this.#takeFromDead())
    } catch (e) {
      if (this.#took) {
        // Given back inline (see #recordOwner).
        const a = this.#i32
        const w = this.#w
        const me = this.#me
        let v = a[w]
        while ((v & TOKEN_MASK) === me && Atomics.compareExchange(a, w, v, v & OWNER_DIED ? TOKEN_MASK : 0) !== v) v = a[w]
        if ((v & TOKEN_MASK) === me && v !== me) this.#wakeGivenBack(v)
      }
      throw e
    }
  }

  /** Set by #tryOnce and #takeFromDead right after they take the word (a plain store). */
  #took = false

  /** One compare-and-swap: the lock if it is free (or this thread re-enters its RLock). */
  #tryOnce(): boolean {
    if (this.#reenter()) return true
    const a = this.#word()
    const w = this.#w
    const me = this.#token()
    const seen = Atomics.compareExchange(a, w, 0, me)
    if (seen === 0) {
      this.#took = true
      this.#recordOwner(a, w, me)
      return true
    }
    // Owner bits all ones: dead forever; the native path throws the error.
    if ((seen & TOKEN_MASK) === TOKEN_MASK) return this.acquire({ timeout: 0 })
    return false
  }

  /**
   * The lock, if the thread holding it died: whether it lives is a system call's
   * question, asked at most once a slice per object (the native try takes a dead
   * holder's lock over); `false` otherwise.
   */
  #takeFromDead(): boolean {
    const now = performance.now()
    if (now - this.#askedAt < RECHECK_MS || (Atomics.load(this.#word(), this.#w) & TOKEN_MASK) === this.#token()) return false
    this.#askedAt = now
    const { id } = internals(this.memory)
    let code: number
    try {
      code = native(() => binding.lockAcquire(id, this.offset, 0))
    } catch (e) {
      // Since the check above, a waiter thread took the lock for a pending acquireAsync
      // of this thread (another task's): held, so the try fails.
      if (e instanceof ShmError && e.code === 'ERR_SHM_DEADLOCK') return false
      throw e
    }
    this.#took = outcome(code) === Code.OK
    return this.#acquired(code, 0, false)
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
    let t0 = 0
    return acquireAsyncWith(
      options,
      // A dead holder is the wait's to find (it is traced as one), unless there is no wait.
      (only) => this.#try(only),
      (timeout) => {
        t0 = waitStart()
        return binding.lockAcquireAsync(internals(this.memory).id, this.offset, timeout)
      },
      (code) => this.#acquired(code, t0, true),
    )
  }

  /**
   * Releases the lock.
   * @throws ShmError `ERR_SHM_NOT_OWNER` when this thread does not hold it
   */
  release(): void {
    if (this.#short) {
      const a = this.#i32
      const w = this.#w
      const me = this.#me
      let seen: number
      try {
        // Ours with nobody waiting → free.
        seen = Atomics.compareExchange(a, w, me, 0)
      } catch {
        return this.#releaseSlow()
      }
      if (seen === me) {
        if (GUARD[0] !== 0) checkIntact(this.memory)
        return
      }
    }
    this.#releaseSlow()
  }

  #releaseSlow(): void {
    const a = this.#word()
    const w = this.#w
    if (this.#leave()) return
    const me = this.#token()
    // Fast path: ours with nobody waiting → free.
    if (Atomics.compareExchange(a, w, me, 0) === me) {
      if (GUARD[0] !== 0) checkIntact(this.memory)
      return
    }
    const cur = Atomics.load(a, w)
    if (GUARD[0] !== 0) checkIntact(this.memory)
    if ((cur & TOKEN_MASK) !== me) throw notOwner()
    const { id } = internals(this.memory)
    if (cur & OWNER_DIED) {
      this.#ownerDied = false
      native(() => binding.lockRelease(id, this.offset))
      return
    }
    // Waiters (bit 31 makes the int32 negative): free it, then wake one.
    if (Atomics.exchange(a, w, 0) < 0) native(() => binding.lockWake(id, this.offset, this.#handOffs.due() ? 1 : 0))
  }

  /**
   * Runs `fn` holding the lock, releasing it afterwards even if `fn` throws. If the lock
   * was taken over from a holder that died, {@link ownerDied} is `true` inside `fn`:
   * repair the data and call {@link markConsistent} there, or the release makes the lock
   * `ERR_SHM_NOT_RECOVERABLE` for every process.
   */
  withLock<R>(fn: () => R): R {
    if (typeof fn !== 'function') throw typeError(`The "fn" argument must be a function; got ${describe(fn)}`)
    this.acquire()
    try {
      return fn()
    } finally {
      // Released inline where it can be: if `fn` overflowed the stack at its very call, a
      // call to release() may not fit where the builtin acquire() ran one frame deeper
      // (its compare-and-swap) does; nor may a getter (`a.length`): plain element loads
      // and stores, and that builtin (see #recordOwner). Held by this thread without
      // OWNER_DIED (a closed mapping's array reads undefined): an inner level of an RLock
      // is left, the last one frees the word; anything else takes release().
      const a = this.#i32
      const w = this.#w
      let v = a[w]
      // (A subclass's own release() is called, as ever.)
      const mine = (v & HELD_MASK) === this.#me && this.release === Lock.prototype.release
      const depth = mine && this.#reentrant ? a[w + 1] : 1
      if (mine && depth > 1) {
        a[w + 1] = depth - 1
      } else if (mine && depth === 1) {
        if (this.#reentrant) a[w + 1] = 0
        // Only WAITERS can change under us.
        while (Atomics.compareExchange(a, w, v, 0) !== v) v = a[w]
        // Sleepers are woken; if the wake cannot be made, they re-check within RECHECK_MS.
        if (v < 0) native(() => binding.lockWake(internals(this.memory).id, this.offset, this.#handOffs.due() ? 1 : 0))
        if (GUARD[0] !== 0) checkIntact(this.memory)
      } else {
        this.release()
      }
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
    const v = Atomics.load(this.#word(), this.#w)
    if (GUARD[0] !== 0) checkIntact(this.memory)
    return (v & TOKEN_MASK) !== 0
  }

  /**
   * Who holds the lock now, in any process: the holding thread's pid and thread id, as
   * it recorded them (each in its own PID namespace, so across containers they are for
   * people to read), or `null` when nobody holds it. `{ pid: 0, tid: 0 }` while a holder
   * has not recorded itself yet (the moment between taking the word and writing its
   * name), or never does (a C peer that skips it).
   */
  get owner(): LockOwner | null {
    return lockOwnerAt(this.memory, this.offset)
  }

  /**
   * `true` while this thread holds the lock it took over from a holder that died, until
   * {@link markConsistent}. Read from the lock word, so every object of the record says
   * the same: a `Condition`'s wait that took it over (through `cond.lock`, which `revive`
   * makes a separate object from a `Lock` revived beside it) shows here too.
   */
  get ownerDied(): boolean {
    const v = Atomics.load(this.#word(), this.#w)
    if (GUARD[0] !== 0) checkIntact(this.memory)
    if ((v & OWNER_DIED) === 0) return false
    // Only then: whether this thread holds it (which may claim its token here, once; a
    // read-only mapping, which cannot claim one, holds nothing).
    try {
      return this.#mine(v)
    } catch (e) {
      if (e instanceof ShmError && e.code === 'EACCES') return false
      throw e
    }
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
