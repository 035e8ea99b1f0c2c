// The benchmark (`npm run bench`) in its --quick form, as CI runs it, so it cannot rot:
// it exits 0, reports every row (figures are not asserted: they mean nothing at this
// size), draws the chart, rewrites only its README section, and leaves no segment in
// /dev/shm, also when it is interrupted.
import { spawn } from 'node:child_process'
import { copyFileSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import test, { type ExecutionContext } from 'ava'
import { segmentPrefix } from '../bench/names.mjs'

const ROOT = fileURLToPath(new URL('..', import.meta.url))
const ROW_IDS = ['1.1', '1.2', '2', '2.1', '2.2', '3.1', '3.2', '3.3', '4.1', '4.2', '5.1', '5.2', '5.3', '5.4', '6', '7.1', '7.2', '7.3', '7.4', '8.1', '8.2', '8.3', '8.4', '8.5', '8.6', '8.7', '8.8', '8.9', '9.1', '9.2', '9.3', '9.4', '9.5', '10', '10.1', '11.1', '11.2', '11.3']

interface Row {
  id: string
  status: 'ok' | 'skipped' | 'error'
  reason: string | null
  ratio: number | null
}

interface Bench {
  pid: number
  stdout: string
  stderr: string
  /** Exit code, or the signal's name. */
  exit: Promise<number | string>
  kill(signal: NodeJS.Signals): void
}

/** Runs `node bench/index.mjs ...args`; the process is killed at teardown if still alive. */
function runBench(t: ExecutionContext, args: string[], onStderr?: (soFar: string) => void): Bench {
  const child = spawn(process.execPath, ['bench/index.mjs', ...args], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] })
  const bench: Bench = {
    pid: child.pid ?? -1,
    stdout: '',
    stderr: '',
    exit: new Promise((resolve) => child.on('exit', (code, signal) => resolve(code ?? signal ?? -1))),
    kill: (signal) => child.kill(signal),
  }
  child.stdout.on('data', (d) => (bench.stdout += d))
  child.stderr.on('data', (d) => {
    bench.stderr += d
    onStderr?.(bench.stderr)
  })
  t.teardown(() => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL')
  })
  return bench
}

/** Segments in /dev/shm named by the bench process `pid` (none checked off Linux). */
function leftovers(pid: number): string[] {
  if (!existsSync('/dev/shm')) return []
  const prefix = segmentPrefix(pid).slice(1)
  return readdirSync('/dev/shm').filter((n) => n.startsWith(prefix))
}

function tempDir(t: ExecutionContext): string {
  const dir = mkdtempSync(join(tmpdir(), 'shmutils-bench-test-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  return dir
}

test('bench --quick exits 0 and writes every row, the chart and only its README section', async (t) => {
  const dir = tempDir(t)
  const out = join(dir, 'latest.json')
  const svg = join(dir, 'benchmarks.svg')
  const readme = join(dir, 'README.md')
  copyFileSync(join(ROOT, 'README.md'), readme)
  const before = readFileSync(readme, 'utf8')

  const bench = runBench(t, ['--quick', '--out', out, '--svg', svg, '--readme', readme])
  t.is(await bench.exit, 0, bench.stderr)

  const report = JSON.parse(readFileSync(out, 'utf8')) as { mode: string; machine: { cores: number; cpu: string; node: string }; rows: Row[] }
  t.is(report.mode, 'quick')
  t.is(report.machine.node, process.version)
  t.deepEqual(
    report.rows.map((r) => r.id),
    ROW_IDS,
  )
  for (const row of report.rows) {
    if (row.status === 'ok') t.true(Number.isFinite(row.ratio) && (row.ratio as number) > 0, `row ${row.id} has a ratio`)
    else t.is(row.status, 'skipped', `row ${row.id}: ${row.reason}`)
    if (row.status === 'skipped') t.regex(String(row.reason), /^skipped: /)
    t.true(bench.stdout.includes(`\n${row.id} `), `the table has row ${row.id}`)
  }

  const chart = readFileSync(svg, 'utf8')
  t.regex(chart, /^<svg xmlns="http:\/\/www\.w3\.org\/2000\/svg"[\s\S]*<\/svg>\n$/)
  for (const id of ROW_IDS) t.true(chart.includes(`>${id}</tspan>`), `the chart has row ${id}`)

  const after = readFileSync(readme, 'utf8')
  const begin = after.indexOf('<!-- bench:begin')
  const end = after.indexOf('<!-- bench:end -->')
  t.true(begin > 0 && end > begin, 'the README has the generated section')
  t.true(after.slice(begin, end).includes('| 5.4 |'), 'with the table')
  const outside = (s: string) => {
    const b = s.indexOf('<!-- bench:begin')
    const e = s.indexOf('<!-- bench:end -->')
    return b < 0 ? s : s.slice(0, b) + s.slice(e)
  }
  if (before.includes('<!-- bench:begin')) t.is(outside(after), outside(before), 'nothing outside the section changed')
  else t.is(after.replace(/## Performance\n\n<!-- bench:begin[\s\S]*?<!-- bench:end -->\n\n/, ''), before, 'only the section was added')

  t.deepEqual(leftovers(bench.pid), [], 'no segment left in /dev/shm')
})

test('a bench interrupted while its segments exist leaves none behind', async (t) => {
  const dir = tempDir(t)
  let seen: string[] = []
  let poll: NodeJS.Timeout | undefined
  t.teardown(() => clearInterval(poll))
  // From row 2 on, rows run child processes over several segments: interrupt the bench
  // once one of them is there.
  const bench = runBench(t, ['--quick', '--out', join(dir, 'latest.json')], (soFar) => {
    if (!soFar.includes('[1.2]') || poll) return
    poll = setInterval(() => {
      seen = leftovers(bench.pid)
      if (seen.length === 0 && existsSync('/dev/shm')) return
      clearInterval(poll)
      bench.kill('SIGINT')
    }, 2)
  })
  const code = await bench.exit
  t.is(code, 130, bench.stderr)
  if (existsSync('/dev/shm')) t.true(seen.length > 0, 'interrupted while it had segments')
  t.deepEqual(leftovers(bench.pid), [])
})
