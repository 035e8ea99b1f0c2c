// Undo semaphores (`new Semaphore(where, n, { undo: true })`): what System V's SEM_UNDO
// gives. Units taken by a thread that dies (SIGKILL, exit, worker.terminate()) are given
// back within about 50 ms of someone waiting for one; without `undo` they are lost.
import test, { type ExecutionContext } from 'ava'
import { Lock, revive, Semaphore, ShmError } from '../dist/index.js'
import { endPeer, managedSegment, rejection, since, sleep, startPeer, throws } from './helpers.js'

const segment = (t: ExecutionContext) => managedSegment(t, 'undo', 1 << 16)

const deaths = [
  ['a process killed with SIGKILL', 'process', 'kill'],
  ['a process exiting', 'process', 'exit'],
  ['a worker thread terminated', 'thread', 'kill'],
] as const

for (const [what, kind, how] of deaths) {
  test.serial(`units taken by ${what} are given back within 250 ms (blocking and async takers); without undo they are lost`, async (t) => {
    const m = segment(t)
    for (const undo of [true, false]) {
      const s = new Semaphore(m, 3, { undo })
      t.is(s.undo, undo)
      const taker = await startPeer(t, kind)
      await taker.request('revive', { key: 's', handle: s })
      t.deepEqual(await taker.request('semTake', { key: 's', n: 2 }), { got: 2 })
      if (undo) t.deepEqual(await taker.request('semHeld', { key: 's' }), { held: 2, undo: true })
      t.true(s.tryAcquire())
      t.is(s.value, 0)
      const waiting = s.acquireAsync({ timeout: 1000 })
      await sleep(20)
      await endPeer(taker, how)
      const t0 = performance.now()
      if (!undo) {
        t.false(await waiting, 'a plain semaphore loses the dead taker\'s units')
        t.false(s.acquire({ timeout: 100 }))
        t.is(s.value, 0)
        s.release()
        continue
      }
      t.true(await waiting)
      t.true(s.acquire({ timeout: 1000 }))
      const ms = since(t0)
      t.log(`${what}: both units back ${ms.toFixed(0)} ms after the death`)
      t.true(ms < 250, `${ms.toFixed(0)} ms`)
      t.is(s.held, 3)
      t.is(s.value, 0)
      s.release(3)
      t.is(s.held, 0)
      t.is(s.value, 3)
    }
  })
}

test.serial('undo: a thread\'s release pays back what it holds; a release by a thread holding none is plain', async (t) => {
  const m = segment(t)
  const s = new Semaphore(m, 2, { undo: true })
  t.true(s.acquire())
  t.is(s.held, 1)
  s.release(2) // pays back 1, adds 1
  t.is(s.held, 0)
  t.is(s.value, 3)
  const peer = await startPeer(t, 'process')
  await peer.request('revive', { key: 's', handle: s })
  t.deepEqual(await peer.request('semHeld', { key: 's' }), { held: 0, undo: true }, 'handles revive an undo semaphore')
  await peer.request('semRelease', { key: 's', n: 1 })
  t.is(s.value, 4)
  await peer.kill()
  t.true(s.acquire({ timeout: 100 }))
  t.is(s.value, 3, 'the dead releaser held nothing: nothing given back twice')
  throws(t, () => s.release(0x7fff_ffff), { instanceOf: RangeError })
  t.is(Semaphore.at(m, s.offset).undo, true, 'at() recognises it')
})

test.serial('undo: every holder slot taken by a live thread makes the next taker fail with EAGAIN', async (t) => {
  const m = segment(t)
  const s = new Semaphore(m, 5, { undo: true, holders: 1 })
  t.true(s.tryAcquire())
  const peer = await startPeer(t, 'process')
  await peer.request('revive', { key: 's', handle: s })
  t.like(await peer.request('semTake', { key: 's', n: 1 }), { code: 'EAGAIN' })
  t.like(await peer.request('semTake', { key: 's', n: 1, async: true }), { code: 'EAGAIN' })
  s.release()
  t.deepEqual(await peer.request('semTake', { key: 's', n: 1 }), { got: 1 }, 'a slot freed by paying back is free again')
  const e = await rejection(s.acquireAsync())
  t.true(e instanceof ShmError)
  t.is(e.code, 'EAGAIN')
  throws(t, () => new Semaphore(m, 1, { undo: true, holders: 0 }), { instanceOf: RangeError })
  throws(t, () => new Semaphore(m, 1, { undo: 'yes' as unknown as boolean }), { instanceOf: TypeError })
  throws(t, () => new Semaphore(m, 1, { holders: 4 }), { instanceOf: TypeError, message: /undo/ })
})

