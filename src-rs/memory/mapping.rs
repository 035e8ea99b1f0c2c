//! Memory mappings: one [`Region`] per `mmap`, shared by the JavaScript object that owns it
//! and every `ArrayBuffer` over it, so garbage collection can never unmap twice and an
//! explicit close never unmaps memory a waiter on another thread is still using.
//!
//! Life of a region (the `state` word):
//!
//! | state      | meaning                                                       |
//! |------------|---------------------------------------------------------------|
//! | `MAPPED`   | live; [`Region::pin`] succeeds                                |
//! | `CLOSING`  | `close()` was called; unmapped when the last pin is released  |
//! | `UNMAPPED` | `munmap` done (exactly once, by whoever moved it here)        |
//! | `FORGOTTEN`| `detach()`: the caller owns the pages now; we never unmap them |
//!
//! A region mapped from a file descriptor keeps its own descriptor open (adopted with
//! [`Region::adopt_fd`]) for as long as it is mapped: the layers above need the object
//! behind the mapping after mapping it (byte-range liveness locks, `fallocate`, `fstat`).
//! It is closed with the mapping (unmap or `detach()`).
//!
//! Adopting the descriptor also registers the mapping with the SIGBUS guard
//! (`sys/linux/sigbus.rs`): if the file loses pages under it (shrunk by another process,
//! or a full filesystem), the process keeps running, [`Region::lost`] says so and
//! [`Region::check_intact`] turns it into `ERR_SHM_TRUNCATED` / `ENOSPC` for the layers
//! above. [`Region::ensure_backed`] backs a range with real pages first
//! (`memory/backing.rs`), so that memory handed out by the library never faults at all.

use crate::error::{Result, ShmError};
use crate::memory::backing::{self, Backing};
use crate::sys;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU32, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

const MAPPED: u8 = 0;
const CLOSING: u8 = 1;
const UNMAPPED: u8 = 2;
const FORGOTTEN: u8 = 3;

/// The system page size.
pub fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if n > 0 {
        n as usize
    } else {
        4096
    }
}

/// `n` rounded up to a whole number of pages, `None` on overflow.
pub fn round_to_page(n: u64) -> Option<u64> {
    let p = page_size() as u64;
    n.checked_add(p - 1).map(|v| v / p * p)
}

/// What a caller asks of `mmap`.
#[derive(Debug, Clone, Copy)]
pub struct MapRequest {
    /// Where: `None` lets the kernel choose; otherwise a hint, or exact with a FIXED flag.
    pub address: Option<u64>,
    /// Length in bytes (> 0).
    pub len: u64,
    /// `PROT_*` bits.
    pub prot: i32,
    /// `MAP_*` bits.
    pub flags: i32,
    /// Backing descriptor, or -1 for anonymous memory.
    pub fd: i32,
    /// Offset into the backing object (page aligned).
    pub offset: u64,
}

/// One live (or formerly live) mapping.
#[derive(Debug)]
pub struct Region {
    addr: usize,
    len: usize,
    state: AtomicU8,
    pins: AtomicUsize,
    /// The descriptor of the object behind the mapping, or -1 (see [`Region::adopt_fd`]).
    fd: AtomicI32,
    /// The file offset mapped at `addr`.
    file_offset: u64,
    /// The `PROT_*` bits it was mapped with.
    prot: i32,
    /// Registration with the SIGBUS guard (set with the descriptor).
    guard: OnceLock<sys::GuardId>,
    /// A managed segment opened read-only (mapped copy-on-write): the library writes
    /// nothing through it.
    read_only: AtomicBool,
    /// What of the file is known backed.
    backing: Backing,
}

/// Ranges handed to the caller by `detach()` and not yet unmapped by [`munmap_forgotten`]:
/// the only memory besides free address space that `FIXED` and `munmap` may touch.
static FORGOTTEN_RANGES: Mutex<Vec<(u64, u64)>> = Mutex::new(Vec::new());

fn lock_ranges(
    m: &'static Mutex<Vec<(u64, u64)>>,
) -> std::sync::MutexGuard<'static, Vec<(u64, u64)>> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Removes `[a, b)` from a list of disjoint ranges.
fn subtract(ranges: &mut Vec<(u64, u64)>, a: u64, b: u64) {
    let mut out = Vec::with_capacity(ranges.len() + 1);
    for &(s, e) in ranges.iter() {
        if e <= a || s >= b {
            out.push((s, e));
            continue;
        }
        if s < a {
            out.push((s, a));
        }
        if e > b {
            out.push((b, e));
        }
    }
    *ranges = out;
}

