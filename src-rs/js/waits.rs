//! Waiting from JavaScript: the async waits of every primitive run on the dedicated waiter
//! threads of `sync::waiter`; completions come back to the JavaScript thread that asked
//! through one threadsafe function per thread, in batches of `[id, code, id, code, ...]`
//! that `lib/waits.ts` settles. Blocking waits ask [`terminating`] between slices so a
//! worker blocked in one can still be terminated.

use crate::error::{Result, ShmError};
use crate::memory::mapping::Region;
use crate::sync::ops::{self, AsyncWait};
use crate::sync::waiter;
use napi::bindgen_prelude::Function;
use napi::threadsafe_function::{ThreadsafeFunction, ThreadsafeFunctionCallMode};
use napi::{Env, Status};
use napi_derive::napi;
use std::cell::RefCell;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// A finished wait on its way to JavaScript.
struct Completion {
    id: u64,
    code: u32,
    /// The wait, its records pinned until it is handed over.
    op: Box<dyn AsyncWait>,
    /// `code` was settled already ([`AsyncWait::give_back`] ran: its mapping closed).
    settled: bool,
}

impl Completion {
    /// The code to hand over: a wait whose mapping was closed or detached since gives
    /// back what it took and settles as closed (once).
    fn settle(&mut self) -> u32 {
        if !self.settled && ops::closed(&*self.op) {
            self.code = self.op.give_back(self.code);
            self.settled = true;
        }
        self.code
    }
}

/// Completions waiting for the JavaScript thread, and its count of unfinished waits.
/// `pending` and `raw` are only used on the JavaScript thread (Relaxed everywhere); the
/// completions are guarded by their mutexes.
#[derive(Default)]
struct Queue {
    /// Completions not yet handed to JavaScript.
    items: Mutex<Vec<Completion>>,
    /// Completions handed to JavaScript, until it says it settled them (`syncAck`): a
    /// thread being terminated receives a batch and never runs it.
    handed: Mutex<Vec<Completion>>,
    /// Waits started and not yet delivered (JavaScript thread only).
    pending: AtomicUsize,
    /// The raw threadsafe function, for ref/unref.
    raw: AtomicUsize,
}

type Tsfn = ThreadsafeFunction<(), (), Vec<f64>, Status, false, true>;

/// One JavaScript thread's receiver of completions.
struct Sink {
    tsfn: Tsfn,
    queue: Arc<Queue>,
}

impl waiter::Deliver for Sink {
    fn deliver(&self, id: u64, code: u32, op: Box<dyn AsyncWait>) {
        let first = {
            let mut items = self.queue.items.lock().unwrap_or_else(|p| p.into_inner());
            items.push(Completion {
                id,
                code,
                op,
                settled: false,
            });
            items.len() == 1
        };
        if first {
            // A call already queued drains whatever was pushed before it runs. A failure
            // means the environment is shutting down: nobody is left to tell.
            let _: Status = self.tsfn.call((), ThreadsafeFunctionCallMode::NonBlocking);
        }
    }
}

thread_local! {
    /// This JavaScript thread's sink (set by `syncInit`).
    static SINK: RefCell<Option<Arc<Sink>>> = const { RefCell::new(None) };
}

/// Keeps the event loop alive while waits are pending (`true`) or lets it exit.
fn set_ref(env: napi::sys::napi_env, raw: usize, keep_alive: bool) {
    let raw = raw as napi::sys::napi_threadsafe_function;
    // SAFETY: called on the JavaScript thread that owns `env` and created the threadsafe
    // function `raw`, which lives as long as the thread's sink.
    unsafe {
        if keep_alive {
            napi::sys::napi_ref_threadsafe_function(env, raw);
        } else {
            napi::sys::napi_unref_threadsafe_function(env, raw);
        }
    }
}

/// Sets up this thread's completion channel: `onComplete` receives batches
/// `[id, code, id, code, ...]`. Called once per JavaScript thread by `lib/waits.ts`.
#[napi]
pub fn sync_init(env: Env, on_complete: Function<Vec<f64>, ()>) -> napi::Result<()> {
    let queue = Arc::new(Queue::default());
    let q = queue.clone();
    let tsfn: Tsfn = on_complete
        .build_threadsafe_function::<()>()
        .callee_handled::<false>()
        .weak::<true>()
        .build_callback(move |ctx| {
            let items = std::mem::take(&mut *q.items.lock().unwrap_or_else(|p| p.into_inner()));
            let n = items.len();
            if n > 0 && q.pending.fetch_sub(n, Ordering::Relaxed) == n {
                set_ref(ctx.env.raw(), q.raw.load(Ordering::Relaxed), false);
            }
            let mut batch = Vec::with_capacity(2 * n);
            let mut handed = q.handed.lock().unwrap_or_else(|p| p.into_inner());
            for mut c in items {
                batch.extend([c.id as f64, c.settle() as f64]);
                handed.push(c);
            }
            Ok(batch)
        })?;
    queue.raw.store(tsfn.raw() as usize, Ordering::Relaxed);
    let sink = Arc::new(Sink { tsfn, queue });
    // A worker thread being terminated: its waits stop without delivering.
    env.add_env_cleanup_hook(Arc::as_ptr(&sink) as usize, torn_down)?;
    SINK.with(|s| *s.borrow_mut() = Some(sink));
    Ok(())
}

