/**
 * {@link MappedMemory}: a mapping exposed to JavaScript as a zero-copy ArrayBuffer, raw
 * (the original's constructor) or managed (a named segment with a header and a heap).
 * @module
 */
import { checkIndex, checkName, describe } from './args.js'
import { closedError, native, outOfBounds, rangeError, ShmError, typeError, withExistsAdvice } from './errors.js'
import { forgetOnExit, unlinkOnExit } from './exit.js'
import { type Handle, registerReviver } from './handles.js'
import { MapFlags, Protection } from './constants.js'
import { binding, type MappingInfo, type NativeMapping } from './native.js'
import { SharedMemoryObject, shmOpen, shmUnlink } from './shm.js'
import type { Heap } from './heap.js'
import type { Ref } from './ref.js'
import type { InitOf, RefOf } from './typed.js'
import type { AllocationTypeOfName, CharPointerName, Type } from './types/index.js'

/**
 * Options of {@link MappedMemory.create}.
 * @category Segments
 */
export interface CreateOptions {
  /** Size in bytes (rounded up to whole pages; at least 4096). */
  size: number
  /** Permission bits of the new object; default `0o600`. */
  permissions?: number
  /**
   * `true`: map at a free high address that other processes are likely to have free
   * too, recorded in the header; a number: exactly that address; `false` (default): where
   * the kernel likes.
   */
  fixedAddress?: boolean | number
  /** Touch every page now (`MAP_POPULATE`) instead of on first use. */
  prefault?: boolean
  /**
   * Remove the name again (`shm_unlink`) when this process exits: normally, through
   * `process.exit()`, an uncaught exception, or a SIGINT, SIGTERM or SIGHUP that no other
   * listener handles (the process then still dies by that signal). Only if the name still
   * belongs to this segment. A process killed by SIGKILL (or crashing) cannot do it: see
   * `npx shmutils gc`. In a worker thread: when that worker exits. Default `false`.
   */
  unlinkOnExit?: boolean
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
   * the same pid: on Linux clock ticks since boot (field 22 of `/proc/<pid>/stat`), on
   * macOS microseconds since the epoch. 0 if unknown.
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
  /** Map read-only. */
  readOnly?: boolean
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

/** What other modules of the package need from a mapping. @internal */
export interface MemoryInternals {
  /** The native mapping (throws `ERR_SHM_CLOSED` when closed). */
  readonly mapping: NativeMapping
  /** Its id for the native free functions of this thread. */
  readonly id: number
  /** Start of the heap region (managed segments), else 0. */
  readonly heapOffset: number
  /** Int32 view for `Atomics` (length 0 once closed). */
  readonly i32: Int32Array
  /** A DataView over the mapping. */
  readonly view: DataView
  /** The creator's base address: stored pointers are relative to it. */
  readonly base: number
}

interface RawOrigin {
  fileOffset: number
  protection: number
  flags: number
}

/** @internal Access to a mapping's internals for the other modules of the package. */
export let internals: (m: MappedMemory) => MemoryInternals

let heapFactory: ((m: MappedMemory) => Heap) | null = null

/** @internal How `mem.heap` attaches; set by the heap module. */
export function setHeapFactory(fn: (m: MappedMemory) => Heap): void {
  heapFactory = fn
}

let adopt: { mapping: NativeMapping; name: string | null; raw: RawOrigin | null } | null = null

/**
 * The `$shmutils` of a mapping that has no name: a symbol, which structured clone refuses
 * with a `DataCloneError` carrying this text, at the sender.
 */
const ANONYMOUS = Symbol('shmutils: an anonymous mapping cannot be sent to another process (it has no name to open there): map a named object')

/**
 * A memory mapping, exposed zero-copy as {@link MappedMemory.buffer}. Closing detaches
 * every view first (they read as length 0), then unmaps; closing twice is fine, and
 * garbage collection never unmaps memory a live view still uses.
 * @category Segments
 */
export class MappedMemory implements Disposable {
  /** The segment name (managed, or raw over a named object), else `null`. */
  readonly name: string | null
  /** Length in bytes. */
  readonly size: number
  /** The absolute address range `[begin, end)`. */
  readonly address: AddressRange
  /**
   * The mapping's handle (what {@link toJSON} returns), kept as an own property so that a
   * structured clone (`worker.postMessage`, `workerData`, `fork` with `serialization:
   * 'advanced'`) carries it: `revive` turns the clone back into a mapping. A symbol for a
   * mapping without a name, so that sending one fails at once.
   */
  readonly $shmutils: Handle | symbol
  #mapping: NativeMapping
  #info: MappingInfo
  #buffer: ArrayBuffer
  #bytes: Uint8Array
  #i32: Int32Array
  #view: DataView | null = null
  #closed = false
  #raw: RawOrigin | null
  /** The heap of a managed segment, once attached; dropped on close. */
  #heap: Heap | null = null

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
    let mapping: NativeMapping
    let name: string | null = null
    if (adopt) {
      ;({ mapping, name } = adopt)
      this.#raw = adopt.raw
      adopt = null
    } else {
      if (address !== null && address !== 0) checkIndex('address', address)
      checkIndex('size', size)
      checkIndex('offset', offset)
      if (!Number.isInteger(protection)) throw typeError(`The "protection" argument must be an integer; got ${describe(protection)}`)
      let rawFd = -1
      if (fd instanceof SharedMemoryObject) {
        rawFd = fd.fd
        name = fd.name
      } else if (fd !== undefined) {
        if (!Number.isInteger(fd) || (fd as number) < 0) throw typeError(`The "fd" argument must be a SharedMemoryObject or a descriptor; got ${describe(fd)}`)
        rawFd = fd as number
      }
      const f = flags ?? (rawFd >= 0 ? MapFlags.SHARED : MapFlags.SHARED | MapFlags.ANONYMOUS)
      if (!Number.isInteger(f)) throw typeError(`The "flags" argument must be an integer; got ${describe(flags)}`)
      const addr = address === 0 ? null : address
      mapping = native(() => binding.Mapping.map(addr, size, protection, f, rawFd, offset))
      this.#raw = { fileOffset: offset, protection, flags: f }
    }
    this.#mapping = mapping
    this.name = name
    const info = mapping.info()
    this.#info = info
    this.size = info.size
    const begin = info.address
    this.address = Object.freeze({ begin, end: begin + this.size })
    this.#buffer = native(() => mapping.buffer())
    this.#bytes = new Uint8Array(this.#buffer)
    this.#i32 = new Int32Array(this.#buffer, 0, Math.floor(this.size / 4))
    this.$shmutils = this.#handle()
  }

