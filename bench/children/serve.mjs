/**
 * The child side of `../parallel.mjs`, for processes and worker threads alike: receive
 * the job, prepare, wait at the shared start barrier, run the timed work, report
 * `{ start, end, value }` (monotonic ns, as strings).
 * @module
 */
import { isMainThread, parentPort } from 'node:worker_threads'
import { revive } from '../../dist/index.js'

const READY = 0 // keep in step with BARRIER in ../parallel.mjs
const GO = 1
/** Longest wait at the barrier before giving up (the parent may be gone). */
const BARRIER_TIMEOUT_MS = 120_000

/**
 * @callback Prepare
 * @param {any} job - as given to runParallel
 * @param {{ index: number, n: number, call: (msg: unknown) => Promise<any> }} me - this
 *   child's index, how many children run the job, and `call`, which sends `msg` to the parent and resolves with its reply
 * @returns {(() => unknown) | Promise<() => unknown>} the work to time
 */

/**
 * Serves one job from the parent.
 * @param {Prepare} prepare
 */
export function serve(prepare) {
  const send = isMainThread
    ? (/** @type {unknown} */ m) => /** @type {NonNullable<typeof process.send>} */ (process.send)(m)
    : (/** @type {unknown} */ m) => /** @type {NonNullable<typeof parentPort>} */ (parentPort).postMessage(m)
  /** @type {((v: unknown) => void) | null} */
  let pending = null
  /** @param {unknown} msg */
  const call = (msg) =>
    new Promise((resolve) => {
      pending = resolve
      send({ call: msg })
    })
  /** @param {any} msg */
  const onMessage = async (msg) => {
    if (msg && 'reply' in msg) {
      const resolve = pending
      pending = null
      resolve?.(msg.reply)
      return
    }
    if (!msg || !('job' in msg)) return
    try {
      const work = await prepare(msg.job, { index: msg.index, n: msg.n, call })
      const gate = new Int32Array(/** @type {import('../../dist/index.js').MappedMemory} */ (revive(msg.barrier)).buffer, 0, 2)
      waitAtBarrier(gate, msg.n)
      const start = process.hrtime.bigint()
      const value = await work()
      const end = process.hrtime.bigint()
      send({ result: { start: String(start), end: String(end), value } })
    } catch (e) {
      send({ error: String(/** @type {Error} */ (e)?.stack ?? e) })
    }
  }
  if (isMainThread) process.on('message', onMessage)
  else /** @type {NonNullable<typeof parentPort>} */ (parentPort).on('message', onMessage)
}

/**
 * Counts this child ready, naps until all are, then spins until the parent says go (it
 * does within a millisecond or so), so that all children start within microseconds.
 * @param {Int32Array} gate
 * @param {number} n
 */
function waitAtBarrier(gate, n) {
  const nap = new Int32Array(new SharedArrayBuffer(4))
  const deadline = Date.now() + BARRIER_TIMEOUT_MS
  Atomics.add(gate, READY, 1)
  while (Atomics.load(gate, READY) < n) {
    Atomics.wait(nap, 0, 0, 0.2)
    if (Date.now() > deadline) throw new Error('the other children never got ready')
  }
  for (let i = 1; Atomics.load(gate, GO) === 0; i++) {
    if ((i & 0xffff) === 0 && Date.now() > deadline) throw new Error('the parent never said go')
  }
}
