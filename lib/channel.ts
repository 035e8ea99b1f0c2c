/**
 * {@link Channel}: a bounded multi-producer multi-consumer queue of variable-size
 * messages, in a ring inside a segment's heap.
 *
 * ## Design
 *
 * Producers and consumers have a robust lock each (the two-lock queue): one producer and
 * one consumer never contend on a lock, and each takes its own uncontended in a single
 * `Atomics` compare-and-swap. A message is a record `[u32 length][payload][pad to 4]` at
 * a 32-bit byte position; `tail` (where the next record goes) belongs to producers and
 * `head` (the next record to read) to consumers, both counting bytes modulo 2^32. A
 * record may run past the ring's end and continue at its start, so any message up to
 * `capacity - 4` bytes fits.
 *
 * | who             | does (▶ = the store that commits)                                         |
 * |-----------------|----------------------------------------------------------------------------|
 * | send            | producer lock; room = capacity − (tail − head) (head as last read, read again if short); write the record at tail; journal (pos, size, seq = sent); ▶ `tail += size`; `sent = seq + 1`; unlock; wake consumers if they asked |
 * | send, full      | unlock; poll `head` a while; then read `pwake`, set `producers waiting`, and sleep on `pwake` unless `head` moved or the channel closed |
 * | receive         | consumer lock; `head ≠ tail` (tail as last read, read again if equal): decode the record; journal (pos, size, seq = received); ▶ `head += size`; `received = seq + 1`; unlock; wake producers if they asked |
 * | receive, empty  | closed (read, then `tail` again)? → end; unlock; poll `tail` a while; then read `cwake`, set `consumers waiting`, and sleep on `cwake` unless `tail` moved or the channel closed |
 * | close           | producer lock; `closed = 1`; unlock; bump and wake both wake words |
 * | wake X          | if `X waiting`: clear it, `Xwake += 1`, futex wake all on `Xwake` |
 *
 * Announcing (`waiting = 1`) then re-reading the other side's position, against
 * committing the position then reading `waiting`, all sequentially consistent: one of
 * the two sees the other, so a sleeper is never forgotten. A side announces only right
 * before it sleeps (not while it polls), so a busy stream pays no wake-ups. The sleeper
 * reads the wake word before `closed`, and `close()` sets `closed` before it bumps the
 * word: a close is either seen or wakes it. Waiters sleep in 50 ms slices anyway.
 *
 * Each object remembers the other side's position as it last read it (and its own
 * side's position after its last commit): while no other producer (consumer) moved its
 * side's position since, that value is a lower bound of the real one, so the room (the
 * queued bytes) it shows are there. A producer streaming into a ring with room, and a
 * consumer working through a backlog, then read nothing the other side writes.
 *
 * ## What a killed process leaves
 *
 * Records become visible only by the committing store of `tail`, after the whole record
 * is written, so a producer killed at any instruction never exposes a torn message: its
 * half-written bytes lie beyond `tail` and the next producer overwrites them. A consumer
 * killed before its `head` store leaves the message queued for the next consumer; after
 * it, the message is gone (the one it was being handed). The next process to take a dead
 * holder's lock gets `OWNER_DIED` and repairs the only derived state, the message
 * counters: if the journal's record ends exactly at the committed position, its
 * sequence number was committed and the counter becomes `seq + 1`. The ring never
 * wedges: the locks are robust and no state but the two positions orders anything.
 *
 * The layout is in docs/FORMAT.md.
 * @module
 */
