// Diagnostics: util.inspect of mappings, heaps, locks, conditions and semaphores (state,
// no internals), and tracing through node:diagnostics_channel (heap repairs after a
// process died inside the heap, slow lock waits, locks recovered from dead holders),
// across real processes.
import test, { type ExecutionContext } from 'ava'
import diagnosticsChannel from 'node:diagnostics_channel'
import { inspect } from 'node:util'
import {
  Barrier, Channel, Condition, Event, Lock, MappedMemory, RLock, RWLock, Semaphore, SharedMap, tracing, type HeapRepairMessage, type LockWaitMessage, type OwnerDiedMessage,
} from '../dist/index.js'
import { forkChild, segmentName } from './helpers.js'

/** One line, whatever its length. */
const show = (x: unknown, depth = 2) => inspect(x, { breakLength: Infinity, depth })

/** Collects the messages of `channel` until the test ends. */
function listen<T>(t: ExecutionContext, channel: string): T[] {
  const got: T[] = []
  const fn = (m: unknown) => got.push(m as T)
  diagnosticsChannel.subscribe(channel, fn)
  t.teardown(() => diagnosticsChannel.unsubscribe(channel, fn))
  return got
}

/** Resolves once `cond()` holds (polling the event loop), or fails after `ms`. */
async function until(cond: () => boolean, ms = 10_000): Promise<void> {
  const t0 = Date.now()
  while (!cond()) {
    if (Date.now() - t0 > ms) throw new Error('timed out waiting')
    await new Promise((r) => setTimeout(r, 5))
  }
}

/** A child process that holds `lock` (`child-ops.mjs hold-lock`) until told 'exit'. */
async function holder(t: ExecutionContext, lock: Lock) {
  const child = forkChild(t, 'child-ops.mjs', ['hold-lock', '-'])
  await child.message()
  child.proc.send(lock.toJSON())
  t.deepEqual(await child.message(), { held: true })
  return child
}

function segment(t: ExecutionContext, tag: string): MappedMemory {
  const mem = MappedMemory.create(segmentName(t, tag), { size: 1 << 20 })
  t.teardown(() => mem.close())
  return mem
}

