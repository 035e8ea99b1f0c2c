/**
 * Rows 8.x: SharedMap get and set of a small object against what users reach for
 * instead: Redis on loopback (1 and 4 processes), the `lmdb` package, and an in-process
 * `Map` holding `v8.serialize` output; and lock striping (16 stripes against 1) with 4
 * processes on different keys.
 * @module
 */
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import v8 from 'node:v8'
import { SharedMap } from '../../dist/index.js'
import { alternate, medianOfRuns } from '../measure.mjs'
import { runParallel } from '../parallel.mjs'
import { startRedis } from '../redis.mjs'
import { RespClient } from '../resp.mjs'
import { withSegment } from '../segments.mjs'

/** The small object every row stores (57 bytes in the v8 format). */
const VALUE = { id: 12345, name: 'user-12345', tags: ['a', 'b'], active: true }
/** Distinct keys the rows cycle through. */
const KEYS = 1000

/**
 * Operations per run.
 * @param {import('./row.mjs').Context} ctx
 * @param {'fast' | 'slow'} kind - slow: a network round trip per operation
 */
const opsOf = (ctx, kind) => (kind === 'slow' ? (ctx.quick ? 500 : 20_000) : ctx.quick ? 5_000 : 200_000)

/**
 * Runs `fn` with a fresh SharedMap holding every key.
 * @template T
 * @param {import('../../dist/index.js').SharedMapOptions} options
 * @param {(map: SharedMap<string, unknown>) => Promise<T>} fn
 * @returns {Promise<T>}
 */
function withMap(options, fn) {
  return withSegment('map', { size: 64 << 20, managed: true }, (mem) => {
    const map = new SharedMap(mem, { capacity: 4 * KEYS, ...options })
    for (let i = 0; i < 4 * KEYS; i++) map.set(`user:${i}`, VALUE)
    return fn(map)
  })
}

/**
 * ns per operation of a loop of `n` operations in this process.
 * @param {number} n
 * @param {(key: string) => unknown} op
 */
function loop(n, op) {
  const keys = Array.from({ length: KEYS }, (_, i) => `user:${i}`)
  return async () => {
    const t0 = process.hrtime.bigint()
    for (let i = 0; i < n; i++) await op(keys[i % KEYS])
    return Number(process.hrtime.bigint() - t0) / n
  }
}

/**
 * The same, for a synchronous operation (no await per call).
 * @param {number} n
 * @param {(key: string) => unknown} op
 */
function syncLoop(n, op) {
  const keys = Array.from({ length: KEYS }, (_, i) => `user:${i}`)
  let warm = false
  return async () => {
    if (!warm) {
      warm = true
      for (let i = 0; i < n; i++) op(keys[i % KEYS])
    }
    const t0 = process.hrtime.bigint()
    for (let i = 0; i < n; i++) op(keys[i % KEYS])
    return Number(process.hrtime.bigint() - t0) / n
  }
}

/**
 * ns per operation, all processes together, of `procs` processes doing `n` operations each.
 * @param {string} script
 * @param {number} procs
 * @param {Record<string, unknown>} job
 * @param {number} n
 */
function parallel(script, procs, job, n) {
  return async () => {
    const run = await runParallel({ script, n: procs, job: { ...job, n, value: VALUE, keys: KEYS } })
    return run.spanNs / (procs * n)
  }
}

/**
 * A Redis row: SharedMap `op` against Redis `op` with `procs` processes.
 * @param {import('./row.mjs').Context} ctx
 * @param {'get' | 'set'} op
 * @param {number} procs
 * @returns {Promise<import('./row.mjs').Measured>}
 */
