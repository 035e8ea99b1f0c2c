/**
 * The ratio table as an SVG bar chart, built as a string: one bar per row from 1x (the
 * baseline) to the row's ratio on a log scale, so "3x slower" and "300x faster" both fit;
 * the row's goal as a dashed tick; skipped rows say why.
 * @module
 */
import { formatGoal, formatRatio, meetsGoal } from './table.mjs'

const WIDTH = 980
const LABELS = 440 // width of the label column
const RIGHT = 150 // room for the ratio text right of the plot
const TOP = 84
const ROW = 42
const BOTTOM = 58
const COLORS = { met: '#2e7d32', missed: '#c62828', none: '#1565c0', grid: '#d0d7de', text: '#1f2328', muted: '#656d76' }
const FONT = 'system-ui, -apple-system, Segoe UI, Helvetica, Arial, sans-serif'

/**
 * @param {string} s
 */
function esc(s) {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;')
}

/**
 * Shortens text to `max` characters.
 * @param {string} s
 * @param {number} max
 */
function clip(s, max) {
  return s.length <= max ? s : `${s.slice(0, max - 1)}…`
}

/**
 * Powers of ten that bracket every ratio and goal, and 0.1..10 at least.
 * @param {import('./table.mjs').RowResult[]} rows
 */
function domain(rows) {
  const values = [0.1, 10]
  for (const r of rows) {
    if (r.ratio !== null && r.ratio > 0) values.push(r.ratio)
    if (r.goal !== null && r.ratio !== null) values.push(r.goal)
  }
  const lo = Math.max(-6, Math.floor(Math.log10(Math.min(...values))))
  const hi = Math.min(6, Math.ceil(Math.log10(Math.max(...values))))
  return { lo, hi }
}

/**
 * A power of ten as an axis label: 1/100x, 1x, 10x.
 * @param {number} p
 */
function tickLabel(p) {
  return p < 0 ? `1/${10 ** -p}x` : `${10 ** p}x`
}

/**
 * Renders the chart.
 * @param {import('./table.mjs').RowResult[]} rows
 * @param {{ title: string, subtitle: string }} text
 * @returns {string} an SVG document
 */
export function renderChart(rows, text) {
  const { lo, hi } = domain(rows)
  const x0 = LABELS
  const plot = WIDTH - LABELS - RIGHT
  const x = (/** @type {number} */ r) => x0 + ((Math.log10(Math.min(Math.max(r, 10 ** lo), 10 ** hi)) - lo) / (hi - lo)) * plot
  const height = TOP + rows.length * ROW + BOTTOM
  const bottomY = TOP + rows.length * ROW
  const out = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${WIDTH}" height="${height}" viewBox="0 0 ${WIDTH} ${height}" font-family="${FONT}" font-size="13">`,
    `<rect width="100%" height="100%" fill="#ffffff"/>`,
    `<text x="16" y="26" font-size="17" font-weight="600" fill="${COLORS.text}">${esc(text.title)}</text>`,
    `<text x="16" y="46" fill="${COLORS.muted}">${esc(text.subtitle)}</text>`,
  ]
  for (let p = lo; p <= hi; p++) {
    const gx = x(10 ** p).toFixed(1)
    out.push(`<line x1="${gx}" y1="${TOP - 8}" x2="${gx}" y2="${bottomY}" stroke="${p === 0 ? COLORS.text : COLORS.grid}" stroke-width="${p === 0 ? 1.5 : 1}"/>`)
    out.push(`<text x="${gx}" y="${TOP - 14}" text-anchor="middle" font-size="11" fill="${COLORS.muted}">${tickLabel(p)}</text>`)
  }
  rows.forEach((r, i) => {
    const y = TOP + i * ROW
    const mid = y + ROW / 2
    out.push(`<text x="16" y="${mid - 3}" fill="${COLORS.text}"><tspan font-weight="600">${esc(r.id)}</tspan> ${esc(clip(r.subject, 52))}</text>`)
    out.push(`<text x="16" y="${mid + 13}" font-size="11" fill="${COLORS.muted}">vs ${esc(clip(r.baseline, 66))}</text>`)
    if (r.ratio === null) {
      const why = r.status === 'error' ? `error: ${r.reason}` : String(r.reason)
      out.push(`<text x="${x(1) + 8}" y="${mid + 4}" font-style="italic" fill="${COLORS.muted}">${esc(clip(why, 60))}</text>`)
      return
    }
    const met = meetsGoal(r)
    const color = met === null ? COLORS.none : met ? COLORS.met : COLORS.missed
    const a = x(1)
    const b = x(r.ratio)
    const left = Math.min(a, b)
    const w = Math.max(1.5, Math.abs(b - a))
    out.push(`<rect x="${left.toFixed(1)}" y="${mid - 8}" width="${w.toFixed(1)}" height="16" rx="2" fill="${color}"><title>${esc(`${r.id}: ${formatRatio(r.ratio)}`)}</title></rect>`)
    if (r.goal !== null) {
      const gx = x(r.goal).toFixed(1)
      out.push(`<line x1="${gx}" y1="${mid - 13}" x2="${gx}" y2="${mid + 13}" stroke="${COLORS.text}" stroke-width="1.5" stroke-dasharray="3 2"><title>goal ${esc(formatGoal(r.goal))}</title></line>`)
    }
    const tx = Math.max(a, b) + 8
    out.push(`<text x="${tx.toFixed(1)}" y="${mid + 4}" fill="${color}" font-weight="600">${esc(formatRatio(r.ratio))}</text>`)
  })
  const legendY = bottomY + 24
  out.push(
    `<text x="16" y="${legendY}" font-size="11" fill="${COLORS.muted}">Bar: time with shmutils ÷ time of the baseline, both measured in the same run (log scale; left of 1x = faster than the baseline). Dashed tick: the project's goal.</text>`,
    `<text x="16" y="${legendY + 16}" font-size="11" fill="${COLORS.muted}"><tspan fill="${COLORS.met}">■</tspan> goal met  <tspan fill="${COLORS.missed}">■</tspan> goal missed  <tspan fill="${COLORS.none}">■</tspan> no goal set</text>`,
    '</svg>',
  )
  return `${out.join('\n')}\n`
}
