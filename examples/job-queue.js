// A job queue between processes: the primary sends jobs into a Channel in shared memory,
// forked workers take them (each job exactly once), and send results back on another
// Channel; closing the job channel lets the workers drain it and stop.
//
//   node examples/job-queue.js [workers] [jobs]
'use strict'
const { fork } = require('node:child_process')
const { MappedMemory, Channel, revive } = require('..')

if (process.argv[2] === 'worker') {
  process.once('message', async (msg) => {
    const { jobs, results } = revive(msg)
    let done = 0
    for await (const job of jobs) {
      // ...real work here...
      results.send({ id: job.id, square: job.n * job.n, by: process.pid })
      done++
    }
    process.send({ done }, () => process.exit(0))
  })
} else {
  const WORKERS = Number(process.argv[2] ?? 3)
  const JOBS = Number(process.argv[3] ?? 100_000)
  const mem = MappedMemory.create(`/shmutils-jobs-${process.pid}`, { size: 8 << 20, unlinkOnExit: true })
  const jobs = new Channel(mem, { capacity: 1 << 20 })
  const results = new Channel(mem, { capacity: 1 << 20 })
  const workers = Array.from({ length: WORKERS }, () => fork(__filename, ['worker']))
  for (const w of workers) {
    w.send({ jobs, results })
    w.on('exit', (code) => {
      if (code !== 0) {
        console.error(`a worker failed (${code})`)
        process.exit(1)
      }
    })
  }
  const t0 = process.hrtime.bigint()
  ;(async () => {
    let sum = 0
    const collect = (async () => {
      for (let i = 0; i < JOBS; i++) sum += (await results.receiveAsync()).square
    })()
    for (let i = 0; i < JOBS; i++) await jobs.sendAsync({ id: i, n: i % 1000 })
    jobs.close() // workers drain what is left, then their loops end
    await collect
    const counts = await Promise.all(workers.map((w) => new Promise((r) => w.once('message', (m) => r(m.done)))))
    const ms = Number(process.hrtime.bigint() - t0) / 1e6
    let expected = 0
    for (let i = 0; i < JOBS; i++) expected += (i % 1000) ** 2
    console.log(`${JOBS} jobs through ${WORKERS} workers in ${ms.toFixed(0)} ms; per worker ${counts.join(' + ')}`)
    console.log(`sum of results ${sum} (expected ${expected})`)
    process.exitCode = sum === expected && counts.reduce((a, b) => a + b, 0) === JOBS ? 0 : 1
    mem.close()
  })()
}
