/**
 * Sleeping until a 32-bit word of a mapping changes, and waking the sleepers: the one
 * blocking primitive under the JavaScript-side containers and primitives (`Channel`,
 * `Barrier`, `Event`, `RWLock`; native side `src-rs/sync/word.rs`). Their state machines
 * run here with `Atomics`; a thread that must wait names a word and the value it saw, and
 * whoever changes the state changes that word and wakes it. Blocking waits sleep in the
 * kernel futex on this thread; async ones on the process's waiter threads (never the
 * event loop, never the libuv pool).
 * @module
 */
import { checkAsyncWait, checkTimeoutArg } from './args.js'
import { abortError, closedError, native } from './errors.js'
import type { AcquireOptions, AsyncWaitOptions } from './lock.js'
import { internals, type MappedMemory } from './memory.js'
import { binding } from './native.js'
import { Code, outcome, throwIfFailed, waitNative } from './waits.js'

/** Wakes every sleeper. */
export const ALL = 0x7fff_ffff

/**
 * Blocks this thread while the u32 at `offset` of `memory` holds `expected`, at most
 * `timeout` ms (`undefined`: forever).
 * @returns `true` once it holds something else, `false` when the timeout ran out
 */
export function sleepOnWord(memory: MappedMemory, offset: number, expected: number, timeout: number | undefined): boolean {
  const { id } = internals(memory)
  const code = native(() => binding.wordWait(id, offset, expected >>> 0, timeout))
  return outcome(code) === Code.OK
}

/**
 * {@link sleepOnWord} on a waiter thread.
 * @returns (resolves) `true` once changed, `false` on timeout
 * @throws (rejects) AbortError when `signal` aborts; ShmError `ERR_SHM_CLOSED` when the
 *   mapping is closed meanwhile
 */
export async function sleepOnWordAsync(
  memory: MappedMemory,
  offset: number,
  expected: number,
  timeout: number | undefined,
  signal: AbortSignal | undefined,
): Promise<boolean> {
  if (signal?.aborted) throw abortError(signal)
  const { id } = internals(memory)
  const code = await waitNative(() => binding.wordWaitAsync(id, offset, expected >>> 0, timeout), signal)
  if (outcome(code) === Code.CANCELLED) throw abortError(signal as AbortSignal)
  throwIfFailed(code, memory)
  return outcome(code) === Code.OK
}

/** Wakes up to `n` sleepers on the u32 at `offset` of `memory`; how many it woke. */
export function wakeWord(memory: MappedMemory, offset: number, n: number = ALL): number {
  const { id } = internals(memory)
  return native(() => binding.wordWake(id, offset, n))
}

/** A sleep a state machine asks for: until the u32 at `offset` differs from `expected`, at most `ms`. */
export interface Sleep {
  /** Mapping offset of the word. */
  offset: number
  /** The value seen there. */
  expected: number
  /** Milliseconds at most (`undefined`: until it changes). */
  ms: number | undefined
}

/**
 * A wait written once as a generator: it yields the sleeps it needs, receives `true`
 * when the word changed (`false` when the sleep timed out), and returns its result. The
 * same generator runs blocking ({@link runBlocking}) or async ({@link runAsync}).
 */
export type Steps<R> = Generator<Sleep, R, boolean>

/** Runs `steps` on this thread, sleeping in the kernel. */
export function runBlocking<R>(memory: MappedMemory, steps: Steps<R>): R {
  let r = steps.next(true)
  while (!r.done) {
    const s = r.value
    r = steps.next(sleepOnWord(memory, s.offset, s.expected, s.ms))
  }
  return r.value
}

/**
 * A blocking wait: runs the steps `start` makes for the timeout of `options` (checked
 * first) with {@link runBlocking}.
 */
export function blockingWait<R>(memory: MappedMemory, options: number | AcquireOptions | undefined, start: (timeout: number | undefined) => Steps<R>): R {
  const timeout = checkTimeoutArg(options)
  return runBlocking(memory, start(timeout))
}

/**
 * {@link blockingWait} without blocking the event loop ({@link runAsync}); rejects at once
 * when the signal of `options` has aborted already.
 */
export async function asyncWait<R>(memory: MappedMemory, options: number | AsyncWaitOptions | undefined, start: (timeout: number | undefined) => Steps<R>): Promise<R> {
  const { timeout, signal } = checkAsyncWait(options)
  return runAsync(memory, start(timeout), signal)
}

/**
 * Runs `steps`, sleeping on the waiter threads. An abort (or the mapping closing) is
 * thrown into the generator at the sleep it interrupted, so it can undo what it holds.
 */
export async function runAsync<R>(memory: MappedMemory, steps: Steps<R>, signal: AbortSignal | undefined): Promise<R> {
  let r = steps.next(true)
  while (!r.done) {
    const s = r.value
    let changed: boolean
    try {
      changed = await sleepOnWordAsync(memory, s.offset, s.expected, s.ms, signal)
    } catch (e) {
      r = steps.throw(e)
      continue
    }
    // Closed while the completion was on its way (a close hook of the wait may have
    // changed the word itself): the views are gone, so the wait ends as closed.
    r = memory.closed ? steps.throw(closedError('the mapping')) : steps.next(changed)
  }
  return r.value
}
