// The heap's per-thread cache of freed small blocks (lib/heap-cache.ts, the protocol in
// src-rs/heap/cache.rs): reuse without a native call, what other processes see, and how
// cached blocks go back to the heap: close, exit, trim, ENOMEM, and check() after a
// process died with blocks cached.
import test, { type ExecutionContext } from 'ava'
import { fork, spawnSync } from 'node:child_process'
import { once } from 'node:events'
import { readdirSync } from 'node:fs'
import { setTimeout as sleep } from 'node:timers/promises'
import { Worker } from 'node:worker_threads'
import { Heap, Lock, MappedMemory, ShmError } from '../dist/index.js'
import { fillHeap, fixture, forkChild, managedSegment, segmentName, startPeer, throws, unlinkQuietly } from './helpers.js'

const segment = (t: ExecutionContext, size?: number) => managedSegment(t, 'cache', size)

/**
 * Forks a child that caches `count` blocks of `size` bytes (in `heap`, by default its
 * segment's), then does `then`. Its cache goes back by itself after `idleMs` unused (by
 * default never within a test).
 */
async function cachingChild(t: Parameters<typeof segmentName>[0], mem: MappedMemory, count: number, size: number, then: 'exit' | 'wait' | 'close' | 'exit later', { heap, idleMs = 600_000 }: { heap?: Heap; idleMs?: number } = {}) {
  const child = forkChild(t, 'heap-cache-child.mjs')
  await child.message()
  child.proc.send({ mem: JSON.parse(JSON.stringify(mem)), heap: heap && JSON.parse(JSON.stringify(heap)), count, size, then, idleMs })
  const r = await child.message<{ offsets: number[]; cached: number }>()
  return { child, ...r }
}

test('a freed small block is handed out again by the next malloc of its size; stats count it as free', (t) => {
  const heap = segment(t).heap
  const start = heap.stats()
  const a = heap.malloc(100)
  const b = heap.malloc(100)
  heap.free(a)
  t.like(heap.stats(), { allocations: 1, cached: 1, cachedBytes: 128, used: start.used + 128 })
  t.is(heap.malloc(100), a, 'the cached block')
  t.is(heap.malloc(100) === b, false)
  t.is(heap.stats().cached, 0)
  // Sizes of one block class share it; other classes, alignments above 16 and big
  // blocks do not come from the cache.
  heap.free(a)
  t.is(heap.malloc(97), a, '97 bytes need the same 128-byte block')
  heap.free(a)
  const aligned = heap.malloc(100, 64)
  t.is(aligned % 64, 0, 'an alignment above 16 is served natively')
  heap.free(aligned)
  const big = heap.malloc(5000)
  heap.free(big)
  t.is(heap.stats().cached, 2, 'a 5000-byte block went straight back')
  throws(t, () => heap.free(a), { instanceOf: ShmError, code: 'ERR_SHM_DOUBLE_FREE' })
  heap.check()
})

test('blocks another process cached are not handed out here; its exit and close give them back', async (t) => {
  const mem = segment(t)
  const heap = mem.heap
  for (const then of ['exit', 'close'] as const) {
    const { child, offsets, cached } = await cachingChild(t, mem, 20, 64, then)
    t.is(cached, 20)
    await child.exited
    t.is(heap.stats().cached, 0, `${then} flushed the child's cache`)
    // The heap hands them out again (here, natively).
    const mine = offsets.map(() => heap.malloc(64))
    t.deepEqual(new Set(mine).size, offsets.length)
    mine.forEach((o) => heap.free(o))
    heap.trim()
  }
  const { child, offsets } = await cachingChild(t, mem, 20, 64, 'wait')
  t.is(heap.stats().cached, 20, 'a live process keeps its cache')
  const mine = Array.from({ length: 40 }, () => heap.malloc(64))
  t.false(mine.some((o) => offsets.includes(o)), 'never a block cached by another process')
  mine.forEach((o) => heap.free(o))
  t.is(heap.trim(), 40, 'trim gives back only this thread\'s blocks while the other lives')
  t.is(heap.stats().cached, 20)
  child.proc.kill('SIGKILL')
  await child.exited
  t.is(heap.stats().cached, 20, 'a killed process leaves its cache behind')
  heap.check()
  t.is(heap.stats().cached, 0, 'check() reclaimed the dead process\'s blocks')
  t.like(heap.stats(), { used: 0, allocations: 0 })
})

