/**
 * Tokenizer for the C declaration subset accepted by `cdef()`.
 *
 * Linear time, no backtracking. Comments are skipped. Of the preprocessor, `#define NAME`
 * and `#undef NAME` are returned as `define` and `undef` tokens, where they appear, so the
 * parser records and forgets macros in source order; conditionals (`#if`/`#ifdef`/`#ifndef`/
 * `#elif`/`#else`/`#endif`) keep or drop the lines they govern, for the conditions the lexer
 * can decide (a number, `defined NAME`, `!` of one: names `#define`d and not `#undef`ined
 * earlier in the source, or else in the FFI it is read into); a condition it cannot
 * decide, and a `#pragma` that changes the layout (`pack`, `align`), is a `CDefError`
 * rather than a layout a C compiler would not produce. Other directives are skipped.
 *
 * @module
 */
import { CDefError } from './cdef-error.js';

/** Kinds of token. */
export type TokenKind = 'ident' | 'number' | 'char' | 'punct' | 'define' | 'undef' | 'eof';

/** One token with its 1-based source position. */
export interface Token {
  /** Kind of token. */
  readonly kind: TokenKind;
  /** Source text (`define`, `undef`: the macro name; `char`: the literal's text). */
  readonly text: string;
  /** 1-based line. */
  readonly line: number;
  /** 1-based column. */
  readonly column: number;
  /** `char` literal value; unused otherwise. */
  readonly value?: bigint;
  /**
   * `define`: the replacement tokens (ending with an `eof`); none for a function-like
   * macro or a body the lexer cannot read (a string literal...).
   */
  readonly body?: readonly Token[];
}

const PUNCT3 = new Set(['...', '<<=', '>>=']);
const PUNCT2 = new Set([
  '<<', '>>', '<=', '>=', '==', '!=', '&&', '||', '->', '++', '--',
  '+=', '-=', '*=', '/=', '%=', '&=', '|=', '^=', '##',
]);
const PUNCT1 = new Set([...'{}[]();,*=+-~!/%<>&|^?:.#']);

const isIdentStart = (c: number): boolean =>
  (c >= 97 && c <= 122) || (c >= 65 && c <= 90) || c === 95;
const isDigit = (c: number): boolean => c >= 48 && c <= 57;
const isIdentPart = (c: number): boolean => isIdentStart(c) || isDigit(c);

const SIMPLE_ESCAPES: Readonly<Record<string, number>> = {
  n: 10, t: 9, r: 13, '0': 0, '\\': 92, "'": 39, '"': 34, a: 7, b: 8, f: 12, v: 11, '?': 63,
};

/**
 * Splits `source` into tokens. Throws {@link CDefError} on a character that
 * cannot start a token, an unterminated comment, or a string literal.
 *
 * @param source C source
 * @param isDefined whether a name is a macro before `source` begins (the FFI's
 * macros, for `#ifdef` and `defined`); none by default
 */
export function tokenize(source: string, isDefined: (name: string) => boolean = () => false): Token[] {
  return new Lexer(source, 1, 1, isDefined).run(false);
}

/** One open conditional: whether its current branch is kept, and whether one was. */
interface Conditional {
  keep: boolean;
  taken: boolean;
  /** Whether the lines around it are kept. */
  outer: boolean;
}

class Lexer {
  private pos = 0;
  private line: number;
  private lineStart: number;
  private readonly src: string;
  /**
   * Names this source `#define`d (true) or `#undef`ined (false) so far; for the others,
   * `outerDefined` (the state before the source) decides.
   */
  private readonly defined = new Map<string, boolean>();
  private readonly outerDefined: (name: string) => boolean;
  /** The open conditionals, innermost last. */
  private readonly conditionals: Conditional[] = [];

  constructor(src: string, line: number, column: number, outerDefined: (name: string) => boolean) {
    this.src = src;
    this.outerDefined = outerDefined;
    this.line = line;
    this.lineStart = 1 - column; // so that column(pos 0) === column
  }

  private col(pos: number): number {
    return pos - this.lineStart + 1;
  }

  private fail(msg: string, pos: number): never {
    throw new CDefError(msg, this.line, this.col(pos));
  }

  private newline(at: number): void {
    this.line++;
    this.lineStart = at;
  }

