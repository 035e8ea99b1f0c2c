/**
 * A bench run: every row in order, each measured against its baseline, then the table on
 * stdout, the raw figures as JSON, and (when asked) the chart and the README section.
 * @module
 */
import { mkdirSync, writeFileSync } from 'node:fs'
import { loadavg } from 'node:os'
import { dirname, relative } from 'node:path'
import { renderChart } from './chart.mjs'
import { detectFeatures } from './features.mjs'
import { describeMachine, machineLine } from './machine.mjs'
import { EFFORT, median } from './measure.mjs'
import { updateReadme } from './readme.mjs'
import { counterRows } from './rows/counter.mjs'
import { heapRows } from './rows/heap.mjs'
import { channelRows } from './rows/channel.mjs'
import { lockRows } from './rows/lock.mjs'
import { mapRows } from './rows/map.mjs'
import { rwlockRows } from './rows/rwlock.mjs'
import { memoryRows } from './rows/memory.mjs'
import { guardRows } from './rows/guard.mjs'
import { structRows } from './rows/struct.mjs'
import { traceRows } from './rows/trace.mjs'
import { formatRatio, markdownTable, textTable } from './table.mjs'

/** Every row, in table order. */
export const ROWS = [...lockRows, ...counterRows, ...heapRows, ...memoryRows, ...structRows, ...guardRows, ...mapRows, ...channelRows, ...rwlockRows, ...traceRows]

/**
 * Runs the bench.
 * @param {import('./options.mjs').Options} opts
 * @returns {Promise<number>} the exit code: 1 if a row failed
 */
export async function runBench(opts) {
  const t0 = performance.now()
  const machine = describeMachine()
  const features = await detectFeatures()
  /** @type {import('./rows/row.mjs').Context} */
  const ctx = { quick: opts.quick, effort: opts.quick ? EFFORT.quick : EFFORT.full, features }
  const mode = opts.quick ? 'quick' : 'full'
  log(`shmutils bench (${mode}) on ${machineLine(machine)}; load average ${machine.loadAverage.join(' ')}`)
  /** @type {import('./table.mjs').RowResult[]} */
  const rows = []
  for (const row of ROWS) rows.push(await runRow(row, ctx, opts.only))

  const report = { mode, machine, loadAverageAtEnd: loadavg().map((x) => +x.toFixed(2)), seconds: +((performance.now() - t0) / 1000).toFixed(1), features, rows }
  mkdirSync(dirname(opts.out), { recursive: true })
  writeFileSync(opts.out, `${JSON.stringify(report, null, 2)}\n`)

  const note = opts.quick ? ' --quick: counts and sizes shrunk, figures not meaningful.' : ''
  process.stdout.write(`\nshmutils vs baselines: ratio = shmutils time ÷ baseline time, same run (below 1 = faster).${note}\n`)
  process.stdout.write(`${machineLine(machine)}\n\n${textTable(rows)}\n\nRaw figures: ${opts.out}\n`)

  const title = 'shmutils against its baselines (time ratio, same run)'
  const subtitle = `${machineLine(machine)}${opts.quick ? ' (--quick)' : ''}`
  if (opts.svg) {
    mkdirSync(dirname(opts.svg), { recursive: true })
    writeFileSync(opts.svg, renderChart(rows, { title, subtitle }))
    log(`chart: ${opts.svg}`)
  }
  if (opts.readme) {
    updateReadme(opts.readme, readmeSection(rows, machine, report.loadAverageAtEnd, opts))
    log(`README section: ${opts.readme}`)
  }
  return rows.some((r) => r.status === 'error') ? 1 : 0
}

/**
 * Runs one row (or records why not).
 * @param {import('./rows/row.mjs').Row} row
 * @param {import('./rows/row.mjs').Context} ctx
 * @param {string[] | null} only
 * @returns {Promise<import('./table.mjs').RowResult>}
 */
async function runRow(row, ctx, only) {
  /** @type {import('./table.mjs').RowResult} */
  const result = {
    id: row.id,
    key: row.key,
    subject: row.subject,
    baseline: row.baseline,
    per: row.per,
    goal: row.goal ?? null,
    status: 'skipped',
    reason: null,
    ratio: null,
    ratios: [],
    subjectNs: null,
    baselineNs: null,
    params: {},
    extra: {},
    seconds: 0,
  }
  const selected = !only || only.some((id) => row.id === id || row.id.startsWith(`${id}.`))
  const skip = selected ? (row.skip?.(ctx) ?? null) : 'skipped: not selected (--only)'
  if (skip) {
    result.reason = skip
    log(`[${row.id}] ${skip}`)
    return result
  }
  const t0 = performance.now()
  try {
    const m = await row.run(ctx)
    Object.assign(result, {
      status: 'ok',
      baseline: m.baselineLabel ?? row.baseline,
      ratio: median(m.ratios),
      ratios: m.ratios,
      subjectNs: m.subject,
      baselineNs: m.baseline,
      params: m.params ?? {},
      extra: m.extra ?? {},
    })
  } catch (e) {
    result.status = 'error'
    result.reason = /** @type {Error} */ (e)?.message ?? String(e)
    process.stderr.write(`${/** @type {Error} */ (e)?.stack ?? e}\n`)
  }
  result.seconds = +((performance.now() - t0) / 1000).toFixed(2)
  const outcome = result.status === 'ok' ? formatRatio(/** @type {number} */ (result.ratio)) : `error: ${result.reason}`
  log(`[${row.id}] ${row.subject} vs ${result.baseline}: ${outcome} (${result.seconds} s)`)
  return result
}

/**
 * The README's Performance section.
 * @param {import('./table.mjs').RowResult[]} rows
 * @param {import('./machine.mjs').Machine} machine
 * @param {number[]} loadAtEnd
 * @param {import('./options.mjs').Options} opts
 */
function readmeSection(rows, machine, loadAtEnd, opts) {
  const chart = opts.svg && opts.readme ? relative(dirname(opts.readme), opts.svg).split('\\').join('/') : 'docs/benchmarks.svg'
  const busy = Math.max(machine.loadAverage[0], loadAtEnd[0]) > machine.cores / 2
  return [
    `Measured on ${machine.date.slice(0, 10)}: ${machine.cores} cores (${machine.cpu}), Node ${machine.node}, ${machine.os}` +
      `${opts.quick ? ', `--quick` run' : ''}; load average ${machine.loadAverage[0]} at the start, ${loadAtEnd[0]} at the end` +
      (busy ? ' (other work shared the machine: absolute times wander, the ratios less so).' : '.'),
    '',
    `![shmutils against its baselines](${chart})`,
    '',
    markdownTable(rows),
    '',
    'Ratio = shmutils time ÷ baseline time (below 1: faster than the baseline), the median of the ratios of rounds',
    'measured back to back; the two times are the medians of those rounds, per operation.',
    'Goals are from the figures the project measures itself against. `npm run bench` prints this table and writes every',
    'round to `bench/results/latest.json`; `npm run bench -- --publish` also redraws the chart and this section;',
    '`npm run bench -- --quick` is the smoke run CI does (figures not meaningful).',
  ].join('\n')
}

/** @param {string} s */
function log(s) {
  process.stderr.write(`${s}\n`)
}
