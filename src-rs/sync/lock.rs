//! The process-shared futex lock.
//!
//! A lock is a 32-byte record in shared memory (4-byte aligned). Its first word is the
//! futex word; the JavaScript fast path (`lib/lock.ts`) runs the uncontended
//! compare-and-swap on it with `Atomics`, and only waiting and waking come here.
//!
//! ## The lock word
//!
//! | bits   | name          | meaning                                                      |
//! |--------|---------------|--------------------------------------------------------------|
//! | 0..=29 | owner         | the holder's liveness token ([`super::liveness`]); 0 = free  |
//! | 30     | `OWNER_DIED`  | the holder acquired it from a dead holder and has not yet    |
//! |        |               | called `markConsistent()`                                    |
//! | 31     | `WAITERS`     | someone may be sleeping in `FUTEX_WAIT`: release must wake   |
//!
//! Special value: `NOT_RECOVERABLE` = `0x3fff_ffff` (owner bits all ones, a token never
//! handed out): a recovered lock was released without `markConsistent()`; every acquire
//! fails with `ERR_SHM_NOT_RECOVERABLE` from then on (POSIX robust-mutex rules). Any word
//! whose owner bits are all ones (`0x7fff_ffff`, `0xffff_ffff`: a 0xff fill) is treated
//! the same way: it names no holder that could ever release it.
//!
//! | word                    | state                                |
//! |-------------------------|--------------------------------------|
//! | `0`                     | free                                 |
//! | `token`                 | held by `token`, nobody waiting      |
//! | `token \| WAITERS`      | held by `token`, maybe waiters       |
//! | `token \| OWNER_DIED ..` | held by `token` after recovery      |
//! | `HANDOFF` (`OWNER_DIED \| WAITERS`, no owner) | free for a thread that slept on it (below) |
//! | `NOT_RECOVERABLE` (+ any flag bits) | dead forever             |
//!
//! ## Eventual fairness
//!
//! A release frees the word and wakes one sleeper, which must then win a compare-and-swap
//! against everyone else, the releaser's next acquisition included. On a machine with idle
//! cores the sleeper wakes on another core, microseconds after a releaser in a loop took
//! the lock again, and can lose a thousand releases in a row (seconds). So a contended
//! release now and then (JavaScript decides: at most once per `FAIR_MS`, `lib/lock.ts`)
//! *hands the lock off*: [`LockRecord::wake_after_release`] turns the freed word into
//! `HANDOFF` and wakes one sleeper. Only a wait that slept takes a `HANDOFF` word (as its
//! own, keeping `WAITERS`); the fast paths' compare-and-swap from 0 fails on it, and a wait
//! that has not slept yet sleeps, for [`HANDOFF_GRACE_MS`] at most, so the woken thread
//! gets the lock unless it takes longer than that to run. A `HANDOFF` nobody takes cannot
//! last: the release takes it back when its wake found no sleeper (to `WAITERS`, free: a
//! wait that found `HANDOFF` meanwhile sleeps on it without a trace of its own, and the
//! next holder's release must wake it), a wait given up passes it on
//! ([`LockWait::abandon`]), a wait at its deadline (a `tryAcquire()` included) takes it
//! when no sleeper is left to, and any sleeper takes it when its slice (or grace) ends. A
//! blocking wait of a thread being terminated gives back what it took (`js/lock.rs`).
//!
//! ## The rest of the record
//!
//! | offset | field         | meaning                                                    |
//! |--------|---------------|------------------------------------------------------------|
//! | 0      | `word`        | the lock word above                                        |
//! | 4      | `count`       | recursion depth (RLock, kept by the holder); 0 for a Lock  |
//! | 8      | `kind`        | [`super::kind`] tag: 1 Lock, 2 RLock (0 untagged)          |
//! | 12     | `owner_pid`   | holder's pid in its own PID namespace (informational)      |
//! | 16     | `owner_tid`   | holder's thread id in its own PID namespace (informational)|
//! | 20     | `owner_token` | the token the fields at 12..32 describe; written last      |
//! | 24     | `start_lo`    | holder's start time, low 32 bits (macOS: checked against   |
//! | 28     | `start_hi`    | pid reuse; Linux: informational), high 32 bits             |
//!
//! The holder writes `owner_pid`, `owner_tid`, `start_*` after the compare-and-swap that
//! took the word, then `owner_token` (Release); a reader trusts them only while
//! `owner_token` (Acquire) equals the word's owner bits. Liveness never depends on them on
//! Linux: the token in the word is the whole truth.
//!
//! ## Waiting
//!
//! The contended path is a step function, [`LockWait`], run either by the blocked thread
//! itself or, for `acquireAsync`, by a dedicated waiter thread (`crate::sync::waiter`)
//! that takes the lock *for* the JavaScript thread that asked: it writes that thread's
//! token, so ownership belongs to the thread that will release. Sleeps are sliced
//! ([`RECHECK_MS`]); after each slice, and once more before a wait gives up (so a
//! caller polling with timeout 0 recovers too), the holder's liveness is checked.

use crate::error::{Result, ShmError};
pub use crate::sync::liveness::Owner;
use crate::sync::{announce_sleeper, block_on_unless, Step, RECHECK_MS};
use crate::sys::{self, Deadline, Liveness};
use std::sync::atomic::{AtomicU32, Ordering};

