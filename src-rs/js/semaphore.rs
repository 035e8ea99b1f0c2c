//! The semaphore at the boundary: blocking and async acquisition after the JavaScript
//! fast path found no unit, and the wake after a release that saw WAITERS.

use crate::error::Result;
use crate::js::args::deadline;
use crate::js::mapping::{record, region_of};
use crate::js::waits::{start, terminated, terminating};
use crate::sync::ops::SemOp;
use crate::sync::semaphore::{SemRecord, SemWait};
use napi::Env;
use napi_derive::napi;

/// Takes a unit of the semaphore at `offset`, sleeping; `false` on timeout.
#[napi]
pub fn sem_acquire(env: Env, id: u32, offset: f64, timeout_ms: Option<f64>) -> napi::Result<bool> {
    let deadline = deadline(timeout_ms)?;
    let rec = record::<SemRecord>(id, offset)?;
    Ok(rec
        .get()
        .acquire_unless(deadline, || terminating(&env))
        .ok_or_else(terminated)?)
}

/// Starts an async acquisition of the semaphore at `offset`; returns its id.
#[napi]
pub fn sem_acquire_async(
    env: Env,
    id: u32,
    offset: f64,
    timeout_ms: Option<f64>,
) -> napi::Result<f64> {
    let deadline = deadline(timeout_ms)?;
    let op = SemOp {
        rec: record(id, offset)?,
        wait: SemWait::new(deadline),
    };
    Ok(start(&env, Box::new(op), &[&*region_of(id)?])?)
}

/// Wakes up to `n` sleepers of the semaphore at `offset` (after a JavaScript release
/// saw WAITERS).
/// (Exported raw: `raw.rs`.)
pub(crate) fn sem_wake(id: u32, offset: f64, n: u32) -> Result<()> {
    record::<SemRecord>(id, offset)?.get().wake(n);
    Ok(())
}
