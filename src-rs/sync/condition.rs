//! The process-shared condition variable.
//!
//! A condition is a 32-byte record of its own (4-byte aligned) beside the lock it is used
//! with. Waiting and notifying both happen while holding that lock, which serializes a
//! waiter's registration against every notify: whatever a notify grants is for waiters
//! that were registered before it.
//!
//! ## The record
//!
//! | offset | field    | meaning                                                      |
//! |--------|----------|--------------------------------------------------------------|
//! | 0      | `seq`    | futex word: bumped by every notify that grants something     |
//! | 4      | `counts` | bits 0..=15 `waiters` registered; bits 16..=31 `signals`:    |
//! |        |          | notifications granted and not yet consumed                   |
//! | 8      | `kind`   | 3 (`super::kind::CONDITION`); 0 untagged                     |
//! | 12..32 | reserved |                                                              |
//!
//! `signals <= waiters` always holds between operations. The counts live in memory other
//! processes can write, so every update first clamps `signals` to `waiters` ([`sane`]):
//! a corrupt word can cause spurious wake-ups at worst (which callers tolerate), never a
//! "notified" for a wait that nobody notified because of surplus signals.
//!
//! ## Protocol
//!
//! | who                     | does                                                      |
//! |-------------------------|-----------------------------------------------------------|
//! | `wait` (lock held)      | `waiters += 1`; remember `seq`; release the lock fully    |
//! |                         | (an RLock's depth is saved); sleep on `seq`               |
//! | woken, `seq` changed    | consume one signal (`signals -= 1, waiters -= 1`) and     |
//! |                         | re-acquire the lock; no signal left: sleep again          |
//! | deadline / abort        | `waiters -= 1` (taking a signal instead if one is left    |
//! |                         | over for it, so `signals <= waiters` always holds); then  |
//! |                         | re-acquire the lock anyway                                |
//! | `notify(n)` (lock held) | grant `g = min(n, waiters - signals)` signals; if `g > 0`:|
//! |                         | `seq += 1`, then *requeue* `g` sleepers from `seq` onto   |
//! |                         | the lock word (`FUTEX_CMP_REQUEUE`, lock word marked      |
//! |                         | `WAITERS`)                                                |
//!
//! Requeueing instead of waking is what keeps `notifyAll` from stampeding: the notifier
//! holds the lock, so a woken waiter could only run into it and sleep again. Moved
//! waiters sleep on the lock word instead and each release wakes exactly one of them,
//! which consumes its signal and takes the lock. Waits of the async driver behave the
//! same: its thread re-checks every wait it watches whenever any of them is woken.
//!
//! Spurious wake-ups (returning "notified" without a matching notify) happen only when
//! a waiter died while registered: its count lingers until a later notify grants it a
//! signal that some later waiter consumes. Callers re-check their predicate in a loop,
//! as with every condition variable.

use super::{Step, RECHECK_MS};
use crate::error::{Result, ShmError};
use crate::memory::mapping::Region;
use crate::sync::lock::{not_owner, Acquired, LockRecord, LockWait, Owner, WAITERS};
use crate::sys::{self, Deadline};
use std::sync::atomic::{AtomicU32, Ordering};

/// Size of a condition record in bytes.
pub const RECORD_SIZE: u64 = 32;

const WAITER: u32 = 1;
const SIGNAL: u32 = 1 << 16;
const COUNT_MAX: u32 = 0xffff;

/// A condition record in shared memory (see the module docs).
#[repr(C)]
#[derive(Debug)]
pub struct CondRecord {
    /// The futex word: notify sequence.
    pub seq: AtomicU32,
    /// Registered waiters (low 16 bits) and pending signals (high 16 bits).
    pub counts: AtomicU32,
    /// Kind tag (`super::kind::CONDITION`).
    pub kind: AtomicU32,
    /// Reserved.
    pub reserved: [AtomicU32; 5],
}

fn waiters(c: u32) -> u32 {
    c & COUNT_MAX
}

fn signals(c: u32) -> u32 {
    c >> 16
}

/// `c` with `signals` clamped to `waiters`: what the word should hold if nobody but this
/// protocol ever wrote it.
fn sane(c: u32) -> u32 {
    signals(c).min(waiters(c)) * SIGNAL + waiters(c)
}

/// How a condition wait ended (the lock is held again in every case).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Woke {
    /// A notify woke it (or, rarely, a spurious wake-up: see the module docs).
    Notified,
    /// The deadline passed first.
    TimedOut,
    /// Aborted.
    Cancelled,
}

