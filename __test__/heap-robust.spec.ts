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
