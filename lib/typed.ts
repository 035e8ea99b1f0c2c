/**
 * How TypeScript sees typed memory: the reference a type object gives ({@link RefOf}), the
 * members of a struct reference ({@link MembersOf}) and what an initializer may be
 * ({@link InitOf}). Types only: nothing here exists at run time.
 *
 * A type TypeScript knows nothing about (from `cdef()`, or a type name it cannot read)
 * gives the untyped forms: `Ref`, `unknown` members, any initializer. Run-time checks
 * apply either way.
 * @module
 */
import type { Ref } from './ref.js'
import type {
  AnonKeys, ArrayType, EnumType, JsOf, PointerType, ScalarType, Simplify, StructType, Type, UnionToIntersection,
} from './types/index.js'

/**
 * The reference to an object of type `Ty`: `Ref<number>` for an `int32_t`, `Ref<bigint>`
 * for a `uint64_t`, `Ref<number[], Ref<number>>` for an `int32_t[8]`, and for a struct
 * made with `types.struct` a reference with the members as properties:
 * `Ref<{ x: number }> & { x: number }`.
 * @category Types and structs
 */
export type RefOf<Ty> = Type extends Ty
  ? Ref
  : Ty extends StructType<infer V, infer F>
    ? unknown extends F
      ? Ref<V>
      : StructRef<V, MembersOf<F>>
    : Ty extends ArrayType<infer V, infer E>
      ? Ref<V, Type extends E ? unknown : RefOf<E>> & Iterable<MemberOf<E>>
      : Ty extends PointerType<infer V, infer P>
        ? Ref<V, PointeeRef<P>>
        : Ty extends ScalarType<infer V> | EnumType<infer V>
          ? Ref<V>
          : Ref

/**
 * The reference to a `char[n]` that `new('char *', text)`, `named(name, 'char *', text)`
 * and `heap.newString(text)` make: the bytes (with the NUL), iterable, and `string()`.
 * @category Types and structs
 */
export type CharArrayRef = Ref<number[], Ref<number>> & Iterable<number>

/** A struct reference: members named like a `Ref` property (`value`, `offset`...) hide it. */
type StructRef<V, M> = [keyof M & keyof Ref] extends [never] ? Ref<V> & M : Omit<Ref<V>, keyof M & keyof Ref> & M

/** The reference a pointer to `P` leads to (`unknown` for `void *` and unknown targets). */
type PointeeRef<P> = [P] extends [null] ? unknown : Type extends P ? unknown : P extends Type ? RefOf<P> : unknown

/**
 * What reading the struct member of type `Ty` gives through a struct reference: the value
 * for scalars and enums; a reference for nested structs and arrays; for a pointer, a
 * reference to its target or `null` (the address, or `null`, for `void *`).
 * @category Types and structs
 */
export type MemberOf<Ty> = Type extends Ty
  ? unknown
  : Ty extends PointerType<unknown, infer P>
    ? [P] extends [null]
      ? number | null
      : Type extends P
        ? Ref | number | null
        : PointeeRef<P> | null
    : Ty extends StructType | ArrayType
      ? RefOf<Ty>
      : JsOf<Ty>

/**
 * The member properties of a reference to a struct with the field map `F` (as given to
 * `types.struct`; members of anonymous `'...'` members are flattened into it).
 * @category Types and structs
 */
export type MembersOf<F> = Simplify<
  { -readonly [K in Exclude<keyof F, AnonKeys<F>>]: MemberOf<F[K]> } &
    UnionToIntersection<{ [K in AnonKeys<F>]: F[K] extends StructType<unknown, infer G> ? MembersOf<G> : unknown }[AnonKeys<F>]>
>

/**
 * What may initialize (or be written whole into) an object of type `Ty`: numbers for
 * 8- to 32-bit integers, floats and enums (enums also take a member name), a bigint or an
 * integral number for 64-bit integers, a boolean (or 0/1) for `bool`, a `Ref`, an
 * address or `null` for pointers, an array (or typed array, or for byte arrays a string)
 * for arrays, and an object with some of the members for structs.
 * @category Types and structs
 */
export type InitOf<Ty> = Type extends Ty
  ? unknown
  : Ty extends StructType<unknown, infer F>
    ? unknown extends F
      ? unknown
      : StructInit<F>
    : Ty extends ArrayType<unknown, infer E>
      ? ArrayInit<E>
      : Ty extends PointerType
        ? Ref | number | null
        : Ty extends EnumType<infer V>
          ? V | string
          : Ty extends ScalarType<infer V>
            ? ScalarInit<V>
            : unknown

type ScalarInit<V> = V extends bigint ? bigint | number : V extends boolean ? boolean | 0 | 1 : V

/** The typed arrays an array of numbers takes (not a `DataView`, nor any other array-like; 64-bit integers take the bigint ones). */
type NumberArrayView = Int8Array | Uint8Array | Uint8ClampedArray | Int16Array | Uint16Array | Int32Array | Uint32Array | Float32Array | Float64Array

// A string is let through for any array of numbers: the types cannot tell a byte array
// from a wider one (`char` and `int32_t` are both ScalarType<number>); run time refuses it
// for wider elements with a TypeError.
type ArrayInit<E> = Type extends E
  ? unknown
  : readonly InitOf<E>[] | (JsOf<E> extends number ? NumberArrayView | string : JsOf<E> extends bigint ? BigInt64Array | BigUint64Array : never)

type StructInit<F> = { [K in Exclude<keyof F, AnonKeys<F>>]?: InitOf<F[K]> } &
  UnionToIntersection<{ [K in AnonKeys<F>]: F[K] extends StructType<unknown, infer G> ? StructInit<G> : unknown }[AnonKeys<F>]>
