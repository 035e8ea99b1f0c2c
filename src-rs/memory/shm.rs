//! POSIX shared-memory objects: names, modes, `shm_open`, `shm_unlink`, size and truncate.

use crate::error::{Result, ShmError};
use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::stat::Mode;
use std::os::fd::{IntoRawFd, RawFd};

/// The longest name (without the leading `/`) the platform accepts.
#[cfg(target_os = "macos")]
pub const MAX_NAME_LEN: usize = 30; // PSHMNAMLEN is 31 including the leading '/'
/// The longest name (without the leading `/`) the platform accepts.
#[cfg(not(target_os = "macos"))]
pub const MAX_NAME_LEN: usize = 254; // NAME_MAX 255 for the file under /dev/shm

/// Checks a segment name and returns it with exactly one leading `/`.
///
/// # Errors
/// `TypeError` for an empty name, a `/` after the first character, a NUL byte, or the
/// names `.` and `..`; `RangeError` when longer than [`MAX_NAME_LEN`].
pub fn normalize_name(name: &str) -> Result<String> {
    let bare = name.strip_prefix('/').unwrap_or(name);
    if bare.is_empty() {
        return Err(ShmError::type_error(
            "The \"name\" argument must not be empty",
        ));
    }
    if bare.contains('/') {
        return Err(ShmError::type_error(format!(
            "The \"name\" argument may only have one leading '/': {name:?}"
        )));
    }
    if bare.contains('\0') {
        return Err(ShmError::type_error(
            "The \"name\" argument must not contain NUL bytes",
        ));
    }
    if bare == "." || bare == ".." {
        return Err(ShmError::type_error(format!(
            "The \"name\" argument {name:?} is reserved"
        )));
    }
    if bare.len() > MAX_NAME_LEN {
        return Err(ShmError::range(format!(
            "The \"name\" argument is {} bytes long; at most {MAX_NAME_LEN} are allowed here",
            bare.len()
        )));
    }
    Ok(format!("/{bare}"))
}

/// How `shm_open` treats an existing or missing object; the original library's modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenMode {
    /// `r`: read-only, must exist.
    Read,
    /// `r+`: read/write, must exist.
    ReadWrite,
    /// `w`: read/write, create or truncate to 0.
    Truncate,
    /// `w+`: read/write, create if missing, keep contents.
    Create,
    /// `x` / `x+`: read/write, create; `EEXIST` if it exists.
    Exclusive,
}

impl OpenMode {
    /// Parses `'r' | 'r+' | 'w' | 'w+' | 'x' | 'x+'`.
    ///
    /// # Errors
    /// `TypeError` naming the mode for anything else.
    pub fn parse(mode: &str) -> Result<OpenMode> {
        Ok(match mode {
            "r" => OpenMode::Read,
            "r+" => OpenMode::ReadWrite,
            "w" => OpenMode::Truncate,
            "w+" => OpenMode::Create,
            "x" | "x+" => OpenMode::Exclusive,
            _ => {
                return Err(ShmError::type_error(format!(
                    "The \"mode\" argument must be one of 'r', 'r+', 'w', 'w+', 'x', 'x+'; got {mode:?}"
                )))
            }
        })
    }

    fn flags(self) -> OFlag {
        match self {
            OpenMode::Read => OFlag::O_RDONLY,
            OpenMode::ReadWrite => OFlag::O_RDWR,
            OpenMode::Truncate => OFlag::O_RDWR | OFlag::O_CREAT | OFlag::O_TRUNC,
            OpenMode::Create => OFlag::O_RDWR | OFlag::O_CREAT,
            OpenMode::Exclusive => OFlag::O_RDWR | OFlag::O_CREAT | OFlag::O_EXCL,
        }
    }
}

/// Checks permission bits: an integer in `0..=0o777`.
///
/// # Errors
/// `RangeError` otherwise.
pub fn check_permissions(permissions: u64) -> Result<Mode> {
    if permissions > 0o777 {
        return Err(ShmError::range(format!(
            "The \"permissions\" argument must be within 0o0..0o777; got {permissions} (0o{permissions:o})"
        )));
    }
    Ok(Mode::from_bits_truncate(permissions as _))
}

