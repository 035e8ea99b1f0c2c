/**
 * `unlinkOnExit`: names of segments this process (or worker thread) created that are
 * removed again when it exits, each only if it still names the segment that was created
 * (its `uid` matches), so a segment someone else re-created under the name survives.
 * @module
 */
import { isMainThread } from 'node:worker_threads'
import { binding } from './native.js'

/** The catchable signals that end a Node process by default. */
const SIGNALS = ['SIGINT', 'SIGTERM', 'SIGHUP'] as const

/** Segment name → uid of the segment to remove at exit. */
const pending = new Map<string, string>()
let installed = false

/** @internal Removes `name` at exit if it still names the segment `uid`. */
export function unlinkOnExit(name: string, uid: string): void {
  pending.set(name, uid)
  if (installed) return
  installed = true
  process.on('exit', unlinkAll)
  // Signals reach the main thread only; a worker's segments go when the worker exits.
  if (isMainThread) for (const sig of SIGNALS) process.on(sig, onSignal)
}

/** @internal Forgets `name` (it was unlinked already). */
export function forgetOnExit(name: string): void {
  pending.delete(name)
}

function unlinkAll(): void {
  for (const [name, uid] of pending) {
    try {
      binding.unlinkSegmentIf(name, uid)
    } catch {
      // Exiting: there is nobody left to report to, and the other names still go.
    }
  }
  pending.clear()
}

/**
 * A terminating signal. If another listener handles it, that code decides whether the
 * process ends (and `process.exit()` runs the 'exit' hook). Otherwise Node would have
 * died of it: unlink, then die of the same signal, as the parent expects.
 */
function onSignal(sig: NodeJS.Signals): void {
  if (process.listenerCount(sig) > 1) return
  unlinkAll()
  for (const s of SIGNALS) process.removeListener(s, onSignal)
  process.kill(process.pid, sig)
}
