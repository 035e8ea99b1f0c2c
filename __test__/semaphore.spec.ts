import test from 'ava'
import { MappedMemory, revive, Semaphore, SEMAPHORE_MAX } from '../dist/index.js'
import { rawSegment, segmentName, since, startPeer, throws } from './helpers.js'

test('value, tryAcquire, acquire with timeout, release(n)', (t) => {
  const m = rawSegment(t)
  const s = Semaphore.at(m, 0, 2)
  t.is(s.value, 2)
  t.true(s.tryAcquire())
  t.true(s.acquire())
  t.is(s.value, 0)
  t.false(s.tryAcquire())
  t.false(s.acquire({ timeout: 0 }))
  const t0 = performance.now()
  t.false(s.acquire({ timeout: 50 }))
  t.true(since(t0) >= 45)
  s.release()
  s.release(3)
  t.is(s.value, 4)
  t.is(Semaphore.at(m, 0).value, 4, 'at() without initial leaves the count alone')
  t.is(Semaphore.at(m, 0, 1).value, 1, 'at() with initial sets it')
  s.release(SEMAPHORE_MAX - 1)
  t.is(s.value, SEMAPHORE_MAX)
  throws(t, () => s.release(), { instanceOf: RangeError, message: /"n"/ })
  t.is(s.value, SEMAPHORE_MAX, 'a refused release changes nothing')
})

for (const kind of ['process', 'thread'] as const) {
  test(`units are counted exactly across ${kind === 'process' ? 'processes' : 'worker threads'}, sync and async`, async (t) => {
    const m = rawSegment(t)
    const s = Semaphore.at(m, 64, 0)
    const peers = await Promise.all([startPeer(t, kind), startPeer(t, kind), startPeer(t, kind)])
    for (const p of peers) t.deepEqual(await p.request('revive', { key: 's', handle: s }), { class: 'Semaphore' })
    const takes = peers.map((p, i) => p.request<{ got: number }>('semTake', { key: 's', n: 300, async: i === 1 }))
    let mine = 0
    const myTakes = (async () => {
      for (let i = 0; i < 100; i++) if (await s.acquireAsync()) mine++
    })()
    // Units trickle in from this thread and from another peer.
    const giver = await startPeer(t, kind)
    await giver.request('revive', { key: 's', handle: s })
    for (let i = 0; i < 50; i++) {
      s.release(10)
      await giver.request('semRelease', { key: 's', n: 10 })
    }
    const got = await Promise.all(takes)
    await myTakes
    t.deepEqual(got, [{ got: 300 }, { got: 300 }, { got: 300 }])
    t.is(mine, 100)
    t.is(s.value, 0)
  })
}

test('a unit released while many wait wakes them in turn; timeouts give up', async (t) => {
  const m = rawSegment(t)
  const s = Semaphore.at(m, 0, 0)
  // Generous: without futex_waitv each wait starts a thread, slow under emulation.
  const waits = Array.from({ length: 50 }, () => s.acquireAsync({ timeout: 30_000 }))
  const late = s.acquireAsync({ timeout: 30 })
  t.false(await late)
  for (let i = 0; i < 5; i++) s.release(10)
  t.deepEqual(await Promise.all(waits), Array(50).fill(true))
  t.is(s.value, 0)
})

test('handles revive to a Semaphore; new Semaphore allocates in the heap', (t) => {
  const m = rawSegment(t)
  const s = Semaphore.at(m, 96, 7)
  const again = revive<Semaphore>(JSON.parse(JSON.stringify(s)))
  t.true(again instanceof Semaphore)
  t.is(again.value, 7)
  t.throws(() => new Semaphore(m, 1), { instanceOf: TypeError, message: /heap/ }, 'a raw mapping has no heap')
  const mem = MappedMemory.create(segmentName(t, 'sem-heap'), { size: 1 << 16 })
  t.teardown(() => mem.close())
  const fresh = new Semaphore(mem, 5)
  t.is(fresh.offset % 64, 0)
  t.is(fresh.value, 5)
  const inHeap = new Semaphore(mem.heap, 2)
  t.is(inHeap.value, 2)
})

test('bad arguments throw TypeError/RangeError naming them', (t) => {
  const m = rawSegment(t)
  throws(t, () => Semaphore.at(m, 0, -1), { instanceOf: RangeError, message: /"initial"/ })
  throws(t, () => Semaphore.at(m, 0, 1.5), { instanceOf: RangeError, message: /"initial"/ })
  throws(t, () => Semaphore.at(m, 0, SEMAPHORE_MAX + 1), { instanceOf: RangeError, message: /"initial"/ })
  throws(t, () => Semaphore.at(m, 0, '1' as unknown as number), { instanceOf: TypeError, message: /"initial"/ })
  throws(t, () => new Semaphore(m, -1), { instanceOf: RangeError, message: /"initial"/ })
  throws(t, () => Semaphore.at(m, 6), { instanceOf: RangeError, message: /"offset"/ })
  throws(t, () => Semaphore.at({} as never, 0), { instanceOf: TypeError, message: /"memory"/ })
  const s = Semaphore.at(m, 0, 0)
  throws(t, () => s.release(0), { instanceOf: RangeError, message: /"n"/ })
  throws(t, () => s.release(-1), { instanceOf: RangeError, message: /"n"/ })
  throws(t, () => s.release(1.5), { instanceOf: RangeError, message: /"n"/ })
  throws(t, () => s.release('2' as unknown as number), { instanceOf: TypeError, message: /"n"/ })
  throws(t, () => s.acquire({ timeout: -1 }), { instanceOf: RangeError, message: /"timeout"/ })
  t.is(s.value, 0)
})
