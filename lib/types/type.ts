/**
 * Type objects: the immutable description of a C type's layout.
 *
 * Every type is a plain frozen object with a `kind` discriminant. Scalars are
 * singletons; pointers and arrays are interned by (target, length), so two
 * spellings of the same pointer or array type give the identical object.
 * Structs, unions and enums are nominal: each definition makes a new object.
 *
 * Layout is the LP64 System V / AAPCS64 C ABI used on x86-64 and aarch64 Linux
 * and macOS: natural alignment, padding before a member up to its alignment,
 * aggregate alignment = largest member alignment, size rounded up to it.
 *
 * @module
 */

import { rangeError, typeError } from '../errors.js';

/**
 * Phantom key that carries the JavaScript value type of a {@link Type} for
 * TypeScript inference. It never exists at run time; never import it as a value.
 */
export declare const JsValue: unique symbol;

/**
 * The machine representation of a scalar.
 * @category Types and structs
 */
export type ScalarKind =
  | 'i8'
  | 'u8'
  | 'i16'
  | 'u16'
  | 'i32'
  | 'u32'
  | 'i64'
  | 'u64'
  | 'f32'
  | 'f64'
  | 'bool';

/**
 * Underlying integer of an enum (gcc's choice, see `makeEnum`).
 * @category Types and structs
 */
export type EnumBase = 'i32' | 'u32' | 'i64' | 'u64';

/** Discriminant of {@link Type}. */
export type TypeKind = 'scalar' | 'pointer' | 'array' | 'struct' | 'union' | 'enum';

/** Fields shared by every type object. `V` is the JS value type (phantom). */
export interface TypeBase<V> {
  /** Discriminant. */
  readonly kind: TypeKind;
  /** C spelling: `'uint64_t'`, `'char *'`, `'int32_t[2][3]'`, `'struct foo'`, `''` if anonymous. */
  readonly name: string;
  /** `sizeof`, in bytes. */
  readonly size: number;
  /** `_Alignof`, in bytes. */
  readonly align: number;
  /** Phantom JS value type; never present at run time. */
  readonly [JsValue]?: V;
}

/**
 * A scalar: fixed-width integer, `char`, `float`, `double` or `bool`.
 * @category Types and structs
 */
export interface ScalarType<V = unknown> extends TypeBase<V> {
  readonly kind: 'scalar';
  /** Machine representation. `char` is `'i8'`. */
  readonly scalar: ScalarKind;
}

/**
 * A data pointer (8 bytes). Its JS value is the address as a number (0 = NULL). `P` is
 * the pointee's type as TypeScript knows it (`null` for `void *`).
 * @category Types and structs
 */
export interface PointerType<V = unknown, P extends Type | null = Type | null> extends TypeBase<V> {
  readonly kind: 'pointer';
  /** Pointee; `null` for `void *`. */
  readonly target: P;
}

/**
 * A fixed-length array. Multi-dimensional arrays are arrays of arrays. `E` is the
 * element type as TypeScript knows it.
 * @category Types and structs
 */
export interface ArrayType<V = unknown, E extends Type = Type> extends TypeBase<V> {
  readonly kind: 'array';
  /** Element type. */
  readonly element: E;
  /** Number of elements (>= 1). */
  readonly length: number;
}

/**
 * One member of a struct or union. A C11 anonymous struct/union member has
 * `name === ''`; its own fields are reachable by name from the parent (see
 * {@link lookupField} and {@link memberNames}).
 * @category Types and structs
 */
export interface Field {
  /** Member name, `''` for an anonymous struct/union member. */
  readonly name: string;
  /** Member type. */
  readonly type: Type;
  /** Byte offset from the start of the enclosing struct/union. */
  readonly offset: number;
}

/**
 * Phantom key that carries the member types of a struct made with `types.struct`
 * (the field map), so references to it can expose typed members. Never present at
 * run time.
 */
export declare const JsFields: unique symbol;

/**
 * A struct or union. `complete` is false only for a forward-declared type
 * that has not been defined (yet); such an object is not frozen until it is
 * completed, has size 0 and no fields, and may only be used behind a pointer.
 * `F` is the field map given to `types.struct` (member name to type object);
 * `unknown` for a struct TypeScript cannot see into (from `cdef()`).
 * @category Types and structs
 */
