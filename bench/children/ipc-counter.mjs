// Child: the counter lives in the parent; ask it to increment `each` times over
// process.send (JSON), waiting for every answer, as a cluster app without shared memory
// would.
import { serve } from './serve.mjs'

serve((job, { call }) => async () => {
  for (let i = 0; i < job.each; i++) await call('inc')
  return job.each
})
