// The public types, as an ESM TypeScript consumer (module nodenext, strict) sees them
// through `import ... from 'shmutils'` (the package's `import` condition, dist/index.d.mts).
// Every line either compiles as asserted or carries @ts-expect-error: a line that stops
// being an error fails the test as much as one that becomes one.
import {
  Barrier, CBase, Channel, Condition, Event, Heap, Lock, MappedMemory, Ref, RLock, RWLock, Semaphore, SharedMemoryObject, cdef, parseTypeName, revive, types,
  type Type,
} from 'shmutils'
import { type Equal, type Underscored, exact, expectTrue } from './assert.mjs'
import shmutils from 'shmutils'

// The default import is the whole API (the same values as the named exports).
expectTrue<Equal<typeof shmutils.MappedMemory, typeof MappedMemory>>()
expectTrue<Equal<typeof shmutils.Lock, typeof Lock>>()

declare const mem: MappedMemory

// ---- C type names as strings -------------------------------------------------------

const i32 = mem.new('int32_t', 5)
expectTrue<Equal<typeof i32, Ref<number>>>()
expectTrue<Equal<typeof i32.value, number>>()
exact<Ref<bigint>>()(mem.new('uint64_t'))
exact<Ref<bigint>>()(mem.new('size_t', 0))
exact<Ref<bigint>>()(mem.new('size_t *')) // the original's allocation spelling: one size_t
exact<bigint>()(mem.new('unsigned long long int').value)
exact<bigint>()(mem.new('long').value)
exact<number>()(mem.new('unsigned int').value)
exact<number>()(mem.new('unsigned  char').value)
exact<number>()(mem.new('double').value)
exact<boolean>()(mem.new('bool').value)
exact<number>()(mem.new(' int16_t ').value)

const arr = mem.new('int32_t[8]', [1, 2, 3])
expectTrue<Equal<typeof arr.value, number[]>>()
// Arrays iterate (values of scalars; references of structs and nested arrays).
for (const x of arr) exact<number>()(x)
exact<number[]>()([...arr])
exact<number>()(arr.get(0))
exact<Ref<number>>()(arr.at(0))
arr.set(0, 7)
const grid = mem.new('double[2][3]')
expectTrue<Equal<typeof grid.value, number[][]>>()
exact<number[]>()(grid.get(1))
exact<number>()(grid.at(1).get(2))
exact<bigint[]>()(mem.new('uint64_t[4]').value)
mem.new('int32_t[3]', new Int32Array([1, 2, 3]))
mem.new('char[16]', 'hello')

// `char *` with a string or bytes allocates a char array holding them.
const str = mem.new('char *', 'hello')
expectTrue<Equal<typeof str.value, number[]>>()
exact<number>()(str.get(0))
// ... iterable like any array reference, as heap.newString's and a named one's are.
exact<number[]>()([...str])
for (const c of mem.heap.newString('hi')) exact<number>()(c)
exact<string>()(mem.heap.named('greeting', 'char *', 'hello').string())
exact<number[]>()([...mem.heap.named('greeting', 'char *', 'hello')])
// Arrays take arrays and typed arrays, not any array-like.
mem.new('int64_t[2]', new BigInt64Array([1n, 2n]))
// @ts-expect-error an object with a length is not an array
mem.new('int32_t[2]', { length: 2, 0: 1, 1: 2 })
// Handles are read-only (most are frozen at run time).
// @ts-expect-error a handle's fields cannot be assigned
mem.toJSON().offset = 1

// A type name as a type: `'char *'` is a pointer, whose value is an address.
const charPtr = parseTypeName('char *')
const p = Ref.at(mem, 0, charPtr)
expectTrue<Equal<typeof p.value, number>>()
exact<Ref<number> | null>()(p.deref())
exact<number>()(p.get(0))
const twoInts = types.array(types.i32, 2)
exact<typeof twoInts>()(parseTypeName('int32_t[2]'))

p.value = null // a pointer takes null, a Ref or an address
p.value = str
// @ts-expect-error an int32_t is not a pointer
i32.value = null
// @ts-expect-error a uint64_t holds bigints
mem.new('uint64_t').value = 1

// Typed references are references: they go wherever a Ref is expected.
const refs: Ref[] = [i32, arr, grid, str, p]
const someRef: Ref<number> = arr.at(0)

// A name TypeScript cannot read (a cdef declaration, a typo) is an untyped reference.
const anyName: string = 'struct whatever'
exact<Ref>()(mem.new(anyName))
exact<unknown>()(mem.new('struct foo').value)

// ---- init is checked against the type ------------------------------------------------

// @ts-expect-error a string is not an int32_t
mem.new('int32_t', 'x')
// @ts-expect-error a string is not a uint64_t
mem.new(types.u64, 'x')
// @ts-expect-error a bigint is not a double
mem.new('double', 1n)
// @ts-expect-error elements must be numbers
mem.new('int32_t[2]', ['a'])
// @ts-expect-error a bool takes booleans
mem.new('bool', 'yes')

// ---- the types DSL -------------------------------------------------------------------

