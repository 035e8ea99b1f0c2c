/**
 * `shmutils rm NAME...`: removes names (`shm_unlink`).
 * @module
 */
import { native } from '../errors.js'
import { binding } from '../native.js'
import { type Command, describeError } from './command.js'
import { type ProcessScan, scanProcesses } from './procfs.js'
import { describeSegment } from './segments.js'
import { shown } from './format.js'

/** The command. */
export const rm: Command = {
  name: 'rm',
  summary: 'remove segments by name',
  usage: 'rm NAME...',
  help: `Removes each name (shm_unlink). Processes that map a removed segment keep using it;
its memory is freed when the last of them closes it, and the name can be created again
at once. A name may be given with or without its leading "/".

Exit code 0 if every name was removed, 1 if any was not (the others are still removed).`,
  flags: [],
  positional: { min: 1, max: Infinity },
  run(args, io) {
    let failed = 0
    // Who still maps a name is a note: without it (out of descriptors), the names still go.
    let scan: ProcessScan | null = null
    try {
      scan = scanProcesses()
    } catch {
      // No note then.
    }
    for (const arg of args.positional) {
      let name: string
      try {
        name = native(() => binding.normalizeName(arg))
      } catch (e) {
        io.err(describeError('rm', e))
        failed++
        continue
      }
      let users: number[] = []
      try {
        if (scan !== null) users = describeSegment(name, scan).attached
      } catch {
        // Nothing to say about it: the unlink below reports what is wrong.
      }
      try {
        native(() => binding.shmUnlink(name))
      } catch (e) {
        io.err(describeError('rm', e))
        failed++
        continue
      }
      const note = users.length ? ` (still mapped by pid ${users.join(', ')}: its memory stays until they close it)` : ''
      io.out(`removed ${shown(name)}${note}`)
    }
    return failed ? 1 : 0
  },
}
