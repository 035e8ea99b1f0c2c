// SharedMap: semantics and codecs; growth and iteration; LRU bounds and ttl; exact
// contents and exact update counters with 4 processes (fork), cluster workers and worker
// threads; handles and named maps; bad input; hostile bytes; and SIGKILL at random
// points, repeatedly, with every entry old or new afterwards and the map still working.
import cluster from 'node:cluster'
import { readFileSync } from 'node:fs'
import test from 'ava'
import { MessageChannel, Worker } from 'node:worker_threads'
import { Channel, MappedMemory, SharedMap, ShmError } from '../dist/index.js'
import { fixture, forkChild, segmentName, sleep, throws } from './helpers.js'

function segment(t: Parameters<typeof segmentName>[0], size = 8 << 20): MappedMemory {
  const m = MappedMemory.create(segmentName(t, 'map'), { size })
  t.teardown(() => m.close())
  return m
}

/** Forks a map-worker, gives it `msg` (with the map as a handle) and resolves with its reply. */
async function inChild(t: Parameters<typeof segmentName>[0], msg: Record<string, unknown>): Promise<Record<string, unknown>> {
  const c = forkChild(t, 'map-worker.mjs')
  c.proc.send(JSON.parse(JSON.stringify(msg)))
  const r = await c.message<Record<string, unknown>>()
  if (r.error) throw new Error(String(r.error))
  return r
}

test('set, get, has, delete, size, clear; string and byte keys are different keys', (t) => {
  const mem = segment(t)
  const m = new SharedMap<string | Uint8Array>(mem)
  t.is(m.get('a'), undefined)
  t.is(m.set('a', { x: 1 }), m, 'set returns the map')
  t.deepEqual(m.get('a'), { x: 1 })
  t.true(m.has('a'))
  t.false(m.has(new TextEncoder().encode('a')), 'the bytes of "a" are another key')
  m.set(new TextEncoder().encode('a'), 'bytes')
  t.is(m.get(new Uint8Array([0x61])), 'bytes')
  t.is(m.size, 2)
  m.set('a', [1, 2, 3])
  t.deepEqual(m.get('a'), [1, 2, 3], 'replaced')
  t.is(m.size, 2)
  t.true(m.delete('a'))
  t.false(m.delete('a'))
  t.is(m.size, 1)
  m.set('', 'empty key')
  m.set('ключ 🔑', 'unicode key')
  t.is(m.get(''), 'empty key')
  t.is(m.get('ключ 🔑'), 'unicode key')
  m.clear()
  t.is(m.size, 0)
  t.is(m.get(''), undefined)
  mem.heap.check()
})

test("codecs: 'v8' keeps structured-clone types, 'json', 'string' and 'bytes' store what they say", (t) => {
  const mem = segment(t)
  const v8m = new SharedMap(mem)
  const rich = { m: new Map([[1, { d: new Date(5) }]]), s: new Set(['x']), b: 10n ** 30n, u: new Uint16Array([1, 65535]), n: null, und: undefined, neg0: -0, nan: NaN, deep: [[[{}]]], str: 'é世🌍', long: 'x'.repeat(300) }
  v8m.set('rich', rich)
  t.deepEqual(v8m.get('rich'), rich)
  const shared = { k: 1 }
  const dag = [shared, shared]
  v8m.set('dag', dag)
  const got = v8m.get('dag') as Array<{ k: number }>
  t.is(got[0], got[1], 'one object referenced twice stays one object')
  const u8 = v8m.set('buf', Buffer.from('abc')).get('buf') as Uint8Array
  u8[0] = 0x7a
  t.deepEqual(Buffer.from(v8m.get('buf') as Uint8Array).toString(), 'abc', 'a read returns a copy, not the shared bytes')

  const j = new SharedMap(mem, { codec: 'json' })
  j.set('a', { when: new Date(0) })
  t.deepEqual(j.get('a'), { when: '1970-01-01T00:00:00.000Z' })
  t.is(j.codec, 'json')
  const s = new SharedMap(mem, { codec: 'string' })
  s.set('a', 'plain text ✓')
  t.is(s.get('a'), 'plain text ✓')
  const b = new SharedMap(mem, { codec: 'bytes' })
  b.set('a', new Uint8Array([1, 2, 3]))
  const out = b.get('a') as Uint8Array
  t.deepEqual([...out], [1, 2, 3])
  out[0] = 9
  t.deepEqual([...(b.get('a') as Uint8Array)], [1, 2, 3])
  // Any view stores its own bytes only: a Buffer cut from a larger one, a Uint16Array at
  // an offset, a DataView; a small array made afresh for each set.
  const whole = Buffer.from('0123456789')
  const views: Array<[ArrayBufferView, number[]]> = [
    [whole.subarray(3, 6), [0x33, 0x34, 0x35]],
    [new Uint16Array(whole.buffer.slice(whole.byteOffset, whole.byteOffset + 10), 2, 2), [0x32, 0x33, 0x34, 0x35]],
    [new DataView(new Uint8Array([9, 8, 7, 6]).buffer, 1, 2), [8, 7]],
  ]
  for (const [view, bytes] of views) t.deepEqual([...(b.set('v', view as Uint8Array).get('v') as Uint8Array)], bytes, view.constructor.name)
  for (let i = 0; i < 100; i++) b.set(`f${i}`, Uint8Array.of(i, i + 1))
  for (let i = 0; i < 100; i++) t.deepEqual([...(b.get(`f${i}`) as Uint8Array)], [i, i + 1])
})

