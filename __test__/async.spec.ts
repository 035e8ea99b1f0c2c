import { spawn, spawnSync } from 'node:child_process'
import { once } from 'node:events'
import { pbkdf2 } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { Worker } from 'node:worker_threads'
import test from 'ava'
import { Condition, Lock, MappedMemory, munmap, RLock, Semaphore, ShmError } from '../dist/index.js'
import { compileFixture, fixture, forkChild, rawSegment, rejection, seededRandom, segmentName, since, sleep, startPeer } from './helpers.js'

test.serial('acquireAsync waits off the event loop: an interval keeps firing until the holder releases', async (t) => {
  const m = rawSegment(t)
  const lock = Lock.at(m, 0)
  const peer = await startPeer(t, 'process')
  await peer.request('revive', { key: 'l', handle: lock })
  await peer.request('acquire', { key: 'l' })
  let ticks = 0
  const iv = setInterval(() => ticks++, 10)
  t.teardown(() => clearInterval(iv))
  const t0 = performance.now()
  const got = lock.acquireAsync()
  setTimeout(() => peer.post('release', { key: 'l' }), 300)
  t.true(await got)
  clearInterval(iv)
  t.true(since(t0) >= 280, 'waited for the release')
  // ~30 unloaded, fewer on a busy machine; a blocked event loop would fire none before the
  // wait settled (its first tick is due long before the release, and libuv runs due
  // timers before the completions it polls, however late the loop gets the CPU).
  t.true(ticks >= 1, `the interval fired ${ticks} times while waiting`)
  t.false(lock.ownerDied)
  t.true(lock.locked)
  lock.release()
})

test.serial('abort while waiting rejects promptly with an AbortError; the wait is gone', async (t) => {
  const m = rawSegment(t)
  const lock = Lock.at(m, 0)
  const sem = Semaphore.at(m, 64, 0)
  const cond = Condition.at(m, 128, lock)
  lock.acquire()
  // Lock: queued behind this thread's own hold.
  for (const [what, start] of [
    ['lock', (signal: AbortSignal) => lock.acquireAsync({ signal })],
    ['semaphore', (signal: AbortSignal) => sem.acquireAsync({ signal })],
  ] as const) {
    const ac = new AbortController()
    const p = start(ac.signal)
    await sleep(30)
    const t0 = performance.now()
    ac.abort(new Error('enough'))
    const e = await rejection(p)
    // ~0.2 ms unloaded; the bound leaves room for a busy machine.
    t.true(since(t0) < 100, `${what}: rejected ${since(t0).toFixed(1)} ms after abort()`)
    t.true(e instanceof DOMException, what)
    t.is(e.name, 'AbortError')
    t.is((e.cause as Error).message, 'enough')
  }
  t.true(lock.locked, 'the holder still holds it')
  // Already aborted: rejects without waiting.
  t.is((await rejection(lock.acquireAsync({ signal: AbortSignal.abort() }))).name, 'AbortError')
  t.is((await rejection(sem.acquireAsync({ signal: AbortSignal.abort() }))).name, 'AbortError')
  // Condition: the rejection comes with the lock held again.
  const ac = new AbortController()
  const w = cond.waitAsync({ signal: ac.signal })
  t.false(lock.locked, 'waiting released the lock')
  setTimeout(() => ac.abort(), 20)
  t.is((await rejection(w)).name, 'AbortError')
  t.true(lock.locked, 'held again after the aborted wait')
  lock.release()
  // An abort after the wait finished changes nothing.
  const late = new AbortController()
  t.true(await lock.acquireAsync({ signal: late.signal }))
  late.abort()
  lock.release()
  t.false(lock.locked)
})

