import test from 'ava'
import { Condition, Heap, Lock, MappedMemory, RLock, revive, Semaphore, ShmError } from '../dist/index.js'
import { rawSegment, segmentName, type Peer, rejection, since, sleep, startPeer, throws } from './helpers.js'

const N = 400

for (const kind of ['process', 'thread'] as const) {
  test(`producer/consumer across ${kind === 'process' ? 'processes' : 'worker threads'}: every item consumed exactly once`, async (t) => {
    const m = rawSegment(t)
    const lock = Lock.at(m, 0)
    const cond = Condition.at(m, 32, lock)
    const [producer, syncConsumer, asyncConsumer] = await Promise.all([startPeer(t, kind), startPeer(t, kind), startPeer(t, kind)])
    for (const p of [producer, syncConsumer, asyncConsumer]) {
      t.deepEqual(await p.request('revive', { key: 'c', handle: cond }), { class: 'Condition' })
      await p.request('revive', { key: 'm', handle: m })
    }
    // One slot at offset 64: {full: u32, value: u32}. Consumers take N/4 each, this
    // thread (async) takes N/2.
    const queue = { cond: 'c', mem: 'm', at: 64 }
    const done = Promise.all([
      syncConsumer.request<{ sum: number }>('consume', { ...queue, n: N / 4 }),
      asyncConsumer.request<{ sum: number }>('consume', { ...queue, n: N / 4, async: true }),
      producer.request('produce', { ...queue, n: N }),
    ])
    const v = new DataView(m.buffer)
    let mine = 0
    for (let i = 0; i < N / 2; i++) {
      await lock.acquireAsync()
      while (v.getUint32(64, true) === 0) await cond.waitAsync()
      mine += v.getUint32(68, true)
      v.setUint32(64, 0, true)
      cond.notifyAll()
      lock.release()
    }
    const [a, b] = await done
    t.is(a.sum + b.sum + mine, (N * (N + 1)) / 2, 'the sum of 1..N: nothing lost, nothing twice')
    t.is(v.getUint32(64, true), 0)
    t.false(lock.locked)
    t.is(new Uint32Array(m.buffer)[(32 + 4) / 4], 0, 'no waiter left registered')
  })
}

test('notifyAll with 8 waiters (processes and threads, sync and async) wakes all, one lock holder at a time', async (t) => {
  const m = rawSegment(t)
  const lock = Lock.at(m, 0)
  const cond = Condition.at(m, 32, lock)
  const peers: Peer[] = await Promise.all([0, 1, 2, 3, 4, 5, 6, 7].map((i) => startPeer(t, i % 2 ? 'thread' : 'process')))
  const replies = []
  for (const [i, p] of peers.entries()) {
    await p.request('revive', { key: 'c', handle: cond })
    const flag = `registered-${i}`
    const tag = p.post('condWait', { cond: 'c', async: i >= 4, flag })
    await p.next(flag)
    replies.push(p.next<{ notified: boolean; ownerDied: boolean }>(tag))
  }
  lock.acquire()
  const i32 = new Int32Array(m.buffer)
  t.is(i32[9] & 0xffff, 8, 'eight waiters registered')
  cond.notifyAll()
  t.true(i32[0] < 0, 'the waiters were moved onto the lock word (WAITERS set), not woken into a stampede')
  // A waiter the requeue woke may already have consumed its signal (and unregistered):
  // what must hold is that every waiter still registered has a signal waiting for it.
  const counts = Atomics.load(i32, 9)
  t.is(counts >>> 16, counts & 0xffff, 'a signal granted to every waiter')
  await sleep(50)
  t.true(lock.locked, 'woken waiters wait for the notifier to release the lock')
  lock.release()
  const results = await Promise.all(replies)
  t.deepEqual(results.map((r) => r.notified), Array(8).fill(true))
  t.true(results.every((r) => !r.ownerDied))
  t.is(i32[9], 0, 'all signals consumed, all waiters gone')
  t.false(lock.locked)
})

test('notify(1) wakes exactly one of three waiters; the others time out holding the lock again', async (t) => {
  const m = rawSegment(t)
  const lock = Lock.at(m, 0)
  const cond = Condition.at(m, 32, lock)
  const peers = await Promise.all([startPeer(t, 'thread'), startPeer(t, 'thread'), startPeer(t, 'process')])
  const replies = []
  for (const [i, p] of peers.entries()) {
    await p.request('revive', { key: 'c', handle: cond })
    const tag = p.post('condWait', { cond: 'c', timeout: 1000, async: i === 1, flag: `r${i}` })
    await p.next(`r${i}`)
    replies.push(p.next<{ notified: boolean }>(tag))
  }
  lock.acquire()
  cond.notify(1)
  cond.notify(0)
  lock.release()
  const results = await Promise.all(replies)
  t.deepEqual(results.map((r) => r.notified).sort(), [false, false, true])
})

