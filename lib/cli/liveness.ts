/**
 * Whether anyone maps a segment, asked of the kernel rather than of `/proc`: the
 * segment's liveness bytes (docs/FORMAT.md, "Liveness tokens"), which every process that
 * maps it holds a read lock on, in any PID namespace, as any user. This is the one place
 * the command-line tool depends on them.
 * @module
 */

/** What the liveness bytes of a segment say. */
export interface AttachState {
  /** Some process (any namespace, any user) maps the segment; `null` if unknown here. */
  inUse: boolean | null
  /** Its creating process still maps it; `null` if unknown here. */
  creatorMapped: boolean | null
}

/**
 * The attach state of the segment `name`. Until the liveness protocol is part of this
 * build, nothing is known: both fields are `null` and the callers rely on `/proc`.
 */
export function attachState(_name: string): AttachState {
  return { inUse: null, creatorMapped: null }
}
