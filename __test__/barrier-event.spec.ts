// Barrier and Event across processes and threads: rounds where nobody leaves before all
// arrived, arrival indices, timeouts that break the barrier for everyone, aborts; events
// that wake every waiter (blocking and async), clear, timeouts; bad input.
import test, { type ExecutionContext } from 'ava'
import { Barrier, Event, MappedMemory, ShmError } from '../dist/index.js'
import { managedSegment, primPeer, rejection, sleep, throws } from './helpers.js'

const segment = (t: ExecutionContext) => managedSegment(t, 'be')

test('Barrier: 4 processes, 20 rounds; nobody leaves a round before all arrived; indices 0..3', async (t) => {
  const mem = segment(t)
  const b = new Barrier(mem, 4)
  t.is(b.parties, 4)
  const at = mem.heap.malloc(256, 64)
  new Int32Array(mem.buffer, at, 64).fill(0)
  const peers = await Promise.all([0, 1, 2, 3].map(() => primPeer(t)))
  for (const p of peers) {
    await p.request('revive', { key: 'b', handle: b })
    await p.request('revive', { key: 'm', handle: mem })
  }
  const results = await Promise.all(peers.map((p, i) => p.request<{ indices?: number[]; early?: number }>('barrier', { key: 'b', rounds: 20, mem: 'm', at, async: i % 2 === 1, timeout: 20_000 })))
  for (const r of results) t.is(r.early, undefined)
  for (let round = 0; round < 20; round++) t.deepEqual(results.map((r) => r.indices![round]).sort(), [0, 1, 2, 3])
  t.false(b.broken)
  t.is(b.waiting, 0)
})

test('Barrier: a wait that times out breaks it for everyone (ERR_SHM_BROKEN); aborts too', async (t) => {
  const mem = segment(t)
  const b = new Barrier(mem, 3)
  const p = await primPeer(t)
  await p.request('revive', { key: 'b', handle: b })
  const other = p.request<{ code?: string }>('barrierWait', { key: 'b', timeout: 10_000 })
  await sleep(100)
  throws(t, () => b.wait({ timeout: 100 }), { instanceOf: ShmError, code: 'ETIMEDOUT' })
  t.true(b.broken)
  t.is((await other).code, 'ERR_SHM_BROKEN', 'the other waiter is released with ERR_SHM_BROKEN')
  t.is(b.waiting, 0, 'nobody waits at a broken barrier')
  throws(t, () => b.wait(), { instanceOf: ShmError, code: 'ERR_SHM_BROKEN' }, 'later waits fail at once')
  const again = Barrier.at(mem, b.offset, 1)
  t.false(again.broken, 'Barrier.at with parties re-initializes the record: not broken')
  t.false(b.broken)
  t.is(again.wait(), 0, 'and usable')

  const b2 = new Barrier(mem, 2)
  const ac = new AbortController()
  const pending = b2.waitAsync({ signal: ac.signal })
  setTimeout(() => ac.abort(), 30)
  t.is((await rejection(pending)).name, 'AbortError')
  t.true(b2.broken)
  const b3 = new Barrier(mem, 1)
  t.is(b3.wait(), 0, 'one party passes at once')
  t.is(await b3.waitAsync(), 0)
})

test('Barrier: a mapping closed under a pending waitAsync breaks the round (the other party never passes without it)', async (t) => {
  const mem = segment(t)
  const b = new Barrier(mem, 2)
  const mine = MappedMemory.open(mem.name!)
  const pending = Barrier.at(mine, b.offset).waitAsync()
  await sleep(50)
  mine.close()
  t.is((await rejection(pending)).code, 'ERR_SHM_CLOSED')
  const p = await primPeer(t)
  await p.request('revive', { key: 'b', handle: b })
  t.like(await p.request('barrierWait', { key: 'b', timeout: 2000 }), { code: 'ERR_SHM_BROKEN' }, 'it used to pass, as if this party had arrived')
})

test.serial('Barrier: a wait whose deadline passes as the last party arrives returns its index (the round completed, nothing is broken)', (t) => {
  const mem = segment(t)
  const a = new Barrier(mem, 2)
  const b = Barrier.at(mem, a.offset)
  const clock = performance.now
  t.teardown(() => {
    performance.now = clock
  })
  // A's second look at the clock is after its look at the word: the last party arrives
  // right then, and the clock says the deadline has passed.
  let looks = 0
  let last: number | undefined
  performance.now = () => {
    if (++looks !== 2) return clock.call(performance)
    performance.now = clock
    last = b.wait({ timeout: 1000 })
    return clock.call(performance) + 1e6
  }
  t.is(a.wait({ timeout: 50 }), 0)
  t.is(last, 1)
  t.false(a.broken)
  t.is(a.waiting, 0)
})

