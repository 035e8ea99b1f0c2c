// A bounded queue between processes: two producer processes and two consumer processes
// share a ring of 4 slots in a segment. Semaphores count the free and the filled slots
// (producers block while the ring is full, consumers while it is empty), a Lock guards
// the ring's indices, and the parent waits on a Condition until every item was consumed.
//
//   node examples/condition-semaphore.js
'use strict'
const assert = require('node:assert/strict')
const { fork } = require('node:child_process')
const { Condition, Lock, MappedMemory, Semaphore, revive, types } = require('shmutils')

const SLOTS = 4
const PER_PRODUCER = 50
const Ring = types.struct('ring', {
  head: types.u32, // next slot to fill
  tail: types.u32, // next slot to empty
  consumed: types.u32,
  sum: types.i64,
  items: types.array(types.i32, SLOTS),
})

/**
 * A producer or a consumer process.
 * @param {string} role
 * @param {string} json - the handles
 */
function child(role, json) {
  /** @type {{ ring: import('shmutils').RefOf<typeof Ring>, lock: Lock, free: Semaphore, filled: Semaphore, done: Condition }} */
  const { ring, lock, free, filled, done } = revive(JSON.parse(json))
  if (role === 'producer') {
    for (let i = 1; i <= PER_PRODUCER; i++) {
      free.acquire() // blocks while the ring is full
      lock.withLock(() => {
        ring.items.set(ring.head, i)
        ring.head = (ring.head + 1) % SLOTS
      })
      filled.release()
    }
    return
  }
  for (;;) {
    filled.acquire() // blocks while the ring is empty
    const item = lock.withLock(() => {
      const v = ring.items.get(ring.tail)
      ring.tail = (ring.tail + 1) % SLOTS
      return v
    })
    free.release()
    if (item < 0) return // the parent's "no more items"
    lock.withLock(() => {
      ring.consumed += 1
      ring.sum += BigInt(item)
      if (ring.consumed === 2 * PER_PRODUCER) done.notifyAll()
    })
  }
}

if (process.argv[2]) {
  child(process.argv[2], process.argv[3])
} else {
  const mem = MappedMemory.create(`/shmutils-example-queue-${process.pid}`, { size: 1 << 16 })
  try {
    const lock = new Lock(mem)
    const shared = {
      ring: mem.new(Ring),
      lock,
      free: new Semaphore(mem, SLOTS),
      filled: new Semaphore(mem, 0),
      done: new Condition(lock),
    }
    const json = JSON.stringify(shared)
    const kids = ['producer', 'producer', 'consumer', 'consumer'].map((role) => fork(__filename, [role, json]))
    lock.withLock(() => {
      while (shared.ring.consumed < 2 * PER_PRODUCER) assert.ok(shared.done.wait({ timeout: 10_000 }), 'consumers progress')
    })
    for (let i = 0; i < 2; i++) {
      // One "no more items" per consumer.
      shared.free.acquire(10_000)
      lock.withLock(() => {
        shared.ring.items.set(shared.ring.head, -1)
        shared.ring.head = (shared.ring.head + 1) % SLOTS
      })
      shared.filled.release()
    }
    Promise.all(kids.map((k) => new Promise((resolve) => k.on('exit', resolve)))).then((codes) => {
      const expected = 2 * ((PER_PRODUCER * (PER_PRODUCER + 1)) / 2)
      console.log(`consumed ${shared.ring.consumed} items, sum ${shared.ring.sum} (expected ${expected}); exit codes ${codes}`)
      assert.equal(shared.ring.sum, BigInt(expected))
      assert.deepEqual(codes, [0, 0, 0, 0])
      mem.close()
      mem.unlink()
    })
  } catch (e) {
    mem.close()
    mem.unlink()
    throw e
  }
}