/// Whether every byte of `[a, b)` is covered by `ranges`.
fn covered(ranges: &[(u64, u64)], a: u64, b: u64) -> bool {
    let mut rest = vec![(a, b)];
    for &(s, e) in ranges {
        subtract(&mut rest, s, e);
    }
    rest.is_empty()
}

/// Whether `[a, b)` holds nothing but free address space and memory we handed out with
/// `detach()`: the test a `MAP_FIXED` request must pass so it never replaces V8's heap,
/// a library, or a live segment.
fn replaceable(a: u64, b: u64) -> bool {
    let forgotten = lock_ranges(&FORGOTTEN_RANGES).clone();
    sys::mapped_ranges()
        .into_iter()
        .filter(|&(s, e)| s < b && e > a)
        .all(|(s, e)| covered(&forgotten, s.max(a), e.min(b)))
}

impl Region {
    /// Maps memory as requested.
    ///
    /// A plain `MAP_FIXED` request is honoured only over free address space or memory this
    /// library handed out with `detach()`; anything else fails with `EADDRINUSE` instead of
    /// silently replacing memory the process uses (which crashes Node). With
    /// `MAP_FIXED_NOREPLACE` a kernel that treats it as a hint is caught by comparing the
    /// returned address.
    ///
    /// # Errors
    /// `RangeError` for a zero or absurd length or an unaligned address/offset;
    /// `EADDRINUSE` when an exact address is taken; otherwise the `mmap` errno.
    pub fn map(req: MapRequest) -> Result<Arc<Region>> {
        let page = page_size() as u64;
        if req.len == 0 || req.len > isize::MAX as u64 {
            return Err(ShmError::range(format!(
                "The \"size\" argument must be > 0 and addressable; got {}",
                req.len
            )));
        }
        if !req.offset.is_multiple_of(page) {
            return Err(ShmError::range(format!(
                "The \"offset\" argument must be a multiple of the page size ({page}); got {}",
                req.offset
            )));
        }
        let fixed = req.flags & libc::MAP_FIXED != 0;
        let noreplace = req.flags & sys::MAP_FIXED_NOREPLACE != 0;
        let exact = fixed || noreplace;
        let mut flags = req.flags;
        if exact {
            let Some(addr) = req.address.filter(|a| *a != 0) else {
                return Err(ShmError::type_error(
                    "The \"address\" argument is required with FIXED or FIXED_NOREPLACE",
                ));
            };
            if addr % page != 0 {
                return Err(ShmError::range(format!(
                    "The \"address\" argument must be page aligned with FIXED; got {addr:#x}"
                )));
            }
            let end = addr
                .checked_add(req.len)
                .ok_or_else(|| ShmError::range("The \"address\" + \"size\" arguments overflow"))?;
            if fixed {
                if !replaceable(addr, end) {
                    return Err(address_in_use(format!(
                        "FIXED mapping at {addr:#x}..{end:#x} would replace memory this process \
                         uses; only free or detach()ed ranges may be replaced"
                    )));
                }
            } else {
                flags &= !libc::MAP_FIXED;
            }
        }
        let hint = req.address.unwrap_or(0) as usize as *mut libc::c_void;
        let (prot, fd, off) = (req.prot, req.fd, req.offset as libc::off_t);
        // Request bits only this crate knows (macOS's emulated FIXED_NOREPLACE) stop here.
        let flags = sys::prepare_flags(flags);
        // SAFETY: with MAP_FIXED we checked above that the range holds only free space or
        // pages the caller took ownership of with detach(), so nothing live is replaced;
        // otherwise the kernel picks or honours a non-clobbering address.
        let p = unsafe { libc::mmap(hint, req.len as usize, prot, flags, fd, off) };
        if p == libc::MAP_FAILED {
            let e = nix::errno::Errno::last();
            if noreplace && e == nix::errno::Errno::EEXIST {
                return Err(range_in_use(req.address.unwrap_or(0), req.len));
            }
            return Err(ShmError::sys(e, "mmap"));
        }
        let addr = p as usize;
        if exact && addr as u64 != req.address.unwrap_or(0) {
            // An old kernel took MAP_FIXED_NOREPLACE as a hint.
            // SAFETY: we just mapped exactly this range and nobody else knows of it.
            unsafe { libc::munmap(p, req.len as usize) };
            return Err(range_in_use(req.address.unwrap_or(0), req.len));
        }
        let (a, b) = (addr as u64, addr as u64 + req.len);
        subtract(&mut lock_ranges(&FORGOTTEN_RANGES), a, b);
        Ok(Arc::new(Region {
            addr,
            len: req.len as usize,
            state: AtomicU8::new(MAPPED),
            pins: AtomicUsize::new(0),
            fd: AtomicI32::new(-1),
            file_offset: req.offset,
            prot: req.prot,
            guard: OnceLock::new(),
            read_only: AtomicBool::new(false),
            // Anonymous memory has no file to back: all of it counts as backed.
            backing: if req.fd < 0 {
                Backing::assumed(req.len)
            } else {
                Backing::new()
            },
        }))
    }

