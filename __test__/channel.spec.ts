// Channel: order, wrap-around, sizes, codecs; blocking and async waits (timeouts, abort,
// the event loop stays free); close and drain; 2 producers + 2 consumers (processes and
// worker threads) get every message exactly once and in order per producer; repeated
// SIGKILL of producers and consumers never shows a torn message, loses at most the one
// message a killed consumer was handed, and never wedges the ring; bad input and hostile
// bytes give typed errors.
import test, { type ExecutionContext } from 'ava'
import { Worker } from 'node:worker_threads'
import { Channel, Lock, MappedMemory, ShmError } from '../dist/index.js'
import { fixture, forkChild, rejection, segmentName, sleep, startPeer, throws } from './helpers.js'

function segment(t: ExecutionContext, size = 8 << 20): MappedMemory {
  const m = MappedMemory.create(segmentName(t, 'ch'), { size })
  t.teardown(() => m.close())
  return m
}

/** A tally array in the segment: counts of each (producer, i) received. */
function tally(mem: MappedMemory, producers: number, max: number) {
  const offset = mem.heap.malloc(4 * producers * max, 64)
  const arr = new Int32Array(mem.buffer, offset, producers * max)
  arr.fill(0)
  return { arr, handle: { memory: mem.toJSON(), offset, length: producers * max } }
}

test('messages come out in order; records wrap around the ring end; length counts them', (t) => {
  const mem = segment(t)
  const ch = new Channel<unknown>(mem, { capacity: 512 })
  t.is(ch.capacity, 512)
  t.is(ch.length, 0)
  let next = 0
  for (let round = 0; round < 200; round++) {
    const k = 1 + (round % 5)
    for (let j = 0; j < k; j++) t.true(ch.send({ n: next + j, pad: 'x'.repeat((next + j) % 37) }, { timeout: 1000 }))
    t.is(ch.length, k)
    for (let j = 0; j < k; j++) t.deepEqual(ch.receive(), { n: next + j, pad: 'x'.repeat((next + j) % 37) })
    next += k
  }
  t.is(ch.length, 0)
  const big = new Uint8Array(252).map((_, i) => i)
  const raw = new Channel<Uint8Array>(mem, { capacity: 256, codec: 'bytes' })
  for (let i = 0; i < 5; i++) {
    raw.send(new Uint8Array([i]))
    raw.receive()
    t.true(raw.send(big, { timeout: 1000 }), 'a message of capacity - 4 bytes fits wherever the ring stands')
    t.deepEqual(raw.receive(), big)
  }
  throws(t, () => raw.send(new Uint8Array(253)), { instanceOf: RangeError, message: /does not fit in a Channel ring of 256 bytes \(at most 252\)/ })
  const s = new Channel<string>(mem, { codec: 'string' })
  s.send('héllo')
  t.is(s.receive(), 'héllo')
  const j = new Channel(mem, { codec: 'json' })
  j.send({ d: new Date(0) })
  t.deepEqual(j.receive(), { d: '1970-01-01T00:00:00.000Z' })
  const v = new Channel(mem)
  v.send(new Map([[1n, new Set([new Date(3)])]]))
  t.deepEqual(v.receive(), new Map([[1n, new Set([new Date(3)])]]))
})

test('timeouts: receive on empty throws ETIMEDOUT, send on full returns false; 0 tries once', (t) => {
  const mem = segment(t)
  const ch = new Channel<number>(mem, { capacity: 64 })
  throws(t, () => ch.receive({ timeout: 0 }), { instanceOf: ShmError, code: 'ETIMEDOUT' })
  const t0 = performance.now()
  throws(t, () => ch.receive({ timeout: 60 }), { instanceOf: ShmError, code: 'ETIMEDOUT' })
  t.true(performance.now() - t0 >= 55)
  let sent = 0
  while (ch.send(sent, { timeout: 0 })) sent++
  t.true(sent > 3)
  t.false(ch.send(99, { timeout: 30 }))
  t.false(ch.send(99, 30), 'a timeout given as a number, as every wait takes it')
  for (let i = 0; i < sent; i++) t.is(ch.receive(), i)
  throws(t, () => ch.receive(20), { instanceOf: ShmError, code: 'ETIMEDOUT' })
  throws(t, () => ch.receive(null as unknown as number), { instanceOf: TypeError, message: /"options" argument/ })
})

