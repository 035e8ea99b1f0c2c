/**
 * {@link SharedMap}: a hash map living entirely in a segment's heap, used by many
 * processes at once (a cache for cluster workers).
 *
 * ## Design
 *
 * The map is split into `stripes` (a power of two; 16 by default, 1 for an LRU-bounded
 * map). A key's 32-bit hash picks its stripe (low bits) and its bucket inside the stripe
 * (the other bits). Each stripe has its own robust futex lock, chained hash table, entry
 * count, byte count and growth, so writes to keys of different stripes run in parallel
 * and a table grows one stripe at a time (a stripe's rehash holds only that stripe).
 * Every write holds its stripe's lock.
 *
 * Reads (`get`, `has`) take no lock (except in an LRU-bounded map, whose reads move the
 * entry in its LRU list): each stripe has a write sequence, odd while a holder changes
 * anything a reader walks, and a reader reads it, finds and decodes its entry, and reads
 * it again; if it moved, it reads again (after a few tries, or while it stays odd, it
 * takes the lock like a writer). Readers write nothing, so any number of them, in any
 * number of processes, never wait for each other, and a writer never waits for them.
 *
 * An entry is one heap block: header, key bytes, value bytes (encoded by the map's
 * codec, starting 4-aligned). Entries are never changed in place: `set` writes a new
 * entry and swaps it into the chain with one 32-bit store. Links are u32 block slots
 * (offset / 16). Replaced entries' blocks are kept in a few spare slots per stripe and
 * written into by later sets, so a set that replaces a value of similar size makes no
 * heap call.
 *
 * ## Stripe states and what a killed process leaves
 *
 * | operation      | steps (under the stripe lock; `▶` = the one store that commits) |
 * |----------------|-------------------------------------------------------------------|
 * | any write      | first `seq` odd (once per holding); last, before unlocking, `seq` even |
 * | insert         | `j_new ← spare[k]` (best fit; then `spare[k] = 0`) or `heapAllocInto(j_new)`; write entry (stamped); `new.next = head`; ▶ `bucket = new`; count, bytes; `j_new = 0` |
 * | replace        | the same for the new entry; `new.next = old.next`; `j_old = old`; ▶ `link = new`; `spare[k] = old; j_old = 0` for a free spare slot `k`, else `heapFreeFrom(j_old)`; bytes; `j_new = 0` |
 * | delete / evict | unlink from LRU; ▶ `heapFreeFrom(link, next)` (unlinks and frees under the heap lock); count, bytes |
 * | rehash         | `heapAllocInto(j_table)`; relink every entry through its *other* next field into the new table; `j_oldtable = old`; ▶ `gen += 1`; `heapFreeFrom(j_oldtable)`; `j_table = 0` |
 * | clear          | delete every entry, one commit each; free the spares               |
 *
 * The chains of the current generation (`gen`) are changed only by the committing store,
 * so at every instruction each key's chain holds either its old entry or its new one,
 * whole. A process killed while holding a stripe lock is found by the next acquirer
 * (`OWNER_DIED`), which repairs the stripe before using it ({@link SharedMap}'s
 * `#repair`): a journal slot (`j_new`, `j_old`, `j_table`, `j_oldtable`) naming a block
 * that is not reachable from the current table (nor a spare) is freed, one that is, is
 * kept; the count and bytes are recounted from the chains; the LRU list is rebuilt from
 * the entries' access ticks. The journal slots are written by the heap inside its own
 * critical section (`src-rs/js/blocks.rs`), so they only ever name blocks the stripe
 * owns. A holder killed mid-write leaves `seq` odd: readers of that stripe take the
 * lock, and so repair it, and the repair's holder makes `seq` even when it lets go.
 * docs/containers.md has the full argument.
 *
 * The layouts (header, stripe record, entry) are in docs/FORMAT.md and below.
 * @module
 */
import { randomFillSync } from 'node:crypto'
import { checkIndex, checkOptions, describe, describeNot, isUint8Array } from './args.js'
import { checkCodec, type Codec, type Coder, copyOut, encoded, encodeValue, fromPlan, type Plan, planOf, Scratch, UNDECODED } from './codec.js'
import {
  type ContainerHome, type ContainerType, corrupt, intact, ownLock, recoverLock, SharedContainer, takeLock, UNIT, type Views, viewsOf, writeHeader,
} from './container.js'
import { fromNative, rangeError, ShmError, typeError } from './errors.js'
import { registerReviver } from './handles.js'
import { afterAllocFailure, heapOf } from './heap.js'
import { refParts } from './ref.js'
import { arrayOf, describeType, types } from './types/index.js'
import { HELD_MASK, Kind, Lock, tookOverDead } from './lock.js'
import { MAP_LAYOUT } from './layouts.js'
import { checkIntact, GUARD, internals, type MappedMemory, memoryOfHandle } from './memory.js'
import { atPlace } from './place.js'
import { binding } from './native.js'
import { tokenIn } from './identity.js'
import { wakeWord } from './word.js'
import { copyWords, decodeUtf8, encodeUtf8Into, LONE_SURROGATE, notWellFormed, wordsEqual } from './utf8.js'

const { magic: MAGIC, version: VERSION } = MAP_LAYOUT

/** Map header (offsets from the map's start; 0..24 are the common container header). */
const M = Object.freeze({
  /** u32: 0 while being constructed, 1 once ready. */
  STATE: 24,
  /** u32 number of stripes (a power of two). */
  STRIPES: 28,
  /** u32 block slot of the stripe array. */
  STRIPE_ARRAY: 32,
  /** u32 flags: {@link F}. */
  FLAGS: 36,
  /** f64 LRU bound on entries (0 = none). */
  MAX_ENTRIES: 40,
  /** f64 LRU bound on bytes (0 = none). */
  MAX_BYTES: 48,
  /** f64 default time to live in ms (0 = none). */
  TTL: 56,
  /** The lock record `SharedMap.named` constructs under. */
  INIT_LOCK: 64,
  /** u32 × 2: the secret of the key hash ({@link keyHash}), drawn at random when made. */
  SECRET: 96,
  SIZE: 128,
})

/** The type `SharedMap.named` reserves a map's header under in the heap's directory. */
const ARENA = arrayOf(types.u8, M.SIZE)
/** ... as the directory describes it. */
const ARENA_DESC = JSON.stringify(describeType(ARENA))

/** Header flags. */
const F = Object.freeze({
  /** An LRU bound is set (the map has one stripe and keeps the LRU list). */
  BOUNDED: 1,
  /** Some entry was stored with a time to live (sets sweep expired entries). */
  HAS_TTL: 2,
})

/** Stripe record (offsets from the stripe's start). */
const S = Object.freeze({
  LOCK: 0,
  /** u32 generation: table `gen & 1` is current; entries chain through next field `gen & 1`. */
  GEN: 32,
  /** u32 block slots of the two tables. */
  TABLE0: 36,
  TABLE1: 40,
  /** u32 log2 of their bucket counts. */
  LOG2_0: 44,
  LOG2_1: 48,
  /** u32 entries. */
  COUNT: 52,
  /** f64 bytes of entries (headers included). */
  BYTES: 56,
  /** u32 journal slots (see the module docs). */
  J_NEW: 64,
  J_OLD: 68,
  J_TABLE: 72,
  J_OLDTABLE: 76,
  /** u32 LRU list ends (block slots): most and least recently used. */
  LRU_HEAD: 80,
  LRU_TAIL: 84,
  /**
   * Clock: f64 of accesses (LRU-bounded maps); in the others, of writes: a u32 pair
   * (low word, then high word) that gives each entry written its stamp.
   */
  TICK: 88,
  /** u32 next bucket to sweep for expired entries. */
  SWEEP: 96,
  /** u32 block slot of the first spare entry block (replaced entries, kept for later sets); the others are {@link SPARES}. */
  SPARE: 100,
  /**
   * u32 write sequence: the holder makes it odd before it changes anything a reader
   * walks (tables, chains, entries) and even again before it lets go of the lock.
   * `get`/`has` read without the lock and retry when it moved (see the module docs).
   */
  SEQ: 104,
  SIZE: 128,
})

/**
 * The stripe's spare-block slots: entries a `set` replaced, kept (allocated, the
 * stripe's) for later sets to write into without a heap call. Slot 0 keeps a block of up
 * to {@link SPARE_FIRST_ROOM} bytes (up to a 1/1024 of the heap); the others blocks of at
 * most {@link SPARE_ROOM} bytes. (Slot 0 once kept any size: 16 stripes of replaced 6 MiB
 * values held half a heap, for good.)
 */
const SPARES = Object.freeze([S.SPARE, 108, 112, 116, 120, 124])
/** Largest block (bytes after its header) a spare slot other than the first keeps. */
const SPARE_ROOM = 2048
/** Largest block the first spare slot keeps, in a heap of at least 64 MiB. */
const SPARE_FIRST_ROOM = 64 << 10

/** Entry (offsets from the entry's start). */
const E = Object.freeze({
  /** u32 next-entry slots for generations 0 and 1. */
  NEXT0: 0,
  NEXT1: 4,
  /** u32 hash of the key. */
  HASH: 8,
  /** u32 key length in bytes. */
  KEY_LEN: 12,
  /** u32 value length in bytes. */
  VALUE_LEN: 16,
  /** u32 flags: bit 0 = the key is bytes (else a UTF-8 string). */
  FLAGS: 20,
  /** f64 expiry, ms since the epoch (0 = never). */
  EXPIRES: 24,
  /** u32 LRU neighbours (block slots). */
  PREV: 32,
  NEXT: 36,
  /**
   * f64 last access tick (LRU-bounded maps); in the others the write stamp, a u32 pair
   * (low, high) from the stripe's clock: never the same twice in a stripe, so (stripe,
   * entry offset, stamp) names one value for good (what a reader's cache is keyed by).
   */
  TICK: 40,
  /** Key bytes, padding to a multiple of 4 ({@link valueAt}), then value bytes. */
  DATA: 48,
})

const KEY_BYTES = 1

