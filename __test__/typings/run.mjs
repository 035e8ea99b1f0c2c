// The type test (`npm run test:types`, part of `npm test`): the package's published types
// seen by TypeScript users, in a throwaway project that installs it like a user would
// (see ../support/consumer.mjs), with `strict`, `module: nodenext` and default libraries:
//
// - api.mts (an ESM consumer) and cjs.cts (a CommonJS one): what compiles and, marked
//   @ts-expect-error, what must not;
// - every snippet of README.md and docs/ (../support/snippets.mjs) and every program in
//   examples/, TypeScript as it is and JavaScript with `checkJs`, so what readers copy
//   type-checks too.
//
// Needs the built package (npm run build). Exit code 0 when everything type-checks.
import { spawnSync } from 'node:child_process'
import { copyFileSync, readdirSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { ROOT, makeConsumer } from '../support/consumer.mjs'
import { findSnippets } from '../support/snippets.mjs'

const here = join(ROOT, '__test__', 'typings')
const { dir, remove } = makeConsumer('typings')
try {
  const files = []
  for (const f of readdirSync(here)) {
    if (!/\.(mts|cts)$/.test(f)) continue
    copyFileSync(join(here, f), join(dir, f))
    files.push(f)
  }
  // The examples, as the user code they are (JavaScript ones with checkJs). Two run
  // unchecked: the demo, CommonJS over require('node:cluster') (which @types/node types as
  // an ES module: no `isPrimary` on it), and the Python original's first example, a
  // line-by-line translation with untyped parameters.
  const examples = join(ROOT, 'examples')
  const unchecked = new Set(['counter.js', 'original-first.js'])
  for (const f of readdirSync(examples)) {
    if (!/\.(js|mjs|mts)$/.test(f) || unchecked.has(f)) continue
    const name = `examples-${f.replace(/\.js$/, '.cjs')}`
    copyFileSync(join(examples, f), join(dir, name))
    files.push(name)
  }
  const snippets = findSnippets().filter((s) => s.run)
  for (const s of snippets) {
    writeFileSync(join(dir, s.name), s.code)
    files.push(s.name)
  }
  const compilerOptions = {
    strict: true,
    module: 'nodenext',
    target: 'es2022',
    noEmit: true,
    allowJs: true,
    checkJs: true,
    types: ['node'],
    skipLibCheck: false,
  }
  writeFileSync(join(dir, 'tsconfig.json'), JSON.stringify({ compilerOptions, files }, null, 2))
  const tsc = join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc')
  const r = spawnSync(process.execPath, [tsc, '-p', '.', '--pretty', 'false'], { cwd: dir, encoding: 'utf8' })
  // Diagnostics name the Markdown line a snippet's error is on.
  const byName = new Map(snippets.map((s) => [s.name, s]))
  const out = `${r.stdout}${r.stderr}`
    .replaceAll(`${dir}/`, '')
    .replace(/^([^\s(]+)\((\d+),(\d+)\)/gm, (m, file, row, col) => {
      const s = byName.get(file)
      if (s) return `${s.file}:${s.line + Number(row) - 1}:${col} (${s.lang} snippet)`
      if (file.startsWith('examples-')) return `examples/${file.slice('examples-'.length).replace(/\.cjs$/, '.js')}:${row}:${col}`
      return `__test__/typings/${file}:${row}:${col}`
    })
  if (r.status !== 0) {
    process.stderr.write(out)
    process.stderr.write(`\ntype test: failed (tsc exit ${r.status})\n`)
    process.exitCode = 1
  } else {
    console.log(`type test: ${files.length - snippets.length} consumer files and examples, and ${snippets.length} documentation snippets type-check (strict, nodenext)`)
  }
} finally {
  remove()
}
