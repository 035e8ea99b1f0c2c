/**
 * What the shared containers (`SharedMap`, `Channel`) have in common: where they live
 * (a heap), the header every container starts with (magic, version, kind tag at offset
 * 8 as in every synchronization record, the heap it allocates from), block slots (u32
 * words holding a heap block's offset / 16), and taking a robust lock that repairs the
 * container's state when its previous holder died. The byte layouts are in
 * docs/FORMAT.md.
 * @module
 */
import { type Codec, type Coder, coderById } from './codec.js'
import { closedError, ShmError, typeError } from './errors.js'
import { type Handle, handleIn, handleOf } from './handles.js'
import { Heap, heapSlotId } from './heap.js'
import { Lock } from './lock.js'
import { checkIntact, checkMemory, GUARD, internals, MappedMemory, writable } from './memory.js'
import { type Place, takePlace } from './place.js'
import { traceLater } from './trace.js'

/** Heap blocks are 16-aligned: block slots hold `offset / UNIT`. */
export const UNIT = 16

/** Common header fields (byte offsets from the container's start). */
export const H = Object.freeze({
  /** u32 magic, per container type. */
  MAGIC: 0,
  /** u32 layout version (per container type: `lib/layouts.ts`). */
  VERSION: 4,
  /** u32 kind tag (16 SharedMap, 17 Channel), at offset 8 as in every sync record. */
  KIND: 8,
  /** u32 codec id (`lib/codec.ts`). */
  CODEC: 12,
  /** f64 mapping offset of the heap the container allocates from. */
  HEAP: 16,
})

/** Where a container can be created: a heap, or a managed mapping (its heap). */
export type ContainerHome = Heap | MappedMemory

/**
 * The heap whose region starts at `heapOffset` of `memory` (the segment's own if so):
 * `Heap.attach`'s one object per heap, which is the newest after a `Heap.create` formatted
 * the region again (a container must never allocate through the old one's geometry).
 */
export function heapAt(memory: MappedMemory, heapOffset: number): Heap {
  if (memory.managed && internals(memory).heapOffset === heapOffset) return memory.heap
  return Heap.attach(memory, heapOffset)
}

/** `ERR_SHM_CORRUPT`: bytes of a container that cannot be right. */
export function corrupt(what: string): ShmError {
  return new ShmError(`corrupt shared container: ${what}`, { code: 'ERR_SHM_CORRUPT' })
}

/**
 * The lock a container keeps at `at`, inside its own bytes: a record of another kind
 * there is damage to the container, not a caller's mistake. Its tracing messages are
 * published after the operation's synchronous part (lib/trace.ts).
 * @throws ShmError `ERR_SHM_CORRUPT` if the bytes at `at` are tagged as another record
 */
export function ownLock(memory: MappedMemory, at: number, what: string): Lock {
  try {
    const lock = Lock.at(memory, at)
    traceLater(lock)
    return lock
  } catch (e) {
    throw e instanceof TypeError ? corrupt(`${what}: ${e.message}`) : e
  }
}

/** `ERR_SHM_CLOSED` for a container whose mapping was closed. */
export function containerClosed(what: string): ShmError {
  return closedError(`the ${what}'s mapping`)
}

/** The views and heap a container works through; `i32.length` is 0 once closed. */
export interface Views {
  readonly memory: MappedMemory
  readonly heap: Heap
  /** This thread's id of the heap, for the raw calls. */
  readonly heapId: number
  readonly i32: Int32Array
  readonly u8: Uint8Array
  readonly dv: DataView
  /** Bytes of the mapping. */
  readonly size: number
}

/**
 * The views over the whole of `memory`, and `heap`. A container's blocks can be anywhere
 * in its heap, so it needs the mapping as one ArrayBuffer, and operations that take its
 * locks need it writable.
 * @throws ShmError `ERR_SHM_READ_ONLY`; RangeError for a mapping larger than one
 *   ArrayBuffer (Node 20: 4 GiB)
 */
export function viewsOf(memory: MappedMemory, heap: Heap): Views {
  writable(memory)
  const u8 = memory.bytes
  const { i32, dv } = internals(memory).window(0, memory.size)
  return { memory, heap, heapId: heapSlotId(heap), i32, u8, dv, size: memory.size }
}

/** Throws if `memory` lost pages under it (SIGBUS repaired, see lib/memory.ts). */
export function intact(memory: MappedMemory): void {
  if (GUARD[0] !== 0) checkIntact(memory)
}

