/**
 * Page size and the protection/flag bits of `mmap`, with this platform's values.
 * @module
 */
import { checkIndex } from './args.js'
import { binding } from './native.js'

const c = binding.mapConstants()

/** The system page size in bytes. */
export const PAGE_SIZE: number = binding.pageSize()

/** `n` rounded up to a whole number of pages. */
export function roundToPageSize(n: number): number {
  checkIndex('n', n)
  return Math.ceil(n / PAGE_SIZE) * PAGE_SIZE
}

/** Memory protection bits (`PROT_*`), combinable with `|`. */
export const Protection = Object.freeze({
  NONE: c.protNone,
  READ: c.protRead,
  WRITE: c.protWrite,
  EXEC: c.protExec,
  READ_WRITE: c.protRead | c.protWrite,
  READ_EXEC: c.protRead | c.protExec,
  ALL: c.protRead | c.protWrite | c.protExec,
})

/** Mapping flags (`MAP_*`), combinable with `|`. */
export const MapFlags = Object.freeze({
  SHARED: c.mapShared,
  PRIVATE: c.mapPrivate,
  ANONYMOUS: c.mapAnonymous,
  FIXED: c.mapFixed,
  FIXED_NOREPLACE: c.mapFixedNoreplace,
  NORESERVE: c.mapNoreserve,
  POPULATE: c.mapPopulate,
})
