/**
 * Process-local memory: where `CBase` objects made without a shared heap live.
 *
 * Objects are allocated from arenas: large private anonymous mappings
 * (`MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE`, so untouched pages cost no memory)
 * formatted with the same allocator as shared segments. One arena serves many objects:
 * an object costs its size rounded up to 16 bytes plus a 16-byte header, instead of a
 * whole page and a `mmap` call (a mapping per object), and pointers between objects of
 * the same arena work like pointers inside a segment. A new arena is mapped only when
 * the current ones are full; pointers cannot cross arenas (nor leave the mapping a
 * struct lives in), which `Ref` reports when such a pointer is stored.
 *
 * Each object's block is owned by a {@link LocalBlock}, which every reference derived
 * from the object (members, elements, dereferenced pointers) holds on to; the block is
 * returned to its arena when the last of them is garbage-collected, or at once by
 * `ref.free()`. A pointer member of a local object set to another local object keeps
 * that object alive too (as long as it points there); pointers written otherwise (a
 * number, a pointer reference's `value`, an array element) do not, as in C.
 * Arenas themselves stay mapped for the life of the process (or worker thread: each
 * loads the package anew and has its own arenas).
 * @module
 */
import { ShmError, typeError } from './errors.js'
import { MapFlags, Protection, roundToPageSize } from './constants.js'
import { Heap } from './heap.js'
import { MappedMemory } from './memory.js'
import type { RefHeap } from './ref.js'

/** Virtual size of an arena (reserved, not committed: see the module documentation). */
export const ARENA_SIZE = 64 * 1024 * 1024

/** Arenas, newest last. */
const arenas: Heap[] = []

interface Held {
  heap: Heap
  offset: number
}

const blocks = new FinalizationRegistry<Held>(({ heap, offset }) => {
  try {
    heap.free(offset)
  } catch {
    // The arena is process-wide and never unmapped; nothing else can have freed it.
  }
})

/**
 * The owner of one process-local block: frees it when no reference to the object is
 * left (see the module documentation). Not a shared heap: `Ref.heap` reports `null`.
 */
export class LocalBlock implements RefHeap {
  /** Marks process-local memory for `Ref.heap`. */
  readonly processLocal = true
  #heap: Heap | null
  readonly #offset: number
  #kept: Map<number, RefHeap> | null = null

  /** @internal Use {@link allocateLocal}. */
  constructor(heap: Heap, offset: number) {
    this.#heap = heap
    this.#offset = offset
    blocks.register(this, { heap, offset }, this)
  }

  /**
   * Returns the block now (the object must not be used afterwards).
   * @throws TypeError for any offset but the object's own; ShmError `ERR_SHM_DOUBLE_FREE`
   */
  free(offset: number): void {
    if (offset !== this.#offset) {
      throw typeError('Only the object itself (as returned by new()) can be freed, not a part of it')
    }
    const heap = this.#heap
    if (heap === null) throw new ShmError('this process-local object was already freed', { code: 'ERR_SHM_DOUBLE_FREE' })
    blocks.unregister(this)
    this.#heap = null
    this.#kept = null
    heap.free(offset)
  }

  /** Keeps the owner of a pointer's target alive while this block is (one per pointer slot). */
  retain(slot: number, target: RefHeap | null): void {
    if (target === null || target === this || target.processLocal !== true) {
      this.#kept?.delete(slot)
      return
    }
    ;(this.#kept ??= new Map()).set(slot, target)
  }
}

/**
 * Allocates `size` bytes aligned to `align` in an arena, zeroed.
 * @returns the arena's mapping, the block's offset in it and its owner
 */
export function allocateLocal(size: number, align: number): { memory: MappedMemory; offset: number; owner: LocalBlock } {
  for (let i = arenas.length - 1; i >= 0; i--) {
    const heap = arenas[i]!
    const offset = tryMalloc(heap, size, align)
    if (offset !== null) return claim(heap, offset, size)
  }
  // A fresh arena: big enough for this object whatever its size.
  const len = Math.max(ARENA_SIZE, roundToPageSize(size + align + 65536))
  const memory = new MappedMemory(
    null, len, Protection.READ_WRITE, MapFlags.PRIVATE | MapFlags.ANONYMOUS | MapFlags.NORESERVE,
  )
  const heap = Heap.create(memory)
  arenas.push(heap)
  return claim(heap, heap.malloc(size, align), size)
}

function tryMalloc(heap: Heap, size: number, align: number): number | null {
  try {
    return heap.malloc(size, align)
  } catch (e) {
    if ((e as { code?: unknown }).code === 'ENOMEM') return null
    throw e
  }
}

function claim(heap: Heap, offset: number, size: number): { memory: MappedMemory; offset: number; owner: LocalBlock } {
  heap.memory.view(offset, size).fill(0)
  return { memory: heap.memory, offset, owner: new LocalBlock(heap, offset) }
}
