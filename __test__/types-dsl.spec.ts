import test from 'ava';

import { type JsOf, type StructType, cdef, types } from '../lib/types/index.js';

// --- compile-time checks (tsc): the DSL infers JS shapes --------------------
type Equal<A, B> = (<X>() => X extends A ? 1 : 2) extends <X>() => X extends B ? 1 : 2 ? true : false;
const assertType = <T extends true>(_: T): void => undefined;

const Point = types.struct('point', { x: types.i32, y: types.i32 });
assertType<Equal<JsOf<typeof Point>, { x: number; y: number }>>(true);
const _Mixed = types.struct('mixed', {
  id: types.u64,
  flag: types.bool,
  name: types.array(types.char, 8),
  at: Point,
  next: types.ptr(Point),
  '...u': types.union('', { i: types.i32, big: types.i64 }),
});
assertType<
  Equal<
    JsOf<typeof _Mixed>,
    { id: bigint; flag: boolean; name: number[]; at: { x: number; y: number }; next: number; i: number; big: bigint }
  >
>(true);
assertType<Equal<JsOf<typeof types.f64>, number>>(true);
assertType<Equal<JsOf<ReturnType<typeof types.enum>>, number>>(true);

// --- runtime -----------------------------------------------------------------

test('types.struct deep-equals the cdef layout', (t) => {
  const ffi = cdef('struct point { int32_t x; int32_t y; };');
  t.deepEqual(Point, ffi.typeof('struct point'));
  t.not(Point as unknown, ffi.typeof('struct point') as unknown, 'structs are nominal: equal, not identical');
  t.is(Point.size, 8);
  t.true(Object.isFrozen(Point));
});

test('a richer struct: scalars, arrays, nested, pointers, anonymous union, enum', (t) => {
  const ffi = cdef(`
    struct point { int32_t x; int32_t y; };
    enum color { RED, GREEN = 5, BLUE };
    struct mixed2 {
      uint64_t id;
      bool flag;
      char name[8];
      struct point at;
      struct point *next;
      union { int32_t i; int64_t big; };
      double m[2][3];
      enum color c;
      void *opaque;
      char **argv;
    };
  `);
  const dslPoint = types.struct('point', { x: types.i32, y: types.i32 });
  const color = types.enum('color', { RED: 0, GREEN: 5, BLUE: 6 });
  const dsl = types.struct('mixed2', {
    id: types.u64,
    flag: types.bool,
    name: types.array(types.char, 8),
    at: dslPoint,
    next: types.ptr(dslPoint),
    '...': types.union('', { i: types.i32, big: types.i64 }),
    m: types.array(types.array(types.f64, 3), 2),
    c: color,
    opaque: types.ptr(),
    argv: types.ptr(types.ptr(types.char)),
  });
  t.deepEqual(dsl, ffi.typeof('struct mixed2') as StructType);
  t.deepEqual(color, ffi.typeof('enum color'));
  t.is(types.enum('color', ['RED', 'GREEN']).members.GREEN, 1);
  t.is<unknown, unknown>(types.ptr('void'), ffi.typeof('void *'));
  t.is<unknown, unknown>(types.ptr(types.char), ffi.typeof('char *'), 'pointers are interned across DSL and cdef');
  t.is<unknown, unknown>(types.array(types.i32, 4), ffi.typeof('int[4]'));
});

test('unions, anonymous and enum sizing match cdef', (t) => {
  const ffi = cdef(`
    union u { char c; double d; char buf[13]; };
    struct anon { int kind; struct { char a; char b; }; uint8_t last; };
    enum big { HA = 0x100000000 };
    enum neg { NA = -1, NB = 0x80000000 };
  `);
  t.deepEqual(types.union('u', { c: types.char, d: types.f64, buf: types.array(types.char, 13) }), ffi.typeof('union u'));
  t.deepEqual(
    types.struct('anon', { kind: types.i32, '...0': types.struct('', { a: types.char, b: types.char }), last: types.u8 }),
    ffi.typeof('struct anon'),
  );
  t.deepEqual(types.enum('big', { HA: 2 ** 32 }), ffi.typeof('enum big'));
  t.deepEqual(types.enum('neg', { NA: -1, NB: 0x80000000 }), ffi.typeof('enum neg'));
  t.is(types.enum('neg', { NA: -1, NB: 0x80000000 }).size, 8);
});

