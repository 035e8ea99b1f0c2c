/**
 * A throwaway Redis server for the Redis row: `redis-server` from PATH, on 127.0.0.1 and
 * a free port, with persistence off; stopped by the row, or at exit if the bench dies.
 * @module
 */
import { spawn } from 'node:child_process'
import { accessSync, constants } from 'node:fs'
import { createServer } from 'node:net'
import { delimiter, join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { atExit } from './cleanup.mjs'
import { RespClient } from './resp.mjs'

/**
 * The path of `redis-server` on PATH, or null.
 * @returns {string | null}
 */
export function findRedisServer() {
  for (const dir of (process.env.PATH ?? '').split(delimiter)) {
    if (!dir) continue
    const file = join(dir, 'redis-server')
    try {
      accessSync(file, constants.X_OK)
      return file
    } catch {
      // not here
    }
  }
  return null
}

/**
 * A port on 127.0.0.1 that was free a moment ago.
 * @returns {Promise<number>}
 */
function freePort() {
  return new Promise((resolve, reject) => {
    const srv = createServer()
    srv.once('error', reject)
    srv.listen(0, '127.0.0.1', () => {
      const { port } = /** @type {import('node:net').AddressInfo} */ (srv.address())
      srv.close(() => resolve(port))
    })
  })
}

/**
 * Starts a server and waits until it answers PING.
 * @param {string} binary - from {@link findRedisServer}
 * @returns {Promise<{ port: number, stop: () => Promise<void> }>}
 */
export async function startRedis(binary) {
  const port = await freePort()
  const proc = spawn(binary, ['--bind', '127.0.0.1', '--port', String(port), '--save', '', '--appendonly', 'no', '--daemonize', 'no', '--loglevel', 'warning'], {
    stdio: ['ignore', 'ignore', 'inherit'],
  })
  const kill = () => void proc.kill('SIGKILL')
  atExit(kill)
  const exited = new Promise((resolve) => proc.once('exit', resolve))
  const stop = async () => {
    if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGTERM')
    await exited
  }
  const deadline = Date.now() + 10_000
  for (;;) {
    if (proc.exitCode !== null) throw new Error(`redis-server exited (${proc.exitCode})`)
    try {
      const client = await RespClient.connect(port)
      const pong = await client.command('PING')
      client.close()
      if (pong === 'PONG') return { port, stop }
    } catch (e) {
      if (Date.now() > deadline) {
        await stop()
        throw new Error(`redis-server did not answer on port ${port}: ${/** @type {Error} */ (e).message}`, { cause: e })
      }
    }
    await sleep(20)
  }
}
