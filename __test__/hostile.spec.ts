// Lock, heap and directory words written by a hostile or broken process: every call ends
// promptly in a typed error or a recovery, never in a hang. (The values are what such a
// process leaves: a 0xff fill, NOT_RECOVERABLE with flag bits, the thread id of some live
// process, a random number, the token of a live thread that holds nothing.) Serial: some
// tests block the event loop on purpose (bounded synchronous waits), which would skew the
// timings of the others. The last test damages random words under every container and
// primitive (fixtures/fuzz-child.mjs) and runs operations through them.
import test, { type ExecutionContext } from 'ava'
import { Channel, Condition, DEFAULT_HEAP_LOCK_TIMEOUT, Lock, MappedMemory, revive, RLock, Semaphore, SharedMap, ShmError } from '../dist/index.js'
import { forkChild, managedSegment, type Peer, rejection, segmentName, since, startPeer, throws } from './helpers.js'

const segment = (t: ExecutionContext, size = 1 << 16) => managedSegment(t, 'hostile', size)

/** A live process whose main thread's id and whose liveness token we learn. */
async function liveStranger(t: ExecutionContext, m: MappedMemory): Promise<{ peer: Peer; tid: number; token: number }> {
  const probe = new Lock(m)
  const peer = await startPeer(t, 'process')
  await peer.request('revive', { key: 'probe', handle: probe })
  const { pid } = await peer.request<{ pid: number }>('whoami')
  await peer.request('acquire', { key: 'probe' })
  const token = new Int32Array(m.buffer)[probe.offset >> 2]! & 0x3fff_ffff
  await peer.request('release', { key: 'probe' })
  return { peer, tid: pid, token }
}

const DEAD_FOREVER = [0x7fff_ffff, 0xffff_ffff | 0, 0x3fff_ffff]

test.serial('heap lock word: a 0xff fill or NOT_RECOVERABLE with flags fails at once with ERR_SHM_CORRUPT', (t) => {
  for (const word of DEAD_FOREVER) {
    const m = segment(t)
    const heap = m.heap
    const i32 = new Int32Array(m.buffer)
    i32[heap.offset >> 2] = word
    const t0 = performance.now()
    throws(t, () => heap.malloc(16), { instanceOf: ShmError, code: 'ERR_SHM_CORRUPT' }, `word ${(word >>> 0).toString(16)}`)
    throws(t, () => heap.find('x'), { code: 'ERR_SHM_CORRUPT' })
    t.true(since(t0) < 1000, `${since(t0).toFixed(0)} ms`)
  }
})

test.serial('heap lock word naming a live unrelated thread or a random token: recovered (heap repaired) within 250 ms', async (t) => {
  const m = segment(t)
  const heap = m.heap
  const { tid } = await liveStranger(t, m)
  const i32 = new Int32Array(m.buffer)
  for (const word of [tid, tid | (1 << 31), 0x2bad_1dea, 1 << 30]) {
    i32[heap.offset >> 2] = word
    const t0 = performance.now()
    const off = heap.malloc(100)
    t.true(since(t0) < 250, `${word.toString(16)}: ${since(t0).toFixed(0)} ms`)
    heap.free(off)
    heap.check()
  }
})

test.serial('heap lock word naming a live thread that never lets go: ETIMEDOUT after the heap\'s lockTimeout (default 10 s)', async (t) => {
  const m = segment(t)
  const heap = m.heap
  t.is(heap.lockTimeout, DEFAULT_HEAP_LOCK_TIMEOUT)
  t.is(DEFAULT_HEAP_LOCK_TIMEOUT, 10_000)
  const { token } = await liveStranger(t, m)
  new Int32Array(m.buffer)[heap.offset >> 2] = token
  heap.lockTimeout = 300
  const t0 = performance.now()
  throws(t, () => heap.malloc(16), { instanceOf: ShmError, code: 'ETIMEDOUT' })
  const ms = since(t0)
  t.true(ms >= 290 && ms < 2000, `${ms.toFixed(0)} ms`)
  throws(t, () => (heap.lockTimeout = -1), { instanceOf: RangeError })
  throws(t, () => (heap.lockTimeout = 'x' as unknown as number), { instanceOf: TypeError })
  // Cleared, the heap works again.
  new Int32Array(m.buffer)[heap.offset >> 2] = 0
  t.notThrows(() => heap.free(heap.malloc(16)))
})

