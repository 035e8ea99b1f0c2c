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
// A reader that stopped early (`shmutils ls | head -1`) closes the pipe: the output is
// done, not an error (no stack trace), as for other command-line tools.
process.stdout.on('error', (e) => {
  if (e && e.code === 'EPIPE') process.exit(process.exitCode ?? 0)
  throw e
})
process.exitCode = main(process.argv.slice(2))
