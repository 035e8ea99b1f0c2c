/**
 * Rows 4.x: the shared heap (`mem.heap.malloc` / `free`), once it is there. A malloc+free
 * in one process is compared with one uncontended Lock round trip (the least a heap that
 * any process may use at any time can cost; small blocks a thread frees come back from
 * its cache, lib/heap-cache.ts, so the pair makes no native call); three processes churning one heap are
 * compared with one process doing the same churn (what sharing costs per operation).
 * @module
 */
import { Lock } from '../../dist/index.js'
import { alternate, perCall } from '../measure.mjs'
import { runParallel } from '../parallel.mjs'
import { withSegment } from '../segments.mjs'

/** @param {import('./row.mjs').Context} ctx */
const noHeap = (ctx) => (ctx.features.heap ? null : 'skipped: heap not available')

/**
 * The heap of a managed segment (typed loosely: the heap lands on main separately).
 * @param {import('../../dist/index.js').MappedMemory} mem
 * @returns {{ malloc(size: number): number, free(offset: number): void, check?(): void }}
 */
const heapOf = (mem) => /** @type {any} */ (mem).heap

/** @type {import('./row.mjs').Row[]} */
export const heapRows = [
  {
    id: '4.1',
    key: 'heap-malloc-free-vs-lock',
    subject: 'heap.malloc(64) + heap.free(), 1 process',
    baseline: 'Lock acquire()+release(), uncontended',
    per: 'malloc+free',
    goal: 1.6,
    skip: noHeap,
    run: (ctx) =>
      withSegment('heap', { size: 1 << 20, managed: true }, async (mem) => {
        const heap = heapOf(mem)
        const lock = Lock.at(mem, heap.malloc(64))
        const measured = await alternate(
          perCall(() => heap.free(heap.malloc(64)), ctx.effort),
          perCall(() => {
            lock.acquire()
            lock.release()
          }, ctx.effort),
          ctx.effort.rounds,
        )
        heap.check?.()
        return { ...measured, params: { size: 64 } }
      }),
  },
  {
    id: '4.2',
    key: 'heap-churn-3-processes-vs-1',
    subject: 'heap churn, 3 processes on one heap',
    baseline: 'the same churn, 1 process',
    per: 'malloc+free, all processes',
    skip: noHeap,
    run: (ctx) => {
      const pairs = ctx.quick ? 2_000 : 100_000
      return withSegment('heap', { size: 16 << 20, managed: true }, async (mem) => {
        /** @param {number} n */
        const churn = (n) => async () => {
          const run = await runParallel({ script: 'heap-churn.mjs', n, job: { memory: mem, pairs } })
          heapOf(mem).check?.()
          return run.spanNs / (n * pairs)
        }
        const measured = await alternate(churn(3), churn(1), ctx.effort.rounds)
        return { ...measured, params: { pairsPerProcess: pairs, sizes: '16..256 B, 32 live blocks' } }
      })
    },
  },
]
