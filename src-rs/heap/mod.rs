//! Process-safe TLSF allocator whose whole state lives inside a shared-memory region.
//!
//! A [`HeapView`] is a process-local *view* (base pointer + bounds) of a heap region
//! `[heap_off, heap_off + heap_len)` inside a mapping. Every piece of allocator state
//! (header, size-class free lists, block headers, boundary tags, the named-object
//! directory) lives inside that region and is stored as **byte offsets relative to the
//! start of the heap region** ("heap-relative"), never as absolute pointers. The public
//! API takes and returns offsets relative to the start of the **mapping**
//! (`mapping offset = heap_off + heap-relative offset`).
//!
//! All multi-byte fields are little-endian on every supported target (x86-64, arm64)
//! and naturally aligned. The heap region starts 16-byte aligned.
//!
//! # Concurrency contract
//!
//! Every operation except [`HeapView::new`], [`HeapView::attach`],
//! [`HeapView::lock_word`] and the state word returned by [`HeapView::named_state`]
//! requires that the caller holds the heap lock (the 32-byte record at
//! [`HEAP_LOCK_OFFSET`], which this module never reads or writes). All metadata is
//! accessed with relaxed atomic loads/stores through raw pointers (never `&`/`&mut` to
//! plain data), with compiler fences at the commit points described below; the lock's
//! acquire/release provides inter-process ordering. User bytes (the `realloc` copy,
//! zeroing a new named object, name/type bytes) are copied with plain byte copies.
//!
//! Per operation only the magic is re-checked; a process attaching to an existing heap
//! must call [`HeapView::validate_header`] once ([`HeapView::attach`] does).
//!
//! # Untrusted memory
//!
//! The region is treated as untrusted input: every offset or length read from it is
//! bounds-checked against the heap region before use; every list walk is bounded (a
//! cycle yields `Corrupt`); arithmetic on values read from memory is checked or
//! wrapping. The module never panics and never reads or writes outside
//! `[heap_off + 32, heap_off + heap_len)` (the first 32 bytes are the caller's lock).
//!
//! # Layout (docs/FORMAT.md)
//!
//! ## Heap header (at heap-relative offset 0)
//!
//! | off | size | field | meaning |
//! |----:|-----:|-------|---------|
//! |   0 |   32 | lock | caller's lock record (futex word at 0); never touched by the allocator |
//! |  32 |    8 | magic | `0x3150414548555053` = bytes `"SPUHEAP1"` |
//! |  40 |    4 | version | `1` |
//! |  44 |    4 | header_size | bytes of header; the first block starts here (multiple of 16) |
//! |  48 |    8 | heap_len | length of the heap region in bytes, as given to `format` |
//! |  56 |    8 | arena_end | `heap_len & !15`: end of the last block |
//! |  64 |    8 | salt | random per-format value mixed into block check words |
//! |  72 |    4 | fl_count | number of first-level size classes (FL) |
//! |  76 |    4 | sl_count | second-level classes per FL, always 16 |
//! |  80 |    4 | busy | 1 while an operation is in progress (crash detection) |
//! |  84 |    4 | dir_buckets | number of directory hash buckets (power of two) |
//! |  88 |    8 | used | total bytes of allocated blocks (headers included); free bytes = `arena_end - header_size - used` |
//! |  96 |    8 | reserved | 0 |
//! | 104 |    8 | allocations | number of allocated blocks (directory entries included) |
//! | 112 |    8 | reserved | 0 |
//! | 120 |    8 | `journal[0]` | heap-relative offset of a block header being absorbed by a merge (0 = none); only meaningful while `busy` is set |
//! | 128 |    8 | `journal[1]` | same |
//! | 136 |    8 | dir_count | number of directory entries |
//! | 144 |    8 | fl_bitmap | bit f set iff some list of class f is non-empty |
//! | 152 | 4·fl_count | `sl_bitmap[f]` | `u32`, bit s set iff list (f, s) is non-empty |
//! | H = align8(152 + 4·fl_count) | 8·16·fl_count | `heads[f][s]` | `u64` heap-relative offset of the first free block of class (f, s), 0 = empty |
//! | D = H + 128·fl_count | 8·dir_buckets | `buckets[i]` | `u64` heap-relative offset of the first directory entry *payload* in bucket i, 0 = empty |
//! | align16(D + 8·dir_buckets) | | | end of header = `header_size` |
//!
//! Derived values (a function of `heap_len` only):
//! `fl_count = fl(heap_len) + 1` where `fl(s) = 0` if `s < 256` else `floor(log2 s) - 7`;
//! `dir_buckets = clamp(next_pow2(heap_len / 16384), 8, 1024)`.
//! `arena_end - header_size >= 48` is required; `heap_len <= 2^46`.
//!
//! The block layout and size classes are at the top of `tlsf.rs`, the directory entry
//! at the top of `named.rs`.
//!
//! # Files
//!
//! | file | holds |
//! |------|-------|
//! | `mod.rs` | the view, the heap header, bounds-checked accessors, `format`, the operation bracket (`op`: busy flag, auto-repair) |
//! | `tlsf.rs` | blocks, size classes, free lists; `malloc`, `free`, `realloc`, `stats` (block layout at its top) |
//! | `cache.rs` | the per-thread caches of freed small blocks: their protocol (at its top), counting them, reclaiming those of dead threads |
//! | `repair.rs` | `rebuild` after a process died holding the lock (the crash-tolerance design at its top) |
//! | `check.rs` | `check`: every invariant, read-only |
//! | `named.rs` | the named-object directory (entry layout at its top) |
//! | `survey.rs` | what diagnostic tools read: tagged objects, the counters from raw bytes |
//! | `testing.rs` | fixtures shared by the tests at the bottom of each file |
//!
//! # Choices
//!
//! * `malloc(0, _)` allocates a minimum block (32 usable bytes) and returns a unique
//!   offset; `realloc(off, 0)` shrinks to a minimum block (it does not free).
//! * `align` must be a power of two in `1..=4096`; values below 16 are treated as 16.
//!   Alignment is of the **mapping offset** (and therefore of the address when the
//!   mapping is page-aligned). It is recorded in the block so `realloc` keeps it.
//! * `stats().size` is the heap region length (`heap_len`); `used`/`free` count whole
//!   blocks (16-byte headers included), so `used + free = size - header_size - (heap_len & 15)`;
//!   `largest_free` is the largest `malloc(n)` (align 16) that succeeds now (largest
//!   free block minus its 16-byte header, 0 if none); `allocations` counts allocated
//!   blocks, directory entries included.