/** Where the value of entry `e` with a key of `kn` bytes starts: after the key, padded to 4. */
function valueAt(e: number, kn: number): number {
  return e + E.DATA + ((kn + 3) & ~3)
}
/** Longest key in bytes. */
export const MAX_KEY_LENGTH = 1 << 20
const DEFAULT_STRIPES = 16
const MAX_STRIPES = 1024
const MIN_LOG2 = 3
/** At most 2^28 buckets a stripe: a table of 4 << 28 bytes (1 GiB) is the largest an int32 size can say. */
const MAX_LOG2 = 28
/** Least recently used entries an eviction looks through for an expired one. */
const EXPIRED_LOOKAHEAD = 32
/** Buckets looked at per lock when iterating. */
const ITER_BUCKETS = 64

/** Options of the {@link SharedMap} constructor. */
export interface SharedMapOptions {
  /** How values are stored: `'v8'` (default), `'json'`, `'string'` or `'bytes'`. */
  codec?: Codec
  /** Entries expected: the tables start this large (they grow on their own anyway). */
  capacity?: number
  /**
   * Locks the map is split into (a power of two, 1..1024): operations on keys of
   * different stripes run in parallel. Default 16; an LRU-bounded map has 1.
   */
  stripes?: number
  /** Evict the least recently used entries once there are more than this many. */
  maxEntries?: number
  /** Evict the least recently used entries once they take more bytes than this (entry headers included). */
  maxBytes?: number
  /**
   * Time to live of every entry in ms (a `set` may give its own); an expired entry reads
   * as absent. `Infinity`: none. Measured on the wall clock (`Date.now()`) of the process
   * that sets the entry and of each that reads it (docs/cache.md).
   */
  ttl?: number
}

/** Options of {@link SharedMap.set}. */
export interface SetOptions {
  /** Time to live of this entry in ms (default: the map's `ttl`, else forever); `Infinity`: forever, whatever the map's. */
  ttl?: number
}

/** The key buffer of this thread. */
const keyScratch = new Scratch()

/** Where the map is in the middle of `update(fn)` on this thread (re-entry check). */
const updating = new Set<string>()

/**
 * Whether plain loads and stores may be seen out of program order by other processors
 * (arm64 and others; not x86, whose stores and loads each stay in order). There, V8's
 * `Atomics.load`/`Atomics.store` are `ldar`/`stlr`: acquire and release, and a release
 * followed by an acquire stays in order. The write sequence's protocol uses that for
 * the two barriers a seqlock needs: a store to a word only this thread uses, then the
 * sequence's `Atomics.load`, keeps an optimistic reader's loads before its second read
 * of the sequence; a writer's `Atomics.load` of the sequence right after its odd store
 * keeps the changes that follow after it.
 */
const WEAK_ORDERING = process.arch !== 'x64' && process.arch !== 'ia32'
const fenceWord = new Int32Array(new SharedArrayBuffer(4))

/** Slots of a map object's cache of decoded values: 2^CACHE_BITS. */
const CACHE_BITS = 12
const CACHE_SLOTS = 1 << CACHE_BITS
/** Values longer than this (encoded) are not cached. */
const CACHE_VALUE_BYTES = 1024

/** Optimistic attempts of a `get`/`has` whose stripe kept changing under it, before it takes the lock. */
const OPTIMISTIC_TRIES = 4
/** Polls of an odd write sequence (a writer at work) before a reader takes the lock instead. */
const ODD_POLLS = 64

/**
 * A key/value map in shared memory, used by every process (and worker thread) that maps
 * the segment: a cross-process cache. Keys are strings (stored as UTF-8) or
 * `Uint8Array`s; values go through the map's codec (`'v8'` structured clone by default).
 * Each operation is atomic across processes, and a process killed in the middle of one
 * leaves every entry either as it was or as it was being set, never torn.
 *
 * ```ts
 * const cache = SharedMap.named<string, User>(mem, 'users', { maxEntries: 10_000, ttl: 60_000 })
 * cache.set('u:1', { name: 'Ann' })
 * cache.update('hits', (n = 0) => n + 1)   // atomic read-modify-write
 * ```
 */
export class SharedMap<K extends string | Uint8Array = string, V = unknown> extends SharedContainer implements Iterable<[K, V]> {
  #stripes: number
  #stripeBits: number
  #stripeArray: number
  #locks: Lock[]
  #bounded: boolean
  #maxEntries: number
  #maxBytes: number
  #ttl: number
  #maxSteps: number
  #key: string
  /** The key hash's secret (the header's, read once: it never changes). */
  #k0: number
  #k1: number

