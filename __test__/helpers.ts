// Shared test helpers: unique segment names that are unlinked after each test (pass or
// fail), real child processes (child_process.fork) that talk over IPC, and the few places
// where the suite meets the platform (name length, segment existence, the C compiler), so
// that every test runs unchanged on Linux and macOS.
import { fork, spawnSync, type ChildProcess } from 'node:child_process'
import { fstatSync, mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { pathToFileURL } from 'node:url'
import type { ExecutionContext } from 'ava'
import { Worker } from 'node:worker_threads'
import { type Heap, type Lock, MapFlags, MappedMemory, Protection, ShmError, shmOpen, shmUnlink } from '../dist/index.js'
import { binding } from '../dist/native.js'

let counter = 0

/** Names not unlinked yet: a last sweep at exit covers a test process that ends early. */
const pending = new Set<string>()
process.on('exit', () => pending.forEach(unlinkQuietly))

/**
 * The longest segment name, in bytes with its leading slash, that every supported platform
 * accepts: macOS's `PSHMNAMLEN` (Linux allows 255). {@link segmentName} stays within it.
 */
export const MAX_PORTABLE_NAME = 31

/**
 * A fresh segment name, unlinked (if it exists) when the test ends, even on failure:
 * `/shmutils-t<pid>-<n>-<tag>` with pid and counter in base 36 and the tag cut short, at a
 * character boundary, so the whole name fits {@link MAX_PORTABLE_NAME} bytes of UTF-8
 * (the tag only helps a reader of /dev/shm; the pid and counter make it unique). Ask for
 * another name instead of appending to one.
 */
export function segmentName(t: ExecutionContext, tag = 't'): string {
  let name = `/shmutils-t${process.pid.toString(36)}-${(++counter).toString(36)}-`
  for (const ch of tag) {
    if (Buffer.byteLength(name + ch) > MAX_PORTABLE_NAME) break
    name += ch
  }
  pending.add(name)
  t.teardown(() => {
    unlinkQuietly(name)
    pending.delete(name)
  })
  return name
}

/** Unlinks a segment, ignoring ENOENT. */
export function unlinkQuietly(name: string): void {
  try {
    shmUnlink(name)
  } catch (e) {
    if ((e as { code?: string }).code !== 'ENOENT') throw e
  }
}

/**
 * Whether a segment named `name` exists, asked through the package itself (`shmOpen(name,
 * 'r')`): platforms keep segments in different places (Linux: files in /dev/shm; macOS: no
 * file system at all).
 */
export function segmentExists(name: string): boolean {
  try {
    shmOpen(name, 'r').close()
    return true
  } catch (e) {
    if ((e as { code?: string }).code === 'ENOENT') return false
    throw e
  }
}

/** The permission bits of the existing segment `name` (`fstat` of an open descriptor). */
export function segmentMode(name: string): number {
  const o = shmOpen(name, 'r')
  try {
    return fstatSync(o.fd).mode & 0o777
  } finally {
    o.close()
  }
}

/**
 * The C compiler the tests that build C programs use: `$CC`, else `cc`. `npm test` needs
 * one (gcc or clang; Alpine: `apk add build-base`); a cross run sets `CC` to a compiler
 * for the target.
 */
export const CC = process.env.CC || 'cc'

/** setpriv's arguments that run a command as another user, nobody (root only). */
export const AS_NOBODY = ['setpriv', '--reuid=65534', '--regid=65534', '--clear-groups'] as const

let nobodyRuns: boolean | undefined
/**
 * Whether this process can run Node with this checkout's package as another user: as
 * root, with `setpriv`, and a checkout other users may read (asked once).
 */
export function canRunAsNobody(): boolean {
  nobodyRuns ??= process.platform === 'linux' && process.getuid?.() === 0 &&
    spawnSync(AS_NOBODY[0], [...AS_NOBODY.slice(1), process.execPath, '-e', `require(${JSON.stringify(join(import.meta.dirname ?? __dirname, '..', 'dist', 'index.js'))})`]).status === 0
  return nobodyRuns
}

/**
 * Compiles the C program `fixtures/<source>` with {@link CC} (and `args` after the
 * source, such as libraries) into a temporary directory removed at teardown; returns the
 * executable's path.
 * @throws Error saying how to get a compiler when there is none, or what failed
 */
export function compileFixture(t: ExecutionContext, source: string, args: string[] = []): string {
  const probe = spawnSync(CC, ['--version'], { encoding: 'utf8' })
  if (probe.error || probe.status !== 0) {
    throw new Error(`This test needs a C compiler, ${CC} (apt-get install gcc; Alpine: apk add build-base; or set CC): ${probe.error?.message ?? probe.stderr}`)
  }
  const dir = mkdtempSync(join(tmpdir(), 'shmutils-cc-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const exe = join(dir, source.replace(/\.c$/, ''))
  const r = spawnSync(CC, ['-std=gnu11', '-O2', '-Wall', '-Wextra', '-Werror', '-o', exe, fixture(source), ...args], { encoding: 'utf8' })
  if (r.status !== 0) throw new Error(`${CC} failed to compile fixtures/${source}:\n${r.error?.message ?? r.stderr}`)
  return exe
}

/**
 * Where this process's user address space ends, as a power of two: on Linux, above the
 * main thread's stack (`[stack]` in /proc/self/maps), which the kernel puts at the top
 * (2^47 on x86-64; 2^39 or 2^48 on arm64, depending on the kernel; lower under
 * qemu-user); elsewhere 2^47.
 */
export function userAddressTop(): number {
  if (process.platform !== 'linux') return 2 ** 47
  const stack = readFileSync('/proc/self/maps', 'utf8').split('\n').find((l) => l.endsWith('[stack]'))
  if (!stack) throw new Error('no [stack] line in /proc/self/maps')
  const end = Number.parseInt(stack.split('-')[1]!, 16)
  return 2 ** Math.ceil(Math.log2(end))
}

/** The path of a fixture (a file in `__test__/fixtures/`). */
export function fixture(file: string): string {
  return join(import.meta.dirname ?? __dirname, 'fixtures', file)
}

/**
 * The Node options a fixture needs in its process: none for JavaScript; the TypeScript
 * hooks (register-ts.mjs) for a `.ts`/`.mts` fixture, so fixtures may be written in either.
 */
export function fixtureExecArgv(file: string): string[] {
  if (!/\.m?ts$/.test(file)) return []
  return ['--import', pathToFileURL(join(import.meta.dirname ?? __dirname, 'register-ts.mjs')).href]
}

/**
 * Resolves with a forked child's exit code (or signal name) once it has exited and every
 * message it sent has been delivered: 'close' follows the IPC channel's end, where 'exit'
 * can overtake messages still in the pipe.
 */
export function childClosed(proc: ChildProcess): Promise<number | string> {
  return new Promise((resolve) => proc.on('close', (code, signal) => setImmediate(() => resolve(code ?? signal ?? -1))))
}

/** A forked child running a fixture, killed when the test ends. */
export interface Child {
  proc: ChildProcess
  /** The next message the child sends. */
  message<T = unknown>(): Promise<T>
  /** Resolves with the exit code (or signal name) after every message it sent arrived. */
  exited: Promise<number | string>
}

/** Forks `fixtures/<file>` with `args`; the child is killed at teardown if still alive. */
export function forkChild(t: ExecutionContext, file: string, args: string[] = []): Child {
  const proc = fork(fixture(file), args, { stdio: ['ignore', 'inherit', 'inherit', 'ipc'], execArgv: fixtureExecArgv(file) })
  const queue: unknown[] = []
  const waiting: Array<(m: unknown) => void> = []
  proc.on('message', (m) => {
    const w = waiting.shift()
    if (w) w(m)
    else queue.push(m)
  })
  const exited = childClosed(proc)
  t.teardown(() => {
    if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGKILL')
  })
  return {
    proc,
    exited,
    message<T>() {
      if (queue.length) return Promise.resolve(queue.shift() as T)
      return new Promise<T>((resolve, reject) => {
        waiting.push(resolve as (m: unknown) => void)
        exited.then((c) => reject(new Error(`child ${file} exited (${c}) before sending a message`)))
      })
    },
  }
}

/** What {@link throws} expects: ava's expectation plus the SystemError fields. */
export interface ErrorExpectation {
  instanceOf?: new (...args: never[]) => Error
  code?: string
  message?: RegExp | string
  errno?: number
  syscall?: string
  path?: string
}

/** `t.throws` that also checks `errno`, `syscall` and `path`; returns the error. */
export function throws(t: ExecutionContext, fn: () => unknown, expect: ErrorExpectation, what?: string): Error | undefined {
  const { errno, syscall, path, ...rest } = expect
  const e = t.throws(fn, rest, what) as (Error & { errno?: number; syscall?: string; path?: string }) | undefined
  if (errno !== undefined) t.is(e?.errno, errno, what)
  if (syscall !== undefined) t.is(e?.syscall, syscall, what)
  if (path !== undefined) t.is(e?.path, path, what)
  return e
}

/**
 * A managed segment of `size` bytes under a fresh name (with `tag` in it), closed at
 * teardown (and unlinked by {@link segmentName}'s teardown).
 */
export function managedSegment(t: ExecutionContext, tag: string, size = 1 << 20): MappedMemory {
  const m = MappedMemory.create(segmentName(t, tag), { size })
  t.teardown(() => m.close())
  return m
}

/**
 * Allocates `size`-byte blocks from `heap` until it says `ENOMEM` (checked); returns
 * their offsets.
 */
export function fillHeap(t: ExecutionContext, heap: Heap, size: number): number[] {
  const offsets: number[] = []
  for (;;) {
    try {
      offsets.push(heap.malloc(size))
    } catch (e) {
      t.is((e as ShmError).code, 'ENOMEM')
      return offsets
    }
  }
}

/** A raw mapping of a fresh named object, closed (and unlinked) at teardown. */
export function rawSegment(t: ExecutionContext, size = 4096 * 4): MappedMemory {
  const name = segmentName(t, 'sync')
  const fd = shmOpen(name, 'x+').truncate(size)
  const m = new MappedMemory(null, size, Protection.READ_WRITE, MapFlags.SHARED, fd)
  fd.close()
  t.teardown(() => m.close())
  return m
}

/** A reply of a `sync-peer.mjs` peer. */
export type Reply = Record<string, unknown> & { tag?: string; error?: string; code?: string }

/**
 * Why processes cannot be started in a PID namespace of their own here
 * (`unshare --pid --fork --mount-proc`, needs root), or `null` when they can.
 */
export function pidNamespaceUnavailable(): string | null {
  const r = spawnSync('unshare', ['--pid', '--fork', '--mount-proc', '--kill-child', 'true'], { encoding: 'utf8' })
  if (r.error) return `unshare is not available (${r.error.message})`
  if (r.status !== 0) return `unshare --pid --fork --mount-proc failed (needs root): ${r.stderr.trim()}`
  return null
}

/**
 * Whether the tests run under qemu-user (the arm64 lane of `.ci/run`, which sets
 * `QEMU_LD_PREFIX`), where every instruction takes several times as long.
 */
export const EMULATED: boolean = process.env.QEMU_LD_PREFIX !== undefined

/** A time bound of a test: `ms` natively, four times it under emulation ({@link EMULATED}). */
export function timeBound(ms: number): number {
  return EMULATED ? 4 * ms : ms
}

/** A `fixtures/sync-peer.mjs` peer: a forked process, a worker thread, or a forked process in a PID namespace of its own. */
export interface Peer {
  kind: 'process' | 'thread' | 'namespace'
  /** Sends a request and resolves with its reply (without the tag). */
  request<T = Reply>(op: string, args?: Record<string, unknown>): Promise<T>
  /** Sends a request without waiting; returns its tag (see {@link next}). */
  post(op: string, args?: Record<string, unknown>): string
  /** Resolves with the message tagged `tag` (a request's reply or a flag). */
  next<T = Reply>(tag: string): Promise<T>
  /** Resolves with the exit code or signal once the peer is gone. */
  exited: Promise<number | string>
  /** SIGKILL (process) or `terminate()` (thread). */
  kill(): Promise<void>
}

let tags = 0

/**
 * Starts a peer of the given kind running `fixtures/<file>` (by default `sync-peer.mjs`;
 * any fixture that answers `{ tag, op }` requests the same way); it is killed at teardown.
 * A `'namespace'` peer runs as pid 1 of a new PID namespace (`unshare --pid --fork
 * --mount-proc --kill-child`: killing it kills the namespace).
 * `cpu` (a process): pinned to that core (`taskset`); `realtime`: also `SCHED_FIFO` (`chrt -f 1`),
 * so that it runs as soon as it is woken, whatever else the machine runs.
 */
export async function startPeer(t: ExecutionContext, kind: 'process' | 'thread' | 'namespace', file = 'sync-peer.mjs', cpu?: number, realtime = false): Promise<Peer> {
  const waiting = new Map<string, (m: Reply) => void>()
  const early = new Map<string, Reply>()
  const deliver = (m: Reply) => {
    const tag = String(m.tag)
    const w = waiting.get(tag)
    if (w) {
      waiting.delete(tag)
      w(m)
    } else early.set(tag, m)
  }
  let sendRaw: (m: unknown) => void
  let exited: Promise<number | string>
  let kill: () => Promise<void>
  if (kind === 'process' || kind === 'namespace') {
    const ns =
      kind === 'namespace'
        ? { execPath: 'unshare', execArgv: ['--pid', '--fork', '--mount-proc', '--kill-child', process.execPath] }
        : cpu !== undefined
          ? { execPath: 'taskset', execArgv: ['-c', String(cpu), ...(realtime ? ['chrt', '-f', '1'] : []), process.execPath] } // taskset (and chrt) exec node: same pid
          : { execArgv: [] }
    const proc = fork(fixture(file), [], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'], ...ns })
    proc.on('message', (m) => deliver(m as Reply))
    exited = childClosed(proc)
    sendRaw = (m) => proc.send(m as object)
    kill = async () => {
      if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGKILL')
      await exited
    }
  } else {
    const w = new Worker(fixture(file))
    w.on('message', (m) => deliver(m as Reply))
    w.on('error', (e) => deliver({ tag: 'error', error: String(e) }))
    exited = new Promise((resolve) => w.on('exit', (code) => resolve(code)))
    sendRaw = (m) => w.postMessage(m)
    kill = async () => {
      await w.terminate()
      await exited
    }
  }
  t.teardown(kill)
  const next = <T = Reply>(tag: string) =>
    new Promise<T>((resolve, reject) => {
      const m = early.get(tag)
      if (m) {
        early.delete(tag)
        return resolve(m as T)
      }
      waiting.set(tag, resolve as (m: Reply) => void)
      exited.then((c) => reject(new Error(`peer (${kind}) exited (${c}) before replying to ${tag}`)))
    })
  const post = (op: string, args: Record<string, unknown> = {}) => {
    const tag = `${op}-${++tags}`
    sendRaw(JSON.parse(JSON.stringify({ ...args, op, tag })))
    return tag
  }
  await next('started')
  const request = async <T = Reply>(op: string, args?: Record<string, unknown>) => {
    const { tag: _tag, ...reply } = await next(post(op, args))
    return reply as T
  }
  return { kind, post, next, request, exited, kill }
}

/** A `fixtures/prim-peer.mjs` peer (a forked process by default), killed at teardown. */
export function primPeer(t: ExecutionContext, kind: 'process' | 'thread' = 'process'): Promise<Peer> {
  return startPeer(t, kind, 'prim-peer.mjs')
}

/**
 * Ends `peer` the way a test of deaths asks: `'kill'` (SIGKILL, or `terminate()` for a
 * thread) or `'exit'` (it exits by itself); resolves once it is gone.
 */
export async function endPeer(peer: Peer, how: 'kill' | 'exit'): Promise<void> {
  if (how === 'kill') return peer.kill()
  peer.post('exit')
  await peer.exited
}

/** Milliseconds since `t0` (performance.now()). */
export function since(t0: number): number {
  return performance.now() - t0
}

/** Resolves after `ms`. */
export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms))

/**
 * A seeded pseudo-random source in [0, 1) (a 32-bit linear congruential generator), so
 * that a randomized test makes the same choices on every run.
 */
export function seededRandom(seed: number): () => number {
  let x = seed >>> 0
  return () => (x = (Math.imul(x, 1103515245) + 12345) >>> 0) / 2 ** 32
}

/**
 * What `p` rejected with (ava's `throwsAsync` accepts only native errors, and an abort
 * rejects with a `DOMException`); fails if it resolved.
 */
export async function rejection(p: Promise<unknown>): Promise<Error & { cause?: unknown; code?: unknown }> {
  try {
    await p
  } catch (e) {
    return e as Error
  }
  throw new Error('the promise resolved instead of rejecting')
}

/**
 * A try (`how`) that races a pending `acquireAsync` of this thread: a `kind` peer holds a
 * `cls` lock; an `acquireAsync` here waits for it; then `how` runs with a hook on its
 * native "is the holder dead?" try, which has the peer release and waits until the waiter
 * thread took the lock for this thread, before the try runs. The try must say `false`
 * (the lock is held: by the pending acquisition); the pending acquisition then holds the
 * lock, and releases it.
 */
export async function tryRacesPendingAsync(
  t: ExecutionContext,
  cls: { at(memory: MappedMemory, offset: number): Lock },
  how: 'tryAcquire()' | 'acquireAsync({ timeout: 0 })',
  kind: 'process' | 'thread',
): Promise<void> {
  const m = rawSegment(t)
  const lock = cls.at(m, 0)
  const word = new Int32Array(m.buffer, 0, 1)
  const release = new Int32Array(m.buffer, 256, 1)
  const peer = await startPeer(t, kind)
  await peer.request('revive', { key: 'l', handle: lock })
  const held = peer.post('holdUntil', { key: 'l', at: 256, flag: 'held' })
  await peer.next('held')
  const owner = (): number => Atomics.load(word, 0) & 0x3fff_ffff
  const peerOwner = owner()
  const pending = lock.acquireAsync({ timeout: 10_000 })
  const orig = binding.lockAcquire
  let hooked = 0
  let ownerAtHook = -1
  binding.lockAcquire = (id, offset, timeout) => {
    binding.lockAcquire = orig
    hooked++
    ownerAtHook = owner()
    Atomics.store(release, 0, 1) // the peer releases ...
    const t0 = performance.now()
    while ((owner() === peerOwner || owner() === 0) && since(t0) < 5000); // ... the waiter thread takes it for us
    return orig(id, offset, timeout)
  }
  let got: boolean
  try {
    got = how === 'tryAcquire()' ? lock.tryAcquire() : await lock.acquireAsync({ timeout: 0 })
  } finally {
    binding.lockAcquire = orig
    Atomics.store(release, 0, 1)
  }
  t.is(hooked, 1, 'the try asked the native side whether the holder lives')
  t.is(ownerAtHook, peerOwner, 'the peer held the lock when the try began')
  t.false(got, `${how} while the lock is held for a pending acquisition`)
  t.true(await pending, 'the pending acquireAsync got the lock')
  t.true(lock.locked)
  lock.release()
  t.false(lock.locked, 'the lock ends free')
  t.deepEqual(await peer.next(held), { tag: held, told: true })
}