test.serial('timeouts resolve false near the deadline', async (t) => {
  const m = rawSegment(t)
  const lock = Lock.at(m, 0)
  const sem = Semaphore.at(m, 64, 0)
  const cond = Condition.at(m, 128, lock)
  lock.acquire()
  for (const [what, start] of [
    ['lock', () => lock.acquireAsync({ timeout: 100 })],
    ['semaphore', () => sem.acquireAsync({ timeout: 100 })],
    ['condition', () => cond.waitAsync({ timeout: 100 })],
  ] as const) {
    const t0 = performance.now()
    t.false(await start(), what)
    const dt = since(t0)
    t.true(dt >= 95 && dt < 400, `${what}: ${dt.toFixed(0)} ms`)
  }
  t.true(lock.locked, 'the condition wait re-acquired the lock after its timeout')
  t.false(await lock.acquireAsync({ timeout: 0 }), 'timeout 0 tries once')
  t.false(await sem.acquireAsync({ timeout: 0 }))
  lock.release()
})

test.serial('100 pending acquireAsync do not starve the libuv pool: fs and crypto keep completing', async (t) => {
  const m = rawSegment(t)
  const lock = Lock.at(m, 0)
  const peer = await startPeer(t, 'process')
  await peer.request('revive', { key: 'l', handle: lock })
  await peer.request('acquire', { key: 'l' })
  let acquired = 0
  const waits = Array.from({ length: 100 }, () =>
    lock.acquireAsync().then((ok) => {
      if (ok) acquired++
      lock.release()
    }),
  )
  await sleep(50)
  // The pool has 4 threads: if the waits held them, none of this could finish.
  const t0 = performance.now()
  const work = [
    ...Array.from({ length: 16 }, () => readFile(fixture('sync-peer.mjs'), 'utf8')),
    ...Array.from({ length: 8 }, () => promisify(pbkdf2)('pw', 'salt', 1000, 32, 'sha256')),
  ]
  const results = await Promise.all(work)
  t.is(results.length, 24)
  t.true(since(t0) < 2000, `libuv pool work finished in ${since(t0).toFixed(0)} ms`)
  t.is(acquired, 0, 'nobody got the held lock meanwhile')
  await peer.request('release', { key: 'l' })
  await Promise.all(waits)
  t.is(acquired, 100, 'each pending wait got the lock once, one after another')
  t.false(lock.locked)
})

test.serial('closing the mapping rejects pending waits with ERR_SHM_CLOSED promptly', async (t) => {
  const other = new MappedMemory(null, 4096)
  const lock = Lock.at(other, 0)
  const sem = Semaphore.at(other, 64, 0)
  const cond = Condition.at(other, 128, Lock.at(other, 192))
  lock.acquire()
  cond.lock.acquire()
  const waits = [lock.acquireAsync(), lock.acquireAsync({ timeout: 60_000 }), sem.acquireAsync(), cond.waitAsync()]
  await sleep(30)
  const t0 = performance.now()
  other.close()
  for (const w of waits) await t.throwsAsync(w, { instanceOf: ShmError, code: 'ERR_SHM_CLOSED' })
  t.true(since(t0) < 100, `rejected ${since(t0).toFixed(1)} ms after close()`)
  await t.throwsAsync(lock.acquireAsync(), { code: 'ERR_SHM_CLOSED' })
})

