//! Managed segments: a named shm object, mapped, with a header at offset 0 that says what
//! it is and where things live. Opening validates every header field before using it:
//! the segment is shared with other processes and is untrusted input.
//!
//! | offset | size | field          | meaning                                             |
//! |--------|------|----------------|-----------------------------------------------------|
//! | 0      | 8    | `magic`        | `"SHMUTILS"`; written last, with Release ordering   |
//! | 8      | 4    | `version`      | format version, [`VERSION`]                         |
//! | 12     | 4    | `header_size`  | [`HEADER_SIZE`]                                     |
//! | 16     | 8    | `size`         | segment size in bytes (= the object's size)         |
//! | 24     | 8    | `base`         | the creator's base address (pointers are stored in  |
//! |        |      |                | the creator's address space)                        |
//! | 32     | 4    | `flags`        | bit 0 [`FLAG_FIXED`]: `base` was chosen to be fixed |
//! | 36     | 4    | reserved       | 0                                                   |
//! | 40     | 8    | `heap_offset`  | start of the heap region (16-aligned, ≥ header)     |
//! | 48     | 8    | `heap_size`    | its length; `heap_offset + heap_size ≤ size`        |
//! | 56     | 8    | `uid`          | random non-zero identity, written at create; 0 in   |
//! |        |      |                | segments made before it existed                     |
//! | 64     | 8    | `created_ms`   | creation time, ms since the Unix epoch              |
//! | 72     | 4    | `creator_pid`  | the creator's pid (in its PID namespace)            |
//! | 76     | 4    | `token_next`   | (liveness tokens; not written here)                 |
//! | 80     | 8    | `creator_start`| the creator's process start time ([`sys::process_start_time`]) |
//! | 88     | 8    | `backed`       | `[0, backed)` is known backed by the filesystem     |
//! |        |      |                | (`fallocate`d); monotonic, raised with `fetch_max`  |
//! | 96..256|      | reserved       | 0                                                   |
//!
//! `uid` and the creator fields are informational except `uid`, which together with the
//! object's inode is the segment's identity (handles carry it; see `lib/memory.ts`).
//! All integers are little-endian (the native order of every supported target).
//!
//! Creation backs the header's pages before writing them (and the whole segment with
//! `reserve` or `prefault`), so a full filesystem answers `ENOSPC` instead of `SIGBUS`.
//! A segment opened read-only is mapped copy-on-write (`MAP_PRIVATE`, readable and
//! writable): raw writes through its buffer change only this process's copy of a page
//! (never the segment), and the library refuses every operation that writes
//! (`ERR_SHM_READ_ONLY`).
//!
//! [`sys::process_start_time`]: crate::sys::process_start_time

use crate::error::{Result, ShmError};
use crate::memory::mapping::{self, MapRequest, Region};
use crate::memory::shm;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// `"SHMUTILS"` as a little-endian u64.
pub const MAGIC: u64 = u64::from_le_bytes(*b"SHMUTILS");
/// Current format version. 2: lock words hold liveness tokens (`sync::liveness`), drawn
/// from the header's `token_next` (offset 76); version 1 held kernel thread ids, and the
/// two cannot share a segment.
pub const VERSION: u32 = 2;
/// Bytes reserved for the header; the heap starts right after.
pub const HEADER_SIZE: u64 = 256;
/// `base` is a fixed address every process should map at.
pub const FLAG_FIXED: u32 = 1;
/// The smallest segment: the header plus one page of heap.
pub const MIN_SIZE: u64 = 4096;
/// Offset of the `backed` header field.
pub const BACKED_OFFSET: usize = 88;

/// How much of a new segment to back with real pages at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backing {
    /// Only the header now; the heap backs what it hands out.
    Lazy,
    /// Every page (`reserve: true`): raw writes anywhere can never fault for want of space.
    Reserve,
    /// Every page, and map them all now (`prefault: true`).
    Prefault,
}

// Header offsets of the identity and creator fields.
const OFF_UID: usize = 56;
const OFF_CREATED_MS: usize = 64;
const OFF_CREATOR_PID: usize = 72;
const OFF_CREATOR_START: usize = 80;

