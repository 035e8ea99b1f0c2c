// The command-line tool (`bin/shmutils.js`) run as a subprocess against segments made by
// live and killed processes: ls, inspect, gc --dry-run, gc, rm, --help, bad names and
// foreign objects. Every error is one line naming the segment, with exit code 1 (2 for
// bad usage), never a stack trace.
import test, { type ExecutionContext } from 'ava'
import { spawnSync } from 'node:child_process'
import { once } from 'node:events'
import { chmodSync, mkdirSync, rmSync, utimesSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { Channel, Lock, MappedMemory, RWLock, SharedMap, ShmError, shmOpen } from '../dist/index.js'
import { AS_NOBODY, canRunAsNobody, forkChild, pidNamespaceUnavailable, segmentExists, segmentName, throws } from './helpers.js'

const BIN = join(import.meta.dirname ?? __dirname, '..', 'bin', 'shmutils.js')
const linux = process.platform === 'linux'

interface Run {
  code: number | null
  stdout: string
  stderr: string
}

/**
 * How the tool is run here: `ls` lists every anonymous segment of every process, and a
 * test running beside these may hold thousands (rwlock.spec's collection rounds): its
 * output then passes spawnSync's 1 MiB default, which kills the tool and cuts the text.
 */
const RUN = { encoding: 'utf8', timeout: 60_000, maxBuffer: 256 << 20 } as const

/** Runs the tool with `args`. */
function cli(...args: string[]): Run {
  const r = spawnSync(process.execPath, [BIN, ...args], RUN)
  return { code: r.status, stdout: r.stdout, stderr: r.stderr }
}

/** Runs the tool with `args` where /dev/shm does not exist (an empty tmpfs over /dev, in a private mount namespace). */
function cliWithoutShm(...args: string[]): Run {
  const r = spawnSync('unshare', ['-m', '--propagation', 'private', 'sh', '-c', 'mount -t tmpfs -o size=1m tmpfs /dev && exec "$0" "$@"', process.execPath, BIN, ...args], RUN)
  return { code: r.status, stdout: r.stdout, stderr: r.stderr }
}
const canHideShm = linux && spawnSync('unshare', ['-m', '--propagation', 'private', 'sh', '-c', 'mount -t tmpfs -o size=1m tmpfs /dev']).status === 0
if (!canHideShm) console.log('cli: SKIPPING the no-/dev/shm test: cannot mount a tmpfs in a private mount namespace here')
if (!canRunAsNobody()) console.log('cli: SKIPPING the other-user gc test: needs root, setpriv, and a checkout other users may read')

/** Runs the tool with `--json` added; parses its output. */
function json<T = Record<string, unknown>>(t: ExecutionContext, ...args: string[]): T {
  const r = cli(...args, '--json')
  t.is(r.code, 0, r.stderr)
  return JSON.parse(r.stdout) as T
}

/** No stack trace: no `    at ` frame lines, no `Error:` dump. */
function noStack(t: ExecutionContext, r: Run): void {
  t.notRegex(r.stderr, /^\s+at /m, r.stderr)
  t.notRegex(r.stdout + r.stderr, /node:internal|\.js:\d+:\d+/, r.stderr)
}

interface Peer {
  pid: number
  uid: string
  inode: string
  fd: number
  offsets: Record<string, number>
}

/** Starts `ops-peer.mjs` making `what`; resolves with what it reports. */
async function peer(t: ExecutionContext, what: string) {
  const child = forkChild(t, 'ops-peer.mjs', [what])
  const info = await child.message<Peer>()
  return { child, info }
}

interface SegmentJson {
  name: string | null
  kind: string
  size: number
  uid: string | null
  created: string | null
  creator: { pid: number; alive: boolean | null } | null
  heap: { named: number; used: number; free: number } | null
  attached: number[]
  inUse: boolean | null
  creatorMapped: boolean | null
  holders?: Array<{ pid: number; fd: number }>
}

test('ls, inspect, gc and rm on segments of a live and a killed process', async (t) => {
  if (!linux) return t.pass('ls and gc list /dev/shm and read /proc: Linux only')
  const liveName = segmentName(t, 'cli-live')
  const deadName = segmentName(t, 'cli-dead')
  const live = await peer(t, liveName)
  const dead = await peer(t, deadName)
  dead.child.proc.kill('SIGKILL')
  await dead.child.exited

  // ls --json
  const l = json<{ segments: SegmentJson[]; scan: { proc: boolean } }>(t, 'ls')
  t.true(l.scan.proc)
  const ls = (n: string) => l.segments.find((s) => s.name === n) as SegmentJson
  t.like(ls(liveName), {
    kind: 'segment', size: 1 << 20, uid: live.info.uid, creator: { pid: live.info.pid, alive: true }, attached: [live.info.pid], inUse: true, creatorMapped: true,
  })
  t.like(ls(deadName), { kind: 'segment', uid: dead.info.uid, creator: { pid: dead.info.pid, alive: false }, attached: [], inUse: false, creatorMapped: false })
  t.is(ls(liveName).heap?.named, 4)
  t.true((ls(liveName).heap?.used ?? 0) > 0)
  // ls as a table
  const table = cli('ls')
  t.is(table.code, 0)
  const row = table.stdout.split('\n').find((x) => x.startsWith(`${liveName} `)) ?? ''
  t.regex(row, new RegExp(`^${liveName}\\s+1 MiB\\s+\\S+ (B|KiB)\\s+\\S+ KiB\\s+4\\s+${live.info.pid} \\(alive\\)\\s+\\d{4}-\\d\\d-\\d\\d \\d\\d:\\d\\d:\\d\\d\\s+${live.info.pid}$`))
  t.regex(table.stdout, /^NAME\s+SIZE\s+USED\s+FREE\s+NAMED\s+CREATOR\s+CREATED\s+ATTACHED$/m)
  t.regex(table.stdout, new RegExp(`^${deadName}\\s.*${dead.info.pid} \\(exited\\)`, 'm'))

  // inspect
  const ins = json<{
    segment: SegmentJson
    heap: { check: { ok: boolean }; allocations: number }
    named: Array<{ name: string; type: string; size: number; ready: boolean }>
    objects: Array<{ kind: string; offset: number; name: string | null; summary: string; state: Record<string, unknown> }>
  }>(t, 'inspect', liveName)
  t.is(ins.segment.uid, live.info.uid)
  t.deepEqual(ins.heap.check, { ok: true })
  t.deepEqual(ins.named.map((n) => [n.name, n.type, n.size, n.ready]), [
    ['cache', 'uint8_t[128]', 128, true],
    ['counter', 'uint64_t', 8, true],
    ['label', 'char[16]', 16, true],
    ['origin', 'struct point', 8, true],
  ])
  t.is(ins.objects[0].kind, 'heap lock')
  t.is(ins.objects[0].summary, 'free')
  // The peer's synchronization objects, found by their kind tags, with their holders.
  const at = (off: number) => ins.objects.find((o) => o.offset === off)
  const { offsets } = live.info
  const holder = { pid: live.info.pid, tid: live.info.pid, alive: true }
  t.like(at(offsets.lock), { kind: 'Lock', state: { locked: true, waiters: false, ownerDied: false, holder } })
  t.is(at(offsets.lock)?.summary, `held by pid ${live.info.pid} tid ${live.info.pid} (alive)`)
  t.like(at(offsets.rlock), { kind: 'RLock', state: { locked: true, depth: 2, holder: { pid: live.info.pid, alive: true } } })
  t.is(at(offsets.rlock)?.summary, `held by pid ${live.info.pid} tid ${live.info.pid} (alive), depth 2`)
  t.like(at(offsets.sem), { kind: 'Semaphore', state: { value: 2, waiters: false }, summary: 'value 2' })
  t.like(at(offsets.cond), { kind: 'Condition', state: { waiters: 0, signals: 0 }, summary: '0 waiting' })
  t.is(ins.objects.filter((o) => o.kind === 'Lock').length, 2, 'the condition\'s own lock too')
  t.like(at(offsets.map), { kind: 'SharedMap', name: 'cache', state: { ready: true, entries: 3 } })
  t.regex(at(offsets.map)?.summary ?? '', /^3 entries, \d+ bytes in \d+ stripes$/)
  t.like(at(offsets.channel), { kind: 'Channel', state: { capacity: 4096, queued: 2, closed: false } })
  t.regex(at(offsets.channel)?.summary ?? '', /^2 messages queued \(\d+ of 4096 bytes\)$/)
  t.like(at(offsets.rw), { kind: 'RWLock', state: { writer: false, readers: 1 }, summary: 'held by 1 reader' })
  t.like(at(offsets.rwWrite), {
    kind: 'RWLock', state: { writer: true, writerPid: live.info.pid, readers: 0 }, summary: `held for writing by pid ${live.info.pid} tid ${live.info.pid}`,
  })
  // rwlock.owner and lock.owner name the peer, seen from this process.
  {
    using mem = MappedMemory.open(liveName)
    t.deepEqual(RWLock.at(mem, offsets.rwWrite).owner, { pid: live.info.pid, tid: live.info.pid })
    t.is(RWLock.at(mem, offsets.rw).owner, null, 'readers are not named')
    t.deepEqual(Lock.at(mem, offsets.lock).owner, { pid: live.info.pid, tid: live.info.pid })
  }
  t.like(at(offsets.barrier), { kind: 'Barrier', state: { parties: 3, arrived: 0, broken: false } })
  t.like(at(offsets.event), { kind: 'Event', state: { set: true }, summary: 'set' })
  // The killed peer's lock: held by a holder that is gone.
  const deadIns = json<{ objects: Array<{ kind: string; offset: number; summary: string; state: { holder?: { alive: boolean } } }> }>(t, 'inspect', deadName)
  const deadLock = deadIns.objects.find((o) => o.offset === dead.info.offsets.lock)
  t.is(deadLock?.state.holder?.alive, false)
  t.is(deadLock?.summary, `held by pid ${dead.info.pid} tid ${dead.info.pid} (DEAD: the next acquirer recovers it)`)
  const human = cli('inspect', liveName.slice(1)) // without the leading '/'
  t.is(human.code, 0, human.stderr)
  t.regex(human.stdout, new RegExp(`^segment ${liveName}$`, 'm'))
  t.regex(human.stdout, new RegExp(`created:\\s+\\S+ \\S+ by pid ${live.info.pid} \\(alive\\)`))
  t.regex(human.stdout, /^named objects \(4\)$/m)
  t.regex(human.stdout, /^\s+origin\s+struct point\s+\d+\s+8 B\s+ready$/m)
  t.regex(human.stdout, /^\s+check:\s+ok$/m)
  t.regex(human.stdout, new RegExp(`^\\s+${offsets.lock}\\s+Lock\\s+-\\s+held by pid ${live.info.pid} tid ${live.info.pid} \\(alive\\)$`, 'm'))

  // gc --dry-run over everything lists the dead one and keeps the live one; removes nothing.
  const dry = json<{ dryRun: boolean; removed: Array<{ name: string }>; kept: Array<{ name: string; reason: string }> }>(t, 'gc', '--dry-run')
  t.true(dry.dryRun)
  t.true(dry.removed.some((e) => e.name === deadName))
  t.false(dry.removed.some((e) => e.name === liveName))
  t.regex(dry.kept.find((e) => e.name === liveName)?.reason ?? '', new RegExp(`in use by pid ${live.info.pid}`))
  t.true(segmentExists(deadName), 'a dry run removes nothing')
  const dryText = cli('gc', '--dry-run', liveName, deadName)
  t.is(dryText.code, 0)
  t.regex(dryText.stdout, new RegExp(`^would remove ${deadName}: its creator \\(pid ${dead.info.pid}\\) has exited, and nobody maps it$`, 'm'))
  t.regex(dryText.stdout, new RegExp(`^kept ${liveName}: in use by pid ${live.info.pid}$`, 'm'))

  // gc (only our two names: other programs on this machine have segments too)
  const gc = cli('gc', liveName, deadName)
  t.is(gc.code, 0, gc.stderr)
  t.regex(gc.stdout, new RegExp(`^removed ${deadName}: `, 'm'))
  t.false(segmentExists(deadName))
  t.true(segmentExists(liveName))

  // rm the live one: it says who still maps it.
  const rm = cli('rm', liveName)
  t.is(rm.code, 0)
  t.is(rm.stdout.trim(), `removed ${liveName} (still mapped by pid ${live.info.pid}: its memory stays until they close it)`)
  t.false(segmentExists(liveName))
  const again = cli('rm', liveName)
  t.is(again.code, 1)
  t.is(again.stderr.trim(), `shmutils rm: ${liveName}: no such segment`)
})

test('errors name the segment, exit non-zero and print no stack trace', (t) => {
  const missing = cli('inspect', '/nope-shmutils-cli')
  t.is(missing.code, 1)
  t.is(missing.stderr.trim(), 'shmutils inspect: /nope-shmutils-cli: no such segment')
  t.is(missing.stdout, '')
  noStack(t, missing)
  for (const [args, message, code] of [
    [['inspect', 'a/b'], /^shmutils inspect: invalid segment name: .*one leading '\/'/, 1],
    [['inspect', ''], /^shmutils inspect: invalid segment name: must not be empty/, 1],
    [['inspect', 'x'.repeat(300)], /^shmutils inspect: invalid segment name: /, 1],
    [['inspect'], /^shmutils inspect: a segment name is required\nusage: shmutils inspect NAME \[--json\]/, 2],
    [['inspect', 'a', 'b'], /^shmutils inspect: too many arguments/, 2],
    [['ls', '--bogus'], /^shmutils ls: unknown option --bogus/, 2],
    [['ls', 'extra'], /^shmutils ls: unexpected argument "extra"/, 2],
    [['rm'], /^shmutils rm: at least one segment name is required/, 2],
    [['rm', '/nope-shmutils-cli', 'a/b'], /^shmutils rm: \/nope-shmutils-cli: no such segment\nshmutils rm: invalid segment name: /, 1],
    [['frobnicate'], /^shmutils: unknown command "frobnicate"/, 2],
    [[], /^usage: shmutils <command>/, 2],
  ] as const) {
    const r = cli(...args)
    t.is(r.code, code, `${args.join(' ')}: ${r.stderr}`)
    t.regex(r.stderr, message, args.join(' '))
    noStack(t, r)
  }
})

test('gc out of descriptors says so, and removes nothing (it said gc needs /proc, "Linux only")', (t) => {
  if (!linux) return t.pass('gc reads /proc: Linux only')
  const script = `
    const { main } = require(${JSON.stringify(join(process.cwd(), 'dist', 'cli', 'main.js'))})
    const fs = require('node:fs')
    const fds = []
    try { for (;;) fds.push(fs.openSync('/dev/null', 'r')) } catch {}
    const out = []
    const err = []
    const code = main(['gc', '--dry-run'], { out: (s) => out.push(s), err: (s) => err.push(s) })
    for (const fd of fds) fs.closeSync(fd)
    console.log(JSON.stringify({ code, out, err }))`
  const r = spawnSync('bash', ['-c', 'ulimit -n 64 && exec "$0" -e "$1"', process.execPath, script], RUN)
  t.is(r.status, 0, r.stderr)
  const got = JSON.parse(r.stdout) as { code: number; out: string[]; err: string[] }
  t.is(got.code, 1)
  t.deepEqual(got.out, [], 'nothing removed, nothing kept: no verdict at all')
  t.regex(got.err.join('\n'), /^shmutils gc: .*EMFILE: too many open files/)
})

test('rm out of descriptors still removes the name (who maps it is only a note)', (t) => {
  if (!linux) return t.pass('the note reads /proc: Linux only')
  const name = segmentName(t, 'rmfd')
  MappedMemory.create(name, { size: 4096 }).close()
  const script = `
    const { main } = require(${JSON.stringify(join(process.cwd(), 'dist', 'cli', 'main.js'))})
    const fs = require('node:fs')
    const fds = []
    try { for (;;) fds.push(fs.openSync('/dev/null', 'r')) } catch {}
    const out = []
    const err = []
    const code = main(['rm', ${JSON.stringify(name)}], { out: (s) => out.push(s), err: (s) => err.push(s) })
    for (const fd of fds) fs.closeSync(fd)
    console.log(JSON.stringify({ code, out, err }))`
  const r = spawnSync('bash', ['-c', 'ulimit -n 64 && exec "$0" -e "$1"', process.execPath, script], RUN)
  t.is(r.status, 0, r.stderr)
  // Before (this session's gc change): "/proc: EMFILE", exit 1, the name kept.
  t.deepEqual(JSON.parse(r.stdout), { code: 0, out: [`removed ${name}`], err: [] })
  t.false(segmentExists(name))
})

;(canHideShm ? test : test.skip)('no /dev/shm at all (AWS Lambda, minimal containers): ls lists nothing and says why, gc removes nothing, inspect finds nothing', (t) => {
  const ls = cliWithoutShm('ls')
  t.is(ls.code, 0, ls.stderr)
  // (Anonymous segments of other tests' processes may be listed: they need no /dev/shm.)
  t.regex(ls.stdout, /\n\/dev\/shm: absent on this system \(no named segments; anonymous ones work\)\n$/)
  t.notRegex(ls.stdout, /^\/(?!dev\/shm: absent)/m, 'no named segment listed')
  const listing = JSON.parse(cliWithoutShm('ls', '--json').stdout) as Record<string, unknown>
  t.like(listing, { filesystem: null, segments: [] })
  const gc = cliWithoutShm('gc')
  t.is(gc.code, 0, gc.stderr)
  t.regex(gc.stdout, /nothing removed/)
  const inspect = cliWithoutShm('inspect', '/x')
  t.is(inspect.code, 1)
  t.is(inspect.stderr.trim(), 'shmutils inspect: /x: no such segment')
  for (const r of [ls, gc, inspect]) noStack(t, r)
})

test('a reader that stops early (| head -1) ends the output quietly: exit 0, no EPIPE trace', (t) => {
  const name = segmentName(t, 'cli-pipe')
  MappedMemory.create(name, { size: 1 << 16 }).close()
  for (const args of [['inspect', name], ['ls']]) {
    const r = spawnSync('bash', ['-c', `${JSON.stringify(process.execPath)} ${JSON.stringify(BIN)} ${args.join(' ')} | head -1; exit \${PIPESTATUS[0]}`], { encoding: 'utf8' })
    t.is(r.stdout.split('\n').filter(Boolean).length, 1, args[0])
    t.is(r.status, 0, `${args[0]}: ${r.stderr}`)
    t.notRegex(r.stderr, /EPIPE|at \w/, args[0])
  }
})

test('inspect reports a heap too damaged to walk as a finding, with the segment around it', (t) => {
  const name = segmentName(t, 'cli-damaged')
  const m = MappedMemory.create(name, { size: 1 << 16 })
  const off = m.heap.malloc(64)
  m.bytes.fill(0xee, off - 16, off) // the block's header
  m.close()
  const r = json<{ segment: SegmentJson; notes: string[] }>(t, 'inspect', name)
  t.is(r.segment.kind, 'segment')
  t.true(r.notes.some((n) => /the heap is damaged \(ERR_SHM_CORRUPT: .*\): its figures, named objects and locks not read/.test(n)), r.notes.join('; '))
  const text = cli('inspect', name)
  t.is(text.code, 0)
  t.regex(text.stdout, new RegExp(`segment ${name}`))
  t.regex(text.stdout, /note: the heap is damaged/)
  noStack(t, text)
})

test('a header whose creation time no Date holds (hostile, or damaged) is shown as unknown: ls, gc and inspect of every segment go on (they all exited 1, "invalid segment name")', (t) => {
  const name = segmentName(t, 'cli-created')
  const m = MappedMemory.create(name, { size: 1 << 16 })
  new DataView(m.buffer).setBigUint64(64, 0xffff_ffff_ffff_ffffn, true) // created_ms (FORMAT.md §2)
  m.close()
  const other = segmentName(t, 'cli-fine')
  MappedMemory.create(other, { size: 1 << 16 }).close()
  const listed = json<{ segments: SegmentJson[] }>(t, 'ls').segments
  t.is(listed.find((s) => s.name === name)?.created, null)
  t.regex(String(listed.find((s) => s.name === other)?.created), /^\d{4}-\d\d-\d\dT/)
  t.is(json<{ segment: SegmentJson }>(t, 'inspect', name).segment.created, null)
  for (const args of [['ls'], ['inspect', name], ['gc', '--dry-run']]) {
    const r = cli(...args)
    t.is(r.code, 0, `${args.join(' ')}: ${r.stderr}`)
    noStack(t, r)
  }
})

// A consumer counts a message before its producer does (between the consumer's commit
// and the producer's count, or for good when the producer died there): received one
// ahead of sent is an empty channel (it showed 4294967295 messages queued).
test('inspect shows a Channel whose consumer counted a message before its producer as empty', (t) => {
  const name = segmentName(t, 'cli-queued')
  const m = MappedMemory.create(name, { size: 1 << 16 })
  const ch = new Channel<number>(m, { capacity: 64 })
  ch.send(1)
  t.is(ch.receive(), 1)
  const dv = new DataView(m.buffer)
  dv.setUint32(ch.offset + 108, dv.getUint32(ch.offset + 108, true) - 1, true) // sent (docs/FORMAT.md §11.3)
  t.is(ch.length, 0)
  const offset = ch.offset
  m.close()
  const r = json<{ objects: { offset: number; kind: string; state: { queued: number }; summary: string }[] }>(t, 'inspect', name)
  const found = r.objects.find((o) => o.offset === offset)
  t.like(found, { kind: 'Channel', state: { queued: 0 } })
  t.regex(found?.summary ?? '', /^0 messages queued/)
})

test('inspect names a container of another layout version (another shmutils made it) without decoding its fields', (t) => {
  const name = segmentName(t, 'cli-layout')
  const m = MappedMemory.create(name, { size: 1 << 20 })
  const map = new SharedMap<string, number>(m, { stripes: 4 })
  map.set('a', 1)
  const ch = new Channel<number>(m, { capacity: 1024 })
  ch.send(1)
  const dv = new DataView(m.buffer)
  dv.setUint32(map.offset + 4, 4, true) // docs/FORMAT.md §11.1: the layout version
  dv.setUint32(ch.offset + 4, 2, true)
  dv.setUint32(map.offset + 28, 7, true) // stripes: a version-4 map need not have them there
  const offsets = [map.offset, ch.offset]
  m.close()
  const r = json<{ objects: { offset: number; kind: string; state: Record<string, unknown>; summary: string }[] }>(t, 'inspect', name)
  const [m3, c2] = offsets.map((o) => r.objects.find((x) => x.offset === o))
  t.like(m3, { kind: 'SharedMap', state: { version: 4 }, summary: '(a SharedMap of layout version 4; this version of the tool reads version 3)' })
  t.like(c2, { kind: 'Channel', state: { version: 2 }, summary: '(a Channel of layout version 2; this version of the tool reads version 1)' })
  const text = cli('inspect', name)
  t.is(text.code, 0)
  t.regex(text.stdout, /SharedMap .*\(a SharedMap of layout version 4; this version of the tool reads version 3\)/)
  t.notRegex(text.stdout, /entries, .* in 7 stripes|messages queued/)
})

;(canRunAsNobody() ? test : test.skip)('gc run by another user keeps a dead segment it may read but not remove (/dev/shm is sticky): the dry run does not promise it, the real run does not fail', async (t) => {
  const name = segmentName(t, 'cli-owner')
  const dead = await peer(t, name)
  dead.child.proc.kill('SIGKILL')
  await dead.child.exited
  chmodSync(`/dev/shm${name}`, 0o644)
  for (const dry of [true, false]) {
    const r = spawnSync(AS_NOBODY[0], [...AS_NOBODY.slice(1), process.execPath, BIN, 'gc', ...(dry ? ['--dry-run'] : []), '--json', name], RUN)
    t.is(r.status, 0, r.stderr)
    const out = JSON.parse(r.stdout) as { removed: unknown[]; failed: unknown[]; kept: { name: string; reason: string }[] }
    t.deepEqual([out.removed, out.failed], [[], []], dry ? 'dry run' : 'run')
    t.is(out.kept[0]?.name, name)
    t.regex(out.kept[0]?.reason ?? '', /^owned by uid 0: only its owner \(or root\) may remove it/)
  }
  t.true(segmentExists(name))
  t.like(json(t, 'gc', name), { removed: [{ name }] }, 'its owner removes it')
})

test('--help for each command', (t) => {
  const overview = cli('--help')
  t.is(overview.code, 0)
  for (const cmd of ['ls', 'inspect', 'rm', 'gc']) {
    t.regex(overview.stdout, new RegExp(`^  ${cmd} `, 'm'))
    for (const args of [[cmd, '--help'], [cmd, '-h'], ['help', cmd], [cmd, 'x', '--help']]) {
      const r = cli(...args)
      t.is(r.code, 0, args.join(' '))
      t.regex(r.stdout, new RegExp(`^usage: shmutils ${cmd}\\b`), args.join(' '))
      t.true(r.stdout.split('\n').length > 4, 'explains itself')
    }
  }
})

test('names holding control characters (a newline, an escape sequence) are printed quoted and escaped: every report stays one line', (t) => {
  const evil = segmentName(t, 'cli-\u001b[31mred\n')
  const mem = MappedMemory.create(evil, { size: 65536 })
  mem.heap.named('line\nbreak\u009b', 'int32_t', 1)
  mem.close()
  const quoted = JSON.stringify(evil)
  const ins = cli('inspect', evil)
  t.is(ins.code, 0, ins.stderr)
  t.true(ins.stdout.startsWith(`segment ${quoted}\n`), ins.stdout)
  t.true(ins.stdout.includes('"line\\nbreak\\u009b"'), ins.stdout)
  const missing = cli('rm', '/nope\nshmutils rm: all segments removed')
  t.is(missing.stderr, 'shmutils rm: "/nope\\nshmutils rm: all segments removed": no such segment\n')
  if (linux) t.true(cli('ls').stdout.split('\n').some((line) => line.startsWith(quoted)), 'ls: one row, quoted')
  for (const r of [ins, missing]) t.false(['\u001b', '\u009b'].some((c) => (r.stdout + r.stderr).includes(c)), 'no raw control character reaches the terminal')
  const rm = cli('rm', evil)
  t.is(rm.stdout, `removed ${quoted}\n`)
})

test('names holding bidirectional formatting characters (a right-to-left override) are printed escaped: a name cannot pose as another', (t) => {
  const evil = segmentName(t, 'cli-\u202egpj.exe')
  MappedMemory.create(evil, { size: 4096 }).close()
  const shownAs = JSON.stringify(evil).replace('\u202e', '\\u202e')
  const rm = cli('rm', evil)
  t.is(rm.stdout, `removed ${shownAs}\n`)
  t.false(rm.stdout.includes('\u202e'), 'no raw override reaches the terminal')
  const missing = cli('rm', '/a\u2066b\u200fc')
  t.is(missing.stderr, 'shmutils rm: "/a\\u2066b\\u200fc": no such segment\n')
  // A name that itself starts with a quote is quoted too: the literal name
  // `"config\u202e"` cannot print as the escaped `config\u202e`.
  const mem = MappedMemory.create(segmentName(t, 'cli-quote'), { size: 65536 })
  mem.heap.named('config\u202e', 'int32_t', 1)
  mem.heap.named('"config\\u202e"', 'int32_t', 2)
  const ins = cli('inspect', mem.name!)
  mem.close()
  t.is(ins.code, 0, ins.stderr)
  t.true(ins.stdout.includes(' "config\\u202e" '), ins.stdout)
  t.true(ins.stdout.includes(' "\\"config\\\\u202e\\"" '), ins.stdout)
})

test('names holding invisible characters (zero widths, a soft hyphen) are printed escaped: a name cannot pose as another', (t) => {
  for (const [name, as] of [
    ['/ad\u200bmin', '"/ad\\u200bmin"'],
    ['/adm\u00adin', '"/adm\\u00adin"'],
    ['/a\u200cb\u200dc\u2060d\u2064e\ufeff', '"/a\\u200cb\\u200dc\\u2060d\\u2064e\\ufeff"'],
  ]) {
    t.is(cli('rm', name).stderr, `shmutils rm: ${as}: no such segment\n`)
  }
  const evil = segmentName(t, 'cli-ad\u200bmin')
  MappedMemory.create(evil, { size: 4096 }).close()
  const rm = cli('rm', evil)
  t.is(rm.stdout, `removed ${JSON.stringify(evil).replace('\u200b', '\\u200b')}\n`)
})

test('objects that are not segments are reported as such and never collected', (t) => {
  if (!linux) return t.pass('ls and gc: Linux only')
  const foreign = segmentName(t, 'cli-foreign')
  const obj = shmOpen(foreign, 'x+').truncate(8192)
  obj.close()
  const junk = segmentName(t, 'cli-junk')
  const m = new MappedMemory(null, 8192, undefined, undefined, shmOpen(junk, 'x+').truncate(8192))
  m.bytes.fill(0x5a)
  m.close()
  const l = json<{ segments: SegmentJson[] }>(t, 'ls')
  t.is(l.segments.find((s) => s.name === foreign)?.kind, 'unfinished', 'all zero: a creator that has not finished')
  t.like(l.segments.find((s) => s.name === junk), { kind: 'foreign', heap: null, creator: null })
  const ins = cli('inspect', junk)
  t.is(ins.code, 1)
  t.regex(ins.stderr, new RegExp(`^shmutils inspect: ${junk}: not a shmutils segment \\(no shmutils header\\)`))
  noStack(t, ins)
  const gc = json<{ removed: unknown[]; kept: Array<{ name: string; kind: string; reason: string }> }>(t, 'gc', junk, foreign)
  t.deepEqual(gc.removed, [])
  t.like(gc.kept.find((e) => e.name === junk), { kind: 'foreign' })
  t.like(gc.kept.find((e) => e.name === foreign), { kind: 'unfinished', reason: 'being created' })
  t.true(segmentExists(junk) && segmentExists(foreign))
  // Other programs' small objects (a POSIX semaphore is 32 bytes, here a short text file),
  // even old and unused, and a FIFO: foreign, never collected; the FIFO hangs nothing.
  const sem = segmentName(t, 'cli-sem')
  shmOpen(sem, 'x+').truncate(32).close()
  const text = segmentName(t, 'cli-text')
  writeFileSync(`/dev/shm${text}`, 'hello\n')
  const fifo = segmentName(t, 'cli-fifo')
  t.is(spawnSync('mkfifo', [`/dev/shm${fifo}`]).status, 0)
  const old = new Date(Date.now() - 3600_000)
  for (const n of [sem, text]) utimesSync(`/dev/shm${n}`, old, old)
  const l2 = json<{ segments: SegmentJson[] }>(t, 'ls')
  for (const n of [sem, text]) t.is(l2.segments.find((s) => s.name === n)?.kind, 'foreign', n)
  t.is(l2.segments.find((s) => s.name === fifo), undefined, 'ls lists regular files only')
  const gc2 = json<{ removed: unknown[] }>(t, 'gc', sem, text, fifo)
  t.deepEqual(gc2.removed, [])
  t.true([sem, text, fifo].every(segmentExists))
  const insFifo = cli('inspect', fifo)
  t.is(insFifo.code, 1)
  t.regex(insFifo.stderr, /not a shmutils segment \(not a regular file\)/)
  throws(t, () => MappedMemory.open(fifo, { readOnly: true }), { instanceOf: ShmError, code: 'ERR_SHM_BAD_HEADER', message: /not a shmutils segment \(a FIFO\)/ })
  // A directory under a name: what it is, at once (its size was read as a header too small).
  const dir = segmentName(t, 'cli-dir')
  mkdirSync(`/dev/shm${dir}`)
  t.teardown(() => rmSync(`/dev/shm${dir}`, { recursive: true, force: true }))
  throws(t, () => MappedMemory.open(dir, { readOnly: true }), { instanceOf: ShmError, code: 'ERR_SHM_BAD_HEADER', message: /not a shmutils segment \(a directory\)/ })
  throws(t, () => MappedMemory.open(dir), { instanceOf: ShmError, code: 'EINVAL', syscall: 'shm_open' }) // glibc's answer to O_RDWR
})

test('ls shows anonymous segments with the processes that hold them', async (t) => {
  if (!linux) return t.pass('read through /proc: Linux only')
  const anon = await peer(t, 'anonymous')
  const l = json<{ anonymous: SegmentJson[] }>(t, 'ls')
  const mine = l.anonymous.find((s) => s.uid === anon.info.uid)
  t.like(mine, { name: null, kind: 'segment', size: 1 << 20, creator: { pid: anon.info.pid, alive: true }, attached: [anon.info.pid], inUse: true })
  // Its mapping's descriptor, and the one holding the peer's liveness token (it took locks).
  t.true(mine?.holders?.some((h) => h.pid === anon.info.pid && h.fd === anon.info.fd))
  t.true(mine?.holders?.every((h) => h.pid === anon.info.pid))
  t.is(mine?.heap?.named, 4)
  anon.child.proc.kill('SIGKILL')
  await once(anon.child.proc, 'exit')
  const after = json<{ anonymous: SegmentJson[] }>(t, 'ls')
  t.false(after.anonymous.some((s) => s.uid === anon.info.uid), 'gone with its last holder')
})

const noPidNamespace = pidNamespaceUnavailable()
if (noPidNamespace !== null) console.log(`cli.spec.ts: SKIPPING the PID-namespace test: ${noPidNamespace}`)

;(noPidNamespace === null ? test.serial : test.skip)('gc in another PID namespace never removes a mapped segment, and removes it once its users are gone', async (t) => {
  // The tool runs as in a container: a PID namespace of its own, where /proc shows none of
  // the peer's processes and the creator's pid means nothing. Only the liveness bytes
  // can tell that the segment is in use.
  const inNamespace = (...args: string[]): Run => {
    const r = spawnSync('unshare', ['--pid', '--fork', '--mount-proc', '--kill-child', process.execPath, BIN, ...args], RUN)
    return { code: r.status, stdout: r.stdout, stderr: r.stderr }
  }
  const name = segmentName(t, 'cli-ns')
  const live = await peer(t, name)
  const ls = inNamespace('ls', '--json')
  t.is(ls.code, 0, ls.stderr)
  const seen = (JSON.parse(ls.stdout) as { segments: SegmentJson[] }).segments.find((s) => s.name === name)
  t.like(seen, { kind: 'segment', attached: [], inUse: true, creatorMapped: true }, 'no pid here, but the kernel knows it is mapped')
  const kept = inNamespace('gc', '--json', name)
  t.is(kept.code, 0, kept.stderr)
  t.like(JSON.parse(kept.stdout), { removed: [], kept: [{ name, reason: 'mapped by a process of another PID namespace (container) or user' }] })
  t.true(segmentExists(name))
  live.child.proc.kill('SIGKILL')
  await live.child.exited
  const gone = inNamespace('gc', name)
  t.is(gone.code, 0, gone.stderr)
  t.regex(gone.stdout, new RegExp(`^removed ${name}: `, 'm'))
  t.false(segmentExists(name))
})
