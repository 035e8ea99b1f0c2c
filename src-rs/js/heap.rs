//! The heap at the JavaScript boundary. Each JavaScript thread keeps a table of the heaps
//! it attached ([`HeapSlot`]s); the hot calls (`heapMalloc(id, ...)`, ...) take the slot
//! id and are exported raw (`raw.rs`; the rule is in `js/mod.rs`). Every call takes the
//! heap's futex lock (the 32-byte [`LockRecord`] at the start of the heap region) around
//! every operation. A lock recovered from a dead holder triggers `rebuild()` before the
//! operation; if the heap cannot be repaired the error is reported and the lock becomes
//! not-recoverable, so no process ever works on a heap known to be broken.

use crate::error::{Result, ShmError};
use crate::heap::{HeapError, HeapView, NAMED_READY};
use crate::js::args::{to_u64, to_usize};
use crate::js::mapping::Mapping;
use crate::js::slots::SlotTable;
use crate::memory::mapping::{closed, Region};
use crate::sync::lock::{Acquired, LockRecord, Owner};
use crate::sys::{self, Deadline};
use napi_derive::napi;
use std::cell::RefCell;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// Usage figures of a heap.
#[napi(object)]
pub struct HeapStatsJs {
    /// Bytes of the heap region.
    pub size: f64,
    /// Bytes in allocated blocks.
    pub used: f64,
    /// Bytes in free blocks.
    pub free: f64,
    /// The largest allocation that would succeed now.
    pub largest_free: f64,
    /// Number of allocated blocks.
    pub allocations: f64,
}

/// A named object reserved (or found) by `namedReserve`.
#[napi(object)]
pub struct NamedReserved {
    /// Offset of the object in the mapping.
    pub offset: f64,
    /// Whether this call created it (the caller constructs it, then publishes).
    pub created: bool,
    /// The directory entry, for `namedPublish`.
    pub entry: f64,
    /// The stored type description.
    pub type_desc: String,
}

/// A named object found by `namedFind`.
#[napi(object)]
pub struct NamedFound {
    /// Offset of the object in the mapping.
    pub offset: f64,
    /// Its size in bytes.
    pub size: f64,
    /// The stored type description.
    pub type_desc: String,
}

/// A heap attached by one JavaScript thread.
struct HeapSlot {
    region: Arc<Region>,
    view: HeapView,
}

thread_local! {
    /// This thread's attached heaps, indexed by the id handed to JavaScript.
    static HEAPS: RefCell<SlotTable<Rc<HeapSlot>>> = const { RefCell::new(SlotTable::new()) };
}

/// The slot `id` of this thread.
#[inline]
fn slot(id: u32) -> Result<Rc<HeapSlot>> {
    HEAPS
        .with(|h| h.borrow().get(id).cloned())
        .ok_or_else(|| ShmError::new("EINVAL", format!("no heap with id {id} in this thread")))
}

#[napi]
impl Mapping {
    /// Attaches the heap at `offset` (formatting `size` bytes first when `format`) and
    /// returns its id for the `heap*` functions of this thread.
    #[napi]
    pub fn heap(&self, offset: f64, size: f64, format: bool) -> napi::Result<u32> {
        let off = to_u64("offset", offset)?;
        let region = self.region().clone();
        if !region.is_live() {
            return Err(closed().into());
        }
        if format {
            let len = to_u64("size", size)?;
            crate::heap::format_heap(&region, off, len)?;
        }
        // SAFETY: the slot keeps the region alive (Arc) and every call checks it is still
        // mapped before using the view; attach validates the header bounds.
        let view =
            unsafe { HeapView::attach(region.addr() as *mut u8, region.len(), off as usize) }
                .map_err(ShmError::from)?;
        let slot = Rc::new(HeapSlot { region, view });
        Ok(HEAPS.with(|h| h.borrow_mut().insert(slot)))
    }
}

fn heap_name(name: &str) -> Result<&[u8]> {
    let b = name.as_bytes();
    if b.is_empty() {
        return Err(ShmError::type_error(
            "The \"name\" argument must not be empty",
        ));
    }
    if b.len() > crate::heap::MAX_NAME_LEN {
        return Err(ShmError::range(format!(
            "The \"name\" argument is {} bytes of UTF-8; at most {} are allowed",
            b.len(),
            crate::heap::MAX_NAME_LEN
        )));
    }
    Ok(b)
}

impl HeapSlot {
    /// Runs `f` holding the heap lock. The JavaScript thread calling this cannot close the
    /// mapping meanwhile, so a liveness check suffices (no pin on the hot path).
    #[inline]
    fn locked<R>(
        &self,
        f: impl FnOnce(&HeapView) -> std::result::Result<R, HeapError>,
    ) -> Result<R> {
        if !self.region.is_live() {
            return Err(closed());
        }
        // SAFETY: lock_word() points at the 32-byte, 8-aligned lock record at the start
        // of the heap region, inside the live mapping (validated by attach).
        let rec = unsafe { &*(self.view.lock_word() as *const LockRecord) };
        let me = Owner::current();
        if rec.lock(me, None)? == Acquired::OwnerDied {
            self.recover(rec, me)?;
        }
        let r = f(&self.view);
        rec.unlock(me)?;
        Ok(r?)
    }

    /// The previous holder died mid-operation: repair from the block chain, then mark
    /// the lock consistent. If repair fails the lock is released inconsistent, which
    /// makes it not-recoverable: every later operation reports the broken heap.
    #[cold]
    fn recover(&self, rec: &LockRecord, me: Owner) -> Result<()> {
        match self.view.rebuild() {
            Ok(()) => rec.mark_consistent(me),
            Err(e) => {
                rec.unlock(me)?;
                Err(ShmError::new(
                    "ERR_SHM_CORRUPT",
                    format!(
                        "a process died inside the heap and it could not be repaired: {}",
                        e.message()
                    ),
                ))
            }
        }
    }