// A wait that finished on its waiter thread while this thread was busy has its
// completion on the way when the mapping closes: it settles as closed, and what it took
// goes back (a lock stayed held, or was reported abandoned; a semaphore unit was lost).
for (const kind of ['Lock', 'RLock', 'Semaphore', 'undo Semaphore', 'Condition'] as const) {
  for (const mappings of [1, 2]) {
    test(`${kind}: a completion on its way when the mapping closes settles as closed and gives back what it took (${mappings} mapping${mappings > 1 ? 's' : ''} of the segment open)`, async (t) => {
      const name = segmentName(t, 'close-race')
      const base = MappedMemory.create(name, { size: 1 << 16 })
      const lock = kind === 'RLock' ? new RLock(base) : new Lock(base)
      const sem = new Semaphore(base, 0, kind === 'undo Semaphore' ? { undo: true, holders: 4 } : undefined)
      const cond = new Condition(lock)
      const peer = await startPeer(t, 'process')
      await peer.request('revive', { key: 'l', handle: lock })
      await peer.request('revive', { key: 's', handle: sem })
      await peer.request('revive', { key: 'c', handle: cond })
      const m1 = MappedMemory.open(name)
      const m2 = mappings === 2 ? MappedMemory.open(name) : null
      t.teardown(() => {
        m2?.close()
        base.close()
      })
      const word = new Int32Array(base.buffer)
      const owner = () => Atomics.load(word, lock.offset >>> 2) & 0x3fff_ffff
      const isSem = kind.endsWith('Semaphore')
      // The peer acts once this thread raises `go` (a word of the segment), from
      // synchronous code that then stays busy: no completion can be handed over.
      const go = base.heap.malloc(64)
      word[go >>> 2] = 0
      word[(go >>> 2) + 1] = 0
      let pending: Promise<boolean>
      let acted: string
      let mine = 0
      if (isSem) {
        pending = Semaphore.at(m1, sem.offset).acquireAsync()
        acted = peer.post('whenFlag', { key: 's', at: go, flag: 'ready', then: 'semRelease' })
      } else if (kind === 'Condition') {
        // With two mappings, the condition is in the one that stays open and its lock in
        // the one that closes.
        const l1 = Lock.at(m1, lock.offset)
        l1.acquire()
        mine = owner()
        pending = Condition.at(m2 ?? m1, cond.offset, l1).waitAsync()
        acted = peer.post('whenFlag', { key: 'l', at: go, flag: 'ready', then: 'notify', cond: 'c' })
      } else {
        acted = peer.post('holdUntil', { key: 'l', at: go, flag: 'ready' })
        await peer.next('ready')
        pending = (kind === 'RLock' ? RLock : Lock).at(m1, lock.offset).acquireAsync()
      }
      if (isSem || kind === 'Condition') await peer.next('ready')
      pending.catch(() => {}) // (asserted below; not reported twice if the test fails first)
      await sleep(30)
      const before = owner()
      Atomics.store(word, go >>> 2, 1)
      // Busy until the peer acted and the waiter thread took the lock or unit for this
      // thread (bounded: slow under emulation).
      const t0 = performance.now()
      while (Atomics.load(word, (go >>> 2) + 1) === 0 && since(t0) < 20_000);
      if (isSem) while (sem.value !== 0 && since(t0) < 20_000);
      else if (mine !== 0) while (owner() !== mine && since(t0) < 20_000);
      else while ((owner() === 0 || owner() === before) && since(t0) < 20_000);
      t.true(since(t0) < 20_000)
      m1.close()
      // Given back inside close(), before this thread's token on the segment could go
      // (with one mapping, the next process would otherwise find the lock abandoned).
      if (isSem) t.is(sem.value, 1)
      else t.is(owner(), 0)
      t.is((await rejection(pending)).code, 'ERR_SHM_CLOSED')
      await peer.next(acted)
      if (isSem) {
        t.like(await peer.request('semTake', { key: 's', n: 1, timeout: 1000 }), { got: 1 }, 'the unit is there')
      } else {
        t.like(await peer.request('acquire', { key: 'l', timeout: 1000 }), { ok: true, ownerDied: false }, 'free, and not abandoned')
        await peer.request('release', { key: 'l' })
      }
    })
  }
}

test('detach() under a pending acquireAsync ends it before the caller may unmap the pages (the waiter thread touched them: SIGSEGV)', async (t) => {
  const name = segmentName(t, 'detach-race')
  const base = MappedMemory.create(name, { size: 1 << 16 })
  t.teardown(() => base.close())
  const lock = new Lock(base)
  const peer = await startPeer(t, 'process')
  await peer.request('revive', { key: 'l', handle: lock })
  t.like(await peer.request('acquire', { key: 'l' }), { ok: true })
  const m2 = MappedMemory.open(name)
  const pending = Lock.at(m2, lock.offset).acquireAsync()
  await sleep(30)
  const { address, size } = m2.detach()
  munmap(address, size)
  await peer.request('release', { key: 'l' })
  t.is((await rejection(pending)).code, 'ERR_SHM_CLOSED')
  t.like(await peer.request('acquire', { key: 'l', timeout: 1000 }), { ok: true, ownerDied: false })
})