test('self-referential struct via a function', (t) => {
  const node = types.struct('node', (self) => ({ value: types.i64, next: types.ptr(self) }));
  const ffi = cdef('struct node { int64_t value; struct node *next; };');
  t.is(node.size, 16);
  const next = node.fields[1]?.type;
  t.is(next?.kind === 'pointer' ? next.target : null, node);
  t.is(ffi.sizeof('struct node'), node.size);
  t.is(node.fields[1]?.type.name, 'struct node *');
});

test('DSL argument validation', (t) => {
  t.throws(() => types.struct('bad name', { x: types.i32 }), { instanceOf: TypeError, message: /name/ });
  t.throws(() => types.struct('s', { 'not ident': types.i32 }), { instanceOf: TypeError, message: /field name/ });
  t.throws(() => types.struct('s', { x: 'int' as never }), { instanceOf: TypeError, message: /field 'x'/ });
  t.throws(() => types.struct('s', { '...a': types.i32 }), { instanceOf: TypeError, message: /anonymous/ });
  t.throws(() => types.struct('s', { '...a': Point }), { instanceOf: TypeError, message: /anonymous/ });
  t.throws(() => types.struct('s', (self) => ({ me: self })), { instanceOf: TypeError, message: /incomplete/ });
  t.throws(() => types.struct('s', null as never), { instanceOf: TypeError, message: /fields/ });
  t.throws(() => types.array(types.i32, 0), { instanceOf: RangeError, message: /length/ });
  t.throws(() => types.array(types.i32, 1.5), { instanceOf: RangeError });
  t.throws(() => types.array(types.i32, 2 ** 50), { instanceOf: RangeError, message: /too large/ });
  t.throws(() => types.ptr({} as never), { instanceOf: TypeError, message: /target/ });
  t.throws(() => types.enum('e', {}), { instanceOf: TypeError, message: /no members/ });
  t.throws(() => types.enum('e', { A: 0.5 }), { instanceOf: RangeError });
  t.throws(() => types.enum('e', ['A', 'A']), { instanceOf: TypeError, message: /duplicate/ });
  t.is(types.struct('struct tagged', { x: types.i8 }).name, 'struct tagged');
  t.is(types.struct('', { x: types.i8 }).name, '');
  t.is(types.struct('__proto__', { __proto__: types.i8 } as never).fields.length, 0, 'object literal __proto__ is not a key');
  const withProto = types.struct('p', { ['__proto__']: types.i8, x: types.i8 });
  t.deepEqual(
    withProto.fields.map((f) => f.name),
    ['__proto__', 'x'],
  );
  t.throws(() => types.struct('p', JSON.parse('{"__proto__": 1}') as never), { instanceOf: TypeError });
});

test('types nested by value deeper than 256 levels are a TypeError when made (accessors of 3,000 levels overflowed the stack with an untyped RangeError); 256 levels work', (t) => {
  let s: StructType = types.struct('d0', { f: types.i32 });
  for (let i = 1; i < 256; i++) s = types.struct(`d${i}`, { f: s });
  t.is(s.size, 4);
  const err = t.throws(() => types.struct('d256', { f: s }), { instanceOf: TypeError, message: /struct d256 nests types deeper than 256 levels/ });
  t.is((err as Error & { code?: string }).code, 'ERR_INVALID_ARG_TYPE');
  t.throws(() => types.struct('wrapped', { a: types.i32, b: types.array(s, 2) }), { instanceOf: TypeError, message: /deeper than 256/ }, 'an array level counts');
  let a: Parameters<typeof types.array>[0] = types.array(types.u8, 1);
  for (let i = 1; i < 256; i++) a = types.array(a, 1);
  t.throws(() => types.array(a, 1), { instanceOf: TypeError, message: /deeper than 256/ });
  t.is(types.struct('p', { next: types.ptr(s), more: types.array(types.ptr(s), 3) }).size, 32, 'a pointer is no level');
});
