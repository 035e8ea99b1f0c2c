/**
 * {@link Ref}: a live, typed view of bytes inside a mapping. Scalars and arrays read
 * through {@link Ref.value} / {@link Ref.get}; struct and union references expose their
 * members as properties, with accessors generated once per type. Pointers are stored as
 * absolute addresses in the creator's address space and translated on dereference; a
 * pointer outside the segment is `ERR_SHM_OUT_OF_BOUNDS`, never a raw read.
 * @module
 */
import { inspect, type InspectOptions } from 'node:util'
import { checkIndex, checkOptions, describe } from './args.js'
import { closedError, outOfBounds, rangeError, readOnlyError, typeError } from './errors.js'
import { type Handle, registerReviver } from './handles.js'
import { checkIntact, checkMemory, GUARD, internals, type MappedMemory, memoryOfHandle } from './memory.js'
import { readCString } from './strings.js'
import type { RefOf } from './typed.js'
import {
  describeType, flatMembers, formatType, isComplete, isType, memberProperty, parseTypeName, structLayoutAccessors, typeFromDescription, valueAccessor,
  type Accessor, type ArrayType, type FieldAccessor, type PointerType, type StructType, type Type, type TypeOfName,
} from './types/index.js'
import { describeClonedType } from './types/describe.js'

/**
 * What a {@link Ref} needs of the heap (or other owner) its memory came from.
 * @category Types and structs
 */
export interface RefHeap {
  /** Returns a block to the heap. */
  free(offset: number): void
  /**
   * True for process-local memory (CBase objects made without a shared heap): it is not
   * a heap other processes can see, so {@link Ref.heap} reports `null`.
   */
  readonly processLocal?: boolean
  /**
   * Called when a pointer at `slot` (an offset in the same mapping) is set to memory
   * owned by `target` (`null` when it no longer points at owned memory): process-local
   * owners keep the target alive as long as themselves.
   */
  retain?(slot: number, target: RefHeap | null): void
}

/** The constructor of a struct/union reference class (see {@link structClassOf}). */
export type StructRefClass = new (memory: MappedMemory, offset: number, type: Type, heap: RefHeap | null) => Ref

/** What the package's other modules read of a reference, immune to member names. */
export interface RefParts {
  readonly memory: MappedMemory
  readonly offset: number
  readonly type: Type
  readonly heap: RefHeap | null
}

/** @internal A reference's parts (struct members may hide `offset`, `heap`, ...). */
export let refParts: (r: Ref) => RefParts

/**
 * @internal Writes `v` as the whole value of `r`: what `r.value = v` does, also where a
 * struct member named `value` hides that setter.
 */
export let writeValue: (r: Ref, v: unknown) => void

let revivedStructClass: (t: StructType) => { cls: StructRefClass; type: StructType } | undefined = () => undefined

/**
 * @internal How a revived struct reference finds a class registered for a structurally
 * identical type in this process (set by the CBase module).
 */
export function setRevivedStructClass(fn: (t: StructType) => { cls: StructRefClass; type: StructType } | undefined): void {
  revivedStructClass = fn
}

let heapOf: (m: MappedMemory) => RefHeap | null = () => null

/** @internal How a revived reference finds its heap; set by the heap module. */
export function setRefHeapLookup(fn: (m: MappedMemory) => RefHeap | null): void {
  heapOf = fn
}

// The fields every member accessor reads live under symbols, not `#private` names:
// V8 (Node 20) reads symbol-keyed properties inside the generated accessors several
// times faster than private fields (row 6 of `npm run bench`), and symbols still cannot
// collide with member names. OFFSET is the offset in the mapping; VIEW is a DataView
// over the window of the mapping holding the object (all of it, unless the mapping is
// larger than one ArrayBuffer may be), and VOFF the object's offset in VIEW. RO marks a
// segment opened read-only: setters throw ERR_SHM_READ_ONLY (scalar member setters have
// no check of their own: such a segment's DataView refuses every write, lib/memory.ts).
//
// Every access is followed by one load of GUARD (see lib/memory.ts): it stays 0 unless
// a mapping of this process lost pages under it (shrunk by another process, a full
// /dev/shm), and then the access throws ERR_SHM_TRUNCATED / ENOSPC instead of returning
// the zeros the SIGBUS guard put there.
const OFFSET: unique symbol = Symbol('shmutils.offset')
const VIEW: unique symbol = Symbol('shmutils.view')
const VOFF: unique symbol = Symbol('shmutils.voff')
const RO: unique symbol = Symbol('shmutils.readOnly')
const MEM: unique symbol = Symbol('shmutils.memory')

