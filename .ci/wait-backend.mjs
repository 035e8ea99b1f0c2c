// Reports how this Node process's async waits are served, judged from what the package
// does, not from what it says: with futex_waitv (Linux 5.16+) one waiter thread sleeps on
// up to 127 waits at once; where the kernel (or qemu-user) lacks it, the package falls
// back to one waiter thread per wait. Holds a lock, starts N `acquireAsync` waits, counts
// the threads of this process (/proc/self/task) before and while they wait, then lets
// them all through and checks that each acquired.
//
//   node .ci/wait-backend.mjs      prints one line: "wait backend: ..." (exit 1 if unclear)
import { readdirSync } from 'node:fs'
import { setTimeout as sleep } from 'node:timers/promises'
import { Lock, MappedMemory } from '../dist/index.js'

const N = 24
const threads = () => readdirSync('/proc/self/task').length

const mem = new MappedMemory(null, 4096)
const lock = Lock.at(mem, 0)
lock.acquire()
const before = threads()
let acquired = 0
const waits = Array.from({ length: N }, () =>
  lock.acquireAsync({ timeout: 60_000 }).then((ok) => {
    if (ok) acquired++
    lock.release()
  }),
)
// Give the waiter threads time to start (slow under emulation), then count them.
let added = 0
for (let i = 0; i < 30 && added < N; i++) {
  await sleep(100)
  added = threads() - before
}
lock.release()
await Promise.all(waits)
mem.close()

if (acquired !== N) {
  console.log(`wait backend: FAIL: ${acquired} of ${N} async waits acquired the lock`)
  process.exit(1)
}
if (added >= N) {
  console.log(`wait backend: no futex_waitv here: the package's fallback served ${N} async waits with ${added} new threads (one per wait); all ${N} acquired`)
} else if (added <= 2) {
  console.log(`wait backend: futex_waitv: ${N} async waits shared ${added} waiter thread(s); all ${N} acquired`)
} else {
  console.log(`wait backend: FAIL: ${N} async waits started ${added} threads, neither one per wait nor shared`)
  process.exit(1)
}
