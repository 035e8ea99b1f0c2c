/**
 * Recursive-descent parser for the C declaration subset of `cdef()` and for
 * type names (`'struct foo *'`, `'int32_t[2][3]'`).
 *
 * Every loop consumes a token or throws, and all recursion goes through a
 * depth counter, so any input ends in a result or a {@link CDefError}.
 *
 * @module
 */
import { CDefError } from './cdef-error.js';
import type { Token } from './lexer.js';
import {
  type CConstant,
  type CIntType,
  type CValueType,
  type MacroDep,
  type MacroValue,
  OPAQUE,
  staleDep,
  Scope,
  type TaggedType,
  type TypeOrVoid,
  VOID,
} from './scope.js';
import {
  type EnumBase,
  type EnumType,
  type MemberDecl,
  type StructType,
  arrayOf,
  boolean,
  char,
  completeStruct,
  float32,
  float64,
  formatType,
  incompleteStruct,
  int16,
  int32,
  int64,
  int8,
  isComplete,
  makeEnum,
  memberNames,
  pointerTo,
  type ScalarKind,
  uint16,
  uint32,
  uint64,
  uint8,
} from './type.js';

/** Maximum nesting of braces, parentheses and declarators. */
export const MAX_DEPTH = 64;
/** Maximum number of pointer/array derivations in one declarator. */
export const MAX_DERIVATIONS = 64;

const QUALIFIERS = new Set([
  'const', 'volatile', 'restrict', '__const', '__const__', '__volatile', '__volatile__',
  '__restrict', '__restrict__',
]);
const STORAGE = new Set(['extern', 'static', 'register', 'auto', '_Thread_local', 'thread_local']);
const UNSUPPORTED = new Set([
  '__attribute__', '__attribute', '__declspec', '_Alignas', 'alignas', '_Atomic', '__extension__',
  '__asm__', '__asm', 'asm', '_Noreturn', 'inline', '__inline', '__inline__', '_Static_assert',
  'static_assert', '__int128', '__int128_t', '__uint128_t', '_Complex', '__complex__', '_Imaginary',
  '__typeof__', '__typeof', 'typeof', 'typeof_unqual', '_BitInt', '__auto_type', '_Float16', '_Float32',
  '_Float64', '_Float128', '__float128', '__fp16', '_Decimal32', '_Decimal64', '_Decimal128',
  '_Generic', '__builtin_va_list', 'constexpr', 'nullptr', '__label__',
]);
const BASIC = new Set([
  'void', 'char', 'short', 'int', 'long', 'float', 'double', 'signed', 'unsigned', '_Bool', 'bool',
  '__signed', '__signed__', '__unsigned',
]);
const KEYWORDS = new Set([
  ...QUALIFIERS, ...STORAGE, ...UNSUPPORTED, ...BASIC,
  'typedef', 'struct', 'union', 'enum', 'sizeof', '_Alignof', 'alignof', '__alignof__', '__alignof',
  'break', 'case', 'continue', 'default', 'do', 'else', 'for', 'goto', 'if', 'return', 'switch',
  'while', 'true', 'false',
]);
const SIZEOF_WORDS = new Set(['sizeof', '_Alignof', 'alignof', '__alignof__', '__alignof']);

const BINARY_PRECEDENCE: Readonly<Record<string, number>> = {
  '*': 10, '/': 10, '%': 10,
  '+': 9, '-': 9,
  '<<': 8, '>>': 8,
  '<': 7, '>': 7, '<=': 7, '>=': 7,
  '==': 6, '!=': 6,
  '&': 5,
  '^': 4,
  '|': 3,
  '&&': 2,
  '||': 1,
};

const INT_BITS: Readonly<Record<CIntType, number>> = { int: 32, uint: 32, long: 64, ulong: 64 };
const isUnsigned = (t: CIntType): boolean => t === 'uint' || t === 'ulong';

/** `sizeof` an expression of each value type (LP64). */
const VALUE_SIZE: Readonly<Record<CValueType, number>> = {
  bool: 1, schar: 1, uchar: 1, short: 2, ushort: 2, int: 4, uint: 4, long: 8, ulong: 8, ptr: 8,
};
const UNSIGNED_VALUE = new Set<CValueType>(['bool', 'uchar', 'ushort', 'uint', 'ulong', 'ptr']);

/** The value type of a cast to a scalar (`char` is signed, as on x86-64). */
const SCALAR_VALUE_TYPE: Readonly<Partial<Record<ScalarKind, CValueType>>> = {
  bool: 'bool', i8: 'schar', u8: 'uchar', i16: 'short', u16: 'ushort', i32: 'int', u32: 'uint', i64: 'long', u64: 'ulong',
};

/** The integer type of an enum's values (gcc: an enum is its underlying integer type). */
const ENUM_VALUE_TYPE: Readonly<Record<EnumBase, CIntType>> = { i32: 'int', u32: 'uint', i64: 'long', u64: 'ulong' };

/**
 * Converts `v` to the C type `t` as gcc does: modulo 2^bits (two's complement, also for
 * the signed types), and `bool` is 1 for any non-zero value.
 */