use crate::memory::mapping::Region;
use std::collections::HashSet;
use std::fmt;
use std::sync::atomic::{compiler_fence, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

mod cache;
mod check;
pub use cache::CacheOwner;
mod named;
mod repair;
pub mod survey;
#[cfg(test)]
mod testing;
mod tlsf;

// ---------------------------------------------------------------------------------------
// Public constants
// ---------------------------------------------------------------------------------------

/// Heap-relative offset of the caller's 32-byte, 8-aligned lock record.
pub const HEAP_LOCK_OFFSET: usize = 0;
/// Size of the caller's lock record at the start of the heap.
pub const HEAP_LOCK_SIZE: usize = 32;
/// Magic at heap-relative offset 32 (`"SPUHEAP1"` little-endian).
pub const HEAP_MAGIC: u64 = u64::from_le_bytes(*b"SPUHEAP1");
/// Format version at heap-relative offset 40.
pub const HEAP_VERSION: u32 = 1;
/// Bytes of block header in front of every payload.
pub const BLOCK_HEADER_SIZE: usize = 16;
/// Smallest block (header + payload) the allocator creates.
pub const MIN_BLOCK_SIZE: usize = 48;
/// Smallest alignment of any returned offset.
pub const MIN_ALIGN: usize = 16;
/// Largest accepted alignment.
pub const MAX_ALIGN: usize = 4096;
/// Longest directory name in bytes.
pub const MAX_NAME_LEN: usize = 255;
/// Longest type description in bytes.
pub const MAX_TYPE_DESC_LEN: usize = 65536;
/// Largest supported heap region.
pub const MAX_HEAP_LEN: u64 = 1 << 46;
/// Directory entry state: object being constructed by a thread nobody can name (a
/// segment written by a peer that does not record the constructor).
pub const NAMED_CONSTRUCTING: u32 = 0;
/// Directory entry state: object ready.
pub const NAMED_READY: u32 = 1;

/// The states of a directory entry's state word (`docs/FORMAT.md` §5):
///
/// | state | meaning |
/// |---|---|
/// | 0 | CONSTRUCTING, constructor unknown: waited for, never taken back |
/// | 1 | READY: the object is constructed (Release by the constructor) |
/// | `token << 1` (even, 2 ..= `0x7fff_fffe`) | CONSTRUCTING by the thread holding liveness token `token`: if it dies first, whoever waits removes the entry and frees the object (it never existed) |
/// | anything else | corruption |
///
/// The state of an entry constructed by the thread holding liveness token `token`.
#[inline]
pub fn named_constructing_by(token: u32) -> u32 {
    debug_assert!(token != 0 && token <= crate::sync::lock::TID_MASK);
    token << 1
}

/// The constructor's liveness token in a CONSTRUCTING `state`, if it names one;
/// `Err(())` for a state that is not one of the table above.
#[inline]
#[allow(clippy::result_unit_err)]
pub fn named_constructor(state: u32) -> Result<Option<u32>, ()> {
    match state {
        NAMED_CONSTRUCTING | NAMED_READY => Ok(None),
        s if s & 1 == 0 && s >> 1 <= crate::sync::lock::TID_MASK => Ok(Some(s >> 1)),
        _ => Err(()),
    }
}

// ---------------------------------------------------------------------------------------
// Internal layout constants (heap-relative byte offsets)
// ---------------------------------------------------------------------------------------

const LOCK_LEN: u64 = HEAP_LOCK_SIZE as u64;
const H_MAGIC: u64 = 32;
const H_VERSION: u64 = 40;
const H_HEADER_SIZE: u64 = 44;
const H_HEAP_LEN: u64 = 48;
const H_ARENA_END: u64 = 56;
const H_SALT: u64 = 64;
const H_FL_COUNT: u64 = 72;
const H_SL_COUNT: u64 = 76;
const H_BUSY: u64 = 80;
const H_DIR_BUCKETS: u64 = 84;
const H_USED: u64 = 88;
const H_ALLOCS: u64 = 104;
const H_JOURNAL0: u64 = 120;
const H_JOURNAL1: u64 = 128;
const H_DIR_COUNT: u64 = 136;
const H_FL_BITMAP: u64 = 144;
const H_SL_BITMAPS: u64 = 152;
const H_FIXED_END: u64 = 152;

const HDR: u64 = BLOCK_HEADER_SIZE as u64;
const MIN_BLOCK: u64 = MIN_BLOCK_SIZE as u64;
const SL_LOG2: u32 = 4;
const SL_COUNT: u64 = 1 << SL_LOG2;
const SMALL: u64 = SL_COUNT * 16; // sizes below this have exact 16-byte classes

const F_FREE: u64 = 1;
const F_PREV_FREE: u64 = 2;
const F_INTERNAL: u64 = 4;
/// The object of a directory entry (set by `named_reserve`, cleared by `named_remove`):
/// `free` then also removes its name, `realloc` refuses it. A hint: an object without it
/// may still be named (segments older than the flag), one with it may have lost its
/// entry to a crash; `check` verifies entries against the block chain either way.
const F_NAMED: u64 = 8;
/// Bit 63 of the size word: an allocated block parked in a thread's cache of freed small
/// blocks (`cache.rs`). It lives in the word's high half, which only ever changes by a
/// compare-and-swap of that 32-bit half (the JavaScript fast path runs it without the
/// heap lock); every native update of an allocated block's low flags is an atomic
/// read-modify-write of the low half, so neither side can lose the other's bit.
const F_CACHED: u64 = 1 << 63;
const ALIGN_MASK: u64 = 0xF0;
const FLAG_MASK: u64 = 0xFF;

/// Which flag bytes (bits 0..7 of a size word) are valid: alignment field at most 8
/// (4096), free blocks carry neither INTERNAL, NAMED nor an alignment, and NAMED only
/// marks ordinary allocations.
const FLAGS_OK: [bool; 256] = {
    let mut t = [false; 256];
    let mut f = 0;
    while f < 256 {
        let w = f as u64;
        let free_ok = w & F_FREE == 0 || w & (F_INTERNAL | F_NAMED | ALIGN_MASK) == 0;
        let named_ok = w & F_NAMED == 0 || w & F_INTERNAL == 0;
        t[f] = (w & ALIGN_MASK) <= (8 << 4) && free_ok && named_ok;
        f += 1;
    }
    t
};

const CHECK_MAGIC: u64 = 0x9E37_79B9_7F4A_7C15;
const DEAD_XOR: u64 = 0xDEAD_BEEF_DEAD_BEE0;

// Free-block payload fields.
const B_NEXT: u64 = 16;
const B_PREV: u64 = 24;

// ---------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------

/// Allocator error. See [`HeapError::code`] for the stable error codes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeapError {
    /// Not enough contiguous free memory.
    NoMem,
    /// Bad argument: offset not an allocated block start, bad size/alignment/name.
    Invalid(String),
    /// The block at this offset is already free.
    DoubleFree(String),
    /// A heap invariant is broken (garbage header, list cycle, ...).
    Corrupt(String),
    /// The memory for the block could not be backed by the filesystem (`fallocate`
    /// failed with this errno, `ENOSPC` for a full `/dev/shm`); the heap is unchanged.
    NoSpace(i32),
    /// This process had no memory left for a table that grows with the heap (the
    /// checker's, a survey's): the operation stopped, and the heap is as it was or left
    /// `busy` for the next operation to finish (docs/FORMAT.md §4.3).
    ProcessMemory,
}

impl HeapError {
    /// Stable error code: `ENOMEM`, `EINVAL`, `ERR_SHM_DOUBLE_FREE`, `ERR_SHM_CORRUPT`, or
    /// the backing errno's name (`ENOSPC`).
    pub fn code(&self) -> &'static str {
        match self {
            HeapError::NoSpace(e) => errno_name(*e),
            HeapError::NoMem | HeapError::ProcessMemory => "ENOMEM",
            HeapError::Invalid(_) => "EINVAL",
            HeapError::DoubleFree(_) => "ERR_SHM_DOUBLE_FREE",
            HeapError::Corrupt(_) => "ERR_SHM_CORRUPT",
        }
    }

    /// Human-readable message.
    pub fn message(&self) -> String {
        match self {
            HeapError::NoMem => "out of shared heap memory".to_string(),
            HeapError::ProcessMemory => "this process is out of memory for a table of the \
                                         heap's blocks (check, repair, inspect)"
                .to_string(),
            HeapError::NoSpace(e) => format!(
                "no space to back the allocation with real pages ({}): the filesystem behind \
                 the segment (e.g. /dev/shm) is full",
                nix::errno::Errno::from_raw(*e).desc()
            ),
            HeapError::Invalid(m) | HeapError::DoubleFree(m) | HeapError::Corrupt(m) => m.clone(),
        }
    }
}

