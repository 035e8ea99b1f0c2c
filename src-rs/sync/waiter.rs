//! The async driver: a few dedicated threads per process that run every pending async
//! wait (`acquireAsync`, `waitAsync`), so that neither the JavaScript thread nor a libuv
//! pool thread ever blocks.
//!
//! Each waiter thread owns up to 127 waits. It steps all of them, collects the distinct
//! words they sleep on plus its own *control word*, and sleeps on all at once with
//! `futex_waitv` until any changes or is woken, or the earliest re-check time. After any
//! wake-up it steps every wait again (a wait's step re-reads its word, so a wake-up meant
//! for one of them is never lost). A thread is added when all are full and leaves after
//! `IDLE_EXIT_MS` (30 s) without work. Where the kernel has no `futex_waitv`
//! ([`sys::futex_wait_any_capacity`] is 1), each thread runs one wait and re-checks its
//! interrupts every `SLICE_MS` (10 ms).
//!
//! Threads are a limited resource (a container's pids limit, `ulimit -u`): there are at
//! most `MAX_THREADS`, and a thread that cannot be started is not fatal. Once no thread
//! has room and none can be added, a wait goes to the least loaded thread, which sleeps
//! on the words it can watch and re-checks the others every `RECHECK_MS`: later, never
//! lost. Only when there is no thread at all does a wait fail to start ([`reserve`]).
//!
//! Completions go to a [`Deliver`] (the JavaScript thread's queue, `js/waits.rs`).
//!
//! | event               | how the waiter thread learns of it                          |
//! |---------------------|-------------------------------------------------------------|
//! | new wait            | pushed to its inbox, control word bumped and woken          |
//! | abort (`cancel`)    | the wait's `CANCEL` bit set, control word bumped and woken  |
//! | mapping closed      | `CLOSE` set on every wait using it, control words woken     |
//! | JS thread gone      | `DROP` set on every wait it started, control words woken    |
//! | word changed/woken  | `futex_waitv` returns                                       |
//! | deadline / re-check | `futex_waitv` times out                                     |

use super::interrupt;
use super::ops::AsyncWait;
use super::{Step, RECHECK_MS};
use crate::error::{Result, ShmError};
use crate::memory::mapping::Region;
use crate::sys::{self, Deadline};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, Mutex, MutexGuard};

/// A waiter thread with no work for this long exits.
const IDLE_EXIT_MS: f64 = 30_000.0;
/// How often a thread without `futex_waitv` re-checks its wait's interrupts. (The waits
/// beyond the words a thread can watch, when it holds too many, are polled once a
/// [`RECHECK_MS`] slice.)
const SLICE_MS: f64 = 10.0;
/// How long [`close_region`] and [`drop_owner`] wait for the waits they interrupt to stop.
const CLOSE_WAIT_MS: f64 = 1_000.0;
/// The most waiter threads a process runs. Without `futex_waitv` one thread runs one wait
/// at full speed, so a burst of waits would otherwise be a burst of threads.
const MAX_THREADS: usize = 64;

/// Receives completions: called on a waiter thread, once per wait.
pub trait Deliver: Send + Sync {
    /// Wait `id` finished with completion `code`; `op` is the wait itself, with its
    /// records still pinned, for [`AsyncWait::give_back`] where the completion is
    /// received.
    fn deliver(&self, id: u64, code: u32, op: Box<dyn AsyncWait>);
}

/// One dedicated thread and what it is given.
#[derive(Debug, Default)]
struct Worker {
    /// Bumped (and woken) to interrupt the thread's sleep.
    control: AtomicU32,
    /// Waits handed over and not yet taken in.
    inbox: Mutex<Vec<Job>>,
    /// Waits assigned (inbox + running).
    load: AtomicUsize,
}

impl Worker {
    fn interrupt(&self) {
        // Release: the thread's Acquire load of the control word sees what we published.
        self.control.fetch_add(1, Ordering::Release);
        sys::futex_wake(&self.control, 1);
    }
}

/// What the registry and the waiter thread share about one wait.
#[derive(Debug)]
struct Shared {
    /// [`interrupt`] bits.
    interrupts: AtomicU32,
    worker: Arc<Worker>,
    /// Addresses of the `Region`s the wait uses.
    regions: Vec<usize>,
    /// Who started it (see [`drop_owner`]).
    owner: usize,
}

struct Job {
    id: u64,
    op: Box<dyn AsyncWait>,
    shared: Arc<Shared>,
    deliver: Arc<dyn Deliver>,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Job").field("id", &self.id).finish()
    }
}

#[derive(Default)]
struct Pool {
    workers: Vec<Arc<Worker>>,
    jobs: HashMap<u64, Arc<Shared>>,
    next_id: u64,
}

static POOL: LazyLock<Mutex<Pool>> = LazyLock::new(Mutex::default);

fn pool() -> MutexGuard<'static, Pool> {
    POOL.lock().unwrap_or_else(|p| p.into_inner())
}

