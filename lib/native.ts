/**
 * The native binding, loaded once. Instead of the loader's generic "Cannot find native
 * binding", a failure is a `ShmError` that says what to do: `ERR_SHM_BINARY_MISSING` on a
 * supported platform whose binary package (`shmutils-<platform>`) is not installed, or is
 * of another version, naming it and how to install it; `ERR_SHM_UNSUPPORTED_PLATFORM` on
 * a platform without a prebuilt binary, on a runtime older than the package needs, or
 * with a binary this system cannot load.
 * @module
 */
import { existsSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
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
  /**
   * `free(offset)` of a named object on heap slot `id`, its directory entry looked for at
   * `entry` (as `heapNamedReserve`/`heapNamedFind` reported it) before the whole directory.
   */
  heapFreeNamed(id: number, offset: number, entry: number): void
  /** `realloc(offset, size)` on heap slot `id`: the block's new offset. */
  heapRealloc(id: number, offset: number, size: number): number
  /**
   * Takes the lock at `offset` of mapping `id` for this thread, sleeping in the kernel
   * (`timeout` ms at most; negative: no limit); returns a completion code (`lib/waits.ts`).
   */
  lockAcquire(id: number, offset: number, timeout: number): number
  /**
   * Wakes one waiter of the lock at `offset` of mapping `id`, after a release that saw
   * WAITERS; `handOff` 1: leaves the lock to it.
   */
  lockWake(id: number, offset: number, handOff: number): void
  /**
   * Notifies up to `n` waiters (`0xffffffff`: all) of the condition at `offset` of mapping
   * `id`, whose lock is at `lockOffset` of mapping `lockId` (held by this thread); how many.
   */
  condNotify(id: number, offset: number, lockId: number, lockOffset: number, n: number): number
  /**
   * Wakes up to `n` sleepers of the semaphore at `offset` of mapping `id`; `handOff` 1:
   * the release added its units to `handed` for them (those not woken go back).
   */
  semWake(id: number, offset: number, n: number, handOff: number): void
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
  /** An external ArrayBuffer over `[offset, offset + length)` of mapping `id` (zero-copy). */
  mappingBuffer(id: number, offset: number, length: number): ArrayBuffer
  /** Forgets mapping `id`, whose object was collected. */
  mappingRelease(id: number): void
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

/**
 * Whether the generated loader (`index.js`) had a binary for `platform` to load: the file
 * `NAPI_RS_NATIVE_LIBRARY_PATH` names when that is set, else `shmutils.<platform>.node`
 * beside the loader (a build from source) or the installed package `shmutils-<platform>`.
 */
function binaryPresent(platform: string): boolean {
  const override = process.env.NAPI_RS_NATIVE_LIBRARY_PATH
  if (override) return existsSync(override)
  if (existsSync(join(__dirname, '..', `shmutils.${platform}.node`))) return true
  try {
    require.resolve(`shmutils-${platform}/package.json`)
    return true
  } catch {
    return false
  }
}

/**
 * Whether this JavaScript runs from a bundle (esbuild, webpack, rollup, a single
 * executable application) rather than from its installed package: no `require.resolve`
 * or `__dirname` (an ES module or SEA bundle), or no `package.json` of the package one
 * level up from this file.
 */
function bundled(): boolean {
  try {
    const json = join(__dirname, '..', 'package.json')
    return typeof require.resolve !== 'function' || !existsSync(json) || (JSON.parse(readFileSync(json, 'utf8')) as { name?: unknown }).name !== 'shmutils'
  } catch {
    return true
  }
}

/** What to do when shmutils was bundled and its binary did not load (docs/bundlers.md). */
const BUNDLED_ADVICE = 'shmutils was bundled: keep it out of the bundle (esbuild --external:shmutils, webpack externals, rollup external) ' +
  'and ship node_modules with shmutils and its platform package, or put the .node file beside the bundle where its require finds it ' +
  '(esbuild --loader:.node=copy, webpack node-loader); docs/bundlers.md'

/**
 * Whether `e` is Node's `ERR_DLOPEN_DISABLED` (the permission model without
 * `--allow-addons`); the generated loader keeps only the message of each error it chains.
 */
function addonsDisabled(e: unknown): boolean {
  return (e as { code?: unknown }).code === 'ERR_DLOPEN_DISABLED' || /loading addons is disabled/.test(String((e as Error).message))
}

/** `error` and its `cause` chain (at most 16 deep: a chain may loop). */
function causes(error: unknown): unknown[] {
  const chain: unknown[] = []
  for (let e = error; e && chain.length < 16; e = (e as { cause?: unknown }).cause) chain.push(e)
  return chain
}

/**
 * What the loader's error says: the messages of its `cause` chain (where the generated
 * loader puts the errors of each file it tried), else its own message.
 */
function reasons(error: unknown): string {
  const said: string[] = []
  for (const e of causes(error).slice(1, 7)) {
    const message = String((e as Error).message ?? e)
    // The loader also tries a WebAssembly build, which shmutils does not publish: its
    // failures say nothing about the binary that did not load.
    if (!/wasm32-wasi|\.wasi\.cjs|\.wasi-browser/.test(message)) said.push(message.split('\n')[0]!)
  }
  return said.length > 0 ? said.join('; ') : String((error as Error)?.message ?? error).split('\n')[0]!
}

/** The error for a binding that did not load (`cause`): why, and what to do. */
function loadError(cause: unknown): ShmError {
  const platform = currentPlatform()
  let err: ShmError
  if (!SUPPORTED_PLATFORMS.includes(platform)) {
    err = new ShmError(`shmutils has no native binary for ${platform}; supported platforms: ${SUPPORTED_PLATFORMS.join(', ')}`, {
      code: 'ERR_SHM_UNSUPPORTED_PLATFORM',
    })
  } else if (causes(cause).some(addonsDisabled)) {
    err = new ShmError(
      'shmutils could not load its native binary: Node\'s permission model (--permission, --experimental-permission on Node 20) ' +
        'does not allow native addons here; run node with --allow-addons as well',
      { code: 'EACCES' },
    )
  } else if (bundled()) {
    err = new ShmError(`shmutils could not load its native binary for ${platform}: ${reasons(cause)}. ${BUNDLED_ADVICE}`, { code: 'ERR_SHM_BINARY_MISSING' })
  } else if (!binaryPresent(platform)) {
    const override = process.env.NAPI_RS_NATIVE_LIBRARY_PATH
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    const pkg = `shmutils-${platform}@${(require('../package.json') as { version: string }).version}`
    err = new ShmError(
      override
        ? `shmutils found no native binary for ${platform}: NAPI_RS_NATIVE_LIBRARY_PATH names ${override}, which does not exist (unset it to load the one in ${pkg})`
        : `shmutils needs its native binary for ${platform}, which comes in the package ${pkg}, and that package is not installed: ` +
            `install it with \`npm install ${pkg}\` (npm installs it along with shmutils unless optional dependencies were ` +
            `left out, --omit=optional, or the lock file was made on another platform without it)`,
      { code: 'ERR_SHM_BINARY_MISSING' },
    )
  } else {
    err = new ShmError(
      `shmutils could not load its native binary for ${platform} on this system: ${reasons(cause)} ` +
        `(if the install is damaged, reinstall shmutils; the binaries need Linux with glibc 2.17 or later, or musl, or macOS: README.md, "Two commands")`,
      { code: 'ERR_SHM_UNSUPPORTED_PLATFORM' },
    )
  }
  ;(err as Error & { cause?: unknown }).cause = cause
  return err
}

/**
 * `ERR_SHM_UNSUPPORTED_PLATFORM` on a JavaScript runtime older than the package needs
 * (npm only warns about `engines`): said at load, not as a `TypeError` from whichever
 * call first uses a missing built-in. Looks for what is used, not at version numbers
 * (Bun and Deno report their own).
 */
function checkRuntime(): void {
  if (typeof String.prototype.isWellFormed === 'function') return
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const { engines } = require('../package.json') as { engines: { node: string } }
  throw new ShmError(`shmutils needs Node.js ${engines.node}; this is Node.js ${process.versions.node}`, { code: 'ERR_SHM_UNSUPPORTED_PLATFORM' })
}

function load(): typeof Binding & FastBinding {
  checkRuntime()
  try {
    // A synchronous require: the binding must exist before any module-level code runs,
    // and the failure must be catchable here (an `import` could be neither).
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    const b = require('../index.js') as typeof Binding & FastBinding
    checkBinaryVersion()
    checkBinding(b)
    return b
  } catch (cause) {
    throw cause instanceof ShmError ? cause : loadError(cause)
  }
}

/**
 * Checks what the loader returned: a binding of this very release. `ERR_SHM_BINARY_MISSING`
 * for a binary of another version (a lock file or a cache that kept an old platform
 * package, a bundle with a stale `.node` file): the native side and this JavaScript must
 * be one release, and napi's loader checks that only when asked to
 * (`NAPI_RS_ENFORCE_VERSION_CHECK`), and only in an installed package. The binary says
 * which package version it was built for (`packageVersion`), so this holds in bundles
 * too. A file that `NAPI_RS_NATIVE_LIBRARY_PATH` names is the developer's own. Something
 * that is no binding at all (a bundler's file loader hands over the file's path) says so.
 */
function checkBinding(b: unknown): asserts b is typeof Binding & FastBinding {
  const platform = currentPlatform()
  if (typeof b !== 'object' || b === null) {
    throw new ShmError(
      `shmutils loaded something that is not its native binary for ${platform} (${typeof b === 'string' ? `the string ${JSON.stringify(b)}` : String(b)}). ${BUNDLED_ADVICE}`,
      { code: 'ERR_SHM_BINARY_MISSING' },
    )
  }
  if (process.env.NAPI_RS_NATIVE_LIBRARY_PATH) return
  const reported = (b as Partial<typeof Binding>).packageVersion
  // A binary older than the version report (0.1.0's first builds) is of another release.
  const found = typeof reported === 'function' ? reported() : null
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const version = (require('../package.json') as { version: string }).version
  if (found === version) return
  throw new ShmError(
    `shmutils ${version} found its native binary for ${platform} ${found === null ? 'of an older release' : `at version ${found}`}: they must be the same release ` +
      `(install it with \`npm install shmutils-${platform}@${version}\`, or reinstall shmutils; a bundle must be made again)`,
    { code: 'ERR_SHM_BINARY_MISSING' },
  )
}

/**
 * `ERR_SHM_BINARY_MISSING` when the binary came from an installed platform package of
 * another version (whatever its binary says: the package is what npm will keep
 * installing). A build from source, or a file that `NAPI_RS_NATIVE_LIBRARY_PATH` names,
 * is the developer's own.
 */
function checkBinaryVersion(): void {
  const platform = currentPlatform()
  let found: string
  try {
    // Only if the binary loaded is the package's (not a local build beside the loader,
    // or the file NAPI_RS_NATIVE_LIBRARY_PATH names).
    if (require.cache[require.resolve(`shmutils-${platform}`)] === undefined) return
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    found = (require(`shmutils-${platform}/package.json`) as { version: string }).version
  } catch {
    return
  }
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const version = (require('../package.json') as { version: string }).version
  if (found === version) return
  throw new ShmError(
    `shmutils ${version} found its native binary package shmutils-${platform} at version ${found}: they must be the same release ` +
      `(install it with \`npm install shmutils-${platform}@${version}\`, or reinstall shmutils)`,
    { code: 'ERR_SHM_BINARY_MISSING' },
  )
}

/** The native binding (see `index.d.ts`). Internal: the public API wraps it. */
export const binding: typeof Binding & FastBinding = load()