test("'bytes' reads of every size are private copies (65 B to 4 KiB share 8 KiB buffers): writes to one never reach another, a transfer list cannot take them, they outlive the mapping", async (t) => {
  const mem = segment(t)
  const map = new SharedMap<string, Uint8Array>(mem, { codec: 'bytes' })
  const ch = new Channel<Uint8Array>(mem, { capacity: 1 << 16, codec: 'bytes' })
  const sizes = [0, 1, 64, 65, 100, 1000, 4095, 4096, 4097, 9000]
  const pattern = (n: number, k: number) => Uint8Array.from({ length: n }, (_, i) => (i * 7 + k) & 255)
  for (const [k, n] of sizes.entries()) {
    map.set(`k${n}`, pattern(n, k))
    map.set(`b${n}`, pattern(n, k))
  }
  const byteKeys = new SharedMap<Uint8Array, number>(mem, { codec: 'json' })
  for (const n of [3, 100, 2000]) byteKeys.set(pattern(n, 1), n)
  const reads = sizes.flatMap((n, k) => [map.get(`k${n}`)!, map.get(`k${n}`)!, map.get(`b${n}`)!].map((v) => ({ v, n, k })))
  for (const [k, n] of sizes.entries()) ch.send(pattern(n, k))
  const received = sizes.map((n, k) => ({ v: ch.receive(), n, k }))
  const all = [...reads, ...received]
  for (const { v, n, k } of all) {
    t.is(v.constructor, Uint8Array)
    t.deepEqual(v, pattern(n, k), `${n} bytes`)
  }
  t.true(all.some(({ v }, i) => all.some(({ v: w }, j) => i !== j && v.buffer === w.buffer && v.length > 0)), 'small copies share buffers')
  // Writes to each copy reach nothing else.
  for (const { v } of all) v.fill(0xee)
  for (const [k, n] of sizes.entries()) t.deepEqual(map.get(`k${n}`), pattern(n, k))
  for (const { v } of all) t.true(v.every((x) => x === 0xee))
  // A transfer list naming a shared buffer clones it (Node 20) or refuses (later): the
  // other copies keep their bytes.
  const { port1, port2 } = new MessageChannel()
  const fresh = map.get('k100')!
  const neighbour = map.get('k1000')!
  try {
    port1.postMessage(fresh, [fresh.buffer as ArrayBuffer])
  } catch (e) {
    t.is((e as Error).name, 'DataCloneError')
  }
  port1.close()
  port2.close()
  t.deepEqual(neighbour, pattern(1000, 5))
  t.deepEqual([...byteKeys.keys()].map((b) => b.length).sort((a, b) => a - b), [3, 100, 2000])
  mem.close()
  t.deepEqual(neighbour, pattern(1000, 5), 'a copy outlives the mapping')
})

test('get returns a fresh copy every time, also of a value read before; a value written since is never missed', async (t) => {
  const mem = segment(t)
  const writer = new SharedMap<string, unknown>(mem)
  // Another object on the same map: its reads do not go through the writer's object.
  const reader = SharedMap.at<string, unknown>(mem, writer.offset)
  const value = { id: 7, name: 'ann', tags: ['a', 'b'], nested: { list: [{ x: 1 }, [2, 3]], s: 'é' }, n: null, u: undefined, f: 1.5, neg0: -0 }
  writer.set('v', value)
  for (let i = 0; i < 5; i++) {
    const got = reader.get('v') as typeof value
    t.deepEqual(got, value)
    t.true(Object.is(got.neg0, -0))
    // Every change to what a get returned stays there.
    got.tags.push('c')
    got.nested.list[0] = { x: 99 }
    ;(got.nested.list[1] as number[])[0] = 99
    got.name = 'changed'
    delete (got as Partial<typeof value>).id
  }
  t.deepEqual(reader.get('v'), value)
  // The same key rewritten with values of one size: the entries' blocks are reused in
  // turn, and each read sees the value written last.
  for (let i = 0; i < 200; i++) {
    writer.set('k', { i, pad: 'x'.repeat(i % 3) })
    for (let j = 0; j < 3; j++) t.deepEqual(reader.get('k'), { i, pad: 'x'.repeat(i % 3) })
  }
  // Deleted, then other keys reuse the blocks.
  writer.delete('k')
  for (let i = 0; i < 50; i++) writer.set(`o${i}`, { i, pad: 'x'.repeat(i % 3) })
  t.is(reader.get('k'), undefined)
  for (let i = 0; i < 50; i++) for (let j = 0; j < 2; j++) t.deepEqual(reader.get(`o${i}`), { i, pad: 'x'.repeat(i % 3) })
  // Written by another process since this one read it.
  for (let j = 0; j < 3; j++) writer.get('c:1')
  writer.set('c:1', 'before')
  // (Five reads: the later ones come from the reader's memo of the unchanged stripe.)
  for (let j = 0; j < 5; j++) t.is(reader.get('c:1'), 'before')
  await inChild(t, { map: writer.toJSON(), job: 'own', id: 'c', n: 3, del: 1000 })
  t.deepEqual(reader.get('c:1'), { id: 'c', i: 1 }, 'the child (which deletes c:0 again) set c:1')
  // Arrays with holes or extra properties: decoded as they are.
  const holes = [1, , 3] // eslint-disable-line no-sparse-arrays
  const extra = Object.assign([1, 2], { extra: 'yes' })
  writer.set('holes', holes)
  writer.set('extra', extra)
  for (let j = 0; j < 3; j++) {
    const h = reader.get('holes') as unknown[]
    t.is(h.length, 3)
    t.false(1 in h)
    t.deepEqual(reader.get('extra'), extra)
  }
})

