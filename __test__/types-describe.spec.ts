import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';

import test from 'ava';
import fc from 'fast-check';

import {
  type StructType,
  type Type,
  type TypeDesc,
  cdef,
  describeType,
  flatMembers,
  typeFromDescription,
  types,
} from '../lib/types/index.js';

const fixture = readFileSync(resolve('__test__/fixtures/types-layout.h'), 'utf8');
const ffi = cdef(fixture);
const NAMES = [...fixture.matchAll(/\b(struct|union|enum)\s+([A-Za-z_]\w*)\s*\{/g)].map((m) => `${m[1]} ${m[2]}`);

/** Layout facts of a type, recursively (without object identity). */
function layout(t: Type, seen = new Set<Type>()): unknown {
  switch (t.kind) {
    case 'scalar':
      return [t.name, t.size, t.align];
    case 'pointer':
      if (t.target === null) return ['void *'];
      if ((t.target.kind === 'struct' || t.target.kind === 'union') && seen.has(t.target)) return ['*', t.target.name];
      return ['*', layout(t.target, seen)];
    case 'array':
      return ['[]', t.length, t.size, layout(t.element, seen)];
    case 'enum':
      return ['enum', t.name, t.size, t.scalar, { ...t.members }];
    default: {
      seen.add(t);
      return [
        t.kind,
        t.name,
        t.size,
        t.align,
        t.complete,
        t.fields.map((f) => [f.name, f.offset, layout(f.type, seen)]),
        [...flatMembers(t).values()].map((f) => [f.name, f.offset]),
      ];
    }
  }
}

const roundTrip = (t: Type): Type => typeFromDescription(JSON.parse(JSON.stringify(describeType(t))));

test('every fixture type round-trips through JSON with identical layout', (t) => {
  t.true(NAMES.length > 20);
  for (const name of [...NAMES, 'point_t', 'node_t', 'OrgUserStatus_t', 'row_t', 'char **', 'int (*)[4]']) {
    const ty = ffi.typeof(name);
    const back = roundTrip(ty);
    t.deepEqual(layout(back), layout(ty), name);
    t.is(back.size, ty.size, name);
    t.deepEqual(describeType(back), describeType(ty), name);
  }
});

test('descriptions are compact and recursive types use refs', (t) => {
  const node = ffi.typeof('struct node');
  const d = describeType(node);
  t.deepEqual(d as unknown, {
    struct: 'node',
    size: 24,
    fields: [
      ['value', 'int32_t'],
      ['next', { ptr: { ref: 0 } }],
      ['prev', { ptr: { ref: 0 } }],
    ],
  });
  const back = roundTrip(node) as StructType;
  const next = back.fields[1]?.type;
  t.is(next?.kind === 'pointer' ? next.target : null, back, 'the revived struct points at itself');
  t.is(back.fields[2]?.type, next);
  t.is(describeType(types.i32), 'int32_t');
  t.deepEqual(describeType(ffi.typeof('void *')) as unknown, { ptr: 'void' });
  t.deepEqual(describeType(ffi.typeof('struct ptrs')).toString().length > 0, true);
  t.true(Object.isFrozen(d));
  t.true(JSON.stringify(describeType(ffi.typeof('struct org_user_t'))).length < 200);
});

test('opaque (incomplete) structs travel behind pointers', (t) => {
  const d = describeType(ffi.typeof('struct opaque *'));
  t.deepEqual(d as unknown, { ptr: { opaque: 'struct', tag: 'opaque' } });
  const back = roundTrip(ffi.typeof('struct opaque *'));
  t.is(back.kind === 'pointer' ? (back.target as StructType).complete : true, false);
});

test('the same description revives to the identical object', (t) => {
  const d = JSON.stringify(describeType(ffi.typeof('struct org_user_t')));
  const a = typeFromDescription(JSON.parse(d));
  const b = typeFromDescription(JSON.parse(d));
  t.is(a, b);
  // key order in the JSON does not matter
  const reordered = JSON.parse(d) as Record<string, unknown>;
  const swapped = { fields: reordered.fields, size: reordered.size, struct: reordered.struct };
  t.is(typeFromDescription(swapped), a);
  t.not(typeFromDescription(JSON.parse(JSON.stringify(describeType(ffi.typeof('struct node'))))), a);
});

test('shared (non-recursive) structs are written once', (t) => {
  const p = types.struct('p', { x: types.i32 });
  const seg = types.struct('seg', { a: p, b: p, pa: types.ptr(p) });
  const d = describeType(seg) as unknown as { fields: Array<[string, TypeDesc]> };
  t.deepEqual(d.fields[1]?.[1] as unknown, { ref: 1 });
  const back = roundTrip(seg) as StructType;
  t.is(back.fields[0]?.type, back.fields[1]?.type);
});

const malformed: Array<[string, unknown, RegExp]> = [
  ['null', null, /expected an object/],
  ['number', 42, /expected an object/],
  ['unknown scalar', 'int', /unknown scalar/],
  ['void alone', 'void', /unknown scalar/],
  ['empty object', {}, /expected one of/],
  ['extra key', { ptr: 'void', x: 1 }, /unexpected key "x"/],
  ['two variants', { ptr: 'void', array: 'char', length: 1 }, /unexpected key/],
  ['array length 0', { array: 'char', length: 0 }, /length: expected an integer >= 1/],
  ['array length float', { array: 'char', length: 1.5 }, /length/],
  ['array length string', { array: 'char', length: '3' }, /length/],
  ['array too large', { array: 'double', length: 2 ** 50 }, /too large/],
  ['struct bad tag', { struct: 'a b', size: 0, fields: [] }, /not a C identifier/],
  ['struct tag too long', { struct: 'a'.repeat(300), size: 0, fields: [] }, /not a C identifier/],
  ['struct fields not array', { struct: 's', size: 4, fields: {} }, /expected an array/],
  ['field not pair', { struct: 's', size: 4, fields: [['x']] }, /expected \[name, type\]/],
  ['field bad name', { struct: 's', size: 4, fields: [['1x', 'int32_t']] }, /not a C identifier/],
  ['duplicate field', { struct: 's', size: 8, fields: [['x', 'int32_t'], ['x', 'int32_t']] }, /duplicate member/],
  ['size mismatch', { struct: 's', size: 5, fields: [['x', 'int32_t']] }, /size 5 does not match/],
  ['size missing', { struct: 's', fields: [['x', 'int32_t']] }, /missing 'size'/],
  ['anonymous non-aggregate', { struct: 's', size: 4, fields: [['', 'int32_t']] }, /anonymous/],
  ['self by value', { struct: 's', size: 4, fields: [['me', { ref: 0 }]] }, /incomplete/],
  ['dangling ref', { ptr: { ref: 0 } }, /no struct #0/],
  ['negative ref', { ptr: { ref: -1 } }, /ref/],
  ['enum empty', { enum: 'e', members: [] }, /at least one member/],
  ['enum unsafe value', { enum: 'e', members: [['A', 2 ** 60]] }, /safe integer/],
  ['enum duplicate', { enum: 'e', members: [['A', 1], ['A', 2]] }, /duplicate/],
  ['opaque kind', { opaque: 'enum', tag: 'x' }, /'struct' or 'union'/],
  ['opaque anonymous', { opaque: 'struct', tag: '' }, /not a C identifier/],
  ['proto key', JSON.parse('{"__proto__": {"ptr": "void"}, "ptr": "void"}'), /unexpected key "__proto__"/],
  ['class instance', new (class X { ptr = 'void'; })(), /plain object/],
  ['getter', Object.defineProperty({}, 'ptr', { get: () => 'void', enumerable: true }), /missing 'ptr'/],
  ['array as object', ['ptr', 'void'], /expected an object/],
];

for (const [name, desc, re] of malformed) {
  test(`malformed description is a TypeError: ${name}`, (t) => {
    const e = t.throws(() => typeFromDescription(desc), { instanceOf: TypeError });
    t.regex(e?.message ?? '', re);
    t.regex(e?.message ?? '', /invalid type description/);
  });
}

test('bounds: depth and node count', (t) => {
  let deep: unknown = 'char';
  for (let i = 0; i < 1000; i++) deep = { ptr: deep };
  t.throws(() => typeFromDescription(deep), { instanceOf: TypeError, message: /deeper than/ });
  const wide = { struct: 'w', size: 30_000, fields: Array.from({ length: 30_000 }, (_, i) => [`f${i}`, 'char']) };
  t.throws(() => typeFromDescription(wide), { instanceOf: TypeError, message: /more than 20000/ });
  const many = { struct: 'w', size: 16_000, fields: Array.from({ length: 8000 }, (_, i) => [`f${i}`, { array: 'char', length: 2 }]) };
  t.throws(() => typeFromDescription(many), { instanceOf: TypeError, message: /more than 20000 nodes/ });
  const ok = { struct: 'w', size: 1000, fields: Array.from({ length: 1000 }, (_, i) => [`f${i}`, 'char']) };
  t.is(typeFromDescription(ok).size, 1000);
  // a type nested deeper than descriptions allow cannot be described either
  let ty: Type = types.char;
  for (let i = 0; i < 300; i++) ty = types.ptr(ty);
  t.throws(() => describeType(ty), { instanceOf: TypeError, message: /deeper/ });
  t.throws(() => describeType({} as Type), { instanceOf: TypeError });
});

test('no prototype pollution from hostile descriptions', (t) => {
  const hostile = JSON.parse(
    '{"struct":"__proto__","size":4,"fields":[["__proto__","int32_t"]]}',
  ) as unknown;
  const ty = typeFromDescription(hostile) as StructType;
  t.is(ty.fields[0]?.name, '__proto__');
  const en = typeFromDescription(JSON.parse('{"enum":"e","members":[["__proto__",1],["constructor",2]]}'));
  t.is(en.kind === 'enum' ? en.members.__proto__ : undefined, 1);
  t.is(({} as Record<string, unknown>).__proto__, Object.prototype);
  t.is(({} as Record<string, unknown>).constructor, Object);
});

test('fuzz: arbitrary JSON and mutated descriptions only ever throw TypeError', (t) => {
  const valid = NAMES.map((n) => describeType(ffi.typeof(n)));
  const check = (d: unknown): void => {
    try {
      const ty = typeFromDescription(d);
      // anything accepted must describe back to something that revives to itself
      t.is(typeFromDescription(JSON.parse(JSON.stringify(describeType(ty)))), ty);
    } catch (e) {
      if (!(e instanceof TypeError)) throw e;
    }
  };
  fc.assert(fc.property(fc.jsonValue({ maxDepth: 6 }), (v) => check(v)), { numRuns: 500 });
  fc.assert(
    fc.property(fc.anything({ maxDepth: 4, withObjectString: true, withNullPrototype: true }), (v) => check(v)),
    { numRuns: 300 },
  );
  // structural mutations of valid descriptions
  const mutate = (v: unknown, path: number[], replacement: unknown): unknown => {
    if (path.length === 0 || typeof v !== 'object' || v === null) return replacement;
    const [head, ...rest] = path as [number, ...number[]];
    if (Array.isArray(v)) {
      const copy = [...(v as unknown[])];
      if (copy.length === 0) return replacement;
      const i = head % copy.length;
      copy[i] = mutate(copy[i], rest, replacement);
      return copy;
    }
    const keys = Object.keys(v);
    if (keys.length === 0) return replacement;
    const k = keys[head % keys.length] as string;
    return { ...(v as object), [k]: mutate((v as Record<string, unknown>)[k], rest, replacement) };
  };
  fc.assert(
    fc.property(
      fc.constantFrom(...valid),
      fc.array(fc.nat(20), { maxLength: 6 }),
      fc.oneof(fc.jsonValue({ maxDepth: 2 }), fc.constantFrom<unknown>('int32_t', 'char', { ref: 0 }, { ref: 5 }, { ptr: 'void' }, -1, 0, 2 ** 53)),
      (d, path, rep) => check(mutate(d, path, rep)),
    ),
    { numRuns: 1500 },
  );
});
