/**
 * C type names as strings: `'uint64_t'`, `'unsigned long long int'`,
 * `'char *'`, `'int32_t[2][3]'`, `'struct foo *'` (with an FFI scope).
 *
 * @module
 */
import { typeError } from '../errors.js';
import type { FFI } from './cdef.js';
import { CDefError } from './cdef-error.js';
import { tokenize } from './lexer.js';
import { Parser } from './parser.js';
import { Scope, VOID, scopeOf } from './scope.js';
import type { ArrayType, JsOf, PointerType, ScalarType, Type } from './type.js';

// ---------------------------------------------------------------------------
// The same names read by TypeScript: `TypeOfName<'uint64_t'>` is
// `ScalarType<bigint>`, `TypeOfName<'char *'>` a pointer to a char,
// `TypeOfName<'int32_t[2][3]'>` an array of arrays. Whatever TypeScript
// cannot read (a struct or typedef name, `int(*)[3]`) is `Type`: correct,
// only untyped. The parser above is the authority at run time; a test checks
// that every spelling listed here parses to a scalar of the same JS type.

type Space = ' ' | '\t' | '\n';
type Trim<S extends string> = S extends `${Space}${infer R}` ? Trim<R> : S extends `${infer R}${Space}` ? Trim<R> : S;
/** Runs of spaces to one space. */
type Squeeze<S extends string> = S extends `${infer A}  ${infer B}` ? Squeeze<`${A} ${B}`> : S;
type Sign = '' | 'signed ' | 'unsigned ';

/**
 * C scalar type names whose JS value is a `number`.
 * @category Types and structs
 */
export type NumberTypeName =
  | 'int8_t' | 'uint8_t' | 'int16_t' | 'uint16_t' | 'int32_t' | 'uint32_t'
  | 'char' | 'signed char' | 'unsigned char'
  | `${Sign}short${'' | ' int'}`
  | 'int' | 'signed' | 'unsigned' | 'signed int' | 'unsigned int'
  | 'float' | 'double';
/**
 * C scalar type names whose JS value is a `bigint` (64 bits, LP64).
 * @category Types and structs
 */
export type BigintTypeName =
  | 'int64_t' | 'uint64_t' | 'size_t' | 'ssize_t' | 'intptr_t' | 'uintptr_t' | 'ptrdiff_t'
  | `${Sign}long${'' | ' long'}${'' | ' int'}`;
/**
 * C scalar type names whose JS value is a `boolean`.
 * @category Types and structs
 */
export type BooleanTypeName = 'bool' | '_Bool';

type ScalarOfName<S extends string> = S extends NumberTypeName
  ? ScalarType<number>
  : S extends BigintTypeName
    ? ScalarType<bigint>
    : S extends BooleanTypeName
      ? ScalarType<boolean>
      : Type;

/** Base type and pointer stars: `'char *'`, `'void *'`, `'int32_t **'`. */
type BaseOfName<S extends string> = S extends `${infer B}*`
  ? PointerOf<BaseOfName<Trim<B>>>
  : S extends 'void'
    ? null
    : ScalarOfName<S>;
type PointerOf<T> = T extends null ? PointerType<number, null> : Type extends T ? Type : T extends Type ? PointerType<number, T> : Type;

/** Array dimensions `'[2][3]'` around `E`, outermost first. */
type ArraysOf<E, D extends string> = Type extends E
  ? Type
  : E extends Type
    ? D extends `[${number}]`
      ? ArrayType<JsOf<E>[], E>
      : D extends `[${number}]${infer Rest}`
        ? ArraysOf<E, Rest> extends infer Inner extends Type
          ? Type extends Inner
            ? Type
            : ArrayType<JsOf<Inner>[], Inner>
          : Type
        : Type
    : Type;

type Parse<S extends string> = S extends `${infer B}[${infer D}`
  ? ArraysOf<BaseOfName<Trim<B>>, `[${D}`>
  : BaseOfName<S> extends infer T extends Type
    ? T
    : Type;

/**
 * The type object TypeScript reads from a C type name: `TypeOfName<'int32_t'>` is
 * `ScalarType<number>`, `TypeOfName<'char *'>` is `PointerType<number, ScalarType<number>>`,
 * `TypeOfName<'double[4]'>` is an `ArrayType` of numbers. Names it cannot read (struct,
 * union, enum and typedef names, function pointers) give `Type`.
 * @category Types and structs
 */
export type TypeOfName<S extends string> = string extends S ? Type : Parse<Squeeze<Trim<S>>>;