async function againstRedis(ctx, op, procs) {
  const server = await startRedis(/** @type {string} */ (ctx.features.redis))
  try {
    const client = await RespClient.connect(server.port)
    for (let i = 0; i < KEYS; i++) await client.command('SET', `user:${i}`, JSON.stringify(VALUE))
    client.close()
    const slow = opsOf(ctx, 'slow')
    const fast = opsOf(ctx, 'fast')
    return await withMap({}, async (map) => {
      const subject = procs === 1 ? syncLoop(fast, mapOp(map, op)) : parallel('map-ops.mjs', procs, { map: map.toJSON(), op }, fast)
      const baseline = procs === 1 ? redisLoop(server.port, op, slow) : parallel('redis-ops.mjs', procs, { port: server.port, op }, slow)
      const m = await alternate(subject, baseline, ctx.effort.slowRounds)
      return { ...m, params: { processes: procs, operations: { shmutils: fast, redis: slow }, keys: KEYS } }
    })
  } finally {
    await server.stop()
  }
}

/**
 * Redis GET (with JSON.parse) or SET (with JSON.stringify) from this process.
 * @param {number} port
 * @param {'get' | 'set'} op
 * @param {number} n
 */
function redisLoop(port, op, n) {
  return async () => {
    const client = await RespClient.connect(port)
    try {
      return await loop(n, op === 'get' ? async (k) => JSON.parse(String(await client.command('GET', k))) : (k) => client.command('SET', k, JSON.stringify(VALUE)))()
    } finally {
      client.close()
    }
  }
}

/** Why the Redis rows cannot run, or null. @param {import('./row.mjs').Context} ctx */
const redisSkip = (ctx) => (ctx.quick ? 'skipped: not in --quick' : ctx.features.redis ? null : 'skipped: no redis-server on PATH (Debian: apt-get install redis-server)')

/** The lmdb package (a devDependency), or null where it does not load. */
const lmdb = await import('lmdb').catch(() => null)
/** Why the lmdb rows cannot run, or null. */
const lmdbSkip = () => (lmdb ? null : 'skipped: the lmdb package does not load here (npm install)')

/**
 * An lmdb row: SharedMap `op` against lmdb `op` (get, or put awaited to commit), 1 process.
 * @param {import('./row.mjs').Context} ctx
 * @param {'get' | 'set'} op
 * @returns {Promise<import('./row.mjs').Measured>}
 */
async function againstLmdb(ctx, op) {
  if (!lmdb) throw new Error('the lmdb package is not installed')
  const dir = mkdtempSync(join(tmpdir(), 'shmutils-bench-lmdb-'))
  const db = lmdb.open({ path: dir, noSync: true })
  try {
    for (let i = 0; i < KEYS; i++) db.putSync(`user:${i}`, VALUE)
    const n = opsOf(ctx, 'fast')
    return await withMap({}, async (map) => {
      const subject = syncLoop(n, mapOp(map, op))
      const baseline =
        op === 'get'
          ? syncLoop(n, (k) => db.get(k))
          : async () => {
              // Puts are batched into transactions on lmdb's own thread: time until the last commits.
              const keys = Array.from({ length: KEYS }, (_, i) => `user:${i}`)
              const t0 = process.hrtime.bigint()
              let last
              for (let i = 0; i < n; i++) last = db.put(keys[i % KEYS], VALUE)
              await last
              return Number(process.hrtime.bigint() - t0) / n
            }
      const m = await alternate(subject, baseline, ctx.effort.rounds)
      return { ...m, params: { operations: n, keys: KEYS, lmdb: 'open({ noSync: true }), msgpack values' } }
    })
  } finally {
    await db.close()
    rmSync(dir, { recursive: true, force: true })
  }
}

/**
 * An in-process row: SharedMap `op` against a `Map` of the same keys holding
 * `v8.serialize` output (get: `v8.deserialize` of it; set: of a fresh `v8.serialize`).
 * @param {import('./row.mjs').Context} ctx
 * @param {'get' | 'set'} op
 */
function againstLocalMap(ctx, op) {
  const n = opsOf(ctx, 'fast')
  const local = new Map(Array.from({ length: KEYS }, (_, i) => [`user:${i}`, v8.serialize(VALUE)]))
  const baseline = op === 'get' ? syncLoop(n, (k) => v8.deserialize(/** @type {Buffer} */ (local.get(k)))) : syncLoop(n, (k) => local.set(k, v8.serialize(VALUE)))
  return withMap({}, (map) => alternate(syncLoop(n, mapOp(map, op)), baseline, ctx.effort.rounds))
}

