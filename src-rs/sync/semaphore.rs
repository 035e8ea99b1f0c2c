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
//! ## Eventual fairness
//!
//! As with the lock (`super::lock`, "Eventual fairness"): a woken sleeper on another core
//! loses the unit to a releaser that takes it back at once, release after release. So a
//! release that sees `WAITERS` now and then (JavaScript decides: at most once per 4 ms,
//! `lib/semaphore.ts`) adds its units to `handed` instead of the count, and wakes as many
//! sleepers ([`SemRecord::wake_after_hand_off`]). Only a wait that slept takes a handed unit;
//! one that has not sleeps [`HANDOFF_GRACE_MS`] at most first (a sleeper slow to run must
//! not keep units idle). Handed units nobody takes go back to the count: the release's
//! wake found fewer sleepers than units, a wait given up finds nobody to wake, a wait at
//! its deadline (`tryAcquire()` included) finds nobody asleep, or a sleeper's slice ends.
//! A plain semaphore's value is the count plus `handed`. An undo semaphore never hands off.
//!
//! ## The rest of the record
//!
//! | offset | field     | meaning                                                    |
//! |--------|-----------|------------------------------------------------------------|
//! | 0      | `word`    | the word above                                             |
//! | 4      | `holders` | 0: a plain semaphore; n > 0: an *undo* semaphore whose     |
//! |        |           | table of n holders follows the record (`super::undo`)      |
//! | 8      | `kind`    | 4 (`super::kind::SEMAPHORE`); 0 untagged                   |
//! | 12     | `handed`  | units a release handed to sleepers (see above)             |
//! | 16..32 | reserved  |                                                            |
//!
//! An undo semaphore never uses the compare-and-swaps above outside its table's guard:
//! see `super::undo`.

use super::lock::HANDOFF_GRACE_MS;
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
    /// Units handed to sleepers (see "Eventual fairness" above).
    pub handed: AtomicU32,
    /// Reserved.
    pub reserved: [AtomicU32; 4],
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

    /// Wakes up to `n` sleepers (after a release that cleared `WAITERS`); how many it woke.
    pub fn wake(&self, n: u32) -> u32 {
        sys::futex_wake(&self.word, n)
    }

    /// After a release that added `n` units to `handed` (see "Eventual fairness"): wakes
    /// up to `n` sleepers to take them, and gives the units it found no sleeper for back
    /// to the count.
    pub fn wake_after_hand_off(&self, n: u32) {
        let woken = self.wake(n);
        if woken < n {
            self.take_back(n - woken);
        }
    }

    /// Moves up to `n` handed units back to the count (nobody asleep to take them).
    fn take_back(&self, n: u32) {
        // Acquire/Release: the units pass from one word to the other with the releaser's
        // writes (its Release add to `handed`) on to whoever takes them from the count.
        let Ok(h) = self
            .handed
            .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |h| {
                (h > 0).then(|| h - h.min(n))
            })
        else {
            return;
        };
        let k = h.min(n);
        // The total stays within 2^31 - 1: the units were counted before (a release
        // checks the count plus `handed`).
        let old = self
            .word
            .fetch_update(Ordering::Release, Ordering::Relaxed, |v| {
                // (Saturating: `handed` is shared memory, a hostile value included.)
                Some((v & WAITERS) | (v & COUNT_MASK).saturating_add(k).min(COUNT_MASK))
            })
            .unwrap_or(0);
        if old & WAITERS != 0 {
            // A wait that found the units handed meanwhile may sleep (for the grace): it
            // takes from the count now.
            self.wake(k);
        }
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
    /// Whether this wait slept: then it may take a handed unit.
    slept: bool,
}

impl SemWait {
    /// A wait until `deadline` (`None`: forever).
    pub fn new(deadline: Option<Deadline>) -> SemWait {
        SemWait {
            deadline,
            slept: false,
        }
    }

    /// Whether handed units found by this wait at its deadline have nobody left to take
    /// them (a woken sleeper takes one; with none asleep, this wait does).
    fn unclaimed(&self, rec: &SemRecord) -> bool {
        self.deadline.is_some_and(|d| d.passed()) && rec.wake(1) == 0
    }

