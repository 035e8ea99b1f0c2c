//! The lock at the boundary. `lib/lock.ts` takes and releases an uncontended lock with a
//! compare-and-swap on the shared word, using this thread's liveness token for the
//! mapping (`lockOwner`, in `mapping.rs`); only a contended acquire (blocking or async),
//! the wake after a release that saw WAITERS, and recovery reach these functions.

use crate::error::Result;
use crate::js::args::deadline;
use crate::js::mapping::{owned_record, record, region_of};
use crate::js::waits::{start, terminated, terminating};
use crate::sync::lock::{Acquired, LockRecord, LockWait};
use crate::sync::ops::LockOp;
use napi::Env;
use napi_derive::napi;

/// How a native lock wait ended, as a completion code (`crate::sync::code`, decoded by
/// `lib/waits.ts`).
fn acquired_code(a: Acquired) -> u32 {
    crate::sync::ops::lock_code(Ok(a))
}

/// Takes the lock at `offset` of mapping `id`, sleeping in the kernel; the slow path
/// after the JavaScript compare-and-swap (and spinning) failed. Returns a completion code
/// (`sync::code`). (Exported raw: `raw.rs`.)
pub(crate) fn lock_acquire(
    env: &Env,
    id: u32,
    offset: f64,
    timeout_ms: Option<f64>,
) -> Result<u32> {
    let deadline = deadline(timeout_ms)?;
    let (rec, me) = owned_record::<LockRecord>(id, offset)?;
    let stop = || terminating(env);
    let acquired = rec
        .get()
        .lock_unless(me, deadline, stop)?
        .ok_or_else(terminated)?;
    if acquired != Acquired::TimedOut && terminating(env) {
        // (A woken waiter, often handed the lock.)
        rec.get().give_back_for_terminated(me, acquired)?;
        return Err(terminated());
    }
    Ok(acquired_code(acquired))
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
    let (rec, me) = owned_record(id, offset)?;
    let op = LockOp {
        rec,
        wait: LockWait::new(me, deadline, true),
    };
    Ok(start(&env, Box::new(op), &[&*region_of(id)?])?)
}

/// Releases the lock at `offset` of mapping `id` held by this thread, waking a waiter if
/// needed.
#[napi]
pub fn lock_release(id: u32, offset: f64) -> napi::Result<()> {
    let (rec, me) = owned_record::<LockRecord>(id, offset)?;
    Ok(rec.get().unlock(me)?)
}

/// Wakes one waiter of the lock at `offset` of mapping `id` (after a JavaScript release
/// saw WAITERS), handing the lock to it with `hand_off` (`LockRecord::wake_after_release`).
/// (Exported raw: `raw.rs`.)
pub(crate) fn lock_wake(id: u32, offset: f64, hand_off: bool) -> Result<()> {
    record::<LockRecord>(id, offset)?
        .get()
        .wake_after_release(hand_off);
    Ok(())
}

/// Clears OWNER_DIED on the lock at `offset` of mapping `id` held by this thread.
#[napi]
pub fn lock_mark_consistent(id: u32, offset: f64) -> napi::Result<()> {
    let (rec, me) = owned_record::<LockRecord>(id, offset)?;
    Ok(rec.get().mark_consistent(me)?)
}
