//! macOS: shared-memory objects without a name, for anonymous segments. macOS has no
//! `memfd_create`: a fresh object is created under a random name and unlinked at once,
//! so it has no name a microsecond later and nothing can leak.

use crate::error::{Result, ShmError};
use nix::errno::Errno;

/// A new, empty, close-on-exec shared-memory object that has no name.
///
/// # Errors
/// `EMFILE`, `ENOSPC`, `EACCES` from `shm_open`.
pub fn anonymous_object() -> Result<i32> {
    for _ in 0..16 {
        // 31 bytes at most (PSHMNAMLEN): "/shmu-" and 16 hex digits.
        let name = std::ffi::CString::new(format!("/shmu-{:016x}", super::random_u64()))
            .expect("no NUL in a hex name");
        // SAFETY: a NUL-terminated name, integer flags and a mode.
        let fd = unsafe {
            libc::shm_open(
                name.as_ptr(),
                libc::O_RDWR | libc::O_CREAT | libc::O_EXCL,
                0o600 as libc::c_uint,
            )
        };
        if fd < 0 {
            if Errno::last() == Errno::EEXIST {
                continue;
            }
            return Err(ShmError::last_os("shm_open"));
        }
        // SAFETY: the name we just created; the object lives on through `fd`.
        unsafe { libc::shm_unlink(name.as_ptr()) };
        // SAFETY: FD_CLOEXEC on our own descriptor.
        unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
        return Ok(fd);
    }
    Err(ShmError::new(
        "EEXIST",
        "could not find a free name for an anonymous segment",
    ))
}

/// macOS cannot seal objects: nothing to do.
pub fn seal_size(_fd: i32) {}

/// A close-on-exec duplicate of `fd` (macOS has no `/proc` to re-open it through).
///
/// # Errors
/// `EBADF` for a descriptor that is not open; `EMFILE`.
pub fn reopen_object(fd: i32, _writable: bool) -> Result<i32> {
    crate::memory::shm::dup_cloexec(fd)
}
