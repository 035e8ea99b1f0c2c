//! The waits the async driver runs: each owns its pinned records and turns the step
//! function of its primitive into a completion [`code`].

use super::condition::{CondRecord, CondWait, Woke};
use super::semaphore::{SemRecord, SemWait};
use super::undo::{UndoTable, UndoWait};
use super::word::WordWait;
use super::{code, interrupt, Pinned, Step};
use crate::error::Result;
use crate::memory::mapping::Region;
use crate::sync::lock::{Acquired, LockRecord, LockWait, Owner};
use std::sync::atomic::{AtomicU32, Ordering};

/// A wait the async driver can run.
pub trait AsyncWait: Send {
    /// One step; `interrupts` are the [`interrupt`] bits raised so far.
    fn poll(&mut self, interrupts: u32) -> Step<'_, u32>;

    /// The mappings the wait uses (a condition's lock may lie in another one).
    fn regions(&self) -> [Option<&Region>; 2];

    /// For a wait that finished with `code` and will not be delivered as that (its
    /// mapping was closed before the completion reached JavaScript, or its JavaScript
    /// thread is gone): gives back what it took, never on pages a `detach()` handed to
    /// the caller, and returns what to deliver instead: `CLOSED`, or `code` for a lock
    /// taken over from a dead holder (releasing it unrepaired would make it
    /// unrecoverable: it stays held).
    fn give_back(&mut self, code: u32) -> u32 {
        let _ = code;
        code::CLOSED
    }
}

/// Whether a wait's mapping was closed or detached (its completion must not settle as a
/// success).
pub fn closed(op: &dyn AsyncWait) -> bool {
    op.regions().iter().flatten().any(|r| !r.is_live())
}

/// Whether a wait uses `region`.
pub fn uses(op: &dyn AsyncWait, region: &Region) -> bool {
    op.regions()
        .iter()
        .flatten()
        .any(|r| std::ptr::eq(*r, region))
}

/// Whether pages of `r` may still be written: mapped, or closed but pinned (not handed to
/// the caller by `detach()`).
fn touchable(r: &Region) -> bool {
    r.is_live() || r.is_closing()
}

/// [`AsyncWait::give_back`] of a lock that a wait completing with `code` took for `me`
/// (an RLock's depth goes with it).
fn give_lock_back(rec: &Pinned<LockRecord>, me: Owner, code: u32) -> u32 {
    if code & code::OWNER_DIED != 0 {
        return code;
    }
    let lock = rec.get();
    if touchable(rec.region()) && lock.held_by(me) {
        // Relaxed: only the holder touches the depth; the unlock publishes it.
        lock.count.store(0, Ordering::Relaxed);
        let _ = lock.unlock(me);
    }
    code::CLOSED
}

/// The completion code of a lock acquisition.
pub fn lock_code(r: Result<Acquired>) -> u32 {
    match r {
        Ok(Acquired::Yes) => code::OK,
        Ok(Acquired::OwnerDied) => code::OK | code::OWNER_DIED,
        Ok(Acquired::TimedOut) => code::TIMED_OUT,
        // Queued waits never report a deadlock; the only error left is a dead lock.
        Err(_) => code::NOT_RECOVERABLE,
    }
}

/// The completion code of a condition wait (the lock is held again unless it is
/// `NOT_RECOVERABLE`).
pub fn cond_code(r: Result<(Woke, Acquired)>) -> u32 {
    let Ok((woke, acquired)) = r else {
        return code::NOT_RECOVERABLE;
    };
    let outcome = match woke {
        Woke::Notified => code::OK,
        Woke::TimedOut => code::TIMED_OUT,
        Woke::Cancelled => code::CANCELLED,
    };
    outcome | lock_code(Ok(acquired))
}

/// The completion code of a wait that ends with `true` when it got what it waited for (a
/// unit, a changed word) and `false` when its deadline passed first.
pub fn done_code(got: bool) -> u32 {
    if got {
        code::OK
    } else {
        code::TIMED_OUT
    }
}

/// The completion code of a wait ended by an interrupt: an abort, else a close.
fn interrupted(interrupts: u32) -> u32 {
    if interrupts & interrupt::CANCEL != 0 {
        code::CANCELLED
    } else {
        code::CLOSED
    }
}

/// `Lock#acquireAsync`: takes the lock for the JavaScript thread that asked.
#[derive(Debug)]
pub struct LockOp {
    /// The lock.
    pub rec: Pinned<LockRecord>,
    /// The acquisition (queued, for the asking thread's identity).
    pub wait: LockWait,
}

impl AsyncWait for LockOp {
    fn poll(&mut self, interrupts: u32) -> Step<'_, u32> {
        if interrupts != 0 {
            self.wait.abandon(self.rec.get());
            return Step::Done(interrupted(interrupts));
        }
        self.wait.poll(self.rec.get()).map(lock_code)
    }

    fn regions(&self) -> [Option<&Region>; 2] {
        [Some(self.rec.region()), None]
    }

    fn give_back(&mut self, code: u32) -> u32 {
        if code & 0xff != code::OK {
            return code::CLOSED;
        }
        give_lock_back(&self.rec, self.wait.owner(), code)
    }
}

