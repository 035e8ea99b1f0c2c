/**
 * UTF-8 between JavaScript strings and bytes in a mapping, tuned for the short strings
 * shared containers move per operation (keys, small values): ASCII is copied in a
 * JavaScript loop, which beats a native `TextEncoder`/`TextDecoder` call below a few
 * dozen characters; anything else goes to them.
 * @module
 */

import { typeError } from './errors.js'

const encoder = new TextEncoder()
/** Non-fatal: invalid bytes (hostile or truncated) decode as U+FFFD, never throw. */
const decoder = new TextDecoder('utf-8')

/** Strings up to this many characters are tried in the JavaScript loops first. */
const SHORT = 32

/**
 * What {@link encodeUtf8Into} returns for a string holding a lone UTF-16 surrogate:
 * UTF-8 cannot hold one, and an encoder would write U+FFFD in its place, silently
 * changing the string (and making two keys one). Callers throw {@link notWellFormed}.
 */
export const LONE_SURROGATE = -2

/** Index of the first lone UTF-16 surrogate in `s`; -1 if it has none. */
export function loneSurrogateAt(s: string): number {
  // In `u` mode a surrogate pair is one code point, so the class matches lone halves only.
  return s.isWellFormed() ? -1 : s.search(/[\uD800-\uDFFF]/u)
}

/** Throws {@link notWellFormed} if `s` holds a lone UTF-16 surrogate (`what` names it). */
export function checkWellFormed(s: string, what: string): void {
  if (!s.isWellFormed()) throw notWellFormed(s, what)
}

/** The TypeError for a string UTF-8 cannot hold (`what` names it; `hint` follows). */
export function notWellFormed(s: string, what: string, hint = ''): TypeError {
  return typeError(`${what} contains a lone UTF-16 surrogate (at index ${loneSurrogateAt(s)}), which UTF-8 cannot hold${hint}`)
}

/**
 * Writes `s` as UTF-8 into `dst` at `at`. Returns the number of bytes written, -1 if
 * `dst` has too little room (nothing useful is written then), or
 * {@link LONE_SURROGATE}.
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
  if (!s.isWellFormed()) return LONE_SURROGATE
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

/** Bytes above which one native copy beats a loop of word copies. */
const NATIVE_COPY = 512

/**
 * Copies `src[from, from + n)` to `dst` at `at`, four bytes a step: `at` and `from` are
 * multiples of 4, `src32` and `dst32` Int32Array views of the two buffers, and `src` and
 * `dst` start at offset 0 of theirs.
 */
export function copyWords(dst: Uint8Array, dst32: Int32Array, at: number, src: Uint8Array, src32: Int32Array, from: number, n: number): void {
  if (n > NATIVE_COPY) {
    dst.set(src.subarray(from, from + n), at)
    return
  }
  const words = n >>> 2
  const d = at >>> 2
  const f = from >>> 2
  for (let i = 0; i < words; i++) dst32[d + i] = src32[f + i]
  for (let i = words << 2; i < n; i++) dst[at + i] = src[from + i]
}

/** Whether `a[at, at + n)` (`at` a multiple of 4) holds `b[0, n)`, compared four bytes a step (views as in {@link copyWords}). */
export function wordsEqual(a: Uint8Array, a32: Int32Array, at: number, b: Uint8Array, b32: Int32Array, n: number): boolean {
  const words = n >>> 2
  const d = at >>> 2
  for (let i = 0; i < words; i++) if (a32[d + i] !== b32[i]) return false
  for (let i = words << 2; i < n; i++) if (a[at + i] !== b[i]) return false
  return true
}
