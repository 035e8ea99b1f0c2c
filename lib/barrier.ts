/**
 * {@link Barrier}: `parties` threads (in any processes) wait until all have arrived,
 * then all go on. One 32-bit word holds the whole state, so every transition is one
 * compare-and-swap.
 *
 * ## The record (32 bytes, kind tag 6 at offset 8)
 *
 * | offset | field     | meaning                                                        |
 * |-------:|-----------|----------------------------------------------------------------|
 * | 0      | `state`   | bit 31 `BROKEN`; bits 16..30 generation; bits 0..15 arrived in this generation. The futex word |
 * | 4      | `parties` | threads that must arrive (1..65535)                            |
 * | 8      | `kind`    | 6                                                              |
 *
 * | who            | does                                                                   |
 * |----------------|------------------------------------------------------------------------|
 * | arrive         | CAS `(g, c) → (g, c + 1)`; its arrival index is `c`; sleep until the generation is not `g` |
 * | the last one   | CAS `(g, parties − 1) → (g + 1, 0)`; wake everyone; returns `parties − 1` |
 * | timeout, abort | CAS set `BROKEN` (if still generation `g`); wake everyone: every waiter, now and later, gets `ERR_SHM_BROKEN` |
 *
 * As in Python's `threading.Barrier`, a wait that times out breaks the barrier for
 * everyone (otherwise the others would wait for a party that left). A party that dies
 * while waiting has been counted; one that dies before arriving leaves the others
 * waiting until their timeouts break the barrier. A broken barrier stays broken: make a
 * new one.
 * @module
 */
import { checkInteger } from './args.js'
import { openWords, ShmError } from './errors.js'
import { type Handle, handleIn, handleOf, registerReviver } from './handles.js'
import { type AcquireOptions, type AsyncWaitOptions, Kind, type LockHome } from './lock.js'
import { checkIntact, GUARD, internals, type MappedMemory, memoryOfHandle, writable } from './memory.js'
import { allocatePlace, atPlace, checkPlace, claimKind, takePlace } from './place.js'
import { asyncWait, blockingWait, type Steps, wakeWord } from './word.js'

const BROKEN = 0x8000_0000 | 0
const COUNT = 0xffff
const GEN_SHIFT = 16
const GEN_MASK = 0x7fff
/** Bytes of a barrier record. */
export const BARRIER_SIZE = 32
/** The most parties a barrier takes. */
export const BARRIER_MAX_PARTIES = COUNT

/** The error of an async wait that could not get a waiter thread (`EAGAIN` from `pthread_create`). */
function noWaiterThread(e: unknown): boolean {
  return e instanceof ShmError && e.code === 'EAGAIN' && e.syscall === 'pthread_create'
}

/** `ERR_SHM_BROKEN`: the barrier was broken by a wait that timed out or was aborted. */
function brokenError(): ShmError {
  return new ShmError('the barrier is broken (a wait on it timed out or was aborted)', { code: 'ERR_SHM_BROKEN' })
}

/**
 * A barrier for `parties` threads of any processes: each {@link wait} blocks until
 * `parties` waits have arrived, then all return (each with its arrival index, 0 to
 * `parties − 1`) and the barrier is ready for the next round.
 */
export class Barrier {
  /** The mapping holding the record. */
  readonly memory: MappedMemory
  /** Byte offset of the record in {@link memory}. */
  readonly offset: number
  /**
   * The handle ({@link toJSON}), as an own property so a structured clone (`postMessage`,
   * `workerData`) carries it to `revive`; a symbol if the mapping cannot be shared.
   */
  readonly $shmutils: Handle | symbol
  #i32: Int32Array
  #w: number

