import test from 'ava'
import { fork } from 'node:child_process'
import {
  Lock, MappedMemory, MapFlags, munmap, PAGE_SIZE, Protection, type Ref, revive, roundToPageSize, ShmError, shmOpen,
} from '../dist/index.js'
import { fixture, forkChild, segmentExists, segmentName, throws, userAddressTop } from './helpers.js'

test('PAGE_SIZE and roundToPageSize', (t) => {
  t.is(PAGE_SIZE, 4096)
  t.is(roundToPageSize(0), 0)
  t.is(roundToPageSize(1), PAGE_SIZE)
  t.is(roundToPageSize(PAGE_SIZE), PAGE_SIZE)
  t.is(roundToPageSize(PAGE_SIZE + 1), 2 * PAGE_SIZE)
  throws(t, () => roundToPageSize(-1), { instanceOf: RangeError })
})

test('raw mappings of one object share bytes zero-copy; address arithmetic', (t) => {
  const name = segmentName(t)
  using fd = shmOpen(name, 'x+').truncate(4 * PAGE_SIZE)
  using a = new MappedMemory(null, 4 * PAGE_SIZE, Protection.READ_WRITE, MapFlags.SHARED, fd)
  using b = new MappedMemory(0, 4 * PAGE_SIZE, Protection.READ_WRITE, MapFlags.SHARED, fd)
  t.not(a.address.begin, b.address.begin)
  a.bytes[100] = 42
  t.is(b.bytes[100], 42)
  new Uint32Array(b.buffer)[1000] = 0x12345678
  t.is(new DataView(a.buffer).getUint32(4000, true), 0x12345678)
  t.is(a.buffer.byteLength, 4 * PAGE_SIZE)
  t.is(a.absAddressAt(0), a.address.begin)
  t.is(a.absAddressAt(a.size), a.address.end, 'offset == size is allowed')
  t.is(a.relativeAddressAt(a.address.begin + 123), 123)
  const v = a.absoluteAt(a.address.begin + 100, a.address.begin + 101)
  t.deepEqual([...v], [42])
  throws(t, () => a.absAddressAt(a.size + 1), { instanceOf: ShmError, code: 'ERR_SHM_OUT_OF_BOUNDS' })
  throws(t, () => a.relativeAddressAt(a.address.end + 1), { code: 'ERR_SHM_OUT_OF_BOUNDS' })
  throws(t, () => a.relativeAddressAt(a.address.begin - 1), { code: 'ERR_SHM_OUT_OF_BOUNDS' })
  throws(t, () => a.absAddressAt(-1), { instanceOf: RangeError, message: /"offset"/ })
  t.is(a.name, name)
  t.false(a.managed)
})

test('bad raw mapping arguments are typed errors, never crashes', (t) => {
  throws(t, () => new MappedMemory(null, 0), { instanceOf: RangeError, message: /"size"/ })
  throws(t, () => new MappedMemory(null, -5), { instanceOf: RangeError, message: /"size"/ })
  throws(t, () => new MappedMemory(null, Number.NaN), { instanceOf: RangeError })
  throws(t, () => new MappedMemory(null, 2 ** 60), { instanceOf: RangeError })
  throws(t, () => new MappedMemory(null, 4096, 'rw' as unknown as number), { instanceOf: TypeError, message: /"protection"/ })
  throws(t, () => new MappedMemory(null, 4096, Protection.READ_WRITE, MapFlags.SHARED, -3), { instanceOf: TypeError, message: /"fd"/ })
  throws(t, () => new MappedMemory(null, 4096, Protection.READ_WRITE, MapFlags.SHARED, 9999), { instanceOf: ShmError, code: 'EBADF' })
  const name = segmentName(t)
  using fd = shmOpen(name).truncate(2 * PAGE_SIZE)
  throws(t, () => new MappedMemory(null, 4096, Protection.READ_WRITE, MapFlags.SHARED, fd, 100), { instanceOf: RangeError, message: /"offset"/ })
  throws(t, () => new MappedMemory(null, 4096, Protection.READ_WRITE, MapFlags.SHARED | MapFlags.FIXED, fd), { instanceOf: TypeError, message: /"address"/ })
  // Protections that would make a view a SIGSEGV: no views without read access; a
  // read-only one is mapped copy-on-write (a stray write lands in a private page) and the
  // library refuses writes.
  using none = new MappedMemory(null, 4096, Protection.NONE)
  for (const get of [() => none.bytes, () => none.buffer, () => none.view(0, 4)]) throws(t, get, { instanceOf: ShmError, code: 'EACCES' })
  const shared = new MappedMemory(null, PAGE_SIZE, Protection.READ_WRITE, MapFlags.SHARED, fd)
  t.teardown(() => shared.close())
  shared.bytes[0] = 7
  using ro = new MappedMemory(null, PAGE_SIZE, Protection.READ, MapFlags.SHARED, fd)
  t.true(ro.readOnly)
  t.is(ro.bytes[0], 7, 'reads the object')
  shared.bytes[1] = 8
  t.is(ro.bytes[1], 8, 'and sees writes made through another mapping')
  ro.bytes[2] = 9
  t.is(shared.bytes[2], 0, 'a write through the read-only mapping stays private (and is no crash)')
  throws(t, () => Lock.at(ro, 64).acquire(), { instanceOf: ShmError, code: 'ERR_SHM_READ_ONLY' })
})

