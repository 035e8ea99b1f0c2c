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
 * An integer macro: its value, evaluated where it was `#define`d, and the names its body
 * used directly, with what they meant then, so a use after one of them (or one of the
 * names a macro among them used, and so on) changed is an error ({@link staleDep}).
 */
export interface MacroConstant extends CConstant {
  readonly deps?: ReadonlyMap<string, MacroDep>;
}

/** What a `#define`d name stands for. */
export type MacroValue = MacroConstant | typeof OPAQUE;

/**
 * Counts the changes of meaning in a chain of scopes (a name `#define`d again or
 * `#undef`ined, a macro hiding an enumerator): one counter for a root scope and all its
 * layers. Defining a new name changes no meaning, so it does not count.
 */
export interface Generation {
  n: number;
}

/** Per macro, the generation in which {@link staleDep} last found it (and all it used) fresh. */
const freshIn = new WeakMap<MacroConstant, { readonly of: Generation; readonly n: number }>();

/**
 * The first name `m`'s body used, directly or through the macros it used, that stands for
 * something else in `scope` now (an `#undef`, a redefinition, an enumerator since), or
 * undefined when none did. Each macro keeps only its direct uses and the walk remembers
 * what it found fresh until a meaning changes, so a chain of n macros each using the
 * last costs O(n) to define and use, not O(n²) in time and memory.
 */
export function staleDep(scope: Scope, m: MacroConstant): { dep: MacroDep; now: MacroValue | undefined } | undefined {
  if (m.deps === undefined) return undefined;
  const gen = scope.generation;
  const seen = new Set<MacroConstant>();
  const todo = [m];
  for (let x = todo.pop(); x !== undefined; x = todo.pop()) {
    if (seen.has(x)) continue;
    seen.add(x);
    const f = freshIn.get(x);
    if (f !== undefined && f.of === gen && f.n === gen.n) continue;
    for (const dep of x.deps?.values() ?? []) {
      const now = dep.enumOnly ? scope.constant(dep.name) : (scope.macro(dep.name) ?? scope.constant(dep.name));
      if (now === undefined || now === OPAQUE || now.value !== dep.was.value || now.type !== dep.was.type) return { dep, now };
      if ((now as MacroConstant).deps !== undefined) todo.push(now as MacroConstant);
    }
  }
  for (const x of seen) freshIn.set(x, { of: gen, n: gen.n });
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
  /** Changes of meaning in this chain of layers ({@link staleDep}). */
  readonly generation: Generation;

  /** @param parent layer to fall back to */
  constructor(parent: Scope | null = null) {
    this.parent = parent;
    this.generation = parent?.generation ?? { n: 0 };
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
    if (this.macro(name) !== undefined || this.constant(name) !== undefined) this.generation.n++;
    this.macros.set(name, value);
  }

  /** `#undef name`: a tombstone when a parent layer defines it, so that it stays hidden. */
  undefine(name: string): void {
    if (this.isDefined(name)) this.generation.n++;
    if (this.parent?.isDefined(name) === true) this.macros.set(name, UNDEFINED);
    else this.macros.delete(name);
  }

  /**
   * Counts a change of meaning made other than by {@link define} and {@link undefine}:
   * a layer dropped (a failed `cdef()`: what {@link staleDep} found fresh through it may
   * not be so without it), names copied in by `include()`. What was found fresh is
   * found again.
   */
  changed(): void {
    this.generation.n++;
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
