/**
 * `unlinkOnExit`: names of segments this process (or worker thread) created that are
 * removed again when it exits, each only if it still names the segment that was created
 * (its `uid` matches), so a segment someone else re-created under the name survives.
 * @module
 */
import { constants } from 'node:os'
import { isMainThread } from 'node:worker_threads'
import { binding } from './native.js'

/** The catchable signals that end a Node process by default. */
const SIGNALS = ['SIGINT', 'SIGTERM', 'SIGHUP'] as const

let installed = false
/** Names this thread armed (so that unlinking any other name costs no native call). */
const armed = new Set<string>()

/**
 * @internal Removes `name` at exit if it still names the segment `uid`. The list is
 * native (`src-rs/js/exit.rs`): a worker thread's names also go when it is terminated or
 * its process exits (its environment's cleanup hook), where no `'exit'` event fires.
 */
export function unlinkOnExit(name: string, uid: string): void {
  // The native list drops, now and then, names someone else removed (another process,
  // the CLI): then this copy follows it.
  if (binding.exitUnlinkAdd(name, uid)) {
    armed.clear()
    for (const n of binding.exitUnlinkPending()) armed.add(n)
  }
  armed.add(name)
  if (installed) return
  installed = true
  process.on('exit', unlinkMine)
  // Signals reach the main thread only; it removes every thread's names before dying.
  // First in line: a program's `process.once` listener takes itself off before it runs,
  // so one that ran before ours would look absent; and a hook that wraps listeners
  // given to `process.on` cannot wrap this one (it could not be taken off again).
  if (isMainThread) for (const sig of SIGNALS) process.prependListener(sig, onSignal)
}

/**
 * @internal Forgets `name` (it was unlinked already): every unlink of this package calls
 * it. The name as given (`shmUnlink('x')` removes `/x`).
 */
export function forgetOnExit(name: string): void {
  const n = name.charCodeAt(0) === 47 ? name : `/${name}`
  if (armed.delete(n)) binding.exitUnlinkForget(n)
}

function unlinkMine(): void {
  binding.exitUnlinkRun(false)
}

/**
 * Marks the signal listener of every copy of this package in the process (two installs,
 * `npm link`, a test runner's module registry per file), so that copies do not take each
 * other for the program's own listener: each would leave the signal to the other, and
 * the process would never end.
 */
const OWN_LISTENER = Symbol.for('shmutils: unlinkOnExit signal listener')

/** Set once this copy re-raised a signal: one that comes back was not let through. */
let dying = false

/**
 * A terminating signal. If a listener of the program handles it, that code decides
 * whether the process ends (and `process.exit()` runs the 'exit' hook). Otherwise Node
 * would have died of it: unlink, then die of the same signal, as the parent expects,
 * once no other copy of the package is left to unlink its own names (it runs next, in
 * the same emit). A signal that comes back to this listener after it re-raised it (a
 * hook wrapped the listener, so removing it failed) ends the process with the shell's
 * status for it instead of looping.
 */
function onSignal(sig: NodeJS.Signals): void {
  if (dying) process.exit(128 + (constants.signals[sig] ?? 0))
  const listeners = process.listeners(sig)
  if (listeners.length > 1 && listeners.some((l) => !(OWN_LISTENER in l))) return
  binding.exitUnlinkRun(true)
  for (const s of SIGNALS) process.removeListener(s, onSignal)
  if (process.listeners(sig).some((l) => OWN_LISTENER in l)) return
  dying = true
  process.kill(process.pid, sig)
}
Object.defineProperty(onSignal, OWN_LISTENER, { value: true })