    /// One step.
    pub fn poll<'a>(&mut self, rec: &'a SemRecord) -> Step<'a, bool> {
        loop {
            // Relaxed: a snapshot; the compare-and-swap carries the ordering.
            let h = rec.handed.load(Ordering::Relaxed);
            if h > 0 && (self.slept || self.unclaimed(rec)) {
                // Acquire: pairs with the releaser's add to `handed`.
                if rec
                    .handed
                    .compare_exchange(h, h - 1, Ordering::Acquire, Ordering::Relaxed)
                    .is_err()
                {
                    continue;
                }
                if h > 1 {
                    // More were handed than this: wake a sleeper for the next one.
                    rec.wake(1);
                }
                return Step::Done(true);
            }
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
            let mut until = self.deadline.map_or(slice, |d| d.min(slice));
            if h > 0 {
                // Handed to sleepers that have not run yet: they get the grace, then this
                // wait (having slept) takes a unit itself.
                until = until.min_after_ms(HANDOFF_GRACE_MS);
            }
            self.slept = true;
            return Step::Sleep {
                word: &rec.word,
                expected: v | WAITERS,
                until: Some(until),
            };
        }
    }

    /// Gives the wait up: passes on a wake-up it may have consumed; handed units with
    /// nobody asleep to take them go back to the count.
    pub fn abandon(&self, rec: &SemRecord) {
        // Relaxed: hints; a needless wake costs a syscall, a missed one a slice.
        let handed = rec.handed.load(Ordering::Relaxed);
        if handed == 0 && rec.word.load(Ordering::Relaxed) & COUNT_MASK == 0 {
            return;
        }
        let woken = rec.wake(1);
        if woken == 0 && handed > 0 {
            rec.take_back(u32::MAX);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::mapping::{shared_anon_for_tests, Region};

    fn record(r: &Region) -> &SemRecord {
        // SAFETY: in bounds, 4-aligned, zero-initialised by mmap; lives as long as `r`.
        unsafe { &*(r.addr() as *const SemRecord) }
    }

    /// Handed units: a wait that slept takes one; one that never slept sleeps (the grace
    /// at most); one at its deadline takes one when nobody sleeps who could.
    #[test]
    fn handed_units_go_to_waits_that_slept() {
        let r = shared_anon_for_tests(4096);
        let rec = record(&r);
        rec.handed.store(2, Ordering::Relaxed);
        let mut fresh = SemWait::new(None);
        match fresh.poll(rec) {
            Step::Sleep { until, .. } => {
                let left = until.expect("a deadline").remaining_nanos();
                assert!(left <= (HANDOFF_GRACE_MS * 1e6) as u128, "sleeps {left} ns");
            }
            s => panic!("expected a sleep: {s:?}"),
        }
        assert_eq!(rec.handed.load(Ordering::Relaxed), 2, "untouched");
        assert!(
            matches!(fresh.poll(rec), Step::Done(true)),
            "after its sleep"
        );
        assert_eq!(rec.handed.load(Ordering::Relaxed), 1);
        let mut at_deadline = SemWait::new(Some(Deadline::after_ms(0.0)));
        assert!(matches!(at_deadline.poll(rec), Step::Done(true)));
        assert_eq!(rec.handed.load(Ordering::Relaxed), 0);
        assert_eq!(rec.word.load(Ordering::Relaxed) & COUNT_MASK, 0);
        r.close();
    }

    /// Units handed with nobody asleep go back to the count (keeping `WAITERS`): after
    /// the release's wake, and when a wait gives up.
    #[test]
    fn handed_units_nobody_takes_go_back_to_the_count() {
        let r = shared_anon_for_tests(4096);
        let rec = record(&r);
        rec.word.store(1 | WAITERS, Ordering::Relaxed);
        rec.handed.store(3, Ordering::Relaxed);
        rec.wake_after_hand_off(3);
        assert_eq!(rec.handed.load(Ordering::Relaxed), 0);
        assert_eq!(rec.word.load(Ordering::Relaxed), 4 | WAITERS);
        rec.handed.store(2, Ordering::Relaxed);
        SemWait::new(None).abandon(rec);
        assert_eq!(rec.handed.load(Ordering::Relaxed), 0);
        assert_eq!(rec.word.load(Ordering::Relaxed), 6 | WAITERS);
        r.close();
    }
}
