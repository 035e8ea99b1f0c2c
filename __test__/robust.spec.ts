// Dead holders: a process killed with SIGKILL, a process or worker that exits holding the
// lock, a worker terminated holding it. The next acquirer (blocking or async, already
// waiting or arriving later) gets the lock within 250 ms with ownerDied set.
import { spawn } from 'node:child_process'
import { once } from 'node:events'
import test from 'ava'
import { Condition, Lock, RLock, Semaphore, ShmError } from '../dist/index.js'
import { compileFixture, endPeer, forkChild, managedSegment, rawSegment, rejection, since, sleep, startPeer, throws, timeBound } from './helpers.js'

const deaths = [
  ['process killed with SIGKILL', 'process', 'kill'],
  ['process exiting', 'process', 'exit'],
  ['worker thread terminated', 'thread', 'kill'],
  ['worker thread exiting', 'thread', 'exit'],
] as const

for (const [what, kind, how] of deaths) {
  test.serial(`holder = ${what}: waiters already waiting (sync in a peer, async here) recover it within 250 ms`, async (t) => {
    const m = rawSegment(t)
    const lock = Lock.at(m, 0)
    const [holder, syncWaiter] = await Promise.all([startPeer(t, kind), startPeer(t, 'process')])
    await holder.request('revive', { key: 'l', handle: lock })
    await syncWaiter.request('revive', { key: 'l', handle: lock })
    t.like(await holder.request('acquire', { key: 'l' }), { ok: true, ownerDied: false })
    const asyncWait = lock.acquireAsync({ timeout: 5000 })
    const syncWait = syncWaiter.request<{ ok: boolean; ownerDied: boolean }>('acquire', { key: 'l', timeout: 5000 })
    await sleep(30)
    await endPeer(holder, how)
    const t0 = performance.now()
    // Exactly one of the two takes it over; the other gets it after a clean handoff.
    const first = await Promise.race([asyncWait.then(() => 'here'), syncWait.then(() => 'peer')])
    t.log(`taken over by ${first === 'here' ? 'the async wait here' : 'the blocking wait in the peer'}`)
    t.true(since(t0) < timeBound(250), `recovered ${since(t0).toFixed(0)} ms after the holder died`)
    if (first === 'here') {
      t.true(lock.ownerDied)
      lock.markConsistent()
      lock.release()
      t.like(await syncWait, { ok: true, ownerDied: false })
      await syncWaiter.request('release', { key: 'l' })
    } else {
      t.like(await syncWait, { ok: true, ownerDied: true })
      await syncWaiter.request('markConsistent', { key: 'l' })
      await syncWaiter.request('release', { key: 'l' })
      t.true(await asyncWait)
      t.false(lock.ownerDied)
      lock.release()
    }
    t.false(lock.locked)
  })
}