test('util.inspect shows state and no internal fields', (t) => {
  const mem = segment(t, 'insp')
  const text = show(mem)
  t.regex(text, /^MappedMemory \{/)
  t.true(text.includes(`name: '${mem.name}'`))
  t.true(text.includes(`kind: 'segment'`))
  t.true(text.includes(`size: ${1 << 20}`))
  t.true(text.includes(`uid: '${mem.uid}'`))
  t.true(text.includes(`creator: { pid: ${process.pid}, createdAt: `))
  t.regex(text, /address: '0x[0-9a-f]+-0x[0-9a-f]+'/)
  const lock = new Lock(mem)
  const rlock = new RLock(mem)
  const sem = new Semaphore(mem, 3)
  const cond = new Condition(lock)
  mem.heap.named('counter', 'uint64_t')
  t.is(show(lock), `Lock { memory: '${mem.name}', offset: ${lock.offset}, locked: false }`)
  lock.acquire()
  t.regex(show(lock), new RegExp(`locked: true, owner: \\{ pid: ${process.pid}, tid: ${process.pid} \\}`))
  lock.release()
  rlock.acquire()
  rlock.acquire()
  t.regex(show(rlock), /^RLock \{[^]*locked: true,[^]*depth: 2/)
  rlock.release()
  rlock.release()
  sem.acquire()
  t.is(show(sem), `Semaphore { memory: '${mem.name}', offset: ${sem.offset}, value: 2 }`)
  t.regex(show(cond), new RegExp(`^Condition \\{[^]*waiters: 0,[^]*lock: Lock \\{[^]*offset: ${lock.offset}`))
  const heap = show(mem.heap)
  t.regex(heap, new RegExp(`^Heap \\{[^]*memory: '${mem.name}',[^]*offset: 256,[^]*used: \\d+,[^]*free: \\d+,[^]*allocations: 6,[^]*named: 1`))
  const s = mem.heap.stats()
  t.true(heap.includes(`used: ${s.used},`) && heap.includes(`free: ${s.free},`))
  for (const x of [mem, lock, rlock, sem, cond, mem.heap]) {
    const out = show(x, 4)
    t.false(/\$shmutils|#|i32|_depth/.test(out), out)
  }
  t.is(show({ a: { b: { lock } } }), '{ a: { b: { lock: [Lock] } } }', 'the depth limit')
  const anon = MappedMemory.anonymous({ size: 8192 })
  t.regex(show(anon), /name: null,\s+kind: 'anonymous segment'[^]*fd: \d+/)
  t.regex(show(anon.new('int32_t', 1)), /^Ref \(anonymous segment \+ \d+\) 1$/)
  const heapOfAnon = anon.heap
  anon.close()
  t.is(show(anon), 'MappedMemory { name: null, closed: true }')
  t.is(show(heapOfAnon), `Heap { memory: 'anonymous segment', offset: 256, closed: true }`)
})

test('util.inspect of containers, RWLock, Barrier and Event shows their state', (t) => {
  const mem = segment(t, 'insp-cont')
  const rw = new RWLock(mem)
  t.is(rw.owner, null)
  rw.acquireWrite()
  t.deepEqual(rw.owner, { pid: process.pid, tid: process.pid })
  t.is(show(rw), `RWLock { memory: '${mem.name}', offset: ${rw.offset}, writer: { pid: ${process.pid}, tid: ${process.pid} }, readers: 0 }`)
  rw.releaseWrite()
  rw.acquireRead()
  t.is(rw.owner, null)
  t.is(show(rw), `RWLock { memory: '${mem.name}', offset: ${rw.offset}, writer: null, readers: 1 }`)
  rw.releaseRead()
  const b = new Barrier(mem, 3)
  t.is(show(b), `Barrier { memory: '${mem.name}', offset: ${b.offset}, parties: 3, waiting: 0 }`)
  const e = new Event(mem)
  e.set()
  t.is(show(e), `Event { memory: '${mem.name}', offset: ${e.offset}, isSet: true }`)
  const map = new SharedMap(mem)
  map.set('a', 1).set('b', 2)
  t.regex(show(map), new RegExp(`^SharedMap \\{ memory: '${mem.name}', offset: ${map.offset}, size: 2, bytes: \\d+, codec: 'v8' \\}$`))
  const ch = new Channel(mem, { capacity: 1024 })
  ch.send('x')
  t.regex(show(ch), new RegExp(`^Channel \\{ memory: '${mem.name}', offset: ${ch.offset}, length: 1, bytes: \\d+, capacity: 1024, closed: false \\}$`))
  for (const x of [rw, b, e, map, ch]) t.false(/\$shmutils|#/.test(show(x, 4)))
})

test('lock.owner and util.inspect name the holding process and thread, in any process', async (t) => {
  const mem = segment(t, 'insp-owner')
  const lock = new Lock(mem)
  t.is(lock.owner, null)
  const child = await holder(t, lock)
  const pid = child.proc.pid as number
  t.true(lock.locked)
  t.deepEqual(lock.owner, { pid, tid: pid }, 'the holder\'s main thread')
  t.regex(show(lock), new RegExp(`locked: true, owner: \\{ pid: ${pid}, tid: ${pid} \\}`))
  child.proc.send('exit')
  await child.exited
  // Its holder gone, the lock still names it until someone recovers it.
  t.deepEqual(lock.owner, { pid, tid: pid })
  t.true(lock.acquire({ timeout: 10_000 }))
  t.true(lock.ownerDied)
  t.deepEqual(lock.owner, { pid: process.pid, tid: process.pid })
  lock.markConsistent()
  lock.release()
  t.is(lock.owner, null)
})

test.serial('a heap repair is published on shmutils:heap:repair: an operation left unfinished', async (t) => {
  const mem = segment(t, 'trace-busy')
  const got = listen<HeapRepairMessage>(t, tracing.channels.heapRepair)
  const heap = mem.heap
  const a = heap.malloc(5000)
  // What a process killed inside malloc leaves: the busy flag (docs/FORMAT.md §4.1).
  new DataView(mem.buffer).setUint32(heap.offset + 80, 1, true)
  // (A block too large for this thread's cache of small freed blocks: freeing it is a
  // heap operation.)
  heap.free(a)
  t.deepEqual(got, [], 'delivered on a later turn of the event loop, never inside the operation')
  await until(() => got.length > 0)
  t.is(got.length, 1)
  t.is(got[0].heap, heap)
  t.is(got[0].memory, mem)
  t.is(got[0].offset, heap.offset)
  t.is(got[0].reason, 'interrupted')
  heap.check()
})

test.serial('a lookup rebuilds a heap a peer left busy (docs/FORMAT.md §4.3), in another process too: find() no longer reads an untrusted directory', async (t) => {
  const mem = segment(t, 'find-busy')
  const heap = mem.heap
  heap.named('x', 'int64_t', 7n)
  const busy = () => new DataView(mem.buffer).getUint32(heap.offset + 80, true)
  for (const where of ['here', 'child']) {
    new DataView(mem.buffer).setUint32(heap.offset + 80, 1, true)
    if (where === 'here') {
      t.is(heap.find<bigint>('x')!.value, 7n)
    } else {
      const child = forkChild(t, 'child-ops.mjs', ['find-named', mem.name!, 'x'])
      t.deepEqual(await child.message(), { value: '7' })
    }
    t.is(busy(), 0, `${where}: rebuilt and busy cleared`)
    heap.check()
  }
})

test.serial('a heap repair is published: the heap lock\'s holder was killed', async (t) => {
  const mem = segment(t, 'trace-owner')
  const got = listen<HeapRepairMessage>(t, tracing.channels.heapRepair)
  const heap = mem.heap
  // The child takes the heap's own lock (a lock record at the start of the heap) and is
  // killed holding it, as if it died inside malloc.
  const child = await holder(t, Lock.at(mem, heap.offset))
  child.proc.kill('SIGKILL')
  await child.exited
  heap.free(heap.malloc(64))
  await until(() => got.length > 0)
  t.is(got.length, 1)
  t.like(got[0], { heap, memory: mem, offset: heap.offset, reason: 'owner-died' })
  heap.check()
})

test.serial('no subscriber, no message', async (t) => {
  const mem = segment(t, 'trace-none')
  const heap = mem.heap
  let seen = 0
  const fn = () => seen++
  diagnosticsChannel.subscribe('shmutils:heap:repair-not-this-one', fn)
  t.teardown(() => diagnosticsChannel.unsubscribe('shmutils:heap:repair-not-this-one', fn))
  new DataView(mem.buffer).setUint32(heap.offset + 80, 1, true)
  heap.free(heap.malloc(64))
  await new Promise((r) => setTimeout(r, 50))
  t.is(seen, 0)
  t.false(diagnosticsChannel.hasSubscribers(tracing.channels.heapRepair))
  t.deepEqual(Object.values(tracing.channels), ['shmutils:lock:wait', 'shmutils:lock:owner-died', 'shmutils:heap:repair'])
  t.is(tracing.slowWaitMs, 10)
})

test.serial('slow lock and semaphore waits are published on shmutils:lock:wait, above the threshold only', async (t) => {
  const mem = segment(t, 'trace-wait')
  const lock = new Lock(mem)
  const got = listen<LockWaitMessage>(t, tracing.channels.lockWait)
  const before = tracing.slowWaitMs
  tracing.slowWaitMs = 20
  t.teardown(() => (tracing.slowWaitMs = before))
  const child = await holder(t, lock)
  t.false(lock.acquire({ timeout: 1 }), 'a short wait that times out...')
  t.deepEqual(got, [], '...is below the threshold')
  child.proc.send('release-soon') // released 50 ms after the acknowledgement
  t.deepEqual(await child.message(), { ack: true })
  t.true(lock.acquire({ timeout: 10_000 }))
  lock.release()
  t.is(got.length, 1, 'published synchronously, when the wait ends')
  t.like(got[0], { object: lock, kind: 'Lock', outcome: 'acquired', async: false })
  t.true(got[0].waitedMs >= 20, String(got[0].waitedMs))
  // Async waits, and semaphores.
  const sem = new Semaphore(mem, 0)
  setTimeout(() => sem.release(), 60)
  t.true(await sem.acquireAsync({ timeout: 10_000 }))
  t.is(got.length, 2)
  t.like(got[1], { object: sem, kind: 'Semaphore', outcome: 'acquired', async: true })
  t.true(got[1].waitedMs >= 20)
  t.false(await sem.acquireAsync({ timeout: 40 }))
  t.like(got[2], { object: sem, outcome: 'timed-out', async: true })
})

test.serial('a lock taken over from a killed holder is published on shmutils:lock:owner-died', async (t) => {
  // A wait finds a holder that died before it began at once, below the default 10 ms.
  const before = tracing.slowWaitMs
  tracing.slowWaitMs = 0
  t.teardown(() => (tracing.slowWaitMs = before))
  const mem = segment(t, 'trace-died')
  const lock = new RLock(mem)
  const died = listen<OwnerDiedMessage>(t, tracing.channels.ownerDied)
  const waits = listen<LockWaitMessage>(t, tracing.channels.lockWait)
  const child = await holder(t, lock)
  child.proc.kill('SIGKILL')
  await child.exited
  t.true(await lock.acquireAsync({ timeout: 10_000 }))
  t.true(lock.ownerDied)
  t.deepEqual(died.map((m) => [m.object, m.kind]), [[lock, 'RLock']])
  t.like(waits.find((m) => m.object === lock), { kind: 'RLock', outcome: 'owner-died', async: true })
  lock.markConsistent()
  lock.release()
})

// A subscriber is user code and may use any container: the messages of a container's own
// locks come on a microtask, after the container operation they were published in (they
// used to run inside it, where another map's set or another channel's send overwrote
// the key and value the operation was about to store).
test.serial('a lock-wait subscriber that uses another SharedMap runs after the set() that waited', async (t) => {
  const mem = segment(t, 'trace-map-inside')
  const map = new SharedMap<string, string>(mem, { codec: 'string' })
  const other = new SharedMap<string, string>(mem, { codec: 'string' })
  const before = tracing.slowWaitMs
  tracing.slowWaitMs = 1
  t.teardown(() => (tracing.slowWaitMs = before))
  let calls = 0
  const fn = (m: unknown) => {
    if ((m as LockWaitMessage).kind !== 'Lock') return
    calls++
    other.set('ZZ', 'written by the subscriber')
  }
  diagnosticsChannel.subscribe(tracing.channels.lockWait, fn)
  t.teardown(() => diagnosticsChannel.unsubscribe(tracing.channels.lockWait, fn))
  const child = forkChild(t, 'map-worker.mjs')
  child.proc.send({ map: map.toJSON(), job: 'hold', key: 'A', ms: 300 })
  t.deepEqual(await child.message(), { holding: true })
  map.set('A', 'parent') // waits for the child's stripe
  t.is(calls, 0, 'not inside set()')
  t.deepEqual([...map.entries()], [['A', 'parent']])
  await null
  t.is(calls, 1, 'on a microtask')
  t.deepEqual([...map.entries()], [['A', 'parent']])
  t.is(map.get('A'), 'parent')
  t.deepEqual([...other.entries()], [['ZZ', 'written by the subscriber']])
  t.deepEqual(await child.message(), { done: true })
})

test.serial('an owner-died subscriber that sends on another Channel runs after the send() that recovered the lock', async (t) => {
  const mem = segment(t, 'trace-chan-inside')
  const chan = new Channel<string>(mem, { codec: 'string' })
  const chan2 = new Channel<string>(mem, { codec: 'string' })
  let calls = 0
  const fn = () => {
    calls++
    chan2.send('sent by the subscriber')
  }
  diagnosticsChannel.subscribe(tracing.channels.ownerDied, fn)
  t.teardown(() => diagnosticsChannel.unsubscribe(tracing.channels.ownerDied, fn))
  // The producer lock (docs/FORMAT.md §11.3), held by a child that is then killed.
  const child = await holder(t, Lock.at(mem, chan.offset + 64))
  child.proc.kill('SIGKILL')
  await child.exited
  t.true(chan.send('parent-message'))
  t.is(calls, 0, 'not inside send()')
  t.is(chan.receive({ timeout: 100 }), 'parent-message')
  await null
  t.is(calls, 1, 'on a microtask')
  t.is(chan2.receive({ timeout: 100 }), 'sent by the subscriber')
  t.throws(() => chan.receive({ timeout: 0 }), { code: 'ETIMEDOUT' }, 'nothing else')
})