export function wrapInt(v: bigint, t: CValueType): bigint {
  if (t === 'bool') return v !== 0n ? 1n : 0n;
  const bits = VALUE_SIZE[t] * 8;
  return UNSIGNED_VALUE.has(t) ? BigInt.asUintN(bits, v) : BigInt.asIntN(bits, v);
}

function fits(v: bigint, t: CIntType): boolean {
  return wrapInt(v, t) === v;
}

/** A constant after the integer promotions. */
interface CInt extends CConstant {
  readonly type: CIntType;
}

/** The usual arithmetic conversions between two C integer types (LP64). */
function commonType(a: CIntType, b: CIntType): CIntType {
  if (a === b) return a;
  const ra = INT_BITS[a];
  const rb = INT_BITS[b];
  if (isUnsigned(a) === isUnsigned(b)) return ra >= rb ? a : b;
  const [u, s, ru, rs] = isUnsigned(a) ? [a, b, ra, rb] : [b, a, rb, ra];
  if (ru >= rs) return u;
  return s; // long can represent every unsigned int
}

const konst = (value: bigint, type: CValueType): CConstant => ({ value: wrapInt(value, type), type });
const truth = (b: boolean): CInt => ({ value: b ? 1n : 0n, type: 'int' });

/** Result of parsing declaration specifiers. */
interface Spec {
  base: TypeOrVoid;
  isTypedef: boolean;
  /** A struct/union/enum specifier appeared (declaration of a tag). */
  tagged: boolean;
  /** A struct/union was defined in place without a tag (candidate anonymous member). */
  anonymousAggregate: boolean;
  first: Token;
}

type DeclOp = { readonly op: 'ptr' } | { readonly op: 'array'; readonly length: number; readonly tok: Token };

interface Declarator {
  name: string | null;
  tok: Token;
  ops: DeclOp[];
}

type Context = 'top' | 'member' | 'typename';

/**
 * Parses a token list against a scope. In `cdef` mode (`defining`), new
 * declarations are written to `scope` (use a staging layer); otherwise the
 * scope is only read.
 */
export class Parser {
  private readonly toks: readonly Token[];
  private i = 0;
  private depth = 0;
  private readonly scope: Scope;
  private readonly defining: boolean;
  /** While evaluating a macro's body: the names it uses (see {@link MacroDep}). */
  private deps: Map<string, MacroDep> | null = null;
  /** While evaluating a macro's body: its name. */
  private macroName: string | null = null;

  /**
   * @param toks tokens ending with an `eof` token
   * @param scope scope to resolve names in (and to declare into when `defining`)
   * @param defining true for `cdef()` sources, false for type names
   */
  constructor(toks: readonly Token[], scope: Scope, defining: boolean) {
    this.toks = toks;
    this.scope = scope;
    this.defining = defining;
    this.skipDirectives();
  }

  /** `#define` and `#undef` lines take effect where they appear, whatever is being parsed. */
  private skipDirectives(): void {
    for (;;) {
      const t = this.toks[this.i];
      if (t === undefined || (t.kind !== 'define' && t.kind !== 'undef')) return;
      this.i++;
      if (!this.defining) continue;
      if (t.kind === 'define') this.scope.define(t.text, this.macroValue(t));
      else this.scope.undefine(t.text);
    }
  }

  // -------------------------------------------------------------------------
  // token helpers

  private peek(k = 0): Token {
    const last = this.toks.length - 1;
    return this.toks[Math.min(this.i + k, last)] as Token;
  }

  private next(): Token {
    const t = this.peek();
    if (this.i < this.toks.length - 1) {
      this.i++;
      this.skipDirectives();
    }
    return t;
  }

  private isPunct(p: string, k = 0): boolean {
    const t = this.peek(k);
    return t.kind === 'punct' && t.text === p;
  }

  private fail(msg: string, tok: Token = this.peek()): never {
    throw new CDefError(msg, tok.line, tok.column);
  }

  private static show(t: Token): string {
    if (t.kind === 'eof') return 'end of input';
    if (t.kind === 'define') return '#define';
    if (t.kind === 'undef') return '#undef';
    return `'${t.text}'`;
  }

  private unsupportedCheck(t: Token): void {
    if (t.kind === 'ident' && UNSUPPORTED.has(t.text)) this.fail(`'${t.text}' is not supported`, t);
    if (t.kind === 'ident' && STORAGE.has(t.text)) this.fail(`storage class '${t.text}' is not supported`, t);
    if (t.kind === 'punct' && t.text === '...') this.fail('variadic parameters are not supported', t);
  }

  private expect(p: string, what?: string): Token {
    const t = this.peek();
    if (t.kind === 'punct' && t.text === p) return this.next();
    this.unsupportedCheck(t);
    if (p === ';' && t.kind === 'punct' && t.text === ':') this.fail('bit-fields are not supported', t);
    if (p === ';' && t.kind === 'punct' && t.text === '=') this.fail('initializers are not supported', t);
    this.fail(`expected ${what ?? `'${p}'`} but found ${Parser.show(t)}`, t);
  }

