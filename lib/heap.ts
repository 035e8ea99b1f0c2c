/**
 * {@link Heap}: a process-safe allocator whose every piece of state lives inside the
 * mapping (`src-rs/heap/` documents the layout), so any attached process can allocate
 * and free at any time. Typed objects come from {@link Heap.new}; named objects, found or
 * constructed atomically across processes, from {@link Heap.named}.
 * @module
 */
import { checkIndex, checkName, checkOptions, checkString, describe, describeNot } from './args.js'
import { native, rangeError, ShmError, typeError } from './errors.js'
import { HeapCache } from './heap-cache.js'
import { type Handle, handleIn, handleOf, registerReviver } from './handles.js'
import { setLockAllocator } from './lock.js'
import { checkIntact, checkMemory, GUARD, internals, isMappedMemory, MappedMemory, memoryOfHandle, nativeFor, setHeapFactory, withPath } from './memory.js'
import { binding } from './native.js'
import { Ref, refAt, refParts, setRefHeapLookup, valueImage, writeValue } from './ref.js'
import { cStringSize } from './strings.js'
import { checkWellFormed } from './utf8.js'
import type { CharArrayRef, InitOf, RefOf } from './typed.js'
import {
  arrayOf, describeType, formatType, isType, parseAllocationTypeName, typeFromDescription, types,
  type AllocationTypeOfName, type CharPointerName, type Type,
} from './types/index.js'

/**
 * Figures of {@link Heap.stats}.
 * @category Heap
 */
export interface HeapStats {
  /** Bytes of the heap region. */
  size: number
  /** Bytes in allocated blocks (headers included). */
  used: number
  /** Bytes in free blocks. */
  free: number
  /** The largest allocation that can succeed now (`malloc(largestFree)` does, one byte more does not). */
  largestFree: number
  /** Number of allocated blocks. */
  allocations: number
  /**
   * Freed blocks parked in threads' caches (see {@link Heap.trim}), counted as free in
   * {@link free} and not in {@link used} or {@link allocations}.
   */
  cached: number
  /** Bytes of those blocks. */
  cachedBytes: number
}

/**
 * Options of {@link Heap.create}.
 * @category Heap
 */
export interface HeapCreateOptions {
  /** Where the heap region starts (16-aligned); default 0. */
  offset?: number
  /** Its length; default: to the end of the mapping. */
  size?: number
}

/**
 * What of a {@link Heap} outlives it: its native slot and its cache. No reference to the
 * `Heap` or its mapping object, so that the finalizer of a collected heap, and the
 * flushes of the other `Heap` objects of the same heap, can return its cached blocks
 * without keeping either alive. (The cache holds the mapping's memory, and the native
 * slot holds the region and this thread's liveness token: the memory stays mapped, and
 * the blocks stay this thread's, until the slot is retired.)
 */
interface Slot {
  /** The native heap slot of this thread. */
  readonly id: number
  /** Its cache while it is in {@link cached}; `null` once retired, or if it has none. */
  cache: HeapCache | null
  /** The slots of the same heap in this thread, this one among them, while it has a cache. */
  group: Group | null
  /** Takes the mapping's close hook that retires this slot off again (see {@link retire}). */
  unhook: (() => void) | null
  /**
   * A heap other than its segment's own: its mapping's entry of {@link attached}, and the
   * WeakRef to it there, to take it out when it is collected; `null` for a segment's own
   * heap. (Nothing here may lead to the heap or its mapping: this record outlives them.)
   */
  readonly weak: { readonly home: Map<number, WeakRef<Heap>>; readonly offset: number; readonly ref: WeakRef<Heap> } | null
}

/** The slots with a cache of one heap in this thread (an entry of {@link cached}). */
interface Group {
  readonly key: string
  readonly slots: Set<Slot>
}

/**
 * Returns a collected Heap's cached blocks (unless its mapping closed), then its slot, and
 * takes it out of {@link attached} (unless a newer heap took its place there).
 */
const slotRegistry = new FinalizationRegistry<Slot>((s) => {
  retire(s, true)
  const w = s.weak
  if (w !== null && w.home.get(w.offset) === w.ref) w.home.delete(w.offset)
  binding.heapRelease(s.id)
})

/**
 * This thread's heaps, by mapping and offset: one `Heap`, so one cache, per heap while
 * it lives. A segment's own heap is held as long as its mapping (which holds it too);
 * others weakly, so that heaps made and dropped in blocks of a long-lived mapping
 * (`Heap.create(mem, { offset: mem.heap.malloc(n), size: n })`) do not pile up. (Only
 * those: a WeakRef keeps its target until the current job ends, which a program opening
 * and closing segments in one loop would pay for.)
 */
