// The containers against models: random sequences of operations on a SharedMap (against
// a JavaScript Map; an LRU-bounded one against a Map kept in access order) and on a
// Channel (against an array), with keys and values of every
// kind and size that changes a code path (short and long ASCII, non-ASCII, byte keys;
// values from empty to larger than a stripe's spare blocks; records that wrap around the
// ring's end), tables that grow, and the heap checked after each sequence. A second
// process reads the final contents back through a handle. The models hold what
// structuredClone makes of each value: what the 'v8' codec promises. Last, thousands of
// async sends and receives with aborts at random moments, against exactly-once delivery.
import test, { type ExecutionContext } from 'ava'
import fc from 'fast-check'
import { isDeepStrictEqual } from 'node:util'
import { Channel, type MappedMemory, SharedMap } from '../dist/index.js'
import { forkChild, managedSegment, seededRandom } from './helpers.js'

/** A fresh segment for each run (containers are not freed one by one: their segment goes). */
const segment = (t: ExecutionContext) => managedSegment(t, 'model', 4 << 20)

/** A key of the model: strings as they are, byte keys as 'b:' + hex (never equal to a string key's). */
type Key = string | Uint8Array
const modelKey = (k: Key): string => (typeof k === 'string' ? `s:${k}` : `b:${Buffer.from(k).toString('hex')}`)

const key: fc.Arbitrary<Key> = fc.oneof(
  fc.constantFrom('a', 'b', 'user:1', 'user:2', 'é', '世界', '🌍', ''),
  fc.string({ maxLength: 40 }),
  fc.nat({ max: 40 }).map((n) => 'k'.repeat(n)),
  fc.uint8Array({ maxLength: 12 }),
  fc.constantFrom(new Uint8Array([0x61]), new Uint8Array(0)),
)

const value: fc.Arbitrary<unknown> = fc.oneof(
  fc.integer(),
  fc.string({ maxLength: 30 }),
  fc.record({ id: fc.nat(), name: fc.string({ maxLength: 12 }), tags: fc.array(fc.string({ maxLength: 4 }), { maxLength: 3 }) }),
  // Larger than a stripe's spare blocks (2 KiB) and than the key/value scratch buffers.
  fc.nat({ max: 6000 }).map((n) => 'v'.repeat(n)),
  fc.constant(null),
)

type MapOp =
  | { op: 'set'; k: Key; v: unknown }
  | { op: 'get' | 'has' | 'delete'; k: Key }
  | { op: 'update'; k: Key; v: unknown }
  | { op: 'clear' }

const mapOp: fc.Arbitrary<MapOp> = fc.oneof(
  { weight: 6, arbitrary: fc.record({ op: fc.constant('set' as const), k: key, v: value }) },
  { weight: 3, arbitrary: fc.record({ op: fc.constantFrom('get' as const, 'has' as const, 'delete' as const), k: key }) },
  { weight: 2, arbitrary: fc.record({ op: fc.constant('update' as const), k: key, v: value }) },
  { weight: 1, arbitrary: fc.constant({ op: 'clear' as const }) },
)

/**
 * What a SharedMap should hold: entries by {@link modelKey}, each with its key and what
 * structuredClone makes of its value. With `maxEntries`, the Map's insertion order is
 * the access order (least recently used first) and stores evict as an LRU-bounded map
 * must.
 */
class MapModel {
  readonly entries = new Map<string, [Key, unknown]>()
  evicted = 0
  constructor(readonly maxEntries = Infinity) {}

  value(k: Key): unknown {
    return this.entries.get(modelKey(k))?.[1]
  }
  /** A use of `k` (a get or has): the most recently used, in a bounded map. */
  use(k: Key): void {
    const e = this.entries.get(modelKey(k))
    if (e === undefined || this.maxEntries === Infinity) return
    this.entries.delete(modelKey(k))
    this.entries.set(modelKey(k), e)
  }
  store(k: Key, v: unknown): void {
    this.entries.delete(modelKey(k))
    this.entries.set(modelKey(k), [k, structuredClone(v)])
    for (; this.entries.size > this.maxEntries; this.evicted++) this.entries.delete(this.entries.keys().next().value!)
  }
}