/**
 * Checks the common header at `offset` of `memory`: magic, kind, layout `version`;
 * returns the heap offset it records.
 * @throws TypeError when it is not such a container (the caller's offset is wrong);
 *   ShmError `ERR_SHM_BAD_HEADER` for one of another layout version (another shmutils
 *   made it: `lib/layouts.ts`), as for a segment of another format version
 */
export function checkHeader(memory: MappedMemory, offset: number, magic: number, kind: number, version: number, headerSize: number, what: string): number {
  if (!Number.isSafeInteger(offset) || offset < 0 || offset % 16 !== 0 || offset + headerSize > memory.size) {
    throw typeError(`There is no ${what} at offset ${String(offset)}: not a 16-aligned offset with room for its ${headerSize}-byte header`)
  }
  const { i32, dv: view } = internals(memory).window(0, memory.size)
  const w = offset >>> 2
  if (i32[w + (H.MAGIC >>> 2)] !== magic || i32[w + (H.KIND >>> 2)] !== kind) {
    throw typeError(`There is no ${what} at offset ${offset} (its header does not say so)`)
  }
  const found = i32[w + (H.VERSION >>> 2)]
  if (found !== version) {
    throw new ShmError(`The ${what} at offset ${offset} has layout version ${found >>> 0}; this shmutils reads version ${version} (docs/FORMAT.md §11): another version of shmutils made it`, { code: 'ERR_SHM_BAD_HEADER' })
  }
  const heapOffset = view.getFloat64(offset + H.HEAP, true)
  if (!Number.isSafeInteger(heapOffset) || heapOffset < 0 || heapOffset >= memory.size) throw corrupt(`the ${what} at ${offset} names a heap at ${heapOffset}`)
  return heapOffset
}

/** Writes the common header. */
export function writeHeader(v: Views, offset: number, magic: number, kind: number, version: number, codec: number): void {
  const w = offset >>> 2
  v.i32[w + (H.MAGIC >>> 2)] = magic
  v.i32[w + (H.VERSION >>> 2)] = version
  v.i32[w + (H.KIND >>> 2)] = kind
  v.i32[w + (H.CODEC >>> 2)] = codec
  v.dv.setFloat64(offset + H.HEAP, v.heap.offset, true)
}

/** How long a container waits for one of its own locks before it calls the lock stuck. */
export const LOCK_WAIT_MS = 60_000
const LOCK_WAIT = Object.freeze({ timeout: LOCK_WAIT_MS })

/**
 * Takes one of a container's internal locks, waiting until `until` (a `performance.now()`
 * time: the caller's own deadline) but at most {@link LOCK_WAIT_MS}. Their holders never
 * wait while holding them, so a wait that long means a holder stuck in user code
 * (`update`'s `fn`) or a word that cannot be right: a typed error, never a hang.
 * @returns `false` when the caller's deadline came first
 * @throws ShmError `ETIMEDOUT` after {@link LOCK_WAIT_MS}
 */
export function takeLock(lock: Lock, what: string, until = Infinity): boolean {
  // A free lock first, without parsing wait options.
  if (lock.tryAcquire()) return true
  const ms = lockWait(until)
  if (lock.acquire(ms === LOCK_WAIT_MS ? LOCK_WAIT : { timeout: ms })) return true
  if (ms < LOCK_WAIT_MS) return false
  throw lockStuck(what)
}

/**
 * {@link takeLock} without blocking the event loop; `signal` aborts the wait.
 * @returns (resolves) `false` when the caller's deadline came first
 * @throws (rejects) ShmError `ETIMEDOUT` after {@link LOCK_WAIT_MS}; AbortError
 */
export async function takeLockAsync(lock: Lock, what: string, until: number, signal: AbortSignal | undefined): Promise<boolean> {
  const ms = lockWait(until)
  if (await lock.acquireAsync({ timeout: ms, signal })) return true
  if (ms < LOCK_WAIT_MS) return false
  throw lockStuck(what)
}

/**
 * The least a container waits for one of its internal locks, whatever the caller's
 * deadline: a holder keeps one for a single step (a copy into or out of a ring, a store),
 * so a call with `timeout: 0` (a "try") that met a live peer inside such a step waits
 * for it rather than failing while there is room or a message. A holder that keeps the
 * lock longer (stuck, or preempted for more than this) still makes the call time out.
 */
