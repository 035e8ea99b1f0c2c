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
  --only IDS       run only these rows: comma-separated ids or prefixes (1,3.2,5)
  --help           this text

Prints one table: every row is shmutils' time ÷ a baseline's time, measured in the same run.`

/**
 * @typedef {object} Options
 * @property {boolean} quick
 * @property {string} out
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
      only: { type: 'string' },
      help: { type: 'boolean', default: false },
    },
    strict: true,
    allowPositionals: false,
  })
  const fromRoot = (/** @type {string} */ p) => resolve(ROOT, p)
  return {
    quick: !!values.quick,
    out: values.out ? resolve(values.out) : fromRoot('bench/results/latest.json'),
    only: values.only ? values.only.split(',').map((s) => s.trim()).filter(Boolean) : null,
    help: !!values.help,
  }
}
