//! A semaphore's undo table: what `SEM_UNDO` gives System V semaphores. A unit taken by
//! a thread that dies (killed, exits, worker terminated) is given back.
//!
//! Taking a unit and remembering who took it are two writes to two words; a taker that
//! died between them would either lose a unit or have it returned twice. So everything
//! that changes the count of an undo semaphore runs under the table's *guard* (a lock
//! record, held for a few instructions), after writing a *journal* that lets whoever
//! takes the guard over from a dead holder finish or forget the dead holder's step.
//!
//! ## Layout (right after the 32-byte semaphore record, whose `holders` field is n)
//!
//! | offset  | size | field         | meaning                                          |
//! |---------|------|---------------|--------------------------------------------------|
//! | 0       | 32   | `guard`       | a lock record (`kind` 1): held around every change |
//! | 32      | 4    | `j_slot`      | journal: the slot being changed, `0xffffffff` none |
//! | 36      | 4    | `j_before`    | journal: the count before the change             |
//! | 40      | 4    | `j_after`     | journal: the slot's `held` once the change is done |
//! | 44      | 4    | `last_sweep`  | `CLOCK_MONOTONIC` ms (wrapping) of the last sweep |
//! | 48 + 8i | 4    | `token[i]`    | liveness token of the thread slot i belongs to, 0 free |
//! | 52 + 8i | 4    | `held[i]`     | units that thread holds                           |
//!
//! ## Steps (all under the guard)
//!
//! | op        | does                                                                   |
//! |-----------|------------------------------------------------------------------------|
//! | take      | count 0: (sweep if due) give up, sleep on the word outside the guard;   |
//! |           | else find or claim the caller's slot; journal (slot, count, held + 1);  |
//! |           | count -= 1; held += 1; clear the journal                                |
//! | release n | journal (slot, count, held - min(n, held)) if the caller has a slot;    |
//! |           | count += n (clears `WAITERS`); held updated, slot freed at 0; clear      |
//! | sweep     | for each slot whose token is dead: journal (slot, count, 0);            |
//! |           | count += held; slot freed; clear. Due every `RECHECK_MS` while waiting  |
//! |           | or when a take finds no unit or no free slot                            |
//! | recover   | the guard came with `OWNER_DIED`: if the journal names a slot and the   |
//! |           | count differs from `j_before`, the dead holder changed the count: set   |
//! |           | the slot's `held` to `j_after` (freeing it at 0); clear the journal      |
//!
//! Only guard holders change the count bits of the word (waiters only set `WAITERS`), so
//! "count differs from `j_before`" means exactly "the dead holder's change happened".
//! Units are per thread: a thread's release first pays back what it holds; units
//! released by a thread that holds none are plain releases.

use super::lock::{Acquired, LockRecord, LockWait, Owner};
use super::semaphore::{SemRecord, COUNT_MASK, WAITERS};
use super::{Step, RECHECK_MS};
use crate::error::{Result, ShmError};
use crate::sys::{self, Deadline, Liveness};
use std::sync::atomic::{AtomicU32, Ordering};

/// The most holder slots a table may have.
pub const MAX_HOLDERS: u32 = 65_536;
/// Default number of holder slots.
pub const DEFAULT_HOLDERS: u32 = 64;
/// 32-bit words of the table before the slots.
const HEADER_WORDS: usize = 12;
const J_SLOT: usize = 8;
const J_BEFORE: usize = 9;
const J_AFTER: usize = 10;
const LAST_SWEEP: usize = 11;
const NONE: u32 = u32::MAX;
/// How long a release waits for the guard at most (a hostile guard word must not hang
/// anyone): `ETIMEDOUT` after that. A take waits until its own deadline.
const GUARD_WAIT_MS: f64 = 10_000.0;
/// How long a try waits for the guard: live holders keep it for a few instructions, so a
/// try waits that out rather than fail while units are free; a guard kept longer (a
/// stuck, stopped or hostile peer) makes the try `false`.
const GUARD_TRY_MS: f64 = 2.0;