const HOLD_WAIT_MS = 5

/**
 * How long {@link takeLock} waits: until `until`, at least {@link HOLD_WAIT_MS}, at most
 * {@link LOCK_WAIT_MS}.
 */
function lockWait(until: number): number {
  return until === Infinity ? LOCK_WAIT_MS : Math.min(LOCK_WAIT_MS, Math.max(HOLD_WAIT_MS, until - performance.now()))
}

function lockStuck(what: string): ShmError {
  return new ShmError(`${what} stayed locked for ${LOCK_WAIT_MS / 1000} s (its holder is stuck, or the lock word is corrupt)`, { code: 'ETIMEDOUT' })
}

/**
 * Completes an acquisition of `lock` that reported `ownerDied`: runs `repair` (which must
 * leave the state the lock guards consistent) and marks the lock consistent. If `repair`
 * throws, the lock is released inconsistent, which makes it (and so the container part
 * it guards) fail with `ERR_SHM_NOT_RECOVERABLE` from then on: nobody works on state
 * known to be broken. Call it only when `lock.ownerDied` (the hot path stays free of
 * closures).
 */
export function recoverLock(lock: Lock, repair: () => void): void {
  try {
    repair()
  } catch (e) {
    lock.release()
    throw e
  }
  lock.markConsistent()
}

/** What a container type tells {@link SharedContainer} about its layout. */
export interface ContainerType {
  /** Its class name, as handles and messages say it. */
  readonly name: 'SharedMap' | 'Channel'
  /** What `toJSON` calls it in its error. */
  readonly handle: string
  readonly magic: number
  /** Its kind tag (`Kind` in lib/lock.ts). */
  readonly kind: number
  /** Its layout version. */
  readonly version: number
  /** Bytes of its header (that must fit in the mapping). */
  readonly headerSize: number
}

/**
 * What `SharedMap` and `Channel` share: the place they live in (a fresh one, or the one
 * `at()` hands over), their handle, the checked common header, the views and the codec.
 */
export abstract class SharedContainer {
  /** The mapping the container lives in. */
  readonly memory: MappedMemory
  /** Offset of the container's header in {@link memory}. */
  readonly offset: number
  /**
   * The handle ({@link toJSON}), as an own property so a structured clone (`postMessage`,
   * `workerData`) carries it to `revive`; a symbol if the mapping cannot be shared.
   */
  readonly $shmutils: Handle | symbol
  /** @internal The views over the whole mapping (`i32.length` 0 once it is closed). */
  protected readonly v: Views
  /** @internal The coder of the container's codec. */
  protected readonly coder: Coder
  readonly #type: ContainerType

  /**
   * Sets up the container at the place `at()` handed over, or at the one `create` makes
   * (a block it formatted, header included).
   * @throws TypeError when there is no such container there; ShmError `ERR_SHM_CORRUPT`
   */
  protected constructor(type: ContainerType, create: () => Place) {
    const { memory, offset } = takePlace() ?? create()
    checkMemory(memory)
    this.#type = type
    this.memory = memory
    this.offset = offset
    this.$shmutils = handleIn(memory, (m) => Object.freeze({ $shmutils: type.name, segment: m.segment, offset, memory: m }))
    const heapOffset = checkHeader(memory, offset, type.magic, type.kind, type.version, type.headerSize, type.name)
    const v = (this.v = viewsOf(memory, heapAt(memory, heapOffset)))
    const id = v.i32[(offset + H.CODEC) >>> 2]
    const coder = coderById(id)
    if (!coder) throw corrupt(`the ${type.name} at ${offset} names codec ${id}`)
    this.coder = coder
    // Out of a structured clone (`postMessage`, `workerData`), which copies own enumerable
    // properties: it carries the handle, not the views or the codec's functions.
    for (const k of ['v', 'coder']) Object.defineProperty(this, k, { enumerable: false })
  }

  /** The codec values are stored with. */
  get codec(): Codec {
    return this.coder.name
  }

  /** A handle that `revive` turns into the same container in another process. */
  toJSON(): Handle {
    return handleOf(this.$shmutils, this.#type.handle)
  }

  /** @internal The views; throws once the mapping is closed. */
  protected live(): Views {
    const v = this.v
    if (v.i32.length === 0) throw containerClosed(this.#type.name)
    return v
  }
}