test('timeouts hold while a live process keeps the side locks (stuck, stopped or hostile): send false, receive ETIMEDOUT, async twins too', async (t) => {
  const mem = segment(t)
  const ch = new Channel<string>(mem, { capacity: 1024 })
  ch.send('queued')
  const peer = await startPeer(t, 'process')
  for (const [key, at] of [['p', 64], ['c', 128]] as const) {
    await peer.request('revive', { key, handle: Lock.at(mem, ch.offset + at) })
    t.like(await peer.request('acquire', { key }), { ok: true })
  }
  const within = async (what: string, run: () => unknown): Promise<unknown> => {
    const t0 = performance.now()
    let out: unknown
    try {
      out = await run()
    } catch (e) {
      out = (e as ShmError).code
    }
    const ms = performance.now() - t0
    t.true(ms >= 100 && ms < 5000, `${what}: ${ms.toFixed(0)} ms`)
    return out
  }
  t.is(await within('send', () => ch.send('x', { timeout: 150 })), false)
  t.is(await within('receive', () => ch.receive({ timeout: 150 })), 'ETIMEDOUT')
  t.is(await within('sendAsync', () => ch.sendAsync('x', { timeout: 150 })), false)
  t.is(await within('receiveAsync', () => ch.receiveAsync({ timeout: 150 })), 'ETIMEDOUT')
  t.is(ch.length, 1, 'nothing was sent late')
  await peer.request('release', { key: 'p' })
  await peer.request('release', { key: 'c' })
  t.is(await ch.receiveAsync({ timeout: 1000 }), 'queued')
})

test('timeout 0 while a live process is inside a step on both sides (copying large messages): send queues, receive takes a message, sync and async', async (t) => {
  const mem = segment(t, 32 << 20)
  const ch = new Channel<Uint8Array>(mem, { capacity: 16 << 20, codec: 'bytes' })
  const mine = new Uint8Array(8)
  // The peer sends a 256 KiB message and receives one, over and over: the ring never
  // fills, and each side's lock is often held for a copy when this process asks.
  const peer = forkChild(t, 'channel-worker.mjs')
  peer.proc.send({ role: 'bulk', ch: JSON.parse(JSON.stringify(ch)), ms: 60_000, size: 256 << 10 })
  t.like(await peer.message(), { started: true })
  const failed: string[] = []
  for (let i = 0; i < 400; i++) {
    // One message of this process's in, one message (anyone's) out: the ring always
    // holds one when receive asks.
    const async = i % 2 === 1
    if (!(async ? await ch.sendAsync(mine, { timeout: 0 }) : ch.send(mine, { timeout: 0 }))) failed.push(`send ${i}`)
    try {
      if (async) await ch.receiveAsync({ timeout: 0 })
      else ch.receive({ timeout: 0 })
    } catch (e) {
      failed.push(`receive ${i}: ${(e as ShmError).code}`)
    }
  }
  peer.proc.kill('SIGKILL')
  await peer.exited
  // A peer preempted inside a step for longer than the wait for it may still fail a call
  // on a loaded machine (up to 21 of 800 seen with a 2 ms floor under a full CI run);
  // before, 300-390 of them failed.
  t.true(failed.length <= 80, `${failed.length} of 800 calls failed: ${failed.slice(0, 8).join(', ')}`)
})

test('a blocked receive wakes when another process sends; async waits leave the event loop free', async (t) => {
  const mem = segment(t)
  const ch = new Channel<{ p: number; i: number }>(mem)
  const producer = forkChild(t, 'channel-worker.mjs')
  let ticks = 0
  const timer = setInterval(() => ticks++, 5)
  const first = ch.receiveAsync({ timeout: 10_000 })
  // Nothing is sent before the timers below ran: a receive that blocked the event loop
  // would never let them run (the producer is only asked to send afterwards), so the
  // test would hang instead of passing. How many ticks fit depends on the machine's load.
  await sleep(100)
  clearInterval(timer)
  t.true(ticks >= 1, `timers ran while waiting (${ticks}); a blocked event loop runs none`)
  producer.proc.send(JSON.parse(JSON.stringify({ role: 'produce', ch, id: 0, from: 0, n: 300 })))
  t.is((await first).i, 0)
  for (let i = 1; i < 300; i++) t.is(ch.receive({ timeout: 10_000 }).i, i, 'blocking receive')
  let reply = await producer.message<Record<string, unknown>>()
  while (reply.started) reply = await producer.message()
  t.deepEqual(reply, { sent: 300 })
})