test('a worker terminated while its acquireAsync completion is on its way gives back what the wait took', async (t) => {
  const base = MappedMemory.create(segmentName(t, 'term-race'), { size: 1 << 16 })
  t.teardown(() => base.close())
  const sem = new Semaphore(base, 0)
  for (let round = 0; round < 3; round++) {
    const w = new Worker(
      `const { revive } = require(${JSON.stringify(join(process.cwd(), 'dist', 'index.js'))})
       const { workerData, parentPort } = require('node:worker_threads')
       const sem = revive(workerData)
       void sem.acquireAsync()
       parentPort.postMessage('waiting')
       setTimeout(() => { for (;;); }, 5) // busy: the completion never gets in`,
      { eval: true, workerData: sem.toJSON() },
    )
    await once(w, 'message')
    await sleep(30)
    sem.release(1)
    const t0 = performance.now()
    while (sem.value !== 0 && since(t0) < 5000) await sleep(1)
    t.is(sem.value, 0, 'the waiter thread took the unit for the worker')
    await w.terminate()
    t.is(sem.value, 1, 'and it came back when the worker went')
    t.true(sem.tryAcquire())
  }
  // Terminated while a hundred waits complete: those finished on their waiter thread
  // when the worker went give back too (some were lost, several rounds in 60).
  for (let round = 0; round < 20; round++) {
    const w = new Worker(
      `const { revive } = require(${JSON.stringify(join(process.cwd(), 'dist', 'index.js'))})
       const { workerData, parentPort } = require('node:worker_threads')
       const sem = revive(workerData)
       for (let i = 0; i < 100; i++) void sem.acquireAsync()
       parentPort.postMessage('waiting')
       setTimeout(() => { for (;;); }, 5)`,
      { eval: true, workerData: sem.toJSON() },
    )
    await once(w, 'message')
    await sleep(20)
    sem.release(100)
    await w.terminate()
    t.is(sem.value, 100, `round ${round}`)
    while (sem.tryAcquire());
  }
})

test('withLockAsync serializes async critical sections of one thread and releases on throw', async (t) => {
  const m = rawSegment(t)
  const lock = Lock.at(m, 0)
  const log: string[] = []
  const section = (name: string) =>
    lock.withLockAsync(async () => {
      log.push(`${name}:in`)
      await sleep(20)
      log.push(`${name}:out`)
      return name
    })
  t.deepEqual(await Promise.all([section('a'), section('b'), section('c')]), ['a', 'b', 'c'])
  // 'a' takes the free lock at once; b and c follow in either order: without futex_waitv
  // (Linux < 5.16, qemu-user) each wait has its own waiter thread and the first to wake
  // wins. Serialized means each section leaves before the next enters.
  t.deepEqual(log.slice(0, 2), ['a:in', 'a:out'])
  t.deepEqual(log.toSorted(), ['a:in', 'a:out', 'b:in', 'b:out', 'c:in', 'c:out'])
  for (let i = 0; i < log.length; i += 2) t.is(log[i + 1], log[i]!.replace(':in', ':out'), `${log[i]} is followed by its own exit`)
  t.false(lock.locked)
  await t.throwsAsync(lock.withLockAsync(async () => {
    throw new Error('boom')
  }), { message: 'boom' })
  t.false(lock.locked)
  lock.acquire()
  await t.throwsAsync(lock.withLockAsync(() => 1, { timeout: 20 }), { instanceOf: ShmError, code: 'ETIMEDOUT' })
  lock.release()
})

