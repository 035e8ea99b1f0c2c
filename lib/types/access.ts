/**
 * Fast readers and writers for typed memory, generated once per type.
 *
 * Accessors take a `DataView` and a byte offset into it; binding them to a
 * shared mapping is the job of `Ref`. Code is generated with `new Function`
 * (one specialised function per type or field, offsets folded in as
 * constants); where code generation from strings is disabled, equivalent
 * closures specialised per field are used instead.
 *
 * Value conventions (host byte order, detected once with `os.endianness()`):
 * - integers up to 32 bits, `char`, `float`, `double`, enums: `number`
 * - 64-bit integers: `bigint` (setters also take integral numbers)
 * - `bool`: `boolean` (stored as one byte 0/1; reads any non-zero byte as true;
 *   setters also take 0 and 1)
 * - pointers: the address as a `number` (0 = NULL; setters also take `null`
 *   and bigints; an address above 2^53 read back is rounded)
 * - arrays: JS arrays; structs/unions: plain objects whose keys are the
 *   members (members of anonymous struct/union members flattened, C11)
 *
 * Integer range policy: setters never wrap. A value that is not a number
 * (or bigint) is a TypeError, so is NaN or ±Infinity; a fractional number or
 * one outside the C type's range is a RangeError. Both name the field.
 * `char` also takes a one-character string (code < 256); enums also take a
 * member name. Floats take any number (`float` rounds to single precision).
 *
 * Aggregate setters have C initializer semantics: the whole object is
 * zeroed, then the members (or leading elements) given are written, in
 * declaration order (for a union, the last member given wins); `undefined`
 * members are skipped; unknown member names are a TypeError, too many
 * elements a RangeError. A set that throws leaves the memory as it was. Arrays of
 * 1-byte elements also take a string (UTF-8, must fit) or a Uint8Array.
 *
 * @module
 */
import { rangeError, typeError } from '../errors.js';
import { endianness } from 'node:os';
import { checkWellFormed } from '../utf8.js';
import {
  type EnumType,
  type ScalarKind,
  type StructType,
  type Type,
  assertType,
  describeValue,
  flatMembers,
  formatType,
  isComplete,
} from './type.js';

/** Reads and writes one value of a type at a byte offset of a DataView. */
export interface Accessor<V> {
  /** Reads the value at `off`. */
  get(dv: DataView, off: number): V;
  /** Writes `v` at `off` (validating it, see the module documentation). */
  set(dv: DataView, off: number, v: V): void;
}

/**
 * A member of a struct/union with accessors bound to its offset: `get(dv,
 * base)` reads the member of the struct that starts at `base`.
 */
export interface FieldAccessor<V = unknown> extends Accessor<V> {
  /** Member name. */
  readonly name: string;
  /** Byte offset from the start of the struct. */
  readonly offset: number;
  /** Member type. */
  readonly type: Type<V>;
  /** True when the member is a scalar, enum or pointer (get/set move one value). */
  readonly scalar: boolean;
}

/** Accessors for every member of a struct/union, built once per type. */
export interface StructLayout<V = unknown> {
  /** The struct/union type. */
  readonly type: StructType<V>;
  /** Its size in bytes. */
  readonly size: number;
  /** Its alignment in bytes. */
  readonly align: number;
  /** Member names in declaration order, anonymous members flattened. */
  readonly names: readonly string[];
  /** Accessors by member name (null prototype). */
  readonly fields: Readonly<Record<string, FieldAccessor>>;
}

/** True on a little-endian host (every supported target). */
export const LITTLE_ENDIAN: boolean = endianness() === 'LE';

const SCALAR_CTYPE: Readonly<Record<ScalarKind, string>> = {
  i8: 'int8_t', u8: 'uint8_t', i16: 'int16_t', u16: 'uint16_t', i32: 'int32_t', u32: 'uint32_t',
  i64: 'int64_t', u64: 'uint64_t', f32: 'float', f64: 'double', bool: 'bool',
};

const INT_RANGE: Readonly<Record<string, readonly [number, number]>> = {
  i8: [-128, 127], u8: [0, 255], i16: [-32768, 32767], u16: [0, 65535],
  i32: [-2147483648, 2147483647], u32: [0, 4294967295],
};
const BIG_RANGE: Readonly<Record<string, readonly [bigint, bigint]>> = {
  i64: [-(2n ** 63n), 2n ** 63n - 1n],
  u64: [0n, 2n ** 64n - 1n],
};

// ---------------------------------------------------------------------------
// Slow paths (shared by generated code and closures)

