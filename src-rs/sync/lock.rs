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
//! | 0..=29 | owner         | kernel thread id of the holder; 0 = unlocked                 |
//! | 30     | `OWNER_DIED`  | the holder acquired it from a dead holder and has not yet    |
//! |        |               | called `markConsistent()`                                    |
//! | 31     | `WAITERS`     | someone may be sleeping in `FUTEX_WAIT`: release must wake   |
//!
//! Special value: `NOT_RECOVERABLE` = `0x3fff_ffff` (owner bits all ones, a thread id no
//! kernel hands out): a recovered lock was released without `markConsistent()`; every
//! acquire fails with `ERR_SHM_NOT_RECOVERABLE` from then on (POSIX robust-mutex rules).
//!
//! | word                  | state                                |
//! |-----------------------|--------------------------------------|
//! | `0`                   | free                                 |
//! | `tid`                 | held by `tid`, nobody waiting        |
//! | `tid \| WAITERS`       | held by `tid`, maybe waiters         |
//! | `tid \| OWNER_DIED ..` | held by `tid` after recovery         |
//! | `NOT_RECOVERABLE`     | dead forever                         |
//!
//! ## The rest of the record
//!
//! | offset | field        | meaning                                                     |
//! |--------|--------------|-------------------------------------------------------------|
//! | 0      | `word`       | the lock word above                                         |
//! | 4      | `count`      | recursion depth (RLock); 0 for a plain Lock                 |
//! | 8      | `kind`       | reserved for the primitive's kind tag                       |
//! | 12     | `owner_tid`  | copy of the owner written right after acquiring             |
//! | 16     | `start_lo`   | owner thread's start time (clock ticks since boot), low 32  |
//! | 20     | `start_hi`   | ... high 32 bits; with `owner_tid` it defeats tid reuse     |
//! | 24     | `aux0`       | reserved                                                    |
//! | 28     | `aux1`       | reserved                                                    |
//!
//! `owner_tid`/`start_*` are written after the word, so a reader trusts the start time only
//! when `owner_tid` equals the word's owner.
//!
//! ## Waiting
//!
//! The contended path is a step function, [`LockWait`], run either by the blocked thread
//! itself or, for `acquireAsync`, by a dedicated waiter thread (`crate::sync::waiter`)
//! that takes the lock *for* the JavaScript thread that asked: it writes that thread's
//! id, so ownership belongs to the thread that will release. Sleeps are sliced
//! ([`RECHECK_MS`]); after each slice the holder's liveness is checked.

use crate::error::{Result, ShmError};
use crate::sync::{block_on_unless, Step, RECHECK_MS};
use crate::sys::{self, Deadline};
use std::sync::atomic::{AtomicU32, Ordering};

/// Owner thread id bits.
pub const TID_MASK: u32 = 0x3fff_ffff;
/// The holder recovered the lock from a dead owner and has not marked it consistent.
pub const OWNER_DIED: u32 = 1 << 30;
/// Somebody may be waiting: release must wake.
pub const WAITERS: u32 = 1 << 31;
/// The lock can never be acquired again.
pub const NOT_RECOVERABLE: u32 = TID_MASK;
/// Size of a lock record in bytes.
pub const RECORD_SIZE: u64 = 32;

/// A lock record in shared memory (see the module docs for the layout).
#[repr(C)]
#[derive(Debug)]
pub struct LockRecord {
    /// The futex word.
    pub word: AtomicU32,
    /// RLock recursion depth.
    pub count: AtomicU32,
    /// Reserved kind tag.
    pub kind: AtomicU32,
    /// Copy of the owner's thread id.
    pub owner_tid: AtomicU32,
    /// Owner start time, low half.
    pub start_lo: AtomicU32,
    /// Owner start time, high half.
    pub start_hi: AtomicU32,
    /// Reserved.
    pub aux0: AtomicU32,
    /// Reserved.
    pub aux1: AtomicU32,
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

/// Who this thread is, as the lock records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owner {
    /// Kernel thread id (fits in 30 bits).
    pub tid: u32,
    /// Start time of the thread, clock ticks since boot.
    pub start: u64,
}

thread_local! {
    /// This thread's identity, read once: the start time costs a `/proc` read.
    static CURRENT: Owner = {
        let tid = sys::thread_id();
        Owner { tid, start: sys::thread_start_time(tid).unwrap_or(0) }
    };
}

impl Owner {
    /// The calling thread.
    #[inline]
    pub fn current() -> Owner {
        CURRENT.with(|o| *o)
    }
}

