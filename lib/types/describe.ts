/**
 * Travelling type definitions: a compact JSON description of a type that
 * another process can turn back into an identical layout.
 *
 * Format ({@link TypeDesc}):
 * - a scalar is its name: `'int32_t'`, `'uint64_t'`, `'char'`, `'bool'`, `'float'`, `'double'`
 * - `{ptr: T}` or `{ptr: 'void'}`
 * - `{array: T, length: n}`
 * - `{struct: tag, size, fields: [[name, T], ...]}` and the same with `union`
 *   (`tag` `''` when anonymous; an anonymous member has name `''`);
 *   `size` is checked on arrival
 * - `{opaque: 'struct' | 'union', tag}`: a declared but undefined struct (behind pointers)
 * - `{enum: tag, members: [[name, value], ...]}`
 * - `{ref: i}`: the i-th struct/union/opaque node of this description, in
 *   order of appearance (depth-first, fields in order). Every later
 *   occurrence of the same struct object, including recursive ones such as
 *   `struct node { struct node *next; }`, is written as a ref.
 *
 * @module
 */
import { typeError } from '../errors.js';
import {
  type EnumType,
  type MemberDecl,
  type ScalarType,
  type StructType,
  type Type,
  SCALARS_BY_NAME,
  arrayOf,
  assertType,
  completeStruct,
  describeValue,
  incompleteStruct,
  makeEnum,
  pointerTo,
} from './type.js';

/**
 * Names of scalar types in descriptions.
 * @category Types and structs
 */
export type ScalarName =
  | 'int8_t'
  | 'uint8_t'
  | 'int16_t'
  | 'uint16_t'
  | 'int32_t'
  | 'uint32_t'
  | 'int64_t'
  | 'uint64_t'
  | 'float'
  | 'double'
  | 'bool'
  | 'char';

/**
 * One struct/union member in a description: `[name, type]`.
 * @category Types and structs
 */
export type FieldDesc = readonly [name: string, type: TypeDesc];

/**
 * A JSON-able description of a type (see the module documentation).
 * @category Types and structs
 */
export type TypeDesc =
  | ScalarName
  | {
      /** A pointer to this type, or to `void`. */
      readonly ptr: TypeDesc | 'void'
    }
  | {
      /** An array of this element type. */
      readonly array: TypeDesc
      /** Its number of elements. */
      readonly length: number
    }
  | {
      /** A struct with this tag (`''`: anonymous). */
      readonly struct: string
      /** Its size in bytes (checked against this platform's layout). */
      readonly size: number
      /** Its members in declaration order. */
      readonly fields: readonly FieldDesc[]
    }
  | {
      /** A union with this tag (`''`: anonymous). */
      readonly union: string
      /** Its size in bytes (checked against this platform's layout). */
      readonly size: number
      /** Its members in declaration order. */
      readonly fields: readonly FieldDesc[]
    }
  | {
      /** An incomplete struct or union (only pointed to). */
      readonly opaque: 'struct' | 'union'
      /** Its tag. */
      readonly tag: string
    }
  | {
      /** An enum with this tag. */
      readonly enum: string
      /** Its enumerators: `[name, value]`. */
      readonly members: readonly (readonly [name: string, value: number])[]
    }
  | {
      /** The n-th struct/union of this description, in order of appearance (recursion). */
      readonly ref: number
    };

/**
 * Deepest nesting accepted in a description (and produced by describeType).
 * @category Types and structs
 */
export const MAX_DESCRIPTION_DEPTH = 256;
/** Most nodes (types, fields, members) accepted in one description. */
export const MAX_DESCRIPTION_NODES = 20_000;
/** Longest identifier accepted in a description. */
export const MAX_IDENTIFIER_LENGTH = 255;

const IDENT = /^[A-Za-z_][A-Za-z0-9_]*$/;

function tagOf(t: StructType | EnumType): string {
  return t.name === '' ? '' : t.name.slice(t.name.indexOf(' ') + 1);
}

const describeCache = new WeakMap<Type, TypeDesc>();

function deepFreeze<T>(v: T): T {
  if (typeof v === 'object' && v !== null && !Object.isFrozen(v)) {
    Object.freeze(v);
    for (const x of Object.values(v as object)) deepFreeze(x);
  }
  return v;
}

