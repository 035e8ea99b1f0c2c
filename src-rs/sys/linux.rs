//! Linux: futexes, thread identity, the address-space layout, backing files with pages
//! (`fallocate`) and the SIGBUS guard (`linux/sigbus.rs`); liveness tokens of lock owners
//! are in `live_linux.rs`.

use super::{Deadline, WaitOutcome};
use std::os::fd::RawFd;
use std::sync::atomic::AtomicU32;

mod sigbus;
pub use sigbus::{
    generation as guard_generation, lost as guard_lost, register as guard_register,
    unregister as guard_unregister, GuardId, LOST_NO_SPACE, LOST_TRUNCATED,
};

/// Gives `[offset, offset + len)` of the file behind `fd` real pages now (tmpfs: takes
/// them from the filesystem's budget), so that first touches cannot fail later. Never
/// changes the file's size (`FALLOC_FL_KEEP_SIZE`). A filesystem that cannot preallocate
/// (`EOPNOTSUPP`) counts as done: there is nothing to reserve ahead of time there.
///
/// # Errors
/// The errno: `ENOSPC` (no room), `EBADF`, `EFBIG`, `EINVAL`.
pub fn fallocate(fd: RawFd, offset: u64, len: u64) -> Result<(), nix::errno::Errno> {
    use nix::errno::Errno;
    if len == 0 {
        return Ok(());
    }
    if offset > i64::MAX as u64 || len > i64::MAX as u64 - offset {
        return Err(Errno::EFBIG);
    }
    loop {
        // SAFETY: fallocate takes integers only.
        let r = unsafe {
            libc::fallocate(
                fd,
                libc::FALLOC_FL_KEEP_SIZE,
                offset as libc::off_t,
                len as libc::off_t,
            )
        };
        if r == 0 {
            return Ok(());
        }
        match Errno::last() {
            Errno::EINTR => continue,
            Errno::EOPNOTSUPP => return Ok(()),
            e => return Err(e),
        }
    }
}

/// `mmap` flag that maps at the exact address or fails with `EEXIST`, never clobbering.
/// Kernels before 4.17 ignore it and treat the address as a hint: callers compare the
/// returned address and unmap on a mismatch.
pub const MAP_FIXED_NOREPLACE: i32 = libc::MAP_FIXED_NOREPLACE;

/// `mmap` flag that prefaults the pages.
pub const MAP_POPULATE: i32 = libc::MAP_POPULATE;

/// An absolute `CLOCK_MONOTONIC` deadline as the futex syscalls take it.
fn timespec(d: Deadline) -> libc::timespec {
    libc::timespec {
        // `as _`: the field's own type (`time_t`, whose libc alias is deprecated on musl).
        tv_sec: (d.nanos / 1_000_000_000) as _,
        tv_nsec: (d.nanos % 1_000_000_000) as libc::c_long,
    }
}

/// Waits while `*word == expected`, until woken or `deadline` (absolute, monotonic).
///
/// Uses `FUTEX_WAIT_BITSET` without `FUTEX_PRIVATE_FLAG` (waiters and wakers live in
/// different processes) and without `FUTEX_CLOCK_REALTIME`, so the deadline is on
/// `CLOCK_MONOTONIC` and an `EINTR` retry does not stretch it.
pub fn futex_wait(word: &AtomicU32, expected: u32, deadline: Option<Deadline>) -> WaitOutcome {
    let ts = deadline.map(timespec);
    let ts_ptr = ts
        .as_ref()
        .map_or(std::ptr::null(), |t| t as *const libc::timespec);
    // SAFETY: `word` is a valid, aligned u32 for the duration of the call (a reference);
    // the timespec outlives the call; the other arguments are plain integers.
    let r = unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT_BITSET,
            expected,
            ts_ptr,
            std::ptr::null::<u32>(),
            libc::FUTEX_BITSET_MATCH_ANY,
        )
    };
    wait_outcome(r)
}

/// Wakes up to `n` waiters on `word` in any process. Returns how many were woken.
pub fn futex_wake(word: &AtomicU32, n: u32) -> u32 {
    let n = n.min(i32::MAX as u32) as i32;
    // SAFETY: FUTEX_WAKE only uses the address as a key; it never dereferences memory
    // we do not own. `word` is a live reference.
    let r = unsafe { libc::syscall(libc::SYS_futex, word.as_ptr(), libc::FUTEX_WAKE, n) };
    if r < 0 {
        0
    } else {
        r as u32
    }
}

