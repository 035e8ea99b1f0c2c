//! Anonymous segments: a managed segment (header and heap, as [`segment`]) on an object
//! that has no name, so nothing can leak in `/dev/shm` and the memory is gone when the
//! last process that maps it (or holds a descriptor of it) lets go.
//!
//! | platform | object | shared with other processes by |
//! |---|---|---|
//! | Linux | `memfd_create("shmutils", MFD_CLOEXEC \| MFD_ALLOW_SEALING)`, sealed against shrinking and growing once sized (so nobody can truncate it under a mapping); where the kernel has no `memfd_create`, an `O_TMPFILE` file in `/dev/shm` (never named either) | inheriting the descriptor (`spawn`'s `stdio`), or opening `/proc/<pid>/fd/<n>` of a process that holds it (same user) |
//! | macOS | `shm_open` of a random name, unlinked at once | inheriting the descriptor only (macOS has no `/proc`) |
//!
//! [`from_fd`] maps a managed segment from a descriptor, whoever made it.

use crate::error::{Result, ShmError};
use crate::memory::mapping::Region;
use crate::memory::segment::{self, Backing, FixedMode, Header, Placement};
use crate::memory::shm;
use std::sync::Arc;

/// What errors call an anonymous segment.
pub const LABEL: &str = "(anonymous segment)";

/// Creates an anonymous segment of at least `size` bytes, backed as `backing` says:
/// header written, heap region not yet formatted (the caller formats it, then
/// [`segment::publish`]es).
///
/// # Errors
/// `RangeError` for a bad size; `EMFILE`, `ENOMEM`, `ENOSPC` and other errors of creating,
/// sizing or mapping the object.
pub fn create(size: u64, backing: Backing) -> Result<(Arc<Region>, Header)> {
    let size = segment::segment_size(size)?;
    let fd = crate::sys::anonymous_object()?;
    let (region, header) = segment::init(fd, LABEL, size, Placement::Anywhere, backing)?;
    if let Some(fd) = region.fd() {
        // Best effort: a sealed object can never be truncated under anyone's mapping.
        crate::sys::seal_size(fd);
    }
    Ok((region, header))
}

/// Maps the managed segment behind `fd` (the caller keeps `fd`: the mapping holds a
/// close-on-exec descriptor of its own, a new open file description where the system
/// can make one, so its liveness marks are this process's own).
///
/// # Errors
/// `EBADF` for a descriptor that is not open; `ERR_SHM_BAD_HEADER` for an object that is
/// not a shmutils segment; `EACCES` for a read-only descriptor without `read_only`;
/// mapping errors.
pub fn from_fd(fd: i32, fixed: FixedMode, read_only: bool) -> Result<(Arc<Region>, Header, u64)> {
    if fd < 0 {
        return Err(ShmError::range(format!(
            "The \"fd\" argument must be a descriptor (>= 0); got {fd}"
        )));
    }
    // EBADF for a descriptor that is not open, before anything else.
    shm::fstat(fd)?;
    let own = crate::sys::reopen_object(fd, !read_only)?;
    segment::open_owned_fd(&format!("(fd {fd})"), own, fixed, read_only)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Lines of this process's maps that show a memfd made by shmutils.
    fn memfd_mappings() -> usize {
        std::fs::read_to_string("/proc/self/maps")
            .map(|m| m.lines().filter(|l| l.contains("memfd:shmutils")).count())
            .unwrap_or(0)
    }

    #[test]
    fn anonymous_segments_have_no_name_and_share_through_fds() {
        let before = memfd_mappings();
        let (region, h) = create(10_000, Backing::Lazy).unwrap();
        assert_eq!(h.size, 12_288, "rounded up to pages");
        crate::heap::format_heap(&region, h.heap_offset, h.heap_size).unwrap();
        segment::publish(&region);
        let fd = region.fd().expect("the region owns its object");
        let (other, h2, _) = from_fd(fd, FixedMode::No, false).unwrap();
        assert_eq!(h2, h, "the same header through the descriptor");
        assert_ne!(other.fd(), Some(fd), "a duplicate of its own");
        // SAFETY: both regions are live mappings of the same 12288-byte object.
        unsafe {
            *((region.addr() + 5000) as *mut u8) = 42;
            assert_eq!(*((other.addr() + 5000) as *const u8), 42);
        }
        if cfg!(target_os = "linux") {
            assert_eq!(memfd_mappings(), before + 2);
            // Sealed: nobody can shrink it under a mapping.
            assert!(shm::truncate(fd, 4096).is_err());
        }
        other.close();
        region.close();
        if cfg!(target_os = "linux") {
            assert_eq!(memfd_mappings(), before);
        }
        assert_eq!(
            from_fd(-1, FixedMode::No, false).unwrap_err().code,
            "ERR_OUT_OF_RANGE"
        );
        assert_eq!(
            create(100, Backing::Lazy).unwrap_err().code,
            "ERR_OUT_OF_RANGE",
            "below the minimum"
        );
    }

    #[test]
    fn from_fd_refuses_what_is_not_a_segment() {
        let fd = crate::sys::anonymous_object().unwrap();
        shm::truncate(fd, 8192).unwrap();
        let e = from_fd(fd, FixedMode::No, false).unwrap_err();
        assert_eq!(e.code, "ERR_SHM_BAD_HEADER");
        assert!(e.message.contains("(fd "), "{}", e.message);
        shm::close(fd).unwrap();
    }
}
