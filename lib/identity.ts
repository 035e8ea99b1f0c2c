/**
 * Who the calling thread is, as lock records store it (kernel thread id + start time).
 * Each worker thread loads the package anew, so this is per thread.
 * @module
 */
import { binding } from './native.js'

const id = binding.threadIdentity()

/** Kernel thread id of this JavaScript thread (fits in 30 bits). */
export const TID: number = id.tid
/** Low half of this thread's start time. */
export const START_LO: number = id.startLo | 0
/** High half of this thread's start time. */
export const START_HI: number = id.startHi | 0
