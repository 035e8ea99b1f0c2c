/**
 * Cleanup that must happen however the bench ends: normally, by an exception, or by a
 * signal (Ctrl-C, `kill`). Modules register what they leave behind (segments, children,
 * a Redis server, a temp dir) with {@link atExit}; the handlers run once, synchronously,
 * from Node's `exit` event, which also fires after an uncaught exception. SIGINT, SIGTERM
 * and SIGHUP, which would otherwise end the process without an `exit` event, exit through
 * it with the conventional 128 + signal number.
 * @module
 */
import { constants } from 'node:os'

/** @type {Array<() => void>} */
const handlers = []
let installed = false

/**
 * Registers `fn` to run (once, synchronously) when the process exits. Errors it throws
 * are reported and do not stop the other handlers.
 * @param {() => void} fn
 */
export function atExit(fn) {
  if (!installed) install()
  handlers.push(fn)
}

function runAll() {
  while (handlers.length) {
    const fn = /** @type {() => void} */ (handlers.pop())
    try {
      fn()
    } catch (e) {
      process.stderr.write(`bench cleanup: ${/** @type {Error} */ (e)?.message ?? e}\n`)
    }
  }
}

function install() {
  installed = true
  process.on('exit', runAll)
  for (const sig of /** @type {const} */ (['SIGINT', 'SIGTERM', 'SIGHUP'])) {
    process.once(sig, () => {
      process.stderr.write(`\nbench: ${sig}, cleaning up\n`)
      process.exit(128 + constants.signals[sig])
    })
  }
}