/// The validated header of a segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Segment size.
    pub size: u64,
    /// The creator's base address.
    pub base: u64,
    /// `FLAG_*` bits.
    pub flags: u32,
    /// Heap region start.
    pub heap_offset: u64,
    /// Heap region length.
    pub heap_size: u64,
    /// The segment's identity (random, non-zero; 0 for segments older than the field).
    pub uid: u64,
    /// Creation time, ms since the Unix epoch (0: unknown).
    pub created_ms: u64,
    /// The creator's pid, in its own PID namespace (0: unknown).
    pub creator_pid: u32,
    /// The creator's process start time, in [`crate::sys::process_start_time`]'s units
    /// (0: unknown).
    pub creator_start: u64,
}

/// A fresh segment identity: random and never 0 (0 means "none").
fn new_uid() -> u64 {
    loop {
        let uid = crate::sys::random_u64();
        if uid != 0 {
            return uid;
        }
    }
}

/// Now, in ms since the Unix epoch (0 if the clock is before it).
fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Where `create` should map the new segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// Wherever the kernel likes.
    Anywhere,
    /// A free high address picked for every process.
    FreeHigh,
    /// Exactly here.
    At(u64),
}

/// How `open` treats the creator's fixed address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FixedMode {
    /// Map at the creator's address or fail with `EADDRINUSE`.
    Require,
    /// Try the creator's address (when it was fixed), else map anywhere.
    Prefer,
    /// Map anywhere.
    No,
}

fn put_u32(r: &Region, off: usize, v: u32) {
    // SAFETY: callers pass offsets inside the header, which lies inside the mapping
    // (segments are at least MIN_SIZE); unaligned-safe write.
    unsafe { ((r.addr() + off) as *mut u32).write_unaligned(v.to_le()) }
}
fn put_u64(r: &Region, off: usize, v: u64) {
    // SAFETY: as put_u32.
    unsafe { ((r.addr() + off) as *mut u64).write_unaligned(v.to_le()) }
}
/// The header bytes of the object behind `fd` (`pread`: no mapping needed to look); an
/// object shorter than a header reads as zeros past its end (the size check rejects it).
pub(crate) fn read_header(fd: i32) -> Result<[u8; HEADER_SIZE as usize]> {
    let mut buf = [0u8; HEADER_SIZE as usize];
    shm::pread_full(fd, 0, &mut buf)?;
    Ok(buf)
}
fn le_u32(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes(b[off..off + 4].try_into().expect("4 bytes"))
}
fn le_u64(b: &[u8], off: usize) -> u64 {
    u64::from_le_bytes(b[off..off + 8].try_into().expect("8 bytes"))
}
fn magic(r: &Region) -> &AtomicU64 {
    // SAFETY: offset 0 of a page-aligned mapping of ≥ MIN_SIZE bytes is aligned and ours.
    unsafe { &*(r.addr() as *const AtomicU64) }
}

fn bad_header(name: &str, why: impl std::fmt::Display) -> ShmError {
    ShmError::new(
        "ERR_SHM_BAD_HEADER",
        format!("not a shmutils segment ({why}):"),
    )
    .with_path(name)
}

fn rw_shared() -> (i32, i32) {
    (libc::PROT_READ | libc::PROT_WRITE, libc::MAP_SHARED)
}

/// Creates the object `name` exclusively, sizes it, maps it and writes the header.
/// The heap region is `[HEADER_SIZE, size)`; the caller formats it.
///
/// # Errors
/// `EEXIST` if the name exists; `RangeError` for a size below [`MIN_SIZE`]; `ENOSPC`
/// when the filesystem has no room for the header (or, with [`Backing::Reserve`] /
/// [`Backing::Prefault`], for the whole segment); mapping errors (`EADDRINUSE` for a
/// taken exact address). The object is unlinked again on any failure after it was
/// created.
pub fn create(
    name: &str,
    size: u64,
    permissions: u64,
    placement: Placement,
    backing: Backing,
) -> Result<(Arc<Region>, Header)> {
    let name = shm::normalize_name(name)?;
    let perms = shm::check_permissions(permissions)?;
    let size = segment_size(size)?;
    let fd = shm::open(&name, shm::OpenMode::Exclusive, perms)?;
    init(fd, &name, size, placement, backing).inspect_err(|_| {
        let _ = shm::unlink(&name);
    })
}