test('FIXED never replaces memory in use; FIXED_NOREPLACE over a used range is EADDRINUSE', (t) => {
  using live = new MappedMemory(null, 4 * PAGE_SIZE)
  live.bytes[0] = 7
  throws(t, () => new MappedMemory(live.address.begin, PAGE_SIZE, Protection.READ_WRITE, MapFlags.SHARED | MapFlags.ANONYMOUS | MapFlags.FIXED), { instanceOf: ShmError, code: 'EADDRINUSE' })
  throws(t, () => new MappedMemory(live.address.begin, PAGE_SIZE, Protection.READ_WRITE, MapFlags.SHARED | MapFlags.ANONYMOUS | MapFlags.FIXED_NOREPLACE), { code: 'EADDRINUSE' })
  t.is(live.bytes[0], 7, 'untouched')
  throws(t, () => munmap(live.address.begin, PAGE_SIZE), { instanceOf: ShmError, code: 'EINVAL' }, 'munmap of a live mapping is refused')
})

test('close detaches every view, twice is fine, use after close is ERR_SHM_CLOSED', (t) => {
  const m = new MappedMemory(null, PAGE_SIZE)
  const u8 = m.bytes
  const f64 = new Float64Array(m.buffer)
  const buf = m.buffer
  u8[0] = 1
  m.close()
  t.is(u8.length, 0)
  t.is(f64.length, 0)
  t.is(buf.byteLength, 0)
  t.is((u8 as unknown as Array<number | undefined>)[0], undefined)
  t.notThrows(() => m.close())
  t.true(m.closed)
  throws(t, () => m.buffer, { code: 'ERR_SHM_CLOSED' })
  throws(t, () => m.bytes, { code: 'ERR_SHM_CLOSED' })
  throws(t, () => m.absAddressAt(0), { code: 'ERR_SHM_CLOSED' })
  throws(t, () => m.detach(), { code: 'ERR_SHM_CLOSED' })
})

test('garbage collection keeps views alive and never unmaps twice', async (t) => {
  const name = segmentName(t)
  const child = fork(fixture('gc-views.mjs'), [name], { execArgv: ['--expose-gc'] })
  const msg = await new Promise((resolve, reject) => {
    child.once('message', resolve)
    child.once('exit', (c) => reject(new Error(`exit ${c}`)))
  })
  t.deepEqual(msg, { survived: true, ok: true })
})

test('managed segments: create, open, header, EEXIST, two mappings see each other', (t) => {
  const name = segmentName(t)
  using a = MappedMemory.create(name, { size: 10_000 })
  t.true(a.managed)
  t.is(a.size, roundToPageSize(10_000))
  t.is(a.name, name)
  t.is(a.baseAddress, a.address.begin)
  t.true(segmentExists(name))
  using b = MappedMemory.open(name)
  t.is(b.size, a.size)
  t.is(b.baseAddress, a.address.begin, 'the header records the creator\'s base address')
  t.is(Buffer.from(b.bytes.subarray(0, 8)).toString('latin1'), 'SHMUTILS')
  a.bytes[5000] = 99
  t.is(b.bytes[5000], 99)
  throws(t, () => MappedMemory.create(name, { size: 4096 }), { instanceOf: ShmError, code: 'EEXIST', path: name })
  const high = segmentName(t)
  throws(t, () => MappedMemory.create(high, { size: 4096, fixedAddress: 2 ** 47 }), { instanceOf: ShmError, syscall: 'mmap', path: high })
  a.unlink()
  t.false(segmentExists(name))
  t.is(b.bytes[5000], 99, 'mappings survive unlink')
})

