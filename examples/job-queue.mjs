// A job queue between processes: the parent sends jobs into a Channel in shared memory,
// forked workers take them (each job exactly once) and send results back on another
// Channel; closing the job channel lets the workers drain it and stop.
//
//   node examples/job-queue.mjs [workers] [jobs]
import assert from 'node:assert/strict'
import { fork } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { Channel, MappedMemory, revive } from 'shmutils'

/**
 * @typedef {{ id: number, n: number }} Job
 * @typedef {{ id: number, square: number, by: number }} Result
 * @typedef {{ jobs: Channel<Job>, results: Channel<Result> }} Queues
 */

if (process.argv[2] === 'worker') {
  /** @type {Queues} */
  const { jobs, results } = revive(JSON.parse(process.argv[3])) // handles, as JSON
  let done = 0
  for await (const job of jobs) {
    // ...real work here...
    results.send({ id: job.id, square: job.n * job.n, by: process.pid })
    done++
  }
  process.send?.({ done }, () => process.exit(0))
} else {
  const WORKERS = Number(process.argv[2] ?? 3)
  const JOBS = Number(process.argv[3] ?? 20_000)
  const mem = MappedMemory.create(`/shmutils-jobs-${process.pid}`, { size: 8 << 20, unlinkOnExit: true })
  /** @type {Channel<Job>} */
  const jobs = new Channel(mem, { capacity: 1 << 20 })
  /** @type {Channel<Result>} */
  const results = new Channel(mem, { capacity: 1 << 20 })
  const t0 = performance.now()
  const shared = JSON.stringify({ jobs, results })
  const workers = Array.from({ length: WORKERS }, () => fork(fileURLToPath(import.meta.url), ['worker', shared]))
  const counts = workers.map(
    (w) =>
      new Promise((resolve, reject) => {
        w.once('message', (/** @type {{ done: number }} */ m) => resolve(m.done))
        w.once('exit', (code) => (code === 0 ? undefined : reject(new Error(`a worker failed (${code})`))))
      }),
  )
  let sum = 0
  const collect = (async () => {
    for (let i = 0; i < JOBS; i++) sum += (await results.receiveAsync()).square
  })()
  for (let i = 0; i < JOBS; i++) await jobs.sendAsync({ id: i, n: i % 1000 })
  jobs.close() // the workers drain what is left, then their loops end
  await collect
  const done = await Promise.all(counts)
  let expected = 0
  for (let i = 0; i < JOBS; i++) expected += (i % 1000) ** 2
  console.log(`${JOBS} jobs through ${WORKERS} workers in ${(performance.now() - t0).toFixed(0)} ms; per worker ${done.join(' + ')}`)
  console.log(`sum of results ${sum} (expected ${expected})`)
  assert.equal(sum, expected, 'every job done once')
  assert.equal(done.reduce((a, b) => a + b, 0), JOBS)
  mem.close()
}
