// Strings and typed references: ref.string() on char[N] / uint8_t[N] / char * (bounded,
// UTF-8, up to NUL), heap.newString(), ref.length and iteration over arrays; read in
// another process through handles; bad input gives typed errors. Also what windowed and
// read-only mappings mean for strings, containers and the new primitives.
import test, { type ExecutionContext } from 'ava'
import { ArrayRef, cdef, MappedMemory, Ref, RWLock, SharedMap, ShmError, types } from '../dist/index.js'
import { fixture, forkChild, managedSegment, segmentName, throws } from './helpers.js'

const segment = (t: ExecutionContext, size = 1 << 16) => managedSegment(t, 'str', size)

const ffi = cdef(`
  struct user { uint32_t id; char *name; char nick[8]; uint8_t raw[4]; };
  struct point { int32_t x, y; };
`)
type User = Ref & { id: number; name: Ref | null; nick: Ref; raw: Ref }

test('char[N]: up to the first NUL, or the whole array without one; maxLength in bytes', (t) => {
  const mem = segment(t)
  const a = mem.new('char[8]', 'héllo')
  t.is(a.string(), 'héllo')
  t.is(a.string({ maxLength: 2 }), 'h\ufffd', 'a cut through a UTF-8 sequence reads as U+FFFD')
  t.is(a.string({ maxLength: 3 }), 'hé')
  t.is(a.string({ maxLength: 0 }), '')
  const full = mem.new('char[4]', 'abcd')
  t.is(full.string(), 'abcd', 'no NUL: stops at the end of the array, never past it')
  t.is(mem.new('uint8_t[6]', new Uint8Array([0x61, 0xe2, 0x82, 0xac, 0, 0x62])).string(), 'a€')
  t.is(mem.new('int8_t[3]').string(), '')
})

test('heap.newString: a NUL-terminated UTF-8 char[n] that ref.string() reads back', (t) => {
  const mem = segment(t)
  const s = mem.heap.newString('Grüße, 世界 🌍')
  t.true(s instanceof ArrayRef)
  t.is(s.length, Buffer.byteLength('Grüße, 世界 🌍') + 1)
  t.is(s.type.name, `char[${s.length}]`)
  t.is(s.bytes()[s.length - 1], 0, 'terminated')
  t.is(s.string(), 'Grüße, 世界 🌍')
  t.is(mem.heap.newString('').string(), '')
  throws(t, () => mem.heap.newString(42 as unknown as string), { instanceOf: TypeError, message: /"s" argument must be of type string/ })
})

test('char * members and pointer references read the string they point to', (t) => {
  const mem = segment(t)
  const u = mem.new(ffi.typeof('struct user'), { id: 1, nick: 'bob' }) as User
  u.name = mem.heap.newString('Robert Paulson')
  t.is((u.name as Ref).string(), 'Robert Paulson')
  t.is((u.name as Ref).string({ maxLength: 6 }), 'Robert')
  t.is(u.nick.string(), 'bob')
  const p = Ref.at(mem, u.offset + ffi.offsetof(ffi.typeof('struct user'), 'name'), types.ptr(types.char))
  t.is(p.string(), 'Robert Paulson')
  u.name = null
  throws(t, () => p.string(), { instanceOf: ShmError, code: 'ERR_SHM_OUT_OF_BOUNDS', message: /NULL/ })
})

test('a pointed-to string that runs off the segment without a NUL is ERR_SHM_OUT_OF_BOUNDS', (t) => {
  const mem = segment(t)
  const last = Ref.at(mem, mem.size - 4, types.char)
  mem.bytes.fill(0x41, mem.size - 4)
  throws(t, () => last.string(), { instanceOf: ShmError, code: 'ERR_SHM_OUT_OF_BOUNDS', message: /no NUL/ })
  t.is(last.string({ maxLength: 4 }), 'AAAA', 'within maxLength it is just a bounded read')
  t.is(last.string({ maxLength: 2 }), 'AA')
})

test('ref.string() on other types and bad options are TypeError/RangeError', (t) => {
  const mem = segment(t)
  throws(t, () => mem.new('int32_t[4]').string(), { instanceOf: TypeError, message: /int32_t\[4\] does not hold a string/ })
  throws(t, () => mem.new('bool[4]').string(), { instanceOf: TypeError })
  throws(t, () => mem.new(ffi.typeof('struct point')).string(), { instanceOf: TypeError })
  const a = mem.new('char[4]', 'x')
  throws(t, () => a.string({ maxLength: -1 }), { instanceOf: RangeError, message: /"maxLength"/ })
  throws(t, () => a.string({ maxLength: 1.5 }), { instanceOf: RangeError })
  throws(t, () => a.string({ maxLength: '3' as unknown as number }), { instanceOf: TypeError })
  throws(t, () => a.string(null as unknown as undefined), { instanceOf: TypeError })
  mem.close()
  throws(t, () => a.string(), { instanceOf: ShmError, code: 'ERR_SHM_CLOSED' })
})