/// The calling thread's kernel id (the main thread's equals the pid).
///
/// Through `syscall(SYS_gettid)`, not glibc's `gettid()` wrapper: the wrapper only exists
/// since glibc 2.30, and the release binary must load on glibc 2.17 (as Rust's std does).
pub fn thread_id() -> u32 {
    // SAFETY: gettid takes no arguments, has no preconditions and cannot fail.
    (unsafe { libc::syscall(libc::SYS_gettid) }) as u32
}

/// When thread `tid` started, in clock ticks since boot (field 22 of its `stat`), or
/// `None` if no such thread exists now. Together with the tid it names a thread uniquely,
/// which is what defeats tid reuse in dead-owner checks.
///
/// Read from `/proc/<tid>/task/<tid>/stat`, which the kernel fills from the same thread
/// as `/proc/<tid>/stat` (the value docs/FORMAT.md §6.4 names): qemu-user answers
/// `/proc/<own pid>/stat` itself, with the start time of the thread that *asks*, so a
/// waiter thread would see a live holder of its own process as dead; it passes the task
/// path through to the kernel.
pub fn thread_start_time(tid: u32) -> Option<u64> {
    start_time_in(&format!("/proc/{tid}/task/{tid}/stat"))
}

/// The start time (field 22) in the `stat` file at `path` (`/proc/<tid>/stat`,
/// `/proc/thread-self/stat`), or `None` if it is missing or names a zombie.
///
/// In the clock of the initial time namespace: the kernel adds the *reading* process's
/// boottime offset to the field (`timens_add_boottime_ns` in `do_task_stat`), so two
/// processes in different time namespaces (`unshare -T`, a CRIU-restored container)
/// would read two values for one thread; this takes the reader's offset off again. An
/// offset that is not a whole number of ticks leaves the value off by at most one tick
/// (the kernel rounds the sum down): compare with [`same_start_time`].
pub(super) fn start_time_in(path: &str) -> Option<u64> {
    let stat = std::fs::read_to_string(path).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces: split after it.
    let after = &stat[stat.rfind(')')? + 1..];
    // Field 3 is the first after ')'; start time is field 22, so index 19 here.
    let mut fields = after.split_whitespace();
    let state = fields.next()?;
    if state == "Z" || state == "X" {
        return None; // a zombie or dead thread holds nothing
    }
    let seen: u64 = fields.nth(18)?.parse().ok()?;
    Some(seen.saturating_add_signed(-boottime_offset_ticks()))
}

/// Whether two start times from [`start_time_in`] name the same moment: equal, or one
/// tick apart when either reader's time namespace has an offset of a fraction of a tick
/// (a pid is not reused within 10 ms: that would take the whole pid space in between).
pub fn same_start_time(a: u64, b: u64) -> bool {
    a.abs_diff(b) <= 1
}

/// This process's boottime offset (its time namespace's, from `/proc/self/timens_offsets`),
/// in clock ticks rounded down; 0 without time namespaces. A process never changes its
/// own time namespace (`setns` and `unshare` move only its children), so it is read once.
fn boottime_offset_ticks() -> i64 {
    static OFFSET: std::sync::OnceLock<i64> = std::sync::OnceLock::new();
    *OFFSET.get_or_init(|| {
        let text = std::fs::read_to_string("/proc/self/timens_offsets").unwrap_or_default();
        boottime_ticks_in(&text, clock_ticks_per_second())
    })
}

/// The `boottime` line of a `timens_offsets` text (`boottime <seconds> <nanoseconds>`)
/// in ticks of `hz`, rounded down; 0 if there is none.
fn boottime_ticks_in(text: &str, hz: i64) -> i64 {
    let line = text.lines().find_map(|l| l.strip_prefix("boottime"));
    let mut parts = line
        .unwrap_or("")
        .split_whitespace()
        .map(|p| p.parse::<i64>().ok());
    let (Some(Some(secs)), Some(Some(nanos))) = (parts.next(), parts.next()) else {
        return 0;
    };
    let ns = i128::from(secs) * 1_000_000_000 + i128::from(nanos);
    i64::try_from(ns.div_euclid(1_000_000_000 / i128::from(hz.max(1)))).unwrap_or(0)
}

/// `sysconf(_SC_CLK_TCK)`: the unit of `stat`'s times (100 on every Linux we know).
fn clock_ticks_per_second() -> i64 {
    // SAFETY: sysconf reads a constant of the C library; no memory is passed.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if hz > 0 {
        hz as i64
    } else {
        100
    }
}

