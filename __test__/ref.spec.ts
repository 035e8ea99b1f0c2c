// Ref: pointer members (reading, storing, bounds, pointer-to-pointer, arrays of
// pointers), a self-referential list walked by a process that mapped the segment
// elsewhere, nested structs and arrays as sub-references, unions, typed named objects.
import test from 'ava'
import { astuple, cdef, MappedMemory, Ref, ShmError, types } from '../dist/index.js'
import { forkChild, segmentName, throws } from './helpers.js'

function segment(t: Parameters<typeof segmentName>[0], options: { size?: number; fixedAddress?: boolean } = {}): MappedMemory {
  const m = MappedMemory.create(segmentName(t, 'ref'), { size: options.size ?? 1 << 20, fixedAddress: options.fixedAddress ?? false })
  t.teardown(() => m.close())
  return m
}

/** A struct reference with its members typed loosely for tests. */
type S = Ref & Record<string, unknown>
type Node = Ref & { v: number; next: Node | null }

const ffi = cdef(`
  struct node { int32_t v; struct node *next; };
  struct ptrs { int32_t *p; int32_t **pp; void *vp; const char *s; int32_t *arr[3]; struct node *n; };
  struct inner { int16_t a; double d; };
  struct outer { uint8_t tag; struct inner in; int32_t grid[2][3]; struct inner items[2]; char name[8]; };
  union num { int32_t i; float f; uint8_t b[4]; struct { uint16_t lo, hi; } parts; };
  struct tagged { int kind; union { struct { uint16_t lo, hi; }; uint32_t all; }; };
  union ub { uint32_t i; bool b; };
  struct fl { float f; };
  struct holder { union ub u; struct fl s; };
`)

test('pointer members read as Ref or null and take a Ref, null or an address', (t) => {
  const mem = segment(t)
  const x = mem.new('int32_t', 7)
  const s = mem.new(ffi.typeof('struct ptrs')) as S
  t.is(s.p, null, 'zeroed: NULL')
  t.is(s.vp, null)
  s.p = x
  const p = s.p as Ref
  t.true(p instanceof Ref)
  t.is(p.offset, x.offset)
  t.is(p.type, types.i32)
  t.is(p.value, 7)
  p.value = 8
  t.is(x.value, 8, 'the pointer leads to the same bytes')
  t.is(p.heap, mem.heap)
  // an address: in the creator's address space (base + offset), as C stores it
  const view = new DataView(mem.buffer)
  t.is(Number(view.getBigUint64(s.offset, true)), mem.baseAddress + x.offset)
  s.p = null
  t.is(s.p, null)
  s.p = mem.baseAddress + x.offset
  t.is((s.p as Ref).offset, x.offset)
  s.p = BigInt(mem.baseAddress + x.offset + 4)
  t.is((s.p as Ref).offset, x.offset + 4)
  s.p = undefined
  t.is(s.p, null, 'undefined stores NULL')
  // void * reads as the address itself
  s.vp = x
  t.is(s.vp, mem.baseAddress + x.offset)
  s.vp = 0x1234
  t.is(s.vp, 0x1234)
  // bad values name the member
  throws(t, () => { s.p = -1 }, { instanceOf: RangeError, message: /struct ptrs\.p/ })
  throws(t, () => { s.p = 1.5 }, { instanceOf: RangeError, message: /struct ptrs\.p/ })
  throws(t, () => { s.p = 2n ** 64n }, { instanceOf: RangeError })
  throws(t, () => { s.p = 'x' }, { instanceOf: TypeError, message: /struct ptrs\.p/ })
  throws(t, () => { s.p = {} }, { instanceOf: TypeError })
  // a Ref in another mapping cannot be stored: no other process could follow it
  const other = segment(t)
  throws(t, () => { s.p = other.new('int32_t') }, { instanceOf: ShmError, code: 'ERR_SHM_OUT_OF_BOUNDS', message: /another mapping/ })
  // ... but the same segment mapped a second time in this process is the same segment
  const again = MappedMemory.open(mem.name!, { fixedAddress: false })
  t.teardown(() => again.close())
  const y = again.new('int32_t', 99)
  s.p = y
  t.is((s.p as Ref).value, 99)
  t.is(((again.new(ffi.typeof('struct ptrs')) as S).p), null)
  // a char pointer at a string made with new('char *', ...)
  s.s = mem.new('char *', 'hey')
  t.is((s.s as Ref).type, types.char)
  t.deepEqual([0, 1, 2, 3].map((i) => new DataView(mem.buffer).getUint8((s.s as Ref).offset + i)), [104, 101, 121, 0])
})