const attached = new WeakMap<MappedMemory, { own: Heap | null; others: Map<number, WeakRef<Heap>> }>()

/** The live heap of this thread at `offset` of `memory`. */
function attachedAt(memory: MappedMemory, offset: number): Heap | undefined {
  const mine = attached.get(memory)
  if (mine === undefined) return undefined
  if (mine.own !== null && mine.own.offset === offset) return mine.own
  return mine.others.get(offset)?.deref()
}

/**
 * The slots with a cache in this thread, by heap (the mapping's `objectKey` and the
 * heap's offset): those of live heaps whose mapping is open, and of collected ones not
 * finalized yet. An allocation that finds the heap full flushes them all (the blocks
 * freed through one mapping object of a segment and those freed through another are one
 * thread's cache); the mapping's close, the heap's finalizer and this thread's exit take
 * a slot out.
 */
const cached = new Map<string, Group>()
let exitHooked = false

/** Every cache of this thread goes back to its heap: the thread is ending. */
function onExit(): void {
  for (const g of cached.values()) for (const s of g.slots) retire(s, true)
  cached.clear()
}

/**
 * Frees the blocks cached in `s` through its native slot, one at a time; how many. A
 * block that fails on its own is skipped (the first such error is thrown at the end). If
 * the heap lock stays busy (`ETIMEDOUT`: its holder is stopped, not dead), the block goes
 * back into the cache and the flush ends there: the rest never left it, and a later flush
 * (or a reclaimer, once this thread is gone) returns them. Taking them all out first
 * would leave them allocated by nobody.
 */
function flushSlot(s: Slot): number {
  const c = s.cache
  if (c === null) return 0
  let freed = 0
  let failed: unknown = null
  const free = (off: number): void => {
    try {
      native(() => binding.heapFree(s.id, off))
      freed++
    } catch (e) {
      if ((e as { code?: unknown } | null)?.code === 'ETIMEDOUT') throw e
      failed ??= e
    }
  }
  for (let strays = c.strays.splice(0), i = 0; i < strays.length; i++) {
    try {
      free(strays[i]!)
    } catch (e) {
      c.strays.push(...strays.slice(i))
      throw e
    }
  }
  for (let off = c.takeAny(); off >= 0; off = c.takeAny()) {
    try {
      free(off)
    } catch (e) {
      if (!c.put(off)) c.strays.push(off)
      throw e
    }
  }
  if (failed !== null) throw failed
  return freed
}

/**
 * Takes `s` out of {@link cached} for good, its blocks first returned to the heap when
 * `flush` (errors ignored: the mapping is going away, or the process is). Without
 * `flush` the cache is forgotten (the heap was formatted again).
 */
function retire(s: Slot, flush: boolean): void {
  s.unhook?.()
  s.unhook = null
  if (s.cache === null) return
  try {
    if (flush) flushSlot(s)
  } catch {
    // Left cached: the heap reclaims them once this thread lets go of its token.
  } finally {
    s.cache = null
    const g = s.group!
    s.group = null
    if (g.slots.delete(s) && g.slots.size === 0 && cached.get(g.key) === g) cached.delete(g.key)
  }
}

/**
 * `s`'s cache sat unused (`lib/heap-cache.ts`): its blocks go back to the heap, for the
 * other threads and processes. `false` (look again later) while the heap lock is held:
 * the flush would wait for it on the event loop, for as long as the heap's lock timeout
 * if its holder is stopped. Other errors are ignored (what could not go back stays, for
 * the next flush, or for a reclaimer once this thread is gone).
 */
function idle(s: Slot): boolean {
  if (s.cache === null) return true
  if (s.cache.heapLockHeld()) return false
  try {
    flushSlot(s)
  } catch (e) {
    // The lock was taken meanwhile and held past its timeout: what is left stays cached
    // until the timer looks again. Anything else: as above.
    return (e as { code?: unknown } | null)?.code !== 'ETIMEDOUT'
  }
  return true
}

/** The most named objects a `Heap` object remembers the directory entries of (see `#namedEntries`). */
const MAX_NAMED_HINTS = 1 << 16

