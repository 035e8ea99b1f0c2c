/**
 * `shmutils inspect NAME [--json]`: everything about one segment: its header, who uses
 * it, its heap and the heap's check, named objects with their types, and the locks,
 * conditions, semaphores and containers in it with their state.
 * @module
 */
import { native, type ShmError } from '../errors.js'
import { internals, MappedMemory } from '../memory.js'
import { binding } from '../native.js'
import { formatType, typeFromDescription } from '../types/index.js'
import type { Command } from './command.js'
import { fields, formatSize, formatTime, shown, table } from './format.js'
import { attachedText, creatorText } from './ls.js'
import { scanProcesses } from './procfs.js'
import { type AliveCheck, decodeRecord, KIND_TAGS, KINDS, lockState, lockSummary } from '../records.js'
import { describeSegment, type SegmentInfo } from './segments.js'

/** How many tagged objects `inspect` reports at most. */
export const MAX_OBJECTS = 1000

/** How long `inspect` waits for the heap's lock. */
const HEAP_LOCK_WAIT_MS = 5000

/** A named object, as `inspect --json` prints it. */
export interface NamedObject {
  name: string
  /** Its C type (`'struct point'`, `'int32_t[8]'`), or `null` if the description is unreadable. */
  type: string | null
  offset: number
  size: number
  /** `false` while its creator is still constructing it (or died doing so). */
  ready: boolean
}

/** A synchronization record or container found in the heap. */
export interface FoundObject {
  /** `'Lock'`, `'RLock'`, `'Condition'`, `'Semaphore'`, ..., or `'heap lock'`. */
  kind: string
  offset: number
  /** Its name, if it is a named object. */
  name: string | null
  /** Its decoded state (the fields depend on the kind; see docs/cli.md). */
  state: Record<string, unknown>
  /** The state in words. */
  summary: string
}

/** What `inspect --json` prints (stable; see docs/cli.md). */
export interface Inspection {
  segment: SegmentInfo
  /** `null` when the segment could not be mapped read-write (then only `segment` is known). */
  heap: {
    offset: number
    size: number
    used: number
    free: number
    largestFree: number
    allocations: number
    /** `check()`: `ok`, or the error it found. */
    check: { ok: true } | { ok: false; code: string; message: string }
  } | null
  /** Named objects; `null` if the directory could not be read. */
  named: NamedObject[] | null
  /** The heap lock, then every tagged record and container, in address order. */
  objects: FoundObject[]
  /** More tagged objects exist than were reported. */
  more: boolean
  /** Why parts are missing, if any are. */
  notes: string[]
}

function typeName(desc: string): string | null {
  try {
    return formatType(typeFromDescription(JSON.parse(desc)))
  } catch {
    return null
  }
}

/**
 * Inspects `name`.
 * @throws ShmError `ENOENT` when there is no such segment
 */
export function inspectSegment(name: string): Inspection {
  const segment = describeSegment(name, scanProcesses())
  const result: Inspection = { segment, heap: null, named: null, objects: [], more: false, notes: [] }
  if (segment.kind !== 'segment') return result
  let mem: MappedMemory
  try {
    mem = MappedMemory.open(segment.name as string, { fixedAddress: false })
  } catch (e) {
    result.notes.push(`could not map it read-write to read its heap: ${(e as Error).message}`)
    return result
  }
  try {
    const { heapOffset, id: mappingId } = internals(mem)
    const alive: AliveCheck = (token, start) => binding.lockHolderAlive(mappingId, token, start) ?? null
    const heapLock = lockState(mem, heapOffset, false, alive)
    result.objects.push({ kind: 'heap lock', offset: heapOffset, name: null, state: { ...heapLock }, summary: lockSummary(heapLock) })
    // A heap too damaged to walk is a finding to report with the rest, not the end of it.
    const damaged = (e: unknown): Inspection => {
      if ((e as ShmError).code !== 'ERR_SHM_CORRUPT') throw e
      result.notes.push(`the heap is damaged (${(e as ShmError).code}: ${(e as Error).message}): its figures, named objects and locks not read`)
      return result
    }
    let id: number
    try {
      id = native(() => binding.heapAttach(mappingId, heapOffset, 0, false))
    } catch (e) {
      return damaged(e)
    }
    let survey: ReturnType<typeof binding.heapSurvey>
    try {
      // A live process that never lets the heap lock go must not hang the tool.
      binding.heapSetLockTimeout(id, HEAP_LOCK_WAIT_MS)
      survey = native(() => binding.heapSurvey(id, [...KIND_TAGS], MAX_OBJECTS))
    } catch (e) {
      if ((e as ShmError).code !== 'ETIMEDOUT') return damaged(e)
      result.notes.push(`the heap's lock stayed held for ${HEAP_LOCK_WAIT_MS / 1000} s (${lockSummary(heapLock)}): heap, named objects and locks not read`)
      return result
    } finally {
      binding.heapRelease(id)
    }
    const s = survey.stats
    result.heap = {
      offset: heapOffset,
      size: s.size,
      used: s.used,
      free: s.free,
      largestFree: s.largestFree,
      allocations: s.allocations,
      check: survey.problem ? { ok: false, code: survey.problem[0], message: survey.problem[1] } : { ok: true },
    }
    const names = new Map<number, string>()
    if (survey.named) {
      result.named = survey.named
        .map((e) => ({ name: e.name, type: typeName(e.typeDesc), offset: e.offset, size: e.size, ready: e.ready }))
        .sort((a, b) => a.name.localeCompare(b.name))
      for (const e of survey.named) names.set(e.offset, e.name)
    } else {
      result.notes.push('the named-object directory is damaged: see the heap check')
    }
    for (const t of survey.tagged) {
      const d = decodeRecord(mem, t.offset, t.size, t.kind, alive)
      result.objects.push({ kind: KINDS[t.kind] ?? `kind ${t.kind}`, offset: t.offset, name: names.get(t.offset) ?? null, ...d })
    }
    result.more = survey.more
  } finally {
    mem.close()
  }
  return result
}

