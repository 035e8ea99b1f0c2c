// Child: `n` Redis GETs (JSON.parse of the reply) or SETs (JSON.stringify of `value`) on
// keys `user:0` .. `user:<keys - 1>`, one command at a time, as a cache client would.
import { RespClient } from '../resp.mjs'
import { serve } from './serve.mjs'

serve(async (job) => {
  const client = await RespClient.connect(job.port)
  return async () => {
    let found = 0
    for (let i = 0; i < job.n; i++) {
      const key = `user:${i % job.keys}`
      if (job.op === 'get') {
        const v = await client.command('GET', key)
        if (v !== null && JSON.parse(String(v)).id === job.value.id) found++
      } else {
        await client.command('SET', key, JSON.stringify(job.value))
      }
    }
    client.close()
    return found
  }
})