export interface StructType<V = unknown, F = unknown> extends TypeBase<V> {
  /** Phantom member types; never present at run time. */
  readonly [JsFields]?: F;
  readonly kind: 'struct' | 'union';
  /** Members in declaration order (anonymous members kept as one `''` entry). */
  readonly fields: readonly Field[];
  /** False for an incomplete (forward-declared, undefined) struct/union. */
  readonly complete: boolean;
}

/**
 * An enum: an integer with named constants.
 * @category Types and structs
 */
export interface EnumType<V = unknown> extends TypeBase<V> {
  readonly kind: 'enum';
  /** Underlying integer representation, chosen like gcc does. */
  readonly scalar: EnumBase;
  /** Enumerator values by name (null-prototype, frozen). */
  readonly members: Readonly<Record<string, number>>;
}

/**
 * A C type. The optional parameter is the JS value type a reader produces:
 * `number` for integers up to 32 bits, floats, enums and pointers; `bigint`
 * for 64-bit integers; `boolean` for `bool`; arrays of the element's value;
 * objects for structs and unions.
 * @category Types and structs
 */
export type Type<V = unknown> =
  | ScalarType<V>
  | PointerType<V>
  | ArrayType<V>
  | StructType<V>
  | EnumType<V>;

/**
 * The JS value type carried by a type object: `JsOf<typeof types.i64>` is `bigint`.
 * @category Types and structs
 */
export type JsOf<T> = T extends {
  /** The phantom value type. */
  readonly [JsValue]?: infer V;
} ? V : unknown;

/** Largest size of any type, in bytes (2^47: far beyond any mapping, exact in a double). */
export const MAX_TYPE_SIZE = 2 ** 47;

/** Pointer size and alignment (LP64). */
export const POINTER_SIZE = 8;

const SCALAR_LAYOUT: Readonly<Record<ScalarKind, number>> = {
  i8: 1,
  u8: 1,
  i16: 2,
  u16: 2,
  i32: 4,
  u32: 4,
  i64: 8,
  u64: 8,
  f32: 4,
  f64: 8,
  bool: 1,
};

function scalar<V>(name: string, kind: ScalarKind): ScalarType<V> {
  const size = SCALAR_LAYOUT[kind];
  return Object.freeze({ kind: 'scalar', name, size, align: size, scalar: kind }) as ScalarType<V>;
}

/** `int8_t` */
export const int8: ScalarType<number> = scalar('int8_t', 'i8');
/** `uint8_t` */
export const uint8: ScalarType<number> = scalar('uint8_t', 'u8');
/** `int16_t` */
export const int16: ScalarType<number> = scalar('int16_t', 'i16');
/** `uint16_t` */
export const uint16: ScalarType<number> = scalar('uint16_t', 'u16');
/** `int32_t` */
export const int32: ScalarType<number> = scalar('int32_t', 'i32');
/** `uint32_t` */
export const uint32: ScalarType<number> = scalar('uint32_t', 'u32');
/** `int64_t` (JS value: bigint) */
export const int64: ScalarType<bigint> = scalar('int64_t', 'i64');
/** `uint64_t` (JS value: bigint) */
export const uint64: ScalarType<bigint> = scalar('uint64_t', 'u64');
/** `float` */
export const float32: ScalarType<number> = scalar('float', 'f32');
/** `double` */
export const float64: ScalarType<number> = scalar('double', 'f64');
/** `bool` / `_Bool` (one byte, 0 or 1) */
export const boolean: ScalarType<boolean> = scalar('bool', 'bool');
/** `char`: a signed byte distinct from `int8_t` by name (x86-64 signedness). */
export const char: ScalarType<number> = scalar('char', 'i8');

/** The canonical scalar object for each representation (`char` excluded). */
export const SCALARS: Readonly<Record<ScalarKind, ScalarType>> = Object.freeze({
  i8: int8,
  u8: uint8,
  i16: int16,
  u16: uint16,
  i32: int32,
  u32: uint32,
  i64: int64,
  u64: uint64,
  f32: float32,
  f64: float64,
  bool: boolean,
});

/** Every scalar singleton by its canonical name (`'int32_t'`, `'char'`, `'double'`, ...). */
export const SCALARS_BY_NAME: ReadonlyMap<string, ScalarType> = new Map<string, ScalarType>(
  [...Object.values(SCALARS), char].map((t) => [t.name, t]),
);

