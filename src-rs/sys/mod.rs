//! The operating-system layer: every platform-specific syscall the crate makes sits behind
//! this module. Linux lives in `linux.rs`, macOS in `macos.rs`, with the same functions and
//! constants, so the rest of the crate never says `cfg`.

#[cfg(target_os = "linux")]
mod linux;
#[cfg(target_os = "linux")]
pub use linux::*;

#[cfg(target_os = "macos")]
mod macos;
#[cfg(target_os = "macos")]
pub use macos::*;

/// The flags to hand to `mmap` for a request: Linux knows every `MAP_*` bit the crate uses,
/// so they pass unchanged (macOS strips its emulated `MAP_FIXED_NOREPLACE` bit here).
#[cfg(not(target_os = "macos"))]
#[inline]
pub fn prepare_flags(flags: i32) -> i32 {
    flags
}

/// How a futex wait ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitOutcome {
    /// Woken, or the word no longer held the expected value, or a spurious wakeup:
    /// the caller re-reads the word either way.
    Retry,
    /// The deadline passed.
    TimedOut,
}

/// An absolute point on the monotonic clock, as the futex deadline API wants it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Deadline {
    /// Nanoseconds since an arbitrary fixed point of `CLOCK_MONOTONIC`.
    pub nanos: u128,
}

impl Deadline {
    /// The deadline `ms` milliseconds from now (fractions allowed).
    pub fn after_ms(ms: f64) -> Deadline {
        let add = if ms <= 0.0 { 0 } else { (ms * 1e6) as u128 };
        Deadline {
            nanos: monotonic_nanos() + add,
        }
    }

    /// Whether the deadline has passed.
    pub fn passed(&self) -> bool {
        monotonic_nanos() >= self.nanos
    }

    /// Nanoseconds left, 0 if passed.
    pub fn remaining_nanos(&self) -> u128 {
        self.nanos.saturating_sub(monotonic_nanos())
    }

    /// The earlier of `self` and `ms` from now.
    pub fn min_after_ms(self, ms: f64) -> Deadline {
        self.min(Deadline::after_ms(ms))
    }
}

/// `CLOCK_MONOTONIC` now, in nanoseconds.
pub fn monotonic_nanos() -> u128 {
    let ts = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .expect("CLOCK_MONOTONIC is always available");
    ts.tv_sec() as u128 * 1_000_000_000 + ts.tv_nsec() as u128
}

// Objects without a name for anonymous segments: memfd on Linux, an unlinked shm object
// on macOS.
#[cfg(target_os = "linux")]
mod anon_linux;
#[cfg(target_os = "linux")]
pub use anon_linux::*;
#[cfg(target_os = "macos")]
mod anon_macos;
#[cfg(target_os = "macos")]
pub use anon_macos::*;
