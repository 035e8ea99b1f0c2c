/**
 * What a row of the table is. Each row times a shmutils operation (the subject) against
 * a baseline in the same run; its ratio is subject time ÷ baseline time (the median of
 * the per-round ratios), so below 1 means faster than the baseline.
 * @module
 */

/**
 * @typedef {object} Features
 * @property {string | null} cc - the C compiler, or null
 * @property {string | null} redis - the redis-server binary, or null
 * @property {boolean} heap - `mem.heap.malloc` exists on a managed segment
 * @property {boolean} struct - `mem.new` and `types.struct` exist
 */

/**
 * @typedef {object} Context
 * @property {boolean} quick - tiny counts and sizes, for CI
 * @property {import('../measure.mjs').Effort} effort
 * @property {Features} features
 */

/**
 * @typedef {import('../measure.mjs').Comparison & MeasuredMore} Measured
 *   figures in ns per `per`; the row's ratio is the median of `ratios`
 */

/**
 * @typedef {object} MeasuredMore
 * @property {string} [baselineLabel] - replaces the row's baseline text (a fallback)
 * @property {Record<string, unknown>} [params] - counts and sizes actually used
 * @property {Record<string, unknown>} [extra] - other raw figures worth keeping
 */

/**
 * @typedef {object} Row
 * @property {string} id - its number in the table ('1.1', '2', ...), stable across runs
 * @property {string} key - a stable name for the JSON
 * @property {string} subject - what shmutils does
 * @property {string} baseline - what it is compared with
 * @property {string} per - the unit both figures are per (ns per `per`)
 * @property {number} [goal] - the ratio the project aims to stay at or under
 *   (shared/anchors.md)
 * @property {(ctx: Context) => string | null} [skip] - why it cannot run here, or null
 * @property {(ctx: Context) => Promise<Measured>} run
 */

export {}
