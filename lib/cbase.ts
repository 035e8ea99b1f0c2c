/**
 * {@link CBase}: classes over C structs, the original README's `CBase`, and
 * {@link astuple}.
 *
 * ```ts
 * const ffi = cdef(`typedef enum {INACTIVE, ACTIVE, DELETED} OrgUserStatus_t;
 *   struct org_user_t { uint64_t id; char *fullname; uint8_t fullname_len; OrgUserStatus_t status; };`)
 * class User extends CBase(ffi, 'struct org_user_t') {}
 * const u = User.new(4123n, 'Autumn', 6, ffi.lib.ACTIVE)   // process-local
 * const SharedUser = User.withHeap(mem)                     // allocates in mem's heap
 * const u2 = SharedUser.new()                               // zeroed, shared
 * ```
 * @module
 */
import { checkString, describe } from './args.js'
import { rangeError, typeError } from './errors.js'
import { Heap, heapOf } from './heap.js'
import { checkWellFormed } from './utf8.js'
import { allocateLocal } from './local.js'
import { isMappedMemory, type MappedMemory } from './memory.js'
import {
  Ref, refAt, refParts, setRevivedStructClass, structClassOf, type RefHeap, type StructRefClass,
} from './ref.js'
import {
  FFI, arrayOf, describeType, formatType, structLayoutAccessors, types, type StructLayout, type StructType, type Type,
} from './types/index.js'

/**
 * An instance of a {@link CBase} class: a struct reference with the members `F` as properties.
 * @category Types and structs
 */
export type CBaseInstance<F extends object = Record<string, unknown>> = Ref<F> & F

/**
 * Any class of struct references (the `this` of the static helpers). Such classes have no
 * public constructor: objects come from `new()` and `revive`.
 * @category Types and structs
 */
export type CBaseConstructor = abstract new (...args: never) => Ref

/**
 * The instances of a {@link CBaseConstructor} (`InstanceType` does not see through its constructor).
 * @category Types and structs
 */
export type CBaseInstanceOf<C> = C extends abstract new (...args: never) => infer R ? R : never

/**
 * The class returned by {@link CBase}. Everything here is static: instances have only
 * the struct's members and `Ref`'s methods (`'sizeof' in u` is false).
 * @category Types and structs
 */
export interface CBaseClass<F extends object = Record<string, unknown>> {
  /**
   * Not callable: instances come from {@link CBaseClass.new} and `revive` (the signature
   * is there so that `class User extends CBase(...) {}` works). Do not declare a
   * constructor in subclasses.
   */
  new (...args: never): CBaseInstance<F>
  /** The prototype (member properties, `Ref` methods). */
  readonly prototype: CBaseInstance<F>
  /** The FFI the declaration was looked up in. */
  readonly ffi: FFI
  /** The declaration given to {@link CBase}, e.g. `'struct org_user_t'`. */
  readonly cdecl: string
  /** The struct/union type. */
  readonly ctype: StructType
  /**
   * A new object, members set from `fields` in declaration order (members of anonymous
   * struct/union members flattened; missing or `undefined` ones stay zero). Pointer
   * members take a `Ref` (in the same memory), `null` or an address; a pointer to a
   * 1-byte type (`char *`, `uint8_t *`) also takes a string (stored with a terminating
   * NUL) or bytes, copied into the object's own block right after the struct and freed
   * with it.
   *
   * Where the memory comes from: the heap given to {@link CBaseClass.withHeap} for the
   * classes it returns; otherwise process-local memory (a private arena, see
   * `lib/local.ts`), returned when the object and every reference derived from it are
   * garbage-collected (or at `u.free()`); such an object cannot be sent to another
   * process, and {@link CBaseClass.heapOf} is `null`.
   * @throws RangeError for more values than members; TypeError/RangeError for a value
   *   a member does not take (the memory is released again)
   */
  'new'<C extends CBaseConstructor>(this: C, ...fields: unknown[]): CBaseInstanceOf<C>
  /**
   * A subclass whose {@link CBaseClass.new} allocates zeroed objects in a shared heap
   * (the same subclass for the same heap). Its objects are instances of this class too.
   * @param where - a `Heap`, or a managed `MappedMemory` (its heap)
   */
  withHeap<C extends CBaseConstructor>(this: C, where: Heap | MappedMemory): C
  /** The shared heap `obj` was allocated in, or `null` (process-local, or not from a heap). */
  heapOf(obj: Ref): Heap | null
  /** `sizeof` the struct (`obj`, if given, is checked to be one). */
  sizeof(obj?: Ref): number
  /** The C type of a pointer to the struct, as cffi spells it: `'struct org_user_t *'`. */
  typeof(obj?: Ref): string
  /** The object's bytes: a zero-copy view of `sizeof` bytes. */
  getbuffer(obj: Ref): Uint8Array
  /** The object's absolute address in this process. */
  addressof(obj: Ref): number
  /**
   * Makes `revive` in this process return instances of this class for references whose
   * type has this layout (see {@link CBase}).
   */
  register(this: CBaseConstructor): void
}