/** True for a value that is one of this module's type objects (structural check). */
export function isType(value: unknown): value is Type {
  if (typeof value !== 'object' || value === null) return false;
  const k = (value as { kind?: unknown }).kind;
  switch (k) {
    case 'scalar':
      return SCALARS_BY_NAME.get((value as ScalarType).name) === value;
    case 'pointer':
    case 'array':
      return internedSet.has(value as Type);
    case 'struct':
    case 'union':
    case 'enum':
      return nominalSet.has(value as Type);
    default:
      return false;
  }
}

/** Types created by this module (so forged look-alike objects are rejected). */
const internedSet = new WeakSet<Type>();
const nominalSet = new WeakSet<Type>();

/** Throws a TypeError unless `t` is a type object; `what` names the argument. */
export function assertType(t: unknown, what: string): asserts t is Type {
  if (!isType(t)) {
    throw typeError(`${what} must be a shmutils type object, got ${describeValue(t)}`);
  }
}

/** Short description of an arbitrary value for error messages. */
export function describeValue(v: unknown): string {
  if (v === null) return 'null';
  if (typeof v === 'string') return JSON.stringify(v.length > 60 ? `${v.slice(0, 57)}...` : v);
  if (typeof v === 'bigint') return `${v}n`;
  if (typeof v === 'number' || typeof v === 'boolean' || typeof v === 'undefined') return String(v);
  if (typeof v === 'symbol') return 'a symbol';
  if (typeof v === 'function') return 'a function';
  if (Array.isArray(v)) return 'an array';
  return 'an object';
}

/** True when values of `t` can be stored (complete: not an incomplete struct). */
export function isComplete(t: Type): boolean {
  return (t.kind !== 'struct' && t.kind !== 'union') || t.complete;
}

// ---------------------------------------------------------------------------
// Names

/** `struct {...}` placeholder used in derived names of anonymous aggregates. */
function baseName(t: Type): string {
  if (t.name !== '') return t.name;
  return `${t.kind} {...}`;
}

/**
 * C spelling of `t` with `inner` as the (abstract) declarator, e.g. pointer to
 * array of 3 ints is `int32_t(*)[3]`.
 */
export function formatType(t: Type | null, inner = ''): string {
  if (t === null) return inner === '' ? 'void' : `void ${inner}`;
  switch (t.kind) {
    case 'pointer':
      return formatType(t.target, `*${inner}`);
    case 'array': {
      const d = inner.startsWith('*') ? `(${inner})` : inner;
      return formatType(t.element, `${d}[${t.length}]`);
    }
    default: {
      const b = baseName(t);
      if (inner === '') return b;
      return inner.startsWith('[') || inner.startsWith('(') ? `${b}${inner}` : `${b} ${inner}`;
    }
  }
}

// ---------------------------------------------------------------------------
// Pointers and arrays (interned)

const voidPointer: PointerType<number, null> = Object.freeze({
  kind: 'pointer',
  name: 'void *',
  size: POINTER_SIZE,
  align: POINTER_SIZE,
  target: null,
}) as PointerType<number, null>;
internedSet.add(voidPointer);

const pointerCache = new WeakMap<Type, PointerType<number, Type>>();

/** The (interned) pointer type to `target`; `null` means `void *`. */
export function pointerTo<P extends Type | null>(target: P): PointerType<number, P>;
export function pointerTo(target: Type | null): PointerType<number> {
  if (target === null) return voidPointer;
  let p = pointerCache.get(target);
  if (p === undefined) {
    p = Object.freeze({
      kind: 'pointer',
      name: formatType(target, '*'),
      size: POINTER_SIZE,
      align: POINTER_SIZE,
      target,
    }) as PointerType<number, Type>;
    internedSet.add(p);
    pointerCache.set(target, p);
  }
  return p;
}

const arrayCache = new WeakMap<Type, Map<number, ArrayType>>();

/**
 * Deepest nesting of types by value (struct, union and array levels, each member's
 * type inside its parent's): deeper ones could not be described for a handle, and their
 * accessors, made by recursion, would overflow the stack.
 */
export const MAX_TYPE_NESTING = 256;

/** How many struct, union and array levels each such type holds by value (scalars, enums and pointers: 0). */
const nesting = new WeakMap<Type, number>();

function nestingOf(t: Type): number {
  return nesting.get(t) ?? 0;
}

/** `depth`, if within {@link MAX_TYPE_NESTING}. @throws TypeError otherwise */
function checkNesting(depth: number, what: string): number {
  if (depth > MAX_TYPE_NESTING) throw typeError(`${what} nests types deeper than ${MAX_TYPE_NESTING} levels`);
  return depth;
}