impl fmt::Display for HeapError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code(), self.message())
    }
}

impl std::error::Error for HeapError {}

fn errno_name(e: i32) -> &'static str {
    match nix::errno::Errno::from_raw(e) {
        nix::errno::Errno::ENOSPC => "ENOSPC",
        nix::errno::Errno::ENOMEM => "ENOMEM",
        nix::errno::Errno::EFBIG => "EFBIG",
        nix::errno::Errno::EINVAL => "EINVAL",
        nix::errno::Errno::EBADF => "EBADF",
        nix::errno::Errno::EIO => "EIO",
        _ => "ENOSPC",
    }
}

/// Internal, allocation-free error. Offsets in `BadOff`/`Double` are mapping-relative
/// (what the caller passed); in `Corrupt` heap-relative.
#[derive(Debug, Clone, Copy)]
enum Fault {
    NoMem,
    ProcessMemory,
    NoSpace(i32),
    Arg(&'static str, u64),
    BadOff(&'static str, u64),
    Double(u64),
    Corrupt(&'static str, u64),
}

type R<T> = Result<T, Fault>;

#[inline]
fn corrupt<T>(what: &'static str, at: u64) -> R<T> {
    Err(Fault::Corrupt(what, at))
}

/// `v.push(x)`, or [`Fault::ProcessMemory`] when this process has no memory left for it.
/// For the tables that grow with the heap (a 64 MiB heap of small blocks needs tens of
/// MiB of them): an infallible allocation that fails aborts the process.
fn try_push<T>(v: &mut Vec<T>, x: T) -> R<()> {
    v.try_reserve(1).map_err(|_| Fault::ProcessMemory)?;
    v.push(x);
    Ok(())
}

/// `s.insert(x)` (whether `x` was new), or [`Fault::ProcessMemory`]: as [`try_push`].
fn try_insert<T: std::hash::Hash + Eq>(s: &mut HashSet<T>, x: T) -> R<bool> {
    s.try_reserve(1).map_err(|_| Fault::ProcessMemory)?;
    Ok(s.insert(x))
}

/// One step of a list walk out of `budget` ([`HeapView::budget`]): a list with more links
/// than the arena could hold is corrupt (a cycle), `what` at `at`.
#[inline(always)]
fn spend(budget: &mut u64, what: &'static str, at: u64) -> R<()> {
    if *budget == 0 {
        return corrupt(what, at);
    }
    *budget -= 1;
    Ok(())
}

/// Heap statistics. See the module documentation for the exact meaning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeapStats {
    /// Length of the heap region in bytes (header included).
    pub size: u64,
    /// Bytes in allocated blocks, 16-byte block headers included.
    pub used: u64,
    /// Bytes in free blocks, headers included (`used + free` = heap minus its header).
    pub free: u64,
    /// Largest `malloc(n, 16)` that would succeed now (0 if none).
    pub largest_free: u64,
    /// Number of allocated blocks (directory entries included).
    pub allocations: u64,
    /// Freed blocks parked in threads' caches (`cache.rs`): counted as free above, but
    /// reusable only by the thread that cached them until it flushes (or dies and is
    /// reclaimed).
    pub cached: u64,
    /// Bytes of those blocks, headers included.
    pub cached_bytes: u64,
}

/// Where a heap's blocks are and how their check words are salted (what a fast path
/// outside this module needs to validate a block; see `cache.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeapLayout {
    /// Length of the heap region.
    pub heap_len: u64,
    /// Heap-relative offset of the first block.
    pub header_size: u64,
    /// Heap-relative end of the last block.
    pub arena_end: u64,
    /// The salt of the block check words.
    pub salt: u64,
}

/// A named-object directory entry. Offsets are mapping-relative.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamedEntry {
    /// Offset of the entry itself (pass to [`HeapView::named_state`]).
    pub entry_off: usize,
    /// Offset of the object.
    pub offset: usize,
    /// Object size as requested.
    pub size: usize,
    /// The opaque type description stored with the entry.
    pub type_desc: Vec<u8>,
    /// State word was READY when read.
    pub ready: bool,
    /// The state word as read (see [`named_constructor`]).
    pub state: u32,
    /// The entry's name.
    pub name: Vec<u8>,
}

// ---------------------------------------------------------------------------------------
// Pure helpers
// ---------------------------------------------------------------------------------------

#[inline]
fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[inline]
fn check_word(salt: u64, b: u64) -> u64 {
    let z = (b ^ salt).wrapping_mul(CHECK_MAGIC);
    (z ^ (z >> 29)) | 1
}

#[inline]
fn w_size(w: u64) -> u64 {
    ((w & !F_CACHED) >> 8) << 4
}

#[inline]
fn mk(size: u64, flags: u64) -> u64 {
    ((size >> 4) << 8) | (flags & FLAG_MASK)
}

#[inline]
fn align_bits(align: u64) -> u64 {
    (u64::from(align.trailing_zeros()).saturating_sub(4) << 4) & ALIGN_MASK
}

#[inline]
fn w_align(w: u64) -> u64 {
    1u64 << (((w >> 4) & 0xF) + 4)
}

#[inline]
fn fl_of(size: u64) -> u32 {
    if size < SMALL {
        0
    } else {
        63 - size.leading_zeros() - 7
    }
}

/// Size class of a block size (>= 16).
#[inline]
fn mapping(size: u64) -> (u32, u32) {
    if size < SMALL {
        (0, (size >> 4) as u32)
    } else {
        let l = 63 - size.leading_zeros();
        (l - 7, ((size >> (l - SL_LOG2)) & (SL_COUNT - 1)) as u32)
    }
}

/// Round a request up so that every block of the resulting class is large enough.
#[inline]
fn round_class(size: u64) -> u64 {
    if size < SMALL {
        size
    } else {
        let l = 63 - size.leading_zeros();
        size.saturating_add((1u64 << (l - SL_LOG2)) - 1)
    }
}

#[inline]
fn align_up(v: u64, a: u64) -> u64 {
    (v + a - 1) & !(a - 1)
}

fn norm_align(align: usize) -> R<u64> {
    if align == 0 || !align.is_power_of_two() || align > MAX_ALIGN {
        return Err(Fault::Arg(
            "alignment must be a power of two between 1 and 4096",
            align as u64,
        ));
    }
    Ok(align.max(MIN_ALIGN) as u64)
}

/// Geometry derived from `heap_len` alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Lay {
    fl_count: u32,
    buckets: u32,
    heads: u64,
    dir: u64,
    header_size: u64,
    arena_end: u64,
}

fn compute_layout(heap_len: u64) -> Option<Lay> {
    if heap_len > MAX_HEAP_LEN {
        return None;
    }
    let fl_count = fl_of(heap_len) + 1;
    let buckets = (heap_len / 16384).next_power_of_two().clamp(8, 1024);
    let heads = align_up(H_SL_BITMAPS + 4 * u64::from(fl_count), 8);
    let dir = heads + 8 * SL_COUNT * u64::from(fl_count);
    let header_size = align_up(dir + 8 * buckets, 16);
    let arena_end = heap_len & !15;
    if arena_end < header_size + MIN_BLOCK {
        return None;
    }
    Some(Lay {
        fl_count,
        buckets: buckets as u32,
        heads,
        dir,
        header_size,
        arena_end,
    })
}