  private enter(tok: Token): void {
    if (++this.depth > MAX_DEPTH) this.fail(`nesting deeper than ${MAX_DEPTH} levels`, tok);
  }

  private leave(): void {
    this.depth--;
  }

  private identifierLike(t: Token): boolean {
    return t.kind === 'ident' && !KEYWORDS.has(t.text);
  }

  // -------------------------------------------------------------------------
  // entry points

  /** Parses a whole `cdef()` source into the scope. */
  parseTranslationUnit(): void {
    for (;;) {
      const t = this.peek();
      if (t.kind === 'eof') return;
      if (this.isPunct(';')) {
        this.next();
      } else {
        this.parseDeclaration();
      }
    }
  }

  /** Parses a complete type name (specifiers + abstract declarator). */
  parseTypeNameOnly(): TypeOrVoid {
    const t = this.parseTypeName();
    const end = this.peek();
    if (end.kind !== 'eof') {
      this.unsupportedCheck(end);
      if (end.kind === 'punct' && end.text === '(') this.fail('function types are not supported', end);
      this.fail(`unexpected ${Parser.show(end)} in type name`, end);
    }
    return t;
  }

  /** Parses a complete integer constant expression. */
  parseConstantOnly(): CConstant {
    const c = this.parseConditional(true);
    const end = this.peek();
    if (end.kind !== 'eof') this.fail(`unexpected ${Parser.show(end)} after expression`, end);
    return c;
  }

  // -------------------------------------------------------------------------
  // declarations

  /**
   * The value of `#define` `tok`: its body as an integer constant expression, evaluated
   * now (names in it mean what they mean here); OPAQUE when it is not one, or names a
   * keyword (cdef() reads keywords as keywords).
   */
  private macroValue(tok: Token): MacroValue {
    if (tok.body === undefined || KEYWORDS.has(tok.text)) return OPAQUE;
    // A scratch layer: evaluating declares nothing, and the macro's own name in its body
    // is not replaced again (C), so there it means the enumerator or nothing.
    const sub = new Scope(this.scope);
    sub.undefine(tok.text);
    try {
      const p = new Parser(tok.body, sub, true);
      const deps = new Map<string, MacroDep>();
      p.deps = deps;
      p.macroName = tok.text;
      const c = p.parseConstantOnly();
      return { value: c.value, type: c.type, deps };
    } catch (e) {
      if (!(e instanceof CDefError)) throw e;
      return OPAQUE;
    }
  }

  /**
   * Fails if the name `tok` declares is a macro here: C replaces it before parsing, so the
   * declaration would not declare that name (or not parse).
   */
  private notAMacro(tok: Token, what: string): void {
    const m = this.scope.macro(tok.text);
    if (m === undefined) return;
    const shown = m === OPAQUE ? 'a macro' : `a macro (${m.value})`;
    this.fail(`${what} '${tok.text}' is ${shown} here, which C replaces before parsing: #undef it first`, tok);
  }

  private parseDeclaration(): void {
    const spec = this.parseSpecifiers('top');
    if (this.isPunct(';')) {
      this.next();
      if (!spec.tagged) this.fail('declaration does not declare anything', spec.first);
      return;
    }
    for (;;) {
      const d = this.parseDeclarator('named', 'top');
      const name = d.name as string;
      if (!spec.isTypedef) {
        this.fail(`declaring variable '${name}' is not supported: cdef() declares types only`, d.tok);
      }
      const type = this.apply(spec.base, d.ops);
      this.declareTypedef(name, type, d.tok);
      if (this.isPunct(',')) {
        this.next();
        continue;
      }
      break;
    }
    this.expect(';');
  }

  private declareTypedef(name: string, type: TypeOrVoid, tok: Token): void {
    const prev = this.scope.ownTypedef(name);
    if (prev !== undefined && prev !== type) this.fail(`conflicting types for typedef '${name}'`, tok);
    if (this.scope.constant(name) !== undefined) {
      this.fail(`'${name}' redeclared as a different kind of symbol`, tok);
    }
    this.scope.typedefs.set(name, type);
  }

