//! Threads and the waiter pool against the condition, semaphore and lock protocols.

use super::condition::{self, CondRecord, CondWait, Woke};
use super::ops::{CondOp, LockOp, SemOp};
use super::semaphore::{SemRecord, SemWait};
use super::{code, waiter, Pinned};
use crate::memory::mapping::Region;
use crate::sync::lock::{Acquired, LockRecord, LockWait, Owner};
use crate::sys::Deadline;
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A record at `off` of a region that outlives every thread of the test.
fn at<T>(r: &Region, off: usize) -> &'static T {
    // SAFETY: in bounds, 4-aligned, zeroed by mmap; the tests keep the region mapped
    // until every thread using it was joined.
    unsafe { &*((r.addr() + off) as *const T) }
}

/// Completions, as the JavaScript sink would get them.
struct Chan(Mutex<mpsc::Sender<(u64, u32)>>);

impl waiter::Deliver for Chan {
    fn deliver(&self, id: u64, code: u32) {
        self.0.lock().unwrap().send((id, code)).unwrap();
    }
}

fn chan() -> (Arc<Chan>, mpsc::Receiver<(u64, u32)>) {
    let (tx, rx) = mpsc::channel();
    (Arc::new(Chan(Mutex::new(tx))), rx)
}

#[test]
fn semaphore_counts_exactly_across_threads() {
    let r = crate::memory::mapping::shared_anon_for_tests(4096);
    let sem: &SemRecord = at(&r, 0);
    let produced = 20_000u32;
    let consumers: Vec<_> = (0..3)
        .map(|_| {
            std::thread::spawn(move || {
                let mut got = 0u32;
                while sem.acquire(Some(Deadline::after_ms(200.0))) {
                    got += 1;
                }
                got
            })
        })
        .collect();
    for _ in 0..produced {
        sem.release(1).unwrap();
    }
    let total: u32 = consumers.into_iter().map(|t| t.join().unwrap()).sum();
    assert_eq!(total, produced);
    assert_eq!(
        sem.word.load(Ordering::Relaxed) & super::semaphore::COUNT_MASK,
        0
    );
    let t0 = Instant::now();
    assert!(!sem.acquire(Some(Deadline::after_ms(30.0))));
    assert!(t0.elapsed() >= Duration::from_millis(29));
    assert_eq!(
        sem.release(0x7fff_ffff).map(|_| ()),
        Ok(()),
        "up to 2^31 - 1"
    );
    assert_eq!(
        sem.release(1).unwrap_err().kind,
        crate::error::ErrorKind::Range
    );
    r.close();
}

#[test]
fn notify_all_moves_eight_waiters_to_the_lock_one_at_a_time() {
    let r = crate::memory::mapping::shared_anon_for_tests(4096);
    let lock: &LockRecord = at(&r, 0);
    let cond: &CondRecord = at(&r, 64);
    let inside: &std::sync::atomic::AtomicU32 = at(&r, 128);
    let ready: &std::sync::atomic::AtomicU32 = at(&r, 132);
    let threads: Vec<_> = (0..8)
        .map(|_| {
            std::thread::spawn(move || {
                let me = Owner::current();
                lock.lock(me, None).unwrap();
                ready.fetch_add(1, Ordering::SeqCst);
                let (woke, acq) = condition::wait(cond, lock, None).unwrap();
                // Exactly one thread at a time in here: the lock is held again.
                assert_eq!(inside.fetch_add(1, Ordering::SeqCst), 0);
                std::thread::sleep(Duration::from_millis(2));
                inside.fetch_sub(1, Ordering::SeqCst);
                lock.unlock(me).unwrap();
                (woke, acq)
            })
        })
        .collect();
    let me = Owner::current();
    while ready.load(Ordering::SeqCst) < 8 {
        std::thread::sleep(Duration::from_millis(1));
    }
    lock.lock(me, None).unwrap();
    // Every waiter registered under the lock before it let go of it.
    assert_eq!(cond.counts.load(Ordering::SeqCst) & 0xffff, 8);
    assert_eq!(cond.notify(lock, me, u32::MAX).unwrap(), 8);
    lock.unlock(me).unwrap();
    for t in threads {
        assert_eq!(t.join().unwrap(), (Woke::Notified, Acquired::Yes));
    }
    assert_eq!(cond.counts.load(Ordering::SeqCst), 0);
    r.close();
}