/// Waits one thread runs at most: one word per wait, plus the control word.
fn per_worker() -> usize {
    match sys::futex_wait_any_capacity() {
        1 => 1,
        n => n - 1,
    }
}

/// A place on a waiter thread for one wait, taken before the wait starts: starting some
/// waits has effects (a condition wait releases its lock) that must not happen when no
/// thread can run them. Dropped unused, it gives the place back.
#[derive(Debug)]
pub struct Place {
    /// `None` once submitted.
    worker: Option<Arc<Worker>>,
}

/// Takes a place on a waiter thread, starting one when all are full (up to
/// `MAX_THREADS`); when none can be started, the least loaded thread takes the wait on top.
///
/// # Errors
/// `EAGAIN` (syscall `pthread_create`) when there is no waiter thread and none can be
/// started (out of threads: `ulimit -u`, a pids limit).
pub fn reserve() -> Result<Place> {
    let mut pool = pool();
    let cap = per_worker();
    // Relaxed (all uses of `load`): it is only increased under the pool lock; decreases
    // (a waiter thread finishing a wait, an unused place) can only make room.
    let free = pool
        .workers
        .iter()
        .find(|w| w.load.load(Ordering::Relaxed) < cap)
        .cloned();
    let worker = match free {
        Some(w) => w,
        None => {
            let started = (pool.workers.len() < MAX_THREADS).then(spawn_worker);
            match started {
                Some(Ok(w)) => {
                    pool.workers.push(w.clone());
                    w
                }
                Some(Err(e)) if pool.workers.is_empty() => return Err(e),
                // At the cap, or refused a thread: the least loaded one takes it on top.
                _ => pool
                    .workers
                    .iter()
                    .min_by_key(|w| w.load.load(Ordering::Relaxed))
                    .expect("at the cap or after a refusal, threads exist")
                    .clone(),
            }
        }
    };
    worker.load.fetch_add(1, Ordering::Relaxed);
    Ok(Place {
        worker: Some(worker),
    })
}

/// Starts a waiter thread.
fn spawn_worker() -> Result<Arc<Worker>> {
    let w = Arc::new(Worker::default());
    let run = w.clone();
    std::thread::Builder::new()
        .name("shmutils-waiter".into())
        .stack_size(256 << 10)
        .spawn(move || run_worker(run))
        .map_err(|e| no_thread(e.raw_os_error()))?;
    Ok(w)
}

/// The error of a wait that has no thread to run it (`errno`: what thread creation said;
/// std gives none for a few failures, which are the same shortage).
#[cold]
fn no_thread(errno: Option<i32>) -> ShmError {
    let e = ShmError::sys(
        nix::errno::Errno::from_raw(errno.unwrap_or(libc::EAGAIN)),
        "pthread_create",
    );
    ShmError {
        message: format!(
            "no thread could be started to run the async wait: {}",
            e.message
        ),
        ..e
    }
}

