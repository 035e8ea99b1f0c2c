// Child: `n` SharedMap operations on keys `user:0` .. `user:<keys - 1>` (this child's own
// range with `own`): 'get', 'set' (of `value`), or 'mix' (one set per 10). Before the
// barrier it does the same work for a while, so the timed run sees optimized code.
import { revive } from '../../dist/index.js'
import { serve } from './serve.mjs'

serve((job, { index }) => {
  const map = /** @type {import('../../dist/index.js').SharedMap<string, unknown>} */ (revive(job.map))
  const base = job.own ? index * job.keys : 0
  const keys = Array.from({ length: job.keys }, (_, i) => `user:${base + i}`)
  const k = job.keys
  const work = () => {
    let found = 0
    for (let i = 0; i < job.n; i++) {
      const key = keys[i % k]
      if (job.op === 'get' || (job.op === 'mix' && i % 10 !== 0)) {
        if (map.get(key) !== undefined) found++
      } else {
        map.set(key, job.value)
      }
    }
    return found
  }
  for (let i = 0; i < 3; i++) work()
  return work
})