test('a live process whose cache sat unused hands it back by itself: idle workers do not hold the heap from the others', async (t) => {
  // 16 idle workers once held all of a 1 MiB heap this way: malloc was ENOMEM with
  // stats() saying 99% free, and trim() here could not help.
  const mem = segment(t, 256 << 10)
  const heap = mem.heap
  const children = await Promise.all([0, 1, 2, 3].map(() => cachingChild(t, mem, 15, 200, 'wait', { idleMs: 300 })))
  // (What each saw cached counts the others' too.)
  for (const c of children) t.true(c.cached >= 15)
  const t0 = Date.now()
  while (heap.stats().cached !== 0 && Date.now() - t0 < 20_000) await sleep(50)
  t.is(heap.stats().cached, 0, 'their caches went back while they live')
  for (const c of children) t.is(c.child.proc.exitCode, null, 'alive')
  // All of it is free here, in one block.
  const all = heap.malloc(heap.stats().largestFree)
  heap.free(all)
  heap.check()
})

test('an idle cache waits while another process holds the heap lock: the event loop never waits on it, and nothing is lost', async (t) => {
  const mem = segment(t, 1 << 20)
  process.env.SHMUTILS_CACHE_IDLE_MS = '150' // read as the heap attaches
  const heap = mem.heap
  delete process.env.SHMUTILS_CACHE_IDLE_MS
  heap.lockTimeout = 300
  const before = heap.stats().allocations
  const blocks = Array.from({ length: 20 }, () => heap.malloc(40))
  // The heap's lock is a Lock record: a peer holds it (as a stopped process would).
  const peer = await startPeer(t, 'process')
  await peer.request('revive', { key: 'heap lock', handle: Lock.at(mem, heap.offset) })
  t.like(await peer.request('acquire', { key: 'heap lock' }), { ok: true })
  for (const b of blocks) heap.free(b)
  let last = performance.now()
  let worst = 0
  const ticks = setInterval(() => {
    const now = performance.now()
    worst = Math.max(worst, now - last)
    last = now
  }, 20)
  await sleep(1200)
  clearInterval(ticks)
  // Before: the flush waited out the lock timeout once a block (6 s here), then dropped
  // every block: allocated by nobody, for good.
  t.true(worst < 1000, `the event loop stood still for ${Math.round(worst)} ms`)
  await peer.request('release', { key: 'heap lock' })
  const t0 = Date.now()
  while (heap.stats().cached !== 0 && Date.now() - t0 < 10_000) await sleep(50)
  t.like(heap.stats(), { cached: 0, allocations: before })
})

test('a test\'s fake timers (installed after the package loaded) neither break the idle flush nor stop it', async (t) => {
  // The flush's clearTimeout was the fake one: the real timer it had armed fired later
  // on a cache with no timer ("Cannot read properties of null"), and the process died.
  const r = spawnSync(process.execPath, [fixture('fake-timers.mjs')], { encoding: 'utf8', timeout: 30_000 })
  t.is(r.status, 0, r.stderr)
  t.deepEqual(JSON.parse(r.stdout), { first: 0, second: 0 })
})

test('trim() reclaims what a killed process cached; so does an allocation that finds the heap full', async (t) => {
  const mem = segment(t, 64 << 10)
  const heap = mem.heap
  // (A cache holds at most 1/16 of its heap: 15 blocks of 224 bytes here.)
  const { child } = await cachingChild(t, mem, 15, 200, 'wait')
  child.proc.kill('SIGKILL')
  await child.exited
  t.is(heap.stats().cached, 15)
  t.is(heap.trim(), 15)
  // Fill the heap with small blocks, free them (some stay cached here), then ask for
  // more than the free lists alone hold.
  const blocks = fillHeap(t, heap, 100)
  blocks.forEach((o) => heap.free(o))
  const { cached, largestFree, free } = heap.stats()
  t.true(cached > 0)
  t.true(largestFree < free - 1024, 'cached blocks split the free space')
  const whole = heap.malloc(largestFree + 512)
  t.is(heap.stats().cached, 0, 'ENOMEM flushed the cache, then it fitted')
  heap.free(whole)
  heap.check()
})

