/**
 * Where the objects the package keeps in shared memory (containers, RWLock, Barrier,
 * Event) live: `new X(where)` allocates a fresh zeroed block in a heap, `X.at(memory,
 * offset)` looks at one that exists. Both go through the constructor, so every instance
 * is set up one way; `at` hands its place to the constructor through here.
 * @module
 */
import { describe } from './args.js'
import { rangeError, typeError } from './errors.js'
import { heapOf } from './heap.js'
import { checkMemory, internals, type MappedMemory } from './memory.js'

/** A place in a mapping. */
export interface Place {
  memory: MappedMemory
  offset: number
}

let pending: Place | null = null

/** @internal The place an `at()` is handing over (once), or `null`: allocate. */
export function takePlace(): Place | null {
  const p = pending
  pending = null
  return p
}

/** @internal A zeroed, 64-aligned block of `size` bytes in `where`'s heap. */
export function allocatePlace(where: unknown, size: number): Place {
  const heap = heapOf(where)
  const offset = heap.malloc(size, 64)
  const win = internals(heap.memory).window(offset, size)
  win.u8.fill(0, offset - win.start, offset - win.start + size)
  return { memory: heap.memory, offset }
}

/** @internal Runs `make` (a constructor call) with `memory`/`offset` handed over. */
export function atPlace<T>(memory: MappedMemory, offset: number, make: () => T): T {
  pending = { memory, offset }
  try {
    return make()
  } finally {
    pending = null
  }
}

/** @internal Checks that a `size`-byte record fits 4-aligned at `offset` of `memory`. */
export function checkPlace(memory: unknown, offset: unknown, size: number): asserts memory is MappedMemory {
  checkMemory(memory)
  if (typeof offset !== 'number') throw typeError(`The "offset" argument must be of type number; got ${describe(offset)}`)
  if (!Number.isSafeInteger(offset) || offset < 0 || offset % 4 !== 0) throw rangeError(`The "offset" argument must be a non-negative multiple of 4; got ${offset}`)
  if (offset + size > memory.size) throw rangeError(`The "offset" argument ${offset} leaves no room for a ${size}-byte record in ${memory.size} bytes`)
}

/**
 * @internal Tags a record with `kind` at int32 index `at` (a zeroed record gets it), or
 * throws if it carries another kind.
 */
export function claimKind(a: Int32Array, at: number, kind: number, what: string, offset: number): void {
  const k = Atomics.compareExchange(a, at, 0, kind)
  if (k !== 0 && k !== kind) throw typeError(`The record at offset ${offset} is not a record of kind ${what}: its kind tag is ${k}, not ${kind}`)
}