import { checkAsyncWait, checkIndex, checkOptions, checkTimeoutArg } from './args.js'
import { checkCodec, type Codec, encoded, encodeValue, isStackOverflow, Scratch } from './codec.js'
import {
  type ContainerHome, type ContainerType, corrupt, intact, ownLock, recoverLock, SharedContainer, takeLock, takeLockAsync, viewsOf, writeHeader,
} from './container.js'
import { rangeError, ShmError } from './errors.js'
import { registerReviver } from './handles.js'
import { heapOf } from './heap.js'
import { type AsyncWaitOptions, Kind, type Lock, OWNER_DIED as LOCK_OWNER_DIED, tookOverDead } from './lock.js'
import { CHANNEL_LAYOUT } from './layouts.js'
import { type MappedMemory, memoryOfHandle } from './memory.js'
import { atPlace } from './place.js'
import { queuedMessages } from './records.js'
import { copyWords } from './utf8.js'
import { Turns } from './waits.js'
import { sleepOnWord, sleepOnWordAsync, wakeWord } from './word.js'

const { magic: MAGIC, version: VERSION } = CHANNEL_LAYOUT

/** Channel block (offsets from its start; 0..24 are the common container header). */
const C = Object.freeze({
  /** u32 ring bytes (a power of two). */
  CAPACITY: 24,
  /** u32 1 once closed. */
  CLOSED: 28,
  PRODUCER_LOCK: 64,
  /** u32 producer journal: position, size and sequence of the record being sent. */
  P_POS: 96,
  P_SIZE: 100,
  P_SEQ: 104,
  /** u32 messages sent (committed). */
  SENT: 108,
  CONSUMER_LOCK: 128,
  /** u32 consumer journal. */
  C_POS: 160,
  C_SIZE: 164,
  C_SEQ: 168,
  /** u32 messages received. */
  RECEIVED: 172,
  /** u32 byte position of the next record to write (producers'). */
  TAIL: 192,
  /** u32 1: a consumer may be sleeping on {@link C.CWAKE}. */
  CONSUMERS_WAITING: 196,
  /** u32 futex word consumers sleep on; bumped to wake them. */
  CWAKE: 200,
  /** u32 byte position of the next record to read (consumers'). */
  HEAD: 256,
  /** u32 1: a producer may be sleeping on {@link C.PWAKE}. */
  PRODUCERS_WAITING: 260,
  /** u32 futex word producers sleep on. */
  PWAKE: 264,
  /** The ring. */
  RING: 320,
})

/** The fields of one side of the queue: its journal, position, counter, and the other side's waiting flag. */
interface Side {
  readonly journal: number
  readonly position: number
  readonly counter: number
  readonly other: number
}
const PRODUCER: Side = Object.freeze({ journal: C.P_POS, position: C.TAIL, counter: C.SENT, other: C.CONSUMERS_WAITING })
const CONSUMER: Side = Object.freeze({ journal: C.C_POS, position: C.HEAD, counter: C.RECEIVED, other: C.PRODUCERS_WAITING })

/** Bytes of a record's length field. */
const LEN = 4
const MIN_CAPACITY = 64
const MAX_CAPACITY = 1 << 30
const DEFAULT_CAPACITY = 64 * 1024
/** Polls of the other side's position before a blocking wait sleeps: adapts between these. */
const MIN_SPINS = 50
const MAX_SPINS = 4000

/** Options of the {@link Channel} constructor. */
export interface ChannelOptions {
  /** Bytes of the ring (rounded up to a power of two, 64 B to 1 GiB; default 64 KiB). */
  capacity?: number
  /** How messages are stored: `'v8'` (default), `'json'`, `'string'` or `'bytes'`. */
  codec?: Codec
}

/** Options of {@link Channel.send} and {@link Channel.receive}. */
export interface ChannelWaitOptions {
  /** Milliseconds to wait at most; default forever. `0` tries once. */
  timeout?: number
}

/** Where a record that wraps around the ring's end is put together to be decoded. */
const wrapped = new Scratch()

/**
 * A bounded queue of messages between processes (and worker threads): any number of
 * producers {@link send}, any number of consumers {@link receive}; every message is
 * received exactly once, in the order each producer sent them. `send` blocks while the
 * ring is full and `receive` while it is empty (both with timeouts, and async twins that
 * never block the event loop); after {@link close}, receivers drain what is queued and
 * then end.
 *
 * ```ts
 * const jobs = new Channel<Job>(mem, { capacity: 1 << 20 })
 * worker.send({ jobs })                       // a handle; revive() it there
 * jobs.send({ id: 1 })                        // producer
 * for await (const job of jobs) handle(job)   // consumer: ends after close()
 * ```
 */
