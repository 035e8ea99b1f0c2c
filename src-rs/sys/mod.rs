//! The operating-system layer: every platform-specific syscall the crate makes sits behind
//! this module. Linux lives in `linux.rs` (and `live_linux.rs`: liveness tokens), macOS in
//! `macos.rs` (and `live_macos.rs`), with the same functions and
//! constants, so the rest of the crate never says `cfg`.

#[cfg(target_os = "linux")]
mod linux;
#[cfg(target_os = "linux")]
pub use linux::*;

#[cfg(target_os = "macos")]
mod macos;
#[cfg(target_os = "macos")]
pub use macos::*;

// Liveness tokens of lock owners: OFD byte-range locks on Linux, pids on macOS.
#[cfg(target_os = "linux")]
mod live_linux;
#[cfg(target_os = "linux")]
pub use live_linux::*;
#[cfg(target_os = "macos")]
mod live_macos;
#[cfg(target_os = "macos")]
pub use live_macos::*;

/// The flags to hand to `mmap` for a request: Linux knows every `MAP_*` bit the crate uses,
/// so they pass unchanged (macOS strips its emulated `MAP_FIXED_NOREPLACE` bit here).
#[cfg(not(target_os = "macos"))]
#[inline]
pub fn prepare_flags(flags: i32) -> i32 {
    flags
}

/// First byte of the liveness area of a segment's inode: far beyond any data a segment
/// can hold (`docs/FORMAT.md` §6.3; OFD byte-range locks on Linux).
pub const LIVE_BASE: u64 = 1 << 62;
/// Byte held (read lock) by every process that maps the segment.
pub const LIVE_ATTACHED: u64 = LIVE_BASE;
/// Byte held (write lock) by the process that created the segment.
pub const LIVE_CREATOR: u64 = LIVE_BASE + 1;
/// Byte of token 0; token `t` is at `LIVE_TOKENS + t`.
pub const LIVE_TOKENS: u64 = LIVE_BASE + 16;
/// Number of usable token values: `1..=TOKEN_COUNT` (0 is "unlocked", `0x3fff_ffff` is
/// `NOT_RECOVERABLE`).
pub const TOKEN_COUNT: u32 = 0x3fff_fffe;

/// What a liveness check of a lock holder found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Liveness {
    /// The token's holder is alive.
    Alive,
    /// Nobody holds the token: its holder is gone.
    Dead,
    /// Probably gone, but confirm with a second check a slice later (macOS: a pid that
    /// may have been reused; never on Linux).
    Suspect,
}

/// A thread's hold on its liveness token: on Linux its own open file description of the
/// object, whose write lock on the token's byte dropping it releases; on macOS nothing
/// (the thread's slot is its claim).
#[derive(Debug)]
pub struct TokenClaim {
    token: u32,
    _hold: Option<std::os::fd::OwnedFd>,
}

impl TokenClaim {
    /// The token.
    pub fn token(&self) -> u32 {
        self.token
    }
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

/// The longest wait a [`Deadline`] stands for: 2^62 ns, about 146 years.
pub const FAR_NANOS: u128 = 1 << 62;

impl Deadline {
    /// The deadline `ms` milliseconds from now (fractions allowed). A wait longer than
    /// [`FAR_NANOS`] (a timeout of `1e300` ms is a valid one) waits that long: far enough
    /// to mean forever, near enough that every deadline's seconds fit a `time_t`.
    pub fn after_ms(ms: f64) -> Deadline {
        let add = if ms > 0.0 {
            ((ms * 1e6) as u128).min(FAR_NANOS)
        } else {
            0
        };
        Deadline {
            nanos: monotonic_nanos().saturating_add(add),
        }
    }

    /// The end of a re-check slice of about `ms` milliseconds starting now: the first
    /// multiple of `ms` on the monotonic clock at least half a slice away, so a slice
    /// lasts 0.5 to 1.5 times `ms`, once on average. Every wait of the process ends its
    /// slices at the same instants: a waiter thread running many waits wakes once a slice
    /// for all of them, not once for each (`sync/waiter.rs`).
    pub fn slice_ms(ms: f64) -> Deadline {
        let slice = ((ms * 1e6) as u128).max(1);
        let at = monotonic_nanos() + slice / 2;
        Deadline {
            nanos: at.div_ceil(slice) * slice,
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::time::{Duration, Instant};

    #[test]
    fn a_huge_finite_timeout_is_far_away_never_past() {
        const CENTURY: u128 = 100 * 365 * 86_400 * 1_000_000_000;
        for ms in [1e32, 1e33, 1e300, f64::MAX] {
            let d = Deadline::after_ms(ms);
            assert!(!d.passed(), "{ms} ms");
            assert!(d.remaining_nanos() > CENTURY, "{ms} ms");
        }
        assert!(Deadline::after_ms(0.0).passed());
        assert!(Deadline::after_ms(-5.0).passed());
    }

    #[test]
    fn slices_end_on_a_shared_grid_half_to_one_and_a_half_slices_away() {
        const SLICE: u128 = 50_000_000;
        let mut ends = Vec::new();
        let start = monotonic_nanos();
        for _ in 0..200 {
            let before = monotonic_nanos();
            let d = Deadline::slice_ms(50.0);
            let after = monotonic_nanos();
            assert_eq!(d.nanos % SLICE, 0, "on the grid");
            assert!(d.nanos >= before + SLICE / 2, "at least half a slice away");
            assert!(
                d.nanos <= after + SLICE / 2 + SLICE,
                "at most one and a half"
            );
            ends.push(d.nanos);
            std::thread::sleep(Duration::from_micros(100));
        }
        // 200 slices begun over ~20 ms (more on a loaded machine) end at one instant per
        // slice that passed meanwhile, plus one: not 200.
        let most = (monotonic_nanos() - start) / SLICE + 2;
        ends.dedup();
        assert!(ends.len() as u128 <= most, "{} distinct ends", ends.len());
    }

    #[test]
    fn a_futex_wait_with_a_huge_timeout_sleeps_until_woken() {
        let word = std::sync::Arc::new(AtomicU32::new(0));
        let waker = {
            let word = word.clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(50));
                word.store(1, Ordering::SeqCst);
                futex_wake(&word, 1);
            })
        };
        let t0 = Instant::now();
        while word.load(Ordering::SeqCst) == 0 {
            let out = futex_wait(&word, 0, Some(Deadline::after_ms(1e300)));
            assert_eq!(out, WaitOutcome::Retry);
        }
        assert!(t0.elapsed() >= Duration::from_millis(40));
        waker.join().unwrap();
    }
}
