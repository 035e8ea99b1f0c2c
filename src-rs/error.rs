//! One error type for the whole native core.
//!
//! JavaScript sees every failure as a `ShmError` with Node's SystemError fields (`code`,
//! `errno`, `syscall`, `path`). napi-rs only carries a status and a message across the
//! boundary, so the native side encodes the fields as a small JSON object behind the
//! [`WIRE_PREFIX`]; `lib/errors.ts` turns that back into a typed error. Nothing else in
//! the crate formats errors for JavaScript.

use crate::heap::HeapError;
use std::fmt;

/// Marks a message that `lib/errors.ts` decodes into a `ShmError`.
pub const WIRE_PREFIX: &str = "\u{1}shm";

/// A failure of the native core, with the fields of Node's SystemError.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShmError {
    /// `'ENOENT'`, `'EINVAL'`, ... or `'ERR_SHM_*'`.
    pub code: String,
    /// Human-readable description.
    pub message: String,
    /// The OS errno, when a syscall failed.
    pub errno: Option<i32>,
    /// The failing syscall, when one failed.
    pub syscall: Option<&'static str>,
    /// The segment name involved, if any.
    pub path: Option<String>,
    /// `TypeError` / `RangeError` instead of `ShmError` (bad arguments).
    pub kind: ErrorKind,
}

/// Which JavaScript error class the failure becomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// `ShmError`
    Shm,
    /// `TypeError`
    Type,
    /// `RangeError`
    Range,
}

/// Shorthand for results of the native core.
pub type Result<T> = std::result::Result<T, ShmError>;

impl ShmError {
    /// A library error (`ERR_SHM_*` or a POSIX code name) that is not a syscall failure.
    pub fn new(code: &str, message: impl Into<String>) -> Self {
        ShmError {
            code: code.to_owned(),
            message: message.into(),
            errno: None,
            syscall: None,
            path: None,
            kind: ErrorKind::Shm,
        }
    }

    /// A failed syscall, from its errno.
    pub fn sys(errno: nix::errno::Errno, syscall: &'static str) -> Self {
        // nix's Debug form of an errno is its symbolic name, as Node prints it ('ENOENT').
        let code = format!("{errno:?}");
        ShmError {
            message: format!("{syscall} failed: {} ({code})", errno.desc()),
            code,
            errno: Some(errno as i32),
            syscall: Some(syscall),
            path: None,
            kind: ErrorKind::Shm,
        }
    }

    /// The last OS error of this thread, for a syscall called through libc directly.
    pub fn last_os(syscall: &'static str) -> Self {
        Self::sys(nix::errno::Errno::last(), syscall)
    }

    /// A bad argument: becomes a `TypeError` naming it.
    pub fn type_error(message: impl Into<String>) -> Self {
        ShmError {
            kind: ErrorKind::Type,
            ..Self::new("ERR_INVALID_ARG_TYPE", message)
        }
    }

    /// An argument out of range: becomes a `RangeError` naming it.
    pub fn range(message: impl Into<String>) -> Self {
        ShmError {
            kind: ErrorKind::Range,
            ..Self::new("ERR_OUT_OF_RANGE", message)
        }
    }

    /// Attaches the segment name.
    pub fn with_path(mut self, path: &str) -> Self {
        if self.path.is_none() {
            self.message = format!("{} '{path}'", self.message);
            self.path = Some(path.to_owned());
        }
        self
    }

    /// The wire form decoded by `lib/errors.ts`.
    pub(crate) fn to_wire(&self) -> String {
        let kind = match self.kind {
            ErrorKind::Shm => "shm",
            ErrorKind::Type => "type",
            ErrorKind::Range => "range",
        };
        let mut s = format!(
            "{WIRE_PREFIX}{{\"kind\":\"{kind}\",\"code\":{},\"message\":{}",
            json_str(&self.code),
            json_str(&self.message)
        );
        if let Some(errno) = self.errno {
            s.push_str(&format!(",\"errno\":{errno}"));
        }
        if let Some(syscall) = self.syscall {
            s.push_str(&format!(",\"syscall\":{}", json_str(syscall)));
        }
        if let Some(path) = &self.path {
            s.push_str(&format!(",\"path\":{}", json_str(path)));
        }
        s.push('}');
        s
    }
}

impl fmt::Display for ShmError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for ShmError {}

/// The allocator's errors keep their code and message.
impl From<HeapError> for ShmError {
    fn from(e: HeapError) -> Self {
        ShmError::new(e.code(), e.message())
    }
}

impl From<ShmError> for napi::Error {
    fn from(e: ShmError) -> Self {
        napi::Error::new(napi::Status::GenericFailure, e.to_wire())
    }
}

/// Escapes a string as a JSON string literal.
fn json_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_form_escapes_and_carries_fields() {
        let e = ShmError::sys(nix::errno::Errno::ENOENT, "shm_open").with_path("/a\"b");
        let w = e.to_wire();
        assert!(w.starts_with(WIRE_PREFIX));
        assert!(w.contains("\"code\":\"ENOENT\""));
        assert!(w.contains("\"errno\":2"));
        assert!(w.contains("\"syscall\":\"shm_open\""));
        assert!(w.contains("\"path\":\"/a\\\"b\""));
    }
}
