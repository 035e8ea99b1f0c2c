import test from 'ava';
import fc from 'fast-check';

import { setCodegen } from '../lib/types/access.js';
import {
  LITTLE_ENDIAN,
  type Type,
  cdef,
  scalarAccessor,
  structLayoutAccessors,
  types,
  valueAccessor,
} from '../lib/types/index.js';

const README = `
typedef enum {INACTIVE, ACTIVE, DELETED} OrgUserStatus_t;
struct org_user_t { uint64_t id; char *fullname; uint8_t fullname_len; OrgUserStatus_t status; };`;

const view = (n = 256): DataView => new DataView(new ArrayBuffer(n));

test('host byte order is detected', (t) => {
  t.is(LITTLE_ENDIAN, new Uint8Array(new Uint16Array([1]).buffer)[0] === 1);
});

test('scalar round trips and memory representation', (t) => {
  const dv = view();
  const cases: Array<[Type, unknown, (dv: DataView) => unknown]> = [
    [types.i8, -128, (d) => d.getInt8(3)],
    [types.u8, 255, (d) => d.getUint8(3)],
    [types.i16, -32768, (d) => d.getInt16(3, LITTLE_ENDIAN)],
    [types.u16, 65535, (d) => d.getUint16(3, LITTLE_ENDIAN)],
    [types.i32, -2147483648, (d) => d.getInt32(3, LITTLE_ENDIAN)],
    [types.u32, 4294967295, (d) => d.getUint32(3, LITTLE_ENDIAN)],
    [types.i64, -(2n ** 63n), (d) => d.getBigInt64(3, LITTLE_ENDIAN)],
    [types.u64, 2n ** 64n - 1n, (d) => d.getBigUint64(3, LITTLE_ENDIAN)],
    [types.f32, 1.5, (d) => d.getFloat32(3, LITTLE_ENDIAN)],
    [types.f64, Math.PI, (d) => d.getFloat64(3, LITTLE_ENDIAN)],
    [types.bool, true, (d) => d.getUint8(3) === 1],
    [types.char, -1, (d) => d.getInt8(3)],
  ];
  for (const [ty, v, raw] of cases) {
    const a = scalarAccessor(ty);
    a.set(dv, 3, v as never);
    t.is(a.get(dv, 3), v as never, ty.name);
    t.is(raw(dv), ty === types.bool ? true : v, ty.name);
  }
  t.is(scalarAccessor(types.i32), scalarAccessor(types.i32), 'built once per type');
  // 64-bit setters take integral numbers too; floats take any number
  scalarAccessor(types.u64).set(dv, 0, 12 as never);
  t.is(scalarAccessor(types.u64).get(dv, 0), 12n);
  scalarAccessor(types.i32).set(dv, 0, 7n as never);
  t.is(scalarAccessor(types.i32).get(dv, 0), 7);
  scalarAccessor(types.f64).set(dv, 0, Number.NaN);
  t.true(Number.isNaN(scalarAccessor(types.f64).get(dv, 0)));
  scalarAccessor(types.f32).set(dv, 0, 1e300);
  t.is(scalarAccessor(types.f32).get(dv, 0), Number.POSITIVE_INFINITY);
  scalarAccessor(types.bool).set(dv, 0, 0 as never);
  t.false(scalarAccessor(types.bool).get(dv, 0));
  dv.setUint8(0, 7);
  t.true(scalarAccessor(types.bool).get(dv, 0), 'any non-zero byte reads as true');
  scalarAccessor(types.char).set(dv, 0, 'A' as never);
  t.is(scalarAccessor(types.char).get(dv, 0), 65);
  scalarAccessor(types.char).set(dv, 0, 'ÿ' as never);
  t.is(scalarAccessor(types.char).get(dv, 0), -1);
  scalarAccessor(types.i32).set(dv, 0, -0);
  t.is(scalarAccessor(types.i32).get(dv, 0), 0);
});