for (const Cls of [Lock, RLock]) {
  test.serial(`${Cls.name} word: a 0xff fill or NOT_RECOVERABLE with flags is ERR_SHM_NOT_RECOVERABLE at once, sync and async`, async (t) => {
    const m = segment(t)
    for (const word of DEAD_FOREVER) {
      const lock = new Cls(m)
      new Int32Array(m.buffer)[lock.offset >> 2] = word
      const t0 = performance.now()
      throws(t, () => lock.acquire({ timeout: 5000 }), { instanceOf: ShmError, code: 'ERR_SHM_NOT_RECOVERABLE' })
      throws(t, () => lock.tryAcquire(), { code: 'ERR_SHM_NOT_RECOVERABLE' })
      const e = await rejection(lock.acquireAsync({ timeout: 5000 }))
      t.is(e.code, 'ERR_SHM_NOT_RECOVERABLE')
      throws(t, () => lock.release(), { code: 'ERR_SHM_NOT_OWNER' })
      t.true(since(t0) < 500, `${since(t0).toFixed(0)} ms`)
    }
  })

  test.serial(`${Cls.name} word naming a live unrelated thread's id or a random token: recovered with ownerDied within 250 ms`, async (t) => {
    const m = segment(t)
    const { tid } = await liveStranger(t, m)
    for (const [word, mode] of [[tid, 'sync'], [tid | (1 << 31), 'async'], [0x1234_5678, 'sync'], [0x3fff_fffe, 'async']] as const) {
      const lock = new Cls(m)
      new Int32Array(m.buffer)[lock.offset >> 2] = word
      const t0 = performance.now()
      t.true(mode === 'sync' ? lock.acquire({ timeout: 2000 }) : await lock.acquireAsync({ timeout: 2000 }))
      t.true(since(t0) < 250, `${word.toString(16)} ${mode}: ${since(t0).toFixed(0)} ms`)
      t.true(lock.ownerDied)
      if (lock instanceof RLock) t.is(lock.depth, 1, 'the dead holder\'s depth is discarded')
      lock.markConsistent()
      lock.release()
      t.false(lock.locked)
    }
  })
}

/** The directory entry of `name` (docs/FORMAT.md §5), as offsets in the mapping. */
function entryOf(m: MappedMemory, name: string): { state: number; type: number } {
  const dv = new DataView(m.buffer)
  const H = m.heap.offset
  const fl = dv.getUint32(H + 72, true)
  const buckets = dv.getUint32(H + 84, true)
  const D = ((152 + 4 * fl + 7) & ~7) + 128 * fl
  let h = 0xcbf29ce484222325n
  for (const b of Buffer.from(name)) h = BigInt.asUintN(64, (h ^ BigInt(b)) * 0x100000001b3n)
  let e = Number(dv.getBigUint64(H + D + 8 * Number(h & BigInt(buckets - 1)), true))
  while (e !== 0 && dv.getBigUint64(H + e + 8, true) !== h) e = Number(dv.getBigUint64(H + e, true))
  if (e === 0) throw new Error(`no entry for ${name}`)
  return { state: H + e + 32, type: H + e + 48 + dv.getUint32(H + e + 36, true) }
}

test.serial('a directory entry whose state is not 0, 1 or a constructor\'s token fails find/named at once with ERR_SHM_CORRUPT', (t) => {
  const m = segment(t)
  m.heap.named('x', 'int32_t', 5)
  const { state } = entryOf(m, 'x')
  // Odd values other than 1, and even ones beyond a token's 30 bits (docs/FORMAT.md §5).
  for (const garbage of [3, 0xff, 0x8000_0000 | 0, 0xffff_ffff | 0]) {
    new Int32Array(m.buffer)[state >> 2] = garbage
    const t0 = performance.now()
    throws(t, () => m.heap.find('x'), { instanceOf: ShmError, code: 'ERR_SHM_CORRUPT' })
    throws(t, () => m.heap.named('x', 'int32_t'), { code: 'ERR_SHM_CORRUPT' })
    t.true(since(t0) < 500, `${since(t0).toFixed(0)} ms`)
  }
  new Int32Array(m.buffer)[state >> 2] = 1
  t.is(m.heap.find<number>('x')!.value, 5)
})

