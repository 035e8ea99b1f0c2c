/**
 * The `types` DSL: build the same type objects as `cdef()` from TypeScript,
 * with the JS shape of structs inferred.
 *
 * ```ts
 * const Point = types.struct('point', { x: types.i32, y: types.i32 });
 * //    ^? StructType<{ x: number; y: number }, { x: ScalarType<number>; y: ScalarType<number> }>
 * const Node = types.struct('node', (self) => ({ value: types.i64, next: types.ptr(self) }));
 * const Tagged = types.struct('tagged', {
 *   kind: types.u8,
 *   '...u': types.union('', { i: types.i32, f: types.f32 }),  // C11 anonymous member
 * });
 * ```
 *
 * @module
 */
import { typeError } from '../errors.js';
import {
  type ArrayType,
  type EnumType,
  type JsOf,
  type MemberDecl,
  type PointerType,
  type ScalarType,
  type StructType,
  type Type,
  arrayOf,
  assertType,
  boolean,
  char,
  completeStruct,
  describeValue,
  float32,
  float64,
  incompleteStruct,
  int16,
  int32,
  int64,
  int8,
  makeEnum,
  pointerTo,
  uint16,
  uint32,
  uint64,
  uint8,
} from './type.js';

/**
 * Field map for `types.struct`: member name to type; keys starting with `...` are anonymous members.
 * @category Types and structs
 */
export type FieldMap = Readonly<Record<string, Type>>;

/**
 * The keys of `F` that mark anonymous members (`'...name'`).
 * @category Types and structs
 */
export type AnonKeys<F> = { [K in keyof F]: K extends `...${string}` ? K : never }[keyof F];
/**
 * `A | B` → `A & B` (flattens anonymous members into the parent's shape).
 * @category Types and structs
 */
export type UnionToIntersection<U> = (U extends unknown ? (x: U) => void : never) extends (x: infer I) => void ? I : never;
/**
 * `T` with its intersections merged into one object type (for readable hovers).
 * @category Types and structs
 */
export type Simplify<T> = { [K in keyof T]: T[K] } & {};

/**
 * The JS object shape of a struct/union with fields `F` (anonymous members flattened).
 * @category Types and structs
 */
export type ShapeOf<F> = Simplify<
  { -readonly [K in Exclude<keyof F, AnonKeys<F>>]: JsOf<F[K]> } &
    UnionToIntersection<{ [K in AnonKeys<F>]: JsOf<F[K]> }[AnonKeys<F>]>
>;

/**
 * The JS value type of an enum created from `members`.
 * @category Types and structs
 */
export type EnumValue = number;

const IDENT = /^[A-Za-z_][A-Za-z0-9_]*$/;
const MAX_IDENT = 255;

function checkIdent(n: string, what: string): void {
  if (typeof n !== 'string' || n.length > MAX_IDENT || !IDENT.test(n)) {
    throw typeError(`${what} must be a C identifier, got ${describeValue(n)}`);
  }
}

function tagOf(kind: 'struct' | 'union' | 'enum', name: unknown): string {
  if (typeof name !== 'string') throw typeError(`name must be a string, got ${describeValue(name)}`);
  let tag = name.trim();
  if (tag.startsWith(`${kind} `)) tag = tag.slice(kind.length + 1).trim();
  if (tag !== '') checkIdent(tag, 'name');
  return tag;
}

function aggregate<F extends FieldMap>(
  kind: 'struct' | 'union',
  name: string,
  fields: F | ((self: StructType) => F),
): StructType<ShapeOf<F>, F> {
  const tag = tagOf(kind, name);
  const s = incompleteStruct(kind, tag);
  const map = typeof fields === 'function' ? fields(s) : fields;
  if (typeof map !== 'object' || map === null || Array.isArray(map)) {
    throw typeError(`fields must be an object mapping member names to types, got ${describeValue(map)}`);
  }
  const members: MemberDecl[] = [];
  for (const key of Object.keys(map)) {
    const type = (map as Record<string, unknown>)[key];
    assertType(type, `field '${key}'`);
    if (key.startsWith('...')) {
      members.push({ name: '', type });
    } else {
      checkIdent(key, 'field name');
      members.push({ name: key, type });
    }
  }
  return completeStruct<ShapeOf<F>, F>(s, members);
}

/**
 * Pointer to `target` (`null`, `'void'` or nothing for `void *`). Its JS value is the
 * address as a number; as a struct member it reads as a reference to the target.
 */
