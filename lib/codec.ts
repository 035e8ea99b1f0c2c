/**
 * How shared containers turn values into bytes and back ({@link Codec}):
 *
 * - `'v8'` (default): the structured-clone format of `node:v8` `serialize` /
 *   `deserialize` (objects, arrays, Map, Set, Date, BigInt, typed arrays, cycles).
 *   Values made of plain objects, arrays, strings, numbers, booleans, `null` and
 *   `undefined` are written and read by the JavaScript coder below, which produces and
 *   accepts the same wire format (V8's `ValueSerializer`, version 15) several times
 *   faster than the native calls for small values; anything else (and any byte sequence
 *   it does not know) goes through `node:v8` itself. Either way the stored bytes are
 *   what `v8.deserialize` reads.
 * - `'json'`: `JSON.stringify` as UTF-8.
 * - `'string'`: strings only, as UTF-8 (a lone UTF-16 surrogate, which UTF-8 cannot
 *   hold, is a TypeError; `'v8'` keeps it).
 * - `'bytes'`: `Uint8Array`s (any `ArrayBufferView`), stored as they are; reads return
 *   a copy ({@link copyOut}: of 65 bytes to 4 KiB, cut from a shared 8 KiB buffer).
 *
 * Decoding never returns memory that aliases the mapping: the container may free and
 * reuse those bytes the moment its lock is released.
 * @module
 */
import v8 from 'node:v8'
import { markAsUntransferable } from 'node:worker_threads'
import { describe } from './args.js'
import { ShmError, typeError } from './errors.js'
import { decodeUtf8, encodeUtf8Into, LONE_SURROGATE, notWellFormed } from './utf8.js'

/** The codecs containers offer. */
export type Codec = 'v8' | 'json' | 'string' | 'bytes'

/** Codec names by the number stored in a container's header. */
export const CODECS: readonly Codec[] = ['v8', 'json', 'string', 'bytes']

/**
 * A growable scratch buffer encoders write into, reused across calls: its bytes start
 * at offset 0 of their own buffer and come in a multiple of 4, with views for word
 * copies (`words`) and Buffer's native string writes (`buffer`).
 */
export class Scratch {
  bytes = new Uint8Array(256)
  words = new Int32Array(this.bytes.buffer)
  buffer = Buffer.from(this.bytes.buffer)

  /** Makes room for `n` bytes from `at`, keeping what is before `at`. */
  ensure(at: number, n: number): void {
    if (at + n <= this.bytes.length) return
    let size = this.bytes.length * 2
    while (size < at + n) size *= 2
    const b = new Uint8Array(size)
    b.set(this.bytes.subarray(0, at))
    this.bytes = b
    this.words = new Int32Array(b.buffer)
    this.buffer = Buffer.from(b.buffer)
  }
}

/** This thread's buffer for values being encoded. */
const valueScratch = new Scratch()
/** Encodings under way on this thread (a getter the coder runs may store into a container). */
let encoding = 0
/** Where {@link encodeValue} left its bytes last. */
export let encoded = valueScratch

/**
 * Encodes `value` with `coder` into this thread's value buffer, or into a fresh one when
 * another encoding is under way here (a getter being encoded stores into a container):
 * returns the byte count, the bytes are in {@link encoded} until the next encoding. A
 * container uses them before it runs any code of the caller's.
 * @throws TypeError for a value the codec cannot store (`what` names it)
 */
export function encodeValue(coder: Coder, value: unknown, what: string): number {
  const out = encoding === 0 ? valueScratch : new Scratch()
  encoding++
  try {
    const n = coder.encode(value, out, what)
    encoded = out
    return n
  } finally {
    encoding--
  }
}

/** Encodes and decodes values of one codec. */
export interface Coder {
  readonly name: Codec
  /** Its number in container headers (index in {@link CODECS}). */
  readonly id: number
  /**
   * Writes `value` into `out` from offset 0; returns the byte count.
   * @throws TypeError for a value the codec cannot store (`what` names it)
   */
  encode(value: unknown, out: Scratch, what: string): number
  /**
   * Reads the value stored in `bytes[start, end)`.
   * @throws ShmError `ERR_SHM_CORRUPT` for bytes that are not a value of this codec
   */
  decode(bytes: Uint8Array, start: number, end: number): unknown
  /**
   * {@link decode} for bytes that may be changing while it reads them (an optimistic
   * read, validated afterwards): it only reads them, never throws, never hands them to
   * native code that would trust them, and returns {@link UNDECODED} when it cannot tell
   * (the caller then copies the bytes out, validates, and calls `decode` on the copy).
   */
  decodeRacy(bytes: Uint8Array, start: number, end: number): unknown
}

/** What {@link Coder.decodeRacy} returns when only `decode` (of a stable copy) can tell. */
export const UNDECODED: unique symbol = Symbol('undecoded')

/** The coder of codec `name`. */
export function coderFor(name: Codec): Coder {
  return CODERS[CODECS.indexOf(name)]
}

/** The coder stored as `id` in a container header, or `undefined` for an unknown id. */
export function coderById(id: number): Coder | undefined {
  return CODERS[id]
}

