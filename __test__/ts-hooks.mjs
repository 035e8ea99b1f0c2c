// Module hooks that let Node run the TypeScript tests directly, on every Node version the
// package supports, with no native (per-platform) dev dependency: TypeScript's own
// transpiler (`ts.transpileModule`, from the `typescript` dev dependency, plain
// JavaScript) turns each `.ts`/`.mts` file into JavaScript as Node loads it, one file at
// a time, like Node's own type stripping (which Node 20 lacks). Type errors are
// `npm run typecheck`'s to find, not the test run's.
//
// `register-ts.mjs` installs them: synchronously in-thread (`module.registerHooks`, Node
// 22.15+) or in Node's hooks thread (`module.register`, Node 20), which imports this file
// and calls `resolve`/`load` below.
//
// - `.ts` and `.mts` files are ES modules whatever package.json's "type" says.
// - A relative or absolute `x.js` that does not exist but has an `x.ts` beside it loads
//   `x.ts` (TypeScript's convention: a module is imported by its emitted name);
//   `x.mjs` maps to `x.mts` the same way.
// - Each compiled file carries an inline source map: with `--enable-source-maps`, stack
//   traces and ava's failure reports point at the TypeScript lines.
import { readFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import { fileURLToPath } from 'node:url'

const require = createRequire(import.meta.url)
/** The TypeScript compiler, loaded on the first .ts file. */
let ts

const TS_FILE = /^file:.*\.m?ts$/
const JS_NAME = /\.(m?)js$/

/** The JavaScript for the TypeScript file at `url`. */
function compile(url) {
  ts ??= require('typescript')
  const fileName = fileURLToPath(url)
  return ts.transpileModule(readFileSync(fileName, 'utf8'), {
    fileName,
    compilerOptions: {
      module: ts.ModuleKind.ESNext,
      target: ts.ScriptTarget.ES2022,
      esModuleInterop: true,
      inlineSourceMap: true,
      inlineSources: true,
    },
  }).outputText
}

/** Whether `error` says the module was not found, and `specifier` may name a .ts twin. */
function mayBeTs(error, specifier) {
  const notFound = error?.code === 'ERR_MODULE_NOT_FOUND' || error?.code === 'MODULE_NOT_FOUND'
  return notFound && JS_NAME.test(specifier) && /^(\.{1,2}\/|\/|file:)/.test(specifier)
}

/** `x.js` → `x.ts`, `x.mjs` → `x.mts`. */
const tsTwin = (specifier) => specifier.replace(JS_NAME, '.$1ts')

/** What the load hooks answer for a TypeScript file. */
const loaded = (url) => ({ format: 'module', source: compile(url), shortCircuit: true })

/** Synchronous resolve hook (`module.registerHooks`). */
export function resolveSync(specifier, context, nextResolve) {
  try {
    return nextResolve(specifier, context)
  } catch (error) {
    if (!mayBeTs(error, specifier)) throw error
    return nextResolve(tsTwin(specifier), context)
  }
}

/** Synchronous load hook (`module.registerHooks`). */
export function loadSync(url, context, nextLoad) {
  return TS_FILE.test(url) ? loaded(url) : nextLoad(url, context)
}

/** Asynchronous resolve hook (`module.register`, Node 20). */
export async function resolve(specifier, context, nextResolve) {
  try {
    return await nextResolve(specifier, context)
  } catch (error) {
    if (!mayBeTs(error, specifier)) throw error
    return nextResolve(tsTwin(specifier), context)
  }
}

/** Asynchronous load hook (`module.register`, Node 20). */
export async function load(url, context, nextLoad) {
  return TS_FILE.test(url) ? loaded(url) : nextLoad(url, context)
}