function pointer<P extends Type>(target: P): PointerType<number, P>;
function pointer(target?: null | 'void'): PointerType<number, null>;
function pointer(target: Type | null | 'void' = null): PointerType<number> {
  if (target === null || target === 'void') return pointerTo(null);
  assertType(target, 'target');
  return pointerTo(target);
}

/**
 * Builders for type objects. Scalars are the same singletons `cdef()` and
 * `parseTypeName()` return, and aggregates are laid out by the same code,
 * so `types.struct('point', {x: types.i32, y: types.i32})` deep-equals
 * `cdef('struct point {int32_t x; int32_t y;};').typeof('struct point')`.
 * @example
 * ```ts
 * const Point = types.struct('point', { x: types.i32, y: types.i32 })
 * const Shape = types.struct('shape', {
 *   corners: types.array(Point, 4),            // struct point corners[4]
 *   next: types.ptr(types.char),               // char *next
 *   id: types.u64,                             // uint64_t id: a bigint in JavaScript
 * })
 * const s = mem.new(Shape, { id: 1n })         // typed members: s.corners.at(0).x
 * ```
 * @category Types and structs
 */
export const types = Object.freeze({
  /** `int8_t` */
  i8: int8,
  /** `uint8_t` */
  u8: uint8,
  /** `int16_t` */
  i16: int16,
  /** `uint16_t` */
  u16: uint16,
  /** `int32_t` */
  i32: int32,
  /** `uint32_t` */
  u32: uint32,
  /** `int64_t` (bigint) */
  i64: int64,
  /** `uint64_t` (bigint) */
  u64: uint64,
  /** `float` */
  f32: float32,
  /** `double` */
  f64: float64,
  /** `bool` (1 byte) */
  bool: boolean,
  /** `char` (signed byte) */
  char,
  /** `size_t` (= `uint64_t`, LP64) */
  size_t: uint64 as ScalarType<bigint>,
  /** `ssize_t` (= `int64_t`, LP64) */
  ssize_t: int64 as ScalarType<bigint>,
  /** `intptr_t` (= `int64_t`) */
  intptr_t: int64 as ScalarType<bigint>,
  /** `uintptr_t` (= `uint64_t`) */
  uintptr_t: uint64 as ScalarType<bigint>,

  /**
   * Pointer to `target` (`null` or `'void'` for `void *`). Its JS value is
   * the address as a number.
   */
  ptr: pointer,

  /** `element[length]`; nest for multi-dimensional arrays. */
  array<E extends Type>(element: E, length: number): ArrayType<JsOf<E>[], E> {
    assertType(element, 'element');
    return arrayOf(element, length);
  },

  /**
   * `struct name { ... }` (`name` `''` for an anonymous struct). `fields`
   * maps member names to types in declaration order; a key starting with
   * `...` holds a C11 anonymous struct/union member. Pass a function to
   * refer to the struct itself: `(self) => ({ next: types.ptr(self) })`.
   */
  struct<F extends FieldMap>(name: string, fields: F | ((self: StructType) => F)): StructType<ShapeOf<F>, F> {
    return aggregate('struct', name, fields);
  },

  /** `union name { ... }`; same rules as `types.struct`. */
  union<F extends FieldMap>(name: string, fields: F | ((self: StructType) => F)): StructType<ShapeOf<F>, F> {
    return aggregate('union', name, fields);
  },

  /**
   * `enum name { ... }` from `{A: 0, B: 5}` or `['A', 'B']` (values 0, 1...).
   * Laid out like gcc: 4 bytes unless a value needs 64 bits.
   */
  enum(name: string, members: Readonly<Record<string, number>> | readonly string[]): EnumType<EnumValue> {
    const tag = tagOf('enum', name);
    let list: Array<readonly [string, number]>;
    if (Array.isArray(members)) {
      list = (members as readonly unknown[]).map((m, i) => {
        checkIdent(m as string, `members[${i}]`);
        return [m as string, i] as const;
      });
    } else if (typeof members === 'object' && members !== null) {
      list = Object.keys(members).map((k) => {
        checkIdent(k, 'member name');
        return [k, (members as Record<string, number>)[k] as number] as const;
      });
    } else {
      throw typeError(`members must be an object or an array of names, got ${describeValue(members)}`);
    }
    return makeEnum(tag, list);
  },
});
