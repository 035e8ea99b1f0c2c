/**
 * {@link HeapCache}: this thread's cache of the small blocks it freed in one heap, so that
 * a `free` and the next `malloc` of the same size cost no native call and no heap lock.
 * A cached block stays allocated in the shared heap, marked by a bit in the high half of
 * its size word; the protocol, what the allocator does about such blocks
 * and how the caches of dead threads are reclaimed are at the top of
 * `src-rs/heap/cache.rs` (and in docs/FORMAT.md §4.4).
 * @module
 */
import timers from 'node:timers'
import { START_HI, START_LO } from './identity.js'

// The timer functions as they were when the package loaded: a test's fake timers, which
// replace the global ones and node:timers' alike, are installed later, and the idle timer
// must not be theirs (a fake clock never fires it; one uninstalled between arming and
// clearing it gets a real timer handed to its clearTimeout).
const { setTimeout, clearTimeout } = timers

/** Bit 63 of a size word, as its high half (an int32) holds it. */
const CACHED = 0x8000_0000 | 0
/** Low flags a block put in the cache must not have: FREE, INTERNAL, NAMED. */
const NOT_CACHEABLE = 1 | 4 | 8
/** The holder bits of a lock word (lib/lock.ts `TOKEN_MASK`): the heap's, here. */
const HOLDER_MASK = 0x3fff_ffff
/** The largest block cached (header included). */
const MAX_BLOCK = 1024
/** The largest `malloc` the cache can serve. */
const MAX_REQUEST = MAX_BLOCK - 16
/** Blocks kept per size. */
const PER_SIZE = 64
/** The cache holds at most this many bytes, and at most 1/16 of the heap. */
const MAX_BYTES = 256 << 10
/**
 * Milliseconds: a cache not used (no block put or taken) for this long, 1 to 2 times
 * over, goes back to the heap by itself, so that a thread that stopped allocating (an
 * idle worker) does not hold its blocks from the others for good. 5 s;
 * `SHMUTILS_CACHE_IDLE_MS` when the heap is attached sets it (tests).
 */
function idleMs(): number {
  const n = Number(process.env.SHMUTILS_CACHE_IDLE_MS)
  return Number.isSafeInteger(n) && n > 0 && n < 2 ** 31 ? n : 5000
}

/** The numbers of the heap the cache needs (from `heapInfo`, validated natively). */
export interface HeapGeometry {
  /** Where the heap starts in the mapping. */
  readonly offset: number
  /** Length of the heap region. */
  readonly size: number
  /** Heap-relative offset of the first block. */
  readonly headerSize: number
  /** Heap-relative end of the last block. */
  readonly arenaEnd: number
  /** The salt of block check words, low half. */
  readonly saltLo: number
  /** ... and high half. */
  readonly saltHi: number
}

/**
 * The check word of the block at heap-relative `b` (< 2^32), as `src-rs/heap/mod.rs`
 * `check_word` computes it, compared with the two int32 halves at `a[i]`, `a[i + 1]`:
 * `z = (b ^ salt) * 0x9E3779B97F4A7C15` (wrapping u64), `(z ^ (z >> 29)) | 1`, in 32-bit
 * halves.
 */
function checkWordAt(a: Int32Array, i: number, b: number, saltLo: number, saltHi: number): boolean {
  const xlo = (b ^ saltLo) >>> 0
  const xhi = saltHi >>> 0
  // xlo * 0x7F4A7C15 as a full 64-bit product, from 16-bit pieces (exact in doubles).
  const a0 = xlo & 0xffff
  const a1 = xlo >>> 16
  const p00 = a0 * 0x7c15
  const mid = a1 * 0x7c15 + a0 * 0x7f4a
  const low = p00 + (mid % 65536) * 65536
  const zlo = low >>> 0
  const carry = low >= 4294967296 ? 1 : 0
  const zhi = (a1 * 0x7f4a + Math.floor(mid / 65536) + carry + Math.imul(xhi, 0x7f4a7c15) + Math.imul(xlo, 0x9e3779b9 | 0)) >>> 0
  const ylo = (zlo ^ ((zlo >>> 29) | (zhi << 3))) | 1
  const yhi = zhi ^ (zhi >>> 29)
  return a[i] === ylo && a[i + 1] === yhi
}

