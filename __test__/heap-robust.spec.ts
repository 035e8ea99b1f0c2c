import { spawnSync } from 'node:child_process'
import vm from 'node:vm'
import test from 'ava'
import { MappedMemory } from '../dist/index.js'
import { fixture, forkChild, seededRandom, segmentName } from './helpers.js'

test('a process SIGKILLed at random moments while churning the heap, 50 times: the survivor goes on and check() passes', async (t) => {
  const mem = MappedMemory.create(segmentName(t, 'robust'), { size: 4 << 20 })
  t.teardown(() => mem.close())
  const heap = mem.heap
  const handle = JSON.parse(JSON.stringify(mem))
  const rand = seededRandom(7)
  let survivorOps = 0
  for (let round = 0; round < 50; round++) {
    const child = forkChild(t, 'heap-churn-forever.mjs')
    child.proc.send(handle)
    await child.message()
    await new Promise((r) => setTimeout(r, 1 + rand() * 15))
    child.proc.kill('SIGKILL')
    t.is(await child.exited, 'SIGKILL')
    // The survivor: if the child died holding the heap lock, this recovers it (and
    // repairs the heap) within one 50 ms wait slice.
    const mine: number[] = []
    for (let i = 0; i < 200; i++) {
      mine.push(heap.malloc(1 + Math.floor(rand() * 1024)))
      if (i % 3 === 0) heap.free(mine.shift()!)
    }
    mine.forEach((o) => heap.free(o))
    survivorOps += 200
    heap.check()
  }
  t.notThrows(() => heap.check())
  t.is(survivorOps, 50 * 200)
  t.true(heap.stats().largestFree > 0)
})

test('a peer SIGKILLed while constructing a named object in place (FORMAT.md §5, as a C program may): the name is taken back whole, by a process waiting for it and by a later find()', async (t) => {
  const mem = MappedMemory.create(segmentName(t, 'nameddies'), { size: 1 << 20 })
  t.teardown(() => mem.close())
  const handle = JSON.parse(JSON.stringify(mem))
  const flag = mem.new('int32_t', 0)
  const before = mem.heap.stats()
  for (const waiter of [true, false]) {
    flag.value = 0
    const constructor = forkChild(t, 'named-dies.mjs')
    constructor.proc.send({ mem: handle, flag, role: 'constructor' })
    // Its entry names it constructing, and it has not published it (300 ms, then it dies).
    const t0 = Date.now()
    while (flag.value === 0 && Date.now() - t0 < 20_000) await new Promise((r) => setTimeout(r, 5))
    t.is(flag.value, 1, 'the constructor reached the window')
    let got: Promise<{ a: number; b: number; offset: number }> | undefined
    if (waiter) {
      // A second process asks for the object while it is being constructed: it waits,
      // finds the constructor dead, takes the name back and constructs it itself.
      const other = forkChild(t, 'named-dies.mjs')
      other.proc.send({ mem: handle, role: 'waiter' })
      got = other.message()
    }
    t.is(await constructor.exited, 'SIGKILL')
    if (got) {
      const r = await got
      t.deepEqual([r.a, r.b], [5, 6])
      const found = mem.heap.find<{ a: number; b: number }>('cfg') as unknown as { a: number; b: number; offset: number }
      t.deepEqual([found.a, found.b, found.offset], [5, 6, r.offset])
      t.true(mem.heap.unname('cfg'))
      mem.heap.free(r.offset)
    } else {
      // Nobody waited: the next look takes it back; the name is free for a new object.
      t.is(mem.heap.find('cfg'), undefined)
    }
    mem.heap.check()
    const after = mem.heap.stats()
    t.deepEqual([after.allocations, after.used], [before.allocations, before.used], 'the half-made object and its entry were freed')
  }
})

test('heap.named() stopped by a vm timeout at any point leaves no name reserved by this live thread: each is published, or was never made', (t) => {
  // It reserved the name natively, copied its init in JavaScript and published it in a
  // finally, which a vm timeout skips: the name stayed "being constructed" by this thread
  // for good (every find or named of it waited 10 s, then ETIMEDOUT, in every process).
  const mem = MappedMemory.create(segmentName(t, 'vm-named'), { size: 16 << 20 })
  t.teardown(() => mem.close())
  const ctx = vm.createContext({ heap: mem.heap, out: { i: 0 } })
  let interrupted = 0
  for (let trial = 0; trial < 12; trial++) {
    try {
      vm.runInContext(`for (;;) heap.named('n' + out.i++, 'int32_t[4]', [1, 2, 3, 4])`, ctx, { timeout: 1 + (trial % 3) })
    } catch (e) {
      if ((e as { code?: string }).code !== 'ERR_SCRIPT_EXECUTION_TIMEOUT') throw e
      interrupted++
    }
    const last = `n${(ctx.out as { i: number }).i - 1}`
    const t0 = performance.now()
    const found = mem.heap.find<number[]>(last)
    t.true(performance.now() - t0 < 1000, `find('${last}') did not wait for a constructor`)
    if (found !== undefined) t.deepEqual([...(found as unknown as Iterable<number>)], [1, 2, 3, 4])
    t.is(mem.heap.named(last, 'int32_t[4]', [1, 2, 3, 4]).offset > 0, true)
  }
  t.true(interrupted > 0)
  mem.heap.check()
})

test('heap.check() and `shmutils inspect` of a heap of 1.4 million blocks, with this process out of address space: ENOMEM, and both pass once memory is back', (t) => {
  // The checker keeps tables that grow with the heap's block count (here 32 MiB).
  const name = segmentName(t, 'oom')
  const r = spawnSync(process.execPath, [fixture('heap-check-oom.mjs'), name], { encoding: 'utf8', timeout: 120_000 })
  // Before: "memory allocation of 33554432 bytes failed", SIGABRT.
  t.is(r.signal, null, r.stderr)
  t.is(r.status, 0, r.stderr)
  const out = JSON.parse(r.stdout)
  t.true(out.blocks > 1_000_000, `${out.blocks} blocks`)
  const enomem = "this process is out of memory for a table of the heap's blocks (check, repair, inspect)"
  t.deepEqual(out.short, { check: { code: 'ENOMEM', message: enomem }, inspect: `ENOMEM: ${enomem}` })
  t.deepEqual(out.after, { check: 'ok', inspect: 'ok' })
})
