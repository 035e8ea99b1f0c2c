// Async waits keep the event loop running: a child process holds a Lock for a while and
// later notifies a Condition; meanwhile this process waits with acquireAsync/waitAsync
// and its timers keep ticking. Shows a timeout (false), an abort (AbortError) and
// withLockAsync.
//
//   node examples/async-waits.mjs
import assert from 'node:assert/strict'
import { fork } from 'node:child_process'
import { Condition, Lock, MappedMemory, revive } from 'shmutils'

if (process.argv[2] === 'child') {
  /** @type {{ lock: Lock, cond: Condition, ready: import('shmutils').Ref<number> }} */
  const { lock, cond, ready } = revive(JSON.parse(process.argv[3]))
  lock.acquire()
  process.send?.('holding')
  setTimeout(() => {
    lock.release() // after 300 ms
    setTimeout(() => {
      lock.withLock(() => {
        ready.value = 1
        cond.notifyAll()
      })
      process.disconnect()
    }, 200)
  }, 300)
} else {
  const mem = MappedMemory.create(`/shmutils-example-async-${process.pid}`, { size: 1 << 16 })
  try {
    const lock = new Lock(mem)
    const cond = new Condition(lock)
    const ready = mem.new('int32_t', 0)
    const child = fork(process.argv[1], ['child', JSON.stringify({ lock, cond, ready })])
    await new Promise((resolve) => child.once('message', resolve)) // the child holds the lock

    let ticks = 0
    const ticker = setInterval(() => ticks++, 10) // the event loop keeps running while we wait

    assert.equal(await lock.acquireAsync(50), false) // a timeout: false, nothing held
    await assert.rejects(lock.acquireAsync({ signal: AbortSignal.timeout(50) }), { name: 'AbortError' })
    const t0 = performance.now()
    await lock.withLockAsync(async () => {
      console.log(`got the lock after ${(performance.now() - t0).toFixed(0)} ms more; ${ticks} timer ticks so far`)
      // waitAsync releases the lock while waiting, and holds it again when it resolves.
      while (ready.value === 0) assert.equal(await cond.waitAsync({ timeout: 5000 }), true)
    })
    clearInterval(ticker)
    console.log(`notified by the child; ${ticks} timer ticks in all`)
    assert.ok(ticks > 20, 'timers ran while we waited')
    await new Promise((resolve) => child.once('exit', resolve))
  } finally {
    mem.close()
    mem.unlink()
  }
}
