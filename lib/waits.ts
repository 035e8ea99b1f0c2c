/**
 * The JavaScript half of async waits (`src-rs/sync/waiter.rs`): a wait started natively
 * runs on one of the process's dedicated waiter threads, never on this thread or a libuv
 * pool thread; its completion comes back here in a batch and settles its promise. Also
 * the completion codes, which the blocking paths return too.
 * @module
 */
import { checkAsyncWait } from './args.js'
import { abortError, closedError, native, notRecoverable, ShmError } from './errors.js'
import { checkIntact, type MappedMemory } from './memory.js'
import { binding } from './native.js'

/**
 * How often a waiter asks whether the holder it waits for died (`RECHECK_MS` of
 * `src-rs/sync/mod.rs`, which the native waits use).
 */
export const RECHECK_MS = 50

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
  /**
   * The mapping lost the word's page while waiting (shrunk by another process, or no
   * room for a page): the caller's `checkIntact` throws `ERR_SHM_TRUNCATED` / `ENOSPC`.
   */
  LOST: 7,
  /** Flag: the lock was taken over from a holder that died. */
  OWNER_DIED: 0x100,
})

/** The outcome byte of a completion code. */
export function outcome(code: number): number {
  return code & 0xff
}

/** Throws the error a failed completion stands for (`CLOSED`, `NOT_RECOVERABLE`, ...). */
export function throwIfFailed(code: number, memory: MappedMemory): void {
  const o = outcome(code)
  // LOST: the page is gone; the mapping says how (ERR_SHM_TRUNCATED or ENOSPC).
  if (o === Code.LOST) checkIntact(memory)
  if (o === Code.CLOSED) throw closedError('the mapping')
  if (o === Code.NOT_RECOVERABLE) throw notRecoverable()
  if (o === Code.CORRUPT) throw new ShmError('the semaphore\'s undo table is corrupt', { code: 'ERR_SHM_CORRUPT' })
  if (o === Code.FULL) throw new ShmError('every holder slot of the undo semaphore is taken by a live thread', { code: 'EAGAIN' })
  if (o === Code.LOST) throw new ShmError('the shared memory object was shrunk by another process while mapped here, or a page of it had no room', { code: 'ERR_SHM_TRUNCATED' })
}

/**
 * Who settles the async waits of this thread: one table for every instance of this
 * package's JavaScript that shares the native library in the thread (a test runner that
 * loads modules again makes several; two copies of the package that npm gave one hoisted
 * platform package share it too), found by the library's `libraryId()`. The library keeps one completion callback per
 * thread, so the first instance registers one that settles from this table, and the
 * others use it: a second registration would take every later completion away from the
 * first instance, whose waits would then never settle.
 */
interface Completions {
  readonly settlers: Map<number, (code: number) => void>
  initialized: boolean
}

const completions = ((globalThis as Record<symbol, unknown>)[Symbol.for(`shmutils.completions ${binding.libraryId()}`)] ??= {
  settlers: new Map(),
  initialized: false,
}) as Completions
const settlers = completions.settlers

function onComplete(batch: number[]): void {
  let failed: { error: unknown } | null = null
  for (let i = 0; i < batch.length; i += 2) {
    const settle = settlers.get(batch[i])
    if (settle !== undefined) {
      settlers.delete(batch[i])
      // One that throws (an AbortSignal's own code) must not strand the rest of the batch.
      try {
        settle(batch[i + 1])
      } catch (error) {
        failed ??= { error }
      }
    }
  }
  // Settled: the native side lets their waits go. (A thread terminated before this point
  // gives back what they took instead.)
  binding.syncAck()
  if (failed) throw failed.error
}

/**
 * Starts a native wait (`start` returns its id) and resolves with its completion code.
 * While it is pending the event loop stays alive. Aborting `signal` interrupts the native
 * waiter at once; the wait then completes with `CANCELLED`, or with its result if it got
 * there first (the native outcome is the truth: a lock it took is ours).
 * @throws what `start` throws (synchronously)
 */
