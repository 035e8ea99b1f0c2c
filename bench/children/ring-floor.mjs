// Child: one end of a bare ring in shared memory, for the floor row 9.5: the producer
// (index 0) writes `n` int32 messages, the consumer (index 1) reads them and returns
// their sum. Atomics only: no lock, no journal, no codec, no wake-ups (both spin) —
// the least a message between two processes through shared memory costs here.
import { revive } from '../../dist/index.js'
import { serve } from './serve.mjs'

/** Words: head (consumers'), tail (producers', on another cache line), then the ring. */
const HEAD = 0
const TAIL = 16
const RING = 32
const SLOTS = 1 << 16

serve((job, { index }) => {
  const mem = /** @type {import('../../dist/index.js').MappedMemory} */ (revive(job.mem))
  const a = new Int32Array(mem.buffer, 0, RING + SLOTS)
  const n = job.n
  if (index === 0) {
    return () => {
      let head = 0
      for (let tail = 0; tail < n; ) {
        while (tail - head >= SLOTS) head = Atomics.load(a, HEAD)
        a[RING + (tail & (SLOTS - 1))] = tail
        Atomics.store(a, TAIL, ++tail)
      }
      return n
    }
  }
  return () => {
    let sum = 0
    let tail = 0
    for (let head = 0; head < n; ) {
      while (tail === head) tail = Atomics.load(a, TAIL)
      sum += a[RING + (head & (SLOTS - 1))]
      Atomics.store(a, HEAD, ++head)
    }
    return sum
  }
})
