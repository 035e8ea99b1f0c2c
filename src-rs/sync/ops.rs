//! The waits the async driver runs: each owns its pinned records and turns the step
//! function of its primitive into a completion [`code`].

use super::condition::{CondRecord, CondWait, Woke};
use super::semaphore::{SemRecord, SemWait};
use super::undo::{UndoTable, UndoWait};
use super::word::WordWait;
use super::{code, interrupt, Pinned, Step};
use crate::error::Result;
use crate::sync::lock::{Acquired, LockRecord, LockWait, Owner};
use std::sync::atomic::{AtomicU32, Ordering};

/// A wait the async driver can run.
pub trait AsyncWait: Send {
    /// One step; `interrupts` are the [`interrupt`] bits raised so far.
    fn poll(&mut self, interrupts: u32) -> Step<'_, u32>;

    /// For a wait that finished with `code` and whose mapping was closed before the
    /// completion reached JavaScript (it would settle on a closed mapping, and nothing
    /// could give back what it took): gives back what it took and returns `CLOSED`, as if
    /// the close had come first; else returns `code`. Called on the JavaScript thread,
    /// with the records still pinned.
    fn undo_if_closed(&mut self, code: u32) -> u32 {
        code
    }
}

/// What a lock acquisition that completed with `code` for `me` took, given back: the
/// lock, unless it was taken over from a dead holder (a release would make it
/// unrecoverable; it stays held, as the completion says). An RLock's depth goes with it.
fn give_lock_back(rec: &LockRecord, me: Owner, code: u32) -> u32 {
    if code & code::OWNER_DIED != 0 || !rec.held_by(me) {
        return code;
    }
    // Relaxed: only the holder touches the depth; the unlock publishes it.
    rec.count.store(0, Ordering::Relaxed);
    let _ = rec.unlock(me);
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

    fn undo_if_closed(&mut self, code: u32) -> u32 {
        if !self.rec.region().is_closing() || code & 0xff != code::OK {
            return code;
        }
        give_lock_back(self.rec.get(), self.wait.owner(), code)
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

    fn undo_if_closed(&mut self, code: u32) -> u32 {
        if !self.rec.region().is_closing() || code != code::OK || self.rec.get().release(1).is_err()
        {
            return code;
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

    fn undo_if_closed(&mut self, code: u32) -> u32 {
        if !self.rec.region().is_closing() || code != code::OK {
            return code;
        }
        match UndoTable::new(self.rec.get(), self.rec.tail()) {
            Ok(table) if table.release(self.wait.owner(), 1).is_ok() => code::CLOSED,
            _ => code,
        }
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

    fn undo_if_closed(&mut self, code: u32) -> u32 {
        // Notified, timed out or aborted: the lock was taken again either way.
        let relocked = matches!(code & 0xff, code::OK | code::TIMED_OUT | code::CANCELLED);
        if !self.cond.region().is_closing() || !relocked {
            return code;
        }
        give_lock_back(self.lock.get(), self.wait.owner(), code)
    }
}