test('bad arguments to async waits reject with TypeError/RangeError naming them', async (t) => {
  const m = rawSegment(t)
  const lock = Lock.at(m, 0)
  const sem = Semaphore.at(m, 64, 1)
  const cond = Condition.at(m, 128, lock)
  for (const w of [lock, sem]) {
    await t.throwsAsync(w.acquireAsync({ timeout: -1 }), { instanceOf: RangeError, message: /"timeout"/ })
    await t.throwsAsync(w.acquireAsync({ timeout: Number.NaN }), { instanceOf: RangeError })
    await t.throwsAsync(w.acquireAsync({ timeout: '5' as unknown as number }), { instanceOf: TypeError, message: /"timeout"/ })
    await t.throwsAsync(w.acquireAsync({ signal: {} as AbortSignal }), { instanceOf: TypeError, message: /"signal"/ })
    await t.throwsAsync(w.acquireAsync('5' as unknown as object), { instanceOf: TypeError, message: /"options"/ })
  }
  await t.throwsAsync(lock.withLockAsync(5 as unknown as () => void), { instanceOf: TypeError, message: /"fn"/ })
  lock.acquire()
  await t.throwsAsync(cond.waitAsync({ signal: 'x' as unknown as AbortSignal }), { instanceOf: TypeError, message: /"signal"/ })
  await t.throwsAsync(cond.waitAsync({ timeout: -5 }), { instanceOf: RangeError })
  lock.release()
  await t.throwsAsync(cond.waitAsync(), { instanceOf: ShmError, code: 'ERR_SHM_NOT_OWNER' })
  t.is(sem.value, 1, 'nothing was taken by the rejected calls')
})

test('without futex_waitv (forced fallback), async waits, aborts and closes still work', (t) => {
  const r = spawnSync(process.execPath, [fixture('async-fallback.mjs')], {
    env: { ...process.env, SHMUTILS_NO_FUTEX_WAITV: '1' },
    encoding: 'utf8',
    timeout: 30_000,
  })
  t.is(r.status, 0, r.stderr)
  t.deepEqual(JSON.parse(r.stdout), { acquired: 20, aborted: true, abortMs: true, closed: true, sem: 3 })
})

/** Runs a command to its end without blocking this thread (the other tests keep time). */
function run(file: string, args: string[], env: NodeJS.ProcessEnv = process.env) {
  return new Promise<{ status: number | null; signal: NodeJS.Signals | null; stdout: string; stderr: string }>((resolve, reject) => {
    const child = spawn(file, args, { env, timeout: 60_000 })
    let stdout = ''
    let stderr = ''
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()))
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()))
    child.on('error', reject)
    child.on('close', (status, signal) => resolve({ status, signal, stdout, stderr }))
  })
}

const linux = process.platform === 'linux'
/**
 * Whether this process may run a child as another uid: root of the initial user
 * namespace (a namespace that maps only root, as the arm64 lane's `unshare
 * --map-root-user`, refuses setresuid).
 */
const root = linux && process.getuid?.() === 0 && /^\s*0\s+0\s+4294967295\s*$/m.test(readFileSync('/proc/self/uid_map', 'utf8'))
/**
 * Runs a waiter-limits.mjs child as a uid of its own: RLIMIT_NPROC counts every task of
 * the real uid, so a uid no other test uses makes the child's count its own; root
 * ignores the limit, hence setpriv.
 */
function runThreadLimited(slot: number, args: string[], env: NodeJS.ProcessEnv = process.env) {
  // One uid per test (`slot`), as the tests run at once, and per test process.
  const uid = String(200_000 + (process.pid % 100_000) * 10 + slot)
  const setpriv = [`--reuid=${uid}`, `--regid=${uid}`, '--clear-groups']
  return run('setpriv', [...setpriv, process.execPath, fixture('waiter-limits.mjs'), ...args], env)
}

test('an async wait with no waiter thread to run it rejects with EAGAIN (the process lives on, and later waits work)', async (t) => {
  if (!linux || !root) return t.pass('needs Linux and root of the initial user namespace: runs a child as another uid under RLIMIT_NPROC (setpriv, prlimit)')
  const r = await runThreadLimited(0, ['none-left'])
  t.is(r.signal, null, `the child was killed (an abort is SIGABRT): ${r.stderr}`)
  t.is(r.status, 0, r.stderr)
  const refused = { shm: true, name: 'ShmError', code: 'EAGAIN', errno: 11, syscall: 'pthread_create' }
  t.deepEqual(JSON.parse(r.stdout), {
    event: refused,
    lock: refused,
    condition: refused,
    semaphore: refused,
    barrier: refused,
    // The refused condition wait never released the lock; the refused take took nothing;
    // the refused barrier wait left its round (not broken: later parties pass).
    lockStillHeld: true,
    semValue: 0,
    barrierBroken: false,
    barrierWaiting: 0,
    // Once a thread can be started again: a wait that is set, a condition wait that times out.
    later: true,
    laterCondition: false,
    laterLockHeld: true,
    laterBarrier: [0, 1],
  })
})

