// Shared test helpers: unique segment names that are unlinked after each test (pass or
// fail), and real child processes (child_process.fork) that talk over IPC.
import { fork, type ChildProcess } from 'node:child_process'
import { existsSync } from 'node:fs'
import { join } from 'node:path'
import type { ExecutionContext } from 'ava'
import { shmUnlink } from '../dist/index.js'

let counter = 0

/** A fresh segment name, unlinked (if it exists) when the test ends, even on failure. */
export function segmentName(t: ExecutionContext, tag = 't'): string {
  const name = `/shmutils-test-${process.pid}-${tag}-${++counter}`
  t.teardown(() => unlinkQuietly(name))
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

/** Whether the segment `name` exists in /dev/shm (Linux). */
export function segmentExists(name: string): boolean {
  return existsSync(join('/dev/shm', name.replace(/^\//, '')))
}

/** The path of a fixture script. */
export function fixture(file: string): string {
  return join(import.meta.dirname ?? __dirname, 'fixtures', file)
}

/** A forked child running a fixture, killed when the test ends. */
export interface Child {
  proc: ChildProcess
  /** The next message the child sends. */
  message<T = unknown>(): Promise<T>
  /** Resolves with the exit code (or signal name). */
  exited: Promise<number | string>
}

/** Forks `fixtures/<file>` with `args`; the child is killed at teardown if still alive. */
export function forkChild(t: ExecutionContext, file: string, args: string[] = []): Child {
  const proc = fork(fixture(file), args, { stdio: ['ignore', 'inherit', 'inherit', 'ipc'], execArgv: [] })
  const queue: unknown[] = []
  const waiting: Array<(m: unknown) => void> = []
  proc.on('message', (m) => {
    const w = waiting.shift()
    if (w) w(m)
    else queue.push(m)
  })
  const exited = new Promise<number | string>((resolve) => {
    proc.on('exit', (code, signal) => resolve(code ?? signal ?? -1))
  })
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
