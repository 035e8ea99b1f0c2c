//! Synchronization: the process-shared lock ([`lock`]), the condition variable and the
//! semaphore (their records and word protocols), and the machinery that lets JavaScript
//! wait for any of them without blocking its event loop.
//!
//! Every wait is a *step function* (`poll`): it tries to finish (take the lock, take a
//! unit, consume a notification) and otherwise returns [`Step::Sleep`], naming the futex
//! word, the value it expects there, and when to look again. Two drivers run the same
//! step functions:
//!
//! - [`block_on`] sleeps the calling thread in `FUTEX_WAIT` (the blocking API);
//! - [`waiter`] runs a few dedicated threads per process that each watch up to 127
//!   waits at once with `futex_waitv` and report completions to the JavaScript thread
//!   that asked (the async API). No wait ever occupies a libuv pool thread.
//!
//! Sleeps are cut into slices of about [`RECHECK_MS`] (0.5 to 1.5 times it, ending on a
//! grid every wait of the process shares: [`Deadline::slice_ms`]): a dead lock holder is
//! noticed within one slice, and a wake-up lost to a waiter that gave up (timed out,
//! aborted, died) costs the others at most one slice. On the shared grid, a waiter thread
//! running thousands of idle waits wakes once a slice, not once for each of them.

pub mod condition;
pub mod liveness;
pub mod lock;
pub mod ops;
pub mod semaphore;
pub mod undo;
pub mod waiter;
pub mod word;

use crate::error::{Result, ShmError};
use crate::memory::mapping::{Pin, Region};
use crate::sys::{self, Deadline, WaitOutcome};
use std::marker::PhantomData;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

/// Longest sleep before a waiter looks again (dead holders, lost wake-ups).
pub const RECHECK_MS: f64 = 50.0;

/// Before a sleep on `word`, which held `v` a moment ago: sets `waiters` (the word's
/// "someone may be sleeping" bit, bit 31 of a lock or semaphore word) unless `v` has it,
/// so that whoever changes the word next wakes us. `false` if the word changed meanwhile:
/// look at it again before sleeping. The value to sleep on is then `v | waiters`.
#[inline]
pub fn announce_sleeper(word: &AtomicU32, v: u32, waiters: u32) -> bool {
    // Relaxed: the bit only asks the next writer to wake; the futex syscall orders our
    // sleep against its wake.
    v & waiters != 0
        || word
            .compare_exchange(v, v | waiters, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
}

/// What one step of a wait decided.
#[derive(Debug)]
pub enum Step<'a, T> {
    /// Finished with this result.
    Done(T),
    /// Sleep while `*word == expected`, until woken or `until`, then step again.
    Sleep {
        /// The futex word.
        word: &'a AtomicU32,
        /// The value seen there.
        expected: u32,
        /// When to step again at the latest.
        until: Option<Deadline>,
    },
}

impl<'a, T> Step<'a, T> {
    /// The same step with its result mapped.
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Step<'a, U> {
        match self {
            Step::Done(v) => Step::Done(f(v)),
            Step::Sleep {
                word,
                expected,
                until,
            } => Step::Sleep {
                word,
                expected,
                until,
            },
        }
    }
}

impl<'a, T> Step<'a, T> {
    /// The same step, unless it would sleep on a word of `region` after the mapping lost
    /// pages (another process shrank the object under it, or a page had no room): the
    /// word is then a private zero page nobody will ever change or wake, so the wait
    /// ends with `lost(error)` (`ERR_SHM_TRUNCATED` / `ENOSPC`) instead of sleeping
    /// forever. One load per slice while no mapping of the process lost pages.
    pub fn unless_lost(self, region: &Region, lost: impl FnOnce(ShmError) -> T) -> Step<'a, T> {
        match self {
            Step::Sleep { .. } => match region.check_intact() {
                Ok(()) => self,
                Err(e) => Step::Done(lost(e)),
            },
            done => done,
        }
    }
}

/// Runs a step function to completion on the calling thread, sleeping in the kernel
/// between steps.
pub fn block_on<'a, T>(step: impl FnMut() -> Step<'a, T>) -> T {
    block_on_unless(step, || false).expect("never stopped")
}

/// [`block_on`] that asks `stop` every [`RECHECK_MS`] or so (after a sleep) whether to
/// give up; returns `None` then. The JavaScript boundary uses it so that a worker thread
/// blocked in a wait can still be terminated.
pub fn block_on_unless<'a, T>(
    mut step: impl FnMut() -> Step<'a, T>,
    mut stop: impl FnMut() -> bool,
) -> Option<T> {
    let mut ask_at = Deadline::slice_ms(RECHECK_MS);
    loop {
        match step() {
            Step::Done(v) => return Some(v),
            Step::Sleep {
                word,
                expected,
                until,
            } => {
                // Woken, changed or timed out: the next step re-reads everything.
                let _: WaitOutcome = sys::futex_wait(word, expected, until);
                if ask_at.passed() {
                    if stop() {
                        return None;
                    }
                    ask_at = Deadline::slice_ms(RECHECK_MS);
                }
            }
        }
    }
}

/// A record of type `T` inside a pinned mapping: the mapping stays mapped while this
/// lives, so a wait running on another thread never touches unmapped memory.
#[derive(Debug)]
pub struct Pinned<T> {
    pin: Pin,
    offset: usize,
    /// 32-bit words right after the record that belong to it (a semaphore's undo table).
    tail_words: usize,
    _record: PhantomData<fn() -> T>,
}

