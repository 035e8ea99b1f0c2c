/**
 * Row 6: a struct field read and written through a `Ref`, against the same bytes through
 * a DataView, once the types API is there (`mem.new` and `types.struct`).
 * @module
 */
import * as shm from '../../dist/index.js'
import { alternate, perCall } from '../measure.mjs'
import { withSegment } from '../segments.mjs'

/**
 * `struct bench_point { int32_t x; double y; }` in the package's type language.
 * @param {any} types
 */
function pointType(types) {
  return types.struct('bench_point', { x: types.i32, y: types.f64 })
}

/** @type {import('./row.mjs').Row[]} */
export const structRows = [
  {
    id: '6',
    key: 'struct-ref-vs-dataview',
    subject: 'Ref field: ref.x = ref.x + 1 (int32)',
    baseline: 'DataView getInt32 + setInt32, same bytes',
    per: 'read+write',
    goal: 1.25,
    skip: (ctx) => (ctx.features.struct ? null : 'skipped: struct types not available'),
    run: (ctx) =>
      withSegment('struct', { size: 1 << 20, managed: true }, async (mem) => {
        const ref = /** @type {any} */ (mem).new(pointType(/** @type {any} */ (shm).types))
        const dv = new DataView(mem.buffer)
        const at = ref.offset
        ref.x = 41
        if (dv.getInt32(at, true) !== 41) throw new Error(`ref.x is not the int32 at ref.offset (${at})`)
        return alternate(
          perCall(() => {
            ref.x = ref.x + 1
          }, ctx.effort),
          perCall(() => {
            dv.setInt32(at, dv.getInt32(at, true) + 1, true)
          }, ctx.effort),
          ctx.effort.rounds,
        )
      }),
  },
]
