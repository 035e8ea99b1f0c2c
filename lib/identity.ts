/**
 * Who the calling thread is in lock records. The owner bits of a lock word hold the
 * holder's *liveness token* for the segment (`src-rs/sync/liveness.rs`): one per thread
 * per segment, claimed on first use and cached here per mapping, so the lock fast paths
 * pay nothing for it. Each worker thread loads the package anew, so all of this is per
 * thread.
 * @module
 */
import { internals, type MappedMemory, nativeFor } from './memory.js'
import { binding } from './native.js'

const id = binding.threadIdentity()

/** This thread's pid in its own PID namespace (informational in lock records). */
export const PID: number = id.pid
/** This thread's id in its own PID namespace (informational in lock records). */
export const TID: number = id.tid
/** Low half of this thread's start time. */
export const START_LO: number = id.startLo | 0
/** High half of this thread's start time. */
export const START_HI: number = id.startHi | 0

const tokens = new WeakMap<MappedMemory, number>()

/**
 * This thread's liveness token in `memory`: the owner bits of every lock word it holds
 * there. Claimed on the first call per mapping (a few microseconds), then a lookup.
 * @throws ShmError `EACCES` for a read-only segment, `ERR_SHM_CLOSED`
 */
export function tokenIn(memory: MappedMemory): number {
  let t = tokens.get(memory)
  if (t === undefined) {
    const { id } = internals(memory)
    t = nativeFor(memory, () => binding.lockToken(id))
    tokens.set(memory, t)
  }
  return t
}