// A reader's memo of a key holds while the stripe's write sequence and clock are as it
// saw them. clear() moves the sequence of empty stripes too (and a set that runs out of
// heap moves it), without storing anything: they now move the clock as well, or after
// 2^31 of them the sequence is back and the memo hands out a deleted value. The 2^31 - 11
// clears are forged (each stripe's sequence set back by 20, docs/FORMAT.md §11.2); the
// last 10, like the first, are real, in another process.
test("a reader's memo of a key does not survive its stripe's write sequence wrapping (2^31 clears of an empty map)", async (t) => {
  const mem = segment(t)
  const map = new SharedMap<string, unknown>(mem)
  map.set('k', { v: 'old value' })
  for (let i = 0; i < 5; i++) t.deepEqual(map.get('k'), { v: 'old value' })
  const dv = new DataView(mem.buffer)
  const stripes = dv.getUint32(map.offset + 28, true)
  const array = dv.getUint32(map.offset + 32, true) * 16
  const seq = (s: number) => array + 128 * s + 104
  const before = Array.from({ length: stripes }, (_, s) => dv.getUint32(seq(s), true))
  await inChild(t, { map: map.toJSON(), job: 'clear', n: 1 })
  for (let s = 0; s < stripes; s++) dv.setUint32(seq(s), (before[s]! - 20) >>> 0, true)
  await inChild(t, { map: map.toJSON(), job: 'clear', n: 10 })
  t.deepEqual(Array.from({ length: stripes }, (_, s) => dv.getUint32(seq(s), true)), before, 'every sequence is back')
  t.is(map.get('k'), undefined)
  t.false(map.has('k'))
  t.is(map.size, 0)
})

test('tables grow (rehash) and every entry survives; iteration sees each entry once, also while it grows', (t) => {
  const mem = segment(t, 32 << 20)
  const m = new SharedMap<string, number>(mem, { stripes: 2 })
  for (let i = 0; i < 20_000; i++) m.set(`k${i}`, i)
  t.is(m.size, 20_000)
  for (let i = 0; i < 20_000; i += 997) t.is(m.get(`k${i}`), i)
  const seen = new Set<string>()
  let extra = 20_000
  for (const [k, v] of m) {
    t.false(seen.has(k), `${k} seen twice`)
    seen.add(k)
    if (k.startsWith('k')) t.is(v, Number(k.slice(1)))
    if (extra < 60_000) for (let i = 0; i < 4; i++) m.set(`n${extra++}`, extra) // grows the tables under the iteration
  }
  for (let i = 0; i < 20_000; i++) t.true(seen.has(`k${i}`), `k${i} missed`)
  t.is([...m.keys()].length, m.size)
  t.is([...m.values()].length, m.size)
  mem.heap.check()
})

test('keys chosen to collide under an unkeyed hash spread over the stripes: the key hash is keyed by a secret each map draws (hash flooding); another process finds every key', async (t) => {
  const keys = JSON.parse(readFileSync(fixture('fnv-collisions.json'), 'latin1')) as string[]
  // The fixture is real: FNV-1a 32, the unkeyed hash maps used before, gives all 512 one value.
  const fnv = (s: string) => {
    let h = 0x811c_9dc5
    for (let i = 0; i < s.length; i++) h = Math.imul(h ^ s.charCodeAt(i), 0x0100_0193)
    return h >>> 0
  }
  t.is(new Set(keys).size, 512)
  t.is(new Set(keys.map(fnv)).size, 1)
  const mem = segment(t)
  const map = new SharedMap<string, number>(mem) // 16 stripes
  keys.forEach((k, i) => map.set(k, i))
  // docs/FORMAT.md §11.2: the stripe array's slot at 32 of the header, `count` at 52 of
  // each 128-byte stripe record, the secret at 96.
  const dv = new DataView(mem.buffer)
  const stripes = dv.getUint32(map.offset + 32, true) * 16
  const counts = Array.from({ length: 16 }, (_, s) => dv.getUint32(stripes + s * 128 + 52, true))
  t.is(counts.reduce((a, b) => a + b), 512)
  t.true(Math.max(...counts) <= 96, `512 keys over 16 stripes: ${counts.join(' ')}`)
  const secret = (m: SharedMap) => dv.getBigUint64(m.offset + 96, true)
  t.not(secret(map), secret(new SharedMap(mem)), 'each map draws its own secret')
  const r = await inChild(t, { map, job: 'bump', keys })
  t.deepEqual(r.got, keys.map((_, i) => i))
  t.deepEqual(keys.map((k) => map.get(k)), keys.map((_, i) => i + 1000))
  t.is(map.size, 512)
})

test('LRU: maxEntries and maxBytes hold after every set, and the least recently used go first', (t) => {
  const mem = segment(t)
  const m = new SharedMap<string, number>(mem, { maxEntries: 3 })
  m.set('a', 1).set('b', 2).set('c', 3)
  m.get('a')
  m.set('d', 4)
  t.deepEqual([...m.keys()].sort(), ['a', 'c', 'd'], 'b was the least recently used')
  m.has('c')
  m.set('e', 5)
  t.deepEqual([...m.keys()].sort(), ['c', 'd', 'e'])
  for (let i = 0; i < 1000; i++) {
    m.set(`x${i}`, i)
    t.true(m.size <= 3)
  }
  const byBytes = new SharedMap<string, string>(mem, { maxBytes: 4096, codec: 'string' })
  for (let i = 0; i < 500; i++) {
    byBytes.set(`k${i}`, 'v'.repeat(i % 300))
    let bytes = 0
    for (const [k, v] of byBytes) bytes += 48 + Buffer.byteLength(k) + Buffer.byteLength(v)
    t.true(bytes <= 4096, `${bytes} bytes after set ${i}`)
  }
  t.is(byBytes.get('k499'), 'v'.repeat(499 % 300), 'the newest entry stays')
  throws(t, () => byBytes.set('huge', 'x'.repeat(5000)), { instanceOf: RangeError, message: /cannot fit in a SharedMap of maxBytes 4096/ })
  mem.heap.check()
})

