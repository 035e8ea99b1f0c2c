// Child: INCR a Redis key `each` times, one command at a time (each waits for its reply).
import { RespClient } from '../resp.mjs'
import { serve } from './serve.mjs'

serve(async (job) => {
  const client = await RespClient.connect(job.port)
  return async () => {
    for (let i = 0; i < job.each; i++) await client.command('INCR', job.key)
    client.close()
    return job.each
  }
})
