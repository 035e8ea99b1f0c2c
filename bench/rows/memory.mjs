/**
 * Rows 5.x: segments themselves. Bulk copy into a mapping against the same copy between
 * two ArrayBuffers; creating and attaching a segment against the bare system calls
 * (measured in C; without a C compiler, the nearest thing JavaScript can do through `fs`
 * on /dev/shm); first touch of a large segment with and without prefaulting.
 * @module
 */
import { closeSync, fstatSync, ftruncateSync, openSync, unlinkSync } from 'node:fs'
import { MappedMemory, PAGE_SIZE } from '../../dist/index.js'
import { runC } from '../cc.mjs'
import { alternate, medianPerOp, perCall, wallTime } from '../measure.mjs'
import { segmentName, unlinkSegment, withSegment } from '../segments.mjs'

const MiB = 1 << 20
/** Size of the segments created and attached in 5.2 and 5.3. */
const CYCLE_SIZE = MiB

/**
 * Bytes of the large rows (5.1 and 5.4).
 * @param {import('./row.mjs').Context} ctx
 */
const largeSize = (ctx) => (ctx.quick ? 16 * MiB : 256 * MiB)

/**
 * The path of a segment in /dev/shm (Linux), for the `fs` fallback baselines.
 * @param {string} name
 */
const devShm = (name) => `/dev/shm/${name.replace(/^\//, '')}`

/**
 * Without a C compiler, 5.2 and 5.3 fall back to `fs` on /dev/shm, which only Linux has.
 * @param {import('./row.mjs').Context} ctx
 */
const noBaseline = (ctx) => (ctx.features.cc || process.platform === 'linux' ? null : 'skipped: no C compiler and no /dev/shm')

/**
 * Iterations of one C measurement of 5.2 and 5.3.
 * @param {import('./row.mjs').Context} ctx
 */
const cIterations = (ctx) => (ctx.quick ? 200 : 5_000)

/**
 * Writes one byte in every page, so every page is faulted in.
 * @param {Uint8Array} bytes
 */
function touchPages(bytes) {
  for (let i = 0; i < bytes.length; i += PAGE_SIZE) bytes[i] = 1
}