test.serial('undo: units are counted exactly across two processes and a worker thread', async (t) => {
  const m = segment(t)
  const s = new Semaphore(m, 1, { undo: true })
  const peers = await Promise.all([startPeer(t, 'process'), startPeer(t, 'process'), startPeer(t, 'thread')])
  for (const p of peers) await p.request('revive', { key: 's', handle: s })
  const runs = peers.map((p) => p.request('semCycle', { key: 's', n: 2000 }))
  for (let i = 0; i < 500; i++) {
    t.true(await s.acquireAsync())
    s.release()
  }
  t.deepEqual(await Promise.all(runs), [{ held: 0 }, { held: 0 }, { held: 0 }])
  t.is(s.value, 1)
  t.is(s.held, 0)
  t.is(revive<Semaphore>(JSON.parse(JSON.stringify(s))).undo, true)
})

test.serial('undo: a live peer that keeps the table\'s guard makes tryAcquire false at once and acquire/acquireAsync false at their timeout, without blocking the event loop; a dead one\'s guard is taken over', async (t) => {
  const m = segment(t)
  const s = new Semaphore(m, 3, { undo: true, holders: 8 })
  const guard = Lock.at(m, s.offset + 32) // FORMAT.md §6.10: the guard follows the record
  const peer = await startPeer(t, 'process')
  await peer.request('revive', { key: 'g', handle: guard })
  t.like(await peer.request('acquire', { key: 'g' }), { ok: true })
  const timed = async (what: string, fn: () => boolean | Promise<boolean>, min: number, max: number) => {
    let ticks = 0
    const iv = setInterval(() => ticks++, 20)
    const t0 = performance.now()
    let r: boolean | string
    try {
      r = await fn()
    } catch (e) {
      r = `threw ${(e as { code?: string }).code}`
    }
    const ms = since(t0)
    clearInterval(iv)
    t.log(`${what}: ${String(r)} after ${ms.toFixed(0)} ms, ${ticks} ticks of a 20 ms timer`)
    t.is(r, false, what)
    t.true(ms >= min && ms < max, `${what}: ${ms.toFixed(0)} ms`)
    return ticks
  }
  await timed('tryAcquire()', () => s.tryAcquire(), 0, 100)
  await timed('acquire({ timeout: 0 })', () => s.acquire({ timeout: 0 }), 0, 100)
  await timed('acquire({ timeout: 300 })', () => s.acquire({ timeout: 300 }), 280, 2000)
  const ticks = await timed('acquireAsync({ timeout: 300 })', () => s.acquireAsync({ timeout: 300 }), 280, 2000)
  // At least the first tick, due long before the timeout, whatever the load (libuv runs
  // due timers before the completions it polls); a wait blocking the loop would run none.
  t.true(ticks >= 1, `the event loop ran meanwhile (${ticks} ticks)`)
  t.is(s.value, 3)
  // Let go: everything works again; then the holder dies holding it.
  await peer.request('release', { key: 'g' })
  t.true(s.tryAcquire())
  t.true(s.acquire({ timeout: 300 }))
  t.true(await s.acquireAsync({ timeout: 300 }))
  t.is(s.held, 3)
  s.release(3)
  t.like(await peer.request('acquire', { key: 'g' }), { ok: true })
  await peer.kill()
  const t0 = performance.now()
  t.true(s.tryAcquire(), 'a dead holder\'s guard is taken over by a try')
  t.true(since(t0) < 100)
  t.is(s.held, 1)
  t.is(s.value, 2)
  s.release()
  t.is(s.value, 3)
})