/**
 * Describes `t` as compact JSON-able data (frozen). Recursive and shared
 * structs are written once and referenced with `{ref: i}` afterwards.
 *
 * @param t any type object
 * @throws TypeError if `t` is not a type object or is nested deeper than {@link MAX_DESCRIPTION_DEPTH}
 * @category Types and structs
 */
export function describeType(t: Type): TypeDesc {
  assertType(t, 't');
  const hit = describeCache.get(t);
  if (hit !== undefined) return hit;
  const { desc, complete } = describeGraph(t);
  const d = deepFreeze(desc);
  if (complete) describeCache.set(t, d);
  return d;
}

/**
 * @internal The description of a structured clone of a type object (what the clone of
 * a `Ref` carries): the walk of {@link describeType} over untrusted plain data. Hand the
 * result to {@link typeFromDescription}, which validates every node.
 *
 * @throws TypeError for data not shaped like a type object
 */
export function describeClonedType(x: unknown): TypeDesc {
  try {
    return describeGraph(x as Type).desc;
  } catch (e) {
    throw typeError(`invalid type object in a structured clone: ${(e as Error).message}`, { cause: e });
  }
}

/** The description of the type graph at `t` (not frozen), and whether it is complete. */
function describeGraph(t: Type): { desc: TypeDesc; complete: boolean } {
  const ids = new Map<Type, number>();
  let allComplete = true;
  const go = (x: Type, depth: number): TypeDesc => {
    if (depth > MAX_DESCRIPTION_DEPTH) {
      throw typeError(`t is nested deeper than ${MAX_DESCRIPTION_DEPTH} levels and cannot be described`);
    }
    switch (x.kind) {
      case 'scalar':
        return x.name as ScalarName;
      case 'pointer':
        return { ptr: x.target === null ? 'void' : go(x.target, depth + 1) };
      case 'array':
        return { array: go(x.element, depth + 1), length: x.length };
      case 'enum':
        return { enum: tagOf(x), members: Object.entries(x.members).map(([k, v]) => [k, v] as const) };
      case 'struct':
      case 'union': {
        const id = ids.get(x);
        if (id !== undefined) return { ref: id };
        ids.set(x, ids.size);
        if (!x.complete) {
          allComplete = false;
          return { opaque: x.kind, tag: tagOf(x) };
        }
        const fields = x.fields.map((f) => [f.name, go(f.type, depth + 1)] as const);
        return x.kind === 'struct'
          ? { struct: tagOf(x), size: x.size, fields }
          : { union: tagOf(x), size: x.size, fields };
      }
    }
  };
  const desc = go(t, 0);
  return { desc, complete: allComplete };
}

// ---------------------------------------------------------------------------
// Reviving

type Node =
  | { readonly k: 'scalar'; readonly t: ScalarType }
  | { readonly k: 'ptr'; readonly target: Node | null }
  | { readonly k: 'array'; readonly element: Node; readonly length: number }
  | {
      readonly k: 'agg';
      readonly kind: 'struct' | 'union';
      readonly tag: string;
      readonly size: number;
      readonly fields: ReadonlyArray<readonly [string, Node]>;
      readonly id: number;
      readonly path: string;
    }
  | { readonly k: 'opaque'; readonly kind: 'struct' | 'union'; readonly tag: string; readonly id: number }
  | { readonly k: 'enum'; readonly tag: string; readonly members: ReadonlyArray<readonly [string, number]>; readonly path: string }
  | { readonly k: 'ref'; readonly id: number };

const VARIANT_KEYS: Readonly<Record<string, readonly string[]>> = {
  ptr: ['ptr'],
  array: ['array', 'length'],
  struct: ['struct', 'size', 'fields'],
  union: ['union', 'size', 'fields'],
  opaque: ['opaque', 'tag'],
  enum: ['enum', 'members'],
  ref: ['ref'],
};

class Validator {
  nodes = 0;
  ids = 0;
  readonly key: string[] = [];

  bad(path: string, why: string): never {
    throw typeError(`invalid type description at ${path}: ${why}`);
  }

  count(path: string): void {
    if (++this.nodes > MAX_DESCRIPTION_NODES) this.bad(path, `more than ${MAX_DESCRIPTION_NODES} nodes`);
  }

  /** Own data property `key` of a plain object / array (never runs getters). */
  own(obj: object, key: string | number, path: string): unknown {
    const d = Object.getOwnPropertyDescriptor(obj, key);
    if (d === undefined || !('value' in d)) this.bad(path, `missing ${typeof key === 'number' ? `item ${key}` : `'${key}'`}`);
    return d.value;
  }

