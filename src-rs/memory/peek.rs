//! Looking at a segment without mapping it, for diagnostic tools (`npx shmutils ls`,
//! `gc`): what the object is (`fstat`), what its header says, and the heap's counters,
//! all read with `pread`, and whether anyone maps it, from its liveness bytes
//! (`F_OFD_GETLK`, docs/FORMAT.md §6.3: every process that maps a segment holds a read
//! lock on `LIVE_BASE`, its creator a write lock on `LIVE_BASE + 1`, in any PID namespace).
//! Nothing is written, locked or mapped, so looking never makes a segment "in use", and a
//! foreign or damaged object is reported, never trusted.

use crate::error::Result;
use crate::heap::survey::{peek_counters, Counters, PEEK_LEN};
use crate::memory::segment::{self, Header, MAGIC, MIN_SIZE};
use crate::memory::shm;

/// What the object under a name is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// A shmutils segment with a valid header.
    Segment(Header),
    /// Empty, or its magic is still 0: its creator has not finished (or died before).
    Unfinished,
    /// A shmutils segment of another format version.
    Version(u32),
    /// Not a shmutils segment (or a damaged one): why.
    Foreign(String),
}

/// What [`peek`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peek {
    /// The object's size (`fstat`).
    pub size: u64,
    /// Its inode number (0 where the system reports none).
    pub inode: u64,
    /// Its owner's user id.
    pub owner: u32,
    /// Its permission bits.
    pub mode: u32,
    /// What it is.
    pub kind: Kind,
    /// The heap's counters (segments whose heap header reads as valid).
    pub heap: Option<Counters>,
    /// Whether the creator recorded in the header still runs, as far as this process can
    /// tell: `Some(true)` if a process with its pid exists here with its start time,
    /// `Some(false)` if not (it may run in another PID namespace), `None` when the header
    /// does not say who created it.
    pub creator_alive: Option<bool>,
    /// Whether some process maps it (its "attached" liveness byte is locked), from any
    /// PID namespace; `None` where the system cannot tell (no OFD locks: macOS).
    pub attached: Option<bool>,
    /// Whether its creating process still maps it (the "creator" byte); `None` as above.
    pub creator_mapped: Option<bool>,
}

/// Looks at the object `name` (opened read-only, closed again).
///
/// # Errors
/// A bad name; `ENOENT`, `EACCES` and the other errors of `shm_open`, `fstat`, `pread`.
pub fn peek(name: &str) -> Result<Peek> {
    let name = shm::normalize_name(name)?;
    let fd = shm::open(&name, shm::OpenMode::Read, shm::check_permissions(0)?)?;
    let r = peek_fd(fd).map_err(|e| e.with_path(&name));
    let _ = shm::close(fd);
    r
}

/// [`peek`] on an open descriptor.
///
/// # Errors
/// `fstat` and `pread` errors.
pub fn peek_fd(fd: i32) -> Result<Peek> {
    let st = shm::fstat(fd)?;
    let size = st.st_size as u64;
    let mut p = Peek {
        size,
        inode: st.st_ino,
        owner: st.st_uid,
        #[allow(clippy::useless_conversion)] // mode_t is u16 on macOS
        mode: u32::from(st.st_mode) & 0o7777,
        kind: Kind::Unfinished,
        heap: None,
        creator_alive: None,
        // Our own descriptor is new and holds no lock: any lock seen is someone else's.
        attached: crate::sys::live_byte_held(fd, crate::sys::LIVE_ATTACHED),
        creator_mapped: crate::sys::live_byte_held(fd, crate::sys::LIVE_CREATOR),
    };
    if st.st_mode & libc::S_IFMT != libc::S_IFREG {
        p.kind = Kind::Foreign("not a regular file".into());
        return Ok(p);
    }
    // A creator sizes its object from 0 to the whole segment in one step: 0 bytes is one
    // not sized yet, and anything between that and the smallest segment is someone else's
    // (a POSIX semaphore is 32 bytes), never a segment to collect.
    if size == 0 {
        return Ok(p);
    }
    if size < MIN_SIZE {
        p.kind = Kind::Foreign(format!("{size} bytes, smaller than any shmutils segment"));
        return Ok(p);
    }
    let bytes = segment::read_header(fd)?;
    let magic = u64::from_le_bytes(bytes[0..8].try_into().expect("8 bytes"));
    let version = u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes"));
    p.kind = if magic == 0 {
        Kind::Unfinished
    } else if magic != MAGIC {
        Kind::Foreign("no shmutils header".into())
    } else if version != segment::VERSION {
        Kind::Version(version)
    } else {
        match segment::validate(&bytes, size) {
            Ok(h) => Kind::Segment(h),
            Err(why) => Kind::Foreign(format!("damaged header: {why}")),
        }
    };
    if let Kind::Segment(h) = &p.kind {
        p.heap = read_at(fd, h.heap_offset, PEEK_LEN)?.and_then(|b| peek_counters(&b, h.heap_size));
        p.creator_alive = (h.creator_pid != 0).then(|| {
            crate::sys::process_start_time(h.creator_pid as libc::pid_t).is_some_and(|start| {
                h.creator_start == 0 || crate::sys::same_start_time(start, h.creator_start)
            })
        });
    }
    Ok(p)
}