test('a block reclaimed while its owner lives is never handed out twice', (t) => {
  const mem = segment(t)
  const heap = mem.heap
  const a = heap.malloc(64)
  const next = heap.malloc(64)
  heap.free(a)
  // Make the block's recorded owner look dead (a thread id no kernel hands out), as a
  // reclaimer in another PID namespace might judge it: check() frees the block.
  new Int32Array(mem.buffer)[a >> 2] = 0x3fff_fff0
  heap.check()
  t.is(heap.stats().cached, 0)
  const b = heap.malloc(64)
  const c = heap.malloc(64)
  t.not(b, c)
  t.false(b === next || c === next)
  t.is(heap.stats().allocations, 3)
  for (const o of [b, c, next]) heap.free(o)
  heap.trim()
  t.like(heap.stats(), { used: 0, cached: 0 })
  heap.check()
})

test('a block handed out by the cache is checked again when it is freed: a damaged check word is refused', (t) => {
  const mem = segment(t)
  const heap = mem.heap
  const a = heap.malloc(64)
  heap.free(a)
  t.is(heap.malloc(64), a, 'from the cache')
  // The block's check word (the 8 bytes before the payload), damaged by someone else
  // after the cache handed it out: the free that follows must not take it for a block.
  const i32 = new Int32Array(mem.buffer)
  const w = (a - 8) >> 2
  i32[w] ^= 0x100
  throws(t, () => heap.free(a), { instanceOf: ShmError, code: 'EINVAL' })
  i32[w] ^= 0x100
  heap.free(a)
  t.is(heap.stats().cached, 1)
  heap.trim()
  heap.check()
})

test('one Heap per heap and thread; formatting it again drops the old cache; read-only and closed mappings never use one', (t) => {
  const mem = segment(t)
  t.is(Heap.attach(mem, mem.heap.offset), mem.heap)
  const raw = new MappedMemory(null, 1 << 16)
  t.teardown(() => raw.close())
  const h1 = Heap.create(raw)
  const a = h1.malloc(64)
  h1.free(a)
  const h2 = Heap.create(raw)
  t.not(h1, h2)
  t.is(h2.stats().cached, 0)
  const b = h2.malloc(64)
  t.is(h2.stats().allocations, 1)
  h2.free(b)
  const ro = MappedMemory.open(mem.name!, { readOnly: true })
  t.teardown(() => ro.close())
  throws(t, () => ro.heap.malloc(16), { code: 'ERR_SHM_READ_ONLY' })
  throws(t, () => ro.heap.free(a), { code: 'ERR_SHM_READ_ONLY' })
  const x = mem.heap.malloc(64)
  mem.heap.free(x)
  const other = MappedMemory.open(mem.name!)
  t.teardown(() => other.close())
  t.is(other.heap.stats().cached, 1)
  mem.close()
  t.is(other.heap.stats().cached, 0, 'close() flushed the cache')
  throws(t, () => mem.heap, { code: 'ERR_SHM_CLOSED' })
})

test('a heap in a block of another heap caches nothing (only a segment\'s own heap does): the block freed once the heap is done with, no idle flush, close, collection or exit writes into it later', async (t) => {
  const mem = segment(t)
  const before = mem.heap.stats()
  const block = mem.heap.malloc(8192)
  const sub = Heap.create(mem, { offset: block, size: 8192 })
  const mine = Array.from({ length: 8 }, () => sub.malloc(64))
  for (const o of mine) sub.free(o)
  t.is(sub.stats().cached, 0)
  // Another process uses it too, and ends after the block was freed.
  const { child, cached } = await cachingChild(t, mem, 8, 64, 'exit later', { heap: sub })
  t.is(cached, 0)
  mem.heap.free(block)
  mem.heap.check()
  child.proc.send('exit')
  t.is(await child.exited, 0)
  // Before: the closing mapping flushed this thread's cache into the freed block:
  // "free-list back link wrong", and every later malloc of the segment failed.
  mem.close()
  const again = MappedMemory.open(mem.name!)
  t.teardown(() => again.close())
  again.heap.check()
  t.like(again.heap.stats(), { used: before.used, allocations: before.allocations })
  again.heap.free(again.heap.malloc(100))
  // The same in a raw mapping, whose heaps are all Heap.create's.
  const raw = new MappedMemory(null, 1 << 20)
  t.teardown(() => raw.close())
  const outer = Heap.create(raw)
  const inner = Heap.create(raw, { offset: outer.malloc(8192), size: 8192 })
  inner.free(inner.malloc(64))
  outer.free(outer.malloc(64))
  t.is(inner.stats().cached, 0)
  t.is(outer.stats().cached, 0)
  outer.free(inner.offset)
  outer.check()
})

