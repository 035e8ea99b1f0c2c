/**
 * {@link MappedMemory}: a mapping exposed to JavaScript as a zero-copy ArrayBuffer, raw
 * (the original's constructor) or managed (a named segment with a header and a heap).
 *
 * A mapping larger than the runtime allows one ArrayBuffer to be (Node 20: 4 GiB) is
 * exposed through windows instead: overlapping ArrayBuffers of {@link WINDOW_BYTES},
 * one every half window, made when first needed, so that any object of up to half a
 * window lies entirely in one of them. The package's own views ({@link Ref}, locks) pick
 * their window through {@link MemoryInternals.window}; users get windows with
 * {@link MappedMemory.view}.
 *
 * Shared memory can lose pages under a mapping (another process shrinks the object; a
 * full `/dev/shm`): the native SIGBUS guard (`src-rs/sys/linux/sigbus.rs`) then replaces
 * them with zero pages instead of letting the process die, and bumps one process-wide
 * word, {@link GUARD}. Every access of the package reads it afterwards (one load while
 * it is 0) and throws `ERR_SHM_TRUNCATED` / `ENOSPC` ({@link checkIntact}) when this
 * mapping was hit.
 * @module
 */
import { constants as bufferConstants } from 'node:buffer'
import { closeSync, fstatSync, openSync } from 'node:fs'
import { constants as osConstants } from 'node:os'
import { checkBoolean, checkIndex, checkName, checkOptions, checkPermissions, describe, describeNot } from './args.js'
import { closedError, native, outOfBounds, rangeError, readOnlyError, ShmError, typeError, withShmAdvice } from './errors.js'
import { unlinkOnExit } from './exit.js'
import { type Handle, registerReviver } from './handles.js'
import { checkMapFlags, checkProtection, MapFlags, PAGE_SIZE, Protection } from './constants.js'
import { binding } from './native.js'
import { isSharedMemoryObject, SharedMemoryObject, shmOpen, shmUnlink } from './shm.js'
import type { Heap } from './heap.js'
import type { Ref } from './ref.js'
import type { CharArrayRef, InitOf, RefOf } from './typed.js'
import type { AllocationTypeOfName, CharPointerName, Type } from './types/index.js'

/**
 * Options of {@link MappedMemory.create}.
 * @category Segments
 */
export interface CreateOptions {
  /** Size in bytes (rounded up to whole pages; at least 4096). */
  size: number
  /** Permission bits of the new object, within `0o0..0o777`; default `0o600`. */
  permissions?: number
  /**
   * `true`: map at a free high address that other processes are likely to have free
   * too, recorded in the header; a number: exactly that address (non-zero, a multiple of
   * the page size); `false` (default): where the kernel likes.
   */
  fixedAddress?: boolean | number
  /**
   * Back every page with memory now and map them all (`MAP_POPULATE`), instead of on
   * first use. Implies `reserve`: a full `/dev/shm` fails here with `ENOSPC`.
   */
  prefault?: boolean
  /**
   * Remove the name again (`shm_unlink`) when this process exits: normally, through
   * `process.exit()`, an uncaught exception, or a SIGINT, SIGTERM or SIGHUP that no other
   * listener handles (the process then still dies by that signal). Only if the name still
   * belongs to this segment. A process killed by SIGKILL (or crashing) cannot do it: see
   * `npx shmutils gc`. In a worker thread: when that worker ends (also by
   * `worker.terminate()`) or its process does; on a signal, if the main thread armed
   * `unlinkOnExit` too (its signal listeners remove every thread's names). Unlinking the
   * name through this package (`mem.unlink()`, `shmUnlink`, `SharedMemoryObject.unlink`)
   * forgets it; a name someone else removes is forgotten later, as the list grows.
   * Default `false`.
   */
  unlinkOnExit?: boolean
  /**
   * Back every page with memory of the filesystem now (`fallocate`), without touching
   * them: `create` fails with `ENOSPC` if they do not fit, and no raw write through
   * {@link MappedMemory.buffer} can ever fault for want of space later. Without it, the
   * heap backs what it hands out (in steps) and raw writes elsewhere should be preceded
   * by {@link MappedMemory.reserve}.
   */
  reserve?: boolean
}

/** Who created a managed segment, and when, as its header records it. */
export interface SegmentCreator {
  /**
   * The creating process's id, in its own PID namespace (across containers it may name
   * another process, or none).
   */
  readonly pid: number
  /**
   * That process's start time, which with the pid tells it from a later process that got
   * the same pid: on Linux clock ticks since boot (field 22 of `/proc/<pid>/stat`, in the
   * clock of the initial time namespace whatever namespace the reader runs in), on macOS
   * microseconds since the epoch. 0 if unknown.
   */
  readonly startTime: number
  /** When the segment was created, in milliseconds since the Unix epoch (as `Date.now()`). */
  readonly createdAt: number
}

/**
 * Options of {@link MappedMemory.open}.
 * @category Segments
 */
export interface OpenOptions {
  /**
   * `'prefer'` (default): map at the creator's address if it was fixed and is free here,
   * else elsewhere; `'require'`: at the creator's address or `EADDRINUSE`; `false`:
   * anywhere.
   */
  fixedAddress?: 'require' | 'prefer' | false
  /**
   * Open for reading only. The mapping is copy-on-write: {@link MappedMemory.buffer}
   * reads the segment live, but a raw write through it only changes this process's own
   * copy of that page (which then no longer follows the segment), never the segment, and
   * never crashes. Every library operation that would write (heap, `mem.new`, locks,
   * semaphores, conditions, `Ref` setters, `reserve`) throws `ERR_SHM_READ_ONLY`
   * (errno `EACCES`).
   */
  readOnly?: boolean
  /**
   * The user id the segment's object must belong to (`process.getuid()` for "mine"):
   * one owned by another user is refused with `EACCES`, and closed again. On a machine
   * shared with other users, anyone may create a predictable name first (`/dev/shm` is
   * writable by all), and an open would attach to their segment: what you then store
   * there, they read, and what they write, you use (docs/deployment.md). Default: any
   * owner the permissions let in.
   */
  owner?: number
}

/**
 * Options of {@link MappedMemory.anonymous}.
 * @category Segments
 */
export interface AnonymousOptions {
  /** Size in bytes (rounded up to whole pages; at least 4096). */
  size: number
  /** As {@link CreateOptions.prefault}: back and map every page now (`ENOSPC` if they do not fit). */
  prefault?: boolean
  /** As {@link CreateOptions.reserve}: back every page now, without touching them. */
  reserve?: boolean
}

/**
 * An absolute address range `[begin, end)`.
 * @category Segments
 */
export interface AddressRange {
  /** The first byte's address. */
  readonly begin: number
  /** The address just past the last byte. */
  readonly end: number
}

/**
 * Pages handed to the caller by {@link MappedMemory.detach}.
 * @category Segments
 */
export interface DetachedPages {
  /** Their absolute address. */
  address: number
  /** Their length in bytes. */
  size: number
}

/**
 * Views over `[start, start + length)` of a mapping (all of it when it fits one
 * ArrayBuffer). Their lengths read 0 once the mapping is closed. @internal
 */
export interface Window {
  /** Offset in the mapping of the views' first byte. */
  readonly start: number
  /** Bytes. */
  readonly u8: Uint8Array
  /** The same bytes for typed reads and writes. */
  readonly dv: DataView
  /** The same bytes for `Atomics` (4-byte words from `start`, a multiple of 4). */
  readonly i32: Int32Array
}