function notNumber(v: unknown, ctype: string, label: string): never {
  if (typeof v === 'number') {
    throw typeError(`${label}: expected a finite number for ${ctype}, got ${v}`);
  }
  throw typeError(`${label}: expected a number for ${ctype}, got ${describeValue(v)}`);
}

function checkInt(v: unknown, kind: string, label: string): number {
  const ctype = SCALAR_CTYPE[kind as ScalarKind] ?? kind;
  const [min, max] = INT_RANGE[kind] as readonly [number, number];
  let n: number;
  if (typeof v === 'number') {
    if (!Number.isFinite(v)) notNumber(v, ctype, label);
    if (!Number.isInteger(v)) throw rangeError(`${label}: ${v} is not an integer (${ctype})`);
    n = v;
  } else if (typeof v === 'bigint') {
    if (v < BigInt(min) || v > BigInt(max)) {
      throw rangeError(`${label}: ${v} is out of range for ${ctype} [${min}, ${max}]`);
    }
    return Number(v);
  } else {
    notNumber(v, ctype, label);
  }
  if (n < min || n > max) throw rangeError(`${label}: ${n} is out of range for ${ctype} [${min}, ${max}]`);
  return n;
}

function checkBig(v: unknown, kind: string, label: string): bigint {
  const ctype = SCALAR_CTYPE[kind as ScalarKind] ?? kind;
  const [min, max] = BIG_RANGE[kind] as readonly [bigint, bigint];
  let b: bigint;
  if (typeof v === 'bigint') b = v;
  else if (typeof v === 'number') {
    if (!Number.isFinite(v)) notNumber(v, ctype, label);
    if (!Number.isInteger(v)) throw rangeError(`${label}: ${v} is not an integer (${ctype})`);
    b = BigInt(v);
  } else notNumber(v, ctype, label);
  if (b < min || b > max) throw rangeError(`${label}: ${b} is out of range for ${ctype} [${min}, ${max}]`);
  return b;
}

function checkFloat(v: unknown, kind: string, label: string): number {
  if (typeof v === 'number') return v;
  throw typeError(`${label}: expected a number for ${SCALAR_CTYPE[kind as ScalarKind]}, got ${describeValue(v)}`);
}

function checkBool(v: unknown, label: string): number {
  if (v === true || v === 1) return 1;
  if (v === false || v === 0) return 0;
  throw typeError(`${label}: expected a boolean for bool, got ${describeValue(v)}`);
}

function checkChar(v: unknown, label: string): number {
  if (typeof v === 'string' && v.length === 1) {
    const c = v.charCodeAt(0);
    if (c < 256) return c > 127 ? c - 256 : c;
    throw rangeError(`${label}: ${JSON.stringify(v)} does not fit in a char`);
  }
  return checkInt(v, 'i8', label);
}

function checkEnum(v: unknown, t: EnumType, label: string): number {
  if (typeof v === 'string') {
    if (Object.prototype.hasOwnProperty.call(t.members, v)) return t.members[v] as number;
    throw typeError(`${label}: ${JSON.stringify(v)} is not a member of ${formatType(t)}`);
  }
  if (t.scalar === 'i32' || t.scalar === 'u32') return checkInt(v, t.scalar, label);
  const b = checkBig(v, t.scalar, label);
  return Number(b);
}

const MAX_SAFE = Number.MAX_SAFE_INTEGER;

function checkPtr(v: unknown, label: string): number | bigint {
  if (v === null) return 0;
  if (typeof v === 'number') {
    if (!Number.isFinite(v)) notNumber(v, 'a pointer', label);
    if (!Number.isInteger(v) || v < 0 || v > MAX_SAFE) {
      throw rangeError(`${label}: ${v} is not a valid address (an integer in [0, 2^53))`);
    }
    return v;
  }
  if (typeof v === 'bigint') {
    if (v < 0n || v >= 2n ** 64n) throw rangeError(`${label}: ${v} is not a valid address`);
    return v <= BigInt(MAX_SAFE) ? Number(v) : v;
  }
  throw typeError(`${label}: expected an address (number) or null for a pointer, got ${describeValue(v)}`);
}

function bytesView(dv: DataView, off: number, size: number): Uint8Array {
  if (!(off >= 0) || off + size > dv.byteLength || off % 1 !== 0) {
    throw rangeError(`offset ${off} + ${size} bytes is outside the DataView (${dv.byteLength} bytes)`);
  }
  return new Uint8Array(dv.buffer, dv.byteOffset + off, size);
}

function zero(dv: DataView, off: number, size: number): void {
  bytesView(dv, off, size).fill(0);
}