/**
 * The blocks this thread freed in one heap and may hand out again, by size. Each entry
 * is the block's offset in the mapping and its check word (two int32), which must still
 * be there when it is taken back.
 */
export class HeapCache {
  /** The whole mapping, for `Atomics` on block headers. */
  readonly #a: Int32Array
  readonly #g: HeapGeometry
  /** The lowest and highest offsets of a block's payload. */
  readonly #first: number
  readonly #last: number
  /** Entries by block size / 16: flat triples [offset, check low, check high]. */
  readonly #lists: number[][] = Array.from({ length: MAX_BLOCK / 16 + 1 }, () => [])
  readonly #cap: number
  /** This thread's liveness token for the segment: who cached a block. */
  readonly #token: number
  #bytes = 0
  /**
   * The block whose check word was last found valid (by {@link put}, or put before and
   * handed out by {@link take}) and that word's halves: a `free` right after the `malloc`
   * that returned the block finds the same word there and skips recomputing it (the check
   * word is a function of the block's offset and the heap's salt alone).
   */
  #knownOff = -1
  #knownLo = 0
  #knownHi = 0

  /** Blocks put and taken so far, and that count when the idle timer last looked. */
  #uses = 0
  #usesSeen = 0
  /** Armed while blocks are cached: see {@link idleMs}. */
  #idle: ReturnType<typeof setTimeout> | null = null
  readonly #idleMs = idleMs()
  /**
   * Hands the blocks back once the cache sat unused; `false` if it could not now (the
   * timer then looks again later).
   */
  readonly #onIdle: () => boolean

  /**
   * @param a - an Int32Array over the whole mapping
   * @param g - the heap's geometry
   * @param token - this thread's liveness token for the segment, held by the heap's
   *   native slot for as long as the cache may hold blocks (`heapToken`)
   * @param onIdle - hands the cached blocks back, when the cache was not used for
   *   {@link idleMs}; `false` if it could not now
   */
  constructor(a: Int32Array, g: HeapGeometry, token: number, onIdle: () => boolean) {
    this.#a = a
    this.#g = g
    this.#token = token
    this.#onIdle = onIdle
    this.#first = g.offset + g.headerSize + 16
    this.#last = g.offset + g.arenaEnd - 32
    this.#cap = Math.min(MAX_BYTES, Math.floor(g.size / 16))
  }

  /** Whether any block is cached. */
  get empty(): boolean {
    return this.#bytes === 0
  }