test('a worker thread that ends leaves nothing cached; one terminated mid-way is reclaimed by check()', async (t) => {
  const mem = segment(t)
  const heap = mem.heap
  const src = `
    const { workerData, parentPort } = require('node:worker_threads')
    const { revive } = require(${JSON.stringify(fixture('../../dist/index.js'))})
    const heap = revive(workerData.mem).heap
    const xs = Array.from({ length: 25 }, () => heap.malloc(48))
    xs.forEach((o) => heap.free(o))
    parentPort.postMessage(heap.stats().cached)
    if (workerData.hang) setInterval(() => {}, 1000)
  `
  for (const hang of [false, true]) {
    const w = new Worker(src, { eval: true, workerData: { mem: JSON.parse(JSON.stringify(mem)), hang } })
    // Listen for the exit from the start: a worker's last message and its 'exit' can be
    // emitted in one go, before a listener added after the message could see it.
    const exited = once(w, 'exit')
    const [cached] = await once(w, 'message')
    t.is(cached, 25)
    if (hang) await w.terminate()
    await exited
    if (hang) {
      t.is(heap.stats().cached, 25)
      // A child being spawned by another test of this process holds copies of every
      // descriptor until its exec, so the ended worker's token can read as held for a
      // moment (docs/synchronization.md, "When it dies"): ask again, within a bound.
      for (let i = 0; i < 100 && (heap.check(), heap.stats().cached) !== 0; i++) await sleep(20)
    }
    t.is(heap.stats().cached, 0, hang ? 'check() reclaimed the terminated worker\'s blocks' : 'the worker flushed at exit')
  }
})

/** Forks `heap-cache-gc.mjs` in `mode` (with --expose-gc); killed at teardown. */
function gcChild(t: ExecutionContext, args: string[], gc = true) {
  const proc = fork(fixture('heap-cache-gc.mjs'), args, { stdio: ['ignore', 'inherit', 'inherit', 'ipc'], execArgv: gc ? ['--expose-gc'] : [] })
  t.teardown(() => {
    if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGKILL')
  })
  const exited = once(proc, 'exit')
  const message = <T>() =>
    Promise.race([
      once(proc, 'message').then(([m]) => m as T),
      exited.then(([code]) => Promise.reject(new Error(`heap-cache-gc.mjs ${args[0]} exited (${code}) before replying`))),
    ])
  return { proc, exited, message }
}

test('a closed mapping\'s heap leaves nothing behind: open + .heap + close costs what open + close does, in one job too', async (t) => {
  // Each Heap with a cache used to stay in a module-level set until the process exited
  // (about 60 bytes per cycle), and the WeakRef to it kept the heap, its mapping and its
  // cache alive until the end of the job that made it (about 5 KB per cycle).
  t.timeout(120_000)
  const mem = segment(t, 64 << 10)
  const child = gcChild(t, ['retain', mem.name!, '10000'])
  const r = await child.message<{ jobBare: number; jobHeap: number; acrossBare: number; acrossHeap: number }>()
  t.log('heapUsed per cycle, bytes:', JSON.stringify(Object.fromEntries(Object.entries(r).map(([k, v]) => [k, Math.round(v)]))))
  // In one job a collected Heap waits for its finalizer (a cell and a few words); the
  // old code kept every Heap and mapping: ~5000 bytes a cycle.
  t.true(r.jobHeap - r.jobBare < 1000, `one job: ${Math.round(r.jobHeap)} bytes a cycle, ${Math.round(r.jobBare)} without .heap`)
  // Across jobs nothing is left; the old code kept ~60 bytes a cycle.
  t.true(r.acrossHeap - r.acrossBare < 20, `across jobs: ${r.acrossHeap.toFixed(1)} bytes a cycle, ${r.acrossBare.toFixed(1)} without .heap`)
})

