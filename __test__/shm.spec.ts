import test from 'ava'
import { MappedMemory, shmOpen, shmUnlink, SharedMemoryObject, ShmError } from '../dist/index.js'
import { binding } from '../dist/native.js'
import { segmentExists, segmentMode, segmentName, throws } from './helpers.js'

/** This thread's names that `unlinkOnExit` removes at exit, of those in `names`. */
function pendingOf(names: string[]): string[] {
  const pending = new Set(binding.exitUnlinkPending())
  return names.filter((n) => pending.has(n))
}

test('modes follow the original: r, r+, w, w+, x, x+', (t) => {
  const name = segmentName(t)
  throws(t, () => shmOpen(name, 'r'), { instanceOf: ShmError, code: 'ENOENT' })
  throws(t, () => shmOpen(name, 'r+'), { code: 'ENOENT' })
  const x = shmOpen(name, 'x+')
  t.is(x.name, name)
  t.is(x.truncate(8192).size(), 8192, 'truncate chains and size() reads fstat')
  x.close()
  throws(t, () => shmOpen(name, 'x'), { code: 'EEXIST', syscall: 'shm_open', path: name })
  throws(t, () => shmOpen(name, 'x+'), { code: 'EEXIST' })
  const wplus = shmOpen(name, 'w+')
  t.is(wplus.size(), 8192, 'w+ keeps contents')
  wplus.close()
  const rw = shmOpen(name, 'r+')
  t.is(rw.size(), 8192)
  rw.close()
  const w = shmOpen(name, 'w')
  t.is(w.size(), 0, 'w truncates')
  w.close()
  const r = shmOpen(name, 'r')
  t.true(r.readOnly)
  throws(t, () => r.truncate(4096), { code: 'EINVAL', syscall: 'ftruncate' })
  r.close()
})

test('default mode is w+ and default permissions are 0600', (t) => {
  const name = segmentName(t)
  const o = shmOpen(name)
  t.is(segmentMode(name), 0o600)
  o.close()
  const name2 = segmentName(t)
  shmOpen(name2, 'x', { permissions: 0o640 }).close()
  t.is(segmentMode(name2), 0o640)
})

test('permissions of a created object: exact with x/x+ (Linux), less the umask with w/w+; an existing object keeps its bits', (t) => {
  // Synchronous: no other test of this file runs while the umask is changed.
  const old = process.umask(0o022)
  try {
    const exact = process.platform === 'linux'
    for (const mode of ['x', 'x+', 'w', 'w+'] as const) {
      const name = segmentName(t)
      shmOpen(name, mode, { permissions: 0o666 }).close()
      t.is(segmentMode(name), mode.startsWith('x') && exact ? 0o666 : 0o644, mode)
      if (mode.startsWith('w')) {
        shmOpen(name, mode, { permissions: 0o600 }).close()
        t.is(segmentMode(name), 0o644, `${mode} on an existing object`)
      }
    }
  } finally {
    process.umask(old)
  }
})

test('names are normalized and validated', (t) => {
  const name = segmentName(t)
  const o = shmOpen(name.slice(1), 'x')
  t.is(o.name, name, 'one leading slash is added')
  o.close()
  throws(t, () => shmOpen(''), { instanceOf: TypeError, message: /"name"/ })
  throws(t, () => shmOpen('/'), { instanceOf: TypeError })
  throws(t, () => shmOpen('a/b'), { instanceOf: TypeError, message: /one leading/ })
  throws(t, () => shmOpen('//a'), { instanceOf: TypeError })
  throws(t, () => shmOpen('a\0b'), { instanceOf: TypeError })
  throws(t, () => shmOpen('x'.repeat(300)), { instanceOf: RangeError, message: /"name"/ })
  throws(t, () => shmOpen(42 as unknown as string), { instanceOf: TypeError, message: /"name"/ })
})

test('permissions beyond 0o777 are a RangeError, never reduced modulo 2 ** 32 (2 ** 32 + 0o644 created mode 644)', (t) => {
  const name = segmentName(t, 'permwrap')
  for (const permissions of [2 ** 32 + 0o644, 2 ** 32, 0o1000, 2 ** 53]) {
    throws(t, () => shmOpen(name, 'x', { permissions }), { instanceOf: RangeError, code: 'ERR_OUT_OF_RANGE', message: /"permissions"/ }, String(permissions))
    throws(t, () => MappedMemory.create(name, { size: 4096, permissions }), { instanceOf: RangeError, message: /"permissions"/ }, `create ${permissions}`)
  }
  t.false(segmentExists(name))
})

test('a bad permissions value is shown as given (-1 read 0o37777777777), the same for shmOpen and create', (t) => {
  const name = segmentName(t, 'permmsg')
  for (const [permissions, shown] of [[-1, /got -1$/], [2 ** 32 + 0o644, /got 4294967716 \(0o40000000644\)$/], [Number.NaN, /got NaN$/]] as const) {
    const a = throws(t, () => shmOpen(name, 'x', { permissions }), { instanceOf: RangeError, message: shown }, String(permissions))
    const b = throws(t, () => MappedMemory.create(name, { size: 4096, permissions }), { instanceOf: RangeError }, String(permissions))
    t.is(a?.message, b?.message, 'one check, one message')
  }
  for (const permissions of ['644', null, 0o644n]) {
    throws(t, () => shmOpen(name, 'x', { permissions: permissions as unknown as number }), { instanceOf: TypeError, message: /"permissions"/ }, String(permissions))
    throws(t, () => MappedMemory.create(name, { size: 4096, permissions: permissions as unknown as number }), { instanceOf: TypeError, message: /"permissions"/ }, String(permissions))
  }
  t.false(segmentExists(name))
  for (const permissions of [0o400, 0o777]) {
    shmOpen(name, 'x', { permissions }).close()
    t.is(segmentMode(name), permissions)
    shmUnlink(name)
  }
})

