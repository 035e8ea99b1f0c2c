// A Python process reads a struct that JavaScript wrote into a segment, with nothing but
// the standard library (multiprocessing.shared_memory and struct), and writes a member
// back; JavaScript sees the change in place.
//
//   node examples/python-interop.mjs     (needs python3)
import assert from 'node:assert/strict'
import { execFileSync } from 'node:child_process'
import { MappedMemory, types } from 'shmutils'

const Reading = types.struct('reading', {
  id: types.u32,
  celsius: types.f64,
  place: types.array(types.char, 16),
  seen: types.u32,
})

const name = `/shmutils-example-py-${process.pid}`
const mem = MappedMemory.create(name, { size: 1 << 16 })
try {
  const r = mem.new(Reading, { id: 7, celsius: 21.5, place: 'Lisbon' })
  assert.equal(Reading.size, 40) // what Python's struct format "<I4xd16sI4x" says too
  const script = new URL('python/reader.py', import.meta.url).pathname
  process.stdout.write(execFileSync('python3', [script, name, String(r.offset)], { encoding: 'utf8' }))
  console.log(`JavaScript sees seen = ${r.seen}`)
  assert.equal(r.seen, 1)
} finally {
  mem.close()
  mem.unlink()
}
