/**
 * The counter children's warm-up, contended as their timed run is. Code that only ever
 * ran uncontended is deoptimized by V8 the moment contention starts, inside the timed
 * run (and reoptimized later), while the C reference has no JIT to warm: so the children
 * first meet, then race a shared warm-up counter under a lock of the kind they will
 * time, until `n × WARMUP_COUNT` (or the run's own size, if smaller).
 *
 * The warm-up words live in {@link WARMUP_AREA} of the row's segment (or in a
 * SharedArrayBuffer of their own), zeroed by the parent before every run.
 * @module
 */

/** Increments per child in a warm-up (at most). */
export const WARMUP_COUNT = 20_000

/**
 * Where the warm-up words are in a counter row's segment: int32 `meet`, a lock record at
 * `lock` (32 bytes), the int32 `counter`; the parent zeroes the whole area before a run.
 */
export const WARMUP_AREA = Object.freeze({ offset: 1024, bytes: 128, meet: 1024, lock: 1056, counter: 1088 })

/** Longest wait for the other children (the parent may be gone). */
const MEET_TIMEOUT_MS = 60_000

/**
 * Returns once `n` children have arrived at the zeroed int32 `a[w]` (a spin: the
 * children start within milliseconds of each other).
 * @param {Int32Array} a
 * @param {number} w
 * @param {number} n
 */
export function meet(a, w, n) {
  Atomics.add(a, w, 1)
  const deadline = Date.now() + MEET_TIMEOUT_MS
  while (Atomics.load(a, w) < n) {
    if (Date.now() > deadline) throw new Error(`warm-up: only ${Atomics.load(a, w)} of ${n} children arrived`)
  }
}

/**
 * The warm-up's shared target: `n` children, each of which would do `size` increments
 * in the timed run.
 * @param {number} n
 * @param {number} size
 */
export const warmupLimit = (n, size) => n * Math.min(size, WARMUP_COUNT)
