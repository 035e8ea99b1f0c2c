/**
 * Argument checks shared by the public API: each throws a `TypeError`/`RangeError` that
 * names the argument.
 * @module
 */
import { loneSurrogateAt } from './utf8.js'
import { abortError, rangeError, typeError } from './errors.js'

/** Checks `value` is a non-negative safe integer and returns it. */
export function checkIndex(name: string, value: unknown): number {
  if (typeof value !== 'number') {
    throw typeError(`The "${name}" argument must be of type number; got ${describe(value)}`)
  }
  if (!Number.isSafeInteger(value) || value < 0) {
    throw rangeError(`The "${name}" argument must be a non-negative integer; got ${value}`)
  }
  return value
}

/** Checks `value` is a string and returns it. */
export function checkString(name: string, value: unknown): string {
  if (typeof value !== 'string') {
    throw typeError(`The "${name}" argument must be of type string; got ${describe(value)}`)
  }
  return value
}

/**
 * Checks a name (of a segment or of a named object) and returns it: a string without
 * lone UTF-16 surrogates. UTF-8 cannot encode a lone surrogate, so the native side would
 * turn it into U+FFFD and two different strings would name the same thing.
 */
export function checkName(name: string, value: unknown): string {
  const s = checkString(name, value)
  if (loneSurrogateAt(s) >= 0) {
    throw typeError(`The "${name}" argument must not contain lone UTF-16 surrogates; got ${JSON.stringify(s)}`)
  }
  return s
}

/**
 * Checks a timeout in milliseconds: `undefined`/`Infinity` mean forever; returns
 * `undefined` for forever. `what` names it in messages.
 */
export function checkTimeout(value: unknown, what = 'The "timeout" option'): number | undefined {
  if (value === undefined || value === Infinity) return undefined
  if (typeof value !== 'number') {
    throw typeError(`${what} must be of type number; got ${describe(value)}`)
  }
  if (Number.isNaN(value) || value < 0) {
    throw rangeError(`${what} must be a non-negative number of milliseconds; got ${value}`)
  }
  return value
}

/**
 * Checks the timeout of a blocking wait, given as a number of milliseconds or as
 * `{ timeout }` (every wait takes both); returns `undefined` for forever.
 */
export function checkTimeoutArg(options: unknown): number | undefined {
  if (options === undefined || typeof options === 'number') return checkTimeout(options, 'The "timeout" argument')
  if (typeof options !== 'object' || options === null) {
    throw typeError(`The "options" argument must be a timeout in milliseconds or an object with a "timeout"; got ${describe(options)}`)
  }
  return checkTimeout((options as { timeout?: unknown }).timeout)
}

/** Checked options of the async waits: timeout (`undefined` = forever) and signal. */
export interface WaitOptions {
  /** Milliseconds, or `undefined` for forever. */
  timeout: number | undefined
  /** The abort signal, if any. */
  signal: AbortSignal | undefined
}

/** Checks `{ timeout?, signal? }` (or a number of milliseconds) of an async wait. */
export function checkWaitOptions(options: unknown): WaitOptions {
  if (options === undefined || typeof options === 'number') return { timeout: checkTimeout(options, 'The "timeout" argument'), signal: undefined }
  if (typeof options !== 'object' || options === null) {
    throw typeError(`The "options" argument must be a timeout in milliseconds or an object with a "timeout" and a "signal"; got ${describe(options)}`)
  }
  const { timeout, signal } = options as { timeout?: unknown; signal?: unknown }
  if (signal !== undefined && !(signal instanceof AbortSignal)) {
    throw typeError(`The "signal" option must be an AbortSignal; got ${describe(signal)}`)
  }
  return { timeout: checkTimeout(timeout), signal }
}

/**
 * {@link checkWaitOptions}, and throws AbortError when the signal has aborted already (in
 * an async wait: it rejects at once).
 */
export function checkAsyncWait(options: unknown): WaitOptions {
  const checked = checkWaitOptions(options)
  if (checked.signal?.aborted) throw abortError(checked.signal)
  return checked
}

/**
 * Checks an options argument and returns it: an object, or `undefined` for none (then
 * `{}`). With `needs` (what it must hold, as `'a "size"'`) it is required.
 */
export function checkOptions<T extends object>(options: T | undefined, needs?: string): T {
  if (options === undefined && needs === undefined) return {} as T
  if (typeof options !== 'object' || options === null) {
    throw typeError(`The "options" argument must be an object${needs === undefined ? '' : ` with ${needs}`}; got ${describe(options)}`)
  }
  return options
}

/** Checks an optional boolean option: `undefined` gives `fallback`. */
export function checkBoolean(name: string, value: unknown, fallback = false): boolean {
  if (value === undefined) return fallback
  if (typeof value !== 'boolean') throw typeError(`The "${name}" option must be a boolean; got ${describe(value)}`)
  return value
}

/** The largest permission bits a segment can be created with (`rwxrwxrwx`). */
const MAX_PERMISSIONS = 0o777

/**
 * Checks the permission bits of a new segment (`undefined`: `0o600`) and returns them:
 * an integer in `0o0..0o777`.
 */
export function checkPermissions(value: unknown): number {
  if (value === undefined) return 0o600
  if (typeof value !== 'number') throw typeError(`The "permissions" option must be of type number; got ${describe(value)}`)
  if (!Number.isInteger(value) || value < 0 || value > MAX_PERMISSIONS) {
    const octal = Number.isSafeInteger(value) && value >= 0 ? ` (0o${value.toString(8)})` : ''
    throw rangeError(`The "permissions" option must be an integer within 0o0..0o777; got ${value}${octal}`)
  }
  return value
}

/** Checks `value` is an integer in `[min, max]` and returns it. */
export function checkInteger(name: string, value: unknown, min: number, max: number): number {
  if (typeof value !== 'number') {
    throw typeError(`The "${name}" argument must be of type number; got ${describe(value)}`)
  }
  if (!Number.isInteger(value) || value < min || value > max) {
    throw rangeError(`The "${name}" argument must be an integer >= ${min} and <= ${max}; got ${value}`)
  }
  return value
}

/** `%TypedArray%.prototype[Symbol.toStringTag]`'s getter: the kind of a real typed array of any realm, `undefined` for anything else (a Proxy of one included). */
const typedArrayKind = Object.getOwnPropertyDescriptor(Object.getPrototypeOf(Uint8Array.prototype), Symbol.toStringTag)!.get as (this: unknown) => string | undefined

/**
 * Whether `value` is a real `Uint8Array` (a `Buffer` included) of any realm: one made in
 * a `vm` context or by a test runner's module sandbox fails `instanceof Uint8Array`.
 */
export function isUint8Array(value: unknown): value is Uint8Array {
  return value instanceof Uint8Array ? ArrayBuffer.isView(value) : typedArrayKind.call(value) === 'Uint8Array'
}

/**
 * {@link describe} for an argument that failed a class's private-brand check; `imitation`:
 * it passes `instanceof` all the same (a Proxy of one, or an object made from its
 * prototype), which the message says.
 */
export function describeNot(value: unknown, imitation: boolean): string {
  const what = describe(value)
  return imitation ? `${what} that is not one (a Proxy of one, or an object made from its prototype)` : what
}

/** A short description of a value for error messages. */
export function describe(value: unknown): string {
  if (value === null) return 'null'
  if (typeof value === 'string') return `type string (${JSON.stringify(value.slice(0, 40))})`
  if (typeof value === 'object' || typeof value === 'function') return `an instance of ${value.constructor?.name ?? 'Object'}`
  return `type ${typeof value} (${String(value)})`
}
