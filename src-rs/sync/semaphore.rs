//! The process-shared counting semaphore.
//!
//! A semaphore is a 32-byte record (4-byte aligned) whose first word is the futex word.
//! The uncontended acquire and release are compare-and-swaps in JavaScript
//! (`lib/semaphore.ts`); only sleeping and waking come here.
//!
//! ## The word
//!
//! | bits   | name      | meaning                                                  |
//! |--------|-----------|----------------------------------------------------------|
//! | 0..=30 | count     | units available (at most 2^31 - 1)                       |
//! | 31     | `WAITERS` | someone may be sleeping: a release must wake             |
//!
//! | who                     | does                                                    |
//! |-------------------------|---------------------------------------------------------|
//! | acquire, fast           | `c > 0`: CAS `v → v - 1` (keeps `WAITERS`)              |
//! | acquire, contended      | `c > 0`: CAS `v → (c - 1) \| WAITERS` (others may sleep |
//! |                         | too), and if units remain wake one more (chain);        |
//! |                         | `c == 0`: set `WAITERS`, sleep on `v \| WAITERS`        |
//! | release(n)              | CAS `v → c + n` (clears `WAITERS`); if it was set, wake |
//! |                         | `n`; each woken waiter that takes a unit sets it again  |
//!
//! As with the lock, sleeps are sliced ([`RECHECK_MS`]) so a wake-up consumed by a waiter
//! that then gave up or died costs the others at most one slice.
//!
//! ## The rest of the record
//!
//! | offset | field     | meaning                                                    |
//! |--------|-----------|------------------------------------------------------------|
//! | 0      | `word`    | the word above                                             |
//! | 4      | `holders` | 0: a plain semaphore; n > 0: an *undo* semaphore whose     |
//! |        |           | table of n holders follows the record (`super::undo`)      |
//! | 8      | `kind`    | 4 (`super::kind::SEMAPHORE`); 0 untagged                   |
//! | 12..32 | reserved  |                                                            |
//!
//! An undo semaphore never uses the compare-and-swaps above outside its table's guard:
//! see `super::undo`.

use super::{announce_sleeper, Step, RECHECK_MS};
use crate::error::{Result, ShmError};
use crate::sys::{self, Deadline};
use std::sync::atomic::{AtomicU32, Ordering};

/// Size of a semaphore record in bytes.
pub const RECORD_SIZE: u64 = 32;
/// Someone may be sleeping: release must wake.
pub const WAITERS: u32 = 1 << 31;
/// The count bits.
pub const COUNT_MASK: u32 = !WAITERS;

/// A semaphore record in shared memory (see the module docs).
#[repr(C)]
#[derive(Debug)]
pub struct SemRecord {
    /// The futex word.
    pub word: AtomicU32,
    /// Number of undo-table holder slots after the record (0: plain semaphore).
    pub holders: AtomicU32,
    /// Kind tag (`super::kind::SEMAPHORE`).
    pub kind: AtomicU32,
    /// Reserved.
    pub reserved: [AtomicU32; 5],
}

impl SemRecord {
    /// Takes a unit if one is available now.
    #[inline]
    pub fn try_acquire(&self) -> bool {
        // Acquire: what the releaser wrote before its Release is visible to us.
        self.word
            .fetch_update(Ordering::Acquire, Ordering::Relaxed, |v| {
                (v & COUNT_MASK > 0).then_some(v - 1)
            })
            .is_ok()
    }

    /// Returns `n` units (the native twin of the JavaScript release).
    ///
    /// # Errors
    /// `RangeError` when the count would exceed 2^31 - 1.
    pub fn release(&self, n: u32) -> Result<()> {
        // Release: our writes happen-before the acquirer's Acquire.
        let old = self
            .word
            .fetch_update(Ordering::Release, Ordering::Relaxed, |v| {
                (v & COUNT_MASK).checked_add(n).filter(|c| *c <= COUNT_MASK)
            })
            .map_err(|_| ShmError::range("The semaphore's value would exceed 2^31 - 1"))?;
        if old & WAITERS != 0 {
            self.wake(n);
        }
        Ok(())
    }

    /// Wakes up to `n` sleepers (after a release that cleared `WAITERS`).
    pub fn wake(&self, n: u32) {
        sys::futex_wake(&self.word, n);
    }

    /// Takes a unit, sleeping while there is none, until `deadline`. `false` on timeout.
    pub fn acquire(&self, deadline: Option<Deadline>) -> bool {
        self.acquire_unless(deadline, || false)
            .expect("never stopped")
    }

    /// [`acquire`](Self::acquire) that asks `stop` after every sleep whether to give up
    /// (`None`).
    pub fn acquire_unless(
        &self,
        deadline: Option<Deadline>,
        stop: impl FnMut() -> bool,
    ) -> Option<bool> {
        if self.try_acquire() {
            return Some(true);
        }
        let mut wait = SemWait::new(deadline);
        let r = super::block_on_unless(|| wait.poll(self), stop);
        if r.is_none() {
            wait.abandon(self);
        }
        r
    }
}

/// A contended semaphore acquire in progress: a step function for both drivers (see
/// `crate::sync::lock::LockWait`). Finishes with `true` (took a unit) or `false` (timed out).
#[derive(Debug, Clone, Copy)]
pub struct SemWait {
    deadline: Option<Deadline>,
}

impl SemWait {
    /// A wait until `deadline` (`None`: forever).
    pub fn new(deadline: Option<Deadline>) -> SemWait {
        SemWait { deadline }
    }

    /// One step.
    pub fn poll<'a>(&mut self, rec: &'a SemRecord) -> Step<'a, bool> {
        loop {
            // Relaxed: a snapshot; the compare-and-swap below is what takes a unit.
            let v = rec.word.load(Ordering::Relaxed);
            let c = v & COUNT_MASK;
            if c > 0 {
                // Acquire: pairs with the releaser's Release. We were contending, so
                // keep WAITERS set: others may still sleep.
                if rec
                    .word
                    .compare_exchange(v, (c - 1) | WAITERS, Ordering::Acquire, Ordering::Relaxed)
                    .is_err()
                {
                    continue;
                }
                if c > 1 {
                    // The release may have woken fewer sleepers than units remain.
                    rec.wake(1);
                }
                return Step::Done(true);
            }
            if !announce_sleeper(&rec.word, v, WAITERS) {
                continue;
            }
            if self.deadline.is_some_and(|d| d.passed()) {
                return Step::Done(false);
            }
            let slice = Deadline::slice_ms(RECHECK_MS);
            return Step::Sleep {
                word: &rec.word,
                expected: v | WAITERS,
                until: Some(self.deadline.map_or(slice, |d| d.min(slice))),
            };
        }
    }

    /// Gives the wait up: passes on a wake-up it may have consumed.
    pub fn abandon(&self, rec: &SemRecord) {
        // Relaxed: a hint; a needless wake costs a syscall, a missed one a slice.
        if rec.word.load(Ordering::Relaxed) & COUNT_MASK > 0 {
            rec.wake(1);
        }
    }
}
