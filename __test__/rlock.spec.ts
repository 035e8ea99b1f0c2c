import test from 'ava'
import { Lock, RLock, revive, ShmError } from '../dist/index.js'
import { rawSegment, since, sleep, startPeer, throws, tryRacesPendingAsync } from './helpers.js'

test('RLock re-enters per thread, counts depth in the record, refuses over-release', (t) => {
  const m = rawSegment(t)
  const r = RLock.at(m, 0)
  t.true(r instanceof Lock)
  t.is(r.depth, 0)
  t.true(r.acquire())
  t.true(r.acquire())
  t.true(r.tryAcquire())
  t.true(r.acquire({ timeout: 0 }))
  t.is(r.depth, 4)
  t.is(new Uint32Array(m.buffer)[1], 4, 'the depth lives in the record\'s count field')
  r.release()
  r.release()
  r.release()
  t.true(r.locked, 'still held at depth 1')
  t.is(r.depth, 1)
  r.release()
  t.false(r.locked)
  t.is(r.depth, 0)
  throws(t, () => r.release(), { instanceOf: ShmError, code: 'ERR_SHM_NOT_OWNER' }, 'more releases than acquires')
  const v = r.withLock(() => r.withLock(() => r.depth))
  t.is(v, 2)
  t.false(r.locked)
  {
    using _a = r.hold()
    using _b = r.hold()
    t.is(r.depth, 2)
  }
  t.false(r.locked)
})

test('RLock acquireAsync re-enters at once; handles revive to RLock', async (t) => {
  const m = rawSegment(t)
  const r = RLock.at(m, 32)
  t.true(await r.acquireAsync())
  t.true(await r.acquireAsync({ timeout: 10 }))
  t.is(r.depth, 2)
  await r.withLockAsync(async () => t.is(r.depth, 3))
  r.release()
  r.release()
  t.false(r.locked)
  const h = JSON.parse(JSON.stringify(r))
  t.is(h.$shmutils, 'RLock')
  const again = revive<RLock>(h)
  t.true(again instanceof RLock)
  t.is(again.offset, 32)
})

for (const kind of ['process', 'thread'] as const) {
  test(`RLock across a ${kind}: held at depth 3 there, not releasable here, then handed over`, async (t) => {
    const m = rawSegment(t)
    const r = RLock.at(m, 64)
    const peer = await startPeer(t, kind)
    t.deepEqual(await peer.request('revive', { key: 'r', handle: r }), { class: 'RLock' })
    for (let d = 1; d <= 3; d++) t.deepEqual(await peer.request('acquire', { key: 'r' }), { ok: true, ownerDied: false, depth: d })
    t.true(r.locked)
    t.is(r.depth, 0, 'held by the peer, not by this thread')
    throws(t, () => r.release(), { code: 'ERR_SHM_NOT_OWNER' })
    t.false(r.tryAcquire())
    t.false(r.acquire({ timeout: 30 }))
    const waiting = r.acquireAsync()
    await peer.request('release', { key: 'r' })
    await peer.request('release', { key: 'r' })
    t.true(r.locked, 'one level left')
    await peer.request('release', { key: 'r' })
    t.true(await waiting)
    t.is(r.depth, 1)
    t.false(r.ownerDied)
    t.deepEqual(await peer.request('release', { key: 'r' }), { error: 'the lock is not held by this thread', code: 'ERR_SHM_NOT_OWNER', name: 'ShmError' })
    r.release()
  })

  test(`RLock held at depth 3 by a ${kind} that dies: recovered at depth 1 with ownerDied`, async (t) => {
    const m = rawSegment(t)
    const r = RLock.at(m, 96)
    const peer = await startPeer(t, kind)
    await peer.request('revive', { key: 'r', handle: r })
    for (let d = 1; d <= 3; d++) await peer.request('acquire', { key: 'r' })
    const pending = r.acquireAsync({ timeout: 5000 })
    await peer.kill()
    const t0 = performance.now()
    t.true(await pending)
    t.true(since(t0) < 250, `recovered in ${since(t0).toFixed(0)} ms`)
    t.true(r.ownerDied)
    t.is(r.depth, 1, 'the dead holder\'s depth is gone')
    t.true(r.acquire())
    t.is(r.depth, 2)
    r.release()
    r.markConsistent()
    r.release()
    t.false(r.locked)
    t.true(r.acquire())
    t.false(r.ownerDied)
    r.release()
  })
}