  plainObject(x: unknown, path: string): object {
    if (typeof x !== 'object' || x === null || Array.isArray(x)) this.bad(path, `expected an object, got ${describeValue(x)}`);
    const proto: unknown = Object.getPrototypeOf(x);
    if (proto !== Object.prototype && proto !== null) this.bad(path, 'expected a plain object');
    return x;
  }

  list(x: unknown, path: string, max: number): unknown[] {
    if (!Array.isArray(x)) this.bad(path, `expected an array, got ${describeValue(x)}`);
    const arr = x as unknown[];
    if (arr.length > max) this.bad(path, `more than ${max} items`);
    const out: unknown[] = [];
    for (let i = 0; i < arr.length; i++) out.push(this.own(arr, i, `${path}[${i}]`));
    return out;
  }

  ident(x: unknown, path: string, allowEmpty: boolean): string {
    if (typeof x !== 'string') this.bad(path, `expected a string, got ${describeValue(x)}`);
    const s = x as string;
    if (s === '' && allowEmpty) return s;
    if (s.length > MAX_IDENTIFIER_LENGTH || !IDENT.test(s)) this.bad(path, `${describeValue(s)} is not a C identifier`);
    return s;
  }

  int(x: unknown, path: string, min: number): number {
    if (typeof x !== 'number' || !Number.isSafeInteger(x) || x < min) {
      this.bad(path, `expected an integer >= ${min}, got ${describeValue(x)}`);
    }
    return x as number;
  }

  node(x: unknown, path: string, depth: number): Node {
    if (depth > MAX_DESCRIPTION_DEPTH) this.bad(path, `nested deeper than ${MAX_DESCRIPTION_DEPTH} levels`);
    this.count(path);
    if (typeof x === 'string') {
      const t = SCALARS_BY_NAME.get(x);
      if (t === undefined) this.bad(path, `unknown scalar type ${describeValue(x)}`);
      this.key.push(`s${x};`);
      return { k: 'scalar', t: t as ScalarType };
    }
    const o = this.plainObject(x, path);
    const keys = Object.keys(o);
    const variant = keys.find((k) => Object.prototype.hasOwnProperty.call(VARIANT_KEYS, k));
    if (variant === undefined) this.bad(path, `expected one of ${Object.keys(VARIANT_KEYS).join(', ')}`);
    const allowed = VARIANT_KEYS[variant as string] as readonly string[];
    for (const k of keys) if (!allowed.includes(k)) this.bad(path, `unexpected key ${JSON.stringify(k)}`);
    if (Object.getOwnPropertySymbols(o).length > 0) this.bad(path, 'unexpected symbol keys');
    switch (variant) {
      case 'ptr': {
        const target = this.own(o, 'ptr', path);
        if (target === 'void') {
          this.key.push('pv;');
          return { k: 'ptr', target: null };
        }
        this.key.push('p(');
        const n = this.node(target, `${path}.ptr`, depth + 1);
        this.key.push(')');
        return { k: 'ptr', target: n };
      }
      case 'array': {
        const length = this.int(this.own(o, 'length', path), `${path}.length`, 1);
        this.key.push(`a${length}(`);
        const element = this.node(this.own(o, 'array', path), `${path}.array`, depth + 1);
        this.key.push(')');
        return { k: 'array', element, length };
      }
      case 'struct':
      case 'union': {
        const kind = variant;
        const tag = this.ident(this.own(o, kind, path), `${path}.${kind}`, true);
        const size = this.int(this.own(o, 'size', path), `${path}.size`, 0);
        const id = this.ids++;
        this.key.push(`${kind === 'struct' ? 'S' : 'U'}${tag}:${size}{`);
        const raw = this.list(this.own(o, 'fields', path), `${path}.fields`, MAX_DESCRIPTION_NODES);
        const fields: Array<readonly [string, Node]> = [];
        raw.forEach((f, i) => {
          const fp = `${path}.fields[${i}]`;
          this.count(fp);
          const pair = this.list(f, fp, 2);
          if (pair.length !== 2) this.bad(fp, 'expected [name, type]');
          const name = this.ident(pair[0], `${fp}[0]`, true);
          this.key.push(`${name}=`);
          fields.push([name, this.node(pair[1], `${fp}[1]`, depth + 1)]);
          this.key.push(',');
        });
        this.key.push('}');
        return { k: 'agg', kind, tag, size, fields, id, path };
      }
      case 'opaque': {
        const kind = this.own(o, 'opaque', path);
        if (kind !== 'struct' && kind !== 'union') this.bad(`${path}.opaque`, "expected 'struct' or 'union'");
        const tag = this.ident(this.own(o, 'tag', path), `${path}.tag`, false);
        const id = this.ids++;
        this.key.push(`O${kind as string}:${tag};`);
        return { k: 'opaque', kind: kind as 'struct' | 'union', tag, id };
      }
      case 'enum': {
        const tag = this.ident(this.own(o, 'enum', path), `${path}.enum`, true);
        const raw = this.list(this.own(o, 'members', path), `${path}.members`, MAX_DESCRIPTION_NODES);
        if (raw.length === 0) this.bad(`${path}.members`, 'an enum needs at least one member');
        this.key.push(`E${tag}{`);
        const members = raw.map((m, i) => {
          const mp = `${path}.members[${i}]`;
          this.count(mp);
          const pair = this.list(m, mp, 2);
          if (pair.length !== 2) this.bad(mp, 'expected [name, value]');
          const name = this.ident(pair[0], `${mp}[0]`, false);
          const v = pair[1];
          if (typeof v !== 'number' || !Number.isSafeInteger(v)) {
            this.bad(`${mp}[1]`, `expected a safe integer, got ${describeValue(v)}`);
          }
          this.key.push(`${name}=${v as number},`);
          return [name, v as number] as const;
        });
        this.key.push('}');
        return { k: 'enum', tag, members, path };
      }
      default: {
        const id = this.int(this.own(o, 'ref', path), `${path}.ref`, 0);
        if (id >= this.ids) this.bad(`${path}.ref`, `no struct #${id} before this point`);
        this.key.push(`r${id};`);
        return { k: 'ref', id };
      }
    }
  }
}