/** Whether `malloc` with this alignment may take a block of the cache (16-aligned). */
function smallAlign(align: number): boolean {
  return align === 16 || (align > 0 && align < 16 && (align & (align - 1)) === 0 && (align | 0) === align)
}
/** @internal This thread's native slot id of a heap, for the raw heap calls of containers. */
export let heapSlotId: (heap: Heap) => number
/**
 * @internal After `fn`, a native allocation from `heap` (a container's), failed with `e`
 * (converted): as for the heap's own allocations, on `ENOMEM` this thread's caches of the
 * heap go back and it runs again; a failed system call names the segment.
 */
export let afterAllocFailure: <T>(heap: Heap, fn: () => T, e: unknown) => T

/**
 * @internal Whether `value` is a {@link Heap}: a private-brand check, which a Proxy of a
 * heap fails.
 */
export let isHeap: (value: unknown) => value is Heap

/**
 * @internal The heap of a `where` argument (of every constructor that allocates: a Heap,
 * or a managed mapping's own heap).
 * @throws TypeError for anything else, a raw mapping included
 */
export function heapOf(where: unknown): Heap {
  if (isHeap(where)) return where
  if (isMappedMemory(where)) {
    if (!where.managed) throw typeError('The "where" argument is a raw mapping, which has no heap: use Heap.create(memory)')
    return where.heap
  }
  throw typeError(`The "where" argument must be a Heap or a managed MappedMemory; got ${describeNot(where, where instanceof Heap || where instanceof MappedMemory)}`)
}

/** How long {@link Heap.named} waits for another process to finish constructing. */
const NAMED_WAIT_MS = 10_000
/** The initial bytes of a named object made without `init`: none (it stays zeroed). */
const NO_IMAGE = new Uint8Array(0)

/**
 * How long a heap operation waits for the heap's lock by default, in milliseconds
 * ({@link Heap.lockTimeout}). Heap operations hold the lock for microseconds; a wait this
 * long means the holder is stuck (stopped in a debugger, or a corrupt lock word naming a
 * live thread), and the operation fails with `ETIMEDOUT` instead of hanging.
 * @category Heap
 */
export const DEFAULT_HEAP_LOCK_TIMEOUT = 10_000

/**
 * A heap inside a mapping. Managed segments (`MappedMemory.create`) have one, formatted
 * at creation: `mem.heap`. All operations take the heap's own lock (a futex lock in the
 * region); a process that dies holding it is detected, and the next operation repairs
 * the heap from its block chain before continuing.
 * @category Heap
 */
export class Heap {
  /** The mapping the heap lives in. */
  readonly memory: MappedMemory
  /** Where the heap region starts in {@link memory}. */
  readonly offset: number
  /** Length of the heap region. */
  readonly size: number
  /**
   * The heap's handle ({@link toJSON}), as an own property so a structured clone
   * (`postMessage`, `workerData`) carries it (see `revive`); a symbol if the mapping
   * cannot be shared.
   */
  readonly $shmutils: Handle | symbol
  /** This thread's native heap slot (see `src-rs/js/heap.rs`). */
  #id: number
  /** The slot and cache as the finalizer and the other Heaps of this heap see them. */
  #slot: Slot
  /**
   * This thread's cache of small blocks it freed (`lib/heap-cache.ts`); `null` where the
   * fast path is off (read-only segments, mappings larger than one ArrayBuffer, a heap
   * formatted again, any heap but a managed segment's own).
   */
  #cache: HeapCache | null = null
  #lockTimeout = DEFAULT_HEAP_LOCK_TIMEOUT