test("a number address stored through a mapping elsewhere than the creator's (another process, a worker thread) is this process's address: ref.address works everywhere", (t) => {
  const mem = segment(t)
  const other = MappedMemory.open(mem.name as string, { fixedAddress: false })
  t.teardown(() => other.close())
  t.not(other.address.begin, mem.baseAddress, 'the second mapping is elsewhere')
  const T = ffi.typeof('struct node')
  const a = mem.new(T) as Node
  const b = mem.new(T) as Node
  a.v = 1
  const a2 = Ref.at(other, a.offset, T) as unknown as Node
  const b2 = Ref.at(other, b.offset, T) as unknown as Node
  ;(b2 as unknown as { next: number }).next = a2.address
  t.is(b2.next?.v, 1, 'read back through the mapping that wrote it')
  t.is(b.next?.v, 1, "and through the creator's")
  t.is(Number(new DataView(mem.buffer).getBigUint64(b.offset + 8, true)), mem.baseAddress + a.offset, "stored in the creator's address space")
  ;(b as unknown as { next: number }).next = a.address
  t.is(b2.next?.v, 1, "the creator's own address still works")
})

test('a pointer outside the segment is ERR_SHM_OUT_OF_BOUNDS when dereferenced, never a raw read', (t) => {
  const mem = segment(t, { size: 1 << 16 })
  const s = mem.new(ffi.typeof('struct ptrs')) as S
  const bad = [0x1000, mem.baseAddress - 4, mem.baseAddress + mem.size, mem.baseAddress + mem.size - 2, 2 ** 52]
  for (const addr of bad) {
    s.p = addr
    throws(t, () => s.p, { instanceOf: ShmError, code: 'ERR_SHM_OUT_OF_BOUNDS' }, `0x${addr.toString(16)}`)
    s.n = addr
    throws(t, () => s.n, { code: 'ERR_SHM_OUT_OF_BOUNDS' })
  }
  s.p = mem.baseAddress + mem.size - 4
  t.is((s.p as Ref).offset, mem.size - 4, 'the last int of the segment is inside')
  s.p = mem.baseAddress
  t.is((s.p as Ref).offset, 0, 'so is the first (the header)')
  // through a pointer-typed reference: p[i] is bounds-checked too
  const x = mem.new('int32_t[4]', [1, 2, 3, 4])
  const px = mem.new(types.ptr(types.i32))
  px.value = x
  t.deepEqual([0, 1, 2, 3].map((i) => px.get(i)), [1, 2, 3, 4])
  throws(t, () => px.get(1 << 20), { code: 'ERR_SHM_OUT_OF_BOUNDS' })
  throws(t, () => px.at(1 << 20), { code: 'ERR_SHM_OUT_OF_BOUNDS' })
  px.value = null
  throws(t, () => px.get(0), { code: 'ERR_SHM_OUT_OF_BOUNDS', message: /NULL/ })
  t.is(px.deref(), null)
  px.value = 0x10
  throws(t, () => px.deref(), { code: 'ERR_SHM_OUT_OF_BOUNDS' })
  throws(t, () => px.set(0, 1), { code: 'ERR_SHM_OUT_OF_BOUNDS' })
})

