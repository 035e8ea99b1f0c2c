//! The semaphore at the boundary: blocking and async acquisition after the JavaScript
//! fast path found no unit, the wake after a release that saw WAITERS, and every
//! operation of an undo semaphore (`sync::undo`), which has no JavaScript fast path.

use crate::error::{Result, ShmError};
use crate::js::args::deadline;
use crate::js::mapping::{owner_of, record, region_of};
use crate::js::waits::{start, terminated, terminating};
use crate::sync::ops::{SemOp, UndoOp};
use crate::sync::semaphore::{SemRecord, SemWait};
use crate::sync::undo::{self, UndoTable, UndoWait};
use crate::sync::{block_on_unless, Pinned};
use napi::Env;
use napi_derive::napi;
use std::sync::atomic::Ordering;

/// The semaphore at `offset` of mapping `id`, pinned with its undo table if it has one
/// (`holders` > 0), else `None`.
fn undo_record(id: u32, offset: f64) -> Result<Option<Pinned<SemRecord>>> {
    let region = region_of(id)?;
    let off = crate::js::args::to_u64("offset", offset)?;
    // Relaxed: set once at construction, before the semaphore was shared. (`word`
    // checks bounds and alignment; the JavaScript thread asking cannot unmap meanwhile.)
    let holders = region.word(off.saturating_add(4))?.load(Ordering::Relaxed);
    if holders == 0 {
        return Ok(None);
    }
    if holders > undo::MAX_HOLDERS {
        return Err(ShmError::new(
            "ERR_SHM_CORRUPT",
            format!("the semaphore's record claims {holders} undo holders"),
        ));
    }
    Pinned::with_tail(&region, off, undo::table_words(holders)).map(Some)
}

/// Takes a unit of the semaphore at `offset`, sleeping; `false` on timeout.
#[napi]
pub fn sem_acquire(env: Env, id: u32, offset: f64, timeout_ms: Option<f64>) -> napi::Result<bool> {
    let deadline = deadline(timeout_ms)?;
    let stop = || terminating(&env);
    if let Some(rec) = undo_record(id, offset)? {
        let table = UndoTable::new(rec.get(), rec.tail())?;
        let mut wait = UndoWait::new(owner_of(id)?, deadline);
        let step = || wait.poll(&table).unless_lost(rec.region(), Err);
        return match block_on_unless(step, stop) {
            Some(r) => Ok(r?),
            None => {
                wait.abandon(&table);
                Err(terminated().into())
            }
        };
    }
    let rec = record::<SemRecord>(id, offset)?;
    let sem = rec.get();
    if sem.try_acquire() {
        return Ok(true);
    }
    // Each slice also asks whether the mapping lost the word's page (shrunk by another
    // process): nobody would ever wake a wait on the private zero page left there.
    let mut wait = SemWait::new(deadline);
    let step = || wait.poll(sem).map(Ok).unless_lost(rec.region(), Err);
    match block_on_unless(step, stop) {
        // A unit taken for a thread being terminated, whose JavaScript will never release
        // it (a woken waiter, often handed the unit): given back.
        Some(Ok(true)) if terminating(&env) => {
            sem.release(1)?;
            Err(terminated().into())
        }
        Some(r) => Ok(r?),
        None => {
            wait.abandon(sem);
            Err(terminated().into())
        }
    }
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
    let regions = [&*region_of(id)?];
    if let Some(rec) = undo_record(id, offset)? {
        let op = UndoOp {
            rec,
            wait: UndoWait::new(owner_of(id)?, deadline),
        };
        return Ok(start(&env, Box::new(op), &regions)?);
    }
    let op = SemOp {
        rec: record(id, offset)?,
        wait: SemWait::new(deadline),
    };
    Ok(start(&env, Box::new(op), &regions)?)
}

/// Makes the semaphore at `offset` an undo semaphore with `holders` slots and `initial`
/// units (its record and table are zeroed and not yet shared).
#[napi]
pub fn sem_undo_format(id: u32, offset: f64, holders: u32, initial: u32) -> napi::Result<()> {
    if holders == 0 || holders > undo::MAX_HOLDERS {
        return Err(ShmError::range(format!(
            "The \"holders\" option must be 1 to {}; got {holders}",
            undo::MAX_HOLDERS
        ))
        .into());
    }
    let off = crate::js::args::to_u64("offset", offset)?;
    let rec = Pinned::<SemRecord>::with_tail(&region_of(id)?, off, undo::table_words(holders))
        .map_err(|e| {
            if e.code == "ERR_SHM_OUT_OF_BOUNDS" {
                ShmError::range(format!(
                    "an undo semaphore with {holders} holders needs {} bytes at offset {off}",
                    32 + undo::table_bytes(holders)
                ))
            } else {
                e
            }
        })?;
    UndoTable::new(rec.get(), rec.tail())?.format();
    let r = rec.get();
    r.word.store(
        initial & crate::sync::semaphore::COUNT_MASK,
        Ordering::Relaxed,
    );
    r.kind
        .store(crate::sync::kind::SEMAPHORE, Ordering::Relaxed);
    // Release: whoever reads `holders` (Acquire) sees the table formatted.
    r.holders.store(holders, Ordering::Release);
    Ok(())
}

/// Bytes an undo semaphore with `holders` slots needs (record and table).
#[napi]
pub fn sem_undo_size(holders: u32) -> f64 {
    (32 + undo::table_bytes(holders)) as f64
}

/// An undo semaphore's operation: `op` 0 takes a unit if one is free (1 taken, 0 not),
/// 1 releases `n`, 2 answers how many units this thread holds.
/// (Exported raw: `raw.rs`.)
pub(crate) fn sem_undo(id: u32, offset: f64, op: u32, n: u32) -> Result<f64> {
    let rec =
        undo_record(id, offset)?.ok_or_else(|| ShmError::new("EINVAL", "not an undo semaphore"))?;
    let table = UndoTable::new(rec.get(), rec.tail())?;
    let me = owner_of(id)?;
    match op {
        0 => Ok(if table.try_take(me)? { 1.0 } else { 0.0 }),
        1 => table.release(me, n).map(|()| 0.0),
        _ => Ok(table.held_by(me) as f64),
    }
}

/// Wakes up to `n` sleepers of the semaphore at `offset` (after a JavaScript release
/// saw WAITERS).
/// (Exported raw: `raw.rs`.)
pub(crate) fn sem_wake(id: u32, offset: f64, n: u32, hand_off: bool) -> Result<()> {
    let rec = record::<SemRecord>(id, offset)?;
    if hand_off {
        rec.get().wake_after_hand_off(n);
    } else {
        rec.get().wake(n);
    }
    Ok(())
}
