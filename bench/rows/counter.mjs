/**
 * Rows 2.x and 3.x: a counter shared by two processes, under a shmutils Lock, against the
 * C futex mutex (the floor), against a lock written in JavaScript alone (a spinning
 * compare-and-swap with exponential backoff: the floor of any JavaScript design that
 * sleeps), the same contention between two worker threads, and against what users pick
 * today: a counter kept by the parent behind `process.send`, worker threads with a
 * SharedArrayBuffer lock, Redis INCR.
 * Every figure is the run's span divided by the increments in it; runs that last
 * milliseconds (all but IPC and Redis) are repeated `effort.shortRuns` times per round.
 * @module
 */
import { Lock } from '../../dist/index.js'
import { runC } from '../cc.mjs'
import { alternate, medianOfRuns } from '../measure.mjs'
import { runParallel } from '../parallel.mjs'
import { startRedis } from '../redis.mjs'
import { RespClient } from '../resp.mjs'
import { withSegment } from '../segments.mjs'
import { WARMUP_AREA } from '../children/warmup.mjs'

/** Int32 slot of the counter: byte 64, after the 32-byte lock record at 0. */
const COUNTER_INDEX = 16

/**
 * Increments per child in the 3.x rows.
 * @param {import('./row.mjs').Context} ctx
 */
const eachOf = (ctx) => (ctx.quick ? 2_000 : 20_000)

/**
 * Runs `compare` with shmutils' side of a counter row: two processes incrementing an
 * int32 under one Lock, racing to `limit` or `each` times each, in ns per increment.
 * @param {import('./row.mjs').Context} ctx
 * @param {{ limit: number } | { each: number }} job
 * @param {(subject: () => Promise<number>, mem: import('../../dist/index.js').MappedMemory) => Promise<import('../measure.mjs').Comparison>} compare
 *   gets the subject and the segment (whose bytes from 128 on are free for a baseline)
 * @param {boolean} [threads] - worker threads instead of processes
 * @returns {Promise<import('./row.mjs').Measured>}
 */
function withLockCounter(ctx, job, compare, threads = false) {
  return withSegment('counter', { size: 4096 }, async (mem) => {
    const lock = Lock.at(mem, 0)
    const c = new Int32Array(mem.buffer)
    const total = 'limit' in job ? job.limit : 2 * job.each
    const measured = await compare(
      medianOfRuns(async () => {
        c[COUNTER_INDEX] = 0
        clearWarmup(mem)
        const run = await runParallel({ script: 'lock-counter.mjs', n: 2, threads, job: { lock, counterIndex: COUNTER_INDEX, ...job } })
        expectCount('Lock counter', c[COUNTER_INDEX], run, total)
        return run.spanNs / total
      }, ctx.effort.shortRuns),
      mem,
    )
    return { ...measured, params: { [threads ? 'threads' : 'processes']: 2, ...job } }
  })
}

/**
 * Zeroes the counter children's warm-up words (../children/warmup.mjs) before a run.
 * @param {import('../../dist/index.js').MappedMemory} mem
 */
const clearWarmup = (mem) => new Uint8Array(mem.buffer, WARMUP_AREA.offset, WARMUP_AREA.bytes).fill(0)

/** Int32 index of the JavaScript backoff lock's word (byte 128) in 2.1's segment. */
const BACKOFF_WORD = 32
/** ... and of its counter (byte 192). */
const BACKOFF_COUNTER = 48

/**
 * The usual comparison of a counter row: `subject` against `once` (a run of the baseline
 * in ns per increment, short, so repeated `effort.shortRuns` times per round).
 * @param {import('./row.mjs').Context} ctx
 * @param {() => Promise<number>} subject
 * @param {() => Promise<number>} once
 */
const againstShortRuns = (ctx, subject, once) => alternate(subject, medianOfRuns(once, ctx.effort.shortRuns), ctx.effort.rounds)

/**
 * One run of the worker-threads baseline: 2 threads increment `each` times each under a
 * SharedArrayBuffer + Atomics.wait lock; ns per increment.
 * @param {number} each
 */
async function sabCounterRun(each) {
  const sab = new SharedArrayBuffer(8)
  const warm = new SharedArrayBuffer(12) // meeting word, lock word, counter (../children/warmup.mjs)
  const run = await runParallel({ script: 'sab-counter.mjs', n: 2, threads: true, job: { sab, each, warm } })
  expectCount('SharedArrayBuffer counter', new Int32Array(sab)[1], run, 2 * each)
  return run.spanNs / (2 * each)
}

/**
 * Checks that a run counted exactly `total`, both in the counter and by the children.
 * @param {string} what
 * @param {number} value
 * @param {import('../parallel.mjs').ParallelRun} run
 * @param {number} total
 */
function expectCount(what, value, run, total) {
  const sum = run.results.reduce((s, r) => s + Number(r.value), 0)
  if (value !== total || sum !== total) throw new Error(`${what}: the counter reads ${value} and the children counted ${sum}; expected ${total}`)
}

