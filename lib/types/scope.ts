/**
 * Declaration scopes: what an `FFI` knows (typedefs, tags, constants), with
 * staging so a failed `cdef()` leaves its FFI unchanged.
 *
 * @module
 */
import type { EnumType, StructType, Type } from './type.js';
import { int16, int32, int64, uint16, uint32, uint64, int8, uint8 } from './type.js';

/** Marker for `void` where a type is expected (typedef of void, `void *` target). */
export const VOID: unique symbol = Symbol('void');
/** A type or `void`. */
export type TypeOrVoid = Type | typeof VOID;

/** C integer types used by constant expressions (LP64: long long == long). */
export type CIntType = 'int' | 'uint' | 'long' | 'ulong';

/** An integer constant with its C type. */
export interface CConstant {
  /** Value, already in range of `type`. */
  readonly value: bigint;
  /** C type of the constant. */
  readonly type: CIntType;
}

/** A tagged type: struct, union or enum. */
export type TaggedType = StructType | EnumType;

/**
 * One layer of declarations. Lookups fall through to `parent`; `commit()`
 * moves this layer's entries into the parent.
 */
export class Scope {
  /** Typedef names. */
  readonly typedefs = new Map<string, TypeOrVoid>();
  /** struct/union/enum tags (one namespace, as in C). */
  readonly tags = new Map<string, TaggedType>();
  /** Enumerators and `#define` integer constants. */
  readonly constants = new Map<string, CConstant>();
  /** Names of constants that came from `#define` (may be redefined). */
  readonly macros = new Set<string>();
  /** Enclosing layer. */
  readonly parent: Scope | null;

  /** @param parent layer to fall back to */
  constructor(parent: Scope | null = null) {
    this.parent = parent;
  }

  /** A typedef by name (user-declared first, then the built-in ones). */
  typedef(name: string): TypeOrVoid | undefined {
    for (let s: Scope | null = this; s !== null; s = s.parent) {
      const t = s.typedefs.get(name);
      if (t !== undefined) return t;
    }
    return BUILTIN_TYPEDEFS.get(name);
  }

  /** A user-declared typedef (no built-ins). */
  ownTypedef(name: string): TypeOrVoid | undefined {
    for (let s: Scope | null = this; s !== null; s = s.parent) {
      const t = s.typedefs.get(name);
      if (t !== undefined) return t;
    }
    return undefined;
  }

  /** A tag by name. */
  tag(name: string): TaggedType | undefined {
    for (let s: Scope | null = this; s !== null; s = s.parent) {
      const t = s.tags.get(name);
      if (t !== undefined) return t;
    }
    return undefined;
  }

  /** A constant by name. */
  constant(name: string): CConstant | undefined {
    for (let s: Scope | null = this; s !== null; s = s.parent) {
      const c = s.constants.get(name);
      if (c !== undefined) return c;
    }
    return undefined;
  }

  /** True if `name` is a `#define` constant. */
  isMacro(name: string): boolean {
    for (let s: Scope | null = this; s !== null; s = s.parent) {
      if (s.macros.has(name)) return true;
      if (s.constants.has(name)) return false;
    }
    return false;
  }

  /** Moves this layer's entries into the parent. */
  commit(): void {
    const p = this.parent;
    if (p === null) return;
    for (const [k, v] of this.typedefs) p.typedefs.set(k, v);
    for (const [k, v] of this.tags) p.tags.set(k, v);
    for (const [k, v] of this.constants) {
      p.constants.set(k, v);
      if (this.macros.has(k)) p.macros.add(k);
      else p.macros.delete(k);
    }
  }
}

/** Standard typedef names every scope knows (LP64). */
export const BUILTIN_TYPEDEFS: ReadonlyMap<string, Type> = new Map<string, Type>([
  ['int8_t', int8],
  ['uint8_t', uint8],
  ['int16_t', int16],
  ['uint16_t', uint16],
  ['int32_t', int32],
  ['uint32_t', uint32],
  ['int64_t', int64],
  ['uint64_t', uint64],
  ['size_t', uint64],
  ['ssize_t', int64],
  ['intptr_t', int64],
  ['uintptr_t', uint64],
  ['ptrdiff_t', int64],
  ['intmax_t', int64],
  ['uintmax_t', uint64],
  ['off_t', int64],
]);

const registry = new WeakMap<object, Scope>();

/** Associates `scope` with its owner (an `FFI`). */
export function registerScope(owner: object, scope: Scope): void {
  registry.set(owner, scope);
}

/** The scope of an `FFI`; throws a TypeError naming `what` for anything else. */
export function scopeOf(owner: unknown, what: string): Scope {
  const s = typeof owner === 'object' && owner !== null ? registry.get(owner) : undefined;
  if (s === undefined) throw new TypeError(`${what} must be an FFI (from cdef())`);
  return s;
}
