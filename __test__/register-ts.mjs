// Lets this Node process import TypeScript files: `node --import ./__test__/register-ts.mjs
// file.ts`. ava loads it into every test process (package.json, `ava.nodeArguments`), and
// the test helpers pass it to forked fixtures written in TypeScript. How it works:
// ts-hooks.mjs.
import module from 'node:module'
import { loadSync, resolveSync } from './ts-hooks.mjs'

if (typeof module.registerHooks === 'function') {
  // Node 22.15+: synchronous, in-thread hooks (module.register is deprecated from Node 26).
  module.registerHooks({ resolve: resolveSync, load: loadSync })
} else {
  // Node 20: the same hooks, asynchronous, in Node's module hooks thread.
  module.register('./ts-hooks.mjs', import.meta.url)
}
