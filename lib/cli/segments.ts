/**
 * What the command-line tool knows of each shared-memory object: its header read without
 * mapping it, and whether anyone maps it from its liveness bytes (`peekSegment`: any PID
 * namespace, any user), who uses it here (`/proc`), as one record whose JSON form is
 * stable (docs/cli.md).
 * @module
 */
import { closeSync, openSync, readdirSync, statSync } from 'node:fs'
import { native, SHM_DIR, ShmError } from '../errors.js'
import { binding } from '../native.js'
import type { SegmentPeek } from '../../index.js'
import { formatMode, isoTime } from './format.js'
import { type HeldFd, keyOfPath, keyOfStat, type ObjectKey, type ProcessScan, usersOf } from './procfs.js'


/** What an object is. */
export type SegmentKind = 'segment' | 'unfinished' | 'version' | 'foreign' | 'inaccessible'

/** One object, as `ls --json` and `inspect --json` print it (stable; see docs/cli.md). */
export interface SegmentInfo {
  /** The name, with its leading `/`; `null` for an anonymous segment. */
  name: string | null
  /**
   * `'segment'` (a shmutils segment), `'unfinished'` (its creator has not published the
   * header yet, or died first), `'version'` (another format version), `'foreign'` (not
   * shmutils'), `'inaccessible'` (this user may not open it).
   */
  kind: SegmentKind
  /** Why it is not a readable segment, else `null`. */
  problem: string | null
  /** Bytes. */
  size: number
  /** Permission bits, e.g. `'0600'`. */
  mode: string
  /** The owner's user id. */
  owner: number
  /** Inode number (decimal), `null` where the system has none. */
  inode: string | null
  /** Format version of the header, `null` if none. */
  version: number | null
  /** The segment's identity (16 hex digits) or `null`. */
  uid: string | null
  /** Creation time from the header (ISO 8601), or `null`. */
  created: string | null
  /** The creating process from the header, and whether it still runs (this PID namespace). */
  creator: { pid: number; alive: boolean | null } | null
  /** The heap's counters (read without its lock). */
  heap: { size: number; used: number; free: number; allocations: number; named: number; busy: boolean } | null
  /** Pids (this PID namespace) that map the object or hold a descriptor of it. */
  attached: number[]
  /** Whether any process maps it, from its liveness bytes (any namespace); `null`: unknown. */
  inUse: boolean | null
  /** Whether its creator still maps it, from its liveness bytes; `null`: unknown. */
  creatorMapped: boolean | null
}

/** An anonymous segment: the record of {@link SegmentInfo} and who holds it. */
export interface AnonymousInfo extends SegmentInfo {
  /** Descriptors of it, by process: a handle revives through `/proc/<pid>/fd/<fd>`. */
  holders: HeldFd[]
}

/**
 * The names of every object in `/dev/shm`, sorted.
 * @throws ShmError `ERR_SHM_UNSUPPORTED_PLATFORM` where there is no `/dev/shm` to list
 */
export function listNames(): string[] {
  let entries: import('node:fs').Dirent[]
  try {
    entries = readdirSync(SHM_DIR, { withFileTypes: true })
  } catch (e) {
    // No /dev/shm at all (AWS Lambda, some minimal containers): no named segment exists.
    if (process.platform === 'linux' && (e as NodeJS.ErrnoException).code === 'ENOENT') return []
    if (process.platform !== 'linux') {
      throw new ShmError(
        `${process.platform} has no way to list POSIX shared-memory objects (Linux lists them in ${SHM_DIR}); ` +
          '`inspect NAME` and `rm NAME` work with a name you know',
        { code: 'ERR_SHM_UNSUPPORTED_PLATFORM', path: SHM_DIR },
      )
    }
    throw new ShmError(`cannot list ${SHM_DIR}: ${(e as Error).message}`, { code: (e as NodeJS.ErrnoException).code ?? 'EIO', path: SHM_DIR })
  }
  return entries.filter((d) => d.isFile()).map((d) => `/${d.name}`).sort()
}

/**
 * What is known of the object `name`.
 * @throws ShmError `ENOENT` if there is none; other errors of opening it except `EACCES`
 *   (reported as `'inaccessible'`)
 */
export function describeSegment(name: string, scan: ProcessScan): SegmentInfo {
  const normalized = native(() => binding.normalizeName(name))
  let peek: SegmentPeek
  try {
    peek = native(() => binding.peekSegment(normalized))
  } catch (e) {
    if ((e as ShmError).code !== 'EACCES') throw e
    return inaccessible(normalized, scan)
  }
  return fromPeek(normalized, peek, usersOf(scan, keyOfPath(SHM_DIR + normalized)))
}

/** Every anonymous segment some process (this PID namespace, readable) holds. */
export function describeAnonymous(scan: ProcessScan): AnonymousInfo[] {
  const out: AnonymousInfo[] = []
  for (const [key, holders] of scan.anonymous) {
    const peek = peekHeld(holders)
    if (peek === null) continue
    const info = fromPeek(null, peek, usersOf(scan, key))
    out.push({ ...info, holders: [...holders] })
  }
  return out.sort((a, b) => Number(a.inode) - Number(b.inode))
}

/** Peeks at an object through the first holder's descriptor that can be opened. */
function peekHeld(holders: readonly HeldFd[]): SegmentPeek | null {
  for (const { pid, fd } of holders) {
    let own: number
    try {
      own = openSync(`/proc/${pid}/fd/${fd}`, 'r')
    } catch {
      continue
    }
    try {
      return native(() => binding.peekDescriptor(own))
    } catch {
      continue
    } finally {
      closeSync(own)
    }
  }
  return null
}

function fromPeek(name: string | null, peek: SegmentPeek, attached: number[]): SegmentInfo {
  return {
    name,
    kind: peek.kind as SegmentKind,
    problem: peek.problem ?? null,
    size: peek.size,
    mode: formatMode(peek.mode),
    owner: peek.owner,
    inode: peek.inode ?? null,
    version: peek.version ?? null,
    uid: peek.uid ?? null,
    created: isoTime(peek.createdMs),
    creator: peek.creatorPid ? { pid: peek.creatorPid, alive: peek.creatorAlive ?? null } : null,
    heap: peek.heap ?? null,
    attached,
    inUse: peek.attached ?? null,
    creatorMapped: peek.creatorMapped ?? null,
  }
}

/** An object this user may not open: what `stat` tells. */
function inaccessible(name: string, scan: ProcessScan): SegmentInfo {
  const st = statSync(SHM_DIR + name, { bigint: true })
  const key: ObjectKey = keyOfStat(st.dev, st.ino)
  return {
    name,
    kind: 'inaccessible',
    problem: 'permission denied',
    size: Number(st.size),
    mode: formatMode(Number(st.mode)),
    owner: Number(st.uid),
    inode: String(st.ino),
    version: null,
    uid: null,
    created: null,
    creator: null,
    heap: null,
    attached: usersOf(scan, key),
    inUse: null,
    creatorMapped: null,
  }
}
