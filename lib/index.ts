// The published declarations use Node's types (AbortSignal, node:util's inspect): this
// directive, kept in dist/index.d.ts, loads @types/node (an optional peer dependency) for
// every TypeScript user, also one whose tsconfig lists no "types" (preserve="true": tsc
// keeps only such directives in what it emits).
/// <reference types="node" preserve="true" />
/**
 * shmutils: real shared memory for Node.js processes.
 * @packageDocumentation
 */
export { ShmError, type ShmErrorCode, type ShmErrorFields } from './errors.js'
export { PAGE_SIZE, roundToPageSize, Protection, MapFlags } from './constants.js'
export { shmOpen, shmUnlink, SharedMemoryObject, type ShmMode, type ShmOpenOptions } from './shm.js'
export { MappedMemory, type CreateOptions, type OpenOptions, type AnonymousOptions, type AddressRange, type DetachedPages, type SegmentCreator } from './memory.js'
export { munmap } from './munmap.js'
export { Lock, type AcquireOptions, type AsyncWaitOptions, type LockHome } from './lock.js'
export { RLock } from './rlock.js'
export { Condition } from './condition.js'
export { Semaphore, SEMAPHORE_MAX, type SemaphoreOptions } from './semaphore.js'
export { Heap, DEFAULT_HEAP_LOCK_TIMEOUT, type HeapStats, type HeapCreateOptions } from './heap.js'
export { Ref, ArrayRef, type RefHeap, type StringOptions, type ElementOf, type ElementRefOf, type TargetOf, type ValueInput } from './ref.js'
export type { RefOf, MemberOf, MembersOf, InitOf, CharArrayRef } from './typed.js'
export { revive, reviver, isHandle, type Handle } from './handles.js'
export {
  types, cdef, FFI, CDefError, parseTypeName, describeType, typeFromDescription, lookupField, memberNames, MAX_DESCRIPTION_DEPTH,
  type AnonKeys, type UnionToIntersection, type Simplify, type FieldMap, type ShapeOf, type EnumValue,
  type TypeOfName, type AllocationTypeOfName, type NumberTypeName, type BigintTypeName, type BooleanTypeName, type CharPointerName,
  type Type, type JsOf, type EnumBase, type ScalarKind, type TypeDesc, type FieldDesc, type ScalarName, type ScalarType, type PointerType, type ArrayType, type StructType, type EnumType, type Field,
} from './types/index.js'
export { CBase, astuple, type CBaseClass, type CBaseInstance, type CBaseInstanceOf, type CBaseConstructor } from './cbase.js'
export { SharedMap, MAX_KEY_LENGTH, type SharedMapOptions, type SetOptions } from './map.js'
export { type Codec } from './codec.js'
export { Channel, type ChannelOptions, type ChannelWaitOptions } from './channel.js'
export { type ContainerHome } from './container.js'
export { RWLock, RWLOCK_SIZE, RWLOCK_SLOTS } from './rwlock.js'
export { Barrier, BARRIER_MAX_PARTIES } from './barrier.js'
export { Event } from './event.js'
export { type LockOwner } from './records.js'
export { tracing, type Tracing, type LockWaitMessage, type OwnerDiedMessage, type HeapRepairMessage } from './trace.js'
// util.inspect of the classes above (their state, no internals).
import './inspect.js'
import * as self from './index.js'

/**
 * The whole API as one object, for a default import (`import shmutils from 'shmutils'`,
 * ES modules and TypeScript alike): the same values as the named exports.
 */
const shmutils: typeof self = self
export default shmutils
// Not enumerable: the module object lists (and serializes) the API, not itself again.
Object.defineProperty(self, 'default', { enumerable: false })