test('pointer to pointer, arrays of pointers, pointer values taking a Ref', (t) => {
  const mem = segment(t)
  const x = mem.new('int32_t', 7)
  const px = mem.new(types.ptr(types.i32))
  px.value = x
  t.is(px.value, mem.baseAddress + x.offset, 'a pointer\'s value is the stored address')
  const s = mem.new(ffi.typeof('struct ptrs')) as S
  s.pp = px
  const pp = s.pp as Ref
  t.is(pp.type, types.ptr(types.i32))
  t.is(pp.offset, px.offset)
  t.is((pp.deref() as Ref).value, 7, '**pp')
  t.is(pp.value, mem.baseAddress + x.offset, '*pp as an address')
  t.is(pp.get(0), 7, '(*pp)[0]')
  ;(pp.deref() as Ref).value = 70
  t.is(x.value, 70)
  pp.value = null
  t.is(px.deref(), null, 'writing *pp changes p')
  pp.value = x
  t.is((px.deref() as Ref).value, 70, 'a Ref is taken for *pp too')
  // a pointer to pointer made with the DSL
  const ppp = mem.new(types.ptr(types.ptr(types.i32)))
  ppp.value = px
  t.is(((ppp.deref() as Ref).deref() as Ref).value, 70)
  // arrays of pointers: elements as addresses, at(i).deref() as references
  const a = mem.new('int32_t[3]', [10, 20, 30])
  const arr = s.arr as Ref
  t.is(arr.type.name, 'int32_t *[3]')
  arr.set(0, a.at(0))
  arr.set(2, a.at(2))
  t.is(arr.get(0), mem.baseAddress + a.offset)
  t.is(arr.get(1), 0)
  t.is((arr.at(2).deref() as Ref).value, 30)
  const tuple = astuple(s)
  t.deepEqual((tuple[4] as Array<Ref | null>).map((r) => r && (r.value as number)), [10, null, 30])
  t.is((tuple[1] as Ref).offset, px.offset)
  // Whole values (init, ref.value) take a Ref for a pointer at any depth, as the member
  // properties do; a Ref in another mapping is refused, nothing written.
  const name = mem.heap.newString('node')
  const tail = mem.new(ffi.typeof('struct node'), { v: 2, next: null }) as Node
  const s2 = mem.new(ffi.typeof('struct ptrs'), { p: x, s: name, arr: [a.at(1), null, a.at(0)], n: tail }) as S
  t.is((s2.p as Ref).value, 70)
  t.is((s2.s as Ref).string(), 'node')
  t.deepEqual((s2.arr as Ref).value, [mem.baseAddress + a.offset + 4, 0, mem.baseAddress + a.offset])
  t.is((s2.n as Node).v, 2)
  const list = mem.new(types.array(ffi.typeof('struct node'), 2)) as Ref
  list.value = [{ v: 1, next: tail }, { v: 3, next: null }]
  t.is(((list.at(0) as Node).next as Node).v, 2)
  const other = MappedMemory.anonymous({ size: 1 << 16 })
  t.teardown(() => other.close())
  const before = s2.value
  throws(t, () => { s2.value = { p: other.new('int32_t', 1) } }, { code: 'ERR_SHM_OUT_OF_BOUNDS', message: /struct ptrs\.p: the target int32_t is in another mapping/ })
  t.deepEqual(s2.value, before, 'nothing written')
})

test('a self-referential list built here is walked by a process that mapped the segment at another address', async (t) => {
  const mem = segment(t, { fixedAddress: true })
  const T = ffi.typeof('struct node')
  const head = mem.heap.named('list', T, { v: 0 }) as Node
  let last = head
  for (let i = 1; i < 10; i++) {
    const n = mem.new(T, { v: i * i }) as Node
    last.next = n
    last = n
  }
  const walk = (h: Node): number[] => {
    const out: number[] = []
    for (let p: Node | null = h; p !== null; p = p.next) out.push(p.v)
    return out
  }
  const squares = Array.from({ length: 10 }, (_, i) => i * i)
  t.deepEqual(walk(head), squares)
  const child = forkChild(t, 'ref-list.mjs')
  await child.message()
  child.proc.send(JSON.parse(JSON.stringify({ memory: mem, head, name: 'list', base: mem.address.begin, size: mem.size })))
  const r = await child.message<{ error?: string; begin: number; base: number; typeName: string; isRef: boolean;
    byName: number[]; byHandle: number[]; appended: number; stored: number }>()
  t.falsy(r.error, r.error)
  t.not(r.begin, mem.address.begin, 'the child mapped the segment elsewhere')
  t.is(r.base, mem.address.begin, 'and knows the creator\'s base from the header')
  t.is(r.typeName, 'struct node', 'heap.find is typed in another process')
  t.true(r.isRef)
  t.deepEqual(r.byName, squares)
  t.deepEqual(r.byHandle, squares)
  t.is(r.stored, mem.address.begin + r.appended, 'the child stored a creator-space address')
  t.deepEqual(walk(head), [...squares, -1], 'and it reads back here')
  t.is(last.next!.offset, r.appended)
})