function snapshot(dv: DataView, off: number, size: number): Uint8Array {
  return bytesView(dv, off, size).slice();
}

function restore(dv: DataView, off: number, saved: Uint8Array): void {
  bytesView(dv, off, saved.length).set(saved);
}

function notObject(v: unknown, label: string): never {
  throw typeError(`${label}: expected an object, got ${describeValue(v)}`);
}

function checkKeys(v: object, allowed: ReadonlySet<string>, label: string): void {
  for (const k of Object.keys(v)) {
    if (!allowed.has(k)) throw typeError(`${label}: unknown member ${JSON.stringify(k)}`);
  }
}

const encoder = new TextEncoder();

/** Writes a string or bytes into a byte array; returns false if `v` is neither. */
function writeBytes(dv: DataView, off: number, n: number, v: unknown, label: string): boolean {
  if (typeof v === 'string') {
    checkWellFormed(v, label);
    const dst = bytesView(dv, off, n);
    const r = encoder.encodeInto(v, dst);
    if (r.read < v.length) throw rangeError(`${label}: string does not fit in ${n} bytes`);
    dst.fill(0, r.written);
    return true;
  }
  if (v instanceof Uint8Array || v instanceof Int8Array) {
    if (v.length > n) throw rangeError(`${label}: ${v.length} bytes do not fit in ${n}`);
    const dst = bytesView(dv, off, n);
    dst.set(new Uint8Array(v.buffer, v.byteOffset, v.length));
    dst.fill(0, v.length);
    return true;
  }
  return false;
}

function checkArray(v: unknown, n: number, label: string): ArrayLike<unknown> {
  if (
    !Array.isArray(v) &&
    !(ArrayBuffer.isView(v) && !(v instanceof DataView))
  ) {
    throw typeError(`${label}: expected an array, got ${describeValue(v)}`);
  }
  const a = v as ArrayLike<unknown>;
  if (a.length > n) throw rangeError(`${label}: ${a.length} elements do not fit in ${n}`);
  return a;
}

/**
 * A 64-bit enum's stored value as the number enums read as; a RangeError for one a number
 * cannot hold exactly (beyond ±2^53: a C program may store any value of the type), never
 * a silently rounded one.
 */
function enumNumber(x: bigint): number {
  if (x > 9007199254740991n || x < -9007199254740991n) {
    throw rangeError(`an enum value read from memory, ${x}, is beyond ±2^53, which a number cannot hold exactly`);
  }
  return Number(x);
}

/** Helpers visible to generated code as `C`. */
const HELPERS = Object.freeze({
  checkInt, checkBig, checkFloat, checkBool, checkChar, checkEnum, checkPtr,
  zero, snapshot, restore, notObject, checkKeys, writeBytes, checkArray, enumNumber,
});
type Helpers = typeof HELPERS;

// ---------------------------------------------------------------------------
// Code generation

let codegenEnabled = ((): boolean => {
  try {
    return new Function('return 1')() === 1;
  } catch {
    return false;
  }
})();

/** Environment of one generated function: labels, sub-accessors, enum types. */
class Env {
  readonly labels: string[] = [];
  readonly subs: Accessor<unknown>[] = [];
  readonly types: Type[] = [];
  readonly sets: ReadonlySet<string>[] = [];
  private tmp = 0;

  label(s: string): string {
    this.labels.push(s);
    return `L[${this.labels.length - 1}]`;
  }

  sub(a: Accessor<unknown>): string {
    this.subs.push(a);
    return `A[${this.subs.length - 1}]`;
  }

  type(t: Type): string {
    this.types.push(t);
    return `T[${this.types.length - 1}]`;
  }

  set(s: ReadonlySet<string>): string {
    this.sets.push(s);
    return `K[${this.sets.length - 1}]`;
  }

  var(): string {
    return `x${this.tmp++}`;
  }

  /** Compiles `body`; `names` are extra bindings it sees, with `values`. */
  compile<R>(body: string, names: readonly string[] = [], values: readonly unknown[] = []): R {
    const f = new Function('C', 'L', 'A', 'T', 'K', ...names, `'use strict';\n${body}`) as (
      c: Helpers, l: string[], a: Accessor<unknown>[], t: Type[], k: ReadonlySet<string>[], ...rest: unknown[]
    ) => R;
    return f(HELPERS, this.labels, this.subs, this.types, this.sets, ...values);
  }
}

const LE = String(LITTLE_ENDIAN);

const isScalarLike = (t: Type): boolean => t.kind === 'scalar' || t.kind === 'enum' || t.kind === 'pointer';