test('int range policy: TypeError for non-numbers, RangeError out of range, never wraps', (t) => {
  const dv = view();
  const ranges: Array<[Type, number | bigint, number | bigint]> = [
    [types.i8, -128, 127], [types.u8, 0, 255], [types.i16, -32768, 32767], [types.u16, 0, 65535],
    [types.i32, -(2 ** 31), 2 ** 31 - 1], [types.u32, 0, 2 ** 32 - 1],
    [types.i64, -(2n ** 63n), 2n ** 63n - 1n], [types.u64, 0n, 2n ** 64n - 1n],
  ];
  for (const [ty, lo, hi] of ranges) {
    const a = scalarAccessor(ty, 'thing.field');
    const big = typeof lo === 'bigint';
    const below = big ? (lo as bigint) - 1n : (lo as number) - 1;
    const above = big ? (hi as bigint) + 1n : (hi as number) + 1;
    t.notThrows(() => a.set(dv, 0, lo as never));
    t.notThrows(() => a.set(dv, 0, hi as never));
    t.throws(() => a.set(dv, 0, below as never), { instanceOf: RangeError, message: /thing\.field.*out of range/ }, ty.name);
    t.throws(() => a.set(dv, 0, above as never), { instanceOf: RangeError, message: /thing\.field.*out of range/ }, ty.name);
    t.throws(() => a.set(dv, 0, 1.5 as never), { instanceOf: RangeError, message: /thing\.field.*not an integer/ });
    for (const bad of [Number.NaN, Number.POSITIVE_INFINITY, '1', null, undefined, {}, true]) {
      t.throws(() => a.set(dv, 0, bad as never), { instanceOf: TypeError, message: /thing\.field/ }, `${ty.name} ${String(bad)}`);
    }
    t.is(a.get(dv, 0), hi as never, 'failed sets leave memory unchanged');
  }
  t.throws(() => scalarAccessor(types.f64).set(dv, 0, '1' as never), { instanceOf: TypeError, message: /double/ });
  t.throws(() => scalarAccessor(types.f64).set(dv, 0, 1n as never), { instanceOf: TypeError });
  t.throws(() => scalarAccessor(types.bool).set(dv, 0, 2 as never), { instanceOf: TypeError, message: /bool/ });
  t.throws(() => scalarAccessor(types.char).set(dv, 0, 'ab' as never), { instanceOf: TypeError });
  t.throws(() => scalarAccessor(types.char).set(dv, 0, '€' as never), { instanceOf: RangeError });
  t.throws(() => scalarAccessor(types.i32).set(dv, 254, 1), { instanceOf: RangeError }, 'DataView bounds still apply');
  t.throws(() => scalarAccessor(types.array(types.i32, 2)), { instanceOf: TypeError, message: /scalar/ });
});

test('pointers read and write addresses as numbers', (t) => {
  const dv = view();
  const p = scalarAccessor(types.ptr(types.char));
  p.set(dv, 8, 0x7f12_3456_789a);
  t.is(p.get(dv, 8), 0x7f12_3456_789a);
  t.is(dv.getBigUint64(8, LITTLE_ENDIAN), 0x7f123456789an);
  p.set(dv, 8, null as never);
  t.is(p.get(dv, 8), 0);
  p.set(dv, 8, 2n ** 60n as never);
  t.is(dv.getBigUint64(8, LITTLE_ENDIAN), 2n ** 60n);
  p.set(dv, 8, Number.MAX_SAFE_INTEGER);
  t.is(p.get(dv, 8), Number.MAX_SAFE_INTEGER);
  t.throws(() => p.set(dv, 8, -1), { instanceOf: RangeError });
  t.throws(() => p.set(dv, 8, 1.5), { instanceOf: RangeError });
  t.throws(() => p.set(dv, 8, 2 ** 53), { instanceOf: RangeError });
  t.throws(() => p.set(dv, 8, '0x10' as never), { instanceOf: TypeError, message: /pointer/ });
});

test('enums take numbers in range or member names', (t) => {
  const dv = view();
  const ffi = cdef('enum e { A, B = 7 }; enum n { N = -3 }; enum h { H = 0x100000000 };');
  const e = scalarAccessor(ffi.typeof('enum e'));
  e.set(dv, 0, 'B' as never);
  t.is(e.get(dv, 0), 7);
  e.set(dv, 0, 99 as never);
  t.is(e.get(dv, 0), 99, 'any value of the underlying type is allowed');
  t.throws(() => e.set(dv, 0, -1 as never), { instanceOf: RangeError }, 'unsigned underlying type');
  t.throws(() => e.set(dv, 0, 'C' as never), { instanceOf: TypeError, message: /not a member of enum e/ });
  const n = scalarAccessor(ffi.typeof('enum n'));
  n.set(dv, 0, 'N' as never);
  t.is(n.get(dv, 0), -3);
  const h = scalarAccessor(ffi.typeof('enum h'));
  h.set(dv, 0, 'H' as never);
  t.is(h.get(dv, 0), 2 ** 32);
  t.is(dv.getBigUint64(0, LITTLE_ENDIAN), 2n ** 32n);
  // A 64-bit enum holding what a number cannot hold exactly (a C program may store any
  // value of the type) is a RangeError on read, generated accessors and closures alike,
  // never a rounded number.
  const was = setCodegen(false);
  let closure;
  try {
    closure = scalarAccessor(ffi.typeof('enum h'), 'closure');
  } finally {
    setCodegen(was);
  }
  const s = valueAccessor(cdef('enum h2 { H2 = 0x100000000 }; struct s64 { enum h2 f; };').typeof('struct s64'));
  dv.setBigUint64(0, (1n << 60n) | 1n, LITTLE_ENDIAN);
  for (const acc of [h, closure]) t.throws(() => acc.get(dv, 0), { instanceOf: RangeError, message: /1152921504606846977, is beyond ±2\^53/ });
  t.throws(() => s.get(dv, 0), { instanceOf: RangeError, message: /beyond ±2\^53/ });
  dv.setBigUint64(0, 2n ** 53n - 1n, LITTLE_ENDIAN);
  t.is(h.get(dv, 0), 2 ** 53 - 1);
  t.is(closure.get(dv, 0), 2 ** 53 - 1);
});

