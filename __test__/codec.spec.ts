// The containers' codecs against node:v8 itself: what the JavaScript 'v8' coder writes is
// what v8.deserialize reads back as the same value, and what v8.serialize writes the
// JavaScript reader reads as the same value, over random values (fast-check) and the
// corner cases (-0, NaN, holes, named properties on arrays, lone surrogates, long
// strings). And strings UTF-8 cannot hold (a lone UTF-16 surrogate): TypeErrors wherever
// the library would have to write UTF-8 (keys, the 'string' codec, C strings), never a
// silent U+FFFD; the 'v8' codec keeps them, as structured clone does.
import test, { type ExecutionContext } from 'ava'
import fc from 'fast-check'
import { isDeepStrictEqual } from 'node:util'
import v8 from 'node:v8'
import { coderFor, encoded, encodeValue } from '../dist/codec.js'
import { CBase, cdef, Channel, type Ref, SharedMap, ShmError } from '../dist/index.js'
import { forkChild, managedSegment, throws } from './helpers.js'

const segment = (t: ExecutionContext) => managedSegment(t, 'codec', 1 << 20)
const coder = coderFor('v8')

/** The bytes the JavaScript 'v8' coder writes for `v` (a copy). */
function jsBytes(v: unknown): Uint8Array {
  const n = encodeValue(coder, v, 'The value')
  return encoded.bytes.slice(0, n)
}

/** Any UTF-16 string: ASCII, Latin-1, astral pairs and lone surrogates alike. */
const anyString = fc.oneof(
  fc.string({ maxLength: 24 }),
  fc.array(fc.integer({ min: 0, max: 0xffff }), { maxLength: 40 }).map((units) => String.fromCharCode(...units)),
  fc.array(fc.constantFrom('a', 'é', 'ÿ', '世', '🌍', '\ud800', '\udfff', '\ud83d'), { maxLength: 40 }).map((a) => a.join('')),
)

/** Plain values: what the JavaScript coder writes itself (and a few it hands to node:v8). */
const { value } = fc.letrec((tie) => ({
  value: fc.oneof(
    { depthSize: 'small', withCrossShrink: true },
    anyString,
    fc.integer({ min: -(2 ** 31), max: 2 ** 31 - 1 }),
    fc.double(),
    fc.constantFrom(-0, NaN, Infinity, 2 ** 31, 2 ** 53, -(2 ** 31) - 1),
    fc.boolean(),
    fc.constant(null),
    fc.constant(undefined),
    fc.array(tie('value'), { maxLength: 6 }),
    fc.array(fc.tuple(fc.oneof(anyString, fc.nat({ max: 20 }).map(String)), tie('value')), { maxLength: 6 }).map((entries) => {
      const o: Record<string, unknown> = {}
      // defineProperty: a key "__proto__" is an own property, as v8.deserialize makes it.
      for (const [k, v] of entries) Object.defineProperty(o, k, { value: v, enumerable: true, writable: true, configurable: true })
      return o
    }),
  ),
}))

/** Whether `a` and `b` are the same value, -0, holes and key order included. */
function same(a: unknown, b: unknown): boolean {
  return isDeepStrictEqual(a, b) && JSON.stringify(keysOf(a)) === JSON.stringify(keysOf(b))
}
function keysOf(v: unknown): unknown {
  if (typeof v !== 'object' || v === null) return null
  return Object.keys(v).map((k) => [k, keysOf((v as Record<string, unknown>)[k])])
}

test("the JavaScript 'v8' coder and node:v8 agree both ways on random values", (t) => {
  fc.assert(
    fc.property(value, (v) => {
      const mine = jsBytes(v)
      const theirs = new Uint8Array(v8.serialize(v))
      return (
        same(v8.deserialize(Buffer.from(mine)), v) &&
        same(coder.decode(mine, 0, mine.length), v) &&
        same(coder.decode(theirs, 0, theirs.length), v)
      )
    }),
    { numRuns: 3000, seed: 20261130 },
  )
  t.pass('3000 values, each read back as itself by node:v8 and by the JavaScript reader')
})

test("the corner cases of the 'v8' coder read back exactly, through node:v8 too", (t) => {
  const named = Object.assign(['a', 'b'], { extra: 1 })
  const cases: unknown[] = [
    -0, NaN, 2 ** 31, -(2 ** 31), 2 ** 30,
    // eslint-disable-next-line no-sparse-arrays
    [1, , 3],
    named,
    'x'.repeat(300),
    'é'.repeat(300),
    '\ud800',
    'ab\udfff',
    { k: '\ud83dz', ['\udc00']: 1 },
    ['é世', '\ud800', 'x'.repeat(20) + '\ud800'],
    { nested: { list: [{ x: 1 }, [2, 3]], s: 'é' } },
  ]
  for (const v of cases) {
    const mine = jsBytes(v)
    t.true(same(v8.deserialize(Buffer.from(mine)), v), `node:v8 reads ${JSON.stringify(v)} back`)
    t.true(same(coder.decode(mine, 0, mine.length), v), `the JavaScript reader reads ${JSON.stringify(v)} back`)
  }
  t.is((coder.decode(jsBytes(named), 0, jsBytes(named).length) as typeof named).extra, 1, 'a named property on an array survives')
})

