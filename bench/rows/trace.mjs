/**
 * Rows 11.x: what tracing (`node:diagnostics_channel`, `lib/trace.ts`) costs. Each row runs
 * the same operation with a subscriber on every shmutils channel (the subject) and with
 * none (the baseline). The uncontended lock and the heap contain no tracing code at all,
 * so their ratios stay at 1; a contended acquisition looks at one flag before it sleeps,
 * and with a subscriber also reads the clock twice, which row 11.3 measures on the
 * cheapest contended call there is (a zero-timeout acquire of a held lock).
 * @module
 */
import diagnosticsChannel from 'node:diagnostics_channel'
import { once } from 'node:events'
import { Worker } from 'node:worker_threads'
import { Lock, tracing } from '../../dist/index.js'
import { alternate, perCall } from '../measure.mjs'
import { withSegment } from '../segments.mjs'

/**
 * `measurement` run with a subscriber on every shmutils channel.
 * @param {() => Promise<number>} measurement
 * @returns {() => Promise<number>}
 */
function subscribed(measurement) {
  const names = Object.values(tracing.channels)
  const sink = () => {}
  return async () => {
    for (const n of names) diagnosticsChannel.subscribe(n, sink)
    try {
      return await measurement()
    } finally {
      for (const n of names) diagnosticsChannel.unsubscribe(n, sink)
    }
  }
}

/**
 * Times `fn` with and without subscribers.
 * @param {import('./row.mjs').Context} ctx
 * @param {() => unknown} fn
 */
function withAndWithout(ctx, fn) {
  return alternate(subscribed(perCall(fn, ctx.effort)), perCall(fn, ctx.effort), ctx.effort.rounds)
}

/**
 * Runs `fn` while a worker thread holds `lock`.
 * @template T
 * @param {Lock} lock
 * @param {() => Promise<T>} fn
 * @returns {Promise<T>}
 */
async function whileHeldElsewhere(lock, fn) {
  const done = new Int32Array(new SharedArrayBuffer(4))
  const worker = new Worker(
    `const { workerData: { lock, done }, parentPort } = require('node:worker_threads')
     const l = require(${JSON.stringify(new URL('../../dist/index.js', import.meta.url).pathname)}).revive(lock)
     l.acquire(); parentPort.postMessage('held'); Atomics.wait(done, 0, 0); l.release()`,
    { eval: true, workerData: { lock: lock.toJSON(), done } },
  )
  await once(worker, 'message')
  try {
    return await fn()
  } finally {
    Atomics.store(done, 0, 1)
    Atomics.notify(done, 0)
    await once(worker, 'exit')
  }
}

/** @type {import('./row.mjs').Row[]} */
export const traceRows = [
  {
    id: '11.1',
    key: 'trace-lock-uncontended',
    subject: 'Lock acquire()+release(), uncontended, every channel subscribed',
    baseline: 'the same, no subscriber',
    per: 'acquire+release',
    goal: 1.1,
    run: (ctx) =>
      withSegment('trace', { size: 1 << 16, managed: true }, (mem) => {
        const lock = new Lock(mem)
        return withAndWithout(ctx, () => {
          lock.acquire()
          lock.release()
        })
      }),
  },
  {
    id: '11.2',
    key: 'trace-heap',
    subject: 'heap.malloc(64) + heap.free(), every channel subscribed',
    baseline: 'the same, no subscriber',
    per: 'malloc+free',
    goal: 1.1,
    run: (ctx) =>
      withSegment('trace', { size: 1 << 20, managed: true }, (mem) => {
        const heap = mem.heap
        return withAndWithout(ctx, () => heap.free(heap.malloc(64)))
      }),
  },
  {
    id: '11.3',
    key: 'trace-contended-call',
    subject: 'Lock acquire({ timeout: 0 }) of a held lock (native slow path), every channel subscribed',
    baseline: 'the same, no subscriber',
    per: 'acquire attempt',
    run: (ctx) =>
      withSegment('trace', { size: 1 << 16, managed: true }, (mem) => {
        const lock = new Lock(mem)
        return whileHeldElsewhere(lock, () => withAndWithout(ctx, () => lock.acquire({ timeout: 0 })))
      }),
  },
]
