/**
 * The ratio table, as aligned text for the terminal and as Markdown for the README, and
 * the number formats both share with the chart.
 * @module
 */

/**
 * @typedef {object} RowResult
 * @property {string} id
 * @property {string} key
 * @property {string} subject
 * @property {string} baseline
 * @property {string} per
 * @property {number | null} goal
 * @property {'ok' | 'skipped' | 'error'} status
 * @property {string | null} reason - why skipped, or the error message
 * @property {number | null} ratio - subject ÷ baseline: the median of `ratios`
 * @property {number[]} ratios - per round
 * @property {import('./measure.mjs').Figure | null} subjectNs
 * @property {import('./measure.mjs').Figure | null} baselineNs
 * @property {Record<string, unknown>} params
 * @property {Record<string, unknown>} extra
 * @property {number} seconds - how long the row took
 */

/**
 * A duration in nanoseconds, with three significant digits and a unit.
 * @param {number} ns
 */
export function formatTime(ns) {
  const units = /** @type {const} */ ([
    [1e9, 's'],
    [1e6, 'ms'],
    [1e3, 'µs'],
  ])
  for (const [scale, unit] of units) if (ns >= scale) return `${sig(ns / scale)} ${unit}`
  return `${sig(ns)} ns`
}

/**
 * Three significant digits, without exponent notation.
 * @param {number} x
 */
function sig(x) {
  if (x >= 100) return x.toFixed(0)
  if (x >= 10) return x.toFixed(1)
  return x.toFixed(2)
}

/**
 * A time ratio as read by a person: "1.42x", or "0.0031x (320x faster)".
 * @param {number} r
 */
export function formatRatio(r) {
  if (r >= 0.995) return `${sig(r)}x`
  const faster = 1 / r
  const digits = r >= 0.1 ? 2 : Math.max(2, 1 - Math.floor(Math.log10(r)))
  return `${r.toFixed(digits)}x (${sig(faster)}x faster)`
}

/**
 * A goal: "≤ 2x", or "≥ 300x faster" for goals below 1.
 * @param {number | null} goal
 */
export function formatGoal(goal) {
  if (goal === null) return ''
  return goal >= 1 ? `≤ ${sig(goal)}x` : `≥ ${sig(1 / goal)}x faster`
}

/**
 * Whether a row meets its goal: true, false, or null when it has none or did not run.
 * @param {RowResult} r
 */
export function meetsGoal(r) {
  if (r.goal === null || r.ratio === null) return null
  return r.ratio <= r.goal
}

/**
 * The cells of one row, in column order.
 * @param {RowResult} r
 * @returns {string[]}
 */
function cells(r) {
  const ran = r.status === 'ok' && r.ratio !== null && r.subjectNs && r.baselineNs
  const met = meetsGoal(r)
  return [
    r.id,
    `${r.subject} (per ${r.per})`,
    r.baseline,
    ran ? formatTime(/** @type {any} */ (r.subjectNs).median) : '',
    ran ? formatTime(/** @type {any} */ (r.baselineNs).median) : '',
    ran ? formatRatio(/** @type {number} */ (r.ratio)) : r.status === 'error' ? `error: ${r.reason}` : String(r.reason),
    formatGoal(r.goal) + (met === null ? '' : met ? ' ✓' : ' ✗'),
  ]
}

const HEADER = ['#', 'shmutils', 'baseline', 'shmutils', 'baseline', 'ratio (time)', 'goal']

/**
 * The table as aligned plain text.
 * @param {RowResult[]} rows
 */
export function textTable(rows) {
  const all = [HEADER, ...rows.map(cells)]
  const widths = HEADER.map((_, c) => Math.max(...all.map((r) => [...r[c]].length)))
  const line = (/** @type {string[]} */ r) =>
    r
      .map((cell, c) => (c === 3 || c === 4 ? cell.padStart(widths[c]) : cell.padEnd(widths[c])))
      .join('  ')
      .trimEnd()
  return [line(all[0]), widths.map((w) => '-'.repeat(w)).join('  '), ...all.slice(1).map(line)].join('\n')
}

/**
 * The table as Markdown.
 * @param {RowResult[]} rows
 */
export function markdownTable(rows) {
  const esc = (/** @type {string} */ s) => s.replace(/\|/g, '\\|')
  const line = (/** @type {string[]} */ r) => `| ${r.map(esc).join(' | ')} |`
  return [line(HEADER), '|---|---|---|--:|--:|---|---|', ...rows.map((r) => line(cells(r)))].join('\n')
}