test("an index that is not a number is a typed RangeError naming it, also one that cannot become a string", (t) => {
  const mem = MappedMemory.anonymous({ size: 1 << 16 })
  t.teardown(() => mem.close())
  const r = mem.new('uint64_t')
  const detached = new Uint8Array(8)
  structuredClone(detached.buffer, { transfer: [detached.buffer] })
  for (const i of [Object.create(null), detached, Symbol('i')]) {
    throws(t, () => r.get(i as number), { instanceOf: RangeError, code: 'ERR_OUT_OF_RANGE', message: /The "i" argument must be 0 for a uint64_t/ })
    throws(t, () => r.set(i as number, 1n), { instanceOf: RangeError, code: 'ERR_OUT_OF_RANGE', message: /The "i" argument/ })
  }
  t.is(r.get(0), 0n)
})

test('nested structs and arrays are sub-references onto the same bytes', (t) => {
  const mem = segment(t)
  const o = mem.new(ffi.typeof('struct outer')) as S
  const inner = o.in as S
  t.true(inner instanceof Ref)
  t.is(inner.offset, o.offset + ffi.offsetof('struct outer', 'in'))
  t.is(inner.type, ffi.typeof('struct inner'))
  t.is(inner.heap, mem.heap)
  inner.d = 2.5
  inner.a = -3
  t.deepEqual((o.value as { in: unknown }).in, { a: -3, d: 2.5 })
  o.in = { a: 1 }
  t.deepEqual([inner.a, inner.d], [1, 0], 'assigning a whole member has initializer semantics')
  const grid = o.grid as Ref
  t.is(grid.type.name, 'int32_t[2][3]')
  grid.at(1).set(2, 7)
  t.is(grid.at(1).offset, o.offset + ffi.offsetof('struct outer', 'grid[1]'))
  t.deepEqual((o.value as { grid: number[][] }).grid, [[0, 0, 0], [0, 0, 7]])
  o.grid = [[1, 2, 3]]
  t.deepEqual(grid.value, [[1, 2, 3], [0, 0, 0]])
  const items = o.items as Ref
  const second = items.at(1) as S
  second.a = 9
  t.is(second.offset, o.offset + ffi.offsetof('struct outer', 'items[1].a'))
  t.is(((o.items as Ref).at(1) as S).a, 9)
  o.name = 'hi'
  t.deepEqual([...(o.name as Ref).bytes()], [104, 105, 0, 0, 0, 0, 0, 0])
  t.deepEqual(astuple(o), [0, [1, 0], [[1, 2, 3], [0, 0, 0]], [[0, 0], [9, 0]], [104, 105, 0, 0, 0, 0, 0, 0]])
  throws(t, () => grid.get(2), { instanceOf: RangeError, message: /"i"/ })
  throws(t, () => { o.in = 5 }, { instanceOf: TypeError })
  // A reference of the member's type, as the types allow: copied in, as C assigns a struct.
  o.in = mem.new(ffi.typeof('struct inner'), { a: 4, d: 0.5 })
  t.deepEqual([inner.a, inner.d], [4, 0.5])
  o.in = (o.items as Ref).at(1)
  t.deepEqual([inner.a, inner.d], [9, 0])
  o.in = inner // itself
  t.deepEqual([inner.a, inner.d], [9, 0])
  o.name = mem.new('char[8]', 'zz')
  t.is((o.name as Ref).string(), 'zz')
  throws(t, () => { o.in = mem.new('int32_t[4]') }, { instanceOf: TypeError, code: 'ERR_INVALID_ARG_TYPE', message: 'struct outer.in: a reference to int32_t[4] cannot be assigned to a member of type struct inner' })
  throws(t, () => { o.name = mem.new('char[4]', 'ab') }, { instanceOf: TypeError, message: /a reference to char\[4\] cannot be assigned to a member of type char\[8\]/ })
  t.is((o.name as Ref).string(), 'zz', 'refused before anything was written')
  // The bytes, not the decoded value written back: a union's members each write (the
  // last one, a bool, made 0x102 into 0x101) and a float NaN loses its payload.
  const h = mem.new(ffi.typeof('struct holder')) as S
  const u = mem.new(ffi.typeof('union ub')) as S
  u.i = 0x102
  h.u = u
  t.is((h.u as S).i, 0x102)
  const f = mem.new(ffi.typeof('struct fl'))
  const dv = new DataView(mem.buffer)
  dv.setUint32(f.offset, 0x7f80_0001, true) // a signalling NaN
  h.s = f
  t.is(dv.getUint32((h.s as Ref).offset, true), 0x7f80_0001)
})