/** Runs `ops` on `map` and `model`; false at the first answer of the map the model does not give. */
function agree(map: SharedMap<Key, unknown>, model: MapModel, ops: readonly MapOp[]): boolean {
  for (const o of ops) {
    switch (o.op) {
      case 'set':
        map.set(o.k, o.v)
        model.store(o.k, o.v)
        break
      case 'get':
        if (!isDeepStrictEqual(map.get(o.k), model.value(o.k))) return false
        model.use(o.k)
        break
      case 'has':
        if (map.has(o.k) !== model.entries.has(modelKey(o.k))) return false
        model.use(o.k)
        break
      case 'delete':
        if (map.delete(o.k) !== model.entries.delete(modelKey(o.k))) return false
        break
      case 'update': {
        const before = model.value(o.k)
        let seen: unknown = 'not called'
        map.update(o.k, (old) => ((seen = old), o.v))
        if (!isDeepStrictEqual(seen, before)) return false
        model.store(o.k, o.v)
        break
      }
      case 'clear':
        map.clear()
        model.entries.clear()
        break
    }
    if (map.size !== model.entries.size) return false
  }
  const entries = [...map.entries()]
  return entries.length === model.entries.size && entries.every(([k, v]) => model.entries.has(modelKey(k)) && isDeepStrictEqual(v, model.value(k)))
}

test('SharedMap against a Map: random operations, every key and value kind, growing tables', async (t) => {
  let last: { map: SharedMap<Key, unknown>; model: MapModel; mem: MappedMemory } | null = null
  let runs = 0
  fc.assert(
    fc.property(fc.array(mapOp, { minLength: 1, maxLength: 300, size: 'large' }), fc.constantFrom(1, 4, 16), (ops, stripes) => {
      runs++
      if (last !== null) last.mem.close()
      const mem = segment(t)
      const map = new SharedMap<Key, unknown>(mem, { stripes, capacity: 4 })
      const model = new MapModel()
      last = { map, model, mem }
      if (!agree(map, model, ops)) return false
      mem.heap.check()
      return true
    }),
    { numRuns: 150, seed: 20261130 },
  )
  t.is(runs, 150)
  // The last map, read in another process through its handle: the same contents.
  const { map, model } = last!
  const child = forkChild(t, 'model-child.mjs')
  child.proc.send({ map: map.toJSON() })
  const got = await child.message<{ entries: Array<[string | number[], unknown]> }>()
  t.is(await child.exited, 0)
  t.is(got.entries.length, model.entries.size)
  for (const [k, v] of got.entries) {
    const key = typeof k === 'string' ? k : Uint8Array.from(k)
    t.deepEqual(v, model.value(key), modelKey(key))
  }
})

test('an LRU-bounded SharedMap against a Map kept in access order: the same entries evicted, in the same order', (t) => {
  let runs = 0
  let evicted = 0
  fc.assert(
    fc.property(fc.array(mapOp, { minLength: 1, maxLength: 300, size: 'large' }), fc.integer({ min: 1, max: 8 }), (ops, maxEntries) => {
      runs++
      const mem = segment(t)
      try {
        const map = new SharedMap<Key, unknown>(mem, { maxEntries })
        const model = new MapModel(maxEntries)
        const ok = agree(map, model, ops)
        evicted += model.evicted
        if (!ok) return false
        mem.heap.check()
        return true
      } finally {
        mem.close()
      }
    }),
    { numRuns: 150, seed: 20261130 },
  )
  t.is(runs, 150)
  t.true(evicted > 100, `${evicted} evictions`)
})

test('Channel against an array: random sends and receives of every size, wrapping the ring; full and empty answered', (t) => {
  const mem = managedSegment(t, 'model', 1 << 20)
  let runs = 0
  let full = 0
  let tooLarge = 0
  fc.assert(
    fc.property(
      fc.array(
        fc.oneof(
          { weight: 4, arbitrary: fc.record({ op: fc.constant('send' as const), v: fc.oneof(value, fc.nat({ max: 600 }).map((n) => 'm'.repeat(n))) }) },
          { weight: 2, arbitrary: fc.constant({ op: 'receive' as const }) },
        ),
        { minLength: 1, maxLength: 300, size: 'large' },
      ),
      fc.constantFrom(256, 1024, 4096),
      (ops, capacity) => {
        runs++
        // One ring after another in one segment: each is emptied at the end of its run
        // and stays allocated (a container is not freed on its own).
        const ch = new Channel<unknown>(mem, { capacity })
        const model: unknown[] = []
        {
          for (const o of ops) {
            if (o.op === 'send') {
              let sent: boolean
              try {
                sent = ch.send(o.v, { timeout: 0 })
              } catch (e) {
                // Larger than the ring: refused up front, nothing queued.
                if (!(e instanceof RangeError)) throw e
                tooLarge++
                continue
              }
              if (sent) model.push(structuredClone(o.v))
              else full++
              if (!sent && model.length === 0) return false // refused while empty: only a message the ring cannot hold may be
            } else {
              if (model.length === 0) {
                try {
                  ch.receive({ timeout: 0 })
                  return false
                } catch (e) {
                  if ((e as { code?: string }).code !== 'ETIMEDOUT') throw e
                }
              } else if (!isDeepStrictEqual(ch.receive({ timeout: 0 }), model.shift())) {
                return false
              }
            }
            if (ch.length !== model.length) return false
          }
          while (model.length !== 0) if (!isDeepStrictEqual(ch.receive({ timeout: 0 }), model.shift())) return false
          return ch.length === 0
        }
      },
    ),
    { numRuns: 200, seed: 20261130 },
  )
  t.is(runs, 200)
  t.true(full > 20 && tooLarge > 20, `${full} sends found the ring full, ${tooLarge} were larger than it`)
  mem.heap.check()
})

