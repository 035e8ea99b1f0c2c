/**
 * {@link RWLock}: a process-shared reader-writer lock whose whole state is a 192-byte
 * record in shared memory; the uncontended paths are a few `Atomics` operations in
 * JavaScript, waits sleep on words of the record (`lib/word.ts`).
 *
 * ## The record (kind tag 5 at offset 8)
 *
 * | offset | field     | meaning                                                           |
 * |-------:|-----------|-------------------------------------------------------------------|
 * | 0      | `writer`  | owner of the writer that holds the lock or is waiting for readers to leave; 0 = none |
 * | 4      | `wwait`   | 1: someone may sleep on `wgone` until `writer` changes: its release must wake |
 * | 8      | `kind`    | 5                                                                 |
 * | 12     | `owner`   | copy of `writer`, written after the three fields below (trust them only if equal) |
 * | 16     | `start`   | the writer's thread start time, u64 (informational; macOS checks it) |
 * | 24     | `rgone`   | futex word a writer waiting for readers sleeps on; bumped by a leaving reader that sees `rwait` |
 * | 28     | `rwait`   | 1: a writer (or a reader wanting a slot) sleeps on `rgone`         |
 * | 32     | `owner_pid` | the writer's pid, in its PID namespace (informational: {@link RWLock.owner}) |
 * | 36     | `owner_tid` | the writer's thread id, in its PID namespace (informational)   |
 * | 40     | `damaged` | 1 from when a dead writer's claim is cleared or taken over (by the thread that took it out of `writer`, holding it) until a writer releases: the data may be half-written |
 * | 44     | `wgone`   | futex word readers and writers waiting for `writer` sleep on; bumped by a release of `writer` that sees `wwait` |
 * | 64     | `slots`   | 32 reader slots: the owner of each read hold, 0 = free            |
 *
 * ## States and transitions
 *
 * | who            | does                                                                 |
 * |----------------|----------------------------------------------------------------------|
 * | read, fast     | CAS a free slot `0 → me` (starting at a slot picked by `me`), then read `writer`: 0 (or a re-entry)? held; else undo the slot and wait |
 * | read, slow     | sleep on `wgone` while `writer` is non-zero (every 50 ms: a dead writer's claim is cleared, `ownerDied`); no free slot: sleep on `rgone` |
 * | read release   | `slot = 0` if it is `me` (else a stale record: dropped); if `rwait`: clear it, `rgone += 1`, wake                   |
 * | write          | CAS `writer 0 → me` (every 50 ms a dead writer is taken over, `ownerDied`); then wait until every slot is 0, clearing slots whose owner died |
 * | write release  | `damaged = 0` if set; `writer = 0`; if `wwait`: clear it, (now and then: `writer` 0 → `HANDED`), `wgone += 1`, wake everyone on `wgone` |
 * | a wait that slept | finds `writer` = `HANDED`: takes it (a writer: `HANDED → me`; a reader: takes a slot, then `HANDED → 0`) |
 *
 * A writer's claim stops new readers at once, so a stream of readers cannot starve
 * writers (writers are preferred). A thread re-entering a read lock it holds takes
 * another slot without looking at `writer` (it would otherwise wait for a writer that
 * waits for it). Announcing a sleep (`wwait`/`rwait` = 1) before re-reading the state,
 * against changing the state before reading the flag, all sequentially consistent,
 * means no sleeper is forgotten; sleeps are 50 ms slices anyway. Waiters for `writer`
 * sleep on the counter `wgone`, not on `writer` itself: a writer that releases and takes
 * the lock again at once writes the value they sleep on back, and a sleep on `writer`
 * would go on through every such release until its slice ended (one try per 50 ms
 * against a writer re-taking the lock in a loop), unwoken by later releases once the
 * first had cleared `wwait`.
 *
 * Fairness: woken, a waiter on another core still finds the lock taken again by a
 * writer that releases and re-acquires in a loop, release after release. So, as `Lock`
 * does (`src-rs/sync/lock.rs`, "Eventual fairness"), a release that wakes sleepers now
 * and then (at most once per 4 ms per object) leaves `writer` = `HANDED` instead of 0: no
 * owner (tokens are below 2^30), so every fast path and every wait that has not slept
 * yet sees the lock taken (such a wait sleeps 1 ms at most, then takes it itself: a
 * sleeper slow to run must not keep the lock idle), and one of the woken sleepers gets it. Nobody left to: the
 * release takes it back when its wake woke nobody, a sleeper takes it when its slice ends,
 * and a wait at its deadline (a `tryAcquire*` included) when its own wake finds nobody.
 *
 * One thread, several tasks: the synchronous calls refuse to wait for a hold of this
 * thread (`ERR_SHM_DEADLOCK`: nothing else of the thread could run to release it). The
 * async twins wait instead, as `Lock.acquireAsync` queues: another task of this
 * thread may hold the lock and release it while the awaiting one sleeps. So with
 * `tasks` (below) a hold of this thread counts as anyone's: a writer of this thread is
 * waited for, and a write acquisition waits for this thread's read holds to go. An async
 * read of a thread that holds a read hold does not go past a waiting writer either
 * (overlapping tasks would otherwise keep a read hold forever and starve writers), as
 * long as the thread's holds keep going: once none of them has been released for
 * {@link REENTER_GRACE_MS}, the read goes ahead, since it may be nested inside the hold
 * the writer waits for.
 *
 * Dead holders: readers never change the data, so a dead reader's slot is simply
 * cleared by the next writer that finds its owner dead. A writer that died holding (or
 * claiming) the lock is taken over by the next writer, or cleared by the next reader;
 * either sets `damaged` first, and every acquisition reports {@link RWLock.ownerDied}
 * while it is set: the data may be half-written until a writer has held the lock (and
 * repaired it) and released. A reader cannot repair, so the news must not end with it:
 * a reader that cleared a dead writer once took `ownerDied` with it, and the next writer
 * found half-written data without a word.
 *
 * Owners are liveness tokens, as in lock words: `me()` and `liveness()` below are the one
 * place that knows (native side `src-rs/js/owner.rs`).
 * @module
 */
