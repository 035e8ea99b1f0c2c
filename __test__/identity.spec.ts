// Segment identity, handles and names: revive after unlink + re-create, handles through
// structured clone (worker.postMessage, workerData, fork with serialization 'advanced'),
// freeing named objects, ERR_SHM_CLOSED after close, lone surrogates in names, the
// creator recorded in the header, unlinkOnExit and the EEXIST message. Across real
// processes and threads.
import test, { type ExecutionContext } from 'ava'
import { fork } from 'node:child_process'
import { EventEmitter, once } from 'node:events'
import { readFileSync } from 'node:fs'
import { constants } from 'node:os'
import { MessageChannel, receiveMessageOnPort, Worker } from 'node:worker_threads'
import {
  Barrier, CBase, cdef, Channel, Condition, Event, Heap, Lock, MappedMemory, MapFlags, Protection, revive, RLock, RWLock, Semaphore, SharedMap, ShmError,
  shmOpen, shmUnlink, types,
  type Ref,
} from '../dist/index.js'
import { childClosed, fixture, managedSegment, segmentExists, segmentName, throws, unlinkQuietly } from './helpers.js'

/** How the peer receives what the parent sends. */
type Transport = 'json' | 'advanced' | 'worker' | 'workerData'

interface Peer {
  /** Sends a request and resolves with its reply (without the tag). */
  request<T = Record<string, unknown>>(op: string, args?: Record<string, unknown>): Promise<T>
  /** The reply to the workerData the peer was started with. */
  workerData?: Promise<Record<string, unknown>>
}

let tags = 0

/**
 * Starts `fixtures/identity-peer.mjs`: a forked child (JSON or 'advanced' serialization)
 * or a worker thread; what is sent is passed as is (a JSON channel calls `toJSON`, the
 * others structured-clone the live objects). Killed at teardown.
 */
