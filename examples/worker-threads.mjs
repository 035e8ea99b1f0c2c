// Worker threads summing one array in shared memory, zero-copy: the main thread fills a
// double[1_000_000] in a segment, four threads each sum a quarter straight from the
// shared bytes and add it to a total under a Lock. No array is copied to a thread.
//
//   node examples/worker-threads.mjs
import assert from 'node:assert/strict'
import { Worker, isMainThread, workerData } from 'node:worker_threads'
import { Lock, MappedMemory, revive } from 'shmutils'

const N = 1_000_000
const THREADS = 4

if (isMainThread) {
  const mem = MappedMemory.create(`/shmutils-example-threads-${process.pid}`, { size: 16 << 20 })
  try {
    const data = mem.new(`double[${N}]`)
    const xs = new Float64Array(mem.buffer, data.offset, N) // the same bytes, as a typed array
    for (let i = 0; i < N; i++) xs[i] = i % 7
    const total = mem.new('double', 0)
    const lock = new Lock(mem)
    const shared = JSON.stringify({ data, total, lock }) // handles travel as JSON
    const t0 = performance.now()
    const workers = Array.from({ length: THREADS }, (_, k) => new Worker(new URL(import.meta.url), { workerData: { shared, k } }))
    await Promise.all(workers.map((w) => new Promise((resolve, reject) => w.on('exit', resolve).on('error', reject))))
    const ms = performance.now() - t0
    const expected = xs.reduce((a, b) => a + b, 0)
    console.log(`${THREADS} threads summed ${N} doubles in shared memory: ${total.value} (${ms.toFixed(1)} ms)`)
    assert.equal(total.value, expected)
  } finally {
    mem.close()
    mem.unlink()
  }
} else {
  /** @type {{ data: import('shmutils').Ref<number[]>, total: import('shmutils').Ref<number>, lock: Lock }} */
  const { data, total, lock } = revive(JSON.parse(workerData.shared))
  const xs = new Float64Array(data.memory.buffer, data.offset, N)
  const per = N / THREADS
  let sum = 0
  for (let i = workerData.k * per; i < (workerData.k + 1) * per; i++) sum += xs[i]
  lock.withLock(() => {
    total.value += sum
  })
}