test('structLayoutAccessors: README struct', (t) => {
  const ffi = cdef(README);
  const L = structLayoutAccessors(ffi.typeof('struct org_user_t'));
  t.is(L, structLayoutAccessors(ffi.typeof('struct org_user_t')), 'built once per type');
  t.deepEqual([...L.names], ['id', 'fullname', 'fullname_len', 'status']);
  t.deepEqual(L.names.map((n) => L.fields[n]?.offset), [0, 8, 16, 20]);
  t.is(L.size, 24);
  const dv = view(64);
  const base = 16;
  const f = L.fields;
  f.id?.set(dv, base, 4123n);
  f.fullname?.set(dv, base, 0x1000);
  f.fullname_len?.set(dv, base, 13);
  f.status?.set(dv, base, ffi.lib.ACTIVE);
  t.deepEqual([f.id?.get(dv, base), f.fullname?.get(dv, base), f.fullname_len?.get(dv, base), f.status?.get(dv, base)], [4123n, 0x1000, 13, 1]);
  t.is(dv.getBigUint64(base, LITTLE_ENDIAN), 4123n);
  t.is(dv.getUint8(base + 16), 13);
  t.deepEqual(valueAccessor(ffi.typeof('struct org_user_t')).get(dv, base), { id: 4123n, fullname: 0x1000, fullname_len: 13, status: 1 });
  t.throws(() => f.fullname_len?.set(dv, base, 256), { instanceOf: RangeError, message: /struct org_user_t\.fullname_len/ });
  t.throws(() => f.id?.set(dv, base, 'x'), { instanceOf: TypeError, message: /struct org_user_t\.id/ });
  t.true(f.id?.scalar);
  t.throws(() => structLayoutAccessors(types.i32), { instanceOf: TypeError });
  t.throws(() => structLayoutAccessors(cdef('struct x; struct y { struct x *p; };').typeof('struct x')), { instanceOf: TypeError, message: /incomplete/ });
});

test('aggregate values: nested structs, arrays, anonymous members, C initializer semantics', (t) => {
  const ffi = cdef(`
    struct inner { uint8_t a; uint32_t b; };
    struct s {
      int kind;
      union { int32_t i; float f; };
      struct inner in;
      struct inner arr[2];
      char name[8];
      int16_t m[2][3];
      bool flags[3];
    };`);
  const ty = ffi.typeof('struct s');
  const acc = valueAccessor(ty);
  const dv = view(128);
  new Uint8Array(dv.buffer).fill(0xaa);
  acc.set(dv, 8, { kind: 1, i: 5, in: { b: 9 }, arr: [{ a: 1 }], name: 'héllo', m: [[1, 2, 3], [-4]], flags: [true] } as never);
  const v = acc.get(dv, 8) as Record<string, unknown>;
  t.deepEqual(v, {
    kind: 1,
    i: 5,
    f: new Float32Array(new Int32Array([5]).buffer)[0],
    in: { a: 0, b: 9 },
    arr: [{ a: 1, b: 0 }, { a: 0, b: 0 }],
    name: [104, -61, -87, 108, 108, 111, 0, 0],
    m: [[1, 2, 3], [-4, 0, 0]],
    flags: [true, false, false],
  });
  t.is(dv.getUint8(7), 0xaa, 'bytes before the struct untouched');
  t.is(dv.getUint8(8 + ty.size), 0xaa, 'bytes after the struct untouched');
  const before = [...new Uint8Array(dv.buffer)];
  t.throws(() => acc.set(dv, 8, { kind: 2, in: { a: 1, b: -1 } } as never), { instanceOf: RangeError, message: /struct s\.in\.b/ });
  t.throws(() => acc.set(dv, 8, { kind: 3, name: 'this is too long' } as never), { instanceOf: RangeError });
  t.deepEqual([...new Uint8Array(dv.buffer)], before, 'a rejected set leaves memory unchanged');
  t.throws(() => acc.set(dv, 8, { nope: 1 } as never), { instanceOf: TypeError, message: /unknown member "nope"/ });
  t.throws(() => acc.set(dv, 8, 5 as never), { instanceOf: TypeError, message: /expected an object/ });
  t.throws(() => acc.set(dv, 8, { name: 'way too long' } as never), { instanceOf: RangeError, message: /name/ });
  t.throws(() => acc.set(dv, 8, { m: [[1], [2], [3]] } as never), { instanceOf: RangeError, message: /3 elements do not fit in 2/ });
  t.throws(() => acc.set(dv, 8, { m: [[1, 2, 70000]] } as never), { instanceOf: RangeError, message: /struct s\.m\[\]\[2\]|m/ });
  t.throws(() => acc.set(dv, 8, { arr: 'x' } as never), { instanceOf: TypeError, message: /expected an array/ });
  acc.set(dv, 8, { name: new Uint8Array([1, 2, 3]) } as never);
  t.deepEqual((acc.get(dv, 8) as { name: number[] }).name, [1, 2, 3, 0, 0, 0, 0, 0]);
  t.throws(() => acc.set(dv, 100, {} as never), { instanceOf: RangeError, message: /outside the DataView/ });
  const arr = valueAccessor(ffi.typeof('int32_t[4]'));
  arr.set(dv, 0, new Int32Array([1, 2]) as never);
  t.deepEqual(arr.get(dv, 0), [1, 2, 0, 0]);
});