  private parseSpecifiers(ctx: Context): Spec {
    const first = this.peek();
    let isTypedef = false;
    let named: TypeOrVoid | null = null;
    let tagged = false;
    let anonymousAggregate = false;
    const counts = new Map<string, number>();
    let basicCount = 0;
    for (;;) {
      const t = this.peek();
      if (t.kind !== 'ident') {
        this.unsupportedCheck(t);
        break;
      }
      const w = t.text;
      if (QUALIFIERS.has(w)) {
        this.next();
        continue;
      }
      if (w === 'typedef') {
        if (ctx !== 'top') this.fail("'typedef' is not allowed here", t);
        if (isTypedef) this.fail("duplicate 'typedef'", t);
        isTypedef = true;
        this.next();
        continue;
      }
      this.unsupportedCheck(t);
      if (BASIC.has(w)) {
        if (named !== null) this.fail(`two or more data types in declaration specifiers`, t);
        const key = w === '_Bool' ? 'bool' : w.startsWith('__') ? w.replace(/_/g, '') : w;
        counts.set(key, (counts.get(key) ?? 0) + 1);
        basicCount++;
        this.next();
        continue;
      }
      if (w === 'struct' || w === 'union' || w === 'enum') {
        if (tagged) this.fail(`expected ';' before '${w}'`, t);
        if (named !== null || basicCount > 0) this.fail('two or more data types in declaration specifiers', t);
        const r = this.parseTagged(ctx);
        named = r.type;
        tagged = true;
        anonymousAggregate = r.anonymous;
        continue;
      }
      if (named === null && basicCount === 0) {
        const td = this.typedefName(w);
        if (td !== undefined) {
          named = td;
          this.next();
          continue;
        }
        if (KEYWORDS.has(w)) this.fail(`expected a type but found '${w}'`, t);
        const m = this.scope.macro(w);
        if (m !== undefined && m !== OPAQUE) this.fail(`expected a type but found '${w}', a macro (${m.value}) here`, t);
        this.fail(`unknown type name '${w}'`, t);
      }
      break;
    }
    let base: TypeOrVoid;
    if (named !== null) base = named;
    else if (basicCount === 0) {
      this.fail(`expected a type but found ${Parser.show(this.peek())}`, this.peek());
    } else {
      base = this.combineBasic(counts, first);
    }
    return { base, isTypedef, tagged, anonymousAggregate, first };
  }

  private combineBasic(c: Map<string, number>, at: Token): TypeOrVoid {
    const n = (k: string): number => c.get(k) ?? 0;
    for (const [k, v] of c) {
      if (v > 1 && k !== 'long') this.fail(`duplicate '${k}'`, at);
    }
    const sign = n('signed') + n('unsigned');
    if (n('signed') && n('unsigned')) this.fail("both 'signed' and 'unsigned' in declaration specifiers", at);
    const lng = n('long');
    if (lng > 2) this.fail("'long long long' is too long", at);
    const only = (...allowed: string[]): boolean => [...c.keys()].every((k) => allowed.includes(k));
    if (n('void')) {
      if (c.size === 1) return VOID;
    } else if (n('bool')) {
      if (c.size === 1) return boolean;
    } else if (n('float')) {
      if (c.size === 1) return float32;
    } else if (n('double')) {
      if (lng === 1 && c.size === 2) this.fail("'long double' is not supported", at);
      if (c.size === 1) return float64;
    } else if (n('char')) {
      if (only('char', 'signed', 'unsigned')) return n('unsigned') ? uint8 : n('signed') ? int8 : char;
    } else if (n('short')) {
      if (only('short', 'int', 'signed', 'unsigned')) return n('unsigned') ? uint16 : int16;
    } else if (lng > 0) {
      if (only('long', 'int', 'signed', 'unsigned')) return n('unsigned') ? uint64 : int64;
    } else if (n('int') || sign) {
      if (only('int', 'signed', 'unsigned')) return n('unsigned') ? uint32 : int32;
    }
    this.fail(`invalid combination of type specifiers '${[...c.keys()].join(' ')}'`, at);
  }

  private parseTagged(ctx: Context): { type: TypeOrVoid; anonymous: boolean } {
    const kw = this.next();
    const kind = kw.text as 'struct' | 'union' | 'enum';
    this.unsupportedCheck(this.peek());
    let tagTok: Token | null = null;
    if (this.peek().kind === 'ident') {
      if (!this.identifierLike(this.peek())) this.fail(`expected a tag name after '${kind}'`);
      tagTok = this.next();
      this.notAMacro(tagTok, 'tag');
    }
    const hasBody = this.isPunct('{');
    if (tagTok === null && !hasBody) this.fail(`expected a tag name or '{' after '${kind}'`);
    if (hasBody && (ctx === 'typename' || !this.defining)) {
      this.fail(`${kind} definitions are not allowed in a type name`);
    }
    const tag = tagTok?.text ?? '';
    if (kind === 'enum') {
      if (hasBody) {
        const e = this.parseEnumBody(tag, kw);
        if (tagTok !== null) {
          if (this.scope.tag(tag) !== undefined) this.fail(`redefinition of '${kind} ${tag}'`, tagTok);
          this.scope.tags.set(tag, e);
        }
        return { type: e, anonymous: false };
      }
      const e = this.scope.tag(tag);
      if (e === undefined) this.fail(`unknown enum '${tag}' (incomplete enums are not supported)`, tagTok ?? kw);
      if (e.kind !== 'enum') this.fail(`'${tag}' defined as wrong kind of tag`, tagTok ?? kw);
      return { type: e, anonymous: false };
    }
    let s: StructType;
    if (tagTok !== null) {
      const existing: TaggedType | undefined = this.scope.tag(tag);
      if (existing !== undefined) {
        if (existing.kind !== kind) this.fail(`'${tag}' defined as wrong kind of tag`, tagTok);
        s = existing as StructType;
        if (hasBody && s.complete) this.fail(`redefinition of '${kind} ${tag}'`, tagTok);
      } else {
        if (!this.defining) this.fail(`unknown ${kind} '${tag}'`, tagTok);
        s = incompleteStruct(kind, tag);
        this.scope.tags.set(tag, s);
      }
    } else {
      s = incompleteStruct(kind, '');
    }
    if (hasBody) this.parseStructBody(s, kw);
    return { type: s, anonymous: hasBody && tagTok === null };
  }