// A waiter thread takes the lock word for this thread's pending acquireAsync (task A)
// before the completion reaches JavaScript. Until then no task of this thread holds the
// lock (depth 0): another task (B) must not re-enter it, or B's release would free the
// word A is about to be told it holds (and A's level land on whoever holds it next).
for (const [kind, via] of [['process', 'the same object'], ['thread', 'another object of the same record']] as const) {
  test(`an RLock taken for a pending acquireAsync of this thread is not re-entered before it is delivered (${kind} peer, ${via})`, async (t) => {
    const m = rawSegment(t)
    const r = RLock.at(m, 128)
    const other = via === 'the same object' ? r : revive<RLock>(JSON.parse(JSON.stringify(r)))
    const peer = await startPeer(t, kind)
    await peer.request('revive', { key: 'r', handle: r })
    await peer.request('acquire', { key: 'r' })
    const word = new Int32Array(m.buffer)
    const peerOwner = word[128 / 4]! & 0x3fff_ffff
    const a = r.acquireAsync() // task A
    peer.post('release', { key: 'r' })
    // Spin (so the completion cannot be delivered) until the waiter thread took the lock
    // for this thread: the word goes from the peer's token through 0 (released, the waiter
    // not yet running: a window a loaded machine makes long) to ours.
    const t0 = performance.now()
    const owner = (): number => word[128 / 4]! & 0x3fff_ffff
    while ((owner() === peerOwner || owner() === 0) && since(t0) < 5000);
    t.true(r.locked)
    t.not(owner(), peerOwner)
    // Still undelivered: no task holds it, nothing re-enters or releases it.
    t.is(other.depth, 0)
    t.false(other.tryAcquire(), 'a try fails')
    throws(t, () => other.acquire(), { instanceOf: ShmError, code: 'ERR_SHM_DEADLOCK' }, 'a blocking acquire would wait for ever')
    throws(t, () => other.acquire({ timeout: 10 }), { instanceOf: ShmError, code: 'ERR_SHM_DEADLOCK' })
    throws(t, () => other.release(), { instanceOf: ShmError, code: 'ERR_SHM_NOT_OWNER' }, 'no level to release')
    t.false(await other.acquireAsync({ timeout: 0 }))
    let bSettled = false
    const b = other.acquireAsync().then((ok) => ((bSettled = true), ok)) // task B: queues behind A
    t.is(other.depth, 0, 'task B did not re-enter')
    t.is(word[128 / 4 + 1], 0)
    t.true(await a)
    t.is(r.depth, 1, 'task A holds it once')
    t.is(other.depth, 1)
    await sleep(30)
    t.false(bSettled, 'task B waits for task A\'s release')
    t.false((await peer.request('acquire', { key: 'r', timeout: 20 })).ok, 'the peer cannot take it while task A holds it')
    // Re-entry now counts: the thread holds it.
    t.true(other.acquire())
    t.is(r.depth, 2)
    other.release()
    r.release() // task A done: B gets it
    t.true(await b)
    t.is(other.depth, 1)
    t.false((await peer.request('acquire', { key: 'r', timeout: 20 })).ok, 'nor while task B holds it')
    other.release()
    t.false(r.locked)
    t.is(word[128 / 4 + 1], 0)
    t.deepEqual(await peer.request('acquire', { key: 'r', timeout: 1000 }), { ok: true, ownerDied: false, depth: 1 })
    await peer.request('release', { key: 'r' })
    t.false(r.locked, 'the lock ends free')
    t.true(r.acquire(0))
    t.false(r.ownerDied)
    r.release()
  })
}

// The waiter thread takes the word for a pending acquireAsync of this thread between
// tryAcquire's check that the word is not its own and its native "is the holder dead?"
// try (a hook on that native call opens the window deterministically).
for (const how of ['tryAcquire()', 'acquireAsync({ timeout: 0 })'] as const) {
  test(`RLock.${how} is false while a pending acquireAsync of this thread takes the lock under it`, async (t) => {
    await tryRacesPendingAsync(t, RLock, how, 'thread')
  })
}