/// Pointer to the first 48 bytes of a block inside the arena. Built only by
/// [`HeapView::bp`], which clamps the offset into `[header_size, arena_end - 48]`; that
/// invariant is what makes the accessors sound.
#[derive(Clone, Copy)]
struct BP<'a> {
    p: *mut u8,
    #[cfg_attr(not(test), allow(dead_code))]
    v: &'a HeapView,
}

impl<'a> BP<'a> {
    /// Word at byte `off` (0 = size word, 8 = check, 16 = next, 24 = prev).
    #[inline(always)]
    fn ld(self, off: u64) -> u64 {
        let off = (off.min(MIN_BLOCK - 8) & !7) as usize;
        // SAFETY: `p` points at a 16-aligned block offset in [header_size, arena_end - 48]
        // of the live heap region (BP invariant), and off <= 40 is a multiple of 8, so
        // [p + off, p + off + 8) is inside the region and 8-aligned.
        unsafe { (*(self.p.wrapping_add(off) as *const AtomicU64)).load(Ordering::Relaxed) }
    }

    #[inline(always)]
    fn st(self, off: u64, v: u64) -> R<()> {
        #[cfg(test)]
        self.v.tick()?;
        let off = (off.min(MIN_BLOCK - 8) & !7) as usize;
        // SAFETY: as in `ld`.
        unsafe { (*(self.p.wrapping_add(off) as *const AtomicU64)).store(v, Ordering::Relaxed) };
        Ok(())
    }

    /// The low half of the size word (flags and the low size bits).
    #[inline(always)]
    fn low(self) -> &'a AtomicU32 {
        // SAFETY: `p` is a 16-aligned block start inside the live heap region (BP
        // invariant), so its 4-byte half at LOW_HALF is inside the region and aligned.
        unsafe { &*(self.p.wrapping_add(LOW_HALF) as *const AtomicU32) }
    }

    /// The high half of the size word, where `F_CACHED` lives.
    #[inline(always)]
    fn high(self) -> &'a AtomicU32 {
        // SAFETY: as in `low`.
        unsafe { &*(self.p.wrapping_add(4 - LOW_HALF) as *const AtomicU32) }
    }

    /// Sets (`on`) or clears flag bits (of the low byte) of the size word with one atomic
    /// read-modify-write of its low half: the way every flag of an allocated block is
    /// changed, since a thread without the heap lock may be swapping `F_CACHED` in the
    /// high half at the same moment.
    #[inline(always)]
    fn update_low(self, flags: u64, on: bool) -> R<()> {
        #[cfg(test)]
        self.v.tick()?;
        let bits = (flags & FLAG_MASK) as u32;
        // Relaxed: like every metadata store; the heap lock orders it for lock holders,
        // and the cache's compare-and-swap touches the other half.
        if on {
            self.low().fetch_or(bits, Ordering::Relaxed);
        } else {
            self.low().fetch_and(!bits, Ordering::Relaxed);
        }
        Ok(())
    }
}

/// Byte offset of the low half of a u64 in memory (little-endian targets: 0).
const LOW_HALF: usize = if cfg!(target_endian = "little") { 0 } else { 4 };

// ---------------------------------------------------------------------------------------
// The view
// ---------------------------------------------------------------------------------------

/// Process-local view of a heap region inside a mapping. Cheap; holds no shared state.
pub struct HeapView {
    base: *mut u8,
    mapping_len: usize,
    heap_off: usize,
    heap_len: usize,
    lay: Lay,
    /// `base + heap_off`.
    hb: *mut u8,
    /// `heap_len - 8`: the last valid offset of an 8-byte field.
    max8: u64,
    /// The mapping, when the heap lives in one that must be backed with real pages
    /// before memory is handed out (see [`HeapView::with_region`]).
    region: Option<Arc<Region>>,
    /// Test-only crash injection: 0 = off; n > 1 = stores left before the simulated
    /// death; u64::MAX = dead (every store fails without writing).
    #[cfg(test)]
    crash_at: AtomicU64,
}

// SAFETY: the view is an address range plus constants; the pointed-to mapping stays
// valid for the view's lifetime by `new`'s contract regardless of which thread uses it.
// All metadata accesses are atomic; mutual exclusion between users of one heap (threads
// or processes) is the caller's heap lock, exactly as between processes.
unsafe impl Send for HeapView {}
// SAFETY: as above; `&self` methods only touch shared memory through atomics (metadata)
// or byte copies of blocks that the caller owns under the heap lock.
unsafe impl Sync for HeapView {}

impl fmt::Debug for HeapView {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HeapView")
            .field("base", &self.base)
            .field("mapping_len", &self.mapping_len)
            .field("heap_off", &self.heap_off)
            .field("heap_len", &self.heap_len)
            .finish()
    }
}

impl HeapView {
    /// Create a view of the heap region `[heap_off, heap_off + heap_len)` of the mapping
    /// at `base`. Does not read the region. `heap_off` and `base` must be 16-aligned;
    /// `heap_len` must leave room for the header plus one block and be at most 2^46.
    ///
    /// # Safety
    /// `base..base + mapping_len` is a live, readable and writable mapping for the whole
    /// lifetime of the returned view.
    pub unsafe fn new(
        base: *mut u8,
        mapping_len: usize,
        heap_off: usize,
        heap_len: usize,
    ) -> Result<HeapView, HeapError> {
        if base.is_null() {
            return Err(HeapError::Invalid("heap base pointer is null".into()));
        }
        if (base as usize) & 15 != 0 || heap_off & 15 != 0 {
            return Err(HeapError::Invalid(format!(
                "heap offset {heap_off} (and the mapping base) must be 16-byte aligned"
            )));
        }
        if (base as usize).checked_add(mapping_len).is_none() {
            return Err(HeapError::Invalid(
                "mapping length overflows the address space".into(),
            ));
        }
        match heap_off.checked_add(heap_len) {
            Some(end) if end <= mapping_len => {}
            _ => {
                return Err(HeapError::Invalid(format!(
                    "heap [{heap_off}, {heap_off}+{heap_len}) does not fit in a mapping of {mapping_len} bytes"
                )));
            }
        }
        let lay = compute_layout(heap_len as u64).ok_or_else(|| {
            HeapError::Invalid(format!(
                "heap size {heap_len} is out of range (minimum {}, maximum {MAX_HEAP_LEN})",
                min_heap_len()
            ))
        })?;
        Ok(HeapView {
            base,
            mapping_len,
            heap_off,
            heap_len,
            lay,
            hb: base.wrapping_add(heap_off),
            max8: heap_len as u64 - 8,
            region: None,
            #[cfg(test)]
            crash_at: AtomicU64::new(0),
        })
    }

    /// Create a view of an existing (formatted) heap at `heap_off`, reading its length
    /// from the header, then run [`validate_header`](Self::validate_header).
    ///
    /// # Safety
    /// Same as [`new`](Self::new).
    pub unsafe fn attach(
        base: *mut u8,
        mapping_len: usize,
        heap_off: usize,
    ) -> Result<HeapView, HeapError> {
        let need = heap_off.checked_add(H_SL_BITMAPS as usize);
        if base.is_null()
            || (base as usize) & 15 != 0
            || heap_off & 15 != 0
            || need.is_none_or(|n| n > mapping_len)
        {
            return Err(HeapError::Invalid(format!(
                "no room for a heap header at offset {heap_off} in a mapping of {mapping_len} bytes"
            )));
        }
        let rd = |rel: usize| {
            let p = base.wrapping_add(heap_off + rel) as *const AtomicU64;
            // SAFETY: heap_off + rel + 8 <= heap_off + 152 <= mapping_len (checked above),
            // the address is 8-aligned (base and heap_off 16-aligned, rel multiple of 8)
            // and the mapping is live by the caller's contract.
            unsafe { (*p).load(Ordering::Relaxed) }
        };
        if rd(H_MAGIC as usize) != HEAP_MAGIC {
            return Err(HeapError::Corrupt(format!(
                "no heap at offset {heap_off}: bad magic"
            )));
        }
        let len = rd(H_HEAP_LEN as usize);
        let len = usize::try_from(len)
            .map_err(|_| HeapError::Corrupt(format!("heap header has impossible length {len}")))?;
        // SAFETY: forwarded caller contract.
        let v = unsafe { HeapView::new(base, mapping_len, heap_off, len) }
            .map_err(|e| HeapError::Corrupt(format!("heap header is invalid: {}", e.message())))?;
        v.validate_header()?;
        Ok(v)
    }