  private parseStructBody(s: StructType, kw: Token): void {
    const open = this.expect('{');
    this.enter(open);
    const members: MemberDecl[] = [];
    const names = new Set<string>();
    const addName = (n: string, tok: Token): void => {
      if (names.has(n)) this.fail(`duplicate member '${n}'`, tok);
      names.add(n);
    };
    while (!this.isPunct('}')) {
      const t = this.peek();
      if (t.kind === 'eof') this.fail("expected '}' but found end of input", t);
      const spec = this.parseSpecifiers('member');
      if (this.isPunct(';')) {
        this.next();
        if (spec.anonymousAggregate) {
          const inner = spec.base as StructType;
          for (const n of memberNames(inner)) addName(n, spec.first);
          members.push({ name: '', type: inner });
        } else if (!spec.tagged) {
          this.fail('declaration does not declare anything', spec.first);
        }
        continue;
      }
      for (;;) {
        const d = this.parseDeclarator('named', 'member');
        if (this.isPunct(':')) this.fail('bit-fields are not supported');
        const name = d.name as string;
        const type = this.apply(spec.base, d.ops);
        if (type === VOID) this.fail(`field '${name}' has type void`, d.tok);
        if (!isComplete(type)) this.fail(`field '${name}' has incomplete type ${formatType(type)}`, d.tok);
        addName(name, d.tok);
        members.push({ name, type });
        if (this.isPunct(',')) {
          this.next();
          continue;
        }
        break;
      }
      this.expect(';');
    }
    this.next(); // '}'
    this.leave();
    try {
      completeStruct(s, members);
    } catch (e) {
      if (e instanceof TypeError || e instanceof RangeError) this.fail(e.message, kw);
      throw e;
    }
  }

  private parseEnumBody(tag: string, kw: Token): EnumType {
    this.expect('{');
    if (this.isPunct('}')) this.fail('empty enum');
    const members: Array<readonly [string, number]> = [];
    let prev: CConstant | null = null;
    for (;;) {
      const nameTok = this.peek();
      if (!this.identifierLike(nameTok)) {
        this.unsupportedCheck(nameTok);
        this.fail(`expected an enumerator name but found ${Parser.show(nameTok)}`, nameTok);
      }
      this.next();
      const name = nameTok.text;
      this.notAMacro(nameTok, 'enumerator');
      let c: CConstant;
      if (this.isPunct('=')) {
        this.next();
        const at = this.peek();
        c = this.promote(this.parseConditional(true), at);
      } else if (prev === null) {
        c = { value: 0n, type: 'int' };
      } else {
        // like gcc: the next value is computed in the previous enumerator's type
        const v = wrapInt(prev.value + 1n, prev.type);
        if (v < prev.value) this.fail('overflow in enumeration values', nameTok);
        c = { value: v, type: prev.type };
      }
      // gcc: while the enum is being defined, an enumerator that fits in int is an int,
      // any other has its value's type
      if (fits(c.value, 'int')) c = { value: c.value, type: 'int' };
      if (this.scope.constant(name) !== undefined) this.fail(`redefinition of enumerator '${name}'`, nameTok);
      if (this.scope.ownTypedef(name) !== undefined) {
        this.fail(`'${name}' redeclared as a different kind of symbol`, nameTok);
      }
      if (!Number.isSafeInteger(Number(c.value)) || BigInt(Number(c.value)) !== c.value) {
        this.fail(`enumerator '${name}' = ${c.value} is beyond 2^53 and cannot be represented in JavaScript`, nameTok);
      }
      this.scope.constants.set(name, c);
      members.push([name, Number(c.value)]);
      prev = c;
      if (this.isPunct(',')) {
        this.next();
        if (this.isPunct('}')) break;
        continue;
      }
      if (this.isPunct('}')) break;
      this.expect('}', "',' or '}'");
    }
    this.next(); // '}'
    let e: EnumType;
    try {
      e = makeEnum(tag, members);
    } catch (err) {
      if (err instanceof TypeError || err instanceof RangeError) this.fail(err.message, kw);
      throw err;
    }
    this.retypeEnumerators(e, members);
    return e;
  }

  /**
   * Once the enum is complete, gcc gives the enumerators that do not fit in int the
   * enum's type (`enum { BIG = 3000000000 }`: BIG is an unsigned int, 4 bytes, although
   * the literal is a long); those that fit stay int.
   */
  private retypeEnumerators(e: EnumType, members: ReadonlyArray<readonly [string, number]>): void {
    const type = ENUM_VALUE_TYPE[e.scalar];
    if (type === 'int') return;
    for (const [name, n] of members) {
      const value = BigInt(n);
      if (!fits(value, 'int')) this.scope.constants.set(name, { value, type });
    }
  }

  // -------------------------------------------------------------------------
  // declarators