/// Words of the table of a semaphore with `holders` slots.
pub fn table_words(holders: u32) -> usize {
    HEADER_WORDS + 2 * holders as usize
}

/// Bytes of the table of a semaphore with `holders` slots.
pub fn table_bytes(holders: u32) -> u64 {
    4 * table_words(holders) as u64
}

/// An undo table over the words after a semaphore record.
#[derive(Debug, Clone, Copy)]
pub struct UndoTable<'a> {
    sem: &'a SemRecord,
    words: &'a [AtomicU32],
}

/// How a take under the guard went.
enum Took {
    Yes,
    /// No unit now.
    Empty,
}

fn corrupt(why: &str) -> ShmError {
    ShmError::new(
        "ERR_SHM_CORRUPT",
        format!("the semaphore's undo table is corrupt: {why}"),
    )
}

fn now_ms() -> u32 {
    (sys::monotonic_nanos() / 1_000_000) as u32
}

impl<'a> UndoTable<'a> {
    /// The table of `sem`, whose words follow it (`tail`, as many as `table_words`
    /// says for the record's `holders`).
    pub fn new(sem: &'a SemRecord, tail: &'a [AtomicU32]) -> Result<UndoTable<'a>> {
        if tail.len() < HEADER_WORDS + 2 {
            return Err(corrupt("no room for its slots"));
        }
        Ok(UndoTable { sem, words: tail })
    }

    /// Number of holder slots.
    fn holders(&self) -> usize {
        (self.words.len() - HEADER_WORDS) / 2
    }

    fn guard(&self) -> &'a LockRecord {
        const { assert!(std::mem::size_of::<LockRecord>() == 32) };
        // SAFETY: the first 8 words are in the slice (checked in `new`); LockRecord is
        // repr(C) of 8 AtomicU32 with alignment 4, so the cast views exactly them.
        unsafe { &*(self.words.as_ptr() as *const LockRecord) }
    }

    fn token(&self, i: usize) -> &'a AtomicU32 {
        &self.words[HEADER_WORDS + 2 * i]
    }

    fn held(&self, i: usize) -> &'a AtomicU32 {
        &self.words[HEADER_WORDS + 2 * i + 1]
    }

    /// Writes the journal before a change of the count (Relaxed: the guard's
    /// acquire/release orders everything done under it).
    fn journal(&self, slot: usize, before: u32, after: u32) {
        self.words[J_BEFORE].store(before, Ordering::Relaxed);
        self.words[J_AFTER].store(after, Ordering::Relaxed);
        self.words[J_SLOT].store(slot as u32, Ordering::Relaxed);
    }

    fn clear_journal(&self) {
        self.words[J_SLOT].store(NONE, Ordering::Relaxed);
    }

    fn count(&self) -> u32 {
        self.sem.word.load(Ordering::Relaxed) & COUNT_MASK
    }

    /// Sets slot `i` to hold `held` units (freeing it at 0).
    fn set_held(&self, i: usize, held: u32) {
        self.held(i).store(held, Ordering::Relaxed);
        if held == 0 {
            self.token(i).store(0, Ordering::Relaxed);
        }
    }

    /// Formats a fresh table (every slot free, no journal).
    pub fn format(&self) {
        for w in &self.words[..HEADER_WORDS] {
            w.store(0, Ordering::Relaxed);
        }
        self.guard()
            .kind
            .store(super::kind::LOCK, Ordering::Relaxed);
        self.clear_journal();
        for i in 0..self.holders() {
            self.set_held(i, 0);
        }
    }

    /// Finishes or forgets the step of a guard holder that died (the guard was taken
    /// with `OWNER_DIED`).
    fn recover(&self) {
        let slot = self.words[J_SLOT].load(Ordering::Relaxed) as usize;
        if slot < self.holders()
            && self.count() != self.words[J_BEFORE].load(Ordering::Relaxed) & COUNT_MASK
        {
            self.set_held(slot, self.words[J_AFTER].load(Ordering::Relaxed));
        }
        self.clear_journal();
    }

    /// The slot of `me`, claiming a free one if `claim`.
    fn slot_of(&self, me: Owner, claim: bool) -> Option<usize> {
        let n = self.holders();
        if let Some(i) = (0..n).find(|&i| self.token(i).load(Ordering::Relaxed) == me.token) {
            return Some(i);
        }
        if !claim {
            return None;
        }
        let i = (0..n).find(|&i| self.token(i).load(Ordering::Relaxed) == 0)?;
        self.held(i).store(0, Ordering::Relaxed);
        self.token(i).store(me.token, Ordering::Relaxed);
        Some(i)
    }

    /// Gives back the units of every holder that died; returns how many.
    fn sweep(&self, me: Owner) -> u32 {
        let mut returned = 0u32;
        for i in 0..self.holders() {
            let t = self.token(i).load(Ordering::Relaxed);
            if t == 0 || me.liveness_of(t, None) != Liveness::Dead {
                continue;
            }
            let held = self.held(i).load(Ordering::Relaxed);
            let c = self.count();
            let back = held.min(COUNT_MASK - c);
            self.journal(i, c, 0);
            if back > 0 {
                // Release: a taker that takes these units sees what the dead held.
                self.sem.word.fetch_add(back, Ordering::Release);
            }
            self.set_held(i, 0);
            self.clear_journal();
            returned = returned.saturating_add(back);
        }
        self.words[LAST_SWEEP].store(now_ms(), Ordering::Relaxed);
        returned
    }

    fn sweep_due(&self) -> bool {
        now_ms().wrapping_sub(self.words[LAST_SWEEP].load(Ordering::Relaxed)) >= RECHECK_MS as u32
    }

    /// Takes a unit for `me` (guard held). `contended`: the caller slept before (others
    /// may still sleep: keep `WAITERS` and pass a surplus on). Returns how many sleepers
    /// to wake after leaving the guard.
    fn take_locked(&self, me: Owner, contended: bool) -> Result<(Took, u32)> {
        let mut wake = 0;
        if self.count() == 0 && self.sweep_due() {
            wake += self.sweep(me);
        }
        let c = self.count();
        if c == 0 {
            return Ok((Took::Empty, wake));
        }
        let slot = match self.slot_of(me, true) {
            Some(s) => s,
            None => {
                wake += self.sweep(me);
                self.slot_of(me, true).ok_or_else(|| {
                    ShmError::new(
                        "EAGAIN",
                        format!(
                            "{} threads already hold units of this undo semaphore: create it \
                             with more holders",
                            self.holders()
                        ),
                    )
                })?
            }
        };
        let held = self.held(slot).load(Ordering::Relaxed);
        self.journal(slot, c, held.saturating_add(1));
        // Acquire: what the releaser wrote before its Release is visible to us. Only
        // guard holders change the count bits, and c > 0: no borrow into WAITERS.
        let old = self.sem.word.fetch_sub(1, Ordering::Acquire);
        if contended {
            self.sem.word.fetch_or(WAITERS, Ordering::Relaxed);
            if c > 1 {
                wake += 1; // the release may have woken fewer sleepers than units remain
            }
        } else if old & WAITERS != 0 && c > 1 {
            wake += 1;
        }
        self.held(slot)
            .store(held.saturating_add(1), Ordering::Relaxed);
        self.clear_journal();
        Ok((Took::Yes, wake))
    }

    /// Returns `n` units (guard held); pays back what `me` holds first. Returns how many
    /// sleepers to wake.
    fn release_locked(&self, me: Owner, n: u32) -> Result<u32> {
        let c = self.count();
        if c.checked_add(n).is_none_or(|s| s > COUNT_MASK) {
            return Err(ShmError::range(format!(
                "Releasing {n} would raise the semaphore's value {c} above {COUNT_MASK}"
            )));
        }
        let slot = self.slot_of(me, false);
        let after = slot.map(|s| {
            let held = self.held(s).load(Ordering::Relaxed);
            let after = held - held.min(n);
            self.journal(s, c, after);
            after
        });
        // Release: our writes happen-before the taker's Acquire. Clears WAITERS: we wake
        // the sleepers it announced; those that then take a unit set it again.
        let old = self.sem.word.swap(c + n, Ordering::Release);
        if let (Some(s), Some(after)) = (slot, after) {
            self.set_held(s, after);
            self.clear_journal();
        }
        Ok(if old & WAITERS != 0 { n } else { 0 })
    }

    /// Runs `f` holding the guard, then wakes as many sleepers as `f` says. Waits for the
    /// guard at most `wait_ms` (0: tries once, taking it over if its holder is dead);
    /// `Ok(None)` when it stayed taken that long.
    fn guarded<R>(
        &self,
        me: Owner,
        wait_ms: f64,
        f: impl FnOnce(&Self) -> Result<(R, u32)>,
    ) -> Result<Option<R>> {
        let entered = match self.guard().try_lock(me) {
            Ok(true) => true,
            _ => {
                let mut wait = None;
                let deadline = Deadline::after_ms(wait_ms);
                super::block_on(|| self.enter(me, Some(deadline), &mut wait))?
            }
        };
        if !entered {
            return Ok(None);
        }
        let r = f(self);
        self.leave(me);
        let (v, wake) = r?;
        if wake > 0 {
            self.sem.wake(wake);
        }
        Ok(Some(v))
    }

    /// One step of taking the guard: `Done(Ok(true))` entered (after repairing a dead
    /// holder's step), `Done(Ok(false))` timed out.
    fn enter(
        &self,
        me: Owner,
        deadline: Option<Deadline>,
        wait: &mut Option<LockWait>,
    ) -> Step<'a, Result<bool>> {
        let guard = self.guard();
        let acquired = match wait {
            None => match guard.try_lock(me) {
                Ok(true) => Acquired::Yes,
                Ok(false) => {
                    // Queued: another thread may be acting for this same thread (an async
                    // wait), so finding our own token there means "wait", not "deadlock".
                    *wait = Some(LockWait::new(me, deadline, true));
                    return self.enter(me, deadline, wait);
                }
                Err(_) => return Step::Done(Err(corrupt("its guard is dead"))),
            },
            Some(w) => match w.poll(guard) {
                Step::Done(Ok(a)) => a,
                Step::Done(Err(_)) => return Step::Done(Err(corrupt("its guard is dead"))),
                Step::Sleep {
                    word,
                    expected,
                    until,
                } => {
                    return Step::Sleep {
                        word,
                        expected,
                        until,
                    }
                }
            },
        };
        *wait = None;
        match acquired {
            Acquired::TimedOut => Step::Done(Ok(false)),
            Acquired::OwnerDied => {
                self.recover();
                let _ = guard.mark_consistent(me);
                Step::Done(Ok(true))
            }
            Acquired::Yes => Step::Done(Ok(true)),
        }
    }

    fn leave(&self, me: Owner) {
        let _ = self.guard().unlock(me);
    }

    /// Takes a unit if one is available now (after sweeping dead holders if that is
    /// due). Waits for the guard at most [`GUARD_TRY_MS`]: `false` also when a live thread
    /// keeps it longer (its holder is asked whether it lives; a dead one's guard is taken
    /// over).
    ///
    /// # Errors
    /// `EAGAIN` when every holder slot is taken by a live thread; `ERR_SHM_CORRUPT`.
    pub fn try_take(&self, me: Owner) -> Result<bool> {
        Ok(self
            .guarded(me, GUARD_TRY_MS, |t| {
                t.take_locked(me, false)
                    .map(|(took, wake)| (matches!(took, Took::Yes), wake))
            })?
            .unwrap_or(false))
    }

    /// Returns `n` units, waking as many sleepers. Waits for the guard at most
    /// [`GUARD_WAIT_MS`] (a release has no "false" to give).
    ///
    /// # Errors
    /// `RangeError` past 2^31 - 1; `ETIMEDOUT` when the guard stays taken that long (a
    /// stuck or hostile peer, or a corrupt guard word); `ERR_SHM_CORRUPT`.
    pub fn release(&self, me: Owner, n: u32) -> Result<()> {
        self.guarded(me, GUARD_WAIT_MS, |t| {
            t.release_locked(me, n).map(|wake| ((), wake))
        })?
        .ok_or_else(|| {
            ShmError::new(
                "ETIMEDOUT",
                "timed out waiting for the semaphore's undo table: its guard stayed taken by \
                 a live thread (or its guard word is corrupt)",
            )
        })
    }

    /// Units held by `me` (for tests and diagnostics; without the guard).
    pub fn held_by(&self, me: Owner) -> u32 {
        self.slot_of(me, false)
            .map_or(0, |s| self.held(s).load(Ordering::Relaxed))
    }
}