  /**
   * Creates a map in `where`'s heap.
   * @throws TypeError/RangeError for bad options; ShmError `ENOMEM`
   */
  constructor(where: ContainerHome, options?: SharedMapOptions) {
    super(TYPE, () => {
      const o = checkMapOptions(options)
      const heap = heapOf(where)
      const offset = heap.malloc(M.SIZE, 64)
      try {
        heap.memory.bytes.fill(0, offset, offset + M.SIZE)
        construct(viewsOf(heap.memory, heap), offset, o)
      } catch (e) {
        heap.free(offset)
        throw e
      }
      return { memory: heap.memory, offset }
    })
    const { memory, offset, v } = this
    const w = offset >>> 2
    if (v.i32[w + (M.STATE >>> 2)] !== 1) throw typeError(`The SharedMap at offset ${offset} is not constructed`)
    const stripes = v.i32[w + (M.STRIPES >>> 2)]
    if (!(stripes >= 1 && stripes <= MAX_STRIPES && (stripes & (stripes - 1)) === 0)) throw corrupt(`the SharedMap at ${offset} has ${stripes} stripes`)
    this.#stripes = stripes
    this.#stripeBits = 31 - Math.clz32(stripes)
    const array = (v.i32[w + (M.STRIPE_ARRAY >>> 2)] >>> 0) * UNIT
    if (array < v.heap.offset || array + stripes * S.SIZE > v.size) throw corrupt(`the SharedMap at ${offset} has its stripes outside the heap`)
    this.#stripeArray = array
    this.#locks = []
    for (let i = 0; i < stripes; i++) this.#locks.push(ownLock(memory, array + i * S.SIZE + S.LOCK, `the SharedMap at ${offset}`))
    const flags = v.i32[w + (M.FLAGS >>> 2)]
    this.#bounded = (flags & F.BOUNDED) !== 0
    this.#maxEntries = v.dv.getFloat64(offset + M.MAX_ENTRIES, true)
    this.#maxBytes = v.dv.getFloat64(offset + M.MAX_BYTES, true)
    this.#ttl = v.dv.getFloat64(offset + M.TTL, true)
    this.#k0 = v.i32[w + (M.SECRET >>> 2)]!
    this.#k1 = v.i32[w + (M.SECRET >>> 2) + 1]!
    // Bounds as checkMapOptions wrote them (a ttl may be fractional): anything else is damage.
    for (const [field, n, whole] of [['maxEntries', this.#maxEntries, true], ['maxBytes', this.#maxBytes, true], ['ttl', this.#ttl, false]] as const) {
      if (!(n >= 0 && (whole ? Number.isSafeInteger(n) : Number.isFinite(n)))) throw corrupt(`the SharedMap at ${offset} has ${field} ${n}`)
    }
    if (this.#bounded && stripes !== 1) throw corrupt(`the LRU-bounded SharedMap at ${offset} has ${stripes} stripes`)
    // A chain longer than the mapping holds entries has a cycle.
    this.#maxSteps = Math.ceil(v.size / (E.DATA + UNIT)) + 1
    this.#key = `${internals(memory).objectKey}@${offset}`
  }

  /**
   * The map called `name` in `where`'s heap, created with `options` if there is none:
   * atomically across processes (two racing get one map). Options other than `codec` are
   * ignored for a map that already exists.
   * @throws TypeError if `name` names something else, or a map with another codec
   */
  static named<K extends string | Uint8Array = string, V = unknown>(where: ContainerHome, name: string, options?: SharedMapOptions): SharedMap<K, V> {
    const o = checkMapOptions(options)
    const heap = heapOf(where)
    // Something else under the name: say so in this class's terms (named() would call it
    // a type mismatch with the map's placeholder type).
    const found = heap.find(name)
    if (found !== undefined && JSON.stringify(describeType(refParts(found).type)) !== ARENA_DESC) throw typeError(`The named object ${JSON.stringify(name)} is not a SharedMap`)
    const ref = heap.named(name, ARENA)
    const { memory, offset } = ref
    const v = viewsOf(memory, heap)
    const w = offset >>> 2
    const lock = ownLock(memory, offset + M.INIT_LOCK, 'a SharedMap')
    takeLock(lock, 'a SharedMap being constructed')
    // A constructor that died half-way left state 0: construct anew (what the dead one
    // allocated is lost, never shared).
    if (tookOverDead(lock)) recoverLock(lock, () => {})
    try {
      if (v.i32[w + (M.STATE >>> 2)] !== 1) {
        if (v.i32[w] !== 0 && v.i32[w] !== MAGIC) throw typeError(`The named object ${JSON.stringify(name)} is not a SharedMap`)
        construct(v, offset, o)
      }
    } finally {
      lock.release()
    }
    const map = SharedMap.at<K, V>(memory, offset)
    if (options?.codec !== undefined && map.codec !== o.coder.name) {
      throw typeError(`The SharedMap ${JSON.stringify(name)} stores values with the '${map.codec}' codec, not '${o.coder.name}'`)
    }
    return map
  }

  /**
   * The map whose header is at `offset` of `memory` (as `toJSON()` records it).
   * @throws TypeError if there is no map there
   */
  static at<K extends string | Uint8Array = string, V = unknown>(memory: MappedMemory, offset: number): SharedMap<K, V> {
    return atPlace(memory, offset, () => new SharedMap<K, V>(memory))
  }

  /**
   * Entries stored (across processes; expired entries count until they are purged). Never
   * more than `maxEntries`: a count a writer has not finished (a `set` that went over the
   * bound and is evicting) is not read.
   */
  get size(): number {
    this.live()
    let n = 0
    for (let i = 0; i < this.#stripes; i++) n += this.#countOf(i)
    intact(this.memory)
    return n
  }

  /**
   * Stripe `i`'s entry count between two reads of an even write sequence; under the
   * stripe's lock if a writer keeps it odd (at work, or dead mid-change: the lock
   * repairs). Inside `update`'s function, whose thread holds the lock, as it reads.
   */
  #countOf(i: number): number {
    const i32 = this.v.i32
    const s = this.#stripeArray + i * S.SIZE
    const at = (s + S.SEQ) >>> 2
    const count = (s + S.COUNT) >>> 2
    for (let polls = 0; polls < ODD_POLLS; polls++) {
      const q = Atomics.load(i32, at)
      if (q & 1) continue
      const n = Atomics.load(i32, count) >>> 0
      if (Atomics.load(i32, at) === q) return n
    }
    try {
      this.#lockStripe(i)
    } catch (e) {
      if (e instanceof ShmError && e.code === 'ERR_SHM_DEADLOCK') return Atomics.load(i32, count) >>> 0
      throw e
    }
    try {
      return i32[count] >>> 0
    } finally {
      this.#unlock(s)
    }
  }

  /** The value stored under `key`, or `undefined`. */
  get(key: K): V | undefined {
    if (typeof key === 'string') {
      const m = this.#memo.get(key)
      if (m !== undefined) {
        this.#check()
        const i32 = this.v.i32
        // The stripe as it was when the memo was made (sequence, then clock): the entry,
        // and so its value, is the one the plan rebuilds (see "Reads of unchanged stripes").
        if (Atomics.load(i32, m.seq) === m.q && i32[m.seq + CLOCK_FROM_SEQ] === m.lo && i32[m.seq + CLOCK_FROM_SEQ + 1] === m.hi && (m.expires === 0 || m.expires > Date.now())) {
          intact(this.memory)
          return fromPlan(m.plan) as V
        }
      }
    }
    const r = this.#lookup(key, true)
    return r === ABSENT ? undefined : (r as V)
  }

  /** Whether `key` has a (live) entry. */
  has(key: K): boolean {
    return this.#lookup(key, false) === FOUND
  }

  /**
   * Stores `value` under `key`, replacing what was there.
   * @throws TypeError for a value the codec cannot store or a bad key; RangeError for a
   *   key over 1 MiB or an entry larger than `maxBytes`; ShmError `ENOMEM`
   */
  set(key: K, value: V, options?: SetOptions): this {
    this.#check()
    const expires = this.#expiry(options)
    // The value first: getters it runs may use the key scratch buffer.
    const vn = encodeValue(this.coder, value, 'The "value" argument')
    const vs = encoded
    const s = this.#enterKey(key)
    try {
      this.#store(s, keyScratch, this.#kn, this.#kind, this.#hash, vs, vn, expires, this.#found)
    } finally {
      this.#leave(s)
    }
    return this
  }

  /** Removes `key`; `true` if it had an entry. */
  delete(key: K): boolean {
    const s = this.#enterKey(key)
    try {
      const e = this.#found
      if (e === 0) return false
      const live = !this.#expired(e)
      this.#remove(s, e)
      return live
    } finally {
      this.#leave(s)
    }
  }

  /**
   * Atomic read-modify-write across processes: calls `fn` with the current value (or
   * `undefined`) while holding the key's stripe, stores what it returns and returns it.
   * `fn` runs synchronously; if it throws, nothing is stored and the map stays usable.
   * Calling this map's methods inside `fn` throws `ERR_SHM_DEADLOCK`.
   */
  update(key: K, fn: (old: V | undefined) => V): V {
    this.#check()
    if (typeof fn !== 'function') throw typeError(`The "fn" argument must be a function; got ${describe(fn)}`)
    const kn = encodeKey(key, this.#k0, this.#k1)
    const kind = keyKind(key)
    const h = encodedHash
    // A copy: fn may use other maps, and so the scratch buffer.
    const ks = new Scratch()
    ks.ensure(0, kn)
    ks.bytes.set(keyScratch.bytes.subarray(0, kn))
    const fresh = this.#expiry(undefined)
    const me = this.#me || (this.#me = tokenIn(this.memory))
    const s = this.#enter(h)
    try {
      const e = this.#find(s, ks, kn, kind, h)
      const live = e !== 0 && !this.#expired(e)
      const old = live ? (this.#decode(e) as V) : undefined
      // An entry keeps its expiry through updates (as Redis INCR keeps a TTL).
      const expires = live ? this.v.dv.getFloat64(e + E.EXPIRES, true) : fresh
      const prev = this.#prev
      updating.add(this.#key)
      let value: V
      try {
        value = fn(old)
      } finally {
        updating.delete(this.#key)
      }
      // An async fn's promise would be stored as what the codec makes of it ('json': `{}`).
      if (isThenable(value)) throw typeError('The "fn" argument must return the new value, not a promise: update() runs it under the entry\'s lock, synchronously')
      const vn = encodeValue(this.coder, value, 'The value fn returned')
      this.#prev = prev
      this.#store(s, ks, kn, kind, h, encoded, vn, expires, e)
      return value
    } finally {
      // Released inline where it can be (see Lock.withLock): `fn` may have overflowed the
      // stack at its very call, leaving no room for #leave's calls. Inline: plain loads
      // and stores, and the builtins the stripe's acquisition (and #beginWrite, if the
      // sequence is odd) ran deeper. The stripe's lock word opens its record (FORMAT.md).
      const i32 = this.v.i32
      const seq = (s + S.SEQ) >>> 2
      const lw = (s + S.LOCK) >>> 2
      let v = i32[lw]
      if ((v & HELD_MASK) === me) {
        const q = i32[seq]
        if (q & 1) Atomics.store(i32, seq, (q + 1) | 0)
        while (Atomics.compareExchange(i32, lw, v, 0) !== v) v = i32[lw]
        // Sleepers are woken; if the wake cannot be made, they re-check within 50 ms.
        if (v < 0) wakeWord(this.memory, s + S.LOCK, 1)
        if (GUARD[0] !== 0) checkIntact(this.memory)
      } else {
        this.#leave(s)
      }
    }
  }

  /** This thread's liveness token in the map's segment (the stripes' lock words hold it). */
  #me = 0

  /** Removes every entry (one stripe at a time: concurrent sets may survive it). */
  clear(): void {
    this.#check()
    for (let i = 0; i < this.#stripes; i++) {
      const s = this.#stripeArray + i * S.SIZE
      this.#lockStripe(i)
      try {
        this.#beginWrite(s)
        this.#table(s)
        const tbl = this.#tbl
        const cap = this.#cap
        const next = this.#next
        for (let b = 0; b < cap; b++) {
          const slot = tbl + 4 * b
          while (this.v.i32[slot >>> 2] !== 0) this.#freeFrom(slot, next)
        }
        for (const j of SPARES) this.#freeFrom(s + j, -1)
        const i32 = this.v.i32
        i32[(s + S.COUNT) >>> 2] = 0
        this.v.dv.setFloat64(s + S.BYTES, 0, true)
        i32[(s + S.LRU_HEAD) >>> 2] = 0
        i32[(s + S.LRU_TAIL) >>> 2] = 0
      } finally {
        this.#unlock(s)
        intact(this.memory)
      }
    }
  }

  /** The keys, one stripe region at a time (each entry as it was at one moment). */
  keys(): IterableIterator<K> {
    return this.#iterate(0) as IterableIterator<K>
  }

  /** The values (see {@link keys}). */
  values(): IterableIterator<V> {
    return this.#iterate(1) as IterableIterator<V>
  }

  /** `[key, value]` pairs (see {@link keys}). */
  entries(): IterableIterator<[K, V]> {
    return this.#iterate(2) as IterableIterator<[K, V]>
  }

  /** Same as {@link entries}. */
  [Symbol.iterator](): IterableIterator<[K, V]> {
    return this.entries()
  }

  // ---- internals ----

  #check(): void {
    this.live()
    if (updating.size !== 0 && updating.has(this.#key)) {
      throw new ShmError('SharedMap methods cannot be called inside update()\'s fn on the same map', { code: 'ERR_SHM_DEADLOCK' })
    }
  }

  #expiry(options: SetOptions | undefined): number {
    let ttl = this.#ttl
    if (options !== undefined) {
      const { ttl: given } = checkOptions(options)
      if (given !== undefined) ttl = checkTtl(given, 'The "ttl" option')
    }
    return ttl > 0 ? Date.now() + ttl : 0
  }

  // The key `#enterKey` entered with: length of its bytes (in keyScratch), kind, hash, entry.
  #kn = 0
  #kind = 0
  #hash = 0
  #found = 0

  /**
   * Checks and encodes `key`, locks its stripe and finds its entry (`#found`, 0 if none;
   * `#prev` links to it). Returns the stripe, which the caller must `#leave`.
   */
  #enterKey(key: unknown): number {
    this.#check()
    const kn = (this.#kn = encodeKey(key, this.#k0, this.#k1))
    const kind = (this.#kind = keyKind(key))
    const h = (this.#hash = encodedHash)
    const s = this.#enter(h)
    try {
      this.#found = this.#find(s, keyScratch, kn, kind, h)
    } catch (e) {
      this.#leave(s)
      throw e
    }
    return s
  }

  /** Locks the stripe of hash `h`; returns the stripe's offset. */
  #enter(h: number): number {
    const i = h & (this.#stripes - 1)
    this.#lockStripe(i)
    return this.#stripeArray + i * S.SIZE
  }

  #leave(s: number): void {
    this.#unlock(s)
    // What was read may lie on pages the mapping lost (lib/memory.ts): say so, not return it.
    intact(this.memory)
  }

  #lockStripe(i: number): void {
    const lock = this.#locks[i]
    takeLock(lock, 'a SharedMap stripe')
    if (tookOverDead(lock)) recoverLock(lock, () => this.#repair(this.#stripeArray + i * S.SIZE))
  }

  /** Releases stripe `s`'s lock, its write sequence even again first if this holder changed it. */
  #unlock(s: number): void {
    const i32 = this.v.i32
    const q = i32[(s + S.SEQ) >>> 2]
    // Release: every change is visible before the sequence says the stripe is stable.
    if (q & 1) Atomics.store(i32, (s + S.SEQ) >>> 2, (q + 1) | 0)
    this.#locks[(s - this.#stripeArray) / S.SIZE].release()
  }

  /**
   * Before the holder of stripe `s` changes what readers walk: makes its write sequence
   * odd (once per holding), so optimistic readers of the stripe retry or wait.
   */
  #beginWrite(s: number): void {
    const i32 = this.v.i32
    const at = (s + S.SEQ) >>> 2
    const q = i32[at]
    if (q & 1) return
    Atomics.store(i32, at, (q + 1) | 0)
    // An acquire load after the release store: the changes that follow cannot be seen
    // before the odd sequence (x86's Atomics.store is a full barrier already).
    if (WEAK_ORDERING) Atomics.load(i32, at)
    // Every holding that writes moves the clock too, also one that stores nothing (a
    // clear() of an empty stripe, a set that ran out of heap): the 32-bit sequence comes
    // back to a value after 2^31 holdings, the pair (sequence, clock) never does, and a
    // reader's memo compares the pair ("Reads of unchanged stripes", docs/containers.md).
    if (!this.#bounded) this.#tick(s)
  }

  /**
   * Moves stripe `s`'s write clock (unbounded maps: a u32 pair, low word then high word)
   * on by one, with its holder's lock held; returns the new low word.
   */
  #tick(s: number): number {
    const i32 = this.v.i32
    const clock = (s + S.TICK) >>> 2
    const lo = (i32[clock] + 1) | 0
    // The high word first: a kill between the two stores leaves the clock ahead, never
    // behind (no stamp is given twice).
    if (lo === 0) i32[clock + 1] = (i32[clock + 1] + 1) | 0
    i32[clock] = lo
    return lo
  }

  // Stripe's current table, as `#table` read it last.
  #tbl = 0
  #cap = 0
  #log2 = 0
  /** Offset of the current generation's next-field in an entry. */
  #next = 0
  #gen = 0

  /** Reads the current table of stripe `s` (locked) into `#tbl`, `#cap`, `#log2`, `#next`, `#gen`. */
  #table(s: number): void {
    const i32 = this.v.i32
    const gen = i32[(s + S.GEN) >>> 2] >>> 0
    const g = gen & 1
    const tbl = (i32[(s + S.TABLE0 + 4 * g) >>> 2] >>> 0) * UNIT
    const log2 = i32[(s + S.LOG2_0 + 4 * g) >>> 2]
    if (!(log2 >= MIN_LOG2 && log2 <= MAX_LOG2)) throw corrupt(`a SharedMap stripe at ${s} has 2^${log2} buckets`)
    const cap = 1 << log2
    if (tbl < this.v.heap.offset || tbl + 4 * cap > this.v.size) throw corrupt(`a SharedMap stripe at ${s} has its table outside the heap`)
    this.#tbl = tbl
    this.#cap = cap
    this.#log2 = log2
    this.#next = E.NEXT0 + 4 * g
    this.#gen = gen
  }

  #bucketSlot(tbl: number, cap: number, h: number): number {
    const b = this.#stripeBits
    const r = b === 0 ? h : (h >>> b) | (h << (32 - b))
    return tbl + 4 * (r & (cap - 1))
  }

  /** Checks that an entry (from a slot's unit) lies in the heap whole; returns its offset. */
  #entry(unit: number): number {
    const e = unit * UNIT
    const v = this.v
    if (e < v.heap.offset || e + E.DATA > v.size) throw corrupt(`a SharedMap entry at ${e} is outside the heap`)
    const end = valueAt(e, v.i32[(e + E.KEY_LEN) >>> 2] >>> 0) + (v.i32[(e + E.VALUE_LEN) >>> 2] >>> 0)
    if (end > v.size) throw corrupt(`a SharedMap entry at ${e} runs off the mapping`)
    return e
  }

  /**
   * Finds the entry of key `kb[0, kn)` (kind, hash `h`) in stripe `s` (locked); returns
   * its offset or 0. Sets `#prev` to the slot that links to it (or to its bucket's slot
   * if absent) and the table fields.
   */
  #find(s: number, ks: Scratch, kn: number, kind: number, h: number): number {
    this.#table(s)
    const next = this.#next
    const i32 = this.v.i32
    const u8 = this.v.u8
    let slot = this.#bucketSlot(this.#tbl, this.#cap, h)
    const bucket = slot
    for (let steps = 0; ; steps++) {
      const unit = i32[slot >>> 2] >>> 0
      if (unit === 0) {
        this.#prev = bucket
        return 0
      }
      if (steps > this.#maxSteps) throw corrupt(`a SharedMap chain in the stripe at ${s} loops`)
      const e = this.#entry(unit)
      const w = e >>> 2
      if (i32[w + 2] === h && i32[w + 3] >>> 0 === kn && (i32[w + 5] & KEY_BYTES) === kind && wordsEqual(u8, i32, e + E.DATA, ks.bytes, ks.words, kn)) {
        this.#prev = slot
        return e
      }
      slot = e + next
    }
  }

  /** The slot linking to the entry last found (or its bucket's, if absent). */
  #prev = 0

  #expired(e: number): boolean {
    const t = this.v.dv.getFloat64(e + E.EXPIRES, true)
    return t !== 0 && t <= Date.now()
  }

  /**
   * get/has: the decoded value (`decode`) or {@link FOUND}, or {@link ABSENT}.
   *
   * Optimistically first, without the lock (not for LRU-bounded maps, whose reads move
   * the entry in the LRU list): read the stripe's write sequence, find and decode the
   * entry, then read the sequence again. Equal and even: no holder changed the stripe in
   * between, so what was read was one whole entry (entries are never changed in place,
   * and a block is reused only after a holder unlinked it, which moves the sequence).
   * Moved: try again. Odd for a while (a writer at work, or one that died), or anything
   * that would need the lock (an expired entry to remove, bytes that look wrong): the
   * locked path below, which repairs, removes or reports.
   */
  #lookup(key: unknown, decode: boolean): unknown {
    this.#check()
    const kn = (this.#kn = encodeKey(key, this.#k0, this.#k1))
    const kind = (this.#kind = keyKind(key))
    const h = (this.#hash = encodedHash)
    if (!this.#bounded) {
      const i32 = this.v.i32
      const s = this.#stripeArray + (h & (this.#stripes - 1)) * S.SIZE
      const at = (s + S.SEQ) >>> 2
      for (let tries = 0, polls = 0; tries < OPTIMISTIC_TRIES; ) {
        const q = Atomics.load(i32, at)
        if (q & 1) {
          if (++polls > ODD_POLLS) break
          continue
        }
        const r = this.#peek(s, kn, kind, h, decode)
        if (WEAK_ORDERING) Atomics.store(fenceWord, 0, 0)
        if (Atomics.load(i32, at) !== q) {
          tries++
          continue
        }
        if (r === LOCKED) break
        intact(this.memory)
        if (r === CACHED) {
          if (typeof key === 'string') this.#memorize(key, at, q)
          return fromPlan(this.#plan as Plan)
        }
        if (r === COPIED) {
          const copy = this.#copy
          this.#copy = EMPTY_BYTES
          return this.coder.decode(copy, 0, copy.length)
        }
        if (decode && r !== ABSENT && this.#seen !== 0) this.#remember(s, r)
        return r
      }
    }
    const s = this.#enter(h)
    try {
      const e = (this.#found = this.#find(s, keyScratch, kn, kind, h))
      if (e === 0) return ABSENT
      if (this.#expired(e)) {
        this.#remove(s, e)
        return ABSENT
      }
      if (this.#bounded) this.#touch(s, e)
      return decode ? this.#decode(e) : FOUND
    } finally {
      this.#leave(s)
    }
  }

  /** Value bytes a {@link #peek} copied out (to decode once the read is validated). */
  #copy = EMPTY_BYTES

  // ---- The cache of decoded values ----
  //
  // `get` decodes an entry's bytes into a fresh value every time. A map object keeps, for
  // entries it decoded twice, a plan to rebuild the value without the bytes (codec.ts
  // `planOf`): keyed by the entry's block, stripe and write stamp, which together never
  // name two different values (entries are never changed in place; every write stamps its
  // entry from the stripe's clock). A hit is checked, like the rest of the optimistic
  // read, before the stripe's sequence is validated; a changed or reused entry has
  // another stamp, so it misses. Direct-mapped, per map object and thread; values up to
  // {@link CACHE_VALUE_BYTES}.

  /** Per slot: entry unit, stripe index, stamp low and high word. Allocated on first use. */
  #cacheKeys: Int32Array | null = null
  /** Per slot: the plan, null (seen once), or false (not plannable). */
  #cachePlans: Array<Plan | null | false> = []
  /** What the last {@link #peek} found: a plan it hit, or the entry it decoded (unit; 0: none), with its stamp. */
  #plan: Plan | null = null
  #seen = 0
  #seenLo = 0
  #seenHi = 0

  // ---- Reads of unchanged stripes ----
  //
  // A `get` of a string key whose value came from the cache remembers, by the key, the
  // plan with its stripe's write sequence and clock as the validated read saw them. The
  // next `get` of that key compares the two (one Map lookup, three loads) before hashing
  // or walking anything: while they are the same, no holder changed the stripe, so the
  // entry, and its value, are the ones the plan rebuilds. Any write to the stripe moves
  // the sequence; the clock (64 bits, moved by every stored entry) covers the sequence's
  // wrap: to come back to the same sequence without a store, a stripe would need 2^31
  // deletes of entries present at once.

  /** Per string key: the plan and the stripe state it is valid for. Bounded by {@link MEMO_KEYS}. */
  #memo = new Map<string, Memo>()
  /** The stripe clock and the entry's expiry as the last {@link #peek} that hit the cache saw them. */
  #clockLo = 0
  #clockHi = 0
  #expires = 0

  /** After a validated cache hit for `key` in the stripe whose sequence (index `seq`) read `q`: remember it. */
  #memorize(key: string, seq: number, q: number): void {
    const memo = this.#memo
    let m = memo.get(key)
    if (m === undefined) {
      if (memo.size >= MEMO_KEYS) memo.clear()
      m = new Memo()
      memo.set(key, m)
    }
    m.seq = seq
    m.q = q
    m.lo = this.#clockLo
    m.hi = this.#clockHi
    m.expires = this.#expires
    m.plan = this.#plan as Plan
  }

  /** The cache slot of entry unit `unit` (Fibonacci hashing: the product's top bits). */
  #slotOf(unit: number): number {
    return Math.imul(unit, 0x9e37_79b1) >>> (32 - CACHE_BITS)
  }

  /** After a validated decode of `value` from the entry {@link #peek} noted, in stripe `s`: remember it. */
  #remember(s: number, value: unknown): void {
    let keys = this.#cacheKeys
    if (keys === null) {
      keys = this.#cacheKeys = new Int32Array(4 * CACHE_SLOTS)
      this.#cachePlans = new Array<Plan | null | false>(CACHE_SLOTS).fill(false)
    }
    const stripe = (s - this.#stripeArray) / S.SIZE
    const slot = this.#slotOf(this.#seen)
    const x = slot << 2
    if (keys[x] === (this.#seen | 0) && keys[x + 1] === stripe && keys[x + 2] === this.#seenLo && keys[x + 3] === this.#seenHi) {
      // The second decode of this entry: keep how to rebuild it.
      if (this.#cachePlans[slot] === null) this.#cachePlans[slot] = planOf(value) ?? false
      return
    }
    keys[x] = this.#seen
    keys[x + 1] = stripe
    keys[x + 2] = this.#seenLo
    keys[x + 3] = this.#seenHi
    this.#cachePlans[slot] = null
  }

  /**
   * The unlocked read of {@link #lookup}: finds key `keyScratch[0, kn)` (kind, hash `h`)
   * in stripe `s`, reading bytes that may change under it. Every offset is checked
   * against the mapping and the walk is bounded, so it cannot read outside or loop;
   * whatever it returns counts only if the stripe's sequence did not move. Returns the
   * value (or {@link FOUND}), {@link ABSENT}, {@link COPIED} (the value's bytes are in
   * `#copy`, for `decode` after validation), or {@link LOCKED} (take the lock).
   */
  #peek(s: number, kn: number, kind: number, h: number, decode: boolean): unknown {
    const v = this.v
    const i32 = v.i32
    const size = v.size
    const lo = v.heap.offset
    const g = i32[(s + S.GEN) >>> 2] & 1
    const tbl = (i32[(s + S.TABLE0 + 4 * g) >>> 2] >>> 0) * UNIT
    const log2 = i32[(s + S.LOG2_0 + 4 * g) >>> 2]
    if (!(log2 >= MIN_LOG2 && log2 <= MAX_LOG2)) return LOCKED
    const cap = 1 << log2
    if (tbl < lo || tbl + 4 * cap > size) return LOCKED
    const next = (E.NEXT0 >>> 2) + g
    let unit = i32[this.#bucketSlot(tbl, cap, h) >>> 2] >>> 0
    const ks = keyScratch
    const u8 = v.u8
    for (let steps = 0; unit !== 0; steps++) {
      const e = unit * UNIT
      if (steps > this.#maxSteps || e < lo || e + E.DATA > size) return LOCKED
      const w = e >>> 2
      if (i32[w + 2] === h && i32[w + 3] >>> 0 === kn && (i32[w + 5] & KEY_BYTES) === kind) {
        const start = valueAt(e, kn)
        const end = start + (i32[w + 4] >>> 0)
        if (end > size) return LOCKED
        if (wordsEqual(u8, i32, e + E.DATA, ks.bytes, ks.words, kn)) {
          const t = v.dv.getFloat64(e + E.EXPIRES, true)
          // Expired: the locked path removes it.
          if (t !== 0 && t <= Date.now()) return LOCKED
          if (!decode) return FOUND
          this.#seen = 0
          if (end - start <= CACHE_VALUE_BYTES) {
            const lo = i32[w + (E.TICK >>> 2)]
            const hi = i32[w + (E.TICK >>> 2) + 1]
            const keys = this.#cacheKeys
            if (keys !== null) {
              const slot = this.#slotOf(unit)
              const x = slot << 2
              if (keys[x] === (unit | 0) && keys[x + 1] === (s - this.#stripeArray) / S.SIZE && keys[x + 2] === lo && keys[x + 3] === hi) {
                const p = this.#cachePlans[slot]
                if (p) {
                  this.#plan = p
                  this.#clockLo = i32[(s + S.TICK) >>> 2]
                  this.#clockHi = i32[(s + S.TICK + 4) >>> 2]
                  this.#expires = t
                  return CACHED
                }
              }
            }
            this.#seen = unit
            this.#seenLo = lo
            this.#seenHi = hi
          }
          const r = this.coder.decodeRacy(u8, start, end)
          if (r !== UNDECODED) return r
          this.#copy = copyOut(u8, start, end)
          return COPIED
        }
      }
      unit = i32[w + next] >>> 0
    }
    return ABSENT
  }

  #decode(e: number): unknown {
    const i32 = this.v.i32
    const start = valueAt(e, i32[(e + E.KEY_LEN) >>> 2] >>> 0)
    return this.coder.decode(this.v.u8, start, start + (i32[(e + E.VALUE_LEN) >>> 2] >>> 0))
  }

  /**
   * Stores the value `vb[0, vn)` under key `kb[0, kn)` (kind, hash `h`) in stripe `s`
   * (locked), replacing entry `old` (0: none). `#prev` links to `old`, or is the bucket
   * slot when there is none (as `#find` left it).
   */
  #store(s: number, ks: Scratch, kn: number, kind: number, h: number, vs: Scratch, vn: number, expires: number, old: number): void {
    const v = this.v
    const i32 = v.i32
    const size = valueAt(0, kn) + vn
    if (this.#maxBytes > 0 && size > this.#maxBytes) throw rangeError(`An entry of ${size} bytes cannot fit in a SharedMap of maxBytes ${this.#maxBytes}`)
    this.#beginWrite(s)
    this.#table(s)
    if (old === 0 && (i32[(s + S.COUNT) >>> 2] >>> 0) >= this.#cap && this.#log2 < MAX_LOG2) {
      this.#grow(s)
      this.#find(s, ks, kn, kind, h) // the bucket slot moved
    }
    const next = this.#next
    // 1. A private copy of the new entry: the stripe's spare block if it fits (recorded
    // in j_new before the spare slot lets go), else one the heap records in j_new.
    const e = this.#takeSpare(s, size) || this.#allocEntry(s, size, old, ks, kn, kind, h)
    const w = e >>> 2
    i32[w + 2] = h
    i32[w + 3] = kn
    i32[w + 4] = vn
    i32[w + 5] = kind
    v.dv.setFloat64(e + E.EXPIRES, expires, true)
    i32[w + 8] = 0
    i32[w + 9] = 0
    if (this.#bounded) {
      v.dv.setFloat64(e + E.TICK, 0, true)
    } else {
      i32[w + (E.TICK >>> 2)] = this.#tick(s)
      i32[w + (E.TICK >>> 2) + 1] = i32[((s + S.TICK) >>> 2) + 1]
    }
    copyWords(v.u8, i32, e + E.DATA, ks.bytes, ks.words, 0, kn)
    copyWords(v.u8, i32, valueAt(e, kn), vs.bytes, vs.words, 0, vn)
    const slot = this.#prev
    const unit = e / UNIT
    let bytes = v.dv.getFloat64(s + S.BYTES, true) + size
    if (old === 0) {
      i32[(e + next) >>> 2] = i32[slot >>> 2]
      // 2. Commit: the entry is in its bucket.
      Atomics.store(i32, slot >>> 2, unit)
      i32[(s + S.COUNT) >>> 2] = (i32[(s + S.COUNT) >>> 2] >>> 0) + 1
    } else {
      i32[(e + next) >>> 2] = i32[(old + next) >>> 2]
      i32[(s + S.J_OLD) >>> 2] = old / UNIT
      // 2. Commit: the new entry replaces the old one in the chain.
      Atomics.store(i32, slot >>> 2, unit)
      bytes -= this.#entrySize(old)
      if (this.#bounded) this.#lruUnlink(s, old)
      // 3. The old entry becomes a spare (kept in a spare slot before j_old lets go),
      // or goes back to the heap (which clears j_old first).
      const keep = this.#spareSlot(s, old)
      if (keep !== 0) {
        i32[(s + keep) >>> 2] = old / UNIT
        i32[(s + S.J_OLD) >>> 2] = 0
      } else {
        this.#freeFrom(s + S.J_OLD, -1)
      }
    }
    v.dv.setFloat64(s + S.BYTES, bytes, true)
    // (A plain store: only the next holder of this lock reads it, after a kill; program
    // order is all that needs.)
    i32[(s + S.J_NEW) >>> 2] = 0
    const flags = (this.offset + M.FLAGS) >>> 2
    if (expires !== 0 && (i32[flags] & F.HAS_TTL) === 0) Atomics.or(i32, flags, F.HAS_TTL)
    if (this.#bounded) this.#touch(s, e)
    if (i32[flags] & F.HAS_TTL) this.#sweep(s, 2)
    if (this.#bounded) this.#evict(s, e)
  }

  /**
   * A heap block for a new entry of `size` bytes of stripe `s`, recorded in j_new. Out of
   * heap, any map first gives the stripe's idle spare blocks back. A bounded map then
   * makes room as a cache does, rather than fail the `set` (its bounds
   * count entries and their bytes, not the tables and blocks around them, so a heap can
   * fill before they are reached): first its idle spare blocks go back, then entries,
   * in the order its bounds evict them (an expired one first, then the least recently
   * used; never `old`, the one being replaced), each followed by a plain try. Only when
   * nothing is left to evict does the heap's own retry run (it reclaims the caches of
   * dead threads, a walk of the heap: on every `set` of a full cache it cost 60 µs).
   * `ks`..`h`: the key, found again after each eviction (the links to it may have moved).
   * @throws ShmError `ENOMEM` when nothing is left to evict, the entry is larger than the
   *   whole heap, or the map is not bounded
   */
  #allocEntry(s: number, size: number, old: number, ks: Scratch, kn: number, kind: number, h: number): number {
    const i32 = this.v.i32
    const evicts = this.#bounded && size + UNIT <= this.v.heap.size
    for (let spares = true; ; spares = false) {
      try {
        return binding.heapAllocInto(this.v.heapId, size, UNIT, s + S.J_NEW)
      } catch (err) {
        const e = fromNative(err)
        if (!(e instanceof ShmError && e.code === 'ENOMEM')) throw e
      }
      this.#beginWrite(s)
      if (spares && SPARES.some((j) => i32[(s + j) >>> 2] !== 0)) {
        for (const j of SPARES) this.#freeFrom(s + j, -1)
        continue
      }
      if (!evicts) return this.#allocInto(size, UNIT, s + S.J_NEW)
      let tail = i32[(s + S.LRU_TAIL) >>> 2] >>> 0
      if (tail !== 0 && tail * UNIT === old) tail = i32[(old + E.PREV) >>> 2] >>> 0
      if (tail === 0) return this.#allocInto(size, UNIT, s + S.J_NEW)
      const victim = (i32[(this.offset + M.FLAGS) >>> 2] & F.HAS_TTL) !== 0 ? this.#expiredNearTail(tail, old) : this.#entry(tail)
      this.#locate(s, victim)
      this.#remove(s, victim)
      this.#find(s, ks, kn, kind, h)
    }
  }

  /**
   * Takes the spare block of stripe `s` that fits an entry of `size` bytes best (not
   * much larger): returns its offset, recorded in j_new before its spare slot lets go;
   * 0 if none fits.
   */
  #takeSpare(s: number, size: number): number {
    const i32 = this.v.i32
    let best = 0
    let bestRoom = 2 * size + 64 + 1
    for (let k = 0; k < SPARES.length; k++) {
      const j = SPARES[k]
      const unit = i32[(s + j) >>> 2] >>> 0
      if (unit === 0) continue
      const room = this.#room(unit)
      if (room >= size && room < bestRoom) {
        best = j
        bestRoom = room
        if (room < size + UNIT) break // as good as any
      }
    }
    if (best === 0) return 0
    const unit = i32[(s + best) >>> 2] >>> 0
    i32[(s + S.J_NEW) >>> 2] = unit
    i32[(s + best) >>> 2] = 0
    return unit * UNIT
  }

  /** The bytes after the header of the heap block at slot `unit` (0 if it could not be a block of the heap). */
  #room(unit: number): number {
    const e = unit * UNIT
    const v = this.v
    if (e - UNIT < v.heap.offset || e > v.size) return 0
    const i32 = v.i32
    // The heap block's header (FORMAT.md §4.2): size / 16 in bits 8 and up of its word.
    const room = (((i32[(e - UNIT) >>> 2] >>> 8) | (i32[(e - UNIT + 4) >>> 2] << 24)) >>> 0) * UNIT - UNIT
    return room > 0 && e + room <= v.size ? room : 0
  }

  /** The spare slot of stripe `s` to keep the replaced entry `old` in, or 0 to free it. */
  #spareSlot(s: number, old: number): number {
    const i32 = this.v.i32
    const room = this.#room(old / UNIT)
    if (i32[(s + SPARES[0]) >>> 2] === 0 && room <= Math.max(SPARE_ROOM, Math.min(SPARE_FIRST_ROOM, this.v.heap.size / 1024))) return SPARES[0]
    if (room > SPARE_ROOM) return 0
    for (let k = 1; k < SPARES.length; k++) if (i32[(s + SPARES[k]) >>> 2] === 0) return SPARES[k]
    return 0
  }

  #entrySize(e: number): number {
    const i32 = this.v.i32
    return valueAt(0, i32[(e + E.KEY_LEN) >>> 2] >>> 0) + (i32[(e + E.VALUE_LEN) >>> 2] >>> 0)
  }

  /** `heapAllocInto`: a block of `size` bytes, recorded in the u32 slot at `slot`. */
  #allocInto(size: number, align: number, slot: number): number {
    try {
      return binding.heapAllocInto(this.v.heapId, size, align, slot)
    } catch (e) {
      return afterAllocFailure(this.v.heap, () => binding.heapAllocInto(this.v.heapId, size, align, slot), fromNative(e))
    }
  }

  /** `heapFreeFrom`: unlinks the block `slot` names (slot ← u32 at `next` in it, or 0) and frees it. */
  #freeFrom(slot: number, next: number): void {
    try {
      binding.heapFreeFrom(this.v.heapId, slot, next)
    } catch (e) {
      throw fromNative(e)
    }
  }

  /** Removes entry `e` of stripe `s` (locked); `#prev` links to it. */
  #remove(s: number, e: number): void {
    const v = this.v
    this.#beginWrite(s)
    this.#table(s)
    const next = this.#next
    if (this.#bounded) this.#lruUnlink(s, e)
    const size = this.#entrySize(e)
    // Commit: the heap unlinks the entry (slot ← e.next) and frees it.
    this.#freeFrom(this.#prev, next)
    v.i32[(s + S.COUNT) >>> 2] = Math.max(0, (v.i32[(s + S.COUNT) >>> 2] >>> 0) - 1)
    v.dv.setFloat64(s + S.BYTES, Math.max(0, v.dv.getFloat64(s + S.BYTES, true) - size), true)
  }

  /** Doubles stripe `s`'s table (see the module docs for the commit order). */
  #grow(s: number): void {
    const v = this.v
    const i32 = v.i32
    this.#table(s)
    const tbl = this.#tbl
    const cap = this.#cap
    const log2 = this.#log2
    const next = this.#next
    const gen = this.#gen
    if (log2 >= MAX_LOG2) return
    const ncap = cap * 2
    let ntbl: number
    try {
      ntbl = this.#allocInto(4 * ncap, 64, s + S.J_TABLE)
    } catch (e) {
      // No room for a larger table (in the heap, or pages for it on a full /dev/shm):
      // growing is optional (chains grow longer), the set goes on; nothing was changed yet.
      if (e instanceof ShmError && (e.code === 'ENOMEM' || e.code === 'ENOSPC')) return
      throw e
    }
    v.u8.fill(0, ntbl, ntbl + 4 * ncap)
    const g2 = (gen + 1) & 1
    const next2 = E.NEXT0 + 4 * g2
    let steps = 0
    for (let b = 0; b < cap; b++) {
      let unit = i32[(tbl + 4 * b) >>> 2] >>> 0
      while (unit !== 0) {
        if (++steps > this.#maxSteps) throw corrupt(`a SharedMap chain in the stripe at ${s} loops`)
        const e = this.#entry(unit)
        const slot = this.#bucketSlot(ntbl, ncap, i32[(e + E.HASH) >>> 2])
        i32[(e + next2) >>> 2] = i32[slot >>> 2]
        i32[slot >>> 2] = unit
        unit = i32[(e + next) >>> 2] >>> 0
      }
    }
    i32[(s + S.TABLE0 + 4 * g2) >>> 2] = ntbl / UNIT
    i32[(s + S.LOG2_0 + 4 * g2) >>> 2] = log2 + 1
    i32[(s + S.J_OLDTABLE) >>> 2] = tbl / UNIT
    // Commit: the new table (and the other next fields) are current.
    Atomics.store(i32, (s + S.GEN) >>> 2, (gen + 1) | 0)
    this.#freeFrom(s + S.J_OLDTABLE, -1)
    Atomics.store(i32, (s + S.J_TABLE) >>> 2, 0)
  }

  // ---- LRU (bounded maps: one stripe, a doubly linked list by access) ----

  #touch(s: number, e: number): void {
    const dv = this.v.dv
    const tick = dv.getFloat64(s + S.TICK, true) + 1
    dv.setFloat64(s + S.TICK, tick, true)
    dv.setFloat64(e + E.TICK, tick, true)
    const i32 = this.v.i32
    const unit = e / UNIT
    if (i32[(s + S.LRU_HEAD) >>> 2] >>> 0 === unit) return
    this.#lruUnlink(s, e)
    const head = i32[(s + S.LRU_HEAD) >>> 2] >>> 0
    i32[(e + E.PREV) >>> 2] = 0
    i32[(e + E.NEXT) >>> 2] = head
    if (head !== 0) i32[(this.#entry(head) + E.PREV) >>> 2] = unit
    else i32[(s + S.LRU_TAIL) >>> 2] = unit
    i32[(s + S.LRU_HEAD) >>> 2] = unit
  }

  #lruUnlink(s: number, e: number): void {
    const i32 = this.v.i32
    const unit = e / UNIT
    const prev = i32[(e + E.PREV) >>> 2] >>> 0
    const next = i32[(e + E.NEXT) >>> 2] >>> 0
    const linked = prev !== 0 || next !== 0 || i32[(s + S.LRU_HEAD) >>> 2] >>> 0 === unit
    if (!linked) return
    if (prev !== 0) i32[(this.#entry(prev) + E.NEXT) >>> 2] = next
    else i32[(s + S.LRU_HEAD) >>> 2] = next
    if (next !== 0) i32[(this.#entry(next) + E.PREV) >>> 2] = prev
    else i32[(s + S.LRU_TAIL) >>> 2] = prev
    i32[(e + E.PREV) >>> 2] = 0
    i32[(e + E.NEXT) >>> 2] = 0
  }

  /** Evicts least recently used entries of stripe `s` while a bound is exceeded (never `keep`). */
  #evict(s: number, keep: number): void {
    const v = this.v
    const i32 = v.i32
    for (let steps = 0; ; steps++) {
      const over = (this.#maxEntries > 0 && (i32[(s + S.COUNT) >>> 2] >>> 0) > this.#maxEntries) || (this.#maxBytes > 0 && v.dv.getFloat64(s + S.BYTES, true) > this.#maxBytes)
      if (!over) return
      if (steps > this.#maxSteps) throw corrupt(`the LRU list of the SharedMap at ${this.offset} loops`)
      const tail = i32[(s + S.LRU_TAIL) >>> 2] >>> 0
      if (tail === 0 || tail * UNIT === keep) return
      const e = (i32[(this.offset + M.FLAGS) >>> 2] & F.HAS_TTL) !== 0 ? this.#expiredNearTail(tail, keep) : this.#entry(tail)
      this.#locate(s, e)
      this.#remove(s, e)
    }
  }

  /**
   * The entry to evict in a map with ttl entries: the first expired one among the
   * {@link EXPIRED_LOOKAHEAD} least recently used (an expired entry goes before a live
   * one), else the least recently used (`tail`). Never `keep`.
   */
  #expiredNearTail(tail: number, keep: number): number {
    const i32 = this.v.i32
    let unit = tail
    for (let k = 0; k < EXPIRED_LOOKAHEAD && unit !== 0; k++) {
      const e = this.#entry(unit)
      if (e !== keep && this.#expired(e)) return e
      unit = i32[(e + E.PREV) >>> 2] >>> 0
    }
    return this.#entry(tail)
  }

  /** Sets `#prev` to the slot linking to entry `e` of stripe `s`. */
  #locate(s: number, e: number): void {
    this.#table(s)
    const tbl = this.#tbl
    const cap = this.#cap
    const next = this.#next
    const i32 = this.v.i32
    const want = e / UNIT
    let slot = this.#bucketSlot(tbl, cap, i32[(e + E.HASH) >>> 2])
    for (let steps = 0; ; steps++) {
      const unit = i32[slot >>> 2] >>> 0
      if (unit === want) {
        this.#prev = slot
        return
      }
      if (unit === 0 || steps > this.#maxSteps) throw corrupt(`a SharedMap entry at ${e} is not in its chain`)
      slot = this.#entry(unit) + next
    }
  }

  /** Removes expired entries from the next `n` buckets of stripe `s` (locked). */
  #sweep(s: number, n: number): void {
    this.#table(s)
    const tbl = this.#tbl
    const cap = this.#cap
    const next = this.#next
    const i32 = this.v.i32
    const now = Date.now()
    let b = i32[(s + S.SWEEP) >>> 2] >>> 0
    for (let k = 0; k < n; k++, b++) {
      let slot = tbl + 4 * (b & (cap - 1))
      for (let steps = 0; ; steps++) {
        const unit = i32[slot >>> 2] >>> 0
        if (unit === 0 || steps > this.#maxSteps) break
        const e = this.#entry(unit)
        const t = this.v.dv.getFloat64(e + E.EXPIRES, true)
        if (t !== 0 && t <= now) {
          this.#prev = slot
          this.#remove(s, e)
        } else {
          slot = e + next
        }
      }
    }
    i32[(s + S.SWEEP) >>> 2] = b & (cap - 1)
  }

  // ---- recovery ----

  /**
   * Makes stripe `s` consistent after a process died holding its lock: settles the
   * journal slots (a block reachable from the current table stays, any other is freed),
   * recounts entries and bytes, rebuilds the LRU list and evicts down to the bounds.
   */
  #repair(s: number): void {
    const v = this.v
    const i32 = v.i32
    // Readers keep off until it is done (the sequence may be odd already: the dead holder
    // was writing); if the repair fails, it stays odd and readers take the lock, which
    // says the stripe is not recoverable.
    this.#beginWrite(s)
    this.#table(s)
    const tbl = this.#tbl
    const cap = this.#cap
    const next = this.#next
    const current = tbl / UNIT
    for (const j of [S.J_TABLE, S.J_OLDTABLE]) {
      const u = i32[(s + j) >>> 2] >>> 0
      if (u === 0) continue
      if (u === current) i32[(s + j) >>> 2] = 0
      else this.#freeFrom(s + j, -1)
    }
    const reachable = new Set<number>()
    let bytes = 0
    const lru: Array<[number, number]> = []
    for (let b = 0; b < cap; b++) {
      let unit = i32[(tbl + 4 * b) >>> 2] >>> 0
      while (unit !== 0) {
        if (reachable.has(unit) || reachable.size > this.#maxSteps) throw corrupt(`a SharedMap chain in the stripe at ${s} loops`)
        reachable.add(unit)
        const e = this.#entry(unit)
        bytes += this.#entrySize(e)
        if (this.#bounded) lru.push([v.dv.getFloat64(e + E.TICK, true), unit])
        unit = i32[(e + next) >>> 2] >>> 0
      }
    }
    // Spare blocks are the stripe's: a journal slot naming one too was between two stores
    // of handing it over, and lets go of it. (A spare that is reachable, or named by two
    // slots, cannot come from a kill; it is let go of rather than reused.)
    const spares = new Set<number>()
    for (const j of SPARES) {
      const u = i32[(s + j) >>> 2] >>> 0
      if (u === 0) continue
      if (reachable.has(u) || spares.has(u)) i32[(s + j) >>> 2] = 0
      else spares.add(u)
    }
    for (const j of [S.J_NEW, S.J_OLD]) {
      const u = i32[(s + j) >>> 2] >>> 0
      if (u === 0) continue
      if (reachable.has(u) || spares.has(u)) i32[(s + j) >>> 2] = 0
      else this.#freeFrom(s + j, -1)
    }
    i32[(s + S.COUNT) >>> 2] = reachable.size
    v.dv.setFloat64(s + S.BYTES, bytes, true)
    if (this.#bounded) {
      lru.sort((a, b) => b[0] - a[0])
      let prev = 0
      for (const [, unit] of lru) {
        const e = unit * UNIT
        i32[(e + E.PREV) >>> 2] = prev
        i32[(e + E.NEXT) >>> 2] = 0
        if (prev !== 0) i32[(prev * UNIT + E.NEXT) >>> 2] = unit
        prev = unit
      }
      i32[(s + S.LRU_HEAD) >>> 2] = lru.length ? lru[0][1] : 0
      i32[(s + S.LRU_TAIL) >>> 2] = prev
      // The dead holder may have stored an entry and died before evicting for it.
      this.#evict(s, 0)
    }
  }

  // ---- iteration ----

  /**
   * Yields keys (0), values (1) or pairs (2). Each stripe is read in runs of buckets
   * under its lock; a table that doubled meanwhile is followed by bucket residue, so an
   * entry present throughout is seen exactly once.
   */
  *#iterate(mode: 0 | 1 | 2): IterableIterator<unknown> {
    this.#check()
    for (let i = 0; i < this.#stripes; i++) {
      const s = this.#stripeArray + i * S.SIZE
      let base = 0 // bucket count when this stripe's walk began
      for (let r = 0; base === 0 || r < base; ) {
        const out: unknown[] = []
        this.#check()
        this.#lockStripe(i)
        try {
          this.#table(s)
          const tbl = this.#tbl
          const cap = this.#cap
          const next = this.#next
          if (base === 0 || cap < base) base = cap
          const now = Date.now()
          const end = Math.min(base, r + ITER_BUCKETS)
          const i32 = this.v.i32
          // What one lock hold collects is bounded by what a stripe can hold: its entries
          // are disjoint blocks of the heap, each linked from the bucket its hash names.
          // Hostile links (one chain from every bucket, values overlapping the entries
          // after them) made a 1 MiB segment yield 16 GB of values into one batch.
          let steps = 0
          let bytes = 0
          for (; r < end; r++) {
            for (let b = r; b < cap; b += base) {
              const slot = tbl + 4 * b
              let unit = i32[slot >>> 2] >>> 0
              while (unit !== 0) {
                if (++steps > this.#maxSteps) throw corrupt(`a SharedMap chain in the stripe at ${s} loops`)
                const e = this.#entry(unit)
                if (this.#bucketSlot(tbl, cap, i32[(e + E.HASH) >>> 2]) !== slot) throw corrupt(`a SharedMap entry at ${e} is linked from a bucket its hash does not name`)
                bytes += this.#entrySize(e)
                if (bytes > this.v.size) throw corrupt(`the SharedMap entries of the stripe at ${s} overlap`)
                const t = this.v.dv.getFloat64(e + E.EXPIRES, true)
                if (t === 0 || t > now) {
                  const k = mode === 1 ? undefined : this.#keyOf(e)
                  out.push(mode === 0 ? k : mode === 1 ? this.#decode(e) : [k, this.#decode(e)])
                }
                unit = i32[(e + next) >>> 2] >>> 0
              }
            }
          }
        } finally {
          this.#unlock(s)
        }
        yield* out
      }
    }
  }

  #keyOf(e: number): string | Uint8Array {
    const i32 = this.v.i32
    const n = i32[(e + E.KEY_LEN) >>> 2] >>> 0
    const start = e + E.DATA
    return i32[(e + E.FLAGS) >>> 2] & KEY_BYTES ? copyOut(this.v.u8, start, start + n) : decodeUtf8(this.v.u8, start, start + n)
  }
}

/** What a map object remembers of a string key's last cached read (see {@link SharedMap.get}). */
class Memo {
  /** Int32 index of the stripe's write sequence, and its value then. */
  seq = 0
  q = 0
  /** The stripe's clock then. */
  lo = 0
  hi = 0
  /** The entry's expiry (0: never). */
  expires = 0
  plan: Plan = EMPTY_PLAN
}

/** Keys a map object remembers reads of; then it starts over. */
const MEMO_KEYS = 4096
/** From a stripe's write sequence to its clock, in 32-bit words. */
const CLOCK_FROM_SEQ = (S.TICK - S.SEQ) / 4

/** What {@link SharedMap.has} looks for. */
const FOUND = Symbol('found')
/** No (live) entry for the key. */
const ABSENT = Symbol('absent')
/** An optimistic read that needs the lock after all. */
const LOCKED = Symbol('locked')
/** An optimistic read that copied the value's bytes out, to decode once validated. */
const COPIED = Symbol('copied')
/** An optimistic read that found the entry's value in the cache (`#plan`). */
const CACHED = Symbol('cached')
const EMPTY_BYTES = new Uint8Array(0)
const EMPTY_PLAN = planOf(undefined) as Plan

function keyTooLong(n: number): RangeError {
  return rangeError(`The "key" argument must be at most ${MAX_KEY_LENGTH} bytes; got ${n}`)
}

/** 0 for a string key, {@link KEY_BYTES} for a byte key (after `#encodeKey` checked it). */
function keyKind(key: unknown): number {
  return typeof key === 'string' ? 0 : KEY_BYTES
}

/** String keys up to this many characters are encoded by a JavaScript loop when ASCII. */
const SHORT_KEY = 64

/** The hash of the key {@link encodeKey} encoded last. */
let encodedHash = 0

/**
 * Writes `key`'s bytes into keyScratch and hashes them under the map's secret (`k0`,
 * `k1`: {@link keyHash}) into {@link encodedHash}; returns their length.
 * @throws TypeError for a key of another type; RangeError for a key over 1 MiB
 */
function encodeKey(key: unknown, k0: number, k1: number): number {
  if (typeof key === 'string') {
    const n = key.length
    if (n <= SHORT_KEY) {
      const b = keyScratch.bytes
      let i = 0
      for (; i < n; i++) {
        const c = key.charCodeAt(i)
        if (c >= 0x80) break
        b[i] = c
      }
      if (i === n) {
        encodedHash = keyHash(b, keyScratch.words, n, k0, k1)
        return n
      }
    }
    let w = encodeUtf8Into(key, keyScratch.bytes, 0)
    if (w === LONE_SURROGATE) throw notWellFormed(key, 'The "key" argument')
    if (w < 0) {
      if (n > MAX_KEY_LENGTH) throw keyTooLong(n)
      keyScratch.ensure(0, 3 * n)
      w = encodeUtf8Into(key, keyScratch.bytes, 0)
    }
    if (w > MAX_KEY_LENGTH) throw keyTooLong(w)
    encodedHash = keyHash(keyScratch.bytes, keyScratch.words, w, k0, k1)
    return w
  }
  // A real Uint8Array of any realm (not a Proxy of one: its traps would run between the
  // copy and the hash, and could change the bytes or use this buffer): its bytes are read
  // once, into the buffer, and hashed there.
  if (isUint8Array(key)) {
    const n = key.length
    if (n > MAX_KEY_LENGTH) throw keyTooLong(n)
    keyScratch.ensure(0, n)
    try {
      keyScratch.bytes.set(key)
    } catch {
      throw typeError('The "key" argument is a Uint8Array over a detached ArrayBuffer')
    }
    encodedHash = keyHash(keyScratch.bytes, keyScratch.words, n, k0, k1)
    return n
  }
  throw typeError(`The "key" argument must be of type string or a Uint8Array; got ${describeNot(key, key instanceof Uint8Array)}`)
}

/**
 * HalfSipHash-1-3 of the key's bytes `b[0, n)` (`w`: the same bytes as little-endian
 * words) under the map's 64-bit secret `k0`, `k1`: SipHash on 32-bit words (Aumasson and
 * Bernstein), one round per word and three to finish, as Linux's `hsiphash` runs it on
 * 32-bit machines. A keyed hash, because keys are often chosen by someone else (a cache
 * of request paths): under an unkeyed hash (this map used FNV-1a) anyone can compute
 * thousands of keys that share one stripe and one bucket, and each `set` then walks all
 * of them under the stripe's lock (hash flooding, as Node's and Redis's own tables are
 * seeded against). Each map draws its secret at random when it is made (FORMAT.md §11.2).
 */
function keyHash(b: Uint8Array, w: Int32Array, n: number, k0: number, k1: number): number {
  let v0 = k0
  let v1 = k1
  let v2 = 0x6c79_6765 ^ k0
  let v3 = 0x7465_6462 ^ k1
  const words = n >>> 2
  const at = n & ~3
  // The last block: the length's low byte on top, the 0-3 bytes left below it.
  const left = n & 3
  let last = n << 24
  if (left > 2) last |= b[at + 2]! << 16
  if (left > 1) last |= b[at + 1]! << 8
  if (left > 0) last |= b[at]!
  // One loop for both phases, so the round is written once: a round per word, one for
  // the last block, then `v2 ^= 0xff` and three rounds on a zero block (xor with 0 is
  // nothing, as the finalization wants).
  for (let i = 0; i < words + 4; i++) {
    const m = i < words ? w[i]! : i === words ? last : 0
    if (i === words + 1) v2 ^= 0xff
    v3 ^= m
    v0 = (v0 + v1) | 0
    v1 = (v1 << 5) | (v1 >>> 27)
    v1 ^= v0
    v0 = (v0 << 16) | (v0 >>> 16)
    v2 = (v2 + v3) | 0
    v3 = (v3 << 8) | (v3 >>> 24)
    v3 ^= v2
    v0 = (v0 + v3) | 0
    v3 = (v3 << 7) | (v3 >>> 25)
    v3 ^= v0
    v2 = (v2 + v1) | 0
    v1 = (v1 << 13) | (v1 >>> 19)
    v1 ^= v2
    v2 = (v2 << 16) | (v2 >>> 16)
    v0 ^= m
  }
  return v1 ^ v3
}

/** A ttl option: a positive number of milliseconds; `Infinity` is none (0: never expires). */
function checkTtl(value: unknown, what: string): number {
  if (typeof value !== 'number') throw typeError(`${what} must be of type number; got ${describe(value)}`)
  if (value === Infinity) return 0
  if (!(value > 0) || !Number.isFinite(value)) throw rangeError(`${what} must be a positive number of milliseconds, or Infinity; got ${value}`)
  return value
}

interface CheckedOptions {
  coder: Coder
  stripes: number
  log2: number
  maxEntries: number
  maxBytes: number
  ttl: number
}

function checkMapOptions(options: SharedMapOptions | undefined): CheckedOptions {
  const o = checkOptions(options)
  const coder = checkCodec(o.codec)
  const maxEntries = o.maxEntries === undefined ? 0 : checkIndex('maxEntries', o.maxEntries)
  const maxBytes = o.maxBytes === undefined ? 0 : checkIndex('maxBytes', o.maxBytes)
  if (o.maxEntries !== undefined && maxEntries < 1) throw rangeError('The "maxEntries" option must be at least 1')
  if (o.maxBytes !== undefined && maxBytes < 1) throw rangeError('The "maxBytes" option must be at least 1')
  const bounded = maxEntries > 0 || maxBytes > 0
  let stripes = bounded ? 1 : DEFAULT_STRIPES
  if (o.stripes !== undefined) {
    stripes = checkIndex('stripes', o.stripes)
    if (stripes < 1 || stripes > MAX_STRIPES || (stripes & (stripes - 1)) !== 0) throw rangeError(`The "stripes" option must be a power of two from 1 to ${MAX_STRIPES}; got ${stripes}`)
    if (bounded && stripes !== 1) throw rangeError('An LRU-bounded SharedMap (maxEntries, maxBytes) has exactly one stripe: its LRU order is exact')
  }
  const capacity = o.capacity === undefined ? 0 : checkIndex('capacity', o.capacity)
  const per = Math.ceil(capacity / stripes)
  const log2 = Math.max(MIN_LOG2, Math.ceil(Math.log2(Math.max(1, per))))
  if (log2 > MAX_LOG2) throw rangeError(`The "capacity" option must be at most ${stripes * 2 ** MAX_LOG2} with ${stripes} stripe${stripes === 1 ? '' : 's'}; got ${capacity}`)
  const ttl = o.ttl === undefined ? 0 : checkTtl(o.ttl, 'The "ttl" option')
  return { coder, stripes, log2, maxEntries, maxBytes, ttl }
}

/** Whether `v` is a promise or another thenable. */
function isThenable(v: unknown): boolean {
  return (typeof v === 'object' || typeof v === 'function') && v !== null && typeof (v as { then?: unknown }).then === 'function'
}

/** Formats a map in the zeroed 128-byte block at `offset`; the header goes ready last. */
function construct(v: Views, offset: number, o: CheckedOptions): void {
  const array = v.heap.malloc(o.stripes * S.SIZE, 64)
  v.u8.fill(0, array, array + o.stripes * S.SIZE)
  const tables: number[] = []
  try {
    for (let i = 0; i < o.stripes; i++) {
      const s = array + i * S.SIZE
      const tbl = v.heap.malloc(4 << o.log2, 64)
      tables.push(tbl)
      v.u8.fill(0, tbl, tbl + (4 << o.log2))
      v.i32[(s + S.TABLE0) >>> 2] = tbl / UNIT
      v.i32[(s + S.LOG2_0) >>> 2] = o.log2
    }
  } catch (e) {
    // No room (ENOMEM): give back what was taken, so a failed construction leaves nothing.
    for (const t of tables) v.heap.free(t)
    v.heap.free(array)
    throw e
  }
  writeHeader(v, offset, MAGIC, Kind.SHARED_MAP, VERSION, o.coder.id)
  // Drawn into a small array, then stored: randomFillSync takes offsets below 2^31 only.
  const secret = randomFillSync(new Int32Array(2))
  v.i32[(offset + M.SECRET) >>> 2] = secret[0]!
  v.i32[((offset + M.SECRET) >>> 2) + 1] = secret[1]!
  const w = offset >>> 2
  v.i32[w + (M.STRIPES >>> 2)] = o.stripes
  v.i32[w + (M.STRIPE_ARRAY >>> 2)] = array / UNIT
  v.i32[w + (M.FLAGS >>> 2)] = o.maxEntries > 0 || o.maxBytes > 0 ? F.BOUNDED : 0
  v.dv.setFloat64(offset + M.MAX_ENTRIES, o.maxEntries, true)
  v.dv.setFloat64(offset + M.MAX_BYTES, o.maxBytes, true)
  v.dv.setFloat64(offset + M.TTL, o.ttl, true)
  Atomics.store(v.i32, w + (M.STATE >>> 2), 1)
}

/** The SharedMap's layout, for {@link SharedContainer}. */
const TYPE: ContainerType = Object.freeze({ name: 'SharedMap', handle: 'map', magic: MAGIC, kind: Kind.SHARED_MAP, version: VERSION, headerSize: M.SIZE })

registerReviver('SharedMap', (h) => SharedMap.at(memoryOfHandle(h), h.offset))
