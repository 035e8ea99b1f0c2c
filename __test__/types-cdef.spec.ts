import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';

import test from 'ava';

import {
  CDefError,
  FFI,
  type StructType,
  type Type,
  cdef,
  parseAllocationTypeName,
  parseTypeName,
  types,
} from '../lib/types/index.js';

const fixture = readFileSync(resolve('__test__/fixtures/types-layout.h'), 'utf8');

const README = `
typedef enum {INACTIVE, ACTIVE, DELETED} OrgUserStatus_t;
struct org_user_t {
    uint64_t id;
    char *fullname;
    uint8_t fullname_len;
    OrgUserStatus_t status;
};`;

function errorAt(t: import('ava').ExecutionContext, source: string, line: number, column: number, match: RegExp): void {
  const e = t.throws(() => cdef(source), { instanceOf: CDefError });
  if (e === undefined) return;
  t.true(e instanceof SyntaxError);
  t.regex(e.message, match);
  t.is(e.line, line, `line for ${JSON.stringify(source)}: ${e.message}`);
  t.is(e.column, column, `column for ${JSON.stringify(source)}: ${e.message}`);
  t.true(e.message.includes(`line ${line}, column ${column}`));
}

test('README org_user_t: sizeof 24, offsets 0/8/16/20, lib.ACTIVE', (t) => {
  const ffi = cdef(README);
  t.is(ffi.sizeof('struct org_user_t'), 24);
  t.is(ffi.alignof('struct org_user_t'), 8);
  t.deepEqual(
    ['id', 'fullname', 'fullname_len', 'status'].map((f) => ffi.offsetof('struct org_user_t', f)),
    [0, 8, 16, 20],
  );
  t.is(ffi.lib.ACTIVE, 1);
  t.is(ffi.lib.INACTIVE, 0);
  t.is(ffi.lib.DELETED, 2);
  const u = ffi.typeof('struct org_user_t') as StructType;
  t.is(u.kind, 'struct');
  t.is(u.name, 'struct org_user_t');
  t.is(u.fields[0]?.type, ffi.typeof('uint64_t'));
  t.is(u.fields[1]?.type, ffi.typeof('char*'));
  t.is(u.fields[1]?.type.name, 'char *');
  t.is(u.fields[2]?.type, ffi.typeof('uint8_t'));
  t.is(u.fields[3]?.type, ffi.typeof('OrgUserStatus_t'));
  t.is(ffi.typeof('struct org_user_t'), u, 'typeof is stable');
  t.is(ffi.typeof('struct org_user_t *').name, 'struct org_user_t *');
  t.true(Object.isFrozen(u));
  t.true(Object.isFrozen(u.fields));
});

test('scalar type names (LP64) and their sizes', (t) => {
  const cases: Array<[string, string, number]> = [
    ['int8_t', 'int8_t', 1], ['uint8_t', 'uint8_t', 1], ['int16_t', 'int16_t', 2], ['uint16_t', 'uint16_t', 2],
    ['int32_t', 'int32_t', 4], ['uint32_t', 'uint32_t', 4], ['int64_t', 'int64_t', 8], ['uint64_t', 'uint64_t', 8],
    ['char', 'char', 1], ['signed char', 'int8_t', 1], ['unsigned char', 'uint8_t', 1],
    ['short', 'int16_t', 2], ['short int', 'int16_t', 2], ['unsigned short', 'uint16_t', 2],
    ['signed short int', 'int16_t', 2], ['int', 'int32_t', 4], ['signed', 'int32_t', 4], ['unsigned', 'uint32_t', 4],
    ['unsigned int', 'uint32_t', 4], ['long', 'int64_t', 8], ['long int', 'int64_t', 8],
    ['unsigned long', 'uint64_t', 8], ['long unsigned int', 'uint64_t', 8], ['long long', 'int64_t', 8],
    ['long long int', 'int64_t', 8], ['unsigned long long', 'uint64_t', 8], ['unsigned long long int', 'uint64_t', 8],
    ['size_t', 'uint64_t', 8], ['ssize_t', 'int64_t', 8], ['intptr_t', 'int64_t', 8], ['uintptr_t', 'uint64_t', 8],
    ['ptrdiff_t', 'int64_t', 8], ['float', 'float', 4], ['double', 'double', 8], ['bool', 'bool', 1], ['_Bool', 'bool', 1],
    ['const int', 'int32_t', 4], ['  volatile   unsigned  ', 'uint32_t', 4],
  ];
  for (const [text, name, size] of cases) {
    const ty = parseTypeName(text);
    t.is(ty.kind, 'scalar', text);
    t.is(ty.name, name, text);
    t.is(ty.size, size, text);
    t.is(ty.align, size, text);
  }
  t.is(parseTypeName('int'), types.i32);
  t.is(parseTypeName('size_t'), types.size_t);
  t.is(parseTypeName('char'), types.char);
  t.not(parseTypeName('char'), types.i8);
});

