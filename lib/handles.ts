/**
 * Handles: the JSON form of shareable objects, and `revive` / `reviver`, which turn
 * handles received from another process back into live objects.
 *
 * Every shareable object also keeps its handle in its own enumerable property
 * `$shmutils`, because structured clone (`worker.postMessage`, `workerData`, `fork` with
 * `serialization: 'advanced'`) copies own enumerable properties and drops the class: the
 * clone arrives as a plain object whose `$shmutils` is the handle, and `revive`
 * recognises that shape. Objects that cannot be shared hold a symbol there instead,
 * which makes the clone fail at the sender.
 * @module
 */
import { rangeError, typeError } from './errors.js'

/**
 * The JSON form of a shareable object; see {@link revive}.
 * @category Sharing between processes
 */
export interface Handle {
  /** The class of the object (`'MappedMemory'`, `'Lock'`, `'Ref'`, ...). */
  readonly $shmutils: string
  /** The segment's name. */
  readonly segment: string
  /** Byte offset of the object inside the segment. */
  readonly offset: number
  /** Class-specific fields. */
  readonly [k: string]: unknown
}

/** What an object that lives in a mapping knows of it (the mapping's own `$shmutils`). */
interface InMapping {
  readonly $shmutils: Handle | symbol
}

/**
 * @internal The `$shmutils` of an object in `memory`: the handle `make` builds from the
 * mapping's handle, or the mapping's symbol when the mapping cannot be shared.
 */
export function handleIn(memory: InMapping, make: (m: Handle) => Handle): Handle | symbol {
  const m = memory.$shmutils
  return typeof m === 'symbol' ? m : make(m)
}

/**
 * @internal `toJSON()` of a shareable object: its `$shmutils` handle.
 * @throws TypeError when it lives in memory another process cannot map
 */
export function handleOf(h: Handle | symbol, what: string): Handle {
  if (typeof h === 'symbol') throw typeError(`This ${what} is in an anonymous mapping and cannot be shared: put it in a named segment`)
  return h
}

type Reviver = (h: Handle) => unknown
const revivers = new Map<string, Reviver>()

/** @internal Registers how handles of one class are revived. */
export function registerReviver(kind: string, fn: Reviver): void {
  revivers.set(kind, fn)
}

/**
 * Whether `value` looks like a {@link Handle}.
 * @category Sharing between processes
 */
export function isHandle(value: unknown): value is Handle {
  return (
    typeof value === 'object' &&
    value !== null &&
    typeof (value as Handle).$shmutils === 'string' &&
    typeof (value as Handle).segment === 'string' &&
    typeof (value as Handle).offset === 'number'
  )
}

/**
 * The handle inside a structured clone of a shareable object (a plain object whose own
 * `$shmutils` is a handle), or `undefined`.
 */
function clonedHandle(value: object): Handle | undefined {
  const inner = (value as { $shmutils?: unknown }).$shmutils
  return isHandle(inner) ? inner : undefined
}

/** Revives one handle. */
function reviveHandle(h: Handle): unknown {
  const fn = revivers.get(h.$shmutils)
  if (!fn) throw typeError(`Unknown shmutils handle kind ${JSON.stringify(h.$shmutils)}`)
  return fn(h)
}

/**
 * Replaces every {@link Handle} in `value` (deeply: arrays, plain objects, `Map`s and
 * `Set`s) with a live object of the same class looking at the same bytes; so is every
 * structured clone of a shareable object (what `worker.postMessage`, `workerData` and
 * `fork` with `serialization: 'advanced'` deliver). Segments are opened once per process
 * and cached. Other values are returned as they are. Nesting deeper than 1000 levels is
 * a RangeError.
 *
 * What arrives from another process is `unknown` to TypeScript: name the type you expect.
 * @example
 * ```ts
 * // sender
 * child.send({ lock, hits })            // toJSON(): { $shmutils: 'Lock', segment, offset, ... }
 * // receiver
 * process.once('message', (msg) => {
 *   const { lock, hits } = revive<{ lock: Lock; hits: Ref<bigint> }>(msg)
 *   lock.withLock(() => { hits.value += 1n })
 * })
 * ```
 * @category Sharing between processes
 */
export function revive<T = unknown>(value: unknown): T {
  return reviveDeep(value, 0, new Map()) as T
}

/** How deep {@link revive} walks; deeper nesting is a RangeError, never a value left unrevived. */
const MAX_REVIVE_DEPTH = 1000

/**
 * `value` with its handles revived, in arrays, plain objects, `Map`s (keys and values)
 * and `Set`s: what structured clone carries. `done` maps each container met so far to
 * what replaces it, so that a structured clone's shared references and cycles come back
 * shared (and a cycle ends the walk).
 * @throws RangeError for nesting deeper than {@link MAX_REVIVE_DEPTH}
 */
function reviveDeep(value: unknown, depth: number, done: Map<object, unknown>): unknown {
  if (typeof value !== 'object' || value === null) return value
  const seen = done.get(value)
  if (seen !== undefined) return seen
  if (depth > MAX_REVIVE_DEPTH) throw rangeError(`revive: the value is nested more than ${MAX_REVIVE_DEPTH} levels deep`)
  if (isHandle(value)) return remember(done, value, reviveHandle(value))
  if (Array.isArray(value)) {
    const out: unknown[] = remember(done, value, new Array<unknown>(value.length))
    for (let i = 0; i < value.length; i++) if (i in value) out[i] = reviveDeep(value[i], depth + 1, done)
    return out
  }
  const proto = Object.getPrototypeOf(value)
  if (proto === Map.prototype) {
    const out = remember(done, value, new Map<unknown, unknown>())
    for (const [k, v] of value as Map<unknown, unknown>) out.set(reviveDeep(k, depth + 1, done), reviveDeep(v, depth + 1, done))
    return out
  }
  if (proto === Set.prototype) {
    const out = remember(done, value, new Set<unknown>())
    for (const v of value as Set<unknown>) out.add(reviveDeep(v, depth + 1, done))
    return out
  }
  if (proto !== Object.prototype && proto !== null) return value
  const cloned = clonedHandle(value)
  if (cloned) return remember(done, value, reviveHandle(cloned))
  const out: Record<string, unknown> = remember(done, value, Object.create(proto) as Record<string, unknown>)
  // Defined, not assigned: an own "__proto__" key (JSON.parse makes one) stays a key.
  for (const [k, v] of Object.entries(value)) Object.defineProperty(out, k, { value: reviveDeep(v, depth + 1, done), writable: true, enumerable: true, configurable: true })
  return out
}

function remember<V>(done: Map<object, unknown>, from: object, to: V): V {
  done.set(from, to)
  return to
}

/**
 * A `JSON.parse` reviver that turns handles into live objects.
 * @category Sharing between processes
 */
export const reviver = (_key: string, value: unknown): unknown => (isHandle(value) ? reviveHandle(value) : value)