/** Checks a `codec` option and returns its coder (`'v8'` when undefined). */
export function checkCodec(value: unknown): Coder {
  if (value === undefined) return CODERS[0]
  const i = CODECS.indexOf(value as Codec)
  if (i < 0) throw typeError(`The "codec" option must be one of ${CODECS.map((c) => `'${c}'`).join(', ')}; got ${describe(value)}`)
  return CODERS[i]
}

function corrupt(what: string): ShmError {
  return new ShmError(`corrupt container data: ${what}`, { code: 'ERR_SHM_CORRUPT' })
}

// ---- 'v8': V8's ValueSerializer format ----

/** Tags of V8's ValueSerializer wire format (src/objects/value-serializer.cc). */
const enum Tag {
  Version = 0xff,
  Padding = 0x00,
  VerifyObjectCount = 0x3f, // '?'
  TheHole = 0x2d, // '-'
  Undefined = 0x5f, // '_'
  Null = 0x30, // '0'
  True = 0x54, // 'T'
  False = 0x46, // 'F'
  Int32 = 0x49, // 'I'
  Uint32 = 0x55, // 'U'
  Double = 0x4e, // 'N'
  Utf8String = 0x53, // 'S'
  OneByteString = 0x22, // '"'
  TwoByteString = 0x63, // 'c'
  BeginObject = 0x6f, // 'o'
  EndObject = 0x7b, // '{'
  BeginSparseArray = 0x61, // 'a'
  EndSparseArray = 0x40, // '@'
  BeginDenseArray = 0x41, // 'A'
  EndDenseArray = 0x24, // '$'
}

/** The format version this Node writes (the second byte of `v8.serialize(x)`). */
const VERSION = v8.serialize(null)[1]
/** Objects (and arrays) the JavaScript coder follows in one value; beyond, node:v8. */
const MAX_OBJECTS = 64
/** Longest array the JavaScript coder writes; longer ones (the whole value) go to node:v8. */
const MAX_ARRAY = 256
/** Nesting the JavaScript decoder follows; beyond, node:v8. */
const MAX_DEPTH = 64
/**
 * Strings up to this many characters are written and read by JavaScript loops when they
 * are Latin-1; longer ones by Buffer's native latin1 calls (a fixed cost of a few dozen
 * nanoseconds, against a few per character for the loops).
 */
const SHORT_STRING = 16

const EMPTY = new Uint8Array(0)

/** Thrown inside the JavaScript coder: let node:v8 do this value. */
const FALLBACK = Symbol('fallback')

/** Matches a string that is not Latin-1: at once for a string V8 keeps as one byte per character. */
const NOT_LATIN1 = /[^\0-\xff]/

/** 8 bytes to move doubles through (no DataView per call). */
const f64 = new Float64Array(1)
const f64Bytes = new Uint8Array(f64.buffer)

/**
 * Writes a value as V8's `ValueSerializer` does. Each method first makes room for what
 * it writes (`room`), then stores bytes into `b` directly.
 */
class V8Writer {
  out!: Scratch
  /** `out.bytes`, refreshed whenever it grows. */
  b: Uint8Array = EMPTY
  busy = false
  pos = 0
  /** Objects entered so far in this value (`seen[0, seenCount)`). */
  seen: object[] = []
  seenCount = 0

  /** Makes room for `n` more bytes at `pos`. */
  room(n: number): void {
    if (this.pos + n > this.b.length) {
      this.out.ensure(this.pos, n)
      this.b = this.out.bytes
    }
  }

  /** A tag byte (room made). */
  byte(t: number): void {
    this.room(1)
    this.b[this.pos++] = t
  }

  /** A base-128 varint at `pos` (room for 5 bytes made by the caller). */
  varint(n: number): void {
    const b = this.b
    let p = this.pos
    while (n >= 0x80) {
      b[p++] = (n & 0x7f) | 0x80
      n >>>= 7
    }
    b[p++] = n
    this.pos = p
  }

  string(s: string): void {
    const n = s.length
    if (n <= SHORT_STRING) {
      // One pass: tag, one-byte length, the characters while they are Latin-1 (V8 writes
      // one-byte strings so); back out at the first that is not.
      this.room(2 + n)
      const b = this.b
      const p = this.pos
      b[p] = Tag.OneByteString
      b[p + 1] = n
      let i = 0
      for (; i < n; i++) {
        const c = s.charCodeAt(i)
        if (c > 0xff) break
        b[p + 2 + i] = c
      }
      if (i === n) {
        this.pos = p + 2 + n
        return
      }
    } else if (!NOT_LATIN1.test(s)) {
      this.room(6 + n)
      this.b[this.pos++] = Tag.OneByteString
      this.varint(n)
      this.out.buffer.write(s, this.pos, n, 'latin1')
      this.pos += n
      return
    }
    // Others as UTF-8 ('S'), which V8 reads too and which is compact for the usual
    // mostly-ASCII text. Leave room for a 5-byte varint; move the bytes down if it is
    // shorter.
    this.room(6 + 3 * n)
    const b = this.b
    const lenAt = this.pos + 1
    const w = encodeUtf8Into(s, b, lenAt + 5)
    // A lone surrogate: node:v8 keeps it (as a two-byte string); UTF-8 cannot.
    if (w === LONE_SURROGATE) throw FALLBACK
    const lenBytes = varintSize(w)
    b[this.pos] = Tag.Utf8String
    if (lenBytes !== 5) b.copyWithin(lenAt + lenBytes, lenAt + 5, lenAt + 5 + w)
    this.pos = lenAt
    this.varint(w)
    this.pos += w
  }

