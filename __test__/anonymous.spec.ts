// Anonymous segments (MappedMemory.anonymous, fromFd, mem.fd): no name and nothing in
// /dev/shm; shared with spawned children through an inherited descriptor, and with
// forked children and worker threads by handle (revived through /proc/<pid>/fd of the
// sender); exact counts across processes; descriptors and mappings back to where they
// started after close; loud failures for handles whose holder is gone.
import test, { type ExecutionContext } from 'ava'
import { fork, spawn, spawnSync } from 'node:child_process'
import { once } from 'node:events'
import { closeSync, mkdtempSync, openSync, readdirSync, readFileSync, readlinkSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { constants, tmpdir } from 'node:os'
import { join } from 'node:path'
import { Worker } from 'node:worker_threads'
import { Lock, MappedMemory, revive, ShmError, shmOpen, type Handle, type Ref } from '../dist/index.js'
import { fixture, segmentName, throws } from './helpers.js'

const linux = process.platform === 'linux'

/** Descriptors this process has open. */
function fdCount(): number {
  return readdirSync('/proc/self/fd').length
}

/** Mappings of shmutils memfds in this process. */
function memfdMaps(): number {
  return readFileSync('/proc/self/maps', 'utf8').split('\n').filter((l) => l.includes('/memfd:shmutils')).length
}

/** Inode numbers of everything in /dev/shm now. */
function devShmInodes(): Set<string> {
  const out = new Set<string>()
  for (const e of readdirSync('/dev/shm')) {
    try {
      out.add(String(statSync(join('/dev/shm', e), { bigint: true }).ino))
    } catch {
      // Removed meanwhile (other tests run in parallel).
    }
  }
  return out
}

/** An anonymous segment with a named `counter` (uint64_t) and `lock` record, closed at teardown. */
function counterSegment(t: ExecutionContext): { mem: MappedMemory; counter: Ref<bigint>; lock: Lock } {
  const mem = MappedMemory.anonymous({ size: 1 << 20 })
  t.teardown(() => mem.close())
  const counter = mem.heap.named('counter', 'uint64_t') as Ref<bigint>
  const lock = Lock.at(mem, mem.heap.named('lock', 'uint32_t[8]').offset)
  return { mem, counter, lock }
}

/** Forks `anon-child.mjs` in `mode`; resolves once it started. Killed at teardown. */
async function forkChild(t: ExecutionContext, mode: string, serialization: 'json' | 'advanced' = 'json') {
  const proc = fork(fixture('anon-child.mjs'), [mode], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'], execArgv: [], serialization })
  t.teardown(() => {
    if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGKILL')
  })
  const [first] = (await once(proc, 'message')) as [{ started?: boolean }]
  t.true(first.started)
  const request = async <T = Record<string, unknown>>(msg: unknown): Promise<T> => {
    proc.send(msg as object)
    const [reply] = await once(proc, 'message')
    return reply as T
  }
  return { proc, request }
}

test.serial('an anonymous segment has no name and nothing in /dev/shm; its descriptor and mapping go with close()', (t) => {
  if (!linux) return t.pass('counts /proc/self entries: Linux only')
  const fds = fdCount()
  const maps = memfdMaps()
  const mem = MappedMemory.anonymous({ size: 100_000 })
  t.is(mem.name, null)
  t.true(mem.managed)
  t.is(mem.size, 102_400, 'rounded up to pages')
  const fd = mem.fd as number
  t.true(Number.isInteger(fd) && fd > 2)
  t.is(readlinkSync(`/proc/self/fd/${fd}`), '/memfd:shmutils (deleted)')
  t.is(statSync(`/proc/self/fd/${fd}`).mode & 0o777, 0o600, 'mode 0600, as named segments (a memfd starts 0777)')
  const h = mem.toJSON()
  t.is(h.segment, '')
  t.deepEqual(h.proc, { pid: process.pid, fd })
  t.regex(String(h.uid), /^[0-9a-f]{16}$/)
  t.false(devShmInodes().has(String(h.inode)), 'no entry in /dev/shm is this object')
  t.is(mem.creator?.pid, process.pid)
  t.is(fdCount(), fds + 1, 'one descriptor: the mapping\'s own')
  t.is(memfdMaps(), maps + 1)
  const r = mem.new('int32_t', 7)
  t.is(r.value, 7)
  mem.heap.check()
  const lock = new Lock(mem)
  lock.withLock(() => {}) // claims this thread's liveness token: a descriptor of its own
  t.is(fdCount(), fds + 2, 'the mapping\'s descriptor and the token\'s')
  t.is(revive<MappedMemory>(h), mem, 'revived in its own process: the same mapping')
  mem.close()
  t.is(mem.fd, null)
  t.is(fdCount(), fds)
  t.is(memfdMaps(), maps)
  const pre = MappedMemory.anonymous({ size: 4096, prefault: true })
  t.is(pre.size, 4096)
  pre.close()
  t.is(fdCount(), fds)
  t.is(memfdMaps(), maps)
})

test('spawned children map it from a descriptor inherited through stdio: exact counts', async (t) => {
  const { mem, counter, lock } = counterSegment(t)
  const children = [0, 1, 2].map(() =>
    spawn(process.execPath, [fixture('anon-child.mjs'), 'fd', '400'], { stdio: ['ignore', 'pipe', 'inherit', mem.fd as number] }),
  )
  t.teardown(() => children.forEach((c) => c.exitCode === null && c.kill('SIGKILL')))
  const outputs = children.map(async (c) => {
    let text = ''
    c.stdout!.on('data', (d) => (text += d))
    const [code] = await once(c, 'close') // 'close': stdout fully read
    t.is(code, 0)
    return JSON.parse(text) as { added: number; uid: string; maps: number; mapsAfter: number }
  })
  for (let i = 0; i < 400; i++) lock.withLock(() => (counter.value += 1n))
  const results = await Promise.all(outputs)
  for (const r of results) {
    t.is(r.added, 400)
    t.is(r.uid, mem.uid as string, 'the same segment')
    if (linux) t.deepEqual([r.maps, r.mapsAfter], [1, 0], 'the child mapped it once and unmapped it on close')
  }
  t.is(counter.value, 1600n)
})

for (const serialization of ['json', 'advanced'] as const) {
  test(`forked children revive its handles through /proc/<pid>/fd (${serialization}): exact counts`, async (t) => {
    if (!linux) return t.pass('/proc revive: Linux only')
    const { mem, counter, lock } = counterSegment(t)
    const kids = await Promise.all([forkChild(t, 'handle', serialization), forkChild(t, 'handle', serialization)])
    // JSON sends toJSON(); 'advanced' structured-clones the live objects.
    const msg = serialization === 'json' ? JSON.parse(JSON.stringify({ lock, counter, times: 500 })) : { lock, counter, times: 500 }
    const replies = await Promise.all(kids.map((k) => k.request<{ added: number; maps: number }>(msg)))
    t.is(replies[0].added, 500)
    t.is(replies[1].added, 500)
    t.is(replies[0].maps, 1, 'mapped once per process, however many handles')
    t.is(counter.value, 1000n)
    // A second round reuses the child's mapping (no new /proc open).
    const again = await kids[0].request<{ added: number; maps: number }>(msg)
    t.deepEqual([again.added, again.maps], [500, 1])
    t.is(counter.value, 1500n)
    t.deepEqual(mem.toJSON().proc, { pid: process.pid, fd: mem.fd })
  })
}

test('a worker thread revives the handle in the same process', async (t) => {
  if (!linux) return t.pass('/proc revive: Linux only')
  const { counter, lock } = counterSegment(t)
  const code = `
    const { workerData, parentPort } = require('node:worker_threads')
    const { revive } = require(${JSON.stringify(join(import.meta.dirname ?? __dirname, '..', 'dist', 'index.js'))})
    const { lock, counter } = revive(workerData)
    for (let i = 0; i < 300; i++) { lock.acquire(); counter.value += 1n; lock.release() }
    parentPort.postMessage('done')`
  const w = new Worker(code, { eval: true, workerData: { lock, counter } })
  for (let i = 0; i < 300; i++) lock.withLock(() => (counter.value += 1n))
  const [msg] = await once(w, 'message')
  t.is(msg, 'done')
  await w.terminate()
  t.is(counter.value, 600n)
})

test('the memory lives on while another process holds it', async (t) => {
  if (!linux) return t.pass('/proc revive: Linux only')
  const mem = MappedMemory.anonymous({ size: 8192 })
  new DataView(mem.buffer).setUint32(4096, 0xfeed, true)
  const kid = await forkChild(t, 'revive')
  const first = await kid.request<{ ok: boolean; uid: string; value: number }>({ memory: mem.toJSON() })
  t.deepEqual(first, { ok: true, uid: mem.uid as string, value: 0xfeed })
  mem.close()
  // The child still maps it: its own mapping, reused for the same handle.
  const second = await kid.request<{ ok: boolean; value: number }>({ memory: mem.toJSON() })
  t.deepEqual([second.ok, second.value], [true, 0xfeed])
})

test('handles of a closed or replaced anonymous segment fail loudly', async (t) => {
  if (!linux) return t.pass('/proc revive: Linux only')
  const kid = await forkChild(t, 'revive')
  // The holder closed it: its descriptor is gone.
  const gone = MappedMemory.anonymous({ size: 8192 })
  const goneHandle = gone.toJSON()
  gone.close()
  const r1 = await kid.request<{ code: string; message: string }>({ memory: goneHandle })
  t.is(r1.code, 'ENOENT')
  t.regex(r1.message, new RegExp(`/proc/${process.pid}/fd/\\d+: process ${process.pid} has exited or no longer holds the segment`))
  // The descriptor now holds another segment: the identity does not match.
  const other = MappedMemory.anonymous({ size: 8192 })
  t.teardown(() => other.close())
  const stale = { ...other.toJSON(), uid: '0123456789abcdef' }
  const r2 = await kid.request<{ code: string; message: string }>({ memory: stale })
  t.is(r2.code, 'ERR_SHM_STALE_HANDLE')
  t.regex(r2.message, /no longer held by process/)
  // A process that does not exist.
  const r3 = await kid.request<{ code: string }>({ memory: { ...other.toJSON(), proc: { pid: 0x3ffffff0, fd: 3 } } })
  t.is(r3.code, 'ENOENT')
  // Malformed.
  for (const proc of [{ pid: 'x', fd: 3 }, { pid: 1 }, { pid: -1, fd: 3 }, null, 7]) {
    const r = await kid.request<{ name: string; message: string }>({ memory: { ...other.toJSON(), proc } })
    t.is(r.name, 'TypeError', JSON.stringify(proc))
    t.regex(r.message, /"proc"/)
  }
  const { uid: _uid, ...noUid }: Handle = other.toJSON()
  const r4 = await kid.request<{ name: string; message: string }>({ memory: noUid })
  t.is(r4.name, 'TypeError')
})

test('a handle whose holder is gone fails with the OS errno, positive as in every ShmError (it was -2: libuv\'s)', (t) => {
  if (!linux) return t.pass('/proc revive: Linux only')
  const mem = MappedMemory.anonymous({ size: 8192 })
  t.teardown(() => mem.close())
  // Another identity, so that this process's own mapping of it is not reused.
  const h = { ...mem.toJSON(), uid: '0123456789abcdef', proc: { pid: 0x3ffffff0, fd: 3 } }
  const e = t.throws(() => revive(h), { instanceOf: ShmError, code: 'ENOENT' }) as ShmError
  t.is(e.errno, constants.errno.ENOENT)
  t.is(e.syscall, 'open')
  t.is(e.path, '/proc/1073741808/fd/3')
  // A descriptor of this process that is a directory, not a segment: EISDIR (was -21).
  const dir = openSync('/', 'r')
  t.teardown(() => closeSync(dir))
  const e2 = t.throws(() => revive({ ...h, proc: { pid: process.pid, fd: dir } }), { instanceOf: ShmError, code: 'EISDIR' }) as ShmError
  t.is(e2.errno, constants.errno.EISDIR)
})

test('fromFd maps any segment by descriptor and refuses everything else', (t) => {
  // A named segment's descriptor works too.
  const name = segmentName(t, 'anonfd')
  const named = MappedMemory.create(name, { size: 8192 })
  t.teardown(() => named.close())
  named.new('int32_t', 5)
  using obj = shmOpen(name, 'r+')
  const byFd = MappedMemory.fromFd(obj.fd)
  t.is(byFd.uid, named.uid)
  t.is(byFd.name, null)
  t.not(byFd.fd, obj.fd, 'a duplicate of its own')
  byFd.close()
  t.notThrows(() => obj.size(), 'the caller\'s descriptor stays open')
  // Bad input.
  throws(t, () => MappedMemory.fromFd(-1), { instanceOf: RangeError })
  throws(t, () => MappedMemory.fromFd(1.5), { instanceOf: RangeError })
  throws(t, () => MappedMemory.fromFd('3' as unknown as number), { instanceOf: TypeError })
  throws(t, () => MappedMemory.fromFd(2 ** 40), { instanceOf: RangeError })
  throws(t, () => MappedMemory.fromFd(obj.fd, { fixedAddress: 'yes' as 'require' }), { instanceOf: TypeError })
  const closed = openSync('/dev/null', 'r')
  closeSync(closed)
  throws(t, () => MappedMemory.fromFd(closed), { instanceOf: ShmError, code: 'EBADF' })
  const dir = mkdtempSync(join(tmpdir(), 'shmutils-fromfd-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  writeFileSync(join(dir, 'junk'), Buffer.alloc(8192, 0x41))
  const junk = openSync(join(dir, 'junk'), 'r+')
  t.teardown(() => closeSync(junk))
  const e = throws(t, () => MappedMemory.fromFd(junk), { instanceOf: ShmError, code: 'ERR_SHM_BAD_HEADER' })
  t.regex(e?.message ?? '', new RegExp(`\\(fd ${junk}\\)`))
  throws(t, () => MappedMemory.anonymous(undefined as never), { instanceOf: TypeError })
  throws(t, () => MappedMemory.anonymous({} as never), { instanceOf: TypeError })
  throws(t, () => MappedMemory.anonymous({ size: 100 }), { instanceOf: RangeError })
  throws(t, () => MappedMemory.anonymous({ size: -1 }), { instanceOf: RangeError })
})

// A real small tmpfs needs a private mount namespace: root (or user namespaces).
const tmpfsProbe = spawnSync('unshare', ['-m', '--propagation', 'private', 'sh', '-c', 'mount -t tmpfs -o size=1m tmpfs /dev/shm'], { encoding: 'utf8' })
const canTmpfs = process.platform === 'linux' && tmpfsProbe.status === 0
if (!canTmpfs) {
  console.log(`anonymous: SKIPPING the small-/dev/shm test: cannot mount a tmpfs in a private mount namespace here (${tmpfsProbe.error?.message ?? tmpfsProbe.stderr?.trim() ?? 'not Linux'})`)
}

;(canTmpfs ? test : test.skip)('anonymous segments do not need /dev/shm: they work where it is 1 MiB, named ones fail with ENOSPC', (t) => {
  const dist = JSON.stringify(join(import.meta.dirname ?? __dirname, '..', 'dist', 'index.js'))
  const script = `
    const { MappedMemory } = require(${dist})
    const out = {}
    try { MappedMemory.create('/anon-small-' + process.pid, { size: 8 << 20, reserve: true }); out.named = 'created' } catch (e) { out.named = e.code }
    const m = MappedMemory.anonymous({ size: 8 << 20, reserve: true })
    const big = m.heap.malloc(4 << 20)
    m.bytes.fill(7, big, big + (4 << 20))
    out.anonymous = [m.size, m.bytes[big + (4 << 20) - 1]]
    console.log(JSON.stringify(out))`
  const r = spawnSync('unshare', ['-m', '--propagation', 'private', 'sh', '-c', 'mount -t tmpfs -o size=1m tmpfs /dev/shm && exec "$0" "$@"', process.execPath, '-e', script], { encoding: 'utf8', timeout: 60_000 })
  t.is(r.status, 0, r.stderr)
  t.deepEqual(JSON.parse(r.stdout), { named: 'ENOSPC', anonymous: [8 << 20, 7] })
})
