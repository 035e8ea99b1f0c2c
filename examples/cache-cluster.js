// A cache shared by cluster workers, where an app would otherwise run Redis: every
// worker reads and writes one SharedMap in shared memory (no server, no sockets, no
// serialization round trip), with an LRU bound, a time to live, and an atomic counter.
//
//   node examples/cache-cluster.js [workers] [requests per worker]
'use strict'
const cluster = require('node:cluster')
const { MappedMemory, SharedMap, revive } = require('..')

const WORKERS = Number(process.argv[2] ?? 4)
const REQUESTS = Number(process.argv[3] ?? 20_000)

/** The "database" the cache saves us from: slow on purpose (0.1 ms). */
function loadUser(id) {
  const until = performance.now() + 0.1
  while (performance.now() < until);
  return { id, name: `user ${id}`, roles: ['reader'], loadedBy: process.pid }
}

if (cluster.isPrimary) {
  // unlinkOnExit: the name goes away with this process, even if it is killed by a signal.
  const mem = MappedMemory.create(`/shmutils-cache-${process.pid}`, { size: 16 << 20, unlinkOnExit: true })
  const cache = new SharedMap(mem, { maxEntries: 1000, ttl: 60_000 }) // users, LRU-bounded
  const stats = new SharedMap(mem) // counters
  const t0 = process.hrtime.bigint()
  for (let i = 0; i < WORKERS; i++) cluster.fork().send({ cache, stats }) // handles
  let done = 0
  cluster.on('exit', (worker, code) => {
    if (code !== 0) process.exitCode = 1
    if (++done < WORKERS) return
    const ms = Number(process.hrtime.bigint() - t0) / 1e6
    const hits = stats.get('hits') ?? 0
    const misses = stats.get('misses') ?? 0
    console.log(`${WORKERS} workers × ${REQUESTS} requests in ${ms.toFixed(0)} ms: ${hits} hits, ${misses} misses`)
    console.log(`cache holds ${cache.size} users (bound 1000); user 7 is ${JSON.stringify(cache.get('user:7'))}`)
    if (hits + misses !== WORKERS * REQUESTS || cache.size > 1000) process.exitCode = 1
    mem.close()
  })
} else {
  process.once('message', (msg) => {
    const { cache, stats } = revive(msg) // the same maps, mapped in this process
    for (let i = 0; i < REQUESTS; i++) {
      const id = Math.floor(Math.random() ** 3 * 2000) // a few hot users, a long tail
      let user = cache.get(`user:${id}`)
      if (user === undefined) {
        user = loadUser(id)
        cache.set(`user:${id}`, user)
        stats.update('misses', (n = 0) => n + 1) // atomic across the cluster
      } else {
        stats.update('hits', (n = 0) => n + 1)
      }
    }
    process.exit(0)
  })
}
