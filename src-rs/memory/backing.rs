//! Backing a mapping with real pages before memory is handed out.
//!
//! A tmpfs object (every POSIX shm segment on Linux) is sparse: `ftruncate` sets its size
//! but gives it no pages, and the first touch of a page allocates one. On a full
//! filesystem (Docker's 64 MiB `/dev/shm`, a pod's `emptyDir` limit) that first touch
//! cannot fail politely: the kernel sends `SIGBUS`. Whoever hands memory out therefore
//! backs it first with `fallocate`, which answers `ENOSPC` instead:
//!
//! - the heap backs every block (and the split-off block header after it) before
//!   returning it, in steps of [`chunk_for`] the mapping's size (1/16 of it, between
//!   64 KiB and 2 MiB) so that a growing heap pays one `fallocate` per step, not one per
//!   allocation, and a small segment on a small filesystem is not backed far ahead;
//! - `create({ reserve: true })` / `prefault` back the whole segment, `mem.reserve()` any
//!   range.
//!
//! What is known backed is kept as a prefix `[0, prefix)` of the mapping plus a short list
//! of ranges beyond it (a heap placed far into a large segment, an explicit reserve).
//! Managed segments mirror the prefix in the header's `backed` field (offset 88,
//! docs/FORMAT.md), raised with `fetch_max` after the `fallocate` succeeded, so every
//! process learns what any process backed without a syscall. The value read from the
//! header is untrusted: it is clamped to the mapping, and a lie costs at most a fault that
//! the SIGBUS guard (`sys/linux/sigbus.rs`) repairs and reports, never a crash.

use crate::error::{Result, ShmError};
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;

/// The largest step heap growth backs at a time.
pub const CHUNK: u64 = 2 << 20;

/// The step heap growth backs at a time in a mapping of `len` bytes: 1/16 of it,
/// between 64 KiB and [`CHUNK`], a multiple of the page size.
pub fn chunk_for(len: u64) -> u64 {
    let page = super::mapping::page_size() as u64;
    (len / 16).clamp(64 << 10, CHUNK) / page * page
}
/// Largest single `fallocate` call: a signal interrupting a call gives back what that
/// call allocated, so big ranges go in pieces and progress is kept.
const PIECE: u64 = 64 << 20;

/// What is known backed of one mapping (see the module docs).
#[derive(Debug, Default)]
pub struct Backing {
    /// `[0, prefix)` of the mapping is backed (monotonic).
    prefix: AtomicU64,
    /// Offset in the mapping of the header word mirroring the prefix, 0 = none.
    header_word: AtomicUsize,
    /// Backed ranges beyond the prefix, sorted and disjoint. Its lock also serialises
    /// this process's `fallocate` calls for the mapping.
    ranges: Mutex<Vec<(u64, u64)>>,
}

/// Where the file behind a mapping is, for [`Backing::ensure`].
#[derive(Debug, Clone, Copy)]
pub struct File {
    /// Its descriptor.
    pub fd: RawFd,
    /// The file offset mapped at the mapping's first byte.
    pub offset: u64,
    /// The mapping's first byte.
    pub addr: usize,
    /// The mapping's length.
    pub len: u64,
}

impl Backing {
    /// A mapping nothing of which is known backed.
    pub const fn new() -> Backing {
        Backing {
            prefix: AtomicU64::new(0),
            header_word: AtomicUsize::new(0),
            ranges: Mutex::new(Vec::new()),
        }
    }

    /// A mapping all `len` bytes of which count as backed (anonymous memory: no file).
    pub const fn assumed(len: u64) -> Backing {
        Backing {
            prefix: AtomicU64::new(len),
            header_word: AtomicUsize::new(0),
            ranges: Mutex::new(Vec::new()),
        }
    }

    /// Mirrors the prefix in the 8-aligned u64 at `offset` of the mapping (a managed
    /// segment's `backed` field), whose value the caller read as `seen` (with `pread`,
    /// or 0 in a header it just made): learns that, and records from now on what this
    /// process backs (unless `read_only`). Touches the word only when this process
    /// knows more than `seen` already, so opening a segment faults in none of its
    /// pages. The word's page must be backed.
    pub fn track_header_word(&self, file: File, offset: usize, read_only: bool, seen: u64) {
        if offset == 0 || !offset.is_multiple_of(8) || (offset as u64 + 8) > file.len {
            return;
        }
        let seen = seen.min(file.len);
        self.prefix.fetch_max(seen, Ordering::AcqRel);
        if read_only {
            return;
        }
        self.header_word.store(offset, Ordering::Release);
        let known = self.prefix();
        if known > seen {
            self.publish(file, known);
        }
    }