  /** Skips whitespace and comments; returns true if a newline was crossed. */
  private skipSpace(stopAtNewline: boolean): boolean {
    const s = this.src;
    let crossed = false;
    while (this.pos < s.length) {
      const c = s.charCodeAt(this.pos);
      if (c === 10 || c === 13) {
        if (stopAtNewline) return crossed;
        this.pos += c === 13 && s.charCodeAt(this.pos + 1) === 10 ? 2 : 1;
        this.newline(this.pos);
        crossed = true;
      } else if (c === 32 || c === 9 || c === 11 || c === 12) {
        this.pos++;
      } else if (c === 92 && (s.charCodeAt(this.pos + 1) === 10 || s.charCodeAt(this.pos + 1) === 13)) {
        // line continuation
        this.pos += s.charCodeAt(this.pos + 1) === 13 && s.charCodeAt(this.pos + 2) === 10 ? 3 : 2;
        this.newline(this.pos);
      } else if (c === 47 && s.charCodeAt(this.pos + 1) === 47) {
        // line comment (a continuation extends it, as in C)
        this.pos += 2;
        while (this.pos < s.length) {
          const d = s.charCodeAt(this.pos);
          if (d === 10 || d === 13) {
            if (s.charCodeAt(this.pos - 1) !== 92) break;
            this.pos += d === 13 && s.charCodeAt(this.pos + 1) === 10 ? 2 : 1;
            this.newline(this.pos);
          } else {
            this.pos++;
          }
        }
      } else if (c === 47 && s.charCodeAt(this.pos + 1) === 42) {
        const start = this.pos;
        const startLine = this.line;
        const startCol = this.col(start);
        this.pos += 2;
        let closed = false;
        while (this.pos < s.length) {
          const d = s.charCodeAt(this.pos);
          if (d === 42 && s.charCodeAt(this.pos + 1) === 47) {
            this.pos += 2;
            closed = true;
            break;
          }
          this.pos += d === 13 && s.charCodeAt(this.pos + 1) === 10 ? 2 : 1;
          if (d === 10 || d === 13) this.newline(this.pos);
        }
        if (!closed) throw new CDefError('unterminated comment', startLine, startCol);
      } else {
        break;
      }
    }
    return crossed;
  }

  run(singleLine: boolean): Token[] {
    const out: Token[] = [];
    const s = this.src;
    let atLineStart = true;
    for (;;) {
      if (this.skipSpace(singleLine)) atLineStart = true;
      if (this.pos >= s.length || (singleLine && (s.charCodeAt(this.pos) === 10 || s.charCodeAt(this.pos) === 13))) {
        if (this.conditionals.length !== 0) this.fail('#if without #endif', this.pos);
        out.push({ kind: 'eof', text: '', line: this.line, column: this.col(this.pos) });
        return out;
      }
      const start = this.pos;
      const c = s.charCodeAt(start);
      if (c === 35 /* # */ && atLineStart && !singleLine) {
        const d = this.directive();
        if (d !== null) out.push(d);
        atLineStart = true;
        continue;
      }
      if (!this.keeping()) {
        // A line a conditional drops.
        this.skipToLineEnd(start);
        continue;
      }
      atLineStart = false;
      if (isIdentStart(c)) {
        let p = start + 1;
        while (p < s.length && isIdentPart(s.charCodeAt(p))) p++;
        out.push({ kind: 'ident', text: s.slice(start, p), line: this.line, column: this.col(start) });
        this.pos = p;
      } else if (isDigit(c) || (c === 46 && isDigit(s.charCodeAt(start + 1)))) {
        // pp-number
        let p = start + 1;
        while (p < s.length) {
          const d = s.charCodeAt(p);
          if ((d === 43 || d === 45) && /[eEpP]/.test(s[p - 1] ?? '')) p++;
          else if (isIdentPart(d) || d === 46) p++;
          else break;
        }
        out.push({ kind: 'number', text: s.slice(start, p), line: this.line, column: this.col(start) });
        this.pos = p;
      } else if (c === 39 /* ' */) {
        out.push(this.charLiteral());
      } else if (c === 34 /* " */) {
        this.fail('string literals are not supported', start);
      } else {
        const three = s.slice(start, start + 3);
        const two = s.slice(start, start + 2);
        let text: string;
        if (PUNCT3.has(three)) text = three;
        else if (PUNCT2.has(two)) text = two;
        else if (PUNCT1.has(s[start] as string)) text = s[start] as string;
        else {
          const cp = s.codePointAt(start) ?? c;
          const shown = cp >= 32 && cp < 127 ? `'${String.fromCodePoint(cp)}'` : `U+${cp.toString(16).toUpperCase().padStart(4, '0')}`;
          this.fail(`unexpected character ${shown}`, start);
        }
        out.push({ kind: 'punct', text, line: this.line, column: this.col(start) });
        this.pos = start + text.length;
      }
    }
  }

