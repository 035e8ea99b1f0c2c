#!/usr/bin/env node
// `npm run bench`: shmutils measured against the floor and against what users pick today.
// See options.mjs for the command line and run.mjs for what a run does.
import { existsSync } from 'node:fs'
import { join } from 'node:path'
import { parseOptions, ROOT, USAGE } from './options.mjs'

/** @type {import('./options.mjs').Options} */
let opts
try {
  opts = parseOptions(process.argv.slice(2))
} catch (e) {
  process.stderr.write(`${/** @type {Error} */ (e).message}\n\n${USAGE}\n`)
  process.exit(2)
}
if (opts.help) {
  process.stdout.write(`${USAGE}\n`)
  process.exit(0)
}
if (!existsSync(join(ROOT, 'dist', 'index.js'))) {
  process.stderr.write('bench: dist/ is missing: run `npm run build` first\n')
  process.exit(2)
}
// Loaded only now: the rows import the built package.
const { runBench } = await import('./run.mjs')
process.exitCode = await runBench(opts)