  value(v: unknown): void {
    switch (typeof v) {
      case 'string':
        return this.string(v)
      case 'number': {
        this.room(9)
        const b = this.b
        if ((v | 0) === v && !(v === 0 && 1 / v < 0)) {
          b[this.pos++] = Tag.Int32
          this.varint(((v << 1) ^ (v >> 31)) >>> 0)
        } else {
          const p = this.pos
          b[p] = Tag.Double
          f64[0] = v
          for (let i = 0; i < 8; i++) b[p + 1 + i] = f64Bytes[i]
          this.pos = p + 9
        }
        return
      }
      case 'boolean':
        return this.byte(v ? Tag.True : Tag.False)
      case 'undefined':
        return this.byte(Tag.Undefined)
      case 'object':
        if (v === null) return this.byte(Tag.Null)
        return this.object(v)
      default:
        throw FALLBACK
    }
  }

  object(o: object): void {
    const seen = this.seen
    const n = this.seenCount
    // A second reference to one object (or a cycle) needs V8's back-references.
    if (n >= MAX_OBJECTS) throw FALLBACK
    for (let i = 0; i < n; i++) if (seen[i] === o) throw FALLBACK
    seen[n] = o
    this.seenCount = n + 1
    const proto = Object.getPrototypeOf(o)
    if (Array.isArray(o)) {
      if (proto !== Array.prototype) throw FALLBACK
      const a = o as unknown[]
      const len = a.length
      if (len > MAX_ARRAY) throw FALLBACK
      this.room(6)
      this.b[this.pos++] = Tag.BeginDenseArray
      this.varint(len)
      let present = 0
      for (let i = 0; i < len; i++) {
        const x = a[i]
        if (x === undefined && !(i in a)) {
          this.byte(Tag.TheHole)
        } else {
          present++
          this.value(x)
        }
      }
      // Named properties on an array (a RegExp match's `index`, ...) are cloned too:
      // node:v8 writes those. (Object.keys is the cheapest way to see them; long arrays
      // go to node:v8 directly, whose per-element cost wins there anyway.)
      if (Object.keys(a).length !== present) throw FALLBACK
      this.room(11)
      this.b[this.pos++] = Tag.EndDenseArray
      this.varint(0)
      this.varint(len)
      return
    }
    if (proto !== Object.prototype && proto !== null) throw FALLBACK
    this.byte(Tag.BeginObject)
    let count = 0
    const r = o as Record<string, unknown>
    for (const k in r) {
      this.string(k)
      this.value(r[k])
      count++
    }
    this.room(6)
    this.b[this.pos++] = Tag.EndObject
    this.varint(count)
  }
}

/** Whether Object.prototype has no enumerable property (for-in over a plain object yields its own only). */
function prototypeClean(): boolean {
  for (const _ in Object.prototype) return false
  return true
}

const fcc = String.fromCharCode

/** The Latin-1 string `b[at, at + n)`, built without a native call (n ≤ 64). */
function latin1(b: Uint8Array, at: number, n: number): string {
  let s = ''
  while (n > 8) {
    s += fcc(b[at], b[at + 1], b[at + 2], b[at + 3], b[at + 4], b[at + 5], b[at + 6], b[at + 7])
    at += 8
    n -= 8
  }
  switch (n) {
    case 0:
      return s
    case 1:
      return s + fcc(b[at])
    case 2:
      return s + fcc(b[at], b[at + 1])
    case 3:
      return s + fcc(b[at], b[at + 1], b[at + 2])
    case 4:
      return s + fcc(b[at], b[at + 1], b[at + 2], b[at + 3])
    case 5:
      return s + fcc(b[at], b[at + 1], b[at + 2], b[at + 3], b[at + 4])
    case 6:
      return s + fcc(b[at], b[at + 1], b[at + 2], b[at + 3], b[at + 4], b[at + 5])
    case 7:
      return s + fcc(b[at], b[at + 1], b[at + 2], b[at + 3], b[at + 4], b[at + 5], b[at + 6])
    default:
      return s + fcc(b[at], b[at + 1], b[at + 2], b[at + 3], b[at + 4], b[at + 5], b[at + 6], b[at + 7])
  }
}

/** Property names up to this many bytes are cached. */
const KEY_CACHE_LENGTH = 32
const keyCache: string[] = new Array<string>(4096).fill('')

/** The Latin-1 string `b[at, at + n)` from the key cache (n ≤ {@link KEY_CACHE_LENGTH}). */
function cachedKey(b: Uint8Array, at: number, n: number): string {
  let h = n
  for (let i = 0; i < n; i++) h = Math.imul(h ^ b[at + i], 0x01000193)
  const slot = (h ^ (h >>> 15)) & 4095
  const hit = keyCache[slot]
  if (hit.length === n && sameLatin1(hit, b, at, n)) return hit
  const s = latin1(b, at, n)
  keyCache[slot] = s
  return s
}

/** Whether the Latin-1 string `s` (of length `n`) is the bytes `b[at, at + n)`. */
function sameLatin1(s: string, b: Uint8Array, at: number, n: number): boolean {
  for (let i = 0; i < n; i++) if (s.charCodeAt(i) !== b[at + i]) return false
  return true
}