/**
 * The SharedMap operation of a row on key `k`: get, or set of the row's value.
 * @param {SharedMap<string, unknown>} map
 * @param {'get' | 'set'} op
 * @returns {(k: string) => unknown}
 */
const mapOp = (map, op) => (op === 'get' ? (k) => map.get(k) : (k) => map.set(k, VALUE))

/** @type {import('./row.mjs').Row[]} */
export const mapRows = [
  {
    id: '8.1',
    key: 'map-get-vs-redis',
    subject: 'SharedMap get of a small object, 1 process',
    baseline: 'Redis GET + JSON.parse on loopback, 1 client',
    per: 'get',
    goal: 1 / 200,
    skip: redisSkip,
    run: (ctx) => againstRedis(ctx, 'get', 1),
  },
  {
    id: '8.2',
    key: 'map-set-vs-redis',
    subject: 'SharedMap set of a small object, 1 process',
    baseline: 'Redis SET of JSON.stringify on loopback, 1 client',
    per: 'set',
    goal: 1 / 200,
    skip: redisSkip,
    run: (ctx) => againstRedis(ctx, 'set', 1),
  },
  {
    id: '8.3',
    key: 'map-get-4p-vs-redis',
    subject: 'SharedMap get, 4 processes at once',
    baseline: 'Redis GET + JSON.parse, 4 client processes',
    per: 'get (all processes)',
    goal: 1 / 200,
    skip: redisSkip,
    run: (ctx) => againstRedis(ctx, 'get', 4),
  },
  {
    id: '8.4',
    key: 'map-set-4p-vs-redis',
    subject: 'SharedMap set, 4 processes at once',
    baseline: 'Redis SET of JSON, 4 client processes',
    per: 'set (all processes)',
    goal: 1 / 200,
    skip: redisSkip,
    run: (ctx) => againstRedis(ctx, 'set', 4),
  },
  {
    id: '8.5',
    key: 'map-get-vs-lmdb',
    subject: 'SharedMap get of a small object',
    baseline: 'lmdb get (npm lmdb, msgpack)',
    per: 'get',
    goal: 1,
    skip: lmdbSkip,
    run: (ctx) => againstLmdb(ctx, 'get'),
  },
  {
    id: '8.6',
    key: 'map-set-vs-lmdb',
    subject: 'SharedMap set of a small object',
    baseline: 'lmdb put, batched, until committed (noSync)',
    per: 'set',
    goal: 1,
    skip: lmdbSkip,
    run: (ctx) => againstLmdb(ctx, 'set'),
  },
  {
    id: '8.7',
    key: 'map-get-vs-local-map',
    subject: 'SharedMap get of a small object',
    baseline: 'in-process Map get + v8.deserialize',
    per: 'get',
    run: (ctx) => againstLocalMap(ctx, 'get'),
  },
  {
    id: '8.8',
    key: 'map-set-vs-local-map',
    subject: 'SharedMap set of a small object',
    baseline: 'in-process Map set of v8.serialize',
    per: 'set',
    run: (ctx) => againstLocalMap(ctx, 'set'),
  },
  {
    id: '8.9',
    key: 'map-striping-4p',
    subject: 'SharedMap, 16 stripes: 4 processes, own keys, 90% get 10% set',
    baseline: 'the same map with 1 stripe (one lock)',
    per: 'operation (all processes)',
    goal: 1,
    run: (ctx) => {
      const n = opsOf(ctx, 'fast') / 2
      /** @param {number} stripes */
      const run = (stripes) => () => withMap({ stripes }, (map) => medianOfRuns(parallel('map-ops.mjs', 4, { map: map.toJSON(), op: 'mix', own: true }, n), ctx.effort.shortRuns)())
      return alternate(run(16), run(1), ctx.effort.rounds)
    },
  },
]
