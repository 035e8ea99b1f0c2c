/**
 * Rows 7.x: what memory safety costs. The SIGBUS guard itself costs nothing until a
 * mapping loses pages (it is a signal handler); what every operation pays is the check
 * after it: one load of the process-wide GUARD word (lib/memory.ts). 7.1 times the real
 * Ref field read+write against the same property generated without the checks (same
 * code, same object layout); 7.2 times the two checks of a Lock
 * acquire+release on the same Atomics. 7.3 times heap growth that backs its memory with
 * fallocate as it goes (what makes a full /dev/shm answer ENOSPC instead of SIGBUS),
 * touching every block, against the same in anonymous shared memory, which has no file
 * to back and faults its pages in on first touch. 7.4 creates a 64 GiB segment (the
 * largest the tests try) against a 1 MiB one and records its RSS.
 * @module
 */
import { readFileSync } from 'node:fs'
import { Heap, MappedMemory, types } from '../../dist/index.js'
import { GUARD } from '../../dist/memory.js'
import { memberProperty, structLayoutAccessors } from '../../dist/types/access.js'
import { alternate, perCall } from '../measure.mjs'
import { segmentName, unlinkSegment, withSegment } from '../segments.mjs'

const MiB = 1 << 20

/** @param {import('./row.mjs').Context} _ctx */
const linuxOnly = (_ctx) => (process.platform === 'linux' ? null : 'skipped: Linux only (tmpfs backing, sparse 64 GiB objects)')

function guardTripped() {
  throw new Error('GUARD moved: a mapping of the bench lost pages')
}

/** This process's resident set, KiB. */
function rssKiB() {
  return Number(/VmRSS:\s+(\d+)/.exec(readFileSync('/proc/self/status', 'utf8'))?.[1] ?? NaN)
}

/**
 * Nanoseconds per `malloc(64 KiB)` + writing the block, while a heap grows from empty to
 * 48 MiB in a fresh 64 MiB mapping made before the clock starts: a managed segment
 * (blocks backed with fallocate as the heap grows) or anonymous shared memory (nothing to
 * back; pages allocated by the first write).
 * @param {boolean} backed
 */
function growth(backed) {
  const block = 64 << 10
  const count = (48 * MiB) / block
  return async () => {
    const name = segmentName('growth')
    const mem = backed ? MappedMemory.create(name, { size: 64 * MiB }) : new MappedMemory(null, 64 * MiB)
    try {
      const heap = backed ? mem.heap : Heap.create(mem)
      const t0 = process.hrtime.bigint()
      for (let i = 0; i < count; i++) mem.view(heap.malloc(block), block).fill(1)
      return Number(process.hrtime.bigint() - t0) / count
    } finally {
      mem.close()
      unlinkSegment(name)
    }
  }
}

/**
 * An object shaped like a `Ref` of `struct bench_point` (view, offset in it) whose member
 * `x` has the property the real one has, generated the same way (`memberProperty`), but
 * without the GUARD checks: the baseline of 7.1.
 * @param {DataView} dv
 * @param {number} at
 * @param {import('../../dist/types/index.js').Type} type
 */
function uncheckedRef(dv, at, type) {
  const VIEW = Symbol('view')
  const VOFF = Symbol('voff')
  const f = structLayoutAccessors(/** @type {any} */ (type)).fields.x
  class Unchecked {
    constructor() {
      this[VIEW] = dv
      this[VOFF] = at
    }
  }
  const desc = memberProperty(/** @type {any} */ (type), f, { view: 'this[VIEW]', base: 'this[VOFF]', after: '', names: ['VIEW', 'VOFF'], values: [VIEW, VOFF] })
  if (!desc) throw new Error('7.1 needs code generation (as the real accessors use)')
  Object.defineProperty(Unchecked.prototype, 'x', { ...desc, enumerable: true })
  return /** @type {{ x: number }} */ (/** @type {unknown} */ (new Unchecked()))
}

