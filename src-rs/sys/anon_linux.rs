//! Linux: shared-memory objects without a name (`memfd_create`), for anonymous segments.

use crate::error::{Result, ShmError};
use nix::errno::Errno;

/// What `/proc/<pid>/maps` and `/proc/<pid>/fd` show for our memfds: `/memfd:shmutils`.
const MEMFD_NAME: &std::ffi::CStr = c"shmutils";

/// A new, empty, close-on-exec shared-memory object that has no name and never had one:
/// `memfd_create` (Linux 3.17), else an `O_TMPFILE` file in `/dev/shm` (tmpfs, Linux
/// 3.11), which has no name either. Called through `syscall()` so the binary needs no
/// newer glibc than 2.17.
///
/// # Errors
/// `EMFILE`, `ENOMEM`, or the `open` error of the fallback.
pub fn anonymous_object() -> Result<i32> {
    // SAFETY: memfd_create reads the NUL-terminated name and takes integer flags.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_memfd_create,
            MEMFD_NAME.as_ptr(),
            libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING,
        )
    };
    if fd >= 0 {
        let fd = fd as i32;
        // A memfd is created with mode 0777; segments are 0600, anonymous ones too (others
        // with access to this process's /proc/<pid>/fd could otherwise open it).
        // SAFETY: fchmod takes a descriptor we own and an integer mode.
        if unsafe { libc::fchmod(fd, 0o600) } != 0 {
            let e = ShmError::last_os("fchmod");
            // SAFETY: closing the descriptor made above, used nowhere else.
            unsafe { libc::close(fd) };
            return Err(e);
        }
        return Ok(fd);
    }
    let e = Errno::last();
    if e != Errno::ENOSYS && e != Errno::EPERM {
        return Err(ShmError::sys(e, "memfd_create"));
    }
    // SAFETY: a NUL-terminated path and integer flags; O_TMPFILE needs a mode.
    let fd = unsafe {
        libc::open(
            c"/dev/shm".as_ptr(),
            libc::O_TMPFILE | libc::O_RDWR | libc::O_CLOEXEC,
            0o600 as libc::c_uint,
        )
    };
    if fd < 0 {
        return Err(ShmError::last_os("open"));
    }
    Ok(fd)
}

/// Seals a memfd's size (`F_SEAL_SHRINK | F_SEAL_GROW`, then `F_SEAL_SEAL`): from now on
/// nobody can truncate it under a mapping (a mapping of a shrunk object faults). Best
/// effort: an object that cannot be sealed (the `O_TMPFILE` fallback) stays as it is.
pub fn seal_size(fd: i32) {
    // SAFETY: F_ADD_SEALS takes an integer argument and changes only the object's seals.
    unsafe {
        libc::fcntl(
            fd,
            libc::F_ADD_SEALS,
            libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_SEAL,
        )
    };
}

/// A new open file description of the object behind `fd` (close-on-exec): the object
/// re-opened through `/proc/self/fd`, so this process's locks on it (the liveness bytes)
/// are its own, not those of whoever handed `fd` over. Falls back to a duplicate of `fd`
/// (the same description) where `/proc` cannot do it.
///
/// # Errors
/// `EBADF` for a descriptor that is not open; `EMFILE`.
pub fn reopen_object(fd: i32, writable: bool) -> Result<i32> {
    let path = std::ffi::CString::new(format!("/proc/self/fd/{fd}")).expect("no NUL");
    let mode = if writable {
        libc::O_RDWR
    } else {
        libc::O_RDONLY
    };
    // SAFETY: a NUL-terminated path and integer flags.
    let new = unsafe { libc::open(path.as_ptr(), mode | libc::O_CLOEXEC) };
    if new >= 0 {
        return Ok(new);
    }
    crate::memory::shm::dup_cloexec(fd)
}
