/**
 * `shmutils ls [--json]`: every shared-memory object, what it is, and who uses it.
 * @module
 */
import { statfsSync } from 'node:fs'
import type { Command } from './command.js'
import { formatSize, formatTime, shown, table } from './format.js'
import { scanProcesses, type ProcessScan } from './procfs.js'
import { SHM_DIR } from '../errors.js'
import { type AnonymousInfo, describeAnonymous, describeSegment, listNames, type SegmentInfo } from './segments.js'

/** What `ls --json` prints (stable; see docs/cli.md). */
export interface Listing {
  /** The filesystem the named segments live in (`/dev/shm`): its size and free bytes. */
  filesystem: { path: string; size: number; free: number } | null
  /** Every object in `/dev/shm`, by name. */
  segments: SegmentInfo[]
  /** Anonymous segments held by processes this user can inspect. */
  anonymous: AnonymousInfo[]
  /** How complete the picture of attached processes is. */
  scan: { proc: boolean; unreadableProcesses: number }
}

/** Lists everything (a name that vanishes meanwhile is skipped). */
export function listing(scan: ProcessScan = scanProcesses()): Listing {
  const segments: SegmentInfo[] = []
  for (const name of listNames()) {
    try {
      segments.push(describeSegment(name, scan))
    } catch (e) {
      if ((e as { code?: string }).code !== 'ENOENT') throw e
    }
  }
  return {
    filesystem: filesystem(),
    segments,
    anonymous: describeAnonymous(scan),
    scan: { proc: scan.available, unreadableProcesses: scan.unreadable },
  }
}

/** Size and free space of `/dev/shm` (what a container's `--shm-size` sets). */
function filesystem(): Listing['filesystem'] {
  try {
    const st = statfsSync(SHM_DIR)
    return { path: SHM_DIR, size: st.blocks * st.bsize, free: st.bavail * st.bsize }
  } catch {
    return null
  }
}

/** `'1234 (alive)'`, `'1234 (dead)'`, `'-'`. */
export function creatorText(s: SegmentInfo): string {
  if (!s.creator) return '-'
  const state = s.creatorMapped === true || s.creator.alive === true ? 'alive' : s.creator.alive === false ? 'exited' : '?'
  return `${s.creator.pid} (${state})`
}

/** The attached pids, or what the liveness bytes say when `/proc` shows none. */
export function attachedText(s: SegmentInfo): string {
  if (s.attached.length) return s.attached.join(',')
  return s.inUse === true ? 'yes (other namespace)' : '-'
}

function row(name: string, s: SegmentInfo): string[] {
  const what = s.kind === 'segment' ? shown(name) : `${shown(name)} (${s.kind})`
  const heap = s.heap
  return [
    what,
    formatSize(s.size),
    heap ? formatSize(heap.used) : '-',
    heap ? formatSize(heap.free) : '-',
    heap ? String(heap.named) : '-',
    creatorText(s),
    s.created ? formatTime(Date.parse(s.created)) : '-',
    attachedText(s),
  ]
}

const COLUMNS = [
  { title: 'NAME' }, { title: 'SIZE', right: true }, { title: 'USED', right: true }, { title: 'FREE', right: true },
  { title: 'NAMED', right: true }, { title: 'CREATOR' }, { title: 'CREATED' }, { title: 'ATTACHED' },
]

/** The command. */
export const ls: Command = {
  name: 'ls',
  summary: 'list shared-memory segments, their heap use, creator and attached processes',
  usage: 'ls [--json]',
  help: `Lists every POSIX shared-memory object of this machine (Linux: ${'/dev/shm'}) and the
anonymous shmutils segments that processes hold.

For a shmutils segment: its size, heap use (USED, FREE: bytes in allocated and free heap
blocks; NAMED: named objects), the process that created it and whether that process
still runs, when it was created, and the processes that map it or hold it open (pids in
this PID namespace, from /proc). The last line gives the size of ${'/dev/shm'} and its free
space (in a container, what --shm-size or the emptyDir's sizeLimit set). Other objects
are listed with what they are:
  (unfinished)    its creator has not finished creating it, or died first
  (version)       made by a version of shmutils with another segment format
  (foreign)       not a shmutils segment
  (inaccessible)  this user may not open it

Options:
  --json   print one JSON object instead (documented in docs/cli.md; stable)

Linux only: other systems have no way to list POSIX shared-memory objects.`,
  flags: ['json'],
  positional: { min: 0, max: 0 },
  run(args, io) {
    const l = listing()
    if (args.flags.has('json')) {
      io.out(JSON.stringify(l, null, 2))
      return 0
    }
    if (l.segments.length === 0 && l.anonymous.length === 0) {
      io.out('no shared-memory segments')
    } else {
      const rows = [
        ...l.segments.map((s) => row(s.name as string, s)),
        ...l.anonymous.map((s) => row(`(anonymous, held by ${s.holders.map((h) => `${h.pid}:${h.fd}`).join(' ')})`, s)),
      ]
      io.out(table(COLUMNS, rows))
    }
    if (l.filesystem) {
      const fsz = l.filesystem
      io.out(`\n${fsz.path}: ${formatSize(fsz.size)}, ${formatSize(fsz.free)} free`)
    } else if (process.platform === 'linux') {
      io.out(`\n${SHM_DIR}: absent on this system (no named segments; anonymous ones work)`)
    }
    if (l.scan.unreadableProcesses) {
      io.err(`note: ${l.scan.unreadableProcesses} process${l.scan.unreadableProcesses === 1 ? '' : 'es'} could not be inspected (no permission to read its /proc entries): ATTACHED may miss them`)
    }
    return 0
  },
}
