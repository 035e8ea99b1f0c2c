/**
 * Optional tracing through `node:diagnostics_channel`: slow lock waits, locks recovered
 * from dead holders, and heap repairs. Nothing is measured or built unless a channel has
 * subscribers: the uncontended paths never look at them, and a contended wait checks
 * one flag before it sleeps.
 *
 * ```js
 * const dc = require('node:diagnostics_channel')
 * const { tracing } = require('shmutils')
 * tracing.slowWaitMs = 5
 * dc.subscribe(tracing.channels.lockWait, (m) => console.log(`waited ${m.waitedMs} ms for`, m.object))
 * ```
 * @module
 */
import diagnosticsChannel from 'node:diagnostics_channel'
import type { Heap } from './heap.js'
import { mappingAt, type MappedMemory } from './memory.js'
import { binding } from './native.js'

/**
 * A message on {@link tracing}`.channels.lockWait`.
 * @category Diagnostics
 */
export interface LockWaitMessage {
  /** The `Lock`, `RLock` or `Semaphore` waited for. */
  object: object
  /** Its kind: `'Lock'`, `'RLock'` or `'Semaphore'` (a subclass's objects say their base's). */
  kind: string
  /** How long the wait took, in milliseconds. */
  waitedMs: number
  /** `'acquired'`, `'owner-died'` (acquired from a dead holder) or `'timed-out'`. */
  outcome: 'acquired' | 'owner-died' | 'timed-out'
  /** Whether it was an async wait (`acquireAsync`). */
  async: boolean
}

/**
 * A message on {@link tracing}`.channels.ownerDied`.
 * @category Diagnostics
 */
export interface OwnerDiedMessage {
  /** The `Lock` or `RLock` this thread took over from a holder that died. */
  object: object
  /** Its kind: `'Lock'` or `'RLock'`. */
  kind: string
}

/**
 * A message on {@link tracing}`.channels.heapRepair`.
 * @category Diagnostics
 */
export interface HeapRepairMessage {
  /** The heap repaired (when this thread has it open). */
  heap: Heap | undefined
  /** The mapping it lives in (when this thread has it open). */
  memory: MappedMemory | undefined
  /** Where the heap region starts in the mapping. */
  offset: number
  /**
   * `'owner-died'`: a process died holding the heap's lock; `'interrupted'`: an operation
   * found another one unfinished (its process died inside it).
   */
  reason: 'owner-died' | 'interrupted'
}

/**
 * What {@link tracing} holds.
 * @category Diagnostics
 */
export interface Tracing {
  /** The channel names. */
  readonly channels: {
    /** Blocking and async acquisitions of locks and semaphores that waited at least {@link Tracing.slowWaitMs}: {@link LockWaitMessage}. */
    readonly lockWait: 'shmutils:lock:wait'
    /** A lock taken over from a dead holder, by this thread: {@link OwnerDiedMessage}. */
    readonly ownerDied: 'shmutils:lock:owner-died'
    /** A heap rebuilt by this thread after a process died inside it: {@link HeapRepairMessage}. */
    readonly heapRepair: 'shmutils:heap:repair'
  }
  /** The shortest wait reported on `lockWait`, in milliseconds (default 10). */
  slowWaitMs: number
}

/**
 * The diagnostics channels shmutils publishes on (`node:diagnostics_channel`), and their
 * settings. Nothing is measured or published while a channel has no subscribers.
 * @category Diagnostics
 */
export const tracing: Tracing = {
  channels: Object.freeze({
    lockWait: 'shmutils:lock:wait',
    ownerDied: 'shmutils:lock:owner-died',
    heapRepair: 'shmutils:heap:repair',
  } as const),
  slowWaitMs: 10,
}

const lockWait = diagnosticsChannel.channel(tracing.channels.lockWait)
const ownerDied = diagnosticsChannel.channel(tracing.channels.ownerDied)
const heapRepair = diagnosticsChannel.channel(tracing.channels.heapRepair)

/**
 * @internal When a contended wait starts: `performance.now()` if anyone listens for slow
 * waits, else 0 (then {@link traceWait} does nothing).
 */
export function waitStart(): number {
  return lockWait.hasSubscribers ? performance.now() : 0
}

/**
 * The locks a container takes inside its operations (lib/container.ts): their messages
 * are published on a microtask, after the operation's synchronous part, because a
 * subscriber is user code and may use any container (and so the buffers the operation
 * has its key and value in) while the operation is half done.
 */
const later = new WeakSet<object>()

/** @internal Marks `lock` as one a container takes inside its operations (see {@link later}). */
export function traceLater(lock: object): void {
  later.add(lock)
}

/** Publishes `message` on `channel`: now, or on a microtask for a lock of {@link later}. */
function publish(channel: diagnosticsChannel.Channel, object: object, message: object): void {
  if (later.has(object)) queueMicrotask(() => channel.publish(message))
  else channel.publish(message)
}

/** @internal Reports a finished wait that started at `t0` (from {@link waitStart}). */
export function traceWait(object: object, kind: string, t0: number, outcome: LockWaitMessage['outcome'], async: boolean): void {
  if (t0 === 0) return
  const waitedMs = performance.now() - t0
  if (waitedMs >= tracing.slowWaitMs && lockWait.hasSubscribers) {
    publish(lockWait, object, { object, kind, waitedMs, outcome, async } satisfies LockWaitMessage)
  }
}

/** @internal Reports that this thread took `object` (a `kind`) over from a dead holder. */
export function traceOwnerDied(object: object, kind: string): void {
  if (ownerDied.hasSubscribers) publish(ownerDied, object, { object, kind } satisfies OwnerDiedMessage)
}

/** Event codes of `src-rs/js/trace.rs`. */
const HEAP_REPAIRED = 1
const REASONS = { 1: 'owner-died', 2: 'interrupted' } as const

function onNativeEvent(e: number[]): void {
  if (e[0] !== HEAP_REPAIRED || !heapRepair.hasSubscribers) return
  const [, address, reason] = e
  const memory = mappingAt(address)
  const offset = memory ? address - memory.address.begin : 0
  let heap: Heap | undefined
  try {
    heap = memory?.managed && offset === memory.heap.offset ? memory.heap : undefined
  } catch {
    heap = undefined
  }
  heapRepair.publish({ heap, memory, offset, reason: REASONS[reason as 1 | 2] ?? 'interrupted' } satisfies HeapRepairMessage)
}

// Each JavaScript thread loads this module once: its native events come here.
binding.traceInit(onNativeEvent)
