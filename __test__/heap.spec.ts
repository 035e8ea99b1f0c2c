import test, { type ExecutionContext } from 'ava'
import { spawnSync } from 'node:child_process'
import { join } from 'node:path'
import fc from 'fast-check'
import {
  Heap, Lock, MappedMemory, MapFlags, Protection, Ref, revive, SharedMap, ShmError, shmOpen, types,
} from '../dist/index.js'
import { fillHeap, forkChild, managedSegment, seededRandom, segmentName, throws } from './helpers.js'

const segment = (t: ExecutionContext, size?: number) => managedSegment(t, 'heap', size)

test('malloc, free, realloc, alignment, stats back to the start, check', (t) => {
  const heap = segment(t).heap
  const start = heap.stats()
  t.is(start.used, 0)
  t.is(start.allocations, 0)
  t.true(start.largestFree > 1_000_000 - 20_000)
  const blocks: number[] = []
  for (let a = 1; a <= 4096; a *= 2) {
    const off = heap.malloc(100, a)
    t.is(off % a, 0, `aligned to ${a}`)
    blocks.push(off)
  }
  t.is(heap.stats().allocations, blocks.length)
  const big = heap.malloc(5000)
  heap.memory.bytes.fill(9, big, big + 5000)
  const moved = heap.realloc(big, 50_000)
  t.true(heap.memory.bytes.subarray(moved, moved + 5000).every((b) => b === 9), 'realloc keeps the contents')
  heap.free(moved)
  for (const b of blocks) heap.free(b)
  t.true(heap.stats().cached > 0, 'small blocks wait in this thread\'s cache')
  t.like(heap.stats(), { used: 0, allocations: 0, free: start.free })
  const cached = heap.stats().cached
  t.is(heap.trim(), cached)
  t.deepEqual(heap.stats(), start)
  t.notThrows(() => heap.check())
  t.is(heap.memory.heap, heap, "mem.heap is attached once and cached")
})

test('ENOMEM when full; the heap stays usable', (t) => {
  const heap = segment(t, 65536).heap
  throws(t, () => heap.malloc(1 << 20), { instanceOf: ShmError, code: 'ENOMEM' })
  const offs = fillHeap(t, heap, 1000)
  t.true(offs.length > 50)
  offs.forEach((o) => heap.free(o))
  heap.check()
  t.is(heap.stats().used, 0)
})