import { checkAsyncWait, checkTimeoutArg, describe } from './args.js'
import { native, notOwner, openWords, ShmError, typeError } from './errors.js'
import { type Handle, handleIn, handleOf, registerReviver } from './handles.js'
import { PID, START_HI, START_LO, TID, tokenIn } from './identity.js'
import { type AcquireOptions, type AsyncWaitOptions, HANDOFF_GRACE_MS, HandOffs, Kind, type LockHome } from './lock.js'
import { checkIntact, GUARD, internals, type MappedMemory, memoryOfHandle, writable } from './memory.js'
import { allocatePlace, atPlace, checkPlace, claimKind, takePlace } from './place.js'
import { binding } from './native.js'
import { RECHECK_MS } from './waits.js'
import { blockingWait, runAsync, runBlocking, type Steps, wakeWord } from './word.js'
import type { LockOwner } from './records.js'

// ---- the identity seam ----

/** Who this thread is in `memory`'s records: its liveness token for the segment. */
function me(memory: MappedMemory): number {
  return tokenIn(memory)
}

/**
 * How long an async read of a thread with read holds yields to a waiting writer while
 * none of those holds is released (see the module docs).
 */
const REENTER_GRACE_MS = 50

/** Answers of {@link liveness}. */
const ALIVE = 1
const SUSPECT = 2

/**
 * Whether the owner recorded as `owner` (with thread start time `lo`/`hi`, 0 if none)
 * lives: {@link ALIVE}, 0 (dead), or {@link SUSPECT} (probably gone; dead if still so at
 * the next check: macOS only).
 */
function liveness(memory: MappedMemory, owner: number, lo: number, hi: number): number {
  const { id } = internals(memory)
  return native(() => binding.ownerLiveness(id, owner >>> 0, lo >>> 0, hi >>> 0))
}

// ---- the record ----

/** Int32 indices of the fields, from the record's start. */
const R = Object.freeze({ WRITER: 0, WWAIT: 1, KIND: 2, OWNER: 3, START_LO: 4, START_HI: 5, RGONE: 6, RWAIT: 7, OWNER_PID: 8, OWNER_TID: 9, DAMAGED: 10, WGONE: 11, SLOTS: 16 })
/** `writer` of a lock a release handed to the waits that slept (see the module docs). */
const HANDED = 0xc000_0000 | 0
/** Reader slots: at most this many read holds at once (more readers wait for a slot). */
export const RWLOCK_SLOTS = 32
/** Bytes of an RWLock record. */
export const RWLOCK_SIZE = 4 * R.SLOTS + 4 * RWLOCK_SLOTS
/**
 * A reader-writer lock shared between processes and worker threads: any number of
 * readers at once (up to 32 holds at a time; more wait for a slot), or one writer.
 * Writers are preferred: once a writer asks, new readers wait, so readers cannot starve
 * it. Holds belong to the thread that acquired them (also through the async twins).
 *
 * If a holder dies, the lock recovers like a `Lock`: a dead reader's hold is dropped by
 * the next writer, a dead writer's lock goes to the next acquirer. Every acquisition
 * sees {@link ownerDied} from then until a writer has held the lock and released it (the
 * data the dead writer was changing may be half-written: the next writer repairs it).
 */
export class RWLock {
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
   * The slots (0..31) this thread holds, shared by every object of this thread for the
   * same lock (a revived handle, a second `RWLock.at`): holds are the thread's.
   */
  #held: number[]
  #ownerDied = false
  /** This thread's token ({@link me}), kept once known: the read path's only identity. */
  #id = 0

  /**
   * Allocates a new lock's record in shared memory.
   * @param where - a `Heap`, or a managed `MappedMemory` (its heap is used)
   */
  constructor(where: LockHome | MappedMemory) {
    ;({ memory: this.memory, offset: this.offset } = takePlace() ?? allocatePlace(where, RWLOCK_SIZE))
    const win = writable(this.memory).window(this.offset, RWLOCK_SIZE)
    this.#i32 = win.i32
    this.#w = (this.offset - win.start) >>> 2
    this.#held = heldSlots(this, this.memory, this.offset)
    this.$shmutils = handleIn(this.memory, (m) => Object.freeze({ $shmutils: 'RWLock', segment: m.segment, offset: this.offset, memory: m }))
    claimKind(this.#i32, this.#w + R.KIND, Kind.RWLOCK, 'RWLock', this.offset)
  }

  /**
   * The lock whose 192-byte record is at `offset` in `memory` (4-byte aligned; a zeroed
   * record is a free lock).
   * @throws RangeError for an offset that is misaligned or does not fit; TypeError for a
   *   record of another kind
   */
  static at(memory: MappedMemory, offset: number): RWLock {
    checkPlace(memory, offset, RWLOCK_SIZE)
    return atPlace(memory, offset, () => new RWLock(memory))
  }

  #a(): Int32Array {
    return openWords(this.#i32, 'the RWLock\'s mapping')
  }

  /** {@link me}, asked once per object (tokens are never 0). */
  #me(): number {
    return this.#id || (this.#id = me(this.memory))
  }

