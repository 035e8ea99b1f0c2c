// Running a user's program (a documentation snippet, an example) as its own process tree,
// in a project that installs the package like a user would (consumer.mjs), and checking
// that it ends well and leaves no segment behind.
//
// Leak rule: programs name their segments with their own pid (`/my-app-${process.pid}`),
// as the documentation teaches, so a leftover is any /dev/shm entry that appeared while
// the program ran and contains the pid of its first process. Leftovers are removed (and
// reported).
import { spawn, spawnSync } from 'node:child_process'
import { existsSync, readdirSync, rmSync } from 'node:fs'

const SHM_DIR = '/dev/shm'

/** What a program did. */
export interface ProgramRun {
  /** Exit code, or the signal that ended it. */
  exit: number | string
  stdout: string
  stderr: string
  /** Segments it left in /dev/shm (already removed again). */
  leaked: string[]
  /** Whether it had to be killed at the deadline. */
  timedOut: boolean
}

function listShm(): Set<string> {
  return existsSync(SHM_DIR) ? new Set(readdirSync(SHM_DIR)) : new Set()
}

/**
 * Runs `command args` in `cwd` in a process group of its own; at `timeoutMs` the whole
 * group is killed. Resolves when the first process exited and its output closed.
 */
export function runProgram(
  command: string,
  args: string[],
  options: { cwd: string; timeoutMs?: number; env?: NodeJS.ProcessEnv },
): Promise<ProgramRun> {
  const before = listShm()
  const child = spawn(command, args, {
    cwd: options.cwd,
    env: options.env ?? process.env,
    stdio: ['ignore', 'pipe', 'pipe'],
    detached: true,
  })
  let stdout = ''
  let stderr = ''
  child.stdout.on('data', (d: Buffer) => (stdout += d.toString()))
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()))
  let timedOut = false
  const killGroup = (): void => {
    try {
      process.kill(-child.pid!, 'SIGKILL')
    } catch {
      // Already gone.
    }
  }
  const timer = setTimeout(() => {
    timedOut = true
    killGroup()
  }, options.timeoutMs ?? 120_000)
  return new Promise((resolve, reject) => {
    child.on('error', (e) => {
      clearTimeout(timer)
      reject(e)
    })
    child.on('close', (code, signal) => {
      clearTimeout(timer)
      // Whatever the program left running (a stray worker) goes too.
      killGroup()
      const pid = String(child.pid)
      const leaked = [...listShm()].filter((n) => !before.has(n) && n.includes(pid))
      for (const n of leaked) rmSync(`${SHM_DIR}/${n}`, { force: true })
      resolve({ exit: code ?? signal ?? -1, stdout, stderr, leaked, timedOut })
    })
  })
}

/** A one-paragraph account of a run for a failing assertion. */
export function describeRun(what: string, r: ProgramRun): string {
  return [
    `${what}: exit ${r.exit}${r.timedOut ? ' (killed at the deadline)' : ''}${r.leaked.length ? `, leaked ${r.leaked.join(', ')}` : ''}`,
    `--- stdout\n${r.stdout.slice(-3000)}`,
    `--- stderr\n${r.stderr.slice(-3000)}`,
  ].join('\n')
}

/**
 * Whether `command` runs here (`command --version` exits 0). The tests that need a C
 * compiler, python3 or Deno are skipped, saying so, where it is missing (Alpine CI has
 * neither cc nor python3; Deno has no musl build).
 */
export function available(command: string, args: string[] = ['--version']): boolean {
  const r = spawnSync(command, args, { stdio: 'ignore', timeout: 30_000 })
  return r.status === 0
}
