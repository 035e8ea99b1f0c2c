// Memory safety across real processes: a full /dev/shm (a real 8 MiB tmpfs in a private
// mount namespace), a segment shrunk by another process, segments of 64 GiB (also made
// by C), read-only mappings, and a heap fuzz whose every case runs in a child. Each
// scenario runs in a child process (`fixtures/memsafe-child.mjs`) because the failure
// being tested is the death of the process by a signal; a death fails the test.
import { spawn, spawnSync } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { constants as bufferConstants } from 'node:buffer'
import test, { type ExecutionContext } from 'ava'
import { Lock, MappedMemory, Semaphore, types } from '../dist/index.js'
import { fixture, forkChild, segmentName, sleep, unlinkQuietly } from './helpers.js'

type Attempt = { ok: true; value: unknown } | { ok: false; code: string | null; errno: number | null; path: string | null; name: string; message: string }
type Results = Record<string, unknown> & { done?: boolean; fatal?: unknown }
const G = 2 ** 30

/** How a child ended, and what it reported. */
interface Outcome {
  code: number | null
  signal: string | null
  results: Results
  stderr: string
}

/**
 * What a child sees in its own mount namespace: a fresh 8 MiB /dev/shm (`full`), a
 * read-only one (`ro`), or none at all (`none`: an empty tmpfs over /dev, as on AWS Lambda).
 */
const MOUNTS = {
  full: 'mount -t tmpfs -o size=8m tmpfs /dev/shm',
  ro: 'mount -t tmpfs -o ro,size=1m tmpfs /dev/shm',
  none: 'mount -t tmpfs -o size=1m tmpfs /dev',
}

/** Runs `memsafe-child.mjs` with `args`, under `mount` (see {@link MOUNTS}) if given. */
function runChild(args: string[], mount?: keyof typeof MOUNTS, env: Record<string, string> = {}): Promise<Outcome> {
  const node = [process.execPath, fixture('memsafe-child.mjs'), ...args]
  const [cmd, ...argv] = mount
    ? ['unshare', '-m', '--propagation', 'private', 'sh', '-c', `${MOUNTS[mount]} && exec "$0" "$@"`, ...node]
    : node
  return new Promise((resolve) => {
    const p = spawn(cmd!, argv, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...env } })
    let out = ''
    let err = ''
    p.stdout.on('data', (d) => (out += d))
    p.stderr.on('data', (d) => (err += d))
    p.on('close', (code, signal) => {
      const line = out.split('\n').find((l) => l.startsWith('RESULT '))
      resolve({ code, signal, results: line ? (JSON.parse(line.slice(7)) as Results) : {}, stderr: err })
    })
  })
}

/** Checks the child exited normally and finished its scenario; returns its results. */
function finished(t: ExecutionContext, o: Outcome): Results {
  t.is(o.signal, null, `the child died by ${o.signal}: ${o.stderr}`)
  t.is(o.code, 0, o.stderr)
  t.falsy(o.results.fatal, JSON.stringify(o.results.fatal))
  t.true(o.results.done, JSON.stringify(o.results))
  return o.results
}

function attempt(r: Results, key: string): Attempt {
  return r[key] as Attempt
}

/** Asserts `key` failed with `code`. */
function failed(t: ExecutionContext, r: Results, key: string, code: string): void {
  const a = attempt(r, key)
  t.like(a, { ok: false, code }, `${key}: ${JSON.stringify(a)}`)
}

/** Asserts `key` succeeded (with `value`, when given). */
function succeeded(t: ExecutionContext, r: Results, key: string, value?: unknown): void {
  const a = attempt(r, key)
  t.true(a?.ok, `${key}: ${JSON.stringify(a)}`)
  if (value !== undefined && a?.ok) t.deepEqual(a.value, value, key)
}

/**
 * Asserts `key` made one ArrayBuffer of `length` bytes where the runtime allows one that
 * large (Node 22 and later: 2^53 - 1), and failed with `ERR_SHM_BUFFER_TOO_LARGE` where
 * it does not (Node 20: 4 GiB).
 */