/// `Semaphore#acquireAsync`.
#[derive(Debug)]
pub struct SemOp {
    /// The semaphore.
    pub rec: Pinned<SemRecord>,
    /// The acquisition.
    pub wait: SemWait,
}

impl AsyncWait for SemOp {
    fn poll(&mut self, interrupts: u32) -> Step<'_, u32> {
        if interrupts != 0 {
            self.wait.abandon(self.rec.get());
            return Step::Done(interrupted(interrupts));
        }
        self.wait
            .poll(self.rec.get())
            .map(done_code)
            .unless_lost(self.rec.region(), |_| code::LOST)
    }

    fn regions(&self) -> [Option<&Region>; 2] {
        [Some(self.rec.region()), None]
    }

    fn give_back(&mut self, code: u32) -> u32 {
        if code == code::OK && touchable(self.rec.region()) {
            let _ = self.rec.get().release(1);
        }
        code::CLOSED
    }
}

/// A word wait (`super::word`): `wordWaitAsync`.
#[derive(Debug)]
pub struct WordOp {
    /// The word.
    pub word: Pinned<AtomicU32>,
    /// The wait.
    pub wait: WordWait,
}

impl AsyncWait for WordOp {
    fn poll(&mut self, interrupts: u32) -> Step<'_, u32> {
        if interrupts != 0 {
            return Step::Done(interrupted(interrupts));
        }
        self.wait
            .poll(self.word.get())
            .map(done_code)
            .unless_lost(self.word.region(), |_| code::LOST)
    }

    fn regions(&self) -> [Option<&Region>; 2] {
        [Some(self.word.region()), None]
    }
}

/// `Semaphore#acquireAsync` of an undo semaphore (`super::undo`).
#[derive(Debug)]
pub struct UndoOp {
    /// The semaphore, with its undo table as tail.
    pub rec: Pinned<SemRecord>,
    /// The take (for the asking thread's token).
    pub wait: UndoWait,
}

impl AsyncWait for UndoOp {
    fn poll(&mut self, interrupts: u32) -> Step<'_, u32> {
        let Ok(table) = UndoTable::new(self.rec.get(), self.rec.tail()) else {
            return Step::Done(code::CORRUPT);
        };
        if interrupts != 0 {
            self.wait.abandon(&table);
            return Step::Done(interrupted(interrupts));
        }
        self.wait
            .poll(&table)
            .map(|r| match r {
                Ok(true) => code::OK,
                Ok(false) => code::TIMED_OUT,
                Err(e) if e.code == "EAGAIN" => code::FULL,
                Err(_) => code::CORRUPT,
            })
            .unless_lost(self.rec.region(), |_| code::LOST)
    }

    fn regions(&self) -> [Option<&Region>; 2] {
        [Some(self.rec.region()), None]
    }

    fn give_back(&mut self, code: u32) -> u32 {
        if code == code::OK && touchable(self.rec.region()) {
            if let Ok(table) = UndoTable::new(self.rec.get(), self.rec.tail()) {
                let _ = table.release(self.wait.owner(), 1);
            }
        }
        code::CLOSED
    }
}

/// `Condition#waitAsync`: waits for a notification, then re-acquires the lock for the
/// JavaScript thread that asked (also after a timeout or an abort).
#[derive(Debug)]
pub struct CondOp {
    /// The condition.
    pub cond: Pinned<CondRecord>,
    /// Its lock.
    pub lock: Pinned<LockRecord>,
    /// The wait, started on the JavaScript thread while it held the lock.
    pub wait: CondWait,
}

impl AsyncWait for CondOp {
    fn poll(&mut self, interrupts: u32) -> Step<'_, u32> {
        if interrupts & (interrupt::CLOSE | interrupt::DROP) != 0 {
            self.wait.abandon(self.cond.get());
            return Step::Done(code::CLOSED);
        }
        let cancel = interrupts & interrupt::CANCEL != 0;
        self.wait
            .poll(self.cond.get(), self.lock.get(), cancel)
            .map(cond_code)
            .unless_lost(self.cond.region(), |_| code::LOST)
    }

    fn regions(&self) -> [Option<&Region>; 2] {
        [Some(self.cond.region()), Some(self.lock.region())]
    }

    fn give_back(&mut self, code: u32) -> u32 {
        // Notified, timed out or aborted: the lock was taken again either way.
        if !matches!(code & 0xff, code::OK | code::TIMED_OUT | code::CANCELLED) {
            return code::CLOSED;
        }
        give_lock_back(&self.lock, self.wait.owner(), code)
    }
}