test('create and open reject bad arguments with typed errors', (t) => {
  const name = segmentName(t)
  throws(t, () => MappedMemory.create(name, { size: 100 }), { instanceOf: RangeError, message: /"size"/ })
  throws(t, () => MappedMemory.create(name, { size: -1 }), { instanceOf: RangeError })
  throws(t, () => MappedMemory.create(name, undefined as unknown as { size: number }), { instanceOf: TypeError })
  throws(t, () => MappedMemory.create(name, { size: 4096, permissions: 0o7777 }), { instanceOf: RangeError, message: /"permissions"/ })
  throws(t, () => MappedMemory.create(name, { size: 4096, fixedAddress: 12345 }), { instanceOf: RangeError, message: /address/ })
  throws(t, () => MappedMemory.create('a/b', { size: 4096 }), { instanceOf: TypeError, message: /"name"/ })
  throws(t, () => MappedMemory.open(name), { instanceOf: ShmError, code: 'ENOENT', syscall: 'shm_open' })
  throws(t, () => MappedMemory.open(name, { fixedAddress: 'always' as 'require' }), { instanceOf: TypeError, message: /"fixedAddress"/ })
  t.false(segmentExists(name), 'failed creates leave nothing behind')
})

test('foreign or damaged segments are ERR_SHM_BAD_HEADER', (t) => {
  const cases: Array<[string, (v: DataView) => void]> = [
    ['garbage magic', (v) => v.setUint32(0, 0x41414141, true)],
    ['future version', (v) => v.setUint32(8, 99, true)],
    ['size mismatch', (v) => v.setBigUint64(16, 1n << 40n, true)],
    ['unaligned base', (v) => v.setBigUint64(24, 123n, true)],
    ['heap outside', (v) => v.setBigUint64(48, 1n << 50n, true)],
    ['heap overflow', (v) => { v.setBigUint64(40, (1n << 64n) - 16n, true); v.setBigUint64(48, 64n, true) }],
    ['unknown flags', (v) => v.setUint32(32, 0x80, true)],
  ]
  for (const [what, damage] of cases) {
    const name = segmentName(t)
    using m = MappedMemory.create(name, { size: 8192 })
    damage(new DataView(m.buffer))
    throws(t, () => MappedMemory.open(name), { instanceOf: ShmError, code: 'ERR_SHM_BAD_HEADER', path: name }, what)
  }
  const tiny = segmentName(t)
  shmOpen(tiny, 'x').truncate(100).close()
  throws(t, () => MappedMemory.open(tiny), { code: 'ERR_SHM_BAD_HEADER' }, 'too small')
  const other = segmentName(t)
  const o = shmOpen(other, 'x').truncate(8192)
  using raw = new MappedMemory(null, 8192, Protection.READ_WRITE, MapFlags.SHARED, o)
  raw.bytes.fill(0xab)
  o.close()
  throws(t, () => MappedMemory.open(other), { code: 'ERR_SHM_BAD_HEADER' }, 'someone else\'s object')
})

test('fixedAddress: true picks a high address; a fresh process maps there with require (the original\'s second example)', async (t) => {
  const name = segmentName(t)
  using m = MappedMemory.create(name, { size: 1 << 20, fixedAddress: true })
  t.true(m.address.begin >= userAddressTop() / 2, `0x${m.address.begin.toString(16)} is in the upper half of 0x${userAddressTop().toString(16)}`)
  const view = new DataView(m.buffer)
  view.setBigInt64(4096, 1923n, true)
  const child = forkChild(t, 'child-ops.mjs', ['open-require-write', name, '4096'])
  const msg = await child.message<{ begin: number }>()
  t.is(msg.begin, m.address.begin, 'same address in the child')
  t.is(view.getBigInt64(4096, true), 8900n)
})

test('fixedAddress: require fails with EADDRINUSE when the address is taken; prefer maps elsewhere', (t) => {
  const name = segmentName(t)
  using m = MappedMemory.create(name, { size: 65536, fixedAddress: true })
  // In this process the creator's address is taken by `m` itself.
  throws(t, () => MappedMemory.open(name, { fixedAddress: 'require' }), { instanceOf: ShmError, code: 'EADDRINUSE' })
  using p = MappedMemory.open(name)
  t.not(p.address.begin, m.address.begin)
  t.is(p.baseAddress, m.address.begin)
  p.bytes[300] = 5
  t.is(m.bytes[300], 5)
  using q = MappedMemory.open(name, { fixedAddress: false })
  t.is(q.bytes[300], 5)
})