test.serial('a corrupt stored type description is ERR_SHM_CORRUPT (segment damage), not a TypeError', (t) => {
  const m = segment(t)
  m.heap.named('y', 'uint64_t', 1n)
  const { type } = entryOf(m, 'y')
  const bytes = new Uint8Array(m.buffer)
  // The stored description is '"uint64_t"': 'x' over the quote makes it no JSON, a space
  // over the 'u' a JSON string that names no type.
  for (const [at, byte] of [[0, 0x78], [1, 0x20]] as const) {
    const saved = bytes[type + at]!
    bytes[type + at] = byte
    const e = throws(t, () => m.heap.find('y'), { instanceOf: ShmError, code: 'ERR_SHM_CORRUPT' })
    t.regex(e!.message, /corrupt type description/)
    bytes[type + at] = saved
  }
  t.is(m.heap.find<bigint>('y')!.value, 1n)
  // Descriptions of the same length that parse: a larger type (its reference would reach
  // into the neighbouring blocks) and one no reference can be made of. find() and named()
  // alike.
  m.heap.named('z', 'uint8_t[100]')
  const z = entryOf(m, 'z').type
  const original = Buffer.from(bytes.subarray(z, z + JSON.stringify({ array: 'uint8_t', length: 100 }).length)).toString()
  t.deepEqual(JSON.parse(original), { array: 'uint8_t', length: 100 }, 'the stored description, whole')
  for (const forged of [original.replace('100', '999'), JSON.stringify({ opaque: 'struct', tag: 'x' }).padEnd(original.length, ' ')]) {
    t.is(forged.length, original.length)
    bytes.set(Buffer.from(forged), z)
    for (const op of [() => m.heap.find('z'), () => m.heap.named('z', 'uint8_t[100]')]) {
      const e = throws(t, op, { instanceOf: ShmError, code: 'ERR_SHM_CORRUPT' })
      t.regex(e!.message, /corrupt type description/)
    }
  }
  bytes.set(Buffer.from(original), z)
  t.is(m.heap.find<number[]>('z')!.length, 100)
})

test.serial('condition counts with more signals than waiters never make a wait report a notification nobody sent', async (t) => {
  const m = segment(t)
  const lock = new Lock(m)
  const cond = new Condition(lock)
  const counts = (cond.offset >> 2) + 1
  const i32 = new Int32Array(m.buffer)
  for (const garbage of [0x0005_0000, 0xffff_0000 | 0, 0xffff_0001 | 0, 0x0003_0003]) {
    i32[counts] = garbage
    lock.acquire()
    t.false(cond.wait(120), `sync, counts ${(garbage >>> 0).toString(16)}`)
    t.false(await cond.waitAsync({ timeout: 120 }), `async, counts ${(garbage >>> 0).toString(16)}`)
    lock.release()
  }
})

test.serial('records are tagged with their kind; .at refuses a record of another kind', (t) => {
  const m = segment(t)
  const lock = new Lock(m)
  const rlock = new RLock(m)
  const cond = new Condition(lock)
  const i32 = new Int32Array(m.buffer)
  t.deepEqual([lock, rlock, cond].map((r) => i32[(r.offset >> 2) + 2]), [1, 2, 3])
  t.is(i32[(m.heap.offset >> 2) + 2], 1, 'the heap lock is a Lock')
  throws(t, () => Lock.at(m, cond.offset), { instanceOf: TypeError, message: /is a CONDITION \(kind 3\), not a Lock/ })
  throws(t, () => Condition.at(m, lock.offset, lock), { instanceOf: TypeError, message: /is a LOCK/ })
  t.notThrows(() => RLock.at(m, lock.offset), 'Lock and RLock records share a format')
})

test.serial('a read-only mapping takes no lock and claims no token (its token would be the writable mappings\' one)', (t) => {
  const m = segment(t)
  const lock = new Lock(m)
  m.heap.named('z', 'int32_t', 3)
  const before = new Int32Array(m.buffer)[76 >> 2]
  const ro = MappedMemory.open(m.name!, { readOnly: true })
  t.teardown(() => ro.close())
  throws(t, () => Lock.at(ro, lock.offset), { instanceOf: ShmError, code: 'ERR_SHM_READ_ONLY' })
  throws(t, () => ro.heap.find('z'), { code: 'ERR_SHM_READ_ONLY' })
  t.is(new Int32Array(m.buffer)[76 >> 2], before, 'token_next untouched by the refusals')
  t.true(lock.tryAcquire())
  lock.release()
})

