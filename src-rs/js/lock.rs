//! The lock at the boundary. `lib/lock.ts` takes and releases an uncontended lock with a
//! compare-and-swap on the shared word; only a contended acquire (blocking or async), the
//! wake after a release that saw WAITERS, and recovery reach these functions.

use crate::error::Result;
use crate::js::args::deadline;
use crate::js::mapping::{record, region_of};
use crate::js::waits::{start, terminated, terminating};
use crate::sync::lock::{Acquired, LockRecord, LockWait, Owner};
use crate::sync::ops::LockOp;
use napi::Env;
use napi_derive::napi;

/// Identity of the calling thread as lock records store it.
#[napi(object)]
pub struct ThreadIdentity {
    /// Kernel thread id.
    pub tid: u32,
    /// Low 32 bits of the thread's start time.
    pub start_lo: u32,
    /// High 32 bits of the thread's start time.
    pub start_hi: u32,
}

/// Who the calling thread is (cached by the TypeScript layer per thread).
#[napi]
pub fn thread_identity() -> ThreadIdentity {
    let me = Owner::current();
    ThreadIdentity {
        tid: me.tid,
        start_lo: me.start as u32,
        start_hi: (me.start >> 32) as u32,
    }
}

/// How a native lock wait ended, as a completion code (`crate::sync::code`, decoded by
/// `lib/waits.ts`).
fn acquired_code(a: Acquired) -> u32 {
    crate::sync::ops::lock_code(Ok(a))
}

/// Takes the lock at `offset` of mapping `id`, sleeping in the kernel; the slow path
/// after the JavaScript compare-and-swap failed. Returns a completion code (`sync::code`).
#[napi]
pub fn lock_acquire(env: Env, id: u32, offset: f64, timeout_ms: Option<f64>) -> napi::Result<u32> {
    let deadline = deadline(timeout_ms)?;
    let rec = record::<LockRecord>(id, offset)?;
    let stop = || terminating(&env);
    let acquired = rec.get().lock_unless(Owner::current(), deadline, stop)?;
    Ok(acquired_code(acquired.ok_or_else(terminated)?))
}

/// Starts an async acquisition of the lock at `offset` for this thread (after the
/// JavaScript compare-and-swap failed); returns its id.
#[napi]
pub fn lock_acquire_async(
    env: Env,
    id: u32,
    offset: f64,
    timeout_ms: Option<f64>,
) -> napi::Result<f64> {
    let deadline = deadline(timeout_ms)?;
    let op = LockOp {
        rec: record(id, offset)?,
        wait: LockWait::new(Owner::current(), deadline, true),
    };
    Ok(start(&env, Box::new(op), &[&*region_of(id)?])?)
}

/// Releases the lock at `offset` of mapping `id` held by this thread, waking a waiter if
/// needed.
#[napi]
pub fn lock_release(id: u32, offset: f64) -> napi::Result<()> {
    Ok(record::<LockRecord>(id, offset)?
        .get()
        .unlock(Owner::current())?)
}

/// Wakes one waiter of the lock at `offset` of mapping `id` (after a JavaScript release
/// saw WAITERS).
/// (Exported raw: `raw.rs`.)
pub(crate) fn lock_wake(id: u32, offset: f64) -> Result<()> {
    record::<LockRecord>(id, offset)?.get().wake_one();
    Ok(())
}

/// Clears OWNER_DIED on the lock at `offset` of mapping `id` held by this thread.
#[napi]
pub fn lock_mark_consistent(id: u32, offset: f64) -> napi::Result<()> {
    Ok(record::<LockRecord>(id, offset)?
        .get()
        .mark_consistent(Owner::current())?)
}