    /// First byte.
    pub fn addr(&self) -> usize {
        self.addr
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Never true: mappings have at least one byte.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Hands the region the descriptor of the object it maps, as its own: the region
    /// closes it when it is unmapped or forgotten. Call it right after mapping, before
    /// the region is shared or touched: it also registers the mapping with the SIGBUS
    /// guard. A second call closes `fd` and keeps the first.
    pub fn adopt_fd(&self, fd: RawFd) {
        if fd < 0 {
            return;
        }
        if self
            .fd
            .compare_exchange(-1, fd, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            close_fd(fd);
            return;
        }
        let id = sys::guard_register(self.addr, self.len, fd, self.file_offset, self.prot);
        if self.guard.set(id).is_err() {
            sys::guard_unregister(id);
        }
    }

    /// The descriptor of the object behind the mapping, if it has one. Valid while the
    /// caller holds a [`Pin`] or is the only thread that can close the region.
    pub fn fd(&self) -> Option<RawFd> {
        let fd = self.fd.load(Ordering::Acquire);
        (fd >= 0).then_some(fd)
    }

    /// Takes the descriptor back from the region (unregistering it from the SIGBUS guard)
    /// without closing it: for moving it to another mapping of the same object.
    pub fn take_fd(&self) -> Option<RawFd> {
        let fd = self.fd.swap(-1, Ordering::AcqRel);
        if fd < 0 {
            return None;
        }
        if let Some(id) = self.guard.get() {
            sys::guard_unregister(*id);
        }
        Some(fd)
    }

    fn release_fd(&self) {
        let fd = self.fd.swap(-1, Ordering::AcqRel);
        if fd >= 0 {
            // The guard needs the descriptor: unregister first.
            if let Some(id) = self.guard.get() {
                sys::guard_unregister(*id);
            }
            close_fd(fd);
        }
    }

    /// The `LOST_*` bits of the SIGBUS guard: non-zero once the mapping lost pages (its
    /// file was shrunk, or had no space for a page touched).
    pub fn lost(&self) -> u32 {
        match self.guard.get() {
            Some(id) if self.fd.load(Ordering::Acquire) >= 0 => sys::guard_lost(*id),
            _ => 0,
        }
    }

    /// Checks the mapping lost no pages. One load while no mapping of the process did.
    ///
    /// # Errors
    /// `ERR_SHM_TRUNCATED` when the object was shrunk under the mapping, `ENOSPC` when a
    /// page had no room (see [`Region::lost`]).
    #[inline]
    pub fn check_intact(&self) -> Result<()> {
        if sys::guard_generation().load(Ordering::Acquire) == 0 {
            return Ok(());
        }
        lost_error(self.lost())
    }

    /// Marks a mapping the library must not write through (a segment opened read-only).
    pub fn set_read_only(&self) {
        self.read_only.store(true, Ordering::Release);
    }

    /// Whether the library must not write through this mapping.
    pub fn is_read_only(&self) -> bool {
        self.read_only.load(Ordering::Acquire)
    }

    /// Checks the library may write through this mapping.
    ///
    /// # Errors
    /// `ERR_SHM_READ_ONLY` for a segment opened read-only.
    #[inline]
    pub fn check_writable(&self) -> Result<()> {
        if self.is_read_only() {
            return Err(read_only());
        }
        Ok(())
    }

    fn backing_file(&self) -> Option<backing::File> {
        Some(backing::File {
            fd: self.fd()?,
            offset: self.file_offset,
            addr: self.addr,
            len: self.len as u64,
        })
    }

    /// Mirrors what is known backed in the u64 at `offset` (a managed segment's header
    /// field), and learns `seen`, what the caller read there (see
    /// [`Backing::track_header_word`](super::backing::Backing::track_header_word)).
    pub fn track_backed_word(&self, offset: usize, seen: u64) {
        if let Some(f) = self.backing_file() {
            self.backing
                .track_header_word(f, offset, self.is_read_only(), seen);
        }
    }

    /// Records that the caller backed `[0, n)` itself (before mapping).
    pub fn assume_backed(&self, n: u64) {
        if let Some(f) = self.backing_file() {
            self.backing.assume(f, n);
        }
    }

    /// `[0, n)` of the mapping is known backed by real pages.
    pub fn backed_prefix(&self) -> u64 {
        self.backing.prefix()
    }

    /// Backs `[offset, offset + len)` with real pages before the library hands it out,
    /// rounded out to 2 MiB steps (amortised heap growth). Nothing to do for anonymous
    /// memory or a read-only mapping.
    ///
    /// # Errors
    /// `ENOSPC` when the filesystem has no room; `ERR_SHM_OUT_OF_BOUNDS`.
    #[inline]
    pub fn ensure_backed(&self, offset: u64, len: u64) -> Result<()> {
        let end = offset.saturating_add(len);
        if end <= self.backing.prefix() {
            return Ok(());
        }
        self.back(offset, len, false)
    }

    /// Backs exactly the pages of `[offset, offset + len)` (no rounding out to steps):
    /// for the few scattered bytes a new segment or heap writes first.
    ///
    /// # Errors
    /// `ENOSPC`; `ERR_SHM_OUT_OF_BOUNDS`.
    pub fn ensure_backed_pages(&self, offset: u64, len: u64) -> Result<()> {
        if offset.saturating_add(len) <= self.backing.prefix() {
            return Ok(());
        }
        self.back(offset, len, true)
    }

    /// Backs exactly the pages of `[offset, offset + len)` now (`mem.reserve`): raw
    /// writes there can no longer fault for want of space.
    ///
    /// # Errors
    /// `ENOSPC`; `ERR_SHM_OUT_OF_BOUNDS`; `ERR_SHM_READ_ONLY`.
    pub fn reserve(&self, offset: u64, len: u64) -> Result<()> {
        self.check_writable()?;
        self.back(offset, len, true)
    }

    #[cold]
    fn back(&self, offset: u64, len: u64, exact: bool) -> Result<()> {
        self.check_range(offset, len)?;
        match self.backing_file() {
            Some(f) if !self.is_read_only() => self.backing.ensure(f, offset, offset + len, exact),
            _ => Ok(()),
        }
    }

    /// Whether the region is still mapped and not closing.
    pub fn is_live(&self) -> bool {
        self.state.load(Ordering::Acquire) == MAPPED
    }

    /// Whether `close()` was called and the pages are still mapped (pinned): not after a
    /// `detach()`, whose pages the caller may have unmapped already.
    pub fn is_closing(&self) -> bool {
        self.state.load(Ordering::Acquire) == CLOSING
    }

    /// Keeps the pages mapped until the guard drops, for work off the JavaScript thread.
    ///
    /// # Errors
    /// `ERR_SHM_CLOSED` once `close()` or `detach()` was called.
    pub fn pin(self: &Arc<Self>) -> Result<Pin> {
        self.pins.fetch_add(1, Ordering::AcqRel);
        if self.state.load(Ordering::Acquire) != MAPPED {
            drop(Pin(self.clone()));
            return Err(closed());
        }
        Ok(Pin(self.clone()))
    }

    /// Unmaps now, or when the last pin goes. Idempotent.
    pub fn close(&self) {
        if self
            .state
            .compare_exchange(MAPPED, CLOSING, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            self.finish_close_if_unpinned();
        }
    }

    /// Gives the pages to the caller: we never unmap them; `munmap()` may.
    /// Returns `false` if the region was already closed.
    pub fn forget(&self) -> bool {
        if self
            .state
            .compare_exchange(MAPPED, FORGOTTEN, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return false;
        }
        let (a, b) = (self.addr as u64, (self.addr + self.len) as u64);
        lock_ranges(&FORGOTTEN_RANGES).push((a, b));
        self.release_fd();
        true
    }

    fn finish_close_if_unpinned(&self) {
        if self.pins.load(Ordering::Acquire) == 0
            && self
                .state
                .compare_exchange(CLOSING, UNMAPPED, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            self.unmap_now();
        }
    }

    fn unmap_now(&self) {
        // Unregister from the SIGBUS guard (and close the descriptor) before the range
        // can be reused by anything else.
        self.release_fd();
        // SAFETY: the state machine lets exactly one caller reach here, once, after every
        // JavaScript view was detached and no pin is held; the range is ours.
        unsafe { libc::munmap(self.addr as *mut libc::c_void, self.len) };
    }

    /// Checks that `[offset, offset + len)` lies inside the region.
    ///
    /// # Errors
    /// `ERR_SHM_OUT_OF_BOUNDS` otherwise.
    pub fn check_range(&self, offset: u64, len: u64) -> Result<usize> {
        match offset.checked_add(len) {
            Some(end) if end <= self.len as u64 => Ok(offset as usize),
            _ => Err(ShmError::new(
                "ERR_SHM_OUT_OF_BOUNDS",
                format!(
                    "range {offset}..{} is outside the mapping of {} bytes",
                    offset.saturating_add(len),
                    self.len
                ),
            )),
        }
    }

    /// The aligned 32-bit word at `offset`, for futex operations.
    ///
    /// # Errors
    /// `ERR_SHM_OUT_OF_BOUNDS`, or `EINVAL` when not 4-byte aligned.
    pub fn word(&self, offset: u64) -> Result<&AtomicU32> {
        let off = self.check_range(offset, 4)?;
        if off % 4 != 0 {
            return Err(ShmError::new(
                "EINVAL",
                format!("offset {offset} is not 4-byte aligned"),
            ));
        }
        // SAFETY: in bounds and aligned (checked above); AtomicU32 has the layout of u32;
        // the mapping outlives &self (the caller holds a pin or is the JS thread that
        // would have to close it first).
        Ok(unsafe { &*((self.addr + off) as *const AtomicU32) })
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        // Garbage collection of the last owner: unmap if nobody closed or forgot it.
        let s = self.state.swap(UNMAPPED, Ordering::AcqRel);
        if s == MAPPED || s == CLOSING {
            self.unmap_now();
        }
        self.release_fd();
    }
}

fn close_fd(fd: RawFd) {
    // SAFETY: `fd` was handed to a region as its own and is closed exactly once (the
    // atomic swap in `release_fd`/`adopt_fd` gives it to one caller).
    unsafe { libc::close(fd) };
}

/// A guard that keeps a region mapped (see [`Region::pin`]).
#[derive(Debug)]
pub struct Pin(Arc<Region>);

impl Pin {
    /// The pinned region.
    pub fn region(&self) -> &Region {
        &self.0
    }
}

impl Drop for Pin {
    fn drop(&mut self) {
        if self.0.pins.fetch_sub(1, Ordering::AcqRel) == 1
            && self.0.state.load(Ordering::Acquire) == CLOSING
        {
            self.0.finish_close_if_unpinned();
        }
    }
}

/// `ERR_SHM_CLOSED`.
pub fn closed() -> ShmError {
    ShmError::new("ERR_SHM_CLOSED", "the mapping is closed")
}

/// `ERR_SHM_READ_ONLY`.
pub fn read_only() -> ShmError {
    ShmError {
        errno: Some(libc::EACCES),
        ..ShmError::new(
            "ERR_SHM_READ_ONLY",
            "the segment was opened read-only: the library writes nothing through it",
        )
    }
}

/// The error for a mapping whose `LOST_*` bits are `lost` (`Ok` for 0).
///
/// # Errors
/// `ERR_SHM_TRUNCATED` or `ENOSPC`.
pub fn lost_error(lost: u32) -> Result<()> {
    if lost & sys::LOST_TRUNCATED != 0 {
        return Err(ShmError::new(
            "ERR_SHM_TRUNCATED",
            "the shared memory object was shrunk by another process while mapped here: \
             the pages past its new end are gone (reads gave zeros, writes were not shared)",
        ));
    }
    if lost & sys::LOST_NO_SPACE != 0 {
        return Err(ShmError {
            errno: Some(libc::ENOSPC),
            syscall: Some("fallocate"),
            ..ShmError::new(
                "ENOSPC",
                "a page of this mapping was touched that the filesystem had no room for \
                 (e.g. /dev/shm is full): it was replaced by a private zero page, and writes \
                 to it are not shared. Back memory first with mem.reserve()",
            )
        });
    }
    Ok(())
}

/// `EADDRINUSE` for a mapping that cannot have the exact address it asks for: its errno
/// is the platform's `EADDRINUSE` (the kernel says `EEXIST` for `MAP_FIXED_NOREPLACE`).
fn address_in_use(message: String) -> ShmError {
    ShmError {
        errno: Some(libc::EADDRINUSE),
        syscall: Some("mmap"),
        ..ShmError::new("EADDRINUSE", message)
    }
}

/// [`address_in_use`] for the taken range `[addr, addr + len)`.
fn range_in_use(addr: u64, len: u64) -> ShmError {
    address_in_use(format!(
        "the address range {addr:#x}..{:#x} is already in use",
        addr + len
    ))
}

/// Unmaps `[address, address + len)`, which must lie within pages handed out by
/// `detach()` (anything else would pull memory from under live code or views).
///
/// # Errors
/// `EINVAL` for ranges this library did not hand out; the `munmap` errno otherwise.
pub fn munmap_forgotten(address: u64, len: u64) -> Result<()> {
    let end = address
        .checked_add(len)
        .ok_or_else(|| ShmError::range("The \"address\" + \"size\" arguments overflow"))?;
    let mut forgotten = lock_ranges(&FORGOTTEN_RANGES);
    if len == 0 || !covered(&forgotten, address, end) {
        return Err(ShmError::new(
            "EINVAL",
            format!(
                "munmap({address:#x}, {len}): only memory released with detach() may be unmapped"
            ),
        ));
    }
    // SAFETY: the range is covered by pages the caller took over with detach(): no view,
    // region or foreign code of ours refers to them any more.
    if unsafe { libc::munmap(address as usize as *mut libc::c_void, len as usize) } != 0 {
        return Err(ShmError::last_os("munmap"));
    }
    subtract(&mut forgotten, address, end);
    Ok(())
}

/// Picks a free, 2 MiB-aligned address for `len` bytes in the upper half of the user
/// address space, below the band where the kernel puts shared libraries and stacks, and
/// maps there (exactly, never clobbering). That band is empty in fresh Node processes
/// (V8 reserves below 1/4 of it, libraries sit at the very top), so other processes will
/// likely find the same address free.
///
/// # Errors
/// `EADDRINUSE` if no free spot was found after a number of tries.
pub fn map_at_free_high_address(mut req: MapRequest) -> Result<Arc<Region>> {
    const ALIGN: u64 = 2 << 20;
    let bits = sys::user_address_bits().clamp(36, 56);
    let low = 1u64 << (bits - 1);
    let high = (1u64 << bits) - (1u64 << (bits - 5));
    let span = high.saturating_sub(low).saturating_sub(req.len) / ALIGN;
    if span == 0 {
        return Err(ShmError::range(
            "The segment is too large for a fixed address",
        ));
    }
    req.flags |= sys::MAP_FIXED_NOREPLACE;
    for _ in 0..32 {
        req.address = Some(low + (sys::random_u64() % span) * ALIGN);
        match Region::map(req) {
            Ok(r) => return Ok(r),
            Err(e) if e.code == "EADDRINUSE" => continue,
            Err(e) => return Err(e),
        }
    }
    Err(address_in_use(
        "found no free fixed address for the segment".to_owned(),
    ))
}

/// A request for `len` bytes of anonymous read-write memory, `MAP_SHARED` or
/// `MAP_PRIVATE` (`sharing`), anywhere: for tests.
#[cfg(test)]
fn anon_request(len: u64, sharing: libc::c_int) -> MapRequest {
    MapRequest {
        address: None,
        len,
        prot: libc::PROT_READ | libc::PROT_WRITE,
        flags: sharing | libc::MAP_ANONYMOUS,
        fd: -1,
        offset: 0,
    }
}

/// A fresh anonymous shared mapping, for tests across the crate.
#[cfg(test)]
pub(crate) fn shared_anon_for_tests(len: u64) -> Arc<Region> {
    Region::map(anon_request(len, libc::MAP_SHARED)).expect("an anonymous mapping")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn anon(len: u64) -> MapRequest {
        anon_request(len, libc::MAP_PRIVATE)
    }

    #[test]
    fn fixed_never_replaces_live_memory() {
        let r = Region::map(anon(8192)).unwrap();
        let mut req = anon(4096);
        req.address = Some(r.addr() as u64);
        req.flags |= libc::MAP_FIXED;
        let e = Region::map(req).unwrap_err();
        assert_eq!(
            (e.code.as_str(), e.errno),
            ("EADDRINUSE", Some(libc::EADDRINUSE))
        );
        req.flags = (req.flags & !libc::MAP_FIXED) | sys::MAP_FIXED_NOREPLACE;
        let e = Region::map(req).unwrap_err();
        assert_eq!(
            (e.code.as_str(), e.errno),
            ("EADDRINUSE", Some(libc::EADDRINUSE))
        );
        // After detach() the pages are the caller's: FIXED may replace them, munmap may free.
        assert!(r.forget());
        req.flags = (req.flags & !sys::MAP_FIXED_NOREPLACE) | libc::MAP_FIXED;
        let again = Region::map(req).unwrap();
        assert_eq!(again.addr(), r.addr());
        munmap_forgotten(r.addr() as u64 + 4096, 4096).unwrap();
        assert_eq!(
            munmap_forgotten(r.addr() as u64, 4096).unwrap_err().code,
            "EINVAL"
        );
        again.close();
    }

    #[test]
    fn pins_delay_unmap_and_close_is_idempotent() {
        let r = Region::map(anon(4096)).unwrap();
        let pin = r.pin().unwrap();
        r.close();
        r.close();
        assert_eq!(r.pin().unwrap_err().code, "ERR_SHM_CLOSED");
        // Still mapped while pinned: the word is readable.
        pin.region().word(0).unwrap().store(7, Ordering::Relaxed);
        drop(pin);
        assert!(!r.is_live());
    }

    #[test]
    fn high_address_is_picked_and_fixed() {
        let r = map_at_free_high_address(anon(1 << 20)).unwrap();
        assert!(r.addr() as u64 >= 1u64 << (sys::user_address_bits() - 1));
        assert_eq!(r.addr() % (2 << 20), 0);
        r.close();
    }

    #[test]
    fn words_are_bounds_and_alignment_checked() {
        let r = Region::map(anon(4096)).unwrap();
        assert!(r.word(4092).is_ok());
        assert_eq!(r.word(4093).unwrap_err().code, "ERR_SHM_OUT_OF_BOUNDS");
        assert_eq!(r.word(2).unwrap_err().code, "EINVAL");
        assert_eq!(r.word(u64::MAX).unwrap_err().code, "ERR_SHM_OUT_OF_BOUNDS");
    }

    /// Whether `fd` is still the descriptor this test made with `dup` (which has no
    /// close-on-exec flag; descriptors other tests open in parallel and that may reuse
    /// the number all have it).
    fn still_ours(fd: RawFd) -> bool {
        // SAFETY: F_GETFD only reads the descriptor's flags.
        unsafe { libc::fcntl(fd, libc::F_GETFD) == 0 }
    }

    #[test]
    fn an_adopted_fd_lives_exactly_as_long_as_the_mapping() {
        for forget in [false, true] {
            // SAFETY: plain syscalls on descriptors we own.
            let fd = unsafe { libc::dup(0) };
            assert!(fd >= 0);
            let r = Region::map(anon(4096)).unwrap();
            r.adopt_fd(fd);
            assert_eq!(r.fd(), Some(fd));
            // SAFETY: as above.
            let second = unsafe { libc::dup(0) };
            r.adopt_fd(second); // refused: closed, the first stays
            assert!(!still_ours(second));
            assert!(still_ours(fd));
            if forget {
                assert!(r.forget());
                munmap_forgotten(r.addr() as u64, 4096).unwrap();
            } else {
                r.close();
            }
            assert_eq!(r.fd(), None);
            assert!(!still_ours(fd));
        }
    }
}