test('a container\'s own fields damaged: bounds that checkOptions never writes, a lock retagged as another record, are ERR_SHM_CORRUPT', (t) => {
  const m = segment(t, 1 << 20)
  const map = new SharedMap(m, { stripes: 1, maxBytes: 4096 })
  const dv = new DataView(m.buffer)
  for (const bad of [2.1219957905e-314, -1, 0.5, Number.NaN, Infinity]) {
    dv.setFloat64(map.offset + 48, bad, true) // M.MAX_BYTES
    throws(t, () => SharedMap.at(m, map.offset), { instanceOf: ShmError, code: 'ERR_SHM_CORRUPT', message: new RegExp(`maxBytes ${bad}`) })
  }
  const ch = new Channel(m, { capacity: 1024 })
  const sem = new Semaphore(m, 1)
  const i32 = new Int32Array(m.buffer)
  i32[(ch.offset + 64 + 8) >> 2] = i32[(sem.offset + 8) >> 2]! // the producer lock's kind tag: SEMAPHORE
  throws(t, () => Channel.at(m, ch.offset), { instanceOf: ShmError, code: 'ERR_SHM_CORRUPT', message: /the Channel at \d+: .* is a SEMAPHORE/ })
})

test('a container of another layout version (another shmutils made it) is ERR_SHM_BAD_HEADER from at, named and revive, and stays untouched', (t) => {
  const m = segment(t, 1 << 20)
  const map = SharedMap.named<string, number>(m, 'versioned', { stripes: 1 })
  map.set('k', 1)
  const ch = new Channel<number>(m, { capacity: 1024 })
  ch.send(2)
  const handles = [map.toJSON(), ch.toJSON()]
  const dv = new DataView(m.buffer)
  // docs/FORMAT.md §11.1: the layout version is the u32 at offset 4 of every container.
  for (const [offset, versions] of [[map.offset, [1, 2, 4, 0xffff_ffff]], [ch.offset, [0, 2]]] as const) {
    const good = dv.getUint32(offset + 4, true)
    for (const version of versions) {
      dv.setUint32(offset + 4, version, true)
      const bytes = m.buffer.slice(offset, offset + 256)
      const refusal = { instanceOf: ShmError, code: 'ERR_SHM_BAD_HEADER', message: new RegExp(`layout version ${version}; this shmutils reads version ${good}`) }
      if (offset === map.offset) {
        throws(t, () => SharedMap.at(m, offset), refusal, `SharedMap.at, version ${version}`)
        throws(t, () => SharedMap.named(m, 'versioned'), refusal, `SharedMap.named, version ${version}`)
        throws(t, () => revive(handles[0]), refusal, `revive(map), version ${version}`)
      } else {
        throws(t, () => Channel.at(m, offset), refusal, `Channel.at, version ${version}`)
        throws(t, () => revive(handles[1]), refusal, `revive(channel), version ${version}`)
      }
      t.deepEqual(m.buffer.slice(offset, offset + 256), bytes, 'the refusals wrote nothing')
    }
    dv.setUint32(offset + 4, good, true)
  }
  t.is(SharedMap.at<string, number>(m, map.offset).get('k'), 1)
  t.is(Channel.at<number>(m, ch.offset).receive(), 2)
})

test('fuzz: 1-6 damaged words under every container and primitive, 300 operations each: a ShmError or success, never another error, a signal or a hang', async (t) => {
  const children = [0, 1].map((i) => {
    const name = segmentName(t, 'fuzz')
    const child = forkChild(t, 'fuzz-child.mjs', [name, String(1 + i * 40), String(41 + i * 40)])
    return child.message<{ cases: number; found: unknown[]; codes: Record<string, number> }>().then(async (r) => ({ ...r, exit: await child.exited }))
  })
  const results = await Promise.all(children)
  for (const r of results) {
    t.is(r.exit, 0)
    t.is(r.cases, 40)
    t.deepEqual(r.found, [], JSON.stringify(r.found, null, 1))
    t.true((r.codes.ERR_SHM_CORRUPT ?? 0) > 100, `the damage was found: ${JSON.stringify(r.codes)}`)
  }
})
