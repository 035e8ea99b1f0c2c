/**
 * The state of synchronization records and containers, decoded from their bytes
 * (docs/FORMAT.md §6) for `util.inspect` and `shmutils inspect`. Everything read here is
 * untrusted: a value that breaks the format is shown as it is, never followed.
 * @module
 */
import { internals, type MappedMemory } from './memory.js'

/**
 * A DataView holding `[offset, offset + length)` of `memory`, and where `offset` is in
 * it (mappings larger than one ArrayBuffer are seen through windows).
 */
export function viewAt(memory: MappedMemory, offset: number, length: number): [DataView, number] {
  const w = internals(memory).window(offset, length)
  return [w.dv, offset - w.start]
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

/** Offsets in a lock record (docs/FORMAT.md §6.1). */
const R_OWNER_PID = 12
const R_OWNER_TID = 16
const R_OWNER_TOKEN = 20
const R_START_LO = 24
const R_START_HI = 28

/**
 * The recorded holder of the lock word `word` of the record at `at`: its pid and thread
 * id if the record describes this very holder (the fields are written after the word is
 * taken; a reader that catches a holder in between, or a holder that never records
 * itself, sees other values there), else zeros.
 */
function recordedHolder(view: DataView, at: number, owner: number): LockOwner {
  for (let tries = 0; tries < 3; tries++) {
    const token = Atomics.load(new Int32Array(view.buffer, view.byteOffset + at + R_OWNER_TOKEN, 1), 0)
    const pid = view.getUint32(at + R_OWNER_PID, true)
    const tid = view.getUint32(at + R_OWNER_TID, true)
    if ((token & OWNER_MASK) === owner) return { pid, tid }
  }
  return { pid: 0, tid: 0 }
}

/** The holder of the lock record at `at` (pid and tid as recorded), or `null` when free. */
export function lockOwnerAt(view: DataView, at: number): LockOwner | null {
  const owner = view.getUint32(at, true) & OWNER_MASK
  if (owner === 0 || owner === OWNER_MASK) return null
  return recordedHolder(view, at, owner)
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

/** Who holds the lock word `owner` of the record at `at`; `alive` asks about its token. */
function describeHolder(view: DataView, at: number, owner: number, alive?: AliveCheck): Holder {
  const { pid, tid } = recordedHolder(view, at, owner)
  const start = view.getUint32(at + R_START_LO, true) + view.getUint32(at + R_START_HI, true) * 2 ** 32
  return { owner, pid: pid || null, tid: tid || null, alive: alive ? alive(owner, start) : null }
}

/** Decodes the lock record at `offset`; `alive` (if given) tells whether its holder lives. */
export function lockState(view: DataView, offset: number, reentrant: boolean, alive?: AliveCheck): LockState {
  const word = view.getUint32(offset, true)
  const owner = word & OWNER_MASK
  const notRecoverable = owner === OWNER_MASK
  const s: LockState = {
    locked: owner !== 0,
    waiters: (word & WAITERS) !== 0,
    ownerDied: (word & OWNER_DIED) !== 0,
    notRecoverable,
    holder: owner !== 0 && !notRecoverable ? describeHolder(view, offset, owner, alive) : null,
  }
  if (reentrant && owner !== 0) s.depth = view.getUint32(offset + 4, true)
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

/**
 * Decodes the record of `kind` at `offset` (`size`: the bytes its allocation holds).
 * Kinds whose layout this version does not know are reported by name only.
 */
export function decodeRecord(view: DataView, offset: number, size: number, kind: number, alive?: AliveCheck): RecordState {
  switch (kind) {
    case 1:
    case 2: {
      const s = lockState(view, offset, kind === 2, alive)
      return { state: { ...s }, summary: lockSummary(s) }
    }
    case 3: {
      const counts = view.getUint32(offset + 4, true)
      const waiters = counts & 0xffff
      const signals = Math.min(counts >>> 16, waiters)
      return {
        state: { waiters, signals },
        summary: `${waiters} waiting${signals ? `, ${signals} notified not yet woken` : ''}`,
      }
    }
    case 4: {
      const word = view.getUint32(offset, true)
      const value = word & 0x7fff_ffff
      const holders = view.getUint32(offset + 4, true)
      const state: Record<string, unknown> = { value, waiters: (word & WAITERS) !== 0, undo: holders > 0 }
      let summary = `value ${value}${state.waiters ? ', waiters' : ''}`
      // Undo semaphores: a table of `holders` slots follows the record (§6.10).
      const table = offset + 32
      if (holders > 0 && table + 48 + 8 * holders <= offset + size) {
        let taken = 0
        let slots = 0
        for (let i = 0; i < holders; i++) {
          if (view.getUint32(table + 48 + 8 * i, true) !== 0) {
            slots++
            taken += view.getUint32(table + 52 + 8 * i, true)
          }
        }
        Object.assign(state, { holderSlots: holders, holdingThreads: slots, unitsHeld: taken })
        summary += `, undo: ${taken} units held by ${slots} threads`
      }
      return { state, summary }
    }
    default:
      return { state: {}, summary: '(its layout is not known to this version of the tool)' }
  }
}