test('arrays have length and iterate: values for scalars, live references for structs and rows', (t) => {
  const mem = segment(t)
  const xs = mem.new('int32_t[5]', [1, 2, 3, 4, 5])
  t.is(xs.length, 5)
  t.deepEqual([...(xs as ArrayRef)], [1, 2, 3, 4, 5])
  t.deepEqual(Array.from(xs as ArrayRef), [1, 2, 3, 4, 5])
  const big = mem.new('uint64_t[2]', [1n, 2n]) as ArrayRef
  t.deepEqual([...big], [1n, 2n])

  const pts = mem.new(types.array(ffi.typeof('struct point'), 3)) as ArrayRef
  let i = 0
  for (const p of pts) (p as Ref & { x: number }).x = ++i * 10
  t.deepEqual((pts.value as Array<{ x: number }>).map((p) => p.x), [10, 20, 30], 'element refs are live')

  const grid = mem.new('int16_t[2][3]', [[1, 2, 3], [4, 5, 6]]) as ArrayRef
  const rows = [...grid] as ArrayRef[]
  t.is(rows.length, 2)
  t.true(rows[1] instanceof ArrayRef)
  t.deepEqual([...rows[1]], [4, 5, 6])

  const one = mem.new('int32_t', 3)
  throws(t, () => one.length, { instanceOf: TypeError, message: /not an array/ })
  t.false(Symbol.iterator in one, 'a scalar reference is not iterable')
  t.false(Symbol.iterator in (mem.new(ffi.typeof('struct point')) as object), 'nor is a struct reference')
})

test('another process reads the strings through handles', async (t) => {
  const mem = segment(t)
  const text = mem.heap.newString('shared ✓')
  const user = mem.new(ffi.typeof('struct user'), { id: 7, nick: 'ann' }) as User
  user.name = mem.heap.newString('Ann Example')
  const list = mem.new('uint16_t[3]', [7, 8, 9])
  const child = forkChild(t, 'strings-child.mjs')
  child.proc.send(JSON.parse(JSON.stringify({ text, user, list })))
  t.deepEqual(await child.message(), { text: 'shared ✓', name: 'Ann Example', nick: 'ann', items: [7, 8, 9] })
})

test('through windows (a mapping larger than one ArrayBuffer): strings and primitives work, containers say they need the mapping whole', async (t) => {
  const name = segmentName(t, 'win')
  const { execFile } = await import('node:child_process')
  const out = await new Promise<string>((resolve, reject) =>
    execFile(process.execPath, [fixture('containers-windows.mjs'), name], { env: { ...process.env, SHMUTILS_WINDOW_BYTES: '65536' } }, (e, stdout, stderr) => (e ? reject(new Error(stderr || String(e))) : resolve(stdout))),
  )
  t.deepEqual(JSON.parse(out), {
    map: { error: 'ShmError', code: 'ERR_SHM_BUFFER_TOO_LARGE' },
    channel: { error: 'ShmError', code: 'ERR_SHM_BUFFER_TOO_LARGE' },
    rwlock: 'ok',
    event: true,
    barrier: 0,
    string: 'through a window',
    'long string': [true, true, 60_000],
    unterminated: ['ERR_SHM_OUT_OF_BOUNDS', `the string at offset ${(1 << 20) - 3} has no NUL before the end of the segment (3 bytes on)`, 'HIJ'],
  })
})

test('a read-only mapping: reading strings works, containers and primitives need it writable (ERR_SHM_READ_ONLY)', (t) => {
  const mem = segment(t)
  const s = mem.heap.newString('read me')
  const ro = MappedMemory.open(mem.name!, { readOnly: true })
  t.teardown(() => ro.close())
  t.is((Ref.at(ro, s.offset, s.type) as Ref).string(), 'read me')
  throws(t, () => new SharedMap(ro.heap), { code: 'ERR_SHM_READ_ONLY' })
  const map = new SharedMap(mem)
  throws(t, () => SharedMap.at(ro, map.offset), { code: 'ERR_SHM_READ_ONLY' })
  throws(t, () => RWLock.at(ro, map.offset), { code: 'ERR_SHM_READ_ONLY' })
})
