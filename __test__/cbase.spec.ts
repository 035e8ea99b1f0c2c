// CBase: the original README's sketch translated line by line, then the edges: process-
// local memory (and its garbage collection), withHeap, revive in other processes, and
// argument errors.
import { fork } from 'node:child_process'
import test from 'ava'
import {
  astuple, CBase, cdef, FFI, Heap, MappedMemory, PAGE_SIZE, Ref, revive, reviver, ShmError, types, type Type,
} from '../dist/index.js'
import { fixture, forkChild, segmentName, throws } from './helpers.js'

/** Member types of `struct org_user_t`, as they read in JavaScript. */
interface OrgUser {
  id: bigint
  fullname: Ref | null
  fullname_len: number
  status: number
}

/** The C string a `char` reference starts. */
function cstr(r: Ref): string {
  const bytes = r.memory.bytes
  let end = r.offset
  while (bytes[end] !== 0) end++
  return Buffer.from(bytes.subarray(r.offset, end)).toString()
}

/** astuple with pointers compared by offset. */
function comparable(tuple: unknown[]): unknown[] {
  return tuple.map((v) => (v instanceof Ref ? { ref: v.offset } : v))
}

test("the original README's CBase sketch, line by line", async (t) => {
  // fd = shm_open(...).truncate(PAGE_SIZE); page = MemoryMap(None, PAGE_SIZE, flags=SHARED, fd=fd)
  // A managed segment: a named shm object of one page, mapped shared, with a heap.
  const page = MappedMemory.create(segmentName(t, 'cbase'), { size: PAGE_SIZE })
  t.teardown(() => page.close())

  // ffi = cffi.FFI(); "you can include other ffi's to reuse c type declarations"
  const statusFfi = cdef('typedef enum {INACTIVE, ACTIVE, DELETED} OrgUserStatus_t;')
  const ffi = new FFI().include(statusFfi)
  // class User(CBase, ffi=ffi): __slots__ = '''struct org_user_t {...}'''
  ffi.cdef(`
    struct org_user_t {
      uint64_t id;
      char *fullname;
      uint8_t fullname_len;
      OrgUserStatus_t status;
    };`)
  class User extends CBase<OrgUser>(ffi, 'struct org_user_t') {}

  // assert ffi.typeof(class_metadata(User, "cdecl")) is ffi.typeof('struct org_user_t')
  t.is(User.cdecl, 'struct org_user_t')
  t.is(ffi.typeof(User.cdecl), ffi.typeof('struct org_user_t'))
  t.is(User.ctype as Type, ffi.typeof('struct org_user_t'))
  // assert ffi.sizeof('struct org_user_t') == class_metadata(User, "csizeof"); C ABI layout
  t.is(ffi.sizeof('struct org_user_t'), User.sizeof())
  t.is(User.sizeof(), 24)
  t.deepEqual(['id', 'fullname', 'fullname_len', 'status'].map((f) => ffi.offsetof('struct org_user_t', f)), [0, 8, 16, 20])
  // assert ffi is class_metadata(User, "default_ffi")
  t.is(User.ffi, ffi)

  // lib = ffi.dlopen(None)
  const lib = ffi.lib
  t.deepEqual({ ...lib }, { INACTIVE: 0, ACTIVE: 1, DELETED: 2 })

  // u = User.new(4123, b"Autumn", 6, lib.ACTIVE)
  const u = User.new(4123n, Buffer.from('Autumn'), 6, lib.ACTIVE)
  t.true(u instanceof User)
  t.true(u instanceof Ref)
  t.is(u.id, 4123n)
  t.is(u.fullname_len, 6)
  t.is(u.status, lib.ACTIVE)
  t.is(Buffer.from(u.fullname!.memory.bytes.subarray(u.fullname!.offset, u.fullname!.offset + 6)).toString(), 'Autumn')
  // assert User.typeof(u) == 'struct org_user_t*'   (cffi spells it with a space)
  t.is(User.typeof(u), 'struct org_user_t *')
  // assert ffi.typeof(u.id) is ffi.typeof('uint64_t'), ... (the member types, and how they read)
  const members = new Map(User.ctype.fields.map((f) => [f.name, f.type]))
  t.is(members.get('id'), ffi.typeof('uint64_t'))
  t.is(members.get('fullname'), ffi.typeof('char*'))
  t.is(members.get('fullname_len'), ffi.typeof('uint8_t'))
  t.is(members.get('status'), ffi.typeof('OrgUserStatus_t'))
  t.is(typeof u.id, 'bigint')
  t.true(u.fullname instanceof Ref)
  t.is(u.fullname!.type, ffi.typeof('char'))
  t.is(typeof u.fullname_len, 'number')
  // assert len(memoryview(User.getbuffer(u))) == User.sizeof() == User.sizeof(u)
  t.is(User.getbuffer(u).length, User.sizeof())
  t.is(User.getbuffer(u).length, User.sizeof(u))
  // assert not hasattr(u, 'sizeof')
  t.false('sizeof' in u)
  for (const s of ['new', 'withHeap', 'typeof', 'getbuffer', 'addressof', 'heapOf', 'ffi', 'cdecl', 'ctype']) {
    t.false(s in u, `no ${s} on instances`)
  }
  // assert u.__internals__["heap"] is None   (process-local memory)
  t.is(User.heapOf(u), null)
  t.is(u.heap, null)

  // SharedUser = User.with_heap(page); u2 = SharedUser.new()
  const SharedUser = User.withHeap(page)
  const u2 = SharedUser.new()
  t.true(u2 instanceof SharedUser)
  t.true(u2 instanceof User)
  // assert u2.__internals__["heap"] is page
  t.is(User.heapOf(u2), page.heap)
  t.is(SharedUser.heapOf(u2), page.heap)
  // assert u2.id == 0; u2.fullname == ffi.NULL; u2.fullname_len == 0; u2.status == 0
  t.is(u2.id, 0n)
  t.is(u2.fullname, null)
  t.is(u2.fullname_len, 0)
  t.is(u2.status, 0)

  // abs_ptr = ffi.cast('uintptr_t', User.addressof(u2))
  const absPtr = User.addressof(u2)
  // assert page.address.begin <= int(abs_ptr) < page.address.end
  t.true(page.address.begin <= absPtr && absPtr < page.address.end)
  // assert page.absolute_at[abs_ptr: abs_ptr + User.sizeof()] == User.getbuffer(u2)[0: User.sizeof()]
  t.deepEqual(page.absoluteAt(absPtr, absPtr + User.sizeof()), User.getbuffer(u2).subarray(0, User.sizeof()))
  t.is(User.getbuffer(u2).buffer, page.buffer, 'getbuffer is a view of the page, not a copy')

  // raw_u2_fullname = page.new('char*', b'Autumn Jolitz')
  const raw = page.new('char *', Buffer.from('Autumn Jolitz'))
  t.is<unknown, unknown>(raw.type, ffi.typeof('char[13]'))
  t.is(raw.heap, page.heap)
  // u2.id = 4123; u2.fullname = raw_u2_fullname; u2.fullname_len = 13; u2.status = lib.ACTIVE
  u2.id = 4123n
  u2.fullname = raw
  u2.fullname_len = 13
  u2.status = lib.ACTIVE
  // assert astuple(u2) == (u2.id, raw_u2_fullname, u2.fullname_len, lib.ACTIVE)
  const tuple = astuple(u2)
  t.deepEqual(comparable(tuple), [4123n, { ref: raw.offset }, 13, 1])
  t.is((tuple[1] as Ref).memory, page)
  t.is(Object.getPrototypeOf(User.getbuffer(u2)), Uint8Array.prototype)
  t.is(new DataView(page.buffer).getBigUint64(u2.offset + 8, true), BigInt(page.baseAddress + raw.offset),
    'the pointer is stored as an absolute address in the creator\'s address space')

  // u2_copy = pickle.loads(pickle.dumps(u2))
  const u2Copy = revive<User>(JSON.parse(JSON.stringify(u2)))
  // assert u2_copy.__internals__["heap"] is page
  t.is(User.heapOf(u2Copy), page.heap)
  // assert astuple(u2) == astuple(u2_copy)
  t.deepEqual(comparable(astuple(u2Copy)), comparable(astuple(u2)))
  t.true(u2Copy instanceof User, 'revived here as a User: the class is registered for this layout')
  t.is(u2Copy.offset, u2.offset)
  const viaReviver = JSON.parse(JSON.stringify({ user: u2 }), reviver) as { user: User }
  t.deepEqual(comparable(astuple(viaReviver.user)), comparable(tuple))

  // ... and in another process that has no declaration at all
  const child = forkChild(t, 'cbase-child.mjs', ['plain'])
  await child.message()
  child.proc.send(JSON.stringify(u2))
  const r = await child.message<{ error?: string; isRef: boolean; className: string; type: string; members: string[];
    tuple: unknown[]; text: string }>()
  t.falsy(r.error, r.error)
  t.true(r.isRef)
  t.is(r.type, 'struct org_user_t')
  t.deepEqual(r.members, ['id', 'fullname', 'fullname_len', 'status'])
  t.deepEqual(r.tuple, ['4123', raw.offset, 13, 1])
  t.is(r.text, 'Autumn Jolitz')
  t.is(u2.status, lib.DELETED, 'the child\'s write is visible here')
})

