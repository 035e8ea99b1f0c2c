// Child: one end of a Channel: the producer sends `n` small messages, the consumer receives
// `n` (and returns a checksum of them); `pingpong`: the first child sends on `a` and waits
// for the answer on `b`, the second answers, `n` round trips.
import { revive } from '../../dist/index.js'
import { serve } from './serve.mjs'

serve((job, { index }) => {
  const { a, b } = /** @type {{ a: import('../../dist/index.js').Channel<any>, b: import('../../dist/index.js').Channel<any> }} */ (revive(job.channels))
  if (job.mode === 'stream') {
    if (index === 0) {
      return () => {
        for (let i = 0; i < job.n; i++) a.send({ i, op: 'add' })
        return job.n
      }
    }
    return () => {
      let sum = 0
      for (let i = 0; i < job.n; i++) sum += a.receive().i
      return sum
    }
  }
  // Round trips: index 0 asks, index 1 answers.
  if (index === 0) {
    return () => {
      for (let i = 0; i < job.n; i++) {
        a.send(i)
        if (b.receive() !== i) throw new Error('out of order')
      }
      return job.n
    }
  }
  return () => {
    for (let i = 0; i < job.n; i++) b.send(a.receive())
    return job.n
  }
})
