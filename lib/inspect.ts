/**
 * What `console.log` and `util.inspect` show for the package's objects: their state, read
 * from shared memory at the moment of the call (a mapping's segment and identity, a
 * heap's use, whether a lock is held and by whom, waiters, a semaphore's value), never
 * their internal fields. Reading never takes a lock and never blocks: figures of other
 * processes' ongoing operations may be a moment old.
 * @module
 */
import { inspect, type InspectOptionsStylized } from 'node:util'
import { Condition } from './condition.js'
import { Heap } from './heap.js'
import { ShmError } from './errors.js'
import { Lock } from './lock.js'
import { MappedMemory } from './memory.js'
import { decodeRecord, lockState, viewAt } from './records.js'
import { RLock } from './rlock.js'
import { Semaphore } from './semaphore.js'
import { Barrier } from './barrier.js'
import { Channel } from './channel.js'
import { Event } from './event.js'
import { SharedMap } from './map.js'
import { RWLock } from './rwlock.js'

type Show = typeof inspect

/** `Name { ...fields }`, or `[Name]` past the depth limit. */
function render(name: string, fields: Record<string, unknown>, depth: number, options: InspectOptionsStylized, show: Show): string {
  if (depth < 0) return options.stylize(`[${name}]`, 'special')
  return `${name} ${show(fields, { ...options, depth: options.depth == null ? null : options.depth - 1 })}`
}

/** How a mapping is named in the inspection of objects that live in it. */
export function memoryLabel(m: MappedMemory): string {
  if (m.name !== null) return m.name
  return m.managed ? 'anonymous segment' : 'anonymous mapping'
}

function hex(n: number): string {
  return `0x${n.toString(16)}`
}

/**
 * Installs `fn` as the `util.inspect` hook of a class (one place for every class, so the
 * classes themselves stay about what they do).
 */
function install<T>(cls: { prototype: T }, fn: (self: T) => { name?: string; fields: Record<string, unknown> }): void {
  Object.defineProperty(cls.prototype, inspect.custom, {
    value(this: T, depth: number, options: InspectOptionsStylized, show: Show): string {
      const { name, fields } = fn(this)
      return render(name ?? (this as object).constructor.name, fields, depth, options, show)
    },
    writable: true,
    configurable: true,
  })
}

install(MappedMemory, (m) => {
  if (m.closed) return { fields: { name: m.name, closed: true } }
  const fields: Record<string, unknown> = {
    name: m.name,
    kind: m.managed ? (m.name === null ? 'anonymous segment' : 'segment') : 'raw',
    size: m.size,
    address: `${hex(m.address.begin)}-${hex(m.address.end)}`,
  }
  if (m.uid !== null) fields.uid = m.uid
  const c = m.creator
  if (c) fields.creator = { pid: c.pid, createdAt: new Date(c.createdAt) }
  if (m.fd !== null) fields.fd = m.fd
  fields.closed = false
  return { fields }
})

/** What objects that live in a mapping have. */
interface Placed {
  readonly memory: MappedMemory
  readonly offset: number
}

/**
 * {@link install} for objects in a mapping: `memory` (its label) and `offset` first, then
 * what `state` reads; `closed: true` once the mapping is closed, and the error's code as
 * `unreadable` when the state cannot be read (the mapping lost the record's pages).
 */
function installPlaced<T extends Placed>(cls: { prototype: T }, state: (self: T) => Record<string, unknown>): void {
  install(cls, (x) => {
    const head = { memory: memoryLabel(x.memory), offset: x.offset }
    if (x.memory.closed) return { fields: { ...head, closed: true } }
    try {
      return { fields: { ...head, ...state(x) } }
    } catch (e) {
      if (e instanceof ShmError) return { fields: { ...head, unreadable: e.code } }
      throw e
    }
  })
}

/** `fields` without its `false` and `undefined` flags (shown only when set). */
function flags(fields: Record<string, unknown>): Record<string, unknown> {
  return Object.fromEntries(Object.entries(fields).filter(([, v]) => v !== false && v !== undefined))
}

/** Heap header fields read for inspection (docs/FORMAT.md §4.1). */
const H_HEADER_SIZE = 44
const H_ARENA_END = 56
const H_BUSY = 80
const H_USED = 88
const H_ALLOCS = 104
const H_DIR_COUNT = 136

installPlaced(Heap, (h) => {
  const [v, o] = viewAt(h.memory, h.offset, H_DIR_COUNT + 8)
  const at = (f: number) => Number(v.getBigUint64(o + f, true))
  const used = at(H_USED)
  const free = at(H_ARENA_END) - v.getUint32(o + H_HEADER_SIZE, true) - used
  // busy: an operation in progress, or one whose process died (the next one repairs it).
  return flags({ size: h.size, used, free, allocations: at(H_ALLOCS), named: at(H_DIR_COUNT), busy: v.getUint32(o + H_BUSY, true) !== 0 })
})

installPlaced(Lock, (l) => {
  const s = lockState(l.memory, l.offset, false)
  return {
    locked: s.locked,
    ...flags({
        owner: s.locked && !s.notRecoverable ? l.owner : undefined,
      depth: l instanceof RLock && l.depth > 0 ? l.depth : undefined,
      waiters: s.waiters,
      ownerDied: s.ownerDied || l.ownerDied,
      notRecoverable: s.notRecoverable,
    }),
  }
})

installPlaced(Condition, (c) => ({ waiters: decodeRecord(c.memory, c.offset, 32, 3).state.waiters, lock: c.lock }))

installPlaced(Semaphore, (s) => {
  const { state } = decodeRecord(s.memory, s.offset, 32, 4)
  return { value: state.value, ...flags({ waiters: state.waiters }) }
})

installPlaced(RWLock, (l) => {
  const { state } = decodeRecord(l.memory, l.offset, 192, 5)
  return flags({ writer: l.owner, readers: state.readers, ownerDied: state.ownerDied })
})

installPlaced(Barrier, (b) => flags({ parties: b.parties, waiting: b.waiting, broken: b.broken }))

installPlaced(Event, (e) => ({ isSet: e.isSet, ...flags({ waiters: decodeRecord(e.memory, e.offset, 32, 7).state.waiters }) }))

installPlaced(SharedMap, (m) => {
  const { state } = decodeRecord(m.memory, m.offset, 128, 16)
  return { size: state.entries, bytes: state.bytes, codec: m.codec }
})

installPlaced(Channel, (c) => {
  const { state } = decodeRecord(c.memory, c.offset, 320, 17)
  return { length: state.queued, bytes: state.bytes, capacity: state.capacity, closed: state.closed }
})