export class Channel<T = unknown> extends SharedContainer implements AsyncIterable<T> {
  #cap: number
  #ring: number
  #producer: Lock
  #consumer: Lock
  /** Int32 index of field `f`: `#w + (f >>> 2)`. */
  #w: number

  /**
   * Creates a channel in `where`'s heap.
   * @throws TypeError/RangeError for bad options; ShmError `ENOMEM`
   */
  constructor(where: ContainerHome, options?: ChannelOptions) {
    super(TYPE, () => {
      const { codec, capacity } = checkOptions(options)
      const coder = checkCodec(codec)
      const cap = ringSize(capacity)
      const heap = heapOf(where)
      const offset = heap.malloc(C.RING + cap, 64)
      const v = viewsOf(heap.memory, heap)
      v.u8.fill(0, offset, offset + C.RING)
      writeHeader(v, offset, MAGIC, Kind.CHANNEL, VERSION, coder.id)
      v.i32[(offset + C.CAPACITY) >>> 2] = cap
      return { memory: heap.memory, offset }
    })
    const { memory, offset, v } = this
    this.#w = offset >>> 2
    const cap = v.i32[this.#w + (C.CAPACITY >>> 2)]
    if (!(cap >= MIN_CAPACITY && cap <= MAX_CAPACITY && (cap & (cap - 1)) === 0) || offset + C.RING + cap > v.size) {
      throw corrupt(`the Channel at ${offset} has a ring of ${cap} bytes`)
    }
    this.#cap = cap
    this.#ring = offset + C.RING
    this.#producer = ownLock(memory, offset + C.PRODUCER_LOCK, `the Channel at ${offset}`)
    this.#consumer = ownLock(memory, offset + C.CONSUMER_LOCK, `the Channel at ${offset}`)
  }

  /**
   * The channel whose block is at `offset` of `memory` (as `toJSON()` records it).
   * @throws TypeError if there is no channel there
   */
  static at<T = unknown>(memory: MappedMemory, offset: number): Channel<T> {
    return atPlace(memory, offset, () => new Channel<T>(memory))
  }

  /** Bytes of the ring; a message (encoded) can take up to this minus 4. */
  get capacity(): number {
    return this.#cap
  }

  /** Messages queued now (sent and not yet received). */
  get length(): number {
    const i32 = this.live().i32
    const n = queuedMessages(Atomics.load(i32, this.#w + (C.SENT >>> 2)), Atomics.load(i32, this.#w + (C.RECEIVED >>> 2)))
    intact(this.memory)
    return n
  }

  /** Whether {@link close} was called (by any process). */
  get closed(): boolean {
    const closed = Atomics.load(this.live().i32, this.#w + (C.CLOSED >>> 2)) !== 0
    intact(this.memory)
    return closed
  }

  /**
   * Queues `msg`, blocking this thread while the ring is full.
   * @returns `true` once queued, `false` when `timeout` ran out
   * @throws ShmError `ERR_SHM_CLOSED` once the channel is closed; RangeError for a
   *   message larger than the ring; TypeError for one the codec cannot store
   */
  send(msg: T, options?: number | ChannelWaitOptions): boolean {
    const timeout = checkTimeoutArg(options)
    const n = this.#encode(msg)
    const src = encoded
    const until = deadline(timeout)
    for (;;) {
      if (!this.#lock(this.#producer, PRODUCER, until)) return false
      const seen = this.#trySend(src, n)
      if (seen < 0) return true
      const left = remaining(until)
      if (left === 0) return false
      if (this.#spin(C.HEAD, seen)) continue
      if (this.#announce(C.PRODUCERS_WAITING, C.PWAKE, C.HEAD, seen)) sleepOnWord(this.memory, this.offset + C.PWAKE, this.#sleepValue, left)
    }
  }

  /**
   * {@link send} without blocking the event loop: waits for room on a native waiter
   * thread. The calls of one object send in the order they were made, also when none
   * is awaited before the next (a blocking {@link send} does not wait for them).
   * @returns (resolves) `true` once queued, `false` when `timeout` ran out
   * @throws (rejects) as {@link send}; AbortError when `signal` aborts
   */
  async sendAsync(msg: T, options?: number | AsyncWaitOptions): Promise<boolean> {
    const { timeout, signal } = checkAsyncWait(options)
    const n = this.#encode(msg)
    // Nothing queued before it, a free lock and room: sent from the thread's encode
    // buffer before anything else runs (as the first turn of the loop below would,
    // without its copy).
    if (this.#sends.idle && this.#tryLock(this.#producer, PRODUCER) && this.#trySend(encoded, n) < 0) return true
    // The encoded message must survive awaits: a copy of its own.
    const own = new Scratch()
    own.ensure(0, n)
    own.bytes.set(encoded.bytes.subarray(0, n))
    const until = deadline(timeout)
    return this.#sends.run(() => this.#sendInTurn(own, n, until, signal), signal, until, () => false)
  }

  /** The pending {@link sendAsync} calls of this object: they send in call order. */
  readonly #sends = new Turns()

  /** {@link sendAsync}, once the calls before it are done. */
  async #sendInTurn(own: Scratch, n: number, until: number, signal: AbortSignal | undefined): Promise<boolean> {
    for (;;) {
      if (!(await this.#lockAsync(this.#producer, signal, PRODUCER, until))) return false
      const seen = this.#trySend(own, n)
      if (seen < 0) return true
      const left = remaining(until)
      if (left === 0) return false
      if (this.#announce(C.PRODUCERS_WAITING, C.PWAKE, C.HEAD, seen)) await sleepOnWordAsync(this.memory, this.offset + C.PWAKE, this.#sleepValue, left, signal)
    }
  }

  /**
   * Takes the next message, blocking this thread while the channel is empty.
   * @throws ShmError `ETIMEDOUT` when `timeout` ran out; `ERR_SHM_CLOSED` once the
   *   channel is closed and drained; `ERR_SHM_CORRUPT` for a record that cannot be
   *   decoded (it is dropped, so the next receive goes on)
   */
  receive(options?: number | ChannelWaitOptions): T {
    const timeout = checkTimeoutArg(options)
    const until = deadline(timeout)
    for (;;) {
      if (!this.#lock(this.#consumer, CONSUMER, until)) throw timedOut()
      const got = this.#tryReceive()
      if (got !== EMPTY) return got as T
      const left = remaining(until)
      if (left === 0) throw timedOut()
      if (this.#spin(C.TAIL, this.#seen)) continue
      if (this.#announce(C.CONSUMERS_WAITING, C.CWAKE, C.TAIL, this.#seen)) sleepOnWord(this.memory, this.offset + C.CWAKE, this.#sleepValue, left)
    }
  }

  /**
   * {@link receive} without blocking the event loop. Pending calls of one object are
   * served in the order they were made.
   * @throws (rejects) as {@link receive}; AbortError when `signal` aborts
   */
  async receiveAsync(options?: number | AsyncWaitOptions): Promise<T> {
    const { timeout, signal } = checkAsyncWait(options)
    // Nothing queued before it, a free lock and a message: taken without awaiting.
    if (this.#receives.idle && this.#tryLock(this.#consumer, CONSUMER)) {
      const got = this.#tryReceive()
      if (got !== EMPTY) return got as T
    }
    const until = deadline(timeout)
    return this.#receives.run(() => this.#receiveInTurn(until, signal), signal, until, () => {
      throw timedOut()
    })
  }

  /** The pending {@link receiveAsync} calls of this object: served in call order. */
  readonly #receives = new Turns()

  /** {@link receiveAsync}, once the calls before it are done. */
  async #receiveInTurn(until: number, signal: AbortSignal | undefined): Promise<T> {
    for (;;) {
      if (!(await this.#lockAsync(this.#consumer, signal, CONSUMER, until))) throw timedOut()
      const got = this.#tryReceive()
      if (got !== EMPTY) return got as T
      const left = remaining(until)
      if (left === 0) throw timedOut()
      if (this.#announce(C.CONSUMERS_WAITING, C.CWAKE, C.TAIL, this.#seen)) await sleepOnWordAsync(this.memory, this.offset + C.CWAKE, this.#sleepValue, left, signal)
    }
  }

  /** Receives until the channel is closed and drained: `for await (const m of ch)`. */
  async *[Symbol.asyncIterator](): AsyncIterator<T> {
    for (;;) {
      let msg: T
      try {
        msg = await this.receiveAsync()
      } catch (e) {
        if ((e as ShmError).code === 'ERR_SHM_CLOSED' && this.closed) return
        throw e
      }
      yield msg
    }
  }

  /**
   * Closes the channel for every process: sends fail with `ERR_SHM_CLOSED` from now on;
   * receivers get what is queued, then `ERR_SHM_CLOSED` (async iteration ends). Closing
   * twice is fine.
   */
  close(): void {
    const v = this.live()
    this.#lock(this.#producer, PRODUCER, Infinity)
    Atomics.store(v.i32, this.#w + (C.CLOSED >>> 2), 1)
    this.#release(this.#producer)
    for (const [flag, word] of [[C.CONSUMERS_WAITING, C.CWAKE], [C.PRODUCERS_WAITING, C.PWAKE]]) {
      Atomics.store(v.i32, this.#w + (flag >>> 2), 0)
      Atomics.add(v.i32, this.#w + (word >>> 2), 1)
      wakeWord(this.memory, this.offset + word)
    }
  }

  // ---- internals ----

  /** Encodes `msg` (into `encoded`); checks it fits the ring. */
  #encode(msg: unknown): number {
    if (this.live().i32[this.#w + (C.CLOSED >>> 2)] !== 0) throw channelClosed()
    const n = encodeValue(this.coder, msg, 'The message')
    if (LEN + n > this.#cap) throw rangeError(`A message of ${n} bytes (encoded) does not fit in a Channel ring of ${this.#cap} bytes (at most ${this.#cap - LEN})`)
    return n
  }

  /** The wake word's value {@link #announce} read (what a sleep waits to change). */
  #sleepValue = 0
  /** The position a failed try saw (what a spin watches for a change). */
  #seen = 0
  /**
   * What this object's sends saw last of `head`, and `tail` right after its last send;
   * the same for its receives, of `tail` and `head`. The other side's position only
   * moves forward, so while no other producer (consumer) committed since this object's
   * last send (receive), its own side's position is still the one it left, and the value
   * seen is a lower bound of the real one within one ring's length: the room (the queued
   * bytes) it implies are there. Anything else reads the position afresh. A producer
   * streaming into a ring with room, and a consumer draining a backlog, then read nothing
   * the other side writes, which keeps its cache line out of their way.
   */
  #headSeen = 0
  #tailLeft = -1
  #tailSeen = 0
  #headLeft = -1

  /**
   * With the producer lock held: writes the message `src[0, n)` if there is room, and
   * releases the lock. Returns -1 when sent; otherwise the `head` it saw (read afresh).
   */
  #trySend(src: Scratch, n: number): number {
    const v = this.v
    const i32 = v.i32
    const w = this.#w
    const size = LEN + ((n + 3) & ~3)
    let woke = false
    try {
      // Plain reads of what only producers write (under this lock); Atomics where the
      // other side's writes or the order of the commit matter.
      if (i32[w + (C.CLOSED >>> 2)] !== 0) throw channelClosed()
      const tail = i32[w + (C.TAIL >>> 2)] >>> 0
      let head = this.#headSeen
      if (tail !== this.#tailLeft || this.#cap - ((tail - head) >>> 0) < size) {
        head = this.#headSeen = Atomics.load(i32, w + (C.HEAD >>> 2)) >>> 0
        if (this.#cap - ((tail - head) >>> 0) < size) return head
      }
      const mask = this.#cap - 1
      const at = tail & mask
      i32[(this.#ring + at) >>> 2] = n
      this.#copyIn(src, n, (at + LEN) & mask)
      // Commit: the record is visible to consumers.
      woke = this.#commit(PRODUCER, tail, size)
      this.#tailLeft = (tail + size) >>> 0
      return -1
    } finally {
      this.#release(this.#producer)
      if (woke) this.#wake(C.CONSUMERS_WAITING, C.CWAKE)
      intact(this.memory)
    }
  }

  /**
   * With the consumer lock held: takes and decodes the next message if there is one,
   * and releases the lock. Returns {@link EMPTY} otherwise (`#seen`: the `tail` it read).
   * @throws ShmError `ERR_SHM_CLOSED` when closed and drained; `ERR_SHM_CORRUPT`
   */
  #tryReceive(): unknown {
    const v = this.v
    const i32 = v.i32
    const w = this.#w
    let woke = false
    try {
      const head = i32[w + (C.HEAD >>> 2)] >>> 0
      let tail = this.#tailSeen
      if (head !== this.#headLeft || tail === head) {
        tail = this.#tailSeen = Atomics.load(i32, w + (C.TAIL >>> 2)) >>> 0
        if (tail === head) {
          // Empty. Closed first, then tail again: a message committed before the close is
          // seen.
          const closed = Atomics.load(i32, w + (C.CLOSED >>> 2)) !== 0
          tail = this.#tailSeen = Atomics.load(i32, w + (C.TAIL >>> 2)) >>> 0
          if (tail === head) {
            if (closed) throw channelClosed()
            this.#seen = tail
            return EMPTY
          }
        }
      }
      const mask = this.#cap - 1
      const at = head & mask
      const n = i32[(this.#ring + at) >>> 2] >>> 0
      const size = LEN + ((n + 3) & ~3)
      if (n > this.#cap - LEN || size > ((tail - head) >>> 0)) {
        // Nothing sane to skip to: the queue is beyond repair.
        throw corrupt(`a Channel record at ${head} claims ${n} bytes with ${(tail - head) >>> 0} queued`)
      }
      let value: unknown
      let error: unknown = null
      try {
        value = this.#decodeAt((at + LEN) & mask, n)
      } catch (e) {
        // Out of stack here (called from deep recursion): the message stays queued, for
        // a receive from a shallower call.
        if (isStackOverflow(e)) throw e
        error = e
      }
      // Commit: the record is consumed (a bad one too, so the queue goes on).
      woke = this.#commit(CONSUMER, head, size)
      this.#headLeft = (head + size) >>> 0
      if (error !== null) throw error
      return value
    } finally {
      this.#release(this.#consumer)
      if (woke) this.#wake(C.PRODUCERS_WAITING, C.PWAKE)
      intact(this.memory)
    }
  }

  /**
   * Before sleeping on `word` (lock released; a spin did not see `field`, the other
   * side's position, move from `seen`): reads the word into `#sleepValue`, raises the
   * other side's `flag`, and looks once more. `true` if nothing moved and the channel is
   * open, so the caller may sleep: whoever moves the position afterwards sees the flag
   * and wakes the word, and `close()` bumps it after setting `closed`. All sequentially
   * consistent, so one side always sees the other.
   */
  #announce(flag: number, word: number, field: number, seen: number): boolean {
    const i32 = this.live().i32
    const w = this.#w
    this.#sleepValue = Atomics.load(i32, w + (word >>> 2))
    Atomics.store(i32, w + (flag >>> 2), 1)
    return Atomics.load(i32, w + (field >>> 2)) >>> 0 === seen && Atomics.load(i32, w + (C.CLOSED >>> 2)) === 0
  }

  /** Copies `src[0, n)` into the ring at physical index `at` (a multiple of 4), wrapping at its end. */
  #copyIn(src: Scratch, n: number, at: number): void {
    const v = this.v
    const first = Math.min(n, this.#cap - at)
    copyWords(v.u8, v.i32, this.#ring + at, src.bytes, src.words, 0, first)
    if (first < n) copyWords(v.u8, v.i32, this.#ring, src.bytes, src.words, first, n - first)
  }

  /** Decodes the `n` payload bytes at physical index `at` (copied out first if they wrap). */
  #decodeAt(at: number, n: number): unknown {
    const u8 = this.v.u8
    const first = this.#cap - at
    if (n <= first) return this.coder.decode(u8, this.#ring + at, this.#ring + at + n)
    wrapped.ensure(0, n)
    wrapped.bytes.set(u8.subarray(this.#ring + at, this.#ring + this.#cap))
    wrapped.bytes.set(u8.subarray(this.#ring, this.#ring + n - first), first)
    return this.coder.decode(wrapped.bytes, 0, n)
  }

  /** Wakes the other side if it announced a sleep. */
  #wake(flag: number, word: number): void {
    const i32 = this.v.i32
    Atomics.store(i32, this.#w + (flag >>> 2), 0)
    Atomics.add(i32, this.#w + (word >>> 2), 1)
    wakeWord(this.memory, this.offset + word)
  }

  /**
   * Polls the position at `field` for a change from `seen` a little before a blocking
   * sleep: a busy peer usually moves it within microseconds, which saves two system
   * calls. The poll count adapts: doubled after a poll that saw the change, halved after
   * one that did not. `true` if it moved.
   */
  #spin(field: number, seen: number): boolean {
    const i32 = this.v.i32
    const at = this.#w + (field >>> 2)
    const n = this.#spins
    for (let i = 0; i < n; i++) {
      if (Atomics.load(i32, at) >>> 0 !== seen) {
        // Worth it: a busy peer (a stream). Poll longer next time.
        this.#spins = Math.min(MAX_SPINS, n * 2)
        return true
      }
    }
    // Not worth it (an idle or descheduled peer): sleep sooner next time, leaving the CPU
    // to whoever must run for the position to move.
    this.#spins = Math.max(MIN_SPINS, n >> 1)
    return false
  }

  /** How long {@link #spin} polls (adaptive, per object). */
  #spins = 200

  /**
   * Takes `side`'s lock, repairing its counter after a dead holder; `false` if `until`
   * (the call's deadline) passed first.
   */
  #lock(lock: Lock, side: Side, until: number): boolean {
    this.live()
    try {
      if (!takeLock(lock, 'a Channel', until)) return false
    } catch (e) {
      if (!this.#borrow(lock, e)) throw e
      return true
    }
    if (tookOverDead(lock)) recoverLock(lock, () => this.#settle(side))
    return true
  }

  /**
   * A blocking call found `lock` held by this thread (`ERR_SHM_DEADLOCK`): an async call
   * of this thread took it on a waiter thread and has not gone on yet (blocking calls
   * never keep it past their return, and the codecs run no user code under it). Nobody
   * is inside, so the blocking call works under that hold and leaves it held for the
   * async call, which goes on under it and releases it. Not while the hold still owes a
   * dead holder's repair (the async call makes it): that stays `ERR_SHM_DEADLOCK`.
   * @returns whether the blocking call may go on (until {@link #release})
   */
  #borrow(lock: Lock, e: unknown): boolean {
    if (!(e instanceof ShmError) || e.code !== 'ERR_SHM_DEADLOCK') return false
    if ((Atomics.load(this.v.i32, lock.offset >>> 2) & LOCK_OWNER_DIED) !== 0) return false
    this.#borrowed = lock
    return true
  }

  /** The lock a blocking call of this object works under without holding it (see {@link #borrow}). */
  #borrowed: Lock | null = null

  /** Releases `side`'s lock, or gives a borrowed hold back to the async call that has it. */
  #release(lock: Lock): void {
    if (this.#borrowed === lock) this.#borrowed = null
    else lock.release()
  }

  /**
   * Takes `lock` without blocking the event loop (at once if it is free); `false` if
   * `until` (the call's deadline) passed first.
   */
  async #lockAsync(lock: Lock, signal: AbortSignal | undefined, side: Side, until: number): Promise<boolean> {
    if (this.#tryLock(lock, side)) return true
    if (!(await takeLockAsync(lock, 'a Channel', until, signal))) return false
    if (tookOverDead(lock)) recoverLock(lock, () => this.#settle(side))
    return true
  }

  /** Takes `lock` if it is free (repairing `side` after a dead holder); `false` if held. */
  #tryLock(lock: Lock, side: Side): boolean {
    this.live()
    if (!lock.tryAcquire()) return false
    if (tookOverDead(lock)) recoverLock(lock, () => this.#settle(side))
    return true
  }

  /**
   * With `side`'s lock held: journals the record of `size` bytes at `pos` (position
   * first, so a half-written journal never matches), commits the side's position, counts
   * the message. Returns whether the other side announced a sleep.
   */
  #commit(side: Side, pos: number, size: number): boolean {
    const i32 = this.v.i32
    const j = this.#w + (side.journal >>> 2)
    const count = this.#w + (side.counter >>> 2)
    const seq = i32[count]
    i32[j] = pos
    i32[j + 1] = size
    i32[j + 2] = seq
    Atomics.store(i32, this.#w + (side.position >>> 2), (pos + size) | 0)
    i32[count] = seq + 1
    return Atomics.load(i32, this.#w + (side.other >>> 2)) !== 0
  }

  /**
   * `side`'s holder died: settle its counter from its journal. If the journaled record
   * ends at the committed position, its sequence number was committed.
   */
  #settle(side: Side): void {
    const i32 = this.v.i32
    const j = this.#w + (side.journal >>> 2)
    const s = i32[j + 1] >>> 0
    if (s !== 0 && ((i32[j] + s) | 0) === i32[this.#w + (side.position >>> 2)]) {
      i32[this.#w + (side.counter >>> 2)] = (i32[j + 2] + 1) | 0
    }
  }
}

/** What {@link Channel}'s tryReceive returns when there is nothing to take. */
const EMPTY = Symbol('empty')

function ringSize(value: unknown): number {
  if (value === undefined) return DEFAULT_CAPACITY
  const n = checkIndex('capacity', value)
  if (n > MAX_CAPACITY) throw rangeError(`The "capacity" option must be at most ${MAX_CAPACITY} bytes; got ${n}`)
  let cap = MIN_CAPACITY
  while (cap < n) cap *= 2
  return cap
}

function channelClosed(): ShmError {
  return new ShmError('the channel is closed', { code: 'ERR_SHM_CLOSED' })
}

function timedOut(): ShmError {
  return new ShmError('timed out waiting for a message', { code: 'ETIMEDOUT' })
}

/** A deadline (performance.now() ms) for `timeout`, `Infinity` for none. */
function deadline(timeout: number | undefined): number {
  return timeout === undefined ? Infinity : performance.now() + timeout
}

/** Milliseconds left until `until` (`undefined`: forever; 0: passed). */
function remaining(until: number): number | undefined {
  if (until === Infinity) return undefined
  return Math.max(0, until - performance.now())
}

/** The Channel's layout, for {@link SharedContainer}. */
const TYPE: ContainerType = Object.freeze({ name: 'Channel', handle: 'channel', magic: MAGIC, kind: Kind.CHANNEL, version: VERSION, headerSize: C.RING })

registerReviver('Channel', (h) => Channel.at(memoryOfHandle(h), h.offset))
