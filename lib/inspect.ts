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

/** Heap header fields read for inspection (docs/FORMAT.md §4.1). */
const H_HEADER_SIZE = 44
const H_ARENA_END = 56
const H_BUSY = 80
const H_USED = 88
const H_ALLOCS = 104
const H_DIR_COUNT = 136

install(Heap, (h) => {
  const where = memoryLabel(h.memory)
  if (h.memory.closed) return { fields: { memory: where, closed: true } }
  const [v, o] = viewAt(h.memory, h.offset, H_DIR_COUNT + 8)
  const at = (f: number) => Number(v.getBigUint64(o + f, true))
  const used = at(H_USED)
  const free = at(H_ARENA_END) - v.getUint32(o + H_HEADER_SIZE, true) - used
  const fields: Record<string, unknown> = {
    memory: where, offset: h.offset, size: h.size, used, free, allocations: at(H_ALLOCS), named: at(H_DIR_COUNT),
  }
  // An operation in progress, or one whose process died (the next operation repairs it).
  if (v.getUint32(o + H_BUSY, true) !== 0) fields.busy = true
  return { fields }
})

install(Lock, (l) => {
  const where = memoryLabel(l.memory)
  if (l.memory.closed) return { fields: { memory: where, offset: l.offset, closed: true } }
  const s = lockState(l.memory, l.offset, false)
  const fields: Record<string, unknown> = { memory: where, offset: l.offset, locked: s.locked }
  if (s.locked && !s.notRecoverable) fields.owner = l.owner
  if (l instanceof RLock && l.depth > 0) fields.depth = l.depth
  if (s.waiters) fields.waiters = true
  if (s.ownerDied || l.ownerDied) fields.ownerDied = true
  if (s.notRecoverable) fields.notRecoverable = true
  return { fields }
})

install(Condition, (c) => {
  const where = memoryLabel(c.memory)
  if (c.memory.closed) return { fields: { memory: where, offset: c.offset, closed: true } }
  const { state } = decodeRecord(c.memory, c.offset, 32, 3)
  return { fields: { memory: where, offset: c.offset, waiters: state.waiters, lock: c.lock } }
})

install(Semaphore, (s) => {
  const where = memoryLabel(s.memory)
  if (s.memory.closed) return { fields: { memory: where, offset: s.offset, closed: true } }
  const { state } = decodeRecord(s.memory, s.offset, 32, 4)
  const fields: Record<string, unknown> = { memory: where, offset: s.offset, value: state.value }
  if (state.waiters) fields.waiters = true
  return { fields }
})

install(RWLock, (l) => {
  const where = memoryLabel(l.memory)
  if (l.memory.closed) return { fields: { memory: where, offset: l.offset, closed: true } }
  const { state } = decodeRecord(l.memory, l.offset, 192, 5)
  const fields: Record<string, unknown> = { memory: where, offset: l.offset, writer: l.owner, readers: state.readers }
  if (l.ownerDied) fields.ownerDied = true
  return { fields }
})

install(Barrier, (b) => {
  const where = memoryLabel(b.memory)
  if (b.memory.closed) return { fields: { memory: where, offset: b.offset, closed: true } }
  const fields: Record<string, unknown> = { memory: where, offset: b.offset, parties: b.parties, waiting: b.waiting }
  if (b.broken) fields.broken = true
  return { fields }
})

install(Event, (e) => {
  const where = memoryLabel(e.memory)
  if (e.memory.closed) return { fields: { memory: where, offset: e.offset, closed: true } }
  const { state } = decodeRecord(e.memory, e.offset, 32, 7)
  const fields: Record<string, unknown> = { memory: where, offset: e.offset, isSet: e.isSet }
  if (state.waiters) fields.waiters = true
  return { fields }
})

install(SharedMap, (m) => {
  const where = memoryLabel(m.memory)
  if (m.memory.closed) return { fields: { memory: where, offset: m.offset, closed: true } }
  const { state } = decodeRecord(m.memory, m.offset, 128, 16)
  return { fields: { memory: where, offset: m.offset, size: state.entries, bytes: state.bytes, codec: m.codec } }
})

install(Channel, (c) => {
  const where = memoryLabel(c.memory)
  if (c.memory.closed) return { fields: { memory: where, offset: c.offset, closed: true } }
  const { state } = decodeRecord(c.memory, c.offset, 320, 17)
  return { fields: { memory: where, offset: c.offset, length: state.queued, bytes: state.bytes, capacity: state.capacity, closed: state.closed } }
})