/// Owner token bits.
pub const TID_MASK: u32 = 0x3fff_ffff;
/// The holder recovered the lock from a dead owner and has not marked it consistent.
pub const OWNER_DIED: u32 = 1 << 30;
/// Somebody may be waiting: release must wake.
pub const WAITERS: u32 = 1 << 31;
/// The lock can never be acquired again.
pub const NOT_RECOVERABLE: u32 = TID_MASK;
/// Free, handed to a thread that slept on the word (see "Eventual fairness" above): no
/// owner bits, so no holder; both flags, which no free word otherwise has.
pub const HANDOFF: u32 = OWNER_DIED | WAITERS;
/// How long a wait that finds a `HANDOFF` word (and has not slept) leaves it to the
/// woken sleeper before it takes it itself (`lib/lock.ts` `HANDOFF_GRACE_MS` for RWLock).
pub const HANDOFF_GRACE_MS: f64 = 1.0;
/// Size of a lock record in bytes.
pub const RECORD_SIZE: u64 = 32;

/// Whether word `v` can never be acquired: `NOT_RECOVERABLE`, or any value whose owner
/// bits are all ones (no token has that value, so no holder could ever release it).
#[inline]
pub fn is_dead_forever(v: u32) -> bool {
    v & TID_MASK == TID_MASK
}

/// A lock record in shared memory (see the module docs for the layout).
#[repr(C)]
#[derive(Debug)]
pub struct LockRecord {
    /// The futex word.
    pub word: AtomicU32,
    /// RLock recursion depth.
    pub count: AtomicU32,
    /// Kind tag (`super::kind`).
    pub kind: AtomicU32,
    /// Holder's pid (informational).
    pub owner_pid: AtomicU32,
    /// Holder's thread id (informational).
    pub owner_tid: AtomicU32,
    /// The token the owner fields describe.
    pub owner_token: AtomicU32,
    /// Holder's start time, low half.
    pub start_lo: AtomicU32,
    /// Holder's start time, high half.
    pub start_hi: AtomicU32,
}

/// How an acquire ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Acquired {
    /// Taken normally.
    Yes,
    /// Taken from a dead holder: the data it guards may be inconsistent.
    OwnerDied,
    /// The deadline passed first.
    TimedOut,
}

impl LockRecord {
    fn record_owner(&self, me: Owner) {
        // Relaxed: informational fields, published by the Release store of the token.
        self.owner_pid.store(me.pid, Ordering::Relaxed);
        self.owner_tid.store(me.tid, Ordering::Relaxed);
        self.start_lo.store(me.start as u32, Ordering::Relaxed);
        self.start_hi
            .store((me.start >> 32) as u32, Ordering::Relaxed);
        // Release: a reader that sees the token (Acquire) sees the fields above.
        self.owner_token.store(me.token, Ordering::Release);
    }

    /// The start time the record names for `token`, if its holder recorded itself.
    fn recorded_start(&self, token: u32) -> Option<u64> {
        // Acquire: pairs with record_owner's Release store of the token.
        if self.owner_token.load(Ordering::Acquire) != token {
            return None;
        }
        Some(
            self.start_lo.load(Ordering::Relaxed) as u64
                | (self.start_hi.load(Ordering::Relaxed) as u64) << 32,
        )
    }

    /// Tries once to take a free lock.
    ///
    /// # Errors
    /// `ERR_SHM_NOT_RECOVERABLE` for a dead lock.
    #[inline]
    pub fn try_lock(&self, me: Owner) -> Result<bool> {
        // Acquire: on success, everything the previous holder wrote before its release
        // (a Release store of 0) is visible to us.
        match self
            .word
            .compare_exchange(0, me.token, Ordering::Acquire, Ordering::Relaxed)
        {
            Ok(_) => {
                self.record_owner(me);
                Ok(true)
            }
            Err(v) if is_dead_forever(v) => Err(not_recoverable()),
            Err(_) => Ok(false),
        }
    }

    /// Takes the lock, sleeping in the kernel while it is held, until `deadline`.
    ///
    /// # Errors
    /// `ERR_SHM_NOT_RECOVERABLE` for a dead lock; `ERR_SHM_DEADLOCK` if this thread
    /// already holds it (a plain lock would wait for itself forever).
    #[inline]
    pub fn lock(&self, me: Owner, deadline: Option<Deadline>) -> Result<Acquired> {
        self.lock_unless(me, deadline, || false)
            .map(|a| a.expect("never stopped"))
    }

    /// [`lock`](Self::lock) that asks `stop` after every sleep whether to give up
    /// (`Ok(None)`), for a JavaScript thread that is being terminated.
    ///
    /// # Errors
    /// As [`lock`](Self::lock).
    #[inline]
    pub fn lock_unless(
        &self,
        me: Owner,
        deadline: Option<Deadline>,
        stop: impl FnMut() -> bool,
    ) -> Result<Option<Acquired>> {
        if self.try_lock(me)? {
            return Ok(Some(Acquired::Yes));
        }
        self.lock_contended(me, deadline, stop)
    }

    #[cold]
    fn lock_contended(
        &self,
        me: Owner,
        deadline: Option<Deadline>,
        stop: impl FnMut() -> bool,
    ) -> Result<Option<Acquired>> {
        let mut wait = LockWait::new(me, deadline, false);
        match block_on_unless(|| wait.poll(self), stop) {
            Some(r) => r.map(Some),
            None => {
                wait.abandon(self);
                Ok(None)
            }
        }
    }