/// When process `pid` started, in clock ticks since boot (its main thread's start time:
/// field 22 of `/proc/<pid>/stat`), or `None` if no such process exists now (or it is a
/// zombie). Segment headers record the creator's, so a reader can tell whether the
/// creator still runs even after its pid was reused.
pub fn process_start_time(pid: libc::pid_t) -> Option<u64> {
    thread_start_time(u32::try_from(pid).ok()?)
}

/// The calling process's own start time, as [`process_start_time`] gives it to others.
///
/// Read through `/proc/self`, which names this process in whatever PID namespace `/proc`
/// was mounted for: `/proc/<getpid()>` names another process (or none) when `/proc` is
/// not this namespace's. The path is the main thread's task file, `/proc/self/task/<the
/// pid /proc/self stands for>/stat`, for the qemu-user reason [`thread_start_time`] gives
/// (qemu answers `/proc/self/stat` itself, with the asking thread's start time).
pub fn own_process_start_time() -> Option<u64> {
    let me = std::fs::read_link("/proc/self").ok()?;
    start_time_in(&format!("/proc/self/task/{}/stat", me.to_str()?))
}

/// The number of usable bits in a user-space address, from where the stack sits: user
/// space ends just above the main stack on Linux (47 bits on x86-64, 39 or 48 on arm64).
pub fn user_address_bits() -> u32 {
    let probe = 0u8;
    let addr = &probe as *const u8 as usize as u64;
    64 - addr.leading_zeros()
}

/// Eight random bytes from the kernel (for picking fixed addresses).
///
/// Through `syscall(SYS_getrandom)`, not glibc's `getrandom()` wrapper (glibc 2.25+), for
/// the glibc 2.17 floor; a kernel without the call (before 3.17) answers `ENOSYS` and the
/// clock fallback below takes over.
pub fn random_u64() -> u64 {
    let mut buf = [0u8; 8];
    // SAFETY: getrandom writes at most buf.len() bytes into buf, a live local array.
    let n = unsafe { libc::syscall(libc::SYS_getrandom, buf.as_mut_ptr(), buf.len(), 0u32) };
    if n != buf.len() as libc::c_long {
        // Extremely unlikely; fall back to the clock, which is good enough for a hint.
        return super::monotonic_nanos() as u64 ^ (thread_id() as u64) << 32;
    }
    u64::from_ne_bytes(buf)
}

/// The address ranges `[start, end)` mapped in this process now (`/proc/self/maps`).
pub fn mapped_ranges() -> Vec<(u64, u64)> {
    let Ok(maps) = std::fs::read_to_string("/proc/self/maps") else {
        return Vec::new();
    };
    maps.lines()
        .filter_map(|line| {
            let range = line.split_whitespace().next()?;
            let (a, b) = range.split_once('-')?;
            Some((
                u64::from_str_radix(a, 16).ok()?,
                u64::from_str_radix(b, 16).ok()?,
            ))
        })
        .collect()
}

/// `struct futex_waitv` of `<linux/futex.h>`: one word of a `futex_waitv` call.
#[repr(C)]
struct FutexWaitv {
    val: u64,
    uaddr: u64,
    flags: u32,
    reserved: u32,
}

/// `FUTEX2_SIZE_U32`: the word is 32 bits (and, without `FUTEX2_PRIVATE`, may be shared
/// between processes).
const FUTEX2_SIZE_U32: u32 = 0x02;

/// The most words one `futex_waitv` call accepts (`FUTEX_WAITV_MAX`).
const FUTEX_WAITV_MAX: usize = 128;

/// Whether this kernel has `futex_waitv` (Linux 5.16+), probed once. Setting the
/// environment variable `SHMUTILS_NO_FUTEX_WAITV` to anything but the empty string
/// pretends it has not (to test the one-word fallback); set but empty is unset.
fn have_futex_waitv() -> bool {
    static PROBE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *PROBE.get_or_init(|| {
        if waitv_disabled(std::env::var_os("SHMUTILS_NO_FUTEX_WAITV").as_deref()) {
            return false;
        }
        // SAFETY: zero words and a null array: a kernel with the syscall answers EINVAL
        // without touching memory.
        let r = unsafe {
            libc::syscall(
                libc::SYS_futex_waitv,
                std::ptr::null::<FutexWaitv>(),
                0u32,
                0u32,
                std::ptr::null::<libc::timespec>(),
                libc::CLOCK_MONOTONIC,
            )
        };
        futex_waitv_probe_says_usable(r, nix::errno::Errno::last())
    })
}

