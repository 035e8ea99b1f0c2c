// Every file in examples/ runs to completion (exit 0) and prints what it promises.
import { execFile } from 'node:child_process'
import { readdirSync } from 'node:fs'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import test from 'ava'

const ROOT = fileURLToPath(new URL('..', import.meta.url))

/** Each example with small arguments and what its output must contain. */
const EXAMPLES: Record<string, { args: string[]; expect: RegExp }> = {
  'counter.js': { args: ['2', '2000'], expect: /counter = 2000 \(limit 2000\)/ },
  'original-first.js': { args: [], expect: /counter\[0\] == 20000; r1 \+ r2 == \d+ \+ \d+ == 20000/ },
  'cache-cluster.js': { args: ['3', '2000'], expect: /3 workers × 2000 requests in \d+ ms: \d+ hits, \d+ misses\ncache holds \d+ users \(bound 1000\); user 7 is/ },
  'job-queue.js': { args: ['2', '5000'], expect: /5000 jobs through 2 workers[^\n]*\nsum of results (\d+) \(expected \1\)/ },
}

test('every example is covered here', (t) => {
  t.deepEqual(readdirSync(join(ROOT, 'examples')).filter((f) => f.endsWith('.js')).sort(), Object.keys(EXAMPLES).sort())
})

for (const [file, { args, expect }] of Object.entries(EXAMPLES)) {
  test(`examples/${file} runs and exits 0`, async (t) => {
    const { code, stdout, stderr } = await new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) => {
      execFile(process.execPath, [join(ROOT, 'examples', file), ...args], { cwd: ROOT, timeout: 90_000 }, (err, stdout, stderr) =>
        resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stdout, stderr }),
      )
    })
    t.is(code, 0, stderr)
    t.regex(stdout, expect)
  })
}