test('User.new: positional members, strings for char *, process-local memory', (t) => {
  const ffi = cdef(`
    typedef enum {INACTIVE, ACTIVE, DELETED} OrgUserStatus_t;
    struct org_user_t { uint64_t id; char *fullname; uint8_t fullname_len; OrgUserStatus_t status; };
    struct point { int32_t x, y; };
    struct shape { struct point at; int16_t sides[4]; union { float f; uint32_t bits; }; struct shape *next; };`)
  class User extends CBase<OrgUser>(ffi, 'struct org_user_t') {}
  const u = User.new(1n, 'Autumn')
  t.deepEqual(comparable(astuple(u)), [1n, { ref: u.offset + 24 }, 0, 0], 'the string follows the struct in its block')
  t.is(cstr(u.fullname!), 'Autumn')
  t.is(u.memory.name, null)
  t.false(u.memory.managed)
  t.is(User.addressof(u), u.memory.address.begin + u.offset, 'a real address in this process')
  t.is(User.addressof(u) % 8, 0)
  const v = User.new(2n, null, undefined, 'DELETED')
  t.deepEqual(astuple(v), [2n, null, 0, 2], 'null pointer, undefined skipped, enum by name')
  v.fullname = u.fullname
  t.is(cstr(v.fullname!), 'Autumn', 'pointers between local objects of the same arena')
  t.is(User.new().id, 0n)
  // nested structs, arrays and an anonymous union, positionally
  class Shape extends CBase(ffi, 'struct shape') {}
  const s = Shape.new({ x: 1, y: -2 }, [3, 4], 1.5)
  t.deepEqual(astuple(s), [[1, -2], [3, 4, 0, 0], 1.5, 0x3fc00000, null])
  const s2 = Shape.new(undefined, undefined, undefined, 7, s)
  t.deepEqual(astuple(s2).slice(2, 4), [new Float32Array(new Uint32Array([7]).buffer)[0], 7], 'union members share bytes')
  t.is((astuple(s2)[4] as Ref).offset, s.offset)
  // errors: the memory is given back
  throws(t, () => User.new(1n, null, 0, 0, 'extra'), { instanceOf: RangeError, message: /at most 4/ })
  throws(t, () => User.new('x'), { instanceOf: TypeError, message: /id/ })
  throws(t, () => User.new(1n, null, 256), { instanceOf: RangeError, message: /fullname_len/ })
  throws(t, () => User.new(1n, 42.5), { instanceOf: RangeError, message: /fullname/ })
  throws(t, () => Shape.new({ z: 1 }), { instanceOf: TypeError, message: /z/ })
  const heap = Heap.attach(u.memory, 0)
  const before = heap.stats().allocations
  for (let i = 0; i < 50; i++) t.throws(() => User.new(1n, 'leak?', 1000))
  t.is(heap.stats().allocations, before, 'failed constructions free their block')
  heap.check()
  // not shareable, and pointers cannot leave their segment
  throws(t, () => JSON.stringify(u), { instanceOf: TypeError, message: /process-local/ })
})

