/**
 * What this machine and this build offer the rows: a C compiler, a Redis server, and the
 * parts of the API that land separately (the heap, struct types).
 * @module
 */
import * as shm from '../dist/index.js'
import { findCompiler } from './cc.mjs'
import { findRedisServer } from './redis.mjs'
import { withSegment } from './segments.mjs'

/** @returns {Promise<import('./rows/row.mjs').Features>} */
export async function detectFeatures() {
  const api = await withSegment('probe', { size: 1 << 16, managed: true }, (mem) => {
    const m = /** @type {any} */ (mem)
    return { heap: typeof m.heap?.malloc === 'function' && typeof m.heap?.free === 'function', memNew: typeof m.new === 'function' }
  })
  const types = /** @type {any} */ (shm).types
  return {
    cc: findCompiler(),
    redis: findRedisServer(),
    heap: api.heap,
    struct: api.memNew && typeof types?.struct === 'function',
  }
}