/**
 * {@link TypeOfName} for an allocation (`heap.new`, `mem.new`, `heap.named`): one trailing
 * `*` is dropped first, as the allocation spelling of the original does (`'size_t *'` allocates a
 * `size_t`).
 * @category Types and structs
 */
export type AllocationTypeOfName<S extends string> = string extends S
  ? Type
  : Squeeze<Trim<S>> extends `${infer B}*`
    ? TypeOfName<B>
    : TypeOfName<S>;

/**
 * The spellings of `char *`, which `new` with a string or bytes turns into a `char` array.
 * @category Types and structs
 */
export type CharPointerName = 'char *' | 'char*';

/** Longest accepted type name, in characters. */
export const MAX_TYPE_NAME_LENGTH = 1024;

const EMPTY_SCOPE = new Scope(null);
const CACHE_LIMIT = 512;
const cache = new Map<string, Type>();

/**
 * Parses `text` as a C type name in `scope` (internal form of
 * {@link parseTypeName}); `arg` names the argument in error messages.
 */
export function parseTypeNameInScope(text: unknown, scope: Scope | null, arg: string, original?: string): Type {
  if (typeof text !== 'string') {
    throw typeError(`${arg} must be a C type name string, got ${typeof text}`);
  }
  if (scope === null) {
    const hit = cache.get(text);
    if (hit !== undefined) return hit;
  }
  const o = original ?? text;
  const shown = JSON.stringify(o.length > 80 ? `${o.slice(0, 77)}...` : o);
  if (text.length > MAX_TYPE_NAME_LENGTH) {
    throw typeError(`${arg}: type name ${shown} is longer than ${MAX_TYPE_NAME_LENGTH} characters`);
  }
  let t;
  try {
    t = new Parser(tokenize(text), scope ?? EMPTY_SCOPE, false).parseTypeNameOnly();
  } catch (e) {
    if (e instanceof CDefError) {
      throw typeError(`${arg}: invalid C type name ${shown}: ${e.reason} (column ${e.column})`, { cause: e });
    }
    throw e;
  }
  if (t === VOID) {
    // Only allocations pass `original`: their 'T *' means T (the original's spelling).
    const hint = original !== undefined ? "to allocate a pointer, name 'void **'" : "use 'void *'";
    throw typeError(`${arg}: ${shown} is void, which has no size (${hint})`);
  }
  if (scope === null) {
    if (cache.size >= CACHE_LIMIT) cache.clear();
    cache.set(text, t);
  }
  return t;
}

/**
 * Parses a C type name for a declaration: scalars (`int8_t` … `uint64_t`,
 * `char`, `signed char`, `unsigned char`, `short`, `int`, `long`,
 * `long long` and their `unsigned`/`int` spellings, `size_t`, `ssize_t`,
 * `intptr_t`, `uintptr_t`, `ptrdiff_t`, `float`, `double`, `bool`/`_Bool`),
 * pointers (`'char *'`, `'void *'`, `'int **'`), arrays (`'char[13]'`,
 * `'int32_t[2][3]'`, `'int(*)[3]'`) and, when `scope` is given, its struct,
 * union, enum and typedef names and constants (`'int[N]'`).
 *
 * Layout is LP64: `long`, pointers and `size_t` are 8 bytes. Classic C
 * spellings return the fixed-width singletons (`int` is `int32_t`,
 * `unsigned long` is `uint64_t`); only `char` stays a distinct type.
 *
 * @param name the C type name
 * @param scope an FFI whose declarations may be named
 * @throws TypeError naming the argument and the text when the name is invalid
 * @category Types and structs
 */
export function parseTypeName<const S extends string>(name: S, scope?: FFI): TypeOfName<S> {
  return parseTypeNameInScope(name, scope === undefined ? null : scopeOf(scope, 'scope'), 'name') as TypeOfName<S>;
}

/**
 * Parses a type name as the Python original's allocation spelling: a
 * trailing `*` is stripped once, so `'size_t *'` and `'int64_t*'` allocate
 * one `size_t` / `int64_t`, `'char **'` one `char *`, while `'char[13]'`
 * (no star) allocates the array itself.
 *
 * @param name the C type name, usually ending in `*`
 * @param scope an FFI whose declarations may be named
 * @throws TypeError naming the argument and the text when the name is invalid
 */
export function parseAllocationTypeName(name: string, scope?: FFI, arg = 'name'): Type {
  if (typeof name !== 'string') {
    throw typeError(`${arg} must be a C type name string, got ${typeof name}`);
  }
  const stripped = name.replace(/\*\s*$/, '');
  return parseTypeNameInScope(stripped, scope === undefined ? null : scopeOf(scope, 'scope'), arg, name);
}