/// A requested segment size checked and rounded up to whole pages.
///
/// # Errors
/// `RangeError` below [`MIN_SIZE`] or beyond what a mapping can hold.
pub(crate) fn segment_size(size: u64) -> Result<u64> {
    if size < MIN_SIZE {
        return Err(ShmError::range(format!(
            "The \"size\" argument must be at least {MIN_SIZE}; got {size}"
        )));
    }
    mapping::round_to_page(size)
        .filter(|s| *s <= isize::MAX as u64 / 2)
        .ok_or_else(|| ShmError::range(format!("The \"size\" argument {size} is too large")))
}

/// Makes the new, empty object behind `fd` a segment of `size` bytes (a result of
/// [`segment_size`]): sizes it, backs it as `backing` says, maps it and writes the
/// header. `name` names it in errors (a shm name, or a description of an object without
/// one). The heap region is `[HEADER_SIZE, size)`; the caller formats it, then
/// [`publish`]es.
///
/// On success the region owns `fd`; on failure `fd` is closed (the caller removes a name).
///
/// # Errors
/// `ENOSPC` as [`create`]; sizing and mapping errors (`EADDRINUSE` for a taken exact
/// address).
pub(crate) fn init(
    fd: i32,
    name: &str,
    size: u64,
    placement: Placement,
    backing: Backing,
) -> Result<(Arc<Region>, Header)> {
    let mapped = (|| -> Result<Arc<Region>> {
        shm::truncate(fd, size).map_err(|e| e.with_path(name))?;
        if backing != Backing::Lazy {
            // Before mapping: MAP_POPULATE cannot report a failure, fallocate can.
            crate::memory::backing::fallocate_fd(fd, 0, size).map_err(|e| e.with_path(name))?;
        }
        let (prot, mut flags) = rw_shared();
        if backing == Backing::Prefault {
            flags |= crate::sys::MAP_POPULATE;
        }
        let req = MapRequest {
            address: None,
            len: size,
            prot,
            flags,
            fd,
            offset: 0,
        };
        match placement {
            Placement::Anywhere => Region::map(req),
            Placement::FreeHigh => mapping::map_at_free_high_address(req),
            Placement::At(addr) => Region::map(MapRequest {
                address: Some(addr),
                flags: flags | crate::sys::MAP_FIXED_NOREPLACE,
                ..req
            }),
        }
    })();
    let region = match mapped {
        Ok(region) => region,
        Err(e) => {
            let _ = shm::close(fd);
            return Err(e);
        }
    };
    // Registers the mapping with the SIGBUS guard before anything touches it.
    region.adopt_fd(fd);
    let result = (|| -> Result<Header> {
        if backing == Backing::Lazy {
            region.ensure_backed_pages(0, HEADER_SIZE)?;
        } else {
            region.assume_backed(size);
        }
        let header = Header {
            size,
            base: region.addr() as u64,
            flags: if placement == Placement::Anywhere {
                0
            } else {
                FLAG_FIXED
            },
            heap_offset: HEADER_SIZE,
            heap_size: size - HEADER_SIZE,
            uid: new_uid(),
            created_ms: now_ms(),
            creator_pid: std::process::id(),
            creator_start: crate::sys::own_process_start_time().unwrap_or(0),
        };
        put_u32(&region, 8, VERSION);
        put_u32(&region, 12, HEADER_SIZE as u32);
        put_u64(&region, 16, header.size);
        put_u64(&region, 24, header.base);
        put_u32(&region, 32, header.flags);
        put_u64(&region, 40, header.heap_offset);
        put_u64(&region, 48, header.heap_size);
        put_u64(&region, OFF_UID, header.uid);
        put_u64(&region, OFF_CREATED_MS, header.created_ms);
        put_u32(&region, OFF_CREATOR_PID, header.creator_pid);
        put_u64(&region, OFF_CREATOR_START, header.creator_start);
        region.track_backed_word(BACKED_OFFSET, 0);
        Ok(header)
    })();
    match result {
        Ok(header) => Ok((region, header)),
        Err(e) => {
            region.close();
            Err(e.with_path(name))
        }
    }
}

/// Publishes a created segment (after the heap is formatted): openers wait for this.
pub fn publish(region: &Region) {
    // Release: every header and heap byte written before is visible to an opener that
    // reads the magic with Acquire.
    magic(region).store(MAGIC, Ordering::Release);
}

