import test from 'ava'
import { MappedMemory } from '../dist/index.js'
import { forkChild, seededRandom, segmentName } from './helpers.js'

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

test('a process SIGKILLed while constructing heap.named(): the name is taken back whole, by a process waiting for it and by a later find()', async (t) => {
  const mem = MappedMemory.create(segmentName(t, 'nameddies'), { size: 1 << 20 })
  t.teardown(() => mem.close())
  const handle = JSON.parse(JSON.stringify(mem))
  const flag = mem.new('int32_t', 0)
  const before = mem.heap.stats()
  for (const waiter of [true, false]) {
    flag.value = 0
    const constructor = forkChild(t, 'named-dies.mjs')
    constructor.proc.send({ mem: handle, flag, role: 'constructor' })
    // It reserved the name and wrote the init, and has not published it (300 ms, then it dies).
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