  /**
   * The writer holding the lock (or claiming it while the readers inside leave), in any
   * process: its pid and thread id as it recorded them (each in its own PID namespace),
   * `{ pid: 0, tid: 0 }` while it has not recorded itself yet, or `null` when no writer
   * has it. Readers are many and not named: see `util.inspect` for how many hold it.
   */
  get owner(): LockOwner | null {
    const a = this.#a()
    const w = this.#w
    const writer = Atomics.load(a, w + R.WRITER)
    let owner: LockOwner | null = writer === 0 || writer === HANDED ? null : { pid: 0, tid: 0 }
    for (let tries = 0; owner !== null && tries < 3; tries++) {
      const recorded = Atomics.load(a, w + R.OWNER)
      const pid = a[w + R.OWNER_PID] >>> 0
      const tid = a[w + R.OWNER_TID] >>> 0
      if (recorded === writer) {
        owner = { pid, tid }
        break
      }
    }
    if (GUARD[0] !== 0) checkIntact(this.memory)
    return owner
  }

  /**
   * `true` after an acquire while a writer that died holding the lock has left the data
   * unrepaired: from the acquisition that took its lock over (or cleared its claim) until
   * a writer has held the lock and released it. A writer that sees it repairs the data
   * before it releases; a reader knows the data may be half-written.
   */
  get ownerDied(): boolean {
    return this.#ownerDied
  }

  // ---- read ----

  /**
   * Takes a read hold, blocking this thread while a writer holds or waits for the lock.
   * @returns `true` when held, `false` when `timeout` ran out
   * @throws ShmError `ERR_SHM_DEADLOCK` if this thread holds the write lock
   */
  acquireRead(options?: number | AcquireOptions): boolean {
    const timeout = checkTimeoutArg(options)
    return this.#tryRead(true, false) || runBlocking(this.memory, this.#readSteps(timeout, false))
  }

  /**
   * Takes a read hold only if that is possible at once. A writer that died holding the
   * lock is found (at most one system call per 50 ms per object) and cleared (`ownerDied`).
   */
  tryAcquireRead(): boolean {
    // Refused: a dead writer (or dead readers filling every slot) is looked for at most
    // once a slice (see #asks).
    return this.#tryRead(true, false) || (performance.now() - this.#askedAt >= RECHECK_MS && runBlocking(this.memory, this.#readSteps(0, false)))
  }

  /**
   * {@link acquireRead} without blocking the event loop (waits on a native waiter thread).
   * While another task of this thread holds the write lock, it waits for that task to
   * release it (where {@link acquireRead} throws `ERR_SHM_DEADLOCK`).
   * @throws (rejects) AbortError; as {@link acquireRead}
   */
  async acquireReadAsync(options?: number | AsyncWaitOptions): Promise<boolean> {
    const { timeout, signal } = checkAsyncWait(options)
    return this.#tryRead(true, true, false) || runAsync(this.memory, this.#readSteps(timeout, true), signal)
  }