test('ttl: an expired entry reads as absent; per-set ttl; update keeps the expiry', async (t) => {
  const mem = segment(t)
  const m = new SharedMap<string, number>(mem, { ttl: 150 })
  m.set('a', 1)
  m.set('b', 2, { ttl: 10_000 })
  m.set('c', 3, { ttl: Infinity })
  m.update('a', (v = 0) => v + 1)
  // Read often enough to be answered from the object's memo of unchanged stripes, which
  // must still see the expiry come.
  for (let i = 0; i < 5; i++) t.is(m.get('a'), 2)
  const never = new SharedMap<string, number>(mem, { ttl: Infinity })
  never.set('z', 1)
  await sleep(300)
  t.is(m.get('a'), undefined, 'expired (update did not extend it)')
  t.false(m.has('a'))
  t.is(m.get('b'), 2)
  t.is(m.get('c'), 3, 'ttl: Infinity is forever, whatever the map\'s')
  t.deepEqual([...m.keys()].sort(), ['b', 'c'])
  t.is(never.get('z'), 1, 'a map with ttl: Infinity keeps its entries')
  const forever = new SharedMap<string, number>(mem)
  forever.set('x', 1, { ttl: 50 })
  for (let i = 0; i < 100; i++) forever.set(`y${i}`, i)
  await sleep(100)
  t.false(forever.has('x'))
  t.is(forever.size, 100, 'expired entries are purged as they are met')
})

test('4 processes × 2,000 own keys plus a shared counter: exact contents and an exact counter', async (t) => {
  const mem = segment(t, 32 << 20)
  const m = new SharedMap<string, unknown>(mem)
  const n = 2000
  const del = 7
  await Promise.all([0, 1, 2, 3].map((id) => inChild(t, { map: m, job: 'own', id, n, del })))
  t.is(m.get('total'), 4 * n)
  const expected = new Map<string, unknown>([['total', 4 * n]])
  for (let id = 0; id < 4; id++) for (let i = 0; i < n; i++) if (i % del !== 0) expected.set(`${id}:${i}`, { id, i })
  t.is(m.size, expected.size)
  const sorted = (it: Iterable<[string, unknown]>) => [...it].sort((a, b) => (a[0] < b[0] ? -1 : 1))
  t.deepEqual(sorted(m.entries()), sorted(expected))
  mem.heap.check()
})

test('update is an exact atomic counter across forked processes, cluster workers and worker threads', async (t) => {
  const mem = segment(t)
  const m = new SharedMap<string, number>(mem)
  const n = 3000
  const handle = JSON.parse(JSON.stringify(m))
  const forks = [0, 1].map(() => inChild(t, { map: handle, job: 'counter', key: 'c', n }))
  cluster.setupPrimary({ exec: fixture('map-worker.mjs'), silent: false })
  const workers = [0, 1].map(
    () =>
      new Promise<void>((resolve, reject) => {
        const w = cluster.fork({ MAP_JOB: JSON.stringify({ map: handle, job: 'counter', key: 'c', n }) })
        w.on('message', (r: { error?: string }) => (r.error ? reject(new Error(r.error)) : resolve()))
        w.on('exit', (code) => (code === 0 ? resolve() : reject(new Error(`cluster worker exited ${code}`))))
      }),
  )
  // One thread gets the handle, the other the map itself (its structured clone carries it).
  const threads = [handle, m].map(
    (map) =>
      new Promise<void>((resolve, reject) => {
        const w = new Worker(fixture('map-worker.mjs'), { workerData: { map, job: 'counter', key: 'c', n } })
        w.on('message', (r: { error?: string }) => (r.error ? reject(new Error(r.error)) : resolve()))
        w.on('error', reject)
      }),
  )
  for (let i = 0; i < n; i++) m.update('c', (v = 0) => v + 1)
  await Promise.all([...forks, ...workers, ...threads])
  t.is(m.get('c'), 7 * n)
})

test('SharedMap.named finds or creates one map, atomically; handles revive the same map', async (t) => {
  const mem = segment(t)
  const a = SharedMap.named<string, number>(mem, 'cache', { maxEntries: 100 })
  const b = SharedMap.named<string, number>(mem.heap, 'cache')
  t.is(a.offset, b.offset)
  a.set('x', 1)
  t.is(b.get('x'), 1)
  await inChild(t, { map: a, job: 'counter', key: 'y', n: 10 })
  t.is(a.get('y'), 10)
  throws(t, () => SharedMap.named(mem, 'cache', { codec: 'json' }), { instanceOf: TypeError, message: /'v8' codec, not 'json'/ })
  mem.heap.named('not-a-map', 'int32_t')
  throws(t, () => SharedMap.named(mem, 'not-a-map'), { instanceOf: TypeError, message: /not a SharedMap/ })
  throws(t, () => SharedMap.at(mem, mem.heap.malloc(256)), { instanceOf: TypeError, message: /no SharedMap/ })
})

