/**
 * Argument checks shared by the public API: each throws a `TypeError`/`RangeError` that
 * names the argument.
 * @module
 */
import { rangeError, typeError } from './errors.js'

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
 * Checks a timeout in milliseconds: `undefined`/`Infinity` mean forever; returns
 * `undefined` for forever.
 */
export function checkTimeout(value: unknown): number | undefined {
  if (value === undefined || value === Infinity) return undefined
  if (typeof value !== 'number') {
    throw typeError(`The "timeout" option must be of type number; got ${describe(value)}`)
  }
  if (Number.isNaN(value) || value < 0) {
    throw rangeError(`The "timeout" option must be a non-negative number of milliseconds; got ${value}`)
  }
  return value
}

/** A short description of a value for error messages. */
export function describe(value: unknown): string {
  if (value === null) return 'null'
  if (typeof value === 'string') return `type string (${JSON.stringify(value.slice(0, 40))})`
  if (typeof value === 'object' || typeof value === 'function') return `an instance of ${value.constructor?.name ?? 'Object'}`
  return `type ${typeof value} (${String(value)})`
}
