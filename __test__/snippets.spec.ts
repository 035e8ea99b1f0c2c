// Every code snippet of README.md and docs/ runs, as a reader would run it: saved to a file
// in a project that depends on shmutils, started with `node`, in a process of its own. It
// must exit with 0 and leave no segment in /dev/shm. TypeScript snippets are compiled
// first (types removed, as Node >= 23 or `tsc` would); `npm run test:types` type-checks
// them all. A snippet opts out only with `<!-- snippet: not run (why) -->` before its fence.
import test from 'ava'
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import ts from 'typescript'
import { makeConsumer } from './support/consumer.mjs'
import { available, describeRun, runProgram } from './support/programs.js'
import { findSnippets, type Snippet } from './support/snippets.mjs'

const snippets = findSnippets()
const consumer = makeConsumer('snippets')
test.after.always(() => consumer.remove())

/** The file to run: the snippet itself, or for TypeScript its JavaScript. */
function programOf(s: Snippet): string {
  if (s.lang === 'js') {
    writeFileSync(join(consumer.dir, s.name), s.code)
    return s.name
  }
  const out = ts.transpileModule(s.code, {
    fileName: s.name,
    compilerOptions: { module: ts.ModuleKind.NodeNext, target: ts.ScriptTarget.ES2022 },
  })
  const name = s.name.replace(/\.mts$/, '.mjs').replace(/\.cts$/, '.cjs')
  writeFileSync(join(consumer.dir, name), out.outputText)
  return name
}

test('the documentation has snippets, and opts few out', (t) => {
  t.true(snippets.length >= 10, `found ${snippets.length}`)
  const out = snippets.filter((s) => !s.run)
  t.true(out.length <= 3, `opted out: ${out.map((s) => `${s.file}:${s.line}`).join(', ')}`)
})

for (const s of snippets.filter((x) => x.run)) {
  const title = `${s.file}:${s.line} (${s.lang}) runs to completion and leaves no segment`
  if (s.needs !== null && !available(s.needs)) {
    test.skip(`${title} [skipped: needs ${s.needs}, not found here]`, () => {})
    continue
  }
  test.serial(title, async (t) => {
    const r = await runProgram(process.execPath, [programOf(s)], { cwd: consumer.dir, timeoutMs: 120_000 })
    t.log(r.stdout.trim().split('\n').slice(-3).join('\n'))
    t.is(r.exit, 0, describeRun(`${s.file}:${s.line}`, r))
    t.deepEqual(r.leaked, [], describeRun(`${s.file}:${s.line}`, r))
  })
}