for (const [slot, room] of [[1, 'none'], [2, '16']] as const) {
  const what = room === 'none' ? 'no thread limit' : 'room for 16 more threads (RLIMIT_NPROC)'
  test(`without futex_waitv, 150 pending async waits with ${what} use at most ${room === 'none' ? 64 : 16} threads and all complete`, async (t) => {
    if (!linux || !root) return t.pass('needs Linux and root of the initial user namespace: runs a child as another uid under RLIMIT_NPROC (setpriv, prlimit)')
    const r = await runThreadLimited(slot, ['many', room], { ...process.env, SHMUTILS_NO_FUTEX_WAITV: '1' })
    t.is(r.signal, null, `the child was killed (an abort is SIGABRT): ${r.stderr}`)
    t.is(r.status, 0, r.stderr)
    const got = JSON.parse(r.stdout) as { added: number; woken: number; wakeMs: number; aborted: string }
    t.log(`${got.added} waiter threads; the last of 150 waits woke ${got.wakeMs.toFixed(1)} ms after the set`)
    t.true(got.added <= (room === 'none' ? 64 : 16), `${got.added} threads added`)
    t.is(got.woken, 150, 'every wait saw the set')
    t.is(got.aborted, 'AbortError', 'a wait sharing a thread can still be aborted')
  })
}

for (const refused of ['all', 'words'] as const) {
  const what = refused === 'all' ? 'every futex_waitv call (Docker\'s default seccomp profile)' : 'futex_waitv calls with words (the support probe passes)'
  test(`a seccomp filter answering EPERM to ${what}: async waits sleep, not spin, and complete`, async (t) => {
    if (!linux) return t.pass('seccomp and futex_waitv: Linux only')
    const exe = compileFixture(t, 'seccomp-waitv.c')
    const r = await run(exe, [refused, process.execPath, fixture('waitv-cpu.mjs')])
    if (r.status === 3) return t.pass(`no seccomp filter can be installed here: ${r.stderr.trim()}`)
    t.is(r.status, 0, r.stderr)
    const got = JSON.parse(r.stdout) as { results: boolean[]; wallMs: number; cpuMs: number }
    t.log(`${got.cpuMs.toFixed(1)} ms of CPU in ${got.wallMs.toFixed(0)} ms`)
    t.deepEqual(got.results, [false, true, false], 'the set wait woke, the others timed out')
    t.true(got.wallMs >= 290, `the timeouts ran their course: ${got.wallMs} ms`)
    // A spinning waiter thread burns most of a core (0.3-1 of the wall time, load
    // permitting); sleeping ones a few ms in all.
    t.true(got.cpuMs < 0.1 * got.wallMs, `${got.cpuMs} ms of CPU in ${got.wallMs} ms`)
  })
}

for (const [n, kind, what] of [
  [12_000, 'lock', 'acquisitions pending on a lock another thread holds'],
  [16_000, 'event', 'waits on as many Events (past what the waiter threads sleep on)'],
] as const) {
  test(`${n.toLocaleString('en')} async ${what} cost little CPU while nothing happens, and all end as they should`, async (t) => {
    // Each wait is re-checked every slice. Slices used to end wherever each wait began,
    // so the waiter threads woke thousands of times a slice, each time stepping all their
    // waits (and asking the kernel about a lock's holder again): 60-140% of a core. Waits
    // past what the threads sleep on were polled every 10 ms: 74-96%.
    const r = await run(process.execPath, [fixture('idle-waits-cpu.mjs'), String(n), kind])
    t.is(r.status, 0, r.stderr)
    const got = JSON.parse(r.stdout) as { cpuPercent: number; done: number }
    t.log(`${got.cpuPercent.toFixed(1)}% of a core while idle`)
    t.is(got.done, n)
    t.true(got.cpuPercent < 40, `${got.cpuPercent.toFixed(1)}% of a core`)
  })
}