  /**
   * Releases one read hold of this thread.
   * @throws ShmError `ERR_SHM_NOT_OWNER` when this thread holds none
   */
  releaseRead(): void {
    const a = this.#a()
    const id = this.#me()
    // A recorded hold whose slot no longer holds this thread's id is stale (given up when
    // the thread closed its last mapping of the segment; the slot may be someone else's
    // now): dropped, never cleared. A slot holding this thread's (live) id changes only
    // through this thread, so a look then a store is the compare-and-swap, for less.
    let slot: number
    do {
      const k = this.#held.pop()
      if (k === undefined) {
        if (GUARD[0] !== 0) checkIntact(this.memory)
        throw notOwner('the read lock')
      }
      slot = this.#w + R.SLOTS + k
    } while (a[slot] !== id)
    Atomics.store(a, slot, 0)
    // A slot on a page the mapping lost: the hold is gone with it; say so.
    if (GUARD[0] !== 0) checkIntact(this.memory)
    if (Atomics.load(a, this.#w + R.RWAIT) !== 0) this.#readerLeft(a)
  }

  /**
   * Runs `fn` holding a read lock, releasing it afterwards even if `fn` throws. While a
   * writer that died has left the data unrepaired, {@link ownerDied} is `true` inside
   * `fn`: what it reads may be half-written.
   */
  withRead<T>(fn: () => T): T {
    checkFn(fn)
    this.acquireRead()
    try {
      return fn()
    } finally {
      // Released inline where it can be (a stack overflow at the call of `fn`: see
      // withLock): the last hold recorded, its slot still this thread's.
      const a = this.#i32
      const w = this.#w
      const held = this.#held
      const slot = w + R.SLOTS + (held[held.length - 1] ?? 0)
      // (Only what acquireRead ran deeper: plain loads, push/pop, compareExchange; a
      // closed mapping's array reads undefined.)
      // (A subclass's own releaseRead() is called, as ever.)
      if (held.length !== 0 && a[slot] === this.#id && this.releaseRead === RWLock.prototype.releaseRead) {
        try {
          Atomics.compareExchange(a, slot, this.#id, 0)
        } catch {
          // Out of stack even for that builtin here (seen once in CI: the frame this
          // finally runs in can be larger than the one the acquisition's ran in). The
          // slot is this thread's and only it frees it: a plain store, no call.
          a[slot] = 0
        }
        held.pop()
        if (GUARD[0] !== 0) checkIntact(this.memory)
        if (Atomics.load(a, w + R.RWAIT) !== 0) this.#readerLeft(a)
      } else {
        this.releaseRead()
      }
    }
  }

  /**
   * One try for a read hold. `first`: the call of the caller (resets `ownerDied`);
   * `tasks`: an async acquisition, for which a write hold of this thread is another
   * task's, to wait for (see the module docs).
   * @throws ShmError `ERR_SHM_DEADLOCK` if this thread holds the write lock (not `tasks`)
   */
  #tryRead(first: boolean, tasks: boolean, reenter = true, handed = false): boolean {
    const a = this.#a()
    const w = this.#w
    const id = this.#me()
    if (first && this.#ownerDied) this.#ownerDied = false
    const start = Math.imul(id, 0x9e37_79b1) >>> 27
    for (let k = 0; k < RWLOCK_SLOTS; k++) {
      const slot = w + R.SLOTS + ((start + k) & (RWLOCK_SLOTS - 1))
      if (Atomics.compareExchange(a, slot, 0, id) !== 0) continue
      try {
        if (this.#admitted(a, w, slot, id, tasks, reenter, handed)) return true
      } catch (e) {
        // Whatever threw after the slot was taken (a lost page, a stack overflow: see
        // Lock's #recordOwner), the slot is given back inline, with the builtin that took it.
        if (Atomics.compareExchange(a, slot, id, 0) === id && Atomics.load(a, w + R.RWAIT) !== 0) this.#readerLeft(a)
        throw e
      }
      return false
    }
    if (!tasks && Atomics.load(a, w + R.WRITER) === id && (this.#held.length === 0 || this.#pruneStale(a, -1) === 0)) throw deadlock('this thread holds the write lock')
    return false
  }

  /**
   * After {@link #tryRead} took `slot`: whether the read hold stands (recorded), or was
   * given back (`false`) for a writer. The hold is recorded last, so a throw before
   * leaves nothing recorded for the caller's give-back to miss.
   */
  #admitted(a: Int32Array, w: number, slot: number, id: number, tasks: boolean, reenter: boolean, handed: boolean): boolean {
    // Then look at `writer` (a writer scans the slots after claiming it, so one of the
    // two sees the other). A writer present: this thread (a deadlock), or another one,
    // which keeps new readers out; a thread re-entering its read hold goes ahead, since
    // that writer waits for it (also a writer of this thread: a write acquisition of
    // another task, waiting for this thread's read holds). A writer of this thread with
    // no read hold here: a deadlock, unless another task of the thread holds it
    // (`tasks`), which is waited for like anyone's.
    let writer = Atomics.load(a, w + R.WRITER)
    // A lock handed to the waits that slept (`handed`: this is one): the slot is taken
    // already, so clearing the hand-off lets no writer in ahead of this reader (one that
    // claims it now waits for the slot). A writer that slept may have taken it first.
    if (writer === HANDED && handed) {
      const seen = Atomics.compareExchange(a, w + R.WRITER, HANDED, 0)
      writer = seen === HANDED ? 0 : seen
    }
    if (writer !== 0 && (this.#held.length === 0 || !reenter || this.#pruneStale(a, slot - (w + R.SLOTS)) === 0)) {
      Atomics.store(a, slot, 0)
      if (Atomics.load(a, w + R.RWAIT) !== 0) this.#readerLeft(a)
      if (writer === id && !tasks) throw deadlock('this thread holds the write lock')
      return false
    }
    // A plain load after the slot's compare-and-swap (a full barrier; an acquire on
    // arm64): `damaged` is set before a dead writer's claim is cleared.
    this.#ownerDied = a[w + R.DAMAGED] !== 0
    // A hold on pages the mapping lost guards nothing: the caller gives it back.
    if (GUARD[0] !== 0) checkIntact(this.memory)
    this.#held.push(slot - (w + R.SLOTS))
    return true
  }

  /** The slow path of a read acquire: sleeps until a try succeeds (`tasks`: see {@link #tryRead}). */
  *#readSteps(timeout: number | undefined, tasks: boolean): Steps<boolean> {
    const a = this.#a()
    const w = this.#w
    const until = timeout === undefined ? Infinity : performance.now() + timeout
    let check = performance.now() + RECHECK_MS
    // An async read of a thread with read holds waits for a writer while those holds
    // keep being released (see the module docs).
    let holds = this.#held.length
    let releasedAt = performance.now()
    let slept = false
    for (;;) {
      if (tasks && this.#held.length !== holds) {
        if (this.#held.length < holds) releasedAt = performance.now()
        holds = this.#held.length
      }
      if (this.#tryRead(false, tasks, !tasks || performance.now() - releasedAt >= REENTER_GRACE_MS, slept)) return true
      const now = performance.now()
      const left = until - now
      const ask = this.#asks(now, check, left)
      if (ask) check = now + RECHECK_MS
      const ms = Math.min(left, RECHECK_MS)
      const writer = Atomics.load(a, w + R.WRITER)
      if (writer === HANDED && !slept && this.#mayTakeHanded(slept, left)) {
        // At the deadline, nobody asleep to take it: this read does, once more.
        slept = true
        continue
      }
      if (writer !== 0) {
        if (ask && this.#clearDeadWriter(a, writer, 0)) continue
        if (left <= 0) return false
        const g = Atomics.load(a, w + R.WGONE)
        Atomics.store(a, w + R.WWAIT, 1)
        if (Atomics.load(a, w + R.WRITER) === writer) {
          // (Handed off: a woken sleeper gets the grace; then this wait, having slept.)
          yield { offset: this.offset + 4 * R.WGONE, expected: g, ms: writer === HANDED ? Math.min(ms, HANDOFF_GRACE_MS) : ms }
          slept = true
        }
      } else {
        // Slots of dead readers come back (a read-only workload has no writer to do it).
        if (ask && this.#clearDeadReaders(a) > 0) continue
        if (left <= 0) return false
        // Every slot taken. All by this thread (a blocking call): only it could free one.
        if (!tasks && this.#ownsEverySlot(a)) throw deadlock('this thread holds every read slot')
        // Wait for a reader to leave.
        const g = Atomics.load(a, w + R.RGONE)
        Atomics.store(a, w + R.RWAIT, 1)
        yield { offset: this.offset + 4 * R.RGONE, expected: g, ms }
      }
    }
  }

  // ---- write ----

  /**
   * Takes the write lock, blocking this thread while anyone holds the lock.
   * @returns `true` when held, `false` when `timeout` ran out
   * @throws ShmError `ERR_SHM_DEADLOCK` if this thread holds the lock already (read or write)
   */
  acquireWrite(options?: number | AcquireOptions): boolean {
    if (options === undefined && this.#tryWrite()) return true
    return blockingWait(this.memory, options, (timeout) => this.#writeSteps(timeout, false))
  }

  /**
   * Takes the write lock only if nobody holds the lock now. Holders that died are found
   * (at most one system call per 50 ms per object): a dead writer's lock is taken over
   * (`ownerDied`), dead readers' holds are dropped.
   */
  tryAcquireWrite(): boolean {
    return this.#tryWrite() || runBlocking(this.memory, this.#writeSteps(0, false))
  }

  /**
   * {@link acquireWrite} without blocking the event loop. Holds of other tasks of this
   * thread are waited for like anyone's (where {@link acquireWrite} throws
   * `ERR_SHM_DEADLOCK`): the write lock, and read holds, which must all be released. A
   * task that awaits this while it holds the lock itself waits until its timeout or
   * abort, as with `Lock.acquireAsync`.
   * @throws (rejects) AbortError; as {@link acquireWrite}
   */
  async acquireWriteAsync(options?: number | AsyncWaitOptions): Promise<boolean> {
    const { timeout, signal } = checkAsyncWait(options)
    return this.#tryWrite() || runAsync(this.memory, this.#writeSteps(timeout, true), signal)
  }

  /**
   * The uncontended write acquire, without the wait machinery: `writer` free and no
   * reader inside, so the lock is ours. Otherwise nothing changes (a claim made while a
   * reader was inside is given back) and the caller takes the slow path, which decides
   * the rest: this thread's own holds, dead holders, waits.
   */
  #tryWrite(): boolean {
    if (this.#held.length !== 0) return false
    const a = this.#a()
    const w = this.#w
    const id = this.#me()
    if (Atomics.compareExchange(a, w + R.WRITER, 0, id) !== 0) return false
    try {
      this.#recordWriter(a, w, id)
      if (this.#readerInside(a, w)) {
        this.#giveBackClaim(a)
        return false
      }
      // After the claim's compare-and-swap, as a reader's slot above.
      this.#ownerDied = a[w + R.DAMAGED] !== 0
      if (GUARD[0] !== 0) checkIntact(this.memory)
      return true
    } catch (e) {
      // Whatever threw after the claim (a lost page, a stack overflow: see Lock's
      // #recordOwner), the claim is given back inline, with the builtin that made it.
      if (Atomics.compareExchange(a, w + R.WRITER, id, 0) === id && Atomics.load(a, w + R.WWAIT) !== 0) this.#writerLeft(a)
      throw e
    }
  }

  /**
   * Whether a reader slot is taken, read right after a sequentially consistent write of
   * this thread (the claim of `writer`, or `rwait`) that a reader reads after it
   * publishes its slot (or clears it): one of the two sees the other. One `Atomics.load`
   * keeps the scan after that write (x86: the write was a locked instruction already;
   * arm64: an `ldar` after an `stlr` stays in order, and no load moves before an
   * acquire), then plain loads: `Atomics.load` costs 7 ns here, so 32 of them were most
   * of an uncontended write acquire.
   */
  #readerInside(a: Int32Array, w: number): boolean {
    if (Atomics.load(a, w + R.SLOTS) !== 0) return true
    for (let k = 1; k < RWLOCK_SLOTS; k++) if (a[w + R.SLOTS + k] !== 0) return true
    return false
  }

  /** Who holds the write lock, for diagnostics (and macOS's pid-reuse check); the owner copy last. */
  #recordWriter(a: Int32Array, w: number, id: number): void {
    a[w + R.OWNER_PID] = PID
    a[w + R.OWNER_TID] = TID
    a[w + R.START_LO] = START_LO
    a[w + R.START_HI] = START_HI
    a[w + R.OWNER] = id
  }

  /**
   * Releases the write lock.
   * @throws ShmError `ERR_SHM_NOT_OWNER` when this thread does not hold it
   */
  releaseWrite(): void {
    const a = this.#a()
    const w = this.#w
    if (Atomics.load(a, w + R.WRITER) !== this.#me()) {
      // A word on a page the mapping lost reads 0: say so, not "not the owner".
      if (GUARD[0] !== 0) checkIntact(this.memory)
      throw notOwner('the write lock')
    }
    // A writer held it: whatever a dead writer left is repaired (or this one's doing).
    if (a[w + R.DAMAGED] !== 0) Atomics.store(a, w + R.DAMAGED, 0)
    this.#giveBackClaim(a, true)
  }

  /**
   * Clears this thread's claim of `writer` and wakes its sleepers: a release, or a claim
   * given back unused (a reader was inside, the wait timed out, the mapping closes),
   * which leaves `damaged` alone: nobody repaired anything.
   */
  #giveBackClaim(a: Int32Array, release = false): void {
    if (Atomics.compareExchange(a, this.#w + R.WRITER, this.#me(), 0) !== this.#me()) return
    if (Atomics.load(a, this.#w + R.WWAIT) !== 0) this.#writerLeft(a, release && this.#handOffs.due())
  }

  /** When a release of this object hands the lock off (see the module docs). */
  readonly #handOffs = new HandOffs()

  /**
   * Wakes whoever waits for `writer` to change (clearing `wwait` first: see
   * {@link #readerLeft}); with `handOff`, a release leaves the lock to them (`HANDED`),
   * taken back if the wake found nobody asleep.
   */
  #writerLeft(a: Int32Array, handOff = false): void {
    const w = this.#w
    Atomics.store(a, w + R.WWAIT, 0)
    const handed = handOff && Atomics.compareExchange(a, w + R.WRITER, 0, HANDED) === 0
    Atomics.add(a, w + R.WGONE, 1)
    if (wakeWord(this.memory, this.offset + 4 * R.WGONE) !== 0 || !handed) return
    // Nobody asleep to take it: free again, and whoever found it handed meanwhile (and
    // announced a sleep) is woken to look again.
    if (Atomics.compareExchange(a, w + R.WRITER, HANDED, 0) === HANDED && Atomics.load(a, w + R.WWAIT) !== 0) this.#writerLeft(a)
  }

  /**
   * Whether a wait that finds `writer` = `HANDED` takes it: if it slept (woken, or its
   * slice ended), or at its deadline (`left <= 0`) when its wake finds nobody asleep who
   * would (woken, they take it).
   */
  #mayTakeHanded(slept: boolean, left: number): boolean {
    return slept || (left <= 0 && wakeWord(this.memory, this.offset + 4 * R.WGONE) === 0)
  }

  /**
   * Runs `fn` holding the write lock, releasing it afterwards even if `fn` throws. If
   * {@link ownerDied} is `true` inside `fn`, a writer died mid-write: repair the data in
   * `fn` (its release marks it repaired).
   */
  withWrite<T>(fn: () => T): T {
    checkFn(fn)
    this.acquireWrite()
    try {
      return fn()
    } finally {
      // Released inline where it can be (a stack overflow at the call of `fn`: see
      // withLock): the claim still this thread's.
      const a = this.#i32
      const w = this.#w
      const id = this.#id
      // (A subclass's own releaseWrite() is called, as ever.)
      if (a[w + R.WRITER] === id && this.releaseWrite === RWLock.prototype.releaseWrite) {
        // As releaseWrite: whatever a dead writer left is repaired, then the claim goes.
        if (a[w + R.DAMAGED] !== 0) Atomics.store(a, w + R.DAMAGED, 0)
        if (Atomics.compareExchange(a, w + R.WRITER, id, 0) === id && Atomics.load(a, w + R.WWAIT) !== 0) this.#writerLeft(a, this.#handOffs.due())
      } else {
        this.releaseWrite()
      }
    }
  }

  /**
   * The write acquire: claim `writer`, then wait for the readers to leave. `tasks`: an
   * async acquisition, which waits for this thread's own holds (see {@link #tryRead}).
   */
  *#writeSteps(timeout: number | undefined, tasks: boolean): Steps<boolean> {
    const a = this.#a()
    const w = this.#w
    const id = this.#me()
    this.#ownerDied = false
    if (this.#held.length > 0 && !tasks && this.#pruneStale(a, -1) > 0) throw deadlock('this thread holds a read lock (upgrading is not supported)')
    const until = timeout === undefined ? Infinity : performance.now() + timeout
    let check = performance.now() + RECHECK_MS
    let slept = false
    // 1. Claim the writer word.
    for (;;) {
      const writer = Atomics.compareExchange(a, w + R.WRITER, 0, id)
      if (writer === 0) break
      if (writer === id && !tasks) throw deadlock('this thread holds the write lock')
      const now = performance.now()
      const left = until - now
      if (writer === HANDED && this.#mayTakeHanded(slept, left)) {
        if (Atomics.compareExchange(a, w + R.WRITER, HANDED, id) === HANDED) break
        continue
      }
      if (this.#asks(now, check, left)) {
        check = now + RECHECK_MS
        if (this.#clearDeadWriter(a, writer, id)) break
      }
      if (left <= 0) return false
      const g = Atomics.load(a, w + R.WGONE)
      Atomics.store(a, w + R.WWAIT, 1)
      if (Atomics.load(a, w + R.WRITER) === writer) {
        yield { offset: this.offset + 4 * R.WGONE, expected: g, ms: Math.min(left, writer === HANDED ? HANDOFF_GRACE_MS : RECHECK_MS) }
        slept = true
      }
    }
    // 2. New readers wait now; wait for those inside to leave.
    let done = false
    // A close of the mapping while an async wait sleeps below gives the claim back before
    // the views go (afterwards the finally could not: every reader and writer would wait
    // on a claim nobody holds, for as long as this thread keeps the segment open).
    let unhook: (() => void) | null = null
    try {
      this.#recordWriter(a, w, id)
      check = performance.now() + RECHECK_MS
      for (;;) {
        const g = Atomics.load(a, w + R.RGONE)
        Atomics.store(a, w + R.RWAIT, 1)
        if (!this.#readerInside(a, w)) {
          // A writer on pages the mapping lost would guard nothing: give back, throw.
          if (GUARD[0] !== 0) checkIntact(this.memory)
          this.#ownerDied = a[w + R.DAMAGED] !== 0
          done = true
          return true
        }
        const now = performance.now()
        const left = until - now
        if (this.#asks(now, check, left)) {
          check = now + RECHECK_MS
          if (this.#clearDeadReaders(a) > 0) continue
        }
        if (left <= 0) return false
        unhook ??= internals(this.memory).beforeClose(() => {
          if (done) return
          done = true
          this.#giveBackClaim(a)
        })
        yield { offset: this.offset + 4 * R.RGONE, expected: g, ms: Math.min(left, RECHECK_MS) }
      }
    } finally {
      // Timed out, aborted or failed while waiting for readers: give the claim back,
      // inline first (a stack overflow may have ended the wait: see #tryWrite).
      if (!done && Atomics.compareExchange(a, w + R.WRITER, id, 0) === id && Atomics.load(a, w + R.WWAIT) !== 0) this.#writerLeft(a)
      unhook?.()
    }
  }

  // ---- shared helpers ----

  /** Wakes whoever waits for readers to leave. */
  #readerLeft(a: Int32Array): void {
    Atomics.store(a, this.#w + R.RWAIT, 0)
    Atomics.add(a, this.#w + R.RGONE, 1)
    wakeWord(this.memory, this.offset + 4 * R.RGONE)
  }

  /**
   * If `writer` (read from the word) died, replaces it with `next` (0: clear, or this
   * thread taking over) and wakes the sleepers; `true` if it did.
   *
   * The claim passes through this thread: `writer → me`, then `damaged = 1`, then (a
   * reader clearing it) `me → 0`. So `damaged` is set only by the one thread that took
   * the dead claim out of the word, while no one else can hold the lock, and before
   * anyone can: a clearer that lost the race (another process cleared it, and a writer
   * may since have repaired and released) sets nothing, and no writer gets in between
   * the claim's clearing and the damage's record.
   */
  #clearDeadWriter(a: Int32Array, writer: number, next: number): boolean {
    if (writer === HANDED) return false // nobody's: taken by a wait that slept
    const w = this.#w
    // The start time belongs to `writer` only once it copied its id next to it.
    const recorded = a[w + R.OWNER] === writer
    if (this.#alive(writer, recorded ? a[w + R.START_LO] : 0, recorded ? a[w + R.START_HI] : 0)) return false
    const me = this.#me()
    if (Atomics.compareExchange(a, w + R.WRITER, writer, me) !== writer) return false
    Atomics.store(a, w + R.DAMAGED, 1)
    if (next !== me) Atomics.store(a, w + R.WRITER, next)
    this.#writerLeft(a)
    return true
  }

  /** When this object last asked whether holders live ({@link #asks}). */
  #askedAt = -Infinity

  /**
   * Whether a wait asks now whether the holders it waits for live: when its slice ends
   * (`now >= check`), and once before it gives up (`left <= 0`) unless this object asked
   * within the last {@link RECHECK_MS}, so that polling with `tryAcquire*` or short
   * timeouts takes a dead holder's lock over too, at one system call per slice at most.
   */
  #asks(now: number, check: number, left: number): boolean {
    if (now < check && (left > 0 || now - this.#askedAt < RECHECK_MS)) return false
    this.#askedAt = now
    return true
  }

  /** An owner found suspect at the previous check (0: none). */
  #suspect = 0

  /** Whether `owner` lives; a suspect one counts as dead when still suspect a check later. */
  #alive(owner: number, lo: number, hi: number): boolean {
    const l = liveness(this.memory, owner, lo, hi)
    if (l === ALIVE) return true
    if (l === SUSPECT && this.#suspect !== owner) {
      this.#suspect = owner
      return true
    }
    return false
  }

  /**
   * Drops this thread's stale recorded holds (see {@link releaseRead}): those whose slot
   * no longer holds this thread's id, a second record of one slot, and a record of
   * `claimed` (a slot this thread just took from 0, so no earlier hold of it is live).
   * Returns how many holds remain. Only on cold paths (a writer present, a deadlock check).
   */
  #pruneStale(a: Int32Array, claimed: number): number {
    const held = this.#held
    const id = this.#me()
    let seen = 0
    let n = 0
    for (const k of held) {
      const bit = 1 << k
      if (k === claimed || (seen & bit) !== 0 || Atomics.load(a, this.#w + R.SLOTS + k) !== id) continue
      seen |= bit
      held[n++] = k
    }
    held.length = n
    return n
  }

  /** Whether every reader slot holds this thread's id. */
  #ownsEverySlot(a: Int32Array): boolean {
    const id = this.#me()
    for (let k = 0; k < RWLOCK_SLOTS; k++) if (Atomics.load(a, this.#w + R.SLOTS + k) !== id) return false
    return true
  }

  /** Frees the slots of readers that died; returns how many. */
  #clearDeadReaders(a: Int32Array): number {
    let n = 0
    for (let k = 0; k < RWLOCK_SLOTS; k++) {
      const slot = this.#w + R.SLOTS + k
      const owner = Atomics.load(a, slot)
      if (owner !== 0 && !this.#alive(owner, 0, 0) && Atomics.compareExchange(a, slot, owner, 0) === owner) n++
    }
    return n
  }

  /** A handle that `revive` turns into the same lock in another process. */
  toJSON(): Handle {
    return handleOf(this.$shmutils, 'RWLock')
  }
}

/**
 * This thread's read holds of one lock (see `RWLock.#held`), and how many live objects
 * of that lock this thread has in its open mappings.
 */
interface Held {
  slots: number[]
  users: number
}

/** This thread's read holds, per lock (`objectKey@offset`). */
const HELD = new Map<string, Held>()

/**
 * Per mapping: how many live objects it has of each lock (keys of {@link HELD}). When
 * the mapping closes or is collected, its objects stop counting ({@link letGo}); when an
 * object is collected first, it stops counting alone ({@link objectGone}).
 */
const USERS = new WeakMap<MappedMemory, Map<string, number>>()

/** Lets go of a collected mapping's locks (one closed unregisters). */
const collected = new FinalizationRegistry<Map<string, number>>(letGo)

/** Lets go of a collected lock object's count, unless its mapping let go of it already. */
const objectGone = new FinalizationRegistry<{ mine: Map<string, number>; key: string }>(({ mine, key }) => {
  const n = mine.get(key)
  if (n === undefined) return
  if (n > 1) mine.set(key, n - 1)
  else mine.delete(key)
  forget(key, 1)
})

/**
 * `n` objects of the lock `key` are gone: a lock no live object of an open mapping of
 * this thread is of, and that this thread holds no read hold of, leaves {@link HELD}. A
 * lock still held stays: its holds are this thread's, and an object of it made later
 * (another mapping of the segment) must see them.
 */
function forget(key: string, n: number): void {
  const held = HELD.get(key)
  if (held !== undefined && (held.users -= n) <= 0 && held.slots.length === 0) HELD.delete(key)
}

/** A mapping's objects (`mine`: how many of each lock) are gone: it closed or was collected. */
function letGo(mine: Map<string, number>): void {
  for (const [key, n] of mine) forget(key, n)
  mine.clear()
}

/**
 * The read holds of this thread of the lock at `offset` in `memory`'s segment, shared by
 * every object of it (whichever mapping of the segment it is in); `object` counts as a
 * user of them until it is collected or its mapping closes.
 */
function heldSlots(object: object, memory: MappedMemory, offset: number): number[] {
  const key = `${internals(memory).objectKey}@${offset}`
  let held = HELD.get(key)
  if (held === undefined) HELD.set(key, (held = { slots: [], users: 0 }))
  let mine = USERS.get(memory)
  if (mine === undefined) {
    const m = (mine = new Map())
    USERS.set(memory, m)
    collected.register(memory, m, m)
    internals(memory).beforeClose(() => {
      collected.unregister(m)
      letGo(m)
    })
  }
  mine.set(key, (mine.get(key) ?? 0) + 1)
  held.users++
  objectGone.register(object, { mine, key })
  return held.slots
}

function deadlock(why: string): ShmError {
  return new ShmError(`RWLock: ${why}; waiting would never end`, { code: 'ERR_SHM_DEADLOCK' })
}

function checkFn(fn: unknown): void {
  if (typeof fn !== 'function') throw typeError(`The "fn" argument must be a function; got ${describe(fn)}`)
}

registerReviver('RWLock', (h) => RWLock.at(memoryOfHandle(h), h.offset))