/**
 * Nanoseconds to create, close and unlink a managed segment of `size` bytes.
 * @param {number} size
 * @param {{ rss: number }} seen - the RSS right after the create is recorded here
 */
function createCycle(size, seen) {
  return async () => {
    const name = segmentName('big')
    const t0 = process.hrtime.bigint()
    const mem = MappedMemory.create(name, { size })
    seen.rss = Math.max(seen.rss, rssKiB())
    mem.close()
    unlinkSegment(name)
    return Number(process.hrtime.bigint() - t0)
  }
}

/** @type {import('./row.mjs').Row[]} */
export const guardRows = [
  {
    id: '7.1',
    key: 'guard-ref-field',
    subject: 'Ref field: ref.x = ref.x + 1 (int32), with its 2 GUARD checks',
    baseline: 'the same property without the checks',
    per: 'read+write',
    goal: 1.25,
    run: (ctx) =>
      withSegment('guard', { size: MiB, managed: true }, async (mem) => {
        const type = types.struct('bench_point', { x: types.i32, y: types.f64 })
        const ref = /** @type {any} */ (mem.new(type))
        const bare = uncheckedRef(new DataView(mem.buffer), ref.offset, type)
        ref.x = 41
        if (bare.x !== 41) throw new Error('the unchecked accessor reads other bytes')
        return alternate(
          perCall(() => {
            ref.x = ref.x + 1
          }, ctx.effort),
          perCall(() => {
            bare.x = bare.x + 1
          }, ctx.effort),
          ctx.effort.rounds,
        )
      }),
  },
  {
    id: '7.2',
    key: 'guard-checks-lock',
    subject: 'lock word CAS + owner stores + CAS, with the 2 GUARD checks of Lock acquire()+release()',
    baseline: 'the same Atomics, no checks',
    per: 'acquire+release',
    run: (ctx) =>
      withSegment('guard', { size: MiB }, async (mem) => {
        const a = new Int32Array(mem.buffer)
        const w = 1024
        const me = 4242
        return alternate(
          perCall(() => {
            if (Atomics.compareExchange(a, w, 0, me) !== 0) throw new Error('held')
            a[w + 3] = me
            a[w + 4] = 1
            a[w + 5] = 2
            if (GUARD[0] !== 0) guardTripped()
            Atomics.compareExchange(a, w, me, 0)
            if (GUARD[0] !== 0) guardTripped()
          }, ctx.effort),
          perCall(() => {
            if (Atomics.compareExchange(a, w, 0, me) !== 0) throw new Error('held')
            a[w + 3] = me
            a[w + 4] = 1
            a[w + 5] = 2
            Atomics.compareExchange(a, w, me, 0)
          }, ctx.effort),
          ctx.effort.rounds,
        )
      }),
  },
  {
    id: '7.3',
    key: 'backing-heap-growth',
    subject: 'heap.malloc(64 KiB) + fill, growing a heap to 48 MiB, backed (fallocate) as it grows',
    baseline: 'the same in anonymous shared memory (pages faulted in by the fill)',
    per: 'malloc+fill',
    skip: linuxOnly,
    run: async (ctx) => {
      const measured = await alternate(growth(true), growth(false), ctx.effort.rounds)
      return { ...measured, params: { block: 64 << 10, grownTo: 48 * MiB, segment: 64 * MiB } }
    },
  },
  {
    id: '7.4',
    key: 'segment-64-gib-create',
    subject: 'create + close + unlink a 64 GiB managed segment',
    baseline: 'the same for 1 MiB',
    per: 'cycle',
    skip: linuxOnly,
    run: async (ctx) => {
      const seen = { rss: 0 }
      const measured = await alternate(createCycle(64 * 1024 * MiB, seen), createCycle(MiB, { rss: 0 }), ctx.effort.rounds)
      return { ...measured, params: { size: 64 * 1024 * MiB }, extra: { rssAfterCreateKiB: seen.rss } }
    },
  },
]