const Point = types.struct('point', { x: types.i32, y: types.f64 })
const Line = types.struct('line', {
  from: Point,
  to: types.ptr(Point),
  tags: types.array(types.u8, 4),
  id: types.u64,
  name: types.ptr(types.char),
  opaque: types.ptr(),
  '...u': types.union('', { i: types.i32, f: types.f32 }),
})
const pt = mem.new(Point, { x: 1, y: 2.5 })
expectTrue<Equal<typeof pt.x, number>>()
expectTrue<Equal<typeof pt.value, { x: number; y: number }>>()
pt.x = 3
// @ts-expect-error no such member
pt.z = 1
// @ts-expect-error x is a number
pt.x = 'a'
// @ts-expect-error y is a double, not a string
mem.new(Point, { y: 'a' })
// @ts-expect-error no member z
mem.new(Point, { x: 1, z: 2 })
mem.new(Point, { x: 1 }) // members left out stay zero

const line = mem.new(Line, { id: 7n, from: { x: 1 } })
expectTrue<Equal<typeof line.from.x, number>>() // a nested struct reads as a reference with members
expectTrue<Equal<typeof line.to, (Ref<{ x: number; y: number }> & { x: number; y: number }) | null>>()
expectTrue<Equal<typeof line.tags, Ref<number[], Ref<number>> & Iterable<number>>>()
expectTrue<Equal<typeof line.id, bigint>>()
expectTrue<Equal<typeof line.name, Ref<number> | null>>()
expectTrue<Equal<typeof line.opaque, number | null>>()
expectTrue<Equal<typeof line.i | typeof line.f, number>>()
line.to = pt
line.to = null
const structRefs: Ref[] = [pt, line, line.from, line.tags]
line.name = null
// @ts-expect-error a pointer member takes a reference to its target type (or null)
line.to = line.tags
exact<number>()(line.tags.get(0))
const points = mem.new(types.array(Point, 3))
exact<Ref<{ x: number; y: number }> & { x: number; y: number }>()(points.at(0))
exact<{ x: number; y: number }>()(points.get(0))
const toPoint = Ref.at(mem, 0, types.ptr(Point))
exact<(Ref<{ x: number; y: number }> & { x: number; y: number }) | null>()(toPoint.deref())
exact<Ref<{ x: number; y: number }> & { x: number; y: number }>()(toPoint.at(1))
const List = types.struct('list', (self) => ({ value: types.i64, next: types.ptr(self) }))
const node = mem.new(List, { value: 1n })
expectTrue<Equal<typeof node.value, bigint>>() // a member named like a Ref property hides it
expectTrue<Equal<typeof node.next, Ref | null>>() // a struct referring to itself: untyped beyond one level

const named = mem.heap.named('origin', Point, { x: 0 })
expectTrue<Equal<typeof named.y, number>>()
const found = mem.heap.find<number>('count')
expectTrue<Equal<typeof found, Ref<number> | undefined>>()

// ---- C declarations and CBase --------------------------------------------------------

const ffi = cdef('struct user { uint64_t id; char *name; };')
const untyped = mem.new(ffi.typeof('struct user'))
expectTrue<Equal<typeof untyped, Ref>>()
class User extends CBase<{ id: bigint; name: Ref<number> | null }>(ffi, 'struct user') {}
const u = User.withHeap(mem).new(1n, 'Ada')
expectTrue<Equal<typeof u.id, bigint>>()
// @ts-expect-error instances come from User.new(...)
new User(mem, 0, ffi.typeof('struct user'), null)

// ---- revive is generic ----------------------------------------------------------------

declare const msg: unknown
const shared = revive<{ lock: Lock; hits: Ref<bigint> }>(msg)
shared.lock.withLock(() => {
  shared.hits.value += 1n
})
const inferred: { cond: Condition } = revive(msg)
expectTrue<Equal<typeof inferred.cond, Condition>>()
// @ts-expect-error without a type argument the result is unknown
revive(msg).lock

// ---- timeouts: a number or an options object, everywhere ------------------------------

declare const lock: Lock
declare const cond: Condition
declare const sem: Semaphore
lock.acquire(10)
lock.acquire({ timeout: 10 })
void lock.acquireAsync(10)
void lock.acquireAsync({ timeout: 10, signal: AbortSignal.timeout(10) })
cond.wait(10)
cond.wait({ timeout: 10 })
void cond.waitAsync(10)
void cond.waitAsync({ timeout: 10 })
// Every async wait takes a number of milliseconds too.
void new RWLock(mem).acquireReadAsync(10)
void new RWLock(mem).acquireWriteAsync(10)
void new Barrier(mem, 2).waitAsync(10)
void new Event(mem).waitAsync(10)
void new Channel(mem).sendAsync(1, 10)
void new Channel(mem).receiveAsync(10)
sem.acquire(10)
sem.acquire({ timeout: 10 })
void sem.acquireAsync(10)
// @ts-expect-error a timeout is a number of milliseconds
cond.wait('10')

// ---- no internals in the public types ------------------------------------------------

expectTrue<Equal<Underscored<MappedMemory>, never>>()
expectTrue<Equal<Underscored<Lock>, never>>()
expectTrue<Equal<Underscored<RLock>, never>>()
expectTrue<Equal<Underscored<Heap>, never>>()
expectTrue<Equal<Underscored<Ref>, never>>()
expectTrue<Equal<Underscored<typeof Ref>, never>>()
expectTrue<Equal<Underscored<Condition>, never>>()
expectTrue<Equal<Underscored<Semaphore>, never>>()
// @ts-expect-error a Heap comes from Heap.create, Heap.attach or mem.heap
new Heap(mem, 0, 0)
// @ts-expect-error a Ref comes from heap.new, mem.new, Ref.at or revive
new Ref(mem, 0, types.i32, null)
// @ts-expect-error a SharedMemoryObject comes from shmOpen
new SharedMemoryObject('/x', 3)

export type { Type }
