/**
 * POSIX shared-memory objects: `shmOpen`, `shmUnlink` and {@link SharedMemoryObject}.
 * @module
 */
import { checkIndex, checkName, checkOptions, checkPermissions, checkString } from './args.js'
import { closedError, native, withShmAdvice } from './errors.js'
import { forgetOnExit } from './exit.js'
import { binding } from './native.js'

/**
 * How {@link shmOpen} treats an existing or missing object (the original's modes).
 * @category Segments
 */
export type ShmMode = 'r' | 'r+' | 'w' | 'w+' | 'x' | 'x+'

/**
 * Options of {@link shmOpen}.
 * @category Segments
 */
export interface ShmOpenOptions {
  /**
   * Permission bits for a created object, within `0o0..0o777`; default `0o600`. An
   * object that already exists keeps its own bits, and modes `r`/`r+` never create one.
   *
   * How the process's umask applies depends on the mode:
   * - `x`/`x+` (exclusive create): on Linux the object gets exactly these bits, the
   *   umask is undone (`fchmod` after creating: the call knows it created the object).
   * - `w`/`w+`: an object created by the call gets these bits minus the umask, as
   *   `open(2)` gives a new file (with `0o666` and the usual umask `0o022`: `0o644`).
   *   These modes also open an object that exists, and the call cannot tell whether it
   *   created the one it got, so it never changes bits afterwards.
   * - On macOS the umask always applies (it refuses `fchmod` on these objects).
   *
   * For exactly these bits on an object that may exist already, create with `x` and
   * open with `r+` on `EEXIST` (or set `process.umask(0)` around the call).
   */
  permissions?: number
}

const fdRegistry = new FinalizationRegistry<number>((fd) => {
  try {
    binding.fdClose(fd)
  } catch {
    // Already closed: nothing to do.
  }
})

let openedObject: (name: string, fd: number, readOnly: boolean) => SharedMemoryObject

/**
 * @internal Whether `value` is a {@link SharedMemoryObject}: a private-brand check, which a
 * Proxy of one fails.
 */
export let isSharedMemoryObject: (value: unknown) => value is SharedMemoryObject

/**
 * An open POSIX shared-memory object (a file descriptor and its name).
 * @category Segments
 */
export class SharedMemoryObject implements Disposable {
  /** The name, normalized with one leading `/`. */
  readonly name: string
  #fd: number
  /** Whether the object was opened read-only. */
  readonly readOnly: boolean

  /** Objects come from {@link shmOpen}. */
  private constructor(name: string, fd: number, readOnly: boolean) {
    this.name = name
    this.#fd = fd
    this.readOnly = readOnly
    fdRegistry.register(this, fd, this)
  }

  static {
    openedObject = (name, fd, readOnly) => new SharedMemoryObject(name, fd, readOnly)
    isSharedMemoryObject = (value): value is SharedMemoryObject => typeof value === 'object' && value !== null && #fd in value
  }

  /** The file descriptor; throws `ERR_SHM_CLOSED` after {@link close}. */
  get fd(): number {
    if (this.#fd < 0) throw closedError(`shared memory object ${this.name}`)
    return this.#fd
  }

  /** The size in bytes (`fstat`). */
  size(): number {
    const fd = this.fd
    try {
      return native(() => binding.fdSize(fd))
    } catch (e) {
      throw withShmAdvice(e, this.name)
    }
  }

  /** Sets the size in bytes (`ftruncate`); returns `this` for chaining. */
  truncate(size: number): this {
    checkIndex('size', size)
    const fd = this.fd
    try {
      native(() => binding.fdTruncate(fd, size))
    } catch (e) {
      throw withShmAdvice(e, this.name)
    }
    return this
  }

  /** Closes the descriptor. Safe to call twice. Mappings made from it stay valid. */
  close(): void {
    if (this.#fd < 0) return
    const fd = this.#fd
    this.#fd = -1
    fdRegistry.unregister(this)
    native(() => binding.fdClose(fd))
  }

  /** Removes the name (`shm_unlink`); existing mappings stay valid. */
  unlink(): void {
    shmUnlink(this.name)
  }

  /** Same as {@link close}, for `using`. */
  [Symbol.dispose](): void {
    this.close()
  }
}

/**
 * Opens or creates a POSIX shared-memory object.
 *
 * Modes: `r` read-only existing, `r+` read/write existing, `w` create+truncate,
 * `w+` create if missing (default), `x`/`x+` exclusive create. A created object gets
 * `options.permissions`, less the umask for `w`/`w+` (see {@link ShmOpenOptions.permissions}).
 * @throws ShmError `ENOENT`, `EEXIST`, `EACCES`; TypeError/RangeError for a bad name,
 *   mode or permissions.
 * @category Segments
 */
export function shmOpen(name: string, mode: ShmMode = 'w+', options: ShmOpenOptions = {}): SharedMemoryObject {
  checkName('name', name)
  checkString('mode', mode)
  const permissions = checkPermissions(checkOptions(options).permissions)
  let opened
  try {
    opened = native(() => binding.shmOpen(name, mode, permissions))
  } catch (e) {
    throw withShmAdvice(e, name, "open it with mode 'r+' (read/write) or 'w+' (create if missing)")
  }
  return openedObject(opened.name, opened.fd, mode === 'r')
}

/**
 * Removes a shared-memory object's name. Mappings of it stay valid until closed.
 * @throws ShmError `ENOENT` if it does not exist.
 * @category Segments
 */
export function shmUnlink(name: string): void {
  checkName('name', name)
  try {
    native(() => binding.shmUnlink(name))
  } catch (e) {
    // Gone already: not this process's to remove at exit either.
    if ((e as { code?: string }).code === 'ENOENT') forgetOnExit(name)
    throw e
  }
  forgetOnExit(name)
}