test('withHeap: heap or managed mapping, one subclass per heap, strings in the object\'s block', (t) => {
  const mem = MappedMemory.create(segmentName(t, 'wh'), { size: 1 << 16 })
  t.teardown(() => mem.close())
  const ffi = cdef('struct msg { uint32_t n; const char *text; };')
  class Msg extends CBase<{ n: number; text: Ref | null }>(ffi, 'struct msg') {}
  const A = Msg.withHeap(mem)
  t.is(Msg.withHeap(mem.heap), A, 'the same class for the same heap')
  t.is(A.name, 'Msg')
  const before = mem.heap.stats().allocations
  const m = A.new(3, 'hello')
  t.is(mem.heap.stats().allocations, before + 1, 'struct and string in one block')
  t.is(cstr(m.text!), 'hello')
  t.is(m.text!.offset, m.offset + 16)
  t.is(Msg.heapOf(m), mem.heap)
  // subclasses of a withHeap class allocate from the same heap
  class Sub extends A {}
  t.is(Sub.heapOf(Sub.new(1)), mem.heap)
  // a local object cannot point into the segment, nor a shared one at local memory
  const local = Msg.new(1, 'local')
  throws(t, () => { m.text = local.text }, { instanceOf: ShmError, code: 'ERR_SHM_OUT_OF_BOUNDS', message: /another mapping/ })
  throws(t, () => { local.text = m.text }, { code: 'ERR_SHM_OUT_OF_BOUNDS' })
  m.free()
  t.is(mem.heap.stats().allocations, before + 1, 'only the Sub object is left')
  throws(t, () => m.free(), { code: 'ERR_SHM_DOUBLE_FREE' })
  throws(t, () => Msg.withHeap(new MappedMemory(null, 4096)), { instanceOf: TypeError, message: /"where".*raw mapping/ })
  throws(t, () => Msg.withHeap({} as Heap), { instanceOf: TypeError, message: /"where"/ })
  // a heap on a raw mapping works too
  const raw = new MappedMemory(null, 1 << 16)
  t.teardown(() => raw.close())
  const onRaw = Msg.withHeap(Heap.create(raw)).new(9)
  t.is(onRaw.memory, raw)
  t.is(onRaw.n, 9)
})