test("shmOpen: an options argument that is not an object is a TypeError naming \"options\" (null read its properties)", (t) => {
  const name = segmentName(t, 'shmopt')
  for (const bad of [null, 5, 'x']) throws(t, () => shmOpen(name, 'w+', bad as never), { instanceOf: TypeError, code: 'ERR_INVALID_ARG_TYPE', message: /"options"/ }, String(bad))
  t.false(segmentExists(name))
})

test('bad modes, permissions and sizes are typed errors', (t) => {
  const name = segmentName(t)
  throws(t, () => shmOpen(name, 'a' as 'r'), { instanceOf: TypeError, message: /"mode"/ })
  throws(t, () => shmOpen(name, 'w+', { permissions: 0o1777 }), { instanceOf: RangeError, message: /"permissions"/ })
  throws(t, () => shmOpen(name, 'w+', { permissions: 1.5 }), { instanceOf: RangeError, message: /"permissions"/ })
  const o = shmOpen(name)
  throws(t, () => o.truncate(-1), { instanceOf: RangeError, message: /"size"/ })
  throws(t, () => o.truncate(Number.NaN), { instanceOf: RangeError })
  throws(t, () => o.truncate('1' as unknown as number), { instanceOf: TypeError })
  o.close()
  // A failed system call names the segment (path), also where only a descriptor was used.
  const ro = shmOpen(name, 'r')
  throws(t, () => ro.truncate(4096), { instanceOf: ShmError, code: 'EINVAL', syscall: 'ftruncate', path: name })
  ro.close()
})

test('close twice is fine, use after close is ERR_SHM_CLOSED, dispose closes', (t) => {
  const name = segmentName(t)
  const o = shmOpen(name)
  o.close()
  t.notThrows(() => o.close())
  throws(t, () => o.size(), { code: 'ERR_SHM_CLOSED' })
  throws(t, () => o.fd, { code: 'ERR_SHM_CLOSED' })
  const p = shmOpen(name)
  p[Symbol.dispose]()
  throws(t, () => p.truncate(10), { code: 'ERR_SHM_CLOSED' })
  t.true(p instanceof SharedMemoryObject)
})

test('unlink removes the name; unlinking again is ENOENT', (t) => {
  const name = segmentName(t)
  const o = shmOpen(name)
  t.true(segmentExists(name))
  o.unlink()
  t.false(segmentExists(name))
  throws(t, () => shmUnlink(name), { instanceOf: ShmError, code: 'ENOENT', errno: 2, syscall: 'shm_unlink', path: name })
  t.notThrows(() => o.truncate(4096), 'the descriptor stays usable')
  o.close()
})

test('every unlink of the package forgets an unlinkOnExit name: shmUnlink (with or without the slash), SharedMemoryObject.unlink, mem.unlink', (t) => {
  const names = [segmentName(t, 'a'), segmentName(t, 'b'), segmentName(t, 'c'), segmentName(t, 'd'), segmentName(t, 'e')]
  for (const name of names) MappedMemory.create(name, { size: 4096, unlinkOnExit: true }).close()
  t.deepEqual(pendingOf(names), names)
  shmUnlink(names[0]!)
  shmUnlink(names[1]!.slice(1))
  const o = shmOpen(names[2]!, 'r')
  o.unlink()
  o.close()
  const m = MappedMemory.open(names[3]!)
  m.unlink()
  m.close()
  t.deepEqual(pendingOf(names), [names[4]], 'only the name still there is pending')
  // Removed by someone else: unlinking it here (ENOENT) forgets it too.
  binding.shmUnlink(names[4]!)
  throws(t, () => shmUnlink(names[4]!), { instanceOf: ShmError, code: 'ENOENT' })
  t.deepEqual(pendingOf(names), [])
})

test('unlinkOnExit names removed behind the package\'s back (another process, the CLI) leave the list as it grows', (t) => {
  // Removed through the native call, which the exit list never hears of.
  const names: string[] = []
  for (let i = 0; i < 1000; i++) {
    const name = segmentName(t, 'g')
    names.push(name)
    MappedMemory.create(name, { size: 4096, unlinkOnExit: true }).close()
    binding.shmUnlink(name)
  }
  // Pruned when the list doubles (from 256 names): never more than that of these.
  const left = pendingOf(names).length
  t.true(left <= 300, `${left} of 1000 removed names still pending`)
  const still = segmentName(t, 'h')
  MappedMemory.create(still, { size: 4096, unlinkOnExit: true }).close()
  for (let i = 0; i < 600; i++) {
    const name = segmentName(t, 'g')
    MappedMemory.create(name, { size: 4096, unlinkOnExit: true }).close()
    binding.shmUnlink(name)
  }
  t.deepEqual(pendingOf([still]), [still], 'a name that is still there stays')
  shmUnlink(still)
})