    /// If the holder named by `seen` is dead, takes the lock over from it. `suspect`
    /// carries a holder found [`Liveness::Suspect`] at the previous check.
    #[cold]
    fn try_recover(&self, seen: u32, me: Owner, suspect: &mut u32) -> Option<Acquired> {
        let token = seen & TID_MASK;
        if token == 0 || is_dead_forever(seen) {
            return None;
        }
        match me.liveness_of(token, self.recorded_start(token)) {
            Liveness::Alive => {
                *suspect = 0;
                return None;
            }
            Liveness::Suspect if *suspect != token => {
                *suspect = token;
                return None;
            }
            Liveness::Suspect | Liveness::Dead => {}
        }
        // Acquire: whatever the dead holder managed to write is visible to us. The
        // compare-and-swap fails if the word changed since we looked, so a lock that was
        // released and taken again meanwhile is never stolen.
        self.word
            .compare_exchange(
                seen,
                me.token | OWNER_DIED | WAITERS,
                Ordering::Acquire,
                Ordering::Relaxed,
            )
            .ok()?;
        // The dead holder's recursion depth is void; the new holder's levels are counted
        // by whoever acquired (lib/rlock.ts: depth 1 after the acquire returns).
        self.count.store(0, Ordering::Relaxed);
        self.record_owner(me);
        Some(Acquired::OwnerDied)
    }

    /// Wakes one waiter after a release that saw `WAITERS`; how many it woke (0 or 1).
    pub fn wake_one(&self) -> u32 {
        sys::futex_wake(&self.word, 1)
    }

    /// After a release that saw `WAITERS` (the word freed): wakes one sleeper, and with
    /// `hand_off` leaves the lock to it (`HANDOFF`, see "Eventual fairness"). Taken back
    /// (free again) if the wake found nobody asleep; nothing handed if someone took the
    /// word since the release.
    pub fn wake_after_release(&self, hand_off: bool) {
        // Release: the handed-off word continues the release's own (an RMW after it), so
        // the taker's Acquire compare-and-swap sees what the releaser wrote.
        if !hand_off
            || self
                .word
                .compare_exchange(0, HANDOFF, Ordering::Release, Ordering::Relaxed)
                .is_err()
        {
            self.wake_one();
            return;
        }
        if self.wake_one() == 0 {
            // Nobody asleep to take it (a waiter that set WAITERS gave up, or was woken by
            // someone else and will look at the word itself).
            self.take_back_hand_off();
        }
    }

    /// Makes a `HANDOFF` word nobody is asleep to take free for anyone, keeping `WAITERS`:
    /// a wait that found `HANDOFF` meanwhile sleeps on it without a trace of its own
    /// (`HANDOFF` has the bit already), and the next holder's release must wake it.
    fn take_back_hand_off(&self) {
        let _ = self
            .word
            .compare_exchange(HANDOFF, WAITERS, Ordering::Release, Ordering::Relaxed);
    }

    /// After a blocking wait took the lock for a thread being terminated, whose
    /// JavaScript will never release it: gives it back, or, taken over from a dead holder
    /// (`OwnerDied`), leaves it to die with this thread, so that the next acquirer is told.
    ///
    /// # Errors
    /// `ERR_SHM_NOT_OWNER` when `me` does not hold it.
    pub fn give_back_for_terminated(&self, me: Owner, acquired: Acquired) -> Result<()> {
        match acquired {
            Acquired::Yes => self.unlock(me),
            Acquired::OwnerDied | Acquired::TimedOut => Ok(()),
        }
    }

    /// Whether `me` holds the lock now.
    pub fn held_by(&self, me: Owner) -> bool {
        // Relaxed: only our own ownership is in question, which only we can change.
        self.word.load(Ordering::Relaxed) & TID_MASK == me.token
    }

    /// Releases the lock held by `me` (the native twin of the JavaScript fast path).
    ///
    /// # Errors
    /// `ERR_SHM_NOT_OWNER` when `me` does not hold it.
    pub fn unlock(&self, me: Owner) -> Result<()> {
        let v = self.word.load(Ordering::Relaxed);
        if v & TID_MASK != me.token {
            return Err(not_owner());
        }
        if v & OWNER_DIED != 0 {
            // Released without markConsistent(): the data is beyond repair (POSIX).
            // Release: publish whatever we wrote; wake everyone so they fail promptly.
            self.word.store(NOT_RECOVERABLE, Ordering::Release);
            sys::futex_wake(&self.word, u32::MAX);
            return Ok(());
        }
        // Release: everything we wrote while holding the lock happens-before the next
        // holder's Acquire CAS.
        if self.word.swap(0, Ordering::Release) & WAITERS != 0 {
            self.wake_one();
        }
        Ok(())
    }

    /// Clears `OWNER_DIED` after the holder repaired the guarded data.
    ///
    /// # Errors
    /// `ERR_SHM_NOT_OWNER` when `me` does not hold it.
    pub fn mark_consistent(&self, me: Owner) -> Result<()> {
        if !self.held_by(me) {
            return Err(not_owner());
        }
        self.word.fetch_and(!OWNER_DIED, Ordering::Relaxed);
        Ok(())
    }
}