test('room: too large a capacity is a RangeError; a construction without room leaves nothing; a full heap still inserts without growing the table', (t) => {
  const mem = segment(t, 4 << 20)
  throws(t, () => new SharedMap(mem, { capacity: 2 ** 40 }), { instanceOf: RangeError, message: /"capacity" option must be at most 4294967296 with 16 stripes/ })
  throws(t, () => new SharedMap(mem, { capacity: 2 ** 29 + 1, stripes: 1 }), { instanceOf: RangeError, message: /"capacity" option must be at most 268435456 with 1 stripe;/ })
  // (A named one keeps its name's record, which a later call constructs in.)
  throws(t, () => SharedMap.named(mem, 'big', { capacity: 1 << 22 }), { instanceOf: ShmError, code: 'ENOMEM' })
  const used = mem.heap.stats().used
  for (let i = 0; i < 3; i++) throws(t, () => new SharedMap(mem, { capacity: 1 << 22 }), { instanceOf: ShmError, code: 'ENOMEM' })
  throws(t, () => SharedMap.named(mem, 'big', { capacity: 1 << 22 }), { instanceOf: ShmError, code: 'ENOMEM' })
  t.is(mem.heap.stats().used, used, 'the failed constructions gave back every block')
  t.is(SharedMap.named(mem, 'big', { capacity: 64 }).size, 0, 'and the name constructs once there is room')
  // A table at its capacity grows on the next new key; with no room for the larger
  // table, the key goes in anyway (its chain is just longer).
  const m = new SharedMap<string, string>(mem, { stripes: 1, capacity: 64, codec: 'string' })
  for (let i = 0; i < 64; i++) m.set(`k${i}`, 'v')
  const fill: number[] = []
  while (mem.heap.stats().largestFree > 1024) fill.push(mem.heap.malloc(512))
  m.set('new', 'v')
  t.is(m.get('new'), 'v')
  t.is(m.size, 65)
  for (const b of fill) mem.heap.free(b)
})

test('LRU: size never reads above maxEntries in another process while a set that went over the bound evicts', async (t) => {
  const mem = segment(t)
  const map = new SharedMap(mem, { maxEntries: 50 })
  const job = { map, job: 'bounded', keys: 120, ms: 2000 }
  const [a, b] = await Promise.all([inChild(t, job), inChild(t, job)])
  // Before: the count rose before the eviction, and size read 51 hundreds of times a run.
  for (const r of [a, b]) {
    t.true((r.ops as number) > 1000, `${r.ops} operations`)
    t.is(r.maxSize, 50)
  }
  t.is(map.size, 50)
})

test('an emptied map keeps no large replaced blocks: its heap is free for a value of most of it', (t) => {
  const mem = segment(t, 8 << 20)
  const map = new SharedMap<string, Uint8Array>(mem, { codec: 'bytes' })
  const heap = mem.heap
  const base = heap.stats().used
  for (let i = 0; i < 16; i++) map.set(`k${i}`, new Uint8Array(256 << 10).fill(i))
  for (let i = 0; i < 16; i++) map.set(`k${i}`, new Uint8Array(1))
  for (let i = 0; i < 16; i++) map.delete(`k${i}`)
  t.is(map.size, 0)
  // Before: each stripe kept a replaced 256 KiB block as its spare, for good (up to 4 MiB).
  const held = heap.stats().used - base
  t.true(held < 128 << 10, `${held} bytes still held by the empty map`)
  map.set('big', new Uint8Array(6 << 20))
  t.is(map.get('big')?.length, 6 << 20)
})

test('a bounded map whose heap fills before its bounds evicts its least recently used entries instead of failing (a cache); an unbounded one says ENOMEM naming the segment', async (t) => {
  const mem = segment(t, 1 << 20)
  const map = new SharedMap<string, { i: number; pad: string }>(mem, { maxEntries: 10_000 })
  const pad = 'x'.repeat(2000)
  for (let i = 0; i < 3000; i++) map.set(`k${i}`, { i, pad })
  t.true(map.size > 100 && map.size < 3000, `${map.size} entries fit`)
  t.is(map.get('k0'), undefined, 'the least recently used went')
  t.is(map.get('k2900')?.i, 2900) // used recently: kept through the next round
  for (let i = 0; i < 200; i++) map.set(`k${i}`, { i: -i, pad: `${pad}y` }) // keys that went, and replaced ones
  t.deepEqual(map.get('k2900'), { i: 2900, pad })
  mem.heap.check()
  const newest = Array.from({ length: 100 }, (_, i) => `k${i + 100}`)
  const r = await inChild(t, { map, job: 'bump', keys: newest })
  t.deepEqual((r.got as { i: number }[]).map((v) => v.i), newest.map((_, i) => -(i + 100)), 'another process reads the newest')
  const plain = new SharedMap<string, string>(mem, { codec: 'string' })
  const e = t.throws(() => {
    for (let i = 0; ; i++) plain.set(`p${i}`, pad)
  }, { instanceOf: ShmError, code: 'ENOMEM' })
  t.is(e?.path, mem.name ?? undefined)
  t.regex(e?.message ?? '', new RegExp(`out of shared heap memory in the heap of \\d+ bytes of ${mem.name}: free what is no longer needed`))
})

test('a full heap makes a bounded map give back its idle spare blocks first, then evict as its bounds do (expired entries before live ones); an entry larger than the heap evicts nothing', async (t) => {
  const mem = segment(t, 1 << 18)
  const map = new SharedMap<string, string>(mem, { maxEntries: 100_000, codec: 'string' })
  // A 150 KB value replaced by a short one: its block stays with the map as a spare.
  map.set('big', 'x'.repeat(150_000))
  map.set('big', 'b')
  for (let i = 0; map.size < 40; i++) map.set(`live${i}`, 'l'.repeat(1000))
  for (let i = 0; i < 10; i++) map.set(`ttl${i}`, 't'.repeat(1000), { ttl: 1 })
  await sleep(20)
  const live = [...map.keys()].filter((k) => k.startsWith('live'))
  // Needs the spare's room: nothing live goes.
  map.set('new', 'n'.repeat(60_000))
  t.deepEqual([...map.keys()].filter((k) => k.startsWith('live')), live, 'the spare went back first')
  // Fill the heap, then one more: the expired entries go before the least recently used live one.
  for (let i = 0; mem.heap.stats().largestFree > 3000; i++) map.set(`more${i}`, 'm'.repeat(1000))
  map.set('one-more', 'o'.repeat(2000))
  t.true(map.has(live[0]!), 'the least recently used live entry stays while expired ones remain')
  const before = map.size
  throws(t, () => map.set('huge', 'h'.repeat(1 << 18)), { instanceOf: ShmError, code: 'ENOMEM' })
  t.is(map.size, before, 'an entry larger than the whole heap evicts nothing')
  mem.heap.check()
})

