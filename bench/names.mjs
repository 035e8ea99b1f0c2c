/**
 * How the bench names its segments, without side effects (the test of the bench imports
 * it to find what a bench process left behind).
 * @module
 */

/**
 * The prefix of every segment name the bench process `pid` creates:
 * `/shmutils-b<pid in base 36>-`. With a tag of up to 8 bytes and a base-36 counter the
 * names stay within macOS's 31 bytes (`PSHMNAMLEN`).
 * @param {number} pid
 */
export function segmentPrefix(pid) {
  return `/shmutils-b${pid.toString(36)}-`
}
