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

function load(): typeof Binding {
  try {
    // A synchronous require: the binding must exist before any module-level code runs,
    // and the failure must be catchable here (an `import` could be neither).
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    return require('../index.js') as typeof Binding
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
export const binding: typeof Binding = load()

/** The native mapping class. */
export type NativeMapping = Binding.Mapping

/** Where a native mapping is (see `Mapping.info()`). */
export type MappingInfo = Binding.MappingInfo
