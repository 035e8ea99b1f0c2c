// Worker thread: one end of the worker_threads baseline. 'produce': post `n` small messages
// on the given MessagePort; 'consume': count them, then report when the last arrived.
import { parentPort, workerData } from 'node:worker_threads'

const { role, port, n } = workerData
if (role === 'produce') {
  parentPort?.once('message', () => {
    parentPort?.postMessage({ start: String(process.hrtime.bigint()) })
    for (let i = 0; i < n; i++) port.postMessage({ i, op: 'add' })
  })
} else {
  let got = 0
  let sum = 0
  port.on('message', (/** @type {{ i: number }} */ m) => {
    sum += m.i
    if (++got === n) {
      parentPort?.postMessage({ end: String(process.hrtime.bigint()), sum })
      port.close()
    }
  })
  parentPort?.postMessage({ ready: true })
}
