// Segments of more than 2 GiB, sparse (only the pages a test touches cost memory): objects
// at offsets of 2^31 and above in a mapping that is one ArrayBuffer (up to 4 GiB), where
// int32 arithmetic on byte offsets would go negative; and strings and views in an 8 GiB
// segment, which is exposed through windows.
import { constants as bufferConstants } from 'node:buffer'
import test, { type ExecutionContext } from 'ava'
import { execFileSync, spawnSync } from 'node:child_process'
import {
  Barrier, Channel, Condition, Event, Lock, MappedMemory, Ref, RLock, RWLock, Semaphore, SharedMap, ShmError,
} from '../dist/index.js'
import { forkChild, managedSegment, segmentName, throws } from './helpers.js'

const GiB = 2 ** 30
const MiB = 2 ** 20
const TWO31 = 2 ** 31

// Heap blocks are backed when allocated (fallocate): filling the low 2 GiB of a heap takes
// punching their interiors out again (util-linux fallocate -p), to keep the test's memory small.
const canPunch = process.platform === 'linux' && spawnSync('fallocate', ['--version']).status === 0

/**
 * Allocates 128 MiB blocks from the segment's heap (punching each one's interior out of the
 * backing object at once) until the heap's next block lies above 2^31 + 16 MiB, then small
 * ones until one lies above 2^31.
 */
function fillBelow2G(t: ExecutionContext, mem: MappedMemory, name: string): void {
  const block = 128 * MiB
  for (;;) {
    const off = mem.heap.malloc(block)
    execFileSync('fallocate', ['-p', '-o', String(off + 4096), '-l', String(block - 8192), `/dev/shm${name}`])
    if (off + block > TWO31 + 16 * MiB) break
  }
  // And what is left below (small gaps between the first blocks), so that what comes next lands above.
  let n = 0
  for (let off = 0; off < TWO31; n++) off = mem.heap.malloc(64)
  t.true(n < 10_000, `${n} small blocks filled the gaps`)
}

test('every primitive works at offsets just below and above 2^31 and near the end of a 3 GiB segment (one ArrayBuffer)', (t) => {
  const mem = managedSegment(t, 'big-at', 3 * GiB)
  t.is(mem.buffer.byteLength, 3 * GiB, 'the whole segment is one ArrayBuffer')
  const PAGE = 4096
  for (const base of [TWO31 - 16 * PAGE, TWO31 - 4 * PAGE, TWO31 + 4 * PAGE, TWO31 + GiB / 2, 3 * GiB - 8 * PAGE]) {
    mem.reserve(base, 8 * PAGE)
    const at = (k: number) => base + k * PAGE
    const words = (k: number) => [...new Int32Array(mem.buffer, at(k), 8)]

    const lock = Lock.at(mem, at(0))
    t.true(lock.acquire(), `Lock at ${at(0)}`)
    t.true(lock.locked)
    t.true(words(0).some((w) => w !== 0), 'the lock word is at its own offset')
    lock.release()
    t.false(lock.locked)

    const sem = Semaphore.at(mem, at(1), 2)
    t.deepEqual([sem.tryAcquire(), sem.tryAcquire(), sem.tryAcquire()], [true, true, false], `Semaphore at ${at(1)}`)
    sem.release(2)
    t.is(sem.value, 2)
    t.is(Semaphore.at(mem, at(1)).value, 2, 'another look at it sees the same count')

    const rw = RWLock.at(mem, at(2))
    t.true(rw.tryAcquireRead(), `RWLock at ${at(2)}`)
    t.true(rw.tryAcquireRead())
    rw.releaseRead()
    rw.releaseRead()
    t.true(rw.tryAcquireWrite())
    t.not(rw.owner, null)
    rw.releaseWrite()
    t.is(rw.owner, null)

    const ev = Event.at(mem, at(3))
    t.false(ev.isSet, `Event at ${at(3)}`)
    ev.set()
    t.true(Event.at(mem, at(3)).wait({ timeout: 0 }))
    ev.clear()
    t.false(ev.wait({ timeout: 1 }))

    const bar = Barrier.at(mem, at(4), 1)
    t.is(bar.wait(), 0, `Barrier at ${at(4)}`)
    t.is(bar.wait(), 0)

    const rl = RLock.at(mem, at(5))
    rl.acquire()
    rl.acquire()
    rl.release()
    t.true(rl.locked, `RLock at ${at(5)}`)
    rl.release()
    t.false(rl.locked)

    const cl = Lock.at(mem, at(6))
    const cond = Condition.at(mem, at(6) + 64, cl)
    cl.acquire()
    t.false(cond.wait(1), `Condition at ${at(6) + 64}: times out`)
    t.true(cl.locked, 'and holds its lock again')
    cond.notifyAll()
    cl.release()

    const undo = Semaphore.at(mem, at(7), 1, { undo: true })
    t.true(undo.tryAcquire(), `undo Semaphore at ${at(7)}`)
    t.false(undo.tryAcquire())
    undo.release()
    t.is(undo.value, 1)
  }
  t.notThrows(() => mem.heap.check())
})

