/**
 * {@link Semaphore}: a counting semaphore whose count is a futex word in shared memory.
 * Taking and returning units is a compare-and-swap in JavaScript; only sleeping and
 * waking cross into Rust (`src-rs/sync/semaphore.rs` documents the word). An *undo*
 * semaphore (`{ undo: true }`) keeps a table of who holds units and always goes through
 * Rust (`src-rs/sync/undo.rs`).
 * @module
 */
import { checkInteger, checkOptions, checkTimeoutArg, describe } from './args.js'
import { native, openWords, rangeError, typeError } from './errors.js'
import { type Handle, handleIn, handleOf, registerReviver } from './handles.js'
import { type AcquireOptions, allocateRecord, type AsyncWaitOptions, checkKind, checkRecordAt, HandOffs, Kind, LOCK_SIZE, type LockHome } from './lock.js'
import { checkIntact, GUARD, internals, type MappedMemory, memoryOfHandle } from './memory.js'
import { binding } from './native.js'
import { traceWait, waitStart } from './trace.js'
import { acquireAsyncWith, Code, outcome, throwIfFailed } from './waits.js'

/** The count bits of the word; bit 31 means "someone may sleep: wake on release". */
const COUNT_MASK = 0x7fff_ffff
/**
 * Int32 index, from the record's start, of `handed`: units a release handed to the
 * sleepers it woke (`src-rs/sync/semaphore.rs`, "Eventual fairness").
 */
const HANDED = 3
/**
 * The largest count.
 * @category Locks and waiting
 */
export const SEMAPHORE_MAX = COUNT_MASK
/** Holder slots of an undo semaphore unless told otherwise. */
const DEFAULT_HOLDERS = 64
/** The most holder slots an undo semaphore may have. */
const MAX_HOLDERS = 65_536

/**
 * Options of a new {@link Semaphore}.
 * @category Locks and waiting
 */
export interface SemaphoreOptions {
  /**
   * What System V's `SEM_UNDO` gives: units taken by a thread that then dies (killed,
   * exited, worker terminated) are given back, within about 50 ms of someone waiting
   * for a unit. Units belong to the thread that took them: release them from that
   * thread (a release from a thread that holds none is a plain release). Every
   * operation then goes through native code. Default `false`.
   */
  undo?: boolean
  /**
   * With `undo`: how many threads may hold units at the same time (1 to 65536; default
   * 64). Each costs 8 bytes of shared memory; a take by one thread too many fails with
   * ShmError `EAGAIN`.
   */
  holders?: number
}

/** `{ undo, holders }` checked; `holders` is 0 for a plain semaphore. */
function checkSemaphoreOptions(options: unknown): { holders: number } {
  if (options === undefined) return { holders: 0 }
  const { undo, holders } = checkOptions(options as SemaphoreOptions)
  if (undo !== undefined && typeof undo !== 'boolean') throw typeError(`The "undo" option must be a boolean; got ${describe(undo)}`)
  if (!undo) {
    if (holders !== undefined) throw typeError('The "holders" option needs "undo: true"')
    return { holders: 0 }
  }
  return { holders: holders === undefined ? DEFAULT_HOLDERS : checkInteger('holders', holders, 1, MAX_HOLDERS) }
}

let atPlace: { memory: MappedMemory; offset: number } | null = null

/**
 * A process-shared counting semaphore, usable from any process or worker thread that
 * maps the segment. Units are not owned: any thread may release. Units taken by a
 * process that dies are not given back, unless the semaphore was created with
 * `{ undo: true }` ({@link SemaphoreOptions.undo}).
 * @example
 * ```ts
 * const slots = new Semaphore(mem, 2)   // at most two holders at a time, in any process
 * await slots.acquireAsync()            // or acquire(), acquire(100), tryAcquire()
 * try { await render() } finally { slots.release() }
 * const pool = new Semaphore(mem, 4, { undo: true })  // a dead taker's units come back
 * ```
 * @category Locks and waiting
 */
export class Semaphore {
  /** The mapping holding the record. */
  readonly memory: MappedMemory
  /** Byte offset of the record in {@link memory}. */
  readonly offset: number
  /**
   * The semaphore's handle ({@link toJSON}), as an own property so a structured clone
   * carries it (see `revive`); a symbol if the mapping cannot be shared.
   */
  readonly $shmutils: Handle | symbol
  #i32: Int32Array
  #w: number
  #undo: boolean
  /** The mapping's native id (undo semaphores call native code per operation). */
  #id: number