/** Any class (constructor) object. */
type AnyClass = abstract new (...args: never[]) => unknown

/** Which heap a `withHeap` class allocates from. */
const sharedHeaps = new WeakMap<AnyClass, Heap>()
/** `withHeap` classes already made, per class and heap. */
const withHeapCache = new WeakMap<AnyClass, WeakMap<Heap, AnyClass>>()
/**
 * The classes registered for `revive` per layout (key: the JSON type description), the
 * newest last: revive uses the newest that lives. A class CBase() made is held weakly,
 * so that classes of layouts made and dropped do not pile up, and one dropped gives the
 * layout back to the one registered before it (a class of the user's own, registered by
 * its first use or `register()`, is held: revive must keep making its instances).
 */
const revivable = new Map<string, { cls: StructRefClass | WeakRef<StructRefClass>; type: StructType }[]>()
/** Takes a collected CBase() class out of its layout's registrations in {@link revivable}. */
const collectedClasses = new FinalizationRegistry<string>((key) => {
  const list = revivable.get(key)
  if (list === undefined) return
  const live = list.filter((r) => !(r.cls instanceof WeakRef) || r.cls.deref() !== undefined)
  if (live.length === 0) revivable.delete(key)
  else revivable.set(key, live)
})

/** The class of a registration, if it still lives. */
function classOf(r: { cls: StructRefClass | WeakRef<StructRefClass> }): StructRefClass | undefined {
  return r.cls instanceof WeakRef ? r.cls.deref() : r.cls
}

/** The newest class registered for the layout `key` that still lives, with its type. */
function registered(key: string): { cls: StructRefClass; type: StructType } | undefined {
  const list = revivable.get(key) ?? []
  for (let i = list.length - 1; i >= 0; i--) {
    const cls = classOf(list[i]!)
    if (cls !== undefined) return { cls, type: list[i]!.type }
  }
  return undefined
}
/** Classes made by CBase() and withHeap(): registered only where no other class is. */
const madeHere = new WeakSet<AnyClass>()
/** User classes already registered by their first new()/withHeap(). */
const used = new WeakSet<AnyClass>()

const keys = new WeakMap<Type, string>()

/**
 * A key equal for structurally identical types. Cached per type object unless the type
 * reaches a struct that is still incomplete (a later cdef() may complete it).
 */
function layoutKey(t: Type): string {
  let k = keys.get(t)
  if (k === undefined) {
    k = JSON.stringify(describeType(t))
    if (!k.includes('"opaque"')) keys.set(t, k)
  }
  return k
}

setRevivedStructClass((t) => registered(layoutKey(t)))

/** Registers `cls` for revive (see {@link CBase} for the rules). */
function register(cls: AnyClass, type: StructType): void {
  const key = layoutKey(type)
  const made = madeHere.has(cls)
  if (made) {
    const cur = registered(key)
    if (cur && !madeHere.has(cur.cls)) return
    collectedClasses.register(cls, key)
  }
  // Registered again: it moves to the top.
  const list = (revivable.get(key) ?? []).filter((r) => classOf(r) !== cls)
  list.push({ cls: made ? new WeakRef(cls as StructRefClass) : (cls as StructRefClass), type })
  revivable.set(key, list)
}

/** On the first new()/withHeap() of a user class: register it. */
function firstUse(cls: AnyClass, type: StructType): void {
  if (madeHere.has(cls) || used.has(cls)) return
  used.add(cls)
  register(cls, type)
}

const encoder = new TextEncoder()

function isBytePointer(t: Type): boolean {
  return t.kind === 'pointer' && t.target !== null && t.target.size === 1 && t.target.kind === 'scalar'
}