test('Barrier and Event: an abort in the same tick as the round completing (the set) loses to it: the wait succeeds', async (t) => {
  const mem = segment(t)
  const outcomes = new Map<string, number>()
  const count = (k: string): void => void outcomes.set(k, (outcomes.get(k) ?? 0) + 1)
  for (let i = 0; i < 100; i++) {
    const a = new Barrier(mem, 2)
    const ac = new AbortController()
    const p = a.waitAsync({ signal: ac.signal }).then(String, (e: Error) => e.name)
    await sleep(1)
    const other = Barrier.at(mem, a.offset).wait({ timeout: 1000 })
    ac.abort()
    count(`barrier ${await p} ${other} broken=${a.broken}`)
    const ev = new Event(mem)
    const ac2 = new AbortController()
    const q = ev.waitAsync({ signal: ac2.signal }).then(String, (e: Error) => e.name)
    await sleep(1)
    ev.set()
    ac2.abort()
    count(`event ${await q}`)
    mem.heap.free(a.offset)
    mem.heap.free(ev.offset)
  }
  t.deepEqual(Object.fromEntries(outcomes), { 'barrier 0 1 broken=false': 100, 'event true': 100 })
})

test('Event: set wakes every waiter in other processes, blocking and async; clear; timeouts', async (t) => {
  const mem = segment(t)
  const e = new Event(mem)
  t.false(e.isSet)
  t.false(e.wait({ timeout: 30 }))
  t.false(await e.waitAsync({ timeout: 30 }))
  const peers = await Promise.all([0, 1, 2].map(() => primPeer(t)))
  for (const p of peers) await p.request('revive', { key: 'e', handle: e })
  const waits = peers.map((p, i) => p.request<{ ok: boolean; ms: number }>('eventWait', { key: 'e', timeout: 10_000, async: i === 2 }))
  const word = new Int32Array(mem.buffer, e.offset, 1)
  for (const t0 = Date.now(); (Atomics.load(word, 0) & 2) === 0 && Date.now() - t0 < 10_000; ) await sleep(5)
  await sleep(200)
  e.set()
  t.true(e.isSet)
  const woke = await Promise.all(waits)
  t.true(woke.every((r) => r.ok), 'every waiter released by the set')
  t.true(woke.some((r) => r.ms >= 150), 'they were waiting for it')
  t.true(e.wait(), 'set: returns at once')
  e.clear()
  t.false(e.isSet)
  const late = peers[0].request<{ ok: boolean }>('eventWait', { key: 'e', timeout: 10_000 })
  // Until the waiter announced its sleep (bit 1 of the word), a set and clear would come
  // before its wait, which then rightly blocks.
  for (const t0 = Date.now(); (Atomics.load(word, 0) & 2) === 0 && Date.now() - t0 < 10_000; ) await sleep(5)
  e.set()
  e.clear()
  t.true((await late).ok, 'a set followed at once by a clear still releases the waiter')
  const ac = new AbortController()
  const aborted = e.waitAsync({ signal: ac.signal })
  ac.abort()
  t.is((await rejection(aborted)).name, 'AbortError')
})

test('bad input: parties, offsets, kinds, timeouts, closed mappings (also under pending waits)', async (t) => {
  const mem = segment(t)
  throws(t, () => new Barrier(mem, 0), { instanceOf: RangeError, message: /"parties"/ })
  throws(t, () => new Barrier(mem, 70_000), { instanceOf: RangeError })
  throws(t, () => new Barrier(mem, 1.5), { instanceOf: RangeError })
  throws(t, () => new Barrier(mem, '2' as unknown as number), { instanceOf: TypeError })
  throws(t, () => Event.at(mem, 3), { instanceOf: RangeError })
  const b = new Barrier(mem, 2)
  throws(t, () => Event.at(mem, b.offset), { instanceOf: TypeError, message: /not a record of kind Event/ })
  throws(t, () => new Event({} as MappedMemory), { instanceOf: TypeError, message: /"where"/ })
  const e = Event.at(mem, mem.heap.malloc(32))
  t.false(e.isSet)
  throws(t, () => b.wait({ timeout: -5 }), { instanceOf: RangeError })
  throws(t, () => e.wait(null as unknown as number), { instanceOf: TypeError, message: /"options" argument/ })
  // A timeout given as a number, as every wait takes it (these once waited forever).
  t.false(e.wait(20))
  throws(t, () => new Barrier(mem, 2).wait(20), { instanceOf: ShmError, code: 'ETIMEDOUT' })
  // Closing the mapping under pending waits: ERR_SHM_CLOSED for each (the barrier's
  // cleanup once turned it into a TypeError).
  const pending = [new Barrier(mem, 2).waitAsync(), Event.at(mem, e.offset).waitAsync()]
  mem.close()
  for (const p of pending) t.is((await rejection(p)).code, 'ERR_SHM_CLOSED')
  throws(t, () => e.set(), { instanceOf: ShmError, code: 'ERR_SHM_CLOSED' })
  throws(t, () => b.wait(), { instanceOf: ShmError, code: 'ERR_SHM_CLOSED' })
})