/**
 * Phantom key that carries a reference's `E` type parameter (see {@link Ref}). Never
 * present at run time.
 */
export declare const RefElement: unique symbol

type ElementValue<T, E> = unknown extends E ? (T extends readonly (infer X)[] ? X : T) : E extends Ref<infer V, infer _> ? V : unknown

/**
 * The value of element `i` of the reference `R`: of an array, of what a pointer points
 * at, or (`i` = 0) a scalar itself. `number` for a `Ref<number[]>`.
 * @category Types and structs
 */
export type ElementOf<R> = R extends Ref<infer T, infer E> ? ElementValue<T, E> : unknown

/**
 * The reference to element `i` of the reference `R` (see {@link ElementOf}).
 * @category Types and structs
 */
export type ElementRefOf<R> = R extends Ref<infer T, infer E> ? (unknown extends E ? Ref<ElementValue<T, E>> : E) : Ref

/**
 * What writing a whole `Ref<T, E>` takes: its value, and for a pointer to a known target
 * also a `Ref` or `null`.
 * @category Types and structs
 */
export type ValueInput<T, E> = unknown extends E ? T : T extends readonly unknown[] ? T : T | Ref | null

/**
 * What a pointer reference `R` points at: a reference, or `null` (the address for `void *`).
 * @category Types and structs
 */
export type TargetOf<R> = R extends Ref<infer _, infer E> ? (unknown extends E ? Ref | number | null : E | null) : Ref | number | null

let newRef: <T>(memory: MappedMemory, offset: number, type: Type<T>, heap: RefHeap | null) => Ref<T>
let newArrayRef: <T>(memory: MappedMemory, offset: number, type: Type<T>, heap: RefHeap | null) => Ref<T>
let makeStructClass: (t: StructType) => StructRefClass

/**
 * A live view of typed memory inside a mapping. Reads and writes go straight to the
 * shared bytes (no copies), so other processes see them at once; synchronize with a
 * `Lock` as you would in C.
 *
 * Struct/union references expose each member as a property: scalar and enum members
 * read and write values; nested structs and arrays read as references; pointer
 * members read as a `Ref` to the target (`null` for NULL; a number for `void *`) and
 * accept a `Ref`, `null` or a number. A member named like a `Ref` property hides it.
 *
 * In TypeScript, `T` is the value type and `E` the reference an element (arrays) or the
 * target (pointers) gives; references made from types TypeScript can read are typed
 * (see `RefOf`): `mem.new('int32_t')` is a `Ref<number>`, a struct reference made from
 * `types.struct` has its members as typed properties.
 *
 * @example
 * ```ts
 * const Point = types.struct('point', { x: types.i32, y: types.i32 })
 * const p = mem.new(Point, { x: 1 })   // Ref<{ x: number; y: number }> & { x: number; y: number }
 * p.y = p.x + 1                        // members read and write the shared bytes
 * const xs = mem.new('double[4]', [1, 2])
 * xs.get(1)                            // 2 (a number)
 * ```
 * @category Types and structs
 */
export class Ref<T = unknown, E = unknown> {
  /** Phantom: the reference an element or target gives (TypeScript only, never present). */
  declare readonly [RefElement]?: E
  /**
   * The reference's handle as an own property, so that a structured clone carries it
   * (see `revive`): {@link toJSON}'s, except that `type` is the type object itself (made
   * into a description only when needed: a reference is made often, sent rarely). A
   * symbol for memory no other process can map.
   */
  readonly $shmutils: Handle | symbol
  declare private [OFFSET]: number
  // Behind a getter, as `offset` and `type` are, so that a member named `memory` hides it.
  declare private [MEM]: MappedMemory
  #type: Type<T>
  declare private [VIEW]: DataView
  declare private [VOFF]: number
  declare private [RO]: boolean
  #heap: RefHeap | null
  #acc: Accessor<T> | null = null