function oneBufferOrTooLarge(t: ExecutionContext, r: Results, key: string, length: number): void {
  if (length <= bufferConstants.MAX_LENGTH) succeeded(t, r, key, length)
  else failed(t, r, key, 'ERR_SHM_BUFFER_TOO_LARGE')
}

// A real small tmpfs needs a private mount namespace: root (or user namespaces).
const tmpfsProbe = spawnSync('unshare', ['-m', '--propagation', 'private', 'sh', '-c', 'mount -t tmpfs -o size=1m tmpfs /dev/shm'], { encoding: 'utf8' })
const canTmpfs = process.platform === 'linux' && tmpfsProbe.status === 0
const tmpfsTest = canTmpfs ? test : test.skip
if (!canTmpfs) {
  console.log(`memsafe: SKIPPING the full-/dev/shm tests: cannot mount a small tmpfs in a private mount namespace here (${tmpfsProbe.error?.message ?? tmpfsProbe.stderr?.trim() ?? 'not Linux'})`)
}
const linuxTest = process.platform === 'linux' ? test : test.skip

tmpfsTest('full /dev/shm: create({ prefault }) and create({ reserve }) fail with ENOSPC and leave nothing behind', async (t) => {
  const r = finished(t, await runChild(['full-create', '/memsafe-full-create'], 'full'))
  failed(t, r, 'prefault', 'ENOSPC')
  failed(t, r, 'reserve', 'ENOSPC')
  t.like(attempt(r, 'prefault'), { errno: 28 })
  t.false(r.prefaultLeft)
  t.false(r.reserveLeft)
  succeeded(t, r, 'prefaultSmall', 7)
})

tmpfsTest('full /dev/shm: heap.malloc + fill, mem.new and heap loops get ENOSPC, and the heap stays consistent', async (t) => {
  const r = finished(t, await runChild(['full-heap', '/memsafe-full-heap'], 'full'))
  failed(t, r, 'mallocFill', 'ENOSPC')
  t.like(attempt(r, 'mallocFill'), { path: '/memsafe-full-heap' }, 'the segment named as path, as open errors do')
  t.like(attempt(r, 'memNew'), { path: '/memsafe-full-heap' })
  t.true((r.blocks as number) > 80, `${r.blocks} blocks of 64 KiB fit in 8 MiB`)
  succeeded(t, r, 'checkAfterMalloc')
  succeeded(t, r, 'statsAllocations', r.blocks)
  succeeded(t, r, 'checkAfterFree')
  failed(t, r, 'memNew', 'ENOSPC')
  t.true((r.refs as number) > 80)
  succeeded(t, r, 'refsReadable', true)
  succeeded(t, r, 'checkAfterNew')
  const codes = r.loopCodes as Record<string, number>
  t.deepEqual(Object.keys(codes).filter((c) => c !== 'ok' && c !== 'ENOSPC' && c !== 'ENOMEM'), [], JSON.stringify(codes))
  t.true(codes.ok! > 1000 && codes.ENOSPC! > 0, JSON.stringify(codes))
  succeeded(t, r, 'checkAfterLoop')
})

tmpfsTest('full /dev/shm: a new key that would grow the table is stored without growing it (as with a full heap), not ENOSPC', async (t) => {
  const r = finished(t, await runChild(['full-rehash', '/memsafe-full-rehash'], 'full'))
  succeeded(t, r, 'setNew', 'v')
  succeeded(t, r, 'sizeAfter', 2049)
  succeeded(t, r, 'oldKey', 2047)
  succeeded(t, r, 'check')
})

tmpfsTest('full /dev/shm: mem.reserve() backs raw bytes (shared); an unbacked raw write does not kill, the mapping then says ENOSPC', async (t) => {
  const r = finished(t, await runChild(['full-raw', '/memsafe-full-raw'], 'full'))
  succeeded(t, r, 'reserve')
  t.true(r.reservedShared, 'the reserved bytes reached the object')
  failed(t, r, 'reserveTooMuch', 'ENOSPC')
  succeeded(t, r, 'rawWriteUnbacked', 5)
  failed(t, r, 'bytesAfter', 'ENOSPC')
  failed(t, r, 'mallocAfter', 'ENOSPC')
  failed(t, r, 'reserveAfter', 'ENOSPC')
  failed(t, r, 'createWhenFull', 'ENOSPC')
  t.false(r.createWhenFullLeft)
})

