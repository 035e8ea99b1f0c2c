/**
 * Errors thrown by shmutils: {@link ShmError} for failures, `TypeError`/`RangeError` for
 * bad arguments. Native failures arrive encoded (see `src-rs/error.rs`) and are decoded
 * here, in one place.
 * @module
 */
import { existsSync, statSync } from 'node:fs'

/**
 * Library error codes besides the POSIX ones (`'ENOENT'`, `'EEXIST'`, ...).
 * @category Errors
 */
export type ShmErrorCode =
  | 'ERR_SHM_CLOSED'
  | 'ERR_SHM_OUT_OF_BOUNDS'
  | 'ERR_SHM_BAD_HEADER'
  | 'ERR_SHM_DOUBLE_FREE'
  | 'ERR_SHM_NOT_OWNER'
  | 'ERR_SHM_NOT_RECOVERABLE'
  | 'ERR_SHM_UNSUPPORTED_PLATFORM'
  | 'ERR_SHM_BINARY_MISSING'
  | 'ERR_SHM_CORRUPT'
  | 'ERR_SHM_DEADLOCK'
  | 'ERR_SHM_STALE_HANDLE'
  | 'ERR_SHM_TRUNCATED'
  | 'ERR_SHM_READ_ONLY'
  | 'ERR_SHM_BUFFER_TOO_LARGE'
  | (string & {})

/**
 * Fields of a {@link ShmError} besides its message.
 * @category Errors
 */
export interface ShmErrorFields {
  /** `'ENOENT'`, `'EEXIST'`, ... or `'ERR_SHM_*'`. */
  code: ShmErrorCode
  /** The OS errno when a syscall failed. */
  errno?: number
  /** The syscall that failed. */
  syscall?: string
  /** The segment name involved. */
  path?: string
}

/**
 * A shared-memory failure, shaped like Node's SystemError: `code`, and where a syscall
 * failed also `errno`, `syscall` and `path` (the segment name).
 * @category Errors
 */
export class ShmError extends Error implements ShmErrorFields {
  /** `'ENOENT'`, `'EEXIST'`, ... or `'ERR_SHM_*'`. */
  readonly code: ShmErrorCode
  // `declare`: own properties only where set (a class field would define each, as
  // `undefined`, on every error).
  /** The OS errno when a syscall failed. */
  declare readonly errno?: number
  /** The syscall that failed. */
  declare readonly syscall?: string
  /** The segment name involved. */
  declare readonly path?: string

  /**
   * @param message - what went wrong
   * @param fields - `code` and the optional system fields
   */
  constructor(message: string, fields: ShmErrorFields) {
    super(message)
    this.code = fields.code
    if (fields.errno !== undefined) this.errno = fields.errno
    if (fields.syscall !== undefined) this.syscall = fields.syscall
    if (fields.path !== undefined) this.path = fields.path
  }
}

/**
 * Finishes an error class of the package: its `name`, and an `instanceof` that holds for
 * the errors of every copy of the package in the process.
 *
 * - `name` is on the prototype, defined: assigning it on each instance throws where a
 *   program froze `Error.prototype` (its `name` is then read-only, and inherited).
 * - Two copies of the package in one process (two versions in `node_modules`, a bundle
 *   beside an installed copy, a test runner loading modules again) each have their own
 *   class, so `e instanceof ShmError` was false for an error of the other copy. Each
 *   prototype carries a registered symbol (`Symbol.for`, one per class name, shared by
 *   every copy and realm), and `instanceof` the class asks for it; a subclass of the
 *   user's keeps the ordinary prototype-chain test.
 */
export function finishErrorClass(cls: abstract new (...args: never[]) => Error, name: string): void {
  const brand = Symbol.for(`shmutils.${name}`)
  Object.defineProperty(cls.prototype, 'name', { value: name, writable: true, configurable: true })
  Object.defineProperty(cls.prototype, brand, { value: true })
  Object.defineProperty(cls, Symbol.hasInstance, {
    value(this: unknown, value: unknown): boolean {
      if (this !== cls) return Function.prototype[Symbol.hasInstance].call(this, value)
      return typeof value === 'object' && value !== null && (value as Record<symbol, unknown>)[brand] === true
    },
  })
}

finishErrorClass(ShmError, 'ShmError')

const WIRE_PREFIX = '\u0001shm'

interface Wire extends ShmErrorFields {
  kind: 'shm' | 'type' | 'range'
  message: string
}

/** A `TypeError` with Node's `code` for invalid argument types. */
export function typeError(message: string, options?: ErrorOptions): TypeError {
  return Object.assign(new TypeError(message, options), { code: 'ERR_INVALID_ARG_TYPE' })
}

/** A `RangeError` with Node's `code` for out-of-range arguments. */
export function rangeError(message: string, options?: ErrorOptions): RangeError {
  return Object.assign(new RangeError(message, options), { code: 'ERR_OUT_OF_RANGE' })
}

/** Converts an error thrown by the native binding into the public error types. */
export function fromNative(e: unknown): unknown {
  // Not `instanceof Error`: the binding's errors are of the realm that loaded it, which is
  // not this module's under a test runner that runs each file in a `vm` context.
  if (typeof e !== 'object' || e === null) return e
  const message = (e as { message?: unknown }).message
  if (typeof message !== 'string') return e
  if (!message.startsWith(WIRE_PREFIX)) {
    // napi-rs's own argument conversion failures ('NumberExpected', ...): a wrong type.
    const code = (e as { code?: unknown }).code
    if (typeof code === 'string' && /Expected$|^InvalidArg$/.test(code)) return typeError(`Invalid argument: ${message}`)
    return e
  }
  let w: Wire
  try {
    w = JSON.parse(message.slice(WIRE_PREFIX.length)) as Wire
  } catch {
    return e
  }
  let out: Error
  if (w.kind === 'type') out = typeError(w.message)
  else if (w.kind === 'range') out = rangeError(w.message)
  else out = new ShmError(w.message, w)
  // Keep the caller's stack, not the binding's.
  Error.captureStackTrace?.(out, fromNative)
  return out
}

