//! The heap at the JavaScript boundary. Each JavaScript thread keeps a table of the heaps
//! it attached ([`HeapSlot`]s); the hot calls (`heapMalloc(id, ...)`, ...) take the slot
//! id and are exported raw (`raw.rs`; the rule is in `js/mod.rs`). Every call takes the
//! heap's futex lock (the 32-byte [`LockRecord`] at the start of the heap region) around
//! every operation. A lock recovered from a dead holder triggers `rebuild()` before the
//! operation; if the heap cannot be repaired the error is reported and the lock becomes
//! not-recoverable, so no process ever works on a heap known to be broken.
//!
//! Waiting for the heap lock is bounded ([`DEFAULT_LOCK_TIMEOUT_MS`], settable per heap
//! with `heapSetLockTimeout`): a lock word that names a live thread that never lets go
//! (a stuck or hostile process) ends in `ETIMEDOUT`, and a word that names no possible
//! holder (`NOT_RECOVERABLE`, a 0xff fill) in `ERR_SHM_CORRUPT`, never in a hang.

use crate::error::{Result, ShmError};
use crate::heap::{named_constructor, CacheOwner, HeapError, HeapView, NamedEntry};
use crate::js::args::{to_u64, to_usize};
use crate::js::mapping::{region_of, release_tokens_at_teardown, token_of};
use crate::js::slots::SlotTable;
use crate::memory::mapping::{closed, Region};
use crate::sync::liveness::TokenRef;
use crate::sync::lock::{Acquired, LockRecord, Owner};
use crate::sync::RECHECK_MS;
use crate::sys::{self, Deadline, Liveness};
use napi::bindgen_prelude::Uint8Array;
use napi::Env;
use napi_derive::napi;
use std::cell::{Cell, RefCell};
use std::rc::Rc;
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
    /// Freed blocks parked in threads' caches (counted as free).
    pub cached: f64,
    /// Bytes of those blocks.
    pub cached_bytes: f64,
}

/// What the JavaScript fast path of a heap needs to know of it (`lib/heap-cache.ts`),
/// read once, validated by attach.
#[napi(object)]
pub struct HeapInfo {
    /// Length of the heap region.
    pub size: f64,
    /// Heap-relative offset of the first block.
    pub header_size: f64,
    /// Heap-relative end of the last block.
    pub arena_end: f64,
    /// Low half of the salt mixed into block check words.
    pub salt_lo: u32,
    /// High half of the salt.
    pub salt_hi: u32,
}

/// A named object reserved (or found) by `namedReserve`.
#[napi(object)]
pub struct NamedReserved {
    /// Offset of the object in the mapping.
    pub offset: f64,
    /// Whether this call created it (constructed and published by that call).
    pub created: bool,
    /// Mapping offset of its directory entry (whose state word a C peer constructing an
    /// object in place sets, FORMAT.md; the tests play such a peer).
    pub entry: f64,
    /// The object's size as the entry records it.
    pub size: f64,
    /// The stored type description.
    pub type_desc: String,
}

/// A named object found by `namedFind`.
#[napi(object)]
pub struct NamedFound {
    /// Offset of the object in the mapping.
    pub offset: f64,
    /// Mapping offset of its directory entry (a hint for `heapFreeNamed`).
    pub entry: f64,
    /// Its size in bytes.
    pub size: f64,
    /// The stored type description.
    pub type_desc: String,
}

/// How long a heap operation waits for the heap lock by default (milliseconds).
pub const DEFAULT_LOCK_TIMEOUT_MS: f64 = 10_000.0;

/// A heap attached by one JavaScript thread.
pub(crate) struct HeapSlot {
    pub(crate) region: Arc<Region>,
    view: HeapView,
    /// The mapping (this thread's id) the heap lives in, for its liveness token.
    mapping: u32,
    /// This thread as owner of the heap lock (its token claimed on the first operation).
    owner: RefCell<Option<(TokenRef, Owner)>>,
    /// Longest wait for the heap lock, in milliseconds.
    lock_timeout_ms: Cell<f64>,
}