function print(r: Inspection, out: (s: string) => void): void {
  const s = r.segment
  const lines: Array<[string, string]> = [
    ['kind', s.kind === 'segment' ? `shmutils segment, format version ${s.version}` : `${s.kind}${s.problem ? `: ${s.problem}` : ''}`],
    ['size', `${formatSize(s.size)} (${s.size} bytes)`],
    ['mode', `${s.mode}, owner uid ${s.owner}${s.inode ? `, inode ${s.inode}` : ''}`],
  ]
  if (s.uid) lines.push(['uid', s.uid])
  if (s.created) lines.push(['created', `${formatTime(Date.parse(s.created))} by pid ${creatorText(s)}`])
  lines.push(['attached', attachedText(s)])
  out(`segment ${shown(s.name)}\n${fields(lines, '  ')}`)
  if (r.heap) {
    const h = r.heap
    const check = h.check.ok ? 'ok' : `${h.check.code}: ${h.check.message}`
    out(`\nheap (offset ${h.offset})\n${fields([
      ['size', formatSize(h.size)],
      ['used', `${formatSize(h.used)} in ${h.allocations} blocks`],
      ['free', `${formatSize(h.free)} (largest block ${formatSize(h.largestFree)})`],
      ['check', check],
    ], '  ')}`)
  }
  if (r.named) {
    out(`\nnamed objects (${r.named.length})`)
    if (r.named.length) {
      out(table(
        [{ title: '  NAME' }, { title: 'TYPE' }, { title: 'OFFSET', right: true }, { title: 'SIZE', right: true }, { title: 'STATE' }],
        r.named.map((n) => [`  ${shown(n.name)}`, n.type ?? '?', String(n.offset), formatSize(n.size), n.ready ? 'ready' : 'constructing']),
      ))
    }
  }
  if (r.objects.length) {
    out(`\nlocks and other objects (${r.objects.length}${r.more ? '+' : ''})`)
    out(table(
      [{ title: '  OFFSET', right: true }, { title: 'KIND' }, { title: 'NAME' }, { title: 'STATE' }],
      r.objects.map((o) => [`  ${o.offset}`, o.kind, shown(o.name ?? null), o.summary]),
    ))
  }
  for (const n of r.notes) out(`\nnote: ${n}`)
}

/** The command. */
export const inspect: Command = {
  name: 'inspect',
  summary: 'show a segment: header, heap, named objects, locks and their holders',
  usage: 'inspect NAME [--json]',
  help: `Shows everything about one segment: what its header says (size, identity, who created it
and when, whether that process still runs), the processes that map it, its heap (use,
free space, and the result of a full consistency check), its named objects with their C
types, and the locks, conditions, semaphores and containers in its heap with their state
(free or held, by which process and thread, whether that holder is alive, waiters).

To read the heap consistently, inspect maps the segment and holds the heap's lock for a
moment, as any user of the segment does.

Options:
  --json   print one JSON object instead (documented in docs/cli.md; stable)

Exit code 0, or 1 if there is no such segment or it is not a shmutils segment.`,
  flags: ['json'],
  positional: { min: 1, max: 1 },
  run(args, io) {
    const r = inspectSegment(args.positional[0])
    if (args.flags.has('json')) io.out(JSON.stringify(r, null, 2))
    else print(r, (s) => io.out(s))
    if (r.segment.kind !== 'segment') {
      io.err(`shmutils inspect: ${shown(r.segment.name)}: not a shmutils segment${r.segment.problem ? ` (${r.segment.problem})` : ''}`)
      return 1
    }
    return 0
  },
}