test.serial('a process that can only read the segment cannot keep a dead holder looking alive (its read locks on the token\'s byte do not stop the recovery), and read locks over every free token make a new thread\'s claim an EAGAIN that says so (a C reader holds them)', async (t) => {
  if (process.platform !== 'linux') return t.pass('OFD liveness locks: Linux only')
  const exe = compileFixture(t, 'ofd-reader.c')
  const m = managedSegment(t, 'robust')
  const lock = new Lock(m)
  /** Starts the reader on `ranges` (docs/FORMAT.md §6.3: token t is a write lock on byte 2^62 + 16 + t); resolves once it holds them. */
  const reader = async (...ranges: [bigint, bigint][]) => {
    const p = spawn(exe, [`/dev/shm${m.name}`, ...ranges.flat().map(String)], { stdio: ['pipe', 'pipe', 'pipe'] })
    t.teardown(() => p.kill('SIGKILL'))
    let err = ''
    p.stderr.on('data', (d: Buffer) => (err += d.toString()))
    const got = await Promise.race([once(p.stdout, 'data').then(([d]) => String(d).trim()), once(p, 'exit').then(([c]) => `exit ${String(c)}: ${err}`)])
    t.is(got, 'locked')
    return async () => {
      p.stdin.end()
      if (p.exitCode === null) await once(p, 'exit')
    }
  }
  const byte = (token: number) => 2n ** 62n + 16n + BigInt(token)
  const holder = await startPeer(t, 'process')
  await holder.request('revive', { key: 'l', handle: lock })
  await holder.request('acquire', { key: 'l' })
  const dead = new Int32Array(m.buffer)[lock.offset >> 2]! & 0x3fff_ffff
  await holder.kill()
  // Nobody has looked at the lock since: the reader takes the dead token's byte first.
  let stop = await reader([byte(dead), 1n])
  const t0 = performance.now()
  t.true(lock.acquire({ timeout: 3000 }), 'the dead holder\'s lock is taken over')
  t.true(since(t0) < timeBound(250), `recovered in ${since(t0).toFixed(0)} ms`)
  t.true(lock.ownerDied)
  lock.markConsistent()
  const mine = new Int32Array(m.buffer)[lock.offset >> 2]! & 0x3fff_ffff
  lock.release()
  await stop()
  // Every token byte but this thread's own (its write lock stands in the way of a reader).
  // (A length of 0 would mean "to the end of the file" to fcntl: leave such a range out.)
  stop = await reader(...([[byte(1), BigInt(mine - 1)], [byte(mine + 1), BigInt(0x3fff_fffe - mine)]] as [bigint, bigint][]).filter(([, n]) => n > 0n))
  const late = await startPeer(t, 'process')
  await late.request('revive', { key: 'l', handle: lock })
  const refused = await late.request<{ code?: string; error?: string }>('acquire', { key: 'l', timeout: 1000 })
  t.is(refused.code, 'EAGAIN')
  t.regex(refused.error ?? '', /read locks over the segment's liveness bytes/)
  await stop()
  t.like(await late.request('acquire', { key: 'l', timeout: 1000 }), { ok: true })
  await late.request('release', { key: 'l' })
})

test.serial('an acquirer arriving after the holder died recovers it within 250 ms (sync and async)', async (t) => {
  const m = rawSegment(t)
  for (const [i, mode] of ['sync', 'async'].entries()) {
    const lock = Lock.at(m, 64 * i)
    const holder = await startPeer(t, 'process')
    await holder.request('revive', { key: 'l', handle: lock })
    await holder.request('acquire', { key: 'l', async: true })
    await holder.kill()
    const t0 = performance.now()
    t.true(mode === 'sync' ? lock.acquire({ timeout: 2000 }) : await lock.acquireAsync({ timeout: 2000 }))
    t.true(since(t0) < timeBound(250), `${mode}: ${since(t0).toFixed(0)} ms`)
    t.true(lock.ownerDied)
    lock.markConsistent()
    t.false(lock.ownerDied)
    lock.release()
  }
})

test.serial('polling a dead holder\'s lock with tryAcquire, timeout 0 or a short timeout takes it over (Lock, RLock), at most a system call per 50 ms, also when the wall clock is set back', async (t) => {
  const m = rawSegment(t)
  const wallClock = Date.now
  t.teardown(() => {
    Date.now = wallClock
  })
  const polls = [
    ['tryAcquire()', (l: Lock) => l.tryAcquire()],
    ['acquire({ timeout: 0 })', (l: Lock) => l.acquire({ timeout: 0 })],
    ['acquireAsync({ timeout: 0 })', (l: Lock) => l.acquireAsync({ timeout: 0 })],
    ['acquire(10)', (l: Lock) => l.acquire(10)],
  ] as const
  let at = 0
  for (const Kind of [Lock, RLock]) {
    for (const [what, poll] of polls) {
      const lock = Kind.at(m, at)
      at += 64
      const holder = await startPeer(t, 'process')
      await holder.request('revive', { key: 'l', handle: lock })
      await holder.request('acquire', { key: 'l' })
      t.false(await poll(lock), `${Kind.name} ${what}: held by a live process`)
      // An NTP step or a resumed VM sets the wall clock back an hour.
      Date.now = () => wallClock() - 3_600_000
      await holder.kill()
      // Every 10 ms for up to 1 s: the first poll that asks (at most 50 ms after the
      // last one asked) takes the lock over.
      let got = false
      for (let i = 0; i < 100 && !got; i++) {
        got = await poll(lock)
        if (!got) await sleep(10)
      }
      Date.now = wallClock
      t.true(got, `${Kind.name} ${what}: taken over from the dead holder`)
      t.true(lock.ownerDied, `${Kind.name} ${what}: ownerDied`)
      lock.markConsistent()
      lock.release()
      t.false(lock.locked)
    }
  }
})

test('a lock taken through a mapping the holder then dropped unclosed stays held while the holder lives, after the collector took the mapping', async (t) => {
  const mem = managedSegment(t, 'gc-holder')
  const lock = new Lock(mem)
  const holder = forkChild(t, 'gc-holder.mjs', [mem.name!, String(lock.offset)])
  t.like(await holder.message(), { collected: true })
  // Asked twice, a liveness slice apart: the holder's thread lives, so its token does.
  t.false(lock.tryAcquire(), 'held by a live thread')
  t.false(lock.acquire({ timeout: 120 }), 'still held after a liveness check')
  t.false(lock.ownerDied)
  holder.proc.kill('SIGKILL')
  await holder.exited
  t.true(lock.acquire({ timeout: 2000 }), 'taken over once the holder died')
  t.true(lock.ownerDied)
  lock.markConsistent()
  lock.release()
})

test('a thread\'s locks in a segment stay its own while it has any mapping of it open: closing one of two keeps them, closing the last gives them up (also after a dropped mapping that only used the heap was collected)', async (t) => {
  const mem = managedSegment(t, 'token-life')
  const lock = new Lock(mem)
  // Taken through a, a closed, b open: still held.
  const two = forkChild(t, 'token-life.mjs', ['two', mem.name!, String(lock.offset)])
  t.like(await two.message(), { held: true })
  t.false(lock.tryAcquire(), 'held while the holder has another mapping open')
  t.false(lock.acquire({ timeout: 120 }), 'still held after a liveness check')
  two.proc.send('release')
  t.like(await two.message(), { released: true }, 'released through the other mapping')
  t.true(lock.acquire({ timeout: 1000 }))
  t.false(lock.ownerDied)
  lock.release()
  // A dropped mapping that took no lock does not pin the token: closing the last
  // mapping gives the lock up.
  const drop = forkChild(t, 'token-life.mjs', ['after-drop', mem.name!, String(lock.offset)])
  t.like(await drop.message(), { closed: true, collected: true })
  t.true(lock.acquire({ timeout: 1000 }), 'given up with the last mapping')
  t.true(lock.ownerDied)
  lock.markConsistent()
  lock.release()
})

test.serial('released without markConsistent: not recoverable for everyone, pending async waits included', async (t) => {
  const m = rawSegment(t)
  const lock = Lock.at(m, 0)
  const holder = await startPeer(t, 'thread')
  const other = await startPeer(t, 'process')
  await holder.request('revive', { key: 'l', handle: lock })
  await other.request('revive', { key: 'l', handle: lock })
  await holder.request('acquire', { key: 'l' })
  await holder.kill()
  t.true(lock.acquire({ timeout: 2000 }))
  t.true(lock.ownerDied)
  const pendingHere = lock.acquireAsync()
  const pendingThere = other.request('acquire', { key: 'l', async: true })
  await sleep(20)
  lock.release() // without markConsistent()
  const e = await rejection(pendingHere)
  t.true(e instanceof ShmError)
  t.is(e.code, 'ERR_SHM_NOT_RECOVERABLE')
  t.like(await pendingThere, { code: 'ERR_SHM_NOT_RECOVERABLE' })
  throws(t, () => lock.acquire(), { instanceOf: ShmError, code: 'ERR_SHM_NOT_RECOVERABLE' })
  throws(t, () => lock.tryAcquire(), { code: 'ERR_SHM_NOT_RECOVERABLE' })
  await t.throwsAsync(lock.acquireAsync(), { code: 'ERR_SHM_NOT_RECOVERABLE' })
  throws(t, () => lock.release(), { code: 'ERR_SHM_NOT_OWNER' })
  t.like(await other.request('acquire', { key: 'l' }), { code: 'ERR_SHM_NOT_RECOVERABLE' })
})

test.serial('a lock acquired asynchronously by a worker that is then terminated is recovered', async (t) => {
  const m = rawSegment(t)
  const lock = Lock.at(m, 0)
  lock.acquire()
  const worker = await startPeer(t, 'thread')
  await worker.request('revive', { key: 'l', handle: lock })
  // The worker waits asynchronously; we hand it the lock, then it is terminated.
  const tag = worker.post('acquire', { key: 'l', async: true })
  await sleep(20)
  lock.release()
  t.like(await worker.next(tag), { ok: true })
  await worker.kill()
  const t0 = performance.now()
  t.true(await lock.acquireAsync({ timeout: 2000 }))
  t.true(since(t0) < timeBound(250))
  t.true(lock.ownerDied)
  lock.markConsistent()
  lock.release()
})

test.serial('terminating a worker with a pending async wait drops it (the lock is not taken for a dead thread)', async (t) => {
  const m = rawSegment(t)
  const lock = Lock.at(m, 0)
  lock.acquire()
  const worker = await startPeer(t, 'thread')
  await worker.request('revive', { key: 'l', handle: lock })
  worker.post('acquire', { key: 'l', async: true })
  await sleep(30)
  await worker.kill()
  lock.release()
  await sleep(30)
  t.false(lock.locked, 'the dropped wait did not take the lock')
  t.true(lock.acquire({ timeout: 100 }))
  t.false(lock.ownerDied)
  lock.release()
})

test.serial('a worker blocked in acquire / wait / semaphore acquire can still be terminated', async (t) => {
  const m = rawSegment(t)
  const lock = Lock.at(m, 0)
  const cond = Condition.at(m, 32, Lock.at(m, 64))
  const sem = Semaphore.at(m, 96, 0)
  lock.acquire()
  for (const [op, args] of [
    ['acquire', { key: 'x' }],
    ['condWait', { cond: 'x' }],
    ['semTake', { key: 'x', n: 1 }],
  ] as const) {
    const worker = await startPeer(t, 'thread')
    const handle = op === 'acquire' ? lock : op === 'condWait' ? cond : sem
    await worker.request('revive', { key: 'x', handle })
    worker.post(op, args)
    await sleep(60)
    const t0 = performance.now()
    await worker.kill()
    t.true(since(t0) < timeBound(500), `${op}: terminated in ${since(t0).toFixed(0)} ms`)
  }
  t.is(new Uint32Array(m.buffer)[9], 0, 'the terminated condition waiter unregistered')
  t.false(cond.lock.locked)
  lock.release()
  t.true(lock.acquire({ timeout: 100 }), 'the terminated waiter left the lock usable')
  t.false(lock.ownerDied)
  lock.release()
})

test.serial('a worker being terminated as its blocking wait is woken (and handed the lock or the unit) gives back what the wait took: no ownerDied for the next acquirer, no unit lost', async (t) => {
  const m = rawSegment(t)
  const lock = Lock.at(m, 0)
  const cond = Condition.at(m, 32, Lock.at(m, 64))
  const sem = Semaphore.at(m, 96, 0)
  const word = new Int32Array(m.buffer)
  for (let round = 0; round < 4; round++) {
    // Lock: the worker sleeps in acquire(); terminated; the release wakes it (handing it
    // the lock, at most once per 4 ms); this thread takes the lock again.
    let worker = await startPeer(t, 'thread')
    await worker.request('revive', { key: 'x', handle: lock })
    lock.acquire()
    worker.post('acquire', { key: 'x', timeout: 10_000 })
    while (word[0] >= 0) await sleep(1) // WAITERS: it sleeps
    let gone = worker.kill()
    lock.release()
    t.true(lock.acquire({ timeout: 5000 }))
    t.false(lock.ownerDied, `round ${round}: the lock was only ever this thread's`)
    lock.release()
    await gone
    // Condition: the worker waits; notified (requeued onto the lock this thread holds),
    // terminated, the lock released.
    worker = await startPeer(t, 'thread')
    await worker.request('revive', { key: 'c', handle: cond })
    const registered = worker.post('condWait', { cond: 'c', timeout: 10_000, flag: `waiting${round}` })
    await worker.next(`waiting${round}`)
    await sleep(20)
    cond.lock.acquire()
    cond.notify()
    gone = worker.kill()
    cond.lock.release()
    t.true(cond.lock.acquire({ timeout: 5000 }))
    t.false(cond.lock.ownerDied, `round ${round}: the condition's lock was never held by a thread that died`)
    cond.lock.release()
    await gone
    void registered
    // Semaphore: the worker sleeps in acquire(); terminated; a unit released for it.
    worker = await startPeer(t, 'thread')
    await worker.request('revive', { key: 's', handle: sem })
    worker.post('semTake', { key: 's', n: 1, timeout: 10_000 })
    while (word[96 / 4] >= 0) await sleep(1)
    gone = worker.kill()
    sem.release()
    await gone
    t.is(sem.value, 1, `round ${round}: the unit is back`)
    t.true(sem.acquire({ timeout: 100 }))
  }
})
