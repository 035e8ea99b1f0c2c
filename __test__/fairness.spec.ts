// No starvation: four processes hammering one Lock for two seconds each get a fair share.
import test from 'ava'
import { Lock } from '../dist/index.js'
import { rawSegment, startPeer } from './helpers.js'

test('four processes hammering one Lock for 2 s each get at least 10% of the acquisitions', async (t) => {
  t.timeout(60_000)
  const m = rawSegment(t)
  const lock = Lock.at(m, 0)
  const peers = await Promise.all([0, 1, 2, 3].map(() => startPeer(t, 'process')))
  for (const p of peers) await p.request('revive', { key: 'l', handle: lock })
  const start = Date.now() + 300
  const counts = (await Promise.all(peers.map((p) => p.request<{ n: number }>('hammer', { key: 'l', ms: 2000, start })))).map((r) => r.n)
  const total = counts.reduce((a, b) => a + b, 0)
  const shares = counts.map((n) => n / total)
  t.log(`acquisitions: ${counts.join(', ')} (${shares.map((s) => (100 * s).toFixed(1) + '%').join(', ')})`)
  for (const s of shares) t.true(s >= 0.1, `share ${(100 * s).toFixed(1)}%`)
  t.false(lock.locked)
})
