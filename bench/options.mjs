/**
 * The command line of `npm run bench` (`node bench/index.mjs`).
 * @module
 */
import { resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'

/** The repository's root directory. */
export const ROOT = fileURLToPath(new URL('..', import.meta.url))

export const USAGE = `Usage: npm run bench -- [options]   (or: node bench/index.mjs [options])

  --quick          tiny counts and sizes, no Redis: a smoke run of seconds (CI runs it)
  --out FILE       where the raw figures go (default bench/results/latest.json)
  --svg FILE       also draw the ratio chart there
  --readme FILE    also rewrite the "Performance" section of that README
  --publish        --svg docs/benchmarks.svg --readme README.md (full runs only)
  --only IDS       run only these rows: comma-separated ids or prefixes (1,3.2,5)
  --help           this text

Prints one table: every row is shmutils' time ÷ a baseline's time, measured in the same run.`

/**
 * @typedef {object} Options
 * @property {boolean} quick
 * @property {string} out
 * @property {string | null} svg
 * @property {string | null} readme
 * @property {string[] | null} only - row ids or prefixes
 * @property {boolean} help
 */

/**
 * Parses the arguments.
 * @param {string[]} argv - without node and the script
 * @returns {Options}
 * @throws Error with a message for the user on a bad command line
 */
export function parseOptions(argv) {
  const { values } = parseArgs({
    args: argv,
    options: {
      quick: { type: 'boolean', default: false },
      out: { type: 'string' },
      svg: { type: 'string' },
      readme: { type: 'string' },
      publish: { type: 'boolean', default: false },
      only: { type: 'string' },
      help: { type: 'boolean', default: false },
    },
    strict: true,
    allowPositionals: false,
  })
  if (values.publish && values.quick) throw new Error('--publish needs a full run: --quick figures are not worth publishing')
  const fromRoot = (/** @type {string} */ p) => resolve(ROOT, p)
  return {
    quick: !!values.quick,
    out: values.out ? resolve(values.out) : fromRoot('bench/results/latest.json'),
    svg: values.svg ? resolve(values.svg) : values.publish ? fromRoot('docs/benchmarks.svg') : null,
    readme: values.readme ? resolve(values.readme) : values.publish ? fromRoot('README.md') : null,
    only: values.only ? values.only.split(',').map((s) => s.trim()).filter(Boolean) : null,
    help: !!values.help,
  }
}
