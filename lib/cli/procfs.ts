/**
 * Who uses a shared-memory object, from Linux's `/proc`: every process whose
 * `/proc/<pid>/maps` maps it, or whose `/proc/<pid>/fd` holds a descriptor of it.
 * Objects are identified by device and inode, so the same object seen under another
 * path (another mount namespace, a name removed since) still matches.
 *
 * What this cannot see: processes in other PID namespaces (containers), and processes of
 * other users (their `/proc` entries are not readable; the scan then says it is
 * incomplete). Elsewhere than Linux there is no `/proc`: the scan finds nothing and says
 * so.
 * @module
 */
import { readdirSync, readFileSync, readlinkSync, statSync } from 'node:fs'

/** An object's identity as `/proc/<pid>/maps` shows it: `'<major>:<minor>:<inode>'` in hex/decimal. */
export type ObjectKey = string

/** A descriptor of an object held by a process. */
export interface HeldFd {
  pid: number
  fd: number
}

/** What {@link scanProcesses} found. */
export interface ProcessScan {
  /** Whether `/proc` could be read at all (Linux). */
  readonly available: boolean
  /** Processes whose entries could not be read (other users', or non-dumpable). */
  readonly unreadable: number
  /** Object → pids that map it. */
  readonly mapped: ReadonlyMap<ObjectKey, ReadonlySet<number>>
  /** Object → descriptors of it held by processes. */
  readonly open: ReadonlyMap<ObjectKey, readonly HeldFd[]>
  /** Descriptors of memfds named `shmutils` (anonymous segments), by object. */
  readonly anonymous: ReadonlyMap<ObjectKey, readonly HeldFd[]>
}

/** The key of a `stat` result's device and inode. */
export function keyOfStat(dev: bigint, ino: bigint): ObjectKey {
  // glibc's gnu_dev_major / gnu_dev_minor.
  const major = ((dev >> 8n) & 0xfffn) | ((dev >> 32n) & ~0xfffn)
  const minor = (dev & 0xffn) | ((dev >> 12n) & ~0xffn)
  return `${major.toString(16)}:${minor.toString(16)}:${ino}`
}

/** The key of a file, by path (following links); `null` if it cannot be stat'ed. */
export function keyOfPath(path: string): ObjectKey | null {
  try {
    const st = statSync(path, { bigint: true })
    return keyOfStat(st.dev, st.ino)
  } catch {
    return null
  }
}

/** `'00:1a'` and `'12345'` from a maps line → a key. */
function keyOfMaps(dev: string, ino: string): ObjectKey | null {
  const [maj, min] = dev.split(':')
  if (min === undefined || !/^[0-9]+$/.test(ino)) return null
  return `${parseInt(maj, 16).toString(16)}:${parseInt(min, 16).toString(16)}:${ino}`
}

/** Whether a path names shared memory: something under `/dev/shm`, or a memfd. */
function isShm(path: string): boolean {
  return path.startsWith('/dev/shm/') || path.startsWith('/memfd:')
}

function add<V>(map: Map<ObjectKey, V[]>, key: ObjectKey, v: V): void {
  const list = map.get(key)
  if (list) list.push(v)
  else map.set(key, [v])
}

/**
 * Reads every process's maps and descriptors (this process's own excluded). A process
 * that exits during the scan is skipped.
 */
export function scanProcesses(): ProcessScan {
  const mapped = new Map<ObjectKey, Set<number>>()
  const open = new Map<ObjectKey, HeldFd[]>()
  const anonymous = new Map<ObjectKey, HeldFd[]>()
  let pids: number[]
  try {
    pids = readdirSync('/proc').filter((e) => /^[0-9]+$/.test(e)).map(Number)
  } catch (e) {
    // No /proc (not Linux, or not mounted). Any other failure (out of descriptors) is
    // the caller's to report: a scan that saw nothing must not pass for complete.
    if (!hasCode(e, 'ENOENT', 'ENOTDIR')) throw e
    return { available: false, unreadable: 0, mapped, open, anonymous }
  }
  let unreadable = 0
  for (const pid of pids) {
    if (pid === process.pid) continue
    let maps: string
    try {
      maps = readFileSync(`/proc/${pid}/maps`, 'latin1')
    } catch (e) {
      unreadable += skipped(e)
      continue
    }
    for (const line of maps.split('\n')) {
      // start-end perms offset dev inode path
      const parts = line.split(/\s+/, 6)
      if (parts.length < 6 || parts[4] === '0') continue
      const path = line.slice(line.indexOf('/'))
      if (!isShm(path)) continue
      const key = keyOfMaps(parts[3], parts[4])
      if (key === null) continue
      let set = mapped.get(key)
      if (!set) mapped.set(key, (set = new Set()))
      set.add(pid)
    }
    let fds: string[]
    try {
      fds = readdirSync(`/proc/${pid}/fd`)
    } catch (e) {
      unreadable += skipped(e)
      continue
    }
    for (const fd of fds) {
      const path = `/proc/${pid}/fd/${fd}`
      let target: string
      try {
        target = readlinkSync(path)
      } catch {
        continue
      }
      if (!isShm(target)) continue
      const key = keyOfPath(path)
      if (key === null) continue
      const held = { pid, fd: Number(fd) }
      add(open, key, held)
      if (target.startsWith('/memfd:shmutils')) add(anonymous, key, held)
    }
  }
  return { available: true, unreadable, mapped, open, anonymous }
}

/**
 * A process's entry that could not be read: 1 when denied (another user's, or
 * non-dumpable: the scan is incomplete and says so), 0 when the process is gone.
 * @throws the error for any other failure (out of descriptors): skipping the process
 *   silently would let `gc` remove a segment it maps
 */
function skipped(e: unknown): number {
  if (hasCode(e, 'EACCES', 'EPERM')) return 1
  if (hasCode(e, 'ENOENT', 'ESRCH')) return 0
  throw e
}

function hasCode(e: unknown, ...codes: string[]): boolean {
  return codes.includes((e as NodeJS.ErrnoException | null)?.code ?? '')
}

/** The pids that map or hold `key`, ascending. */
export function usersOf(scan: ProcessScan, key: ObjectKey | null): number[] {
  if (key === null) return []
  const pids = new Set(scan.mapped.get(key) ?? [])
  for (const h of scan.open.get(key) ?? []) pids.add(h.pid)
  return [...pids].sort((a, b) => a - b)
}