    /// The same view, backing memory in `region` (the mapping it lives in) with real
    /// pages before handing it out: an allocation on a full filesystem then fails with
    /// `ENOSPC` instead of faulting on first touch.
    ///
    /// Invariant that makes every allocator write land on backed memory: the first 32
    /// bytes of every block (header and free-list links) and the last 8 of every free
    /// block (its footer) are backed, and so is every allocated block entirely. Formatting
    /// backs the header and the single block's ends; `carve` and in-place `realloc` back
    /// the block they hand out plus the header of the remainder they split off; `free`
    /// and the repair only write into headers and footers that already exist.
    pub fn with_region(mut self, region: Arc<Region>) -> HeapView {
        self.region = Some(region);
        self
    }

    /// Backs heap-relative `[lo, hi)` (clamped to the arena) if the heap has a region.
    #[inline(always)]
    fn back(&self, lo: u64, hi: u64) -> R<()> {
        let Some(r) = &self.region else {
            return Ok(());
        };
        let hi = hi.min(self.lay.arena_end);
        let off = self.heap_off as u64;
        r.ensure_backed(off + lo, hi.saturating_sub(lo))
            .map_err(|e| Fault::NoSpace(e.errno.unwrap_or(libc::ENOSPC)))
    }

    /// The heap's geometry and salt, read from its header (magic checked).
    ///
    /// # Errors
    /// `Corrupt` when the header no longer says it is a heap.
    pub fn layout(&self) -> Result<HeapLayout, HeapError> {
        self.read_op(|salt| {
            Ok(HeapLayout {
                heap_len: self.heap_len as u64,
                header_size: self.lay.header_size,
                arena_end: self.lay.arena_end,
                salt,
            })
        })
    }

    /// Mapping-relative offset of the heap region.
    pub fn heap_off(&self) -> usize {
        self.heap_off
    }

    /// Length of the heap region.
    pub fn heap_len(&self) -> usize {
        self.heap_len
    }

    /// The caller's lock word: `base + heap_off + HEAP_LOCK_OFFSET`.
    pub fn lock_word(&self) -> *const AtomicU32 {
        self.base.wrapping_add(self.heap_off + HEAP_LOCK_OFFSET) as *const AtomicU32
    }

    // ---- raw access (every access to the region goes through these) --------------------

    #[inline(always)]
    fn at(&self, rel: u64) -> *mut u8 {
        self.hb.wrapping_add(rel as usize)
    }

    // Metadata accessors. Every offset that comes from shared memory is validated by the
    // caller (`block`, `entry`, explicit range checks) before it reaches these; as a
    // last line of defence they clamp the offset into the heap region (past the lock
    // record) and align it down, so that no input can ever make them touch memory outside
    // the region. A debug assertion flags any access that needed clamping (a missing
    // validation) in tests.

    #[inline(always)]
    fn clamp8(&self, rel: u64) -> u64 {
        debug_assert!(
            rel >= LOCK_LEN && rel & 7 == 0 && rel <= self.max8,
            "unvalidated offset {rel}"
        );
        rel.min(self.max8).max(LOCK_LEN) & !7
    }

    #[inline(always)]
    fn clamp4(&self, rel: u64) -> u64 {
        debug_assert!(
            rel >= LOCK_LEN && rel & 3 == 0 && rel <= self.max8 + 4,
            "unvalidated offset {rel}"
        );
        rel.min(self.max8 + 4).max(LOCK_LEN) & !3
    }

    #[inline(always)]
    fn ld(&self, rel: u64) -> R<u64> {
        let p = self.hb.wrapping_add(self.clamp8(rel) as usize) as *const AtomicU64;
        // SAFETY: after clamping, [rel, rel+8) lies inside the heap region past the lock
        // record (max8 = heap_len - 8), which is inside the live mapping (`new`'s
        // contract); 8-aligned because the region start is 16-aligned and rel is a
        // multiple of 8. Shared memory is only ever accessed atomically here.
        Ok(unsafe { (*p).load(Ordering::Relaxed) })
    }

    #[inline(always)]
    fn st(&self, rel: u64, v: u64) -> R<()> {
        #[cfg(test)]
        self.tick()?;
        let p = self.hb.wrapping_add(self.clamp8(rel) as usize) as *const AtomicU64;
        // SAFETY: as in `ld`.
        unsafe { (*p).store(v, Ordering::Relaxed) };
        Ok(())
    }

    // Fixed header fields (constant offsets in [32, 152), always inside the region
    // because compute_layout guarantees header_size >= 152): the clamp constant-folds.

    #[inline(always)]
    fn hptr(&self, rel: u64, size: u64) -> *mut u8 {
        self.hb
            .wrapping_add((rel.min(H_FIXED_END - size).max(LOCK_LEN) & !(size - 1)) as usize)
    }

    #[inline(always)]
    fn hld(&self, rel: u64) -> R<u64> {
        let p = self.hptr(rel, 8) as *const AtomicU64;
        // SAFETY: [p, p+8) lies in [32, 152) of the heap region, inside the live mapping
        // (`new`'s contract, heap_len >= header_size >= 152); 8-aligned.
        Ok(unsafe { (*p).load(Ordering::Relaxed) })
    }

    #[inline(always)]
    fn hst(&self, rel: u64, v: u64) -> R<()> {
        #[cfg(test)]
        self.tick()?;
        let p = self.hptr(rel, 8) as *const AtomicU64;
        // SAFETY: as in `hld`.
        unsafe { (*p).store(v, Ordering::Relaxed) };
        Ok(())
    }

    #[inline(always)]
    fn hld32(&self, rel: u64) -> R<u32> {
        let p = self.hptr(rel, 4) as *const AtomicU32;
        // SAFETY: [p, p+4) lies in [32, 152) of the heap region; 4-aligned. See `hld`.
        Ok(unsafe { (*p).load(Ordering::Relaxed) })
    }

    #[inline(always)]
    fn hst32(&self, rel: u64, v: u32) -> R<()> {
        #[cfg(test)]
        self.tick()?;
        let p = self.hptr(rel, 4) as *const AtomicU32;
        // SAFETY: as in `hld32`.
        unsafe { (*p).store(v, Ordering::Relaxed) };
        Ok(())
    }

    #[inline(always)]
    fn ld32(&self, rel: u64) -> R<u32> {
        let p = self.hb.wrapping_add(self.clamp4(rel) as usize) as *const AtomicU32;
        // SAFETY: after clamping, [rel, rel+4) lies inside the heap region (max8 + 4 =
        // heap_len - 4) and is 4-aligned; see `ld`.
        Ok(unsafe { (*p).load(Ordering::Relaxed) })
    }

