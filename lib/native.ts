/**
 * The native binding, loaded once. A platform without a prebuilt binary gets a
 * `ShmError` with code `ERR_SHM_UNSUPPORTED_PLATFORM` instead of the loader's generic
 * message.
 * @module
 */
import type * as Binding from '../index.js'
import { ShmError } from './errors.js'

/** Platforms with a prebuilt binary. */
export const SUPPORTED_PLATFORMS: readonly string[] = [
  'linux-x64-gnu',
  'linux-arm64-gnu',
  'linux-x64-musl',
  'linux-arm64-musl',
  'darwin-x64',
  'darwin-arm64',
]

/** This process's platform in the names of {@link SUPPORTED_PLATFORMS}. */
export function currentPlatform(): string {
  let p = `${process.platform}-${process.arch}`
  if (process.platform === 'linux') {
    const report = process.report?.getReport?.() as { header?: { glibcVersionRuntime?: string } } | undefined
    p += report?.header?.glibcVersionRuntime ? '-gnu' : '-musl'
  }
  return p
}

/**
 * The hottest calls, registered as plain N-API callbacks by `src-rs/js/raw.rs` (the
 * generated `index.d.ts` does not list them). Errors arrive in the same wire form.
 */
export interface FastBinding {
  /** `malloc(size, align)` on heap slot `id`: the block's offset in the mapping. */
  heapMalloc(id: number, size: number, align: number): number
  /** `free(offset)` on heap slot `id`. */
  heapFree(id: number, offset: number): void
  /** `realloc(offset, size)` on heap slot `id`: the block's new offset. */
  heapRealloc(id: number, offset: number, size: number): number
  /**
   * Takes the lock at `offset` of mapping `id` for this thread, sleeping in the kernel
   * (`timeout` ms at most; negative: no limit); returns a completion code (`lib/waits.ts`).
   */
  lockAcquire(id: number, offset: number, timeout: number): number
  /** Wakes one waiter of the lock at `offset` of mapping `id`. */
  lockWake(id: number, offset: number): void
  /**
   * Notifies up to `n` waiters (`0xffffffff`: all) of the condition at `offset` of mapping
   * `id`, whose lock is at `lockOffset` of mapping `lockId` (held by this thread); how many.
   */
  condNotify(id: number, offset: number, lockId: number, lockOffset: number, n: number): number
  /** Wakes up to `n` sleepers of the semaphore at `offset` of mapping `id`. */
  semWake(id: number, offset: number, n: number): void
  /**
   * Opens a managed segment (`fixed`: 0 anywhere, 1 prefer, 2 require the creator's
   * address; `readOnly` 0 or 1) and describes it in `out` (see `lib/memory.ts`).
   */
  segmentOpen(name: string, fixed: number, readOnly: number, out: Float64Array): void
  /**
   * Creates a managed segment (`fixed`: -1 anywhere, -2 a free high address, else that
   * address; `flags`: 1 prefault, 2 reserve); as {@link segmentOpen} otherwise.
   */
  segmentCreate(name: string, size: number, permissions: number, fixed: number, flags: number, out: Float64Array): void
  /** `mmap` (`address` -1: anywhere; `fd` -1: anonymous); as {@link segmentOpen} otherwise. */
  mapRaw(address: number, size: number, protection: number, flags: number, fd: number, offset: number, out: Float64Array): void
  /**
   * Creates an anonymous managed segment (`flags`: 1 prefault, 2 reserve); as
   * {@link segmentOpen} otherwise.
   */
  anonymousCreate(size: number, flags: number, out: Float64Array): void
  /** Maps the managed segment behind descriptor `fd`; as {@link segmentOpen} otherwise. */
  mappingFromFd(fd: number, fixed: number, readOnly: number, out: Float64Array): void
  /** Detaches `buffer` (if given) and unmaps mapping `id`. */
  mappingClose(id: number, buffer?: ArrayBuffer): void
  /**
   * An undo semaphore's operation (`src-rs/sync/undo.rs`): `op` 0 takes a unit if one is
   * free (1 taken, 0 not), 1 releases `n`, 2 answers how many units this thread holds.
   */
  semUndo(id: number, offset: number, op: number, n: number): number
  /**
   * `malloc(size, align)` on heap slot `id`, recording the block (offset / 16) in the
   * u32 at mapping offset `slot` under the heap lock; returns the block's offset.
   */
  heapAllocInto(id: number, size: number, align: number, slot: number): number
  /**
   * Frees the block the u32 at `slot` names (offset / 16) on heap slot `id`, first
   * storing into the slot the u32 `next` bytes into the block (or 0 if `next` < 0);
   * returns the freed offset, 0 if the slot was empty.
   */
  heapFreeFrom(id: number, slot: number, next: number): number
  /** Wakes up to `n` sleepers on the u32 at `offset` of mapping `id`; returns how many. */
  wordWake(id: number, offset: number, n: number): number
}

function load(): typeof Binding & FastBinding {
  try {
    // A synchronous require: the binding must exist before any module-level code runs,
    // and the failure must be catchable here (an `import` could be neither).
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    return require('../index.js') as typeof Binding & FastBinding
  } catch (cause) {
    const platform = currentPlatform()
    const supported = SUPPORTED_PLATFORMS.includes(platform)
    const err = new ShmError(
      supported
        ? `shmutils could not load its native binary for ${platform} (${(cause as Error)?.message ?? cause}); reinstall the package with optional dependencies enabled`
        : `shmutils has no native binary for ${platform}; supported platforms: ${SUPPORTED_PLATFORMS.join(', ')}`,
      { code: 'ERR_SHM_UNSUPPORTED_PLATFORM' },
    )
    ;(err as Error & { cause?: unknown }).cause = cause
    throw err
  }
}

/** The native binding (see `index.d.ts`). Internal: the public API wraps it. */
export const binding: typeof Binding & FastBinding = load()

