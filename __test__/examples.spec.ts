// Every program in examples/ runs to completion (each checks its own results with
// node:assert and exits non-zero otherwise) and leaves no segment behind. The C example
// compiles examples/c/counter.c with `cc`; the Python one runs python3; the TypeScript
// one also runs under Deno (the `deno` npm package, a dev dependency): the native addon,
// child processes and handles work there unchanged.
import test from 'ava'
import { readdirSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import ts from 'typescript'
import { ROOT, makeConsumer } from './support/consumer.mjs'
import { available, describeRun, runProgram } from './support/programs.js'

const examples = join(ROOT, 'examples')
const consumer = makeConsumer('examples')
test.after.always(() => consumer.remove())

/** Node runs TypeScript only from 22.6 on: the .mts example is compiled (types removed) first. */
function nodeProgram(file: string): string {
  if (!file.endsWith('.mts')) return join(examples, file)
  const source = ts.sys.readFile(join(examples, file)) ?? ''
  const out = ts.transpileModule(source, {
    fileName: file,
    compilerOptions: { module: ts.ModuleKind.NodeNext, target: ts.ScriptTarget.ES2022 },
  })
  const js = join(consumer.dir, file.replace(/\.mts$/, '.mjs'))
  writeFileSync(js, out.outputText)
  return js
}

const programs = readdirSync(examples).filter((f) => /\.(js|mjs|mts)$/.test(f))

test('the examples cover what the README promises', (t) => {
  for (const f of ['counter.js', 'typescript.mts', 'worker-threads.mjs', 'async-waits.mjs', 'condition-semaphore.js', 'c-interop.mjs', 'python-interop.mjs']) {
    t.true(programs.includes(f), f)
  }
})

/** What an example needs besides Node. */
const needs: Record<string, string> = { 'c-interop.mjs': 'cc', 'python-interop.mjs': 'python3' }
const deno = join(ROOT, 'node_modules', '.bin', 'deno')

for (const file of programs) {
  const title = `examples/${file} runs to completion and leaves no segment`
  const tool = needs[file]
  if (tool !== undefined && !available(tool)) {
    test.skip(`${title} [skipped: needs ${tool}, not found here]`, () => {})
    continue
  }
  test.serial(title, async (t) => {
    const r = await runProgram(process.execPath, [nodeProgram(file)], { cwd: ROOT, timeoutMs: 120_000 })
    t.log(r.stdout.trim().split('\n').slice(-4).join('\n'))
    t.is(r.exit, 0, describeRun(file, r))
    t.deepEqual(r.leaked, [], describeRun(file, r))
  })
}

// The deno npm package has builds for glibc Linux, macOS and Windows, not for musl.
const withDeno = available(deno)
const denoTitle = 'examples/typescript.mts runs under Deno too'
;(withDeno ? test.serial : test.skip)(withDeno ? denoTitle : `${denoTitle} [skipped: no Deno build for this system]`, async (t) => {
  const r = await runProgram(deno, ['run', '--allow-all', '--quiet', join(examples, 'typescript.mts')], {
    cwd: ROOT,
    timeoutMs: 120_000,
    env: { ...process.env, DENO_NO_UPDATE_CHECK: '1', NO_COLOR: '1' },
  })
  t.log(r.stdout.trim())
  t.is(r.exit, 0, describeRun('deno run examples/typescript.mts', r))
  t.regex(r.stdout, /30 samples, mean 11\.00, max 30/)
  t.deepEqual(r.leaked, [], describeRun('deno', r))
})