test('a SharedMap and a Channel whose blocks lie above 2^31 of a 3 GiB segment, read by another process', async (t) => {
  if (!canPunch) return t.pass('needs Linux and fallocate(1) to keep a 2 GiB heap fill sparse')
  const name = segmentName(t, 'big-map')
  const mem = MappedMemory.create(name, { size: 3 * GiB })
  t.teardown(() => mem.close())
  // A map made low, before the fill: its later entries land above 2^31, its first below.
  const low = new SharedMap<string, unknown>(mem)
  low.set('low', 'below 2^31')
  fillBelow2G(t, mem, name)
  const map = new SharedMap<string, unknown>(mem)
  const ch = new Channel<unknown>(mem, { capacity: 64 * 1024 })
  const lock = new Lock(mem)
  const sem = new Semaphore(mem, 1)
  for (const [what, o] of [['map', map], ['channel', ch], ['lock', lock], ['semaphore', sem]] as const) {
    t.true(o.toJSON().offset > TWO31, `the ${what} is above 2^31 (${o.toJSON().offset})`)
  }

  const value = (i: number) => ({ i, s: 'v'.repeat(i % 37), big: i * 2 ** 33 + 1, neg: -i })
  for (let i = 0; i < 200; i++) {
    map.set(`k${i}`, value(i))
    low.set(`k${i}`, i)
  }
  for (let i = 0; i < 200; i++) {
    t.deepEqual(map.get(`k${i}`), value(i))
    t.is(low.get(`k${i}`), i)
  }
  t.is(low.get('low'), 'below 2^31', 'the entry stored before the fill is still there')
  for (let i = 0; i < 200; i += 3) t.true(map.delete(`k${i}`))
  const kept = Array.from({ length: 200 }, (_, i) => i).filter((i) => i % 3 !== 0)
  t.is(map.size, kept.length)
  t.deepEqual([...map.keys()].sort(), kept.map((i) => `k${i}`).sort())
  t.is(low.size, 201)
  t.is([...low.keys()].length, 201)
  map.set('k0', 'again')
  t.is(map.get('k0'), 'again')

  // 200 messages through the ring (sizes vary, so it wraps), each as sent.
  const message = (i: number) => ({ i, text: 'm'.repeat((i * 97) % 3000) })
  for (let i = 0; i < 200; i += 10) {
    for (let j = i; j < i + 10; j++) ch.send(message(j))
    for (let j = i; j < i + 10; j++) t.deepEqual(ch.receive({ timeout: 0 }), message(j))
  }
  t.is(ch.length, 0)
  for (let i = 0; i < 20; i++) ch.send(message(1000 + i))

  const child = forkChild(t, 'big-child.mjs')
  child.proc.send({ map: map.toJSON(), ch: ch.toJSON(), lock: lock.toJSON(), sem: sem.toJSON(), count: 20 })
  const got = await child.message<{ entries: Array<[string, unknown]>; size: number; messages: unknown[]; gotLock: boolean; units: boolean[] }>()
  t.is(await child.exited, 0)
  const expected: Array<[string, unknown]> = kept.map((i): [string, unknown] => [`k${i}`, value(i)])
  expected.push(['k0', 'again'])
  expected.sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
  t.deepEqual(got.entries, expected, 'the child reads every entry, exactly')
  t.is(got.size, kept.length + 2, 'with the entry it stored')
  t.deepEqual(got.messages, Array.from({ length: 20 }, (_, i) => message(1000 + i)))
  t.true(got.gotLock)
  t.deepEqual(got.units, [true, false])
  t.deepEqual(map.get('from-child'), { pid: child.proc.pid }, 'what the child stored')
  t.is(sem.value, 1)
  t.notThrows(() => mem.heap.check())
})

