/**
 * The state of synchronization records and containers, decoded from their bytes
 * (docs/FORMAT.md §6, §11, §12) for `util.inspect` and `shmutils inspect`. Everything
 * read here is untrusted: a value that breaks the format is shown as it is, and an offset
 * read from memory is followed only inside the mapping. Each exported reader ends with
 * the SIGBUS guard's check (`lib/memory.ts`): nothing is decoded from the zero pages that
 * stand in for pages the mapping lost.
 * @module
 */
import { CHANNEL_LAYOUT, type Layout, MAP_LAYOUT } from './layouts.js'
import { checkIntact, GUARD, internals, type MappedMemory } from './memory.js'

/**
 * A DataView holding `[offset, offset + length)` of `memory`, and where `offset` is in
 * it (mappings larger than one ArrayBuffer are seen through windows). The caller checks
 * the range lies in the mapping.
 */
export function viewAt(memory: MappedMemory, offset: number, length: number): [DataView, number] {
  const w = internals(memory).window(offset, length)
  return [w.dv, offset - w.start]
}

/** Reads of a record: `u32(off)` etc. relative to its start; `null` past the mapping's end. */
class Reader {
  readonly #view: DataView
  readonly #at: number
  readonly #len: number

  constructor(memory: MappedMemory, offset: number, length: number) {
    this.#len = Math.max(0, Math.min(length, memory.size - offset))
    ;[this.#view, this.#at] = viewAt(memory, offset, this.#len)
  }

  u32(off: number): number {
    return off + 4 <= this.#len ? this.#view.getUint32(this.#at + off, true) : 0
  }

  f64(off: number): number {
    return off + 8 <= this.#len ? this.#view.getFloat64(this.#at + off, true) : 0
  }

  /** An atomic load of the u32 at `off` (4-aligned). */
  load(off: number): number {
    if (off + 4 > this.#len) return 0
    const v = this.#view
    return Atomics.load(new Int32Array(v.buffer, v.byteOffset + this.#at + off, 1), 0) >>> 0
  }
}

/** The kind tags of docs/FORMAT.md §6 (the `u32` at offset 8 of a record). */
export const KINDS: Readonly<Record<number, string>> = Object.freeze({
  1: 'Lock',
  2: 'RLock',
  3: 'Condition',
  4: 'Semaphore',
  5: 'RWLock',
  6: 'Barrier',
  7: 'Event',
  16: 'SharedMap',
  17: 'Channel',
})

/** The tags `heapSurvey` looks for. */
export const KIND_TAGS: readonly number[] = Object.keys(KINDS).map(Number)

/** Bits of a lock word (§6.2). */
const OWNER_MASK = 0x3fff_ffff
const OWNER_DIED = 0x4000_0000
const WAITERS = 0x8000_0000

/** Offsets in a lock record (§6.1). */
const R_OWNER_PID = 12
const R_OWNER_TID = 16
const R_OWNER_TOKEN = 20
const R_START_LO = 24
const R_START_HI = 28

/** Who holds a lock, as far as its word and record tell. */
export interface Holder {
  /** The owner bits of the word: the holder's liveness token. */
  owner: number
  /** The holder's pid (its own PID namespace), if the record says. */
  pid: number | null
  /** The holder's thread id (its own PID namespace), if the record says. */
  tid: number | null
  /** Whether the holder is alive; `null` if this tool cannot tell. */
  alive: boolean | null
}

/**
 * The pid and thread id a lock's holder recorded (docs/FORMAT.md §6.1), each in the
 * holder's own PID namespace: informational across containers.
 * @category Locks and waiting
 */
export interface LockOwner {
  /** The holding process. 0 if the holder has not recorded itself (yet). */
  readonly pid: number
  /** The holding thread (a worker thread is a thread of its own). 0 if not recorded. */
  readonly tid: number
}

/** Asks whether the holder of liveness token `token` lives (`start`: its recorded start time). */
export type AliveCheck = (token: number, start: number) => boolean | null

/**
 * The recorded holder of the lock whose owner bits are `owner`: its pid and thread id if
 * the record describes this very holder (the fields are written after the word is
 * taken, the token last; a reader that catches a holder in between, or a holder that
 * never records itself, sees other values there), else zeros.
 */
function recordedHolder(r: Reader, owner: number): LockOwner {
  for (let tries = 0; tries < 3; tries++) {
    const token = r.load(R_OWNER_TOKEN)
    const pid = r.u32(R_OWNER_PID)
    const tid = r.u32(R_OWNER_TID)
    if ((token & OWNER_MASK) === owner) return { pid, tid }
  }
  return { pid: 0, tid: 0 }
}

/** The holder of the lock record at `offset` (pid and tid as recorded), or `null` when free. */
export function lockOwnerAt(memory: MappedMemory, offset: number): LockOwner | null {
  const r = new Reader(memory, offset, 32)
  const owner = r.load(0) & OWNER_MASK
  const holder = owner === 0 || owner === OWNER_MASK ? null : recordedHolder(r, owner)
  if (GUARD[0] !== 0) checkIntact(memory)
  return holder
}

/** A decoded lock (kinds 1, 2 and the heap lock). */
export interface LockState {
  locked: boolean
  /** Someone may be sleeping on it. */
  waiters: boolean
  /** Taken over from a dead holder and not yet marked consistent. */
  ownerDied: boolean
  /** Released without being marked consistent: can never be taken again. */
  notRecoverable: boolean
  holder: Holder | null
  /** RLock: the holder's recursion depth. */
  depth?: number
}

/** Who holds the lock word `owner` of the record `r`; `alive` asks about its token. */
function describeHolder(r: Reader, owner: number, alive?: AliveCheck): Holder {
  const { pid, tid } = recordedHolder(r, owner)
  const start = r.u32(R_START_LO) + r.u32(R_START_HI) * 2 ** 32
  return { owner, pid: pid || null, tid: tid || null, alive: alive ? alive(owner, start) : null }
}

/** Decodes the lock record at `offset`; `alive` (if given) tells whether its holder lives. */
export function lockState(memory: MappedMemory, offset: number, reentrant: boolean, alive?: AliveCheck): LockState {
  const r = new Reader(memory, offset, 32)
  const word = r.load(0)
  const owner = word & OWNER_MASK
  const notRecoverable = owner === OWNER_MASK
  const s: LockState = {
    locked: owner !== 0,
    waiters: (word & WAITERS) !== 0,
    // (A free word with both flags is handed to a sleeper: nobody died.)
    ownerDied: owner !== 0 && (word & OWNER_DIED) !== 0,
    notRecoverable,
    holder: owner !== 0 && !notRecoverable ? describeHolder(r, owner, alive) : null,
  }
  if (reentrant && owner !== 0) s.depth = r.u32(4)
  if (GUARD[0] !== 0) checkIntact(memory)
  return s
}

/** One line for a lock's state. */
export function lockSummary(s: LockState): string {
  if (s.notRecoverable) return 'not recoverable (its holder died and it was released inconsistent)'
  if (!s.locked) return s.waiters ? 'free (waiters being woken)' : 'free'
  const h = s.holder
  const who = h === null ? '' : h.pid !== null ? ` by pid ${h.pid} tid ${h.tid}` : ` by token ${h.owner} (not recorded who)`
  const alive = h?.alive === true ? ' (alive)' : h?.alive === false ? ' (DEAD: the next acquirer recovers it)' : ''
  const depth = s.depth !== undefined && s.depth > 1 ? `, depth ${s.depth}` : ''
  const extra = [s.waiters ? 'waiters' : '', s.ownerDied ? 'owner died, not yet consistent' : ''].filter(Boolean)
  return `held${who}${alive}${depth}${extra.length ? `; ${extra.join('; ')}` : ''}`
}

/** A decoded record of any kind: a plain object for `--json`, and one line for people. */
export interface RecordState {
  state: Record<string, unknown>
  summary: string
}

/** The condition record (§6.9). */
function condition(r: Reader): RecordState {
  const counts = r.u32(4)
  const waiters = counts & 0xffff
  const signals = Math.min(counts >>> 16, waiters)
  return { state: { waiters, signals }, summary: `${waiters} waiting${signals ? `, ${signals} notified not yet woken` : ''}` }
}

/** The semaphore record and, for an undo semaphore, its holder table (§6.10). */
function semaphore(r: Reader, size: number): RecordState {
  const word = r.load(0)
  const holders = r.u32(4)
  // A plain semaphore's value counts the units a release handed to sleepers (byte 12).
  const value = (word & 0x7fff_ffff) + (holders === 0 ? r.u32(12) : 0)
  const state: Record<string, unknown> = { value, waiters: (word & WAITERS) !== 0, undo: holders > 0 }
  let summary = `value ${value}${state.waiters ? ', waiters' : ''}`
  const table = 32
  if (holders > 0 && table + 48 + 8 * holders <= size) {
    let taken = 0
    let slots = 0
    for (let i = 0; i < holders; i++) {
      if (r.u32(table + 48 + 8 * i) !== 0) {
        slots++
        taken += r.u32(table + 52 + 8 * i)
      }
    }
    Object.assign(state, { holderSlots: holders, holdingThreads: slots, unitsHeld: taken })
    summary += `, undo: ${taken} units held by ${slots} threads`
  }
  return { state, summary }
}

/** The RWLock record (§12): the writer and the readers holding it. (Its sleep flags stay set after a wait: not shown.) */
function rwlock(r: Reader): RecordState {
  const writer = r.load(0) & OWNER_MASK
  let readers = 0
  for (let i = 0; i < 32; i++) if (r.u32(64 + 4 * i) !== 0) readers++
  // The writer's pid and tid (bytes 32, 36), believed while the owner copy (12) matches.
  const named = writer !== 0 && (r.load(12) & OWNER_MASK) === writer
  const who = named ? { pid: r.u32(32), tid: r.u32(36) } : null
  // A dead writer's data not repaired yet (byte 40).
  const ownerDied = r.load(40) !== 0
  const state = { writer: writer !== 0, writerPid: who?.pid ?? null, writerTid: who?.tid ?? null, readers, ownerDied }
  const by = who && who.pid ? ` by pid ${who.pid} tid ${who.tid}` : ''
  const summary = (writer !== 0
    ? readers ? `a writer${by} waits for ${readers} reader${readers === 1 ? '' : 's'} to leave` : `held for writing${by}`
    : readers ? `held by ${readers} reader${readers === 1 ? '' : 's'}` : 'free') + (ownerDied ? '; a writer died: not repaired yet' : '')
  return { state, summary }
}

/** The Barrier record (§12). */
function barrier(r: Reader): RecordState {
  const s = r.load(0)
  const state = { parties: r.u32(4), arrived: s & 0xffff, generation: (s >>> 16) & 0x7fff, broken: (s & 0x8000_0000) !== 0 }
  return { state, summary: `${state.arrived} of ${state.parties} arrived, generation ${state.generation}${state.broken ? '; BROKEN' : ''}` }
}

/** The Event record (§12). */
function event(r: Reader): RecordState {
  const w = r.load(0)
  const state = { set: (w & 1) !== 0, waiters: (w & 2) !== 0 }
  return { state, summary: `${state.set ? 'set' : 'clear'}${state.waiters ? '; waiters' : ''}` }
}

/** A block slot (a segment offset / 16, §11) as an offset, `null` for 0 or out of range. */
function slot(memory: MappedMemory, s: number, length: number): number | null {
  const off = s * 16
  return s !== 0 && off + length <= memory.size ? off : null
}

/** A SharedMap's header (§11.2): its entries and bytes, summed over its stripes. */
function sharedMap(memory: MappedMemory, r: Reader): RecordState {
  const stripes = r.u32(28)
  const array = slot(memory, r.u32(32), 128 * stripes)
  let entries = 0
  let bytes = 0
  let locked = 0
  if (stripes >= 1 && stripes <= 1024 && array !== null) {
    for (let i = 0; i < stripes; i++) {
      const st = new Reader(memory, array + 128 * i, 128)
      entries += st.u32(52)
      bytes += st.f64(56)
      if ((st.load(0) & OWNER_MASK) !== 0) locked++
    }
  }
  const maxEntries = r.f64(40)
  const maxBytes = r.f64(48)
  const state = { ready: r.u32(24) === 1, entries, bytes, stripes, lockedStripes: locked, maxEntries, maxBytes, ttl: r.f64(56) }
  const bounds = [maxEntries ? `max ${maxEntries} entries` : '', maxBytes ? `max ${maxBytes} bytes` : ''].filter(Boolean).join(', ')
  return {
    state,
    summary: `${entries} entries, ${bytes} bytes in ${stripes} stripes${bounds ? ` (${bounds})` : ''}${locked ? `; ${locked} stripes locked` : ''}`,
  }
}

/**
 * Messages queued, from a Channel's `sent` and `received` counters (u32, wrapping). A
 * consumer may count a message before its producer does (between the consumer's commit
 * and the producer's count, or after a producer died there): `received` one ahead of
 * `sent` is an empty channel, not 2^32 - 1 messages.
 */
export function queuedMessages(sent: number, received: number): number {
  const d = (sent - received) | 0
  return d < 0 ? 0 : d
}

/** A Channel's header (§11.3): messages and bytes queued. */
function channel(r: Reader): RecordState {
  const capacity = r.u32(24)
  const queued = queuedMessages(r.load(108), r.load(172))
  const bytes = (r.load(192) - r.load(256)) >>> 0
  const state = {
    capacity, queued, bytes, closed: r.u32(28) === 1,
    producersWaiting: r.u32(260) !== 0, consumersWaiting: r.u32(196) !== 0,
  }
  return { state, summary: `${queued} messages queued (${bytes} of ${capacity} bytes)${state.closed ? '; closed' : ''}` }
}

/**
 * A container whose header is not `layout` (another shmutils' layout version, or
 * damage) is reported as such, never decoded with this version's offsets; `null` when
 * the header is `layout`.
 */
function unknownLayout(r: Reader, layout: Layout, what: string): RecordState | null {
  const magic = r.u32(0)
  const version = r.u32(4)
  if (magic === layout.magic && version === layout.version) return null
  const summary = magic === layout.magic
    ? `(a ${what} of layout version ${version}; this version of the tool reads version ${layout.version})`
    : `(tagged ${what}, but its header does not say so: damaged)`
  return { state: { magic, version }, summary }
}

/**
 * Decodes the record of `kind` at `offset` of `memory` (`size`: the bytes its
 * allocation holds). Kinds whose layout this version does not know are reported by
 * name only.
 */
export function decodeRecord(memory: MappedMemory, offset: number, size: number, kind: number, alive?: AliveCheck): RecordState {
  const s = decode(memory, offset, size, kind, alive)
  if (GUARD[0] !== 0) checkIntact(memory)
  return s
}

function decode(memory: MappedMemory, offset: number, size: number, kind: number, alive?: AliveCheck): RecordState {
  const r = new Reader(memory, offset, Math.max(size, 32))
  switch (kind) {
    case 1:
    case 2: {
      const s = lockState(memory, offset, kind === 2, alive)
      return { state: { ...s }, summary: lockSummary(s) }
    }
    case 3:
      return condition(r)
    case 4:
      return semaphore(r, size)
    case 5:
      return rwlock(r)
    case 6:
      return barrier(r)
    case 7:
      return event(r)
    case 16:
      return unknownLayout(r, MAP_LAYOUT, 'SharedMap') ?? sharedMap(memory, r)
    case 17:
      return unknownLayout(r, CHANNEL_LAYOUT, 'Channel') ?? channel(r)
    default:
      return { state: {}, summary: '(its layout is not known to this version of the tool)' }
  }
}