/// Opens (and maybe creates) the object `name` (already normalized). Returns the fd,
/// close-on-exec. On Linux an object created exclusively gets exactly `permissions`
/// (`fchmod` after create undoes the umask); `w`/`w+` may open someone else's object, so
/// there the umask applies as with `open(2)`. macOS refuses `fchmod` on shm descriptors
/// (and `O_CLOEXEC` in `shm_open` on recent releases), so there the umask applies and
/// close-on-exec is set with `fcntl`.
///
/// # Errors
/// The `shm_open` errno (`ENOENT`, `EEXIST`, `EACCES`, ...) with `path` set.
pub fn open(name: &str, mode: OpenMode, permissions: Mode) -> Result<RawFd> {
    // O_NONBLOCK: a FIFO someone put under the name must not block a read-only open
    // forever (it is then no segment: the caller's fstat says so); a regular file (every
    // shm object) ignores the flag.
    #[cfg(target_os = "linux")]
    let flags = mode.flags() | OFlag::O_CLOEXEC | OFlag::O_NONBLOCK;
    #[cfg(not(target_os = "linux"))]
    let flags = mode.flags();
    let fd = nix::sys::mman::shm_open(name, flags, permissions)
        .map_err(|e| ShmError::sys(e, "shm_open").with_path(name))?;
    #[cfg(target_os = "linux")]
    if mode == OpenMode::Exclusive {
        // We created it: give it exactly the bits asked for, whatever the umask cleared.
        nix::sys::stat::fchmod(&fd, permissions)
            .map_err(|e| ShmError::sys(e, "fchmod").with_path(name))?;
    }
    #[cfg(not(target_os = "linux"))]
    nix::fcntl::fcntl(
        &fd,
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
    )
    .map_err(|e| ShmError::sys(e, "fcntl").with_path(name))?;
    Ok(fd.into_raw_fd())
}

/// Removes the name `name` (already normalized).
///
/// # Errors
/// `ENOENT` if there is no such object, `EACCES` if not allowed.
pub fn unlink(name: &str) -> Result<()> {
    nix::sys::mman::shm_unlink(name).map_err(|e| ShmError::sys(e, "shm_unlink").with_path(name))
}

/// The size in bytes of the object behind `fd`.
///
/// # Errors
/// `EBADF` for a closed descriptor.
pub fn size(fd: RawFd) -> Result<u64> {
    Ok(fstat(fd)?.st_size as u64)
}

/// The size in bytes and the inode number (see [`inode`]) of the object behind `fd`, from
/// one `fstat`.
///
/// # Errors
/// `EBADF` for a closed descriptor.
pub fn size_and_inode(fd: RawFd) -> Result<(u64, u64)> {
    let st = fstat(fd)?;
    Ok((st.st_size as u64, st.st_ino))
}

/// The inode number of the object behind `fd`: with the segment's `uid`, what tells a
/// re-created object from the one a handle was made for. 0 where the system gives none
/// (macOS reports no inode for shm objects).
///
/// # Errors
/// `EBADF` for a closed descriptor.
pub fn inode(fd: RawFd) -> Result<u64> {
    Ok(fstat(fd)?.st_ino)
}

/// `fstat` of `fd`.
///
/// # Errors
/// `EBADF` for a closed descriptor.
pub(crate) fn fstat(fd: RawFd) -> Result<libc::stat> {
    // SAFETY: fstat writes into the zeroed struct we pass; a bad fd gives EBADF.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `st` is a valid, writable stat buffer.
    if unsafe { libc::fstat(fd, &mut st) } != 0 {
        return Err(ShmError::last_os("fstat"));
    }
    Ok(st)
}

/// Sets the size of the object behind `fd`.
///
/// # Errors
/// `EINVAL` for a read-only descriptor or a size the system refuses, `EBADF`, `EFBIG`.
pub fn truncate(fd: RawFd, size: u64) -> Result<()> {
    if size > i64::MAX as u64 {
        return Err(ShmError::range(format!(
            "The \"size\" argument {size} is too large"
        )));
    }
    loop {
        // SAFETY: ftruncate takes integers only.
        if unsafe { libc::ftruncate(fd, size as libc::off_t) } == 0 {
            return Ok(());
        }
        if Errno::last() != Errno::EINTR {
            return Err(ShmError::last_os("ftruncate"));
        }
    }
}

/// Closes `fd`.
///
/// # Errors
/// `EBADF` if it was not open.
pub fn close(fd: RawFd) -> Result<()> {
    // SAFETY: closing an integer descriptor; ownership is the caller's business.
    if unsafe { libc::close(fd) } != 0 && Errno::last() != Errno::EINTR {
        return Err(ShmError::last_os("close"));
    }
    Ok(())
}

