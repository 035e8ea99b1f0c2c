/**
 * The shape of a command of the command-line tool, its argument parsing, and the error
 * that means "bad usage" (exit code 2).
 * @module
 */
import { ShmError } from '../errors.js'
import { shown } from './format.js'

/** Where a command writes. */
export interface Output {
  /** A line (or lines) of normal output. */
  out(text: string): void
  /** A line (or lines) of diagnostics. */
  err(text: string): void
}

/** Parsed arguments: the flags given and the positional arguments. */
export interface Args {
  flags: ReadonlySet<string>
  positional: readonly string[]
}

/** One command: `shmutils <name> ...`. */
export interface Command {
  /** Its name. */
  name: string
  /** One line for the command list. */
  summary: string
  /** The usage line, after `shmutils `. */
  usage: string
  /** What `--help` prints after the usage line. */
  help: string
  /** Flags it accepts (without `--`). */
  flags: readonly string[]
  /** How many positional arguments it takes. */
  positional: { min: number; max: number }
  /** Runs it; returns the exit code. */
  run(args: Args, io: Output): number
}

/** A usage mistake: printed with a hint to `--help`, exit code 2. */
export class UsageError extends Error {}

/**
 * Splits `argv` into flags and positional arguments for `cmd`. `--` ends the options.
 * @throws UsageError for an unknown flag or a wrong number of arguments
 */
export function parseArgs(cmd: Command, argv: readonly string[]): Args {
  const flags = new Set<string>()
  const positional: string[] = []
  let options = true
  for (const a of argv) {
    if (options && a === '--') {
      options = false
    } else if (options && a.startsWith('--')) {
      const flag = a.slice(2)
      if (!cmd.flags.includes(flag)) throw new UsageError(`unknown option ${a}`)
      flags.add(flag)
    } else if (options && a.startsWith('-') && a.length > 1) {
      throw new UsageError(`unknown option ${a}`)
    } else {
      positional.push(a)
    }
  }
  const { min, max } = cmd.positional
  if (positional.length < min) throw new UsageError(min === 1 && max === 1 ? 'a segment name is required' : 'at least one segment name is required')
  if (positional.length > max) throw new UsageError(max === 0 ? `unexpected argument ${JSON.stringify(positional[0])}` : `too many arguments`)
  return { flags, positional }
}

/** One line for a failure: what went wrong and with what, without a stack trace. */
export function describeError(cmd: string, e: unknown): string {
  // A bad name (the only argument the commands check this way); any other TypeError or
  // RangeError is a fault, said as it is.
  if ((e instanceof TypeError || e instanceof RangeError) && e.message.startsWith('The "name" argument ')) {
    return `shmutils ${cmd}: invalid segment name: ${e.message.replace(/^The "name" argument /, '')}`
  }
  if (e instanceof ShmError || (e instanceof Error && typeof (e as { code?: unknown }).code === 'string')) {
    const err = e as ShmError
    const path = err.path
    if (err.code === 'ENOENT' && path) return `shmutils ${cmd}: ${shown(path)}: no such segment`
    if ((err.code === 'EACCES' || err.code === 'EPERM') && path) return `shmutils ${cmd}: ${shown(path)}: permission denied`
    // Native messages end with the name in quotes: drop it, it leads the line.
    const message = path ? err.message.replace(` '${path}'`, '') : err.message
    return `shmutils ${cmd}: ${path ? `${shown(path)}: ` : ''}${message}${err.code && !message.includes(err.code) ? ` (${err.code})` : ''}`
  }
  return `shmutils ${cmd}: ${e instanceof Error ? e.message : String(e)}`
}