test('a bounded map with ttl drops expired entries before live ones, and sweeps them on set', async (t) => {
  const mem = segment(t)
  const small = new SharedMap<string, string>(mem, { maxEntries: 2, codec: 'string' })
  small.set('b', 'live-b')
  small.set('a', 'soon', { ttl: 10 })
  await sleep(40)
  small.set('c', 'live-c')
  t.deepEqual([...small.entries()].sort(), [['b', 'live-b'], ['c', 'live-c']], 'the expired entry went, not the older live one')
  t.is(small.size, 2)
  const m = new SharedMap<string, string>(mem, { maxEntries: 1000, codec: 'string' })
  for (let i = 0; i < 100; i++) m.set(`old${i}`, 'x', { ttl: 10 })
  await sleep(40)
  // Each set sweeps two buckets, like an unbounded map's: 200 sets pass every bucket.
  for (let i = 0; i < 200; i++) m.set(`new${i}`, 'y')
  t.is(m.size, 200, 'the expired entries are gone, not counted')
})

test('bad input: wrong key types, unserializable values, bad options give typed errors; the map stays usable', (t) => {
  const mem = segment(t)
  const m = new SharedMap<string, unknown>(mem)
  for (const k of [1, null, undefined, {}, ['a'], Symbol('s')]) throws(t, () => m.set(k as unknown as string, 1), { instanceOf: TypeError, message: /"key" argument must be of type string or a Uint8Array/ })
  throws(t, () => m.get(5 as unknown as string), { instanceOf: TypeError })
  // A Proxy of a Uint8Array is not one: its traps would run between reading the key's
  // bytes and hashing them (one key stored twice, once). A detached one has no bytes.
  const real = new Uint8Array([1, 2, 3, 4])
  const proxy = new Proxy(real, {})
  throws(t, () => m.set(proxy as unknown as string, 1), { instanceOf: TypeError, code: 'ERR_INVALID_ARG_TYPE', message: /a Proxy of one/ })
  const detached = new Uint8Array(8)
  structuredClone(detached.buffer, { transfer: [detached.buffer] })
  for (const op of [() => m.set(detached as unknown as string, 1), () => m.has(detached as unknown as string), () => m.get(detached as unknown as string)]) {
    throws(t, op, { instanceOf: TypeError, code: 'ERR_INVALID_ARG_TYPE', message: /detached/ })
  }
  t.is(m.size, 0)
  throws(t, () => m.set('x'.repeat((1 << 20) + 1), 1), { instanceOf: RangeError, message: /at most 1048576 bytes/ })
  throws(t, () => m.set('f', () => 1), { instanceOf: TypeError, message: /cannot be stored with the 'v8' codec/ })
  throws(t, () => m.set('s', { sym: Symbol('x') }), { instanceOf: TypeError })
  throws(t, () => new SharedMap(mem, { codec: 'json' }).set('b', 1n), { instanceOf: TypeError, message: /'json' codec/ })
  throws(t, () => new SharedMap(mem, { codec: 'json' }).set('u', undefined), { instanceOf: TypeError, message: /no JSON form/ })
  throws(t, () => new SharedMap(mem, { codec: 'string' }).set('n', 1), { instanceOf: TypeError, message: /must be a string/ })
  throws(t, () => new SharedMap(mem, { codec: 'bytes' }).set('n', 'str'), { instanceOf: TypeError, message: /must be a Uint8Array/ })
  throws(t, () => new SharedMap(mem, { codec: 'xml' as 'json' }), { instanceOf: TypeError, message: /"codec" option must be one of/ })
  throws(t, () => new SharedMap(mem, { stripes: 3 }), { instanceOf: RangeError, message: /power of two/ })
  throws(t, () => new SharedMap(mem, { maxEntries: 10, stripes: 4 }), { instanceOf: RangeError, message: /exactly one stripe/ })
  throws(t, () => new SharedMap(mem, { maxEntries: 0 }), { instanceOf: RangeError })
  throws(t, () => new SharedMap(mem, { ttl: -1 }), { instanceOf: RangeError, message: /"ttl" option/ })
  throws(t, () => m.set('a', 1, { ttl: 0 }), { instanceOf: RangeError })
  for (const ttl of [NaN, -Infinity]) throws(t, () => m.set('a', 1, { ttl }), { instanceOf: RangeError, message: /or Infinity/ })
  throws(t, () => new SharedMap({} as MappedMemory), { instanceOf: TypeError, message: /"where" argument/ })
  throws(t, () => m.update('a', 5 as unknown as () => number), { instanceOf: TypeError, message: /"fn" argument/ })

  m.set('n', 1)
  t.throws(() => m.update('n', () => { throw new Error('fn failed') }), { message: 'fn failed' })
  t.is(m.get('n'), 1, 'a throwing fn stores nothing')
  throws(t, () => m.update('n', () => m.get('other') as number), { instanceOf: ShmError, code: 'ERR_SHM_DEADLOCK' })
  throws(t, () => m.update('n', () => (() => 1) as unknown as number), { instanceOf: TypeError })
  t.is(m.get('n'), 1)
  const j = new SharedMap<string, number>(mem, { codec: 'json' })
  j.set('n', 1)
  // @ts-expect-error an async fn
  throws(t, () => j.update('n', async (v: number) => v + 1), { instanceOf: TypeError, message: /not a promise/ })
  t.is(j.get('n'), 1, "an async fn stores nothing (not the promise's JSON, {})")
  m.update('n', (v) => (v as number) + 1)
  t.is(m.get('n'), 2, 'usable after every failure')
  // Another map may be used inside fn, also one at the same offset of another segment
  // with no name (a false ERR_SHM_DEADLOCK once).
  const [a, b] = [MappedMemory.anonymous({ size: 1 << 20 }), MappedMemory.anonymous({ size: 1 << 20 })]
  t.teardown(() => [a, b].forEach((x) => x.close()))
  const [ma, mb] = [new SharedMap<string, number>(a), new SharedMap<string, number>(b)]
  t.is(ma.offset, mb.offset)
  mb.set('x', 41)
  t.is(ma.update('k', () => mb.get('x')! + 1), 42)
  t.is(m.update('n', () => ma.get('k')!), 42)
  mem.heap.check()
  mem.close()
  throws(t, () => m.get('n'), { instanceOf: ShmError, code: 'ERR_SHM_CLOSED' })
  throws(t, () => m.size, { instanceOf: ShmError, code: 'ERR_SHM_CLOSED' })
})