  /**
   * Allocates a barrier for `parties` threads in shared memory.
   * @param where - a `Heap`, or a managed `MappedMemory` (its heap is used)
   * @throws TypeError/RangeError for a bad `parties` (an integer from 1 to 65535)
   */
  constructor(where: LockHome | MappedMemory, parties: number) {
    const place = takePlace()
    if (!place) checkInteger('parties', parties, 1, BARRIER_MAX_PARTIES)
    ;({ memory: this.memory, offset: this.offset } = place ?? allocatePlace(where, 64))
    const win = writable(this.memory).window(this.offset, BARRIER_SIZE)
    this.#i32 = win.i32
    this.#w = (this.offset - win.start) >>> 2
    this.$shmutils = handleIn(this.memory, (m) => Object.freeze({ $shmutils: 'Barrier', segment: m.segment, offset: this.offset, memory: m }))
    claimKind(this.#i32, this.#w + 2, Kind.BARRIER, 'Barrier', this.offset)
    if (!place) this.#i32[this.#w + 1] = parties
    else if (parties !== undefined) {
      checkInteger('parties', parties, 1, BARRIER_MAX_PARTIES)
      Atomics.store(this.#i32, this.#w + 1, parties)
      // Re-initialized: not broken, nobody arrived, a new generation (a waiter left over
      // from before, against the advice, is released rather than counted).
      const v = Atomics.load(this.#i32, this.#w)
      Atomics.store(this.#i32, this.#w, ((((v >>> GEN_SHIFT) & GEN_MASK) + 1) & GEN_MASK) << GEN_SHIFT)
      wakeWord(this.memory, this.offset)
    }
  }

  /**
   * The barrier whose 32-byte record is at `offset` in `memory` (4-byte aligned). With
   * `parties` the record is (re)initialized for that many (do that once, before anyone
   * waits); without, it is used as it is.
   * @throws RangeError for an offset that is misaligned or does not fit, a bad `parties`;
   *   TypeError for a record of another kind
   */
  static at(memory: MappedMemory, offset: number, parties?: number): Barrier {
    checkPlace(memory, offset, BARRIER_SIZE)
    return atPlace(memory, offset, () => new Barrier(memory, parties as number))
  }

  #a(): Int32Array {
    return openWords(this.#i32, 'the barrier\'s mapping')
  }

  /** Threads that must arrive. */
  get parties(): number {
    return this.#load(1)
  }

  /** Threads waiting in the current round; 0 once the barrier is broken (every waiter is released). */
  get waiting(): number {
    const v = this.#load(0)
    return v & BROKEN ? 0 : v & COUNT
  }

  /** Whether a timed-out or aborted wait broke the barrier. */
  get broken(): boolean {
    return (this.#load(0) & BROKEN) !== 0
  }

  /** The word `i` of the record, checked to come from a page the mapping still has. */
  #load(i: number): number {
    const v = Atomics.load(this.#a(), this.#w + i)
    if (GUARD[0] !== 0) checkIntact(this.memory)
    return v
  }

  /**
   * Arrives and blocks this thread until all parties have.
   * @returns this thread's arrival index (0 for the first, `parties − 1` for the last)
   * @throws ShmError `ETIMEDOUT` when `timeout` ran out (the barrier is then broken);
   *   `ERR_SHM_BROKEN` when the barrier is (or gets) broken
   */
  wait(options?: number | AcquireOptions): number {
    return blockingWait(this.memory, options, (timeout) => this.#steps(timeout))
  }

  /**
   * {@link wait} without blocking the event loop. An abort breaks the barrier, as a
   * timeout does.
   * @throws (rejects) AbortError; as {@link wait}
   */
  waitAsync(options?: number | AsyncWaitOptions): Promise<number> {
    return asyncWait(this.memory, options, (timeout) => this.#steps(timeout))
  }

  *#steps(timeout: number | undefined): Steps<number> {
    const a = this.#a()
    const w = this.#w
    const parties = this.#load(1)
    if (!(parties >= 1 && parties <= BARRIER_MAX_PARTIES)) throw new ShmError(`corrupt Barrier record at ${this.offset}: ${parties} parties`, { code: 'ERR_SHM_CORRUPT' })
    const until = timeout === undefined ? Infinity : performance.now() + timeout
    // Arrive.
    let v = Atomics.load(a, w)
    let index: number
    for (;;) {
      if (v & BROKEN) throw brokenError()
      const c = v & COUNT
      const g = (v >>> GEN_SHIFT) & GEN_MASK
      const last = c + 1 >= parties
      const next = last ? ((g + 1) & GEN_MASK) << GEN_SHIFT : v + 1
      const seen = Atomics.compareExchange(a, w, v, next)
      if (seen !== v) {
        v = seen
        continue
      }
      if (last) {
        wakeWord(this.memory, this.offset)
        if (GUARD[0] !== 0) checkIntact(this.memory)
        return c
      }
      index = c
      v = next
      break
    }
    // Wait for the round to end.
    const gen = (v >>> GEN_SHIFT) & GEN_MASK
    let ok = false
    // A close of the mapping while an async wait sleeps below breaks the round before the
    // views go (afterwards the finally could not, and the others would pass without this
    // party, which never arrived for them).
    let unhook: (() => void) | null = null
    try {
      for (;;) {
        const now = Atomics.load(a, w)
        if (((now >>> GEN_SHIFT) & GEN_MASK) !== gen) {
          ok = true
          if (GUARD[0] !== 0) checkIntact(this.memory)
          return index
        }
        if (now & BROKEN) {
          ok = true // broken by someone else: nothing to undo
          throw brokenError()
        }
        const left = until - performance.now()
        if (left <= 0) {
          ok = true
          // The last party may have arrived since the look above: then the round is
          // over and this wait succeeded.
          if (!this.#break(a, gen)) throw new ShmError('timed out waiting at the barrier (it is broken now)', { code: 'ETIMEDOUT' })
          if (GUARD[0] !== 0) checkIntact(this.memory)
          return index
        }
        unhook ??= internals(this.memory).beforeClose(() => {
          if (ok) return
          ok = true
          this.#break(a, gen)
        })
        try {
          yield { offset: this.offset, expected: now, ms: left === Infinity ? undefined : left }
        } catch (e) {
          // No waiter thread to be had (an async wait): the wait started nothing, so it
          // leaves the round rather than break it, unless the round ended meanwhile.
          if (!noWaiterThread(e)) throw e
          ok = true
          if (this.#leave(a, gen)) {
            if (GUARD[0] !== 0) checkIntact(this.memory)
            return index
          }
          throw e
        }
      }
    } finally {
      unhook?.()
      // An abort thrown in at the sleep (or a close): break the round, unless it ended
      // meanwhile, in which case the success wins (the `return` replaces the error).
      if (!ok && this.#break(a, gen)) {
        if (GUARD[0] !== 0) checkIntact(this.memory)
        // eslint-disable-next-line no-unsafe-finally -- deliberate: a completed round wins over the abort
        return index
      }
    }
  }

  /**
   * Breaks the barrier if it is still in generation `gen`, and wakes everyone; nothing if
   * this process closed the mapping meanwhile (its views are gone: the wait ends with
   * `ERR_SHM_CLOSED`, which must not turn into a TypeError here).
   * @returns whether round `gen` had ended (the generation moved on) before it could be
   *   broken: the wait that was giving up succeeded after all
   */
  #break(a: Int32Array, gen: number): boolean {
    if (a.length === 0) return false
    let v = Atomics.load(a, this.#w)
    while (((v >>> GEN_SHIFT) & GEN_MASK) === gen && !(v & BROKEN)) {
      const seen = Atomics.compareExchange(a, this.#w, v, v | BROKEN)
      if (seen === v) break
      v = seen
    }
    wakeWord(this.memory, this.offset)
    return ((v >>> GEN_SHIFT) & GEN_MASK) !== gen
  }

  /**
   * Takes this party's arrival back if round `gen` is still on and not broken.
   * @returns whether round `gen` had ended before: the wait succeeded after all
   */
  #leave(a: Int32Array, gen: number): boolean {
    let v = Atomics.load(a, this.#w)
    while (((v >>> GEN_SHIFT) & GEN_MASK) === gen && !(v & BROKEN) && (v & COUNT) > 0) {
      const seen = Atomics.compareExchange(a, this.#w, v, v - 1)
      if (seen === v) return false
      v = seen
    }
    return ((v >>> GEN_SHIFT) & GEN_MASK) !== gen
  }

  /** A handle that `revive` turns into the same barrier in another process. */
  toJSON(): Handle {
    return handleOf(this.$shmutils, 'barrier')
  }
}

registerReviver('Barrier', (h) => Barrier.at(memoryOfHandle(h), h.offset))
