// A throwaway project that depends on this package the way an installed copy would:
// node_modules/shmutils links to the repository, so `require('shmutils')` and
// `import 'shmutils'` go through package.json "exports" (built files in dist/) exactly as
// for a user. Used by the type test (`npm run test:types`) and by the tests that run the
// snippets of README.md and docs/ and the examples.
import { mkdirSync, mkdtempSync, rmSync, symlinkSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'

/** The repository root. */
export const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..')

/**
 * Creates the project: a temporary directory with `node_modules/shmutils` (this
 * repository) and `node_modules/@types` (the repository's, for `@types/node`).
 * @param {string} tag - part of the directory name
 * @returns {{ dir: string, remove: () => void }}
 */
export function makeConsumer(tag) {
  const dir = mkdtempSync(join(tmpdir(), `shmutils-${tag}-`))
  mkdirSync(join(dir, 'node_modules'))
  symlinkSync(ROOT, join(dir, 'node_modules', 'shmutils'), 'dir')
  symlinkSync(join(ROOT, 'node_modules', '@types'), join(dir, 'node_modules', '@types'), 'dir')
  return { dir, remove: () => rmSync(dir, { recursive: true, force: true }) }
}