const GETTER: Readonly<Record<string, string>> = {
  i8: 'Int8', u8: 'Uint8', i16: 'Int16', u16: 'Uint16', i32: 'Int32', u32: 'Uint32',
  i64: 'BigInt64', u64: 'BigUint64', f32: 'Float32', f64: 'Float64',
};

/** Expression reading a scalar-like `t` at offset expression `o` of DataView expression `dv`. */
function readExpr(t: Type, o: string, dv = 'dv'): string {
  if (t.kind === 'pointer') {
    return LITTLE_ENDIAN
      ? `(dv.getUint32(${o}, true) + dv.getUint32(${o} + 4, true) * 4294967296)`
      : `(dv.getUint32(${o} + 4, false) + dv.getUint32(${o}, false) * 4294967296)`;
  }
  const k = t.kind === 'scalar' || t.kind === 'enum' ? t.scalar : 'u8';
  if (k === 'bool') return `(${dv}.getUint8(${o}) !== 0)`;
  const g = GETTER[k] as string;
  const le = k === 'i8' || k === 'u8' ? '' : `, ${LE}`;
  const e = `${dv}.get${g}(${o}${le})`;
  return t.kind === 'enum' && (k === 'i64' || k === 'u64') ? `C.enumNumber(${e})` : e;
}

const INT_CHECK: Readonly<Record<string, (x: string) => string>> = {
  i8: (x) => `((${x} << 24) >> 24) !== ${x}`,
  u8: (x) => `(${x} & 255) !== ${x}`,
  i16: (x) => `((${x} << 16) >> 16) !== ${x}`,
  u16: (x) => `(${x} & 65535) !== ${x}`,
  i32: (x) => `(${x} | 0) !== ${x}`,
  u32: (x) => `(${x} >>> 0) !== ${x}`,
};

/**
 * Statements writing expression `v` as scalar-like `t` at offset expression `o`. A value
 * the fast test does not accept goes through the check of its kind (`C.check*`, which
 * converts or throws), or, given `slow`, through `slow(value, this)` instead (a function
 * the caller binds to that check; shorter code).
 */
function writeStmt(env: Env, t: Type, o: string, v: string, label: string, slow?: string, dv = 'dv'): string {
  // With `slow`, `v` is the setter's own parameter: it is checked in place.
  const x = slow ? v : env.var();
  const fix = (check: string): string => (slow ? `${slow}(${x}, this)` : check);
  const take = slow ? '' : `let ${x} = ${v};`;
  if (t.kind === 'pointer') {
    const [lo, hi] = LITTLE_ENDIAN ? [o, `${o} + 4`] : [`${o} + 4`, o];
    return `{ ${take}
      if (typeof ${x} !== 'number' || !(${x} >= 0 && ${x} <= 9007199254740991) || ${x} % 1 !== 0) ${x} = ${fix(`C.checkPtr(${x}, ${label})`)};
      if (typeof ${x} === 'number') { dv.setUint32(${lo}, ${x} >>> 0, ${LE}); dv.setUint32(${hi}, (${x} / 4294967296) >>> 0, ${LE}); }
      else dv.setBigUint64(${o}, ${x}, ${LE}); }`;
  }
  if (t.kind === 'enum') {
    const k = t.scalar;
    const te = env.type(t);
    if (k === 'i32' || k === 'u32') {
      return `{ ${take} if (typeof ${x} !== 'number' || ${(INT_CHECK[k] as (s: string) => string)(x)}) ${x} = ${fix(`C.checkEnum(${x}, ${te}, ${label})`)};
        ${dv}.set${GETTER[k]}(${o}, ${x}, ${LE}); }`;
    }
    return `{ ${take} ${x} = ${fix(`C.checkEnum(${x}, ${te}, ${label})`)}; ${dv}.set${GETTER[k]}(${o}, BigInt(${x}), ${LE}); }`;
  }
  if (t.kind !== 'scalar') throw typeError(`internal: not a scalar ${formatType(t)}`);
  const k = t.scalar;
  const le = k === 'i8' || k === 'u8' ? '' : `, ${LE}`;
  switch (k) {
    case 'bool':
      return `{ ${take} ${dv}.setUint8(${o}, ${x} === true ? 1 : ${x} === false ? 0 : ${fix(`C.checkBool(${x}, ${label})`)}); }`;
    case 'f32':
    case 'f64':
      return `{ ${take} if (typeof ${x} !== 'number') ${x} = ${fix(`C.checkFloat(${x}, '${k}', ${label})`)}; ${dv}.set${GETTER[k]}(${o}, ${x}${le}); }`;
    case 'i64':
    case 'u64': {
      const [min, max] = BIG_RANGE[k] as readonly [bigint, bigint];
      return `{ ${take} if (typeof ${x} !== 'bigint' || ${x} < ${min}n || ${x} > ${max}n) ${x} = ${fix(`C.checkBig(${x}, '${k}', ${label})`)};
        ${dv}.set${GETTER[k]}(${o}, ${x}${le}); }`;
    }
    default: {
      const check = t.name === 'char' ? `C.checkChar(${x}, ${label})` : `C.checkInt(${x}, '${k}', ${label})`;
      return `{ ${take} if (typeof ${x} !== 'number' || ${(INT_CHECK[k] as (s: string) => string)(x)}) ${x} = ${fix(check)};
        ${dv}.set${GETTER[k]}(${o}, ${x}${le}); }`;
    }
  }
}