thread_local! {
    /// This thread's attached heaps, indexed by the id handed to JavaScript.
    static HEAPS: RefCell<SlotTable<Rc<HeapSlot>>> = const { RefCell::new(SlotTable::new()) };
}

/// The slot `id` of this thread.
#[inline]
pub(crate) fn slot(id: u32) -> Result<Rc<HeapSlot>> {
    HEAPS
        .with(|h| h.borrow().get(id).cloned())
        .ok_or_else(|| ShmError::new("EINVAL", format!("no heap with id {id} in this thread")))
}

/// Attaches the heap at `offset` of mapping `mapping` (formatting `size` bytes first when
/// `format`) and returns its id for the `heap*` functions of this thread.
#[napi]
pub fn heap_attach(
    env: Env,
    mapping: u32,
    offset: f64,
    size: f64,
    format: bool,
) -> napi::Result<u32> {
    release_tokens_at_teardown(&env)?;
    let off = to_u64("offset", offset)?;
    let region = region_of(mapping)?;
    if !region.is_live() {
        return Err(closed().into());
    }
    if format {
        let len = to_u64("size", size)?;
        crate::heap::format_heap(&region, off, len)?;
    }
    // SAFETY: the slot keeps the region alive (Arc) and every call checks it is still
    // mapped before using the view; attach validates the header bounds.
    let view = unsafe { HeapView::attach(region.addr() as *mut u8, region.len(), off as usize) };
    // A mapping that lost pages reads zeros there: say that, not "bad magic".
    region.check_intact()?;
    let view = view.map_err(ShmError::from)?.with_region(region.clone());
    let slot = Rc::new(HeapSlot {
        region,
        view,
        mapping,
        owner: RefCell::new(None),
        lock_timeout_ms: Cell::new(DEFAULT_LOCK_TIMEOUT_MS),
    });
    Ok(HEAPS.with(|h| h.borrow_mut().insert(slot)))
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
    pub(crate) fn locked<R>(
        &self,
        f: impl FnOnce(&HeapView) -> std::result::Result<R, HeapError>,
    ) -> Result<R> {
        if !self.region.is_live() {
            return Err(closed());
        }
        // Every heap operation writes (the lock word at least); none works on a mapping
        // that lost pages (sys/linux/sigbus.rs), and one that made it lose them reports it.
        self.region.check_writable()?;
        self.region.check_intact()?;
        // SAFETY: lock_word() points at the 32-byte, 8-aligned lock record at the start
        // of the heap region, inside the live mapping (validated by attach).
        let rec = unsafe { &*(self.view.lock_word() as *const LockRecord) };
        let me = self.owner()?;
        match rec.try_lock(me) {
            Ok(true) => {}
            Ok(false) => self.lock_contended(rec, me)?,
            Err(_) => return Err(dead_heap_lock()),
        }
        let r = f(&self.view);
        let unlocked = rec.unlock(me);
        self.region.check_intact()?;
        unlocked?;
        Ok(r?)
    }

    /// Waits for the heap lock, at most the heap's lock timeout; repairs the heap if its
    /// holder died.
    #[cold]
    fn lock_contended(&self, rec: &LockRecord, me: Owner) -> Result<()> {
        let timeout = self.lock_timeout_ms.get();
        let deadline = (timeout != f64::INFINITY).then(|| Deadline::after_ms(timeout));
        match rec.lock(me, deadline) {
            Ok(Acquired::Yes) => Ok(()),
            Ok(Acquired::OwnerDied) => self.recover(rec, me),
            Ok(Acquired::TimedOut) => Err(lock_timed_out(timeout)),
            Err(e) if e.code == "ERR_SHM_NOT_RECOVERABLE" => Err(dead_heap_lock()),
            Err(e) => Err(e),
        }
    }

    /// This thread as owner of the heap lock; claims its token on first use.
    #[inline]
    fn owner(&self) -> Result<Owner> {
        if let Some((_, me)) = &*self.owner.borrow() {
            return Ok(*me);
        }
        self.claim_owner()
    }

    #[cold]
    fn claim_owner(&self) -> Result<Owner> {
        let (token, region) = token_of(self.mapping)?;
        if !Arc::ptr_eq(&region, &self.region) {
            return Err(closed());
        }
        let me = token.owner(&self.region);
        *self.owner.borrow_mut() = Some((token, me));
        Ok(me)
    }

    /// The previous holder died mid-operation: repair from the block chain, then mark
    /// the lock consistent. If repair fails the lock is released inconsistent, which
    /// makes it not-recoverable: every later operation reports the broken heap.
    #[cold]
    fn recover(&self, rec: &LockRecord, me: Owner) -> Result<()> {
        // The process that died may have had blocks cached: reclaim them with the rest.
        let repaired = self
            .view
            .rebuild()
            .and_then(|()| self.view.reclaim_cached(dead_owners(me)).map(drop));
        match repaired {
            Ok(()) => {
                crate::trace::emit(crate::trace::Event::HeapRepaired {
                    address: self.region.addr() + self.view.heap_off(),
                    reason: crate::trace::RepairReason::OwnerDied,
                });
                rec.mark_consistent(me)
            }
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

    /// Waits until the entry of `name` (`e`, as found) is READY, and returns it as it is
    /// then; `None` once the name is gone: removed, or taken back here from a constructor
    /// that died (its object was never published, so it never existed). The state is read
    /// only under the heap lock (an entry may be taken back and its memory reused the
    /// moment the lock is free); between looks the thread sleeps on the state word for at
    /// most a slice; the first look, each slice and the last look before `deadline` ask
    /// whether the constructor lives.
    fn wait_ready(
        &self,
        key: &[u8],
        mut e: NamedEntry,
        deadline: Deadline,
        name: &str,
    ) -> Result<Option<NamedEntry>> {
        let me = self.owner()?;
        let mut suspect = 0;
        // The first look asks at once: a constructor that died is the likely reason to
        // find an entry still constructing (a live one takes microseconds).
        let mut next_check = Deadline::after_ms(0.0);
        loop {
            if e.ready {
                return Ok(Some(e));
            }
            let constructor = named_constructor(e.state).map_err(|()| {
                ShmError::new(
                    "ERR_SHM_CORRUPT",
                    format!(
                        "the directory entry of {name:?} has state {} (not 0 or a token, \
                         constructing, nor 1, ready)",
                        e.state
                    ),
                )
            })?;
            let last = deadline.passed();
            if let Some(token) = constructor.filter(|_| last || next_check.passed()) {
                next_check = Deadline::slice_ms(RECHECK_MS);
                let gone = match me.liveness_of(token, None) {
                    Liveness::Alive => {
                        suspect = 0;
                        false
                    }
                    Liveness::Suspect if suspect != token => {
                        suspect = token;
                        false
                    }
                    Liveness::Suspect | Liveness::Dead => true,
                };
                if gone {
                    self.locked(|h| h.named_abandon(key, e.entry_off, e.state))?;
                    return Ok(None);
                }
            }
            if last {
                return Err(ShmError::new(
                    "ETIMEDOUT",
                    format!(
                        "the named object {name:?} is still being constructed by another process"
                    ),
                ));
            }
            // (An entry another waiter took back since is no entry: look again at once.)
            if let Ok(word) = self.state_word(e.entry_off) {
                sys::futex_wait(word, e.state, Some(deadline.min_after_ms(RECHECK_MS)));
            }
            match self.locked(|h| h.named_find(key))? {
                Some(now) => e = now,
                None => return Ok(None),
            }
        }
    }

    /// The named object `key` as found, waiting up to `deadline` for its construction;
    /// `None` if there is none (also once one whose constructor died was taken back).
    fn find_ready(&self, key: &[u8], deadline: Deadline, name: &str) -> Result<Option<NamedEntry>> {
        match self.locked(|h| h.named_find(key))? {
            Some(e) => self.wait_ready(key, e, deadline, name),
            None => Ok(None),
        }
    }
}

/// The heap lock stayed held past the heap's lock timeout.
fn lock_timed_out(timeout_ms: f64) -> ShmError {
    ShmError::new(
        "ETIMEDOUT",
        format!(
            "the heap's lock was not released within {timeout_ms} ms (the heap's \
             lockTimeout): a live process holds it and does not let go, or its word is corrupt"
        ),
    )
}

/// The heap lock's word names no holder that could ever release it.
fn dead_heap_lock() -> ShmError {
    ShmError::new(
        "ERR_SHM_CORRUPT",
        "the heap's lock can never be taken again: a process died inside the heap and it \
         could not be repaired, or the lock word was overwritten",
    )
}

/// Sets how long operations on heap `id` of this thread wait for the heap lock
/// (milliseconds; `Infinity`: forever) before failing with `ETIMEDOUT`.
#[napi]
pub fn heap_set_lock_timeout(id: u32, timeout_ms: f64) -> napi::Result<()> {
    if timeout_ms.is_nan() || timeout_ms < 0.0 {
        return Err(ShmError::range(format!(
            "The \"lockTimeout\" option must be a non-negative number of milliseconds; got {timeout_ms}"
        ))
        .into());
    }
    slot(id)?.lock_timeout_ms.set(timeout_ms);
    Ok(())
}

/// Lets go of the liveness token this thread's heaps in `region` hold (the region is
/// being closed): the token's descriptor closes with the mapping, not when garbage
/// collection gets to the `Heap` objects (a program that opens and closes segments in a
/// loop would otherwise pile up descriptors).
pub(crate) fn release_heap_tokens(region: &Region) {
    let _ = HEAPS.try_with(|h| {
        for slot in h.borrow().iter() {
            if std::ptr::eq(Arc::as_ptr(&slot.region), region) {
                slot.owner.borrow_mut().take();
            }
        }
    });
}

/// Forgets heap `id` of this thread (the heap itself is untouched).
#[napi]
pub fn heap_release(id: u32) {
    HEAPS.with(|h| h.borrow_mut().remove(id));
}

/// This thread's liveness token in heap `id`'s segment, claimed now and held by the slot
/// until [`heap_release`] (or the mapping's close): the token `lib/heap-cache.ts` marks the
/// blocks it caches with. Holding it in the slot keeps the owner alive in the eyes of
/// reclaimers for as long as JavaScript may still take those blocks back, even once the
/// `MappedMemory` was collected (its own hold goes with `mappingRelease`): the cache of a
/// collected `Heap` is flushed through this slot before it is released.
///
/// # Errors
/// `ERR_SHM_CLOSED`; `EACCES` for a read-only mapping.
#[napi]
pub fn heap_token(id: u32) -> napi::Result<u32> {
    Ok(slot(id)?.owner()?.token)
}

/// Geometry and salt of heap `id` (see [`HeapInfo`]).
#[napi]
pub fn heap_info(id: u32) -> napi::Result<HeapInfo> {
    // No lock: these never change (and read-only segments have their heap too).
    let s = slot(id)?;
    if !s.region.is_live() {
        return Err(closed().into());
    }
    let l = s.view.layout().map_err(ShmError::from)?;
    s.region.check_intact()?;
    Ok(HeapInfo {
        size: l.heap_len as f64,
        header_size: l.header_size as f64,
        arena_end: l.arena_end as f64,
        salt_lo: l.salt as u32,
        salt_hi: (l.salt >> 32) as u32,
    })
}

/// Usable bytes of the block allocated at `offset` (an offset in the mapping, as
/// `malloc` returns): for `Heap.create` inside a managed segment's heap, once per create.
///
/// # Errors
/// `EINVAL` (or `ERR_SHM_DOUBLE_FREE` for a free or cached block) when no
/// allocated block starts at `offset`.
#[napi]
pub fn heap_usable_size(id: u32, offset: f64) -> napi::Result<f64> {
    let off = to_usize("offset", offset)?;
    Ok(slot(id)?.locked(|h| h.usable_size(off))? as f64)
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

/// `free(offset)` of a named object whose directory entry was reported at `entry` (by
/// `namedReserve`/`namedFind`): found in its bucket, not by a walk of the directory.
/// (Exported raw: `raw.rs`.)
pub(crate) fn heap_free_named(id: u32, offset: f64, entry: f64) -> Result<()> {
    let (off, entry) = (to_usize("offset", offset)?, to_usize("entry", entry)?);
    slot(id)?.locked(|h| h.free_named(off, Some(entry)))
}

/// `realloc(offset, size)`: the new offset. (Exported raw: `raw.rs`.)
pub(crate) fn heap_realloc(id: u32, offset: f64, size: f64) -> Result<f64> {
    let (off, size) = (to_usize("offset", offset)?, to_usize("size", size)?);
    Ok(slot(id)?.locked(|h| h.realloc(off, size))? as f64)
}

/// Usage figures.
#[napi]
pub fn heap_stats(id: u32) -> napi::Result<HeapStatsJs> {
    Ok(slot(id)?.locked(|h| h.stats())?.into())
}

impl From<crate::heap::HeapStats> for HeapStatsJs {
    fn from(s: crate::heap::HeapStats) -> Self {
        HeapStatsJs {
            size: s.size as f64,
            used: s.used as f64,
            free: s.free as f64,
            largest_free: s.largest_free as f64,
            allocations: s.allocations as f64,
            cached: s.cached as f64,
            cached_bytes: s.cached_bytes as f64,
        }
    }
}

/// Returns the blocks cached by dead threads to the heap; how many.
#[napi]
pub fn heap_trim(id: u32) -> napi::Result<f64> {
    let s = slot(id)?;
    let me = s.owner()?;
    Ok(s.locked(|h| h.reclaim_cached(dead_owners(me)))? as f64)
}

/// Whether the thread that cached a block is gone: nobody holds its liveness token (the
/// kernel answers; a "suspect" answer, macOS only, counts as alive), asking once per
/// token.
fn dead_owners(me: Owner) -> impl FnMut(CacheOwner) -> bool {
    let mut seen = std::collections::HashMap::new();
    move |o| {
        *seen.entry(o.token).or_insert_with(|| {
            me.liveness_of(o.token, (o.start != 0).then_some(o.start)) == Liveness::Dead
        })
    }
}

/// Reclaims the caches of dead threads, then walks every block and list; throws on any
/// broken invariant.
#[napi]
pub fn heap_check(id: u32) -> napi::Result<()> {
    let s = slot(id)?;
    let me = s.owner()?;
    Ok(s.locked(|h| {
        h.reclaim_cached(dead_owners(me))?;
        h.check()
    })?)
}

/// Finds `name` or creates its object (zeroed, then `image`), published at once; waits
/// while another thread constructs it (and takes it back if that thread died, then
/// creates it here). One call, so that no JavaScript runs between the reservation and
/// the publication (see `HeapView::named_reserve`).
#[napi]
pub fn heap_named_reserve(
    id: u32,
    name: String,
    size: f64,
    align: f64,
    type_desc: String,
    image: Uint8Array,
) -> napi::Result<NamedReserved> {
    let key = heap_name(&name)?;
    let (size, align) = (to_usize("size", size)?, to_usize("align", align)?);
    let s = slot(id)?;
    let me = s.owner()?;
    let deadline = Deadline::after_ms(10_000.0);
    loop {
        let (e, created) = s.locked(|h| {
            h.named_reserve(
                key,
                size,
                align,
                type_desc.as_bytes(),
                me.token,
                Some(&image),
            )
        })?;
        let e = if created {
            e
        } else {
            match s.wait_ready(key, e, deadline, &name)? {
                Some(e) => e,
                None => continue, // taken back or removed: reserve again
            }
        };
        return Ok(NamedReserved {
            offset: e.offset as f64,
            created,
            entry: e.entry_off as f64,
            size: e.size as f64,
            type_desc: String::from_utf8_lossy(&e.type_desc).into_owned(),
        });
    }
}

/// The object called `name`, waiting up to `wait_ms` for its construction.
#[napi]
pub fn heap_named_find(id: u32, name: String, wait_ms: f64) -> napi::Result<Option<NamedFound>> {
    let key = heap_name(&name)?;
    let s = slot(id)?;
    Ok(s.find_ready(key, Deadline::after_ms(wait_ms), &name)?
        .map(|e| NamedFound {
            offset: e.offset as f64,
            entry: e.entry_off as f64,
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

/// A directory entry, as `heapSurvey` reports it.
#[napi(object)]
pub struct NamedInfo {
    /// The name.
    pub name: String,
    /// Offset of the object in the mapping.
    pub offset: f64,
    /// Its size in bytes.
    pub size: f64,
    /// The stored type description.
    pub type_desc: String,
    /// Whether its construction finished.
    pub ready: bool,
}

/// An object whose first bytes carry a kind tag (docs/FORMAT.md §6).
#[napi(object)]
pub struct TaggedObject {
    /// Offset of the object in the mapping.
    pub offset: f64,
    /// Bytes of its block's payload.
    pub size: f64,
    /// The tag.
    pub kind: u32,
    /// Whether it is a named object.
    pub named: bool,
}

/// What `npx shmutils inspect` reads of a heap, under one hold of its lock.
#[napi(object)]
pub struct HeapSurvey {
    /// Usage figures.
    pub stats: HeapStatsJs,
    /// `check()`'s complaint (code and message), or absent if the heap is sound.
    pub problem: Option<Vec<String>>,
    /// The named objects (absent if the directory could not be read).
    pub named: Option<Vec<NamedInfo>>,
    /// Objects tagged with one of the kinds asked for, in address order.
    pub tagged: Vec<TaggedObject>,
    /// Whether more tagged objects exist than were asked for.
    pub more: bool,
}

/// Stats, `check()`, the directory and the objects tagged with one of `kinds` (at most
/// `max`), all under one hold of the heap lock: a consistent picture for diagnostics.
#[napi]
pub fn heap_survey(id: u32, kinds: Vec<u32>, max: u32) -> napi::Result<HeapSurvey> {
    let max = max as usize;
    let (stats, problem, named, mut tagged) = slot(id)?.locked(|h| {
        let stats = h.stats()?;
        let problem = h
            .check()
            .err()
            .map(|e| vec![e.code().to_owned(), e.message()]);
        let named = h.named_list().ok();
        let tagged = h
            .tagged_blocks(|k| kinds.contains(&k), max + 1)
            .unwrap_or_default();
        Ok((stats, problem, named, tagged))
    })?;
    let more = tagged.len() > max;
    tagged.truncate(max);
    Ok(HeapSurvey {
        stats: stats.into(),
        problem,
        named: named.map(|list| {
            list.into_iter()
                .map(|e| NamedInfo {
                    name: String::from_utf8_lossy(&e.name).into_owned(),
                    offset: e.offset as f64,
                    size: e.size as f64,
                    type_desc: String::from_utf8_lossy(&e.type_desc).into_owned(),
                    ready: e.ready,
                })
                .collect()
        }),
        tagged: tagged
            .into_iter()
            .map(|b| TaggedObject {
                offset: b.offset as f64,
                size: b.len as f64,
                kind: b.kind,
                named: b.named,
            })
            .collect(),
        more,
    })
}