#[test]
fn notify_one_wakes_exactly_one_and_timeouts_reacquire() {
    let r = crate::memory::mapping::shared_anon_for_tests(4096);
    let lock: &LockRecord = at(&r, 0);
    let cond: &CondRecord = at(&r, 64);
    let woken: &std::sync::atomic::AtomicU32 = at(&r, 128);
    let threads: Vec<_> = (0..4)
        .map(|_| {
            std::thread::spawn(move || {
                let me = Owner::current();
                lock.lock(me, None).unwrap();
                let (woke, _) =
                    condition::wait(cond, lock, Some(Deadline::after_ms(400.0))).unwrap();
                if woke == Woke::Notified {
                    woken.fetch_add(1, Ordering::SeqCst);
                }
                lock.unlock(me).unwrap();
                woke
            })
        })
        .collect();
    let me = Owner::current();
    while cond.counts.load(Ordering::SeqCst) & 0xffff < 4 {
        std::thread::sleep(Duration::from_millis(1));
    }
    lock.lock(me, None).unwrap();
    assert_eq!(cond.notify(lock, me, 1).unwrap(), 1);
    lock.unlock(me).unwrap();
    let results: Vec<Woke> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    assert_eq!(woken.load(Ordering::SeqCst), 1, "{results:?}");
    assert_eq!(
        results.iter().filter(|w| **w == Woke::TimedOut).count(),
        3,
        "the others time out (and hold the lock again when they return)"
    );
    assert_eq!(cond.counts.load(Ordering::SeqCst), 0);
    // Notify with no waiters grants nothing; without the lock it is refused.
    lock.lock(me, None).unwrap();
    assert_eq!(cond.notify(lock, me, 5).unwrap(), 0);
    lock.unlock(me).unwrap();
    assert_eq!(
        cond.notify(lock, me, 1).unwrap_err().code,
        "ERR_SHM_NOT_OWNER"
    );
    r.close();
}

#[test]
fn waiter_pool_runs_many_lock_waits_and_cancels_and_closes() {
    let r = crate::memory::mapping::shared_anon_for_tests(4096);
    let lock: &LockRecord = at(&r, 0);
    let me = Owner::current();
    lock.lock(me, None).unwrap();
    let (sink, rx) = chan();
    // 300 waits: more than one waiter thread holds.
    let ids: Vec<u64> = (0..300)
        .map(|_| {
            let op = LockOp {
                rec: Pinned::new(&r, 0).unwrap(),
                wait: LockWait::new(me, None, true),
            };
            waiter::submit(Box::new(op), &[&r], 1, sink.clone())
        })
        .collect();
    std::thread::sleep(Duration::from_millis(20));
    // Abort one: it finishes promptly.
    let t0 = Instant::now();
    waiter::cancel(ids[7]);
    assert_eq!(
        rx.recv_timeout(Duration::from_secs(1)).unwrap(),
        (ids[7], code::CANCELLED)
    );
    assert!(t0.elapsed() < Duration::from_millis(50));
    // Hand the lock down the line: each completion means "acquired for `me`".
    lock.unlock(me).unwrap();
    for _ in 0..250 {
        let (_, c) = rx.recv_timeout(Duration::from_secs(2)).unwrap();
        assert_eq!(c, code::OK);
        lock.unlock(me).unwrap();
    }
    // Closing the mapping ends the rest.
    let (_, c) = rx.recv_timeout(Duration::from_secs(2)).unwrap();
    assert_eq!(c, code::OK);
    waiter::close_region(&r);
    for _ in 0..48 {
        assert_eq!(
            rx.recv_timeout(Duration::from_secs(1)).unwrap().1,
            code::CLOSED
        );
    }
    assert!(rx.recv_timeout(Duration::from_millis(100)).is_err());
    lock.unlock(me).unwrap();
    r.close();
}