test('Ref.string() in an 8 GiB segment: a short string with GiBs after it costs a short scan, not a window of what follows', (t) => {
  const mem = managedSegment(t, 'big-str', 8 * GiB)
  const s = mem.heap.newString('hi')
  t.true(s.offset < GiB)
  const p = Ref.at(mem, mem.heap.malloc(8), 'char *')
  p.value = s
  t.is(p.string(), 'hi', 'more than 4 GiB follows the string')
  t.is(p.string({ maxLength: 16 }), 'hi')
  t.is(p.string({ maxLength: 1 }), 'h')
  t.is(Ref.at(mem, s.offset, 'char').string(), 'hi', 'what a char * member reads as')
  // Many strings at many offsets, 1..7 GiB before the end: no ArrayBuffer of its own each
  // (the windows the segment keeps anyway are the only ones).
  const base = 2 * GiB - 4096
  mem.reserve(base, 64 * 1024)
  const before = process.memoryUsage().external
  const t0 = Date.now()
  for (let i = 0; i < 4000; i++) {
    const at = base + i * 16
    mem.view(at, 4).set([65 + (i % 26), 66, 0, 0])
    t.is(Ref.at(mem, at, 'char').string(), String.fromCharCode(65 + (i % 26)) + 'B')
  }
  t.true(process.memoryUsage().external - before < 8 * GiB, 'at most a few windows of 2 GiB were made')
  t.true(Date.now() - t0 < 5000, `4000 reads took ${Date.now() - t0} ms`)
  // Strings across the 1 GiB boundaries where windows (2 GiB, one every 1 GiB) start and end.
  for (const at of [3 * GiB - 3, 4 * GiB - 2, 7 * GiB - 1]) {
    mem.reserve(at - (at % 4096), 8192)
    mem.view(at, 6).set([...Buffer.from('abcde'), 0])
    t.is(Ref.at(mem, at, 'char').string(), 'abcde', `a string across ${at + 3}`)
    t.is(Ref.at(mem, at, 'char').string({ maxLength: 4 }), 'abcd')
  }
})

test('an unterminated string at the end of an 8 GiB segment: the error names its offset in the segment', (t) => {
  const mem = managedSegment(t, 'big-strmsg', 8 * GiB)
  const at = 8 * GiB - 3
  mem.reserve(at - 4093, 4096)
  mem.view(at, 3).set([72, 73, 74])
  throws(t, () => Ref.at(mem, at, 'char').string(), {
    instanceOf: ShmError, code: 'ERR_SHM_OUT_OF_BOUNDS', message: `the string at offset ${at} has no NUL before the end of the segment (3 bytes on)`,
  })
  t.is(Ref.at(mem, at, 'char').string({ maxLength: 3 }), 'HIJ', 'within maxLength it is no error')
})

test('mem.view of exactly the largest ArrayBuffer the runtime makes, in an 8 GiB segment', (t) => {
  // Node 20 makes ArrayBuffers of at most 4 GiB; Node 22 and later, of up to 2^53 - 1
  // bytes: the views go up to 4 GiB there, and the whole segment is one view.
  const runtimeMax = bufferConstants.MAX_LENGTH
  const max = Math.min(runtimeMax, 4 * GiB)
  const mem = managedSegment(t, 'big-view', 8 * GiB)
  for (const [offset, length] of [[0, max], [2 * GiB, max], [4 * GiB, max], [1, max], [3, max - 8], [4 * GiB + 2, 3 * GiB]] as const) {
    const v = mem.view(offset, length)
    t.is(v.length, length, `view(${offset}, ${length})`)
    v[0] = 7
    v[length - 1] = 9
    t.is(mem.view(offset, 1)[0], 7)
    t.is(mem.view(offset + length - 1, 1)[0], 9)
    v[0] = 0
    v[length - 1] = 0
  }
  // (Lengths only: a failing assertion must never format a view of GiBs.)
  let code: string | undefined
  let got = 0
  try {
    got = mem.view(0, Math.min(runtimeMax + 1, 8 * GiB)).length
  } catch (e) {
    code = (e as ShmError).code
  }
  if (runtimeMax < 8 * GiB) t.is(code, 'ERR_SHM_BUFFER_TOO_LARGE', 'one byte more than the runtime makes')
  else t.is(got, 8 * GiB, 'the whole segment in one view')
})
