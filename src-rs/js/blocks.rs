//! Heap blocks owned by shared containers (`lib/map.ts`, `lib/channel.ts`): allocation
//! and release that never leave a container's bookkeeping pointing at a block the heap
//! no longer gives it.
//!
//! A container refers to its blocks through *slots*: u32 words in the mapping holding a
//! block's offset divided by 16 (heap blocks are 16-aligned; 0 = none), written with
//! single stores so a process killed between two instructions never leaves a torn link.
//! The two calls here update a slot inside the heap's own critical section:
//!
//! | call            | under the heap lock                                          |
//! |-----------------|--------------------------------------------------------------|
//! | `heapAllocInto` | allocate; then store the block's unit into the slot          |
//! | `heapFreeFrom`  | read the slot; store the u32 found `next` bytes into the block (or 0) into the slot; then free the block |
//!
//! So a slot only ever names a block that is allocated and the container's: a process
//! killed in between leaks at most that one block (allocated and not yet recorded, or
//! unlinked and not yet freed), and never frees one twice, which could hand another
//! process's live block back to the heap.

use crate::error::{Result, ShmError};
use crate::js::args::to_usize;
use crate::js::heap::slot;
use crate::memory::mapping::Region;
use std::sync::atomic::{AtomicU32, Ordering};

/// Heap blocks are 16-aligned: slots store `offset / 16`.
pub const UNIT: usize = 16;

/// The u32 word at `offset` of `region`, bounds- and alignment-checked.
fn word<'a>(region: &'a Region, offset: usize, what: &str) -> Result<&'a AtomicU32> {
    if !offset.is_multiple_of(4) || offset.checked_add(4).is_none_or(|e| e > region.len()) {
        return Err(ShmError::new(
            "ERR_SHM_CORRUPT",
            format!("{what} at offset {offset} is not a 4-byte word inside the mapping"),
        ));
    }
    // SAFETY: checked above: 4-aligned and inside the live mapping, which the heap slot
    // keeps alive (the caller holds it) and the caller checked is live (`locked`).
    Ok(unsafe { &*((region.addr() + offset) as *const AtomicU32) })
}

/// Allocates `size` bytes aligned to `align` in heap `id` and records the block in the
/// u32 slot at `slot_at` (mapping offset) before the heap lock is released. Returns the
/// block's offset.
///
/// # Errors
/// As `malloc`; `RangeError` for a block beyond 64 GiB (a slot holds offset / 16 in 32
/// bits); `ERR_SHM_CORRUPT` for a bad slot offset.
pub(crate) fn heap_alloc_into(id: u32, size: f64, align: f64, slot_at: f64) -> Result<f64> {
    let (size, align) = (to_usize("size", size)?, to_usize("align", align)?);
    let slot_at = to_usize("slot", slot_at)?;
    let s = slot(id)?;
    let cell = word(&s.region, slot_at, "a block slot")?;
    s.locked(|h| {
        let off = h.malloc(size, align)?;
        let unit = u32::try_from(off / UNIT).ok().filter(|_| off % UNIT == 0);
        match unit {
            Some(u) => {
                // Relaxed: the heap lock's release orders it for the next holder, and
                // the container's own lock for its readers.
                cell.store(u, Ordering::Relaxed);
                Ok(Ok(off as f64))
            }
            None => {
                h.free(off)?;
                Ok(Err(ShmError::range(format!(
                    "a container block at offset {off} lies beyond the 64 GiB containers can address"
                ))))
            }
        }
    })?
}

/// Frees the block named by the u32 slot at `slot_at` in heap `id`, first replacing the
/// slot's value by the u32 `next` bytes into the block (unlinking it from a chain), or by
/// 0 when `next` is negative. Returns the freed block's offset, 0 if the slot was empty.
///
/// # Errors
/// `ERR_SHM_CORRUPT` for a slot or link outside the mapping (the slot is left
/// unchanged), or a slot naming no live block (it is unlinked all the same).
pub(crate) fn heap_free_from(id: u32, slot_at: f64, next: f64) -> Result<f64> {
    let slot_at = to_usize("slot", slot_at)?;
    let s = slot(id)?;
    let region = &*s.region;
    let cell = word(region, slot_at, "a block slot")?;
    s.locked(|h| {
        // Relaxed: everything here runs under the heap lock and the caller's lock.
        let unit = cell.load(Ordering::Relaxed);
        if unit == 0 {
            return Ok(Ok(0.0));
        }
        let off = unit as usize * UNIT;
        let link = if next.is_sign_negative() {
            0
        } else {
            let at = off.saturating_add(next as usize);
            match word(region, at, "a block's link") {
                Ok(w) => w.load(Ordering::Relaxed),
                Err(e) => return Ok(Err(e)),
            }
        };
        cell.store(link, Ordering::Relaxed);
        match h.free(off) {
            Ok(()) => Ok(Ok(off as f64)),
            Err(e) => {
                // Not a live block (hostile or corrupted bytes): it stays unlinked, so
                // the container stops running into it, and the caller hears why.
                Ok(Err(ShmError::new(
                    "ERR_SHM_CORRUPT",
                    format!(
                        "a container slot names offset {off}, which is not a live heap block ({})",
                        e.message()
                    ),
                )))
            }
        }
    })?
}
