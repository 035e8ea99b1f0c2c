/**
 * Page size and the protection/flag bits of `mmap`, with this platform's values.
 * @module
 */
import { checkIndex } from './args.js'
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
  return Math.ceil(n / PAGE_SIZE) * PAGE_SIZE
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
