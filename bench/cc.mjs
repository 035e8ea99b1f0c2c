/**
 * The C reference programs in bench/c/: found compiler, built once per run into a temp
 * directory (removed at exit), run with arguments, their JSON output parsed. Nothing is
 * built when there is no C compiler; rows that need one are then skipped.
 * @module
 */
import { execFileSync, spawnSync } from 'node:child_process'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { atExit } from './cleanup.mjs'

/** @type {string | null | undefined} undefined: not looked for yet */
let compiler
/** @type {string | null} */
let buildDir = null
/** @type {Map<string, string>} program name -> binary */
const built = new Map()

/**
 * The system C compiler: `$CC`, else the first of cc, gcc, clang that runs; null if none.
 * @returns {string | null}
 */
export function findCompiler() {
  if (compiler !== undefined) return compiler
  const candidates = process.env.CC ? [process.env.CC] : ['cc', 'gcc', 'clang']
  compiler = candidates.find((cc) => spawnSync(cc, ['--version'], { stdio: 'ignore' }).status === 0) ?? null
  return compiler
}

/**
 * Builds `bench/c/<name>.c` (once per run) and returns the binary's path.
 * @param {string} name
 * @throws Error when there is no compiler or the program does not compile
 */
export function build(name) {
  const hit = built.get(name)
  if (hit) return hit
  const cc = findCompiler()
  if (!cc) throw new Error('no C compiler')
  if (!buildDir) {
    const dir = mkdtempSync(join(tmpdir(), 'shmutils-bench-c-'))
    buildDir = dir
    atExit(() => rmSync(dir, { recursive: true, force: true }))
  }
  const source = fileURLToPath(new URL(`./c/${name}.c`, import.meta.url))
  const binary = join(buildDir, name)
  const libs = process.platform === 'linux' ? ['-lrt'] : []
  execFileSync(cc, ['-O2', '-std=gnu11', '-o', binary, source, ...libs], { stdio: ['ignore', 'inherit', 'inherit'] })
  built.set(name, binary)
  return binary
}

/**
 * Runs a reference program and parses the JSON it prints.
 * @param {string} name - program in bench/c/
 * @param {Array<string | number>} args
 * @returns {any}
 */
export function runC(name, args) {
  const out = execFileSync(build(name), args.map(String), { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'], timeout: 300_000 })
  return JSON.parse(out)
}