test('pointer and array names', (t) => {
  const p = parseTypeName('char *');
  t.is(p.kind, 'pointer');
  t.is(p.size, 8);
  t.is(p.name, 'char *');
  t.is(parseTypeName('char*'), p, 'pointers are interned');
  t.is(parseTypeName('const char *'), p);
  t.is(parseTypeName('void *').name, 'void *');
  t.is(parseTypeName('int **').name, 'int32_t **');
  const a = parseTypeName('char[13]');
  t.like(a, { kind: 'array', length: 13, size: 13, align: 1, name: 'char[13]' });
  const m = parseTypeName('int32_t[2][3]');
  t.like(m, { kind: 'array', length: 2, size: 24, align: 4, name: 'int32_t[2][3]' });
  t.is(m.kind === 'array' ? m.element : null, parseTypeName('int32_t[3]'));
  t.is(parseTypeName('int (*)[3]').name, 'int32_t(*)[3]');
  t.is(parseTypeName('int *[3]').size, 24);
  t.is(parseTypeName('double[1 << 2]').size, 32);
});

test('allocation names strip one trailing star', (t) => {
  t.is(parseAllocationTypeName('size_t *'), types.size_t);
  t.is(parseAllocationTypeName('int64_t*'), types.i64);
  t.is(parseAllocationTypeName('char **'), parseTypeName('char *'));
  t.is(parseAllocationTypeName('char[13]'), parseTypeName('char[13]'));
  t.is(parseAllocationTypeName('double'), types.f64);
  const ffi = cdef(README);
  t.is(parseAllocationTypeName('struct org_user_t *', ffi), ffi.typeof('struct org_user_t'));
  t.throws(() => parseAllocationTypeName('void *'), { instanceOf: TypeError, message: /void/ });
});

test('bad type names are TypeErrors naming the argument and the text', (t) => {
  for (const bad of ['', 'foo', 'int int', 'long double', 'unsigned float', 'char[0]', 'char[]', 'int (int)', 'struct x', 'void', 'int x', '*', 'int[-1]', 'signed unsigned']) {
    const e = t.throws(() => parseTypeName(bad), { instanceOf: TypeError, code: 'ERR_INVALID_ARG_TYPE' }, bad);
    t.truthy(e?.message.includes('name'), bad);
    t.truthy(e?.message.includes(JSON.stringify(bad)) || bad === 'void', `${bad}: ${e?.message}`);
  }
  t.throws(() => parseTypeName(42 as unknown as string), { instanceOf: TypeError, message: /name/ });
  const ffi = cdef(README);
  t.throws(() => ffi.typeof('struct nope'), { instanceOf: TypeError, message: /decl.*struct nope/ });
  t.throws(() => ffi.sizeof('nope_t'), { instanceOf: TypeError, message: /nope_t/ });
});

test('struct layout: padding, nesting, alignment, size rounding', (t) => {
  const ffi = cdef(fixture);
  t.is(ffi.sizeof('struct padding1'), 12);
  t.is(ffi.offsetof('struct padding1', 'b'), 4);
  t.is(ffi.offsetof('struct padding1', 'c'), 8);
  t.is(ffi.sizeof('struct padding2'), 24);
  t.is(ffi.sizeof('struct padding3'), 24);
  t.is(ffi.offsetof('struct padding3', 'd'), 8);
  t.is(ffi.offsetof('struct padding3', 'e'), 16);
  t.is(ffi.sizeof('struct only_chars'), 3);
  t.is(ffi.alignof('struct only_chars'), 1);
  t.is(ffi.sizeof('struct outer'), 40);
  t.is(ffi.offsetof('struct outer', 'in.b'), 8);
  t.is(ffi.offsetof('struct outer', 'arr[2].b'), 32);
  t.is(ffi.offsetof('struct outer', 'tail'), 36);
  t.is(ffi.sizeof('struct nested_in'), 16, 'nested tag is visible at file scope');
  t.is(ffi.sizeof('struct align_tail'), 16);
  t.is(ffi.sizeof('struct arr_of_struct_tail'), 40);
  t.is(ffi.sizeof('union u1'), 16);
  t.is(ffi.alignof('union u1'), 8);
  t.is(ffi.offsetof('union u1', 'buf'), 0);
  t.is(ffi.sizeof('union u2'), 8);
  t.is(ffi.sizeof('struct multi'), 24 + 105 + 7 + 32);
  t.is(ffi.offsetof('struct multi', 'm[1][2]'), 20);
  t.is(ffi.offsetof('struct multi', 'c[2][4][6]'), 24 + 2 * 35 + 4 * 7 + 6);
  t.is(ffi.sizeof('struct with_define'), 20 + 11 + 1);
  t.is(ffi.sizeof('struct typedef_arrays'), 36);
  t.is(ffi.sizeof(ffi.typeof('row_t')), 16);
  t.is(ffi.sizeof('point_t'), 8);
  t.is((ffi.typeof('point_t') as StructType).name, '', 'typedef of an anonymous struct stays anonymous');
});

