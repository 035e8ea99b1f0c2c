// TypeScript end to end: a struct declared with `types.struct` gives typed references
// (members, init, get/at), and `revive<T>()` gives the receiving process the same types.
// Three child processes record samples into a shared struct under a Lock.
//
//   node --experimental-strip-types examples/typescript.mts    (Node >= 22.6; Node >= 23.6: no flag)
//   deno run -A examples/typescript.mts
//   or compile it with tsc first (module nodenext)
import assert from 'node:assert/strict'
import { fork } from 'node:child_process'
import { Lock, MappedMemory, type RefOf, revive, types } from 'shmutils'

const Stats = types.struct('stats', {
  count: types.u32,
  total: types.f64,
  max: types.f64,
  last: types.array(types.f64, 4), // the last four samples, newest first
  updatedBy: types.i32,
})
/** What the children receive: a lock and the typed reference to the stats. */
interface Shared {
  lock: Lock
  stats: RefOf<typeof Stats> // Ref<{ count: number; ... }> & { count: number; ... }
}

function record(shared: Shared, sample: number): void {
  const { lock, stats } = shared
  lock.withLock(() => {
    stats.count += 1 // a number: TypeScript knows every member's type
    stats.total += sample
    stats.max = Math.max(stats.max, sample)
    for (let i = 3; i > 0; i--) stats.last.set(i, stats.last.get(i - 1)) // get(i) is a number
    stats.last.set(0, sample)
    stats.updatedBy = process.pid
    // stats.count = 'many'   would not compile: count is a number
    // stats.median           would not compile: no such member
  })
}

if (process.argv[2] === 'child') {
  const shared = revive<Shared>(JSON.parse(process.argv[3]!))
  for (let i = 1; i <= 10; i++) record(shared, i * Number(process.argv[4]))
} else {
  const mem = MappedMemory.create(`/shmutils-example-ts-${process.pid}`, { size: 1 << 16 })
  try {
    const shared: Shared = { lock: new Lock(mem), stats: mem.new(Stats, { max: -Infinity }) }
    const json = JSON.stringify(shared)
    const children = [1, 2, 3].map((k) => fork(process.argv[1]!, ['child', json, String(k)], { execArgv: process.execArgv }))
    await Promise.all(children.map((c) => new Promise((resolve) => c.on('exit', resolve))))
    const { count, total, max } = shared.stats.value // a plain, typed copy
    console.log(`${count} samples, mean ${(total / count).toFixed(2)}, max ${max}`)
    assert.equal(count, 30)
    assert.equal(total, 55 * (1 + 2 + 3))
    assert.equal(max, 30)
  } finally {
    mem.close()
    mem.unlink()
  }
}