test('async: sendAsync waits for room; an abort rejects with AbortError; close wakes waiters', async (t) => {
  const mem = segment(t)
  const ch = new Channel<number>(mem, { capacity: 64 })
  while (ch.send(0, { timeout: 0 }));
  const pending = ch.sendAsync(7)
  await sleep(30)
  ch.receive()
  t.true(await pending)
  while (ch.length) ch.receive()
  const ac = new AbortController()
  const aborted = ch.receiveAsync({ signal: ac.signal })
  setTimeout(() => ac.abort(new Error('stop')), 30)
  const e = await rejection(aborted)
  t.is(e.name, 'AbortError')
  t.is((e.cause as Error).message, 'stop')
  t.is((await rejection(ch.receiveAsync({ signal: AbortSignal.abort() }))).name, 'AbortError')
  // A signal aborted already rejects at once, as every async wait does, also when the
  // call could complete: nothing is sent, nothing taken.
  ch.send(5)
  t.is((await rejection(ch.receiveAsync({ signal: AbortSignal.abort() }))).name, 'AbortError')
  t.is((await rejection(ch.sendAsync(6, { signal: AbortSignal.abort() }))).name, 'AbortError')
  t.is(ch.length, 1)
  // With room (a message) and a free lock, the async twins complete before they return.
  let sent = false
  void ch.sendAsync(8).then(() => (sent = true))
  t.is(ch.length, 2, 'sent before sendAsync returned')
  const first = ch.receiveAsync()
  t.is(ch.length, 1, 'taken before receiveAsync returned')
  t.is(await first, 5)
  t.is(ch.receive(), 8)
  t.true(sent)
  const timedOut = await rejection(ch.receiveAsync({ timeout: 20 }))
  t.is(timedOut.code, 'ETIMEDOUT')
  const waiting = ch.receiveAsync()
  const blockedChild = forkChild(t, 'channel-worker.mjs')
  const tl = tally(mem, 1, 10)
  blockedChild.proc.send(JSON.parse(JSON.stringify({ role: 'consume', ch, tally: tl.handle, max: 10 })))
  await sleep(100)
  ch.send(1)
  ch.close()
  t.true(ch.closed)
  const got = await Promise.allSettled([waiting, blockedChild.message()])
  // One of the two consumers took the message; the other ended with ERR_SHM_CLOSED.
  const asyncGot = got[0].status === 'fulfilled'
  const childGot = got[1].status === 'fulfilled' && (got[1].value as { received: number }).received === 1
  t.true(asyncGot !== childGot, 'exactly one consumer got the message')
  if (!asyncGot) t.is(((got[0] as PromiseRejectedResult).reason as ShmError).code, 'ERR_SHM_CLOSED')
})

test('async calls of one object complete in call order; one aborted or timed out while it waits its turn leaves the rest in order', async (t) => {
  const mem = segment(t)
  const ch = new Channel<number>(mem, { capacity: 64 })
  let room = 0
  while (ch.send(-1, { timeout: 0 })) room++
  // Full: 0 waits for room, 1 and 3 wait behind it, 2 is aborted and 4 times out in line.
  const ac = new AbortController()
  const calls = [ch.sendAsync(0), ch.sendAsync(1), ch.sendAsync(2, { signal: ac.signal }), ch.sendAsync(3), ch.sendAsync(4, { timeout: 30 })]
  ac.abort()
  t.is((await rejection(calls[2]!)).name, 'AbortError', 'rejected at once, although 0 and 1 still wait')
  t.false(await calls[4]!, 'its timeout ran out while it waited its turn')
  const got: number[] = []
  for (let i = 0; i < room; i++) got.push(ch.receive())
  t.deepEqual(await Promise.all([calls[0], calls[1], calls[3]]), [true, true, true])
  while (ch.length) got.push(ch.receive())
  t.deepEqual(got.filter((x) => x >= 0), [0, 1, 3])
  // Receives: 20 pending calls take 19 messages in call order, also across a timeout.
  const wide = new Channel<number>(mem, { capacity: 4096 })
  const receives = Array.from({ length: 20 }, (_, i) => wide.receiveAsync(i === 5 ? { timeout: 10 } : undefined))
  await sleep(40)
  for (let i = 0; i < 19; i++) wide.send(i)
  t.is((await rejection(receives[5]!)).code, 'ETIMEDOUT')
  t.deepEqual(await Promise.all(receives.filter((_, i) => i !== 5)), Array.from({ length: 19 }, (_, i) => i))
})