/// A lock acquisition in progress: the contended path of [`LockRecord::lock`], written
/// as a step function so that a blocked thread ([`crate::sync::block_on`]) and the
/// shared waiter thread of async waits (`crate::sync::waiter`) run the same code.
///
/// Each [`poll`](LockWait::poll) tries to take the lock and otherwise names the word
/// value to sleep on and until when. The holder's liveness is checked before the first
/// sleep (a holder that died before the wait began is found at once) and after each
/// [`RECHECK_MS`] slice, so a dead holder is noticed within one slice, and a wake-up
/// lost to a waiter that gave up costs at most one slice.
#[derive(Debug, Clone, Copy)]
pub struct LockWait {
    me: Owner,
    deadline: Option<Deadline>,
    next_check: Deadline,
    queued: bool,
    /// A holder whose liveness was [`Liveness::Suspect`] at the last check (0: none).
    suspect: u32,
    /// Whether this wait spun on the held word already (it does once, before it first
    /// asks to sleep).
    spun: bool,
    /// Whether this wait slept: then a wake-up may have been spent on it, and the lock is
    /// taken with `WAITERS` so that the next release wakes whoever still sleeps.
    slept: bool,
}

/// Probes of a held word before a wait first sets `WAITERS` and sleeps ([`LockWait`]):
/// about a microsecond. A holder that lets go meanwhile hands the lock over without any
/// system call on either side (a sleeper costs a futex wait and a futex wake).
const SPIN_PROBES: u32 = 100;

impl LockWait {
    /// A wait by `me` until `deadline` (`None`: forever). `queued`: the wait is one of
    /// possibly several async waits of the same thread, so finding the lock held by
    /// `me` means "held by another task of this thread", not a deadlock.
    pub fn new(me: Owner, deadline: Option<Deadline>, queued: bool) -> LockWait {
        LockWait {
            me,
            deadline,
            // The first sleep asks at once: a holder that died before this wait began
            // is found then, not a slice later.
            next_check: Deadline::after_ms(0.0),
            queued,
            suspect: 0,
            spun: false,
            slept: false,
        }
    }

    /// The thread the wait takes the lock for.
    pub fn owner(&self) -> Owner {
        self.me
    }

    /// The same wait for a thread that may have spent a wake-up of the lock word already
    /// (a condition waiter requeued onto it, `condition.rs`): it takes the lock with
    /// `WAITERS`, so that its release wakes whoever else was requeued.
    pub fn after_wake(mut self) -> LockWait {
        self.slept = true;
        self
    }

    /// One step: take the lock if it is free (or its holder died), else say what to
    /// sleep on. `Done(Ok(TimedOut))` once the deadline passed.
    pub fn poll<'a>(&mut self, rec: &'a LockRecord) -> Step<'a, Result<Acquired>> {
        let me = self.me;
        loop {
            // Relaxed: a snapshot; the compare-and-swaps below carry the ordering.
            let v = rec.word.load(Ordering::Relaxed);
            if is_dead_forever(v) {
                return Step::Done(Err(not_recoverable()));
            }
            if v == HANDOFF && (self.slept || self.unclaimed(rec)) {
                // Handed to a sleeper, and this wait slept (or its deadline came and nobody
                // sleeps who could take it): ours, with WAITERS for whoever else sleeps.
                // Acquire pairs with the releaser's Release (see wake_after_release).
                if rec
                    .word
                    .compare_exchange(v, me.token | WAITERS, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
                {
                    rec.record_owner(me);
                    return Step::Done(Ok(Acquired::Yes));
                }
                continue;
            }
            if v & TID_MASK == 0 && v != HANDOFF {
                // Free. After a sleep a wake-up may have been spent on us while others
                // still sleep: take it with WAITERS set so our release wakes the next one
                // (std's "locked, contended"). A wait that never slept passes on whatever
                // the word says: a sleeper woken meanwhile sets WAITERS again itself.
                // Acquire pairs with the previous holder's Release.
                let waiters = if self.slept { WAITERS } else { v & WAITERS };
                if rec
                    .word
                    .compare_exchange(v, me.token | waiters, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
                {
                    rec.record_owner(me);
                    return Step::Done(Ok(Acquired::Yes));
                }
                continue;
            }
            if v & TID_MASK == me.token && !self.queued {
                return Step::Done(Err(ShmError::new(
                    "ERR_SHM_DEADLOCK",
                    "this thread already holds the lock (use an RLock to re-enter)",
                )));
            }
            if !self.spun && v & WAITERS == 0 {
                // Before asking to be woken, give a holder that is about to let go a
                // moment (nobody sleeps yet: spinning takes nobody's turn).
                self.spun = true;
                for _ in 0..SPIN_PROBES {
                    std::hint::spin_loop();
                    // Relaxed: a hint; the compare-and-swap above carries the ordering.
                    if rec.word.load(Ordering::Relaxed) & TID_MASK == 0 {
                        break;
                    }
                }
                continue;
            }
            if !announce_sleeper(&rec.word, v, WAITERS) {
                continue;
            }
            // Whether the holder lives is asked each slice, and once more before giving up:
            // a short timeout (0 included) must not leave a dead holder's lock held
            // forever for a caller that polls.
            let last = self.deadline.is_some_and(|d| d.passed());
            if last || self.next_check.passed() {
                self.next_check = Deadline::slice_ms(RECHECK_MS);
                if let Some(acq) = rec.try_recover(v | WAITERS, me, &mut self.suspect) {
                    return Step::Done(Ok(acq));
                }
            }
            if last {
                return Step::Done(Ok(Acquired::TimedOut));
            }
            self.slept = true;
            let mut until = self
                .deadline
                .map_or(self.next_check, |d| d.min(self.next_check));
            if v == HANDOFF {
                // Handed to a sleeper that has not run yet: it gets HANDOFF_GRACE_MS, then
                // this wait (having slept) takes the lock itself. A sleeper slow to wake (a
                // busy or throttled core, an emulator) must not keep the lock idle a slice.
                until = until.min_after_ms(HANDOFF_GRACE_MS);
            }
            return Step::Sleep {
                word: &rec.word,
                expected: v | WAITERS,
                until: Some(until),
            };
        }
    }

    /// Whether a `HANDOFF` word found by this wait at its deadline has nobody left to
    /// take it: woken, a sleeper takes it; with no sleeper, the wait at its deadline does
    /// (a `tryAcquire()` included), rather than leave it to the next one that sleeps.
    fn unclaimed(&self, rec: &LockRecord) -> bool {
        self.deadline.is_some_and(|d| d.passed()) && rec.wake_one() == 0
    }

    /// Gives the wait up (cancelled): if the lock is free now, passes on a wake-up this
    /// waiter may have consumed, so a sleeping waiter does not wait a whole slice; a lock
    /// handed off (to this waiter, perhaps) with nobody else asleep is freed for anyone.
    pub fn abandon(&self, rec: &LockRecord) {
        // Relaxed: a hint; a needless wake costs a syscall, a missed one a slice.
        let v = rec.word.load(Ordering::Relaxed);
        if v & TID_MASK == 0 && rec.wake_one() == 0 && v == HANDOFF {
            rec.take_back_hand_off();
        }
    }
}

