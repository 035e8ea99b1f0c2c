/**
 * Declaration scopes: what an `FFI` knows (typedefs, tags, enumerators, macros), with
 * staging so a failed `cdef()` leaves its FFI unchanged.
 *
 * @module
 */
import { typeError } from '../errors.js';
import type { EnumType, StructType, Type } from './type.js';
import { int16, int32, int64, uint16, uint32, uint64, int8, uint8 } from './type.js';

/** Marker for `void` where a type is expected (typedef of void, `void *` target). */
export const VOID: unique symbol = Symbol('void');
/** A type or `void`. */
export type TypeOrVoid = Type | typeof VOID;

/** C integer types after the integer promotions (LP64: long long == long). */
export type CIntType = 'int' | 'uint' | 'long' | 'ulong';

/**
 * The type of a constant expression's value: a promoted integer type, or a narrower
 * one a cast produces (`(char)0`, `(bool)5`, `(short)x`), which `sizeof` sees and
 * arithmetic promotes to `int`, or `ptr`, a pointer cast (`sizeof((char *)0)` is 8),
 * which is only allowed where its value is not needed.
 */
export type CValueType = CIntType | 'bool' | 'schar' | 'uchar' | 'short' | 'ushort' | 'ptr';

/** An integer constant with its C type. */
export interface CConstant {
  /** Value, already in range of `type`. */
  readonly value: bigint;
  /** C type of the constant. */
  readonly type: CValueType;
}

/**
 * The value of a `#define` cdef() does not evaluate: function-like, or a body that is not
 * an integer constant expression. The name is still defined (`#ifdef` sees it), and an
 * expression that uses it is a `CDefError`, as C would substitute something else.
 */
export const OPAQUE: unique symbol = Symbol('opaque macro');
/**
 * A name a macro's body used when it was evaluated, and what it stood for then
 * (`enumOnly`: the macro's own name, which C does not replace again in its body, so
 * only an enumerator of that name counts).
 */
export interface MacroDep {
  readonly name: string;
  readonly enumOnly: boolean;
  readonly was: CConstant;
}

/**
 * An integer macro: its value, evaluated where it was `#define`d, and the names it used
 * (those of the macros it used too), so a use after one of them changed is an error.
 */
export interface MacroConstant extends CConstant {
  readonly deps?: ReadonlyMap<string, MacroDep>;
}

/** What a `#define`d name stands for. */
export type MacroValue = MacroConstant | typeof OPAQUE;

/**
 * The first name `m`'s body used that stands for something else in `scope` now (an
 * `#undef`, a redefinition, an enumerator since), or undefined when none did.
 */
export function staleDep(scope: Scope, m: MacroConstant): { dep: MacroDep; now: MacroValue | undefined } | undefined {
  if (m.deps === undefined) return undefined;
  for (const dep of m.deps.values()) {
    const now = dep.enumOnly ? scope.constant(dep.name) : (scope.macro(dep.name) ?? scope.constant(dep.name));
    if (now === undefined || now === OPAQUE || now.value !== dep.was.value || now.type !== dep.was.type) return { dep, now };
  }
  return undefined;
}

/**
 * A macro `#undef`ined in a staging layer while its parent defines it: lookups stop
 * there instead of falling through, and `commit()` removes it from the parent.
 */
const UNDEFINED: unique symbol = Symbol('undefined macro');

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
  /** Enumerators. */
  readonly constants = new Map<string, CConstant>();
  /**
   * `#define`d names. A separate namespace, as in C, where macros are replaced before
   * parsing: a macro hides an enumerator of the same name until it is `#undef`ined.
   */
  readonly macros = new Map<string, MacroValue | typeof UNDEFINED>();
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

  /** An enumerator by name (macros not included: see {@link Scope.macro}). */
  constant(name: string): CConstant | undefined {
    for (let s: Scope | null = this; s !== null; s = s.parent) {
      const c = s.constants.get(name);
      if (c !== undefined) return c;
    }
    return undefined;
  }

  /** The macro `name` if it is defined (and not `#undef`ined since). */
  macro(name: string): MacroValue | undefined {
    for (let s: Scope | null = this; s !== null; s = s.parent) {
      const m = s.macros.get(name);
      if (m !== undefined) return m === UNDEFINED ? undefined : m;
    }
    return undefined;
  }

  /** `defined NAME` of the preprocessor. */
  isDefined(name: string): boolean {
    return this.macro(name) !== undefined;
  }

  /** `#define name`: this layer's value, whatever the parent says. */
  define(name: string, value: MacroValue): void {
    this.macros.set(name, value);
  }

  /** `#undef name`: a tombstone when a parent layer defines it, so that it stays hidden. */
  undefine(name: string): void {
    if (this.parent?.isDefined(name) === true) this.macros.set(name, UNDEFINED);
    else this.macros.delete(name);
  }

  /** Moves this layer's entries into the parent (an `#undef` removes the parent's macro). */
  commit(): void {
    const p = this.parent;
    if (p === null) return;
    for (const [k, v] of this.typedefs) p.typedefs.set(k, v);
    for (const [k, v] of this.tags) p.tags.set(k, v);
    for (const [k, v] of this.constants) p.constants.set(k, v);
    for (const [k, v] of this.macros) {
      if (v === UNDEFINED) p.undefine(k);
      else p.define(k, v);
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
  if (s === undefined) throw typeError(`${what} must be an FFI (from cdef())`);
  return s;
}
