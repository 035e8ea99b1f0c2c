/**
 * C type names as strings: `'uint64_t'`, `'unsigned long long int'`,
 * `'char *'`, `'int32_t[2][3]'`, `'struct foo *'` (with an FFI scope).
 *
 * @module
 */
import type { FFI } from './cdef.js';
import { CDefError } from './cdef-error.js';
import { tokenize } from './lexer.js';
import { Parser } from './parser.js';
import { Scope, VOID, scopeOf } from './scope.js';
import type { Type } from './type.js';

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
    throw new TypeError(`${arg} must be a C type name string, got ${typeof text}`);
  }
  if (scope === null) {
    const hit = cache.get(text);
    if (hit !== undefined) return hit;
  }
  const o = original ?? text;
  const shown = JSON.stringify(o.length > 80 ? `${o.slice(0, 77)}...` : o);
  if (text.length > MAX_TYPE_NAME_LENGTH) {
    throw new TypeError(`${arg}: type name ${shown} is longer than ${MAX_TYPE_NAME_LENGTH} characters`);
  }
  let t;
  try {
    t = new Parser(tokenize(text), scope ?? EMPTY_SCOPE, false).parseTypeNameOnly();
  } catch (e) {
    if (e instanceof CDefError) {
      throw new TypeError(`${arg}: invalid C type name ${shown}: ${e.reason} (column ${e.column})`, { cause: e });
    }
    throw e;
  }
  if (t === VOID) throw new TypeError(`${arg}: ${shown} is void, which has no size (use 'void *')`);
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
 */
export function parseTypeName(name: string, scope?: FFI): Type {
  return parseTypeNameInScope(name, scope === undefined ? null : scopeOf(scope, 'scope'), 'name');
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
export function parseAllocationTypeName(name: string, scope?: FFI): Type {
  if (typeof name !== 'string') {
    throw new TypeError(`name must be a C type name string, got ${typeof name}`);
  }
  const stripped = name.replace(/\*\s*$/, '');
  return parseTypeNameInScope(stripped, scope === undefined ? null : scopeOf(scope, 'scope'), 'name', name);
}