/** Source of `{get, set}` for any complete type `t` at base offset `off + delta`. */
function genAccessor(t: Type, labelText: string, delta: number): Accessor<unknown> {
  const env = new Env();
  const o = delta === 0 ? 'off' : `off + ${delta}`;
  const L = env.label(labelText);
  let get: string;
  let set: string;
  if (isScalarLike(t)) {
    get = `return ${readExpr(t, o)};`;
    set = writeStmt(env, t, o, 'v', L);
  } else if (t.kind === 'array') {
    const n = t.length;
    const el = t.element;
    const stride = el.size;
    const byteElem = el.kind === 'scalar' && el.size === 1 && el.scalar !== 'bool';
    if (isScalarLike(el)) {
      const at = `${o} + i * ${stride}`;
      get = `const r = new Array(${n}); for (let i = 0; i < ${n}; i++) r[i] = ${readExpr(el, at)}; return r;`;
      const elemLabel = `${L} + '[' + i + ']'`;
      set = `${byteElem ? `if (C.writeBytes(dv, ${o}, ${n}, v, ${L})) return;` : ''}
        const a = C.checkArray(v, ${n}, ${L}); const len = a.length;
        if (len < ${n}) C.zero(dv, ${o}, ${t.size});
        for (let i = 0; i < len; i++) ${writeStmt(env, el, at, 'a[i]', elemLabel)}`;
    } else {
      const sub = env.sub(valueAccessor(el, `${labelText}[]`));
      get = `const r = new Array(${n}); for (let i = 0; i < ${n}; i++) r[i] = ${sub}.get(dv, ${o} + i * ${stride}); return r;`;
      set = `const a = C.checkArray(v, ${n}, ${L}); const len = a.length;
        if (len < ${n}) C.zero(dv, ${o}, ${t.size});
        for (let i = 0; i < len; i++) ${sub}.set(dv, ${o} + i * ${stride}, a[i]);`;
    }
  } else if (t.kind === 'struct' || t.kind === 'union') {
    const members = [...flatMembers(t).values()];
    const parts: string[] = [];
    const writes: string[] = [];
    for (const f of members) {
      const fo = `${o} + ${f.offset}`;
      const key = JSON.stringify(f.name);
      const fl = env.label(`${labelText}.${f.name}`);
      if (isScalarLike(f.type)) {
        parts.push(`[${key}]: ${readExpr(f.type, fo)}`);
        writes.push(`f = v[${key}]; if (f !== undefined) ${writeStmt(env, f.type, fo, 'f', fl)}`);
      } else {
        const sub = env.sub(valueAccessor(f.type, `${labelText}.${f.name}`));
        parts.push(`[${key}]: ${sub}.get(dv, ${fo})`);
        writes.push(`f = v[${key}]; if (f !== undefined) ${sub}.set(dv, ${fo}, f);`);
      }
    }
    const K = env.set(new Set(members.map((f) => f.name)));
    get = `return {${parts.join(', ')}};`;
    set = `if (typeof v !== 'object' || v === null) C.notObject(v, ${L});
      C.checkKeys(v, ${K}, ${L});
      C.zero(dv, ${o}, ${t.size});
      let f;
      ${writes.join('\n      ')}`;
  } else {
    throw typeError(`internal: unexpected type kind`);
  }
  if (!isScalarLike(t)) {
    // all or nothing: restore the previous bytes if any member is rejected
    set = `const saved = C.snapshot(dv, ${o}, ${t.size});
      try { ${set} } catch (e) { C.restore(dv, ${o}, saved); throw e; }`;
  }
  return env.compile<Accessor<unknown>>(
    `return { get: function get(dv, off) { ${get} }, set: function set(dv, off, v) { ${set} } };`,
  );
}

// ---------------------------------------------------------------------------
// Closure fallback (same semantics, no code generation from strings)