  /** Heaps come from {@link Heap.create}, {@link Heap.attach} and `mem.heap`. */
  private constructor(memory: MappedMemory, offset: number, id: number) {
    this.memory = memory
    this.offset = offset
    this.$shmutils = handleIn(memory, (m) => Object.freeze({ $shmutils: 'Heap', segment: m.segment, offset, memory: m }))
    this.#id = id
    const mi = internals(memory)
    let mine = attached.get(memory)
    if (!mine) attached.set(memory, (mine = { own: null, others: new Map() }))
    const own = memory.managed && mi.heapOffset === offset
    const weak = own ? null : { home: mine.others, offset, ref: new WeakRef(this) }
    const before = attachedAt(memory, offset)
    const slot: Slot = (this.#slot = { id, cache: null, group: null, unhook: null, weak })
    slotRegistry.register(this, slot)
    const info = native(() => binding.heapInfo(id))
    this.size = info.size
    // A cache only for a managed segment's own heap, which lives as long as the segment.
    // Any other heap may lie in a block of another heap (`Heap.create(mem, { offset:
    // mem.heap.malloc(n), size: n })`, in any mapping), freed once the heap is done with:
    // a cache flushed afterwards (idle, at close, at collection, at exit) would take the
    // freed block's first bytes, now links of the outer heap's free lists, for the heap's
    // lock word, and write its lists over them.
    if (!mi.readOnly && mi.whole && own) {
      // The token the cache marks its blocks with is held by the native slot, which lives
      // until the blocks went back (see `heapToken`).
      slot.cache = this.#cache = new HeapCache(mi.whole.i32, { offset, ...info }, nativeFor(memory, () => binding.heapToken(id)), () => idle(slot))
      const key = `${mi.objectKey}\0${offset}`
      let g = cached.get(key)
      if (!g) cached.set(key, (g = { key, slots: new Set() }))
      g.slots.add(slot)
      slot.group = g
      slot.unhook = mi.beforeClose(() => retire(slot, true))
      if (!exitHooked) {
        exitHooked = true
        process.on('exit', onExit)
      }
    }
    // Formatted again: what the old view cached is gone with the old heap.
    if (before) {
      before.#cache = null
      retire(before.#slot, false)
    }
    if (weak === null) mine.own = this
    else mine.others.set(offset, weak.ref)
  }

  static {
    afterAllocFailure = (heap, fn, e) => heap.#afterFailure(fn, e)
    heapSlotId = (heap) => heap.#id
    isHeap = (value): value is Heap => typeof value === 'object' && value !== null && #id in value
  }

  /**
   * How long each operation of this heap (in this thread) waits for the heap's lock, in
   * milliseconds; `Infinity` waits forever. Default {@link DEFAULT_HEAP_LOCK_TIMEOUT}.
   * An operation that waited this long fails with ShmError `ETIMEDOUT`. (A holder that
   * died is noticed within about 50 ms and the heap repaired; this bounds waits for one
   * that lives but never lets go.)
   */
  get lockTimeout(): number {
    return this.#lockTimeout
  }

  /** @throws TypeError for a non-number, RangeError for a negative or NaN timeout */
  set lockTimeout(ms: number) {
    if (typeof ms !== 'number') throw typeError(`The "lockTimeout" option must be a number; got ${describe(ms)}`)
    native(() => binding.heapSetLockTimeout(this.#id, ms))
    this.#lockTimeout = ms
  }

  /**
   * Formats a new heap in `[offset, offset + size)` of a mapping (erasing what was there).
   * On a managed segment the region must lie past its heap or inside one block of it:
   * `Heap.create(mem, { offset: mem.heap.malloc(size), size })`.
   * @throws RangeError for a region that does not fit or is too small, or that covers a
   *   managed segment's headers or heap outside a block allocated from it
   */
  static create(memory: MappedMemory, options: HeapCreateOptions = {}): Heap {
    checkMemory(memory)
    checkOptions(options)
    const offset = checkIndex('offset', options.offset ?? 0)
    if (offset >= memory.size) throw rangeError(`The "offset" option ${offset} is beyond the end of the mapping (${memory.size} bytes)`)
    const size = checkIndex('size', options.size ?? memory.size - offset)
    const { id } = internals(memory)
    if (memory.managed) insideOwnBlock(memory, offset, size)
    let slot: number
    try {
      slot = nativeFor(memory, () => binding.heapAttach(id, offset, size, true))
    } catch (e) {
      // The core checks the region's geometry (alignment, fit, the least and largest
      // size): a region it refuses is a bad argument, said in its words.
      if ((e as ShmError).code === 'EINVAL') throw rangeError(`The "offset" and "size" options { offset: ${offset}, size: ${size} } are no heap region: ${(e as Error).message}`)
      throw e
    }
    return new Heap(memory, offset, slot)
  }

  /**
   * Attaches to a heap formatted earlier (by any process) at `offset` of a mapping; the
   * same object for every attach of one heap in one thread.
   * @throws ShmError `ERR_SHM_CORRUPT` if there is no valid heap there
   */
  static attach(memory: MappedMemory, offset = 0): Heap {
    checkMemory(memory)
    checkIndex('offset', offset)
    const { id } = internals(memory)
    return attachedAt(memory, offset) ?? new Heap(memory, offset, nativeFor(memory, () => binding.heapAttach(id, offset, 0, false)))
  }

  /**
   * Allocates `size` bytes aligned to `align` (a power of two up to the page size;
   * default 16). The memory is not zeroed. A small block this thread freed is handed out
   * again without a native call (see {@link trim}).
   * @returns the offset of the block in {@link memory}
   * @throws ShmError `ENOMEM` when no free block is large enough (after this thread's
   *   caches of the heap, those of every mapping object of its segment, and those of dead
   *   threads went back to the heap)
   */
  malloc(size: number, align = 16): number {
    // The short path (V8 inlines it with the cache's take, put and free into a caller's
    // loop: every byte of bytecode here counts against one inlining budget).
    const c = this.#cache
    if (c !== null && align === 16 && typeof size === 'number') {
      const off = c.take(size)
      if (off >= 0) {
        if (GUARD[0] !== 0) checkIntact(this.memory)
        return off
      }
    }
    return this.#mallocSlow(size, align)
  }

  #mallocSlow(size: number, align: number): number {
    if (typeof size !== 'number') throw typeError(`The "size" argument must be of type number; got ${describe(size)}`)
    if (typeof align !== 'number') throw typeError(`The "align" argument must be of type number; got ${describe(align)}`)
    const c = this.#cache
    if (c !== null && smallAlign(align)) {
      const off = c.take(size)
      if (off >= 0) {
        if (GUARD[0] !== 0) checkIntact(this.memory)
        return off
      }
    }
    return this.#allocate(() => binding.heapMalloc(this.#id, size, align))
  }

  /**
   * A native allocation; on `ENOMEM` the caches go back to the heap and it runs again. A
   * failed system call (`fallocate`: `ENOSPC`) names the segment as its `path`.
   */
  #allocate<T>(fn: () => T): T {
    const strays = this.#cache?.strays
    if (strays?.length) for (const off of strays.splice(0)) native(() => binding.heapFree(this.#id, off))
    try {
      return native(fn)
    } catch (e) {
      return this.#afterFailure(fn, e)
    }
  }

  /**
   * `fn`, a native allocation, failed with `e`: on `ENOMEM` this thread's caches go back
   * to the heap and it runs again; a failed system call names the segment.
   */
  #afterFailure<T>(fn: () => T, e: unknown): T {
    try {
      if ((e as ShmError).code !== 'ENOMEM' || this.trim() === 0) throw e
      return native(fn)
    } catch (e2) {
      throw withPath(e2 instanceof ShmError && e2.code === 'ENOMEM' ? this.#full(e2) : e2, this.memory)
    }
  }

  /**
   * `e` (`ENOMEM`) saying which heap is full and what to do. Nothing is measured here (a
   * map that cannot grow its table meets this on every `set` of a full heap, and
   * `stats()` walks a free list): `heap.stats()` says how full.
   */
  #full(e: ShmError): ShmError {
    const where = this.memory.name === null ? 'this segment' : this.memory.name
    const out = new ShmError(`${e.message} in the heap of ${this.size} bytes of ${where}: free what is no longer needed, or give the heap a larger segment (heap.stats() says how full; docs/cache.md sizes maps)`, { code: 'ENOMEM', path: this.memory.name ?? undefined })
    Error.captureStackTrace?.(out, this.#full)
    return out
  }

  /**
   * Returns a block to the heap. Freeing a named object ({@link named}) also removes its
   * name, in the same step: the directory never leads to freed memory. A small block
   * (up to 1008 bytes) goes to this thread's cache, from which its next `malloc` of that
   * size takes it back (see {@link trim}).
   * @throws ShmError `ERR_SHM_DOUBLE_FREE`; `EINVAL` for an offset that is not a block
   */
  free(offset: number): void {
    const c = this.#cache
    if (c !== null && typeof offset === 'number' && c.put(offset)) {
      if (GUARD[0] !== 0) checkIntact(this.memory)
      return
    }
    this.#freeSlow(offset)
  }

  #freeSlow(offset: number): void {
    if (typeof offset !== 'number') throw typeError(`The "offset" argument must be of type number; got ${describe(offset)}`)
    const entry = this.#namedEntries.size === 0 ? undefined : this.#namedEntries.get(offset)
    if (entry === undefined) return native(() => binding.heapFree(this.#id, offset))
    this.#namedEntries.delete(offset)
    native(() => binding.heapFreeNamed(this.#id, offset, entry))
  }

  /**
   * Where the directory entries of the named objects this object created or found were
   * (object offset → entry offset): freeing one looks there first, in the entry's own
   * bucket, instead of walking the whole directory (8 ms a free at 100,000 names). A
   * stale hint costs that walk; the table is dropped whole once it holds
   * {@link MAX_NAMED_HINTS}.
   */
  readonly #namedEntries = new Map<number, number>()

  #hintNamed(offset: number, entry: number): void {
    if (this.#namedEntries.size >= MAX_NAMED_HINTS) this.#namedEntries.clear()
    this.#namedEntries.set(offset, entry)
  }

  /**
   * Resizes a block, moving it (and its contents) if needed; returns its new offset.
   * @throws ShmError `EINVAL` for a named object (its name would be left behind: copy it
   *   into a new object instead), `ENOMEM`
   */
  realloc(offset: number, size: number): number {
    if (typeof offset !== 'number') throw typeError(`The "offset" argument must be of type number; got ${describe(offset)}`)
    if (typeof size !== 'number') throw typeError(`The "size" argument must be of type number; got ${describe(size)}`)
    return this.#allocate(() => binding.heapRealloc(this.#id, offset, size))
  }

  /**
   * Returns this thread's cached blocks to the heap (those freed through every mapping
   * object of the segment, each of which has its own `Heap` object and cache), and those
   * of threads that died with blocks cached (a process killed, a worker ended without
   * closing the mapping).
   *
   * Small blocks a thread frees stay allocated in the heap, marked as cached, so that its
   * next `malloc` of the same size takes one back without a native call and without the
   * heap lock. Other processes cannot use them meanwhile (`stats().cached` counts them);
   * they go back by themselves when the mapping is closed, when the `Heap` object is
   * garbage-collected (its mapping dropped unclosed), when the cache sat unused for 5 to
   * 10 seconds, when the thread exits, and when an allocation finds the heap full. (Only a
   * managed segment's own heap caches: any other may lie in a block of another heap.) Call this before handing memory to other
   * processes after a burst of small frees.
   * @returns how many blocks went back
   */
  trim(): number {
    return this.#flush() + native(() => binding.heapTrim(this.#id))
  }

  /**
   * Returns this thread's cached blocks of this heap to the heap, this object's and then
   * those of the other `Heap` objects of it (other mapping objects of the segment, or
   * collected ones not finalized yet); how many.
   */
  #flush(): number {
    const own = this.#slot
    let n = flushSlot(own)
    const g = own.group
    if (g !== null && g.slots.size > 1) {
      for (const s of [...g.slots]) {
        if (s === own) continue
        try {
          n += flushSlot(s)
        } catch {
          // Another mapping object's trouble (it lost its pages): not this call's.
        }
      }
    }
    return n
  }

  /**
   * Usage figures. A walk of every block under the heap lock (the blocks threads cached
   * are counted on the way): about 3.5 ms at a million blocks, during which every other
   * heap operation of the segment waits. Not for a hot path.
   */
  stats(): HeapStats {
    return native(() => binding.heapStats(this.#id))
  }

  /**
   * Walks every block, list and directory entry; throws `ERR_SHM_CORRUPT` on any broken
   * invariant. Blocks cached by threads that died go back to the heap first.
   */
  check(): void {
    native(() => binding.heapCheck(this.#id))
  }

  /**
   * Allocates a zeroed object of `type` (a type object or a C type name such as
   * `'size_t'`, `'int32_t[8]'`; the original's `'size_t *'` means the same as
   * `'size_t'`), writes `init` if given, and returns a reference to it.
   * `'char *'` with a string or bytes allocates a `char[]` holding them (a string gets a
   * terminating NUL).
   *
   * In TypeScript the reference is typed from the type (see `RefOf`) and `init` is
   * checked against it (see `InitOf`).
   * @example
   * ```ts
   * const hits = mem.heap.new('uint64_t', 0)           // Ref<bigint>
   * const xs = mem.heap.new('int32_t[8]', [1, 2, 3])   // the other five are 0
   * const name = mem.heap.new('char *', 'Ada')         // a char[4] holding "Ada\0"
   * ```
   * @throws ShmError `ENOMEM` when the heap is full; TypeError/RangeError for a bad type
   *   name or an `init` the type does not take
   */
  new<const S extends CharPointerName>(type: S, init: string | Uint8Array): CharArrayRef
  new<const S extends string>(type: S, init?: InitOf<AllocationTypeOfName<S>>): RefOf<AllocationTypeOfName<S>>
  new<Ty extends Type>(type: Ty, init?: InitOf<Ty>): RefOf<Ty>
  new(type: Type | string, init?: unknown): Ref {
    const t = resolveNewType(type, init)
    const off = this.malloc(t.size, Math.max(t.align, 16))
    try {
      return this.#construct(off, t, init)
    } catch (e) {
      this.free(off)
      throw e
    }
  }

  /**
   * Copies `s` into the heap as a NUL-terminated UTF-8 `char[n]` (n = its byte length
   * + 1), the C string another process reads with `ref.string()`.
   * @throws TypeError if `s` is not a string, or holds a lone UTF-16 surrogate (which
   *   UTF-8 cannot hold); ShmError `ENOMEM`
   */
  newString(s: string): CharArrayRef {
    checkString('s', s)
    checkWellFormed(s, 'The "s" argument')
    return this.new(arrayOf(types.char, cStringSize(s)), s)
  }

  #construct(off: number, t: Type, init: unknown): Ref {
    const w = internals(this.memory).window(off, t.size)
    w.u8.fill(0, off - w.start, off - w.start + t.size)
    const ref = refAt(this.memory, off, t, this)
    if (init !== undefined) writeValue(ref, toValue(t, init))
    return ref
  }

  /**
   * Finds the object called `name`, or constructs it (zeroed, then `init`) if there is
   * none: atomically across processes, so two processes racing get one object,
   * constructed once. The directory remembers the type, so {@link find} returns a typed
   * reference in any process. Names are 1 to 255 bytes of UTF-8. Typed like {@link new}.
   * While another thread constructs it, waits (up to 10 s); if that thread's process
   * dies first, its half-made object is freed and this call constructs the object.
   * @throws TypeError if `name` holds an object of another type (its type is named);
   *   TypeError/RangeError for an `init` the type does not take, before anything is
   *   created; ShmError `ENOMEM`
   */
  named<const S extends CharPointerName>(name: string, type: S, init: string | Uint8Array): CharArrayRef
  named<const S extends string>(name: string, type: S, init?: InitOf<AllocationTypeOfName<S>>): RefOf<AllocationTypeOfName<S>>
  named<Ty extends Type>(name: string, type: Ty, init?: InitOf<Ty>): RefOf<Ty>
  named(name: string, type: Type | string, init?: unknown): Ref {
    checkName('name', name)
    const t = resolveNewType(type, init)
    const desc = JSON.stringify(describeType(t))
    // init is read (its getters run) once, here, into the object's bytes: a bad init
    // fails before the object exists. The native call creates the object with those bytes
    // and publishes it in one go: no JavaScript runs while the name is reserved (a `vm`
    // timeout there left it reserved for good by a live thread; code of the caller's
    // could throw, or wait for the name itself).
    const image = init === undefined ? NO_IMAGE : valueImage(this.memory, t, toValue(t, init))
    const r = this.#allocate(() => binding.heapNamedReserve(this.#id, name, t.size, Math.max(t.align, 16), desc, image))
    this.#hintNamed(r.offset, r.entry)
    if (!r.created) {
      const found = this.#namedRef(name, r.offset, r.size, r.typeDesc)
      if (r.typeDesc !== desc) throw typeError(`The named object ${JSON.stringify(name)} exists as ${formatType(refParts(found).type)}, not ${formatType(t)}`)
      return found
    }
    // The bytes may have landed on a page the mapping lost (published all the same).
    if (GUARD[0] !== 0) checkIntact(this.memory)
    return refAt(this.memory, r.offset, t, this)
  }

  /**
   * The object called `name` with the type it was created with, or `undefined`. Waits
   * (briefly) while another process is still constructing it; `undefined` if that process
   * died first (its half-made object is freed). TypeScript cannot know that
   * type: say it, `heap.find<bigint>('hits')`.
   */
  find<T = unknown, E = unknown>(name: string): Ref<T, E> | undefined {
    checkName('name', name)
    const e = native(() => binding.heapNamedFind(this.#id, name, NAMED_WAIT_MS))
    if (!e) return undefined
    this.#hintNamed(e.offset, e.entry)
    return this.#namedRef(name, e.offset, e.size, e.typeDesc) as Ref<T, E>
  }

  /**
   * Removes `name` from the directory; the object itself is not freed (it becomes an
   * ordinary allocation). Returns whether the name existed.
   */
  unname(name: string): boolean {
    checkName('name', name)
    return native(() => binding.heapNamedRemove(this.#id, name))
  }

  /**
   * The reference to a named object of `size` bytes (as its entry records it) described
   * by `typeDesc`. Both were stored by whoever created the object: a description that
   * does not parse, names a type no reference can be made of, or a type larger than the
   * object (its reference would reach into the neighbouring blocks) is damage to the
   * segment, not a bad argument of ours.
   * @throws ShmError `ERR_SHM_CORRUPT`
   */
  #namedRef(name: string, offset: number, size: number, typeDesc: string): Ref {
    const corruptType = (why: string, cause?: unknown): ShmError => {
      const err = new ShmError(`The named object ${JSON.stringify(name)} has a corrupt type description: ${why}`, { code: 'ERR_SHM_CORRUPT' })
      if (cause !== undefined) (err as Error & { cause?: unknown }).cause = cause
      return err
    }
    let t: Type
    try {
      t = typeFromDescription(JSON.parse(typeDesc))
    } catch (e) {
      throw corruptType((e as Error).message, e)
    }
    if (t.size > size) throw corruptType(`${formatType(t)} is ${t.size} bytes, the object ${size}`)
    try {
      return refAt(this.memory, offset, t, this)
    } catch (e) {
      if (e instanceof ShmError) throw e
      throw corruptType((e as Error).message, e)
    }
  }

  /** A handle that `revive` turns into this heap in another process (attached there). */
  toJSON(): Handle {
    return handleOf(this.$shmutils, 'heap')
  }
}

/**
 * For {@link Heap.create} on a managed segment: the region must lie outside the segment's
 * header and its heap, or inside one block allocated from that heap (as
 * `mem.heap.malloc(size)` returns). Formatting over the headers would destroy the segment
 * for every process that maps it; over the heap's arena, the two heaps would hand out the
 * same bytes.
 * @throws RangeError
 */
function insideOwnBlock(memory: MappedMemory, offset: number, size: number): void {
  const heap = memory.heap
  const end = heap.offset + native(() => binding.heapInfo(heapSlotId(heap))).size
  if (size === 0 || offset >= end) return
  let usable = -1
  try {
    usable = native(() => binding.heapUsableSize(heapSlotId(heap), offset))
  } catch (e) {
    if (!(e instanceof ShmError) || (e.code !== 'EINVAL' && e.code !== 'ERR_SHM_DOUBLE_FREE')) throw e
  }
  if (usable >= size) return
  const what = usable < 0 ? `no block of mem.heap is allocated at ${offset}` : `the block of mem.heap at ${offset} has ${usable} usable bytes`
  throw rangeError(
    `Heap.create: [${offset}, ${offset + size}) lies in the managed segment's header or heap [0, ${end}) and ${what}: ` +
      'formatting there would destroy the segment for every process, or hand out bytes mem.heap owns. A managed segment has its heap already (mem.heap); ' +
      'to format another one inside it, give it a block of that heap: Heap.create(mem, { offset: mem.heap.malloc(size), size })',
  )
}

function resolveNewType(type: unknown, init: unknown): Type {
  if (isType(type)) return type
  if (typeof type !== 'string') throw typeError(`The "type" argument must be a type or a C type name; got ${describe(type)}`)
  let t: Type
  try {
    t = parseAllocationTypeName(type, undefined, 'The "type" argument')
  } catch (e) {
    throw typeError((e as Error).message)
  }
  // cffi's new('char *', bytes): an array holding the bytes.
  if (t === types.char && /\*\s*$/.test(type) && (typeof init === 'string' || init instanceof Uint8Array)) {
    const n = typeof init === 'string' ? Buffer.byteLength(init) + 1 : init.length
    return arrayOf(types.char, Math.max(n, 1))
  }
  return t
}

function toValue(t: Type, init: unknown): unknown {
  if (t.kind === 'array' && ArrayBuffer.isView(init) && !(init instanceof Uint8Array) && !(init instanceof DataView)) {
    return Array.from(init as unknown as ArrayLike<unknown>)
  }
  if (t.kind === 'array' && t.element === types.char && init instanceof Uint8Array) return init
  return init
}

// ---- wiring into the other modules ----

setHeapFactory(
  (m) => Heap.attach(m, internals(m).heapOffset),
  (m) => attached.delete(m),
)

registerReviver('Heap', (h) => Heap.attach(memoryOfHandle(h), h.offset))

setRefHeapLookup((m) => (m.managed && !m.closed ? m.heap : null))

setLockAllocator((where, size) => {
  const heap = heapOf(where)
  // Cache lines of its own: no false sharing with neighbours.
  const offset = heap.malloc(size, 64)
  heap.memory.view(offset, size).fill(0)
  return { memory: heap.memory, offset }
})