/** What other modules of the package need from a mapping. @internal */
export interface MemoryInternals {
  /** Its id for the native functions of this thread (`src-rs/js/mapping.rs`). */
  readonly id: number
  /** Start of the heap region (managed segments), else 0. */
  readonly heapOffset: number
  /** The creator's base address: stored pointers are relative to it. */
  readonly base: number
  /** A segment opened read-only: the package must not write through it. */
  readonly readOnly: boolean
  /**
   * What the mapping maps, as a string that is the same for every mapping of one object
   * in this process and differs between objects: the segment's `uid`, else its name and
   * inode, else (a raw anonymous mapping, which nothing else maps) the mapping's own id.
   */
  readonly objectKey: string
  /**
   * A window holding all of `[offset, offset + length)` (the caller checked the range
   * lies in the mapping). The same object for every range of a mapping that fits one
   * ArrayBuffer.
   */
  window(offset: number, length: number): Window
  /** The window over the whole mapping, when it fits one ArrayBuffer; else `null`. */
  readonly whole: Window | null
  /**
   * Runs `fn` when the mapping is closed (or detached), before its views go: while the
   * memory is still there. Errors it throws are ignored. Returns what takes `fn` off again
   * (a wait that ended before the close).
   */
  beforeClose(fn: () => void): () => void
}

/** `SHMUTILS_WINDOW_BYTES`, when a power of two of at least 64 KiB (tests only). */
const FORCED_WINDOW: number | null = ((): number | null => {
  const n = Number(process.env.SHMUTILS_WINDOW_BYTES)
  return Number.isInteger(n) && n >= 65536 && (n & (n - 1)) === 0 ? n : null
})()

/**
 * The length of each window over a mapping larger than one ArrayBuffer: 2 GiB, or the
 * runtime's limit if lower. `SHMUTILS_WINDOW_BYTES` (a power of two of at least 64 KiB)
 * sets it, and makes every mapping above it windowed, to exercise windows on small
 * mappings (tests).
 * @internal
 */
export const WINDOW_BYTES: number = FORCED_WINDOW ?? Math.min(2 ** 31, 2 ** Math.floor(Math.log2(bufferConstants.MAX_LENGTH)))
/** The largest mapping exposed as one ArrayBuffer (Node 20: 4 GiB). */
const WHOLE_MAX: number = FORCED_WINDOW ?? bufferConstants.MAX_LENGTH
const STRIDE = WINDOW_BYTES / 2

/**
 * The process-wide SIGBUS repair counter (see the module docs): 0 until a mapping of
 * this process lost pages. Read it after touching shared memory:
 * `if (GUARD[0] !== 0) checkIntact(memory)`. Not part of the public API (not exported
 * from the package's entry point); the bench reads it.
 */
export const GUARD: Int32Array = new Int32Array(binding.guardGeneration())

interface RawOrigin {
  fileOffset: number
  protection: number
  flags: number
}

/** Where a mapping is and what its header says (decoded from {@link OUT}). */
interface MappingInfo {
  id: number
  address: number
  size: number
  base: number
  heapOffset: number
  heapSize: number
  /** 16 hex digits; absent for raw mappings and segments older than the field. */
  uid?: string
  /** Decimal; absent where there is none. */
  inode?: string
  createdMs: number
  creatorPid: number
  creatorStart: number
  /** The mapping's own descriptor of the object it maps, or -1. */
  fd: number
  readOnly: boolean
}

/**
 * What the native calls that make a mapping (`segmentOpen`, `segmentCreate`, `mapRaw`)
 * write about it: numbers at the indices of `out` in `src-rs/js/mapping.rs`, so that one
 * call returns everything (the buffer is its return value).
 */
const OUT = new Float64Array(16)

const hex8 = (n: number): string => (n >>> 0).toString(16).padStart(8, '0')

/** A 64-bit number from two 32-bit halves, as decimal digits. */
function decimal(hi: number, lo: number): string {
  return hi === 0 ? String(lo) : ((BigInt(hi) << 32n) | BigInt(lo)).toString()
}

/** Decodes {@link OUT} after a native call made a mapping. */
function takeInfo(): MappingInfo {
  const o = OUT
  const info: MappingInfo = {
    id: o[0]!,
    address: o[1]!,
    size: o[2]!,
    base: o[3]!,
    heapOffset: o[4]!,
    heapSize: o[5]!,
    createdMs: o[10]!,
    creatorPid: o[11]!,
    creatorStart: o[12]!,
    fd: o[15]!,
    readOnly: o[13] === 1,
  }
  if (o[6] !== 0 || o[7] !== 0) info.uid = hex8(o[6]!) + hex8(o[7]!)
  if (o[8] !== 0 || o[9] !== 0) info.inode = decimal(o[8]!, o[9]!)
  return info
}

/**
 * What outlives a mapping for its finalizer: its native slot, and the keys under which the
 * revive cache knows it (`null`: none, or dropped by close).
 */
interface Slot {
  id: number
  keys: string[] | null
}

/**
 * Forgets a collected mapping's native slot (its pages go with its last buffer), and the
 * revive cache's entries that still name it (the cache holds mappings weakly).
 */
const slots = new FinalizationRegistry<Slot>((slot) => {
  binding.mappingRelease(slot.id)
  if (slot.keys !== null) for (const key of slot.keys) dropCollected(key)
})

/** @internal Access to a mapping's internals for the other modules of the package. */
export let internals: (m: MappedMemory) => MemoryInternals

/**
 * @internal Whether `value` is a {@link MappedMemory}: a private-brand check, which an
 * object that merely inherits from the class, or a Proxy of a mapping, fails.
 */
export let isMappedMemory: (value: unknown) => value is MappedMemory

/**
 * @internal Checks the argument `name` (default `"memory"`) is a {@link MappedMemory}:
 * for every public function that takes one (once, where it starts using it).
 */
export function checkMemory(value: unknown, name = 'memory'): asserts value is MappedMemory {
  if (!isMappedMemory(value)) throw typeError(`The "${name}" argument must be a MappedMemory; got ${describeNot(value, value instanceof MappedMemory)}`)
}

/** Records a key under which `m` is in the revive cache. */
let addCacheKey: (m: MappedMemory, key: string) => void

/**
 * @internal Throws `ERR_SHM_TRUNCATED` / `ENOSPC` if `m` lost pages (see the module
 * docs), `ERR_SHM_CLOSED` if it is closed. Call it when {@link GUARD}`[0] !== 0`.
 */
export let checkIntact: (m: MappedMemory) => void

/**
 * @internal Throws `ERR_SHM_READ_ONLY` for a segment opened read-only, else returns its
 * internals: for every operation that writes.
 */
export function writable(m: MappedMemory): MemoryInternals {
  const i = internals(m)
  if (i.readOnly) throw readOnlyError()
  return i
}

let heapFactory: ((m: MappedMemory) => Heap) | null = null
let heapsClosed: ((m: MappedMemory) => void) | null = null

/**
 * @internal How `mem.heap` attaches, and what lets go of a mapping's heaps once it
 * closed; set by the heap module.
 */
export function setHeapFactory(fn: (m: MappedMemory) => Heap, closed: (m: MappedMemory) => void): void {
  heapFactory = fn
  heapsClosed = closed
}

