/**
 * `shmutils gc [--dry-run]`: removes the segments nobody can be using any more.
 * @module
 */
import { statSync } from 'node:fs'
import { native } from '../errors.js'
import { binding } from '../native.js'
import type { Command } from './command.js'
import { listing } from './ls.js'
import { scanProcesses } from './procfs.js'
import { SHM_DIR } from '../errors.js'
import { describeSegment, type SegmentInfo, type SegmentKind } from './segments.js'
import { shown } from './format.js'

/** How old an unfinished object must be before `gc` believes its creator gave up. */
export const UNFINISHED_GRACE_MS = 60_000

/** One decision of `gc`. */
export interface GcEntry {
  /** The segment. */
  name: string
  /** What it is (see `ls`). */
  kind: SegmentKind
  /** Why it was (or would be) removed, or kept. */
  reason: string
}

/** What `gc --json` prints (stable; see docs/cli.md). */
export interface GcResult {
  /** Whether this was a `--dry-run`. */
  dryRun: boolean
  /** Removed (or, with `--dry-run`, to be removed). */
  removed: GcEntry[]
  /** Segments kept, and why. */
  kept: GcEntry[]
  /** Names that could not be removed, and why. */
  failed: GcEntry[]
}

/**
 * Whether `s` is garbage: `null` and the reason to remove it, or the reason to keep it.
 * Only shmutils segments (and unfinished ones whose creator gave up long ago) are ever
 * removed; never one that a process maps or holds open, nor one whose creator runs.
 */
export function verdict(s: SegmentInfo, now = Date.now()): { remove: boolean; reason: string } {
  const keep = (reason: string) => ({ remove: false, reason })
  if (s.kind === 'foreign' || s.kind === 'inaccessible' || s.kind === 'version') return keep(`${s.kind}: not a segment this shmutils manages`)
  if (!mayRemove(s.owner)) return keep(`owned by uid ${s.owner}: only its owner (or root) may remove it from ${SHM_DIR}, which is sticky`)
  if (s.attached.length) return keep(`in use by pid ${s.attached.join(', ')}`)
  // The liveness bytes see every process, also those of other PID namespaces.
  if (s.inUse === true) return keep('mapped by a process of another PID namespace (container) or user')
  if (s.creatorMapped === true) return keep('its creator still maps it')
  if (s.kind === 'unfinished') {
    const age = now - statSync(SHM_DIR + s.name).mtimeMs
    if (age < UNFINISHED_GRACE_MS) return keep('being created')
    return { remove: true, reason: 'unfinished: its creator gave up, and nobody uses it' }
  }
  if (!s.creator) return keep('its header does not say who created it')
  if (s.creator.alive !== false) return keep(`its creator (pid ${s.creator.pid}) still runs`)
  return { remove: true, reason: `its creator (pid ${s.creator.pid}) has exited, and nobody maps it` }
}

/**
 * Whether this user may remove an object of `owner` from {@link SHM_DIR}: in a sticky
 * directory (as `/dev/shm` is) only the object's owner, the directory's and root may.
 */
function mayRemove(owner: number): boolean {
  const me = process.getuid?.()
  if (me === undefined || me === 0 || me === owner) return true
  const dir = statSync(SHM_DIR)
  return (dir.mode & 0o1000) === 0 || dir.uid === me
}

/**
 * Decides, and (unless `dryRun`) removes: every segment, or only those of `names`
 * (normalized).
 */
export function collect(dryRun: boolean, names: readonly string[] = []): GcResult {
  const scan = scanProcesses()
  if (!scan.available) {
    throw new Error('gc needs /proc to tell whether processes use a segment (Linux only)')
  }
  const result: GcResult = { dryRun, removed: [], kept: [], failed: [] }
  const only = new Set(names.map((n) => native(() => binding.normalizeName(n))))
  const segments = only.size
    ? [...only].flatMap((n) => {
      try {
        return [describeSegment(n, scan)]
      } catch (e) {
        if ((e as { code?: string }).code === 'ENOENT') return []
        throw e
      }
    })
    : listing(scan).segments
  for (const s of segments) {
    const name = s.name as string
    const kind = s.kind
    const v = verdict(s)
    if (!v.remove) {
      result.kept.push({ name, kind, reason: v.reason })
      continue
    }
    if (!dryRun) {
      try {
        // Look again just before removing: someone may have attached since the listing.
        const again = verdict(describeSegment(name, scanProcesses()))
        if (!again.remove) {
          result.kept.push({ name, kind, reason: again.reason })
          continue
        }
        native(() => binding.shmUnlink(name))
      } catch (e) {
        const code = (e as { code?: string }).code
        if (code === 'ENOENT') continue
        result.failed.push({ name, kind, reason: (e as Error).message })
        continue
      }
    }
    result.removed.push({ name, kind, reason: v.reason })
  }
  return result
}

/** The command. */
export const gc: Command = {
  name: 'gc',
  summary: 'remove segments whose creator has exited and that no process uses',
  usage: 'gc [--dry-run] [--json] [NAME...]',
  help: `Removes every shmutils segment whose creating process has exited and that no process
maps or holds open: what a crashed program leaves behind. Never removes a segment in use,
one whose creator still runs, an object that is not a shmutils segment, or another
user's segment this user may not remove (/dev/shm is sticky). An object
whose creator died before finishing it is removed once it is ${UNFINISHED_GRACE_MS / 1000} s old.

Whether processes use a segment is read from /proc (Linux), which shows the processes of
this PID namespace that this user may inspect, and from the segment's liveness bytes,
which every process that maps it holds, in any container.

With names, only those segments are considered (a name that does not exist is skipped).

Options:
  --dry-run  only say what would be removed
  --json     print one JSON object instead (documented in docs/cli.md; stable)

Exit code 0, or 1 if a segment could not be removed.`,
  flags: ['dry-run', 'json'],
  positional: { min: 0, max: Infinity },
  run(args, io) {
    const r = collect(args.flags.has('dry-run'), args.positional)
    if (args.flags.has('json')) {
      io.out(JSON.stringify(r, null, 2))
      return r.failed.length ? 1 : 0
    }
    const verb = r.dryRun ? 'would remove' : 'removed'
    for (const e of r.removed) io.out(`${verb} ${shown(e.name)}: ${e.reason}`)
    // Objects that are not shmutils segments are never touched: only --json lists them.
    for (const e of r.kept) if (e.kind === 'segment' || e.kind === 'unfinished') io.out(`kept ${shown(e.name)}: ${e.reason}`)
    for (const e of r.failed) io.err(`shmutils gc: ${shown(e.name)}: ${e.reason}`)
    if (!r.removed.length && !r.failed.length) io.out(r.dryRun ? 'nothing to remove' : 'nothing removed')
    return r.failed.length ? 1 : 0
  },
}
