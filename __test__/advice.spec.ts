// Messages that tell the user what to do, and objects that show users nothing internal.
import test from 'ava'
import { inspect } from 'node:util'
import {
  CBase, Condition, Lock, MappedMemory, RLock, Ref, Semaphore, ShmError, cdef, shmOpen, shmUnlink,
} from '../dist/index.js'
import { segmentName, throws } from './helpers.js'

test('EEXIST from create and exclusive shmOpen says how to open the old segment or remove it', (t) => {
  const name = segmentName(t, 'exists')
  const mem = MappedMemory.create(name, { size: 4096 })
  t.teardown(() => mem.close())
  const e = throws(t, () => MappedMemory.create(name, { size: 4096 }), {
    instanceOf: ShmError, code: 'EEXIST', errno: 17, syscall: 'shm_open', path: name,
  })
  t.regex(e!.message, new RegExp(`MappedMemory\\.open\\("${name}"\\)`))
  t.regex(e!.message, new RegExp(`shmUnlink\\("${name}"\\)`))
  t.regex(e!.message, /mem\.unlink\(\)/)
  t.regex(e!.message, new RegExp(`npx shmutils rm ${name}`))
  const x = throws(t, () => shmOpen(name, 'x'), { instanceOf: ShmError, code: 'EEXIST', path: name })
  t.regex(x!.message, /'r\+'/)
  t.regex(x!.message, /shmUnlink/)
  // Following the advice works: open it, or remove it and create afresh.
  const again = MappedMemory.open(name)
  again.close()
  shmUnlink(name)
  MappedMemory.create(name, { size: 4096 }).close()
})

test('indexing past the one char a char * member points at says how to view the characters', (t) => {
  const name = segmentName(t, 'char')
  const mem = MappedMemory.create(name, { size: 1 << 16 })
  t.teardown(() => mem.close())
  const ffi = cdef('struct person { char *name; };')
  class Person extends CBase<{ name: Ref<number> | null }>(ffi, 'struct person') {}
  const p = Person.withHeap(mem).new('Ada')
  const first = p.name!
  t.is(first.get(0), 'A'.charCodeAt(0))
  const e = throws(t, () => first.get(1), { instanceOf: RangeError, message: /"i"/ })
  t.regex(e!.message, /one char, not an array/)
  t.regex(e!.message, /Ref\.at\(ref\.memory, ref\.offset, 'char\[length\]'\)/)
  // The advice, followed:
  const chars = Ref.at(first.memory, first.offset, 'char[4]')
  t.deepEqual(chars.value, [...Buffer.from('Ada\0')])
  t.is(chars.get(1), 'd'.charCodeAt(0))
})

test('public objects show no internals: own keys and util.inspect', (t) => {
  const name = segmentName(t, 'inspect')
  const mem = MappedMemory.create(name, { size: 1 << 16 })
  t.teardown(() => mem.close())
  const lock = new Lock(mem)
  const objects: object[] = [mem, mem.heap, lock, new RLock(mem), new Condition(lock), new Semaphore(mem, 1), mem.new('int32_t', 1)]
  for (const o of objects) {
    const internal = Object.keys(o).filter((k) => k.startsWith('_'))
    t.deepEqual(internal, [], `${o.constructor.name} has no _ keys`)
    t.notRegex(inspect(o, { depth: 4 }), /\b_\w+:/, `${o.constructor.name} inspects without _ members`)
  }
})