impl LockRecord {
    fn record_owner(&self, me: Owner) {
        // Relaxed: these fields are a hint for dead-owner detection, validated against
        // the word's owner bits, which are what carry ownership.
        self.owner_tid.store(me.tid, Ordering::Relaxed);
        self.start_lo.store(me.start as u32, Ordering::Relaxed);
        self.start_hi
            .store((me.start >> 32) as u32, Ordering::Relaxed);
    }

    /// Tries once to take a free lock.
    #[inline]
    pub fn try_lock(&self, me: Owner) -> Result<bool> {
        // Acquire: on success, everything the previous holder wrote before its release
        // (a Release store of 0) is visible to us.
        match self
            .word
            .compare_exchange(0, me.tid, Ordering::Acquire, Ordering::Relaxed)
        {
            Ok(_) => {
                self.record_owner(me);
                Ok(true)
            }
            Err(NOT_RECOVERABLE) => Err(not_recoverable()),
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

    /// If the holder recorded in `seen` is dead, takes the lock over from it.
    #[cold]
    fn try_recover(&self, seen: u32, me: Owner) -> Option<Acquired> {
        let tid = seen & TID_MASK;
        if tid == 0 || tid == NOT_RECOVERABLE || self.owner_alive(tid) {
            return None;
        }
        // Acquire: whatever the dead holder managed to write is visible to us.
        self.word
            .compare_exchange(
                seen,
                me.tid | OWNER_DIED | WAITERS,
                Ordering::Acquire,
                Ordering::Relaxed,
            )
            .ok()?;
        self.count.store(0, Ordering::Relaxed);
        self.record_owner(me);
        Some(Acquired::OwnerDied)
    }

    /// Whether thread `tid`, which the word names as owner, still exists and is the same
    /// thread that took the lock (not a later thread that reused the id).
    pub fn owner_alive(&self, tid: u32) -> bool {
        let Some(now) = sys::thread_start_time(tid) else {
            return false;
        };
        if self.owner_tid.load(Ordering::Relaxed) != tid {
            return true; // the holder has not recorded its start time yet: assume alive
        }
        let recorded = self.start_lo.load(Ordering::Relaxed) as u64
            | (self.start_hi.load(Ordering::Relaxed) as u64) << 32;
        recorded == 0 || recorded == now
    }

    /// Wakes one waiter after a release that saw `WAITERS`.
    pub fn wake_one(&self) {
        sys::futex_wake(&self.word, 1);
    }

    /// Releases the lock held by `me` (the native twin of the JavaScript fast path).
    ///
    /// # Errors
    /// `ERR_SHM_NOT_OWNER` when `me` does not hold it.
    pub fn unlock(&self, me: Owner) -> Result<()> {
        let v = self.word.load(Ordering::Relaxed);
        if v == NOT_RECOVERABLE || v & TID_MASK != me.tid {
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
        let v = self.word.load(Ordering::Relaxed);
        if v == NOT_RECOVERABLE || v & TID_MASK != me.tid {
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
/// value to sleep on and until when. Sleeps are cut into [`RECHECK_MS`] slices: after
/// each slice the holder's liveness is checked, so a dead holder is noticed within one
/// slice, and a wake-up lost to a waiter that gave up costs at most one slice.
#[derive(Debug, Clone, Copy)]
pub struct LockWait {
    me: Owner,
    deadline: Option<Deadline>,
    next_check: Deadline,
    queued: bool,
}

impl LockWait {
    /// A wait by `me` until `deadline` (`None`: forever). `queued`: the wait is one of
    /// possibly several async waits of the same thread, so finding the lock held by
    /// `me` means "held by another task of this thread", not a deadlock.
    pub fn new(me: Owner, deadline: Option<Deadline>, queued: bool) -> LockWait {
        LockWait {
            me,
            deadline,
            next_check: Deadline::after_ms(RECHECK_MS),
            queued,
        }
    }

    /// One step: take the lock if it is free (or its holder died), else say what to
    /// sleep on. `Done(Ok(TimedOut))` once the deadline passed.
    pub fn poll<'a>(&mut self, rec: &'a LockRecord) -> Step<'a, Result<Acquired>> {
        let me = self.me;
        loop {
            // Relaxed: a snapshot; the compare-and-swaps below carry the ordering.
            let v = rec.word.load(Ordering::Relaxed);
            if v == NOT_RECOVERABLE {
                return Step::Done(Err(not_recoverable()));
            }
            if v & TID_MASK == 0 {
                // Free. We were contending, so others may be too: take it with WAITERS
                // set so our release wakes the next one (std's "locked, contended").
                // Acquire pairs with the previous holder's Release.
                if rec
                    .word
                    .compare_exchange(v, me.tid | WAITERS, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
                {
                    rec.record_owner(me);
                    return Step::Done(Ok(Acquired::Yes));
                }
                continue;
            }
            if v & TID_MASK == me.tid && !self.queued {
                return Step::Done(Err(ShmError::new(
                    "ERR_SHM_DEADLOCK",
                    "this thread already holds the lock (use an RLock to re-enter)",
                )));
            }
            // Relaxed: the bit only asks the holder to wake us; the futex syscall orders
            // our sleep against its wake.
            if v & WAITERS == 0
                && rec
                    .word
                    .compare_exchange(v, v | WAITERS, Ordering::Relaxed, Ordering::Relaxed)
                    .is_err()
            {
                continue;
            }
            if self.next_check.passed() {
                self.next_check = Deadline::after_ms(RECHECK_MS);
                if let Some(acq) = rec.try_recover(v | WAITERS, me) {
                    return Step::Done(Ok(acq));
                }
            }
            if self.deadline.is_some_and(|d| d.passed()) {
                return Step::Done(Ok(Acquired::TimedOut));
            }
            return Step::Sleep {
                word: &rec.word,
                expected: v | WAITERS,
                until: Some(
                    self.deadline
                        .map_or(self.next_check, |d| d.min(self.next_check)),
                ),
            };
        }
    }

    /// Gives the wait up (cancelled): if the lock is free now, passes on a wake-up this
    /// waiter may have consumed, so a sleeping waiter does not wait a whole slice.
    pub fn abandon(&self, rec: &LockRecord) {
        // Relaxed: a hint; a needless wake costs a syscall, a missed one a slice.
        if rec.word.load(Ordering::Relaxed) & TID_MASK == 0 {
            rec.wake_one();
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
    use crate::memory::mapping::Region;

    fn record(r: &Region, off: usize) -> &LockRecord {
        // SAFETY: in bounds, 4-aligned, zero-initialised by mmap; lives as long as `r`.
        unsafe { &*((r.addr() + off) as *const LockRecord) }
    }

    /// Increments a non-atomic counter under the lock from several threads.
    #[test]
    fn threads_never_lose_an_increment() {
        let r = crate::memory::mapping::shared_anon_for_tests(4096);
        let base = r.addr();
        let threads: Vec<_> = (0..4)
            .map(|_| {
                std::thread::spawn(move || {
                    // SAFETY: the region outlives the threads (joined below).
                    let rec = unsafe { &*(base as *const LockRecord) };
                    let counter = (base + 64) as *mut u64;
                    let me = Owner::current();
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
        let total = unsafe { ((base + 64) as *const u64).read_volatile() };
        assert_eq!(total, 200_000);
        r.close();
    }

    /// Two processes (fork) increment under the lock; the total is exact.
    #[test]
    fn processes_never_lose_an_increment() {
        let r = crate::memory::mapping::shared_anon_for_tests(4096);
        let base = r.addr();
        let rec = record(&r, 0);
        let counter = (base + 64) as *mut u64;
        // SAFETY: the child only touches the shared mapping and exits with _exit.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0);
        let me = Owner::current();
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
        r.close();
    }

    #[test]
    fn timeout_not_owner_and_dead_owner() {
        let r = crate::memory::mapping::shared_anon_for_tests(4096);
        let rec = record(&r, 0);
        let me = Owner::current();
        // Held by a thread that exits without releasing.
        let base = r.addr();
        std::thread::spawn(move || {
            // SAFETY: region outlives the thread.
            let rec = unsafe { &*(base as *const LockRecord) };
            rec.lock(Owner::current(), None).unwrap();
        })
        .join()
        .unwrap();
        assert_eq!(rec.unlock(me).unwrap_err().code, "ERR_SHM_NOT_OWNER");
        let t0 = std::time::Instant::now();
        assert_eq!(rec.lock(me, None).unwrap(), Acquired::OwnerDied);
        assert!(t0.elapsed().as_millis() < 250);
        // Released without markConsistent: dead forever.
        rec.unlock(me).unwrap();
        assert_eq!(
            rec.lock(me, None).unwrap_err().code,
            "ERR_SHM_NOT_RECOVERABLE"
        );

        let rec2 = record(&r, 32);
        rec2.lock(me, None).unwrap();
        let t = std::thread::spawn(move || {
            // SAFETY: region outlives the thread.
            let rec2 = unsafe { &*((base + 32) as *const LockRecord) };
            rec2.lock(Owner::current(), Some(Deadline::after_ms(30.0)))
                .unwrap()
        });
        assert_eq!(t.join().unwrap(), Acquired::TimedOut);
        assert_eq!(rec2.lock(me, None).unwrap_err().code, "ERR_SHM_DEADLOCK");
        rec2.unlock(me).unwrap();
        r.close();
    }
}