test('a member named __proto__ is an own property, never the prototype', (t) => {
  const ffi = cdef('struct p { int __proto__; int constructor; };');
  const acc = valueAccessor(ffi.typeof('struct p'));
  const dv = view();
  acc.set(dv, 0, JSON.parse('{"__proto__": 3, "constructor": 4}') as never);
  const v = acc.get(dv, 0) as Record<string, unknown>;
  t.is(Object.getPrototypeOf(v), Object.prototype);
  t.true(Object.prototype.hasOwnProperty.call(v, '__proto__'));
  t.deepEqual(Object.entries(v), [['__proto__', 3], ['constructor', 4]]);
  const L = structLayoutAccessors(ffi.typeof('struct p'));
  t.is(L.fields.__proto__?.get(dv, 0), 3);
});

test('closure fallback behaves exactly like generated code', (t) => {
  const ffi = cdef(`
    enum e { EA = -2, EB = 70000 };
    struct inner { char c; double d; };
    struct all {
      int8_t a; uint8_t b; int16_t c; uint16_t d; int32_t e; uint32_t f; int64_t g; uint64_t h;
      float i; double j; bool k; char l; enum e m; void *n; struct inner o; int32_t p[3]; char q[4];
      union { uint16_t r; uint8_t s[2]; };
    };`);
  const ty = ffi.typeof('struct all');
  const gen = valueAccessor(ty, 'all');
  const was = setCodegen(false);
  let clo;
  try {
    clo = valueAccessor(ty, 'all');
  } finally {
    setCodegen(was);
  }
  const member = fc.oneof(
    fc.integer(),
    fc.double(),
    fc.bigInt({ min: -(2n ** 65n), max: 2n ** 65n }),
    fc.boolean(),
    fc.string({ maxLength: 5 }),
    fc.constantFrom(null, undefined, 'EA', 0, -0, 2 ** 53, [1, 2], { c: 1 }),
  );
  const names = ['a', 'b', 'c', 'd', 'e', 'f', 'g', 'h', 'i', 'j', 'k', 'l', 'm', 'n', 'o', 'p', 'q', 'r', 's'];
  const outcome = (acc: typeof gen, v: unknown): [string, number[]] => {
    const dv = view(ty.size);
    try {
      acc.set(dv, 0, v as never);
      return ['ok', [...new Uint8Array(dv.buffer)]];
    } catch (e) {
      return [`${(e as Error).constructor.name}: ${(e as Error).message}`, []];
    }
  };
  fc.assert(
    fc.property(fc.dictionary(fc.constantFrom(...names), member, { maxKeys: 4 }), (v) => {
      const a = outcome(gen, v);
      const b = outcome(clo, v);
      t.deepEqual(b, a);
      if (a[0] === 'ok') {
        const dv = new DataView(new Uint8Array(a[1]).buffer);
        t.deepEqual(clo.get(dv, 0), gen.get(dv, 0));
      }
    }),
    { numRuns: 400 },
  );
});
