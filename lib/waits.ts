/**
 * The JavaScript half of async waits (`src-rs/sync/waiter.rs`): a wait started natively
 * runs on one of the process's dedicated waiter threads, never on this thread or a libuv
 * pool thread; its completion comes back here in a batch and settles its promise. Also
 * the completion codes, which the blocking paths return too.
 * @module
 */
import { checkAsyncWait } from './args.js'
import { abortError, closedError, native, notRecoverable, ShmError } from './errors.js'
import { binding } from './native.js'

/** Completion codes of `src-rs/sync/mod.rs` (`code`): the low byte is the outcome. */
export const Code = Object.freeze({
  /** Acquired / notified. */
  OK: 0,
  /** The timeout ran out (a condition wait still re-acquired its lock). */
  TIMED_OUT: 1,
  /** Aborted (a condition wait still re-acquired its lock). */
  CANCELLED: 2,
  /** The mapping was closed while waiting. */
  CLOSED: 3,
  /** The lock can never be acquired again. */
  NOT_RECOVERABLE: 4,
  /** The record is corrupt (a semaphore's undo table). */
  CORRUPT: 5,
  /** Every holder slot of an undo semaphore is taken by a live thread. */
  FULL: 6,
  /** Flag: the lock was taken over from a holder that died. */
  OWNER_DIED: 0x100,
})

/** The outcome byte of a completion code. */
export function outcome(code: number): number {
  return code & 0xff
}

/** Throws the error a failed completion stands for (`CLOSED`, `NOT_RECOVERABLE`, ...). */
export function throwIfFailed(code: number): void {
  const o = outcome(code)
  if (o === Code.CLOSED) throw closedError('the mapping')
  if (o === Code.NOT_RECOVERABLE) throw notRecoverable()
  if (o === Code.CORRUPT) throw new ShmError('the semaphore\'s undo table is corrupt', { code: 'ERR_SHM_CORRUPT' })
  if (o === Code.FULL) throw new ShmError('every holder slot of the undo semaphore is taken by a live thread', { code: 'EAGAIN' })
}

const settlers = new Map<number, (code: number) => void>()
let initialized = false

function onComplete(batch: number[]): void {
  for (let i = 0; i < batch.length; i += 2) {
    const settle = settlers.get(batch[i])
    if (settle !== undefined) {
      settlers.delete(batch[i])
      settle(batch[i + 1])
    }
  }
}

/**
 * Starts a native wait (`start` returns its id) and resolves with its completion code.
 * While it is pending the event loop stays alive. Aborting `signal` interrupts the native
 * waiter at once; the wait then completes with `CANCELLED`, or with its result if it got
 * there first (the native outcome is the truth: a lock it took is ours).
 * @throws what `start` throws (synchronously)
 */
export function waitNative(start: () => number, signal: AbortSignal | undefined): Promise<number> {
  if (!initialized) {
    binding.syncInit(onComplete)
    initialized = true
  }
  const id = native(start)
  return new Promise<number>((resolve) => {
    if (signal === undefined) {
      settlers.set(id, resolve)
      return
    }
    const onAbort = (): void => binding.syncCancel(id)
    signal.addEventListener('abort', onAbort, { once: true })
    settlers.set(id, (code) => {
      signal.removeEventListener('abort', onAbort)
      resolve(code)
    })
  })
}

/**
 * The shape every async acquisition shares (`Lock`, `Semaphore`): check the options, try
 * at once, else start a native wait with `start(timeout)` and let `settle` turn its
 * completion code into the result; an abort rejects with an `AbortError`. Errors reject
 * the promise, never throw.
 */
export function acquireAsyncWith(
  options: unknown,
  tryNow: () => boolean,
  start: (timeout: number | undefined) => number,
  settle: (code: number) => boolean,
): Promise<boolean> {
  try {
    const { timeout, signal } = checkAsyncWait(options)
    if (tryNow()) return Promise.resolve(true)
    if (timeout === 0) return Promise.resolve(false)
    return waitNative(() => start(timeout), signal).then((code) => {
      if (outcome(code) === Code.CANCELLED) throw abortError(signal as AbortSignal)
      return settle(code)
    })
  } catch (e) {
    return Promise.reject(e)
  }
}
