// The main example: cluster workers increment one counter in shared memory under a
// process-shared Lock. The primary holds the lock while the workers start (as in the
// original shmutils example), then lets them race to 20,000 and checks the result.
//
//   npm run demo            (builds, then runs this file)
//   node examples/counter.js [workers] [limit]
'use strict'
const cluster = require('node:cluster')
const { MappedMemory, Lock, revive } = require('..')

const WORKERS = Number(process.argv[2] ?? 2)
const LIMIT = Number(process.argv[3] ?? 20_000)

if (cluster.isPrimary) {
  const mem = MappedMemory.create(`/shmutils-demo-${process.pid}`, { size: 4096 * 100 })
  const lock = new Lock(mem) // a futex lock allocated in the segment's heap
  const counter = mem.new('size_t', 0) // a typed reference to a u64 in the heap

  lock.acquire() // nobody counts until every worker is up
  let ready = 0
  const counts = []
  const t0 = process.hrtime.bigint()
  for (let i = 0; i < WORKERS; i++) {
    const w = cluster.fork()
    w.on('message', (msg) => {
      if (msg.ready && ++ready === WORKERS) {
        lock.release()
        for (const id in cluster.workers) cluster.workers[id].send('go')
      }
      if (msg.count !== undefined) counts.push(msg.count)
    })
    w.send({ lock, counter, limit: LIMIT }) // handles: toJSON() on the way, revive() there
  }
  let exited = 0
  cluster.on('exit', () => {
    if (++exited < WORKERS) return
    const ms = Number(process.hrtime.bigint() - t0) / 1e6
    const value = counter.value
    const sum = counts.reduce((a, b) => a + b, 0)
    console.log(`counter = ${value} (limit ${LIMIT}); per worker: ${counts.join(' + ')} = ${sum}`)
    console.log(`${WORKERS} workers, ${ms.toFixed(1)} ms in total including startup`)
    mem.close()
    mem.unlink()
    process.exitCode = value === BigInt(LIMIT) && sum === LIMIT ? 0 : 1
  })
} else {
  process.once('message', (msg) => {
    const { lock, counter, limit } = revive(msg) // the same bytes, mapped in this process
    process.send({ ready: true })
    process.once('message', () => {
      let mine = 0
      const t0 = process.hrtime.bigint()
      for (;;) {
        lock.acquire()
        const v = counter.value
        if (v >= BigInt(limit)) {
          lock.release()
          break
        }
        counter.value = v + 1n
        lock.release()
        mine++
      }
      const us = Number(process.hrtime.bigint() - t0) / 1e3
      console.log(`worker ${process.pid}: ${mine} increments in ${(us / 1000).toFixed(2)} ms`)
      process.send({ count: mine }, () => process.disconnect())
    })
  })
}