    fn state_word(&self, entry: usize) -> Result<&std::sync::atomic::AtomicU32> {
        if !self.region.is_live() {
            return Err(closed());
        }
        let word = self.view.named_state(entry)?;
        // SAFETY: named_state bounds-checked the entry; the word is 4-aligned inside the
        // live mapping, which lives as long as the slot.
        Ok(unsafe { &*word })
    }

    fn wait_ready(&self, entry: usize, deadline: Deadline, name: &str) -> Result<()> {
        let word = self.state_word(entry)?;
        // Acquire: pairs with the creator's Release store of READY.
        while word.load(Ordering::Acquire) != NAMED_READY {
            if !self.region.is_live() {
                return Err(closed());
            }
            if deadline.passed() {
                return Err(ShmError::new(
                    "ETIMEDOUT",
                    format!(
                        "the named object {name:?} is still being constructed by another process"
                    ),
                ));
            }
            sys::futex_wait(word, 0, Some(deadline.min_after_ms(50.0)));
        }
        Ok(())
    }
}

/// Forgets heap `id` of this thread (the heap itself is untouched).
#[napi]
pub fn heap_release(id: u32) {
    HEAPS.with(|h| h.borrow_mut().remove(id));
}

/// Length of heap `id`'s region.
#[napi]
pub fn heap_size(id: u32) -> napi::Result<f64> {
    Ok(slot(id)?.view.heap_len() as f64)
}

/// `malloc(size, align)`: offset in the mapping. (Exported raw: `raw.rs`.)
pub(crate) fn heap_malloc(id: u32, size: f64, align: f64) -> Result<f64> {
    let (size, align) = (to_usize("size", size)?, to_usize("align", align)?);
    Ok(slot(id)?.locked(|h| h.malloc(size, align))? as f64)
}

/// `free(offset)`. (Exported raw: `raw.rs`.)
pub(crate) fn heap_free(id: u32, offset: f64) -> Result<()> {
    let off = to_usize("offset", offset)?;
    slot(id)?.locked(|h| h.free(off))
}

/// `realloc(offset, size)`: the new offset. (Exported raw: `raw.rs`.)
pub(crate) fn heap_realloc(id: u32, offset: f64, size: f64) -> Result<f64> {
    let (off, size) = (to_usize("offset", offset)?, to_usize("size", size)?);
    Ok(slot(id)?.locked(|h| h.realloc(off, size))? as f64)
}

/// Usage figures.
#[napi]
pub fn heap_stats(id: u32) -> napi::Result<HeapStatsJs> {
    let s = slot(id)?.locked(|h| h.stats())?;
    Ok(HeapStatsJs {
        size: s.size as f64,
        used: s.used as f64,
        free: s.free as f64,
        largest_free: s.largest_free as f64,
        allocations: s.allocations as f64,
    })
}

/// Walks every block and list; throws on any broken invariant.
#[napi]
pub fn heap_check(id: u32) -> napi::Result<()> {
    Ok(slot(id)?.locked(|h| h.check())?)
}

/// Finds `name` or reserves a zeroed object for it (state CONSTRUCTING); waits while
/// another process constructs it.
#[napi]
pub fn heap_named_reserve(
    id: u32,
    name: String,
    size: f64,
    align: f64,
    type_desc: String,
) -> napi::Result<NamedReserved> {
    let key = heap_name(&name)?;
    let (size, align) = (to_usize("size", size)?, to_usize("align", align)?);
    let s = slot(id)?;
    let (e, created) = s.locked(|h| h.named_reserve(key, size, align, type_desc.as_bytes()))?;
    if !created && !e.ready {
        s.wait_ready(e.entry_off, Deadline::after_ms(10_000.0), &name)?;
    }
    Ok(NamedReserved {
        offset: e.offset as f64,
        created,
        entry: e.entry_off as f64,
        type_desc: String::from_utf8_lossy(&e.type_desc).into_owned(),
    })
}

/// Marks a reserved object constructed and wakes every process waiting for it.
#[napi]
pub fn heap_named_publish(id: u32, entry: f64) -> napi::Result<()> {
    let entry = to_usize("entry", entry)?;
    let s = slot(id)?;
    let word = s.state_word(entry)?;
    // Release: the constructed bytes are visible to whoever sees READY (Acquire).
    word.store(NAMED_READY, Ordering::Release);
    sys::futex_wake(word, u32::MAX);
    Ok(())
}

/// The object called `name`, waiting up to `wait_ms` for its construction.
#[napi]
pub fn heap_named_find(id: u32, name: String, wait_ms: f64) -> napi::Result<Option<NamedFound>> {
    let key = heap_name(&name)?;
    let s = slot(id)?;
    let Some(e) = s.locked(|h| h.named_find(key))? else {
        return Ok(None);
    };
    if !e.ready {
        s.wait_ready(e.entry_off, Deadline::after_ms(wait_ms), &name)?;
    }
    Ok(Some(NamedFound {
        offset: e.offset as f64,
        size: e.size as f64,
        type_desc: String::from_utf8_lossy(&e.type_desc).into_owned(),
    }))
}

/// Removes `name` from the directory.
#[napi]
pub fn heap_named_remove(id: u32, name: String) -> napi::Result<bool> {
    let key = heap_name(&name)?;
    Ok(slot(id)?.locked(|h| h.named_remove(key))?)
}