/** What a static factory made, for the constructor to take over. */
let adopt: { info: MappingInfo; name: string | null; raw: RawOrigin | null } | null = null

/**
 * The `$shmutils` of a mapping that has no name: a symbol, which structured clone refuses
 * with a `DataCloneError` carrying this text, at the sender.
 */
const ANONYMOUS = Symbol('shmutils: an anonymous mapping cannot be sent to another process (it has no name to open there): map a named object')

/**
 * @internal `e`, an error of a system call on `memory`'s pages (`fallocate`'s `ENOSPC`),
 * naming the segment as its `path` as the errors of opening it do.
 */
export function withPath(e: unknown, memory: MappedMemory): unknown {
  return memory.name === null ? e : withShmAdvice(e, memory.name)
}

/**
 * @internal {@link native} for a call about `memory`: a failed system call names its
 * segment (`path`), as those of the calls that open it do. Not for per-operation paths
 * (the try block is free, but keep those lean).
 */
export function nativeFor<T>(memory: MappedMemory, call: () => T): T {
  try {
    return native(call)
  } catch (e) {
    throw withPath(e, memory)
  }
}

/** Defines `key` on `o` as an own, enumerable property nothing can assign over. */
function fixedProperty(o: object, key: string, value: unknown): void {
  Object.defineProperty(o, key, { value, enumerable: true })
}

/**
 * A memory mapping, exposed zero-copy as {@link MappedMemory.buffer}. Closing detaches
 * every view first (they read as length 0), then unmaps; closing twice is fine, and
 * garbage collection never unmaps memory a live view still uses.
 * @category Segments
 */
export class MappedMemory implements Disposable {
  // These four are own, enumerable and read-only at run time too (defined in the
  // constructor): a program cannot assign over them and leave the object half broken.
  /** The segment name (managed, or raw over a named object), else `null`. */
  declare readonly name: string | null
  /** Length in bytes. */
  declare readonly size: number
  /** The absolute address range `[begin, end)`. */
  declare readonly address: AddressRange
  /**
   * The mapping's handle (what {@link toJSON} returns), kept as an own property so that a
   * structured clone (`worker.postMessage`, `workerData`, `fork` with `serialization:
   * 'advanced'`) carries it: `revive` turns the clone back into a mapping. A symbol for a
   * mapping without a name, so that sending one fails at once.
   */
  declare readonly $shmutils: Handle | symbol
  #info: MappingInfo
  /**
   * The window over the whole mapping when it fits one ArrayBuffer, else `null`;
   * `undefined` until first needed (an open that is closed unused makes no ArrayBuffer).
   */
  #whole: Window | null | undefined = undefined
  /** Windows of a larger mapping: index k covers `[k * STRIDE, k * STRIDE + WINDOW_BYTES)`. */
  #windows: Map<number, Window> | null = null
  /**
   * Windows made for ranges longer than half a window, by `offset:length`, held weakly
   * (every range asked for would otherwise stay until `close()`: {@link wideWindows}).
   */
  #wide: Map<string, WeakRef<Window>> | null = null
  /**
   * The buffers and DataViews of the windows in {@link #wide}, held weakly: `close()`
   * detaches the buffers alive and poisons the views alive (a `Ref` keeps its window's
   * DataView only, a `view()` its buffer only, either after the window was collected).
   */
  #wideParts: Set<WeakRef<ArrayBuffer | DataView>> | null = null
  /** Its native slot and its keys in the per-process cache of revived segments. */
  #slot: Slot
  #internals: MemoryInternals | null = null
  #closed = false
  /** {@link GUARD}'s value when this mapping was last found intact. */
  #intactAt = 0
  #lost: ShmError | null = null
  #raw: RawOrigin | null
  /** The heap of a managed segment, once attached; dropped on close. */
  #heap: Heap | null = null
  /** What runs when it closes (see {@link MemoryInternals.beforeClose}). */
  #beforeClose: Set<() => void> | null = null

