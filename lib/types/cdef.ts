/**
 * `cdef()` and the `FFI` it returns: C declarations parsed into type objects.
 *
 * @module
 */
import { rangeError, typeError } from '../errors.js';
import { tokenize } from './lexer.js';
import { parseTypeNameInScope } from './names.js';
import { Parser } from './parser.js';
import { type MacroValue, OPAQUE, Scope, registerScope, scopeOf, staleDep } from './scope.js';
import { type Type, assertType, describeValue, formatType, isComplete, lookupField } from './type.js';

/** Longest accepted `cdef()` source, in characters (16 MiB). */
export const MAX_SOURCE_LENGTH = 16 * 1024 * 1024;

/**
 * A set of C declarations: struct, union and enum tags, typedef names and
 * integer constants (enumerators and `#define NAME <integer expression>`).
 *
 * Create one with {@link cdef}; add declarations with {@link FFI.cdef} and
 * reuse another FFI's with {@link FFI.include} (call it before the `cdef()`
 * that needs them, as in cffi). A `cdef()` that throws leaves the FFI as it
 * was, except that a struct forward-declared by an earlier call and
 * completely defined before the error stays defined.
 * @category Types and structs
 */
export class FFI {
  readonly #scope: Scope = new Scope(null);
  #lib: Readonly<Record<string, number>> | null = null;

