import test from 'ava'
import { fork, spawnSync } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { constants } from 'node:os'
import {
  Barrier, CBase, cdef, Channel, Condition, Event, Heap, Lock, MappedMemory, MapFlags, munmap, PAGE_SIZE, Protection, Ref, revive, RLock,
  roundToPageSize, RWLock, Semaphore, SharedMap, ShmError, shmOpen,
} from '../dist/index.js'
import { AS_NOBODY, canRunAsNobody, fixture, forkChild, managedSegment, segmentExists, segmentName, throws, unlinkQuietly, userAddressTop } from './helpers.js'

test('PAGE_SIZE and roundToPageSize', (t) => {
  t.is(PAGE_SIZE, 4096)
  t.is(roundToPageSize(0), 0)
  t.is(roundToPageSize(1), PAGE_SIZE)
  t.is(roundToPageSize(PAGE_SIZE), PAGE_SIZE)
  t.is(roundToPageSize(PAGE_SIZE + 1), 2 * PAGE_SIZE)
  throws(t, () => roundToPageSize(-1), { instanceOf: RangeError })
})

test('roundToPageSize: a size that rounds up past Number.MAX_SAFE_INTEGER is a RangeError, not an unsafe number', (t) => {
  t.is(roundToPageSize(2 ** 53 - PAGE_SIZE), 2 ** 53 - PAGE_SIZE, 'the last safe multiple of the page size')
  for (const n of [2 ** 53 - 1, 2 ** 53 - PAGE_SIZE + 1]) {
    throws(t, () => roundToPageSize(n), { instanceOf: RangeError, code: 'ERR_OUT_OF_RANGE', message: /"n".*MAX_SAFE_INTEGER/ }, String(n))
  }
})