test('async calls waiting their turn with timeouts beyond 2^31 - 1 ms (what setTimeout takes) keep waiting', async (t) => {
  const mem = segment(t)
  const warnings: string[] = []
  const onWarning = (w: Error): void => void warnings.push(w.name)
  process.on('warning', onWarning)
  t.teardown(() => process.off('warning', onWarning))
  const ch = new Channel<number>(mem, { capacity: 64 })
  // Two receives behind a first one: they wait their turn (Node ran a longer timer after 1 ms).
  const receives = [ch.receiveAsync(), ch.receiveAsync({ timeout: 2 ** 31 }), ch.receiveAsync({ timeout: 1e10 })]
  let room = 0
  const full = new Channel<number>(mem, { capacity: 64 })
  while (full.send(-1, { timeout: 0 })) room++
  const sends = [full.sendAsync(0), full.sendAsync(1, { timeout: 2 ** 31 }), full.sendAsync(2, { timeout: 1e10 })]
  const settled: number[] = []
  ;[...receives, ...sends].forEach((p, i) => void p.then(() => settled.push(i), () => settled.push(i)))
  await sleep(100)
  t.deepEqual(settled, [], 'all still pending')
  for (let i = 0; i < 3; i++) ch.send(i)
  t.deepEqual(await Promise.all(receives), [0, 1, 2])
  for (let i = 0; i < room; i++) t.is(full.receive(), -1)
  t.deepEqual(await Promise.all(sends), [true, true, true])
  t.deepEqual([full.receive(), full.receive(), full.receive()], [0, 1, 2])
  t.false(warnings.includes('TimeoutOverflowWarning'))
})

test('blocking calls of a thread whose async calls hold the side lock go on (no ERR_SHM_DEADLOCK), with other processes contending', async (t) => {
  const mem = segment(t, 16 << 20)
  const ch = new Channel<unknown>(mem, { capacity: 1 << 16 })
  const handle = JSON.parse(JSON.stringify(ch))
  const spin = (ms: number): void => {
    for (const t0 = performance.now(); performance.now() - t0 < ms; );
  }
  // Two other processes keep both side locks busy, so an async call often waits for one
  // on a waiter thread, which takes it for this thread before the promise goes on: a
  // blocking call in between once failed with ERR_SHM_DEADLOCK ("this thread already
  // holds the lock").
  const hammer = forkChild(t, 'channel-worker.mjs')
  hammer.proc.send({ role: 'hammer', ch: handle, ms: 60_000 })
  const drain = forkChild(t, 'channel-worker.mjs')
  drain.proc.send({ role: 'drain', ch: handle })
  t.like(await hammer.message(), { started: true }, 'both at work before the rounds')
  const failures: string[] = []
  const note = (e: unknown): void => void failures.push(String((e as ShmError).code ?? e))
  const sent: number[] = []
  const mine: number[] = []
  for (let i = 0; i < 300; i++) {
    const p = ch.sendAsync(-1 - i, { timeout: 5000 }).catch(note)
    spin(0.2)
    try {
      if (ch.send(i, { timeout: 5000 })) sent.push(i)
    } catch (e) {
      note(e)
    }
    if ((await p) === true) sent.push(-1 - i)
  }
  for (let i = 0; i < 300; i++) {
    const p = ch.receiveAsync({ timeout: 5000 }).catch(note)
    spin(0.2)
    try {
      mine.push(ch.receive({ timeout: 5000 }) as number)
    } catch (e) {
      note(e)
    }
    mine.push((await p) as number)
  }
  t.deepEqual(failures, [], 'no call failed')
  hammer.proc.kill('SIGKILL')
  await hammer.exited
  ch.close()
  const drained = await drain.message<{ numbers: number[] }>()
  const received = [...drained.numbers, ...mine.filter((m) => typeof m === 'number')].sort((x, y) => x - y)
  t.deepEqual(received, [...sent].sort((x, y) => x - y), 'every message of this thread received once')
})

