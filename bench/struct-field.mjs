// Micro-benchmark: reading and writing an int32 struct member through a Ref's member
// property (and through an instance of a CBase class over the same struct), against
// DataView.getInt32/setInt32 at the same offset of the same mapping. Prints ns/op for
// each and the ratios (goal: within 2x). Run after `npm run build`:
//
//   node bench/struct-field.mjs [--ops N] [--rounds R] [--json]
//
// Rounds alternate between the two sides so that noise from a shared machine hits both;
// the best round of each is reported (the least disturbed one).
import { randomBytes } from 'node:crypto'
import { CBase, cdef, MappedMemory } from '../dist/index.js'

const args = process.argv.slice(2)
const opt = (name, dflt) => {
  const i = args.indexOf(name)
  return i >= 0 ? Number(args[i + 1]) : dflt
}
const OPS = opt('--ops', 5_000_000)
const ROUNDS = opt('--rounds', 9)
const JSON_OUT = args.includes('--json')

const ffi = cdef('struct sample { int32_t a; int32_t b; double c; };')
const mem = MappedMemory.create(`/shmutils-bench-${process.pid}-${randomBytes(4).toString('hex')}`, { size: 1 << 16 })
mem.unlink()
const ref = mem.new(ffi.typeof('struct sample'), { a: 1, b: 2, c: 3 })
class Sample extends CBase(ffi, 'struct sample') {}
const obj = Sample.withHeap(mem).new(1, 2, 3)
const dv = new DataView(mem.buffer)
const off = ref.offset + ffi.offsetof('struct sample', 'b')

function readRef(n) {
  let s = 0
  for (let i = 0; i < n; i++) s += ref.b
  return s
}
function readDataView(n) {
  let s = 0
  for (let i = 0; i < n; i++) s += dv.getInt32(off, true)
  return s
}
function readCBase(n) {
  let s = 0
  for (let i = 0; i < n; i++) s += obj.b
  return s
}
function writeCBase(n) {
  for (let i = 0; i < n; i++) obj.b = i & 0xffff
  return obj.b
}
function writeRef(n) {
  for (let i = 0; i < n; i++) ref.b = i & 0xffff
  return ref.b
}
function writeDataView(n) {
  for (let i = 0; i < n; i++) dv.setInt32(off, i & 0xffff, true)
  return dv.getInt32(off, true)
}

/** ns per operation of one run of `fn`. */
function time(fn) {
  const t0 = process.hrtime.bigint()
  const r = fn(OPS)
  const t1 = process.hrtime.bigint()
  if (typeof r !== 'number') throw new Error('unexpected result')
  return Number(t1 - t0) / OPS
}

const pairs = {
  read: [readRef, readDataView],
  write: [writeRef, writeDataView],
  'CBase read': [readCBase, readDataView],
  'CBase write': [writeCBase, writeDataView],
}
const best = {}
for (const [what, [viaRef, viaDv]] of Object.entries(pairs)) {
  // Warm up both until the optimizing compiler has had its go.
  for (let i = 0; i < 3; i++) {
    viaRef(OPS / 5)
    viaDv(OPS / 5)
  }
  let r = Infinity
  let d = Infinity
  for (let i = 0; i < ROUNDS; i++) {
    r = Math.min(r, time(viaRef))
    d = Math.min(d, time(viaDv))
  }
  best[what] = { ref: r, dataView: d, ratio: r / d }
}
mem.close()

if (JSON_OUT) {
  console.log(JSON.stringify({ ops: OPS, rounds: ROUNDS, ...best }))
} else {
  for (const [what, b] of Object.entries(best)) {
    console.log(
      `struct field ${what.padEnd(11)}  Ref ${b.ref.toFixed(2)} ns/op  DataView ${b.dataView.toFixed(2)} ns/op  ratio ${b.ratio.toFixed(2)}x ${b.ratio <= 2 ? '(within 2x)' : '(over 2x)'}`,
    )
  }
}