test('unions: members share bytes; anonymous members are flattened', (t) => {
  const mem = segment(t)
  const U = ffi.typeof('union num')
  t.is(U.size, 4)
  const n = mem.new(U) as S
  n.i = 0x01020304
  t.deepEqual((n.b as Ref).value, [4, 3, 2, 1])
  t.is((n.parts as S).lo, 0x0304)
  t.is((n.parts as S).hi, 0x0102)
  n.f = 1
  t.is(n.i, 0x3f800000)
  ;(n.b as Ref).set(2, 0)
  ;(n.b as Ref).set(3, 0x40)
  t.is(n.f, 2)
  n.value = { i: 5 }
  t.is(n.i, 5)
  const tg = mem.new(ffi.typeof('struct tagged'), { kind: 1, all: 0x00020001 }) as S
  t.deepEqual([tg.lo, tg.hi], [1, 2])
  tg.hi = 3
  t.is(tg.all, 0x00030001)
  t.deepEqual(astuple(tg), [1, 1, 3, 0x00030001])
})

test('property: a scalar member property writes and refuses exactly as the member accessor does; read-only first', async (t) => {
  const fc = (await import('fast-check')).default
  const { structLayoutAccessors } = await import('../dist/types/access.js')
  const all = cdef(`
    enum e { EA = -2, EB = 70000 };
    struct scalars { int8_t a; uint8_t b; int16_t c; uint16_t d; int32_t e; uint32_t f; int64_t g; uint64_t h;
      float i; double j; bool k; char l; enum e m; };`)
  const ty = all.typeof('struct scalars')
  const layout = structLayoutAccessors(ty)
  const mem = segment(t)
  const s = mem.new(ty) as S
  const dv = new DataView(mem.buffer)
  const ro = MappedMemory.open(mem.name!, { readOnly: true })
  t.teardown(() => ro.close())
  const r = Ref.at(ro, s.offset, ty) as S
  const outcome = (fn: () => void): string => {
    try {
      fn()
      return `ok ${[...new Uint8Array(mem.buffer, s.offset, ty.size)].join(',')}`
    } catch (e) {
      return `${(e as Error).constructor.name}: ${(e as Error).message}`
    }
  }
  const value = fc.oneof(
    fc.integer(), fc.double(), fc.bigInt({ min: -(2n ** 65n), max: 2n ** 65n }), fc.boolean(), fc.string({ maxLength: 2 }),
    fc.constantFrom(null, undefined, 'EA', 'EB', 0, -0, 1, 255, -129, 2 ** 31, 2 ** 53, 1.5, [1], {}),
  )
  fc.assert(
    fc.property(fc.constantFrom(...layout.names), value, (name, v) => {
      new Uint8Array(mem.buffer, s.offset, ty.size).fill(0)
      const viaProperty = outcome(() => {
        s[name] = v
      })
      new Uint8Array(mem.buffer, s.offset, ty.size).fill(0)
      const viaAccessor = outcome(() => layout.fields[name]!.set(dv, s.offset, v))
      if (viaProperty !== viaAccessor) return false
      if (viaProperty.startsWith('ok') && !Object.is(s[name], layout.fields[name]!.get(dv, s.offset))) return false
      // A read-only mapping refuses first, whatever the value.
      return outcome(() => {
        r[name] = v
      }).startsWith('ShmError: the segment was opened read-only')
    }),
    { numRuns: 2000 },
  )
  t.pass()
})
