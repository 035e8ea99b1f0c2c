// JavaScript and C count in the same memory at the same time: this process creates a
// segment with a uint64_t counter, compiles examples/c/counter.c with `cc`, and runs two
// C processes that add to the counter while it adds too, all with atomic adds.
//
//   node examples/c-interop.mjs        (needs a C compiler: cc)
import assert from 'node:assert/strict'
import { execFile, execFileSync } from 'node:child_process'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { MappedMemory } from 'shmutils'

const N = 200_000
const dir = mkdtempSync(join(tmpdir(), 'shmutils-c-'))
const exe = join(dir, 'counter')
execFileSync('cc', ['-O2', '-o', exe, new URL('c/counter.c', import.meta.url).pathname])

const name = `/shmutils-example-c-${process.pid}`
const mem = MappedMemory.create(name, { size: 1 << 16 })
try {
  const hits = mem.heap.named('hits', 'uint64_t', 0)
  const run = promisify(execFile)
  const c = [run(exe, [name, String(hits.offset), String(N)]), run(exe, [name, String(hits.offset), String(N)])]
  const word = new BigInt64Array(mem.buffer, hits.offset, 1)
  for (let i = 0; i < N; i++) Atomics.add(word, 0, 1n)
  for (const { stdout } of await Promise.all(c)) process.stdout.write(stdout)
  console.log(`JavaScript added ${N}; counter = ${hits.value} (expected ${3 * N})`)
  assert.equal(hits.value, BigInt(3 * N))
} finally {
  mem.close()
  mem.unlink()
  rmSync(dir, { recursive: true, force: true })
}
