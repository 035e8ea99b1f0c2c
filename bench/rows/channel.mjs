/**
 * Rows 9.x: Channel throughput between two processes against `process.send` and against
 * `worker_threads` `MessagePort.postMessage` between two threads; the round-trip latency;
 * whether the copy out of the ring matters for large `'bytes'` messages; and the floor: a
 * bare ring (Atomics only) between two processes against `process.send`.
 * @module
 */
import { fork } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { MessageChannel, Worker } from 'node:worker_threads'
import { Channel } from '../../dist/index.js'
import { alternate, perCall } from '../measure.mjs'
import { runParallel } from '../parallel.mjs'
import { withSegment } from '../segments.mjs'
import { atExit } from '../cleanup.mjs'

/**
 * Messages per stream run.
 * @param {import('./row.mjs').Context} ctx
 * @param {'shmutils' | 'ipc' | 'port'} who
 */
function messages(ctx, who) {
  if (ctx.quick) return 5_000
  return who === 'shmutils' ? 1_000_000 : who === 'port' ? 500_000 : 200_000
}

/**
 * ns per message (or round trip) of the two children of channel-end.mjs.
 * @param {'stream' | 'pingpong'} mode
 * @param {number} n
 */
function channelRun(mode, n) {
  return () =>
    withSegment('channel', { size: 8 << 20, managed: true }, async (mem) => {
      const a = new Channel(mem, { capacity: 1 << 20 })
      const b = new Channel(mem, { capacity: 1 << 16 })
      const run = await runParallel({ script: 'channel-end.mjs', n: 2, job: { channels: { a: a.toJSON(), b: b.toJSON() }, mode, n } })
      if (mode === 'stream' && run.results[1].value !== (n * (n - 1)) / 2) throw new Error(`the consumer's checksum is ${run.results[1].value}`)
      return run.spanNs / n
    })
}

/**
 * ns per message of a bare ring between the two children of ring-floor.mjs (Atomics
 * only): the floor under any channel in shared memory on this machine.
 * @param {number} n
 */
function ringFloorRun(n) {
  return () =>
    withSegment('ring', { size: 1 << 20 }, async (mem) => {
      const run = await runParallel({ script: 'ring-floor.mjs', n: 2, job: { mem: mem.toJSON(), n } })
      if (run.results[1].value !== (n * (n - 1)) / 2) throw new Error(`the consumer's checksum is ${run.results[1].value}`)
      return run.spanNs / n
    })
}

const IPC_CHILD = fileURLToPath(new URL('../children/ipc-stream.mjs', import.meta.url))
const PORT_CHILD = fileURLToPath(new URL('../children/port-stream.mjs', import.meta.url))

/**
 * process.send from a child to this process: ns per message from the child's first send
 * to the arrival of the last (stream), or per round trip (pingpong).
 * @param {'stream' | 'pingpong'} mode
 * @param {number} n
 */