test('wait releases every level of an RLock and restores them, also on timeout', async (t) => {
  const m = rawSegment(t)
  const r = RLock.at(m, 0)
  const cond = Condition.at(m, 32, r)
  r.acquire()
  r.acquire()
  r.acquire()
  const peer = await startPeer(t, 'thread')
  await peer.request('revive', { key: 'c', handle: cond })
  const t0 = performance.now()
  t.false(cond.wait(60))
  t.true(since(t0) >= 55)
  t.is(r.depth, 3)
  // While we wait, the lock is free for others: the peer takes it and notifies.
  const w = cond.waitAsync({ timeout: 5000 })
  t.is(r.depth, 0)
  t.false(r.locked)
  await peer.request('revive', { key: 'l', handle: r })
  t.deepEqual(await peer.request('acquire', { key: 'l' }), { ok: true, ownerDied: false, depth: 1 })
  await peer.request('notify', { cond: 'c', n: 1 })
  await peer.request('release', { key: 'l' })
  t.true(await w)
  t.is(r.depth, 3)
  r.release()
  r.release()
  r.release()
})

for (const mode of ['sync', 'async'] as const) {
  test(`a waiter whose notifier dies holding the lock re-acquires it with ownerDied (${mode} wait)`, async (t) => {
    const m = rawSegment(t)
    const lock = Lock.at(m, 0)
    const cond = Condition.at(m, 32, lock)
    const [waiter, notifier] = await Promise.all([startPeer(t, 'thread'), startPeer(t, 'process')])
    await waiter.request('revive', { key: 'c', handle: cond })
    await notifier.request('revive', { key: 'c', handle: cond })
    await notifier.request('revive', { key: 'l', handle: lock })
    const tag = waiter.post('condWait', { cond: 'c', async: mode === 'async', flag: 'in' })
    await waiter.next('in')
    await notifier.request('acquire', { key: 'l' })
    await notifier.request('notify', { cond: 'c', all: true })
    await sleep(20)
    await notifier.kill()
    const killedAt = Date.now()
    const r = await waiter.next<{ notified: boolean; ownerDied: boolean; at: number }>(tag)
    t.true(r.notified)
    t.true(r.ownerDied, 'the wait reports that the lock was taken over from a dead holder')
    t.true(r.at - killedAt < 250, `re-acquired ${r.at - killedAt} ms after the holder died`)
    t.false(lock.locked, 'the waiter marked it consistent and released it')
  })
}

test('waitAsync in this thread: holder dies while we wait for the notification', async (t) => {
  const m = rawSegment(t)
  const lock = Lock.at(m, 0)
  const cond = Condition.at(m, 32, lock)
  const notifier = await startPeer(t, 'thread')
  await notifier.request('revive', { key: 'c', handle: cond })
  await notifier.request('revive', { key: 'l', handle: lock })
  lock.acquire()
  const w = cond.waitAsync()
  await notifier.request('acquire', { key: 'l' })
  await notifier.request('notify', { cond: 'c', n: 1 })
  await notifier.kill()
  const t0 = performance.now()
  t.true(await w)
  t.true(since(t0) < 250)
  t.true(lock.ownerDied)
  lock.markConsistent()
  lock.release()
})

for (const Kind of [Lock, RLock]) {
  test(`a ${Kind.name} and its Condition revived side by side (two objects of one record): a wait that takes the lock over from a dead holder shows ownerDied on both, and the repair through either keeps the lock recoverable`, async (t) => {
    const m = rawSegment(t)
    const original = { lock: Kind.at(m, 0), cond: Condition.at(m, 64, Kind.at(m, 0)) }
    // As a process receiving them by handle has them (examples/condition-semaphore.js).
    const { lock, cond } = revive<{ lock: Lock; cond: Condition }>(JSON.parse(JSON.stringify(original)))
    t.not(cond.lock, lock)
    const holder = await startPeer(t, 'process')
    await holder.request('revive', { key: 'l', handle: lock })
    await holder.request('revive', { key: 'c', handle: cond })
    lock.acquire()
    // No deadline to race: the holder takes the lock the wait gave up, notifies holding
    // it, and dies holding it (the wait once timed out first under emulation, took the
    // lock, and left the holder's unbounded acquire blocked: a hang, now a failure).
    const w = cond.waitAsync({ timeout: 60_000 })
    t.like(await holder.request('acquire', { key: 'l', timeout: 30_000 }), { ok: true, ownerDied: false })
    await holder.request('notify', { cond: 'c', n: 1 })
    await holder.kill()
    t.true(await w, 'notified, then took the dead holder\'s lock over')
    t.true(cond.lock.ownerDied)
    t.true(lock.ownerDied, 'the lock revived beside it says so too')
    lock.markConsistent()
    t.false(cond.lock.ownerDied)
    t.false(lock.ownerDied)
    lock.release()
    t.true(original.lock.acquire({ timeout: 1000 }), 'released normally: not ERR_SHM_NOT_RECOVERABLE')
    t.false(original.lock.ownerDied)
    original.lock.release()
  })
}