test('CBase arguments, statics on foreign objects, no constructor by hand', (t) => {
  const ffi = cdef(`struct a { int x; }; struct b { int x; }; union u { int i; float f; };
    typedef struct { double d; } anon_t; enum e { E0 }; struct fwd;`)
  throws(t, () => CBase({} as FFI, 'struct a'), { instanceOf: TypeError, message: /"ffi"/ })
  throws(t, () => CBase(ffi, 42 as unknown as string), { instanceOf: TypeError, message: /"decl"/ })
  throws(t, () => CBase(ffi, 'struct nope'), { instanceOf: TypeError, message: /"decl"/ })
  throws(t, () => CBase(ffi, 'int'), { instanceOf: TypeError, message: /"decl".*struct or union/ })
  throws(t, () => CBase(ffi, 'enum e'), { instanceOf: TypeError, message: /"decl"/ })
  throws(t, () => CBase(ffi, 'struct fwd'), { instanceOf: TypeError, message: /"decl"/ })
  throws(t, () => CBase(ffi, 'struct a *'), { instanceOf: TypeError, message: /"decl"/ })
  class A extends CBase(ffi, 'struct a') {}
  class U extends CBase(ffi, 'union u') {}
  class Anon extends CBase(ffi, 'anon_t') {}
  t.is(U.sizeof(), 4)
  t.is(U.typeof(), 'union u *')
  t.is(Anon.typeof(), 'anon_t *', 'an anonymous struct is spelled by its typedef')
  const a = A.new(5)
  // struct b has the same layout but another tag: not the same type
  class B extends CBase(ffi, 'struct b') {}
  for (const op of ['sizeof', 'typeof', 'getbuffer', 'addressof', 'heapOf'] as const) {
    throws(t, () => B[op](a), { instanceOf: TypeError, message: /"obj"/ }, op)
    throws(t, () => B[op]({} as Ref), { instanceOf: TypeError, message: /"obj"/ }, op)
  }
  throws(t, () => new (A as unknown as new (...a: unknown[]) => unknown)(1), { instanceOf: TypeError, message: /A\.new/ })
  throws(t, () => astuple({} as Ref), { instanceOf: TypeError, message: /"obj"/ })
  const mem = MappedMemory.create(segmentName(t, 'args'), { size: 1 << 16 })
  t.teardown(() => mem.close())
  throws(t, () => astuple(mem.new('int')), { instanceOf: TypeError, message: /"obj"/ })
  // a plain struct Ref of the same type works with the statics
  const plain = mem.new(ffi.typeof('struct a'), { x: 3 })
  t.is(A.addressof(plain), plain.address)
  t.deepEqual(astuple(plain), [3])
  void types
})

