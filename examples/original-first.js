// The original shmutils README's first example, translated line by line: a 400 KiB
// segment, a Lock and a size_t counter made with mem.new; the parent holds the lock
// while two workers (fresh processes: child_process.fork, not a fork(2) copy) run
// _increment_to; then counter == 20000 and the workers' counts sum to 20000.
//
//   node examples/original-first.js
'use strict'
const { fork } = require('node:child_process')
const assert = require('node:assert')
const { MappedMemory, Lock, revive } = require('..')

/** Returns the number of times we incremented the number. */
function _incrementTo(lock, value, limit) {
  let count = value.get(0)
  let numIncr = 0
  while (count < limit) {
    lock.withLock(() => {
      count = value.get(0)
      if (count >= limit) return
      numIncr += 1
      value.set(0, count + 1n)
    })
  }
  return numIncr
}

if (process.argv[2] === 'worker') {
  process.once('message', ({ lock, value, limit }) => {
    const n = _incrementTo(revive(lock), revive(value), BigInt(limit))
    process.send(n, () => process.exit(0))
  })
} else {
  const size = 4096 * 100
  const m = MappedMemory.create(`/test-lock-${process.pid}`, { size })
  try {
    const lock = new Lock(m)
    const counter = m.new('size_t *', 0)
    const workers = [fork(__filename, ['worker']), fork(__filename, ['worker'])]
    const results = workers.map((w) => new Promise((resolve, reject) => {
      w.once('message', resolve)
      w.once('exit', (code) => code && reject(new Error(`worker exited ${code}`)))
    }))
    lock.withLock(() => {
      for (const w of workers) w.send({ lock, value: counter, limit: 20_000 })
    })
    Promise.all(results).then(([r1, r2]) => {
      assert.strictEqual(counter.get(0), 20_000n)
      assert.strictEqual(r1 + r2, 20_000)
      console.log(`counter[0] == ${counter.get(0)}; r1 + r2 == ${r1} + ${r2} == ${r1 + r2}`)
    }).finally(() => {
      m.close()
      m.unlink()
    })
  } catch (e) {
    m.close()
    m.unlink()
    throw e
  }
}