test('a closed mapping lets go of its heap at once: new segments created, locked once and closed in one job cost what created and closed ones do', async (t) => {
  t.timeout(120_000)
  const prefix = segmentName(t, 'fresh')
  t.teardown(() => {
    for (const f of readdirSync('/dev/shm')) if (`/${f}`.startsWith(`${prefix}-`)) unlinkQuietly(`/${f}`)
  })
  const child = gcChild(t, ['fresh', prefix, '3000'])
  const r = await child.message<{ jobBare: number; jobLock: number }>()
  t.log('heapUsed per cycle, bytes:', Math.round(r.jobBare), 'created and closed,', Math.round(r.jobLock), 'locked once too')
  // The revive cache's WeakRef keeps each mapping until the job ends. Before, the mapping
  // kept its heap and the heap's cache too: ~4000 bytes a cycle more.
  t.true(r.jobLock - r.jobBare < 1500, `${Math.round(r.jobLock)} bytes a cycle, ${Math.round(r.jobBare)} without the lock`)
})

test('the cache of a Heap collected with its unclosed mapping goes back to the heap; ENOMEM flushes the dropped ones not collected yet', async (t) => {
  t.timeout(120_000)
  const mem = segment(t, 64 << 10)
  const heap = mem.heap
  const child = gcChild(t, ['dropped', mem.name!])
  const r = await child.message<{ cachedBefore: number; cachedAfterGc: number; failedAt: string | null; cached: number; used: number }>()
  t.is(r.cachedBefore, 40)
  t.is(r.cachedAfterGc, 0, 'collection flushed the caches of the dropped mappings\' heaps')
  t.is(r.failedAt, null, 'no ENOMEM while the heap was all free, but for blocks this thread cached')
  t.like(r, { cached: 0, used: 0 })
  // Another process (this one) gets the whole heap while the child lives, holding its
  // token (so nothing of its cache would be reclaimed as a dead thread's).
  t.like(heap.stats(), { cached: 0, used: 0 })
  heap.free(heap.malloc(60_000))
  child.proc.send('exit')
  await child.exited
  heap.check()
})

test('blocks cached through several live mappings of one segment in one thread: trim() and an allocation that finds the heap full take them all back', async (t) => {
  t.timeout(60_000)
  const mem = segment(t, 64 << 10)
  const views: MappedMemory[] = []
  t.teardown(() => views.forEach((m) => m.close()))
  // Each mapping object has its own Heap object and cache: the freed block stays cached
  // in it. The heap holds ~234 such blocks: the next malloc must flush the others.
  for (let i = 0; i < 300; i++) {
    const m = MappedMemory.open(mem.name!)
    views.push(m)
    m.heap.free(m.heap.malloc(256))
  }
  const { cached } = mem.heap.stats()
  t.true(cached > 0 && cached < 300, `${cached} cached`)
  // Through a mapping that cached nothing: trim() returns every cache of this thread.
  t.is(mem.heap.trim(), cached)
  t.like(mem.heap.stats(), { cached: 0, used: 0 })
  // Fewer than fill the heap, which then cannot hold 60 000 bytes in one block unless
  // they all go back.
  for (const v of views.slice(0, 200)) v.heap.free(v.heap.malloc(256))
  t.is(mem.heap.stats().cached, 200)
  mem.heap.free(mem.heap.malloc(60_000))
  t.like(mem.heap.stats(), { cached: 0, used: 0 }, 'ENOMEM flushed every cache of the heap in this thread')
  // Another process, meanwhile, gets the whole heap.
  const child = gcChild(t, ['malloc', mem.name!, '60000'], false)
  t.deepEqual(await child.message(), { ok: true })
  mem.heap.check()
})
