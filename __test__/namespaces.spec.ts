// Locks shared by processes in different PID namespaces (containers sharing /dev/shm:
// `docker run --ipc=container:X`, pods with a memory-backed emptyDir). Each namespace
// peer is pid 1 of a PID namespace of its own (`unshare --pid --fork --mount-proc`), so
// its pids and thread ids mean nothing outside, and collide with those of other
// namespaces. A live holder must never be declared dead, a dead one must be recovered
// within 250 ms in both directions, and a collision of thread ids must not let one
// process release another's lock. Needs root; skipped (with the reason printed) where
// unshare is not available.
import { spawn, spawnSync } from 'node:child_process'
import { once } from 'node:events'
import { readFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import test, { type ExecutionContext } from 'ava'
import { Lock, RLock } from '../dist/index.js'
import { managedSegment, type Peer, pidNamespaceUnavailable, segmentName, sleep, startPeer } from './helpers.js'

const unavailable = pidNamespaceUnavailable()
if (unavailable !== null) console.log(`namespaces.spec.ts: SKIPPING the PID-namespace tests: ${unavailable}`)
const nsTest = unavailable === null ? test.serial : test.skip
const ROOT = fileURLToPath(new URL('..', import.meta.url))

/** A managed segment (its header hands out tokens), closed at teardown. */
const segment = (t: ExecutionContext) => managedSegment(t, 'ns', 1 << 16)

async function peerWith(t: ExecutionContext, kind: 'process' | 'namespace', key: string, handle: unknown): Promise<Peer> {
  const p = await startPeer(t, kind)
  await p.request('revive', { key, handle })
  return p
}

for (const [holderKind, waiterKind] of [['namespace', 'process'], ['process', 'namespace']] as const) {
  const where = (k: string) => (k === 'namespace' ? 'in a PID namespace' : 'outside')
  nsTest(`a live holder ${where(holderKind)} keeps the lock for 8 slices against a waiter ${where(waiterKind)}`, async (t) => {
    const m = segment(t)
    const lock = new Lock(m)
    const holder = await peerWith(t, holderKind, 'l', lock)
    const waiter = await peerWith(t, waiterKind, 'l', lock)
    if (holderKind === 'namespace' || waiterKind === 'namespace') {
      const ns = holderKind === 'namespace' ? holder : waiter
      t.is((await ns.request<{ pid: number }>('whoami')).pid, 1, 'the namespace peer is pid 1 there')
    }
    const flag = 'held'
    const held = holder.request<{ releasedAt: number }>('holdFor', { key: 'l', ms: 400, flag })
    await holder.next(flag)
    const got = await waiter.request<{ ok: boolean; at: number; ownerDied: boolean; error?: string }>('acquireTimed', { key: 'l', timeout: 5000 })
    const { releasedAt, error } = (await held) as { releasedAt: number; error?: string }
    t.is(error, undefined, 'the holder released its own lock (never ERR_SHM_NOT_OWNER)')
    t.true(got.ok)
    t.false(got.ownerDied, 'the live holder was not declared dead')
    t.true(got.at >= releasedAt, `the waiter got the lock ${got.at - releasedAt} ms after the release, not before`)
    await waiter.request('release', { key: 'l' })
    t.false(lock.locked)
  })

  nsTest(`a holder ${where(holderKind)} that is SIGKILLed is recovered within 250 ms by a waiter ${where(waiterKind)}`, async (t) => {
    const m = segment(t)
    const lock = new Lock(m)
    const times: number[] = []
    for (const arrival of ['already waiting', 'arriving after']) {
      const holder = await peerWith(t, holderKind, 'l', lock)
      const waiter = await peerWith(t, waiterKind, 'l', lock)
      t.like(await holder.request('acquire', { key: 'l' }), { ok: true })
      let pending: Promise<{ ok: boolean; at: number; ownerDied: boolean }> | undefined
      if (arrival === 'already waiting') {
        pending = waiter.request('acquireTimed', { key: 'l', timeout: 5000 })
        await sleep(70) // past a liveness slice: the waiter has already checked a live holder
      }
      const t0 = Date.now()
      await holder.kill()
      const got = await (pending ?? waiter.request<{ ok: boolean; at: number; ownerDied: boolean }>('acquireTimed', { key: 'l', timeout: 5000 }))
      const ms = got.at - t0
      times.push(ms)
      t.log(`${arrival}: recovered ${ms} ms after the kill`)
      t.true(got.ok)
      t.true(got.ownerDied)
      t.true(ms >= 0, `${arrival}: taken over ${-ms} ms before the holder died`)
      t.true(ms <= 250, `${arrival}: ${ms} ms`)
      await waiter.request('markConsistent', { key: 'l' })
      await waiter.request('release', { key: 'l' })
      await waiter.kill()
    }
    t.false(lock.locked)
  })
}

nsTest('exclusion is exact between processes in two PID namespaces and one outside, holding for 3 slices at a time', async (t) => {
  const m = segment(t)
  const lock = new Lock(m)
  const at = m.heap.malloc(64)
  new Int32Array(m.buffer, at, 1)[0] = 0
  const peers = await Promise.all([
    peerWith(t, 'namespace', 'l', lock),
    peerWith(t, 'namespace', 'l', lock),
    peerWith(t, 'process', 'l', lock),
  ])
  const results = await Promise.all(peers.map((p) => p.request<{ violations: number; error?: string }>('exclusive', { key: 'l', at, n: 3, ms: 150 })))
  for (const r of results) t.deepEqual(r, { violations: 0 })
  t.false(lock.locked)
})

nsTest('two processes with the same pid and thread id (1, in two namespaces) cannot release or re-enter each other\'s lock', async (t) => {
  const m = segment(t)
  for (const [cls, what] of [[Lock, 'Lock'], [RLock, 'RLock']] as const) {
    const lock = new cls(m)
    const a = await peerWith(t, 'namespace', 'l', lock)
    const b = await peerWith(t, 'namespace', 'l', lock)
    t.deepEqual([(await a.request<{ pid: number }>('whoami')).pid, (await b.request<{ pid: number }>('whoami')).pid], [1, 1], 'a tid collision')
    t.like(await a.request('acquire', { key: 'l' }), { ok: true })
    t.like(await b.request('release', { key: 'l' }), { code: 'ERR_SHM_NOT_OWNER' }, `${what}: B cannot release A's lock`)
    const retry = await b.request<{ ok: boolean; depth?: number }>('acquire', { key: 'l', timeout: 200 })
    t.false(retry.ok, `${what}: B neither re-enters nor takes it`)
    if (what === 'RLock') t.is(retry.depth, 0)
    t.true(lock.locked)
    t.deepEqual(await a.request('release', { key: 'l' }), {}, `${what}: A still holds it and releases it`)
    t.false(lock.locked)
    t.like(await b.request('acquire', { key: 'l', timeout: 1000 }), { ok: true, ownerDied: false })
    await b.request('release', { key: 'l' })
    await Promise.all([a.kill(), b.kill()])
  }
})

nsTest('a creator in a PID namespace whose /proc is not its own records its own start time', (t) => {
  // `unshare --pid --fork` without --mount-proc: the child is pid 1 of its namespace, but
  // /proc is still the outer one, where /proc/1 is another process.
  const name = segmentName(t, 'nsproc')
  const script = `
    const { MappedMemory } = require(${JSON.stringify(ROOT)})
    const m = MappedMemory.create(${JSON.stringify(name)}, { size: 1 << 16 })
    const st = require('node:fs').readFileSync('/proc/self/stat', 'utf8')
    const own = Number(st.slice(st.lastIndexOf(')') + 2).split(' ')[19])
    console.log(JSON.stringify({ pid: process.pid, recorded: m.creator.startTime, own }))
    m.close()`
  const r = spawnSync('unshare', ['--pid', '--fork', '--kill-child', process.execPath, '-e', script], { encoding: 'utf8', timeout: 60_000 })
  t.is(r.status, 0, r.stderr)
  const got = JSON.parse(r.stdout) as { pid: number; recorded: number; own: number }
  t.is(got.pid, 1, 'pid 1 of its namespace')
  t.true(got.own > 0)
  t.is(got.recorded, got.own, 'the header holds the creator\'s own start time, not /proc/1\'s')
})

/** Why processes cannot be started in a time namespace with a boottime offset here (`unshare -T`, needs root and Linux 5.6), or `null`. */
function timeNamespaceUnavailable(): string | null {
  const r = spawnSync('unshare', ['-T', '--fork', '--boottime', '100000', 'cat', '/proc/self/timens_offsets'], { encoding: 'utf8' })
  if (r.error) return `unshare is not available (${r.error.message})`
  if (r.status !== 0 || !/boottime\s+100000\s/.test(r.stdout)) return `unshare -T --boottime failed: ${r.stderr.trim()}`
  return null
}
const noTimeNs = timeNamespaceUnavailable()
if (noTimeNs !== null) console.log(`namespaces.spec.ts: SKIPPING the time-namespace test: ${noTimeNs}`)
const TIMENS = ['-T', '--fork', '--kill-child', '--boottime', '100000']
const BIN = `${ROOT}bin/shmutils.js`

;(noTimeNs === null ? test.serial : test.skip)('a creator that runs is seen running (and kept by gc) across time namespaces: start times are read in one clock', async (t) => {
  type Listing = { segments: { name: string; creator: { pid: number; alive: boolean | null } | null }[] }
  const creatorOf = (name: string, inNamespace: boolean) => {
    const args = [BIN, 'ls', '--json']
    const r = inNamespace ? spawnSync('unshare', [...TIMENS, process.execPath, ...args], { encoding: 'utf8' }) : spawnSync(process.execPath, args, { encoding: 'utf8' })
    t.is(r.status, 0, r.stderr)
    return (JSON.parse(r.stdout) as Listing).segments.find((s) => s.name === name)?.creator
  }
  const gcDry = (name: string, inNamespace: boolean) => {
    const args = [BIN, 'gc', '--dry-run', name]
    const r = inNamespace ? spawnSync('unshare', [...TIMENS, process.execPath, ...args], { encoding: 'utf8' }) : spawnSync(process.execPath, args, { encoding: 'utf8' })
    return r.stdout + r.stderr
  }
  // The creator outside (this process), the tool in a time namespace whose boottime is 100,000 s ahead.
  const outside = managedSegment(t, 'timens', 1 << 16)
  t.deepEqual(creatorOf(outside.name as string, true), { pid: process.pid, alive: true })
  const gc1 = gcDry(outside.name as string, true)
  t.regex(gc1, /^kept /m)
  t.notRegex(gc1, /exited/)
  // The creator in such a namespace (it stays until killed), the tool outside.
  const name = segmentName(t, 'timens-in')
  const script = `
    const { MappedMemory } = require(${JSON.stringify(ROOT)})
    const m = MappedMemory.create(${JSON.stringify(name)}, { size: 1 << 16 })
    console.log(JSON.stringify({ pid: process.pid, startTime: m.creator.startTime }))
    setInterval(() => {}, 1000)`
  const child = spawn('unshare', [...TIMENS, process.execPath, '-e', script], { stdio: ['ignore', 'pipe', 'inherit'] })
  t.teardown(() => child.kill('SIGKILL'))
  const [line] = (await once(child.stdout, 'data')) as [Buffer]
  const created = JSON.parse(line.toString()) as { pid: number; startTime: number }
  const st = readFileSync(`/proc/${created.pid}/stat`, 'utf8')
  const seenHere = Number(st.slice(st.lastIndexOf(')') + 2).split(' ')[19])
  t.true(Math.abs(created.startTime - seenHere) <= 1, `recorded ${created.startTime} in the namespace; read ${seenHere} here`)
  t.deepEqual(creatorOf(name, false), { pid: created.pid, alive: true })
  const gc2 = gcDry(name, false)
  t.regex(gc2, /^kept /m)
  t.notRegex(gc2, /exited/)
  child.kill('SIGKILL')
  await once(child, 'exit')
  t.deepEqual(creatorOf(name, false), { pid: created.pid, alive: false }, 'and seen gone once killed')
})
