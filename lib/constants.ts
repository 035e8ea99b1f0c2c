/**
 * Page size and the protection/flag bits of `mmap`, with this platform's values.
 * @module
 */
import { checkIndex, describe } from './args.js'
import { rangeError, typeError } from './errors.js'
import { binding } from './native.js'

const c = binding.mapConstants()

/**
 * The system page size in bytes.
 * @category Segments
 */
export const PAGE_SIZE: number = binding.pageSize()

/**
 * `n` rounded up to a whole number of pages.
 * @category Segments
 */
export function roundToPageSize(n: number): number {
  checkIndex('n', n)
  const rounded = Math.ceil(n / PAGE_SIZE) * PAGE_SIZE
  if (!Number.isSafeInteger(rounded)) {
    throw rangeError(`The "n" argument ${n} rounded up to whole pages (${rounded}) is beyond Number.MAX_SAFE_INTEGER`)
  }
  return rounded
}

/**
 * Memory protection bits (`PROT_*`), combinable with `|`.
 * @category Segments
 */
export const Protection = Object.freeze({
  /** `PROT_NONE`: no access. */
  NONE: c.protNone,
  /** `PROT_READ`. */
  READ: c.protRead,
  /** `PROT_WRITE`. */
  WRITE: c.protWrite,
  /** `PROT_EXEC`. */
  EXEC: c.protExec,
  /** Read and write (the default). */
  READ_WRITE: c.protRead | c.protWrite,
  /** Read and execute. */
  READ_EXEC: c.protRead | c.protExec,
  /** Read, write and execute. */
  ALL: c.protRead | c.protWrite | c.protExec,
})

/**
 * Mapping flags (`MAP_*`), combinable with `|`.
 * @category Segments
 */
export const MapFlags = Object.freeze({
  /** `MAP_SHARED`: writes are seen by every process mapping the object. */
  SHARED: c.mapShared,
  /** `MAP_PRIVATE`: copy-on-write, this process only. */
  PRIVATE: c.mapPrivate,
  /** `MAP_ANONYMOUS`: memory not backed by an object. */
  ANONYMOUS: c.mapAnonymous,
  /**
   * `MAP_FIXED`: exactly at the address. Only free space or pages released with
   * `detach()` may be replaced; anything else is `EADDRINUSE`.
   */
  FIXED: c.mapFixed,
  /** `MAP_FIXED_NOREPLACE`: exactly at the address, or `EADDRINUSE` if it is taken. */
  FIXED_NOREPLACE: c.mapFixedNoreplace,
  /** `MAP_NORESERVE`: no swap reservation. */
  NORESERVE: c.mapNoreserve,
  /** `MAP_POPULATE`: prefault the pages now (0 where unsupported). */
  POPULATE: c.mapPopulate,
})

/**
 * Checks that `value`, the argument `name`, is a combination of the bits of `bits` (one
 * of the objects above) and returns it.
 */
function checkBits(name: string, value: unknown, bits: Readonly<Record<string, number>>, what: string): number {
  if (typeof value !== 'number') throw typeError(`The "${name}" argument must be of type number; got ${describe(value)}`)
  let all = 0
  for (const b of Object.values(bits)) all |= b
  if (!Number.isInteger(value) || value < 0 || value > all || (value & ~all) !== 0) {
    throw rangeError(`The "${name}" argument must be a combination of the ${what} bits (at most 0x${all.toString(16)}); got ${value}`)
  }
  return value
}

/** @internal Checks a `protection` argument: `Protection` bits. */
export function checkProtection(value: unknown): number {
  return checkBits('protection', value, Protection, 'Protection')
}

/** @internal Checks a `flags` argument: `MapFlags` bits. */
export function checkMapFlags(value: unknown): number {
  return checkBits('flags', value, MapFlags, 'MapFlags')
}
