// The code snippets of README.md and docs/*.md: every fenced ```js / ```ts block (also
// javascript, typescript, mjs, cjs, mts, cts) is a program that the tests run
// (__test__/snippets.spec.ts) and type-check (npm run test:types).
//
// A block that is deliberately partial says so on the line before its fence:
//
//   <!-- snippet: not run (why) -->
//
// Keep those few: a snippet readers copy should run as it is. A snippet that needs a
// program besides Node says which, the same way (the test is skipped, and says why, where
// that program is missing):
//
//   <!-- snippet: needs python3 -->
import { readdirSync, readFileSync } from 'node:fs'
import { join, relative } from 'node:path'
import { ROOT } from './consumer.mjs'

/** @type {Map<string, 'js' | 'ts'>} */
const LANGS = new Map([
  ['js', 'js'], ['javascript', 'js'], ['mjs', 'js'], ['cjs', 'js'],
  ['ts', 'ts'], ['typescript', 'ts'], ['mts', 'ts'], ['cts', 'ts'],
])
const OPT_OUT = /^<!--\s*snippet:\s*not run\b/
const NEEDS = /^<!--\s*snippet:\s*needs\s+([\w.-]+)\s*-->/

/**
 * @typedef {object} Snippet
 * @property {string} file - path relative to the repository, e.g. `docs/c-structs.md`
 * @property {number} line - line of the first code line (1-based)
 * @property {'js' | 'ts'} lang
 * @property {'esm' | 'cjs'} module - `esm` when the code imports or exports
 * @property {string} code
 * @property {boolean} run - false when opted out
 * @property {string | null} needs - a program it runs besides Node (`python3`), if any
 * @property {string} name - a file name for it: `<file>-L<line>.<ext>`
 */

/** The Markdown files whose snippets are tested: README.md and docs/ (not docs/api, generated). */
export function markdownFiles() {
  const docs = readdirSync(join(ROOT, 'docs'), { withFileTypes: true })
    .filter((d) => d.isFile() && d.name.endsWith('.md'))
    .map((d) => join(ROOT, 'docs', d.name))
  return [join(ROOT, 'README.md'), ...docs.sort()]
}

/**
 * Every snippet of `files`.
 * @param {string[]} [files]
 * @returns {Snippet[]}
 */
export function findSnippets(files = markdownFiles()) {
  /** @type {Snippet[]} */
  const out = []
  for (const path of files) {
    const file = relative(ROOT, path)
    const lines = readFileSync(path, 'utf8').split('\n')
    for (let i = 0; i < lines.length; i++) {
      const open = /^```(\w+)\s*$/.exec(lines[i])
      if (!open) continue
      let end = i + 1
      while (end < lines.length && !/^```\s*$/.test(lines[end])) end++
      const lang = LANGS.get(open[1])
      if (lang) {
        const code = lines.slice(i + 1, end).join('\n') + '\n'
        /** @type {'esm' | 'cjs'} */
        const module = /^\s*(import|export)\s/m.test(code) ? 'esm' : 'cjs'
        const ext = lang === 'ts' ? (module === 'esm' ? 'mts' : 'cts') : module === 'esm' ? 'mjs' : 'cjs'
        const previous = i > 0 ? lines[i - 1].trim() : ''
        out.push({
          file,
          line: i + 2,
          lang,
          module,
          code,
          run: !OPT_OUT.test(previous),
          needs: NEEDS.exec(previous)?.[1] ?? null,
          name: `${file.replace(/[/.]/g, '-')}-L${i + 2}.${ext}`,
        })
      }
      i = end
    }
  }
  return out
}