test('wait and notify need the lock held by this thread', async (t) => {
  const m = rawSegment(t)
  const lock = Lock.at(m, 0)
  const cond = Condition.at(m, 32, lock)
  throws(t, () => cond.wait(10), { instanceOf: ShmError, code: 'ERR_SHM_NOT_OWNER' })
  throws(t, () => cond.notify(), { instanceOf: ShmError, code: 'ERR_SHM_NOT_OWNER' })
  throws(t, () => cond.notifyAll(), { code: 'ERR_SHM_NOT_OWNER' })
  await t.throwsAsync(cond.waitAsync(), { code: 'ERR_SHM_NOT_OWNER' })
  lock.acquire()
  cond.notify(3) // nobody waits: nothing happens
  t.is(new Uint32Array(m.buffer)[9], 0)
  lock.release()
})

test('handles: a Condition revives with its lock (of the right class)', async (t) => {
  const m = rawSegment(t)
  const cond = Condition.at(m, 32, RLock.at(m, 0))
  const h = JSON.parse(JSON.stringify(cond))
  t.is(h.$shmutils, 'Condition')
  t.is(h.lock.$shmutils, 'RLock')
  const again = revive<Condition>(h)
  t.true(again instanceof Condition)
  t.true(again.lock instanceof RLock)
  t.is(again.offset, 32)
  t.is(again.lock.offset, 0)
  const peer = await startPeer(t, 'process')
  t.deepEqual(await peer.request('revive', { key: 'c', handle: cond }), { class: 'Condition' })
})

test('new Condition(lock) allocates its record in the lock\'s heap', (t) => {
  const mem = MappedMemory.create(segmentName(t, 'cond-heap'), { size: 1 << 16 })
  t.teardown(() => mem.close())
  t.throws(() => new Condition(Lock.at(rawSegment(t), 0)), { instanceOf: TypeError, message: /fixed offset of a raw mapping: use Condition\.at/ }, 'a raw mapping has no heap')
  // A lock made in a heap of a raw mapping (Heap.create): the condition goes in that heap
  // (it asked the raw mapping for a heap, and said to use Heap.create, which was done).
  const raw = rawSegment(t)
  const own = Heap.create(raw, { offset: 4096 })
  const ownLock = new Lock(own)
  const ownCond = new Condition(ownLock)
  t.is(ownCond.memory, raw)
  t.is(own.stats().allocations, 2)
  ownLock.acquire()
  t.false(ownCond.wait(5))
  ownLock.release()
  const before = mem.heap.stats().allocations
  const lock = new Lock(mem)
  const cond = new Condition(lock)
  t.is(cond.memory, mem)
  t.is(cond.offset % 64, 0, 'a cache line of its own')
  t.is(mem.heap.stats().allocations, before + 2)
  lock.acquire()
  t.false(cond.wait(5))
  lock.release()
})

test('bad arguments throw TypeError/RangeError naming them', (t) => {
  const m = rawSegment(t)
  const lock = Lock.at(m, 0)
  const cond = Condition.at(m, 32, lock)
  lock.acquire()
  throws(t, () => cond.notify(-1), { instanceOf: RangeError, message: /"n"/ })
  throws(t, () => cond.notify(1.5), { instanceOf: RangeError, message: /"n"/ })
  throws(t, () => cond.notify('1' as unknown as number), { instanceOf: TypeError, message: /"n"/ })
  throws(t, () => cond.wait(-1), { instanceOf: RangeError, message: /"timeout"/ })
  throws(t, () => cond.wait('x' as unknown as number), { instanceOf: TypeError, message: /"timeout"/ })
  lock.release()
  throws(t, () => new Condition({} as Lock), { instanceOf: TypeError, message: /"lock"/ })
  throws(t, () => Condition.at(m, 2, lock), { instanceOf: RangeError, message: /"offset"/ })
  throws(t, () => Condition.at(m, m.size - 16, lock), { instanceOf: RangeError, message: /"offset"/ })
  throws(t, () => Condition.at(m, 64, null as unknown as Lock), { instanceOf: TypeError, message: /"lock"/ })
  void rejection
})

test('every wait takes its timeout as a number or as { timeout }', async (t) => {
  const m = rawSegment(t)
  const lock = Lock.at(m, 0)
  const cond = Condition.at(m, 32, lock)
  const sem = Semaphore.at(m, 64, 0)
  const peer = await startPeer(t, 'process')
  await peer.request('revive', { key: 'l', handle: lock })
  await peer.request('acquire', { key: 'l' })
  // Held by another process: both forms time out (false), sync and async.
  for (const timeout of [20, { timeout: 20 }]) {
    t.false(lock.acquire(timeout))
    t.false(await lock.acquireAsync(timeout))
    t.false(sem.acquire(timeout))
    t.false(await sem.acquireAsync(timeout))
  }
  await peer.request('release', { key: 'l' })
  lock.acquire()
  for (const timeout of [20, { timeout: 20 }]) {
    const t0 = performance.now()
    t.false(cond.wait(timeout), 'nobody notifies')
    t.true(since(t0) >= 15, 'it waited')
    t.false(await cond.waitAsync(timeout))
  }
  lock.release()
})