test("typed arrays read back with the 'v8' codec own their memory: never a view of Buffer's shared pool", (t) => {
  const c = coderFor('v8')
  for (const value of [new DataView(new ArrayBuffer(8)), Uint8Array.of(1, 2, 3), { f: new Float32Array([1.5, 2.5]) }]) {
    const n = encodeValue(c, value, 'x')
    const secret = Buffer.from('TOP-SECRET-PASSWORD') // another module's small Buffer (pooled)
    const back = c.decode(encoded.bytes, 0, n) as ArrayBufferView | { f: Float32Array }
    const view = ArrayBuffer.isView(back) ? back : back.f
    t.true(view.buffer.byteLength <= n, `the view's buffer holds this value's bytes only (${view.buffer.byteLength} <= ${n})`)
    t.false(Buffer.from(view.buffer).includes('TOP-SECRET'))
    new Uint8Array(view.buffer).fill(0x41)
    t.is(secret.toString(), 'TOP-SECRET-PASSWORD', 'writing it changes nobody else\'s memory')
  }
})

test("a polluted Object.prototype does not become own properties of stored copies (node:v8 clones own properties only)", (t) => {
  const v = { own: 1, nested: { deep: [{ x: 2 }] } }
  // Synchronous from pollution to cleanup: no other test of this file runs in between.
  ;(Object.prototype as Record<string, unknown>).polluted = 'from the prototype'
  let mine: Uint8Array
  try {
    mine = jsBytes(v)
  } finally {
    delete (Object.prototype as Record<string, unknown>).polluted
  }
  const back = coder.decode(mine, 0, mine.length) as typeof v
  t.true(same(back, v), JSON.stringify(back))
  t.false(Object.hasOwn(back, 'polluted'))
  t.false(Object.hasOwn(back.nested.deep[0]!, 'polluted'))
  t.true(same(v8.deserialize(Buffer.from(mine)), v))
})

test("hostile bytes: the 'v8' reader returns a value or throws ERR_SHM_CORRUPT, nothing else", (t) => {
  const valid = [
    v8.serialize({ id: 1, name: 'x', tags: ['a', 'b'], m: new Map([[1, 2]]), d: new Date(1), big: 10n ** 20n }),
    // eslint-disable-next-line no-sparse-arrays
    v8.serialize(['é世', 1.5, null, { a: { b: [1, , 3] } }, '\ud800', -0]),
  ]
  const outcomes = new Map<string, number>()
  fc.assert(
    fc.property(
      fc.oneof(
        // A valid value with a few bytes changed, maybe cut short.
        fc.tuple(fc.nat({ max: 1 }), fc.array(fc.tuple(fc.nat(), fc.nat({ max: 255 })), { minLength: 1, maxLength: 4 }), fc.option(fc.nat())).map(([which, changes, cut]) => {
          const b = new Uint8Array(valid[which]!)
          for (const [at, byte] of changes) b[2 + (at % (b.length - 2))] = byte
          return cut === null ? b : b.subarray(0, cut % (b.length + 1))
        }),
        // Noise after a valid version header.
        fc.uint8Array({ maxLength: 40 }).map((noise) => Uint8Array.from([0xff, 15, ...noise])),
      ),
      (b) => {
        let outcome = 'a value'
        try {
          coder.decode(b, 0, b.length)
        } catch (e) {
          outcome = (e as { code?: string }).code ?? `${(e as Error).name}: ${(e as Error).message}`
        }
        outcomes.set(outcome, (outcomes.get(outcome) ?? 0) + 1)
        return outcome === 'a value' || outcome === 'ERR_SHM_CORRUPT'
      },
    ),
    { numRuns: 20_000, seed: 20261130 },
  )
  t.true((outcomes.get('ERR_SHM_CORRUPT') ?? 0) > 1000, JSON.stringify([...outcomes]))
  t.true((outcomes.get('a value') ?? 0) > 100, JSON.stringify([...outcomes]))
})