/** @type {import('./row.mjs').Row[]} */
export const memoryRows = [
  {
    id: '5.1',
    key: 'bulk-copy-into-mapping-vs-arraybuffer',
    subject: 'Uint8Array.set of 256 MiB into a mapping',
    baseline: 'the same copy into an ArrayBuffer',
    per: 'copy',
    goal: 1.25,
    run: (ctx) => {
      const size = largeSize(ctx)
      return withSegment('copy', { size }, async (mem) => {
        const src = new Uint8Array(size)
        for (let i = 0; i < size; i += 4093) src[i] = i & 0xff
        const intoMapping = mem.bytes
        const intoBuffer = new Uint8Array(size)
        // Fault every destination page in first: this row is about copying.
        intoMapping.set(src)
        intoBuffer.set(src)
        const measured = await alternate(
          wallTime(() => intoMapping.set(src)),
          wallTime(() => intoBuffer.set(src)),
          ctx.effort.rounds,
        )
        if (intoMapping[4093] !== src[4093]) throw new Error('the copy did not land in the mapping')
        const gbps = (/** @type {number} */ ns) => +(size / ns).toFixed(2)
        return { ...measured, params: { bytes: size }, extra: { mappingGBps: gbps(measured.subject.median), arrayBufferGBps: gbps(measured.baseline.median) } }
      })
    },
  },
  {
    id: '5.2',
    key: 'segment-create-vs-syscalls',
    subject: 'MappedMemory.create + close + unlink, 1 MiB',
    baseline: 'C: shm_open + ftruncate + mmap + munmap + shm_unlink',
    per: 'segment',
    skip: noBaseline,
    run: async (ctx) => {
      const name = segmentName('create')
      const cName = segmentName('create-c')
      try {
        const cycle = () => {
          const mem = MappedMemory.create(name, { size: CYCLE_SIZE })
          mem.close()
          mem.unlink()
        }
        if (ctx.features.cc) {
          // Both sides as the median of individually timed operations (see medianPerOp).
          const subject = medianPerOp(cycle, cIterations(ctx))
          const iterations = cIterations(ctx)
          const baseline = async () => runC('shm_cycle', ['create', cName, CYCLE_SIZE, iterations]).ns_per_op
          return { ...(await alternate(subject, baseline, ctx.effort.rounds)), params: { bytes: CYCLE_SIZE, cIterations: iterations } }
        }
        const subject = perCall(cycle, ctx.effort)
        const path = devShm(cName)
        const baseline = perCall(() => {
          const fd = openSync(path, 'wx+', 0o600)
          ftruncateSync(fd, CYCLE_SIZE)
          closeSync(fd)
          unlinkSync(path)
        }, ctx.effort)
        return {
          ...(await alternate(subject, baseline, ctx.effort.rounds)),
          baselineLabel: 'JS (no C compiler): fs open + ftruncate + close + unlink on /dev/shm',
          params: { bytes: CYCLE_SIZE },
        }
      } finally {
        unlinkSegment(name)
        unlinkSegment(cName)
      }
    },
  },
  {
    id: '5.3',
    key: 'segment-open-vs-syscalls',
    subject: 'MappedMemory.open + close, 1 MiB',
    baseline: 'C: shm_open + fstat + mmap + munmap + close',
    per: 'attach',
    goal: 2,
    skip: noBaseline,
    run: (ctx) =>
      withSegment('open', { size: CYCLE_SIZE, managed: true }, async (_mem, name) => {
        const cycle = () => MappedMemory.open(name).close()
        if (ctx.features.cc) {
          const cName = segmentName('open-c')
          const iterations = cIterations(ctx)
          // Both sides as the median of individually timed operations (see medianPerOp).
          const subject = medianPerOp(cycle, iterations)
          try {
            const baseline = async () => runC('shm_cycle', ['attach', cName, CYCLE_SIZE, iterations]).ns_per_op
            return { ...(await alternate(subject, baseline, ctx.effort.rounds)), params: { bytes: CYCLE_SIZE, cIterations: iterations } }
          } finally {
            unlinkSegment(cName)
          }
        }
        const subject = perCall(cycle, ctx.effort)
        const path = devShm(name)
        const baseline = perCall(() => {
          const fd = openSync(path, 'r+')
          fstatSync(fd)
          closeSync(fd)
        }, ctx.effort)
        return {
          ...(await alternate(subject, baseline, ctx.effort.rounds)),
          baselineLabel: 'JS (no C compiler): fs open + fstat + close on /dev/shm',
          params: { bytes: CYCLE_SIZE },
        }
      }),
  },
  {
    id: '5.4',
    key: 'first-touch-prefault-vs-not',
    subject: 'create 256 MiB, prefault: true, touch every page',
    baseline: 'the same without prefault (pages faulted on touch)',
    per: 'segment',
    goal: 1,
    run: async (ctx) => {
      const size = largeSize(ctx)
      /** @param {boolean} prefault */
      const createAndTouch = (prefault) => async () => {
        const name = segmentName('touch')
        /** @type {MappedMemory | undefined} */
        let mem
        try {
          const t0 = process.hrtime.bigint()
          mem = MappedMemory.create(name, { size, prefault })
          touchPages(mem.bytes)
          return Number(process.hrtime.bigint() - t0)
        } finally {
          mem?.close()
          unlinkSegment(name)
        }
      }
      const measured = await alternate(createAndTouch(true), createAndTouch(false), ctx.effort.rounds)
      const pages = size / PAGE_SIZE
      return {
        ...measured,
        params: { bytes: size, pages },
        extra: { prefaultedNsPerPage: Math.round(measured.subject.median / pages), faultedNsPerPage: Math.round(measured.baseline.median / pages) },
      }
    },
  },
]