  private charLiteral(): Token {
    const s = this.src;
    const start = this.pos;
    let p = start + 1;
    let value: bigint;
    const ch = s.charCodeAt(p);
    if (p >= s.length || ch === 10 || ch === 13 || ch === 39) this.fail('invalid character constant', start);
    if (ch === 92 /* \ */) {
      const e = s[p + 1] ?? '';
      if (e === 'x') {
        let q = p + 2;
        while (q < s.length && q < p + 4 && /[0-9a-fA-F]/.test(s[q] as string)) q++;
        if (q === p + 2) this.fail('invalid escape in character constant', start);
        value = BigInt(`0x${s.slice(p + 2, q)}`);
        p = q;
      } else if (/[0-7]/.test(e)) {
        let q = p + 1;
        while (q < s.length && q < p + 4 && /[0-7]/.test(s[q] as string)) q++;
        value = BigInt(`0o${s.slice(p + 1, q)}`);
        p = q;
      } else if (Object.prototype.hasOwnProperty.call(SIMPLE_ESCAPES, e)) {
        value = BigInt(SIMPLE_ESCAPES[e] as number);
        p += 2;
      } else {
        this.fail('invalid escape in character constant', start);
      }
    } else {
      if (ch > 127) this.fail('non-ASCII character constants are not supported', start);
      value = BigInt(ch);
      p += 1;
    }
    if (s.charCodeAt(p) !== 39) this.fail('multi-character or unterminated character constant', start);
    p += 1;
    // char is signed: '\xff' is -1 as an int
    if (value > 127n) value -= 256n;
    const tok: Token = { kind: 'char', text: s.slice(start, p), line: this.line, column: this.col(start), value };
    this.pos = p;
    return tok;
  }

  /** Handles a preprocessor line starting at `#`; returns a define token or null. */
  private directive(): Token | null {
    const s = this.src;
    const hashPos = this.pos;
    const line = this.line;
    this.pos++;
    this.skipSpace(true);
    let p = this.pos;
    while (p < s.length && isIdentPart(s.charCodeAt(p))) p++;
    const word = s.slice(this.pos, p);
    let result: Token | null = null;
    // The rest of the directive's logical line, continuations included.
    const rest = s.slice(p, this.logicalLineEnd(p));
    if (this.conditional(word, rest, hashPos)) {
      // handled
    } else if (!this.keeping()) {
      // a directive on a dropped line
    } else if (word === 'pragma') {
      if (/\b(pack|align)\b/.test(rest)) {
        this.fail(`#pragma${rest.trimEnd()} changes the layout, which cdef() does not model: declare the struct without it (explicit padding members where the packed layout needs them)`, hashPos);
      }
    } else if (word === 'undef') {
      const m = /^\s+([A-Za-z_][A-Za-z0-9_]*)/.exec(rest);
      if (m) {
        this.defined.set(m[1]!, false);
        result = { kind: 'undef', text: m[1]!, line, column: this.col(p + rest.indexOf(m[1]!)) };
      }
    } else if (word === 'define') {
      this.pos = p;
      this.skipSpace(true);
      const nameStart = this.pos;
      let q = nameStart;
      if (q < s.length && isIdentStart(s.charCodeAt(q))) {
        while (q < s.length && isIdentPart(s.charCodeAt(q))) q++;
        const name = s.slice(nameStart, q);
        this.defined.set(name, true);
        result = { kind: 'define', text: name, line, column: this.col(nameStart) };
        // a body for object-like macros only: a '(' right after the name makes it function-like
        if (s.charCodeAt(q) !== 40) {
          const body = this.defineBody(q);
          if (body !== null) result = { ...result, body };
        }
      }
    }
    // skip to the end of the logical line (honouring continuations and comments)
    this.skipToLineEnd(hashPos);
    return result;
  }

