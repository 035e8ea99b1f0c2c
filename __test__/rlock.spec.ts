import test from 'ava'
import { Lock, RLock, revive, ShmError } from '../dist/index.js'
import { rawSegment, since, startPeer, throws, tryRacesPendingAsync } from './helpers.js'

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

test('an RLock re-entered while its acquireAsync completion is still queued counts both levels', async (t) => {
  const m = rawSegment(t)
  const r = RLock.at(m, 128)
  const peer = await startPeer(t, 'process')
  await peer.request('revive', { key: 'r', handle: r })
  await peer.request('acquire', { key: 'r' })
  const word = new Int32Array(m.buffer)
  const peerOwner = word[128 / 4] & 0x3fff_ffff
  const p = r.acquireAsync()
  peer.post('release', { key: 'r' })
  // Spin (so the completion cannot be processed) until the waiter thread took the lock
  // for this thread: the word goes from the peer's token through 0 (released, the waiter
  // not yet running: a window a loaded machine makes long) to ours.
  const t0 = performance.now()
  const owner = (): number => word[128 / 4] & 0x3fff_ffff
  while ((owner() === peerOwner || owner() === 0) && since(t0) < 5000);
  t.true(r.locked)
  t.true(r.acquire(), 're-entry: the word already names this thread')
  t.true(await p)
  t.is(r.depth, 2)
  r.release()
  t.true(r.locked)
  r.release()
  t.false(r.locked)
})

// The waiter thread takes the word for a pending acquireAsync of this thread between
// tryAcquire's check that the word is not its own and its native "is the holder dead?"
// try (a hook on that native call opens the window deterministically).
for (const how of ['tryAcquire()', 'acquireAsync({ timeout: 0 })'] as const) {
  test(`RLock.${how} is false while a pending acquireAsync of this thread takes the lock under it`, async (t) => {
    await tryRacesPendingAsync(t, RLock, how, 'thread')
  })
}