test('anonymous struct/union members (C11) are reachable from the parent', (t) => {
  const ffi = cdef(fixture);
  const anon = ffi.typeof('struct anon') as StructType;
  t.is(anon.fields.length, 4);
  t.is(anon.fields[1]?.name, '');
  t.is(anon.fields[1]?.type.kind, 'union');
  t.is(ffi.offsetof('struct anon', 'i'), 8);
  t.is(ffi.offsetof('struct anon', 'd'), 8);
  t.is(ffi.offsetof('struct anon', 'a'), 16);
  t.is(ffi.offsetof('struct anon', 'b'), 17);
  t.is(ffi.offsetof('struct anon', 'last'), 18);
  t.is(ffi.sizeof('struct anon'), 24);
  t.is(ffi.offsetof('union anon_in_union', 'q'), 4);
  const e = t.throws(() => cdef('struct d { int a; union { int a; }; };'), { instanceOf: CDefError });
  t.regex(e?.message ?? '', /duplicate member 'a'/);
});

test('enums: values, expressions, gcc sizing', (t) => {
  const ffi = cdef(fixture);
  const lib = ffi.lib;
  t.deepEqual([lib.S0, lib.S1, lib.S2], [0, 1, 2]);
  t.deepEqual([lib.NA, lib.NB, lib.NC], [-5, -4, 100]);
  t.deepEqual([lib.BA, lib.BB], [0x80000000, 0x80000001]);
  t.deepEqual([lib.HA, lib.HB], [2 ** 32, 2 ** 32 + 1]);
  t.deepEqual([lib.E1, lib.E2, lib.E3, lib.E4, lib.E5, lib.E6, lib.E7, lib.E8, lib.E9], [8, 9, -1, 26, 65, 4, -4, 11, 1]);
  const sz = (n: string): [number, string] => {
    const e = ffi.typeof(n);
    return [e.size, e.kind === 'enum' ? e.scalar : ''];
  };
  t.deepEqual(sz('enum small'), [4, 'u32']);
  t.deepEqual(sz('enum neg'), [4, 'i32']);
  t.deepEqual(sz('enum big'), [4, 'u32']);
  t.deepEqual(sz('enum huge'), [8, 'u64']);
  t.deepEqual(sz('enum negbig'), [8, 'i64']);
  t.is(ffi.sizeof('struct with_enums'), 32);
  t.is(lib.COUNT, 5, '#define integer constants are in lib');
  t.true(Object.isFrozen(lib));
  t.is(Object.getPrototypeOf(lib), null);
  // C integer semantics: 1 << 31 is INT_MIN in gcc, so the enum is signed
  const w = cdef('enum w { W = 1 << 31, X = 0xffffffffu + 1 };');
  t.is(w.lib.W, -2147483648);
  t.is(w.lib.X, 0, 'unsigned int arithmetic wraps');
  t.is(cdef('enum q { Q = 1L << 40 };').sizeof('enum q'), 8);
  t.is(cdef('enum r { R = (unsigned char)300, R2 = (int8_t)255 };').lib.R2, -1);
});

test('typedefs, forward declarations, self reference, pointers to incomplete structs', (t) => {
  const ffi = cdef(fixture);
  const node = ffi.typeof('struct node') as StructType;
  const next = node.fields[1]?.type;
  t.is(next?.kind, 'pointer');
  t.is(next?.kind === 'pointer' ? next.target : null, node, 'typedef forward declaration resolves to the same struct');
  t.is(node.fields[2]?.type, next);
  t.is(ffi.typeof('node_t'), node);
  const opaque = ffi.typeof('struct opaque *');
  t.is(opaque.kind === 'pointer' ? opaque.target?.kind : null, 'struct');
  t.throws(() => ffi.sizeof('struct opaque'), { instanceOf: TypeError, message: /incomplete/ });
  t.is(ffi.sizeof('struct ptrs'), 8 * 7 + 8 * 3 + 8);
  // completing a forward declaration later
  const f2 = cdef('struct later; typedef struct later later_t; struct holder { later_t *p; };');
  const later = f2.typeof('struct later') as StructType;
  t.false(later.complete);
  f2.cdef('struct later { int x; };');
  t.true(later.complete);
  t.is(f2.sizeof('later_t'), 4);
  t.true(Object.isFrozen(later));
  // identical typedef redeclaration is fine; conflicting is not
  t.notThrows(() => cdef('typedef int a_t; typedef int a_t; typedef unsigned long size_t;'));
  t.throws(() => cdef('typedef int a_t; typedef long a_t;'), { instanceOf: CDefError, message: /conflicting/ });
  t.throws(() => cdef('struct r { int x; }; struct r { int x; };'), { instanceOf: CDefError, message: /redefinition/ });
  t.throws(() => cdef('struct r; union r *p;'), { instanceOf: CDefError });
});

test('comments, preprocessor lines, qualifiers, odd spacing', (t) => {
  const ffi = cdef(`
    #include <stdint.h>
    #ifndef FOO
    #  define FOO 3 /* comment */
    #endif
    #define FN(x) ((x) + 1)
    #define STR "not a number"
    // line comment with struct x { in it
    /* block
       comment */ struct /* here too */ c1 { const volatile int a; char * const restrict p; int arr[FOO]; }; // trailing
    #define LONG_MACRO 1 + \\
      2
    struct c2 { char x[LONG_MACRO]; };
  `);
  t.is(ffi.sizeof('struct c1'), 32);
  t.is(ffi.lib.FOO, 3);
  t.is(ffi.lib.LONG_MACRO, 3);
  t.false('FN' in ffi.lib);
  t.false('STR' in ffi.lib);
  t.is(ffi.sizeof('struct c2'), 3);
});