tmpfsTest('full /dev/shm: create({ reserve: true }) backs every page up front: raw writes and the heap work on a full filesystem', async (t) => {
  const r = finished(t, await runChild(['full-reserved', '/memsafe-full-reserved'], 'full'))
  t.true(r.allWritten)
  succeeded(t, r, 'bytesAfter', 6 << 20)
  succeeded(t, r, 'heapAfter', 1 << 20)
  succeeded(t, r, 'check')
})

for (const mount of ['none', 'ro'] as const) {
  const what = mount === 'none' ? 'no /dev/shm at all (AWS Lambda, minimal containers)' : 'a read-only /dev/shm'
  tmpfsTest(`${what}: create, open and shmOpen say so and point to MappedMemory.anonymous, which works`, async (t) => {
    const r = finished(t, await runChild(['no-shm-dir', '/memsafe-noshm'], mount))
    const code = mount === 'none' ? 'ENOENT' : 'EROFS'
    const advice = mount === 'none' ? /this system has no \/dev\/shm \(as on AWS Lambda.*MappedMemory\.anonymous\(\).*mount a tmpfs on \/dev\/shm/ : /\/dev\/shm is mounted read-only here\..*MappedMemory\.anonymous\(\)/
    const message = (k: string) => (attempt(r, k) as { message?: string }).message ?? ''
    for (const k of ['create', 'shmOpen']) {
      failed(t, r, k, code)
      t.regex(message(k), advice, k)
      t.like(attempt(r, k), { errno: mount === 'none' ? 2 : 30 })
    }
    failed(t, r, 'open', 'ENOENT')
    if (mount === 'none') t.regex(message('open'), advice)
    else t.notRegex(message('open'), /anonymous/, 'a missing segment in a usable /dev/shm is only ENOENT')
    succeeded(t, r, 'anonymous', 42)
  })
}

linuxTest('a segment shrunk by another process: raw views survive, library calls throw ERR_SHM_TRUNCATED', async (t) => {
  const name = segmentName(t, 'trunc')
  const child = forkChild(t, 'memsafe-child.mjs', ['truncate-victim', name])
  t.like(await child.message(), { ready: true })
  // This process shrinks the object under the child's mappings.
  const fd = (await import('../dist/index.js')).shmOpen(name, 'r+')
  fd.truncate(4096)
  fd.close()
  child.proc.send('go')
  const r = await child.message<Results>()
  t.is(await child.exited, 0, 'no signal')
  t.true(r.done, JSON.stringify(r.fatal))
  succeeded(t, r, 'rawRead', 0)
  succeeded(t, r, 'rawWrite', 1)
  for (const k of ['bytes', 'view', 'highRefGet', 'highRefSet', 'lowRefGet', 'malloc', 'free', 'check', 'stats', 'named', 'find', 'namedRef', 'lowLock', 'highLock', 'highTryLock', 'highLockRelease', 'highSem', 'highSemRelease', 'cond', 'reserve', 'newLock']) {
    failed(t, r, k, 'ERR_SHM_TRUNCATED')
  }
  t.is((r.highKeys as string[]).length, 46)
  for (const k of r.highKeys as string[]) failed(t, r, k, 'ERR_SHM_TRUNCATED')
  for (const s of r.inspected as string[]) t.regex(s, /unreadable: 'ERR_SHM_TRUNCATED'/)
  succeeded(t, r, 'rawMappingRead', 0)
  failed(t, r, 'rawMappingBytes', 'ERR_SHM_TRUNCATED')
  succeeded(t, r, 'secondLowRead', 7)
  failed(t, r, 'secondHighRead', 'ERR_SHM_TRUNCATED')
  failed(t, r, 'secondAfter', 'ERR_SHM_TRUNCATED')
})

for (const kind of ['plain', 'undo', 'condition', 'channel'] as const) {
  for (const how of ['sync', 'async'] as const) {
    const who = { plain: 'A plain Semaphore\'s', undo: 'An undo Semaphore\'s', condition: 'A Condition\'s', channel: 'A Channel receiver\'s' }[kind]
    linuxTest(`${who} ${how} waiter with no timeout ends with ERR_SHM_TRUNCATED when another process shrinks the segment below its word`, async (t) => {
      const name = segmentName(t, 'semshrink')
      const child = forkChild(t, 'memsafe-child.mjs', ['shrink-waiter', name, kind, how])
      t.like(await child.message(), { ready: true })
      await sleep(300) // the child is asleep in its wait by now
      const fd = (await import('../dist/index.js')).shmOpen(name, 'r+')
      fd.truncate(4096)
      fd.close()
      const t0 = performance.now()
      const r = await Promise.race([child.message<Results>(), sleep(5000).then(() => null)])
      t.truthy(r, 'the waiter was still blocked 5 s after the shrink')
      if (r === null) return
      t.log(`${kind} ${how}: the waiter ended ${(performance.now() - t0).toFixed(0)} ms after the shrink`)
      t.is(await child.exited, 0, 'no signal')
      t.true(r.done, JSON.stringify(r.fatal))
      if (kind === 'plain' || kind === 'undo') t.is(r.undo, kind === 'undo')
      failed(t, r, 'wait', 'ERR_SHM_TRUNCATED')
    })
  }
}

linuxTest('releases of locks on pages a shrink took throw ERR_SHM_TRUNCATED (Lock, RLock, RWLock read and write, Semaphore; with* helpers)', async (t) => {
  const child = forkChild(t, 'memsafe-child.mjs', ['shrink-release', segmentName(t, 'relshrink')])
  const r = await child.message<Results>()
  t.is(await child.exited, 0, 'no signal')
  t.true(r.done, JSON.stringify(r.fatal))
  for (const k of ['lockRelease', 'rlockRelease', 'rlockReleaseInner', 'rwReleaseWrite', 'rwReleaseRead', 'semRelease', 'withLock', 'rlockWithLock', 'withWrite', 'withRead']) {
    failed(t, r, k, 'ERR_SHM_TRUNCATED')
  }
})

linuxTest('a 64 GiB segment: create, Refs beyond 4 GiB, a heap at 60 GiB of a raw 64 GiB mapping, windows, handles into another process; RSS stays small', async (t) => {
  const name = segmentName(t, 'big')
  const a = forkChild(t, 'memsafe-child.mjs', ['big-create', name, '64', segmentName(t, 'big-far')])
  const fromA = await a.message<{ handles: unknown; rss: number }>()
  const b = forkChild(t, 'memsafe-child.mjs', ['big-revive', name])
  b.proc.send(fromA)
  const rb = await b.message<Results>()
  t.is(await b.exited, 0)
  t.true(rb.done, JSON.stringify(rb.fatal))
  a.proc.send(rb)
  const ra = await a.message<Results>()
  t.is(await a.exited, 0)
  t.true(ra.done, JSON.stringify(ra.fatal))
  t.is(ra.size, 64 * G)
  oneBufferOrTooLarge(t, ra, 'buffer', 64 * G)
  oneBufferOrTooLarge(t, ra, 'bytes', 64 * G)
  oneBufferOrTooLarge(t, ra, 'viewTooLong', 5 * G)
  succeeded(t, ra, 'wideView', 1.5 * G)
  t.is(ra.endByte, 0x77)
  t.true((ra.farObjOffset as number) > 60 * G)
  succeeded(t, ra, 'farHeapCheck')
  t.like(rb, { small: '42', far: 7, farObj: { x: 1.5, y: -3 }, lockWorks: true, farHeapAlloc: true, size: 64 * G })
  t.like(ra, { smallAfter: '43', farAfter: 8, farObjAfter: { x: 1.5, y: 4 } })
  const rss = { create: ra.rssCreate as number, end: ra.rssEnd as number, revive: rb.rss as number }
  t.log(`64 GiB segment: RSS ${JSON.stringify(rss)} KiB (creator, creator at the end, reviver)`)
  for (const v of Object.values(rss)) t.true(v < 400 * 1024, `RSS ${v} KiB`)
})

test('windows: Refs, arrays, pointers, views, locks and handles give the same results through 64 KiB windows as through one buffer', async (t) => {
  const whole = finished(t, await runChild(['windows', segmentName(t, 'win')]))
  const windowed = finished(t, await runChild(['windows', segmentName(t, 'win')], undefined, { SHMUTILS_WINDOW_BYTES: '65536' }))
  succeeded(t, whole, 'buffer', 1 << 20)
  failed(t, windowed, 'buffer', 'ERR_SHM_BUFFER_TOO_LARGE')
  succeeded(t, whole, 'check')
  succeeded(t, windowed, 'check')
  t.is(typeof whole.digest, 'number')
  t.is(windowed.digest, whole.digest)
})

const memAvailableKiB = (() => {
  try {
    return Number(readFileSync('/proc/meminfo', 'utf8').match(/MemAvailable:\s+(\d+)/)![1])
  } catch {
    return 0
  }
})()
const roomFor5G = process.platform === 'linux' && memAvailableKiB > 12 * 1024 * 1024
if (process.platform === 'linux' && !roomFor5G) {
  console.log(`memsafe: SKIPPING the managed-heap allocation beyond 4 GiB: it backs 4.5 GiB of /dev/shm and only ${Math.round(memAvailableKiB / 1024)} MiB are available (needs 12 GiB)`)
}

;(roomFor5G ? test : test.skip)('a 64 GiB managed heap hands out memory beyond 4 GiB (backed first); its handle works in another process', async (t) => {
  const name = segmentName(t, 'bigheap')
  const a = forkChild(t, 'memsafe-child.mjs', ['big-heap-far', name])
  const { handle } = await a.message<{ handle: unknown }>()
  const b = forkChild(t, 'memsafe-child.mjs', ['revive-write', name])
  b.proc.send({ handle })
  const rb = await b.message<Results>()
  t.is(await b.exited, 0)
  a.proc.send(rb)
  const ra = await a.message<Results>()
  t.is(await a.exited, 0)
  t.true(ra.done, JSON.stringify(ra.fatal))
  t.true((ra.afterOffset as number) > 4.5 * G)
  t.is(rb.value, '123')
  t.is(ra.afterValue, '124')
  succeeded(t, ra, 'check')
  t.log(`4.5 GiB block backed in ${ra.hugeMs} ms; RSS creator ${ra.rss} KiB, reviver ${rb.rss} KiB`)
})

const cc = spawnSync('cc', ['--version'])
const ccTest = process.platform === 'linux' && cc.status === 0 ? test : test.skip
if (cc.status !== 0) console.log('memsafe: SKIPPING the C-made 6 GiB segment test: no C compiler (cc)')

ccTest('a 6 GiB segment made by C opens and revives without aborting; buffer is one ArrayBuffer where the runtime allows it, else a typed error; view reads it', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'memsafe-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const exe = join(dir, 'bigseg')
  const build = spawnSync('cc', ['-O1', '-o', exe, fixture('bigseg.c')], { encoding: 'utf8' })
  t.is(build.status, 0, build.stderr)
  const name = segmentName(t, 'cbig')
  const made = spawnSync(exe, [name, String(6 * G)], { encoding: 'utf8' })
  t.is(made.status, 0, made.stderr)
  const r = finished(t, await runChild(['open-foreign-big', name]))
  t.is(r.size, 6 * G)
  oneBufferOrTooLarge(t, r, 'buffer', 6 * G)
  t.is(r.valueAt5G, '12345678901')
  succeeded(t, r, 'revive', 6 * G)
  succeeded(t, r, 'raw', 12345678901 % 256)
})

