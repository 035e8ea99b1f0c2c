/**
 * {@link Semaphore}: a counting semaphore whose count is a futex word in shared memory.
 * Taking and returning units is a compare-and-swap in JavaScript; only sleeping and
 * waking cross into Rust (`src-rs/sync/semaphore.rs` documents the word).
 * @module
 */
import { checkInteger, checkTimeoutArg } from './args.js'
import { closedError, native, rangeError } from './errors.js'
import { type Handle, handleIn, handleOf, registerReviver } from './handles.js'
import { type AcquireOptions, allocateRecord, type AsyncWaitOptions, checkRecordAt, type LockHome } from './lock.js'
import { internals, type MappedMemory, memoryOfHandle } from './memory.js'
import { binding } from './native.js'
import { acquireAsyncWith, Code, outcome, throwIfFailed } from './waits.js'

/** The count bits of the word; bit 31 means "someone may sleep: wake on release". */
const COUNT_MASK = 0x7fff_ffff
/**
 * The largest count.
 * @category Locks and waiting
 */
export const SEMAPHORE_MAX = COUNT_MASK

let atPlace: { memory: MappedMemory; offset: number } | null = null

/**
 * A process-shared counting semaphore, usable from any process or worker thread that
 * maps the segment. Units are not owned: any thread may release, and units taken by a
 * process that dies are not given back (use a `Lock` where a dead holder must be
 * noticed).
 * @example
 * ```ts
 * const slots = new Semaphore(mem, 2)   // at most two holders at a time, in any process
 * await slots.acquireAsync()            // or acquire(), acquire(100), tryAcquire()
 * try { await render() } finally { slots.release() }
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

  /**
   * Allocates a new semaphore's record in shared memory with `initial` units.
   * @param where - a `Heap`, or a managed `MappedMemory` (its heap is used)
   * @param initial - units available at first, 0 to 2^31 - 1
   * @throws TypeError/RangeError for a bad `initial`
   */
  constructor(where: LockHome | MappedMemory, initial: number) {
    const place = atPlace
    atPlace = null
    if (place === null) checkInteger('initial', initial, 0, SEMAPHORE_MAX)
    ;({ memory: this.memory, offset: this.offset } = place ?? allocateRecord(where, 'Semaphore'))
    this.#i32 = internals(this.memory).i32
    this.#w = this.offset >> 2
    this.$shmutils = handleIn(this.memory, (m) => Object.freeze({ $shmutils: 'Semaphore', segment: m.segment, offset: this.offset, memory: m }))
    if (place === null || initial !== undefined) Atomics.store(this.#i32, this.#w, initial)
  }

  /**
   * The semaphore whose 32-byte record is at `offset` in `memory` (4-byte aligned). With
   * `initial` the count is set (do that once, before anyone uses it); without, the record
   * is used as it is (a zeroed record has no units).
   * @throws RangeError for an offset that is misaligned or does not fit, a bad `initial`
   */
  static at(memory: MappedMemory, offset: number, initial?: number): Semaphore {
    checkRecordAt(memory, offset)
    if (initial !== undefined) checkInteger('initial', initial, 0, SEMAPHORE_MAX)
    atPlace = { memory, offset }
    try {
      return new Semaphore(memory, initial as number)
    } finally {
      atPlace = null
    }
  }

  #word(): Int32Array {
    const a = this.#i32
    if (a.length === 0) throw closedError('the semaphore\'s mapping')
    return a
  }

  /** Units available now. */
  get value(): number {
    return Atomics.load(this.#word(), this.#w) & COUNT_MASK
  }

  /** Takes a unit if one is available now. */
  tryAcquire(): boolean {
    const a = this.#word()
    const w = this.#w
    let v = Atomics.load(a, w)
    while ((v & COUNT_MASK) !== 0) {
      // v - 1 keeps bit 31 (the int32 stays negative when it is set).
      const seen = Atomics.compareExchange(a, w, v, v - 1)
      if (seen === v) return true
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
    if (this.tryAcquire()) return true
    if (timeout === 0) return false
    const { id } = internals(this.memory)
    return native(() => binding.semAcquire(id, this.offset, timeout))
  }

  /**
   * Takes a unit without blocking the event loop (the wait runs on a dedicated native
   * thread). If a unit is taken at the very moment of an abort, the promise may still
   * resolve `true`: the unit is then ours.
   * @returns `true` when taken, `false` when `timeout` ran out
   * @throws (rejects) AbortError; ShmError `ERR_SHM_CLOSED`; TypeError/RangeError
   */
  acquireAsync(options?: number | AsyncWaitOptions): Promise<boolean> {
    return acquireAsyncWith(
      options,
      () => this.tryAcquire(),
      (timeout) => binding.semAcquireAsync(internals(this.memory).id, this.offset, timeout),
      (code) => {
        throwIfFailed(code)
        return outcome(code) === Code.OK
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
    let v = Atomics.load(a, w)
    for (;;) {
      const c = v & COUNT_MASK
      if (c + n > SEMAPHORE_MAX) throw rangeError(`The "n" argument ${n} would raise the semaphore's value ${c} above ${SEMAPHORE_MAX}`)
      // Clears bit 31: we wake the sleepers it announced; those that then take a unit
      // set it again (src-rs/sync/semaphore.rs).
      const seen = Atomics.compareExchange(a, w, v, c + n)
      if (seen === v) break
      v = seen
    }
    if (v < 0) {
      const { id } = internals(this.memory)
      native(() => binding.semWake(id, this.offset, n))
    }
  }

  /** A handle that `revive` turns into the same semaphore in another process. */
  toJSON(): Handle {
    return handleOf(this.$shmutils, 'semaphore')
  }
}

registerReviver('Semaphore', (h) => Semaphore.at(memoryOfHandle(h), h.offset))
