#!/usr/bin/env node
// `npx shmutils <command>`: the command-line tool (lib/cli/main.ts, docs/cli.md).
'use strict'
let main
try {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  ;({ main } = require('../dist/cli/main.js'))
} catch (e) {
  // The native binary or the build is missing: one line, no stack trace.
  process.stderr.write(`shmutils: ${e && e.message ? e.message : e}\n`)
  process.exit(1)
}
process.exitCode = main(process.argv.slice(2))
