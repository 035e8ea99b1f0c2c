//! The condition variable at the boundary: blocking and async waits (the lock is released
//! and re-acquired around them) and notification.

use crate::error::Result;
use crate::js::args::deadline;
use crate::js::mapping::{owner_of, record, region_of};
use crate::js::waits::{start_with, terminated, terminating};
use crate::sync::condition::{self, CondRecord, CondWait};
use crate::sync::lock::LockRecord;
use crate::sync::lock::Owner;
use crate::sync::ops::{cond_code, AsyncWait, CondOp};
use crate::sync::Pinned;
use crate::sys::Deadline;
use napi::Env;
use napi_derive::napi;

/// The condition record at `offset` of mapping `id` and its lock's record, pinned.
fn cond_records(
    id: u32,
    offset: f64,
    lock_id: u32,
    lock_offset: f64,
) -> Result<(Pinned<CondRecord>, Pinned<LockRecord>)> {
    Ok((record(id, offset)?, record(lock_id, lock_offset)?))
}

/// What every condition wait starts from.
struct WaitParts {
    deadline: Option<Deadline>,
    cond: Pinned<CondRecord>,
    lock: Pinned<LockRecord>,
    /// This thread's identity for the lock's mapping.
    me: Owner,
}

impl WaitParts {
    fn new(
        id: u32,
        offset: f64,
        lock_id: u32,
        lock_offset: f64,
        timeout_ms: Option<f64>,
    ) -> Result<WaitParts> {
        let deadline = deadline(timeout_ms)?;
        let (cond, lock) = cond_records(id, offset, lock_id, lock_offset)?;
        let me = owner_of(lock_id)?;
        Ok(WaitParts {
            deadline,
            cond,
            lock,
            me,
        })
    }
}

/// Waits on the condition at `offset`, whose lock is at `lock_offset` in `lock`;
/// returns a completion code (`sync::code`); the lock is held again.
#[napi]
pub fn cond_wait(
    env: Env,
    id: u32,
    offset: f64,
    lock_id: u32,
    lock_offset: f64,
    timeout_ms: Option<f64>,
) -> napi::Result<u32> {
    let p = WaitParts::new(id, offset, lock_id, lock_offset, timeout_ms)?;
    let region = p.cond.region();
    let woke = condition::wait_unless(
        p.cond.get(),
        p.lock.get(),
        Some(region),
        p.me,
        p.deadline,
        || terminating(&env),
    )?
    .ok_or_else(terminated)?;
    if terminating(&env) {
        // (The lock taken again for a thread being terminated.)
        p.lock.get().give_back_for_terminated(p.me, woke.1)?;
        return Err(terminated().into());
    }
    Ok(cond_code(Ok(woke)))
}

/// Starts an async wait on the condition at `offset` (the lock must be held by this
/// thread; it is released now and re-acquired before completion); returns its id.
#[napi]
pub fn cond_wait_async(
    env: Env,
    id: u32,
    offset: f64,
    lock_id: u32,
    lock_offset: f64,
    timeout_ms: Option<f64>,
) -> napi::Result<f64> {
    let p = WaitParts::new(id, offset, lock_id, lock_offset, timeout_ms)?;
    let regions = [&*region_of(id)?, &*region_of(lock_id)?];
    // Releasing the lock is the wait's start: only once a waiter thread will run it.
    let make = || {
        let wait = CondWait::start(p.cond.get(), p.lock.get(), p.me, p.deadline, true)?;
        let op = CondOp {
            cond: p.cond,
            lock: p.lock,
            wait,
        };
        Ok(Box::new(op) as Box<dyn AsyncWait>)
    };
    Ok(start_with(&env, &regions, make)?)
}

/// Notifies up to `n` waiters (`0xffffffff`: all) of the condition at `offset`; this
/// thread must hold its lock. Returns how many it woke. (Exported raw: `raw.rs`.)
pub(crate) fn cond_notify(
    id: u32,
    offset: f64,
    lock_id: u32,
    lock_offset: f64,
    n: u32,
) -> Result<u32> {
    let (cond, lock) = cond_records(id, offset, lock_id, lock_offset)?;
    cond.get().notify(lock.get(), owner_of(lock_id)?, n)
}