test('close: sends fail with ERR_SHM_CLOSED, receivers drain what is queued, for await ends', async (t) => {
  const mem = segment(t)
  const ch = new Channel<number>(mem)
  for (let i = 0; i < 5; i++) ch.send(i)
  ch.close()
  ch.close()
  throws(t, () => ch.send(5), { instanceOf: ShmError, code: 'ERR_SHM_CLOSED' })
  t.is((await rejection(ch.sendAsync(5))).code, 'ERR_SHM_CLOSED')
  t.is(ch.receive(), 0)
  const rest: number[] = []
  for await (const m of ch) rest.push(m)
  t.deepEqual(rest, [1, 2, 3, 4])
  throws(t, () => ch.receive(), { instanceOf: ShmError, code: 'ERR_SHM_CLOSED' })
  const again = Channel.at(mem, ch.offset)
  t.true(again.closed, 'closed for every process')
})

for (const kind of ['processes', 'worker threads', 'async processes', 'pipelined async processes'] as const) {
  test(`2 producers + 2 consumers (${kind}): every message exactly once, in order per producer`, async (t) => {
    const mem = segment(t, 16 << 20)
    const ch = new Channel(mem, { capacity: 4096 })
    const n = kind === 'worker threads' ? 20_000 : 10_000
    const tl = tally(mem, 2, n)
    const handle = JSON.parse(JSON.stringify(ch))
    const start = (msg: Record<string, unknown>): Promise<Record<string, unknown>> => {
      if (kind === 'worker threads') {
        return new Promise((resolve, reject) => {
          const w = new Worker(fixture('channel-worker.mjs'), { workerData: msg })
          w.on('message', (m: Record<string, unknown>) => {
            if (m.error) reject(new Error(String(m.error)))
            else if (!m.started) resolve(m)
          })
          w.on('error', reject)
          t.teardown(() => void w.terminate())
        })
      }
      const c = forkChild(t, 'channel-worker.mjs')
      c.proc.send(msg)
      return (async () => {
        for (;;) {
          const m = await c.message<Record<string, unknown>>()
          if (m.error) throw new Error(String(m.error))
          if (!m.started) return m
        }
      })()
    }
    // Pipelined: every sendAsync of a producer made at once, 8 receiveAsync of a consumer
    // pending at a time; per object they complete in call order.
    const pipelined = kind === 'pipelined async processes'
    const isAsync = kind === 'async processes' || pipelined
    // Worker threads get the channel itself (its structured clone carries the handle).
    const shared = kind === 'worker threads' ? ch : handle
    const consumers = [0, 1].map(() => start({ role: 'consume', ch: shared, tally: tl.handle, max: n, async: isAsync, pipelined }))
    const producers = [0, 1].map((id) => start({ role: 'produce', ch: shared, id, from: 0, n, async: isAsync, pipelined }))
    await Promise.all(producers)
    ch.close()
    const results = (await Promise.all(consumers)) as Array<{ received: number; torn: number; disorder: number }>
    t.is(results[0].received + results[1].received, 2 * n)
    t.true(results.every((r) => r.torn === 0 && r.disorder === 0))
    t.true(tl.arr.every((c) => c === 1), 'each message received exactly once')
    t.true(results.every((r) => r.received > 0), 'both consumers took part')
  })
}