    #[inline(always)]
    fn st32(&self, rel: u64, v: u32) -> R<()> {
        #[cfg(test)]
        self.tick()?;
        let p = self.hb.wrapping_add(self.clamp4(rel) as usize) as *const AtomicU32;
        // SAFETY: as in `ld32`.
        unsafe { (*p).store(v, Ordering::Relaxed) };
        Ok(())
    }

    #[inline]
    fn range_ok(&self, rel: u64, len: u64) -> bool {
        rel >= LOCK_LEN
            && rel
                .checked_add(len)
                .is_some_and(|e| e <= self.heap_len as u64)
    }

    fn read_bytes(&self, rel: u64, len: u64) -> R<Vec<u8>> {
        if !self.range_ok(rel, len) {
            return corrupt("byte range out of heap", rel);
        }
        let mut v = vec![0u8; len as usize];
        // SAFETY: source range inside the live heap region (checked); destination is a
        // fresh Vec of exactly `len` bytes; they cannot overlap.
        unsafe { std::ptr::copy_nonoverlapping(self.at(rel), v.as_mut_ptr(), len as usize) };
        Ok(v)
    }

    fn write_bytes(&self, rel: u64, data: &[u8]) -> R<()> {
        if !self.range_ok(rel, data.len() as u64) {
            return corrupt("byte range out of heap", rel);
        }
        // SAFETY: destination range inside the live heap region (checked); `data` is a
        // process-local slice, so the ranges cannot overlap.
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), self.at(rel), data.len()) };
        Ok(())
    }

    fn zero(&self, rel: u64, len: u64) -> R<()> {
        if !self.range_ok(rel, len) {
            return corrupt("byte range out of heap", rel);
        }
        // SAFETY: range inside the live heap region (checked).
        unsafe { std::ptr::write_bytes(self.at(rel), 0, len as usize) };
        Ok(())
    }

    fn copy(&self, src: u64, dst: u64, len: u64) -> R<()> {
        let disjoint = src.checked_add(len).is_some_and(|e| e <= dst)
            || dst.checked_add(len).is_some_and(|e| e <= src);
        if !self.range_ok(src, len) || !self.range_ok(dst, len) || !disjoint {
            return corrupt("bad copy range", src);
        }
        // SAFETY: both ranges inside the live heap region and disjoint (checked).
        unsafe { std::ptr::copy_nonoverlapping(self.at(src), self.at(dst), len as usize) };
        Ok(())
    }

    #[inline(always)]
    fn commit(&self) {
        // Keep the compiler from moving stores across a crash-consistency commit point.
        compiler_fence(Ordering::SeqCst);
    }

    #[cfg(test)]
    fn tick(&self) -> R<()> {
        let n = self.crash_at.load(Ordering::Relaxed);
        if n == 0 {
            return Ok(());
        }
        if n == u64::MAX || n == 1 {
            self.crash_at.store(u64::MAX, Ordering::Relaxed);
            return corrupt("simulated crash", 0);
        }
        self.crash_at.store(n - 1, Ordering::Relaxed);
        Ok(())
    }

    // ---- errors ------------------------------------------------------------------------

    fn err(&self, f: Fault) -> HeapError {
        match f {
            Fault::NoMem => HeapError::NoMem,
            Fault::ProcessMemory => HeapError::ProcessMemory,
            Fault::NoSpace(e) => HeapError::NoSpace(e),
            Fault::Arg(m, v) => HeapError::Invalid(format!("{m} (got {v})")),
            Fault::BadOff(m, off) => HeapError::Invalid(format!("{m}: offset {off}")),
            Fault::Double(off) => HeapError::DoubleFree(format!(
                "double free: the block at offset {off} is already free"
            )),
            Fault::Corrupt(m, rel) => HeapError::Corrupt(format!(
                "heap corrupt: {m} (at offset {})",
                (self.heap_off as u64).wrapping_add(rel)
            )),
        }
    }

    // ---- header ------------------------------------------------------------------------

    fn slb(&self, fl: u32) -> u64 {
        H_SL_BITMAPS + 4 * u64::from(fl)
    }

    fn head_at(&self, fl: u32, sl: u32) -> u64 {
        self.lay.heads + 8 * (u64::from(fl) * SL_COUNT + u64::from(sl))
    }

    fn arena(&self) -> u64 {
        self.lay.arena_end - self.lay.header_size
    }

    /// Write a fresh heap: header, empty directory, one free block spanning the arena.
    /// Overwrites whatever was there (except the lock record).
    pub fn format(&self) -> Result<(), HeapError> {
        self.format_inner().map_err(|f| self.err(f))
    }

    fn format_inner(&self) -> R<()> {
        let l = self.lay;
        self.hst(H_MAGIC, 0)?;
        self.commit();
        let mut o = H_MAGIC + 8;
        while o < l.header_size {
            self.st(o, 0)?;
            o += 8;
        }
        let salt = fresh_salt(self.base as u64 ^ self.heap_off as u64);
        self.hst32(H_VERSION, HEAP_VERSION)?;
        self.hst32(H_HEADER_SIZE, l.header_size as u32)?;
        self.hst(H_HEAP_LEN, self.heap_len as u64)?;
        self.hst(H_ARENA_END, l.arena_end)?;
        self.hst(H_SALT, salt)?;
        self.hst32(H_FL_COUNT, l.fl_count)?;
        self.hst32(H_SL_COUNT, SL_COUNT as u32)?;
        self.hst32(H_DIR_BUCKETS, l.buckets)?;
        let b = l.header_size;
        let size = self.arena();
        self.st(b + 8, check_word(salt, b))?;
        self.st(b, mk(size, F_FREE))?;
        self.st(b + size - 8, size)?;
        self.insert_free(salt, b, size)?;
        self.commit();
        self.hst(H_MAGIC, HEAP_MAGIC)?;
        self.commit();
        Ok(())
    }

    /// Check the header written by `format` against this view (magic, version, geometry).
    pub fn validate_header(&self) -> Result<(), HeapError> {
        self.validate_header_inner().map_err(|f| self.err(f))
    }

    fn validate_header_inner(&self) -> R<()> {
        let l = self.lay;
        if self.hld(H_MAGIC)? != HEAP_MAGIC {
            return corrupt("bad heap magic (not a formatted heap)", H_MAGIC);
        }
        if self.hld32(H_VERSION)? != HEAP_VERSION {
            return corrupt("unsupported heap version", H_VERSION);
        }
        if self.hld(H_HEAP_LEN)? != self.heap_len as u64 {
            return corrupt("heap length in header differs from the view", H_HEAP_LEN);
        }
        if u64::from(self.hld32(H_HEADER_SIZE)?) != l.header_size
            || self.hld(H_ARENA_END)? != l.arena_end
            || self.hld32(H_FL_COUNT)? != l.fl_count
            || u64::from(self.hld32(H_SL_COUNT)?) != SL_COUNT
            || self.hld32(H_DIR_BUCKETS)? != l.buckets
        {
            return corrupt(
                "heap geometry fields do not match the heap length",
                H_HEADER_SIZE,
            );
        }
        Ok(())
    }

    /// Cheap per-operation header check; returns the salt.
    #[inline]
    fn salt(&self) -> R<u64> {
        if self.hld(H_MAGIC)? != HEAP_MAGIC {
            return corrupt("bad heap magic (not a formatted heap)", H_MAGIC);
        }
        self.hld(H_SALT)
    }

    /// Run a read-only operation: never writes to the region.
    #[inline]
    fn read_op<T>(&self, f: impl FnOnce(u64) -> R<T>) -> Result<T, HeapError> {
        self.salt().and_then(f).map_err(|e| self.err(e))
    }

    /// Run an operation that only reads the heap but answers users (`stats`, directory
    /// lookups), with the heap lock held: a heap left `busy` (a holder died
    /// mid-operation, or a peer found it so, docs/FORMAT.md §4.3) cannot be trusted, so
    /// it is rebuilt first, and `busy` cleared.
    #[inline]
    fn repaired_read_op<T>(&self, f: impl FnOnce(u64) -> R<T>) -> Result<T, HeapError> {
        self.read_op(|salt| {
            if self.hld32(H_BUSY)? != 0 {
                self.rebuild_interrupted(salt)?;
                self.commit();
                self.hst32(H_BUSY, 0)?;
            }
            f(salt)
        })
    }

    /// Rebuilds the heap an interrupted operation left `busy` (which stays set). Out of
    /// line: the operations test `busy` themselves, one load on their fast path.
    #[cold]
    fn rebuild_interrupted(&self, salt: u64) -> R<()> {
        self.rebuild_inner(salt)?;
        crate::trace::emit(crate::trace::Event::HeapRepaired {
            address: self.hb as usize,
            reason: crate::trace::RepairReason::Interrupted,
        });
        Ok(())
    }

    /// Run a heap-mutating operation: recover an interrupted one first, mark busy, run,
    /// clear busy. On `Corrupt`, busy stays set so that the next operation rebuilds.
    #[inline]
    fn op<T>(&self, f: impl FnOnce(u64) -> R<T>) -> Result<T, HeapError> {
        let r = self.salt().and_then(|salt| {
            if self.hld32(H_BUSY)? != 0 {
                self.rebuild_interrupted(salt)?;
            }
            self.hst32(H_BUSY, 1)?;
            self.commit();
            let r = f(salt);
            if !matches!(r, Err(Fault::Corrupt(..))) {
                self.commit();
                self.hst32(H_BUSY, 0)?;
            }
            r
        });
        r.map_err(|e| self.err(e))
    }

    #[inline(always)]
    fn add(&self, field: u64, d: u64) -> R<()> {
        let v = self.hld(field)?;
        self.hst(field, v.wrapping_add(d))
    }

    #[inline(always)]
    fn sub(&self, field: u64, d: u64) -> R<()> {
        let v = self.hld(field)?;
        self.hst(field, v.wrapping_sub(d))
    }

    /// Upper bound on list walk steps: more than the arena could hold blocks.
    fn budget(&self) -> R<u64> {
        Ok(self.arena() / MIN_BLOCK + 1)
    }
}