test('fixedAddress: prefer also maps elsewhere when the recorded address is past the top of the address space', (t) => {
  // A recorded address this process cannot map at all (just under the top of its address
  // space: ENOMEM, not EADDRINUSE): prefer maps elsewhere too; require says why.
  const far = segmentName(t)
  const f = MappedMemory.create(far, { size: 65536, fixedAddress: true })
  const ref = f.new('int32_t', 42)
  const handle = JSON.parse(JSON.stringify(ref)) as unknown
  f.close()
  using fd = shmOpen(far, 'r+')
  const base = new MappedMemory(null, 4096, Protection.READ_WRITE, MapFlags.SHARED, fd)
  new DataView(base.buffer).setBigUint64(24, BigInt(userAddressTop() - 65536), true) // the base (FORMAT.md §2)
  base.close()
  using g = MappedMemory.open(far)
  t.is(g.baseAddress, userAddressTop() - 65536)
  t.not(g.address.begin, g.baseAddress)
  t.is((revive(handle) as Ref<number>).value, 42)
  throws(t, () => MappedMemory.open(far, { fixedAddress: 'require' }), { instanceOf: ShmError })
})

test('fixedAddress: <number> maps exactly there, or EADDRINUSE', (t) => {
  const name = segmentName(t)
  const at = 0x5a5a_0000_0000
  using m = MappedMemory.create(name, { size: 65536, fixedAddress: at })
  t.is(m.address.begin, at)
  const name2 = segmentName(t)
  throws(t, () => MappedMemory.create(name2, { size: 65536, fixedAddress: at }), { code: 'EADDRINUSE' })
  t.false(segmentExists(name2))
})

test('readOnly opens map read-only', (t) => {
  const name = segmentName(t)
  using m = MappedMemory.create(name, { size: 8192 })
  m.bytes[400] = 3
  using r = MappedMemory.open(name, { readOnly: true })
  t.is(r.bytes[400], 3)
})

test('detach + munmap + FIXED over detached pages (the original\'s spawn example) and a handle across processes', async (t) => {
  const name = segmentName(t)
  using fd = shmOpen(name, 'x+')
  const sharedSize = roundToPageSize(32 * 1024 * 1024)
  fd.truncate(sharedSize)
  // A dummy block. The original kept its *last* page and mapped upwards from there, over
  // whatever sat above (on Linux: older mappings, which it clobbered). Keep the *first*
  // page instead and map inside the released range: FIXED may replace only free space and
  // detach()ed pages.
  const unused = new MappedMemory(null, 64 * 1024 * 1024)
  unused.bytes.set([0x73, 0x69, 0x6e, 0x6b], 0)
  const start = unused.address.begin
  const before = [unused.bytes, unused.view(0, 4096), new DataView(unused.buffer)] as const
  const { address, size } = unused.detach()
  t.is(address, start)
  // Every view taken before is detached (the whole mapping's too: its pages are about to
  // be unmapped, and reading one then was a SIGSEGV).
  t.deepEqual([before[0].length, before[1].length], [0, 0])
  t.throws(() => before[2].getUint8(0), { instanceOf: TypeError })
  munmap(address + PAGE_SIZE, size - PAGE_SIZE)
  throws(t, () => munmap(address + PAGE_SIZE, PAGE_SIZE), { code: 'EINVAL' }, 'already unmapped: not ours any more')
  t.is((before[0] as unknown as Record<number, unknown>)[PAGE_SIZE + 1], undefined, 'an old view over unmapped pages reads nothing, no signal')
  using m = new MappedMemory(start, sharedSize, Protection.READ_WRITE, MapFlags.SHARED | MapFlags.FIXED, fd)
  t.is(m.address.begin, start)
  const dv = new DataView(m.buffer)
  dv.setBigInt64(0, 1923n, true)
  const child = forkChild(t, 'child-ops.mjs', ['revive-and-write', name])
  await child.message()
  const lock = Lock.at(m, 64)
  child.proc.send({ memory: m, lock, offset: 128 })
  const reply = await child.message<{ class: string; memClass: string; begin: number }>()
  t.deepEqual(reply, { class: 'Lock', memClass: 'MappedMemory', begin: start }, 'the child mapped at the same address')
  t.is(dv.getUint32(128, true), 0xc0ffee)
  t.is(dv.getBigInt64(0, true), 1923n)
})

test('revive opens each segment once per process', (t) => {
  const name = segmentName(t)
  using m = MappedMemory.create(name, { size: 8192 })
  const h = JSON.parse(JSON.stringify({ a: m, b: [m] }))
  const r = revive<{ a: MappedMemory; b: MappedMemory[] }>(h)
  t.true(r.a instanceof MappedMemory)
  t.is(r.a, r.b[0])
  t.is(r.a, m, 'revived in the creating process: the same mapping')
  r.a.close()
  const again = revive<MappedMemory>(h.a)
  t.not(again, r.a, 'a closed cached mapping is reopened')
  t.false(again.closed)
  again.close()
  throws(t, () => revive({ $shmutils: 'Nope', segment: name, offset: 0 }), { instanceOf: TypeError })
  t.is(revive(5), 5)
  throws(t, () => JSON.stringify(new MappedMemory(null, 4096)), { instanceOf: TypeError })
})
