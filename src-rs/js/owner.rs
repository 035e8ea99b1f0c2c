//! The identity seam of the JavaScript-side primitives (`lib/rwlock.ts`): "is the holder
//! named by this owner value still alive?". Owner values are liveness tokens, as in lock
//! words (`src-rs/sync/liveness.rs`): the kernel answers for the segment's inode, across
//! PID namespaces. Slow path only (a waiter asks every 50 ms).

use crate::js::mapping::owner_of;
use crate::sys::Liveness;
use napi_derive::napi;

/// The liveness of `owner` (a token of mapping `id`'s segment): 1 alive, 0 dead, 2
/// suspect (probably gone: dead if still suspect at the next check; never on Linux).
/// `start_lo`/`start_hi`: the start time recorded with it, 0 if the record keeps none.
///
/// # Errors
/// As claiming this thread's own token (`ERR_SHM_READ_ONLY`, `ERR_SHM_CLOSED`, ...).
#[napi]
pub fn owner_liveness(id: u32, owner: u32, start_lo: u32, start_hi: u32) -> napi::Result<u32> {
    let me = owner_of(id)?;
    let recorded = u64::from(start_lo) | u64::from(start_hi) << 32;
    Ok(
        match me.liveness_of(owner, (recorded != 0).then_some(recorded)) {
            Liveness::Alive => 1,
            Liveness::Dead => 0,
            Liveness::Suspect => 2,
        },
    )
}
