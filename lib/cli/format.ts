/**
 * Text output of the command-line tool: names as they are safe to print, sizes in
 * KiB/MiB/GiB, times, and aligned tables.
 * @module
 */

/**
 * Characters a terminal acts on rather than shows: C0 and C1 controls, DEL, line
 * separators, the bidirectional formatting characters (U+061C, U+200E/F,
 * U+202A–U+202E, U+2066–U+2069) that would reorder the rest of the line, and the
 * invisible ones (U+00AD soft hyphen, U+200B–U+200D zero widths, U+2060–U+2064,
 * U+FEFF) that would let `ad\u200bmin` look like `admin`.
 */
// eslint-disable-next-line no-control-regex -- matching control characters is the point
const UNPRINTABLE = /[\u0000-\u001f\u007f-\u009f\u00ad\u061c\u200b-\u200f\u2028-\u202e\u2060-\u2064\u2066-\u2069\ufeff]/
/** The same characters less those `JSON.stringify` already escapes (C0 controls). */
const UNESCAPED = /[\u007f-\u009f\u00ad\u061c\u200b-\u200f\u2028-\u202e\u2060-\u2064\u2066-\u2069\ufeff]/g

/**
 * A segment or object name as the text output shows it: as it is, or, when it holds a
 * character a terminal would act on (a newline, an escape sequence, a right-to-left
 * override, an invisible character), or that itself starts with `"` (so that it cannot
 * pose as another name shown quoted), quoted as a JSON string with those escaped, so
 * that every report stays one line and shows what is there.
 * No name (`null`) is `-`.
 */
export function shown(name: string | null): string {
  if (name === null) return '-'
  if (!name.startsWith('"') && !UNPRINTABLE.test(name)) return name
  return JSON.stringify(name).replace(UNESCAPED, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`)
}

const UNITS = ['KiB', 'MiB', 'GiB', 'TiB', 'PiB'] as const

/** `1536` → `'1.5 KiB'`; below 1 KiB in bytes (`'512 B'`). */
export function formatSize(bytes: number): string {
  if (!Number.isFinite(bytes) || bytes < 1024) return `${bytes} B`
  let v = bytes / 1024
  let i = 0
  while (v >= 1024 && i < UNITS.length - 1) {
    v /= 1024
    i++
  }
  const digits = v >= 100 || Number.isInteger(v) ? 0 : 1
  return `${v.toFixed(digits)} ${UNITS[i]}`
}

/** A local `YYYY-MM-DD HH:MM:SS` time, or `'-'` for 0 (unknown) or a time no `Date` holds (a damaged header). */
export function formatTime(ms: number): string {
  const d = new Date(ms)
  if (!ms || Number.isNaN(d.getTime())) return '-'
  const p = (n: number) => String(n).padStart(2, '0')
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())} ${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}`
}

/**
 * An ISO 8601 time for `--json`, or `null` for 0 (unknown) or a time no `Date` holds (a
 * damaged or hostile header: beyond ±8.64e15 ms, where `toISOString` throws).
 */
export function isoTime(ms: number): string | null {
  const d = new Date(ms)
  return ms && !Number.isNaN(d.getTime()) ? d.toISOString() : null
}

/** Permission bits as `'0600'`. */
export function formatMode(mode: number): string {
  return `0${(mode & 0o7777).toString(8).padStart(3, '0')}`
}

/** One column of {@link table}: its title and whether it is right-aligned (numbers). */
export interface Column {
  title: string
  right?: boolean
}

/**
 * Rows as an aligned table: a title line, then one line per row; columns separated by
 * two spaces; trailing blanks trimmed.
 */
export function table(columns: readonly Column[], rows: readonly (readonly string[])[]): string {
  const widths = columns.map((c, i) => Math.max(c.title.length, ...rows.map((r) => (r[i] ?? '').length)))
  const line = (cells: readonly string[]) =>
    cells.map((s, i) => (columns[i].right ? s.padStart(widths[i]) : s.padEnd(widths[i]))).join('  ').trimEnd()
  return [line(columns.map((c) => c.title)), ...rows.map(line)].join('\n')
}

/** `label: value` lines with the values aligned. */
export function fields(pairs: ReadonlyArray<readonly [string, string]>, indent = ''): string {
  const w = Math.max(0, ...pairs.map(([k]) => k.length))
  return pairs.map(([k, v]) => `${indent}${`${k}:`.padEnd(w + 1)} ${v}`).join('\n')
}
