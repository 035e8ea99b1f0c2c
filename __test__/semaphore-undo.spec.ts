// Undo semaphores (`new Semaphore(where, n, { undo: true })`): what System V's SEM_UNDO
// gives. Units taken by a thread that dies (SIGKILL, exit, worker.terminate()) are given
// back within about 50 ms of someone waiting for one; without `undo` they are lost.
import test, { type ExecutionContext } from 'ava'
import { revive, Semaphore, ShmError } from '../dist/index.js'
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