/// A close-on-exec duplicate of `fd`, owned by the caller.
///
/// # Errors
/// `EBADF`, `EMFILE`.
pub fn dup_cloexec(fd: RawFd) -> Result<RawFd> {
    // SAFETY: F_DUPFD_CLOEXEC only reads `fd` and returns a new descriptor or -1.
    let d = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 0) };
    if d < 0 {
        return Err(ShmError::last_os("fcntl"));
    }
    Ok(d)
}

/// Reads into `buf` from `offset` of `fd` until it is full or the object ends; returns
/// the bytes read (`pread`, no mapping needed).
///
/// # Errors
/// `EBADF`, `EIO` and the other `pread` errors.
pub(crate) fn pread_full(fd: RawFd, offset: u64, buf: &mut [u8]) -> Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        // SAFETY: the destination is the unfilled tail of `buf`; pread writes at most
        // that many bytes.
        let n = unsafe {
            libc::pread(
                fd,
                buf[done..].as_mut_ptr().cast(),
                buf.len() - done,
                (offset + done as u64) as libc::off_t,
            )
        };
        match n {
            0 => break,
            n if n > 0 => done += n as usize,
            _ if Errno::last() == Errno::EINTR => continue,
            _ => return Err(ShmError::last_os("pread")),
        }
    }
    Ok(done)
}

/// Unlinks a name when dropped, so a test that fails leaves nothing behind.
#[cfg(test)]
pub(crate) struct UnlinkOnDrop(pub(crate) String);

#[cfg(test)]
impl Drop for UnlinkOnDrop {
    fn drop(&mut self) {
        let _ = unlink(&self.0);
    }
}

/// A fresh, exclusively created object of `len` bytes for tests, unlinked (and its
/// descriptor closed) when dropped, also when the test fails. (Used by the Linux-only
/// tests of backing and the SIGBUS guard.)
#[cfg(all(test, target_os = "linux"))]
pub(crate) struct TestObject {
    pub(crate) name: String,
    pub(crate) fd: RawFd,
}

#[cfg(all(test, target_os = "linux"))]
impl TestObject {
    pub(crate) fn new(tag: &str, len: u64) -> TestObject {
        let name = format!(
            "/shmutils-rs-{tag}-{}-{}",
            std::process::id(),
            crate::sys::random_u64() % 1_000_000
        );
        let fd = open(
            &name,
            OpenMode::Exclusive,
            check_permissions(0o600).unwrap(),
        )
        .unwrap();
        let obj = TestObject { name, fd };
        truncate(fd, len).unwrap();
        obj
    }
}

#[cfg(all(test, target_os = "linux"))]
impl Drop for TestObject {
    fn drop(&mut self) {
        let _ = close(self.fd);
        let _ = unlink(&self.name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_normalized_and_validated() {
        assert_eq!(normalize_name("abc").unwrap(), "/abc");
        assert_eq!(normalize_name("/abc").unwrap(), "/abc");
        assert!(normalize_name("").is_err());
        assert!(normalize_name("/").is_err());
        assert!(normalize_name("a/b").is_err());
        assert!(normalize_name("//a").is_err());
        assert!(normalize_name("..").is_err());
        assert!(normalize_name(&"x".repeat(MAX_NAME_LEN + 1)).is_err());
        assert!(normalize_name(&"x".repeat(MAX_NAME_LEN)).is_ok());
    }

    #[test]
    fn modes_follow_the_original() {
        let name = format!("/shmutils-rs-modes-{}", std::process::id());
        let perms = check_permissions(0o600).unwrap();
        assert_eq!(
            open(&name, OpenMode::Read, perms).unwrap_err().code,
            "ENOENT"
        );
        let fd = open(&name, OpenMode::Exclusive, perms).unwrap();
        truncate(fd, 8192).unwrap();
        assert_eq!(size(fd).unwrap(), 8192);
        close(fd).unwrap();
        assert_eq!(
            open(&name, OpenMode::Exclusive, perms).unwrap_err().code,
            "EEXIST"
        );
        let fd = open(&name, OpenMode::Create, perms).unwrap();
        assert_eq!(size(fd).unwrap(), 8192, "w+ keeps the contents");
        close(fd).unwrap();
        let fd = open(&name, OpenMode::Truncate, perms).unwrap();
        assert_eq!(size(fd).unwrap(), 0, "w truncates");
        close(fd).unwrap();
        let fd = open(&name, OpenMode::Read, perms).unwrap();
        assert_eq!(truncate(fd, 4096).unwrap_err().code, "EINVAL", "read-only");
        close(fd).unwrap();
        unlink(&name).unwrap();
        assert_eq!(unlink(&name).unwrap_err().code, "ENOENT");
    }
}
