/**
 * The command-line tool, `npx shmutils <command>`: see {@link main} and docs/cli.md.
 * Errors are printed as one line naming the command and the segment, never as a stack
 * trace; the exit code says what happened (0 ok, 1 failed, 2 bad usage).
 * @module
 */
import { type Command, describeError, type Output, parseArgs, UsageError } from './command.js'
import { gc } from './gc.js'
import { inspect } from './inspect.js'
import { ls } from './ls.js'
import { rm } from './rm.js'

/** Every command, in the order `--help` lists them. */
export const COMMANDS: readonly Command[] = [ls, inspect, rm, gc]

const stdio: Output = {
  out: (s) => process.stdout.write(`${s}\n`),
  err: (s) => process.stderr.write(`${s}\n`),
}

function overview(): string {
  const w = Math.max(...COMMANDS.map((c) => c.usage.length))
  return [
    'usage: shmutils <command> [options]',
    '',
    'Shared-memory segments of this machine, made by shmutils (https://www.npmjs.com/package/shmutils).',
    '',
    'commands:',
    ...COMMANDS.map((c) => `  ${c.usage.padEnd(w)}  ${c.summary}`),
    '',
    '`shmutils <command> --help` explains a command.',
  ].join('\n')
}

function commandHelp(c: Command): string {
  return `usage: shmutils ${c.usage}\n\n${c.help}`
}

/**
 * Runs the tool with `argv` (the arguments after the program name) and returns the exit
 * code: 0 success, 1 failure, 2 bad usage.
 */
export function main(argv: readonly string[], io: Output = stdio): number {
  const [name, ...rest] = argv
  if (name === undefined) {
    io.err(overview())
    return 2
  }
  if (name === '--help' || name === '-h' || name === 'help') {
    const c = COMMANDS.find((x) => x.name === rest[0])
    io.out(c ? commandHelp(c) : overview())
    return 0
  }
  if (name === '--version' || name === '-v') {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    io.out((require('../../package.json') as { version: string }).version)
    return 0
  }
  const cmd = COMMANDS.find((c) => c.name === name)
  if (!cmd) {
    io.err(`shmutils: unknown command ${JSON.stringify(name)}\n\n${overview()}`)
    return 2
  }
  if (rest.includes('--help') || rest.includes('-h')) {
    io.out(commandHelp(cmd))
    return 0
  }
  try {
    return cmd.run(parseArgs(cmd, rest), io)
  } catch (e) {
    if (e instanceof UsageError) {
      io.err(`shmutils ${cmd.name}: ${e.message}\nusage: shmutils ${cmd.usage}  (see shmutils ${cmd.name} --help)`)
      return 2
    }
    io.err(describeError(cmd.name, e))
    return 1
  }
}
