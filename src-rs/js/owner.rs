//! The identity seam of the JavaScript-side primitives (`lib/rwlock.ts`): "is the holder
//! named by this owner value still alive?". Today an owner value is a kernel thread id
//! checked in `/proc` (with the start time the record keeps, against id reuse), exactly
//! as `LockRecord::owner_alive` checks a lock holder; when lock owners become liveness
//! tokens this function asks the token's liveness instead, and nothing else changes.

use crate::js::mapping::region_of;
use crate::sys;
use napi_derive::napi;

/// Whether `owner` (as stored in a record of mapping `id`) is alive. `start_lo`/`start_hi`:
/// the start time recorded with it, 0 if the record keeps none (then any live thread
/// with that id counts as alive).
#[napi]
pub fn owner_alive(id: u32, owner: u32, start_lo: u32, start_hi: u32) -> napi::Result<bool> {
    region_of(id)?; // the mapping must be this thread's (the token check will need it)
    let Some(now) = sys::thread_start_time(owner) else {
        return Ok(false);
    };
    let recorded = u64::from(start_lo) | u64::from(start_hi) << 32;
    Ok(recorded == 0 || recorded == now)
}