/// Smallest heap length accepted by [`HeapView::new`].
pub fn min_heap_len() -> usize {
    let mut n = 64u64;
    while compute_layout(n).is_none() {
        n += 16;
    }
    n as usize
}

/// Formats a fresh heap in `[off, off + len)` of `region`.
///
/// # Errors
/// The heap's validation errors (region too small, misaligned).
pub(crate) fn format_heap(region: &Arc<Region>, off: u64, len: u64) -> crate::error::Result<()> {
    region.check_writable()?;
    // SAFETY: the region is live (its owner holds it) for the duration of this call;
    // HeapView::new bounds-checks `off`/`len` against the mapping length.
    let view = unsafe {
        HeapView::new(
            region.addr() as *mut u8,
            region.len(),
            off as usize,
            len as usize,
        )
    }?;
    // Back what formatting writes: the header with the first block's header, and the
    // last 8 bytes (the single free block's footer). Every later write of the allocator
    // lands in memory it backed before (see `HeapView::back`).
    let l = view.lay;
    region.ensure_backed_pages(off, l.header_size + MIN_BLOCK)?;
    region.ensure_backed_pages(off + l.arena_end - 8, 8)?;
    view.format()?;
    region.check_intact()?;
    // SAFETY: lock_word() points at the 32-byte, 8-aligned lock record at the start of
    // the heap region, inside the live mapping (bounds-checked by HeapView::new).
    let lock = unsafe { &*(view.lock_word() as *const crate::sync::lock::LockRecord) };
    lock.kind.store(crate::sync::kind::LOCK, Ordering::Relaxed);
    Ok(())
}