/// This JavaScript thread's environment is being torn down (a terminated worker): its
/// running waits stop without taking anything, and those whose completion is on its way,
/// or was handed over and never settled, give back what they took (a lock would look
/// abandoned, a semaphore unit be lost).
fn torn_down(owner: usize) {
    waiter::drop_owner(owner);
    settle_queued_where(|_| true);
    let _ = SINK.try_with(|s| {
        if let Some(sink) = s.borrow().as_ref() {
            let mut handed = sink.queue.handed.lock().unwrap_or_else(|p| p.into_inner());
            for c in handed.iter_mut().filter(|c| !c.settled) {
                c.op.give_back(c.code);
            }
            handed.clear();
        }
    });
}

/// Called by `lib/waits.ts` once it settled a batch of completions: their waits (and the
/// pins on their mappings) go.
#[napi]
pub fn sync_ack() {
    let _ = SINK.try_with(|s| {
        if let Some(sink) = s.borrow().as_ref() {
            sink.queue
                .handed
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clear();
        }
    });
}

/// Settles the completions on their way to this thread for waits that use `region`,
/// which this thread is closing or detaching: each gives back what it took and will
/// settle as closed. Called before the thread's token on the segment goes (the lock a
/// wait took for it would otherwise look abandoned to the next process in the meantime)
/// and while the pages are still mapped.
pub(crate) fn settle_queued(region: &Region) {
    settle_queued_where(|op| ops::uses(op, region));
}

/// Gives back what the waits of this thread's queued completions that `which` picks
/// took; they settle as closed.
fn settle_queued_where(which: impl Fn(&dyn AsyncWait) -> bool) {
    let _ = SINK.try_with(|s| {
        let Some(sink) = s.borrow().clone() else {
            return;
        };
        let mut items = sink.queue.items.lock().unwrap_or_else(|p| p.into_inner());
        for c in items.iter_mut().filter(|c| !c.settled && which(&*c.op)) {
            c.code = c.op.give_back(c.code);
            c.settled = true;
        }
    });
}

/// A number that tells this loaded native library apart from another copy of it in the
/// process (the address of a static of its own): JavaScript copies of the package that
/// share one library (a hoisted platform package, modules loaded again) share its one
/// completion channel per thread, and so one table of pending waits.
#[napi]
pub fn library_id() -> f64 {
    static ANCHOR: u8 = 0;
    std::ptr::addr_of!(ANCHOR) as usize as f64
}

/// The version of the npm package this binary was built for (its `package.json`'s, read
/// by `build.rs`): the JavaScript refuses a binary of another release, wherever a
/// bundler or an install put it. Called once, when the package loads.
#[napi]
pub fn package_version() -> &'static str {
    env!("SHMUTILS_PACKAGE_VERSION")
}

/// Aborts async wait `id`; it completes with `CANCELLED` (or its result, if that came
/// first).
#[napi]
pub fn sync_cancel(id: f64) {
    waiter::cancel(id as u64);
}

/// Whether this JavaScript thread is being terminated (`worker.terminate()`, or the
/// process exiting while a worker waits): runs a trivial script, which V8 refuses once
/// termination was requested. Blocking waits ask every 50 ms or so, so a worker blocked
/// in `acquire()` can still be terminated; the termination stays pending and unwinds the
/// worker's JavaScript.
pub(crate) fn terminating(env: &Env) -> bool {
    let env = env.raw();
    let mut scope = std::ptr::null_mut();
    let mut source = std::ptr::null_mut();
    let mut result = std::ptr::null_mut();
    // SAFETY: called on the JavaScript thread of `env`, inside a native callback (where
    // calling into JavaScript is allowed); the handle scope keeps the probe's handles
    // from piling up during a long wait, and every out-pointer is a live local.
    unsafe {
        if napi::sys::napi_open_handle_scope(env, &mut scope) != napi::sys::Status::napi_ok {
            return true;
        }
        let ok = napi::sys::napi_create_string_utf8(env, c"0".as_ptr(), 1, &mut source)
            == napi::sys::Status::napi_ok
            && napi::sys::napi_run_script(env, source, &mut result) == napi::sys::Status::napi_ok;
        napi::sys::napi_close_handle_scope(env, scope);
        !ok
    }
}

/// The error a blocking wait returns when its thread is being terminated (nobody will
/// see it: the thread's JavaScript is unwinding).
pub(crate) fn terminated() -> ShmError {
    ShmError::new("ERR_SHM_CLOSED", "the thread is being terminated")
}

/// Hands `op` to the waiter threads on behalf of this JavaScript thread.
pub(crate) fn start(env: &Env, op: Box<dyn AsyncWait>, regions: &[&Region]) -> Result<f64> {
    start_with(env, regions, || Ok(op))
}

/// [`start`] for a wait whose start has effects (`make` builds it): `make` only runs once
/// a waiter thread has room for it, so a wait that cannot run never starts.
pub(crate) fn start_with(
    env: &Env,
    regions: &[&Region],
    make: impl FnOnce() -> Result<Box<dyn AsyncWait>>,
) -> Result<f64> {
    let sink = SINK
        .with(|s| s.borrow().clone())
        .ok_or_else(|| ShmError::new("EINVAL", "syncInit() was not called on this thread"))?;
    let place = waiter::reserve()?;
    let op = make()?;
    if sink.queue.pending.fetch_add(1, Ordering::Relaxed) == 0 {
        set_ref(env.raw(), sink.queue.raw.load(Ordering::Relaxed), true);
    }
    let owner = Arc::as_ptr(&sink) as usize;
    Ok(place.submit(op, regions, owner, sink) as f64)
}