  /** References come from `heap.new`, `mem.new`, {@link Ref.at} and `revive`. */
  protected constructor(memory: MappedMemory, offset: number, type: Type<T>, heap: RefHeap | null) {
    const mi = internals(memory)
    if (!isComplete(type)) throw typeError(`${formatType(type)} is incomplete: only pointers to it can be made`)
    if (offset + type.size > memory.size) {
      throw outOfBounds(`${formatType(type)} at offset ${offset} (${type.size} bytes) is outside the mapping of ${memory.size} bytes`)
    }
    const win = mi.window(offset, type.size)
    this[MEM] = memory
    this[OFFSET] = offset
    this.#type = type
    this[VIEW] = win.dv
    this[VOFF] = offset - win.start
    this[RO] = mi.readOnly
    this.#heap = heap
    const m = memory.$shmutils
    this.$shmutils = typeof m === 'symbol' ? m : { $shmutils: 'Ref', segment: m.segment, offset, type, memory: m }
  }

  /**
   * A reference to a `type` at `offset` in `memory` (bounds-checked), `type` given as a
   * C type name (`'char *'` here is a pointer, as in a declaration).
   * @throws ShmError `ERR_SHM_OUT_OF_BOUNDS`; TypeError for an incomplete type or a bad name
   */
  static at<const S extends string>(memory: MappedMemory, offset: number, type: S): RefOf<TypeOfName<S>>
  /**
   * A reference to a `type` at `offset` in `memory` (bounds-checked).
   * @throws ShmError `ERR_SHM_OUT_OF_BOUNDS`; TypeError for an incomplete type
   */
  static at<Ty extends Type>(memory: MappedMemory, offset: number, type: Ty): RefOf<Ty>
  static at(memory: MappedMemory, offset: number, type: Type | string): Ref {
    checkMemory(memory)
    checkIndex('offset', offset)
    let t: Type
    try {
      t = typeof type === 'string' ? parseTypeName(type) : type
    } catch (e) {
      throw typeError((e as Error).message)
    }
    if (!isType(t)) throw typeError(`The "type" argument must be a type or a C type name; got ${describe(type)}`)
    return refAt(memory, offset, t, heapOf(memory))
  }

  /** The mapping holding the bytes. */
  get memory(): MappedMemory {
    return this[MEM]
  }

  /** Byte offset inside {@link memory}. */
  get offset(): number {
    return this[OFFSET]
  }

  /** Absolute address in this process. */
  get address(): number {
    return this[MEM].address.begin + this[OFFSET]
  }

  /** The C type. */
  get type(): Type<T> {
    return this.#type
  }

  /** The shared heap this reference was allocated from, if any (`null` for process-local memory). */
  get heap(): RefHeap | null {
    const h = this.#heap
    return h === null || h.processLocal === true ? null : h
  }