/// Whether `SHMUTILS_NO_FUTEX_WAITV`'s value turns `futex_waitv` off: set to anything
/// but the empty string (`SHMUTILS_NO_FUTEX_WAITV=` is unset, as shells mean it).
fn waitv_disabled(value: Option<&std::ffi::OsStr>) -> bool {
    value.is_some_and(|v| !v.is_empty())
}

/// Reads the probe's answer: only the answer of a working syscall (EINVAL for zero words)
/// means usable. ENOSYS is an old kernel; a seccomp filter answers what it is told
/// (Docker's default profile says EPERM to syscalls it does not know), and a syscall we
/// cannot use must not be taken for one we can.
fn futex_waitv_probe_says_usable(r: libc::c_long, errno: nix::errno::Errno) -> bool {
    r == -1 && errno == nix::errno::Errno::EINVAL
}

/// How many words [`futex_wait_any`] can watch at once: 128 with `futex_waitv`, else 1.
pub fn futex_wait_any_capacity() -> usize {
    if have_futex_waitv() {
        FUTEX_WAITV_MAX
    } else {
        1
    }
}

/// Sleeps until any `word` no longer holds its `expected` value or is woken, or until
/// `deadline`: one thread watching many words (`futex_waitv`, shared futexes, absolute
/// `CLOCK_MONOTONIC` deadline). Takes at most [`futex_wait_any_capacity`] words; with
/// one word it is [`futex_wait`].
pub fn futex_wait_any(words: &[(&AtomicU32, u32)], deadline: Option<Deadline>) -> WaitOutcome {
    if let [(word, expected)] = words {
        return futex_wait(word, *expected, deadline);
    }
    assert!(
        words.len() <= futex_wait_any_capacity(),
        "futex_wait_any: too many words"
    );
    let list: Vec<FutexWaitv> = words
        .iter()
        .map(|(w, e)| FutexWaitv {
            val: *e as u64,
            uaddr: w.as_ptr() as usize as u64,
            flags: FUTEX2_SIZE_U32,
            reserved: 0,
        })
        .collect();
    let ts = deadline.map(timespec);
    let ts_ptr = ts
        .as_ref()
        .map_or(std::ptr::null(), |t| t as *const libc::timespec);
    // SAFETY: `list` describes live, aligned u32 words (references) and outlives the
    // call, as does the timespec; the kernel only reads them.
    let r = unsafe {
        libc::syscall(
            libc::SYS_futex_waitv,
            list.as_ptr(),
            list.len() as u32,
            0u32,
            ts_ptr,
            libc::CLOCK_MONOTONIC,
        )
    };
    if r == -1 && !wait_errno_expected(nix::errno::Errno::last()) {
        return futex_waitv_refused(words, deadline);
    }
    wait_outcome(r)
}

/// The errors a working futex wait gives: the deadline passed, the value differed, a
/// signal. Anything else (a seccomp filter's answer, a fault) returns at once every time,
/// so a caller that re-checks and waits again would spin.
fn wait_errno_expected(errno: nix::errno::Errno) -> bool {
    use nix::errno::Errno;
    matches!(errno, Errno::ETIMEDOUT | Errno::EAGAIN | Errno::EINTR)
}

/// `futex_waitv` failed in a way that will not change (the probe passed, then a filter
/// refused the real call): sleep on the first word alone, at most `REFUSED_SLICE_MS`, so
/// the caller re-checks the others that often instead of spinning.
#[cold]
fn futex_waitv_refused(words: &[(&AtomicU32, u32)], deadline: Option<Deadline>) -> WaitOutcome {
    /// How long the fallback sleeps at most before the caller re-checks every word.
    const REFUSED_SLICE_MS: f64 = 10.0;
    let slice = Deadline::after_ms(REFUSED_SLICE_MS);
    let (word, expected) = words[0];
    match futex_wait(
        word,
        expected,
        Some(deadline.map_or(slice, |d| d.min(slice))),
    ) {
        WaitOutcome::TimedOut if deadline.is_some_and(|d| d.passed()) => WaitOutcome::TimedOut,
        _ => WaitOutcome::Retry,
    }
}

/// How a futex wait syscall ended: only `ETIMEDOUT` is final; a wake, `EAGAIN` (the value
/// differed) or `EINTR` all mean "re-check".
fn wait_outcome(r: libc::c_long) -> WaitOutcome {
    if r == -1 && nix::errno::Errno::last() == nix::errno::Errno::ETIMEDOUT {
        WaitOutcome::TimedOut
    } else {
        WaitOutcome::Retry
    }
}