/** Runs a native call, rethrowing its errors as the public error types. */
export function native<T>(call: () => T): T {
  try {
    return call()
  } catch (e) {
    throw fromNative(e)
  }
}

/** Where glibc and musl keep named shared-memory objects (Linux). */
export const SHM_DIR = '/dev/shm'

/** How to share memory on a system without a usable {@link SHM_DIR}. */
const WITHOUT_SHM_DIR =
  'Named segments live there. Share memory without a name instead, through ' +
  'MappedMemory.anonymous() (its handles revive in the other processes of this host while it is open), ' +
  `or mount a tmpfs on ${SHM_DIR}`

/** The owner of the object `name` in {@link SHM_DIR} if it is another user, else undefined. */
function foreignOwner(name: string): number | undefined {
  const me = process.getuid?.()
  if (me === undefined || process.platform !== 'linux') return undefined
  try {
    const { uid } = statSync(SHM_DIR + (name.startsWith('/') ? name : `/${name}`))
    return uid === me ? undefined : uid
  } catch {
    return undefined
  }
}

/**
 * Gives an error from opening or creating the segment `name` a message that says what to
 * do. `EEXIST`: `open` (how to open it instead), or remove the old one. On Linux, a
 * system with no {@link SHM_DIR} at all (AWS Lambda, some minimal containers: every name
 * is then `ENOENT`) or a read-only one (`EROFS`): how to share memory without it. A
 * failed system call gets `name` as its `path` if it has none. Other errors pass through.
 */
export function withShmAdvice(e: unknown, name: string, open = ''): unknown {
  if (!(e instanceof ShmError)) return e
  // A failed system call names the segment it was for (`path`), also where the native
  // side did not know the name (an ftruncate, an mmap).
  const path = e.path ?? (e.syscall !== undefined ? (name.startsWith('/') ? name : `/${name}`) : undefined)
  let message = e.message
  if (e.code === 'EEXIST') {
    const n = JSON.stringify(name)
    const owner = foreignOwner(name)
    message = owner !== undefined
      ? `A shared-memory segment named ${n} already exists, and belongs to another user (uid ${owner}), ` +
        `who made it first: do not open it (they would read what you store and write what you use), ` +
        `and only they or root may remove it (${SHM_DIR} is sticky). Pick another name (docs/deployment.md)`
      : `A shared-memory segment named ${n} already exists. To use it, ${open}; to start afresh, ` +
        `remove it first with shmUnlink(${n}) (or mem.unlink() in a process that has it open; ` +
        `from a shell: npx shmutils rm ${name}), or pick another name`
  } else if (process.platform === 'linux' && e.code === 'ENOENT' && !existsSync(SHM_DIR)) {
    message = `${e.message}: this system has no ${SHM_DIR} (as on AWS Lambda and in some minimal containers). ${WITHOUT_SHM_DIR}`
  } else if (process.platform === 'linux' && e.code === 'EROFS') {
    message = `${e.message}: ${SHM_DIR} is mounted read-only here. ${WITHOUT_SHM_DIR}`
  } else if (path === e.path) {
    return e
  }
  const out = new ShmError(message, { code: e.code, errno: e.errno, syscall: e.syscall, path })
  Error.captureStackTrace?.(out, withShmAdvice)
  return out
}

/** `ERR_SHM_CLOSED`, for use of an object after `close()`. */
export function closedError(what: string): ShmError {
  return new ShmError(`${what} is closed`, { code: 'ERR_SHM_CLOSED' })
}

/**
 * The words of a primitive's record, `a`, while its mapping is open (a closed mapping
 * leaves them empty).
 * @throws ShmError `ERR_SHM_CLOSED` naming `what` once it is closed
 */
export function openWords(a: Int32Array, what: string): Int32Array {
  if (a.length === 0) throw closedError(what)
  return a
}

/** `ERR_SHM_OUT_OF_BOUNDS`. */
export function outOfBounds(message: string): ShmError {
  return new ShmError(message, { code: 'ERR_SHM_OUT_OF_BOUNDS' })
}

/** `ERR_SHM_READ_ONLY` (errno `EACCES`): a write through a segment opened read-only. */
export function readOnlyError(): ShmError {
  return new ShmError('the segment was opened read-only: the library writes nothing through it', {
    code: 'ERR_SHM_READ_ONLY',
    errno: 13,
  })
}

/** `ERR_SHM_NOT_OWNER`. */
export function notOwner(what = 'the lock'): ShmError {
  return new ShmError(`${what} is not held by this thread`, { code: 'ERR_SHM_NOT_OWNER' })
}

/** `ERR_SHM_NOT_RECOVERABLE`. */
export function notRecoverable(): ShmError {
  return new ShmError(
    "the lock's holder died and the lock was released without markConsistent(); it can never be acquired again",
    { code: 'ERR_SHM_NOT_RECOVERABLE' },
  )
}

/**
 * The rejection of an aborted wait: a `DOMException` named `'AbortError'` (as Node's own
 * APIs use), with the signal's reason as `cause`.
 */
export function abortError(signal: AbortSignal): DOMException {
  const e = new DOMException('The operation was aborted', 'AbortError')
  Object.defineProperty(e, 'cause', { value: signal.reason, writable: true, configurable: true })
  return e
}