function ipcRun(mode, n) {
  return () =>
    new Promise((resolve, reject) => {
      const child = fork(IPC_CHILD, [], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'], execArgv: [], serialization: 'json' })
      const kill = () => void child.kill('SIGKILL')
      atExit(kill)
      let start = 0n
      let got = 0
      child.on('message', (/** @type {any} */ m) => {
        if ('start' in m) start = BigInt(m.start)
        else if ('ping' in m) child.send({ pong: m.ping })
        else if ('done' in m) {
          child.kill()
          resolve(Number(m.ns) / n)
        } else if (++got === n) {
          const ns = Number(process.hrtime.bigint() - start)
          child.kill()
          resolve(ns / n)
        }
      })
      child.once('exit', (code) => (got < n && mode === 'stream' ? reject(new Error(`ipc-stream exited (${code}) after ${got} messages`)) : undefined))
      child.send({ mode, n })
    })
}

/**
 * postMessage between two worker threads over a MessageChannel: ns per message from the
 * producer's first post to the consumer's receipt of the last.
 * @param {number} n
 */
function portRun(n) {
  return async () => {
    const { port1, port2 } = new MessageChannel()
    const consumer = new Worker(PORT_CHILD, { workerData: { role: 'consume', port: port2, n }, transferList: [port2] })
    const producer = new Worker(PORT_CHILD, { workerData: { role: 'produce', port: port1, n }, transferList: [port1] })
    try {
      /** @param {Worker} w @param {string} key @returns {Promise<any>} */
      const next = (w, key) => new Promise((resolve, reject) => {
        const on = (/** @type {any} */ m) => {
          if (key in m) {
            w.off('message', on)
            resolve(m)
          }
        }
        w.on('message', on)
        w.once('error', reject)
      })
      await next(consumer, 'ready')
      const started = next(producer, 'start')
      const ended = next(consumer, 'end')
      producer.postMessage('go')
      const [{ start }, { end, sum }] = await Promise.all([started, ended])
      if (sum !== (n * (n - 1)) / 2) throw new Error(`the consumer's checksum is ${sum}`)
      return Number(BigInt(end) - BigInt(start)) / n
    } finally {
      await Promise.all([producer.terminate(), consumer.terminate()])
    }
  }
}

/** @type {import('./row.mjs').Row[]} */
export const channelRows = [
  {
    id: '9.1',
    key: 'channel-stream-vs-process-send',
    subject: 'Channel, 2 processes, 1,000,000 small messages',
    baseline: 'process.send from a child to its parent',
    per: 'message',
    goal: 1 / 50,
    run: async (ctx) => {
      const m = await alternate(channelRun('stream', messages(ctx, 'shmutils')), ipcRun('stream', messages(ctx, 'ipc')), ctx.effort.slowRounds)
      return { ...m, params: { messages: { shmutils: messages(ctx, 'shmutils'), processSend: messages(ctx, 'ipc') }, message: "{ i, op: 'add' }" } }
    },
  },
  {
    id: '9.2',
    key: 'channel-stream-vs-message-port',
    subject: 'Channel, 2 processes, 1,000,000 small messages',
    baseline: 'worker_threads MessagePort.postMessage, 2 threads',
    per: 'message',
    goal: 1 / 2,
    run: async (ctx) => {
      const m = await alternate(channelRun('stream', messages(ctx, 'shmutils')), portRun(messages(ctx, 'port')), ctx.effort.slowRounds)
      return { ...m, params: { messages: { shmutils: messages(ctx, 'shmutils'), postMessage: messages(ctx, 'port') } } }
    },
  },
  {
    id: '9.3',
    key: 'channel-round-trip-vs-process-send',
    subject: 'Channel round trip between 2 processes (send, answer)',
    baseline: 'process.send round trip to a child',
    per: 'round trip',
    run: async (ctx) => {
      const n = ctx.quick ? 500 : 20_000
      const m = await alternate(channelRun('pingpong', n), ipcRun('pingpong', n), ctx.effort.slowRounds)
      return { ...m, params: { roundTrips: n } }
    },
  },
  {
    id: '9.4',
    key: 'channel-bytes-64k-vs-copy',
    subject: "Channel send + receive of a 64 KiB 'bytes' message, 1 process",
    baseline: 'one copy of 64 KiB (Uint8Array.slice): what zero-copy receive would save',
    per: 'message',
    run: (ctx) =>
      withSegment('channel', { size: 4 << 20, managed: true }, (mem) => {
        const ch = new Channel(mem, { capacity: 1 << 20, codec: 'bytes' })
        const msg = new Uint8Array(64 * 1024).fill(7)
        return alternate(
          perCall(() => {
            ch.send(msg)
            return ch.receive()
          }, ctx.effort),
          perCall(() => msg.slice(), ctx.effort),
          ctx.effort.rounds,
        )
      }),
  },
  {
    id: '9.5',
    key: 'ring-floor-vs-process-send',
    subject: 'Floor: a bare ring in shared memory, 2 processes, 1,000,000 int32 messages (Atomics only: no lock, no codec)',
    baseline: 'process.send from a child to its parent',
    per: 'message',
    run: async (ctx) => {
      const m = await alternate(ringFloorRun(messages(ctx, 'shmutils')), ipcRun('stream', messages(ctx, 'ipc')), ctx.effort.slowRounds)
      return { ...m, params: { messages: { ring: messages(ctx, 'shmutils'), processSend: messages(ctx, 'ipc') } } }
    },
  },
]