for (const how of ['modules loaded again', 'a second copy of the package sharing its native binary'] as const) {
  test(`two instances of the package in one thread (${how}) both get their async waits settled, and each one's errors are instanceof the other's classes`, async (t) => {
    const child = forkChild(t, 'dual-instance.mjs', how === 'modules loaded again' ? [] : ['copy'])
    const got = await child.message<Record<string, unknown>>()
    // Timed out (false) each, but a3, which a set released; 'never' once for a2 on.
    // An error of one instance was not instanceof the other's ShmError/CDefError.
    t.deepEqual(got, {
      distinct: true,
      a1: false,
      b1: false,
      a2: false,
      a3: true,
      a4b4: [true, false],
      errors: { shm: [true, true, 'ENOENT', true], cdef: [true, true, true], apart: [false, false, false, false] },
    })
  })
}

test('a settle that throws (an AbortSignal of its own) does not strand the other completions of its batch', (t) => {
  // In a child: the error surfaces as an uncaught exception, which the child catches.
  const script = `
    const { MappedMemory, Semaphore } = require(${JSON.stringify(join(process.cwd(), 'dist', 'index.js'))})
    const errors = []
    process.on('uncaughtException', (e) => errors.push(e.message))
    const m = MappedMemory.anonymous({ size: 1 << 16 })
    const sem = new Semaphore(m, 0)
    const signal = new AbortController().signal
    signal.removeEventListener = () => { throw new Error('boom in removeEventListener') }
    const waits = [sem.acquireAsync({ signal }), sem.acquireAsync(), sem.acquireAsync()]
    setTimeout(() => {
      sem.release(3)
      const t0 = performance.now()
      while (performance.now() - t0 < 100); // the three complete in one batch
      Promise.all(waits).then((got) => setTimeout(() => {
        process.stdout.write(JSON.stringify({ got, value: sem.value, errors }))
        m.close()
      }, 10))
    }, 30)`
  const r = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8', timeout: 30_000, env: { ...process.env, NODE_OPTIONS: '' } })
  t.deepEqual(JSON.parse(r.stdout || '{}'), { got: [true, true, true], value: 0, errors: ['boom in removeEventListener'] }, r.stderr)
})

test('Lock counts exactly across two processes and two worker threads, sync and async', async (t) => {
  const m = rawSegment(t)
  const lock = Lock.at(m, 0)
  const peers = await Promise.all([startPeer(t, 'process'), startPeer(t, 'process'), startPeer(t, 'thread'), startPeer(t, 'thread')])
  const mine = async () => {
    const v = new DataView(m.buffer)
    for (let i = 0; i < 2000; i++) {
      await lock.acquireAsync()
      v.setUint32(64, v.getUint32(64, true) + 1, true)
      lock.release()
    }
  }
  for (const p of peers) {
    await p.request('revive', { key: 'l', handle: lock })
    await p.request('revive', { key: 'm', handle: m })
  }
  await Promise.all([...peers.map((p) => p.request('increment', { key: 'l', mem: 'm', at: 64, n: 5000 })), mine(), mine()])
  t.is(new DataView(m.buffer).getUint32(64, true), 4 * 5000 + 2 * 2000)
  t.false(lock.locked)
})