/**
 * A class over the C struct or union `decl` of `ffi`, the original README's `CBase`:
 *
 * ```ts
 * class User extends CBase(ffi, 'struct org_user_t') {}
 * User.new(...fields)   User.withHeap(heap).new()   User.sizeof(u?)   User.typeof(u)
 * User.getbuffer(u)     User.addressof(u)           User.heapOf(u)    astuple(u)
 * ```
 *
 * The class extends the struct's reference class: instances are `Ref`s with a property
 * per member (see `Ref`), `toJSON()` gives a handle carrying the type, and
 * `u instanceof User` holds. Pass the members' JavaScript types as `F` to type them:
 * `CBase<{ id: bigint; fullname: Ref | null }>(ffi, decl)`.
 *
 * Reviving a handle in a process where a class is registered for a structurally
 * identical type (same layout, tags and member names) gives an instance of that class
 * (`instanceof User` holds); elsewhere (no declaration imported) a plain struct `Ref`
 * with the same members (`instanceof User` is false there: there is no `User`). A class
 * is registered for its layout by its first `new()` or `withHeap()` and by every
 * `register()` call, replacing the class registered before; the class `CBase()` itself
 * returns is registered only while no other class is, and only while it lives (once it
 * is garbage-collected, the class registered before it is used again). So a receiver
 * that only revives calls `User.register()` once.
 *
 * @param ffi - the declarations (from `cdef()`)
 * @param decl - a complete struct or union: `'struct org_user_t'`, a typedef name...
 * @throws TypeError when `decl` is unknown or not a complete struct/union
 * @category Types and structs
 */
export function CBase<F extends object = Record<string, unknown>>(ffi: FFI, decl: string): CBaseClass<F> {
  if (!(ffi instanceof FFI)) throw typeError(`The "ffi" argument must be an FFI (from cdef()); got ${describe(ffi)}`)
  checkString('decl', decl)
  let t: Type
  try {
    t = ffi.typeof(decl)
  } catch (e) {
    throw typeError(`The "decl" argument ${JSON.stringify(decl)} is not a type of this FFI: ${(e as Error).message}`)
  }
  if ((t.kind !== 'struct' && t.kind !== 'union') || !t.complete) {
    throw typeError(`The "decl" argument must name a complete struct or union; ${JSON.stringify(decl)} is ${formatType(t)}`)
  }
  const ctype: StructType = t
  const layout = structLayoutAccessors(ctype)
  const pointerName = ctype.name === '' ? `${decl.trim()} *` : `${ctype.name} *`

  const check = (obj: unknown, op: string): Ref => {
    const ty = obj instanceof Ref ? refParts(obj).type : null
    if (ty === null || (ty !== ctype && layoutKey(ty) !== layoutKey(ctype))) {
      throw typeError(`The "obj" argument of ${op} must be a ${formatType(ctype)} reference; got ${describe(obj)}`)
    }
    return obj as Ref
  }

  // One class per call; the statics close over this declaration.
  class CStruct extends structClassOf(ctype) {
    static readonly ffi: FFI = ffi
    static readonly cdecl: string = decl
    static readonly ctype: StructType = ctype

    constructor(memory: MappedMemory, offset: number, type: Type, heap: RefHeap | null) {
      if (!isMappedMemory(memory)) {
        throw typeError(`Use ${new.target.name}.new(...fields) to make a ${formatType(ctype)}`)
      }
      super(memory, offset, type, heap)
    }

    static new(this: typeof CStruct, ...fields: unknown[]): CStruct {
      firstUse(this, ctype)
      return construct(this, ctype, layout, fields)
    }

    static withHeap(this: typeof CStruct, where: Heap | MappedMemory): typeof CStruct {
      const heap = heapOf(where)
      firstUse(this, ctype)
      let perHeap = withHeapCache.get(this)
      if (!perHeap) withHeapCache.set(this, (perHeap = new WeakMap()))
      let Sub = perHeap.get(heap) as typeof CStruct | undefined
      if (!Sub) {
        Sub = class extends this {}
        Object.defineProperty(Sub, 'name', { value: this.name })
        sharedHeaps.set(Sub, heap)
        madeHere.add(Sub)
        perHeap.set(heap, Sub)
      }
      return Sub
    }

    static heapOf(obj: Ref): Heap | null {
      const h = refParts(check(obj, 'heapOf')).heap
      return h instanceof Heap ? h : null
    }

    static sizeof(obj?: Ref): number {
      if (obj !== undefined) check(obj, 'sizeof')
      return ctype.size
    }

    static typeof(obj?: Ref): string {
      if (obj !== undefined) check(obj, 'typeof')
      return pointerName
    }

    static getbuffer(obj: Ref): Uint8Array {
      return Ref.prototype.bytes.call(check(obj, 'getbuffer'))
    }

    static addressof(obj: Ref): number {
      const { memory, offset } = refParts(check(obj, 'addressof'))
      return memory.absAddressAt(offset)
    }

    static register(this: typeof CStruct): void {
      register(this, ctype)
    }
  }
  Object.defineProperty(CStruct, 'name', { value: `CBase<${formatType(ctype)}>` })
  madeHere.add(CStruct)
  register(CStruct, ctype)
  return CStruct as unknown as CBaseClass<F>
}

