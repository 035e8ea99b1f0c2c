/**
 * `munmap` for pages released with `MappedMemory.detach()`.
 * @module
 */
import { checkIndex } from './args.js'
import { native } from './errors.js'
import { binding } from './native.js'

/**
 * Unmaps `[address, address + size)`, which must lie inside pages released with
 * `MappedMemory.detach()`; anything else (memory still in use) is refused with `EINVAL`
 * rather than crashing the process.
 * @category Segments
 */
export function munmap(address: number, size: number): void {
  checkIndex('address', address)
  checkIndex('size', size)
  native(() => binding.munmap(address, size))
}