// Randomized (seeded) and bounded: async tasks of this thread take the lock every way there
// is (acquireAsync plain, with a timeout of 0 to 3 ms, with an abort after 0 to 3 ms,
// tryAcquire; an RLock also re-entered, sync and async, by the task holding it) while a
// process takes it in a loop. Holds are counted per thread in a shared "inside" word: it
// must never show two holders, an RLock's depth must always equal the levels this thread
// was told it holds, every release must succeed, and the lock ends free.
for (const cls of [Lock, RLock]) {
  test.serial(`${cls.name}: async tasks of one thread and another process never hold it at once (randomized)`, async (t) => {
    t.timeout(30_000)
    const m = rawSegment(t)
    const lock = cls.at(m, 0)
    const reentrant = lock instanceof RLock
    const inside = new Int32Array(m.buffer, 64, 1)
    const peer = await startPeer(t, 'process')
    await peer.request('revive', { key: 'l', handle: lock })
    let peerDone = false
    const peerRun = peer.request<{ violations: number }>('exclusive', { key: 'l', at: 64, n: 400, ms: 1 }).finally(() => (peerDone = true))
    const rand = seededRandom(reentrant ? 8 : 7)
    const errors: string[] = []
    const counts: Record<string, number> = {}
    let violations = 0
    let levels = 0 // RLock: the levels this thread was told it holds
    // Acquisitions started and not yet counted: a promise may have resolved (a re-entry
    // resolves at once, one level deeper) before its task counts it.
    let inFlight = 0
    const deadline = performance.now() + 4000
    const depthOk = (what: string) => {
      if (!reentrant) return
      const d = (lock as RLock).depth
      if (inFlight === 0 ? d !== levels : d < levels) errors.push(`${what}: depth ${d}, ${levels} levels held, ${inFlight} in flight`)
    }
    const enter = () => {
      if (!reentrant || levels++ === 0) {
        if (Atomics.add(inside, 0, 1) !== 0) violations++
      }
      depthOk('acquired')
    }
    const leave = () => {
      if (!reentrant || --levels === 0) {
        if (Atomics.sub(inside, 0, 1) !== 1) violations++
      }
      try {
        lock.release()
      } catch (e) {
        errors.push(`release: ${(e as ShmError).code}`)
      }
      depthOk('released')
    }
    const take = async (): Promise<boolean> => {
      const r = rand()
      const how = r < 0.35 ? 'async' : r < 0.6 ? 'timeout' : r < 0.85 ? 'abort' : 'try'
      let ok = false
      inFlight++
      try {
        // (5 s: a lock left held for ever fails the test rather than hanging it)
        if (how === 'async') ok = await lock.acquireAsync(5000)
        else if (how === 'timeout') ok = await lock.acquireAsync(Math.floor(rand() * 4))
        else if (how === 'try') ok = lock.tryAcquire()
        else {
          const ac = new AbortController()
          setTimeout(() => ac.abort(), Math.floor(rand() * 4))
          ok = await lock.acquireAsync({ signal: ac.signal }).catch((e: Error) => {
            if (e.name !== 'AbortError') throw e
            return false
          })
        }
      } catch (e) {
        errors.push(`${how}: ${(e as ShmError).code ?? e}`)
      }
      counts[`${how}:${ok}`] = (counts[`${how}:${ok}`] ?? 0) + 1
      if (!ok) inFlight--
      return ok
    }
    const task = async () => {
      while (!peerDone && performance.now() < deadline) {
        if (await take()) {
          inFlight--
          enter()
          if (reentrant && rand() < 0.5) {
            // Re-entry by the holding task: sync or async, always at once.
            inFlight++
            const again = rand() < 0.5 ? lock.acquire(1000) : await lock.acquireAsync(1000)
            inFlight--
            if (!again) errors.push('re-entry failed')
            else {
              enter()
              await new Promise(setImmediate)
              leave()
            }
          }
          if (rand() < 0.5) await new Promise(setImmediate)
          leave()
        }
        await new Promise(setImmediate)
      }
    }
    await Promise.all(Array.from({ length: 6 }, task))
    const { violations: peerViolations } = await Promise.race([peerRun, sleep(5000).then(() => ({ violations: -1 }))])
    t.deepEqual(errors.slice(0, 10), [])
    t.is(violations, 0, 'this thread never found the process inside')
    t.is(peerViolations, 0, 'the process never found this thread inside (-1: it never finished)')
    t.is(Atomics.load(inside, 0), 0)
    t.false(lock.locked, 'the lock ends free')
    t.true(lock.acquire(0))
    lock.release()
    t.is(counts['async:false'] ?? 0, 0, 'no plain acquireAsync waited 5 s')
    for (const how of ['async', 'timeout', 'abort', 'try']) t.true((counts[`${how}:true`] ?? 0) > 0, `${how} acquired at times (${JSON.stringify(counts)})`)
    t.log(JSON.stringify(counts))
  })
}