function closureScalar(t: Type, label: string, delta: number): Accessor<unknown> {
  const LEb = LITTLE_ENDIAN;
  if (t.kind === 'pointer') {
    const [lo, hi] = LEb ? [0, 4] : [4, 0];
    return {
      get: (dv, off) => dv.getUint32(off + delta + lo, LEb) + dv.getUint32(off + delta + hi, LEb) * 4294967296,
      set: (dv, off, v) => {
        const x = checkPtr(v, label);
        if (typeof x === 'number') {
          dv.setUint32(off + delta + lo, x >>> 0, LEb);
          dv.setUint32(off + delta + hi, (x / 4294967296) >>> 0, LEb);
        } else dv.setBigUint64(off + delta, x, LEb);
      },
    };
  }
  if (t.kind === 'enum') {
    const e = t;
    switch (e.scalar) {
      case 'i32':
        return { get: (dv, off) => dv.getInt32(off + delta, LEb), set: (dv, off, v) => dv.setInt32(off + delta, checkEnum(v, e, label), LEb) };
      case 'u32':
        return { get: (dv, off) => dv.getUint32(off + delta, LEb), set: (dv, off, v) => dv.setUint32(off + delta, checkEnum(v, e, label), LEb) };
      case 'i64':
        return { get: (dv, off) => enumNumber(dv.getBigInt64(off + delta, LEb)), set: (dv, off, v) => dv.setBigInt64(off + delta, BigInt(checkEnum(v, e, label)), LEb) };
      default:
        return { get: (dv, off) => enumNumber(dv.getBigUint64(off + delta, LEb)), set: (dv, off, v) => dv.setBigUint64(off + delta, BigInt(checkEnum(v, e, label)), LEb) };
    }
  }
  if (t.kind !== 'scalar') throw typeError('internal: not a scalar');
  const isChar = t.name === 'char';
  const k = t.scalar;
  if (k === 'i8' || k === 'u8' || k === 'i16' || k === 'u16' || k === 'i32' || k === 'u32') {
    const [min, max] = INT_RANGE[k] as readonly [number, number];
    const conv = (v: unknown): number =>
      typeof v === 'number' && v >= min && v <= max && v % 1 === 0 ? v : isChar ? checkChar(v, label) : checkInt(v, k, label);
    switch (k) {
      case 'i8':
        return { get: (dv, off) => dv.getInt8(off + delta), set: (dv, off, v) => dv.setInt8(off + delta, conv(v)) };
      case 'u8':
        return { get: (dv, off) => dv.getUint8(off + delta), set: (dv, off, v) => dv.setUint8(off + delta, conv(v)) };
      case 'i16':
        return { get: (dv, off) => dv.getInt16(off + delta, LEb), set: (dv, off, v) => dv.setInt16(off + delta, conv(v), LEb) };
      case 'u16':
        return { get: (dv, off) => dv.getUint16(off + delta, LEb), set: (dv, off, v) => dv.setUint16(off + delta, conv(v), LEb) };
      case 'i32':
        return { get: (dv, off) => dv.getInt32(off + delta, LEb), set: (dv, off, v) => dv.setInt32(off + delta, conv(v), LEb) };
      default:
        return { get: (dv, off) => dv.getUint32(off + delta, LEb), set: (dv, off, v) => dv.setUint32(off + delta, conv(v), LEb) };
    }
  }
  switch (k) {
    case 'i64':
      return { get: (dv, off) => dv.getBigInt64(off + delta, LEb), set: (dv, off, v) => dv.setBigInt64(off + delta, checkBig(v, 'i64', label), LEb) };
    case 'u64':
      return { get: (dv, off) => dv.getBigUint64(off + delta, LEb), set: (dv, off, v) => dv.setBigUint64(off + delta, checkBig(v, 'u64', label), LEb) };
    case 'f32':
      return { get: (dv, off) => dv.getFloat32(off + delta, LEb), set: (dv, off, v) => dv.setFloat32(off + delta, checkFloat(v, 'f32', label), LEb) };
    case 'f64':
      return { get: (dv, off) => dv.getFloat64(off + delta, LEb), set: (dv, off, v) => dv.setFloat64(off + delta, checkFloat(v, 'f64', label), LEb) };
    default:
      return { get: (dv, off) => dv.getUint8(off + delta) !== 0, set: (dv, off, v) => dv.setUint8(off + delta, checkBool(v, label)) };
  }
}

