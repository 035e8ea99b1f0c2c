//! Threads and the waiter pool against the condition, semaphore and lock protocols.

use super::condition::{self, CondRecord, CondWait, Woke};
use super::ops::{self, AsyncWait, CondOp, LockOp, SemOp};
use super::semaphore::{SemRecord, SemWait};
use super::{code, waiter, Pinned, Step};
use crate::memory::mapping::Region;
use crate::sync::liveness::TokenRef;
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

/// The calling thread's token on `r` and its owner view (keep the first alive).
fn claim(r: &Region) -> (TokenRef, Owner) {
    let t = TokenRef::claim(r, None).unwrap();
    let me = t.owner(r);
    (t, me)
}

/// Completions, as the JavaScript sink would get them.
struct Chan(Mutex<mpsc::Sender<(u64, u32)>>);

impl waiter::Deliver for Chan {
    fn deliver(&self, id: u64, code: u32, _op: Box<dyn AsyncWait>) {
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
            let r = r.clone();
            std::thread::spawn(move || {
                let (_t, me) = claim(&r);
                lock.lock(me, None).unwrap();
                ready.fetch_add(1, Ordering::SeqCst);
                let (woke, acq) = condition::wait(cond, lock, me, None).unwrap();
                // Exactly one thread at a time in here: the lock is held again.
                assert_eq!(inside.fetch_add(1, Ordering::SeqCst), 0);
                std::thread::sleep(Duration::from_millis(2));
                inside.fetch_sub(1, Ordering::SeqCst);
                lock.unlock(me).unwrap();
                (woke, acq)
            })
        })
        .collect();
    let (_t, me) = claim(&r);
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
            let r = r.clone();
            std::thread::spawn(move || {
                let (_t, me) = claim(&r);
                lock.lock(me, None).unwrap();
                let (woke, _) =
                    condition::wait(cond, lock, me, Some(Deadline::after_ms(400.0))).unwrap();
                if woke == Woke::Notified {
                    woken.fetch_add(1, Ordering::SeqCst);
                }
                lock.unlock(me).unwrap();
                woke
            })
        })
        .collect();
    let (_t, me) = claim(&r);
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
    let (_t, me) = claim(&r);
    lock.lock(me, None).unwrap();
    let (sink, rx) = chan();
    // 300 waits: more than one waiter thread holds.
    let ids: Vec<u64> = (0..300)
        .map(|_| {
            let op = LockOp {
                rec: Pinned::new(&r, 0).unwrap(),
                wait: LockWait::new(me, None, true),
            };
            waiter::reserve()
                .unwrap()
                .submit(Box::new(op), &[&r], 1, sink.clone())
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
    let (_t, me) = claim(&r);
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
        waiter::reserve()
            .unwrap()
            .submit(Box::new(op), &[&r], 2, sink.clone());
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
        waiter::reserve()
            .unwrap()
            .submit(Box::new(op), &[&r], 2, sink.clone());
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

/// Counts with more signals than waiters (a corrupt word) never turn a timed-out wait
/// into "notified".
#[test]
fn corrupt_condition_counts_do_not_fake_a_notification() {
    let r = crate::memory::mapping::shared_anon_for_tests(4096);
    let lock: &LockRecord = at(&r, 0);
    let cond: &CondRecord = at(&r, 64);
    let (_t, me) = claim(&r);
    for garbage in [0x0005_0000u32, 0xffff_0000, 0xffff_0001, 0x0003_0003] {
        cond.counts.store(garbage, Ordering::SeqCst);
        lock.lock(me, None).unwrap();
        let (woke, _) = condition::wait(cond, lock, me, Some(Deadline::after_ms(60.0))).unwrap();
        assert_eq!(woke, Woke::TimedOut, "counts {garbage:#x}");
        lock.unlock(me).unwrap();
    }
}

/// An undo semaphore: a thread that dies holding units gives them back; a guard holder
/// that died mid-step is finished or forgotten from the journal.
#[test]
fn undo_semaphore_returns_dead_holders_units() {
    use super::undo::{table_words, UndoTable, UndoWait};
    let r = crate::memory::mapping::shared_anon_for_tests(4096);
    let holders = 4;
    let pinned = Pinned::<SemRecord>::with_tail(&r, 0, table_words(holders)).unwrap();
    let table = UndoTable::new(pinned.get(), pinned.tail()).unwrap();
    table.format();
    let sem = pinned.get();
    sem.word.store(3, Ordering::Relaxed);
    sem.holders.store(holders, Ordering::Relaxed);
    let (_t, me) = claim(&r);
    // Another thread takes two units and exits without releasing them.
    let r2 = r.clone();
    std::thread::spawn(move || {
        let p = Pinned::<SemRecord>::with_tail(&r2, 0, table_words(holders)).unwrap();
        let table = UndoTable::new(p.get(), p.tail()).unwrap();
        let (_t, them) = claim(&r2);
        assert!(table.try_take(them).unwrap());
        assert!(table.try_take(them).unwrap());
        assert_eq!(table.held_by(them), 2);
    })
    .join()
    .unwrap();
    assert!(table.try_take(me).unwrap());
    assert_eq!(sem.word.load(Ordering::Relaxed) & 0x7fff_ffff, 0);
    let t0 = Instant::now();
    let mut wait = UndoWait::new(me, Some(Deadline::after_ms(2000.0)));
    assert!(super::block_on(|| wait.poll(&table)).unwrap());
    let mut wait = UndoWait::new(me, Some(Deadline::after_ms(2000.0)));
    assert!(super::block_on(|| wait.poll(&table)).unwrap());
    assert!(t0.elapsed() < Duration::from_millis(250));
    assert_eq!(table.held_by(me), 3);
    table.release(me, 3).unwrap();
    assert_eq!(table.held_by(me), 0);
    assert_eq!(sem.word.load(Ordering::Relaxed) & 0x7fff_ffff, 3);

    // A guard holder died after changing the count, before updating its slot: the next
    // guard holder applies the journal (slot 1 ends up holding 5).
    let tail = pinned.tail();
    let guard: &LockRecord = at(&r, 32);
    guard.word.store(0x2bad_cafe, Ordering::Relaxed); // a dead token holds the guard
    tail[12 + 2].store(0x2bad_cafe, Ordering::Relaxed); // slot 1: the dead thread
    tail[12 + 3].store(4, Ordering::Relaxed);
    tail[8].store(1, Ordering::Relaxed); // j_slot
    tail[9].store(4, Ordering::Relaxed); // j_before: the count was 4...
    tail[10].store(5, Ordering::Relaxed); // j_after
    sem.word.store(2, Ordering::Relaxed); // ...and is 2 now: the step happened
                                          // The dead thread's 5 units come back with the sweep that the empty take triggers.
    assert!(table.try_take(me).unwrap());
    assert_eq!(tail[8].load(Ordering::Relaxed), u32::MAX, "journal cleared");
    let mut wait = UndoWait::new(me, Some(Deadline::after_ms(2000.0)));
    for _ in 0..6 {
        assert!(super::block_on(|| wait.poll(&table)).unwrap());
        wait = UndoWait::new(me, Some(Deadline::after_ms(2000.0)));
    }
    assert_eq!(table.held_by(me), 7, "2 left + 5 returned");
    assert_eq!(sem.word.load(Ordering::Relaxed) & 0x7fff_ffff, 0);
    r.close();
}

/// A live thread that keeps an undo table's guard: a try answers `false` at once, a take
/// gives up at its own deadline; both work again once the guard is let go.
#[test]
fn undo_guard_kept_by_a_live_thread_bounds_tries_and_takes() {
    use super::undo::{table_words, UndoTable, UndoWait};
    let r = crate::memory::mapping::shared_anon_for_tests(4096);
    let holders = 4;
    let pinned = Pinned::<SemRecord>::with_tail(&r, 0, table_words(holders)).unwrap();
    let table = UndoTable::new(pinned.get(), pinned.tail()).unwrap();
    table.format();
    pinned.get().word.store(2, Ordering::Relaxed);
    pinned.get().holders.store(holders, Ordering::Relaxed);
    let (_t, me) = claim(&r);
    let guard: &'static LockRecord = at(&r, 32);
    let (held_tx, held_rx) = mpsc::channel();
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let r2 = r.clone();
    let keeper = std::thread::spawn(move || {
        let (_t, them) = claim(&r2);
        guard.lock(them, None).unwrap();
        held_tx.send(()).unwrap();
        go_rx.recv().unwrap();
        guard.unlock(them).unwrap();
    });
    held_rx.recv().unwrap();
    let t0 = Instant::now();
    assert!(!table.try_take(me).unwrap(), "no unit without the guard");
    assert!(
        t0.elapsed() < Duration::from_millis(50),
        "{:?}",
        t0.elapsed()
    );
    let t0 = Instant::now();
    let mut wait = UndoWait::new(me, Some(Deadline::after_ms(120.0)));
    assert!(!super::block_on(|| wait.poll(&table)).unwrap());
    let waited = t0.elapsed();
    assert!(
        waited >= Duration::from_millis(110) && waited < Duration::from_millis(1000),
        "{waited:?}"
    );
    go_tx.send(()).unwrap();
    keeper.join().unwrap();
    assert!(table.try_take(me).unwrap());
    let mut wait = UndoWait::new(me, Some(Deadline::after_ms(120.0)));
    assert!(super::block_on(|| wait.poll(&table)).unwrap());
    assert_eq!(table.held_by(me), 2);
    table.release(me, 2).unwrap();
    r.close();
}

/// A semaphore wait whose word's page another process truncated away ends with
/// `ERR_SHM_TRUNCATED` (blocking) or `LOST` (async) instead of sleeping on the zero page
/// forever.
#[cfg(target_os = "linux")]
#[test]
fn semaphore_waits_end_when_the_object_shrinks_under_the_word() {
    let len = 4 * 4096u64;
    let obj = crate::memory::shm::TestObject::new("semshrink", len);
    let r = Region::map(crate::memory::mapping::MapRequest {
        address: None,
        len,
        prot: libc::PROT_READ | libc::PROT_WRITE,
        flags: libc::MAP_SHARED,
        fd: obj.fd,
        offset: 0,
    })
    .unwrap();
    r.adopt_fd(crate::memory::shm::dup_cloexec(obj.fd).unwrap());
    let off = 3 * 4096;
    let (sink, rx) = chan();
    let op = SemOp {
        rec: Pinned::new(&r, off).unwrap(),
        wait: SemWait::new(None),
    };
    waiter::reserve()
        .unwrap()
        .submit(Box::new(op), &[&r], 3, sink);
    let r2 = r.clone();
    let blocking = std::thread::spawn(move || {
        let rec = Pinned::<SemRecord>::new(&r2, off).unwrap();
        let mut wait = SemWait::new(None);
        super::block_on(|| wait.poll(rec.get()).map(Ok).unless_lost(rec.region(), Err))
    });
    std::thread::sleep(Duration::from_millis(100));
    crate::memory::shm::truncate(obj.fd, 4096).unwrap();
    let t0 = Instant::now();
    let (_, c) = rx.recv_timeout(Duration::from_secs(2)).unwrap();
    assert_eq!(c, code::LOST);
    assert_eq!(
        blocking.join().unwrap().unwrap_err().code,
        "ERR_SHM_TRUNCATED"
    );
    assert!(
        t0.elapsed() < Duration::from_millis(500),
        "{:?}",
        t0.elapsed()
    );
    r.close();
}

#[test]
fn a_finished_wait_whose_mapping_closed_gives_back_what_it_took() {
    let r = crate::memory::mapping::shared_anon_for_tests(4096);
    let lock: &LockRecord = at(&r, 0);
    let sem: &SemRecord = at(&r, 128);
    let (_t, me) = claim(&r);
    // A lock taken for `me` (an RLock depth with it), and a semaphore unit.
    let mut lock_op = LockOp {
        rec: Pinned::new(&r, 0).unwrap(),
        wait: LockWait::new(me, None, true),
    };
    let Step::Done(c) = lock_op.poll(0) else {
        panic!("a free lock is taken at once")
    };
    assert_eq!(c, code::OK);
    lock.count.store(2, Ordering::Relaxed);
    sem.release(1).unwrap();
    let mut sem_op = SemOp {
        rec: Pinned::new(&r, 128).unwrap(),
        wait: SemWait::new(None),
    };
    assert!(matches!(sem_op.poll(0), Step::Done(c) if c == code::OK));
    // While the mapping is open, the completions stand.
    assert!(!ops::closed(&lock_op) && !ops::closed(&sem_op));
    assert!(ops::uses(&lock_op, &r));
    assert!(lock.held_by(me));
    // Closed (still pinned by the ops): given back, and settled as closed.
    r.close();
    assert!(ops::closed(&lock_op) && ops::closed(&sem_op));
    assert_eq!(lock_op.give_back(code::OK), code::CLOSED);
    assert_eq!(lock.word.load(Ordering::Relaxed), 0);
    assert_eq!(lock.count.load(Ordering::Relaxed), 0);
    assert_eq!(sem_op.give_back(code::OK), code::CLOSED);
    assert!(sem.try_acquire(), "the unit is back");
    // A timed-out wait took nothing and settles as closed; a lock taken from a dead
    // holder stays held, as its completion says.
    assert_eq!(sem_op.give_back(code::TIMED_OUT), code::CLOSED);
    assert!(!sem.try_acquire());
    let taken = code::OK | code::OWNER_DIED;
    assert_eq!(lock_op.give_back(taken), taken);
}
