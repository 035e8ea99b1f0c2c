/**
 * How figures are taken. Every row compares a subject with a baseline measured in the
 * same run, in alternating rounds (baseline then subject, subject then baseline, ...).
 * Other processes on this shared machine slow everything down in phases, so a row's
 * ratio is the median of the per-round ratios (each pair was measured back to back, in
 * the same phase), and its figures are the medians of its rounds. Sub-microsecond work
 * is timed by mitata, which runs the function in batches and reports the time per call.
 * @module
 */
import { measure } from 'mitata'

/**
 * @typedef {object} Effort
 * @property {number} rounds - alternating rounds per row
 * @property {number} slowRounds - rounds of rows that take seconds each (IPC, Redis)
 * @property {number} shortRuns - runs per round (median taken) of multi-process runs
 *   that last milliseconds: one preemption of a lock holder on a loaded machine can
 *   stretch such a run several times over
 * @property {{ min_cpu_time: number } & Record<string, number>} mitata - options of mitata's `measure`
 */

/** @type {{ full: Effort, quick: Effort }} */
export const EFFORT = {
  full: { rounds: 9, slowRounds: 3, shortRuns: 7, mitata: { min_cpu_time: 60e6, min_samples: 12 } },
  quick: { rounds: 1, slowRounds: 1, shortRuns: 1, mitata: { min_cpu_time: 2e6, min_samples: 2, batch_samples: 256, warmup_samples: 1 } },
}

/**
 * @typedef {object} Figure
 * @property {number} median - the row's figure, in the row's unit
 * @property {number[]} samples - one per round, in order
 */

/**
 * A measurement taking nanoseconds per call of a synchronous `fn` (mitata's median
 * sample), for use with {@link alternate}. Its first use also runs `fn` for a while
 * untimed, so that no round measures code the JIT has not optimized yet.
 * @param {() => unknown} fn
 * @param {Effort} effort
 * @returns {() => Promise<number>}
 */
export function perCall(fn, effort) {
  let warm = false
  return async () => {
    if (!warm) {
      warm = true
      await measure(fn, { ...effort.mitata, min_cpu_time: effort.mitata.min_cpu_time / 3 })
    }
    return (await measure(fn, { ...effort.mitata })).p50
  }
}

/**
 * A measurement taking the median of `n` individually timed calls of a synchronous `fn`,
 * in nanoseconds per call: how the C programs of bench/c time themselves, so rows that
 * compare with them (operations of microseconds, where one preemption on a shared
 * machine stretches a batch) measure both sides alike. Warms up first, as {@link perCall}.
 * @param {() => unknown} fn
 * @param {number} n
 * @returns {() => Promise<number>}
 */
export function medianPerOp(fn, n) {
  let warm = false
  return async () => {
    if (!warm) {
      warm = true
      for (let i = 0; i < n; i++) fn()
    }
    const t = new Float64Array(n)
    for (let i = 0; i < n; i++) {
      const t0 = process.hrtime.bigint()
      fn()
      t[i] = Number(process.hrtime.bigint() - t0)
    }
    return median(Array.from(t))
  }
}

/**
 * A measurement taking the wall time of one call of `fn`, in nanoseconds.
 * @param {() => unknown} fn
 * @returns {() => Promise<number>}
 */
export function wallTime(fn) {
  return async () => {
    const t0 = process.hrtime.bigint()
    await fn()
    return Number(process.hrtime.bigint() - t0)
  }
}

/**
 * A measurement that takes the median of `n` runs of another.
 * @param {() => Promise<number>} measurement
 * @param {number} n
 * @returns {() => Promise<number>}
 */
export function medianOfRuns(measurement, n) {
  return async () => {
    /** @type {number[]} */
    const xs = []
    for (let i = 0; i < n; i++) xs.push(await measurement())
    return median(xs)
  }
}

/**
 * @typedef {object} Comparison
 * @property {Figure} subject
 * @property {Figure} baseline
 * @property {number[]} ratios - subject ÷ baseline, per round
 */

/**
 * Runs two measurements `rounds` times each, back to back, alternating which goes first.
 * @param {() => Promise<number>} subject
 * @param {() => Promise<number>} baseline
 * @param {number} rounds
 * @returns {Promise<Comparison>}
 */
export async function alternate(subject, baseline, rounds) {
  /** @type {number[]} */ const s = []
  /** @type {number[]} */ const b = []
  for (let i = 0; i < rounds; i++) {
    if (i % 2 === 0) {
      b.push(await baseline())
      s.push(await subject())
    } else {
      s.push(await subject())
      b.push(await baseline())
    }
  }
  return { subject: figure(s), baseline: figure(b), ratios: s.map((x, i) => x / b[i]) }
}

/**
 * @param {number[]} samples
 * @returns {Figure}
 */
export function figure(samples) {
  return { median: median(samples), samples }
}

/**
 * The median (mean of the middle two for an even count).
 * @param {number[]} xs
 */
export function median(xs) {
  const s = [...xs].sort((a, b) => a - b)
  const m = s.length >> 1
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2
}