impl<T> Pinned<T> {
    /// Pins `region` and checks that a `T` fits at `offset`, 4-byte aligned.
    ///
    /// # Errors
    /// `ERR_SHM_CLOSED`, `ERR_SHM_OUT_OF_BOUNDS`, `EINVAL` (misaligned).
    pub fn new(region: &Arc<Region>, offset: u64) -> Result<Pinned<T>> {
        Self::with_tail(region, offset, 0)
    }

    /// [`new`](Self::new) for a record followed by `tail_words` 32-bit words of its own.
    ///
    /// # Errors
    /// As [`new`](Self::new).
    pub fn with_tail(region: &Arc<Region>, offset: u64, tail_words: usize) -> Result<Pinned<T>> {
        const { assert!(std::mem::align_of::<T>() <= 4) };
        let pin = region.pin()?;
        let len = (std::mem::size_of::<T>() as u64).saturating_add(4 * tail_words as u64);
        pin.region().check_range(offset, len)?;
        if !offset.is_multiple_of(4) {
            return Err(ShmError::new(
                "EINVAL",
                format!("offset {offset} is not 4-byte aligned"),
            ));
        }
        Ok(Pinned {
            pin,
            offset: offset as usize,
            tail_words,
            _record: PhantomData,
        })
    }

    /// The words after the record (see [`with_tail`](Self::with_tail)).
    pub fn tail(&self) -> &[AtomicU32] {
        let start = self.pin.region().addr() + self.offset + std::mem::size_of::<T>();
        // SAFETY: `with_tail` checked that the words lie inside the mapping, 4-aligned
        // (the record is 4-aligned and its size a multiple of 4 for every record type);
        // the pin keeps them mapped as long as `self` lives; atomics allow shared access.
        unsafe { std::slice::from_raw_parts(start as *const AtomicU32, self.tail_words) }
    }

    /// The pinned region.
    pub fn region(&self) -> &Region {
        self.pin.region()
    }

    /// The record.
    pub fn get(&self) -> &T {
        // SAFETY: `new` checked that a T fits at the offset with T's alignment; the pin
        // keeps the pages mapped for as long as `self` (and so the reference) lives; the
        // records are all-atomic, so shared access from many threads and processes is
        // what they are made for.
        unsafe { &*((self.pin.region().addr() + self.offset) as *const T) }
    }

    /// Whether the record lies in `region`.
    pub fn is_in(&self, region: &Region) -> bool {
        std::ptr::eq(self.pin.region(), region)
    }
}

/// The `kind` tag of a record (the u32 at offset 8 of every 32-byte synchronization
/// record, and of container headers), so that other processes, C peers and tools can
/// tell records apart. 0 is untagged: a record made by `Lock.at` on zeroed memory, or by
/// an older version. `docs/FORMAT.md` §6 lists the same numbers.
pub mod kind {
    /// Untagged.
    pub const UNTAGGED: u32 = 0;
    /// `Lock` (and the heap's lock).
    pub const LOCK: u32 = 1;
    /// `RLock`.
    pub const RLOCK: u32 = 2;
    /// `Condition`.
    pub const CONDITION: u32 = 3;
    /// `Semaphore`.
    pub const SEMAPHORE: u32 = 4;
    /// `RWLock` (reserved).
    pub const RWLOCK: u32 = 5;
    /// `Barrier` (reserved).
    pub const BARRIER: u32 = 6;
    /// `Event` (reserved).
    pub const EVENT: u32 = 7;
    /// `SharedMap` header.
    pub const SHARED_MAP: u32 = 16;
    /// `Channel` header.
    pub const CHANNEL: u32 = 17;
}

/// How an async wait ended: the low byte is the outcome, [`code::OWNER_DIED`] a flag.
/// `lib/waits.ts` decodes the same numbers.
pub mod code {
    /// Acquired / notified.
    pub const OK: u32 = 0;
    /// The deadline passed (a condition wait still re-acquired its lock).
    pub const TIMED_OUT: u32 = 1;
    /// Aborted (a condition wait still re-acquired its lock).
    pub const CANCELLED: u32 = 2;
    /// The mapping was closed while waiting.
    pub const CLOSED: u32 = 3;
    /// The lock can never be acquired again.
    pub const NOT_RECOVERABLE: u32 = 4;
    /// The record is corrupt (a semaphore's undo table).
    pub const CORRUPT: u32 = 5;
    /// Every holder slot of an undo semaphore is taken by a live thread.
    pub const FULL: u32 = 6;
    /// The mapping lost the word's page while waiting (shrunk by another process, or no
    /// room for a page): `ERR_SHM_TRUNCATED` / `ENOSPC`.
    pub const LOST: u32 = 7;
    /// Flag: the lock was taken over from a holder that died.
    pub const OWNER_DIED: u32 = 0x100;
}

/// Why the driver interrupts a wait (bits, see `waiter::Shared`).
pub mod interrupt {
    /// The JavaScript side aborted the wait.
    pub const CANCEL: u32 = 1;
    /// A mapping the wait uses is being closed.
    pub const CLOSE: u32 = 2;
    /// The JavaScript environment that asked is gone (worker terminated): finish
    /// quietly, nobody will hear the result.
    pub const DROP: u32 = 4;
}

#[cfg(test)]
mod tests;