  /**
   * Allocates a new semaphore's record in shared memory with `initial` units.
   * @param where - a `Heap`, or a managed `MappedMemory` (its heap is used)
   * @param initial - units available at first, 0 to 2^31 - 1
   * @param options - `{ undo: true }` gives a dead taker's units back
   * @throws TypeError/RangeError for a bad `initial` or options
   */
  constructor(where: LockHome | MappedMemory, initial: number, options?: SemaphoreOptions) {
    const place = atPlace
    atPlace = null
    const { holders } = checkSemaphoreOptions(options)
    if (place === null) checkInteger('initial', initial, 0, SEMAPHORE_MAX)
    const size = holders === 0 ? 64 : binding.semUndoSize(holders)
    ;({ memory: this.memory, offset: this.offset } = place ?? allocateRecord(where, 'Semaphore', Kind.SEMAPHORE, size))
    const mem = internals(this.memory)
    const win = mem.window(this.offset, LOCK_SIZE)
    const i32 = (this.#i32 = win.i32)
    const w = (this.#w = (this.offset - win.start) >>> 2)
    this.#id = mem.id
    this.$shmutils = handleIn(this.memory, (m) => Object.freeze({ $shmutils: 'Semaphore', segment: m.segment, offset: this.offset, memory: m }))
    if (place === null || initial !== undefined) {
      if (holders !== 0) native(() => binding.semUndoFormat(mem.id, this.offset, holders, initial))
      else {
        Atomics.store(i32, w + 1, 0)
        Atomics.store(i32, w + 2, Kind.SEMAPHORE)
        Atomics.store(i32, w + HANDED, 0)
        Atomics.store(i32, w, initial)
      }
    }
    this.#undo = Atomics.load(i32, w + 1) !== 0
  }

  /**
   * The semaphore whose record is at `offset` in `memory` (4-byte aligned; 32 bytes, or
   * with `undo` as many as an undo table of `holders` needs). With `initial` the record
   * is set up (do that once, before anyone uses it); without, it is used as it is (a
   * zeroed record is a plain semaphore with no units; an undo semaphore is recognised).
   * @throws RangeError for an offset that is misaligned or does not fit, a bad `initial`
   */
  static at(memory: MappedMemory, offset: number, initial?: number, options?: SemaphoreOptions): Semaphore {
    checkRecordAt(memory, offset)
    if (initial !== undefined) checkInteger('initial', initial, 0, SEMAPHORE_MAX)
    else {
      if (options !== undefined) throw typeError('The "options" argument needs "initial": it sets the semaphore up')
      checkKind(memory, offset, [Kind.SEMAPHORE], 'Semaphore')
    }
    atPlace = { memory, offset }
    try {
      return new Semaphore(memory, initial as number, options)
    } finally {
      atPlace = null
    }
  }

  /** Whether units taken by a thread that dies are given back ({@link SemaphoreOptions.undo}). */
  get undo(): boolean {
    return this.#undo
  }

  /** Units this thread holds (taken and not yet released); always 0 without `undo`. */
  get held(): number {
    if (!this.#undo) return 0
    this.#word()
    return this.#undoOp(2, 0)
  }

  /** An undo semaphore's native operation (`binding.semUndo`); the caller checked the mapping is open. */
  #undoOp(op: number, n: number): number {
    const r = native(() => binding.semUndo(this.#id, this.offset, op, n))
    if (GUARD[0] !== 0) checkIntact(this.memory)
    return r
  }

  #word(): Int32Array {
    const a = openWords(this.#i32, 'the semaphore\'s mapping')
    if (GUARD[0] !== 0) checkIntact(this.memory)
    return a
  }

  /** Units available now (with those a release handed to the waiters it woke). */
  get value(): number {
    const a = this.#word()
    return (Atomics.load(a, this.#w) & COUNT_MASK) + (this.#undo ? 0 : Atomics.load(a, this.#w + HANDED) >>> 0)
  }

  /**
   * Takes a unit if one is available now (also one handed to sleepers of the semaphore
   * that none is left asleep to take).
   */
  tryAcquire(): boolean {
    if (this.#take()) return true
    // Units handed to sleepers: taken here only if none is left asleep to (natively).
    if (!this.#undo && Atomics.load(this.#word(), this.#w + HANDED) !== 0) return native(() => binding.semAcquire(this.#id, this.offset, 0))
    return false
  }

  /** Takes a unit of the count if there is one now (a waiting acquire goes on natively). */
  #take(): boolean {
    const a = this.#word()
    const w = this.#w
    if (this.#undo) return this.#undoOp(0, 0) === 1
    let v = Atomics.load(a, w)
    while ((v & COUNT_MASK) !== 0) {
      // v - 1 keeps bit 31 (the int32 stays negative when it is set).
      const seen = Atomics.compareExchange(a, w, v, v - 1)
      if (seen === v) {
        if (GUARD[0] !== 0) checkIntact(this.memory)
        return true
      }
      v = seen
    }
    return false
  }

  /**
   * Takes a unit, blocking this thread while there is none.
   * @returns `true` when taken, `false` when `timeout` ran out
   */
  acquire(options?: number | AcquireOptions): boolean {
    const timeout = options === undefined ? undefined : checkTimeoutArg(options)
    if (this.#take()) return true
    if (timeout === 0) return this.tryAcquire()
    const { id } = internals(this.memory)
    const t0 = waitStart()
    const taken = native(() => binding.semAcquire(id, this.offset, timeout))
    if (GUARD[0] !== 0) checkIntact(this.memory)
    if (t0 !== 0) traceWait(this, 'Semaphore', t0, taken ? 'acquired' : 'timed-out', false)
    return taken
  }

  /**
   * Takes a unit without blocking the event loop (the wait runs on a dedicated native
   * thread). If a unit is taken at the very moment of an abort, the promise may still
   * resolve `true`: the unit is then ours.
   * @returns `true` when taken, `false` when `timeout` ran out
   * @throws (rejects) AbortError; ShmError `ERR_SHM_CLOSED`; TypeError/RangeError
   */
  acquireAsync(options?: number | AsyncWaitOptions): Promise<boolean> {
    let t0 = 0
    return acquireAsyncWith(
      options,
      () => this.#take(),
      (timeout) => {
        t0 = waitStart()
        return binding.semAcquireAsync(internals(this.memory).id, this.offset, timeout)
      },
      (code) => {
        throwIfFailed(code, this.memory)
        if (GUARD[0] !== 0) checkIntact(this.memory)
        const taken = outcome(code) === Code.OK
        if (t0 !== 0) traceWait(this, 'Semaphore', t0, taken ? 'acquired' : 'timed-out', true)
        return taken
      },
    )
  }

  /**
   * Returns `n` units, waking as many waiters.
   * @throws RangeError for `n` < 1 or a count that would exceed 2^31 - 1
   */
  release(n = 1): void {
    checkInteger('n', n, 1, SEMAPHORE_MAX)
    const a = this.#word()
    const w = this.#w
    if (this.#undo) {
      this.#undoOp(1, n)
      return
    }
    let v = Atomics.load(a, w)
    const handed = Atomics.load(a, w + HANDED) >>> 0
    // Sleepers (bit 31), now and then: the units go to them (see the module docs of
    // src-rs/sync/semaphore.rs); back to the count if fewer are woken.
    const handOff = v < 0 && this.#handOffs.due()
    for (;;) {
      const c = v & COUNT_MASK
      if (c + handed + n > SEMAPHORE_MAX) throw rangeError(`The "n" argument ${n} would raise the semaphore's value ${c + handed} above ${SEMAPHORE_MAX}`)
      if (handOff) {
        Atomics.add(a, w + HANDED, n)
        break
      }
      // Clears bit 31: we wake the sleepers it announced; those that then take a unit
      // set it again (src-rs/sync/semaphore.rs).
      const seen = Atomics.compareExchange(a, w, v, c + n)
      if (seen === v) break
      v = seen
    }
    if (GUARD[0] !== 0) checkIntact(this.memory)
    if (v < 0) {
      const { id } = internals(this.memory)
      native(() => binding.semWake(id, this.offset, n, handOff ? 1 : 0))
    }
  }

  /** When a release of this object hands its units to sleepers. */
  readonly #handOffs = new HandOffs()

  /** A handle that `revive` turns into the same semaphore in another process. */
  toJSON(): Handle {
    return handleOf(this.$shmutils, 'semaphore')
  }
}

registerReviver('Semaphore', (h) => Semaphore.at(memoryOfHandle(h), h.offset))