test('process-local objects are freed when unreachable, not while a derived reference or pointer holds them', async (t) => {
  const proc = fork(fixture('cbase-gc.mjs'), [], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'], execArgv: ['--expose-gc'] })
  t.teardown(() => { if (proc.exitCode === null) proc.kill('SIGKILL') })
  const r = await new Promise<Record<string, unknown>>((resolve, reject) => {
    proc.once('message', (m) => resolve(m as Record<string, unknown>))
    proc.once('exit', (c) => reject(new Error(`cbase-gc exited ${c}`)))
  })
  const { before, peak, after, final } = r as Record<string, number>
  t.is(peak, before + 10_000)
  t.is(after, before + 3, 'everything collected but the labelled object, head and tail')
  t.is(final, after, 'an explicit free, then nothing more')
  t.is(r.label, 'still here')
  t.deepEqual(r.tail, ['4', 'tail'])
  t.deepEqual(r.keep, ['1', 'kept'])
  t.is(r.doubleFree, 'ERR_SHM_DOUBLE_FREE')
  t.is(r.partFree, 'TypeError')
})

test('revive returns an instance of a class registered for the same layout in the receiving process', async (t) => {
  const mem = MappedMemory.create(segmentName(t, 'reg'), { size: 1 << 16 })
  t.teardown(() => mem.close())
  const ffi = cdef(`typedef enum {INACTIVE, ACTIVE, DELETED} OrgUserStatus_t;
    struct org_user_t { uint64_t id; char *fullname; uint8_t fullname_len; OrgUserStatus_t status; };`)
  class User extends CBase<OrgUser>(ffi, 'struct org_user_t') {}
  const u = User.withHeap(mem).new(7n, 'Autumn Jolitz', 13, 'ACTIVE')
  const child = forkChild(t, 'cbase-child.mjs', ['declare'])
  await child.message()
  child.proc.send(JSON.stringify(u))
  const r = await child.message<{ error?: string; isUser: boolean; className: string; tuple: unknown[]; text: string }>()
  t.falsy(r.error, r.error)
  t.true(r.isUser)
  t.is(r.className, 'User')
  t.deepEqual(r.tuple, ['7', u.offset + 24, 13, 1])
  t.is(r.text, 'Autumn Jolitz')
  t.is(u.status, 2)
  // here: a class made later with explicit register() wins over User
  class Other extends CBase<OrgUser>(ffi, 'struct org_user_t') {}
  t.true(revive(JSON.parse(JSON.stringify(u))) instanceof User)
  Other.register()
  t.true(revive(JSON.parse(JSON.stringify(u))) instanceof Other)
  User.withHeap(mem).new()
  t.true(revive(JSON.parse(JSON.stringify(u))) instanceof Other, 'a class registers itself on its first use only')
  User.register()
  t.true(revive(JSON.parse(JSON.stringify(u))) instanceof User)
})
