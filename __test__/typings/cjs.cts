// The same package seen by a CommonJS TypeScript consumer (module nodenext, `require`
// condition: dist/index.d.ts): the types are the ones the ESM consumer checks in api.mts.
import shmutils = require('shmutils')
import type { Equal } from './assert.mjs'
import shmDefault from 'shmutils'

const { MappedMemory, revive, types } = shmutils
type Check<T extends true> = T

declare const mem: InstanceType<typeof MappedMemory>
const count = mem.new('uint64_t', 0)
export type CountIsBigint = Check<Equal<typeof count, shmutils.Ref<bigint>>>
const P = types.struct('p', { x: types.i32 })
const p = mem.new(P)
export type MemberIsNumber = Check<Equal<typeof p.x, number>>
export const lock = revive<{ lock: shmutils.Lock }>({}).lock.acquire({ timeout: 1 })
// @ts-expect-error a string is not a uint64_t
mem.new('uint64_t', 'x')
// A default import (esModuleInterop reads `.default`): the whole API.
export type DefaultIsTheApi = Check<Equal<typeof shmDefault.MappedMemory, typeof shmutils.MappedMemory>>