impl Place {
    /// Hands `op` to the place's thread. `regions`: the mappings it uses (for
    /// [`close_region`]); `owner`: a key for [`drop_owner`]. Returns the wait's id (for
    /// [`cancel`]).
    pub fn submit(
        mut self,
        op: Box<dyn AsyncWait>,
        regions: &[&Region],
        owner: usize,
        deliver: Arc<dyn Deliver>,
    ) -> u64 {
        let worker = self.worker.take().expect("a place is submitted once");
        let mut pool = pool();
        pool.next_id += 1;
        let id = pool.next_id;
        let shared = Arc::new(Shared {
            interrupts: AtomicU32::new(0),
            worker: worker.clone(),
            regions: regions
                .iter()
                .map(|r| *r as *const Region as usize)
                .collect(),
            owner,
        });
        pool.jobs.insert(id, shared.clone());
        worker
            .inbox
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Job {
                id,
                op,
                shared,
                deliver,
            });
        drop(pool);
        worker.interrupt();
        id
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        if let Some(w) = &self.worker {
            w.load.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

fn raise(shared: &Shared, bits: u32) {
    // Release: pairs with the waiter thread's Acquire load before it steps the wait.
    shared.interrupts.fetch_or(bits, Ordering::Release);
    shared.worker.interrupt();
}

/// Aborts wait `id` (no effect once it finished): it completes with `CANCELLED`, or
/// with its result if it got there first.
pub fn cancel(id: u64) {
    if let Some(s) = pool().jobs.get(&id) {
        raise(s, interrupt::CANCEL);
    }
}

/// Finishes every wait that uses `region` with `CLOSED` (the mapping is being closed or
/// detached), and waits until none runs any more: each is then in its thread's queue,
/// where nothing touches the pages unless they stay mapped (pinned by a closed mapping; a
/// detached one's pages are the caller's).
pub fn close_region(region: &Region) {
    let key = region as *const Region as usize;
    stop(|s| s.regions.contains(&key), interrupt::CLOSE);
}

/// Drops every wait started by `owner` without delivering (its JavaScript environment
/// is being torn down), and waits until none runs any more: one that finished first is in
/// the owner's queue then.
pub fn drop_owner(owner: usize) {
    stop(|s| s.owner == owner, interrupt::DROP);
}

/// Raises `bit` on every running wait `which` picks until none is left (at most
/// `CLOSE_WAIT_MS`: they stop within microseconds, a waiter thread wakes on its control
/// word at once).
fn stop(which: impl Fn(&Shared) -> bool, bit: u32) {
    let deadline = Deadline::after_ms(CLOSE_WAIT_MS);
    loop {
        let mut running = false;
        for s in pool().jobs.values().filter(|s| which(s)) {
            raise(s, bit);
            running = true;
        }
        if !running || deadline.passed() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_micros(100));
    }
}

/// The body of a waiter thread.
fn run_worker(me: Arc<Worker>) {
    let cap = sys::futex_wait_any_capacity();
    let single = cap == 1;
    let mut jobs: Vec<Job> = Vec::new();
    let mut idle_since: Option<Deadline> = None;
    loop {
        // Acquire: pairs with `interrupt`; read before taking the inbox, so a job pushed
        // after this read also changes the value we sleep on.
        let control = me.control.load(Ordering::Acquire);
        jobs.append(&mut me.inbox.lock().unwrap_or_else(|p| p.into_inner()));

        let mut finished: Vec<(usize, u32)> = Vec::new();
        {
            let mut words: Vec<(&AtomicU32, u32)> = Vec::with_capacity(jobs.len() + 1);
            let mut until: Option<Deadline> = None;
            let mut changed = false;
            let idle = jobs.is_empty();
            if !single || idle {
                words.push((&me.control, control));
            }
            for (i, job) in jobs.iter_mut().enumerate() {
                // Acquire: pairs with `raise`.
                let bits = job.shared.interrupts.load(Ordering::Acquire);
                match job.op.poll(bits) {
                    Step::Done(code) => finished.push((i, code)),
                    Step::Sleep {
                        word,
                        expected,
                        until: u,
                    } => {
                        if let Some(d) = u {
                            until = Some(until.map_or(d, |x: Deadline| x.min(d)));
                        }
                        match words.iter().find(|(w, _)| std::ptr::eq(*w, word)) {
                            // Two waits read different values: it changed; step again.
                            Some((_, e)) => changed |= *e != expected,
                            None => words.push((word, expected)),
                        }
                    }
                }
            }
            if idle {
                let d = *idle_since.get_or_insert_with(|| Deadline::after_ms(IDLE_EXIT_MS));
                if d.passed() && retire(&me) {
                    return;
                }
                until = Some(d);
            } else {
                idle_since = None;
                // More words than one sleep can watch: this thread took waits beyond its
                // share (see `reserve`); it sleeps on the first and polls the rest, once a
                // re-check slice (each poll steps every wait of the thread: at 10 ms,
                // 16,000 idle waits kept a core busy).
                let over = words.len() > cap;
                words.truncate(cap);
                if single || over {
                    let slice = Deadline::slice_ms(if single { SLICE_MS } else { RECHECK_MS });
                    until = Some(until.map_or(slice, |d| d.min(slice)));
                }
            }
            if finished.is_empty() && !changed {
                sys::futex_wait_any(&words, until);
            }
        }
        for (i, code) in finished.into_iter().rev() {
            let job = jobs.swap_remove(i);
            let id = job.id;
            me.load.fetch_sub(1, Ordering::Relaxed);
            // Delivered before it leaves the registry: a wait not registered is in its
            // thread's queue already ([`close_region`] waits for the registry). One whose
            // thread went meanwhile gives back what it took.
            if job.shared.interrupts.load(Ordering::Acquire) & interrupt::DROP == 0 {
                job.deliver.deliver(id, code, job.op);
            } else {
                let mut op = job.op;
                op.give_back(code);
            }
            pool().jobs.remove(&id);
        }
    }
}

/// Removes an idle thread from the pool; `false` if work arrived meanwhile.
fn retire(me: &Arc<Worker>) -> bool {
    let mut pool = pool();
    if me.load.load(Ordering::Relaxed) != 0 {
        return false;
    }
    pool.workers.retain(|w| !Arc::ptr_eq(w, me));
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wait_without_a_thread_fails_with_what_thread_creation_said() {
        let e = no_thread(Some(libc::EAGAIN));
        assert_eq!(
            (e.code.as_str(), e.errno, e.syscall),
            ("EAGAIN", Some(libc::EAGAIN), Some("pthread_create"))
        );
        assert!(e.message.contains("async wait"), "{}", e.message);
        // No errno from std: the same shortage.
        assert_eq!(no_thread(None).errno, Some(libc::EAGAIN));
        assert_eq!(no_thread(Some(libc::ENOMEM)).code, "ENOMEM");
    }
}