function varintSize(n: number): number {
  return n < 0x80 ? 1 : n < 0x4000 ? 2 : n < 0x200000 ? 3 : n < 0x10000000 ? 4 : 5
}

// ---- Shapes: building decoded objects the way V8 builds object literals ----
//
// Assigning properties one by one (`o[k] = v` with a different `k` each time) is a
// megamorphic keyed store per property, and the commonest cost of decoding. Decoded
// objects mostly come in a few shapes (the same property names in the same order), so
// the reader follows a tree of the name sequences it has met, and once a shape has
// been built often enough it gets a constructor made of one object literal
// (`{"id": s[b + 1], "name": s[b + 3]}`): the same hidden class every time, built in one
// step, and no setter of `Object.prototype` runs (a literal defines its properties, as
// V8's deserializer does). Property names are embedded with JSON.stringify (a valid
// string literal); `__proto__` (which a literal would treat as the prototype) and
// anything unusual use the generic path.

/** Shapes made at most, process-wide: beyond, objects of new shapes are built generically. */
const MAX_SHAPES = 4096
/** Objects a shape builds generically before it gets a constructor. */
const SHAPE_WARMUP = 8
/** Most properties a shape constructor takes. */
const MAX_SHAPE_KEYS = 64

type Make = (s: unknown[], b: number) => Record<string, unknown>
/** Makes a fresh object of a shape from a plan's values (`from` copies those that are plans). */
type Copier = (v: readonly unknown[], from: (p: Plan) => unknown) => Record<string, unknown>

let shapes = 0
/** `false` once code generation turned out to be disallowed (`--disallow-code-generation-from-strings`). */
let canCompile = true

/** A sequence of property names, as a node of the tree of sequences met so far. */
class Shape {
  readonly keys: readonly string[]
  /** The transition taken last: next name and where it leads (checked first, by identity). */
  k = ''
  next: Shape | null = null
  /** Every transition. */
  more: Map<string, Shape> | null = null
  /** Objects built of this shape so far (until it gets a constructor). */
  built = 0
  make: Make | null = null
  /** Copiers of plans of this shape, by the kinds of their values (see {@link planNode}). */
  copiers: Map<string, Copier | null> | null = null

  constructor(keys: readonly string[]) {
    this.keys = keys
  }

  /** The shape of these names and then `k`, or null when no more shapes may be made. */
  to(k: string): Shape | null {
    let s = this.more?.get(k)
    if (s === undefined) {
      if (shapes >= MAX_SHAPES || this.keys.length >= MAX_SHAPE_KEYS) return null
      shapes++
      s = new Shape([...this.keys, k])
      ;(this.more ??= new Map()).set(k, s)
    }
    this.k = k
    this.next = s
    return s
  }

  /** Counts one object built generically; makes the constructor once warm. */
  warm(): void {
    if (++this.built >= SHAPE_WARMUP) this.compile()
  }

  /** The constructor, made now if it was not (null if it cannot be). */
  compile(): Make | null {
    if (this.make !== null || this.built === -Infinity || !canCompile) return this.make
    this.built = -Infinity // one attempt
    const keys = this.keys
    if (keys.includes('__proto__') || new Set(keys).size !== keys.length) return null
    const body = keys.map((k, i) => `${JSON.stringify(k)}: s[b + ${2 * i + 1}]`).join(', ')
    try {
      this.make = new Function('s', 'b', `'use strict'; return { ${body} }`) as Make
    } catch {
      canCompile = false
    }
    return this.make
  }

  /**
   * The copier for plans of this shape whose values are of `kinds` (one letter each:
   * `V` a primitive, `F` an array of primitives, `P` a plan), made on first use; null
   * if it cannot be.
   */
  copier(kinds: string): Copier | null {
    const copiers = (this.copiers ??= new Map())
    let c = copiers.get(kinds)
    if (c !== undefined) return c
    c = null
    if (this.compile() !== null && copiers.size < 16) {
      const body = this.keys.map((k, i) => `${JSON.stringify(k)}: ${kinds[i] === 'V' ? `v[${i}]` : kinds[i] === 'F' ? `v[${i}].slice()` : `from(v[${i}])`}`).join(', ')
      try {
        c = new Function('v', 'from', `'use strict'; return { ${body} }`) as Copier
      } catch {
        canCompile = false
      }
    }
    copiers.set(kinds, c)
    return c
  }
}

const ROOT_SHAPE = new Shape([])

/** Names and values of the objects being decoded: `[name, value, name, value, ...]` per object. */
const stack: unknown[] = []

/** Gives `o` the own data property `k` (never a setter of its prototype chain; `__proto__` too). */
function defineOwn(o: Record<string | number, unknown>, k: string | number, v: unknown): void {
  if (k in o) Object.defineProperty(o, k, { value: v, enumerable: true, writable: true, configurable: true })
  else o[k] = v
}

/**
 * Reads V8's `ValueSerializer` format for the values the writer writes (and a little
 * more); throws {@link FALLBACK} for anything else, and for bytes it cannot make sense
 * of. Every read is checked against `end`, and nothing it builds is larger than the
 * bytes it reads, so any bytes (hostile, or changing under it) cost at most a pass over
 * them.
 */
