/**
 * The error thrown for C declarations that cannot be parsed or are not supported.
 *
 * @module
 */
import { finishErrorClass } from '../errors.js';

/**
 * A syntax or semantic error in C source given to `cdef()`, or a construct
 * this parser does not support (bit-fields, `long double`, flexible array
 * members, function declarators, `__attribute__`, variable-length arrays...).
 * `line` and `column` are 1-based (columns count UTF-16 code units, a tab is
 * one column) and are also named in the message.
 * @category Types and structs
 */
export class CDefError extends SyntaxError {
  /** 1-based line of the offending token. */
  readonly line: number;
  /** 1-based column of the offending token. */
  readonly column: number;
  /** The message without the position suffix. */
  readonly reason: string;

  /**
   * @param reason what is wrong
   * @param line 1-based line
   * @param column 1-based column
   */
  constructor(reason: string, line: number, column: number) {
    super(`${reason} (line ${line}, column ${column})`);
    this.reason = reason;
    this.line = line;
    this.column = column;
  }
}

finishErrorClass(CDefError, 'CDefError');