test('Channel async sends and receives with random aborts: every message exactly once, an aborted send never delivered, an aborted receive takes nothing', async (t) => {
  const mem = managedSegment(t, 'model', 1 << 20)
  const ch = new Channel<number>(mem, { capacity: 256 })
  const rnd = seededRandom(20261130)
  const delivered = new Set<number>() // sendAsync resolved true
  const withdrawn = new Set<number>() // sendAsync rejected with AbortError
  const got: number[] = []
  const sends = new Set<Promise<void>>()
  const receives = new Set<Promise<void>>()
  let nextId = 0
  let abortedReceives = 0
  const track = (set: Set<Promise<void>>, p: Promise<void>): void => {
    set.add(p)
    void p.finally(() => set.delete(p))
  }
  const expectAbort = (e: unknown): void => {
    if ((e as Error).name !== 'AbortError') throw e
  }
  for (let round = 0; round < 3000; round++) {
    const r = rnd()
    const ac = new AbortController()
    // A signal aborted before the call rejects at once; one aborted right after it stops
    // a call that had to wait (a free lock with a message, or room, completes at once);
    // one aborted later races the wait.
    if (r < 0.35) {
      const when = rnd()
      if (when < 0.1) ac.abort()
      track(receives, ch.receiveAsync({ signal: ac.signal }).then((m) => void got.push(m), (e) => (expectAbort(e), void abortedReceives++)))
      if (when >= 0.1 && when < 0.3) ac.abort()
      else if (when >= 0.3 && when < 0.5) setTimeout(() => ac.abort(), Math.floor(rnd() * 3))
    } else if (r < 0.7) {
      const id = nextId++
      const when = rnd()
      if (when < 0.05) ac.abort()
      track(sends, ch.sendAsync(id, { signal: ac.signal }).then((ok) => {
        if (!ok) throw new Error(`sendAsync(${id}) returned false with no timeout`)
        delivered.add(id)
      }, (e) => (expectAbort(e), void withdrawn.add(id))))
      if (when >= 0.05 && when < 0.25) ac.abort()
    } else {
      await new Promise((resolve) => setTimeout(resolve, rnd() < 0.5 ? 0 : 1))
    }
  }
  // Drain until every send has settled (a send blocked on a full ring goes on once there is room).
  for (let i = 0; i < 500 && (sends.size !== 0 || ch.length !== 0); i++) {
    while (ch.length !== 0) got.push(ch.receive({ timeout: 0 }))
    await new Promise((resolve) => setTimeout(resolve, 10))
  }
  t.is(sends.size, 0, 'every send settled')
  // Receivers still waiting end with ERR_SHM_CLOSED, having taken nothing.
  ch.close()
  const left = await Promise.allSettled([...receives])
  t.true(left.every((s) => s.status === 'rejected' && (s.reason as { code?: string }).code === 'ERR_SHM_CLOSED'))
  t.is(new Set(got).size, got.length, 'no message twice')
  t.deepEqual([...got].sort((a, b) => a - b), [...delivered].sort((a, b) => a - b), 'exactly the messages whose send resolved')
  t.false(got.some((m) => withdrawn.has(m)), 'no aborted send delivered')
  t.true(withdrawn.size > 50 && abortedReceives > 50 && delivered.size > 500, `${delivered.size} delivered, ${withdrawn.size} sends and ${abortedReceives} receives aborted`)
  mem.heap.check()
})