  #live(): DataView {
    const dv = this[VIEW]
    // Once the mapping is closed, the view's every property throws ERR_SHM_CLOSED (see
    // `poisonView` in memory.ts), so no access needs a check of its own.
    if (dv.byteLength === 0) throw closedError('the reference\'s mapping')
    return dv
  }

  #writable(): DataView {
    if (this[RO]) throw readOnlyError()
    return this.#live()
  }

  /**
   * The whole value: a number/bigint/boolean, an array, or a plain object for structs.
   * A pointer's value is the stored address (creator's address space; 0 = NULL); a
   * pointer reference also takes a `Ref` (in the same segment) or `null`.
   */
  get value(): T {
    const v = (this.#acc ??= valueAccessor(this.#type)).get(this.#live(), this[VOFF])
    if (GUARD[0] !== 0) checkIntact(this[MEM])
    return v
  }

  /**
   * Writes the whole value (see the getter; a pointer, also one inside a struct or array
   * value, also takes a `Ref` or `null`).
   */
  set value(v: ValueInput<T, E>) {
    this.#writeValue(v)
  }

  #writeValue(v: unknown): void {
    const t = this.#type as Type
    const x = holdsPointer(t) ? pointerArgs(this[MEM], t, v, formatType(t)) : v
    ;(this.#acc ??= valueAccessor(this.#type)).set(this.#writable(), this[VOFF], x as T)
    if (GUARD[0] !== 0) checkIntact(this[MEM])
  }

  /**
   * Element `i`: of an array; of the target of a pointer (`p[i]` in C, dereferenced
   * with bounds checks); `0` on a scalar is the scalar itself.
   */
  get<R>(this: R, i: number): ElementOf<R> {
    const self = this as Ref
    const [acc, dv, off] = self.#element(i)
    const v = acc.get(dv, off)
    if (GUARD[0] !== 0) checkIntact(self[MEM])
    return v as ElementOf<R>
  }

  /** Writes element `i` (see {@link get}); pointer elements also take a `Ref`. */
  set<R>(this: R, i: number, v: ElementOf<R>): void {
    const self = this as Ref
    if (self[RO]) throw readOnlyError()
    const [acc, dv, off, el] = self.#element(i)
    acc.set(dv, off, el.kind === 'pointer' ? pointerArg(self[MEM], v, formatType(el)) : v)
    if (GUARD[0] !== 0) checkIntact(self[MEM])
  }

  /** A reference to element `i` of an array, or to `p[i]` for a pointer. */
  at<R>(this: R, i: number): ElementRefOf<R> {
    const self = this as Ref
    const t = self.#type as Type
    if (t.kind === 'array') return refAt(self[MEM], self.#elementOffset(t, i), t.element, self.#heap) as ElementRefOf<R>
    if (t.kind === 'pointer') {
      const target = pointee(t)
      return refAt(self[MEM], self.#pointeeOffset(t, target, i), target, self.#heap) as ElementRefOf<R>
    }
    throw typeError(`${formatType(t)} is not an array or pointer`)
  }

  /** For a pointer reference: what it points to (`null` for NULL, the address for `void *`). */
  deref<R>(this: R): TargetOf<R> {
    const self = this as Ref
    const t = self.#type as Type
    if (t.kind !== 'pointer') throw typeError(`${formatType(t)} is not a pointer`)
    const r = readPointer(self[MEM], self.#live(), self[VOFF], t, self.#heap)
    if (GUARD[0] !== 0) checkIntact(self[MEM])
    return r as TargetOf<R>
  }

  /** Element `i`'s accessor, the view and offset in it to use, and its type. */
  #element(i: number): [Accessor<unknown>, DataView, number, Type] {
    const t = this.#type as Type
    if (t.kind === 'array') {
      const off = this.#elementOffset(t, i) - this[OFFSET] + this[VOFF]
      return [valueAccessor(t.element), this.#live(), off, t.element]
    }
    if (t.kind === 'pointer') {
      const target = pointee(t)
      const off = this.#pointeeOffset(t, target, i)
      const win = internals(this[MEM]).window(off, target.size)
      return [valueAccessor(target), win.dv, off - win.start, target]
    }
    if (i !== 0) {
      const n = formatType(t)
      throw rangeError(
        `The "i" argument must be 0 for a ${n}; got ${describe(i)}. This Ref is one ${n}, not an array ` +
          `(a ${n} * member reads as a Ref to the one ${n} it points at). To index what starts there, ` +
          `view it as an array: Ref.at(ref.memory, ref.offset, '${n}[length]')`,
      )
    }
    return [valueAccessor(t), this.#live(), this[VOFF], t]
  }

  #elementOffset(t: ArrayType, i: number): number {
    checkIndex('i', i)
    if (i >= t.length) throw rangeError(`The "i" argument must be below ${t.length} for ${formatType(t)}; got ${i}`)
    return this[OFFSET] + i * t.element.size
  }

  #pointeeOffset(t: PointerType, target: Type, i: number): number {
    checkIndex('i', i)
    const p = pointerValue(this.#live(), this[VOFF])
    if (GUARD[0] !== 0) checkIntact(this[MEM])
    if (p === 0) throw outOfBounds(`NULL ${formatType(t)} dereferenced`)
    return translate(this[MEM], p + i * target.size, target)
  }

  /**
   * The element count of an array reference (`char[16]` has 16).
   * @throws TypeError for a reference that is not to an array
   */
  get length(): number {
    const t = this.#type as Type
    if (t.kind !== 'array') throw typeError(`${formatType(t)} is not an array: it has no length`)
    return t.length
  }

  /**
   * The text in a `char[N]`, `uint8_t[N]` or `int8_t[N]`, behind a `char *` (a pointer
   * reference, or the `char` a struct's `char *` member reads as): UTF-8 up to the first
   * NUL, at most `maxLength` bytes (an array also stops at its end). Invalid UTF-8 reads
   * as U+FFFD.
   * @throws TypeError for another type; ShmError `ERR_SHM_OUT_OF_BOUNDS` for a NULL
   *   pointer, or a pointed-to string that runs off the segment without a NUL
   */
  string(options?: StringOptions): string {
    const t = this.#type as Type
    const max = stringLimit(options)
    let at: number
    let limit = max
    let pointed = true
    if (t.kind === 'array' && isByte(t.element)) {
      at = this[OFFSET]
      limit = Math.min(t.length, max)
      pointed = false
    } else if (isByte(t)) {
      at = this[OFFSET] // what a `char *` member reads as: the first char of the string
    } else if (t.kind === 'pointer' && t.target !== null && isByte(t.target)) {
      const p = pointerValue(this.#live(), this[VOFF])
      if (p === 0) throw outOfBounds(`NULL ${formatType(t)} read as a string`)
      at = translate(this[MEM], p, t.target)
    } else {
      throw typeError(`${formatType(t)} does not hold a string: use char *, char[N] or uint8_t[N]`)
    }
    this.#live()
    // The bytes that may be read: up to `limit`, never past the segment's end.
    const s = readCString(internals(this[MEM]).window, this[MEM].size, at, limit, pointed)
    if (GUARD[0] !== 0) checkIntact(this[MEM])
    return s
  }

  /** The object's bytes (a view into the mapping, not a copy). */
  bytes(): Uint8Array {
    const dv = this.#live()
    if (GUARD[0] !== 0) checkIntact(this[MEM])
    return new Uint8Array(dv.buffer, dv.byteOffset + this[VOFF], this.#type.size)
  }

  /**
   * Returns the memory to its heap; the reference must not be used afterwards. A named
   * object loses its name with it (see `Heap.free`).
   */
  free(): void {
    if (!this.#heap) throw typeError('This reference was not allocated from a heap')
    this.#heap.free(this[OFFSET])
  }

  /**
   * A handle carrying the type, so the receiver needs no import of the declaration.
   * @throws TypeError for process-local memory (nothing another process could map)
   */
  toJSON(): Handle {
    const h = this.$shmutils
    if (typeof h === 'symbol') {
      throw typeError(`This ${formatType(this.#type)} is in process-local memory and cannot be shared: allocate it in a named segment's heap`)
    }
    return { ...h, type: describeType(this.#type) }
  }

  /** What `console.log` and `util.inspect` show: the class, where the bytes are, the value. */
  [inspect.custom](depth: number, options: InspectOptions, show: typeof inspect): string {
    const m = this[MEM]
    const where = m.closed ? 'closed mapping' : `${m.name ?? (m.managed ? 'anonymous segment' : 'process-local memory')} + ${this[OFFSET]}`
    if (m.closed || depth < 0) return `${this.constructor.name} (${where})`
    let value: unknown
    try {
      value = this.value
    } catch (e) {
      value = `<${(e as Error).message}>`
    }
    return `${this.constructor.name} (${where}) ${show(value, { ...options, depth: options.depth == null ? null : options.depth - 1 })}`
  }

  static {
    refParts = (r) => ({ memory: r[MEM], offset: r[OFFSET], type: r.#type, heap: r.#heap })
    writeValue = (r, v) => r.#writeValue(v)
    newRef = (memory, offset, type, heap) => new Ref(memory, offset, type, heap)
    // The subclass with member properties for a struct/union type (see structClassOf).
    makeStructClass = (t) => {
      const layout = structLayoutAccessors(t)
      class StructRef extends Ref {}
      for (const name of layout.names) {
        const f = layout.fields[name]!
        const ft = f.type
        let desc: PropertyDescriptor
        if (ft.kind === 'pointer') {
          desc = {
            get(this: Ref) {
              const r = readPointer(this[MEM], this.#live(), this[VOFF] + f.offset, ft, this.#heap)
              if (GUARD[0] !== 0) checkIntact(this[MEM])
              return r
            },
            set(this: Ref, v: unknown) {
              const target = writePointer(this[MEM], this.#writable(), this[VOFF] + f.offset, v, `${formatType(t)}.${name}`)
              if (GUARD[0] !== 0) checkIntact(this[MEM])
              this.#heap?.retain?.(this[OFFSET] + f.offset, target)
            },
          }
        } else if (f.scalar) {
          // The hottest accessors: no closed check (a closed mapping's view throws by itself).
          desc = scalarMember(t, f)
        } else {
          desc = {
            get(this: Ref) {
              return refAt(this[MEM], this[OFFSET] + f.offset, ft, this.#heap)
            },
            set(this: Ref, v: unknown) {
              const dv = this.#writable()
              if (v instanceof Ref) {
                // A reference of the member's type (what reading the member gives, what
                // `mem.new` of the type makes): its bytes are copied in, as C assigns a
                // struct (a decoded value would lose a union's other members' bytes and
                // a NaN's payload). Staged: the two may overlap.
                const bytes = bytesOfSameType(v, ft, `${formatType(t)}.${name}`)
                new Uint8Array(dv.buffer, dv.byteOffset + this[VOFF] + f.offset, ft.size).set(bytes)
              } else {
                f.set(dv, this[VOFF], v)
              }
              if (GUARD[0] !== 0) checkIntact(this[MEM])
            },
          }
        }
        Object.defineProperty(StructRef.prototype, name, { ...desc, enumerable: true, configurable: false })
      }
      Object.defineProperty(StructRef, 'name', { value: `Ref<${formatType(t)}>` })
      return StructRef as unknown as StructRefClass
    }
  }
}

/**
 * The property of a scalar member: read or write, then the GUARD check. Each member gets
 * functions of its own with the DataView operation and the member's offset folded in
 * (see `memberProperty`), so that `ref.x = ref.x + 1` in a loop inlines to two DataView
 * operations and two loads of GUARD (bench rows 6 and 7.1); where code generation is
 * off, closures around the member's accessors.
 */
function scalarMember(t: StructType, f: FieldAccessor): PropertyDescriptor {
  const lost = (r: Ref): void => checkIntact(r[MEM])
  // No read-only check of its own: a read-only mapping's DataView refuses every write
  // (lib/memory.ts); `beforeCheck` keeps its error ahead of a bad value's.
  const generated = memberProperty(t, f, {
    view: 'this[VIEW]',
    base: 'this[VOFF]',
    after: 'if (GUARD[0]) lost(this)',
    names: ['VIEW', 'VOFF', 'GUARD', 'lost'],
    values: [VIEW, VOFF, GUARD, lost],
    beforeCheck: (r) => {
      if ((r as Ref)[RO]) throw readOnlyError()
    },
  })
  return (
    generated ?? {
      get(this: Ref) {
        const v = f.get(this[VIEW], this[VOFF])
        if (GUARD[0] !== 0) lost(this)
        return v
      },
      set(this: Ref, v: unknown) {
        if (this[RO]) throw readOnlyError()
        f.set(this[VIEW], this[VOFF], v)
        if (GUARD[0] !== 0) lost(this)
      },
    }
  )
}

const structClasses = new WeakMap<StructType, StructRefClass>()

/**
 * @internal The reference class of a struct/union type, built once per type: a `Ref`
 * subclass whose prototype has a property per member (CBase classes extend it).
 */
export function structClassOf(t: StructType): StructRefClass {
  let C = structClasses.get(t)
  if (!C) structClasses.set(t, (C = makeStructClass(t)))
  return C
}

/**
 * A reference to an array: {@link Ref} plus iteration over its elements. `refAt` makes
 * one for every array type, so `for (const x of mem.new('int32_t[4]'))` works while a
 * struct or scalar reference is not iterable at all.
 */
export class ArrayRef<T = unknown> extends Ref<T> {
  /**
   * The elements in order: values for scalars, enums and pointers (as {@link Ref.get}
   * reads them), live element references for structs, unions and nested arrays.
   */
  *[Symbol.iterator](): IterableIterator<unknown> {
    const t = this.type as Type as ArrayType
    const el = t.element
    const live = el.kind === 'struct' || el.kind === 'union' || el.kind === 'array'
    for (let i = 0; i < t.length; i++) yield live ? this.at(i) : this.get(i)
  }

  static {
    newArrayRef = (memory, offset, type, heap) => new ArrayRef(memory, offset, type, heap)
  }
}

/**
 * A copy of the bytes of `r`, a reference assigned whole to a nested struct or array
 * member of type `t` (`r` may overlap the member, or be it).
 * @throws TypeError when `r` is of another type (naming both)
 */
function bytesOfSameType(r: Ref, t: Type, label: string): Uint8Array {
  const rt = r.type
  if (rt !== t && JSON.stringify(describeType(rt)) !== JSON.stringify(describeType(t))) {
    throw typeError(`${label}: a reference to ${formatType(rt)} cannot be assigned to a member of type ${formatType(t)}`)
  }
  return r.bytes().slice()
}

/** @internal A reference of the right class for `type` (struct refs get member properties). */
export function refAt<T>(memory: MappedMemory, offset: number, type: Type<T>, heap: RefHeap | null): Ref<T> {
  const t = type as Type
  if (t.kind === 'struct' || t.kind === 'union') return new (structClassOf(t))(memory, offset, t, heap) as Ref<T>
  if (t.kind === 'array') return newArrayRef(memory, offset, type, heap)
  return newRef(memory, offset, type, heap)
}

/** Options of {@link Ref.string}. */
export interface StringOptions {
  /** Read at most this many bytes (of UTF-8); default: up to the NUL. */
  maxLength?: number
}

function stringLimit(options: StringOptions | undefined): number {
  if (options === undefined) return Infinity
  const { maxLength } = checkOptions(options)
  return maxLength === undefined ? Infinity : checkIndex('maxLength', maxLength)
}

/** `char`, `int8_t`, `uint8_t`: the element types of C strings. */
function isByte(t: Type): boolean {
  return t.kind === 'scalar' && (t.scalar === 'i8' || t.scalar === 'u8')
}

function pointee(t: PointerType): Type {
  const target = t.target
  if (target === null || !isComplete(target)) throw typeError(`${formatType(t)} cannot be dereferenced: its target has no size`)
  return target
}

function pointerValue(dv: DataView, off: number): number {
  return Number(dv.getBigUint64(off, true))
}

/** Creator-space absolute address → offset in `memory`, bounds-checked for `target`. */
function translate(memory: MappedMemory, p: number, target: Type): number {
  const off = p - internals(memory).base
  if (!(off >= 0 && off + target.size <= memory.size)) {
    throw outOfBounds(`pointer 0x${p.toString(16)} to ${formatType(target)} lies outside the segment`)
  }
  return off
}

function readPointer(memory: MappedMemory, dv: DataView, off: number, t: PointerType, heap: RefHeap | null): Ref | number | null {
  const p = pointerValue(dv, off)
  if (p === 0) return null
  if (t.target === null || !isComplete(t.target)) return p
  return refAt(memory, translate(memory, p, t.target), t.target, heap)
}

/** Whether pointers stored in `a` may point at `b`: the same segment, seen at the same base. */
function sameSegment(a: MappedMemory, b: MappedMemory): boolean {
  return a === b || (a.name !== null && a.name === b.name && internals(a).base === internals(b).base)
}

/**
 * A pointer value to store in `memory`: a `Ref` becomes its creator-space address (it
 * must be in the same segment: another process could not follow a pointer elsewhere);
 * anything else is returned for the accessor to validate.
 */
function pointerArg(memory: MappedMemory, v: unknown, what: string): unknown {
  if (!(v instanceof Ref)) return typeof v === 'number' ? creatorAddress(memory, v) : v
  const { memory: m, offset } = refParts(v)
  if (!sameSegment(memory, m)) {
    throw outOfBounds(`${what}: the target ${formatType(refParts(v).type)} is in another mapping (${m.name ?? 'anonymous'}); a pointer can only point inside its own segment`)
  }
  return internals(m).base + offset
}

/**
 * An address given as a number, as the creator's address space says it: one inside this
 * process's mapping of the segment (`ref.address`, where the mapping is not at the
 * creator's address: another process, a worker thread) is translated; any other is kept.
 */
function creatorAddress(memory: MappedMemory, x: number): number {
  const at = memory.address.begin
  const base = internals(memory).base
  return at !== base && x >= at && x < at + memory.size ? base + (x - at) : x
}

/** Whether a value of `t` holds a pointer anywhere (per type). */
const pointerHolders = new WeakMap<Type, boolean>()

function holdsPointer(t: Type): boolean {
  let h = pointerHolders.get(t)
  if (h === undefined) {
    // A struct reaches itself only through a pointer member, which answers first.
    pointerHolders.set(t, false)
    h =
      t.kind === 'pointer' ||
      (t.kind === 'array' && holdsPointer(t.element)) ||
      ((t.kind === 'struct' || t.kind === 'union') && [...flatMembers(t).values()].some((f) => holdsPointer(f.type)))
    pointerHolders.set(t, h)
  }
  return h
}

/**
 * `v`, a value for a whole `t`, with each `Ref` given for a pointer at any depth turned
 * into its address as {@link pointerArg} does (a copy of the objects and arrays on the
 * way); `v` itself when there is none. Everything else is left for the accessor to check.
 * Callers skip it (and the label they would format) for types without pointers.
 */
function pointerArgs(memory: MappedMemory, t: Type, v: unknown, what: string): unknown {
  if (t.kind === 'pointer') return pointerArg(memory, v, what)
  if (typeof v !== 'object' || v === null || !holdsPointer(t)) return v
  if (t.kind === 'array') {
    if (!Array.isArray(v)) return v
    let out: unknown[] | null = null
    for (let i = 0; i < v.length; i++) {
      const x = pointerArgs(memory, t.element, v[i], `${what}[${i}]`)
      if (x !== v[i]) (out ??= [...(v as unknown[])])[i] = x
    }
    return out ?? v
  }
  if (t.kind !== 'struct' && t.kind !== 'union') return v
  const o = v as Record<string, unknown>
  let out: Record<string, unknown> | null = null
  for (const f of flatMembers(t).values()) {
    const before = o[f.name]
    if (before === undefined) continue
    const x = pointerArgs(memory, f.type, before, `${what}.${f.name}`)
    if (x !== before) (out ??= { ...o })[f.name] = x
  }
  return out ?? v
}

/**
 * @internal The bytes writing `v` as a whole `t` in `memory` would write (over zeroes),
 * made on scratch bytes: it reads `v` (running whatever getters it has) once, and throws
 * what the write would throw (bad values, pointers to other mappings).
 */
export function valueImage(memory: MappedMemory, t: Type, v: unknown): Uint8Array {
  const image = new Uint8Array(t.size)
  valueAccessor(t).set(new DataView(image.buffer), 0, holdsPointer(t) ? pointerArgs(memory, t, v, formatType(t)) : v)
  return image
}

/** Stores a pointer member; returns the owner of the target when it is a `Ref`. */
function writePointer(memory: MappedMemory, dv: DataView, off: number, v: unknown, what: string): RefHeap | null {
  const x = pointerArg(memory, v, what)
  let p: bigint
  if (x === null || x === undefined) p = 0n
  else if (typeof x === 'number' && Number.isSafeInteger(x) && x >= 0) p = BigInt(x)
  else if (typeof x === 'bigint' && x >= 0n && x < 1n << 64n) p = x
  else if (typeof x === 'number' || typeof x === 'bigint') throw rangeError(`${what} must be a valid address (an integer in [0, 2^53)); got ${String(x)}`)
  else throw typeError(`${what} must be a Ref, null or an address; got ${describe(v)}`)
  dv.setBigUint64(off, p, true)
  return v instanceof Ref ? refParts(v).heap : null
}

registerReviver('Ref', (h) => {
  const memory = memoryOfHandle(h)
  checkIndex('offset', h.offset)
  // A structured clone carries the type object itself (see `$shmutils`), JSON its description.
  const cloned = typeof h.type === 'object' && h.type !== null && 'kind' in h.type
  const t = typeFromDescription(cloned ? describeClonedType(h.type) : h.type)
  const own = t.kind === 'struct' || t.kind === 'union' ? revivedStructClass(t) : undefined
  if (own) return new own.cls(memory, h.offset, own.type, heapOf(memory))
  return refAt(memory, h.offset, t, heapOf(memory))
})