/**
 * The (interned) array type `element[length]`. Throws a TypeError for an
 * incomplete element, a length that is not a positive safe integer, or a total
 * size above {@link MAX_TYPE_SIZE}.
 */
export function arrayOf<E extends Type>(element: E, length: number): ArrayType<JsOf<E>[], E> {
  if (!isComplete(element)) {
    throw typeError(`array element type ${formatType(element)} is incomplete`);
  }
  const depth = checkNesting(1 + nestingOf(element), `array of ${formatType(element)}`);
  if (!Number.isSafeInteger(length) || length < 1) {
    throw rangeError(`array length must be a positive integer, got ${describeValue(length)}`);
  }
  if (element.size * length > MAX_TYPE_SIZE) {
    throw rangeError(`array ${formatType(element, `[${length}]`)} is too large`);
  }
  let byLength = arrayCache.get(element);
  if (byLength === undefined) {
    byLength = new Map();
    arrayCache.set(element, byLength);
  }
  let a = byLength.get(length);
  if (a === undefined) {
    a = Object.freeze({
      kind: 'array',
      name: formatType(element, `[${length}]`),
      size: element.size * length,
      align: element.align,
      element,
      length,
    }) as ArrayType;
    internedSet.add(a);
    byLength.set(length, a);
    nesting.set(a, depth);
  }
  return a as ArrayType<JsOf<E>[], E>;
}

// ---------------------------------------------------------------------------
// Structs and unions

/** A member as declared (before layout). `name === ''` marks an anonymous member. */
export interface MemberDecl {
  /** Member name or `''` for a C11 anonymous struct/union member. */
  readonly name: string;
  /** Member type (must be complete). */
  readonly type: Type;
}

interface MutableStruct {
  kind: 'struct' | 'union';
  name: string;
  size: number;
  align: number;
  fields: readonly Field[];
  complete: boolean;
}

/**
 * A new incomplete struct/union (forward declaration). `tag` may be `''` only
 * transiently, for an anonymous aggregate being built. The object is sealed
 * but not frozen until {@link completeStruct} is called on it.
 */
export function incompleteStruct(kind: 'struct' | 'union', tag: string): StructType {
  const s: MutableStruct = {
    kind,
    name: tag === '' ? '' : `${kind} ${tag}`,
    size: 0,
    align: 1,
    fields: Object.freeze([]),
    complete: false,
  };
  Object.seal(s);
  const t = s as StructType;
  nominalSet.add(t);
  return t;
}

const roundUp = (n: number, a: number): number => Math.ceil(n / a) * a;

/**
 * Lays out `members` into the incomplete `s` and freezes it. Throws a
 * TypeError for an incomplete or duplicate member, an anonymous member that
 * is not an anonymous struct/union, or a size above {@link MAX_TYPE_SIZE}.
 */
export function completeStruct<V, F = unknown>(s: StructType, members: readonly MemberDecl[]): StructType<V, F> {
  if (s.complete) throw typeError(`redefinition of ${s.name}`);
  const what = baseName(s);
  const seen = new Set<string>();
  const fields: Field[] = [];
  let offset = 0;
  let size = 0;
  let align = 1;
  for (const m of members) {
    const t = m.type;
    if (!isComplete(t)) {
      throw typeError(`field '${m.name}' of ${what} has incomplete type ${formatType(t)}`);
    }
    if (m.name === '') {
      if ((t.kind !== 'struct' && t.kind !== 'union') || t.name !== '') {
        throw typeError(`an unnamed member of ${what} must be an anonymous struct or union`);
      }
      for (const n of memberNames(t)) addName(n);
    } else {
      addName(m.name);
    }
    const off = s.kind === 'union' ? 0 : roundUp(offset, t.align);
    fields.push(Object.freeze({ name: m.name, type: t, offset: off }));
    offset = off + t.size;
    size = Math.max(size, offset);
    align = Math.max(align, t.align);
    if (size > MAX_TYPE_SIZE) throw rangeError(`${what} is too large`);
  }
  size = roundUp(size, align);
  if (size > MAX_TYPE_SIZE) throw rangeError(`${what} is too large`);
  let deepest = 0;
  for (const f of fields) deepest = Math.max(deepest, nestingOf(f.type));
  const depth = checkNesting(1 + deepest, what);
  nesting.set(s, depth);
  const m = s as unknown as MutableStruct;
  m.size = size;
  m.align = align;
  m.fields = Object.freeze(fields);
  m.complete = true;
  Object.freeze(m);
  return s as StructType<V, F>;

  function addName(n: string): void {
    if (seen.has(n)) throw typeError(`duplicate member '${n}' in ${what}`);
    seen.add(n);
  }
}