test('bad input: sizes, alignments, double free, interior, outside, after close', (t) => {
  const mem = segment(t)
  const heap = mem.heap
  throws(t, () => heap.malloc(-1), { instanceOf: RangeError, message: /"size"/ })
  throws(t, () => heap.malloc(Number.NaN), { instanceOf: TypeError, message: /"size"/ })
  throws(t, () => heap.malloc(2 ** 60), { instanceOf: RangeError, message: /"size"/ })
  throws(t, () => heap.malloc(2 ** 50), { instanceOf: ShmError, code: 'ENOMEM' })
  throws(t, () => heap.malloc(Number.MAX_SAFE_INTEGER), { code: 'ENOMEM' })
  throws(t, () => heap.malloc('8' as unknown as number), { instanceOf: TypeError })
  throws(t, () => heap.malloc(8, 3), { instanceOf: ShmError, code: 'EINVAL' })
  throws(t, () => heap.malloc(8, 8192), { code: 'EINVAL' })
  throws(t, () => heap.malloc(8, 0), { code: 'EINVAL' })
  const off = heap.malloc(256)
  throws(t, () => heap.free(off + 16), { code: 'EINVAL' }, 'interior offset')
  throws(t, () => heap.free(off + 1), { code: 'EINVAL' }, 'misaligned')
  throws(t, () => heap.free(mem.size + 4096), { code: 'EINVAL' }, 'outside the heap')
  throws(t, () => heap.free(0), { code: 'EINVAL' }, 'the segment header')
  throws(t, () => heap.free(-16), { instanceOf: RangeError })
  heap.free(off)
  throws(t, () => heap.free(off), { instanceOf: ShmError, code: 'ERR_SHM_DOUBLE_FREE' })
  throws(t, () => heap.realloc(off, 10), { code: 'ERR_SHM_DOUBLE_FREE' })
  throws(t, () => heap.realloc('x' as unknown as number, 8), { instanceOf: TypeError, message: /The "offset" argument/ })
  throws(t, () => heap.realloc(off, 8n as unknown as number), { instanceOf: TypeError, message: /The "size" argument/ })
  throws(t, () => heap.new('struct nope'), { instanceOf: TypeError, message: /^The "type" argument: invalid C type name "struct nope"/ })
  throws(t, () => heap.named('cfg', 'struct nope'), { instanceOf: TypeError, message: /^The "type" argument/ })
  throws(t, () => heap.new('void *'), { instanceOf: TypeError, message: /is void, which has no size \(to allocate a pointer, name 'void \*\*'\)/ })
  heap.check()
  mem.close()
  throws(t, () => heap.malloc(8), { code: 'ERR_SHM_CLOSED' })
  throws(t, () => heap.free(off), { code: 'ERR_SHM_CLOSED' })
  throws(t, () => mem.heap, { code: 'ERR_SHM_CLOSED' })
  const raw = new MappedMemory(null, 8192)
  throws(t, () => raw.heap, { instanceOf: TypeError })
  throws(t, () => Heap.attach(raw, 0), { code: 'ERR_SHM_CORRUPT' }, 'no heap there')
  const h2 = Heap.create(raw, { offset: 0, size: 8192 })
  t.true(h2.malloc(100) > 0)
  throws(t, () => Heap.create(raw, { offset: 4096, size: 8192 }), { instanceOf: RangeError, code: 'ERR_OUT_OF_RANGE', message: /"size" options .*does not fit/ })
  throws(t, () => Heap.create(raw, { offset: 0, size: 600 }), { instanceOf: RangeError, code: 'ERR_OUT_OF_RANGE', message: /heap size 600 is out of range \(minimum \d+/ })
  raw.close()
})

test('Heap.create: an offset at or past the end of the mapping is a RangeError saying so (it complained about a "size" of -65536)', (t) => {
  using raw = new MappedMemory(null, 65536)
  for (const offset of [65536, 1 << 17]) {
    throws(t, () => Heap.create(raw, { offset }), { instanceOf: RangeError, code: 'ERR_OUT_OF_RANGE', message: /^The "offset" option \d+ is beyond the end of the mapping \(65536 bytes\)$/ }, String(offset))
  }
})

test('Heap.create: an options argument that is not an object is a TypeError naming "options" (null read its properties)', (t) => {
  using raw = new MappedMemory(null, 65536)
  for (const bad of [null, 5, 'x']) {
    throws(t, () => Heap.create(raw, bad as never), { instanceOf: TypeError, code: 'ERR_INVALID_ARG_TYPE', message: /"options"/ }, String(bad))
  }
})

test('garbage over the heap gives errors, never a crash or a hang', (t) => {
  const mem = segment(t, 256 * 1024)
  const heap = mem.heap
  const offs = Array.from({ length: 50 }, (_, i) => heap.malloc(64 + i * 8))
  const rand = seededRandom(12345)
  // Overwrite the heap region (not the segment header nor the heap's lock) with garbage.
  for (let i = 256 + 32; i < mem.size; i++) mem.bytes[i] = Math.floor(rand() * 256)
  let errors = 0
  for (let i = 0; i < 2000; i++) {
    try {
      const r = rand()
      if (r < 0.3) heap.malloc(1 + Math.floor(rand() * 4096))
      else if (r < 0.6) heap.free(offs[i % offs.length]!)
      else if (r < 0.8) heap.stats()
      else heap.check()
    } catch (e) {
      t.true(e instanceof ShmError, String(e))
      errors++
    }
  }
  t.true(errors > 0)
  throws(t, () => heap.check(), { code: 'ERR_SHM_CORRUPT' })
})

test('three processes each do 40,000 random malloc/free with tags: zero overlaps, stats back, check passes', async (t) => {
  const mem = segment(t, 8 << 20)
  const before = mem.heap.stats()
  const kids = [11, 22, 33].map((seed) => forkChild(t, 'heap-churn.mjs', [String(seed), '40000']))
  await Promise.all(kids.map((k) => k.message()))
  kids.forEach((k) => k.proc.send(JSON.parse(JSON.stringify(mem))))
  const res = await Promise.all(kids.map((k) => k.message<{ overlaps: number; allocs: number }>()))
  for (const r of res) {
    t.is(r.overlaps, 0)
    t.true(r.allocs > 15_000)
  }
  t.deepEqual(mem.heap.stats(), before)
  t.notThrows(() => mem.heap.check())
})

test('property: random operation sequences agree with a model; check() after each step', (t) => {
  const mem = segment(t, 1 << 20)
  const heap = mem.heap
  const start = heap.stats()
  const op = fc.oneof(
    fc.record({ k: fc.constant('malloc' as const), size: fc.integer({ min: 0, max: 20_000 }), alignLog: fc.integer({ min: 0, max: 12 }) }),
    fc.record({ k: fc.constant('free' as const), pick: fc.nat() }),
    fc.record({ k: fc.constant('realloc' as const), pick: fc.nat(), size: fc.integer({ min: 0, max: 20_000 }) }),
  )
  fc.assert(
    fc.property(fc.array(op, { maxLength: 60 }), (ops) => {
      const live = new Map<number, { size: number; fill: number }>()
      let fill = 1
      try {
        for (const o of ops) {
          if (o.k === 'malloc') {
            const align = 2 ** o.alignLog
            let off: number
            try {
              off = heap.malloc(o.size, align)
            } catch (e) {
              if ((e as ShmError).code === 'ENOMEM') continue
              throw e
            }
            if (off % Math.max(align, 16) !== 0 || live.has(off)) return false
            fill = (fill % 250) + 1
            mem.bytes.fill(fill, off, off + o.size)
            live.set(off, { size: o.size, fill })
          } else if (live.size) {
            const keys = [...live.keys()]
            const off = keys[o.pick % keys.length]!
            const b = live.get(off)!
            if (!mem.bytes.subarray(off, off + b.size).every((x) => x === b.fill)) return false
            live.delete(off)
            if (o.k === 'free') heap.free(off)
            else {
              let n: number
              try {
                n = heap.realloc(off, o.size)
              } catch (e) {
                if ((e as ShmError).code === 'ENOMEM') { live.set(off, b); continue }
                throw e
              }
              const keep = Math.min(b.size, o.size)
              if (!mem.bytes.subarray(n, n + keep).every((x) => x === b.fill)) return false
              mem.bytes.fill(b.fill, n, n + o.size)
              live.set(n, { size: o.size, fill: b.fill })
            }
          }
          heap.check()
          if (heap.stats().allocations !== live.size) return false
        }
        return true
      } finally {
        for (const off of live.keys()) heap.free(off)
        heap.check()
      }
    }),
    { numRuns: 150 },
  )
  heap.trim()
  t.deepEqual(heap.stats(), start)
})

test('freeing named objects among thousands removes exactly their names, also when another process freed and reused the object since this one named it', (t) => {
  // A free looks for the entry where named()/find() saw it (one bucket), before it walks
  // the whole directory (8 ms a free at 100,000 names).
  const mem = segment(t, 4 << 20)
  const heap = mem.heap
  const base = heap.stats().allocations
  const names = Array.from({ length: 3000 }, (_, i) => `n${i}`)
  const refs = names.map((n, i) => heap.named(n, 'int32_t', i))
  for (let i = 0; i < names.length; i += 2) {
    if (i % 4 === 0) refs[i]!.free()
    else heap.find(names[i]!)!.free()
  }
  for (let i = 0; i < names.length; i++) t.is(heap.find(names[i]!)?.value, i % 2 === 0 ? undefined : i)
  heap.check()
  // Another process frees 'x' and names 'y' in its place: this object's note of where
  // x's entry was is stale.
  const x = heap.named('x', 'int32_t', 1)
  const script = `
    const { revive } = require(${JSON.stringify(join(process.cwd(), 'dist', 'index.js'))})
    const heap = revive(JSON.parse(process.argv[1])).heap
    heap.find('x').free()
    process.stdout.write(String(heap.named('y', 'int32_t', 2).offset))`
  const r = spawnSync(process.execPath, ['-e', script, JSON.stringify(mem)], { encoding: 'utf8' })
  t.is(r.status, 0, r.stderr)
  const y = Number(r.stdout)
  heap.free(y)
  t.is(heap.find('x'), undefined)
  t.is(heap.find('y'), undefined)
  heap.check()
  for (let i = 1; i < names.length; i += 2) refs[i]!.free()
  t.log(y === x.offset ? "'y' took the place of 'x'" : "'y' went elsewhere")
  t.is(heap.stats().allocations, base)
  heap.check()
})

test('two processes racing named() get one object, constructed once', async (t) => {
  const mem = segment(t)
  for (let round = 0; round < 3; round++) {
    const name = `shared-config-${round}`
    const kids = [0, 1, 2].map(() => forkChild(t, 'named-race.mjs'))
    await Promise.all(kids.map((k) => k.message()))
    kids.forEach((k) => k.proc.send(JSON.parse(JSON.stringify({ mem, name }))))
    await Promise.all(kids.map((k) => k.message()))
    kids.forEach((k) => k.proc.send('go'))
    const res = await Promise.all(kids.map((k) => k.message<{ offset: number; value: number; type: string }>()))
    t.is(new Set(res.map((r) => r.offset)).size, 1, 'one object')
    t.is(new Set(res.map((r) => r.value)).size, 1, 'one construction: every racer sees the same initial value')
    t.true(kids.some((k) => k.proc.pid === res[0]!.value), 'the value is one racer\'s pid')
    t.is(res[0]!.type, 'uint32_t[2]')
    const found = mem.heap.find<number[]>(name)
    t.truthy(found)
    t.deepEqual(found!.value, [res[0]!.value, 1])
  }
  t.is(mem.heap.find('never-made'), undefined)
  throws(t, () => mem.heap.named('', 'int'), { instanceOf: TypeError, message: /"name"/ })
  throws(t, () => mem.heap.named('x'.repeat(256), 'int'), { instanceOf: RangeError, message: /"name"/ })
  t.is(mem.heap.named('é'.repeat(127), 'int', 5).value, 5, '254 bytes of UTF-8 is fine')
  // Another type than the object's is a TypeError, not the object under a wrong type.
  mem.heap.named('counter', 'int32_t', 5)
  throws(t, () => mem.heap.named('counter', 'uint64_t', 0n), { instanceOf: TypeError, message: /"counter" exists as int32_t, not uint64_t/ })
  throws(t, () => mem.heap.named('counter', 'uint8_t[4096]'), { instanceOf: TypeError, message: /exists as int32_t/ })
  t.is(mem.heap.named('counter', 'int32_t').value, 5)
  // A bad init creates nothing: the name stays free for a good one.
  const allocations = mem.heap.stats().allocations
  throws(t, () => mem.heap.named('limit', 'uint8_t', 300), { instanceOf: RangeError, code: 'ERR_OUT_OF_RANGE' })
  t.is(mem.heap.find('limit'), undefined)
  t.is(mem.heap.stats().allocations, allocations)
  t.is(mem.heap.named('limit', 'uint8_t', 200).value, 200)
  // init is read once, before the name is reserved: a getter that throws the second time
  // it runs (it used to, half-way through the object's write) and one that looks the name
  // up (it used to wait 10 s for its own construction) run before the object exists.
  const pair = types.struct('pair3', { a: types.i32, b: types.i32, c: types.i32 })
  let reads = 0
  const once = { a: 1, get b() { if (++reads > 1) throw new Error('read twice'); return 2 }, c: 3 }
  t.like(mem.heap.named('once', pair, once), { a: 1, b: 2, c: 3 })
  t.is(reads, 1)
  const boom = { a: 1, get b(): number { throw new Error('boom') }, c: 3 }
  t.throws(() => mem.heap.named('boom', pair, boom), { message: 'boom' })
  t.is(mem.heap.find('boom'), undefined, 'a throwing init publishes nothing')
  t.like(mem.heap.named('boom', pair, { a: 7, b: 8, c: 9 }), { a: 7, b: 8, c: 9 })
  const t0 = performance.now()
  let seen: unknown = 'not run'
  const looking = { a: 1, get b() { seen = mem.heap.find('looking'); return 2 }, c: 3 }
  t.like(mem.heap.named('looking', pair, looking), { a: 1, b: 2, c: 3 })
  t.is(seen, undefined)
  t.true(performance.now() - t0 < 5_000)
  mem.heap.check()
  // A struct member called "value" hides ref.value, not the init of new() and named().
  const kv = types.struct('kv', { key: types.i32, value: types.i32 })
  const a = mem.new(kv, { key: 1, value: 2 }) as Ref & { key: number; value: number }
  t.is(a.value, 2)
  t.like(mem.heap.named('kv', kv, { key: 3, value: 4 }) as Ref & { key: number; value: number }, { key: 3, value: 4 })
  // So do members named like the Ref's other properties; the reference still works
  // (toJSON, revive) and the hidden properties stay readable through Ref.prototype.
  const pool = types.struct('pool', { memory: types.u64, offset: types.u32, type: types.i32, address: types.i32, heap: types.i32 })
  const p = mem.new(pool, { memory: 4096n, offset: 1, type: 2, address: 3, heap: 4 }) as unknown as Record<string, unknown>
  t.deepEqual([p.memory, p.offset, p.type, p.address, p.heap], [4096n, 1, 2, 3, 4])
  p.memory = 8192n
  t.is(revive<Record<string, unknown>>(JSON.parse(JSON.stringify(p))).memory, 8192n, 'written to the shared bytes')
  const memoryOf = Object.getOwnPropertyDescriptor(Ref.prototype, 'memory')!.get!
  t.is(memoryOf.call(p), mem, 'the mapping, through the prototype')
})

// Containers and named objects allocate through native calls of their own: like malloc,
// they give this thread's cached blocks back to the heap before they report ENOMEM (they
// failed while stats() counted the room as free).
for (const [what, op] of [
  ['SharedMap.set', (m: MappedMemory) => new SharedMap<string, string>(m.heap, { stripes: 1, capacity: 8, codec: 'string' })],
  ['heap.named', (m: MappedMemory) => m.heap.named('n', 'uint8_t[300]')],
  ['SharedMap.named', (m: MappedMemory) => SharedMap.named(m, 'jobs', { stripes: 1, capacity: 8 })],
] as const) {
  test(`${what} takes this thread's cached blocks back before it reports ENOMEM`, (t) => {
    const mem = MappedMemory.anonymous({ size: 1 << 16 })
    t.teardown(() => mem.close())
    const heap = mem.heap
    const map = what === 'SharedMap.set' ? (op(mem) as SharedMap<string, string>) : null
    const blocks: number[] = []
    for (const size of [512, 16]) {
      for (;;) {
        try {
          blocks.push(heap.malloc(size))
        } catch {
          break
        }
      }
    }
    for (const b of blocks.slice(0, 4)) heap.free(b)
    t.true(heap.stats().cachedBytes >= 2048, JSON.stringify(heap.stats()))
    if (map) {
      map.set('k', 'v'.repeat(300))
      t.is(map.update('k', (v) => `${v}!`), `${'v'.repeat(300)}!`)
    } else {
      t.truthy(op(mem))
    }
    heap.check()
  })
}

test('a heap formatted again at the same offset with another size serves containers made in it (they kept the first geometry)', (t) => {
  const mem = segment(t, 1 << 20)
  const outer = mem.heap
  for (const [s0, s1] of [[262144, 65536], [65536, 262144]] as const) {
    const b0 = outer.malloc(s0, 64)
    const m0 = new SharedMap<string, number>(Heap.create(mem, { offset: b0, size: s0 }), { stripes: 1 })
    m0.set('x', 1)
    outer.free(b0)
    const b1 = outer.malloc(s1, 64)
    t.is(b1, b0, 'the same offset')
    const h1 = Heap.create(mem, { offset: b1, size: s1 })
    const m1 = new SharedMap<string, string>(h1, { stripes: 1 })
    for (let n = 0; n < 300; n++) m1.set(`k${n}`, 'v'.repeat(50))
    t.is(m1.size, 300)
    t.is(m1.get('k299'), 'v'.repeat(50))
    h1.check()
    outer.free(b1)
  }
  outer.check()
})

test('Heap.create refuses a region over a managed segment\'s headers or its heap (the segment would be destroyed for every process, or two heaps hand out the same bytes); inside a block of mem.heap it works', async (t) => {
  const mem = segment(t)
  mem.heap.named('counter', 'int32_t', 77)
  const live = mem.heap.malloc(256)
  const freed = mem.heap.malloc(4096)
  mem.heap.free(freed)
  mem.heap.trim()
  const end = mem.heap.offset + mem.heap.stats().size
  const refused = [
    {}, { offset: 0, size: 4096 }, { offset: mem.heap.offset }, { offset: mem.heap.offset + 64, size: 8192 },
    { offset: live - 16, size: 4096 }, { offset: live, size: 4096 }, { offset: live + 16, size: 128 },
    { offset: freed, size: 4096 }, { offset: end - 8192, size: 8192 }, { offset: end - 4096, size: 8192 },
  ]
  for (const options of refused) {
    throws(t, () => Heap.create(mem, options), { instanceOf: RangeError, message: /^Heap\.create: .* lies in the managed segment's header or heap/ }, JSON.stringify(options))
  }
  mem.heap.check()
  const size = 16384
  const inner = Heap.create(mem, { offset: mem.heap.malloc(size), size })
  const a = inner.malloc(100)
  inner.free(a)
  inner.check()
  mem.heap.check()
  const child = forkChild(t, 'child-ops.mjs', ['find-named', mem.name!, 'counter'])
  t.deepEqual(await child.message(), { value: 77 }, 'another process still opens the segment and finds its objects')
})

test('typed references: scalars, 64-bit as bigint, arrays, the original\'s "T *" spelling', (t) => {
  const mem = segment(t)
  const names: Array<[string, unknown, unknown]> = [
    ['int8_t', -5, -5], ['uint8_t', 250, 250], ['int16_t', -300, -300], ['uint16_t', 60000, 60000],
    ['int32_t', -70000, -70000], ['uint32_t', 4e9, 4e9], ['int64_t', -(2n ** 62n), -(2n ** 62n)],
    ['uint64_t', 2n ** 63n, 2n ** 63n], ['char', 65, 65], ['short', -2, -2], ['int', 7, 7], ['long', 8n, 8n],
    ['long long', 9n, 9n], ['unsigned int', 10, 10], ['unsigned long', 11n, 11n], ['size_t', 12n, 12n],
    ['ssize_t', -13n, -13n], ['intptr_t', -14n, -14n], ['uintptr_t', 15n, 15n], ['float', 1.5, 1.5],
    ['double', Math.PI, Math.PI], ['bool', true, true], ['_Bool', false, false], ['size_t *', 3n, 3n],
    ['int64_t*', 1923n, 1923n],
  ]
  for (const [name, init, expected] of names) {
    const r = mem.new(name, init)
    t.is(r.value, expected, name)
    t.is(r.get(0), expected, `${name} [0]`)
    t.is(r.memory, mem)
    t.is(r.address, mem.address.begin + r.offset)
    t.is(r.bytes().length, r.type.size)
  }
  const z = mem.new('uint64_t')
  t.is(z.value, 0n, 'zeroed')
  z.set(0, 5n)
  t.is(z.value, 5n)
  const a = mem.new('int32_t[4]', [1, 2, 3])
  t.deepEqual(a.value, [1, 2, 3, 0])
  a.set(3, 9)
  t.is(a.get(3), 9)
  t.deepEqual(mem.new('uint16_t[3]', new Uint16Array([4, 5, 6])).value, [4, 5, 6])
  t.deepEqual(mem.new('uint8_t[4]', Buffer.from([1, 2, 3, 4])).value, [1, 2, 3, 4])
  t.deepEqual(mem.new('double[2][2]', [[1, 2], [3, 4]]).value, [[1, 2], [3, 4]])
  const s = mem.new('char *', 'hi')
  t.is(s.type.name, 'char[3]')
  t.deepEqual([...s.bytes()], [104, 105, 0])
  throws(t, () => a.get(4), { instanceOf: RangeError, message: /"i"/ })
  throws(t, () => a.get(-1), { instanceOf: RangeError })
  throws(t, () => z.get(1), { instanceOf: RangeError })
  throws(t, () => mem.new('not_a_type'), { instanceOf: TypeError })
  throws(t, () => mem.new(42 as unknown as string), { instanceOf: TypeError, message: /"type"/ })
  throws(t, () => mem.new('uint8_t', 300), { instanceOf: RangeError })
  throws(t, () => mem.new('int', 'x' as unknown as number), { instanceOf: TypeError })
  const before = mem.heap.stats().allocations
  const f = mem.new('int64_t[100]')
  f.free()
  t.is(mem.heap.stats().allocations, before)
  throws(t, () => f.free(), { code: 'ERR_SHM_DOUBLE_FREE' })
  const st = mem.new(types.struct('pt', { x: types.i32, y: types.f64 }), { x: 3, y: 0.5 })
  t.deepEqual(st.value, { x: 3, y: 0.5 })
  t.true(st instanceof Ref)
})

test('new Lock(heap | mem) is cache-line aligned; Ref handles revive with their type in another process', async (t) => {
  const mem = segment(t)
  const l1 = new Lock(mem)
  const l2 = new Lock(mem.heap)
  t.is(l1.offset % 64, 0)
  t.is(l2.offset % 64, 0)
  t.true(Math.abs(l2.offset - l1.offset) >= 64, 'no false sharing')
  t.true(l1.acquire())
  t.false(l2.locked)
  l1.release()
  const counter = mem.new('size_t *', 41)
  const h = JSON.parse(JSON.stringify({ counter, l1 }))
  t.is(h.counter.$shmutils, 'Ref')
  t.deepEqual(h.counter.type, 'uint64_t')
  const here = revive<{ counter: Ref<bigint> }>(h)
  t.is(here.counter.value, 41n)
  t.is(here.counter.type as unknown, counter.type as unknown)
  throws(t, () => new Lock(new MappedMemory(null, 4096)), { instanceOf: TypeError })
  throws(t, () => new Lock({} as MappedMemory), { instanceOf: TypeError })
})

test('the original\'s first example: 400 KiB, a Lock and a size_t counter from mem.new, two workers to 20,000', async (t) => {
  const name = segmentName(t, 'orig')
  const fd = shmOpen(name, 'w+')
  const size = 4096 * 100
  fd.truncate(size)
  t.is(fd.size(), size)
  fd.close()
  const m = MappedMemory.create(segmentName(t, 'orig-m'), { size })
  t.teardown(() => { m.close(); try { m.unlink() } catch { /* already */ } })
  const lock = new Lock(m)
  const counter = m.new('size_t *', 0)
  const kids = [forkChild(t, 'original-worker.mjs'), forkChild(t, 'original-worker.mjs')]
  const job = JSON.parse(JSON.stringify({ lock, counter, limit: 20_000 }))
  lock.withLock(() => {
    kids.forEach((k) => k.proc.send(job))
  })
  await Promise.all(kids.map((k) => k.message()))
  lock.acquire()
  kids.forEach((k) => k.proc.send('go'))
  await new Promise((r) => setTimeout(r, 30))
  t.is(counter.get(0), 0n, 'held by the parent: nobody has counted yet')
  lock.release()
  const [r1, r2] = await Promise.all(kids.map((k) => k.message<{ count: number }>()))
  t.is(counter.get(0), 20_000n)
  t.is(r1!.count + r2!.count, 20_000)
  void MapFlags
  void Protection
})