  private parseDeclarator(mode: 'named' | 'abstract', ctx: Context): Declarator {
    const start = this.peek();
    this.enter(start);
    let stars = 0;
    while (this.isPunct('*')) {
      this.next();
      stars++;
      while (this.peek().kind === 'ident' && QUALIFIERS.has(this.peek().text)) this.next();
      if (stars > MAX_DERIVATIONS) this.fail('declarator is too complex', start);
    }
    this.unsupportedCheck(this.peek());
    let name: string | null = null;
    let tok = this.peek();
    let inner: Declarator | null = null;
    const t = this.peek();
    if (mode === 'named' && t.kind === 'ident') {
      if (!this.identifierLike(t)) this.fail(`expected a name but found keyword '${t.text}'`, t);
      this.notAMacro(t, ctx === 'member' ? 'member' : 'name');
      name = t.text;
      tok = this.next();
    } else if (t.kind === 'punct' && t.text === '(') {
      const n = this.peek(1);
      const nested =
        (n.kind === 'punct' && (n.text === '*' || n.text === '(' || (mode === 'abstract' && n.text === '['))) ||
        (mode === 'named' && this.identifierLike(n) && this.typedefName(n.text) === undefined);
      if (!nested) this.fail('function types are not supported', t);
      this.next();
      inner = this.parseDeclarator(mode, ctx);
      this.expect(')');
      name = inner.name;
      tok = inner.tok;
    } else if (mode === 'named') {
      this.fail(`expected a name but found ${Parser.show(t)}`, t);
    }
    const dims: DeclOp[] = [];
    for (;;) {
      const s = this.peek();
      if (s.kind !== 'punct') break;
      if (s.text === '[') {
        this.next();
        if (this.isPunct(']')) {
          this.fail(
            ctx === 'member' ? 'flexible array members are not supported' : 'arrays of unknown size are not supported',
            s,
          );
        }
        const lenTok = this.peek();
        if (lenTok.kind === 'punct' && lenTok.text === '*') this.fail('variable-length arrays are not supported', lenTok);
        const c = this.promote(this.parseConditional(true, true), lenTok);
        if (c.value === 0n) this.fail('zero-length arrays are not supported', lenTok);
        if (c.value < 0n) this.fail('size of array is negative', lenTok);
        if (c.value > BigInt(Number.MAX_SAFE_INTEGER)) this.fail('array is too large', lenTok);
        this.expect(']');
        dims.push({ op: 'array', length: Number(c.value), tok: lenTok });
      } else if (s.text === '(') {
        const isPtr = inner !== null && inner.ops.some((o) => o.op === 'ptr');
        this.fail(
          isPtr ? 'function pointers are not supported' : 'function declarations are not supported',
          s,
        );
      } else {
        break;
      }
    }
    this.leave();
    const ops: DeclOp[] = [];
    for (let k = 0; k < stars; k++) ops.push({ op: 'ptr' });
    for (let k = dims.length - 1; k >= 0; k--) ops.push(dims[k] as DeclOp);
    const innerOps = inner?.ops ?? [];
    ops.push(...innerOps);
    if (ops.length > MAX_DERIVATIONS) this.fail('declarator is too complex', start);
    return { name, tok, ops };
  }

  private apply(base: TypeOrVoid, ops: readonly DeclOp[]): TypeOrVoid {
    let t = base;
    for (const o of ops) {
      if (o.op === 'ptr') {
        t = pointerTo(t === VOID ? null : t);
      } else {
        if (t === VOID) this.fail('array of void', o.tok);
        try {
          t = arrayOf(t, o.length);
        } catch (e) {
          if (e instanceof TypeError || e instanceof RangeError) this.fail(e.message, o.tok);
          throw e;
        }
      }
    }
    return t;
  }

  private parseTypeName(): TypeOrVoid {
    const spec = this.parseSpecifiers('typename');
    const d = this.parseDeclarator('abstract', 'typename');
    return this.apply(spec.base, d.ops);
  }

  private isTypeStart(t: Token): boolean {
    if (t.kind !== 'ident') return false;
    const w = t.text;
    if (BASIC.has(w) || QUALIFIERS.has(w) || w === 'struct' || w === 'union' || w === 'enum') return true;
    return this.typedefName(w) !== undefined;
  }

  /**
   * The typedef `w` names here, if it does: not when an enumerator or a macro with a
   * value has the name (C would see a number). A macro cdef() cannot evaluate does not
   * hide it: `#define size_t unsigned long` is most likely the same type.
   */
  private typedefName(w: string): TypeOrVoid | undefined {
    const td = this.scope.typedef(w);
    if (td === undefined || this.scope.constant(w) !== undefined) return undefined;
    const m = this.scope.macro(w);
    return m === undefined || m === OPAQUE ? td : undefined;
  }

  // -------------------------------------------------------------------------
  // integer constant expressions (C semantics: a value has the type C gives it, so that
  // sizeof((char)0) is 1; arithmetic promotes it to int/unsigned/long/unsigned long)

