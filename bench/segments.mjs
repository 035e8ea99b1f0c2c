/**
 * The shared-memory segments the bench creates: every name carries the bench's pid
 * (`/shmutils-b<pid>-<tag>-<n>`, see names.mjs), every segment is closed and unlinked when its
 * measurement ends (try/finally), and any name still registered when the process exits
 * is unlinked by an exit handler, so a failed or interrupted run leaves nothing in
 * /dev/shm.
 * @module
 */
import { MapFlags, MappedMemory, Protection, shmOpen, shmUnlink } from '../dist/index.js'
import { atExit } from './cleanup.mjs'
import { segmentPrefix } from './names.mjs'

/** Prefix of every segment name this process creates (children and C programs included). */
export const SEGMENT_PREFIX = segmentPrefix(process.pid)

/** @type {Set<string>} names that may exist and must be unlinked */
const live = new Set()
let counter = 0

atExit(() => {
  for (const name of [...live]) unlinkSegment(name)
})

/**
 * A fresh segment name, registered for unlinking at exit.
 * @param {string} tag - what the segment is for (part of the name)
 */
export function segmentName(tag) {
  const name = `${SEGMENT_PREFIX}${tag}-${(++counter).toString(36)}`
  live.add(name)
  return name
}

/**
 * Unlinks a segment if it exists and forgets the name.
 * @param {string} name
 */
export function unlinkSegment(name) {
  live.delete(name)
  try {
    shmUnlink(name)
  } catch (e) {
    if (/** @type {{code?: string}} */ (e).code !== 'ENOENT') throw e
  }
}

/**
 * @typedef {object} SegmentOptions
 * @property {number} size - bytes
 * @property {boolean} [managed] - `MappedMemory.create` (header + heap) instead of a raw
 *   mapping of a fresh named object, whose bytes are all free for the bench's own use
 * @property {boolean} [prefault] - managed only: `MAP_POPULATE`
 */

/**
 * Creates a named segment, runs `fn` with it, then closes and unlinks it, even if `fn`
 * throws.
 * @template T
 * @param {string} tag - what the segment is for
 * @param {SegmentOptions} options
 * @param {(mem: MappedMemory, name: string) => T | Promise<T>} fn
 * @returns {Promise<T>}
 */
export async function withSegment(tag, options, fn) {
  const name = segmentName(tag)
  /** @type {MappedMemory | undefined} */
  let mem
  try {
    mem = options.managed ? MappedMemory.create(name, { size: options.size, prefault: !!options.prefault }) : rawSegment(name, options.size)
    return await fn(mem, name)
  } finally {
    mem?.close()
    unlinkSegment(name)
  }
}

/**
 * A raw read/write shared mapping of a new named object of `size` bytes.
 * @param {string} name
 * @param {number} size
 */
function rawSegment(name, size) {
  const fd = shmOpen(name, 'x+')
  try {
    fd.truncate(size)
    return new MappedMemory(null, size, Protection.READ_WRITE, MapFlags.SHARED, fd)
  } finally {
    fd.close()
  }
}
