/**
 * C strings in a mapping: NUL-terminated UTF-8, read with every byte bounds-checked
 * (`Ref.string()`), and the byte size a string needs (`heap.newString()`).
 * @module
 */
import { outOfBounds } from './errors.js'
import { decodeUtf8, utf8Length } from './utf8.js'

/** The bytes of a mapping around an offset, as `MemoryInternals.window` hands them out. */
interface Bytes {
  /** Offset in the mapping of `u8[0]`. */
  readonly start: number
  readonly u8: Uint8Array
}

/**
 * Decodes the UTF-8 at offset `at` of a mapping of `size` bytes up to the first NUL,
 * reading at most `limit` bytes and never past the end of the mapping. The NUL is looked
 * for window by window (`window(offset, 1)`: the whole mapping when it fits one
 * ArrayBuffer, else the cached window holding at least half a window past `offset`), so a
 * short string costs a short scan and no ArrayBuffer of its own however much of the
 * mapping follows it; only a string longer than half a window gets one, of its length.
 * @param pointed - the string is reached through a pointer: running off the mapping
 *   without a NUL (and before `limit`) is an error, not the end of the string
 * @throws ShmError `ERR_SHM_OUT_OF_BOUNDS` (only when `pointed`)
 */
export function readCString(window: (offset: number, length: number) => Bytes, size: number, at: number, limit: number, pointed: boolean): string {
  const room = size - at
  const end = at + Math.min(limit, room)
  let n = -1
  for (let pos = at; pos < end; ) {
    const w = window(pos, 1)
    const stop = Math.min(end, w.start + w.u8.length)
    // indexOf is a native memchr; subarray keeps it from scanning past `stop`.
    const i = w.u8.subarray(pos - w.start, stop - w.start).indexOf(0)
    if (i >= 0) {
      n = pos + i - at
      break
    }
    pos = stop
  }
  if (n < 0) {
    if (pointed && room < limit) {
      throw outOfBounds(`the string at offset ${at} has no NUL before the end of the segment (${room} bytes on)`)
    }
    n = end - at
  }
  if (n === 0) return ''
  const w = window(at, n)
  return decodeUtf8(w.u8, at - w.start, at - w.start + n)
}

/** Bytes a NUL-terminated UTF-8 copy of `s` takes (at least 1). */
export function cStringSize(s: string): number {
  return utf8Length(s) + 1
}