  /**
   * The integer promotions: a bool, char or short value is an int in arithmetic. A pointer
   * value (a cast to a pointer type) is only allowed as the operand of sizeof.
   */
  private promote(c: CConstant, at: Token): CInt {
    if (c.type === 'ptr') {
      this.fail('a pointer is not an integer constant (cdef() reads a pointer cast only as the operand of sizeof)', at);
    }
    if (c.type === 'int' || c.type === 'uint' || c.type === 'long' || c.type === 'ulong') return c as CInt;
    return { value: c.value, type: 'int' };
  }

  private parseConditional(live: boolean, arraySize = false): CConstant {
    const c = this.parseBinary(1, live, arraySize);
    if (!this.isPunct('?')) return c;
    const q = this.next();
    const cond = this.promote(c, q);
    this.enter(q);
    const a = this.parseConditional(live && cond.value !== 0n, arraySize);
    this.expect(':');
    const b = this.parseConditional(live && cond.value === 0n, arraySize);
    this.leave();
    if (a.type === 'ptr' && b.type === 'ptr') return cond.value !== 0n ? a : b;
    // the usual arithmetic conversions, after the promotions: (1 ? (char)1 : (char)2) is an int
    const x = this.promote(a, q);
    const y = this.promote(b, q);
    return konst(cond.value !== 0n ? x.value : y.value, commonType(x.type, y.type));
  }

  private parseBinary(minPrec: number, live: boolean, arraySize: boolean): CConstant {
    let left = this.parseUnary(live, arraySize);
    for (;;) {
      const t = this.peek();
      if (t.kind !== 'punct') break;
      const prec = BINARY_PRECEDENCE[t.text];
      if (prec === undefined || prec < minPrec) break;
      this.next();
      this.enter(t);
      const a = this.promote(left, t);
      const rightLive =
        live && !(t.text === '&&' && a.value === 0n) && !(t.text === '||' && a.value !== 0n);
      const right = this.parseBinary(prec + 1, rightLive, arraySize);
      this.leave();
      left = this.binary(t, a, this.promote(right, t), rightLive);
    }
    return left;
  }

  private binary(t: Token, a: CInt, b: CInt, live: boolean): CConstant {
    const op = t.text;
    if (op === '&&') return truth(a.value !== 0n && b.value !== 0n);
    if (op === '||') return truth(a.value !== 0n || b.value !== 0n);
    if (op === '<<' || op === '>>') {
      const bits = BigInt(INT_BITS[a.type]);
      if (b.value < 0n || b.value >= bits) {
        if (live) this.fail('shift count out of range', t);
        return konst(0n, a.type);
      }
      return konst(op === '<<' ? a.value << b.value : a.value >> b.value, a.type);
    }
    const type = commonType(a.type, b.type);
    const x = wrapInt(a.value, type);
    const y = wrapInt(b.value, type);
    switch (op) {
      case '*':
        return konst(x * y, type);
      case '/':
      case '%':
        if (y === 0n) {
          if (live) this.fail('division by zero', t);
          return konst(0n, type);
        }
        return konst(op === '/' ? x / y : x % y, type);
      case '+':
        return konst(x + y, type);
      case '-':
        return konst(x - y, type);
      case '<':
        return truth(x < y);
      case '>':
        return truth(x > y);
      case '<=':
        return truth(x <= y);
      case '>=':
        return truth(x >= y);
      case '==':
        return truth(x === y);
      case '!=':
        return truth(x !== y);
      case '&':
        return konst(x & y, type);
      case '^':
        return konst(x ^ y, type);
      case '|':
        return konst(x | y, type);
      default:
        this.fail(`unexpected '${op}'`, t);
    }
  }

  private parseUnary(live: boolean, arraySize: boolean): CConstant {
    const t = this.peek();
    if (t.kind === 'punct' && (t.text === '-' || t.text === '+' || t.text === '~' || t.text === '!')) {
      this.next();
      this.enter(t);
      const v = this.promote(this.parseUnary(live, arraySize), t);
      this.leave();
      switch (t.text) {
        case '-':
          return konst(-v.value, v.type);
        case '+':
          return v; // promoted: sizeof(+(char)0) is 4
        case '~':
          return konst(~v.value, v.type);
        default:
          return truth(v.value === 0n);
      }
    }
    if (t.kind === 'ident' && SIZEOF_WORDS.has(t.text)) {
      this.next();
      this.enter(t);
      let size: number;
      if (this.isPunct('(') && this.isTypeStart(this.peek(1))) {
        this.next();
        const at = this.peek();
        const ty = this.parseTypeName();
        this.expect(')');
        if (ty === VOID) this.fail(`invalid application of '${t.text}' to void`, at);
        if (!isComplete(ty)) this.fail(`invalid application of '${t.text}' to incomplete type ${formatType(ty)}`, at);
        size = t.text === 'sizeof' ? ty.size : ty.align;
      } else {
        // the operand's own type, unpromoted: sizeof((char)0) is 1
        const v = this.parseUnary(false, arraySize);
        size = VALUE_SIZE[v.type];
      }
      this.leave();
      return { value: BigInt(size), type: 'ulong' };
    }
    if (t.kind === 'punct' && t.text === '(') {
      this.next();
      this.enter(t);
      let result: CConstant;
      if (this.isTypeStart(this.peek())) {
        const at = this.peek();
        const ty = this.parseTypeName();
        this.expect(')');
        const v = this.parseUnary(live, arraySize);
        result = this.cast(ty, v, at);
      } else {
        result = this.parseConditional(live, arraySize);
        this.expect(')');
      }
      this.leave();
      return result;
    }
    return this.parsePrimary(arraySize);
  }