/// Whether the name `name` (normalized) names the segment whose identity is `uid` (not
/// 0): `false` once it was removed, or re-created by someone (or names a foreign object).
///
/// # Errors
/// `EACCES` and other `shm_open` failures besides `ENOENT`; a failed header read.
pub fn names_uid(name: &str, uid: u64) -> Result<bool> {
    let fd = match shm::open(name, shm::OpenMode::Read, shm::check_permissions(0)?) {
        Ok(fd) => fd,
        Err(e) if e.code == "ENOENT" => return Ok(false),
        Err(e) => return Err(e),
    };
    let header = read_header(fd);
    let _ = shm::close(fd);
    let b = header.map_err(|e| e.with_path(name))?;
    Ok(uid != 0 && le_u64(&b, 0) == MAGIC && le_u64(&b, OFF_UID) == uid)
}

/// Removes the name `name` if it still names the segment whose identity is `uid`: a
/// segment re-created under the name since (or a foreign object) is left alone. Returns
/// whether it was removed. Between the check and the unlink another process could
/// re-create the name; that window is a few microseconds.
///
/// # Errors
/// A bad name; `EACCES` and other `shm_open`/`shm_unlink` failures besides `ENOENT`.
pub fn unlink_if_uid(name: &str, uid: u64) -> Result<bool> {
    let name = shm::normalize_name(name)?;
    if !names_uid(&name, uid)? {
        return Ok(false);
    }
    match shm::unlink(&name) {
        Ok(()) => Ok(true),
        Err(e) if e.code == "ENOENT" => Ok(false),
        Err(e) => Err(e),
    }
}

/// Opens and maps the existing segment `name`, validating its header. Also returns the
/// object's inode number (see [`shm::inode`]).
///
/// The header is read with `pread` before anything is mapped ([`header_of`]), so the
/// mapping is made once, at the creator's address when that is asked for, and opening
/// touches none of its pages: a touched page costs a page fault (and a page-table page)
/// here and a TLB shootdown at `munmap`, together dearer than two `pread`s (measured:
/// `npm run bench`, row 5.3). The system calls: `shm_open`, `fstat`, two `pread`s,
/// `mmap`, the attached mark of `sync/liveness.rs`, and at close `munmap` and `close`.
///
/// # Errors
/// `ENOENT`; `EACCES`; `ERR_SHM_BAD_HEADER` for an object that is not a segment (or was
/// not finished by its creator within a short grace period); `EADDRINUSE` with
/// [`FixedMode::Require`] when the creator's address is taken here.
pub fn open(name: &str, fixed: FixedMode, read_only: bool) -> Result<(Arc<Region>, Header, u64)> {
    let name = shm::normalize_name(name)?;
    let mode = if read_only {
        shm::OpenMode::Read
    } else {
        shm::OpenMode::ReadWrite
    };
    let fd = shm::open(&name, mode, shm::check_permissions(0)?)?;
    open_owned_fd(&name, fd, fixed, read_only)
}

/// Maps the segment behind `fd`, validating its header, as [`open`] does; `name` names
/// it in errors. On success the region owns `fd`; on failure `fd` is closed.
///
/// # Errors
/// As [`open`], but no `ENOENT`.
pub(crate) fn open_owned_fd(
    name: &str,
    fd: i32,
    fixed: FixedMode,
    read_only: bool,
) -> Result<(Arc<Region>, Header, u64)> {
    let region = (|| {
        // A creator may still be between shm_open and publish(): give it a moment.
        let deadline = crate::sys::Deadline::after_ms(1000.0);
        let (size, inode) = loop {
            let st = shm::fstat(fd)?;
            // A directory or a FIFO under the name is no segment, and never becomes one:
            // say what it is at once (a directory's size read as a header too small).
            let kind = st.st_mode & libc::S_IFMT;
            if kind != libc::S_IFREG {
                let what = match kind {
                    libc::S_IFDIR => "a directory",
                    libc::S_IFIFO => "a FIFO",
                    libc::S_IFSOCK => "a socket",
                    libc::S_IFCHR | libc::S_IFBLK => "a device",
                    _ => "not a regular file",
                };
                return Err(bad_header(name, what));
            }
            let (size, inode) = (st.st_size as u64, st.st_ino as u64);
            if size >= MIN_SIZE {
                break (size, inode);
            }
            if deadline.passed() {
                return Err(bad_header(name, format!("{size} bytes is too small")));
            }
            std::thread::sleep(std::time::Duration::from_millis(2));
        };
        let (header, backed) = header_of(fd, name, size, deadline)?;
        // Read-only: copy-on-write, so that a raw write through the buffer changes a
        // private copy of the page instead of faulting (see the top of this file).
        let req = MapRequest {
            address: None,
            len: size,
            prot: libc::PROT_READ | libc::PROT_WRITE,
            flags: if read_only {
                libc::MAP_PRIVATE
            } else {
                libc::MAP_SHARED
            },
            fd,
            offset: 0,
        };
        Ok((map_placed(req, &header, fixed)?, header, backed, inode))
    })()
    .map_err(|e| e.with_path(name));
    let (region, header, backed, inode) = region.inspect_err(|_| {
        let _ = shm::close(fd);
    })?;
    // The region owns the descriptor from here on (and the SIGBUS guard watches it).
    region.adopt_fd(fd);
    if read_only {
        region.set_read_only();
    }
    region.track_backed_word(BACKED_OFFSET, backed);
    Ok((region, header, inode))
}

