// Robustness: whatever text reaches cdef() or the type-name parsers, the only
// possible failures are CDefError (cdef) and TypeError (type names), and every
// call returns quickly.
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';

import test from 'ava';
import fc from 'fast-check';

import { CDefError, cdef, parseAllocationTypeName, parseTypeName } from '../lib/types/index.js';

const fixture = readFileSync(resolve('__test__/fixtures/types-layout.h'), 'utf8');
const README = `typedef enum {INACTIVE, ACTIVE, DELETED} OrgUserStatus_t;
struct org_user_t { uint64_t id; char *fullname; uint8_t fullname_len; OrgUserStatus_t status; };`;
const scope = cdef(fixture);

/** Slowest single call seen, in ms (reported and bounded). */
let slowest = 0;

function timed<T>(fn: () => T): T {
  const t0 = performance.now();
  try {
    return fn();
  } finally {
    slowest = Math.max(slowest, performance.now() - t0);
  }
}

function cdefOnlyThrowsCDefError(src: string): void {
  try {
    timed(() => cdef(src));
  } catch (e) {
    if (!(e instanceof CDefError)) {
      throw new Error(`cdef(${JSON.stringify(src.slice(0, 300))}) threw ${String(e)}`, { cause: e });
    }
    if (!(e.line >= 1 && e.column >= 1 && e.message.includes(`line ${e.line}, column ${e.column}`))) {
      throw new Error(`bad position in ${e.message}`, { cause: e });
    }
  }
}

function typeNameOnlyThrowsTypeError(src: string): void {
  for (const f of [() => parseTypeName(src), () => parseAllocationTypeName(src), () => scope.typeof(src), () => scope.sizeof(src)]) {
    try {
      timed<unknown>(f);
    } catch (e) {
      if (!(e instanceof TypeError)) {
        throw new Error(`type name ${JSON.stringify(src.slice(0, 300))} threw ${String(e)}`, { cause: e });
      }
    }
  }
}

const TOKENS = [
  'struct', 'union', 'enum', 'typedef', 'int', 'char', 'short', 'long', 'unsigned', 'signed', 'float', 'double',
  'void', 'bool', '_Bool', 'const', 'volatile', 'static', 'extern', 'sizeof', '_Alignof', 'int8_t', 'uint64_t',
  'size_t', 'OrgUserStatus_t', 'point_t', '__attribute__', '__proto__', 'constructor', 'x', 'y', 'foo', 'N', 'A', 'B',
  'COUNT', 'S1', '{', '}', '[', ']', '(', ')', ';', ',', '*', '=', ':', '?', '.', '...', '->', '+', '-', '~', '!',
  '<<', '>>', '|', '&', '^', '/', '%', '&&', '||', '==', '<', '>', '0', '1', '2', '-1', '8', '0x10', '0777', '1u',
  '1ULL', '2147483647', '2147483648', '4294967296', '18446744073709551615', '99999999999999999999999', '1.5', '1e3',
  "'a'", "'\\n'", "'\\x41'", "'", '"s"', '#define', '#define N', '#include <x.h>', '#', '\\', '\n', '\r\n', '\t',
  '/*', '*/', '//', '@', '$', '`', 'é', '\u0000', '\u2028',
];

test('fuzz: random strings', (t) => {
  fc.assert(
    fc.property(fc.string({ maxLength: 120, unit: 'binary' }), (s) => {
      cdefOnlyThrowsCDefError(s);
      typeNameOnlyThrowsTypeError(s);
    }),
    { numRuns: 1000 },
  );
  fc.assert(
    fc.property(fc.string({ maxLength: 80, unit: fc.constantFrom(...'{}[]();,*=:?<>+-~!|&^/%.#\'"\\ \n\tabcxyz019_') }), (s) => {
      cdefOnlyThrowsCDefError(s);
      typeNameOnlyThrowsTypeError(s);
    }),
    { numRuns: 1000 },
  );
  t.pass();
});

test('fuzz: token soups from a C-ish alphabet', (t) => {
  const soup = fc.array(fc.constantFrom(...TOKENS), { maxLength: 40 }).map((a) => a.join(' '));
  fc.assert(
    fc.property(soup, (s) => {
      cdefOnlyThrowsCDefError(s);
      typeNameOnlyThrowsTypeError(s);
    }),
    { numRuns: 1500 },
  );
  // soups spliced into a valid declaration
  fc.assert(
    fc.property(soup, fc.nat(README.length), (s, at) => {
      cdefOnlyThrowsCDefError(README.slice(0, at) + s + README.slice(at));
    }),
    { numRuns: 600 },
  );
  t.pass();
});

test('fuzz: every truncation of valid declarations', (t) => {
  let n = 0;
  for (const src of [README, fixture]) {
    for (let i = 0; i <= src.length; i++) {
      cdefOnlyThrowsCDefError(src.slice(0, i));
      n++;
      if (i % 5 === 0) {
        cdefOnlyThrowsCDefError(src.slice(i));
        n++;
      }
    }
  }
  const names = ['unsigned long long int', 'struct org_user_t *', 'int (*)[3]', 'char[13][2]', 'const char * const *'];
  for (const name of names) {
    for (let i = 0; i <= name.length; i++) {
      typeNameOnlyThrowsTypeError(name.slice(0, i));
      n++;
    }
  }
  t.true(n > 3000, String(n));
  t.log(`${n} truncations parsed`);
});

test('fuzz: single-character mutations of valid declarations', (t) => {
  const alphabet = '{}[]();,*=:<>+-~!|&^/.#\'"\\ \nax0_';
  fc.assert(
    fc.property(fc.nat(fixture.length - 1), fc.constantFrom(...alphabet), fc.constantFrom('replace', 'insert', 'delete'), (i, c, op) => {
      const s =
        op === 'replace' ? fixture.slice(0, i) + c + fixture.slice(i + 1)
        : op === 'insert' ? fixture.slice(0, i) + c + fixture.slice(i)
        : fixture.slice(0, i) + fixture.slice(i + 1);
      cdefOnlyThrowsCDefError(s);
    }),
    { numRuns: 400 },
  );
  t.pass();
});

test('no call was slow (no hangs, no quadratic blow-up)', (t) => {
  // runs after the fuzz tests in this file (ava runs tests of a file concurrently
  // but each is synchronous, so they have all finished by the time this starts)
  const big = `struct big { ${Array.from({ length: 5000 }, (_, i) => `int f${i};`).join(' ')} };`;
  timed(() => cdef(big));
  t.true(slowest < 1000, `slowest call took ${slowest.toFixed(1)} ms`);
  t.log(`slowest single call: ${slowest.toFixed(1)} ms`);
});