test('conditionals keep or drop lines as the C preprocessor would; what cdef cannot decide, and #pragma pack, are CDefErrors', (t) => {
  const ffi = cdef(`
    #ifndef GUARD_H
    #define GUARD_H
    #define WIDE 1
    struct rec {
      int32_t a;
    #if 0
      int64_t removed; /* a line #if 0 drops */
    #endif
    #ifdef WIDE
      int64_t wide;
    #else
      int16_t narrow;
    #endif
    #if !defined(NARROW) // comment
      char tail;
    #elif 1
      char other;
    #endif
    };
    #undef WIDE
    #ifdef WIDE
    struct dropped { int x; };
    #endif
    #pragma once
    #endif
  `);
  // gcc: { int32_t a; int64_t wide; char tail; } is 24 bytes, wide at 8, tail at 16.
  t.is(ffi.sizeof('struct rec'), 24);
  t.is(ffi.offsetof('struct rec', 'wide'), 8);
  t.is(ffi.offsetof('struct rec', 'tail'), 16);
  t.throws(() => ffi.offsetof('struct rec', 'removed'));
  t.throws(() => ffi.typeof('struct dropped'));
  errorAt(t, '#pragma pack(push, 1)\nstruct p { char c; int i; };', 1, 1, /#pragma pack\(push, 1\) changes the layout/);
  errorAt(t, 'struct s { int a; };\n#if SIZE > 4\n#endif', 2, 1, /#if SIZE > 4: a condition cdef\(\) cannot decide/);
  errorAt(t, '#ifdef X\nstruct s { int a; };', 2, 21, /#if without #endif/);
  errorAt(t, '#endif', 1, 1, /#endif without #if/);
  errorAt(t, '#else', 1, 1, /#else without #if/);
});

test('FFI.typeof/sizeof/alignof/offsetof argument handling', (t) => {
  const ffi = cdef(fixture);
  const outer = ffi.typeof('struct outer');
  t.is(ffi.typeof(outer), outer);
  t.is(ffi.sizeof(outer), 40);
  t.is(ffi.alignof('double'), 8);
  t.is(ffi.offsetof(outer, 'arr[1]'), 20);
  t.is(ffi.offsetof('struct deep', 'l1.l2.l3.d'), 8);
  t.is(ffi.offsetof('struct deep', 'l1.y'), 24);
  t.throws(() => ffi.offsetof(outer, 'nope'), { instanceOf: TypeError, code: 'ERR_INVALID_ARG_TYPE', message: /field "nope".*no member/ });
  t.throws(() => ffi.offsetof(outer, 'arr[3]'), { instanceOf: TypeError, message: /out of bounds/ });
  t.throws(() => ffi.offsetof(outer, 'c.x'), { instanceOf: TypeError });
  t.throws(() => ffi.offsetof(outer, 'in..a'), { instanceOf: TypeError });
  t.throws(() => ffi.offsetof(outer, ''), { instanceOf: TypeError });
  t.throws(() => ffi.sizeof({ kind: 'scalar', name: 'int32_t', size: 4, align: 4, scalar: 'i32' } as Type), {
    instanceOf: TypeError,
  });
  t.throws(() => ffi.cdef(5 as unknown as string), { instanceOf: TypeError, message: /source/ });
});

test('include() reuses another FFI declarations', (t) => {
  const base = cdef('typedef enum {INACTIVE, ACTIVE, DELETED} OrgUserStatus_t; struct point { int x, y; };');
  const ffi = new FFI().include(base).cdef(`
    struct org_user_t { uint64_t id; char *fullname; uint8_t fullname_len; OrgUserStatus_t status; };
    struct seg { struct point a, b; };
  `);
  t.is(ffi.sizeof('struct org_user_t'), 24);
  t.is(ffi.lib.ACTIVE, 1);
  t.is(ffi.typeof('struct point'), base.typeof('struct point'));
  t.is(ffi.sizeof('struct seg'), 16);
  t.is(ffi.include(ffi), ffi);
  t.throws(() => cdef('struct point { char c; };').include(base), { instanceOf: TypeError, message: /struct point/ });
  t.throws(() => ffi.include({} as FFI), { instanceOf: TypeError, message: /other/ });
});

test('a failed cdef() leaves the FFI unchanged', (t) => {
  const ffi = cdef('struct a { int x; };');
  t.throws(() => ffi.cdef('struct b { int y; }; enum { B1 }; struct c { int z : 2; };'), { instanceOf: CDefError });
  t.throws(() => ffi.typeof('struct b'), { instanceOf: TypeError });
  t.false('B1' in ffi.lib);
  t.notThrows(() => ffi.cdef('struct b { long y; };'));
  t.is(ffi.sizeof('struct b'), 8);
});

test('unsupported constructs are CDefErrors with line and column', (t) => {
  errorAt(t, 'struct a {\n  int x : 3;\n};', 2, 9, /bit-fields/);
  errorAt(t, 'struct a {\n  long double x;\n};', 2, 3, /long double/);
  errorAt(t, 'struct a { int n;\n  char data[];\n};', 2, 12, /flexible array/);
  errorAt(t, 'struct a { char z[0]; };', 1, 19, /zero-length/);
  errorAt(t, 'struct a {\n  void (*cb)(int);\n};', 2, 13, /function pointers/);
  errorAt(t, 'int main(void);', 1, 9, /function declarations/);
  errorAt(t, 'struct a { int x; } __attribute__((packed));', 1, 21, /__attribute__/);
  errorAt(t, 'struct __attribute__((packed)) a { int x; };', 1, 8, /__attribute__/);
  errorAt(t, 'struct a { int x __attribute__((aligned(8))); };', 1, 18, /__attribute__/);
  errorAt(t, 'struct a {\n  int n;\n  char v[n];\n};', 3, 10, /variable-length/);
  errorAt(t, 'int x;', 1, 5, /variable/);
  errorAt(t, 'static int x;', 1, 1, /static/);
  errorAt(t, 'struct a { int x; }\nstruct b { int y; };', 2, 1, /expected ';'/);
  errorAt(t, 'struct a { foo_t x; };', 1, 12, /unknown type name 'foo_t'/);
  errorAt(t, 'struct a { struct a self; };', 1, 21, /incomplete/);
  errorAt(t, 'struct a { int x; int x; };', 1, 23, /duplicate member 'x'/);
  errorAt(t, 'enum e { A, B, A };', 1, 16, /redefinition of enumerator 'A'/);
  errorAt(t, 'enum e { A = 0x7fffffff,\n  B };', 2, 3, /overflow in enumeration values/);
  errorAt(t, 'enum e { A = 0xffffffffu, B };', 1, 27, /overflow in enumeration values/);
  errorAt(t, 'enum e { A = 1 / 0 };', 1, 16, /division by zero/);
  errorAt(t, 'enum e { A = 1 << 40 };', 1, 16, /shift count/);
  errorAt(t, 'enum e { A = 1.5 };', 1, 14, /floating-point/);
  errorAt(t, 'enum e { A = 0x20000000000001 };', 1, 10, /2\^53/);
  errorAt(t, 'struct a { char s[4]; };\n  "str";', 2, 3, /string literals/);
  errorAt(t, 'struct a { int x; } @', 1, 21, /unexpected character '@'/);
  errorAt(t, '/* never closed', 1, 1, /unterminated comment/);
  errorAt(t, 'struct a { int x;', 1, 18, /expected '}'/);
  errorAt(t, 'struct a { _Atomic int x; };', 1, 12, /_Atomic/);
  errorAt(t, 'struct a { int x; }; typedef struct a b[-2];', 1, 41, /negative/);
  errorAt(t, 'struct a { double _Complex z; };', 1, 19, /_Complex/);
  errorAt(t, 'struct a { __int128 z; };', 1, 12, /__int128/);
  errorAt(t, 'struct a { char c[1ULL << 62]; };', 1, 19, /too large/);
  errorAt(t, 'struct a { int x = 3; };', 1, 18, /initializers/);
  errorAt(t, 'struct a { int; };', 1, 12, /does not declare anything/);
  errorAt(t, 'struct a { void v; };', 1, 17, /void/);
  errorAt(t, 'enum e;', 1, 6, /incomplete enums/);
  errorAt(t, 'enum e {};', 1, 9, /empty enum/);
  errorAt(t, 'typedef int (*fn)(void);', 1, 18, /function pointers/);
});

test('deep nesting and huge declarators end in CDefError, not a stack overflow', (t) => {
  t.throws(() => cdef(`enum e { A = ${'('.repeat(100_000)}1${')'.repeat(100_000)} };`), {
    instanceOf: CDefError,
    message: /nesting/,
  });
  t.throws(() => cdef(`enum e { A = ${'- '.repeat(100_000)}1 };`), { instanceOf: CDefError, message: /nesting/ });
  t.throws(() => cdef(`${'struct a { '.repeat(10_000)}`), { instanceOf: CDefError, message: /nesting/ });
  t.throws(() => cdef(`typedef int ${'*'.repeat(100_000)}p;`), { instanceOf: CDefError, message: /too complex/ });
  t.throws(() => cdef(`typedef int ${'('.repeat(100_000)}p;`), { instanceOf: CDefError, message: /nesting/ });
  t.throws(() => cdef(`typedef int p${'[2]'.repeat(1000)};`), { instanceOf: CDefError });
});

test('a cast has the cast type: sizeof sees it, values convert as in gcc, arithmetic promotes to int', (t) => {
  // gcc: sizeof((char)0) is 1, so the struct is 2 bytes (it was 5: every cast was an int)
  t.is(cdef('struct s { char buf[sizeof((char)0)]; char tail; };').sizeof('struct s'), 2);
  const size = (expr: string): number => cdef(`struct s { char a[${expr}]; };`).sizeof('struct s');
  const sizes: Array<[string, number]> = [
    ['sizeof((char)0)', 1], ['sizeof((signed char)0)', 1], ['sizeof((unsigned char)0)', 1], ['sizeof((uint8_t)0)', 1],
    ['sizeof((_Bool)5)', 1], ['sizeof((bool)5)', 1], ['sizeof((short)0)', 2], ['sizeof((uint16_t)0)', 2],
    ['sizeof((int)0)', 4], ['sizeof((unsigned)0)', 4], ['sizeof((unsigned long)0)', 8], ['sizeof((int64_t)0)', 8],
    ['sizeof((char *)0)', 8], ['sizeof((void *)1)', 8], ['sizeof((struct nowhere *)0)', 8],
    ['sizeof(((char)0))', 1],
    // the promotions: a char or short in arithmetic is an int
    ['sizeof(+(char)0)', 4], ['sizeof(-(short)0)', 4], ['sizeof(~(uint8_t)0)', 4], ['sizeof(!(char)0)', 4],
    ['sizeof((char)1 + (char)1)', 4], ['sizeof(1 ? (char)1 : (char)2)', 4], ['sizeof((char)1 << 1)', 4],
    // values convert modulo 2^bits (gcc, -fwrapv alike) and bool is 0 or 1
    ['(char)300', 44], ['(unsigned char)-1', 255], ['(short)65537 + 1', 2], ['(int8_t)200 + 100', 44],
    ['(bool)7 + (_Bool)0 + 1', 2], ['((uint16_t)-1 > 0) + 1', 2], ['((char)-1 < 0) + 1', 2],
    ['((unsigned long)-1 > 0) + 1', 2], ['(int)4294967297', 1], ['(unsigned char)(char *)300', 44],
  ];
  for (const [expr, n] of sizes) t.is(size(expr), n, expr);
  // an enum cast has the enum's type
  t.is(cdef('enum big { B = 0x100000000 }; struct s { char a[sizeof((enum big)0)]; };').sizeof('struct s'), 8);
  // a macro keeps the type of its expression
  const ffi = cdef('#define C ((char)300)\nstruct s { char a[sizeof(C)]; char b[C]; };');
  t.is(ffi.sizeof('struct s'), 45);
  t.is(ffi.lib.C, 44);
  // a pointer value is read only by sizeof: what gcc does not fold to an integer constant is an error
  errorAt(t, 'struct s { char a[(char *)8]; };', 1, 19, /pointer is not an integer constant/);
  errorAt(t, 'enum e { A = (char *)0 + 1 };', 1, 24, /pointer is not an integer constant/);
  errorAt(t, 'struct s { char a[sizeof((double)1)]; };', 1, 27, /only casts to integer and pointer types/);
});

test('enumerators have the types gcc gives them, while the enum is defined and after', (t) => {
  // 3000000000 is a long literal; once the enum is complete BIG is an unsigned int (gcc: 5)
  t.is(cdef('enum big { BIG = 3000000000 }; struct s { char tag[sizeof(BIG)]; char tail; };').sizeof('struct s'), 5);
  // 0x100000000: unsigned long, so -BIG > 0 (gcc: 3)
  t.is(cdef('enum big { BIG = 0x100000000 }; struct s { char a[(-BIG > 0) + 1]; char tail; };').sizeof('struct s'), 3);
  // an enumerator that fits in int stays an int, the others take the enum's type (gcc 12)
  const mix = cdef(`enum mix { NEG = -1, HUGE = 3000000000 };
    struct s { char neg[sizeof(NEG)]; char negative[(NEG < 0) + 1]; char huge[sizeof(HUGE)]; char hs[(-HUGE < 0) + 1]; };`);
  t.is(mix.sizeof('enum mix'), 8);
  t.is(mix.sizeof('struct s'), 4 + 2 + 8 + 2);
  // while the enum is incomplete: the value's own type, int if it fits
  const inside = cdef(`enum in { A = 3000000000, A_SIZE = sizeof(A), A_NEG = (-A > 0), C = (char)1, C_SIZE = sizeof(C) };
    struct s { char a[A_SIZE]; char n[A_NEG + 1]; char c[C_SIZE]; char after[sizeof(A)]; };`);
  t.deepEqual([inside.lib.A_SIZE, inside.lib.A_NEG, inside.lib.C_SIZE], [8, 0, 4]);
  t.is(inside.sizeof('struct s'), 8 + 1 + 4 + 4, 'after the definition A is an unsigned int, as enum in');
  t.is(inside.typeof('enum in').size, 4);
});

test('a #define of an enumerator name hides the enumerator until #undef, as the C preprocessor does', (t) => {
  const ffi = cdef('enum { N = 1 };\n#define N 4\nstruct s { char name[N]; char tail; };');
  t.is(ffi.sizeof('struct s'), 5, 'gcc: the macro wins');
  t.is(ffi.lib.N, 4);
  ffi.cdef('#undef N\nstruct back { char name[N]; char tail; };');
  t.is(ffi.sizeof('struct back'), 2, 'after #undef, N is the enumerator again');
  t.is(ffi.lib.N, 1);
  // the macro's own name in its body is not replaced again: there it is the enumerator
  t.is(cdef('enum { M = 2 };\n#define M (M * 3)\nstruct s { char a[M]; };').sizeof('struct s'), 6);
  // declaring a name that is a macro: C would have replaced it
  errorAt(t, '#define N 4\nenum { N = 1 };', 2, 8, /enumerator 'N' is a macro \(4\) here/);
  errorAt(t, '#define E\nenum e { A, E };', 2, 13, /enumerator 'E' is a macro here/);
  errorAt(t, '#define x 4\nstruct s { int x; };', 2, 16, /member 'x' is a macro \(4\)/);
  errorAt(t, '#define T 4\ntypedef int T;', 2, 13, /name 'T' is a macro \(4\) here/);
  errorAt(t, '#define tag 1\nstruct tag { int a; };', 2, 8, /tag 'tag' is a macro/);
  errorAt(t, 'typedef int T;\n#define T 4\nstruct s { T x; };', 3, 12, /'T', a macro \(4\) here/);
  t.is(cdef('typedef int T;\n#define T 4\nstruct s { char a[sizeof(T) + T]; };').sizeof('struct s'), 8, 'sizeof(4) + 4');
  // a macro cdef() cannot evaluate is still a macro: using its name is an error, not the enumerator
  errorAt(t, 'enum { V = 1 };\n#define V "text"\nstruct s { char a[V]; };', 3, 19, /'V' is a macro cdef\(\) cannot evaluate/);
  t.false('V' in cdef('enum { V = 1 };\n#define V "text"').lib);
});

test('#undef removes the macro: its name is unknown afterwards, in later cdef() calls and over include()', (t) => {
  errorAt(t, '#define N 4\n#undef N\nstruct s { char name[N]; char tail; };', 3, 22, /'N' is not an integer constant/);
  const ffi = cdef('#define N 4\n#define KEEP 2');
  ffi.cdef('#undef N');
  t.false('N' in ffi.lib);
  t.is(ffi.lib.KEEP, 2);
  t.throws(() => ffi.cdef('struct s { char name[N]; };'), { instanceOf: CDefError, message: /'N'/ });
  t.notThrows(() => ffi.cdef('#define N 8\nstruct s { char name[N]; };'));
  t.is(ffi.sizeof('struct s'), 8);
  // a macro from an include()d FFI: #undef removes it here, not there
  const base = cdef('#define M 4');
  const user = new FFI().include(base).cdef('#undef M');
  t.false('M' in user.lib);
  t.throws(() => user.cdef('struct s { char a[M]; };'), { instanceOf: CDefError, message: /'M'/ });
  t.is(base.lib.M, 4);
  // a failed cdef() leaves its FFI unchanged, #undef included
  const kept = cdef('#define K 3');
  t.throws(() => kept.cdef('#undef K\nstruct bad { int x : 1; };'), { instanceOf: CDefError, message: /bit-fields/ });
  t.is(kept.lib.K, 3);
  kept.cdef('#ifdef K\nstruct k { char a[K]; };\n#endif');
  t.is(kept.sizeof('struct k'), 3);
});

test('#ifdef, #ifndef and defined see the macros of earlier cdef() calls and of include()d FFIs', (t) => {
  const decl = `struct s {
    char tag;
  #ifdef HAVE_EXTRA
    double extra;
  #endif
  #if !defined(NO_TAIL)
    char tail;
  #endif
  };`;
  // gcc, with the declarations in one translation unit: sizeof 24, tail at 16
  const crossCall = cdef('#define HAVE_EXTRA 1\n#define FLAG');
  crossCall.cdef(decl);
  t.is(crossCall.sizeof('struct s'), 24);
  t.is(crossCall.offsetof('struct s', 'tail'), 16);
  const config = cdef('#define HAVE_EXTRA\n#define NO_TAIL 1');
  const included = new FFI().include(config).cdef(decl);
  t.is(included.sizeof('struct s'), 16, 'HAVE_EXTRA (no value) and NO_TAIL come from the include');
  t.throws(() => included.offsetof('struct s', 'tail'));
  // in source order: an #undef of an earlier call's macro, then #ifndef, in one call
  const ordered = cdef('#define FLAG');
  ordered.cdef('#ifdef FLAG\nstruct before { int a; };\n#endif\n#undef FLAG\n#ifndef FLAG\nstruct after { int a; };\n#endif');
  t.notThrows(() => ordered.typeof('struct before'));
  t.notThrows(() => ordered.typeof('struct after'));
  ordered.cdef('#ifdef FLAG\nstruct gone { int a; };\n#endif');
  t.throws(() => ordered.typeof('struct gone'), { instanceOf: TypeError });
  // function-like macros are defined too
  const fn = cdef('#define MAX(a, b) ((a) > (b) ? (a) : (b))');
  t.notThrows(() => fn.cdef('#ifndef MAX\n#error MAX is not defined\nstruct broken;\n#endif\nstruct ok { int a; };'));
  t.throws(() => fn.typeof('struct broken'), { instanceOf: TypeError });
  // include() of an FFI defining the same macro differently is refused
  t.throws(() => cdef('#define W 1').include(cdef('#define W 2')), { instanceOf: TypeError, message: /macro 'W'/ });
  t.notThrows(() => cdef('#define GUARD_H\n#define W 1').include(cdef('#define GUARD_H\n#define W 1')));
});

test('a macro whose body used a name that changed since is a CDefError where it is used, not a stale value', (t) => {
  const stale = (source: string, line: number, column: number, why: RegExp): void => {
    const e = t.throws(() => cdef(source), { instanceOf: CDefError });
    if (e === undefined) return;
    t.is(e.line, line, source);
    t.is(e.column, column, source);
    t.regex(e.message, why);
    t.regex(e.message, /cc -E -P/);
  };
  // gcc: 10, 4, 8, and an error (A undeclared)
  stale('#define A 3\n#define B (A*2)\n#undef A\n#define A 5\nstruct s { char b[B]; };', 5, 19, /'B' was evaluated .* when A was 3; A is 5 now/);
  stale('#define A 3\n#define B A\n#undef A\n#define A 4\nstruct s { char b[B]; };', 5, 19, /A is 4 now/);
  stale('#define A 3\n#define B (A*2)\n#undef A\nenum { A = 4 };\nstruct s { char b[B]; };', 5, 19, /A is 4 now/);
  stale('#define A 3\n#define B (A*2)\n#undef A\nstruct s { char b[B]; };', 4, 19, /A is no longer defined/);
  // dependencies of dependencies
  stale('#define A 3\n#define B (A*2)\n#define C (B+1)\n#undef A\n#define A 5\nstruct s { char b[C]; };', 6, 19, /'C' .* A is 5 now/);
  // an enumerator the body used, hidden by a macro since
  stale('enum { X = 2 };\n#define Y X\n#define X 7\nstruct s { char b[Y]; };', 4, 19, /'Y' .* X was 2; X is 7 now/);
  // across cdef() calls of one FFI
  const f = cdef('#define A 3\n#define B (A*2)');
  const e = t.throws(() => f.cdef('#undef A\n#define A 5\nstruct s { char b[B]; };'), { instanceOf: CDefError });
  t.is(e?.line, 3);
  t.false('s' in f.lib);
  t.is(f.lib.B, 6, 'the failed cdef() left the FFI unchanged');
  // through include()
  const g = new FFI();
  g.include(cdef('#define A 3\n#define B (A*2)'));
  t.throws(() => g.cdef('#undef A\n#define A 5\nstruct s { char b[B]; };'), { instanceOf: CDefError, message: /A is 5 now/ });
  // lib leaves out a stale macro
  const h = cdef('#define A 3\n#define B (A*2)\n#undef A');
  t.false('B' in h.lib);
});

test('a failed cdef() that made a stale macro fresh again in its own layer leaves it stale', (t) => {
  const f = cdef('#define A 3\n#define B (A*2)\n#undef A\n#define A 5');
  // In this layer A is 3 again, so B is fresh here; then the layer fails and is dropped.
  t.throws(() => f.cdef('#undef A\n#define A 3\nstruct ok { char b[B]; };\nstruct bad { int x[-1]; };'), { instanceOf: CDefError });
  t.throws(() => f.cdef('struct s { char b[B]; };'), { instanceOf: CDefError, message: /'B' was evaluated .* when A was 3; A is 5 now/ });
});

test('a chain of 20,000 #defines, each using the last, costs linear time and memory (it took O(n²) and aborted Node out of memory); a change at its start still makes its end stale', (t) => {
  // In a child with a small heap: were the cost quadratic again, the child would die of
  // it (as Node 20 did at 16,000 with 512 MiB), not this process or the machine.
  const n = 20_000;
  const script = `
    const { cdef } = require(${JSON.stringify(resolve('dist/index.js'))});
    const src = ['#define A0 1', ...Array.from({ length: ${n} }, (_, i) => '#define A' + (i + 1) + ' (A' + i + ' + 0)'), 'struct s { char c[A${n}]; };'].join('\\n');
    const ffi = cdef(src);
    let stale = 'none';
    try { ffi.cdef('#undef A0\\n#define A0 2\\nstruct t { char c[A${n}]; };'); } catch (e) { stale = e.message; }
    console.log(JSON.stringify({ size: ffi.sizeof('struct s'), value: ffi.lib.A${n}, stale }));
  `;
  const r = spawnSync(process.execPath, ['--max-old-space-size=128', '-e', script], { encoding: 'utf8', timeout: 120_000 });
  t.is(r.status, 0, r.stderr.slice(-2000));
  const out = JSON.parse(r.stdout) as { size: number; value: number; stale: string };
  t.is(out.size, 1);
  t.is(out.value, 1);
  t.regex(out.stale, new RegExp(`'A${n}' was evaluated .* when A0 was 1; A0 is 2 now`));
});

test('a macro whose dependencies still mean the same keeps its value (self-reference, same redefinition)', (t) => {
  t.is(cdef('#define A 3\n#define B (A*2)\n#undef A\n#define A 3\nstruct s { char b[B]; };').sizeof('struct s'), 6);
  t.is(cdef('enum { X = 2 };\n#define X (X+1)\nstruct s { char b[X]; };').sizeof('struct s'), 3);
  t.is(cdef('#define A 3\n#define B (A*2)\n#define A2 A\nstruct s { char b[B]; };').sizeof('struct s'), 6);
});
