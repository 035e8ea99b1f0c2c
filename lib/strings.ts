/**
 * C strings in a mapping: NUL-terminated UTF-8, read with every byte bounds-checked
 * (`Ref.string()`), and the byte size a string needs (`heap.newString()`).
 * @module
 */
import { outOfBounds } from './errors.js'
import { decodeUtf8, utf8Length } from './utf8.js'

/**
 * Decodes the UTF-8 at `bytes[start ...]` up to the first NUL, reading at most `limit`
 * bytes and never past the end of `bytes`.
 * @param pointed - the string is reached through a pointer: running off the mapping
 *   without a NUL (and before `limit`) is an error, not the end of the string
 * @throws ShmError `ERR_SHM_OUT_OF_BOUNDS` (only when `pointed`)
 */
export function readCString(bytes: Uint8Array, start: number, limit: number, pointed: boolean): string {
  const room = bytes.length - start
  const max = Math.min(limit, room)
  // indexOf is a native memchr; subarray keeps it from scanning past `max`.
  const nul = bytes.subarray(start, start + max).indexOf(0)
  if (nul < 0 && pointed && max < limit) {
    throw outOfBounds(`the string at offset ${start} has no NUL before the end of the segment (${room} bytes on)`)
  }
  return decodeUtf8(bytes, start, start + (nul < 0 ? max : nul))
}

/** Bytes a NUL-terminated UTF-8 copy of `s` takes (at least 1). */
export function cStringSize(s: string): number {
  return utf8Length(s) + 1
}