test('SIGKILL of producers and consumers, repeatedly: no torn message, no duplicate, order kept, at most one lost per killed consumer, the ring keeps going', async (t) => {
  const mem = segment(t, 32 << 20)
  const ch = new Channel(mem, { capacity: 8192 })
  const handle = JSON.parse(JSON.stringify(ch))
  const max = 400_000
  const tl = tally(mem, 2, max)
  const next = [0, 0]
  /** Per producer: index ranges [from, to) skipped on restart (never sent). */
  const skipped: Array<Array<[number, number]>> = [[], []]
  let consumerKills = 0
  const rounds = 6
  for (let round = 0; round < rounds; round++) {
    const producers = [0, 1].map((id) => {
      const c = forkChild(t, 'channel-worker.mjs')
      c.proc.send({ role: 'produce', ch: handle, id, from: next[id], n: null, big: true })
      return c
    })
    const consumers = [0, 1].map(() => {
      const c = forkChild(t, 'channel-worker.mjs')
      c.proc.send({ role: 'consume', ch: handle, tally: tl.handle, max })
      return c
    })
    await Promise.all([...producers, ...consumers].map((c) => c.message()))
    await sleep(30 + Math.random() * 100)
    for (const c of [...producers, ...consumers]) c.proc.kill('SIGKILL')
    await Promise.all([...producers, ...consumers].map((c) => c.exited))
    consumerKills += 2
    // Each producer restarts well past the last message received so far: whatever it
    // sent beyond that is still queued (the ring holds far fewer than the gap).
    for (let p = 0; p < 2; p++) {
      let hi = next[p] - 1
      for (let i = next[p]; i < max; i++) if (tl.arr[p * max + i] !== 0) hi = i
      skipped[p].push([hi + 1, hi + 1 + 10_000])
      next[p] = hi + 1 + 10_000
      t.true(next[p] < max)
    }
  }
  // Drain what is left in this process, then check everything.
  ch.close()
  const last = [-1, -1]
  for await (const m of ch as AsyncIterable<{ p: number; i: number; payload: string; sum: number }>) {
    let h = 0
    for (let i = 0; i < m.payload.length; i++) h = (Math.imul(h, 31) + m.payload.charCodeAt(i)) | 0
    t.is(h, m.sum, 'no torn message')
    t.true(m.i > last[m.p], 'order per producer')
    last[m.p] = m.i
    tl.arr[m.p * max + m.i]++
  }
  let duplicates = 0
  let lost = 0
  for (let p = 0; p < 2; p++) {
    let top = -1
    for (let i = 0; i < max; i++) if (tl.arr[p * max + i] > 0) top = i
    t.true(top > 1000, 'the producers made progress')
    for (let i = 0; i <= top; i++) {
      const c = tl.arr[p * max + i]
      if (c > 1) duplicates++
      if (c === 0 && !skipped[p].some(([a, b]) => i >= a && i < b)) lost++
    }
  }
  t.is(duplicates, 0)
  t.true(lost <= consumerKills, `${lost} messages lost, ${consumerKills} consumer kills`)
  t.is(ch.length, 0)
})

test('bad input and hostile bytes: typed errors, never a hang', (t) => {
  const mem = segment(t)
  throws(t, () => new Channel(mem, { capacity: -1 }), { instanceOf: RangeError })
  throws(t, () => new Channel(mem, { capacity: 2 ** 31 }), { instanceOf: RangeError, message: /at most/ })
  throws(t, () => new Channel(mem, { codec: 'yaml' as 'json' }), { instanceOf: TypeError })
  throws(t, () => new Channel(42 as unknown as MappedMemory), { instanceOf: TypeError, message: /"where" argument/ })
  const ch = new Channel<unknown>(mem, { capacity: 1024 })
  throws(t, () => ch.send(() => 1), { instanceOf: TypeError, message: /cannot be stored with the 'v8' codec/ })
  throws(t, () => ch.send({ s: Symbol('x') }), { instanceOf: TypeError })
  throws(t, () => ch.send('x'.repeat(2000)), { instanceOf: RangeError, message: /does not fit/ })
  throws(t, () => ch.send(1, { timeout: -1 }), { instanceOf: RangeError })
  throws(t, () => ch.receive({ timeout: 'x' as unknown as number }), { instanceOf: TypeError })
  throws(t, () => Channel.at(mem, 8), { instanceOf: TypeError, message: /no Channel/ })
  ch.send('ok')
  t.is(ch.receive(), 'ok', 'usable after every failure')
  // A record claiming more bytes than are queued.
  ch.send('abc')
  const i32 = new Int32Array(mem.buffer)
  const head = i32[(ch.offset + 256) >> 2]
  i32[(ch.offset + 320 + (head & 1023)) >> 2] = 100_000
  throws(t, () => ch.receive(), { instanceOf: ShmError, code: 'ERR_SHM_CORRUPT' })
  // A record whose bytes do not decode: dropped with ERR_SHM_CORRUPT, the next one comes.
  const c2 = new Channel<unknown>(mem, { capacity: 1024 })
  c2.send({ a: 1 })
  c2.send('next')
  const h2 = i32[(c2.offset + 256) >> 2]
  new Uint8Array(mem.buffer)[c2.offset + 320 + (h2 & 1023) + 4] = 0x07 // not a version tag
  throws(t, () => c2.receive(), { instanceOf: ShmError, code: 'ERR_SHM_CORRUPT' })
  t.is(c2.receive(), 'next')
  mem.close()
  throws(t, () => ch.send(1), { instanceOf: ShmError, code: 'ERR_SHM_CLOSED' })
  throws(t, () => ch.length, { instanceOf: ShmError, code: 'ERR_SHM_CLOSED' })
})
