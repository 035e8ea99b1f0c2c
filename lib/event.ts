/**
 * {@link Event}: a flag that threads of any processes wait for (Python's
 * `threading.Event`). One 32-bit word holds it.
 *
 * ## The record (32 bytes, kind tag 7 at offset 8)
 *
 * | bits of the word at 0 | meaning                                                    |
 * |-----------------------|------------------------------------------------------------|
 * | 0                     | `SET`                                                      |
 * | 1                     | `WAITERS`: someone may sleep on the word: `set()` must wake |
 * | 2..31                 | generation: bumped by every `set()` that sets the flag     |
 *
 * | who      | does                                                                        |
 * |----------|-----------------------------------------------------------------------------|
 * | set      | CAS `v → (gen + 1, SET)` if not set; if `WAITERS` was set, wake everyone    |
 * | clear    | CAS `v → v & ~SET`                                                          |
 * | wait     | `SET` → `true`; else remember the generation, CAS in `WAITERS`, sleep while the word holds that value; a new generation → `true` (a `set()` happened, even if a `clear()` followed, as in Python); timeout → `false` |
 * @module
 */
import { openWords } from './errors.js'
import { type Handle, handleIn, handleOf, registerReviver } from './handles.js'
import { type AcquireOptions, type AsyncWaitOptions, Kind, type LockHome } from './lock.js'
import { checkIntact, GUARD, type MappedMemory, memoryOfHandle, writable } from './memory.js'
import { allocatePlace, atPlace, checkPlace, claimKind, takePlace } from './place.js'
import { asyncWait, blockingWait, type Steps, wakeWord } from './word.js'

const SET = 1
const WAITERS = 2
const GEN = 4
/** Bytes of an event record. */
export const EVENT_SIZE = 32

/**
 * A flag shared between processes and worker threads: {@link set} wakes every thread
 * waiting for it, {@link clear} resets it, {@link wait} blocks until it is set.
 */
export class Event {
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
   * Allocates a new (clear) event in shared memory.
   * @param where - a `Heap`, or a managed `MappedMemory` (its heap is used)
   */
  constructor(where: LockHome | MappedMemory) {
    ;({ memory: this.memory, offset: this.offset } = takePlace() ?? allocatePlace(where, 64))
    const win = writable(this.memory).window(this.offset, EVENT_SIZE)
    this.#i32 = win.i32
    this.#w = (this.offset - win.start) >>> 2
    this.$shmutils = handleIn(this.memory, (m) => Object.freeze({ $shmutils: 'Event', segment: m.segment, offset: this.offset, memory: m }))
    claimKind(this.#i32, this.#w + 2, Kind.EVENT, 'Event', this.offset)
  }

  /**
   * The event whose 32-byte record is at `offset` in `memory` (4-byte aligned; a zeroed
   * record is a clear event).
   * @throws RangeError for an offset that is misaligned or does not fit; TypeError for a
   *   record of another kind
   */
  static at(memory: MappedMemory, offset: number): Event {
    checkPlace(memory, offset, EVENT_SIZE)
    return atPlace(memory, offset, () => new Event(memory))
  }

  #a(): Int32Array {
    return openWords(this.#i32, 'the event\'s mapping')
  }

  /** Whether the flag is set. */
  get isSet(): boolean {
    const set = (Atomics.load(this.#a(), this.#w) & SET) !== 0
    if (GUARD[0] !== 0) checkIntact(this.memory)
    return set
  }

  /** Sets the flag and wakes every waiter (in every process). */
  set(): void {
    const a = this.#a()
    let v = Atomics.load(a, this.#w)
    while (!(v & SET)) {
      const seen = Atomics.compareExchange(a, this.#w, v, ((v & ~(SET | WAITERS)) + GEN) | SET)
      if (seen === v) {
        if (v & WAITERS) wakeWord(this.memory, this.offset)
        break
      }
      v = seen
    }
    if (GUARD[0] !== 0) checkIntact(this.memory)
  }

  /** Clears the flag: waits block again until the next {@link set}. */
  clear(): void {
    const a = this.#a()
    let v = Atomics.load(a, this.#w)
    while (v & SET) {
      const seen = Atomics.compareExchange(a, this.#w, v, v & ~SET)
      if (seen === v) break
      v = seen
    }
    if (GUARD[0] !== 0) checkIntact(this.memory)
  }

  /**
   * Blocks this thread until the flag is set.
   * @returns `true` once set (also if it was cleared again right after), `false` when
   *   `timeout` ran out
   */
  wait(options?: number | AcquireOptions): boolean {
    return blockingWait(this.memory, options, (timeout) => this.#steps(timeout))
  }

  /**
   * {@link wait} without blocking the event loop.
   * @throws (rejects) AbortError when `signal` aborts
   */
  waitAsync(options?: number | AsyncWaitOptions): Promise<boolean> {
    return asyncWait(this.memory, options, (timeout) => this.#steps(timeout))
  }

  *#steps(timeout: number | undefined): Steps<boolean> {
    const a = this.#a()
    const w = this.#w
    const until = timeout === undefined ? Infinity : performance.now() + timeout
    let v = Atomics.load(a, w)
    const gen = v >>> 2
    for (;;) {
      if (GUARD[0] !== 0) checkIntact(this.memory)
      if (v & SET || v >>> 2 !== gen) return true
      if (!(v & WAITERS)) {
        const seen = Atomics.compareExchange(a, w, v, v | WAITERS)
        if (seen !== v) {
          v = seen
          continue
        }
        v |= WAITERS
      }
      const left = until - performance.now()
      if (left <= 0) return this.#setSince(a, gen)
      try {
        yield { offset: this.offset, expected: v, ms: left === Infinity ? undefined : left }
      } catch (e) {
        // An abort thrown in at the sleep: a set() that came first wins over it.
        if (a.length !== 0 && GUARD[0] === 0 && this.#setSince(a, gen)) return true
        throw e
      }
      v = Atomics.load(a, w)
    }
  }

  /** Whether the event is set, or was set since generation `gen` (a last look). */
  #setSince(a: Int32Array, gen: number): boolean {
    const v = Atomics.load(a, this.#w)
    return (v & SET) !== 0 || v >>> 2 !== gen
  }

  /** A handle that `revive` turns into the same event in another process. */
  toJSON(): Handle {
    return handleOf(this.$shmutils, 'event')
  }
}

registerReviver('Event', (h) => Event.at(memoryOfHandle(h), h.offset))
