// A cache shared by cluster workers, where an app would otherwise run Redis: every
// worker reads and writes one SharedMap in shared memory (no server, no socket, no
// round trip), with an LRU bound, a time to live, and atomic counters.
//
//   node examples/cache-cluster.mjs [workers] [requests per worker]
import assert from 'node:assert/strict'
import cluster from 'node:cluster'
import { MappedMemory, SharedMap, revive } from 'shmutils'

const WORKERS = Number(process.argv[2] ?? 4)
const REQUESTS = Number(process.argv[3] ?? 5_000)

/**
 * @typedef {{ id: number, name: string, roles: string[], loadedBy: number }} User
 * @typedef {{ cache: SharedMap<string, User>, stats: SharedMap<string, number> }} Shared
 */

/**
 * The "database" the cache saves us from: slow on purpose (0.1 ms).
 * @param {number} id
 * @returns {User}
 */
function loadUser(id) {
  const until = performance.now() + 0.1
  while (performance.now() < until);
  return { id, name: `user ${id}`, roles: ['reader'], loadedBy: process.pid }
}

if (cluster.isPrimary) {
  // unlinkOnExit: the name goes away with this process, even if a signal ends it.
  const mem = MappedMemory.create(`/shmutils-cache-${process.pid}`, { size: 16 << 20, unlinkOnExit: true })
  /** @type {SharedMap<string, User>} */
  const cache = new SharedMap(mem, { maxEntries: 1000, ttl: 60_000 }) // users, LRU-bounded
  /** @type {SharedMap<string, number>} */
  const stats = new SharedMap(mem) // counters
  const t0 = performance.now()
  // Handles are JSON: here they travel in each worker's environment.
  for (let i = 0; i < WORKERS; i++) cluster.fork({ SHARED: JSON.stringify({ cache, stats }) })
  let done = 0
  cluster.on('exit', (_worker, code) => {
    assert.equal(code, 0, 'a worker failed')
    if (++done < WORKERS) return
    const hits = stats.get('hits') ?? 0
    const misses = stats.get('misses') ?? 0
    console.log(`${WORKERS} workers × ${REQUESTS} requests in ${(performance.now() - t0).toFixed(0)} ms: ${hits} hits, ${misses} misses`)
    console.log(`cache holds ${cache.size} users (bound 1000); user 7 is ${JSON.stringify(cache.get('user:7'))}`)
    assert.equal(hits + misses, WORKERS * REQUESTS, 'every request counted once')
    assert.ok(cache.size <= 1000, 'the LRU bound holds')
    mem.close()
  })
} else {
  /** @type {Shared} */
  const { cache, stats } = revive(JSON.parse(process.env.SHARED ?? '{}')) // the same maps, mapped here
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
}
