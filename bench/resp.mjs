/**
 * A minimal Redis client (RESP2 over `net`): enough to send commands one at a time and
 * read their replies, with no npm dependency.
 * @module
 */
import { connect } from 'node:net'

/** A reply could not be parsed yet: wait for more bytes. */
const INCOMPLETE = Symbol('incomplete')

/** A connection to a Redis server; replies come back in the order commands were sent. */
export class RespClient {
  /** @type {import('node:net').Socket} */
  #socket
  /** @type {Buffer} */
  #buffer = Buffer.alloc(0)
  /** @type {Array<{ resolve: (v: unknown) => void, reject: (e: Error) => void }>} */
  #waiting = []

  /** @param {import('node:net').Socket} socket */
  constructor(socket) {
    this.#socket = socket
    socket.setNoDelay(true)
    socket.on('data', (chunk) => this.#onData(chunk))
    socket.on('error', (e) => this.#failAll(e))
    socket.on('close', () => this.#failAll(new Error('connection closed')))
  }

  /**
   * Connects to a server on this machine.
   * @param {number} port
   * @param {string} [host]
   * @returns {Promise<RespClient>}
   */
  static connect(port, host = '127.0.0.1') {
    return new Promise((resolve, reject) => {
      const socket = connect(port, host)
      socket.once('connect', () => {
        socket.off('error', reject)
        resolve(new RespClient(socket))
      })
      socket.once('error', reject)
    })
  }

  /**
   * Sends one command and resolves with its reply (an error reply rejects).
   * @param {...(string | number)} args
   * @returns {Promise<unknown>}
   */
  command(...args) {
    let out = `*${args.length}\r\n`
    for (const a of args) {
      const s = String(a)
      out += `$${Buffer.byteLength(s)}\r\n${s}\r\n`
    }
    return new Promise((resolve, reject) => {
      this.#waiting.push({ resolve, reject })
      this.#socket.write(out)
    })
  }

  /** Closes the connection. */
  close() {
    this.#socket.end()
  }

  /** @param {Buffer} chunk */
  #onData(chunk) {
    this.#buffer = this.#buffer.length ? Buffer.concat([this.#buffer, chunk]) : chunk
    let pos = 0
    for (;;) {
      const parsed = parse(this.#buffer, pos)
      if (parsed === INCOMPLETE) break
      pos = parsed.next
      const w = this.#waiting.shift()
      if (!w) continue
      if (parsed.value instanceof Error) w.reject(parsed.value)
      else w.resolve(parsed.value)
    }
    this.#buffer = this.#buffer.subarray(pos)
  }

  /** @param {Error} e */
  #failAll(e) {
    for (const w of this.#waiting.splice(0)) w.reject(e)
  }
}

/**
 * Parses one reply at `pos`.
 * @param {Buffer} buf
 * @param {number} pos
 * @returns {{ value: unknown, next: number } | typeof INCOMPLETE}
 */
function parse(buf, pos) {
  const eol = buf.indexOf('\r\n', pos)
  if (eol < 0) return INCOMPLETE
  const type = String.fromCharCode(buf[pos])
  const line = buf.toString('utf8', pos + 1, eol)
  const next = eol + 2
  switch (type) {
    case '+':
      return { value: line, next }
    case '-':
      return { value: new Error(line), next }
    case ':':
      return { value: Number(line), next }
    case '$': {
      const len = Number(line)
      if (len < 0) return { value: null, next }
      if (buf.length < next + len + 2) return INCOMPLETE
      return { value: buf.toString('utf8', next, next + len), next: next + len + 2 }
    }
    case '*': {
      const n = Number(line)
      if (n < 0) return { value: null, next }
      const items = []
      let at = next
      for (let i = 0; i < n; i++) {
        const item = parse(buf, at)
        if (item === INCOMPLETE) return INCOMPLETE
        items.push(item.value)
        at = item.next
      }
      return { value: items, next: at }
    }
    default:
      throw new Error(`unexpected RESP type ${JSON.stringify(type)}`)
  }
}