class V8Reader {
  b: Uint8Array = EMPTY
  pos = 0
  end = 0
  busy = false
  /** Where this reader's objects start on {@link stack}. */
  sp = 0

  /** A Buffer over `b`'s bytes (same offsets), made once per value read. */
  #buffer: Buffer | null = null

  /** Starts reading `b[start, end)`. */
  reset(b: Uint8Array, start: number, end: number): void {
    this.b = b
    this.pos = start
    this.end = end
    this.#buffer = null
  }

  buffer(): Buffer {
    return (this.#buffer ??= Buffer.from(this.b.buffer, this.b.byteOffset, this.b.length))
  }

  u8(): number {
    if (this.pos >= this.end) throw FALLBACK
    return this.b[this.pos++]
  }

  varint(): number {
    let r = 0
    let shift = 0
    for (;;) {
      const x = this.u8()
      if (shift === 28) {
        if (x > 0x0f) throw FALLBACK
        return (r | (x << 28)) >>> 0
      }
      r |= (x & 0x7f) << shift
      if (x < 0x80) return r >>> 0
      shift += 7
    }
  }

  take(n: number): number {
    const at = this.pos
    if (n > this.end - at) throw FALLBACK
    this.pos = at + n
    return at
  }

  value(depth: number): unknown {
    if (depth > MAX_DEPTH) throw FALLBACK
    for (;;) {
      const tag = this.u8()
      switch (tag) {
        case Tag.Padding:
          continue
        case Tag.VerifyObjectCount:
          this.varint()
          continue
        case Tag.Undefined:
          return undefined
        case Tag.Null:
          return null
        case Tag.True:
          return true
        case Tag.False:
          return false
        case Tag.Int32: {
          const z = this.varint()
          return (z >>> 1) ^ -(z & 1)
        }
        case Tag.Uint32:
          return this.varint()
        case Tag.Double: {
          const at = this.take(8)
          const b = this.b
          for (let i = 0; i < 8; i++) f64Bytes[i] = b[at + i]
          return f64[0]
        }
        case Tag.OneByteString: {
          const n = this.varint()
          const at = this.take(n)
          if (n <= SHORT_STRING) return latin1(this.b, at, n)
          return this.buffer().toString('latin1', at, at + n)
        }
        case Tag.Utf8String: {
          const n = this.varint()
          const at = this.take(n)
          return decodeUtf8(this.b, at, at + n)
        }
        case Tag.TwoByteString: {
          const n = this.varint()
          if (n % 2 !== 0) throw FALLBACK
          const at = this.take(n)
          return this.buffer().toString('utf16le', at, at + n)
        }
        case Tag.BeginObject:
          return this.object(depth)
        case Tag.BeginDenseArray: {
          const n = this.varint()
          if (n > this.end - this.pos) throw FALLBACK // every element takes a byte at least
          const a: unknown[] = []
          for (let i = 0; i < n; i++) {
            if (this.pos < this.end && this.b[this.pos] === Tag.TheHole) {
              this.pos++
              continue
            }
            a[i] = this.value(depth + 1)
          }
          if (a.length !== n) a.length = n
          this.properties(a as unknown as Record<string, unknown>, Tag.EndDenseArray, depth)
          this.varint()
          this.varint()
          return a
        }
        case Tag.BeginSparseArray: {
          const n = this.varint()
          const a: unknown[] = new Array(n)
          this.properties(a as unknown as Record<string, unknown>, Tag.EndSparseArray, depth)
          this.varint()
          this.varint()
          return a
        }
        default:
          throw FALLBACK
      }
    }
  }

  /** The name of the next property: short Latin-1 names from the key cache. */
  key(depth: number): string | number {
    const b = this.b
    const p = this.pos
    const n = p + 1 < this.end && b[p] === Tag.OneByteString ? b[p + 1] : 0x80
    if (n <= KEY_CACHE_LENGTH) {
      this.pos = p + 2
      return cachedKey(b, this.take(n), n)
    }
    const x = this.value(depth + 1)
    if (typeof x !== 'string' && typeof x !== 'number') throw FALLBACK
    return x
  }

  /** An object (after its tag): its properties to the end tag, then built by its shape. */
  object(depth: number): Record<string, unknown> {
    const base = this.sp
    let sp = base
    let shape: Shape | null = ROOT_SHAPE
    const b = this.b
    try {
      for (;;) {
        while (this.pos < this.end && b[this.pos] === Tag.Padding) this.pos++
        const p = this.pos
        if (p < this.end && b[p] === Tag.EndObject) {
          this.pos = p + 1
          break
        }
        let k: string | number
        // The name this shape was followed by last time, compared in place: no hashing.
        const expect = shape === null ? '' : shape.k
        const n = expect.length
        if (n !== 0 && n <= KEY_CACHE_LENGTH && p + 2 + n <= this.end && b[p] === Tag.OneByteString && b[p + 1] === n && sameLatin1(expect, b, p + 2, n)) {
          this.pos = p + 2 + n
          k = expect
          shape = (shape as Shape).next
        } else {
          k = this.key(depth)
          shape = shape !== null && typeof k === 'string' ? shape.to(k) : null
        }
        stack[sp] = k
        this.sp = sp + 2
        const v = this.value(depth + 1)
        stack[sp + 1] = v
        sp += 2
      }
      this.varint()
      let o: Record<string, unknown>
      if (shape !== null && shape.make !== null) {
        o = shape.make(stack, base)
      } else {
        o = {}
        for (let i = base; i < sp; i += 2) defineOwn(o, stack[i] as string | number, stack[i + 1])
        shape?.warm()
      }
      return o
    } finally {
      // Keep no references to decoded values (nor to a half-decoded pair).
      for (let i = base; i < sp + 2; i++) stack[i] = undefined
      this.sp = base
    }
  }

  /** Reads key/value pairs into `o` up to (and including) the `end` tag (arrays' named properties). */
  properties(o: Record<string, unknown>, end: number, depth: number): void {
    for (;;) {
      while (this.pos < this.end && this.b[this.pos] === Tag.Padding) this.pos++
      if (this.pos < this.end && this.b[this.pos] === end) {
        this.pos++
        return
      }
      const k = this.key(depth)
      defineOwn(o, k, this.value(depth + 1))
    }
  }
}

// ---- Plans: fresh copies of a decoded value without decoding it again ----
//
// A container that reads the same bytes again (a map entry that did not change) can
// keep how to rebuild what it decoded: primitives as they are (strings are immutable),
// arrays of primitives as a master copy to `slice()`, objects as their shape's
// constructor and plans of their values. What that builds is what decoding builds (the
// same kinds of objects, the same hidden classes, the same property order), without a
// pass over the bytes or a string made anew.

const enum PlanKind {
  /** A primitive: the value itself. */
  Value,
  /** An array of primitives, no holes: `slice()` of the master copy. */
  Flat,
  /** An array with objects in it, no holes: its elements' plans. */
  Array,
  /** A plain object: its shape's copier and its values (primitives, master arrays, plans). */
  Object,
}

/** How to make a fresh copy of a value (see {@link planOf}); holds no object the caller has. */
export class Plan {
  /** @internal */
  constructor(
    readonly kind: PlanKind,
    /** Value: the primitive; Flat: the master array; Object: the values, as the copier takes them. */
    readonly value: unknown,
    readonly copy: Copier | null,
    /** Array: the elements' plans. */
    readonly kids: readonly Plan[] | null,
  ) {}
}

/** Objects and arrays a plan may hold (a larger value is decoded each time). */
const MAX_PLAN_NODES = 64
let planNodes = 0

/**
 * A plan for fresh copies of `value`, a value a coder decoded (plain objects and arrays,
 * primitives), or null when it has anything else (or is too large). The plan keeps no
 * reference to `value`'s objects: the caller may hand `value` out.
 */
export function planOf(value: unknown): Plan | null {
  planNodes = 0
  return planNode(value, 0)
}

function planNode(v: unknown, depth: number): Plan | null {
  if (typeof v !== 'object' || v === null) return typeof v === 'function' ? null : new Plan(PlanKind.Value, v, null, null)
  if (++planNodes > MAX_PLAN_NODES || depth > MAX_DEPTH) return null
  if (Array.isArray(v)) {
    if (Object.getPrototypeOf(v) !== Array.prototype) return null
    const a = v as unknown[]
    const n = a.length
    let flat = true
    for (let i = 0; i < n; i++) {
      if (!(i in a)) return null // holes: rare; decoding keeps them
      const x = a[i]
      if (typeof x === 'object' && x !== null) flat = false
    }
    if (Object.keys(a).length !== n) return null // named properties
    if (flat) return new Plan(PlanKind.Flat, a.slice(), null, null)
    const kids: Plan[] = []
    for (let i = 0; i < n; i++) {
      const k = planNode(a[i], depth + 1)
      if (k === null) return null
      kids.push(k)
    }
    return new Plan(PlanKind.Array, null, null, kids)
  }
  if (Object.getPrototypeOf(v) !== Object.prototype) return null
  const o = v as Record<string, unknown>
  const keys = Object.keys(o)
  let shape: Shape | null = ROOT_SHAPE
  for (let i = 0; i < keys.length && shape !== null; i++) shape = shape.to(keys[i])
  if (shape === null) return null
  const values: unknown[] = []
  let kinds = ''
  for (const k of keys) {
    const d = Object.getOwnPropertyDescriptor(o, k)
    if (d === undefined || !('value' in d)) return null
    const p = planNode(d.value, depth + 1)
    if (p === null) return null
    // Primitives and flat arrays go in as they are (the copier slices the arrays).
    if (p.kind === PlanKind.Value || p.kind === PlanKind.Flat) {
      values.push(p.value)
      kinds += p.kind === PlanKind.Value ? 'V' : 'F'
    } else {
      values.push(p)
      kinds += 'P'
    }
  }
  const copy = shape.copier(kinds)
  return copy === null ? null : new Plan(PlanKind.Object, values, copy, null)
}

/** A fresh copy of the value `p` was made of. */
export function fromPlan(p: Plan): unknown {
  switch (p.kind) {
    case PlanKind.Value:
      return p.value
    case PlanKind.Flat:
      return (p.value as unknown[]).slice()
    case PlanKind.Array: {
      const kids = p.kids as readonly Plan[]
      const a: unknown[] = []
      for (let i = 0; i < kids.length; i++) a.push(fromPlan(kids[i]))
      return a
    }
    default:
      return (p.copy as Copier)(p.value as unknown[], fromPlan)
  }
}

const writer = new V8Writer()
const reader = new V8Reader()

/**
 * Decodes `bytes[start, end)` with the JavaScript reader; {@link UNDECODED} when it
 * cannot (a type it does not read, or bytes it cannot make sense of).
 */
function readV8(bytes: Uint8Array, start: number, end: number): unknown {
  const r = reader.busy ? new V8Reader() : reader
  r.busy = true
  r.reset(bytes, start, end)
  try {
    if (r.u8() !== Tag.Version) return UNDECODED
    r.varint()
    const v = r.value(0)
    return r.pos === end ? v : UNDECODED
  } catch {
    // FALLBACK, or bytes that made a property store throw (an array `length` of -1):
    // node:v8 decides.
    return UNDECODED
  } finally {
    // Hold no reference to the mapping between calls (it may be closed and collected).
    r.reset(EMPTY, 0, 0)
    r.busy = false
  }
}

const v8Coder: Coder = {
  name: 'v8',
  id: 0,
  encode(value, out, what) {
    // A getter run while encoding may store into a container too: it gets its own writer.
    const w = writer.busy ? new V8Writer() : writer
    w.busy = true
    w.out = out
    w.b = out.bytes
    w.pos = 0
    try {
      w.room(2)
      w.b[0] = Tag.Version
      w.b[1] = VERSION
      w.pos = 2
      // The writer walks objects with for-in, which also yields enumerable properties
      // of Object.prototype: a polluted prototype would become own properties of the
      // stored copy. node:v8 clones own properties only.
      if (typeof value === 'object' && value !== null && !prototypeClean()) throw FALLBACK
      w.value(value)
      return w.pos
    } catch (e) {
      if (e !== FALLBACK) throw e
    } finally {
      // Keep no reference to the caller's objects.
      for (let i = 0; i < w.seenCount; i++) w.seen[i] = EMPTY
      w.seenCount = 0
      w.b = EMPTY
      w.busy = false
    }
    if (nestedDeeper(value, MAX_NESTING)) {
      throw typeError(`${what} is nested more than ${MAX_NESTING} levels deep: the 'v8' codec could not read it back (node:v8 writes deeper values than it reads)`)
    }
    let b: Buffer
    try {
      b = v8.serialize(value)
    } catch (e) {
      throw typeError(`${what} cannot be stored with the 'v8' codec (structured clone): ${(e as Error).message}`)
    }
    out.ensure(0, b.length)
    out.bytes.set(b)
    return b.length
  },
  decode(bytes, start, end) {
    const v = readV8(bytes, start, end)
    if (v !== UNDECODED) return v
    try {
      return deserializeOwned(bytes.subarray(start, end))
    } catch (e) {
      // The reader's own stack, not the bytes: the value reads from a shallower call.
      if (isStackOverflow(e)) throw e
      throw corrupt(`a 'v8' value does not deserialize in Node ${process.version} (${(e as Error).message}): damaged, or written by another Node version with a kind of value this one cannot read (docs/containers.md, "Processes on different Node versions")`)
    }
  },
  decodeRacy: readV8,
}


// ---- 'json', 'string', 'bytes' ----

/** Bytes of each buffer {@link copyOut} cuts copies from. */
const POOL_BYTES = 8192
/** The largest copy cut from it; V8 keeps arrays of up to this many bytes in its heap. */
const HEAP_BYTES = 64
let pool = newPool()
let poolUsed = 0

function newPool(): ArrayBuffer {
  const b = new ArrayBuffer(POOL_BYTES)
  // As Node's own Buffer pool: a transfer list naming it clones it instead of taking it
  // (Node 20; later versions throw), so one value cannot detach the others.
  markAsUntransferable(b)
  return b
}

/**
 * node:v8's deserializer, except that no typed array it returns shares memory with
 * anything else: Node's makes an aligned typed array a view of the buffer it reads (here
 * a copy of the stored bytes, which the caller then owns) and copies an unaligned one
 * into Buffer's shared 8 KiB pool, next to other modules' Buffers; those get a buffer of
 * their own.
 */
class OwnedDeserializer extends v8.DefaultDeserializer {
  _readHostObject(): unknown {
    const r = (v8.DefaultDeserializer.prototype as unknown as { _readHostObject(this: OwnedDeserializer): unknown })._readHostObject.call(this)
    const input = (this as unknown as { buffer: Uint8Array }).buffer
    if (ArrayBuffer.isView(r) && !(r instanceof DataView) && r.buffer !== input.buffer) return (r as unknown as Uint16Array).slice()
    return r
  }
}

/**
 * The most levels of nesting a `'v8'` value may have. node:v8 writes values nested far
 * deeper than it reads back (objects: Node 20–26 write 3,100–3,700 levels and read
 * 1,600–2,500 from a fresh stack, fewer from a deep one), so a deeper value would be
 * stored and then never read.
 */
export const MAX_NESTING = 1000

/**
 * Whether `value` nests objects more than `limit` levels deep, counted as node:v8's
 * writer recurses: depth first in property order, an object met again adding no level.
 * Reads own enumerable properties (getters run again), array elements, `Map` keys and
 * values, `Set` values; other objects are leaves.
 */
function nestedDeeper(value: unknown, limit: number): boolean {
  const seen = new Set<object>()
  const stack: unknown[] = [value, 1]
  while (stack.length !== 0) {
    const depth = stack.pop() as number
    const v = stack.pop()
    if (typeof v !== 'object' || v === null || seen.has(v)) continue
    if (depth > limit) return true
    seen.add(v)
    const children: unknown[] = []
    if (Array.isArray(v)) {
      for (let i = 0; i < v.length; i++) children.push(v[i])
    } else if (v instanceof Map) {
      for (const [k, x] of v) children.push(k, x)
    } else if (v instanceof Set) {
      for (const x of v) children.push(x)
    } else if (!ArrayBuffer.isView(v) && !(v instanceof ArrayBuffer) && !(v instanceof Date) && !(v instanceof RegExp)) {
      for (const k of Object.keys(v)) children.push((v as Record<string, unknown>)[k])
    }
    // First child on top: the same order as the writer's.
    for (let i = children.length - 1; i >= 0; i--) stack.push(children[i], depth + 1)
  }
  return false
}

/** Whether `e` is V8's stack overflow (a `RangeError`), not a fault of the bytes read. */
export function isStackOverflow(e: unknown): boolean {
  return e instanceof RangeError && /call stack/.test(e.message)
}

/** `v8.deserialize` of a private copy of `bytes`, with {@link OwnedDeserializer}. */
function deserializeOwned(bytes: Uint8Array): unknown {
  const d = new OwnedDeserializer(new Uint8Array(bytes))
  d.readHeader()
  return d.readValue()
}

/**
 * A copy of `bytes[start, end)`, as a `Uint8Array`. V8 makes every `ArrayBuffer` over 64
 * bytes outside its heap, at 0.3–1.3 µs each here (most of a small container read), so
 * copies of 65 bytes to 4 KiB are cut from a shared 8 KiB buffer instead, as
 * `Buffer.allocUnsafe` does: their `.buffer` is that buffer (mind `byteOffset`), which
 * stays alive while any of them does.
 */
export function copyOut(bytes: Uint8Array, start: number, end: number): Uint8Array<ArrayBuffer> {
  const n = end - start
  if (n <= HEAP_BYTES || n > POOL_BYTES >>> 1) return bytes.slice(start, end)
  if (poolUsed + n > POOL_BYTES) {
    pool = newPool()
    poolUsed = 0
  }
  const out = new Uint8Array(pool, poolUsed, n)
  out.set(bytes.subarray(start, end))
  poolUsed = (poolUsed + n + 7) & ~7
  return out
}

function writeText(s: string, out: Scratch, what: string): number {
  let n = encodeUtf8Into(s, out.bytes, 0)
  if (n === LONE_SURROGATE) throw notWellFormed(s, what, ": the 'v8' codec keeps such strings")
  if (n < 0) {
    out.ensure(0, 3 * s.length)
    n = encodeUtf8Into(s, out.bytes, 0)
  }
  return n
}

const jsonCoder: Coder = {
  name: 'json',
  id: 1,
  encode(value, out, what) {
    let s: string | undefined
    try {
      s = JSON.stringify(value)
    } catch (e) {
      throw typeError(`${what} cannot be stored with the 'json' codec: ${(e as Error).message}`)
    }
    if (s === undefined) throw typeError(`${what} cannot be stored with the 'json' codec: ${describe(value)} has no JSON form`)
    return writeText(s, out, what)
  },
  decode(bytes, start, end) {
    try {
      return JSON.parse(decodeUtf8(bytes, start, end))
    } catch {
      throw corrupt('a \'json\' value does not parse')
    }
  },
  decodeRacy(bytes, start, end) {
    try {
      return JSON.parse(decodeUtf8(bytes, start, end))
    } catch {
      return UNDECODED
    }
  },
}

const stringCoder: Coder = {
  name: 'string',
  id: 2,
  encode(value, out, what) {
    if (typeof value !== 'string') throw typeError(`${what} must be a string with the 'string' codec; got ${describe(value)}`)
    return writeText(value, out, what)
  },
  decode(bytes, start, end) {
    return decodeUtf8(bytes, start, end)
  },
  decodeRacy(bytes, start, end) {
    return decodeUtf8(bytes, start, end)
  },
}

const bytesCoder: Coder = {
  name: 'bytes',
  id: 3,
  encode(value, out, what) {
    // A Uint8Array (or Buffer) as it is: its .buffer would make V8 move a small array's
    // bytes out of its heap first (0.35 us for 57 bytes here).
    let src: Uint8Array
    if (value instanceof Uint8Array) src = value
    else if (ArrayBuffer.isView(value)) src = new Uint8Array(value.buffer, value.byteOffset, value.byteLength)
    else throw typeError(`${what} must be a Uint8Array (or another ArrayBufferView) with the 'bytes' codec; got ${describe(value)}`)
    out.ensure(0, src.length)
    out.bytes.set(src)
    return src.length
  },
  decode: copyOut,
  decodeRacy: copyOut,
}

const CODERS: readonly Coder[] = [v8Coder, jsonCoder, stringCoder, bytesCoder]