test('roundToPageSize: non-integers are RangeErrors, non-numbers TypeErrors, naming "n"', (t) => {
  for (const n of [Number.NaN, -4096, 1.5, Infinity, 2 ** 53]) throws(t, () => roundToPageSize(n), { instanceOf: RangeError, message: /"n"/ }, String(n))
  for (const n of ['4096', 4096n, null, undefined, {}]) throws(t, () => roundToPageSize(n as number), { instanceOf: TypeError, message: /"n"/ }, String(n))
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

test('name, size, address and $shmutils cannot be assigned over (the mapping stays whole)', (t) => {
  const mem = managedSegment(t, 'fixed-props')
  const { name, size, address, $shmutils } = mem
  for (const key of ['name', 'size', 'address', '$shmutils'] as const) {
    throws(t, () => ((mem as unknown as Record<string, unknown>)[key] = Object.create(null)), { instanceOf: TypeError, message: /read.only/ }, key)
  }
  t.deepEqual([mem.name, mem.size, mem.address, mem.$shmutils], [name, size, address, $shmutils])
  t.deepEqual(Object.keys(mem), ['name', 'size', 'address', '$shmutils'], 'own and enumerable, as before')
  t.is(mem.view(0, 8).length, 8)
  t.true(Object.isFrozen(mem.address))
})

test('bad raw mapping arguments are typed errors, never crashes', (t) => {
  throws(t, () => new MappedMemory(null, 0), { instanceOf: RangeError, message: /"size"/ })
  throws(t, () => new MappedMemory(null, -5), { instanceOf: RangeError, message: /"size"/ })
  throws(t, () => new MappedMemory(null, Number.NaN), { instanceOf: RangeError })
  throws(t, () => new MappedMemory(null, 2 ** 60), { instanceOf: RangeError })
  throws(t, () => new MappedMemory(null, 4096, 'rw' as unknown as number), { instanceOf: TypeError, message: /"protection"/ })
  throws(t, () => new MappedMemory(null, 4096, Protection.READ_WRITE, MapFlags.SHARED, -3), { instanceOf: RangeError, message: /"fd"/ })
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
  // Nor a heap, whose header (and every lock and block in it) would land in private
  // pages nobody else sees: it was formatted there, and locks taken in it.
  throws(t, () => Heap.create(ro), { instanceOf: ShmError, code: 'ERR_SHM_READ_ONLY' })
  t.deepEqual([...shared.bytes.subarray(8, 16)], [0, 0, 0, 0, 0, 0, 0, 0])
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

test('a mapping dropped without close() is collected though revive caches it: descriptors back where they were, a later revive opens it again', async (t) => {
  if (process.platform !== 'linux') return t.pass('counts descriptors in /proc/self/fd')
  const name = segmentName(t)
  const child = fork(fixture('gc-dropped.mjs'), [name], { execArgv: ['--expose-gc'] })
  t.teardown(() => {
    child.kill('SIGKILL')
    for (let k = 0; k < 3; k++) for (let i = 0; i < 100; i++) unlinkQuietly(`${name}-${k}-${i}`)
  })
  const msg = await new Promise((resolve, reject) => {
    child.once('message', resolve)
    child.once('exit', (c) => reject(new Error(`exit ${c}`)))
  })
  // Before: the cache pinned every anonymous segment (+300 descriptors, +300 mappings)
  // and every created one (+300 descriptors, and their pages in /dev/shm).
  const m = msg as Record<string, number | boolean>
  t.true((m.anonymousFds as number) <= 20, `anonymous: +${m.anonymousFds} descriptors after 300 dropped`)
  t.true((m.anonymousMaps as number) <= 20, `anonymous: +${m.anonymousMaps} mappings after 300 dropped`)
  t.true((m.heapFds as number) <= 20, `anonymous with the heap used: +${m.heapFds} descriptors after 300 dropped`)
  t.true((m.heapMaps as number) <= 20, `anonymous with the heap used: +${m.heapMaps} mappings after 300 dropped`)
  t.true((m.lockedMaps as number) <= 20, `anonymous with a lock taken: +${m.lockedMaps} mappings after 300 dropped`)
  const kept = m.lockedFds as number
  t.true(kept >= 300 && kept <= 320, `anonymous with a lock taken: +${kept} descriptors after 300 dropped (each keeps the thread's token)`)
  t.true((m.namedFds as number) <= 20, `created + unlinked: +${m.namedFds} descriptors after 300 dropped`)
  t.like(m, { sameWhileLive: true, collected: true, reopened: true, afterClose: true })
})

test('caches of a mapping and of the process let go of what the program dropped: heaps made in blocks, CBase() classes, wide windows (a view kept is still detached at close)', async (t) => {
  const child = fork(fixture('gc-caches.mjs'), [], { execArgv: ['--expose-gc'], env: { ...process.env, SHMUTILS_WINDOW_BYTES: '65536' } })
  t.teardown(() => child.kill('SIGKILL'))
  const msg = await new Promise((resolve, reject) => {
    child.once('message', resolve)
    child.once('exit', (c) => reject(new Error(`exit ${c}`)))
  })
  // Before: every Heap ever made at an offset of a live mapping stayed (with a close hook
  // each), every CBase() class stayed registered for revive, and every wide window stayed.
  t.deepEqual(msg, { heapsAlive: 0, heapUsedBack: true, attachSame: true, classesAlive: 0, newestRevived: true, olderRevived: true, revivedSum: 5, windowsAlive: 0, bigBeforeClose: 42, viewAfterClose: 0, bigAfterClose: 'ERR_SHM_CLOSED' })
})

test('out of descriptors, the first lock or heap use of a segment (its token) is EMFILE naming the segment; all works again once descriptors are free', (t) => {
  const name = segmentName(t, 'emfile')
  const script = `
    const { MappedMemory, Lock, SharedMap } = require(${JSON.stringify(join(process.cwd(), 'dist', 'index.js'))})
    const fs = require('node:fs')
    const m = MappedMemory.create(${JSON.stringify(name)}, { size: 1 << 20 })
    const fds = []
    try { for (;;) fds.push(fs.openSync('/dev/null', 'r')) } catch {}
    const out = []
    for (const f of [() => m.heap, () => new Lock(m), () => new SharedMap(m)]) {
      try { f(); out.push('ok') } catch (e) { out.push([e.code, e.errno, e.syscall, e.path]) }
    }
    for (const fd of fds) fs.closeSync(fd)
    const lock = new Lock(m)
    lock.acquire()
    lock.release()
    m.heap.free(lock.offset)
    m.heap.check()
    out.push(m.heap.stats().allocations)
    m.close()
    console.log(JSON.stringify(out))`
  const r = spawnSync('bash', ['-c', 'ulimit -n 64 && exec "$0" -e "$1"', process.execPath, script], { encoding: 'utf8', timeout: 60_000 })
  t.is(r.status, 0, r.stderr)
  const emfile = ['EMFILE', constants.errno.EMFILE, 'open', name]
  // Before: no path (the token's reopen did not know the segment's name).
  t.deepEqual(JSON.parse(r.stdout), [emfile, emfile, emfile, 0], 'nothing left allocated by the failed constructions')
})

test('out of descriptors, the first lock in memory without a descriptor (anonymous) is EMFILE; it and every such mapping work again once descriptors are free', (t) => {
  // Such memory's tokens live on one process-private memfd, made on first use.
  const script = `
    const { MappedMemory, Lock, Protection, MapFlags } = require(${JSON.stringify(join(process.cwd(), 'dist', 'index.js'))})
    const fs = require('node:fs')
    const anon = () => new MappedMemory(null, 65536, Protection.READ_WRITE, MapFlags.SHARED | MapFlags.ANONYMOUS)
    const lock = Lock.at(anon(), 0)
    const fds = []
    try { for (;;) fds.push(fs.openSync('/dev/null', 'r')) } catch {}
    const out = []
    const take = (l) => { try { out.push(l.tryAcquire()) } catch (e) { out.push([e.code, e.errno, e.syscall]) } }
    take(lock)
    for (const fd of fds) fs.closeSync(fd)
    take(lock)
    take(Lock.at(anon(), 0))
    console.log(JSON.stringify(out))`
  const r = spawnSync('bash', ['-c', 'ulimit -n 64 && exec "$0" -e "$1"', process.execPath, script], { encoding: 'utf8', timeout: 60_000 })
  t.is(r.status, 0, r.stderr)
  // Before: EBADF from fstat, at once and for good (the failure was kept as the object).
  t.deepEqual(JSON.parse(r.stdout), [['EMFILE', constants.errno.EMFILE, 'memfd_create'], true, true])
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

;(canRunAsNobody() ? test : test.skip)('a name another user created first: create says whose it is, open with owner refuses it (EACCES) and keeps no mapping, open without it attaches as documented', (t) => {
  const name = segmentName(t, 'squat')
  // The other user makes the segment first, readable and writable by all.
  const make = `require(${JSON.stringify(join(process.cwd(), 'dist', 'index.js'))}).MappedMemory.create(${JSON.stringify(name)}, { size: 65536, permissions: 0o666 }).close()`
  const r = spawnSync(AS_NOBODY[0], [...AS_NOBODY.slice(1), process.execPath, '-e', make], { encoding: 'utf8' })
  t.is(r.status, 0, r.stderr)
  throws(t, () => MappedMemory.create(name, { size: 65536 }), { instanceOf: ShmError, code: 'EEXIST', message: /belongs to another user \(uid 65534\), who made it first: do not open it/ })
  const maps = () => readFileSync('/proc/self/maps', 'utf8').split('\n').filter((l) => l.includes(name)).length
  const before = maps()
  throws(t, () => MappedMemory.open(name, { owner: 0 }), { instanceOf: ShmError, code: 'EACCES', errno: constants.errno.EACCES, syscall: 'fstat', path: name, message: /belongs to user 65534, not 0/ })
  t.is(maps(), before, 'the refused mapping is gone')
  const mine = MappedMemory.open(name, { owner: 65534 })
  mine.close()
  const any = MappedMemory.open(name)
  t.is(any.size, 65536)
  any.close()
  throws(t, () => MappedMemory.open(name, { owner: -1 }), { instanceOf: RangeError, code: 'ERR_OUT_OF_RANGE' })
  throws(t, () => MappedMemory.open(name, { owner: '0' as unknown as number }), { instanceOf: TypeError, code: 'ERR_INVALID_ARG_TYPE' })
})

test('raw mapping: a protection other than a combination of the Protection bits is a RangeError (it mapped rwx)', (t) => {
  for (const p of [-1, 8, 255, 0x7fff_ffff, 2 ** 31, 2 ** 32 + Protection.READ, 1.5, Number.NaN]) {
    throws(t, () => new MappedMemory(null, 4096, p), { instanceOf: RangeError, code: 'ERR_OUT_OF_RANGE', message: /"protection".*Protection bits/ }, String(p))
  }
  throws(t, () => new MappedMemory(null, 4096, null as unknown as number), { instanceOf: TypeError, message: /"protection"/ })
  for (const p of Object.values(Protection)) {
    using m = new MappedMemory(null, 4096, p)
    t.is(m.size, 4096, `Protection ${p} maps`)
  }
})

test('raw mapping: flags other than a combination of the MapFlags bits are a RangeError', (t) => {
  const anon = MapFlags.SHARED | MapFlags.ANONYMOUS
  for (const f of [-1, anon | 0x4000_0000, 2 ** 31, 2 ** 32 + anon, 0.5]) {
    throws(t, () => new MappedMemory(null, 4096, Protection.READ_WRITE, f), { instanceOf: RangeError, message: /"flags".*MapFlags bits/ }, String(f))
  }
  throws(t, () => new MappedMemory(null, 4096, Protection.READ_WRITE, 'shared' as unknown as number), { instanceOf: TypeError, message: /"flags"/ })
  using m = new MappedMemory(null, 4096, Protection.READ_WRITE, MapFlags.PRIVATE | MapFlags.ANONYMOUS | MapFlags.NORESERVE | MapFlags.POPULATE)
  t.is(m.size, 4096)
})

test('raw mapping: a descriptor number out of range is a RangeError saying so (2 ** 31 was "must be an integer")', (t) => {
  for (const fd of [2 ** 31, 2 ** 40, -1, 1.5]) {
    throws(t, () => new MappedMemory(null, 4096, Protection.READ_WRITE, MapFlags.SHARED, fd), { instanceOf: RangeError, message: /"fd".*within 0\.\.2147483647/ }, String(fd))
  }
  throws(t, () => new MappedMemory(null, 4096, Protection.READ_WRITE, MapFlags.SHARED, '3' as unknown as number), { instanceOf: TypeError, message: /"fd"/ })
})

test('raw mapping: an fd that is a Proxy of a SharedMemoryObject is a TypeError naming "fd" (it read private member #fd)', (t) => {
  using obj = shmOpen(segmentName(t, 'fdproxy'), 'x').truncate(4096)
  throws(t, () => new MappedMemory(null, 4096, Protection.READ_WRITE, MapFlags.SHARED, new Proxy(obj, {})), {
    instanceOf: TypeError, code: 'ERR_INVALID_ARG_TYPE', message: /^The "fd" argument must be a SharedMemoryObject or a descriptor; got an instance of SharedMemoryObject that is not one/,
  })
})

test('a failed mmap of a named object carries its name as path, like every other failed call on it', (t) => {
  const name = segmentName(t, 'mmappath')
  using rw = shmOpen(name, 'x').truncate(PAGE_SIZE)
  using ro = shmOpen(name, 'r')
  throws(t, () => new MappedMemory(null, PAGE_SIZE, Protection.READ_WRITE, MapFlags.SHARED, ro), {
    instanceOf: ShmError, code: 'EACCES', errno: constants.errno.EACCES, syscall: 'mmap', path: name,
  })
  t.is(rw.size(), PAGE_SIZE)
})

test('EADDRINUSE carries the platform\'s EADDRINUSE errno (it carried EEXIST\'s): create, open require, FIXED_NOREPLACE, FIXED', (t) => {
  const expect = { instanceOf: ShmError, code: 'EADDRINUSE', errno: constants.errno.EADDRINUSE, syscall: 'mmap' }
  const name = segmentName(t, 'inuse')
  using m = MappedMemory.create(name, { size: 65536, fixedAddress: true })
  const other = segmentName(t, 'inuse2')
  throws(t, () => MappedMemory.create(other, { size: 65536, fixedAddress: m.address.begin }), { ...expect, path: other }, 'create fixedAddress: n')
  throws(t, () => MappedMemory.open(name, { fixedAddress: 'require' }), { ...expect, path: name }, "open fixedAddress: 'require'")
  const anon = MapFlags.SHARED | MapFlags.ANONYMOUS
  throws(t, () => new MappedMemory(m.address.begin, PAGE_SIZE, Protection.READ_WRITE, anon | MapFlags.FIXED_NOREPLACE), expect, 'FIXED_NOREPLACE')
  throws(t, () => new MappedMemory(m.address.begin, PAGE_SIZE, Protection.READ_WRITE, anon | MapFlags.FIXED), expect, 'FIXED over memory in use')
})

test('create: fixedAddress must be true, false or a non-zero page-aligned address, named as such (it said "address")', (t) => {
  const name = segmentName(t, 'fixedarg')
  for (const at of [0, 123, PAGE_SIZE + 1, -PAGE_SIZE, 1.5, 2 ** 53]) {
    throws(t, () => MappedMemory.create(name, { size: 4096, fixedAddress: at }), { instanceOf: RangeError, message: /"fixedAddress"/ }, String(at))
  }
  throws(t, () => MappedMemory.create(name, { size: 4096, fixedAddress: 'yes' as unknown as boolean }), { instanceOf: TypeError, message: /"fixedAddress"/ })
  t.false(segmentExists(name))
})

test('create, open, anonymous, fromFd: boolean options must be booleans', (t) => {
  const name = segmentName(t, 'boolopt')
  for (const key of ['prefault', 'reserve', 'unlinkOnExit']) {
    throws(t, () => MappedMemory.create(name, { size: 4096, [key]: 'yes' }), { instanceOf: TypeError, message: new RegExp(`"${key}" option must be a boolean`) }, key)
  }
  for (const key of ['prefault', 'reserve']) {
    throws(t, () => MappedMemory.anonymous({ size: 4096, [key]: 1 }), { instanceOf: TypeError, message: new RegExp(`"${key}"`) }, key)
  }
  t.false(segmentExists(name))
  using m = MappedMemory.create(name, { size: 4096 })
  throws(t, () => MappedMemory.open(name, { readOnly: 'no' as unknown as boolean }), { instanceOf: TypeError, message: /"readOnly"/ })
  throws(t, () => MappedMemory.fromFd(m.fd!, { readOnly: 1 as unknown as boolean }), { instanceOf: TypeError, message: /"readOnly"/ })
})

test('create, open, anonymous, fromFd: an options argument that is not an object is a TypeError naming "options"', (t) => {
  const name = segmentName(t, 'optarg')
  using m = MappedMemory.create(name, { size: 4096 })
  for (const bad of [null, 5, 'x']) {
    const o = bad as never
    throws(t, () => MappedMemory.create(segmentName(t, 'optarg2'), o), { instanceOf: TypeError, message: /"options"/ }, `create ${bad}`)
    throws(t, () => MappedMemory.open(name, o), { instanceOf: TypeError, message: /"options"/ }, `open ${bad}`)
    throws(t, () => MappedMemory.anonymous(o), { instanceOf: TypeError, message: /"options"/ }, `anonymous ${bad}`)
    throws(t, () => MappedMemory.fromFd(m.fd!, o), { instanceOf: TypeError, message: /"options"/ }, `fromFd ${bad}`)
  }
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

// ---- every public function that takes a mapping refuses anything else with a TypeError naming it ----

/** Calls of every public function that takes a mapping (`memory`) or a heap home (`where`), given `v` for it. */
function mappingTakers(mem: MappedMemory): Array<[string, 'memory' | 'where', (v: never) => unknown]> {
  const lock = new Lock(mem)
  class Point extends CBase(cdef('struct point { int x; };'), 'struct point') {}
  return [
    ['Heap.create', 'memory', (v) => Heap.create(v)],
    ['Heap.attach', 'memory', (v) => Heap.attach(v)],
    ['Lock.at', 'memory', (v) => Lock.at(v, 0)],
    ['RLock.at', 'memory', (v) => RLock.at(v, 0)],
    ['Semaphore.at', 'memory', (v) => Semaphore.at(v, 0)],
    ['Condition.at', 'memory', (v) => Condition.at(v, 0, lock)],
    ['RWLock.at', 'memory', (v) => RWLock.at(v, 0)],
    ['Barrier.at', 'memory', (v) => Barrier.at(v, 0)],
    ['Event.at', 'memory', (v) => Event.at(v, 0)],
    ['Ref.at', 'memory', (v) => Ref.at(v, 0, 'int')],
    ['SharedMap.at', 'memory', (v) => SharedMap.at(v, 0)],
    ['Channel.at', 'memory', (v) => Channel.at(v, 0)],
    ['new Lock', 'where', (v) => new Lock(v)],
    ['new RLock', 'where', (v) => new RLock(v)],
    ['new Semaphore', 'where', (v) => new Semaphore(v, 1)],
    ['new RWLock', 'where', (v) => new RWLock(v)],
    ['new Barrier', 'where', (v) => new Barrier(v, 2)],
    ['new Event', 'where', (v) => new Event(v)],
    ['new SharedMap', 'where', (v) => new SharedMap(v)],
    ['SharedMap.named', 'where', (v) => SharedMap.named(v, 'm')],
    ['new Channel', 'where', (v) => new Channel(v)],
    ['CBase.withHeap', 'where', (v) => Point.withHeap(v)],
  ]
}

/** Every taker, given `bad`, throws a TypeError naming its argument (and `detail`, if given). */
function refusesEverywhere(t: import('ava').ExecutionContext, bad: unknown, detail?: RegExp): void {
  const mem = managedSegment(t, 'takers', 1 << 16)
  const before = mem.heap.stats().allocations
  for (const [what, arg, call] of mappingTakers(mem)) {
    const e = throws(t, () => call(bad as never), { instanceOf: TypeError, code: 'ERR_INVALID_ARG_TYPE', message: new RegExp(`^The "${arg}" argument must be`) }, what)
    if (detail) t.regex(e?.message ?? '', detail, what)
  }
  t.is(mem.heap.stats().allocations, before + 1, 'nothing allocated but the Condition\'s lock')
}

test('a function that takes a mapping, given null, throws a TypeError naming the argument (Heap.create read properties of null)', (t) => {
  refusesEverywhere(t, null, /got null$/)
})

test('a function that takes a mapping, given a plain object, throws a TypeError naming the argument (Heap.create complained about "size ... NaN")', (t) => {
  refusesEverywhere(t, {}, /got an instance of Object$/)
})

test('a function that takes a mapping, given a number or a string, throws a TypeError naming the argument', (t) => {
  refusesEverywhere(t, 65536, /got type number/)
  refusesEverywhere(t, '/segment', /got type string/)
})

test('a function that takes a mapping, given a Proxy of one, throws a TypeError naming the argument (it read private member #closed)', (t) => {
  const mem = managedSegment(t, 'proxied', 1 << 16)
  refusesEverywhere(t, new Proxy(mem, {}), /a Proxy of one/)
})

test('a function that takes a mapping, given an object made from MappedMemory.prototype, throws a TypeError naming the argument', (t) => {
  refusesEverywhere(t, Object.create(MappedMemory.prototype), /not one/)
})

test('a "where" that is a Proxy of a heap is a TypeError naming "where" (it read private member #cache)', (t) => {
  const mem = managedSegment(t, 'heapproxy', 1 << 16)
  const heap = new Proxy(mem.heap, {}) as never
  for (const make of [() => new Lock(heap), () => new Semaphore(heap, 1), () => new RWLock(heap), () => new SharedMap(heap), () => new Channel(heap)]) {
    throws(t, make, { instanceOf: TypeError, message: /^The "where" argument must be a Heap or a managed MappedMemory; got an instance of Heap that is not one/ })
  }
})

test('a "where" that is a raw mapping says it has no heap, for every constructor alike', (t) => {
  using raw = new MappedMemory(null, 1 << 16)
  for (const make of [() => new Lock(raw), () => new Event(raw), () => new SharedMap(raw), () => new Channel(raw)]) {
    throws(t, make, { instanceOf: TypeError, message: /^The "where" argument is a raw mapping, which has no heap/ })
  }
})

test('a ShmError has errno, syscall and path as own properties only where a system call failed (API.md)', (t) => {
  t.deepEqual(Object.keys(new ShmError('closed', { code: 'ERR_SHM_CLOSED' })), ['code'])
  t.deepEqual(Object.keys(new ShmError('gone', { code: 'ENOENT', errno: 2, syscall: 'shm_open', path: '/x' })), ['code', 'errno', 'syscall', 'path'])
  const e = t.throws(() => MappedMemory.open('/shmutils-surely-absent-name'), { instanceOf: ShmError, code: 'ENOENT' }) as ShmError
  t.true(Object.hasOwn(e, 'errno') && Object.hasOwn(e, 'syscall') && Object.hasOwn(e, 'path'))
})
