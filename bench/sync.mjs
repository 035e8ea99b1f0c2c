// Synchronization benchmarks: the uncontended Lock pair, handoff latency between two
// processes (Lock, Condition and Semaphore ping-pong, blocking and async), the overhead of
// acquireAsync over acquire, an undo semaphore against a plain one, and how long a dead
// holder takes to be noticed (also from another PID namespace, where unshare works). Everything is measured in one run and
// reported also as ratios, since absolute times drift between runs and machines.
//
//   node bench/sync.mjs [--quick]        prints a table
//   import { run } from './sync.mjs'      returns { results, ratios }
import { fork, spawnSync } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { Condition, Lock, MapFlags, MappedMemory, Protection, revive, Semaphore, shmOpen, shmUnlink } from '../dist/index.js'

const SELF = fileURLToPath(import.meta.url)

// Layout of the shared page.
const LOCK = 0 // Lock record
const COND = 32 // Condition record (with LOCK)
const SEM_A = 64 // Semaphore records
const SEM_B = 96
const TURN = 128 // i32: whose turn
const STOP = 132 // i32: 1 = stop
const T0 = 136 // i64: hrtime of the last release

const now = () => process.hrtime.bigint()

function views(memory) {
  return { i32: new Int32Array(memory.buffer), i64: new BigInt64Array(memory.buffer) }
}

function median(xs) {
  const s = [...xs].sort((a, b) => a - b)
  return s[Math.floor(s.length / 2)]
}

/**
 * Lock handoff: the holder waits until the other side sleeps on the lock (WAITERS set),
 * stamps the time and releases; the other side notes how long it took to get the lock,
 * then posts the first side's semaphore so that it sleeps (rather than spins) until
 * then. Both sides run this; `stop` ends it. Returns the latencies (ns) this side saw.
 */
async function lockHandoff({ lock, memory, me, rounds, isAsync, a, b }) {
  const { i32, i64 } = views(memory)
  const word = LOCK >> 2
  const [mine, theirs] = me === 1 ? [a, b] : [b, a]
  const samples = []
  for (;;) {
    if (isAsync) await lock.acquireAsync()
    else lock.acquire()
    if (Atomics.load(i32, STOP >> 2)) {
      lock.release()
      theirs.release()
      return samples
    }
    const t0 = Atomics.load(i64, T0 >> 3)
    if (t0 !== 0n) samples.push(Number(now() - t0))
    if (samples.length >= rounds) Atomics.store(i32, STOP >> 2, 1)
    theirs.release() // the other side stops sleeping and comes for the lock
    while (Atomics.load(i32, word) >= 0 && !Atomics.load(i32, STOP >> 2)); // until it sleeps on it
    Atomics.store(i64, T0 >> 3, now())
    lock.release()
    if (isAsync) await mine.acquireAsync()
    else mine.acquire()
  }
}

/** Condition ping-pong: `rounds` round trips of a turn variable; returns ns per round trip. */
async function condPingPong({ cond, memory, me, rounds, isAsync }) {
  const { i32 } = views(memory)
  const other = 3 - me
  const t0 = now()
  if (isAsync) await cond.lock.acquireAsync()
  else cond.lock.acquire()
  for (let i = 0; i < rounds; i++) {
    while (Atomics.load(i32, TURN >> 2) !== me) {
      if (isAsync) await cond.waitAsync()
      else cond.wait()
    }
    Atomics.store(i32, TURN >> 2, other)
    cond.notify()
  }
  cond.lock.release()
  return Number(now() - t0) / rounds
}

/** Semaphore ping-pong: side 1 posts A and takes B, side 2 the reverse. */
async function semPingPong({ a, b, me, rounds, isAsync }) {
  const [give, take] = me === 1 ? [a, b] : [b, a]
  const t0 = now()
  for (let i = 0; i < rounds; i++) {
    if (me === 1) give.release()
    if (isAsync) await take.acquireAsync()
    else take.acquire()
    if (me === 2) give.release()
  }
  return Number(now() - t0) / rounds
}

const scenarios = { lockHandoff, condPingPong, semPingPong }

// ---- child side ----
if (process.argv[2] === 'child') {
  process.on('message', async (msg) => {
    if (msg.op === 'hold') {
      const lock = revive(msg.lock)
      lock.acquire()
      process.send({ held: true })
      return
    }
    const args = revive(msg.args)
    const result = await scenarios[msg.op]({ ...args, me: 2 })
    process.send({ result })
  })
  process.send({ ready: true })
}

/** Whether children can run in a PID namespace of their own (root and unshare). */
const canUnshare = spawnSync('unshare', ['--pid', '--fork', '--mount-proc', '--kill-child', 'true']).status === 0