fn fresh_salt(extra: u64) -> u64 {
    static CTR: AtomicU64 = AtomicU64::new(0);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let c = CTR.fetch_add(1, Ordering::Relaxed);
    mix64(t ^ mix64(u64::from(std::process::id()) ^ mix64(c ^ mix64(extra))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::heap::testing::*;

    #[test]
    fn format_and_initial_stats() {
        let t = T::new(1 << 20);
        let s = t.h.stats().unwrap();
        assert_eq!(s.size, 1 << 20);
        assert_eq!(s.used, 0);
        assert_eq!(s.allocations, 0);
        assert_eq!(s.free, (1 << 20) - t.h.lay.header_size);
        assert_eq!(s.largest_free, s.free - 16);
        assert!(t.guards_ok());
        assert_eq!(t.h.lock_word() as usize, t.mem.ptr as usize + GUARD);
    }

    #[test]
    fn bad_view_arguments() {
        let mem = Mem::new(1 << 16);
        // SAFETY: mem lives for the whole test.
        unsafe {
            assert!(HeapView::new(std::ptr::null_mut(), 1 << 16, 0, 4096).is_err());
            assert!(HeapView::new(mem.ptr, 1 << 16, 8, 4096).is_err());
            assert!(HeapView::new(mem.ptr, 1 << 16, 0, (1 << 16) + 16).is_err());
            assert!(HeapView::new(mem.ptr, 1 << 16, usize::MAX - 15, 4096).is_err());
            assert!(HeapView::new(mem.ptr, 1 << 16, 0, 100).is_err());
            assert!(HeapView::new(mem.ptr, 1 << 16, 0, min_heap_len() - 16).is_err());
            let h = HeapView::new(mem.ptr, 1 << 16, 0, min_heap_len()).unwrap();
            assert_eq!(code(h.malloc(1, 1)), "ERR_SHM_CORRUPT"); // not formatted
            assert_eq!(code(h.validate_header()), "ERR_SHM_CORRUPT");
            h.format().unwrap();
            h.check().unwrap();
            let o = h.malloc(1, 1).unwrap();
            assert_eq!(code(h.malloc(1, 1)), "ENOMEM");
            h.free(o).unwrap();
            assert!(HeapView::attach(mem.ptr, 1 << 16, 16).is_err());
            let h2 = HeapView::attach(mem.ptr, 1 << 16, 0).unwrap();
            assert_eq!(h2.heap_len(), min_heap_len());
            // a view with the wrong length is refused
            let h3 = HeapView::new(mem.ptr, 1 << 16, 0, 8192).unwrap();
            assert_eq!(code(h3.validate_header()), "ERR_SHM_CORRUPT");
            assert_eq!(code(h3.malloc(1, 1)), "ERR_SHM_CORRUPT");
        }
    }

    #[test]
    fn small_heaps() {
        for len in [min_heap_len(), 1024, 4096, 4096 + 8, 65536 + 48] {
            let (t, s0) = T::with_stats(len);
            let mut v = Vec::new();
            while let Ok(o) = t.h.malloc(20, 16) {
                v.push(o);
            }
            assert!(!v.is_empty());
            t.h.check().unwrap();
            for o in v {
                t.h.free(o).unwrap();
            }
            assert_eq!(t.h.stats().unwrap(), s0);
            assert!(t.guards_ok());
        }
    }

    /// Random operations on a (possibly corrupted) heap; returns how many mallocs and
    /// frees succeeded.
    fn hammer(t: &T, rng: &mut Rng) -> (u32, u32) {
        let (mut mallocs, mut frees) = (0, 0);
        let mut offs = Vec::new();
        for _ in 0..300 {
            let r = rng.below(12);
            let off = match rng.below(3) {
                0 => rng.next() as usize,
                1 => GUARD + (rng.below(t.len as u64) as usize & !15),
                _ => offs
                    .get(rng.below(offs.len() as u64 + 1) as usize)
                    .copied()
                    .unwrap_or(GUARD),
            };
            match r {
                0 | 1 => {
                    if let Ok(o) = t.h.malloc(rng.below(5000) as usize, 1 << rng.below(13)) {
                        mallocs += 1;
                        assert!(o >= GUARD && o < GUARD + t.len);
                        offs.push(o);
                    }
                }
                2 => {
                    if t.h.free(off).is_ok() {
                        frees += 1;
                    }
                }
                3 => {
                    let _ = t.h.realloc(off, rng.below(5000) as usize);
                }
                4 => {
                    let _ = t.h.check();
                    let _ = t.h.stats();
                    let _ = t.h.reclaim_cached(|o| o.token == 3);
                }
                5 => {
                    let _ = t.h.rebuild();
                }
                6 => {
                    let _ = t.h.named_reserve(
                        format!("n{}", rng.below(8)).as_bytes(),
                        64,
                        16,
                        b"t",
                        0,
                        None,
                    );
                }
                7 => {
                    let _ = t.h.named_find(format!("n{}", rng.below(8)).as_bytes());
                    let _ = t.h.named_list();
                }
                8 => {
                    let _ = t.h.named_remove(format!("n{}", rng.below(8)).as_bytes());
                }
                9 => {
                    let _ = t.h.named_state(off);
                    let _ = t.h.usable_size(off);
                    let token = rng.below(4) as u32;
                    let _ = t.h.cache_put(off, cache::CacheOwner { token, start: 0 });
                }
                10 => {
                    let _ = t.h.validate_header();
                }
                _ => {
                    // more garbage
                    let p = 32 + rng.below(t.len as u64 - 40) as usize;
                    t.mem.write(GUARD + p, &rng.next().to_le_bytes());
                }
            }
        }
        (mallocs, frees)
    }

    #[test]
    fn garbage_never_panics() {
        let mut rng = Rng(0xDEAD_BEEF_1234);
        let (mut ok_mallocs, mut ok_frees) = ([0u32; 5], [0u32; 5]);
        let rounds = std::env::var("HEAP_FUZZ_ROUNDS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(if cfg!(debug_assertions) { 60 } else { 300 });
        for round in 0..rounds {
            let len = [4096usize, 65536, 1 << 20][round % 3];
            let t = T::new(len);
            // a populated heap first
            let mut v = Vec::new();
            for i in 0..50 {
                if let Ok(o) = t.h.malloc(1 + rng.below(3000) as usize, 16) {
                    v.push(o);
                }
                if i % 7 == 0 {
                    let _ =
                        t.h.named_reserve(format!("n{i}").as_bytes(), 32, 16, b"x", 0, None);
                }
            }
            for o in v.iter().step_by(3) {
                let _ = t.h.free(*o);
            }
            match round % 5 {
                0 => {
                    // total garbage except the lock record
                    let junk: Vec<u8> = (0..len - 32).map(|_| rng.next() as u8).collect();
                    t.mem.write(GUARD + 32, &junk);
                }
                1 => {
                    // garbage bitmaps, list heads, directory and arena behind a valid
                    // fixed header, so operations get past the header checks
                    let fixed = H_FIXED_END as usize;
                    let junk: Vec<u8> = (0..len - fixed).map(|_| rng.next() as u8).collect();
                    t.mem.write(GUARD + fixed, &junk);
                }
                2 => {
                    // sprinkle random words over a live heap
                    for _ in 0..(1 + rng.below(20)) {
                        let p = 72 + (rng.below(len as u64 - 80) as usize & !7);
                        let val = match rng.below(4) {
                            0 => rng.next(),
                            1 => rng.below(len as u64),
                            2 => rng.below(len as u64) & !15,
                            _ => 0,
                        };
                        t.mem.write(GUARD + p, &val.to_le_bytes());
                    }
                }
                3 => {
                    // sprinkle small values in the header only (heads, bitmaps, counters)
                    for _ in 0..(1 + rng.below(10)) {
                        let hs = t.h.lay.header_size as usize;
                        let p = 72 + (rng.below(hs as u64 - 72) as usize & !7);
                        let val = rng.below(len as u64) & !15;
                        t.mem.write(GUARD + p, &val.to_le_bytes());
                    }
                }
                _ => {
                    // structured corruption: plausible values in block headers, links,
                    // footers and directory fields (other block offsets, sizes, flags)
                    let mut blocks = Vec::new();
                    let mut b = t.h.lay.header_size;
                    while b < t.h.lay.arena_end && blocks.len() < 10_000 {
                        let w = t.h.ld(b).unwrap();
                        blocks.push((b, w_size(w)));
                        if w_size(w) == 0 {
                            break;
                        }
                        b += w_size(w);
                    }
                    for _ in 0..(1 + rng.below(4)) {
                        let (b, size) = blocks[rng.below(blocks.len() as u64) as usize];
                        let (ob, osize) = blocks[rng.below(blocks.len() as u64) as usize];
                        let field = match rng.below(6) {
                            0 => 0,
                            1 => 8,
                            2 => 16,
                            3 => 24,
                            4 => size.max(16) - 8,
                            _ => 16 + 8 * rng.below(6),
                        };
                        let val = match rng.below(9) {
                            0 => ob,
                            1 => ob + 16,
                            2 => ob + osize,
                            3 => osize,
                            4 => mk(osize, rng.below(256)),
                            5 => mk(16 * rng.below(8), rng.below(4)),
                            6 => b,
                            7 => check_word(t.h.ld(H_SALT).unwrap(), ob),
                            _ => 0,
                        };
                        let at = (b + field).min(t.h.lay.arena_end - 8);
                        t.mem.write(GUARD + at as usize, &val.to_le_bytes());
                    }
                }
            }
            let (m, f) = hammer(&t, &mut rng);
            ok_mallocs[round % 5] += m;
            ok_frees[round % 5] += f;
            assert!(t.guards_ok(), "wrote outside the heap in round {round}");
        }
        // The corrupted heaps must still be exercised deeply (self-repair lets later
        // operations succeed), not just rejected at the magic check.
        eprintln!("successful mallocs/frees per corruption kind: {ok_mallocs:?} / {ok_frees:?}");
        assert!(ok_mallocs[2..].iter().all(|&m| m > 0), "{ok_mallocs:?}");
    }

    #[test]
    fn error_codes_and_messages() {
        assert_eq!(HeapError::NoMem.code(), "ENOMEM");
        assert_eq!(HeapError::Invalid("x".into()).code(), "EINVAL");
        assert_eq!(
            HeapError::DoubleFree("x".into()).code(),
            "ERR_SHM_DOUBLE_FREE"
        );
        assert_eq!(HeapError::Corrupt("x".into()).code(), "ERR_SHM_CORRUPT");
        let t = T::new(1 << 16);
        let a = t.h.malloc(10, 16).unwrap();
        t.h.free(a).unwrap();
        let e = t.h.free(a).unwrap_err();
        assert!(e.message().contains(&a.to_string()), "{e}");
        assert!(e.to_string().starts_with("ERR_SHM_DOUBLE_FREE"));
    }
}