function closureAccessor(t: Type, label: string, delta: number): Accessor<unknown> {
  if (isScalarLike(t)) return closureScalar(t, label, delta);
  if (t.kind === 'array') {
    const n = t.length;
    const stride = t.element.size;
    const el = valueAccessor(t.element, `${label}[]`);
    const byteElem = t.element.kind === 'scalar' && stride === 1 && t.element.scalar !== 'bool';
    return {
      get: (dv, off) => {
        const r = new Array<unknown>(n);
        for (let i = 0; i < n; i++) r[i] = el.get(dv, off + delta + i * stride);
        return r;
      },
      set: (dv, off, v) => {
        if (byteElem && writeBytes(dv, off + delta, n, v, label)) return;
        const a = checkArray(v, n, label);
        if (a.length < n) zero(dv, off + delta, t.size);
        for (let i = 0; i < a.length; i++) el.set(dv, off + delta + i * stride, a[i]);
      },
    };
  }
  if (t.kind === 'struct' || t.kind === 'union') {
    const members = [...flatMembers(t).values()].map((f) => ({
      name: f.name,
      offset: f.offset,
      acc: valueAccessor(f.type, `${label}.${f.name}`),
    }));
    const allowed = new Set(members.map((m) => m.name));
    return {
      get: (dv, off) => {
        const r: Record<string, unknown> = {};
        for (const m of members) Object.defineProperty(r, m.name, { value: m.acc.get(dv, off + delta + m.offset), enumerable: true, writable: true, configurable: true });
        return r;
      },
      set: (dv, off, v) => {
        if (typeof v !== 'object' || v === null) notObject(v, label);
        checkKeys(v as object, allowed, label);
        zero(dv, off + delta, t.size);
        for (const m of members) {
          const f = (v as Record<string, unknown>)[m.name];
          if (f !== undefined) m.acc.set(dv, off + delta + m.offset, f);
        }
      },
    };
  }
  throw typeError('internal: unexpected type kind');
}

function atomicClosure(t: Type, a: Accessor<unknown>, delta: number): Accessor<unknown> {
  if (isScalarLike(t)) return a;
  const inner = a.set;
  return {
    get: a.get,
    set: (dv, off, v) => {
      const saved = snapshot(dv, off + delta, t.size);
      try {
        inner(dv, off, v);
      } catch (e) {
        restore(dv, off + delta, saved);
        throw e;
      }
    },
  };
}

function build(t: Type, label: string, delta: number): Accessor<unknown> {
  return codegenEnabled ? genAccessor(t, label, delta) : atomicClosure(t, closureAccessor(t, label, delta), delta);
}

// ---------------------------------------------------------------------------
// Public API

const scalarCache = new WeakMap<Type, Accessor<unknown>>();
const valueCache = new WeakMap<Type, Accessor<unknown>>();
const layoutCache = new WeakMap<Type, StructLayout>();

function labelOf(t: Type): string {
  return t.name === '' ? `${t.kind} {...}` : t.name;
}

/**
 * Reader/writer of a scalar, enum or pointer type (built once per type).
 *
 * @param t a scalar, enum or pointer type
 * @param label names the value in error messages (default: the type name;
 *   a custom label builds an uncached accessor)
 * @throws TypeError if `t` is not scalar-like
 */
export function scalarAccessor<V>(t: Type<V>, label?: string): Accessor<V> {
  assertType(t, 't');
  if (!isScalarLike(t)) throw typeError(`t must be a scalar, enum or pointer type, got ${formatType(t)}`);
  return valueAccessor(t, label);
}

/**
 * Reader/writer of a whole value of any complete type: scalars as above,
 * arrays as JS arrays, structs/unions as plain objects (built once per type).
 *
 * @param t a complete type
 * @param label names the value in error messages (default: the type name)
 * @throws TypeError if `t` is incomplete
 */
export function valueAccessor<V>(t: Type<V>, label?: string): Accessor<V> {
  assertType(t, 't');
  if (!isComplete(t)) throw typeError(`${formatType(t)} is incomplete and has no value`);
  if (label !== undefined) return build(t, String(label), 0) as Accessor<V>;
  let a = valueCache.get(t);
  if (a === undefined) {
    a = build(t, labelOf(t), 0);
    valueCache.set(t, a);
    if (isScalarLike(t)) scalarCache.set(t, a);
  }
  return a as Accessor<V>;
}

/**
 * Per-member accessors of a struct/union, each with the member's offset
 * folded in: `layout.fields.id.get(dv, structOffset)`. Built once per type.
 * Errors from setters name the member (`'struct org_user_t.id'`).
 *
 * @param t a complete struct or union type
 * @throws TypeError if `t` is not a complete struct/union
 */