function build(root: Node): Type {
  const byId: StructType[] = [];
  const go = (n: Node): Type => {
    switch (n.k) {
      case 'scalar':
        return n.t;
      case 'ptr':
        return pointerTo(n.target === null ? null : go(n.target));
      case 'array':
        return arrayOf(go(n.element), n.length);
      case 'ref':
        return byId[n.id] as StructType;
      case 'opaque': {
        const s = incompleteStruct(n.kind, n.tag);
        byId[n.id] = s;
        return s;
      }
      case 'enum':
        return makeEnum(n.tag, n.members);
      case 'agg': {
        const s = incompleteStruct(n.kind, n.tag);
        byId[n.id] = s;
        const members: MemberDecl[] = n.fields.map(([name, f]) => ({ name, type: go(f) }));
        completeStruct(s, members);
        if (s.size !== n.size) {
          throw typeError(
            `invalid type description at ${n.path}: size ${n.size} does not match this platform's layout (${s.size})`,
          );
        }
        return s;
      }
    }
  };
  return go(root);
}

const CACHE_LIMIT = 1024;
const reviveCache = new Map<string, Type>();

/**
 * Rebuilds a type from {@link describeType}'s output, typically after a trip
 * through JSON from another process. The input is untrusted: it is fully
 * validated (shape, identifiers, integer ranges, node count, depth, sizes
 * against this platform's layout) and only own data properties are read.
 * Equal descriptions return the identical type object (bounded cache).
 *
 * @param desc a description
 * @throws TypeError naming the offending path when `desc` is malformed
 * @category Types and structs
 */
export function typeFromDescription(desc: unknown): Type {
  const v = new Validator();
  const root = v.node(desc, 'desc', 0);
  const key = v.key.join('');
  const hit = reviveCache.get(key);
  if (hit !== undefined) return hit;
  let t: Type;
  try {
    t = build(root);
  } catch (e) {
    if (e instanceof TypeError) {
      throw e.message.startsWith('invalid type description') ? e : typeError(`invalid type description: ${e.message}`, { cause: e });
    }
    if (e instanceof RangeError) throw typeError(`invalid type description: ${e.message}`, { cause: e });
    throw e;
  }
  if (reviveCache.size >= CACHE_LIMIT) {
    const oldest = reviveCache.keys().next();
    if (oldest.done !== true) reviveCache.delete(oldest.value);
  }
  reviveCache.set(key, t);
  return t;
}