/// `FUTEX_CMP_REQUEUE`: if `*from == expected`, wakes up to `wake` waiters of `from` and
/// moves up to `requeue` others to wait on `to` instead, where the next release of `to`
/// wakes them one at a time. Returns how many were woken or moved, or `None` when
/// `*from` no longer held `expected` (the caller falls back to waking).
pub fn futex_requeue(
    from: &AtomicU32,
    expected: u32,
    wake: u32,
    to: &AtomicU32,
    requeue: u32,
) -> Option<u32> {
    let wake = wake.min(i32::MAX as u32) as libc::c_long;
    let requeue = requeue.min(i32::MAX as u32) as libc::c_long;
    // SAFETY: both words are live references; FUTEX_CMP_REQUEUE reads `from` and uses the
    // addresses as keys only. The 4th argument is the requeue limit passed in the
    // timeout slot, as the futex ABI specifies.
    let r = unsafe {
        libc::syscall(
            libc::SYS_futex,
            from.as_ptr(),
            libc::FUTEX_CMP_REQUEUE,
            wake,
            requeue,
            to.as_ptr(),
            expected,
        )
    };
    if r < 0 {
        None
    } else {
        Some(r as u32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::errno::Errno;
    use std::time::{Duration, Instant};

    #[test]
    fn boottime_offsets_in_ticks() {
        let text = "monotonic           0         0\nboottime         5000         0\n";
        assert_eq!(boottime_ticks_in(text, 100), 500_000);
        assert_eq!(
            boottime_ticks_in("monotonic 7 0\nboottime -30 250000000\n", 100),
            -2975
        );
        assert_eq!(
            boottime_ticks_in("boottime 0 15000000\n", 100),
            1,
            "rounded down"
        );
        assert_eq!(
            boottime_ticks_in("boottime -1 995000000\n", 100),
            -1,
            "rounded down"
        );
        assert_eq!(boottime_ticks_in("", 100), 0, "no time namespaces");
        assert_eq!(boottime_ticks_in("boottime x y\n", 100), 0);
        assert!(same_start_time(10, 11) && same_start_time(11, 10) && !same_start_time(10, 12));
    }

    #[test]
    fn an_empty_no_futex_waitv_variable_is_unset() {
        use std::ffi::OsStr;
        assert!(!waitv_disabled(None));
        assert!(!waitv_disabled(Some(OsStr::new(""))));
        assert!(waitv_disabled(Some(OsStr::new("1"))));
        assert!(waitv_disabled(Some(OsStr::new("0"))));
    }

    #[test]
    fn futex_waitv_is_usable_only_when_the_probe_gets_the_kernels_answer() {
        assert!(futex_waitv_probe_says_usable(-1, Errno::EINVAL));
        // An old kernel, seccomp filters (Docker's EPERM), anything unexpected.
        for errno in [Errno::ENOSYS, Errno::EPERM, Errno::EACCES, Errno::EFAULT] {
            assert!(!futex_waitv_probe_says_usable(-1, errno), "{errno:?}");
        }
        assert!(!futex_waitv_probe_says_usable(0, Errno::EINVAL));
    }

    #[test]
    fn only_the_errors_of_a_working_wait_are_retried_at_once() {
        for errno in [Errno::ETIMEDOUT, Errno::EAGAIN, Errno::EINTR] {
            assert!(wait_errno_expected(errno), "{errno:?}");
        }
        for errno in [Errno::EPERM, Errno::ENOSYS, Errno::EFAULT, Errno::EINVAL] {
            assert!(!wait_errno_expected(errno), "{errno:?}");
        }
    }

    #[test]
    fn a_refused_futex_waitv_sleeps_in_slices_instead_of_spinning() {
        let (a, b) = (AtomicU32::new(0), AtomicU32::new(0));
        let deadline = Deadline::after_ms(60.0);
        let t0 = Instant::now();
        let mut calls = 0;
        while futex_waitv_refused(&[(&a, 0), (&b, 0)], Some(deadline)) == WaitOutcome::Retry {
            calls += 1;
            assert!(calls < 100, "spins");
        }
        assert!(t0.elapsed() >= Duration::from_millis(55));
        assert!(calls >= 3, "slices of at most 10 ms: {calls}");
        // A word that differs already: back at once.
        let t0 = Instant::now();
        assert_eq!(
            futex_waitv_refused(&[(&a, 1), (&b, 0)], None),
            WaitOutcome::Retry
        );
        assert!(t0.elapsed() < Duration::from_millis(5));
    }
}