export function structLayoutAccessors<V>(t: Type<V>): StructLayout<V> {
  assertType(t, 't');
  if (t.kind !== 'struct' && t.kind !== 'union') {
    throw typeError(`t must be a struct or union type, got ${formatType(t)}`);
  }
  if (!t.complete) throw typeError(`${formatType(t)} is incomplete`);
  const hit = layoutCache.get(t);
  if (hit !== undefined) return hit as StructLayout<V>;
  const fields = Object.create(null) as Record<string, FieldAccessor>;
  const names: string[] = [];
  const base = labelOf(t);
  for (const f of flatMembers(t).values()) {
    const acc = build(f.type, `${base}.${f.name}`, f.offset);
    fields[f.name] = Object.freeze({
      name: f.name,
      offset: f.offset,
      type: f.type,
      scalar: isScalarLike(f.type),
      get: acc.get,
      set: acc.set,
    });
    names.push(f.name);
  }
  const layout: StructLayout = Object.freeze({
    type: t as StructType,
    size: t.size,
    align: t.align,
    names: Object.freeze(names),
    fields: Object.freeze(fields),
  });
  layoutCache.set(t, layout);
  return layout as StructLayout<V>;
}

/** How {@link memberProperty} reaches the bytes of the object `this` refers to. */
export interface MemberCode {
  /** Expression (of `this`) giving the DataView. */
  readonly view: string;
  /** Expression (of `this`) giving the object's offset in it. */
  readonly base: string;
  /** Statement run after each read or write (e.g. a check of the mapping); may be empty. */
  readonly after: string;
  /** Names `after`, `view` and `base` use, bound to `values`. */
  readonly names: readonly string[];
  /** Their values. */
  readonly values: readonly unknown[];
  /**
   * Called with the object before a value the setter's fast test rejects is checked (and
   * converted, or refused): may throw first (a read-only mapping's error takes precedence
   * over the value's).
   */
  readonly beforeCheck?: (self: object) => void;
}

/** The check (convert or throw) of a value for scalar or enum `t`, as one function. */
function checkOf(t: Type, label: string): (v: unknown) => unknown {
  if (t.kind === 'enum') return (v) => checkEnum(v, t, label);
  if (t.kind !== 'scalar') throw typeError(`internal: not a scalar ${formatType(t)}`);
  const k = t.scalar;
  switch (k) {
    case 'bool':
      return (v) => checkBool(v, label);
    case 'f32':
    case 'f64':
      return (v) => checkFloat(v, k, label);
    case 'i64':
    case 'u64':
      return (v) => checkBig(v, k, label);
    default:
      return t.name === 'char' ? (v) => checkChar(v, label) : (v) => checkInt(v, k, label);
  }
}

/**
 * The `get`/`set` of a property for the scalar or enum member `field` of `struct`,
 * generated whole: the DataView read or write with the member's offset folded in, the
 * value checks of {@link valueAccessor} (a value the fast test rejects goes to one
 * function bound to the member), and `code.after`, in one short function each, with no
 * call to an accessor. V8 inlines such getters into the caller's loop: a getter that
 * calls an accessor is two inlining levels, and every byte of bytecode counts against
 * the budget of the function they are inlined into (920 bytes by default, which a
 * benchmark loop unrolled four times exhausts). `null` where code generation is off: use
 * the accessors then. Not part of the public API (not exported from the package's entry
 * point).
 */
export function memberProperty(struct: Type, field: FieldAccessor, code: MemberCode): PropertyDescriptor | null {
  if (!codegenEnabled) return null;
  const t = field.type;
  if (t.kind !== 'scalar' && t.kind !== 'enum') throw typeError(`internal: not a scalar member ${formatType(t)}`);
  const env = new Env();
  const label = `${labelOf(struct)}.${field.name}`;
  const check = checkOf(t, label);
  const before = code.beforeCheck;
  const bad = before ? (v: unknown, self: object): unknown => (before(self), check(v)) : check;
  const o = field.offset === 0 ? code.base : `${code.base} + ${field.offset}`;
  return env.compile<PropertyDescriptor>(
    `return {
      get: function get() { const v = ${readExpr(t, o, code.view)}; ${code.after}; return v; },
      set: function set(v) { ${writeStmt(env, t, o, 'v', '', 'bad', code.view)} ${code.after}; },
    };`,
    [...code.names, 'bad'],
    [...code.values, bad],
  );
}

/**
 * Turns code generation on or off for accessors built afterwards (testing
 * hook; generation is off automatically where `new Function` is disallowed).
 *
 * @internal
 */
export function setCodegen(enabled: boolean): boolean {
  const was = codegenEnabled;
  codegenEnabled = enabled;
  return was;
}
