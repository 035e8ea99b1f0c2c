//! macOS: liveness tokens for lock owners, the same API as `live_linux.rs`.
//!
//! Darwin has no open-file-description locks, and POSIX `fcntl` locks belong to the
//! process (not the thread) and are all dropped when the process closes *any* descriptor
//! of the file: a user's `shmOpen(name).close()` would silently make every lock this
//! process holds look abandoned. Darwin has no PID namespaces either, so the token is the
//! thread id of `macos.rs` (the pid in bits 13..=29, a per-process slot in bits 0..=12)
//! and liveness is asked of the kernel by pid: the process exists and, for a thread of
//! this process, its slot is still taken. Against pid reuse the holder records its
//! process's start time in the lock record; a mismatch is only [`Liveness::Suspect`]
//! (the holder's start-time stores may not be visible yet, arm64 being weakly ordered),
//! so a waiter declares the holder dead when it sees the mismatch on two checks in a row.

use super::{Liveness, TokenClaim};
use crate::error::{Result, ShmError};
use std::os::fd::RawFd;
use std::sync::atomic::AtomicU32;

/// The calling thread's token: its thread id (pid and slot), whatever the object.
///
/// # Errors
/// Never on macOS.
pub fn claim_token(_object: RawFd, _next: Option<&AtomicU32>) -> Result<TokenClaim> {
    Ok(TokenClaim {
        token: super::thread_id(),
        _hold: None,
    })
}

/// Whether token `token`'s holder is alive; `recorded_start` is the start time the
/// holder recorded beside the word (`None` when it has not recorded itself yet).
pub fn token_liveness(_object: RawFd, token: u32, recorded_start: Option<u64>) -> Liveness {
    let Some(now) = super::thread_start_time(token) else {
        return Liveness::Dead;
    };
    match recorded_start {
        None | Some(0) => Liveness::Alive,
        Some(r) if r == now => Liveness::Alive,
        Some(_) => Liveness::Suspect,
    }
}

/// No process marks without OFD locks.
pub fn mark_attached(_fd: RawFd, _creator: bool) {}

/// Unknown without OFD locks.
pub fn live_byte_held(_fd: RawFd, _at: u64) -> Option<bool> {
    None
}

/// No object is needed for tokens here.
///
/// # Errors
/// Never on macOS.
pub fn private_object() -> Result<RawFd> {
    Ok::<_, ShmError>(-1)
}

/// One key for every object: a thread's token is the same in all of them.
///
/// # Errors
/// Never on macOS.
pub fn object_key(_fd: RawFd) -> Result<(u64, u64)> {
    Ok::<_, ShmError>((0, 0))
}

/// The calling thread's system-wide id, low 32 bits (informational in lock records).
pub fn local_thread_id() -> u32 {
    let mut id = 0u64;
    // SAFETY: pthread_self() is the calling thread; `id` is a valid out-pointer.
    unsafe { libc::pthread_threadid_np(libc::pthread_self(), &mut id) };
    id as u32
}

/// The start time of this process (µs since the epoch), which lock records carry
/// against pid reuse.
pub fn own_start_time() -> u64 {
    super::thread_start_time(super::thread_id()).unwrap_or(0)
}