impl CondRecord {
    /// Updates `counts` with `f`, which sees the word [`sane`]d and returns `None` to
    /// leave it alone; returns the (saned) value it was changed from, or `None`.
    fn update(&self, f: impl Fn(u32) -> Option<u32>) -> Option<u32> {
        // SeqCst: registration and signal grants must be totally ordered with the `seq`
        // updates that publish them (see the protocol table).
        self.counts
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |c| f(sane(c)))
            .ok()
            .map(sane)
    }

    /// Registers a waiter; returns the `seq` value to sleep on.
    fn register(&self) -> Result<u32> {
        if self
            .update(|c| (waiters(c) < COUNT_MAX).then_some(c + WAITER))
            .is_none()
        {
            return Err(ShmError::new(
                "EAGAIN",
                "too many threads are waiting on this condition (65535)",
            ));
        }
        // Acquire: pairs with the notifier's Release increment.
        Ok(self.seq.load(Ordering::Acquire))
    }

    /// Consumes one pending signal, if any (and the waiter's registration with it).
    fn take_signal(&self) -> bool {
        self.update(|c| (signals(c) > 0).then_some(c - SIGNAL - WAITER))
            .is_some()
    }

    /// Unregisters a waiter that gives up. If that would leave more signals than
    /// waiters, it consumes one of them instead; returns whether it did.
    fn unregister(&self) -> bool {
        let took = |c: u32| waiters(c) > 0 && signals(c) >= waiters(c);
        let old = self
            .update(|c| {
                Some(if took(c) {
                    c - SIGNAL - WAITER
                } else {
                    c - waiters(c).min(1) * WAITER
                })
            })
            .unwrap_or(0);
        took(old)
    }

    /// Grants up to `n` signals to registered waiters and bumps `seq` if it granted any.
    /// Returns how many it granted and the new `seq`.
    fn grant(&self, n: u32) -> (u32, u32) {
        let grantable = |c: u32| n.min(waiters(c) - signals(c));
        let Some(old) = self.update(|c| {
            let g = grantable(c);
            (g > 0).then_some(c + g * SIGNAL)
        }) else {
            return (0, 0);
        };
        let granted = grantable(old);
        // Release: a waiter that sees the new value (Acquire) sees the grant.
        let seq = self.seq.fetch_add(1, Ordering::Release).wrapping_add(1);
        (granted, seq)
    }

    /// Hands a signal a departing waiter consumed to another waiter (without the lock:
    /// plain wake, no requeue).
    fn pass_on(&self) {
        if self.grant(1).0 > 0 {
            sys::futex_wake(&self.seq, 1);
        }
    }

    /// Wakes up to `n` waiters (`u32::MAX`: all), which must be done holding `lock`:
    /// their sleeps move onto the lock word, and each release of the lock wakes one.
    /// Returns how many signals it granted.
    ///
    /// # Errors
    /// `ERR_SHM_NOT_OWNER` when `me` does not hold `lock`.
    pub fn notify(&self, lock: &LockRecord, me: Owner, n: u32) -> Result<u32> {
        if !lock.held_by(me) {
            return Err(not_owner());
        }
        let (granted, seq) = self.grant(n);
        if granted == 0 {
            return Ok(0);
        }
        // We hold the lock, so setting WAITERS cannot resurrect a released word; it makes
        // our release wake one of the requeued sleepers. Relaxed: the futex syscalls order
        // the sleeps against it.
        lock.word.fetch_or(WAITERS, Ordering::Relaxed);
        if sys::futex_requeue(&self.seq, seq, 0, &lock.word, granted).is_none() {
            // `seq` moved on under us (a waiter's wake-up consumed nothing yet): wake.
            sys::futex_wake(&self.seq, granted);
        }
        Ok(granted)
    }
}

/// A condition wait in progress; like [`LockWait`], a step function shared by the
/// blocking and the async driver. Created by [`CondWait::start`] while holding the lock.
#[derive(Debug)]
pub struct CondWait {
    deadline: Option<Deadline>,
    seen: u32,
    saved_depth: u32,
    woke: Option<Woke>,
    relock: LockWait,
}

impl CondWait {
    /// The thread the wait re-acquires the lock for.
    pub fn owner(&self) -> Owner {
        self.relock.owner()
    }