#[test]
fn async_condition_and_semaphore_waits() {
    let r = crate::memory::mapping::shared_anon_for_tests(4096);
    let lock: &LockRecord = at(&r, 0);
    let cond: &CondRecord = at(&r, 64);
    let sem: &SemRecord = at(&r, 128);
    let me = Owner::current();
    let (sink, rx) = chan();
    // Eight async condition waits, all started holding the lock.
    for _ in 0..8 {
        lock.lock(me, None).unwrap();
        lock.count.store(3, Ordering::Relaxed); // an RLock depth, restored on return
        let wait = CondWait::start(cond, lock, me, None, true).unwrap();
        assert_eq!(lock.count.load(Ordering::Relaxed), 0);
        let op = CondOp {
            cond: Pinned::new(&r, 64).unwrap(),
            lock: Pinned::new(&r, 0).unwrap(),
            wait,
        };
        waiter::submit(Box::new(op), &[&r], 2, sink.clone());
    }
    std::thread::sleep(Duration::from_millis(20));
    assert!(rx.try_recv().is_err());
    lock.lock(me, None).unwrap();
    assert_eq!(cond.notify(lock, me, u32::MAX).unwrap(), 8);
    lock.unlock(me).unwrap();
    for _ in 0..8 {
        let (_, c) = rx.recv_timeout(Duration::from_secs(2)).unwrap();
        assert_eq!(c, code::OK);
        assert_eq!(lock.count.load(Ordering::Relaxed), 3);
        lock.count.store(0, Ordering::Relaxed);
        lock.unlock(me).unwrap();
    }
    // Semaphore: five waits, three units.
    for _ in 0..5 {
        let op = SemOp {
            rec: Pinned::new(&r, 128).unwrap(),
            wait: SemWait::new(Some(Deadline::after_ms(300.0))),
        };
        waiter::submit(Box::new(op), &[&r], 2, sink.clone());
    }
    sem.release(3).unwrap();
    let mut codes: Vec<u32> = (0..5)
        .map(|_| rx.recv_timeout(Duration::from_secs(2)).unwrap().1)
        .collect();
    codes.sort();
    assert_eq!(
        codes,
        [
            code::OK,
            code::OK,
            code::OK,
            code::TIMED_OUT,
            code::TIMED_OUT
        ]
    );
    r.close();
}

#[test]
fn requeue_moves_plain_and_futex_waitv_sleepers() {
    use crate::sys;
    let r = crate::memory::mapping::shared_anon_for_tests(4096);
    let a: &std::sync::atomic::AtomicU32 = at(&r, 0);
    let b: &std::sync::atomic::AtomicU32 = at(&r, 4);
    let c: &std::sync::atomic::AtomicU32 = at(&r, 8);
    let t0 = Instant::now();
    let plain = std::thread::spawn(move || sys::futex_wait(a, 0, Some(Deadline::after_ms(3000.0))));
    let many = std::thread::spawn(move || {
        sys::futex_wait_any(&[(c, 0), (a, 0)], Some(Deadline::after_ms(3000.0)))
    });
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(sys::futex_requeue(a, 1, 0, b, 10), None, "value check");
    assert_eq!(sys::futex_requeue(a, 0, 0, b, 10), Some(2));
    assert_eq!(sys::futex_wake(a, 10), 0, "nobody sleeps on the old word");
    assert_eq!(sys::futex_wake(b, 10), 2);
    assert_eq!(plain.join().unwrap(), sys::WaitOutcome::Retry);
    assert_eq!(many.join().unwrap(), sys::WaitOutcome::Retry);
    assert!(t0.elapsed() < Duration::from_millis(1000));
    r.close();
}
