// Interop with C: a C program written from docs/FORMAT.md alone (fixtures/interop.c)
// attaches to a segment made here, finds a named object through the heap directory,
// follows a pointer stored in it, and increments a counter under the object's lock with
// its own futex code, while two Node processes do the same with Lock.at. The count must
// be exact.
import { spawn } from 'node:child_process'
import test from 'ava'
import { cdef, describeType, Lock, MappedMemory, type Ref } from '../dist/index.js'
import { compileFixture, forkChild, segmentName } from './helpers.js'

const N = 10_000

// fixtures/interop.c speaks the Linux lock protocol of docs/FORMAT.md §6: futex(2) waits
// and wakes, liveness tokens held as OFD byte-range locks. macOS waits with os_sync /
// __ulock and names owners differently, so there the test is skipped and says why.
const linuxOnly = process.platform === 'linux' ? test : test.skip
const notHere = process.platform === 'linux' ? '' : ` (skipped on ${process.platform}: interop.c uses Linux futexes and /proc)`

/** Compiles fixtures/interop.c into a temporary directory removed at teardown. */
const compile = (t: Parameters<typeof segmentName>[0]): string => compileFixture(t, 'interop.c', ['-lrt'])

/** Runs the C program; resolves lines as they come and the exit status. */
function runC(t: Parameters<typeof segmentName>[0], exe: string, args: string[]) {
  const proc = spawn(exe, args, { stdio: ['ignore', 'pipe', 'pipe'] })
  t.teardown(() => { if (proc.exitCode === null) proc.kill('SIGKILL') })
  let out = ''
  let err = ''
  const waiting: Array<{ prefix: string; resolve: (l: string) => void }> = []
  const check = (): void => {
    for (const w of [...waiting]) {
      const line = out.split('\n').find((l) => l.startsWith(w.prefix))
      if (line !== undefined) {
        waiting.splice(waiting.indexOf(w), 1)
        w.resolve(line.slice(w.prefix.length))
      }
    }
  }
  proc.stdout.setEncoding('utf8').on('data', (d: string) => { out += d; check() })
  proc.stderr.setEncoding('utf8').on('data', (d: string) => { err += d })
  // 'close', not 'exit': stdout and stderr are fully read by then.
  const exited = new Promise<number | string>((resolve) => proc.on('close', (c, s) => resolve(c ?? s ?? -1)))
  return {
    exited,
    pid: proc.pid ?? -1,
    kill: () => proc.kill('SIGKILL'),
    stderr: () => err,
    line(prefix: string): Promise<string> {
      return new Promise((resolve, reject) => {
        waiting.push({ prefix, resolve })
        check()
        exited.then((c) => reject(new Error(`interop exited (${c}) before printing "${prefix}": ${err}`)))
      })
    },
  }
}

linuxOnly(`a C program following docs/FORMAT.md shares a lock and a counter with two Node processes${notHere}`, async (t) => {
  const exe = compile(t)
  const name = segmentName(t, 'interop')
  const mem = MappedMemory.create(name, { size: 1 << 20 })
  t.teardown(() => mem.close())
  const ffi = cdef('struct shared { uint32_t lock[8]; uint64_t count; const char *greeting; };')
  const type = ffi.typeof('struct shared')
  const shared = mem.heap.named('shared', type) as Ref & { count: bigint; greeting: Ref | null }
  shared.greeting = mem.new('char *', 'hello from node')
  const lock = Lock.at(mem, shared.offset)
  // Hold the lock until everyone is attached, so that all three start by contending.
  lock.acquire()
  const c = runC(t, exe, [name, 'shared', String(N)])
  const kids = [forkChild(t, 'interop-child.mjs'), forkChild(t, 'interop-child.mjs')]
  const job = JSON.parse(JSON.stringify({ memory: mem, name: 'shared', n: N }))
  kids.forEach((k) => k.proc.send(job))
  await Promise.all(kids.map((k) => k.message()))
  const typeSeen = await c.line('ready ')
  t.deepEqual(JSON.parse(typeSeen), describeType(type), 'C read the type description from the directory entry')
  t.is(await c.line('greeting '), 'hello from node', 'C followed a creator-space pointer')
  kids.forEach((k) => k.proc.send('go'))
  await new Promise((r) => setTimeout(r, 50))
  t.is(shared.count, 0n, 'nobody counted while the lock was held here')
  lock.release()
  const [done] = await Promise.all([c.line('done '), ...kids.map((k) => k.message())])
  const [count, waits, token] = /^(\d+) waits (\d+) token (\d+)$/.exec(done!)!.slice(1).map(Number)
  t.is(count, N)
  t.true(token! > 0 && token! < 0x3fff_ffff, 'C claimed a liveness token')
  t.true(waits! >= 1, 'the C program slept in FUTEX_WAIT and was woken by a Node release')
  t.log(`C slept ${waits} times in FUTEX_WAIT`)
  t.is(await c.exited, 0, c.stderr())
  await Promise.all(kids.map((k) => k.exited))
  t.is(shared.count, BigInt(3 * N), 'no increment lost between C and Node')
  t.false(lock.locked)
  t.is(new DataView(mem.buffer).getUint32(shared.offset, true), 0, 'the lock word is back to 0 (no WAITERS left behind)')
  mem.heap.check()
})

linuxOnly(`a C holder: alive, it keeps the lock past many liveness slices; SIGKILLed, Node recovers it within 250 ms${notHere}`, async (t) => {
  const exe = compile(t)
  const name = segmentName(t, 'interop-hold')
  const mem = MappedMemory.create(name, { size: 1 << 16 })
  t.teardown(() => mem.close())
  const shared = mem.heap.named('shared', cdef('struct shared { uint32_t lock[8]; uint64_t count; const char *greeting; };').typeof('struct shared')) as Ref
  const lock = Lock.at(mem, shared.offset)
  const c = runC(t, exe, [name, 'shared', '0', 'hold'])
  const token = Number(await c.line('holding '))
  const word = new Uint32Array(mem.buffer, shared.offset, 8)
  t.is(word[0]! & 0x3fff_ffff, token, 'the word names the C token')
  t.is(word[5], token, 'owner_token recorded')
  t.is(word[3], c.pid, 'owner_pid recorded')
  t.false(lock.acquire({ timeout: 300 }), 'a live C holder is never taken over')
  const t0 = performance.now()
  const got = lock.acquireAsync({ timeout: 3000 })
  await new Promise((r) => setTimeout(r, 20))
  c.kill()
  t.true(await got)
  const ms = performance.now() - t0 - 20
  t.log(`recovered ${ms.toFixed(0)} ms after the C holder was killed`)
  t.true(ms < 250)
  t.true(lock.ownerDied)
  lock.markConsistent()
  lock.release()
})

linuxOnly(`the C program refuses what is not a segment, and unknown names${notHere}`, async (t) => {
  const exe = compile(t)
  const name = segmentName(t, 'interop-bad')
  const mem = MappedMemory.create(name, { size: 1 << 16 })
  t.teardown(() => mem.close())
  const missing = runC(t, exe, [name, 'nope', '1'])
  t.is(await missing.exited, 2)
  t.regex(missing.stderr(), /no object named nope/)
  new DataView(mem.buffer).setUint8(0, 0x41) // break the magic
  const bad = runC(t, exe, [name, 'nope', '1'])
  t.is(await bad.exited, 2)
  t.regex(bad.stderr(), /wrong magic/)
})