/** The shared heap a class allocates from: its own `withHeap` heap or an ancestor's. */
function sharedHeapOf(cls: AnyClass): Heap | null {
  for (let c: unknown = cls; typeof c === 'function'; c = Object.getPrototypeOf(c)) {
    const h = sharedHeaps.get(c as AnyClass)
    if (h) return h
  }
  return null
}

/** `cls.new(...fields)`: allocate (shared heap or process-local), zero, set members. */
function construct<C extends Ref>(
  cls: new (m: MappedMemory, o: number, t: Type, h: RefHeap | null) => C,
  ctype: StructType,
  layout: StructLayout,
  fields: unknown[],
): C {
  const names = layout.names
  if (fields.length > names.length) {
    throw rangeError(`${cls.name}.new() takes at most ${names.length} member values (${names.join(', ')}); got ${fields.length}`)
  }
  // Strings and bytes for byte pointers go right after the struct, in the same block.
  const extra = new Map<number, { bytes: Uint8Array; at: number }>()
  let size = ctype.size
  fields.forEach((v, i) => {
    if (!isBytePointer(layout.fields[names[i]!]!.type)) return
    let bytes: Uint8Array
    if (typeof v === 'string') {
      checkWellFormed(v, `${cls.name}.new() member ${names[i]}`)
      bytes = encoder.encode(`${v}\0`)
    }
    else if (v instanceof Uint8Array) bytes = v
    else return
    extra.set(i, { bytes, at: size })
    size += Math.max(bytes.length, 1)
  })
  const align = Math.max(ctype.align, 16)
  const heap = sharedHeapOf(cls)
  let memory: MappedMemory
  let offset: number
  let owner: RefHeap
  if (heap) {
    offset = heap.malloc(size, align)
    memory = heap.memory
    owner = heap
    memory.view(offset, size).fill(0)
  } else {
    ;({ memory, offset, owner } = allocateLocal(size, align))
  }
  try {
    const obj = new cls(memory, offset, ctype, owner)
    const props = obj as unknown as Record<string, unknown>
    fields.forEach((v, i) => {
      if (v === undefined) return
      const x = extra.get(i)
      if (x) {
        memory.view(offset + x.at, x.bytes.length).set(x.bytes)
        props[names[i]!] = refAt(memory, offset + x.at, arrayOf(types.char, Math.max(x.bytes.length, 1)), owner)
      } else {
        props[names[i]!] = v
      }
    })
    return obj
  } catch (e) {
    owner.free(offset)
    throw e
  }
}

/**
 * The member values of a struct/union reference, in declaration order (members of
 * anonymous members flattened), like Python's `dataclasses.astuple`: scalars and enums
 * as values, pointers as a `Ref` to the target (`null` for NULL, the address for
 * `void *`), nested structs as nested arrays (recursively), arrays as JS arrays of their
 * elements converted the same way.
 * @throws TypeError if `obj` is not a struct/union reference
 * @category Types and structs
 */
export function astuple(obj: Ref): unknown[] {
  if (!(obj instanceof Ref)) throw typeError(`The "obj" argument must be a struct reference; got ${describe(obj)}`)
  const t = refParts(obj).type
  if (t.kind !== 'struct' && t.kind !== 'union') throw typeError(`The "obj" argument must be a struct reference; got a ${formatType(t)}`)
  return tupleOf(obj, t)
}

function tupleOf(r: Ref, t: StructType): unknown[] {
  // The generated member accessors, read from the type's class: immune to own
  // properties (a member named `memory`) and to subclasses redefining a member.
  const proto = structClassOf(t).prototype as object
  const layout = structLayoutAccessors(t)
  return layout.names.map((n) => expand(Object.getOwnPropertyDescriptor(proto, n)!.get!.call(r), layout.fields[n]!.type))
}

/** A member value for astuple: nested aggregates expanded, pointers left as they read. */
function expand(v: unknown, t: Type): unknown {
  if (t.kind === 'struct' || t.kind === 'union') return tupleOf(v as Ref, t)
  if (t.kind !== 'array') return v
  const r = v as Ref
  const el = t.element
  const out: unknown[] = []
  for (let i = 0; i < t.length; i++) {
    if (el.kind === 'pointer') out.push(r.at(i).deref())
    else if (el.kind === 'scalar' || el.kind === 'enum') out.push(r.get(i))
    else out.push(expand(r.at(i), el))
  }
  return out
}