    /// Records that `[0, n)` was backed by the caller (`fallocate` on the descriptor
    /// before mapping).
    pub fn assume(&self, file: File, n: u64) {
        self.publish(file, n.min(file.len));
    }

    fn word(&self, file: File) -> Option<&AtomicU64> {
        let off = self.header_word.load(Ordering::Acquire);
        // SAFETY: track_header_word checked the word lies inside the mapping and is
        // 8-aligned (the mapping is page-aligned); the mapping outlives `file`'s user.
        (off != 0).then(|| unsafe { &*((file.addr + off) as *const AtomicU64) })
    }

    /// Raises the local prefix to what the header says (clamped to the mapping).
    fn learn(&self, file: File) {
        if let Some(w) = self.word(file) {
            // Acquire: pairs with the Release fetch_max of the process that backed it.
            let h = w.load(Ordering::Acquire).min(file.len);
            self.prefix.fetch_max(h, Ordering::AcqRel);
        }
    }

    /// `[0, n)` is known backed.
    pub fn prefix(&self) -> u64 {
        self.prefix.load(Ordering::Acquire)
    }

    /// Makes sure `[a, b)` of the mapping is backed. With `exact`, backs exactly the
    /// pages of the range (`mem.reserve`); otherwise rounds out to [`chunk_for`] steps
    /// (heap growth). The fast path is one load and a compare.
    ///
    /// # Errors
    /// `ENOSPC` (or another `fallocate` errno) as a `ShmError`; nothing is recorded then.
    #[inline]
    pub fn ensure(&self, file: File, a: u64, b: u64, exact: bool) -> Result<()> {
        if b <= self.prefix.load(Ordering::Acquire) || a >= b {
            return Ok(());
        }
        self.ensure_slow(file, a, b, exact)
    }

    #[cold]
    fn ensure_slow(&self, file: File, a: u64, b: u64, exact: bool) -> Result<()> {
        match self.ensure_locked(file, a, b, exact) {
            // A whole step did not fit: the range itself may (a nearly full filesystem).
            Err(e) if !exact && e.errno == Some(libc::ENOSPC) => {
                self.ensure_locked(file, a, b, true)
            }
            r => r,
        }
    }

    fn ensure_locked(&self, file: File, a: u64, b: u64, exact: bool) -> Result<()> {
        let b = b.min(file.len);
        self.learn(file);
        if b <= self.prefix() {
            return Ok(());
        }
        let mut ranges = self.ranges.lock().unwrap_or_else(|p| p.into_inner());
        let p = self.prefix();
        let page = super::mapping::page_size() as u64;
        let (unit, a) = if exact {
            (page, a)
        } else {
            (chunk_for(file.len), a.max(p))
        };
        let lo = a / unit * unit;
        let hi = b.div_ceil(unit).saturating_mul(unit).min(file.len);
        if lo <= p {
            // Contiguous with the prefix: extend it, piece by piece.
            let mut at = p;
            while at < hi {
                let end = (at + PIECE).min(hi);
                if !covered(&ranges, at, end) {
                    fallocate(file, at, end)?;
                }
                at = end;
                self.publish(file, at);
            }
            ranges.retain(|&(_, e)| e > at);
        } else {
            for (s, e) in missing(&ranges, lo, hi) {
                let mut at = s;
                while at < e {
                    let end = (at + PIECE).min(e);
                    fallocate(file, at, end)?;
                    add(&mut ranges, at, end);
                    at = end;
                }
            }
        }
        Ok(())
    }

    fn publish(&self, file: File, prefix: u64) {
        self.prefix.fetch_max(prefix, Ordering::AcqRel);
        if let Some(w) = self.word(file) {
            // Release: whoever reads the new value sees pages fallocate'd before it.
            w.fetch_max(prefix, Ordering::Release);
        }
    }
}

fn fallocate(file: File, a: u64, b: u64) -> Result<()> {
    fallocate_fd(file.fd, file.offset + a, b - a)
}

/// Backs `[offset, offset + len)` of the file behind `fd`, in pieces (see [`PIECE`]).
///
/// # Errors
/// `ENOSPC` (with a message saying what it means) or another `fallocate` errno.
pub fn fallocate_fd(fd: RawFd, offset: u64, len: u64) -> Result<()> {
    let mut at = offset;
    let end = offset.saturating_add(len);
    while at < end {
        let n = PIECE.min(end - at);
        fallocate_piece(fd, at, n)?;
        at += n;
    }
    Ok(())
}