test('read-only: every writing operation is ERR_SHM_READ_ONLY (EACCES); raw writes stay local and do not kill', async (t) => {
  const name = segmentName(t, 'ro')
  const mem = MappedMemory.create(name, { size: 1 << 20 })
  t.teardown(() => mem.close())
  const ref = mem.heap.named('counter', types.i32, 1234)
  const point = mem.heap.named('point', types.struct('ro_pt', { x: types.i32, y: types.i32 }), { x: 5, y: 6 })
  const lock = new Lock(mem)
  const sem = new Semaphore(mem, 2)
  const before = Buffer.from(mem.bytes)
  const child = forkChild(t, 'memsafe-child.mjs', ['read-only', name])
  child.proc.send(JSON.parse(JSON.stringify({ ref, point, lock, sem })))
  const r = await child.message<Results>()
  t.is(await child.exited, 0, 'no signal')
  t.true(r.done, JSON.stringify(r.fatal))
  t.true(r.readOnly)
  succeeded(t, r, 'read', 1234)
  succeeded(t, r, 'readStruct', 5)
  for (const k of ['setValue', 'setIndex', 'setField', 'setWhole', 'malloc', 'free', 'realloc', 'new', 'named', 'find', 'unname', 'stats', 'check', 'heapCreate', 'newLock', 'newRLock', 'lockAt', 'reviveLock', 'semAt', 'newSem', 'reserve']) {
    failed(t, r, k, 'ERR_SHM_READ_ONLY')
    t.like(attempt(r, k), { errno: 13 }, k)
  }
  succeeded(t, r, 'rawWrite', 0x55)
  succeeded(t, r, 'rawWriteView', true)
  // Nothing the read-only process did reached the segment.
  t.true(Buffer.from(mem.bytes).equals(before), 'the segment is byte for byte unchanged')
  t.is(ref.value, 1234)
  t.true(lock.tryAcquire())
  lock.release()
  t.is(sem.value, 2)
})