  /** The tokens of a `#define` body starting at `from`; null if they are not C tokens. */
  private defineBody(from: number): Token[] | null {
    const text = this.src.slice(from, this.logicalLineEnd(from));
    try {
      return new Lexer(text, this.line, this.col(from), () => false).run(true);
    } catch (e) {
      if (!(e instanceof CDefError)) throw e;
      return null; // not a constant definition we understand: the name is defined, its value opaque
    }
  }

  /** Whether the current line is kept (no open conditional drops it). */
  private keeping(): boolean {
    const top = this.conditionals[this.conditionals.length - 1];
    return top === undefined || (top.keep && top.outer);
  }

  /**
   * Applies conditional directive `word` (`rest`: the rest of its line); `false` if
   * `word` is not one.
   */
  private conditional(word: string, rest: string, hashPos: number): boolean {
    const text = rest.replace(/\/\*[^]*?\*\/|\/\/.*$/g, ' ').trim();
    const stack = this.conditionals;
    const top = stack[stack.length - 1];
    switch (word) {
      case 'if':
      case 'ifdef':
      case 'ifndef': {
        const outer = this.keeping();
        const expr = word === 'if' ? text : `${word === 'ifndef' ? '!' : ''}defined ${text}`;
        const keep = outer ? this.decide(expr, word, hashPos) : false;
        stack.push({ keep, taken: keep, outer });
        return true;
      }
      case 'elif': {
        if (top === undefined) this.fail('#elif without #if', hashPos);
        const keep = top.outer && !top.taken ? this.decide(text, word, hashPos) : false;
        top.keep = keep;
        top.taken ||= keep;
        return true;
      }
      case 'else':
        if (top === undefined) this.fail('#else without #if', hashPos);
        top.keep = !top.taken;
        top.taken = true;
        return true;
      case 'endif':
        if (top === undefined) this.fail('#endif without #if', hashPos);
        stack.pop();
        return true;
      default:
        return false;
    }
  }

  /**
   * The value of the condition `expr` of `#${word}`: a number, `defined NAME` or
   * `defined(NAME)` (names `#define`d and not `#undef`ined earlier in this source, or
   * before it), or `!` of one of those.
   */
  private decide(expr: string, word: string, hashPos: number): boolean {
    const m = /^(!\s*)?(?:(\d+|0[xX][0-9a-fA-F]+)[uUlL]*|defined\s*(?:\(\s*([A-Za-z_]\w*)\s*\)|([A-Za-z_]\w*)))$/.exec(expr);
    if (m === null) {
      this.fail(`#${word} ${expr}: a condition cdef() cannot decide (it knows numbers, defined NAME and !): run the header through the C preprocessor first (cc -E -P)`, hashPos);
    }
    const value = m[2] !== undefined ? Number(m[2]) !== 0 : this.isDefined((m[3] ?? m[4])!);
    return m[1] !== undefined ? !value : value;
  }

  private isDefined(name: string): boolean {
    return this.defined.get(name) ?? this.outerDefined(name);
  }

  /** End (exclusive) of the logical line containing `from`, with continuations. */
  private logicalLineEnd(from: number): number {
    const s = this.src;
    let p = from;
    while (p < s.length) {
      const c = s.charCodeAt(p);
      if (c === 10 || c === 13) {
        if (s.charCodeAt(p - 1) === 92) {
          p++;
          continue;
        }
        return p;
      }
      if (c === 47 && s.charCodeAt(p + 1) === 42) {
        const close = s.indexOf('*/', p + 2);
        if (close < 0) return s.length;
        p = close + 2;
        continue;
      }
      p++;
    }
    return p;
  }

  private skipToLineEnd(_from: number): void {
    const s = this.src;
    for (;;) {
      this.skipSpace(true);
      if (this.pos >= s.length) return;
      const c = s.charCodeAt(this.pos);
      if (c === 10 || c === 13) return;
      this.pos++;
    }
  }
}