/// The validated header of the object behind `fd` (`size` bytes), read with `pread`,
/// waiting (until `deadline`) for a creator that has not published it yet, and the
/// `backed` field read with it (untrusted: its user clamps it).
///
/// The magic is read alone first: [`publish`] stores it last, with Release ordering,
/// and one `pread` copies its bytes in no promised order. The Acquire fence after a read
/// that found it orders the second `pread`, of the whole header, after it (the kernel's
/// loads are this thread's loads), so every field read is at least as new as the magic.
fn header_of(
    fd: i32,
    name: &str,
    size: u64,
    deadline: crate::sys::Deadline,
) -> Result<(Header, u64)> {
    loop {
        let mut m = [0u8; 8];
        let n = shm::pread_full(fd, 0, &mut m)?;
        let magic = u64::from_le_bytes(m);
        if n == m.len() && magic == MAGIC {
            std::sync::atomic::fence(Ordering::Acquire);
            let mut bytes = [0u8; HEADER_SIZE as usize];
            if shm::pread_full(fd, 0, &mut bytes)? != bytes.len() {
                return Err(bad_header(name, "the object shrank while being opened"));
            }
            let header = validate(&bytes, size).map_err(|why| bad_header(name, why))?;
            return Ok((header, le_u64(&bytes, BACKED_OFFSET)));
        }
        // Zero: maybe a creator that has not published yet; anything else is foreign.
        if magic != 0 || deadline.passed() {
            return Err(bad_header(name, "wrong magic"));
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
}

/// Maps `req` where `header` and `fixed` ask: at the creator's address when its
/// address is fixed (or `fixed` requires it), else anywhere; with
/// [`FixedMode::Prefer`], anywhere when that address cannot be had here (taken, past the
/// top of this process's address space, below `vm.mmap_min_addr`).
fn map_placed(req: MapRequest, header: &Header, fixed: FixedMode) -> Result<Arc<Region>> {
    let want_fixed = match fixed {
        FixedMode::Require => true,
        FixedMode::Prefer => header.flags & FLAG_FIXED != 0,
        FixedMode::No => false,
    };
    if !want_fixed {
        return Region::map(req);
    }
    let at = MapRequest {
        address: Some(header.base),
        flags: req.flags | crate::sys::MAP_FIXED_NOREPLACE,
        ..req
    };
    match Region::map(at) {
        Err(_) if fixed == FixedMode::Prefer => Region::map(req),
        other => other,
    }
}

/// Checks every header field of a mapped header against the object's real size.
pub(crate) fn validate(
    b: &[u8; HEADER_SIZE as usize],
    real_size: u64,
) -> std::result::Result<Header, String> {
    let version = le_u32(b, 8);
    if version != VERSION {
        let hint = if version == 1 {
            " (version 1 segments name lock owners by thread id, which other processes \
             cannot check across PID namespaces: re-create the segment)"
        } else {
            ""
        };
        return Err(format!(
            "format version {version}, this library reads {VERSION}{hint}"
        ));
    }
    if le_u32(b, 12) as u64 != HEADER_SIZE {
        return Err("bad header size".into());
    }
    let h = Header {
        size: le_u64(b, 16),
        base: le_u64(b, 24),
        flags: le_u32(b, 32),
        heap_offset: le_u64(b, 40),
        heap_size: le_u64(b, 48),
        // Informational (any value is acceptable): identity and creator.
        uid: le_u64(b, OFF_UID),
        created_ms: le_u64(b, OFF_CREATED_MS),
        creator_pid: le_u32(b, OFF_CREATOR_PID),
        creator_start: le_u64(b, OFF_CREATOR_START),
    };
    if h.size != real_size {
        return Err(format!(
            "header says {} bytes, the object has {real_size}",
            h.size
        ));
    }
    let page = mapping::page_size() as u64;
    let top = 1u64 << crate::sys::user_address_bits();
    if h.base == 0
        || !h.base.is_multiple_of(page)
        || h.base.checked_add(h.size).is_none_or(|e| e > top)
    {
        return Err(format!("bad base address {:#x}", h.base));
    }
    if h.flags & !FLAG_FIXED != 0 {
        return Err(format!("unknown flags {:#x}", h.flags));
    }
    let heap_end = h.heap_offset.checked_add(h.heap_size);
    if h.heap_offset < HEADER_SIZE
        || !h.heap_offset.is_multiple_of(16)
        || heap_end.is_none_or(|e| e > h.size)
    {
        return Err("heap region outside the segment".into());
    }
    Ok(h)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_records_identity_and_creator() {
        let name = format!("/shmutils-rs-identity-{}", std::process::id());
        let _cleanup = shm::UnlinkOnDrop(name.clone());
        let before = now_ms();
        let (region, h) = create(&name, 8192, 0o600, Placement::Anywhere, Backing::Lazy).unwrap();
        publish(&region);
        assert_ne!(h.uid, 0);
        assert!(h.created_ms >= before && h.created_ms <= now_ms());
        assert_eq!(h.creator_pid, std::process::id());
        let start = crate::sys::process_start_time(std::process::id() as libc::pid_t);
        assert_eq!(Some(h.creator_start), start);
        assert_eq!(
            crate::sys::own_process_start_time(),
            start,
            "/proc/self agrees"
        );
        let (opened, seen, ino) = open(&name, FixedMode::No, true).unwrap();
        assert_eq!(seen, h, "open reads back every field");
        assert_eq!(
            Some(ino),
            opened.fd().map(|fd| shm::inode(fd).unwrap()),
            "its inode"
        );
        // Re-created under the same name: a new identity; the old uid unlinks nothing.
        shm::unlink(&name).unwrap();
        let (again, h2) = create(&name, 8192, 0o600, Placement::Anywhere, Backing::Lazy).unwrap();
        publish(&again);
        assert_ne!(h2.uid, h.uid);
        assert!(
            !unlink_if_uid(&name, h.uid).unwrap(),
            "someone else's segment"
        );
        assert!(!unlink_if_uid(&name, 0).unwrap());
        assert!(unlink_if_uid(&name, h2.uid).unwrap());
        assert!(!unlink_if_uid(&name, h2.uid).unwrap(), "already gone");
        // A foreign object under the name is never removed.
        let fd = shm::open(
            &name,
            shm::OpenMode::Exclusive,
            shm::check_permissions(0o600).unwrap(),
        )
        .unwrap();
        shm::truncate(fd, 4096).unwrap();
        shm::close(fd).unwrap();
        assert!(!unlink_if_uid(&name, h2.uid).unwrap());
        drop((region, opened, again));
    }

    /// The resident size of the mapping starting at `addr`, from /proc/self/smaps.
    fn rss_kib(addr: usize) -> u64 {
        let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
        let start = format!("{addr:x}-");
        let mut lines = smaps.lines().skip_while(|l| !l.starts_with(&start));
        assert!(lines.next().is_some(), "the mapping is listed");
        let rss = lines.find(|l| l.starts_with("Rss:")).unwrap();
        rss.split_whitespace().nth(1).unwrap().parse().unwrap()
    }

    #[test]
    fn open_touches_no_page_and_learns_what_is_backed() {
        let name = format!("/shmutils-rs-untouched-{}", std::process::id());
        let _cleanup = shm::UnlinkOnDrop(name.clone());
        let (region, _) =
            create(&name, 1 << 20, 0o600, Placement::Anywhere, Backing::Lazy).unwrap();
        publish(&region);
        let backed = region.backed_prefix();
        assert!(backed >= HEADER_SIZE, "the header's page is backed");
        for read_only in [false, true] {
            let (opened, _, _) = open(&name, FixedMode::No, read_only).unwrap();
            assert_eq!(
                rss_kib(opened.addr()),
                0,
                "no page of the mapping is touched"
            );
            assert_eq!(
                opened.backed_prefix(),
                backed,
                "the header's `backed`, read with pread"
            );
            opened.close();
        }
        region.close();
    }
}