fn fallocate_piece(fd: RawFd, a: u64, len: u64) -> Result<()> {
    crate::sys::fallocate(fd, a, len).map_err(|e| {
        let mut err = ShmError::sys(e, "fallocate");
        if e == nix::errno::Errno::ENOSPC {
            err.message = format!(
                "no space left to back {len} bytes of shared memory at file offset {a} \
                 (the filesystem behind it, e.g. /dev/shm, is full)"
            );
        }
        err
    })
}

/// Whether `[a, b)` lies inside one of `ranges`.
fn covered(ranges: &[(u64, u64)], a: u64, b: u64) -> bool {
    ranges.iter().any(|&(s, e)| s <= a && b <= e)
}

/// The parts of `[a, b)` not in `ranges` (sorted, disjoint).
fn missing(ranges: &[(u64, u64)], a: u64, b: u64) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    let mut at = a;
    for &(s, e) in ranges {
        if e <= at || s >= b {
            continue;
        }
        if s > at {
            out.push((at, s));
        }
        at = at.max(e);
    }
    if at < b {
        out.push((at, b));
    }
    out
}

/// Adds `[a, b)` to sorted, disjoint `ranges`, merging neighbours.
fn add(ranges: &mut Vec<(u64, u64)>, a: u64, b: u64) {
    ranges.push((a, b));
    ranges.sort_unstable();
    let mut merged: Vec<(u64, u64)> = Vec::with_capacity(ranges.len());
    for &(s, e) in ranges.iter() {
        match merged.last_mut() {
            Some(last) if s <= last.1 => last.1 = last.1.max(e),
            _ => merged.push((s, e)),
        }
    }
    *ranges = merged;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_merge_and_report_gaps() {
        let mut r = Vec::new();
        add(&mut r, 10, 20);
        add(&mut r, 30, 40);
        add(&mut r, 20, 25);
        assert_eq!(r, vec![(10, 25), (30, 40)]);
        assert_eq!(missing(&r, 0, 50), vec![(0, 10), (25, 30), (40, 50)]);
        assert_eq!(missing(&r, 12, 24), vec![]);
        assert!(covered(&r, 31, 39) && !covered(&r, 24, 31));
    }

    /// Linux only: `fallocate` is a no-op elsewhere (sys/macos.rs says why).
    #[cfg(target_os = "linux")]
    #[test]
    fn backing_grows_the_prefix_by_chunks_and_mirrors_it() {
        let len = 40 * CHUNK + 4096;
        assert_eq!(chunk_for(len), CHUNK);
        let obj = crate::memory::shm::TestObject::new("backing", len);
        let fd = obj.fd;
        let word = Box::new(AtomicU64::new(0));
        let file = File {
            fd,
            offset: 0,
            addr: &*word as *const AtomicU64 as usize - 8,
            len,
        };
        let b = Backing::new();
        b.track_header_word(file, 8, false, word.load(Ordering::Relaxed));
        b.ensure(file, 100, 200, false).unwrap();
        assert_eq!(b.prefix(), CHUNK);
        assert_eq!(word.load(Ordering::Relaxed), CHUNK);
        // Far away: a range of its own, the prefix stays.
        b.ensure(file, 30 * CHUNK + 10, 30 * CHUNK + 20, false)
            .unwrap();
        assert_eq!(b.prefix(), CHUNK);
        assert_eq!(*b.ranges.lock().unwrap(), vec![(30 * CHUNK, 31 * CHUNK)]);
        // Exact reserve right after the prefix extends it by pages only.
        b.ensure(file, CHUNK, CHUNK + 10, true).unwrap();
        assert_eq!(b.prefix(), CHUNK + 4096);
        // The last, partial chunk is clamped to the mapping.
        b.ensure(file, CHUNK, len, false).unwrap();
        assert_eq!(b.prefix(), len);
        assert!(
            b.ranges.lock().unwrap().is_empty(),
            "absorbed by the prefix"
        );
        assert_eq!(chunk_for(1 << 20), 64 << 10);
        // SAFETY: all-zero is a valid stat buffer.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: fstat into a local buffer.
        assert_eq!(unsafe { libc::fstat(fd, &mut st) }, 0);
        assert_eq!(st.st_size as u64, len, "KEEP_SIZE: never grows the file");
        assert!(st.st_blocks as u64 * 512 >= len);
        // A header that says more than the mapping is clamped.
        word.store(u64::MAX, Ordering::Relaxed);
        let c = Backing::new();
        c.track_header_word(file, 8, true, word.load(Ordering::Relaxed));
        assert_eq!(c.prefix(), len);
    }
}
