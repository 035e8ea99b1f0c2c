// Cluster workers sharing an anonymous segment: it has no name, so nothing appears in
// /dev/shm and nothing can leak if the primary is killed; the memory goes with the last
// process that maps it. Workers revive the handles the primary sends them, which opens
// the segment through /proc/<primary pid>/fd/<fd> (Linux; same user).
//
//   node examples/cluster-anonymous.mjs [workers] [per worker]
import assert from 'node:assert/strict'
import cluster from 'node:cluster'
import { Lock, MappedMemory, revive } from 'shmutils'

const WORKERS = Number(process.argv[2] ?? 4)
const EACH = Number(process.argv[3] ?? 10_000)

if (cluster.isPrimary) {
  const mem = MappedMemory.anonymous({ size: 64 * 1024 }) // no name: a memfd
  const lock = new Lock(mem)
  const counter = mem.new('uint64_t', 0n)

  let exited = 0
  for (let i = 0; i < WORKERS; i++) {
    const worker = cluster.fork()
    // Once it listens: the handles name this process and its descriptor of the segment.
    worker.once('message', () => worker.send({ lock, counter, each: EACH }))
  }
  cluster.on('exit', (worker, code) => {
    assert.equal(code, 0, `worker ${worker.id} failed`)
    if (++exited < WORKERS) return
    const total = counter.value
    console.log(`${WORKERS} workers counted to ${total} (expected ${WORKERS * EACH})`)
    mem.close() // the last holder: the memory is freed now
    assert.equal(total, BigInt(WORKERS * EACH))
  })
} else {
  process.once('message', (msg) => {
    /** @type {{ lock: Lock, counter: import('shmutils').Ref<bigint>, each: number }} */
    const { lock, counter, each } = revive(msg)
    for (let i = 0; i < each; i++) {
      lock.acquire()
      counter.value += 1n
      lock.release()
    }
    process.disconnect()
  })
  process.send?.('ready')
}