/** @type {import('./row.mjs').Row[]} */
export const counterRows = [
  {
    id: '2',
    key: 'counter-1m-vs-c-futex',
    subject: 'Lock, 2 processes count to 1,000,000',
    baseline: 'C 3-state futex mutex, 2 forked processes, same count',
    per: 'increment',
    goal: 2.5,
    skip: (ctx) => (process.platform !== 'linux' ? 'skipped: the futex reference is Linux-only' : ctx.features.cc ? null : 'skipped: no C compiler'),
    run: (ctx) => {
      const limit = ctx.quick ? 20_000 : 1_000_000
      return withLockCounter(ctx, { limit }, (subject) =>
        againstShortRuns(ctx, subject, async () => {
          const r = runC('futex_counter', [2, limit])
          if (r.counter !== limit) throw new Error(`futex_counter counted ${r.counter}, expected ${limit}`)
          return r.span_ns / limit
        }),
      )
    },
  },
  {
    id: '2.1',
    key: 'counter-1m-vs-js-backoff-lock',
    subject: 'Lock, 2 processes count to 1,000,000',
    baseline: 'a JavaScript-only lock (compare-and-swap, exponential backoff, never sleeps), same count',
    per: 'increment',
    goal: 1.3,
    run: (ctx) => {
      const limit = ctx.quick ? 20_000 : 1_000_000
      return withLockCounter(ctx, { limit }, (subject, mem) => {
        const c = new Int32Array(mem.buffer)
        return againstShortRuns(ctx, subject, async () => {
          c[BACKOFF_WORD] = 0
          c[BACKOFF_COUNTER] = 0
          clearWarmup(mem)
          const job = { memory: mem, word: BACKOFF_WORD, counterIndex: BACKOFF_COUNTER, limit }
          const run = await runParallel({ script: 'backoff-counter.mjs', n: 2, job })
          expectCount('JavaScript backoff counter', c[BACKOFF_COUNTER], run, limit)
          return run.spanNs / limit
        })
      })
    },
  },
  {
    id: '2.2',
    key: 'counter-1m-threads-vs-sab-lock',
    subject: 'Lock, 2 worker threads count to 1,000,000',
    baseline: '2 worker_threads, SharedArrayBuffer + Atomics.wait lock, same count',
    per: 'increment',
    run: (ctx) => {
      const each = ctx.quick ? 10_000 : 500_000
      return withLockCounter(ctx, { each }, (subject) => againstShortRuns(ctx, subject, () => sabCounterRun(each)), true)
    },
  },
  {
    id: '3.1',
    key: 'counter-20k-vs-process-send',
    subject: 'Lock, 2 processes × 20,000 increments',
    baseline: 'counter in the parent, children ask over process.send',
    per: 'increment',
    goal: 1 / 300,
    run: (ctx) => {
      const each = eachOf(ctx)
      return withLockCounter(ctx, { each }, (subject) =>
        alternate(
          subject,
          async () => {
            let counter = 0
            const run = await runParallel({ script: 'ipc-counter.mjs', n: 2, job: { each }, onCall: () => ++counter })
            expectCount('process.send counter', counter, run, 2 * each)
            return run.spanNs / (2 * each)
          },
          ctx.effort.slowRounds,
        ),
      )
    },
  },
  {
    id: '3.2',
    key: 'counter-20k-vs-worker-threads',
    subject: 'Lock, 2 processes × 20,000 increments',
    baseline: '2 worker_threads, SharedArrayBuffer + Atomics.wait lock',
    per: 'increment',
    run: (ctx) => {
      const each = eachOf(ctx)
      return withLockCounter(ctx, { each }, (subject) => againstShortRuns(ctx, subject, () => sabCounterRun(each)))
    },
  },
  {
    id: '3.3',
    key: 'counter-20k-vs-redis',
    subject: 'Lock, 2 processes × 20,000 increments',
    baseline: 'Redis INCR on loopback, 2 processes',
    per: 'increment',
    goal: 1 / 500,
    skip: (ctx) => (ctx.quick ? 'skipped: not in --quick' : ctx.features.redis ? null : 'skipped: no redis-server on PATH'),
    run: async (ctx) => {
      const each = eachOf(ctx)
      const server = await startRedis(/** @type {string} */ (ctx.features.redis))
      try {
        let round = 0
        return await withLockCounter(ctx, { each }, (subject) =>
          alternate(
            subject,
            async () => {
              const key = `shmutils-bench-${++round}`
              const run = await runParallel({ script: 'redis-counter.mjs', n: 2, job: { port: server.port, each, key } })
              const client = await RespClient.connect(server.port)
              const value = Number(await client.command('GET', key))
              client.close()
              expectCount('Redis counter', value, run, 2 * each)
              return run.spanNs / (2 * each)
            },
            ctx.effort.slowRounds,
          ),
        )
      } finally {
        await server.stop()
      }
    },
  },
]