test("a 'v8' value written by a newer Node (a Float16Array, as Node 24 writes it) reads back where the runtime knows it, and is ERR_SHM_CORRUPT naming both causes, for that entry only, where it does not", (t) => {
  const mem = segment(t)
  const map = new SharedMap<string, unknown>(mem, { stripes: 1 })
  map.set('plain', { a: 1 })
  map.set('f16', new Uint8Array([0x00, 0x3c]))
  // Node's host object for a Uint8Array of 2 bytes; type 13 is a Float16Array (1.0).
  const u8 = new Uint8Array(mem.buffer)
  const stored = Buffer.from(u8.buffer, u8.byteOffset, u8.length).indexOf(Buffer.from([0xff, 0x0f, 0x5c, 0x01, 0x02, 0x00, 0x3c]))
  t.true(stored > 0)
  u8[stored + 3] = 13
  const F16 = (globalThis as { Float16Array?: new (a: number[]) => unknown }).Float16Array
  if (F16 !== undefined) {
    t.deepEqual(map.get('f16'), new F16([1]))
  } else {
    throws(t, () => map.get('f16'), { instanceOf: ShmError, code: 'ERR_SHM_CORRUPT', message: new RegExp(`does not deserialize in Node ${process.version.replaceAll('.', '\\.')} .*: damaged, or written by another Node version`) })
    t.throws(() => [...map.values()], { code: 'ERR_SHM_CORRUPT' })
  }
  t.deepEqual(map.get('plain'), { a: 1 })
  map.set('f16', 'replaced')
  t.is(map.get('f16'), 'replaced')
})

test('hostile bytes: a looping chain or a table pointing outside is ERR_SHM_CORRUPT, never a hang', (t) => {
  const mem = segment(t)
  const m = new SharedMap<string, number>(mem, { stripes: 1 })
  m.set('a', 1)
  m.set('b', 2)
  const i32 = new Int32Array(mem.buffer)
  const header = m.offset >> 2
  const stripe = (i32[header + 8] >>> 0) * 16 // STRIPE_ARRAY slot
  const table = (i32[(stripe + 36) >> 2] >>> 0) * 16
  // Point every entry's next at itself.
  for (let b = 0; b < 8; b++) {
    const u = i32[(table >> 2) + b] >>> 0
    if (u !== 0) i32[(u * 16) >> 2] = u
  }
  const t0 = Date.now()
  for (let i = 0; i < 50; i++) {
    try {
      m.get(`miss${i}`)
    } catch (e) {
      t.is((e as ShmError).code, 'ERR_SHM_CORRUPT')
    }
  }
  t.true(Date.now() - t0 < 10_000)
  const m2 = new SharedMap<string, number>(mem, { stripes: 1 })
  const stripe2 = (i32[(m2.offset >> 2) + 8] >>> 0) * 16
  i32[(stripe2 + 36) >> 2] = 0x7fff_ffff
  throws(t, () => m2.get('x'), { instanceOf: ShmError, code: 'ERR_SHM_CORRUPT', message: /outside the heap/ })
  i32[(stripe2 + 44) >> 2] = 40
  throws(t, () => m2.get('x'), { instanceOf: ShmError, code: 'ERR_SHM_CORRUPT', message: /2\^40 buckets/ })
})

test('hostile bytes: iterating chains linked from buckets their entries do not hash to, or values overlapping other entries, is ERR_SHM_CORRUPT, with at most a stripe\'s worth collected (a 1 MiB segment yielded 16 GB into one batch)', (t) => {
  const mem = segment(t, 1 << 20)
  const i32 = new Int32Array(mem.buffer)
  const tableOf = (m: SharedMap<string, Uint8Array>) => {
    const stripe = (i32[(m.offset >> 2) + 8] >>> 0) * 16
    const g = i32[(stripe + 32) >> 2] & 1
    return { table: (i32[(stripe + 36 + 4 * g) >> 2] >>> 0) * 16, cap: 1 << i32[(stripe + 44 + 4 * g) >> 2], next: 4 * g }
  }
  const filled = () => {
    const m = new SharedMap<string, Uint8Array>(mem, { stripes: 1, codec: 'bytes' })
    for (let i = 0; i < 20; i++) m.set(`k${i}`, new Uint8Array(8).fill(i))
    t.is([...m].length, 20)
    return m
  }
  // Every bucket leads to one chain: each of its entries was yielded once per bucket.
  const a = filled()
  const { table, cap } = tableOf(a)
  let head = 0
  for (let b = 0; b < cap && head === 0; b++) head = i32[(table >> 2) + b] >>> 0
  for (let b = 0; b < cap; b++) i32[(table >> 2) + b] = head
  throws(t, () => [...a.keys()], { instanceOf: ShmError, code: 'ERR_SHM_CORRUPT', message: /linked from a bucket its hash does not name/ })
  // Each entry's value claims the rest of the mapping (each fits, but together they
  // overlap): every value was copied whole, 20 MiB from a 1 MiB segment.
  const b = filled()
  const tb = tableOf(b)
  for (let k = 0; k < tb.cap; k++) {
    for (let unit = i32[(tb.table >> 2) + k] >>> 0; unit !== 0; unit = i32[(unit * 16 + tb.next) >> 2] >>> 0) {
      const e = unit * 16
      const valueStart = e + 48 + ((i32[(e + 12) >> 2] + 3) & ~3)
      i32[(e + 16) >> 2] = mem.size - valueStart
    }
  }
  throws(t, () => [...b.values()], { instanceOf: ShmError, code: 'ERR_SHM_CORRUPT', message: /overlap/ })
})