export function waitNative(start: () => number, signal: AbortSignal | undefined): Promise<number> {
  if (!completions.initialized) {
    binding.syncInit(onComplete)
    completions.initialized = true
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
      // Settled first: a signal whose own code throws here must not strand the wait.
      resolve(code)
      signal.removeEventListener('abort', onAbort)
    })
  })
}

/**
 * The shape every async acquisition shares (`Lock`, `Semaphore`): check the options, try
 * at once (`tryNow(only)`, `only`: the try is all there is, timeout 0), else start a
 * native wait with `start(timeout)` and let `settle` turn its completion code into the
 * result; an abort rejects with an `AbortError`. Errors reject the promise, never throw.
 */
export function acquireAsyncWith(
  options: unknown,
  tryNow: (only: boolean) => boolean,
  start: (timeout: number | undefined) => number,
  settle: (code: number) => boolean,
): Promise<boolean> {
  try {
    const { timeout, signal } = checkAsyncWait(options)
    if (tryNow(timeout === 0)) return Promise.resolve(true)
    if (timeout === 0) return Promise.resolve(false)
    return waitNative(() => start(timeout), signal).then((code) => {
      if (outcome(code) === Code.CANCELLED) throw abortError(signal as AbortSignal)
      return settle(code)
    })
  } catch (e) {
    return Promise.reject(e)
  }
}

/**
 * Keeps the async calls of one kind on one object (a Channel's `sendAsync`s, its
 * `receiveAsync`s) in call order: each call runs once every call queued before it has
 * settled. A call waiting for its turn rejects at once when its `signal` aborts, and
 * gives its timeout result when its deadline passes; the calls after it keep their place
 * behind the ones before it.
 */
export class Turns {
  /** Settles when the last queued call has; `null` when none is queued. */
  #tail: Promise<unknown> | null = null

  /** Whether no call is queued (a new one may go ahead at once). */
  get idle(): boolean {
    return this.#tail === null
  }

  /**
   * Runs `op` in its turn.
   * @param until - the call's deadline (`performance.now()` time; `Infinity`: none)
   * @param late - what the call gives when `until` passes before its turn
   */
  run<R>(op: () => Promise<R>, signal: AbortSignal | undefined, until: number, late: () => R): Promise<R> {
    const before = this.#tail
    const mine = before === null ? op() : waitTurn(before, signal, until).then((inTime) => (inTime ? op() : late()))
    const tail: Promise<unknown> = Promise.allSettled([before, mine]).then(() => {
      if (this.#tail === tail) this.#tail = null
    })
    this.#tail = tail
    return mine
  }
}

/** The longest delay `setTimeout` takes as it is. */
const MAX_TIMER_MS = 2 ** 31 - 1

/**
 * Resolves `true` when `before` settles, `false` when `until` passes first; rejects with
 * an `AbortError` when `signal` aborts first.
 */
function waitTurn(before: Promise<unknown>, signal: AbortSignal | undefined, until: number): Promise<boolean> {
  return new Promise<boolean>((resolve, reject) => {
    let timer: ReturnType<typeof setTimeout> | undefined
    const finish = (): void => {
      clearTimeout(timer)
      signal?.removeEventListener('abort', onAbort)
    }
    const onAbort = (): void => {
      finish()
      reject(abortError(signal as AbortSignal))
    }
    if (until !== Infinity) {
      // Node runs a timer of more than 2^31 - 1 ms after 1 ms: a deadline further away
      // re-arms until it is near.
      const arm = (): void => {
        const left = until - performance.now()
        timer = setTimeout(left > MAX_TIMER_MS ? arm : () => {
          finish()
          resolve(false)
        }, Math.min(MAX_TIMER_MS, Math.max(0, left)))
      }
      arm()
    }
    signal?.addEventListener('abort', onAbort, { once: true })
    void before.then(() => {
      finish()
      resolve(true)
    })
  })
}