/** A forked child; `ns`: as pid 1 of a new PID namespace (killing it kills the namespace). */
function child(ns = false) {
  const where = ns ? { execPath: 'unshare', execArgv: ['--pid', '--fork', '--mount-proc', '--kill-child', process.execPath] } : { execArgv: [] }
  const proc = fork(SELF, ['child'], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'], ...where })
  const queue = []
  const waiters = []
  proc.on('message', (m) => (waiters.length ? waiters.shift()(m) : queue.push(m)))
  const next = () => (queue.length ? Promise.resolve(queue.shift()) : new Promise((r) => waiters.push(r)))
  const exited = new Promise((r) => proc.on('exit', r))
  return { proc, next, exited }
}

let segments = 0

/** Runs `fn(memory)` with a fresh one-page segment, closed and unlinked afterwards. */
async function withSegment(fn) {
  const name = `/shmutils-bench-${process.pid}-sync-${++segments}`
  const fd = shmOpen(name, 'x+').truncate(4096)
  const memory = new MappedMemory(null, 4096, Protection.READ_WRITE, MapFlags.SHARED, fd)
  fd.close()
  try {
    return await fn(memory)
  } finally {
    memory.close()
    shmUnlink(name)
  }
}

/** Runs a two-process scenario; this process is side 1. Returns [mine, theirs]. */
function twoSides(op, makeArgs, { rounds, asyncHere = false, asyncThere = false }) {
  return withSegment(async (memory) => {
    const args = makeArgs(memory)
    const c = child()
    try {
      await c.next()
      c.proc.send({ op, args: JSON.parse(JSON.stringify({ ...args, rounds, isAsync: asyncThere })) })
      const mine = await scenarios[op]({ ...args, rounds, isAsync: asyncHere, me: 1 })
      const theirs = (await c.next()).result
      return [mine, theirs]
    } finally {
      c.proc.kill()
      await c.exited
    }
  })
}

function uncontended(iterations) {
  return withSegment((memory) => uncontendedIn(memory, iterations))
}

async function uncontendedIn(memory, iterations) {
  const lock = Lock.at(memory, LOCK)
  for (let i = 0; i < 1000; i++) {
    lock.acquire()
    lock.release()
  }
  let t0 = now()
  for (let i = 0; i < iterations; i++) {
    lock.acquire()
    lock.release()
  }
  const sync = Number(now() - t0) / iterations
  const asyncIters = Math.max(1000, iterations / 20)
  t0 = now()
  for (let i = 0; i < asyncIters; i++) {
    await lock.acquireAsync()
    lock.release()
  }
  const asyncNs = Number(now() - t0) / asyncIters
  t0 = now()
  for (let i = 0; i < asyncIters; i++) await Promise.resolve(true)
  const bareAwait = Number(now() - t0) / asyncIters
  const i32 = new Int32Array(memory.buffer)
  t0 = now()
  for (let i = 0; i < iterations; i++) {
    Atomics.compareExchange(i32, 64, 0, 1)
    Atomics.exchange(i32, 64, 0)
  }
  const floor = Number(now() - t0) / iterations
  return { sync, async: asyncNs, floor, bareAwait }
}

async function deadHolder(samples, ns = false) {
  const after = []
  const during = []
  for (let i = 0; i < samples; i++) {
    for (const waiting of [false, true]) {
      const ms = await withSegment((memory) => detectOnce(memory, waiting, i, ns))
      ;(waiting ? during : after).push(ms)
    }
  }
  return { after: median(after), afterMax: Math.max(...after), during: median(during), duringMax: Math.max(...during) }
}

/**
 * Kills a holder (in a PID namespace of its own with `ns`); returns the ms until an
 * acquirer (already waiting, or not) has the lock.
 */
async function detectOnce(memory, waiting, i, ns) {
  const lock = Lock.at(memory, LOCK)
  const c = child(ns)
  await c.next()
  c.proc.send({ op: 'hold', lock: JSON.parse(JSON.stringify(lock)) })
  await c.next()
  let got
  if (waiting) {
    got = lock.acquireAsync()
    await new Promise((r) => setTimeout(r, 20 + 7 * i))
  }
  // Already waiting: from the kill; arriving later: from the acquire call.
  let t0 = now()
  c.proc.kill('SIGKILL')
  await c.exited
  if (!waiting) t0 = now()
  if (waiting) await got
  else lock.acquire()
  const ms = Number(now() - t0) / 1e6
  if (!lock.ownerDied) throw new Error('expected ownerDied')
  lock.markConsistent()
  lock.release()
  return ms
}

/** ns per tryAcquire+release of a plain and of an undo semaphore, uncontended. */
function undoCost(iterations) {
  return withSegment((memory) => {
    const plain = Semaphore.at(memory, SEM_A, 1)
    const undo = Semaphore.at(memory, 256, 1, { undo: true, holders: 4 })
    const time = (s) => {
      for (let i = 0; i < 1000; i++) {
        s.tryAcquire()
        s.release()
      }
      const t0 = now()
      for (let i = 0; i < iterations; i++) {
        s.tryAcquire()
        s.release()
      }
      return Number(now() - t0) / iterations
    }
    return { plain: time(plain), undo: time(undo) }
  })
}

/** Median ms from `abort()` to the rejection of a pending acquireAsync. */
function abortLatency(samples) {
  return withSegment(async (memory) => {
    const lock = Lock.at(memory, LOCK)
    lock.acquire()
    const xs = []
    for (let i = 0; i < samples; i++) {
      const ac = new AbortController()
      const p = lock.acquireAsync({ signal: ac.signal })
      await new Promise((r) => setTimeout(r, 2))
      const t0 = now()
      ac.abort()
      await p.catch(() => xs.push(Number(now() - t0) / 1e6))
    }
    lock.release()
    return median(xs)
  })
}

/** Runs every benchmark; `quick` shortens them. */
export async function run({ quick = false } = {}) {
  const rounds = quick ? 300 : 2000
  const lockArgs = (memory) => ({ lock: Lock.at(memory, LOCK), memory, a: Semaphore.at(memory, SEM_A, 0), b: Semaphore.at(memory, SEM_B, 0) })
  const condArgs = (memory) => {
    new Int32Array(memory.buffer)[TURN >> 2] = 1
    return { cond: Condition.at(memory, COND, Lock.at(memory, LOCK)), memory }
  }
  const semArgs = (memory) => ({ a: Semaphore.at(memory, SEM_A, 0), b: Semaphore.at(memory, SEM_B, 0), memory })

  const u = await uncontended(quick ? 200_000 : 2_000_000)
  const [h1, h2] = await twoSides('lockHandoff', lockArgs, { rounds })
  const [ha1, ha2] = await twoSides('lockHandoff', lockArgs, { rounds, asyncHere: true, asyncThere: true })
  const [cond] = await twoSides('condPingPong', condArgs, { rounds })
  const [condAsync] = await twoSides('condPingPong', condArgs, { rounds, asyncHere: true })
  const [sem] = await twoSides('semPingPong', semArgs, { rounds })
  const [semAsync] = await twoSides('semPingPong', semArgs, { rounds, asyncHere: true })
  const dead = await deadHolder(quick ? 2 : 5)
  const deadNs = canUnshare ? await deadHolder(quick ? 2 : 5, true) : null
  const semCost = await undoCost(quick ? 50_000 : 500_000)
  const abortMs = await abortLatency(quick ? 20 : 100)

  const handoff = median([...h1, ...h2]) / 1000
  const handoffAsync = median([...ha1, ...ha2]) / 1000
  const results = {
    'Lock acquire+release, uncontended (ns)': u.sync,
    'Atomics CAS+exchange floor (ns)': u.floor,
    'await acquireAsync+release, uncontended (ns)': u.async,
    'await of a resolved promise, for comparison (ns)': u.bareAwait,
    'Lock handoff to a blocked process, median (µs)': handoff,
    'Lock handoff to an async waiter in another process, median (µs)': handoffAsync,
    'Condition ping-pong round trip, blocking (µs)': cond / 1000,
    'Condition ping-pong round trip, one side async (µs)': condAsync / 1000,
    'Semaphore ping-pong round trip, blocking (µs)': sem / 1000,
    'Semaphore ping-pong round trip, one side async (µs)': semAsync / 1000,
    'abort() to AbortError of a pending acquireAsync, median (ms)': abortMs,
    'Semaphore tryAcquire+release, uncontended (ns)': semCost.plain,
    'undo Semaphore tryAcquire+release, uncontended (ns)': semCost.undo,
    'dead holder noticed, acquirer arriving after the death, median (ms)': dead.after,
    'dead holder noticed, acquirer already waiting, median / max (ms)': `${dead.during.toFixed(1)} / ${dead.duringMax.toFixed(1)}`,
    'dead holder in another PID namespace, arriving after / waiting, median (ms)': deadNs
      ? `${deadNs.after.toFixed(1)} / ${deadNs.during.toFixed(1)}`
      : 'skipped: needs root and unshare',
  }
  const ratios = {
    'Lock acquire+release / Atomics floor': u.sync / u.floor,
    'acquireAsync / acquire, uncontended': u.async / u.sync,
    'acquireAsync+release / bare await, uncontended': u.async / u.bareAwait,
    'async handoff / blocking handoff': handoffAsync / handoff,
    'Condition round trip / 2 Lock handoffs': cond / 1000 / (2 * handoff),
    'async Condition round trip / blocking': condAsync / cond,
    'async Semaphore round trip / blocking': semAsync / sem,
    'dead-holder detection / 50 ms liveness slice': dead.after / 50,
    'undo Semaphore / plain Semaphore, uncontended': semCost.undo / semCost.plain,
  }
  return { results, ratios }
}

if (process.argv[1] === SELF && process.argv[2] !== 'child') {
  const { results, ratios } = await run({ quick: process.argv.includes('--quick') })
  const fmt = (v) => (typeof v === 'number' ? (v >= 100 ? v.toFixed(0) : v.toFixed(2)) : v)
  console.log('shmutils synchronization benchmarks')
  for (const [k, v] of Object.entries(results)) console.log(`  ${k.padEnd(70)} ${fmt(v)}`)
  console.log('ratios (same run)')
  for (const [k, v] of Object.entries(ratios)) console.log(`  ${k.padEnd(70)} ${fmt(v)}`)
}