/** Builds and freezes a struct/union in one step (`tag === ''` for anonymous). */
export function makeStruct<V>(
  kind: 'struct' | 'union',
  tag: string,
  members: readonly MemberDecl[],
): StructType<V> {
  return completeStruct<V>(incompleteStruct(kind, tag), members);
}

const flatCache = new WeakMap<StructType, ReadonlyMap<string, Field>>();

/**
 * Every member reachable by name from `t` (C11: members of anonymous
 * struct/union members are members of the parent), with offsets relative to
 * `t`, in declaration order.
 */
export function flatMembers(t: StructType): ReadonlyMap<string, Field> {
  let m = flatCache.get(t);
  if (m === undefined) {
    const out = new Map<string, Field>();
    for (const f of t.fields) {
      if (f.name !== '') {
        out.set(f.name, f);
      } else {
        for (const [n, g] of flatMembers(f.type as StructType)) {
          out.set(n, Object.freeze({ name: n, type: g.type, offset: f.offset + g.offset }));
        }
      }
    }
    m = out;
    if (t.complete) flatCache.set(t, m);
  }
  return m;
}

/**
 * Names reachable from `t` (see `flatMembers`).
 * @category Types and structs
 */
export function memberNames(t: StructType): string[] {
  return [...flatMembers(t).keys()];
}

/**
 * The member `name` of `t` (searching anonymous members), or undefined.
 * @category Types and structs
 */
export function lookupField(t: StructType, name: string): Field | undefined {
  return flatMembers(t).get(name);
}

// ---------------------------------------------------------------------------
// Enums

const I32_MIN = -(2n ** 31n);
const I32_MAX = 2n ** 31n - 1n;
const U32_MAX = 2n ** 32n - 1n;
const I64_MIN = -(2n ** 63n);
const I64_MAX = 2n ** 63n - 1n;
const U64_MAX = 2n ** 64n - 1n;

/**
 * The underlying integer gcc picks for an enum with these values: `u32` when
 * all are in [0, 2^32), `i32` when all fit in int, otherwise the 64-bit
 * `u64`/`i64` (a GNU extension). Throws a RangeError when no integer fits.
 */
export function enumBase(values: readonly bigint[]): EnumBase {
  let lo = 0n;
  let hi = 0n;
  for (const v of values) {
    if (v < lo) lo = v;
    if (v > hi) hi = v;
  }
  if (lo >= 0n && hi <= U32_MAX) return 'u32';
  if (lo >= I32_MIN && hi <= I32_MAX) return 'i32';
  if (lo >= 0n && hi <= U64_MAX) return 'u64';
  if (lo >= I64_MIN && hi <= I64_MAX) return 'i64';
  throw rangeError('enumerator values do not fit in any integer type');
}

/**
 * A new (frozen) enum. Values must be safe integers (|v| < 2^53) and names
 * unique; at least one member. Size is 4, or 8 when a value needs 64 bits.
 */
export function makeEnum(tag: string, members: ReadonlyArray<readonly [string, number]>): EnumType<number> {
  if (members.length === 0) throw typeError(`enum ${tag} has no members`);
  const rec: Record<string, number> = Object.create(null) as Record<string, number>;
  for (const [n, v] of members) {
    if (!Number.isSafeInteger(v)) {
      throw rangeError(`enumerator ${n} = ${describeValue(v)} is not a safe integer`);
    }
    if (Object.prototype.hasOwnProperty.call(rec, n)) throw typeError(`duplicate enumerator '${n}'`);
    rec[n] = v;
  }
  const base = enumBase(members.map(([, v]) => BigInt(v)));
  const size = base === 'i32' || base === 'u32' ? 4 : 8;
  const e = Object.freeze({
    kind: 'enum',
    name: tag === '' ? '' : `enum ${tag}`,
    size,
    align: size,
    scalar: base,
    members: Object.freeze(rec),
  }) as EnumType<number>;
  nominalSet.add(e);
  return e;
}