test('get reads without the lock: readers in other processes only see whole values while writers churn, reuse blocks and are killed', async (t) => {
  const mem = segment(t, 64 << 20)
  // Few keys in two stripes: readers and writers meet on the same entries all the time.
  const m = new SharedMap<string, unknown>(mem, { stripes: 2 })
  const handle = JSON.parse(JSON.stringify(m))
  const readers = [0, 1].map(() => forkChild(t, 'map-worker.mjs'))
  readers.forEach((c) => c.proc.send({ map: handle, job: 'read', keys: 40 }))
  await Promise.all(readers.map((c) => c.message()))
  for (let round = 0; round < 5; round++) {
    const kids = [0, 1].map(() => forkChild(t, 'map-worker.mjs'))
    kids.forEach((c, i) => c.proc.send({ map: handle, job: 'churn', id: `${round}.${i}`, keys: 40, big: true }))
    await Promise.all(kids.map((c) => c.message()))
    await sleep(100 + Math.random() * 200)
    // Killed at any instruction, some of them in the middle of a write: readers wait out
    // the odd sequence, take the lock, repair and go on.
    for (const c of kids) c.proc.kill('SIGKILL')
    await Promise.all(kids.map((c) => c.exited))
  }
  m.set('stop', true)
  const results = await Promise.all(readers.map((c) => c.message<{ reads: number; found: number; torn: number; error?: string }>()))
  for (const r of results) {
    t.is(r.error, undefined, 'the reader ran to the end')
    t.is(r.torn, 0, 'no reader saw a torn value')
    t.true(r.found > 0, `the reader found values (${r.found} of ${r.reads} reads)`)
  }
  for (const [k, v] of m) if (k !== 'stop') checkEntry(t, k, v)
  mem.heap.check()
})

/** An entry written by map-worker's churn/fill jobs, checked whole. */
function checkEntry(t: Parameters<typeof segmentName>[0], k: string, v: unknown): void {
  const e = v as { key: string; n: number; payload: string; sum: number }
  let h = 0
  for (let i = 0; i < e.payload.length; i++) h = (Math.imul(h, 31) + e.payload.charCodeAt(i)) | 0
  t.is(e.key, k)
  t.true(e.payload.startsWith(`${k}/${e.n}/`), `payload of ${k}`)
  if (h !== e.sum) t.fail(`torn value under ${k}`)
}

for (const [title, job, opts] of [
  ['set/update/delete', 'churn', {}],
  ['set/update/delete with LRU eviction and large values', 'churn', { maxEntries: 150, big: true }],
  ['insert with an eviction each (a bound of 8, 20 kB values)', 'fill', { maxEntries: 8, pad: 20_000 }],
  ['rehash (inserting new keys)', 'fill', { stripes: 2 }],
] as const) {
  test(`SIGKILL mid-${title}, repeatedly: every entry old or new, the map works, the heap checks`, async (t) => {
    const mem = segment(t, 64 << 20)
    const { big, pad, ...mapOptions } = opts as { big?: boolean; pad?: number; maxEntries?: number; stripes?: number }
    const m = new SharedMap<string, unknown>(mem, mapOptions)
    const handle = JSON.parse(JSON.stringify(m))
    const kills = 8
    for (let round = 0; round < kills; round++) {
      const kids = [0, 1].map(() => forkChild(t, 'map-worker.mjs'))
      kids.forEach((c, i) => c.proc.send({ map: handle, job, id: `${round}.${i}`, keys: 300, big, pad }))
      await Promise.all(kids.map((c) => c.message()))
      await sleep(20 + Math.random() * 80)
      for (const c of kids) c.proc.kill('SIGKILL')
      await Promise.all(kids.map((c) => c.exited))
      // Everything still works and holds whole values; operations on stripes the dead held repair them.
      let n = 0
      for (const [k, v] of m) {
        checkEntry(t, k, v)
        n++
      }
      t.is(n, m.size, 'size agrees with the entries (recounted after repairs)')
      if (mapOptions.maxEntries) t.true(n <= mapOptions.maxEntries, `${n} entries: the repair evicts down to the bound`)
      m.set('probe', { ok: round })
      t.deepEqual(m.get('probe'), { ok: round })
      t.true(m.delete('probe'))
      if (mapOptions.maxEntries) t.true(m.size <= mapOptions.maxEntries)
      mem.heap.check()
    }
    const before = mem.heap.stats().allocations
    m.clear()
    // Stripe array + tables remain; a kill can leak at most one block inside the heap's own
    // critical section, so allow one per kill and process.
    const left = mem.heap.stats().allocations
    t.true(left < before, 'clear frees entries')
    t.true(left <= 1 + (mapOptions.stripes ?? (mapOptions.maxEntries ? 1 : 16)) * 1 + 2 * kills + 4, `${left} blocks left`)
  })
}