  /**
   * A raw mapping: `mmap(address, size, protection, flags, fd, offset)`.
   * @param address - `null`/`0`: the kernel chooses; otherwise a hint, or the exact
   *   address with `MapFlags.FIXED` / `MapFlags.FIXED_NOREPLACE`. `FIXED` never replaces
   *   memory in use (only free space or pages released with {@link detach}).
   * @param size - length in bytes
   * @param protection - `Protection` bits; default read/write
   * @param flags - `MapFlags` bits; default `SHARED` (plus `ANONYMOUS` without `fd`)
   * @param fd - a {@link SharedMemoryObject} or a raw descriptor; none = anonymous
   * @param offset - offset into the object, a multiple of the page size
   * @throws ShmError `EADDRINUSE` for a taken exact address, `EINVAL`, `ENOMEM`;
   *   TypeError/RangeError for bad arguments
   */
  constructor(
    address: number | null,
    size: number,
    protection: number = Protection.READ_WRITE,
    flags?: number,
    fd?: SharedMemoryObject | number,
    offset = 0,
  ) {
    let info: MappingInfo
    let name: string | null = null
    if (adopt) {
      ;({ info, name } = adopt)
      this.#raw = adopt.raw
      adopt = null
    } else {
      if (address !== null && address !== 0) checkIndex('address', address)
      checkIndex('size', size)
      checkIndex('offset', offset)
      checkProtection(protection)
      let rawFd = -1
      if (isSharedMemoryObject(fd)) {
        rawFd = fd.fd
        name = fd.name
      } else if (fd !== undefined) {
        if (typeof fd !== 'number') throw typeError(`The "fd" argument must be a SharedMemoryObject or a descriptor; got ${describeNot(fd, (fd as unknown) instanceof SharedMemoryObject)}`)
        if (!Number.isInteger(fd) || fd < 0 || fd > MAX_FD) throw rangeError(`The "fd" argument must be a descriptor (an integer within 0..${MAX_FD}); got ${fd}`)
        rawFd = fd
      }
      const f = flags === undefined ? (rawFd >= 0 ? MapFlags.SHARED : MapFlags.SHARED | MapFlags.ANONYMOUS) : checkMapFlags(flags)
      const addr = address === null || address === 0 ? -1 : address
      // Readable but not writable: the native side maps it copy-on-write and read-only
      // (`map_raw`), so a stray write through a view cannot kill the process and every
      // write of the library's own is refused (readOnly).
      try {
        native(() => binding.mapRaw(addr, size, protection, f, rawFd, offset, OUT))
      } catch (e) {
        // A failed mmap of a named object names it (`path`), as every other call does.
        throw name === null ? e : withShmAdvice(e, name)
      }
      info = takeInfo()
      this.#raw = { fileOffset: offset, protection, flags: f }
    }
    fixedProperty(this, 'name', name)
    this.#info = info
    fixedProperty(this, 'size', info.size)
    const begin = info.address
    fixedProperty(this, 'address', Object.freeze({ begin, end: begin + info.size }))
    fixedProperty(this, '$shmutils', this.#handle())
    this.#slot = { id: info.id, keys: null }
    slots.register(this, this.#slot)
  }

  #handle(): Handle | symbol {
    const { uid, inode, fd } = this.#info
    const byFd = this.name === null && this.#raw === null && fd >= 0 && uid != null && inode != null
    if (this.name === null && !byFd) return ANONYMOUS
    // Built here, then frozen (a Handle's fields are read-only to everyone else).
    const h: { -readonly [K in keyof Handle]: Handle[K] } = { $shmutils: 'MappedMemory', segment: this.name ?? '', offset: 0 }
    if (uid != null) h.uid = uid
    if (inode != null) h.inode = inode
    // A segment without a name is found through a process that holds it (Linux: /proc).
    if (byFd) h.proc = Object.freeze({ pid: process.pid, fd })
    if (this.#raw !== null) h.raw = Object.freeze({ ...this.#raw, size: this.size, address: this.address.begin })
    return Object.freeze(h)
  }

  static {
    isMappedMemory = (value): value is MappedMemory => typeof value === 'object' && value !== null && #info in value
    addCacheKey = (m, key) => {
      const keys = m.#slot.keys
      if (keys === null) m.#slot.keys = [key]
      else if (!keys.includes(key)) keys.push(key)
    }
    internals = (m) => {
      if (m.#closed) throw closedError('the mapping')
      if (m.#internals) return m.#internals
      const info = m.#info
      const whole = m.#wholeWindow()
      return (m.#internals = {
        id: info.id,
        heapOffset: info.heapOffset,
        base: info.base,
        readOnly: info.readOnly,
        objectKey: info.uid ?? (info.inode !== undefined ? `${m.name ?? ''}\0${info.inode}` : `\0${info.id}`),
        window: whole ? () => whole : (offset, length) => m.#window(offset, length),
        whole,
        beforeClose: (fn) => {
          if (m.#closed) return () => {}
          const hooks = (m.#beforeClose ??= new Set())
          hooks.add(fn)
          return remover(hooks, fn)
        },
      })
    }
    checkIntact = (m) => {
      if (m.#closed) throw closedError('the mapping')
      const g = GUARD[0]!
      if (g !== m.#intactAt) {
        try {
          native(() => binding.mappingCheckIntact(m.#info.id))
          m.#intactAt = g
        } catch (e) {
          m.#lost = e as ShmError
        }
      }
      if (m.#lost) throw m.#lost
    }
  }

  /** The window over the whole mapping (made on first use), or `null` if too large. */
  #wholeWindow(): Window | null {
    return this.#whole === undefined ? (this.#whole = this.size <= WHOLE_MAX ? this.#makeWindow(0, this.size) : null) : this.#whole
  }

  #makeWindow(start: number, length: number): Window {
    // Pages nobody may read (Protection.NONE): any view would be a SIGSEGV at first touch.
    if (this.#raw !== null && (this.#raw.protection & Protection.READ) === 0) {
      throw new ShmError('this mapping has no read access (Protection.NONE): it has no views', { code: 'EACCES' })
    }
    const id = this.#info.id
    return windowOver(native(() => binding.mappingBuffer(id, start, length)), start, length, this.#info.readOnly)
  }

  /** A window holding `[offset, offset + length)` of a mapping too large for one buffer. */
  #window(offset: number, length: number): Window {
    if (length <= STRIDE) {
      // Window k starts at or below `offset` (an empty range at the very end included)
      // and reaches at least half a window past it.
      const k = Math.floor(Math.min(offset, this.size - 1) / STRIDE)
      const windows = (this.#windows ??= new Map())
      let w = windows.get(k)
      if (!w) {
        const start = k * STRIDE
        w = this.#makeWindow(start, Math.min(WINDOW_BYTES, this.size - start))
        windows.set(k, w)
      }
      return w
    }
    const key = `${offset}:${length}`
    const wide = (this.#wide ??= new Map())
    let w = wide.get(key)?.deref()
    if (!w) {
      const max = bufferConstants.MAX_LENGTH
      if (length > max) throw tooLarge(length, max)
      // From the 4-byte word holding `offset` to the end of the word holding the range's
      // last byte, so that `i32` reaches every word of the range; a range of (nearly) the
      // runtime's maximum gets exactly its bytes instead (a view: nothing uses its `i32`).
      let start = offset - (offset % 4)
      let end = Math.min(this.size, Math.ceil((offset + length) / 4) * 4)
      if (end - start > max) {
        start = offset
        end = offset + length
      }
      w = this.#makeWindow(start, end - start)
      const ref = new WeakRef(w)
      wide.set(key, ref)
      wideWindows.register(w, { map: wide, key, ref })
      const parts = (this.#wideParts ??= new Set())
      for (const part of [w.u8.buffer as ArrayBuffer, w.dv]) {
        const partRef = new WeakRef(part)
        parts.add(partRef)
        wideParts.register(part, { set: parts, ref: partRef })
      }
    }
    return w
  }

  /**
   * Creates a managed segment: a new named object (exclusively: `EEXIST` if the name is
   * taken), mapped, with a header and a formatted heap. Permissions default to `0o600`.
   * The header records the segment's identity ({@link uid}) and its {@link creator}.
   *
   * The name stays in `/dev/shm` until someone unlinks it ({@link unlink}, `shmUnlink`),
   * also after every process exited: unlink it when you are done (processes that mapped
   * it keep their mapping).
   * @example
   * ```ts
   * const mem = MappedMemory.create(`/my-app-${process.pid}`, { size: 1 << 20 })
   * try {
   *   const hits = mem.new('uint64_t', 0)
   *   // ...share mem, or handles of what is in it, with other processes...
   * } finally {
   *   mem.close()
   *   mem.unlink()
   * }
   * ```
   * @throws ShmError `EEXIST` (its message says how to open or remove the old one),
   *   `EACCES`, `EADDRINUSE` (exact address taken), `ENOMEM`
   */
  static create(name: string, options: CreateOptions): MappedMemory {
    checkName('name', name)
    checkOptions(options, 'a "size"')
    checkIndex('size', options.size)
    const permissions = checkPermissions(options.permissions)
    const fixed = options.fixedAddress ?? false
    if (typeof fixed !== 'boolean') checkFixedAddress(fixed)
    const prefault = checkBoolean('prefault', options.prefault)
    const onExit = checkBoolean('unlinkOnExit', options.unlinkOnExit)
    const reserve = checkBoolean('reserve', options.reserve)
    const at = fixed === false ? -1 : fixed === true ? -2 : fixed
    const flags = (prefault ? 1 : 0) | (reserve ? 2 : 0)
    try {
      native(() => binding.segmentCreate(name, options.size, permissions, at, flags, OUT))
    } catch (e) {
      throw withShmAdvice(e, name, `open it with MappedMemory.open(${JSON.stringify(name)})`)
    }
    const m = MappedMemory.#adopt(takeInfo(), normalized(name), null)
    if (onExit) unlinkOnExit(m.name!, m.uid!)
    return m
  }

  /**
   * Opens an existing managed segment, validating its header. With `readOnly` the
   * mapping is copy-on-write and the library writes nothing through it (see
   * {@link OpenOptions.readOnly}).
   * @throws ShmError `ENOENT`, `EACCES`, `ERR_SHM_BAD_HEADER` (not a shmutils segment),
   *   `EADDRINUSE` (with `fixedAddress: 'require'`, the creator's address is taken here)
   */
  static open(name: string, options: OpenOptions = {}): MappedMemory {
    checkName('name', name)
    const { fixed, readOnly, owner } = openOptions(options)
    try {
      native(() => binding.segmentOpen(name, fixed, readOnly, OUT))
    } catch (e) {
      throw withShmAdvice(e, name)
    }
    return ownedBy(MappedMemory.#adopt(takeInfo(), normalized(name), null), owner)
  }

  /**
   * Creates an anonymous managed segment: a header and a heap like {@link create}, on a
   * shared-memory object that has no name (Linux: `memfd_create`; macOS: an object
   * unlinked at once). Nothing appears in `/dev/shm`, nothing can leak: the memory goes
   * when the last process that maps it, or holds a descriptor of it, lets go.
   *
   * Share it with another process by its descriptor ({@link fd}: pass it in `spawn`'s
   * `stdio`, map it there with {@link fromFd}), or by handle: on Linux `revive` in any
   * process of the same user opens `/proc/<pid>/fd/<fd>` of the process that sent the
   * handle, which must still hold the segment (and share the PID namespace). macOS has no
   * `/proc`: there only descriptors work.
   * @throws ShmError `EMFILE`, `ENOMEM`, `ENOSPC`; RangeError for a bad size
   */
  static anonymous(options: AnonymousOptions): MappedMemory {
    checkOptions(options, 'a "size"')
    checkIndex('size', options.size)
    const flags = (checkBoolean('prefault', options.prefault) ? 1 : 0) | (checkBoolean('reserve', options.reserve) ? 2 : 0)
    native(() => binding.anonymousCreate(options.size, flags, OUT))
    return MappedMemory.#adopt(takeInfo(), null, null)
  }

  /**
   * Maps the managed segment behind a descriptor: one inherited through `spawn`'s
   * `stdio` (`stdio: ['inherit', 'inherit', 'inherit', mem.fd]` gives the child fd 3),
   * or any descriptor of a segment, anonymous or named. The caller keeps `fd` (the
   * mapping uses a duplicate of its own).
   * @throws ShmError `EBADF`, `ERR_SHM_BAD_HEADER` (not a shmutils segment), `EACCES`;
   *   RangeError for a bad descriptor number
   */
  static fromFd(fd: number, options: OpenOptions = {}): MappedMemory {
    checkIndex('fd', fd)
    if (fd > MAX_FD) throw rangeError(`The "fd" argument must be a descriptor (an integer within 0..${MAX_FD}); got ${fd}`)
    const { fixed, readOnly, owner } = openOptions(options)
    native(() => binding.mappingFromFd(fd, fixed, readOnly, OUT))
    return ownedBy(MappedMemory.#adopt(takeInfo(), null, null), owner)
  }

  static #adopt(info: MappingInfo, name: string | null, raw: RawOrigin | null): MappedMemory {
    adopt = { info, name, raw }
    let m: MappedMemory
    try {
      m = new MappedMemory(null, 0)
    } finally {
      adopt = null
    }
    // Handles of this segment revived in this process reuse this mapping.
    const h = m.toJSON()
    remember(cacheKey(h.segment, h, h.raw), m)
    return m
  }

  /**
   * The mapping's descriptor of the object it maps: for an anonymous segment, what to
   * pass to a child (`spawn`'s `stdio`) that maps it with {@link fromFd}. It belongs to
   * the mapping (do not close it) and is closed with it: `null` once closed, and for
   * memory not backed by an object.
   */
  get fd(): number | null {
    const fd = this.#info.fd
    return this.#closed || fd < 0 ? null : fd
  }

  /** Whether this is a managed segment (header + heap). */
  get managed(): boolean {
    return this.#raw === null
  }

  /**
   * The segment's identity: 16 hex digits, random, written into its header by
   * {@link create}. A segment created again under the same name has another, which is how
   * `revive` never confuses the two. `null` for raw mappings (and for segments made by a
   * version of shmutils that did not record it).
   */
  get uid(): string | null {
    return this.#info.uid ?? null
  }

  /**
   * Who created this managed segment and when, from its header (read when the mapping
   * was made; the header never changes). `null` for raw mappings and for segments whose
   * header does not record it.
   */
  get creator(): SegmentCreator | null {
    const { creatorPid: pid, creatorStart: startTime, createdMs: createdAt } = this.#info
    if (this.#raw !== null || (pid === 0 && createdAt === 0)) return null
    return Object.freeze({ pid, startTime, createdAt })
  }

  /**
   * The heap of a managed segment (formatted by `create`, attached on first use).
   * @throws TypeError for a raw mapping (use `Heap.create` / `Heap.attach`)
   */
  get heap(): Heap {
    if (this.#closed) throw closedError('the mapping')
    if (this.#raw !== null) throw typeError('A raw mapping has no heap: use Heap.create(memory) or Heap.attach(memory, offset)')
    if (!this.#heap) {
      if (!heapFactory) throw typeError('The heap module is not loaded')
      this.#heap = heapFactory(this)
    }
    return this.#heap
  }

  /**
   * Allocates a typed object in the heap: the same as `this.heap.new(type, init)` (see
   * `Heap.new`).
   * @example
   * ```ts
   * const hits = mem.new('size_t', 0)    // Ref<bigint>
   * hits.value += 1n
   * ```
   */
  new<const S extends CharPointerName>(type: S, init: string | Uint8Array): CharArrayRef
  new<const S extends string>(type: S, init?: InitOf<AllocationTypeOfName<S>>): RefOf<AllocationTypeOfName<S>>
  new<Ty extends Type>(type: Ty, init?: InitOf<Ty>): RefOf<Ty>
  new(type: Type | string, init?: unknown): Ref {
    return this.heap.new(type as Type, init)
  }

  /** Whether {@link close} or {@link detach} was called. */
  get closed(): boolean {
    return this.#closed
  }

  /** Whether the segment was opened read-only (see {@link OpenOptions.readOnly}). */
  get readOnly(): boolean {
    return this.#info.readOnly
  }

  /**
   * The whole mapping, zero-copy. Detached (length 0) after {@link close}.
   * @throws ShmError `ERR_SHM_BUFFER_TOO_LARGE` when the mapping is larger than the
   *   runtime allows one ArrayBuffer to be (Node 20: 4 GiB): use {@link view};
   *   `ERR_SHM_TRUNCATED` / `ENOSPC` once the mapping lost pages (see {@link reserve})
   */
  get buffer(): ArrayBuffer {
    return this.#all().u8.buffer as ArrayBuffer
  }

  /**
   * A `Uint8Array` over {@link buffer}.
   * @throws ShmError as {@link buffer}
   */
  get bytes(): Uint8Array {
    return this.#all().u8
  }

  #all(): Window {
    if (this.#closed) throw closedError('the mapping')
    if (GUARD[0] !== 0) checkIntact(this)
    const whole = this.#wholeWindow()
    if (!whole) throw tooLarge(this.size, WHOLE_MAX)
    return whole
  }

  /**
   * The bytes `[offset, offset + length)` of the mapping, zero-copy: the way to reach
   * every byte of a mapping larger than one ArrayBuffer (on Node 20, 4 GiB). Views of up
   * to half a window (1 GiB on Node 20) cost no native call once their window exists;
   * longer ones get an ArrayBuffer of their own, kept until {@link close}. Like every
   * view of the mapping, it reads as length 0 after {@link close}.
   * @param offset - first byte
   * @param length - default: to the end of the mapping (must fit one ArrayBuffer)
   * @throws ShmError `ERR_SHM_OUT_OF_BOUNDS`, `ERR_SHM_BUFFER_TOO_LARGE` for a length the
   *   runtime cannot make one ArrayBuffer of
   */
  view(offset: number, length?: number): Uint8Array {
    checkIndex('offset', offset)
    if (this.#closed) throw closedError('the mapping')
    const len = length === undefined ? this.size - Math.min(offset, this.size) : checkIndex('length', length)
    if (offset + len > this.size) throw outOfBounds(`range ${offset}..${offset + len} is outside the mapping of ${this.size} bytes`)
    if (GUARD[0] !== 0) checkIntact(this)
    const w = this.#wholeWindow() ?? this.#window(offset, len)
    return w.u8.subarray(offset - w.start, offset - w.start + len)
  }

  /**
   * Backs `[offset, offset + length)` with memory of the filesystem now (`fallocate`;
   * Linux), so that raw writes there through {@link buffer} / {@link view} can never
   * fault for want of space: on a full `/dev/shm` this throws `ENOSPC` instead. Memory
   * the heap hands out (`heap.malloc`, `mem.new`, locks) is backed already; use this
   * for bytes you write yourself, or create the segment with `reserve: true`. A raw
   * write to unbacked memory on a full filesystem does not crash either: the page
   * becomes a private zero page, the write is not shared, and the next operation of the
   * library on this mapping throws `ENOSPC`.
   * @param offset - default 0
   * @param length - default: to the end of the mapping
   * @throws ShmError `ENOSPC`, `ERR_SHM_OUT_OF_BOUNDS`, `ERR_SHM_READ_ONLY`
   */
  reserve(offset = 0, length?: number): void {
    checkIndex('offset', offset)
    const len = length === undefined ? Math.max(this.size - offset, 0) : checkIndex('length', length)
    if (this.#closed) throw closedError('the mapping')
    if (this.readOnly) throw readOnlyError()
    const id = this.#info.id
    try {
      native(() => binding.mappingReserve(id, offset, len))
    } catch (e) {
      throw withPath(e, this)
    }
  }

  /** The creator's base address (where stored pointers point); own address if raw. */
  get baseAddress(): number {
    return internals(this).base
  }

  /** Relative offset → absolute address (`offset === size` is allowed). */
  absAddressAt(offset: number): number {
    checkIndex('offset', offset)
    if (this.#closed) throw closedError('the mapping')
    if (offset > this.size) throw outOfBounds(`offset ${offset} is outside the mapping of ${this.size} bytes`)
    return this.address.begin + offset
  }

  /** Absolute address → relative offset. */
  relativeAddressAt(address: number): number {
    checkIndex('address', address)
    if (this.#closed) throw closedError('the mapping')
    if (address < this.address.begin || address > this.address.end) {
      throw outOfBounds(`address 0x${address.toString(16)} is outside the mapping 0x${this.address.begin.toString(16)}..0x${this.address.end.toString(16)}`)
    }
    return address - this.address.begin
  }

  /** A view of the bytes between two absolute addresses (`end` defaults to the end). */
  absoluteAt(begin: number, end: number = this.address.end): Uint8Array {
    const from = this.relativeAddressAt(begin)
    const to = this.relativeAddressAt(end)
    if (to < from) throw rangeError(`The "end" argument must not be below "begin"`)
    return this.view(from, to - from)
  }

  /**
   * Forgets the mapping without unmapping it: views are detached, and the caller owns
   * the pages (release them with `munmap`). Returns where they are.
   */
  detach(): DetachedPages {
    if (this.#closed) throw closedError('the mapping')
    this.#runBeforeClose()
    // Every view goes, the whole mapping's too: the caller may unmap the pages next.
    const whole = this.#shutViews()
    if (whole) native(() => binding.detachBuffer(whole))
    binding.mappingForget(this.#info.id)
    return { address: this.address.begin, size: this.size }
  }

  /**
   * Detaches every view, then unmaps, and gives up this thread's liveness token on the
   * segment if this was its last open mapping of it (its locks there then look
   * abandoned; with another mapping of the segment open they stay its own). Safe to call
   * twice. A mapping dropped without `close()` is unmapped once it is garbage-collected;
   * if a lock was taken through it and no other mapping of the segment is open, it keeps
   * the token (one descriptor) until the thread exits, since that lock may still be held.
   */
  close(): void {
    if (this.#closed) return
    if (this.#beforeClose !== null) this.#runBeforeClose()
    const whole = this.#shutViews()
    native(() => binding.mappingClose(this.#info.id, whole))
  }

  #runBeforeClose(): void {
    const hooks = this.#beforeClose ?? new Set()
    this.#beforeClose = null
    for (const fn of hooks) {
      try {
        fn()
      } catch {
        // Closing goes on: the mapping is going away either way.
      }
    }
  }

  /**
   * Marks the mapping closed and its views unusable; detaches every ArrayBuffer but the
   * whole mapping's, which it returns for the native close to detach in the same call.
   */
  #shutViews(): ArrayBuffer | undefined {
    this.#closed = true
    // Its heaps and internals go at once: V8 keeps a mapping for as long as the job that
    // made a WeakRef to it runs (the revive cache makes one), and a loop that opens and
    // closes segments would keep them all.
    this.#heap = null
    this.#internals = null
    heapsClosed?.(this)
    const keys = this.#slot.keys
    if (keys !== null) {
      this.#slot.keys = null
      for (const key of keys) forget(key, this)
    }
    const whole = this.#whole
    if (whole) poisonView(whole.dv)
    if (this.#windows) {
      for (const w of this.#windows.values()) {
        native(() => binding.detachBuffer(w.u8.buffer as ArrayBuffer))
        poisonView(w.dv)
      }
      this.#windows.clear()
    }
    this.#wide?.clear()
    // A wide window may be gone while a view of its buffer, or its DataView (a Ref's),
    // lives on: detach and poison those by themselves.
    if (this.#wideParts) {
      for (const ref of this.#wideParts) {
        const part = ref.deref()
        if (part instanceof DataView) poisonView(part)
        else if (part) native(() => binding.detachBuffer(part))
      }
      this.#wideParts.clear()
    }
    return whole?.u8.buffer as ArrayBuffer | undefined
  }

  /** Removes the backing object's name (`shm_unlink`); the mapping stays usable. */
  unlink(): void {
    if (this.name === null) throw typeError('This mapping has no named backing object to unlink')
    shmUnlink(this.name)
  }

  /** Same as {@link close}, for `using`. */
  [Symbol.dispose](): void {
    this.close()
  }

  /**
   * A handle that {@link revive} turns back into a mapping of the same segment (frozen;
   * the same object each time). It names the segment and carries its identity, so it
   * never revives to another segment created later under the same name.
   * @throws TypeError for a mapping without a name
   */
  toJSON(): Handle {
    const h = this.$shmutils
    if (typeof h === 'symbol') throw typeError('An anonymous mapping cannot be shared by handle: map a named object')
    return h
  }
}

/**
 * Views over `buffer`, which holds `[start, start + length)` of a mapping. The DataView of
 * a read-only mapping refuses writes ({@link READ_ONLY_VIEW}).
 */
function windowOver(buffer: ArrayBuffer, start: number, length: number, readOnly: boolean): Window {
  const dv = new DataView(buffer)
  if (readOnly) Object.setPrototypeOf(dv, READ_ONLY_VIEW)
  return { start, u8: new Uint8Array(buffer), dv, i32: new Int32Array(buffer, 0, Math.floor(length / 4)) }
}

/**
 * The prototype of a read-only mapping's DataViews: `DataView.prototype`, but every
 * `set*` method throws `ERR_SHM_READ_ONLY`. Typed references write through their
 * DataView with no read-only check of their own on their hottest path (`lib/ref.ts`).
 */
const READ_ONLY_VIEW: object = (() => {
  const refuse = (): never => {
    throw readOnlyError()
  }
  const props: PropertyDescriptorMap = {}
  for (const key of Object.getOwnPropertyNames(DataView.prototype)) {
    if (key.startsWith('set')) props[key] = { value: refuse }
  }
  return Object.create(DataView.prototype, props)
})()

/** A segment name as the native side normalizes it (checked there): one leading `/`. */
function normalized(name: string): string {
  return name.charCodeAt(0) === 47 ? name : `/${name}`
}

function tooLarge(length: number, max: number): ShmError {
  return new ShmError(
    `${length} bytes do not fit one ArrayBuffer here (at most ${max}): use mem.view(offset, length) for a window`,
    { code: 'ERR_SHM_BUFFER_TOO_LARGE' },
  )
}

/**
 * What takes `fn` out of `hooks` again: made out here, so that it holds the set and the
 * function only (one made inside the mapping's methods would hold the mapping through
 * their scope, and a remover kept by what the mapping's collection must not wait for,
 * as a heap's finalizer record, would keep it forever).
 */
function remover(hooks: Set<() => void>, fn: () => void): () => void {
  return () => hooks.delete(fn)
}

/** Takes a collected wide window out of its mapping's cache (unless a newer one took its place). */
const wideWindows = new FinalizationRegistry<{ map: Map<string, WeakRef<Window>>; key: string; ref: WeakRef<Window> }>(({ map, key, ref }) => {
  if (map.get(key) === ref) map.delete(key)
})
/** Forgets a collected wide window's buffer or DataView (nothing left to detach or poison at close). */
const wideParts = new FinalizationRegistry<{ set: Set<WeakRef<ArrayBuffer | DataView>>; ref: WeakRef<ArrayBuffer | DataView> }>(({ set, ref }) => {
  set.delete(ref)
})

/**
 * Stands in for `DataView.prototype` behind a closed mapping's views: every accessor and
 * method throws `ERR_SHM_CLOSED`.
 */
const CLOSED_VIEW: object = (() => {
  const closed = (): never => {
    throw closedError('the mapping')
  }
  const props: PropertyDescriptorMap = {}
  for (const [key, d] of Object.entries(Object.getOwnPropertyDescriptors(DataView.prototype))) {
    if (key !== 'constructor') props[key] = d.get ? { get: closed } : { value: closed }
  }
  return Object.create(Object.prototype, props)
})()

/**
 * Makes every use of a closed mapping's DataView throw `ERR_SHM_CLOSED`. Its buffer is
 * detached, which V8 reports with a raw TypeError, and typed references (`lib/ref.ts`)
 * read and write through it with no check of their own on their hottest path (a check
 * would cost every access): its prototype becomes {@link CLOSED_VIEW}. Nothing changes
 * while the mapping is open.
 */
function poisonView(view: DataView): void {
  Object.setPrototypeOf(view, CLOSED_VIEW)
}

/** The largest descriptor number (a C `int`). */
const MAX_FD = 0x7fff_ffff

/** The numbers of the `fixed` argument of `segmentOpen` and `mappingFromFd`. */
const FIXED_MODES = { no: 0, prefer: 1, require: 2 } as const

/** {@link OpenOptions} checked, as the native open calls take them. */
function openOptions(options: OpenOptions): { fixed: number; readOnly: number; owner: number | undefined } {
  checkOptions(options)
  const fixed = options.fixedAddress ?? 'prefer'
  const mode = fixed === false ? 'no' : fixed
  if (mode !== 'no' && mode !== 'prefer' && mode !== 'require') {
    throw typeError(`The "fixedAddress" option must be 'require', 'prefer' or false; got ${describe(fixed)}`)
  }
  const owner = options.owner
  if (owner !== undefined) {
    if (typeof owner !== 'number') throw typeError(`The "owner" option must be a user id (a number); got ${describe(owner)}`)
    if (!Number.isInteger(owner) || owner < 0 || owner > 0xffff_ffff) throw rangeError(`The "owner" option must be a user id, an integer from 0 to 4294967295; got ${owner}`)
  }
  return { fixed: FIXED_MODES[mode], readOnly: checkBoolean('readOnly', options.readOnly) ? 1 : 0, owner }
}

/**
 * `m`, if its object belongs to user `owner` (or `owner` is undefined); else closes it.
 * @throws ShmError `EACCES` naming both users
 */
function ownedBy(m: MappedMemory, owner: number | undefined): MappedMemory {
  if (owner === undefined) return m
  const uid = fstatSync(m.fd!).uid
  if (uid === owner) return m
  m.close()
  throw new ShmError(`${m.name ?? 'the segment'} belongs to user ${uid}, not ${owner} (the "owner" option): another user made it`, { code: 'EACCES', errno: osConstants.errno.EACCES, syscall: 'fstat', path: m.name ?? undefined })
}

/** Checks a numeric `fixedAddress` option of {@link CreateOptions}: a page-aligned address. */
function checkFixedAddress(value: unknown): void {
  if (typeof value !== 'number') throw typeError(`The "fixedAddress" option must be a boolean or an address; got ${describe(value)}`)
  if (!Number.isSafeInteger(value) || value <= 0 || value % PAGE_SIZE !== 0) {
    throw rangeError(`The "fixedAddress" option must be true, false or a non-zero address that is a multiple of the page size (${PAGE_SIZE}); got ${value}`)
  }
}

// ---- revive: one mapping per segment (name and identity) per process ----

/**
 * The mappings revived handles get, by {@link cacheKey}: held weakly, so that a mapping
 * dropped without `close()` is collected (its descriptor and pages released) like any
 * other; the finalizer then removes its entry ({@link dropCollected}), and a handle of it
 * revived later opens the segment again.
 */
const cache = new Map<string, WeakRef<MappedMemory>>()

/** The live mapping cached under `key`, if any (closed or not). */
function cached(key: string): MappedMemory | undefined {
  return cache.get(key)?.deref()
}

/** Removes `key`'s entry if its mapping was collected (not if another took its place). */
function dropCollected(key: string): void {
  const ref = cache.get(key)
  if (ref !== undefined && ref.deref() === undefined) cache.delete(key)
}

/** One mapping per segment name, identity and (raw mappings) origin. */
function cacheKey(segment: string, id: Handle, raw: unknown): string {
  // NUL never occurs in a name, a uid or an inode.
  return `${segment}\0${id.uid ?? ''}\0${id.inode ?? ''}\0${raw === undefined || raw === null ? '' : JSON.stringify(raw)}`
}

const UID = /^[0-9a-f]{16}$/
const INODE = /^[1-9][0-9]{0,19}$/

/** Checks the optional identity fields of a received handle. */
function checkIdentity(h: Handle): void {
  if (h.uid !== undefined && !(typeof h.uid === 'string' && UID.test(h.uid))) {
    throw typeError(`Malformed MappedMemory handle: "uid" must be 16 lowercase hex digits; got ${describe(h.uid)}`)
  }
  if (h.inode !== undefined && !(typeof h.inode === 'string' && INODE.test(h.inode))) {
    throw typeError(`Malformed MappedMemory handle: "inode" must be a decimal string; got ${describe(h.inode)}`)
  }
}

/**
 * The segment a handle names was removed, and the name now belongs to another one; or,
 * for a segment without a name, the descriptor the handle names now holds another object.
 */
function staleHandle(h: Handle): ShmError {
  if (h.proc !== undefined) {
    const { pid, fd } = h.proc as { pid: number; fd: number }
    return new ShmError(
      `the anonymous segment this handle refers to is no longer held by process ${pid}: its descriptor ${fd} now refers to something else`,
      { code: 'ERR_SHM_STALE_HANDLE', path: `/proc/${pid}/fd/${fd}` },
    )
  }
  const segment = h.segment
  return new ShmError(
    `the segment this handle refers to no longer exists under the name ${JSON.stringify(segment)}: ` +
      'that name was removed and now belongs to a segment created later',
    { code: 'ERR_SHM_STALE_HANDLE', path: segment },
  )
}

/** Makes `m` the mapping revived handles of `key` get (unless a live one has it). */
function remember(key: string, m: MappedMemory): void {
  const had = cached(key)
  if (had && !had.closed) return
  cache.set(key, new WeakRef(m))
  addCacheKey(m, key)
}

/**
 * @internal The open managed mapping of this thread that contains absolute `address`
 * (created, opened or revived here), if any. For rare paths only (a linear search).
 */
export function mappingAt(address: number): MappedMemory | undefined {
  for (const ref of cache.values()) {
    const m = ref.deref()
    if (m !== undefined && !m.closed && m.address.begin <= address && address < m.address.end) return m
  }
  return undefined
}

/** Drops `m` from the cache (it is being closed). */
function forget(key: string, m: MappedMemory): void {
  if (cached(key) === m) cache.delete(key)
}

interface RawHandle {
  fileOffset: number
  protection: number
  flags: number
  size: number
  address: number
}

/**
 * @internal The mapping a handle refers to, opened once per process. A mapping already
 * revived (`JSON.parse` with `reviver` revives nested handles first) is returned as is.
 *
 * A handle carries the segment's identity (`uid` from the header, the object's `inode`):
 * a mapping of that very segment is reused, even if its name was removed since; otherwise
 * the name is opened and must still lead to that segment (`ERR_SHM_STALE_HANDLE` if it
 * now names another). A handle without identity (written by hand, or by an older
 * version) means whatever segment the name leads to now.
 */
export function memoryFromHandle(h: Handle | MappedMemory): MappedMemory {
  if (isMappedMemory(h)) return h
  if (h.proc === undefined) checkName('segment', h.segment)
  checkIdentity(h)
  if (h.uid !== undefined || h.inode !== undefined) {
    const hit = cached(cacheKey(h.segment, h, h.raw))
    if (hit && !hit.closed) return hit
  }
  const m = openHandle(h)
  const got = m.toJSON()
  if ((h.uid !== undefined && got.uid !== h.uid) || (h.inode !== undefined && got.inode !== undefined && got.inode !== h.inode)) {
    m.close()
    throw staleHandle(h)
  }
  const key = cacheKey(h.segment, got, h.raw)
  const hit = cached(key)
  if (hit && !hit.closed && hit !== m) {
    m.close()
    return hit
  }
  if (hit !== m) cache.set(key, new WeakRef(m))
  addCacheKey(m, key)
  return m
}

/** Maps what a handle names: the managed segment, or the raw mapping it describes. */
function openHandle(h: Handle): MappedMemory {
  let m: MappedMemory
  if (h.proc !== undefined) {
    m = openThroughProc(h)
  } else if (h.raw === undefined) {
    m = MappedMemory.open(h.segment)
  } else {
    const r = h.raw as RawHandle
    if (typeof r !== 'object' || r === null) throw typeError('Malformed MappedMemory handle')
    using obj = shmOpen(h.segment, r.protection & Protection.WRITE ? 'r+' : 'r')
    const flags = r.flags & ~MapFlags.FIXED & ~MapFlags.FIXED_NOREPLACE
    try {
      // The same address as the sender if it is free here, so absolute pointers agree.
      m = new MappedMemory(r.address, r.size, r.protection, flags | MapFlags.FIXED_NOREPLACE, obj, r.fileOffset)
    } catch (e) {
      if ((e as { code?: string }).code !== 'EADDRINUSE') throw e
      m = new MappedMemory(null, r.size, r.protection, flags, obj, r.fileOffset)
    }
  }
  return m
}

/**
 * Maps a segment without a name from the handle's `proc: { pid, fd }`: the descriptor
 * `fd` of process `pid`, opened as `/proc/<pid>/fd/<fd>` (Linux; the same user, and
 * the same PID namespace). The caller compares identities: the pid or the descriptor
 * may have been reused for something else.
 */
function openThroughProc(h: Handle): MappedMemory {
  const p = h.proc as { pid?: unknown; fd?: unknown }
  if (typeof p !== 'object' || p === null || !Number.isInteger(p.pid) || !Number.isInteger(p.fd) || (p.pid as number) <= 0 || (p.fd as number) < 0) {
    throw typeError(`Malformed MappedMemory handle: "proc" must be { pid, fd } with integers; got ${describe(p)}`)
  }
  if (h.uid === undefined) throw typeError('Malformed MappedMemory handle: a segment found through "proc" needs its "uid"')
  const path = `/proc/${p.pid}/fd/${p.fd}`
  if (process.platform !== 'linux') {
    throw new ShmError(
      `an anonymous segment can be revived only in a process that maps it already, or from an inherited descriptor (MappedMemory.fromFd) on ${process.platform}: there is no /proc to open it through`,
      { code: 'ERR_SHM_UNSUPPORTED_PLATFORM' },
    )
  }
  let fd: number
  try {
    fd = openSync(path, 'r+')
  } catch (e) {
    // Node's permission model refuses the open itself (ERR_ACCESS_DENIED): opening a
    // descriptor for writing needs write access to its path there.
    const denied = (e as NodeJS.ErrnoException).code === 'ERR_ACCESS_DENIED'
    const code = denied ? 'EACCES' : ((e as NodeJS.ErrnoException).code ?? 'EINVAL')
    const why = code === 'ENOENT'
      ? `process ${p.pid} has exited or no longer holds the segment (the handle's sender must keep it open until the receiver has revived it)`
      : denied
        ? `Node's permission model does not allow it: run node with --allow-fs-read and --allow-fs-write for /proc (or send a named segment's handle)`
        : code === 'EACCES' || code === 'EPERM'
          ? `process ${p.pid} belongs to another user, or does not let others open its descriptors`
          : (e as Error).message
    // Node's fs reports errno negated (libuv's convention); a ShmError's is the OS's own.
    const errno = (osConstants.errno as Record<string, number | undefined>)[code]
    throw new ShmError(`cannot open the anonymous segment through ${path}: ${why}`, {
      code, errno, syscall: 'open', path,
    })
  }
  try {
    return MappedMemory.fromFd(fd)
  } catch (e) {
    // A descriptor reused for something that is not a segment: the one sent is gone.
    if ((e as ShmError).code === 'ERR_SHM_BAD_HEADER') throw staleHandle(h)
    throw e
  } finally {
    closeSync(fd)
  }
}

/**
 * @internal The mapping an object's handle refers to: its `memory` sub-handle (revived
 * already when a `JSON.parse` reviver got there first), else the named segment itself.
 */
export function memoryOfHandle(h: Handle): MappedMemory {
  return memoryFromHandle((h.memory as Handle | MappedMemory | undefined) ?? { ...h, $shmutils: 'MappedMemory', offset: 0 })
}

registerReviver('MappedMemory', memoryFromHandle)