    /// Registers `me` as a waiter and releases `lock` fully (saving an RLock's depth).
    ///
    /// # Errors
    /// `ERR_SHM_NOT_OWNER` when `me` does not hold `lock`; `EAGAIN` with 65535 waiters.
    pub fn start(
        cond: &CondRecord,
        lock: &LockRecord,
        me: Owner,
        deadline: Option<Deadline>,
        queued: bool,
    ) -> Result<CondWait> {
        if !lock.held_by(me) {
            return Err(not_owner());
        }
        let seen = cond.register()?;
        // Relaxed: only the holder touches the depth; the unlock below publishes it.
        let saved_depth = lock.count.swap(0, Ordering::Relaxed);
        if let Err(e) = lock.unlock(me) {
            cond.unregister();
            // Relaxed: the unlock failed, so we still hold the lock and its depth.
            lock.count.store(saved_depth, Ordering::Relaxed);
            return Err(e);
        }
        Ok(CondWait {
            deadline,
            seen,
            saved_depth,
            woke: None,
            // Requeued onto the lock word, it is woken like a lock waiter (see after_wake).
            relock: LockWait::new(me, None, queued).after_wake(),
        })
    }

    /// One step. `cancel`: stop waiting for a notification (the lock is still
    /// re-acquired before the wait finishes). Ends with how it woke and how the lock was
    /// re-acquired.
    pub fn poll<'a>(
        &mut self,
        cond: &'a CondRecord,
        lock: &'a LockRecord,
        cancel: bool,
    ) -> Step<'a, Result<(Woke, Acquired)>> {
        if self.woke.is_none() {
            match self.poll_notified(cond, cancel) {
                Some(woke) => self.woke = Some(woke),
                None => {
                    let slice = Deadline::slice_ms(RECHECK_MS);
                    return Step::Sleep {
                        word: &cond.seq,
                        expected: self.seen,
                        until: Some(self.deadline.map_or(slice, |d| d.min(slice))),
                    };
                }
            }
        }
        let (woke, depth) = (self.woke.unwrap_or(Woke::Notified), self.saved_depth);
        self.relock.poll(lock).map(|r| {
            r.map(|acquired| {
                // Relaxed: only the holder (us, again) touches the depth.
                lock.count.store(depth, Ordering::Relaxed);
                (woke, acquired)
            })
        })
    }

    fn poll_notified(&mut self, cond: &CondRecord, cancel: bool) -> Option<Woke> {
        if cancel {
            if cond.unregister() {
                cond.pass_on();
            }
            return Some(Woke::Cancelled);
        }
        // Acquire: pairs with the notifier's Release increment.
        let seq = cond.seq.load(Ordering::Acquire);
        if seq != self.seen {
            if cond.take_signal() {
                return Some(Woke::Notified);
            }
            self.seen = seq;
        }
        if self.deadline.is_some_and(|d| d.passed()) {
            return Some(if cond.unregister() {
                Woke::Notified
            } else {
                Woke::TimedOut
            });
        }
        None
    }

    /// Gives up without re-acquiring the lock (the mapping is going away).
    pub fn abandon(&mut self, cond: &CondRecord) {
        if self.woke.is_none() && cond.unregister() {
            cond.pass_on();
        }
        self.woke = Some(Woke::Cancelled);
    }
}

/// A blocking condition wait by the calling thread `me` (as owner of `lock`): see
/// [`CondWait`].
///
/// # Errors
/// As [`CondWait::start`], and `ERR_SHM_NOT_RECOVERABLE` from re-acquiring the lock.
pub fn wait(
    cond: &CondRecord,
    lock: &LockRecord,
    me: Owner,
    deadline: Option<Deadline>,
) -> Result<(Woke, Acquired)> {
    wait_unless(cond, lock, None, me, deadline, || false).map(|w| w.expect("never stopped"))
}

/// [`wait`] that asks `stop` after every sleep whether to give up (`Ok(None)`, without
/// re-acquiring the lock), for a JavaScript thread that is being terminated; and, given
/// the condition's `region`, ends with its error (`ERR_SHM_TRUNCATED`, `ENOSPC`) once
/// that mapping lost the record's pages (a sequence word on a lost page never changes).
///
/// # Errors
/// As [`wait`]; the lost mapping's error.
pub fn wait_unless(
    cond: &CondRecord,
    lock: &LockRecord,
    region: Option<&Region>,
    me: Owner,
    deadline: Option<Deadline>,
    stop: impl FnMut() -> bool,
) -> Result<Option<(Woke, Acquired)>> {
    let mut w = CondWait::start(cond, lock, me, deadline, false)?;
    let step = || {
        let s = w.poll(cond, lock, false);
        match region {
            Some(r) => s.unless_lost(r, Err),
            None => s,
        }
    };
    match super::block_on_unless(step, stop) {
        Some(r) => r.map(Some),
        None => {
            w.abandon(cond);
            Ok(None)
        }
    }
}