/// A contended take of an undo semaphore: the step function both drivers run (see
/// `crate::sync::lock::LockWait`). Finishes with `Ok(true)` (took a unit) or `Ok(false)`
/// (timed out).
#[derive(Debug)]
pub struct UndoWait {
    me: Owner,
    deadline: Option<Deadline>,
    guard: Option<LockWait>,
    slept: bool,
}

impl UndoWait {
    /// The thread the wait takes a unit for.
    pub fn owner(&self) -> Owner {
        self.me
    }

    /// A take by `me` until `deadline` (`None`: forever).
    pub fn new(me: Owner, deadline: Option<Deadline>) -> UndoWait {
        UndoWait {
            me,
            deadline,
            guard: None,
            slept: false,
        }
    }

    /// One step.
    pub fn poll<'a>(&mut self, table: &UndoTable<'a>) -> Step<'a, Result<bool>> {
        loop {
            match table.enter(self.me, self.deadline, &mut self.guard) {
                Step::Done(Ok(true)) => {}
                Step::Done(r) => return Step::Done(r),
                sleep => return sleep,
            }
            let r = table.take_locked(self.me, self.slept);
            table.leave(self.me);
            let (took, wake) = match r {
                Ok(x) => x,
                Err(e) => return Step::Done(Err(e)),
            };
            if wake > 0 {
                table.sem.wake(wake);
            }
            if let Took::Yes = took {
                return Step::Done(Ok(true));
            }
            // No unit: announce ourselves and sleep on the word (outside the guard).
            // Relaxed: the bit only asks releasers to wake; the futex orders the sleep.
            let v = table.sem.word.load(Ordering::Relaxed);
            if v & COUNT_MASK != 0 {
                continue;
            }
            if v & WAITERS == 0
                && table
                    .sem
                    .word
                    .compare_exchange(v, v | WAITERS, Ordering::Relaxed, Ordering::Relaxed)
                    .is_err()
            {
                continue;
            }
            if self.deadline.is_some_and(|d| d.passed()) {
                return Step::Done(Ok(false));
            }
            self.slept = true;
            let slice = Deadline::slice_ms(RECHECK_MS);
            return Step::Sleep {
                word: &table.sem.word,
                expected: v | WAITERS,
                until: Some(self.deadline.map_or(slice, |d| d.min(slice))),
            };
        }
    }

    /// Gives the wait up: passes on a wake-up it may have consumed.
    pub fn abandon(&self, table: &UndoTable<'_>) {
        if table.count() > 0 {
            table.sem.wake(1);
        }
    }
}