test('heap fuzz: damaged heaps (garbage, bit flips, 0xff, header, truncation by another process), each case in a child: 0 deaths by signal', async (t) => {
  const modes = ['garbage', 'flips', 'ff', 'header', 'truncate', 'truncate-garbage']
  const cases = modes.flatMap((mode) => [1, 2, 3, 4, 5, 6, 7, 8].map((k) => ({ mode, seed: k * 7919 + mode.length })))
  let deaths = 0
  let untyped = 0
  const codes: Record<string, number> = {}
  const queue = [...cases]
  const worker = async () => {
    for (let c = queue.shift(); c; c = queue.shift()) {
      const name = segmentName(t, 'fuzz')
      const o = await runChild(['fuzz-case', name, String(c.seed), c.mode])
      unlinkQuietly(name)
      if (o.signal !== null) {
        deaths++
        t.log(`case ${c.mode}/${c.seed} died by ${o.signal}: ${o.stderr.slice(0, 500)}`)
        continue
      }
      t.is(o.code, 0, `case ${c.mode}/${c.seed}: ${o.stderr.slice(0, 500)}`)
      t.true(o.results.done, `case ${c.mode}/${c.seed}: ${JSON.stringify(o.results.fatal)}`)
      for (const [k, n] of Object.entries((o.results.codes ?? {}) as Record<string, number>)) {
        codes[k] = (codes[k] ?? 0) + n
        if (k.startsWith('untyped')) untyped += n
      }
    }
  }
  await Promise.all([worker(), worker()])
  t.log(`${cases.length} cases, deaths by signal: ${deaths}; outcomes: ${JSON.stringify(codes)}`)
  t.is(deaths, 0, 'deaths by signal')
  t.is(untyped, 0, 'every failure is a ShmError, TypeError or RangeError')
  t.true((codes['ShmError:ERR_SHM_TRUNCATED'] ?? 0) > 0, 'the truncation cases were hit')
  t.true((codes['ShmError:ERR_SHM_CORRUPT'] ?? 0) > 0, 'the damage cases were hit')
})