  /** `(ty)v`: the value converted to `ty` (modulo 2^bits, as gcc), with `ty`'s type. */
  private cast(ty: TypeOrVoid, v: CConstant, at: Token): CConstant {
    let type: CValueType | undefined;
    if (ty !== VOID) {
      if (ty.kind === 'pointer') type = 'ptr';
      else if (ty.kind === 'enum') type = ENUM_VALUE_TYPE[ty.scalar];
      else if (ty.kind === 'scalar') type = SCALAR_VALUE_TYPE[ty.scalar];
    }
    if (type === undefined) this.fail('only casts to integer and pointer types are supported in constant expressions', at);
    return konst(v.value, type);
  }

  private parsePrimary(arraySize: boolean): CConstant {
    const t = this.next();
    if (t.kind === 'number') return this.intLiteral(t);
    if (t.kind === 'char') return { value: t.value ?? 0n, type: 'int' };
    if (t.kind === 'ident' && (t.text === 'true' || t.text === 'false')) return truth(t.text === 'true');
    if (t.kind === 'ident' && !KEYWORDS.has(t.text)) {
      // a macro first: C replaces it before the enumerator of the same name is seen
      const m = this.scope.macro(t.text);
      if (m === OPAQUE) {
        this.fail(`'${t.text}' is a macro cdef() cannot evaluate (function-like, or not an integer constant expression)`, t);
      }
      if (m !== undefined) {
        const stale = staleDep(this.scope, m);
        if (stale !== undefined) {
          const { dep, now } = stale;
          const was = `${dep.name} was ${dep.was.value}`;
          const since =
            now === undefined ? `${dep.name} is no longer defined`
            : now === OPAQUE ? `${dep.name} has been redefined since`
            : `${dep.name} is ${now.value} now`;
          this.fail(
            `'${t.text}' was evaluated where it was #defined, when ${was}; ${since} (cdef() evaluates a macro where it is defined, the C preprocessor where it is used): #define '${t.text}' after ${dep.name}, or run the header through cc -E -P`,
            t,
          );
        }
      }
      const c = m ?? this.scope.constant(t.text);
      if (c !== undefined) {
        if (this.deps !== null) {
          const enumOnly = m === undefined && t.text === this.macroName;
          this.deps.set(`${enumOnly ? '=' : ''}${t.text}`, { name: t.text, enumOnly, was: { value: c.value, type: c.type } });
        }
        return { value: c.value, type: c.type };
      }
      this.fail(
        arraySize
          ? `'${t.text}' is not an integer constant (variable-length arrays are not supported)`
          : `'${t.text}' is not an integer constant`,
        t,
      );
    }
    this.unsupportedCheck(t);
    this.fail(`expected an integer constant expression but found ${Parser.show(t)}`, t);
  }

  private intLiteral(t: Token): CConstant {
    const text = t.text;
    const m = /^(?:0[xX]([0-9a-fA-F]+)|0[bB]([01]+)|(0[0-7]*)|([1-9][0-9]*))([uUlL]*)$/.exec(text);
    if (m === null || text.length > 80) {
      if (/^[0-9]*\.|^0[xX].*[pP]|^[0-9]+[eE]/.test(text)) {
        this.fail('floating-point constants are not supported', t);
      }
      this.fail(`invalid integer constant '${text.slice(0, 40)}'`, t);
    }
    const [, hex, bin, oct, dec, suffixRaw] = m;
    const suffix = (suffixRaw ?? '').toLowerCase();
    if (!['', 'u', 'l', 'll', 'ul', 'lu', 'ull', 'llu'].includes(suffix) || /lL|Ll/.test(suffixRaw ?? '')) {
      this.fail(`invalid suffix on integer constant '${text}'`, t);
    }
    const value =
      hex !== undefined ? BigInt(`0x${hex}`)
      : bin !== undefined ? BigInt(`0b${bin}`)
      : oct !== undefined ? BigInt(oct.length > 1 ? `0o${oct.slice(1)}` : '0')
      : BigInt(dec ?? '0');
    const u = suffix.includes('u');
    const l = suffix.includes('l');
    const decimal = dec !== undefined;
    const candidates: CIntType[] = u
      ? l ? ['ulong'] : ['uint', 'ulong']
      : l ? decimal ? ['long', 'ulong'] : ['long', 'ulong']
      : decimal ? ['int', 'long', 'ulong'] : ['int', 'uint', 'long', 'ulong'];
    const type = candidates.find((c) => fits(value, c));
    if (type === undefined) this.fail(`integer constant '${text}' is too large`, t);
    return { value, type };
  }
}