/// `len` bytes at `offset` of `fd`, or `None` if the object ends before.
fn read_at(fd: i32, offset: u64, len: usize) -> Result<Option<Vec<u8>>> {
    let mut buf = vec![0u8; len];
    let n = shm::pread_full(fd, offset, &mut buf)?;
    Ok((n == len).then_some(buf))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::segment::{create, publish, Backing, Placement};

    #[test]
    fn peek_tells_segments_from_everything_else() {
        let name = format!("/shmutils-rs-peek-{}", std::process::id());
        let _cleanup = shm::UnlinkOnDrop(name.clone());
        let (region, h) = create(&name, 65536, 0o640, Placement::Anywhere, Backing::Lazy).unwrap();
        assert_eq!(
            peek(&name).unwrap().kind,
            Kind::Unfinished,
            "not published yet"
        );
        crate::heap::format_heap(&region, h.heap_offset, h.heap_size).unwrap();
        publish(&region);
        let p = peek(&name).unwrap();
        assert_eq!(p.kind, Kind::Segment(h));
        assert_eq!((p.size, p.mode), (65536, 0o640));
        assert_eq!(p.creator_alive, Some(true), "this process");
        if cfg!(target_os = "linux") {
            // segment::create does not mark (the JavaScript boundary does): nobody yet.
            assert_eq!((p.attached, p.creator_mapped), (Some(false), Some(false)));
            crate::sync::liveness::mark_attached(&region, true);
            let p = peek(&name).unwrap();
            assert_eq!((p.attached, p.creator_mapped), (Some(true), Some(true)));
        }
        let c = p.heap.unwrap();
        assert_eq!(
            (c.heap_len, c.allocations, c.named, c.busy),
            (h.heap_size, 0, 0, false)
        );
        // Another version, then foreign bytes, then too small.
        // SAFETY: offsets inside the live 64 KiB mapping.
        unsafe { *((region.addr() + 8) as *mut u32) = 7 };
        assert_eq!(peek(&name).unwrap().kind, Kind::Version(7));
        // SAFETY: as above.
        unsafe { *(region.addr() as *mut u64) = 0x1234 };
        assert!(matches!(peek(&name).unwrap().kind, Kind::Foreign(_)));
        region.close();
        let fd = shm::open(
            &name,
            shm::OpenMode::ReadWrite,
            shm::check_permissions(0).unwrap(),
        )
        .unwrap();
        // Too small for any segment (a POSIX semaphore is 32 bytes): someone else's.
        shm::truncate(fd, 100).unwrap();
        let p = peek(&name).unwrap();
        assert!(matches!(p.kind, Kind::Foreign(_)), "{:?}", p.kind);
        assert_eq!((p.size, p.heap), (100, None));
        // Empty: a creator that has not sized it yet.
        shm::truncate(fd, 0).unwrap();
        shm::close(fd).unwrap();
        let p = peek(&name).unwrap();
        assert_eq!((p.kind, p.size, p.heap), (Kind::Unfinished, 0, None));
        assert_eq!(peek("/shmutils-rs-peek-none").unwrap_err().code, "ENOENT");
    }
}
