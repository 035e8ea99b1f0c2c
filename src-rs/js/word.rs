//! Word waits at the boundary: the JavaScript-side state machines (`lib/word.ts`:
//! `Channel`, `Barrier`, `Event`, `RWLock`) sleep here until a word of the mapping
//! changes, blocking this thread or on a waiter thread, and wake sleepers through the raw
//! `wordWake` (`raw.rs`).

use crate::error::Result;
use crate::js::args::deadline;
use crate::js::mapping::{record, region_of};
use crate::js::waits::{start, terminated, terminating};
use crate::sync::ops::{done_code, WordOp};
use crate::sync::word::WordWait;
use crate::sys;
use napi::Env;
use napi_derive::napi;
use std::sync::atomic::AtomicU32;

/// Sleeps until the u32 at `offset` of mapping `id` is not `expected`, or `timeout_ms`
/// passed. Returns a completion code (`sync::code`: OK or TIMED_OUT).
///
/// # Errors
/// `ERR_SHM_TRUNCATED` (or `ENOSPC`) once the mapping lost the word's page.
#[napi]
pub fn word_wait(
    env: Env,
    id: u32,
    offset: f64,
    expected: u32,
    timeout_ms: Option<f64>,
) -> napi::Result<u32> {
    let deadline = deadline(timeout_ms)?;
    let word = record::<AtomicU32>(id, offset)?;
    let mut wait = WordWait::new(expected, deadline);
    // A word on a page the mapping lost never changes: the wait ends with the loss.
    let changed = crate::sync::block_on_unless(
        || {
            wait.poll(word.get())
                .map(Ok)
                .unless_lost(word.region(), Err)
        },
        || terminating(&env),
    )
    .ok_or_else(terminated)??;
    Ok(done_code(changed))
}

/// Starts an async wait for the u32 at `offset` of mapping `id` to differ from
/// `expected`; returns its id.
#[napi]
pub fn word_wait_async(
    env: Env,
    id: u32,
    offset: f64,
    expected: u32,
    timeout_ms: Option<f64>,
) -> napi::Result<f64> {
    let deadline = deadline(timeout_ms)?;
    let op = WordOp {
        word: record(id, offset)?,
        wait: WordWait::new(expected, deadline),
    };
    Ok(start(&env, Box::new(op), &[&*region_of(id)?])?)
}

/// Wakes up to `n` sleepers on the u32 at `offset` of mapping `id`; returns how many
/// woke. (Exported raw: `raw.rs`.)
pub(crate) fn word_wake(id: u32, offset: f64, n: u32) -> Result<u32> {
    Ok(sys::futex_wake(record::<AtomicU32>(id, offset)?.get(), n))
}
