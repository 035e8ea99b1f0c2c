/**
 * UTF-8 between JavaScript strings and bytes in a mapping, tuned for the short strings
 * shared containers move per operation (keys, small values): ASCII is copied in a
 * JavaScript loop, which beats a native `TextEncoder`/`TextDecoder` call below a few
 * dozen characters; anything else goes to them.
 * @module
 */

const encoder = new TextEncoder()
/** Non-fatal: invalid bytes (hostile or truncated) decode as U+FFFD, never throw. */
const decoder = new TextDecoder('utf-8')

/** Strings up to this many characters are tried in the JavaScript loops first. */
const SHORT = 32

/**
 * Writes `s` as UTF-8 into `dst` at `at`. Returns the number of bytes written, or -1
 * if `dst` has too little room (nothing useful is written then).
 */
export function encodeUtf8Into(s: string, dst: Uint8Array, at: number): number {
  const n = s.length
  if (n <= SHORT && at + n <= dst.length) {
    let i = 0
    for (; i < n; i++) {
      const c = s.charCodeAt(i)
      if (c >= 0x80) break
      dst[at + i] = c
    }
    if (i === n) return n
  }
  const room = dst.length - at
  // UTF-8 takes at least one byte per UTF-16 unit: fewer bytes of room surely fail.
  if (room < n) return -1
  const r = encoder.encodeInto(s, dst.subarray(at))
  return r.read < n ? -1 : r.written
}

/** The UTF-8 length of `s` in bytes. */
export function utf8Length(s: string): number {
  const n = s.length
  if (n <= SHORT) {
    let i = 0
    while (i < n && s.charCodeAt(i) < 0x80) i++
    if (i === n) return n
  }
  return Buffer.byteLength(s, 'utf8')
}

/** Decodes `bytes[start, end)` as UTF-8 (invalid sequences become U+FFFD). */
export function decodeUtf8(bytes: Uint8Array, start: number, end: number): string {
  const n = end - start
  if (n <= SHORT) {
    let ascii = true
    for (let i = start; i < end; i++) {
      if (bytes[i] >= 0x80) {
        ascii = false
        break
      }
    }
    if (ascii) {
      // String.fromCharCode over the subarray would allocate; a loop over 32 is cheap.
      let s = ''
      for (let i = start; i < end; i++) s += String.fromCharCode(bytes[i])
      return s
    }
  }
  return decoder.decode(bytes.subarray(start, end))
}

/** Whether `a[aStart, aStart + n)` and `b[bStart, bStart + n)` hold the same bytes. */
export function bytesEqual(a: Uint8Array, aStart: number, b: Uint8Array, bStart: number, n: number): boolean {
  for (let i = 0; i < n; i++) if (a[aStart + i] !== b[bStart + i]) return false
  return true
}

/** Copies `src[0, n)` to `dst` at `at`: a loop for a few bytes, one native copy for more. */
export function copyBytes(dst: Uint8Array, at: number, src: Uint8Array, n: number): void {
  if (n <= 64) for (let i = 0; i < n; i++) dst[at + i] = src[i]
  else dst.set(src.subarray(0, n), at)
}
