/**
 * The one way the bench runs work in several processes (or threads) at once: start `n`
 * copies of a script from bench/children/, hand each the job, hold them at a start
 * barrier in shared memory until all are ready, let them go together, and collect what
 * each reports. Every multi-process row goes through {@link runParallel}.
 *
 * The child side is `children/serve.mjs`. Children time themselves with the monotonic
 * clock, which all processes share, so a run's span is `max(end) - min(start)`: startup
 * and IPC are not in it.
 * @module
 */
import { fork } from 'node:child_process'
import { basename } from 'node:path'
import { fileURLToPath } from 'node:url'
import { setTimeout as sleep } from 'node:timers/promises'
import { Worker } from 'node:worker_threads'
import { atExit } from './cleanup.mjs'
import { withSegment } from './segments.mjs'

/** Int32 slots of the barrier page: how many children are ready; whether to go. */
export const BARRIER = Object.freeze({ READY: 0, GO: 1 })

/** @type {Set<() => void>} kill functions of children still running */
const running = new Set()
atExit(() => {
  for (const kill of running) kill()
})

/**
 * @typedef {object} ChildResult
 * @property {bigint} start - monotonic ns when the child passed the barrier
 * @property {bigint} end - monotonic ns when its work ended
 * @property {unknown} value - what its work returned
 */

/**
 * @typedef {object} ParallelRun
 * @property {number} spanNs - from the first start to the last end, in ns
 * @property {ChildResult[]} results - by child index
 */

/**
 * Runs `n` children of `script` at once and collects their results. Children that are
 * still running when it settles (or when the bench exits) are killed.
 * @param {object} o
 * @param {string} o.script - file name in bench/children/
 * @param {number} o.n - how many
 * @param {unknown} o.job - given to every child: JSON for processes (so shmutils objects
 *   travel as handles), a structured clone for threads (so a SharedArrayBuffer is shared)
 * @param {boolean} [o.threads] - worker threads instead of processes
 * @param {(msg: unknown, index: number) => unknown} [o.onCall] - answers a child's
 *   `call(msg)` (the reply goes back over the same channel)
 * @param {number} [o.timeoutMs] - for the whole run
 * @returns {Promise<ParallelRun>}
 */
export async function runParallel({ script, n, job, threads = false, onCall, timeoutMs = 300_000 }) {
  return withSegment('barrier', { size: 4096 }, async (barrier) => {
    const gate = new Int32Array(barrier.buffer, 0, 2)
    const deadline = Date.now() + timeoutMs
    /** @type {Child[]} */
    const kids = []
    try {
      for (let i = 0; i < n; i++) kids.push(start(script, threads, i, onCall))
      const handle = barrier.toJSON()
      kids.forEach((k, index) => k.send({ job, index, n, barrier: handle }))
      /** @type {unknown} */
      let failure = null
      const all = Promise.all(kids.map((k) => k.result))
      all.catch((e) => (failure = e))
      while (Atomics.load(gate, BARRIER.READY) < n) {
        if (failure) throw failure
        if (Date.now() > deadline) throw new Error(`${script}: children not ready after ${timeoutMs} ms`)
        await sleep(1)
      }
      Atomics.store(gate, BARRIER.GO, 1)
      const results = await beforeDeadline(all, deadline, script)
      const first = results.reduce((m, r) => (r.start < m ? r.start : m), results[0].start)
      const last = results.reduce((m, r) => (r.end > m ? r.end : m), results[0].end)
      return { spanNs: Number(last - first), results }
    } finally {
      await Promise.all(kids.map((k) => k.stop()))
    }
  })
}

/**
 * @typedef {object} Child
 * @property {(msg: unknown) => void} send
 * @property {Promise<ChildResult>} result
 * @property {() => Promise<void>} stop - kills it if still running; resolves once gone
 */

/**
 * Starts one child.
 * @param {string} script
 * @param {boolean} threads
 * @param {number} index
 * @param {((msg: unknown, index: number) => unknown) | undefined} onCall
 * @returns {Child}
 */
function start(script, threads, index, onCall) {
  const file = fileURLToPath(new URL(`./children/${script}`, import.meta.url))
  const who = `${basename(script)} #${index}`
  /** @type {import('node:child_process').ChildProcess | Worker} */
  const child = threads
    ? new Worker(file)
    : fork(file, [], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'], execArgv: [], serialization: 'json' })
  /** @param {unknown} m */
  const send = (m) => (child instanceof Worker ? child.postMessage(m) : child.send(/** @type {object} */ (m)))
  const kill = () => (child instanceof Worker ? void child.terminate() : void child.kill('SIGKILL'))
  running.add(kill)
  const exited = new Promise((resolve) => child.once('exit', (code, signal) => resolve(signal ?? code)))
  exited.then(() => running.delete(kill))
  /** @type {Promise<ChildResult>} */
  const result = new Promise((resolve, reject) => {
    child.on('message', (/** @type {any} */ msg) => {
      if (msg?.result) resolve({ start: BigInt(msg.result.start), end: BigInt(msg.result.end), value: msg.result.value })
      else if (msg?.error) reject(new Error(`${who}: ${msg.error}`))
      else if (msg && 'call' in msg) {
        if (!onCall) reject(new Error(`${who} called, but the row answers no calls`))
        else send({ reply: onCall(msg.call, index) })
      }
    })
    child.once('error', reject)
    exited.then((code) => reject(new Error(`${who} exited (${code}) before reporting`)))
  })
  result.catch(() => {}) // observed through Promise.all; never an unhandled rejection
  return {
    send,
    result,
    async stop() {
      if (running.has(kill)) kill()
      await exited
    },
  }
}

/**
 * @template T
 * @param {Promise<T>} p
 * @param {number} deadline - Date.now() value
 * @param {string} what
 * @returns {Promise<T>}
 */
async function beforeDeadline(p, deadline, what) {
  /** @type {NodeJS.Timeout | undefined} */
  let timer
  const late = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: no result before the deadline`)), Math.max(0, deadline - Date.now()))
  })
  try {
    return /** @type {T} */ (await Promise.race([p, late]))
  } finally {
    clearTimeout(timer)
  }
}