test('lone surrogates: the v8 codec keeps them across processes; UTF-8 places refuse them with a TypeError', async (t) => {
  const mem = segment(t)
  const map = new SharedMap<string, unknown>(mem)
  const value = { s: 'a\ud800b', list: ['\udfff', 'é\ud83d'] }
  map.set('k', value)
  const ch = new Channel<unknown>(mem, { capacity: 4096 })
  ch.send('\ud800')
  // Another process reads them through handles: the very strings (JSON over IPC keeps
  // lone surrogates as \u escapes).
  const child = forkChild(t, 'codec-child.mjs')
  child.proc.send({ map: map.toJSON(), ch: ch.toJSON() })
  const got = await child.message<{ value: unknown; message: unknown }>()
  t.is(await child.exited, 0)
  t.true(same(got.value, value), JSON.stringify(got.value))
  t.is(got.message, '\ud800')

  const lone = { instanceOf: TypeError, message: /lone UTF-16 surrogate \(at index 1\), which UTF-8 cannot hold/ }
  map.set('a\ufffd', 1)
  throws(t, () => map.set('a\ud800', 2), lone, 'a key')
  throws(t, () => map.get('a\udc00'), lone, 'a key to look up')
  t.is(map.get('a\ufffd'), 1, 'the U+FFFD key is untouched')
  const strings = new SharedMap<string, string>(mem, { codec: 'string' })
  throws(t, () => strings.set('k', 'x\ud800'), { ...lone, message: /The "value" argument contains a lone UTF-16 surrogate .*the 'v8' codec keeps such strings/ })
  t.false(strings.has('k'))
  const text = new Channel<string>(mem, { capacity: 4096, codec: 'string' })
  throws(t, () => text.send('x\udfff'), lone, "a 'string' message")
  t.is(text.length, 0)
  throws(t, () => mem.heap.newString('x\ud800'), { ...lone, message: /The "s" argument/ })
  const before = mem.heap.stats().allocations
  throws(t, () => mem.new('char[8]', 'x\ud800'), lone, 'a char[8]')
  t.is(mem.heap.stats().allocations, before, 'nothing left allocated')
  class Named extends CBase<{ name: Ref | null }>(cdef('struct named { char *name; };'), 'struct named') {}
  const Shared = Named.withHeap(mem)
  throws(t, () => Shared.new('x\ud800'), { ...lone, message: /member name/ })
  t.is(Shared.new('é🌍').name?.string(), 'é🌍', 'well-formed strings still go in')
})

/** `{ o: { o: ... 1 } }`, `depth` levels. */
function nested(depth: number): unknown {
  let o: unknown = 1
  for (let i = 0; i < depth; i++) o = { o }
  return o
}

test("'v8': a value nested deeper than node:v8 reads back is a TypeError at set and send, nothing stored; 1,000 levels go and come back", async (t) => {
  // Before: a map took 2,500 levels, and its get, update and iteration threw ERR_SHM_CORRUPT
  // for good; a channel took it and lost it at receive.
  const mem = segment(t)
  const map = new SharedMap(mem)
  const ch = new Channel(mem, { capacity: 1 << 16 })
  for (const depth of [1001, 2500]) {
    throws(t, () => map.set('deep', nested(depth)), { instanceOf: TypeError, message: /nested more than 1000 levels deep/ })
    throws(t, () => ch.send(nested(depth)), { instanceOf: TypeError, message: /nested more than 1000 levels deep/ })
  }
  t.is(map.size, 0)
  t.is(ch.length, 0)
  // A cycle adds no level; a shared object reached again neither.
  const shared = nested(900) as Record<string, unknown>
  const cyclic: Record<string, unknown> = { a: shared, b: shared }
  cyclic.self = cyclic
  map.set('cyclic', cyclic)
  const back = map.get('cyclic') as Record<string, unknown>
  t.is(back.self, back)
  t.is(back.a, back.b)
  map.set('deep', nested(1000))
  ch.send(nested(1000))
  const child = forkChild(t, 'codec-child.mjs')
  child.proc.send({ op: 'depths', map, ch, key: 'deep' })
  t.deepEqual(await child.message(), { map: 1000, ch: 1000 })
})

test("'v8': a read out of stack (called from deep recursion) is the RangeError, not ERR_SHM_CORRUPT; the entry and the message stay for a shallower read", (t) => {
  const mem = segment(t)
  const map = new SharedMap(mem)
  const ch = new Channel(mem, { capacity: 1 << 16 })
  const value = nested(1000)
  map.set('deep', value)
  ch.send(value)
  /** Runs `fn` `frames` calls down; what it threw, or 'ok'. */
  const below = (frames: number, fn: () => unknown): unknown => {
    const dive = (n: number): unknown => (n === 0 ? fn() : dive(n - 1))
    try {
      dive(frames)
      return 'ok'
    } catch (e) {
      return e
    }
  }
  // The deepest call from which a read still fails for lack of stack (not at the call itself).
  let failed: unknown = 'ok'
  for (let frames = 500; frames <= 12_000 && failed === 'ok'; frames += 500) {
    const got = below(frames, () => map.get('deep'))
    if (got !== 'ok') failed = got
  }
  t.true(failed instanceof RangeError && /call stack/.test(failed.message), String(failed))
  t.false(failed instanceof ShmError)
  t.deepEqual(map.get('deep'), value)
  let received: unknown = 'ok'
  for (let frames = 500; frames <= 12_000 && received === 'ok'; frames += 500) {
    received = below(frames, () => ch.receive({ timeout: 0 }))
    if (received === 'ok') ch.send(value)
  }
  t.true(received instanceof RangeError, String(received))
  // Before: the message was consumed as corrupt, and gone.
  t.is(ch.length, 1)
  t.deepEqual(ch.receive({ timeout: 0 }), value)
})