  /** An empty FFI (knows only the built-in scalar and typedef names). */
  constructor() {
    registerScope(this, this.#scope);
  }

  /**
   * Parses more C declarations into this FFI.
   *
   * @param source C declarations
   * @returns this FFI
   * @throws CDefError with `line` and `column` for invalid or unsupported C
   * @throws TypeError if `source` is not a string
   */
  cdef(source: string): this {
    if (typeof source !== 'string') throw typeError(`source must be a string, got ${describeValue(source)}`);
    if (source.length > MAX_SOURCE_LENGTH) {
      throw rangeError(`source is longer than ${MAX_SOURCE_LENGTH} characters`);
    }
    const stage = new Scope(this.#scope);
    // #ifdef and defined see this FFI's macros too (earlier cdef() calls, include())
    try {
      new Parser(tokenize(source, (name) => stage.isDefined(name)), stage, true).parseTranslationUnit();
    } catch (e) {
      stage.changed();
      throw e;
    }
    stage.commit();
    this.#lib = null;
    return this;
  }

  /**
   * Makes every declaration of `other` (as it is now) visible in this FFI, its
   * macros included (`#ifdef` in a later `cdef()` sees them; an `#undef` there removes
   * them from this FFI only).
   *
   * @param other the FFI to reuse
   * @returns this FFI
   * @throws TypeError if a name is declared differently in both
   */
  include(other: FFI): this {
    const src = scopeOf(other, 'other');
    const dst = this.#scope;
    if (src === dst) return this;
    for (const [k, v] of src.typedefs) {
      const mine = dst.typedefs.get(k);
      if (mine !== undefined && mine !== v) throw typeError(`include: typedef '${k}' is declared differently`);
      if (dst.constants.has(k)) throw typeError(`include: '${k}' is a constant here and a typedef there`);
    }
    for (const [k, v] of src.tags) {
      const mine = dst.tags.get(k);
      if (mine !== undefined && mine !== v) throw typeError(`include: '${v.kind} ${k}' is declared differently`);
    }
    for (const [k, v] of src.constants) {
      const mine = dst.constants.get(k);
      if (mine !== undefined && (mine.value !== v.value || mine.type !== v.type)) {
        throw typeError(`include: constant '${k}' has a different value`);
      }
      if (dst.typedefs.has(k)) throw typeError(`include: '${k}' is a typedef here and a constant there`);
    }
    for (const k of src.macros.keys()) {
      const mine = dst.macro(k);
      if (mine !== undefined && !sameMacro(mine, src.macro(k))) {
        throw typeError(`include: macro '${k}' is defined differently`);
      }
    }
    for (const [k, v] of src.typedefs) dst.typedefs.set(k, v);
    for (const [k, v] of src.tags) dst.tags.set(k, v);
    for (const [k, v] of src.constants) dst.constants.set(k, v);
    dst.changed();
    for (const k of src.macros.keys()) dst.define(k, src.macro(k) as MacroValue);
    this.#lib = null;
    return this;
  }

  /**
   * The type named by `decl`: `'struct org_user_t'`, a typedef name, a
   * scalar name, `'T *'`, `'T[n]'`... A type object is returned as is.
   *
   * @param decl C type name
   * @throws TypeError naming `decl` when the name is invalid or unknown
   */
  typeof(decl: string | Type): Type {
    if (typeof decl !== 'string') {
      assertType(decl, 'decl');
      return decl;
    }
    return parseTypeNameInScope(decl, this.#scope, 'decl');
  }

  /**
   * `sizeof(t)` in bytes.
   *
   * @param t type object or C type name
   * @throws TypeError for an unknown name or an incomplete type
   */
  sizeof(t: Type | string): number {
    return this.#complete(t, 't', 'sizeof').size;
  }

  /**
   * `_Alignof(t)` in bytes.
   *
   * @param t type object or C type name
   * @throws TypeError for an unknown name or an incomplete type
   */
  alignof(t: Type | string): number {
    return this.#complete(t, 't', 'alignof').align;
  }

  /**
   * `offsetof(t, field)`: byte offset of a member. `field` may be a path:
   * `'a.b.c'`, `'arr[2]'`, `'inner.items[1].x'`; members of anonymous
   * struct/union members are found by name (C11).
   *
   * @param t struct or union type, or its name
   * @param field member name or path
   * @throws TypeError naming `field` when the path does not exist
   */
  offsetof(t: Type | string, field: string): number {
    return memberOffset(this.#complete(t, 't', 'offsetof'), field).offset;
  }

  /**
   * Integer constants: enumerators and `#define`d integers (safe integers only). A
   * macro hides an enumerator of the same name, as in C; an `#undef`ined one is gone.
   */
  get lib(): Readonly<Record<string, number>> {
    if (this.#lib === null) {
      const rec = Object.create(null) as Record<string, number>;
      const add = (k: string, c: MacroValue): void => {
        const n = c === OPAQUE || c.type === 'ptr' ? NaN : Number(c.value);
        if (Number.isSafeInteger(n)) rec[k] = n;
        else delete rec[k];
      };
      for (const [k, c] of this.#scope.constants) add(k, c);
      for (const k of this.#scope.macros.keys()) {
        const m = this.#scope.macro(k);
        // one whose body used a name that has changed since: C would give another value
        if (m !== undefined) add(k, m !== OPAQUE && staleDep(this.#scope, m) !== undefined ? OPAQUE : m);
      }
      this.#lib = Object.freeze(rec);
    }
    return this.#lib;
  }

  #complete(t: Type | string, arg: string, op: string): Type {
    const ty = typeof t === 'string' ? parseTypeNameInScope(t, this.#scope, arg) : t;
    if (typeof t !== 'string') assertType(ty, arg);
    if (!isComplete(ty)) throw typeError(`${op}: ${formatType(ty)} is an incomplete type`);
    return ty;
  }
}

/** Whether two macro values are the same definition (two opaque ones count as the same). */
function sameMacro(a: MacroValue, b: MacroValue | undefined): boolean {
  if (a === OPAQUE || b === OPAQUE || b === undefined) return a === b;
  return a.value === b.value && a.type === b.type;
}

/**
 * Resolves a member path (`'a.b[2].c'`) inside `t`.
 *
 * @param t the outer type
 * @param path member names joined by `.`, with `[i]` array indexes
 * @returns the member's type and byte offset from the start of `t`
 * @throws TypeError naming `field` when the path does not exist
 */
export function memberOffset(t: Type, path: string): { type: Type; offset: number } {
  if (typeof path !== 'string') throw typeError(`field must be a string, got ${describeValue(path)}`);
  const re = /\s*(?:(\.)?\s*([A-Za-z_][A-Za-z0-9_]*)|\[\s*(\d{1,15})\s*\])\s*/y;
  let cur: Type = t;
  let offset = 0;
  let pos = 0;
  let first = true;
  const bad = (why: string): never => {
    throw typeError(`field ${JSON.stringify(path)} of ${formatType(t)}: ${why}`);
  };
  if (path.trim() === '') bad('empty member path');
  while (pos < path.length) {
    re.lastIndex = pos;
    const m = re.exec(path);
    if (m === null) bad(`invalid member path at character ${pos + 1}`);
    const mm = m as RegExpExecArray;
    pos = re.lastIndex;
    const [, dot, name, index] = mm;
    if (name !== undefined) {
      if (!first && dot === undefined) bad(`expected '.' before '${name}'`);
      if (first && dot !== undefined) bad(`unexpected '.' at the start`);
      if (cur.kind !== 'struct' && cur.kind !== 'union') bad(`${formatType(cur)} has no member '${name}'`);
      const f = lookupField(cur as Extract<Type, { kind: 'struct' | 'union' }>, name);
      if (f === undefined) bad(`${formatType(cur)} has no member '${name}'`);
      offset += (f as { offset: number }).offset;
      cur = (f as { type: Type }).type;
    } else {
      if (cur.kind !== 'array') bad(`${formatType(cur)} is not an array`);
      const arr = cur as Extract<Type, { kind: 'array' }>;
      const i = Number(index);
      if (i >= arr.length) bad(`index ${i} is out of bounds for ${formatType(arr)}`);
      offset += i * arr.element.size;
      cur = arr.element;
    }
    first = false;
  }
  return { type: cur, offset };
}

/**
 * Parses C declarations into a new {@link FFI}.
 *
 * Supported: `struct`, `union`, `enum` (explicit values, C integer constant
 * expressions over earlier enumerators), `typedef`, nested and anonymous
 * (C11) structs/unions, fixed-size and multi-dimensional arrays, pointers
 * (to scalars, to incomplete or self-referential structs, to pointers),
 * `const`/`volatile`, `bool`, fixed-width and classic integer types,
 * `float`, `double`, comments; of the preprocessor, `#define NAME <integer
 * expression>` defines a constant (hiding an enumerator of the same name, as in C),
 * `#undef` removes it, and `#if`/`#ifdef`/`#ifndef`/`defined` see the macros of this
 * source, of earlier `cdef()` calls and of `include()`d FFIs; other lines are ignored.
 * Rejected with a {@link CDefError}: bit-fields, `long double`, flexible
 * array members, zero-length arrays, functions and function pointers,
 * `__attribute__` and other extensions, variable-length arrays, variables.
 *
 * @param source C declarations
 * @throws CDefError with `line` and `column`
 * @example
 * ```ts
 * const ffi = cdef(`
 *   enum state { IDLE, BUSY };
 *   struct job { uint32_t id; enum state state; char owner[16]; };
 * `)
 * ffi.sizeof('struct job')                       // 24, as a C compiler says
 * const job = mem.new(ffi.typeof('struct job'), { id: 1, state: ffi.lib.BUSY })
 * ```
 * @category Types and structs
 */
export function cdef(source: string): FFI {
  return new FFI().cdef(source);
}