  #handle(): Handle | symbol {
    if (this.name === null) return ANONYMOUS
    const h: Handle = { $shmutils: 'MappedMemory', segment: this.name, offset: 0 }
    const { uid, inode } = this.#info
    if (uid != null) h.uid = uid
    if (inode != null) h.inode = inode
    if (this.#raw !== null) h.raw = Object.freeze({ ...this.#raw, size: this.size, address: this.address.begin })
    return Object.freeze(h)
  }

  static {
    internals = (m) => {
      if (m.#closed) throw closedError('the mapping')
      m.#view ??= new DataView(m.#buffer)
      const info = m.#info
      return { mapping: m.#mapping, id: info.id, heapOffset: info.heapOffset, i32: m.#i32, view: m.#view, base: info.base }
    }
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
    if (typeof options !== 'object' || options === null) throw typeError('The "options" argument must be an object with a "size"')
    checkIndex('size', options.size)
    const permissions = options.permissions ?? 0o600
    if (!Number.isInteger(permissions)) throw typeError(`The "permissions" option must be an integer; got ${describe(permissions)}`)
    const fixed = options.fixedAddress ?? false
    if (typeof fixed !== 'boolean') checkIndex('fixedAddress', fixed)
    const prefault = options.prefault ?? false
    const onExit = options.unlinkOnExit ?? false
    if (typeof onExit !== 'boolean') throw typeError(`The "unlinkOnExit" option must be a boolean; got ${describe(onExit)}`)
    let mapping: NativeMapping
    try {
      mapping = native(() => binding.Mapping.createSegment(name, options.size, permissions, fixed, !!prefault))
    } catch (e) {
      throw withExistsAdvice(e, name, `open it with MappedMemory.open(${JSON.stringify(name)})`)
    }
    const m = MappedMemory.#adopt(mapping, native(() => binding.normalizeName(name)), null)
    if (onExit) unlinkOnExit(m.name!, m.uid!)
    return m
  }

  /**
   * Opens an existing managed segment, validating its header.
   * @throws ShmError `ENOENT`, `EACCES`, `ERR_SHM_BAD_HEADER` (not a shmutils segment),
   *   `EADDRINUSE` (with `fixedAddress: 'require'`, the creator's address is taken here)
   */
  static open(name: string, options: OpenOptions = {}): MappedMemory {
    checkName('name', name)
    const fixed = options.fixedAddress ?? 'prefer'
    const mode = fixed === false ? 'no' : fixed
    if (mode !== 'no' && mode !== 'prefer' && mode !== 'require') {
      throw typeError(`The "fixedAddress" option must be 'require', 'prefer' or false; got ${describe(fixed)}`)
    }
    const mapping = native(() => binding.Mapping.openSegment(name, mode, !!options.readOnly))
    return MappedMemory.#adopt(mapping, native(() => binding.normalizeName(name)), null)
  }

  static #adopt(mapping: NativeMapping, name: string | null, raw: RawOrigin | null): MappedMemory {
    adopt = { mapping, name, raw }
    let m: MappedMemory
    try {
      m = new MappedMemory(null, 0)
    } finally {
      adopt = null
    }
    // Handles of this segment revived in this process reuse this mapping.
    const h = m.toJSON()
    const key = cacheKey(h.segment, h, h.raw)
    if (!cache.get(key) || cache.get(key)!.closed) cache.set(key, m)
    return m
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
  new<const S extends CharPointerName>(type: S, init: string | Uint8Array): Ref<number[], Ref<number>>
  new<const S extends string>(type: S, init?: InitOf<AllocationTypeOfName<S>>): RefOf<AllocationTypeOfName<S>>
  new<Ty extends Type>(type: Ty, init?: InitOf<Ty>): RefOf<Ty>
  new(type: Type | string, init?: unknown): Ref {
    return this.heap.new(type as Type, init)
  }

  /** Whether {@link close} or {@link detach} was called. */
  get closed(): boolean {
    return this.#closed
  }

  /** The whole mapping, zero-copy. Detached (length 0) after {@link close}. */
  get buffer(): ArrayBuffer {
    if (this.#closed) throw closedError('the mapping')
    return this.#buffer
  }

  /** A `Uint8Array` over {@link buffer}. */
  get bytes(): Uint8Array {
    if (this.#closed) throw closedError('the mapping')
    return this.#bytes
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
    return this.#bytes.subarray(from, to)
  }

  /**
   * Forgets the mapping without unmapping it: views are detached, and the caller owns
   * the pages (release them with `munmap`). Returns where they are.
   */
  detach(): DetachedPages {
    if (this.#closed) throw closedError('the mapping')
    this.#shutViews()
    this.#mapping.forget()
    return { address: this.address.begin, size: this.size }
  }

  /** Detaches every view, then unmaps. Safe to call twice. */
  close(): void {
    if (this.#closed) return
    this.#shutViews()
    this.#mapping.close()
  }

  #shutViews(): void {
    this.#closed = true
    this.#heap = null
    forgetCached(this)
    native(() => binding.detachBuffer(this.#buffer))
    if (this.#view !== null) poisonView(this.#view)
  }

  /** Removes the backing object's name (`shm_unlink`); the mapping stays usable. */
  unlink(): void {
    if (this.name === null) throw typeError('This mapping has no named backing object to unlink')
    shmUnlink(this.name)
    forgetOnExit(this.name)
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
 * Makes every use of a closed mapping's DataView throw `ERR_SHM_CLOSED`. Its buffer is
 * detached, which V8 reports with a raw TypeError, and typed references (`lib/ref.ts`)
 * read and write through it with no check of their own on their hottest path (a check
 * would cost every access): own properties now shadow each accessor and method of
 * `DataView.prototype`. Nothing changes while the mapping is open.
 */
function poisonView(view: DataView): void {
  const closed = (): never => {
    throw closedError('the mapping')
  }
  const props: PropertyDescriptorMap = {}
  for (const [key, d] of Object.entries(Object.getOwnPropertyDescriptors(DataView.prototype))) {
    if (key !== 'constructor') props[key] = d.get ? { get: closed } : { value: closed }
  }
  Object.defineProperties(view, props)
}

// ---- revive: one mapping per segment (name and identity) per process ----

const cache = new Map<string, MappedMemory>()

/** One mapping per segment name, identity and (raw mappings) origin. */
function cacheKey(segment: string, id: Handle, raw: unknown): string {
  return JSON.stringify([segment, id.uid ?? null, id.inode ?? null, raw ?? null])
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

/** The segment a handle names was removed, and the name now belongs to another one. */
function staleHandle(segment: string): ShmError {
  return new ShmError(
    `the segment this handle refers to no longer exists under the name ${JSON.stringify(segment)}: ` +
      'that name was removed and now belongs to a segment created later',
    { code: 'ERR_SHM_STALE_HANDLE', path: segment },
  )
}

function forgetCached(m: MappedMemory): void {
  for (const [k, v] of cache) if (v === m) cache.delete(k)
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
  if (h instanceof MappedMemory) return h
  checkName('segment', h.segment)
  checkIdentity(h)
  if (h.uid !== undefined || h.inode !== undefined) {
    const hit = cache.get(cacheKey(h.segment, h, h.raw))
    if (hit && !hit.closed) return hit
  }
  const m = openHandle(h)
  const got = m.toJSON()
  if ((h.uid !== undefined && got.uid !== h.uid) || (h.inode !== undefined && got.inode !== undefined && got.inode !== h.inode)) {
    m.close()
    throw staleHandle(h.segment)
  }
  const key = cacheKey(h.segment, got, h.raw)
  const hit = cache.get(key)
  if (hit && !hit.closed && hit !== m) {
    m.close()
    return hit
  }
  cache.set(key, m)
  return m
}

/** Maps what a handle names: the managed segment, or the raw mapping it describes. */
function openHandle(h: Handle): MappedMemory {
  let m: MappedMemory
  if (h.raw === undefined) {
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
 * @internal The mapping an object's handle refers to: its `memory` sub-handle (revived
 * already when a `JSON.parse` reviver got there first), else the named segment itself.
 */
export function memoryOfHandle(h: Handle): MappedMemory {
  return memoryFromHandle((h.memory as Handle | MappedMemory | undefined) ?? { ...h, $shmutils: 'MappedMemory', offset: 0 })
}

registerReviver('MappedMemory', memoryFromHandle)
