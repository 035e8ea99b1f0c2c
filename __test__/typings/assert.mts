// Type-level assertions shared by the consumer files of the type test (`npm run test:types`).

/** `true` when `A` and `B` are the same type (not merely mutually assignable). */
export type Equal<A, B> = (<X>() => X extends A ? 1 : 2) extends <X>() => X extends B ? 1 : 2 ? true : false

/** Compiles only when `T` is `true`: `expectTrue<Equal<A, B>>()`. */
export function expectTrue<T extends true>(): T | undefined {
  return undefined
}

/**
 * Compiles only when `value`'s type is exactly `E`: `exact<Ref<number>>()(mem.new('int32_t'))`.
 * (A mismatch asks for a second argument of type `never`, which cannot be given.)
 */
export function exact<E>(): <A>(value: A, ...mismatch: Equal<A, E> extends true ? [] : [never]) => void {
  return () => undefined
}

/** The names of `T`'s members that look internal (`_`-prefixed): must be `never` for public classes. */
export type Underscored<T> = Extract<keyof T, `_${string}`>
