/**
 * C-compatible types for shared memory: type objects, `cdef()` C
 * declarations, the `types` DSL, travelling descriptions and fast accessors.
 *
 * @module
 */
export type {
  ArrayType,
  EnumBase,
  EnumType,
  Field,
  JsOf,
  PointerType,
  ScalarKind,
  ScalarType,
  StructType,
  Type,
  TypeKind,
} from './type.js';
export {
  MAX_TYPE_SIZE,
  arrayOf,
  flatMembers,
  formatType,
  isComplete,
  isType,
  lookupField,
  memberNames,
  pointerTo,
} from './type.js';
export { CDefError } from './cdef-error.js';
export { FFI, cdef, memberOffset } from './cdef.js';
export {
  type AllocationTypeOfName,
  type BigintTypeName,
  type BooleanTypeName,
  type CharPointerName,
  type NumberTypeName,
  type TypeOfName,
  parseAllocationTypeName,
  parseTypeName,
} from './names.js';
export { type AnonKeys, type Simplify, type EnumValue, type FieldMap, type ShapeOf, type UnionToIntersection, types } from './dsl.js';
export {
  type FieldDesc,
  type ScalarName,
  type TypeDesc,
  MAX_DESCRIPTION_DEPTH,
  describeType,
  typeFromDescription,
} from './describe.js';
export {
  type Accessor,
  type FieldAccessor,
  LITTLE_ENDIAN,
  type StructLayout,
  type MemberCode,
  memberProperty,
  scalarAccessor,
  structLayoutAccessors,
  valueAccessor,
} from './access.js';
