//! POSIX shared-memory objects at the boundary: `shm_open`, `shm_unlink`, name
//! normalization and the file-descriptor calls on them (`crate::memory::shm` does the work).

use crate::js::args::to_u64;
use crate::memory::shm;
use napi_derive::napi;

/// An opened POSIX shm object.
#[napi(object)]
pub struct OpenedObject {
    /// Normalized name.
    pub name: String,
    /// File descriptor.
    pub fd: i32,
}

/// `shm_open` with the original library's modes.
#[napi]
pub fn shm_open(name: String, mode: String, permissions: f64) -> napi::Result<OpenedObject> {
    let name = shm::normalize_name(&name)?;
    let fd = shm::open(
        &name,
        shm::OpenMode::parse(&mode)?,
        shm::check_permissions(to_u64("permissions", permissions)?)?,
    )?;
    Ok(OpenedObject { name, fd })
}

/// `shm_unlink`.
#[napi]
pub fn shm_unlink(name: String) -> napi::Result<()> {
    Ok(shm::unlink(&shm::normalize_name(&name)?)?)
}

/// Normalizes and validates a segment name (the command-line tool's; the library's own
/// calls normalize natively).
#[napi]
pub fn normalize_name(name: String) -> napi::Result<String> {
    Ok(shm::normalize_name(&name)?)
}

/// `fstat(fd).st_size`.
#[napi]
pub fn fd_size(fd: i32) -> napi::Result<f64> {
    Ok(shm::size(fd)? as f64)
}

/// `ftruncate(fd, size)`.
#[napi]
pub fn fd_truncate(fd: i32, size: f64) -> napi::Result<()> {
    Ok(shm::truncate(fd, to_u64("size", size)?)?)
}

/// `close(fd)`.
#[napi]
pub fn fd_close(fd: i32) -> napi::Result<()> {
    Ok(shm::close(fd)?)
}