  /**
   * Puts the block at `offset` (the user just freed it) in the cache if it is a small,
   * valid, ordinary allocation and there is room; `false` if the caller must free it the
   * ordinary way (which also reports every kind of bad offset).
   */
  put(offset: number): boolean {
    const a = this.#a
    const i = (offset - 16) >>> 2
    // The block the last take() handed out, with the check word validated when it was
    // cached still in place, needs no more than the checks of its header below.
    if (offset !== this.#knownOff || a[i + 2] !== this.#knownLo || a[i + 3] !== this.#knownHi) {
      if (!this.#isBlock(offset)) return false
    }
    const lo = a[i]!
    if (a[i + 1] !== 0 || (lo & NOT_CACHEABLE) !== 0) return false
    const size = (lo >>> 8) << 4
    if (size > MAX_BLOCK || size < 48) return false
    const list = this.#lists[size >>> 4]!
    if (list.length >= 3 * PER_SIZE || this.#bytes + size > this.#cap) return false
    a[i + 4] = this.#token
    a[i + 5] = START_LO
    a[i + 6] = START_HI
    a[i + 7] = 0
    if (Atomics.compareExchange(a, i + 1, 0, CACHED) !== 0) return false
    list.push(offset, a[i + 2]!, a[i + 3]!)
    this.#bytes += size
    this.#uses++
    if (this.#idle === null) this.#watch()
    return true
  }

  /** Arms the idle timer (out of line: see {@link put}). */
  #watch(): void {
    this.#usesSeen = this.#uses
    // Unref'd: it never keeps a process alive.
    const timer: ReturnType<typeof setTimeout> = setTimeout(() => this.#idleCheck(timer), this.#idleMs).unref()
    this.#idle = timer
  }

  #idleCheck(timer: ReturnType<typeof setTimeout>): void {
    // A timer a flush cleared (or replaced) meanwhile has nothing to say.
    if (this.#idle !== timer) return
    if (this.#uses !== this.#usesSeen || !this.#onIdle()) {
      // Used since, or the flush must wait (the heap lock is busy): look again later.
      this.#usesSeen = this.#uses
      timer.refresh()
      return
    }
    this.#idle = null
  }

  /**
   * Whether `offset` is a block's payload in the heap, carrying its check word (out of
   * line, so that {@link put} stays short: see `Heap.malloc`).
   */
  #isBlock(offset: number): boolean {
    if (!(offset >= this.#first && offset <= this.#last) || offset % 16 !== 0) return false
    const g = this.#g
    return checkWordAt(this.#a, ((offset - 16) >>> 2) + 2, offset - 16 - g.offset, g.saltLo, g.saltHi)
  }

  /**
   * A cached block for `malloc(size)` (alignment 16), taken out of the cache and
   * allocated again; -1 if there is none.
   */
  take(size: number): number {
    if (size !== (size | 0) || size < 0 || size > MAX_REQUEST) return -1
    const need = size < 17 ? 48 : (size + 31) & ~15
    const list = this.#lists[need >>> 4]!
    const a = this.#a
    while (list.length !== 0) {
      const hi = list.pop()!
      const lo = list.pop()!
      const offset = list.pop()!
      this.#bytes -= need
      const i = (offset - 16) >>> 2
      // Still the block that was put (its check word), and still cached: otherwise the
      // heap reclaimed it; forget it. A plain load and a plain store, no compare-and-swap
      // (one Atomics call costs 8 ns, a fifth of a malloc+free): besides the owner, only
      // a reclaimer writes the high half of a cached block's size word, and it touches
      // only blocks whose owner's token nobody holds (the kernel's answer, the one that
      // lets a lock be taken from a dead holder), while this thread holds its token from
      // before the put until after the flush that empties the cache. So nothing can come
      // between the load and the store. (The put keeps its compare-and-swap: it orders
      // the owner fields before the bit for a reclaimer reading them, and refuses a block
      // that two threads free at once.)
      if (a[i + 2] === lo && a[i + 3] === hi && a[i + 1] === CACHED) {
        a[i + 1] = 0
        this.#uses++
        if (((a[i]! >>> 8) << 4) === need) {
          this.#knownOff = offset
          this.#knownLo = lo
          this.#knownHi = hi
          return offset
        }
        // Reclaimed, carved anew at the same place and cached again by another thread:
        // ours now, but not of this size.
        this.strays.push(offset)
      }
    }
    return -1
  }

  /** Blocks {@link take} got back in another size: the caller frees them. */
  readonly strays: number[] = []

  /**
   * Takes one cached block back (as {@link take} does; any size), for the caller to free;
   * -1 once the cache is empty (which stops the idle timer).
   */
  takeAny(): number {
    for (let c = 3; c < this.#lists.length; c++) {
      const request = c * 16 - 31 // needs a block of c * 16 bytes
      while (this.#lists[c]!.length !== 0) {
        const off = this.take(request)
        if (off >= 0) return off
      }
    }
    this.#knownOff = -1
    this.#stopWatching()
    return -1
  }

  /**
   * Whether the heap's lock word names a holder: a flush now would wait for it (and for
   * as long as the heap's lock timeout, if the holder is stopped).
   */
  heapLockHeld(): boolean {
    return (this.#a[this.#g.offset >>> 2]! & HOLDER_MASK) !== 0
  }

  #stopWatching(): void {
    if (this.#idle !== null) {
      clearTimeout(this.#idle)
      this.#idle = null
    }
  }

  /** Forgets every entry without touching memory (the heap was formatted again). */
  clear(): void {
    this.#stopWatching()
    for (const list of this.#lists) list.length = 0
    this.#bytes = 0
    this.#knownOff = -1
  }
}