async function startPeer(t: ExecutionContext, transport: Transport, workerData?: unknown): Promise<Peer> {
  // Replies by tag: each arrives once, and is waited for once.
  const replies = new Map<string, Record<string, unknown>>()
  const arrivals = new EventEmitter()
  const arrived = (m: unknown) => {
    const r = m as Record<string, unknown>
    replies.set(String(r.tag), r)
    arrivals.emit(String(r.tag))
  }
  let send: (m: unknown) => void
  let exited: Promise<unknown>
  if (transport === 'json' || transport === 'advanced') {
    const proc = fork(fixture('identity-peer.mjs'), [], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'], execArgv: [], serialization: transport })
    proc.on('message', arrived)
    exited = childClosed(proc)
    send = (m) => proc.send(m as object)
    t.teardown(() => void (proc.exitCode === null && proc.signalCode === null && proc.kill('SIGKILL')))
  } else {
    const w = new Worker(fixture('identity-peer.mjs'), workerData === undefined ? {} : { workerData })
    w.on('message', arrived)
    w.on('error', (e) => arrived({ tag: 'error', error: String(e) }))
    exited = once(w, 'exit')
    send = (m) => w.postMessage(m)
    t.teardown(() => w.terminate())
  }
  const reply = async (tag: string): Promise<Record<string, unknown>> => {
    if (!replies.has(tag)) {
      const gone = exited.then((c) => Promise.reject(new Error(`peer (${transport}) exited (${String(c)}) before replying to ${tag}`)))
      gone.catch(() => {}) // reported by the race, if it loses it; never unhandled
      await Promise.race([once(arrivals, tag), gone])
    }
    const { tag: _tag, ...r } = replies.get(tag)!
    replies.delete(tag)
    if (r.error !== undefined) throw new Error(`peer failed: ${String(r.error)}`)
    return r
  }
  const peer: Peer = {
    request: async <T>(op: string, args: Record<string, unknown> = {}) => {
      const tag = `${op}-${++tags}`
      send({ ...args, op, tag })
      return (await reply(tag)) as T
    },
  }
  const started = reply('started')
  if (workerData !== undefined) peer.workerData = reply('workerData')
  await started
  return peer
}

const segment = (t: ExecutionContext, size?: number) => managedSegment(t, 'id', size)

test('revive after unlink + re-create maps the new segment in a child; an old handle keeps the old one', async (t) => {
  const name = segmentName(t, 'recreate')
  const a = MappedMemory.create(name, { size: 65536 })
  t.teardown(() => a.close())
  const ra = a.new('int32_t', 111)
  const peer = await startPeer(t, 'json')
  t.like(await peer.request('read', { handle: ra }), { value: 111, uid: a.uid })
  shmUnlink(name)
  const b = MappedMemory.create(name, { size: 65536 })
  t.teardown(() => b.close())
  const rb = b.new('int32_t', 222)
  t.is(rb.offset, ra.offset, 'same layout: a per-name cache would read the old bytes')
  t.not(b.uid, a.uid)
  t.like(await peer.request('read', { handle: rb }), { value: 222, uid: b.uid }, 'the new segment')
  t.like(await peer.request('read', { handle: ra }), { value: 111, uid: a.uid }, 'the child still maps the old one')
  // A process that never mapped the old segment cannot reach it by name any more.
  const fresh = await startPeer(t, 'json')
  const stale = await fresh.request<{ code: string; message: string }>('read', { handle: ra })
  t.is(stale.code, 'ERR_SHM_STALE_HANDLE')
  t.regex(stale.message, /no longer exists under the name/)
  t.like(await fresh.request('read', { handle: rb }), { value: 222 })
  // In this process too: the old handle gives the old mapping, the new one the new.
  t.is((revive(JSON.parse(JSON.stringify(ra))) as Ref).memory, a)
  t.is((revive(JSON.parse(JSON.stringify(rb))) as Ref).memory, b)
})

test('handles carry uid and inode; malformed identity fields are TypeErrors', (t) => {
  const m = segment(t, 65536)
  const h = m.toJSON()
  t.regex(String(h.uid), /^[0-9a-f]{16}$/)
  t.is(h.uid, m.uid)
  t.regex(String(h.inode), /^[1-9][0-9]*$/)
  t.true(Object.isFrozen(h))
  const lock = new Lock(m)
  t.deepEqual(lock.toJSON().memory, h)
  for (const bad of [{ uid: 'XYZ' }, { uid: 12 }, { uid: '0123456789ABCDEF' }, { inode: 5 }, { inode: '-3' }]) {
    throws(t, () => revive({ ...h, ...bad }), { instanceOf: TypeError, message: /Malformed MappedMemory handle/ })
  }
  // A handle without identity (hand-written, or older) means what the name leads to now.
  t.is(revive({ $shmutils: 'MappedMemory', segment: m.name, offset: 0 }), m)
})

const cloneTransports = [
  ['worker.postMessage', 'worker'],
  ['workerData', 'workerData'],
  ["fork with serialization: 'advanced'", 'advanced'],
  ['a JSON channel (process.send)', 'json'],
] as const

for (const [what, transport] of cloneTransports) {
  test(`live objects sent through ${what} revive to working objects of the same classes`, async (t) => {
    const m = segment(t)
    const ref = m.new('int32_t', 41)
    const point = m.new(types.struct('idpoint', { x: types.i32, y: types.f64 }), { x: 7, y: 0 }) as Ref & { x: number; y: number }
    const lock = new Lock(m)
    const rlock = new RLock(m)
    const sem = new Semaphore(m, 1)
    const cond = new Condition(lock)
    const objs = { mem: m, ref, point, lock, rlock, sem, cond, heap: m.heap }
    const peer = transport === 'workerData' ? await startPeer(t, 'worker', objs) : await startPeer(t, transport)
    const seen = transport === 'workerData' ? await peer.workerData! : await peer.request('use', { objs })
    t.deepEqual(seen.classes, {
      mem: 'MappedMemory', ref: 'Ref', point: 'Ref<struct idpoint>', lock: 'Lock', rlock: 'RLock', sem: 'Semaphore', cond: 'Condition', heap: 'Heap',
    })
    t.like(seen, { byte: 41, value: 41, point: { x: 7, y: 0 }, semTaken: true, rlockTwice: 2, condLockIsLock: 'Lock', held: true, heapIsMemHeap: true })
    // The peer allocated from the same heap: its block holds its value, and frees here.
    t.is(new DataView(m.buffer).getInt32(seen.heapNew as number, true), 99)
    m.heap.free(seen.heapNew as number)
    m.heap.check()
    // The peer holds the lock and the semaphore's unit: both are the same shared words.
    t.true(lock.locked)
    t.false(lock.tryAcquire())
    t.is(sem.value, 0)
    await peer.request('finish')
    t.true(lock.acquire({ timeout: 5000 }))
    lock.release()
    t.is(ref.value, 42, 'written by the peer')
    t.is(point.y, 2.5)
    t.is(sem.value, 1)
  })
}

test('a structured clone of a live object is what revive recognises, in this process too', (t) => {
  const m = segment(t)
  const ref = m.new('int32_t', 5)
  const lock = new Lock(m)
  const { port1, port2 } = new MessageChannel()
  t.teardown(() => port1.close())
  port1.postMessage({ list: [ref, lock], m, heap: m.heap })
  const got = revive<{ list: [Ref<number>, Lock]; m: MappedMemory; heap: Heap }>(receiveMessageOnPort(port2)?.message)
  t.is(got.m, m, 'the mapping this process has')
  t.is(got.heap, m.heap, 'and its heap')
  t.is(got.list[0].value, 5)
  t.true(got.list[1] instanceof Lock)
  t.is(got.list[1].offset, lock.offset)
})

test('revive keeps what a structured clone keeps: cycles, shared objects, holes, null prototypes, own "__proto__" keys; containers clone too', (t) => {
  const m = segment(t)
  const map = new SharedMap<string, number>(m)
  map.set('k', 7)
  const ch = new Channel<string>(m)
  ch.send('hello')
  const lock = new Lock(m)
  const root: Record<string, unknown> = { name: 'root', lock }
  const kids = [0, 1, 2, 3].map((i) => ({ i, parent: root, lock }))
  root.kids = kids
  root.again = kids[2]
  const bare = Object.create(null) as Record<string, unknown>
  bare.x = 1
  // eslint-disable-next-line no-sparse-arrays
  const msg = { tree: root, map, ch, bare, holes: [1, , 3], others: [new RWLock(m), new Barrier(m, 2), new Event(m)] }
  const { port1, port2 } = new MessageChannel()
  t.teardown(() => port1.close())
  port1.postMessage(msg)
  const got = revive<typeof msg & { tree: { kids: Array<{ parent: unknown; lock: Lock }>; again: unknown; lock: Lock } }>(receiveMessageOnPort(port2)?.message)
  t.is(got.tree.kids.length, 4)
  t.true(got.tree.kids.every((k) => k.parent === got.tree && k.lock === got.tree.lock), 'the cycle and the shared lock come back as one object each')
  t.is(got.tree.again, got.tree.kids[2])
  t.true(got.tree.lock instanceof Lock)
  t.is(got.map.get('k'), 7)
  t.is(got.ch.receive(), 'hello')
  t.deepEqual(got.others.map((o) => o.constructor.name), ['RWLock', 'Barrier', 'Event'])
  t.deepEqual({ ...got.bare }, { x: 1 })
  t.is(Object.getPrototypeOf(revive<{ bare: object }>({ bare, lock }).bare), null, 'revive itself keeps a null prototype')
  t.false(1 in got.holes)
  t.is(got.holes[2], 3)
  // A JSON message with an own "__proto__" key keeps it as a key, prototype untouched.
  const json = revive<Record<string, unknown>>(JSON.parse('{"__proto__": {"admin": true}, "user": "bob", "lock": ' + JSON.stringify(lock) + '}'))
  t.deepEqual(Object.keys(json), ['__proto__', 'user', 'lock'])
  t.is(Object.getPrototypeOf(json), Object.prototype)
  t.is(json.admin, undefined)
  t.true(json.lock instanceof Lock)
})

test('revive walks Maps and Sets (keys and values), and refuses nesting deeper than 1000 levels instead of leaving handles unrevived', async (t) => {
  const m = segment(t)
  const ref = m.new('int32_t', 5)
  let deep: Record<string, unknown> = { ref }
  for (let i = 0; i < 70; i++) deep = { deep }
  // Through a worker thread: what arrives is structured clones, revived there.
  const code = `
    const { parentPort } = require('node:worker_threads')
    const { revive, Ref } = require(${JSON.stringify(new URL('../dist/index.js', import.meta.url).pathname)})
    parentPort.once('message', (msg) => {
      const got = revive(msg)
      let d = got.deep
      while (d.deep) d = d.deep
      const [key] = got.keyed.keys()
      parentPort.postMessage({
        map: got.map.get('counter') instanceof Ref && got.map.get('counter').value,
        key: key instanceof Ref && key.value + got.keyed.get(key),
        set: [...got.set].map((r) => r instanceof Ref && r.value),
        deep: d.ref instanceof Ref && d.ref.value,
      })
    })`
  const w = new Worker(code, { eval: true })
  t.teardown(() => w.terminate())
  w.postMessage({ map: new Map([['counter', ref]]), keyed: new Map([[ref, 10]]), set: new Set([ref]), deep })
  const [reply] = await once(w, 'message')
  t.deepEqual(reply, { map: 5, key: 15, set: [5], deep: 5 })
  // Shared and cyclic Maps and Sets come back shared.
  const cyc = new Map<string, unknown>([['ref', ref]])
  cyc.set('self', cyc)
  const got = revive<{ a: Map<string, unknown>; b: Map<string, unknown> }>({ a: cyc, b: cyc })
  t.is(got.a, got.b)
  t.is(got.a.get('self'), got.a)
  t.is((got.a.get('ref') as Ref<number>).value, 5)
  let tooDeep: unknown = ref
  for (let i = 0; i < 1100; i++) tooDeep = [tooDeep]
  throws(t, () => revive(tooDeep), { instanceOf: RangeError, message: /nested more than 1000 levels/ })
})

test('sending memory no other process can map fails at the sender, naming the reason', async (t) => {
  const anon = new MappedMemory(null, 4096)
  t.teardown(() => anon.close())
  const ffi = cdef('struct idlocal { int32_t v; };')
  class Local extends CBase(ffi, 'struct idlocal') {}
  const local = Local.new(3)
  const { port1 } = new MessageChannel()
  t.teardown(() => port1.close())
  const anonHeap = Heap.create(anon, { offset: 1024 })
  for (const [what, value] of [['anonymous mapping', anon], ['lock in it', Lock.at(anon, 0)], ['heap in it', anonHeap], ['process-local CBase object', local]] as const) {
    const e = thrown(() => port1.postMessage({ value }))
    t.is(e?.name, 'DataCloneError', what)
    t.regex(e?.message ?? '', /shmutils: an anonymous mapping cannot be sent/, what)
  }
  const child = fork(fixture('identity-peer.mjs'), [], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'], execArgv: [], serialization: 'advanced' })
  t.teardown(() => child.kill('SIGKILL'))
  t.throws(() => child.send({ anon }), { message: /shmutils: an anonymous mapping cannot be sent/ })
  throws(t, () => JSON.stringify(anon), { instanceOf: TypeError, message: /anonymous mapping cannot be shared/ })
  throws(t, () => JSON.stringify(local), { instanceOf: TypeError, message: /process-local memory/ })
  throws(t, () => JSON.stringify(anonHeap), { instanceOf: TypeError, message: /This heap is in an anonymous mapping and cannot be shared/ })
})

test('a heap formatted inside a raw mapping of a named object travels as a handle; one with no heap at its offset is ERR_SHM_CORRUPT', async (t) => {
  const name = segmentName(t, 'idrawheap')
  const obj = shmOpen(name, 'x')
  obj.truncate(65536)
  const raw = new MappedMemory(null, 65536, Protection.READ_WRITE, MapFlags.SHARED, obj, 0)
  obj.close()
  t.teardown(() => raw.close())
  const heap = Heap.create(raw, { offset: 4096, size: 32768 })
  const handle = JSON.parse(JSON.stringify(heap)) as Record<string, unknown>
  t.like(handle, { $shmutils: 'Heap', segment: name, offset: 4096 })
  // A raw mapping has no header (no uid): reviving maps the object again (FORMAT.md §8.2).
  const again = revive<Heap>(handle)
  t.teardown(() => again.memory.close())
  t.true(again instanceof Heap)
  t.deepEqual([again.offset, again.size, again.stats().free], [heap.offset, heap.size, heap.stats().free])
  // In a child: the handle attaches the heap; what it allocates is ours to read and free.
  const peer = await startPeer(t, 'json')
  const seen = await peer.request<{ heapNew: number; classes: Record<string, string> }>('use', { objs: { heap } })
  t.is(seen.classes.heap, 'Heap')
  t.true(seen.heapNew >= 4096 && seen.heapNew < 4096 + 32768)
  t.is(new DataView(raw.buffer).getInt32(seen.heapNew, true), 99)
  heap.free(seen.heapNew)
  heap.check()
  throws(t, () => revive({ ...handle, offset: 40960 }), { code: 'ERR_SHM_CORRUPT' })
})

/** What `fn` throws (DOMExceptions included, which `t.throws` refuses), or undefined. */
function thrown(fn: () => unknown): { name: string; message: string } | undefined {
  try {
    fn()
  } catch (e) {
    return e as { name: string; message: string }
  }
  return undefined
}

test('ref.free() on a named object removes its name; other processes see it gone', async (t) => {
  const m = segment(t)
  const peer = await startPeer(t, 'json')
  const cfg = m.heap.named('cfg', 'int32_t', 5)
  t.like(await peer.request('check', { name: m.name, find: 'cfg' }), { ok: true, found: 5 })
  const before = m.heap.stats()
  cfg.free()
  t.is(m.heap.find('cfg'), undefined)
  // The freed block is reused at once; the name must not lead there.
  const other = m.new('int32_t', 999)
  t.is(other.offset, cfg.offset)
  t.like(await peer.request('check', { name: m.name, find: 'cfg' }), { ok: true, found: null })
  t.is(m.heap.stats().allocations, before.allocations - 1, 'object and directory entry freed, one new object')
  const again = m.heap.named('cfg', 'int32_t', 6)
  t.is(again.value, 6, 'a new object under the name')
  t.is(other.value, 999)
  m.heap.unname('cfg')
  again.free()
  m.heap.check()
})

test('check() reports a directory entry whose object was freed (made with a raw write), in another process too', async (t) => {
  const m = segment(t)
  const cfg = m.heap.named('cfg', 'int32_t', 5)
  m.heap.check()
  // What an older version or a C peer did: free the object, keeping its name. Clearing the
  // NAMED flag (bit 3 of the block's size word, 16 bytes before the object) makes free()
  // leave the directory alone.
  m.bytes[cfg.offset - 16] &= ~8
  m.heap.free(cfg.offset)
  throws(t, () => m.heap.check(), { instanceOf: ShmError, code: 'ERR_SHM_CORRUPT', message: /freed while still named/ })
  const peer = await startPeer(t, 'json')
  const seen = await peer.request<{ ok: boolean; code: string; message: string }>('check', { name: m.name })
  t.like(seen, { ok: false, code: 'ERR_SHM_CORRUPT' })
  t.regex(seen.message, /freed while still named/)
  throws(t, () => m.heap.find('cfg'), { code: 'ERR_SHM_CORRUPT', message: /dangling/ })
  throws(t, () => m.heap.named('cfg', 'int32_t'), { code: 'ERR_SHM_CORRUPT' })
  t.true(m.heap.unname('cfg'), 'the dangling name can be removed')
  m.heap.check()
  t.like(await peer.request('check', { name: m.name }), { ok: true })
})

test('realloc of a named object is refused (its entry would be left behind)', (t) => {
  const m = segment(t)
  const cfg = m.heap.named('cfg', 'int32_t[4]')
  throws(t, () => m.heap.realloc(cfg.offset, 4096), { instanceOf: ShmError, code: 'EINVAL', message: /named object/ })
  t.is(m.heap.find('cfg')?.offset, cfg.offset)
  m.heap.check()
})

test('after close(), Ref, CBase, Lock, RLock, Semaphore and Condition accessors throw ERR_SHM_CLOSED', (t) => {
  const m = MappedMemory.create(segmentName(t, 'closed'), { size: 65536 })
  const ref = m.new('int32_t', 5)
  const arr = m.new('int32_t[4]')
  const point = m.new(types.struct('idclosed', { x: types.i32, p: types.ptr(types.i32), a: types.array(types.i32, 2) })) as Ref & {
    x: number
    p: unknown
    a: unknown
  }
  const ffi = cdef('struct idc { int32_t id; };')
  class C extends CBase(ffi, 'struct idc') {}
  const c = C.withHeap(m).new()
  const lock = new Lock(m)
  const rlock = new RLock(m)
  const sem = new Semaphore(m, 1)
  const cond = new Condition(lock)
  m.close()
  const uses: Record<string, () => unknown> = {
    'ref.value': () => ref.value,
    'ref.value =': () => { ref.value = 1 },
    'ref.get': () => ref.get(0),
    'ref.bytes': () => ref.bytes(),
    'arr.at': () => arr.at(1),
    'arr.set': () => arr.set(1, 2),
    'point.x': () => point.x,
    'point.x =': () => { point.x = 1 },
    'point.p': () => point.p,
    'point.p =': () => { point.p = null },
    'point.a': () => point.a,
    'point.value': () => point.value,
    'CBase member': () => c.id,
    'CBase member =': () => { c.id = 3 },
    'C.getbuffer': () => C.getbuffer(c),
    'lock.acquire': () => lock.acquire(),
    'lock.tryAcquire': () => lock.tryAcquire(),
    'lock.release': () => lock.release(),
    'lock.locked': () => lock.locked,
    'rlock.acquire': () => rlock.acquire(),
    'sem.acquire': () => sem.acquire(),
    'sem.value': () => sem.value,
    'cond.wait': () => cond.wait(1),
    'cond.notify': () => cond.notify(),
  }
  for (const [what, use] of Object.entries(uses)) throws(t, use, { instanceOf: ShmError, code: 'ERR_SHM_CLOSED' }, what)
})

test('lone UTF-16 surrogates in segment and object names are TypeErrors', (t) => {
  const base = segmentName(t, 'surrogate')
  // Where a version that did not reject them created the segment: removed even then.
  t.teardown(() => unlinkQuietly(`${base}\ufffd`))
  for (const bad of [`${base}\ud800`, `${base}\udc00x`, `${base}\ud83d`]) {
    throws(t, () => MappedMemory.create(bad, { size: 4096 }), { instanceOf: TypeError, message: /lone UTF-16 surrogates/ })
    throws(t, () => MappedMemory.open(bad), { instanceOf: TypeError, message: /lone UTF-16 surrogates/ })
    throws(t, () => shmOpen(bad), { instanceOf: TypeError })
    throws(t, () => shmUnlink(bad), { instanceOf: TypeError })
    throws(t, () => revive({ $shmutils: 'MappedMemory', segment: bad, offset: 0 }), { instanceOf: TypeError })
  }
  t.false(segmentExists(`${base}\ufffd`), 'nothing was created under the replacement character')
  // A well-formed pair is a character like any other.
  const emoji = segmentName(t, 'pair😀')
  const m = MappedMemory.create(emoji, { size: 65536 })
  t.teardown(() => m.close())
  t.is(m.name, emoji)
  for (const bad of ['\ud800', 'x\udfff', 'a\ud83d']) {
    throws(t, () => m.heap.named(bad, 'int32_t'), { instanceOf: TypeError, message: /lone UTF-16 surrogates/ })
    throws(t, () => m.heap.find(bad), { instanceOf: TypeError })
    throws(t, () => m.heap.unname(bad), { instanceOf: TypeError })
  }
  m.heap.named('ok😀', 'int32_t', 1)
  t.is(m.heap.find('ok😀')?.value, 1)
  t.is(m.heap.find('ok\ufffd'), undefined)
})

/**
 * Field 22 of /proc/<pid>/stat: the process's start time in clock ticks since boot (read
 * through /proc/<pid>/task/<pid>/stat, as the package does: the same kernel value, which
 * qemu-user does not rewrite).
 */
function startTime(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/task/${pid}/stat`, 'utf8')
  return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19])
}

test('the header records the creator (pid, start time) and the creation time; a child reads them', async (t) => {
  const t0 = Date.now()
  const m = segment(t, 65536)
  const t1 = Date.now()
  const c = m.creator!
  t.is(c.pid, process.pid)
  if (process.platform === 'linux') t.is(c.startTime, startTime(process.pid))
  t.true(c.createdAt >= t0 && c.createdAt <= t1, `created at ${c.createdAt}, between ${t0} and ${t1}`)
  t.true(Object.isFrozen(c))
  const peer = await startPeer(t, 'json')
  t.deepEqual(await peer.request('creator', { name: m.name }), { creator: { ...c }, uid: m.uid })
  // Raw mappings have no header.
  const raw = segmentName(t, 'raw')
  using fd = shmOpen(raw, 'x+').truncate(4096)
  using r = new MappedMemory(null, 4096, Protection.READ_WRITE, MapFlags.SHARED, fd)
  t.is(r.creator, null)
  t.is(r.uid, null)
})

/** Runs `fixtures/unlink-on-exit.mjs`; resolves once it created its segment. */
async function unlinkOnExitChild(t: ExecutionContext, name: string, mode: string) {
  const proc = fork(fixture('unlink-on-exit.mjs'), [name, mode], { stdio: ['ignore', 'ignore', 'pipe', 'ipc'], execArgv: [] })
  let stderr = ''
  proc.stderr!.on('data', (d: Buffer) => (stderr += String(d)))
  t.teardown(() => {
    if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGKILL')
  })
  // 'close', not 'exit': by then stderr is fully read ('exit' may come first).
  const exited = new Promise<{ code: number | null; signal: string | null }>((resolve) => proc.on('close', (code, signal) => resolve({ code, signal })))
  const messages: unknown[] = []
  const waiters: Array<(m: unknown) => void> = []
  proc.on('message', (m) => (waiters.length > 0 ? waiters.shift()!(m) : messages.push(m)))
  const message = () => new Promise<unknown>((resolve) => (messages.length > 0 ? resolve(messages.shift()) : waiters.push(resolve)))
  t.like(await message(), { created: true })
  return { proc, exited, message, stderr: () => stderr }
}

const exits = [
  ['the event loop running dry', 'normal', null, { code: 0, signal: null }],
  ['process.exit(3)', 'exit', null, { code: 3, signal: null }],
  ['an uncaught exception', 'throw', null, { code: 1, signal: null }],
  ['SIGTERM', 'wait', 'SIGTERM', { code: null, signal: 'SIGTERM' }],
  ['SIGINT', 'wait', 'SIGINT', { code: null, signal: 'SIGINT' }],
  ['SIGHUP', 'wait', 'SIGHUP', { code: null, signal: 'SIGHUP' }],
] as const

for (const [what, mode, signal, expected] of exits) {
  test(`unlinkOnExit: the name is removed when the creator ends by ${what}`, async (t) => {
    const name = segmentName(t, 'onexit')
    const child = await unlinkOnExitChild(t, name, mode)
    t.true(segmentExists(name))
    if (signal !== null) child.proc.kill(signal)
    else child.proc.send('go')
    t.deepEqual(await child.exited, expected, 'it still ends the way it would have')
    t.false(segmentExists(name))
    if (mode === 'throw') t.regex(child.stderr(), /uncaught on purpose/)
  })
}

test('unlinkOnExit in a worker thread: the name goes when the worker is terminated, and when its process ends while it runs (exit; a signal the main thread listens for)', async (t) => {
  const name = segmentName(t, 'onexit')
  const child = await unlinkOnExitChild(t, name, 'worker')
  t.true(segmentExists(name))
  child.proc.send('go')
  t.like(await child.message(), { terminated: true })
  t.false(segmentExists(name), 'worker.terminate() fires no exit event in the worker: its cleanup hook removed the name')
  child.proc.send('exit')
  await child.exited
  // process.exit() stops the worker (its hook runs); a signal is caught by the main
  // thread's listeners, which it has once it armed unlinkOnExit itself.
  for (const [how, mode, expected] of [['exit', 'worker', { code: 0 }], ['SIGINT', 'worker+main', { signal: 'SIGINT' }], ['SIGTERM', 'worker+main', { signal: 'SIGTERM' }]] as const) {
    const other = segmentName(t, 'onexit')
    const c = await unlinkOnExitChild(t, other, mode)
    t.true(segmentExists(other))
    if (how === 'exit') c.proc.send('exit')
    else c.proc.kill(how)
    t.like(await c.exited, expected)
    t.false(segmentExists(other), `the process ended by ${how} with the worker running`)
    t.false(segmentExists(`${other}-main`))
  }
})

test('unlinkOnExit with two copies of the package in the process: a signal removes both copies\' names and still ends the process (each took the other\'s listener for the program\'s)', async (t) => {
  for (const signal of ['SIGTERM', 'SIGINT'] as const) {
    const name = segmentName(t, 'onexit')
    t.teardown(() => unlinkQuietly(`${name}-b`))
    const child = await unlinkOnExitChild(t, name, 'two-copies')
    t.true(segmentExists(`${name}-b`))
    child.proc.kill(signal)
    t.deepEqual(await child.exited, { code: null, signal })
    t.false(segmentExists(name))
    t.false(segmentExists(`${name}-b`))
  }
})

test('unlinkOnExit under a hook that wraps every signal listener (so ours cannot be taken off): a signal removes the name and ends the process, with the shell\'s status for it (it re-raised the signal forever)', async (t) => {
  const name = segmentName(t, 'onexit')
  const child = await unlinkOnExitChild(t, name, 'wrapped')
  child.proc.kill('SIGTERM')
  t.deepEqual(await child.exited, { code: 128 + constants.signals.SIGTERM, signal: null })
  t.false(segmentExists(name))
})

test('unlinkOnExit: a program\'s process.once signal listener added before the segment was made decides (it took itself off before ours ran, so the signal killed the process at once)', async (t) => {
  const name = segmentName(t, 'onexit')
  const child = await unlinkOnExitChild(t, name, 'once')
  child.proc.kill('SIGTERM')
  t.like(await child.message(), { gotSigterm: true })
  t.deepEqual(await child.exited, { code: 3, signal: null }, 'the program\'s own graceful exit')
  t.false(segmentExists(name), 'its exit removed the name')
})

test('unlinkOnExit: not when the creator is killed with SIGKILL (the segment stays for gc)', async (t) => {
  const name = segmentName(t, 'onexit')
  const child = await unlinkOnExitChild(t, name, 'wait')
  child.proc.kill('SIGKILL')
  t.like(await child.exited, { signal: 'SIGKILL' })
  t.true(segmentExists(name))
  const m = MappedMemory.open(name)
  t.is(m.bytes[m.size - 1], 1)
  m.close()
})

test('unlinkOnExit: a signal the program handles itself leaves the segment; its exit then removes it', async (t) => {
  const name = segmentName(t, 'onexit')
  const child = await unlinkOnExitChild(t, name, 'handled')
  child.proc.kill('SIGINT')
  t.like(await child.message(), { gotSigint: true })
  t.true(segmentExists(name), 'the program decided to keep running')
  child.proc.send('exit')
  t.like(await child.exited, { code: 0 })
  t.false(segmentExists(name))
})

test('unlinkOnExit: a segment re-created under the name by someone else is left alone', async (t) => {
  const name = segmentName(t, 'onexit')
  const child = await unlinkOnExitChild(t, name, 'wait')
  shmUnlink(name)
  const mine = MappedMemory.create(name, { size: 65536 })
  t.teardown(() => mine.close())
  child.proc.send('exit')
  t.like(await child.exited, { code: 0 })
  t.true(segmentExists(name))
  const again = MappedMemory.open(name)
  t.is(again.uid, mine.uid)
  again.close()
})

test('unlinkOnExit must be a boolean; unlink() forgets it', (t) => {
  throws(t, () => MappedMemory.create(segmentName(t), { size: 4096, unlinkOnExit: 'yes' as unknown as boolean }), {
    instanceOf: TypeError,
    message: /"unlinkOnExit"/,
  })
  const name = segmentName(t)
  const m = MappedMemory.create(name, { size: 4096, unlinkOnExit: true })
  m.unlink()
  m.close()
  t.false(segmentExists(name))
})