/// `ERR_SHM_NOT_OWNER`.
pub fn not_owner() -> ShmError {
    ShmError::new("ERR_SHM_NOT_OWNER", "the lock is not held by this thread")
}

/// `ERR_SHM_NOT_RECOVERABLE`.
pub fn not_recoverable() -> ShmError {
    ShmError::new(
        "ERR_SHM_NOT_RECOVERABLE",
        "the lock's holder died and the lock was released without markConsistent(); \
         it can never be acquired again",
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::mapping::{shared_anon_for_tests, Region};
    use crate::sync::liveness::TokenRef;
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    fn record(r: &Region, off: usize) -> &LockRecord {
        // SAFETY: in bounds, 4-aligned, zero-initialised by mmap; lives as long as `r`.
        unsafe { &*((r.addr() + off) as *const LockRecord) }
    }

    /// The calling thread's token on `r` and its owner view.
    fn claim(r: &Region) -> (TokenRef, Owner) {
        let t = TokenRef::claim(r, None).unwrap();
        let me = t.owner(r);
        (t, me)
    }

    /// Who sets WAITERS: a wait that never slept takes a free word as it finds it (no
    /// FUTEX_WAKE at its release), one that slept (or a requeued condition waiter) takes
    /// it with WAITERS, and a wait that finds the word held asks to sleep on it with
    /// WAITERS set (after its spin).
    #[test]
    fn waiters_bit_after_spins_and_sleeps() {
        let r = shared_anon_for_tests(4096);
        let rec = record(&r, 0);
        let (_t, me) = claim(&r);
        // A live holder: another thread's token (a wait asks about the holder before it
        // first sleeps, and takes a dead one's lock over).
        let (token_tx, token_rx) = std::sync::mpsc::channel();
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        let r2 = r.clone();
        let holder = std::thread::spawn(move || {
            let (_t, o) = claim(&r2);
            token_tx.send(o.token).unwrap();
            done_rx.recv().ok();
        });
        let other = token_rx.recv().unwrap();
        let taken = |wait: &mut LockWait| match wait.poll(rec) {
            Step::Done(Ok(Acquired::Yes)) => rec.word.load(Ordering::Relaxed),
            s => panic!("not taken: {s:?}"),
        };
        assert_eq!(
            taken(&mut LockWait::new(me, None, false)),
            me.token,
            "never slept"
        );
        rec.word.store(0, Ordering::Relaxed);
        let mut after_requeue = LockWait::new(me, None, false).after_wake();
        assert_eq!(taken(&mut after_requeue), me.token | WAITERS);
        // A bare WAITERS (no owner) is kept: somebody still sleeps.
        rec.word.store(WAITERS, Ordering::Relaxed);
        assert_eq!(
            taken(&mut LockWait::new(me, None, false)),
            me.token | WAITERS
        );
        // Held: the wait spins, then asks to sleep with WAITERS set; once released, it
        // takes the word with WAITERS (it may have spent a wake-up).
        rec.word.store(other, Ordering::Relaxed);
        let mut wait = LockWait::new(me, None, false);
        match wait.poll(rec) {
            Step::Sleep { expected, .. } => assert_eq!(expected, other | WAITERS),
            s => panic!("expected a sleep: {s:?}"),
        }
        assert_eq!(rec.word.load(Ordering::Relaxed), other | WAITERS);
        rec.word.store(0, Ordering::Relaxed);
        assert_eq!(taken(&mut wait), me.token | WAITERS);
        done_tx.send(()).unwrap();
        holder.join().unwrap();
        r.close();
    }

    /// `HANDOFF`: a wait that slept takes it (with WAITERS), one that never slept sleeps
    /// on it, and one at its deadline takes it only when no sleeper is left to.
    #[test]
    fn a_handed_off_word_goes_to_a_wait_that_slept() {
        let r = shared_anon_for_tests(4096);
        let rec = record(&r, 0);
        let (_t, me) = claim(&r);
        rec.word.store(HANDOFF, Ordering::Relaxed);
        // Never slept: it sleeps on the handed-off word (the woken sleeper takes it), for
        // the grace at most.
        let mut fresh = LockWait::new(me, None, false);
        match fresh.poll(rec) {
            Step::Sleep {
                expected, until, ..
            } => {
                assert_eq!(expected, HANDOFF);
                let left = until.expect("a deadline").remaining_nanos();
                assert!(left <= (HANDOFF_GRACE_MS * 1e6) as u128, "sleeps {left} ns");
            }
            s => panic!("expected a sleep: {s:?}"),
        }
        assert_eq!(rec.word.load(Ordering::Relaxed), HANDOFF, "untouched");
        // The same wait after its sleep (or a requeued condition waiter) takes it.
        match fresh.poll(rec) {
            Step::Done(Ok(Acquired::Yes)) => {}
            s => panic!("expected the lock: {s:?}"),
        }
        assert_eq!(rec.word.load(Ordering::Relaxed), me.token | WAITERS);
        rec.word.store(HANDOFF, Ordering::Relaxed);
        match LockWait::new(me, None, false).after_wake().poll(rec) {
            Step::Done(Ok(Acquired::Yes)) => {}
            s => panic!("expected the lock: {s:?}"),
        }
        // At its deadline (a tryAcquire), with nobody asleep to take it: taken.
        rec.word.store(HANDOFF, Ordering::Relaxed);
        match LockWait::new(me, Some(Deadline::after_ms(0.0)), false).poll(rec) {
            Step::Done(Ok(Acquired::Yes)) => {}
            s => panic!("expected the lock: {s:?}"),
        }
        assert_eq!(rec.word.load(Ordering::Relaxed), me.token | WAITERS);
        r.close();
    }

    /// `wake_after_release`: a hand-off with a sleeper gives it the lock before anyone
    /// else (the fast path's compare-and-swap from 0 fails); with nobody asleep the word
    /// is free again; a word taken since the release is left alone.
    #[test]
    fn a_release_hands_the_lock_to_the_sleeper_it_wakes() {
        let r = shared_anon_for_tests(4096);
        let rec = record(&r, 0);
        let (_t, me) = claim(&r);
        // Nobody asleep: freed again, WAITERS kept (a wait may sleep on HANDOFF meanwhile).
        rec.word.store(0, Ordering::Relaxed);
        rec.wake_after_release(true);
        assert_eq!(rec.word.load(Ordering::Relaxed), WAITERS);
        // Taken by someone since the release: left as it is.
        rec.word.store(me.token, Ordering::Relaxed);
        rec.wake_after_release(true);
        assert_eq!(rec.word.load(Ordering::Relaxed), me.token);
        // A sleeper in another thread: the hand-off is its, whoever tries meanwhile.
        let (tx, rx) = std::sync::mpsc::channel();
        let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
        let r2 = r.clone();
        let sleeper = std::thread::spawn(move || {
            let rec = record(&r2, 0);
            let (_t, o) = claim(&r2);
            tx.send(o.token).unwrap();
            let got = rec.lock(o, Some(Deadline::after_ms(10_000.0))).unwrap();
            let word = rec.word.load(Ordering::Relaxed);
            go_rx.recv().ok();
            rec.unlock(o).unwrap();
            (got, word, o.token)
        });
        let other = rx.recv().unwrap();
        // Wait until it sleeps (WAITERS set on our word).
        let t0 = Instant::now();
        while rec.word.load(Ordering::Relaxed) != me.token | WAITERS {
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "the sleeper never slept"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        std::thread::sleep(Duration::from_millis(20));
        // Release (as JavaScript does: the word freed), then hand off.
        rec.word.store(0, Ordering::Release);
        rec.wake_after_release(true);
        // Handed off or taken by the sleeper, never free: our own fast path cannot take it.
        let w = rec.word.load(Ordering::Relaxed);
        assert!(w == HANDOFF || w == other | WAITERS, "{w:#x}");
        assert!(
            !rec.try_lock(me).unwrap(),
            "the releaser took a handed-off lock back"
        );
        go_tx.send(()).unwrap();
        let (got, word, token) = sleeper.join().unwrap();
        assert_eq!(token, other);
        assert_eq!(got, Acquired::Yes);
        assert_eq!(word, other | WAITERS, "the sleeper held it");
        r.close();
    }

    /// A wait that begins after the holder died takes the lock over at its first step,
    /// before any sleep (it used to sleep one re-check slice first).
    #[test]
    fn a_holder_dead_before_the_wait_began_is_found_at_once() {
        let r = shared_anon_for_tests(4096);
        let rec = record(&r, 0);
        let (_t, me) = claim(&r);
        held_by_a_thread_that_exited(&r, 0);
        match LockWait::new(me, None, false).poll(rec) {
            Step::Done(Ok(Acquired::OwnerDied)) => {}
            s => panic!("expected the dead holder's lock at once: {s:?}"),
        }
        r.close();
    }

    /// Increments a non-atomic counter under the lock from several threads.
    #[test]
    fn threads_never_lose_an_increment() {
        let r = shared_anon_for_tests(4096);
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let r = r.clone();
                std::thread::spawn(move || {
                    let rec = record(&r, 0);
                    let counter = (r.addr() + 64) as *mut u64;
                    let (_t, me) = claim(&r);
                    for _ in 0..50_000 {
                        assert_eq!(rec.lock(me, None).unwrap(), Acquired::Yes);
                        // SAFETY: exclusive under the lock.
                        unsafe { counter.write_volatile(counter.read_volatile() + 1) };
                        rec.unlock(me).unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        // SAFETY: all writers joined; the region is still mapped.
        let total = unsafe { ((r.addr() + 64) as *const u64).read_volatile() };
        assert_eq!(total, 200_000);
        r.close();
    }

    /// Two processes (fork) increment under the lock; the total is exact. The parent
    /// claims its token before forking: the child, which inherits a copy of the parent's
    /// token table and descriptions, must claim a token of its own.
    #[test]
    fn processes_never_lose_an_increment() {
        let r = shared_anon_for_tests(4096);
        let base = r.addr();
        let rec = record(&r, 0);
        let counter = (base + 64) as *mut u64;
        let child_token = (base + 128) as *mut u32;
        let (parent_claim, parent) = claim(&r);
        // SAFETY: the child only touches the shared mapping and exits with _exit.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0);
        let (_t, me) = if pid == 0 {
            claim(&r)
        } else {
            (parent_claim.clone(), parent)
        };
        if pid == 0 {
            // SAFETY: our own shared word.
            unsafe { child_token.write_volatile(me.token) };
        }
        for _ in 0..100_000 {
            rec.lock(me, None).unwrap();
            // SAFETY: exclusive under the lock.
            unsafe { counter.write_volatile(counter.read_volatile() + 1) };
            rec.unlock(me).unwrap();
        }
        if pid == 0 {
            // SAFETY: leave the child without running the test harness's destructors.
            unsafe { libc::_exit(0) };
        }
        let mut status = 0;
        // SAFETY: waiting for our own child.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        // SAFETY: both writers are done.
        assert_eq!(unsafe { counter.read_volatile() }, 200_000);
        // SAFETY: the child wrote it before counting.
        let theirs = unsafe { child_token.read_volatile() };
        assert_ne!(theirs, 0);
        assert_ne!(
            theirs, parent.token,
            "the forked child claimed a token of its own"
        );
        r.close();
    }

    /// Takes the lock at `off` in a thread that then exits without releasing it: its
    /// token goes with it.
    fn held_by_a_thread_that_exited(r: &Arc<Region>, off: usize) {
        let r2 = r.clone();
        std::thread::spawn(move || {
            let (_t, me) = claim(&r2);
            record(&r2, off).lock(me, None).unwrap();
        })
        .join()
        .unwrap();
    }

    #[test]
    fn timeout_not_owner_and_dead_owner() {
        let r = shared_anon_for_tests(4096);
        let rec = record(&r, 0);
        let (_t, me) = claim(&r);
        held_by_a_thread_that_exited(&r, 0);
        assert_eq!(rec.unlock(me).unwrap_err().code, "ERR_SHM_NOT_OWNER");
        let t0 = Instant::now();
        assert_eq!(rec.lock(me, None).unwrap(), Acquired::OwnerDied);
        assert!(t0.elapsed().as_millis() < 250);
        assert_eq!(rec.owner_token.load(Ordering::Relaxed), me.token);
        assert_eq!(rec.owner_pid.load(Ordering::Relaxed), std::process::id());
        assert_eq!(rec.owner_tid.load(Ordering::Relaxed), me.tid);
        // Released without markConsistent: dead forever.
        rec.unlock(me).unwrap();
        assert_eq!(
            rec.lock(me, None).unwrap_err().code,
            "ERR_SHM_NOT_RECOVERABLE"
        );

        let rec2 = record(&r, 32);
        rec2.lock(me, None).unwrap();
        let r2 = r.clone();
        let t = std::thread::spawn(move || {
            let (_t, me) = claim(&r2);
            record(&r2, 32)
                .lock(me, Some(Deadline::after_ms(120.0)))
                .unwrap()
        });
        assert_eq!(
            t.join().unwrap(),
            Acquired::TimedOut,
            "a live holder is never taken over, however many slices pass"
        );
        assert_eq!(rec2.lock(me, None).unwrap_err().code, "ERR_SHM_DEADLOCK");
        rec2.unlock(me).unwrap();
        r.close();
    }

    #[test]
    fn a_dead_holder_is_taken_over_by_a_wait_of_timeout_zero() {
        let r = shared_anon_for_tests(4096);
        let rec = record(&r, 0);
        let (_t, me) = claim(&r);
        held_by_a_thread_that_exited(&r, 0);
        assert!(!rec.try_lock(me).unwrap(), "try_lock alone does not ask");
        assert_eq!(
            rec.lock(me, Some(Deadline::after_ms(0.0))).unwrap(),
            Acquired::OwnerDied
        );
        rec.mark_consistent(me).unwrap();
        rec.unlock(me).unwrap();
        r.close();
    }

    /// Words another process could have written: no hang, a typed error or recovery.
    #[test]
    #[cfg_attr(
        not(target_os = "linux"),
        ignore = "tokens are OFD locks on Linux only"
    )]
    fn hostile_words_fail_or_recover_promptly() {
        let r = shared_anon_for_tests(4096);
        let (_t, me) = claim(&r);
        for (i, word) in [0x7fff_ffffu32, 0xffff_ffff, NOT_RECOVERABLE | WAITERS]
            .into_iter()
            .enumerate()
        {
            let rec = record(&r, 32 * i);
            rec.word.store(word, Ordering::Relaxed);
            let t0 = Instant::now();
            assert_eq!(
                rec.lock(me, Some(Deadline::after_ms(2000.0)))
                    .unwrap_err()
                    .code,
                "ERR_SHM_NOT_RECOVERABLE",
                "{word:#x}"
            );
            assert_eq!(
                rec.try_lock(me).unwrap_err().code,
                "ERR_SHM_NOT_RECOVERABLE"
            );
            assert!(t0.elapsed() < Duration::from_millis(100));
        }
        // A token nobody holds (a random value, or a thread id from some process): the
        // holder is dead, the lock is recovered within a slice or two.
        for (i, word) in [0x2bad_cafeu32, 7 | WAITERS, 1 | OWNER_DIED]
            .into_iter()
            .enumerate()
        {
            let rec = record(&r, 128 + 32 * i);
            rec.word.store(word, Ordering::Relaxed);
            let t0 = Instant::now();
            assert_eq!(
                rec.lock(me, None).unwrap(),
                Acquired::OwnerDied,
                "{word:#x}"
            );
            assert!(t0.elapsed() < Duration::from_millis(250));
            rec.mark_consistent(me).unwrap();
            rec.unlock(me).unwrap();
        }
        // The token of a live thread that does not hold the lock: indistinguishable from
        // a holder; waits are bounded by their deadline.
        let (tx, rx) = std::sync::mpsc::channel();
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        let r2 = r.clone();
        let other = std::thread::spawn(move || {
            let (_t, me) = claim(&r2);
            tx.send(me.token).unwrap();
            done_rx.recv().unwrap();
        });
        let live = rx.recv().unwrap();
        let rec = record(&r, 256);
        rec.word.store(live, Ordering::Relaxed);
        assert_eq!(
            rec.lock(me, Some(Deadline::after_ms(150.0))).unwrap(),
            Acquired::TimedOut
        );
        done_tx.send(()).unwrap();
        other.join().unwrap();
        assert_eq!(rec.lock(me, None).unwrap(), Acquired::OwnerDied);
        r.close();
    }

    /// One token per thread per object: every mapping of the object in a thread shares
    /// it, other threads have their own, and it is released with the last reference.
    #[test]
    #[cfg_attr(
        not(target_os = "linux"),
        ignore = "tokens are OFD locks on Linux only"
    )]
    fn tokens_are_per_thread_per_object() {
        let a = shared_anon_for_tests(4096);
        let b = shared_anon_for_tests(4096);
        let (ta, _) = claim(&a);
        let (tb, _) = claim(&b);
        assert_eq!(
            ta.token(),
            tb.token(),
            "anonymous memory: one private object"
        );
        let a2 = a.clone();
        let other = std::thread::spawn(move || claim(&a2).0.token())
            .join()
            .unwrap();
        assert_ne!(other, ta.token());
        let named = format!("/shmutils-rs-tokens-{}", std::process::id());
        let fd = crate::memory::shm::open(
            &named,
            crate::memory::shm::OpenMode::Exclusive,
            crate::memory::shm::check_permissions(0o600).unwrap(),
        )
        .unwrap();
        crate::memory::shm::truncate(fd, 4096).unwrap();
        let map = |fd| {
            let r = Region::map(crate::memory::mapping::MapRequest {
                address: None,
                len: 4096,
                prot: libc::PROT_READ | libc::PROT_WRITE,
                flags: libc::MAP_SHARED,
                fd,
                offset: 0,
            })
            .unwrap();
            r.adopt_fd(crate::memory::shm::dup_cloexec(fd).unwrap());
            r
        };
        let (m1, m2): (Arc<Region>, Arc<Region>) = (map(fd), map(fd));
        let t1 = TokenRef::claim(&m1, None).unwrap();
        let t2 = TokenRef::claim(&m2, None).unwrap();
        assert_eq!(t1.token(), t2.token());
        // Another thread asks, through a mapping of its own.
        let token = t1.token();
        let ask = || {
            let m = map(fd);
            std::thread::spawn(move || {
                TokenRef::claim(&m, None)
                    .unwrap()
                    .owner(&m)
                    .liveness_of(token, None)
            })
            .join()
            .unwrap()
        };
        assert_eq!(ask(), Liveness::Alive);
        drop(t1);
        assert_eq!(ask(), Liveness::Alive, "t2 still holds it");
        drop(t2);
        assert_eq!(ask(), Liveness::Dead, "released with the last reference");
        crate::memory::shm::close(fd).unwrap();
        crate::memory::shm::unlink(&named).unwrap();
    }
}
