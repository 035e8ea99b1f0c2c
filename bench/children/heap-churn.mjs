// Child: churns a shared heap: `pairs` malloc+free pairs over 32 live blocks of mixed
// small sizes, freed in a different order than allocated (after a warm-up churn).
import { revive } from '../../dist/index.js'
import { serve } from './serve.mjs'

const SIZES = [16, 24, 32, 48, 64, 96, 128, 256]
const SLOTS = 32

/**
 * @param {{ malloc(size: number): number, free(offset: number): void }} heap
 * @param {number} pairs
 */
function churn(heap, pairs) {
  const live = new Array(SLOTS).fill(-1)
  for (let i = 0; i < pairs; i++) {
    const slot = (i * 7) % SLOTS
    if (live[slot] >= 0) heap.free(live[slot])
    live[slot] = heap.malloc(SIZES[i % SIZES.length])
  }
  for (const offset of live) if (offset >= 0) heap.free(offset)
  return pairs
}

serve((job) => {
  const heap = /** @type {any} */ (revive(job.memory)).heap
  // Warm-up long enough for the JIT to settle (the first 100,000 pairs of a cold process
  // run several times slower), as the counter children do.
  churn(heap, Math.min(job.pairs, 20_000))
  return () => churn(heap, job.pairs)
})
