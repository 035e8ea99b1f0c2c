//! macOS: address waits shared between processes, thread identity and the address-space
//! layout. The same functions and constants as `linux.rs`, built from what Darwin offers.
//!
//! ## Waiting on a word (the futex)
//!
//! Darwin has no `futex`. It has two families of calls that wait while a word holds an
//! expected value and that work across processes when asked to:
//!
//! - `os_sync_wait_on_address*` / `os_sync_wake_by_address_{any,all}` with
//!   `OS_SYNC_WAIT_ON_ADDRESS_SHARED` / `OS_SYNC_WAKE_BY_ADDRESS_SHARED`: public API since
//!   macOS 14.4 (`<os/os_sync_wait_on_address.h>`);
//! - `__ulock_wait2` (macOS 11+, nanosecond timeout) / `__ulock_wait` (10.12+, microsecond
//!   timeout) / `__ulock_wake` with `UL_COMPARE_AND_WAIT_SHARED`: the private calls that
//!   libc++'s `atomic::wait`, Rust's std and Go's runtime are built on (`xnu/bsd/sys/ulock.h`).
//!
//! All of them are looked up once at run time with `dlsym`, so one binary runs on every
//! macOS: it prefers `os_sync` where it exists and falls back to the `__ulock` calls.
//! Setting `SHMUTILS_MACOS_WAIT=ulock` in the environment forces the fallback (for tests,
//! which otherwise exercise it only on old systems). Both take a *relative* timeout, so an
//! absolute [`Deadline`] is turned into the time left right before each call; a wait cut
//! short by a signal returns [`WaitOutcome::Retry`] and the caller's next wait gets what is
//! left of the same deadline, as with Linux's absolute `FUTEX_WAIT_BITSET`.
//!
//! ## Thread identity (the owner field of a lock word)
//!
//! A lock word has 30 bits for its owner, and a waiter in *another process* must be able to
//! tell from those bits alone whether the owner is still alive. Linux kernel thread ids do
//! both (they are global and `/proc/<tid>` answers for them). Darwin's 64-bit thread ids
//! (`pthread_threadid_np`) are global too but cannot be looked up from another process, and
//! truncating them to 30 bits would lose the process. So the 30 bits are split:
//!
//! | bits    | value                                                                  |
//! |---------|------------------------------------------------------------------------|
//! | 13..=29 | the pid (17 bits: Darwin's `PID_MAX` is 99 999 < 2^17)                 |
//! | 0..=12  | a slot this process hands out to each thread that asks for its id      |
//!
//! Collision argument: two live threads of one process never share a slot (the table below
//! hands each a free one, round-robin, so a freed slot is reused only after 8 191 other
//! threads were given one); two processes never share a pid while both live. The value is
//! never 0 (pid 0 is the kernel) and never `0x3fff_ffff` (`NOT_RECOVERABLE`: that would
//! need pid 131 071 > `PID_MAX`). Only a process with more than 8 192 threads that ask for
//! an id at once would make two threads share one (the search then shares the slot it
//! started at); a Node process has a few dozen.
//!
//! ## "Start time" (what defeats pid reuse)
//!
//! [`thread_start_time`] answers with the *process's* start time (microseconds since the
//! epoch, from `proc_pidinfo(PROC_PIDTBSDINFO)`, or `sysctl(KERN_PROC_PID)` when the
//! process belongs to another user), the same number whichever process asks. Whether the
//! thread itself still lives can only be known inside its own process: there, a thread that
//! exited has released its slot and the answer is `None`. So a lock whose holder *thread*
//! died while its process lives is recovered by waiters in that process; waiters in other
//! processes see it as held until the process exits (then they recover it).

use super::{Deadline, WaitOutcome};
use nix::errno::Errno;
use std::ffi::{c_int, c_void, CStr};
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::OnceLock;

/// `mmap` request bit for "exactly here, never clobbering". Darwin has no such flag, so this
/// is a bit no Darwin `MAP_*` flag uses (they end at `MAP_TPRO`, `0x80000`):
/// [`prepare_flags`] strips it before the flags reach `mmap`, which then takes the address
/// as a hint, and the mapping code compares the address it got and unmaps on a mismatch.
pub const MAP_FIXED_NOREPLACE: i32 = 0x4000_0000;

/// `mmap` flag that prefaults the pages: Darwin has none, so asking for it does nothing.
pub const MAP_POPULATE: i32 = 0;

/// The flags to hand to `mmap` for a request: without the emulated [`MAP_FIXED_NOREPLACE`]
/// bit, which the kernel does not know.
#[inline]
pub fn prepare_flags(flags: i32) -> i32 {
    flags & !MAP_FIXED_NOREPLACE
}

// ---------------------------------------------------------------------------------------
// Backing and the SIGBUS guard.
//
// Darwin's POSIX shared memory is not a filesystem: an object is sized once (a second
// `ftruncate` fails), so no other process can shrink it under a mapping, and its pages
// come from the VM system, not from a filesystem that can run full. Neither of the faults
// the Linux guard repairs (`linux/sigbus.rs`) happens, so there is nothing to register
// and nothing to preallocate; these keep the same API.

/// The mapping lost pages because its file was shrunk (never on macOS).
pub const LOST_TRUNCATED: u32 = 1;
/// The mapping lost pages for want of space (never on macOS).
pub const LOST_NO_SPACE: u32 = 2;

/// A registered mapping (nothing to register on macOS).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GuardId(());

static GUARD_GENERATION: AtomicU32 = AtomicU32::new(0);

/// The process-wide repair counter; always 0 on macOS.
pub fn guard_generation() -> &'static AtomicU32 {
    &GUARD_GENERATION
}

/// Nothing to guard on macOS (see above).
pub fn guard_register(
    _start: usize,
    _len: usize,
    _fd: std::os::fd::RawFd,
    _file_offset: u64,
    _prot: i32,
) -> GuardId {
    GuardId(())
}

/// Nothing to unregister on macOS.
pub fn guard_unregister(_id: GuardId) {}

/// Always 0 (intact) on macOS.
pub fn guard_lost(_id: GuardId) -> u32 {
    0
}

/// Nothing to preallocate on macOS (see above).
///
/// # Errors
/// Never.
pub fn fallocate(_fd: std::os::fd::RawFd, _offset: u64, _len: u64) -> Result<(), Errno> {
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Waiting and waking.

// `xnu/bsd/sys/ulock.h`.
const UL_COMPARE_AND_WAIT_SHARED: u32 = 3;
const ULF_WAKE_ALL: u32 = 0x0000_0100;
// `<os/clock.h>`: timeouts counted on the clock `mach_absolute_time` reads.
const OS_CLOCK_MACH_ABSOLUTE_TIME: u32 = 32;
// `<os/os_sync_wait_on_address.h>`.
const OS_SYNC_WAIT_ON_ADDRESS_SHARED: u32 = 1;
const OS_SYNC_WAKE_BY_ADDRESS_SHARED: u32 = 1;
/// Waking more than this many waiters one by one is replaced by waking all of them.
const WAKE_ONE_BY_ONE_MAX: u32 = 64;

type OsSyncWait = unsafe extern "C" fn(*mut c_void, u64, usize, u32) -> c_int;
type OsSyncWaitTimeout = unsafe extern "C" fn(*mut c_void, u64, usize, u32, u32, u64) -> c_int;
type OsSyncWake = unsafe extern "C" fn(*mut c_void, usize, u32) -> c_int;
type UlockWait = unsafe extern "C" fn(u32, *mut c_void, u64, u32) -> c_int;
type UlockWait2 = unsafe extern "C" fn(u32, *mut c_void, u64, u64, u64) -> c_int;
type UlockWake = unsafe extern "C" fn(u32, *mut c_void, u64) -> c_int;

/// The wait/wake calls this system has.
#[derive(Clone, Copy)]
enum Backend {
    /// macOS 14.4+.
    OsSync {
        wait: OsSyncWait,
        wait_timeout: OsSyncWaitTimeout,
        wake_any: OsSyncWake,
        wake_all: OsSyncWake,
    },
    /// Older systems (`wait2` from macOS 11 on).
    Ulock {
        wait2: Option<UlockWait2>,
        wait: UlockWait,
        wake: UlockWake,
    },
    /// Neither (not a macOS this library runs on): waits sleep briefly, wakes do nothing;
    /// callers re-check their word, so this is slow but still correct.
    Poll,
}

/// The address of the C function `name` in the loaded images, if any.
fn lookup(name: &CStr) -> Option<*mut c_void> {
    // SAFETY: dlsym with RTLD_DEFAULT and a NUL-terminated name only reads the name.
    let p = unsafe { libc::dlsym(libc::RTLD_DEFAULT, name.as_ptr()) };
    (!p.is_null()).then_some(p)
}

fn backend() -> Backend {
    static BACKEND: OnceLock<Backend> = OnceLock::new();
    *BACKEND.get_or_init(|| {
        let force_ulock = std::env::var_os("SHMUTILS_MACOS_WAIT").is_some_and(|v| v == "ulock");
        if !force_ulock {
            if let (Some(wait), Some(wait_timeout), Some(wake_any), Some(wake_all)) = (
                lookup(c"os_sync_wait_on_address"),
                lookup(c"os_sync_wait_on_address_with_timeout"),
                lookup(c"os_sync_wake_by_address_any"),
                lookup(c"os_sync_wake_by_address_all"),
            ) {
                // SAFETY: each symbol is the libSystem function of that name, whose C
                // prototype (os/os_sync_wait_on_address.h) is the pointer type given here.
                return unsafe {
                    Backend::OsSync {
                        wait: std::mem::transmute::<*mut c_void, OsSyncWait>(wait),
                        wait_timeout: std::mem::transmute::<*mut c_void, OsSyncWaitTimeout>(
                            wait_timeout,
                        ),
                        wake_any: std::mem::transmute::<*mut c_void, OsSyncWake>(wake_any),
                        wake_all: std::mem::transmute::<*mut c_void, OsSyncWake>(wake_all),
                    }
                };
            }
        }
        match (lookup(c"__ulock_wait"), lookup(c"__ulock_wake")) {
            // SAFETY: the libSystem functions of these names have the prototypes of
            // xnu's bsd/sys/ulock.h, which the pointer types spell out.
            (Some(wait), Some(wake)) => unsafe {
                Backend::Ulock {
                    wait2: lookup(c"__ulock_wait2")
                        .map(|p| std::mem::transmute::<*mut c_void, UlockWait2>(p)),
                    wait: std::mem::transmute::<*mut c_void, UlockWait>(wait),
                    wake: std::mem::transmute::<*mut c_void, UlockWake>(wake),
                }
            },
            _ => Backend::Poll,
        }
    })
}

/// Which wait/wake calls are in use: `"os_sync"`, `"ulock2"`, `"ulock"` or `"poll"`.
pub fn wait_backend_name() -> &'static str {
    match backend() {
        Backend::OsSync { .. } => "os_sync",
        Backend::Ulock { wait2: Some(_), .. } => "ulock2",
        Backend::Ulock { wait2: None, .. } => "ulock",
        Backend::Poll => "poll",
    }
}

/// Waits while `*word == expected`, until woken or `deadline` (absolute, monotonic).
///
/// Uses the shared (cross-process) variants of `os_sync_wait_on_address_with_timeout` or
/// `__ulock_wait2`/`__ulock_wait`; the deadline becomes the time left at each call.
pub fn futex_wait(word: &AtomicU32, expected: u32, deadline: Option<Deadline>) -> WaitOutcome {
    let left = match deadline {
        None => None,
        Some(d) => match d.remaining_nanos() {
            0 => return WaitOutcome::TimedOut,
            n => Some(n.min(u64::MAX as u128) as u64),
        },
    };
    let addr = word.as_ptr().cast::<c_void>();
    let value = u64::from(expected);
    let size = std::mem::size_of::<u32>();
    // SAFETY (all arms): `addr` is a live, aligned 4-byte word for the whole call (it comes
    // from a reference); the size and flags describe exactly that word; these calls only
    // compare the word and sleep, they write no memory of ours.
    let r = match backend() {
        Backend::OsSync {
            wait, wait_timeout, ..
        } => match left {
            // SAFETY: see above.
            None => unsafe { wait(addr, value, size, OS_SYNC_WAIT_ON_ADDRESS_SHARED) },
            // SAFETY: see above.
            Some(ns) => unsafe {
                wait_timeout(
                    addr,
                    value,
                    size,
                    OS_SYNC_WAIT_ON_ADDRESS_SHARED,
                    OS_CLOCK_MACH_ABSOLUTE_TIME,
                    ns,
                )
            },
        },
        // A zero timeout means "forever" for both __ulock calls.
        Backend::Ulock {
            wait2: Some(wait2), ..
        } => {
            // SAFETY: see above.
            unsafe {
                wait2(
                    UL_COMPARE_AND_WAIT_SHARED,
                    addr,
                    value,
                    left.unwrap_or(0),
                    0,
                )
            }
        }
        Backend::Ulock {
            wait2: None, wait, ..
        } => {
            // Microseconds, rounded up so a short wait is not "forever"; a wait longer than
            // u32::MAX µs (71 minutes) wakes early and the caller waits again.
            let us = left.map_or(0, |ns| {
                ns.div_ceil(1000).clamp(1, u64::from(u32::MAX)) as u32
            });
            // SAFETY: see above.
            unsafe { wait(UL_COMPARE_AND_WAIT_SHARED, addr, value, us) }
        }
        Backend::Poll => {
            let ns = left.unwrap_or(1_000_000).min(1_000_000);
            std::thread::sleep(std::time::Duration::from_nanos(ns));
            return match deadline {
                Some(d) if d.passed() => WaitOutcome::TimedOut,
                _ => WaitOutcome::Retry,
            };
        }
    };
    if r < 0 && Errno::last() == Errno::ETIMEDOUT && deadline.is_some_and(|d| d.passed()) {
        WaitOutcome::TimedOut
    } else {
        // >= 0 (woken, or the word differed), EINTR, EFAULT, or a timeout cut short
        // (clamped, or a clock that ran slower than CLOCK_MONOTONIC): the caller
        // re-checks its word and waits again for what is left.
        WaitOutcome::Retry
    }
}

/// Wakes up to `n` waiters on `word` in any process. Returns how many were woken.
///
/// Darwin wakes one or all: up to 64 waiters are woken one at a time (so the count is
/// exact); for more, all of them are woken and the result is 1 if any was (the count is
/// not reported). Waking more than asked is allowed: waiters re-check their word.
pub fn futex_wake(word: &AtomicU32, n: u32) -> u32 {
    if n == 0 {
        return 0;
    }
    let addr = word.as_ptr().cast::<c_void>();
    let size = std::mem::size_of::<u32>();
    let b = backend();
    // One wake call: true if it woke somebody, false if nobody waited (ENOENT) or it failed.
    let call = |all: bool| -> bool {
        loop {
            // SAFETY (all arms): wake calls use the address only as a key to find waiters;
            // `addr` is a live word (from a reference) for the duration of the call.
            let r = match b {
                // SAFETY: see above.
                Backend::OsSync { wake_all, .. } if all => unsafe {
                    wake_all(addr, size, OS_SYNC_WAKE_BY_ADDRESS_SHARED)
                },
                // SAFETY: see above.
                Backend::OsSync { wake_any, .. } => unsafe {
                    wake_any(addr, size, OS_SYNC_WAKE_BY_ADDRESS_SHARED)
                },
                Backend::Ulock { wake, .. } => {
                    let op = UL_COMPARE_AND_WAIT_SHARED | if all { ULF_WAKE_ALL } else { 0 };
                    // SAFETY: see above.
                    unsafe { wake(op, addr, 0) }
                }
                Backend::Poll => return false,
            };
            if r >= 0 {
                return true;
            }
            if Errno::last() != Errno::EINTR {
                return false; // ENOENT: nobody was waiting
            }
        }
    };
    if n > WAKE_ONE_BY_ONE_MAX {
        return u32::from(call(true));
    }
    let mut woken = 0;
    while woken < n && call(false) {
        woken += 1;
    }
    woken
}

// ---------------------------------------------------------------------------------------
// Thread identity.

const SLOT_BITS: u32 = 13;
const SLOTS: usize = 1 << SLOT_BITS;
const SLOT_MASK: u32 = (1 << SLOT_BITS) - 1;
const PID_MASK: u32 = (1 << (30 - SLOT_BITS)) - 1;

/// How many threads of this process hold each slot (more than one only when all 8 192 are
/// taken), and where the round-robin search for a free one resumes. Atomics rather than a
/// mutex: a process may fork while another thread is in here, and the child must not find
/// a lock held forever.
static SLOT_HOLDERS: [AtomicU32; SLOTS] = [const { AtomicU32::new(0) }; SLOTS];
static SLOT_CURSOR: AtomicUsize = AtomicUsize::new(0);

fn claim_slot() -> u32 {
    let start = SLOT_CURSOR.load(Ordering::Relaxed);
    for i in 0..SLOTS {
        let s = (start + i) % SLOTS;
        if SLOT_HOLDERS[s]
            .compare_exchange(0, 1, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
        {
            SLOT_CURSOR.store((s + 1) % SLOTS, Ordering::Relaxed);
            return s as u32;
        }
    }
    // All taken: share the one the search started at (see the module docs).
    let s = start % SLOTS;
    SLOT_HOLDERS[s].fetch_add(1, Ordering::AcqRel);
    SLOT_CURSOR.store((s + 1) % SLOTS, Ordering::Relaxed);
    s as u32
}

/// A thread's slot, given back when the thread exits.
struct Slot(u32);

impl Drop for Slot {
    fn drop(&mut self) {
        SLOT_HOLDERS[self.0 as usize].fetch_sub(1, Ordering::AcqRel);
    }
}

thread_local! {
    static SLOT: Slot = Slot(claim_slot());
}

fn slot_in_use(slot: u32) -> bool {
    SLOT_HOLDERS[slot as usize].load(Ordering::Acquire) > 0
}

/// The calling thread's id as lock words store it: the pid in bits 13..=29 and this
/// thread's slot in bits 0..=12 (see the module docs). Never 0, never `0x3fff_ffff`.
pub fn thread_id() -> u32 {
    let slot = SLOT.try_with(|s| s.0).unwrap_or_else(|_| {
        // Asked while this thread's thread-locals are being torn down: use the low bits of
        // the system-wide 64-bit thread id (not registered, so not provably alive).
        let mut id = 0u64;
        // SAFETY: pthread_self() is the calling thread; `id` is a valid out-pointer.
        unsafe { libc::pthread_threadid_np(libc::pthread_self(), &mut id) };
        id as u32 & SLOT_MASK
    });
    ((std::process::id() & PID_MASK) << SLOT_BITS) | slot
}

/// When the process of thread `tid` started, in microseconds since the epoch, or `None`
/// if that process does not exist (or is a zombie) or, for a thread of this process, if
/// the thread has exited. See the module docs for why it is the process's start time.
pub fn thread_start_time(tid: u32) -> Option<u64> {
    let pid = tid >> SLOT_BITS;
    if pid == 0 {
        return None;
    }
    if pid == std::process::id() & PID_MASK && !slot_in_use(tid & SLOT_MASK) {
        return None;
    }
    process_start_time(pid as libc::pid_t)
}

/// The calling process's own start time, as [`process_start_time`] gives it to others
/// (macOS has no PID namespaces: its pid names it).
pub fn own_process_start_time() -> Option<u64> {
    process_start_time(std::process::id() as libc::pid_t)
}

/// Whether two start times name the same moment (macOS has no time namespaces: equal).
pub fn same_start_time(a: u64, b: u64) -> bool {
    a == b
}

/// Start time of process `pid` (µs since the epoch); `None` if it is gone or a zombie.
pub fn process_start_time(pid: libc::pid_t) -> Option<u64> {
    match start_time_from_proc_pidinfo(pid) {
        Ok(t) => t,
        // Another user's process (proc_pidinfo wants the same user): ask sysctl, which
        // answers for every process, as `ps` does.
        Err(_) => match start_time_from_sysctl(pid) {
            Ok(t) => t,
            // Neither answers (a sandbox): exists or not is all that can be known, and a
            // start time of 0 will not match the one its owner recorded.
            Err(_) => {
                // SAFETY: kill with signal 0 only checks that the process exists.
                let r = unsafe { libc::kill(pid, 0) };
                (r == 0 || Errno::last() != Errno::ESRCH).then_some(0)
            }
        },
    }
}

fn start_time_from_proc_pidinfo(pid: libc::pid_t) -> Result<Option<u64>, Errno> {
    let mut info = std::mem::MaybeUninit::<libc::proc_bsdinfo>::zeroed();
    let size = std::mem::size_of::<libc::proc_bsdinfo>() as c_int;
    // SAFETY: the buffer is a zeroed proc_bsdinfo of exactly `size` bytes, which is what
    // PROC_PIDTBSDINFO writes.
    let n = unsafe {
        libc::proc_pidinfo(
            pid,
            libc::PROC_PIDTBSDINFO,
            0,
            info.as_mut_ptr().cast(),
            size,
        )
    };
    if n != size {
        let e = Errno::last();
        return if n <= 0 && e == Errno::ESRCH {
            Ok(None)
        } else {
            Err(e)
        };
    }
    // SAFETY: proc_pidinfo filled all `size` bytes (and the struct was zeroed before).
    let info = unsafe { info.assume_init() };
    if info.pbi_status == libc::SZOMB {
        return Ok(None);
    }
    Ok(Some(
        info.pbi_start_tvsec * 1_000_000 + info.pbi_start_tvusec,
    ))
}

/// Size of `struct kinfo_proc` on 64-bit Darwin (`<sys/sysctl.h>`), which the libc crate
/// does not describe. Its first member, `struct extern_proc kp_proc`, starts with the union
/// `p_un` whose `__p_starttime` (a `struct timeval`: `i64` seconds, `i32` microseconds) is
/// at offset 0; `char p_stat` is at offset 36 (after two pointers, `p_vmspace`,
/// `p_sigacts` and `int p_flag` at 32) and `pid_t p_pid` at 40, which is checked.
const KINFO_PROC_SIZE: usize = 648;
const KP_PROC_P_STAT_OFFSET: usize = 36;
const KP_PROC_P_PID_OFFSET: usize = 40;

fn start_time_from_sysctl(pid: libc::pid_t) -> Result<Option<u64>, Errno> {
    let mut buf = [0u64; KINFO_PROC_SIZE / 8];
    let mut len = std::mem::size_of_val(&buf);
    let mut mib = [libc::CTL_KERN, libc::KERN_PROC, libc::KERN_PROC_PID, pid];
    // SAFETY: `mib` names 4 integers; `buf` is writable for `len` bytes and sysctl writes
    // at most that many, storing the count in `len`.
    let r = unsafe {
        libc::sysctl(
            mib.as_mut_ptr(),
            mib.len() as libc::c_uint,
            buf.as_mut_ptr().cast(),
            &mut len,
            std::ptr::null_mut(),
            0,
        )
    };
    if r != 0 {
        let e = Errno::last();
        return if e == Errno::ESRCH { Ok(None) } else { Err(e) };
    }
    if len == 0 {
        return Ok(None); // no such process
    }
    if len < KINFO_PROC_SIZE {
        return Err(Errno::EINVAL);
    }
    let bytes = buf
        .iter()
        .flat_map(|w| w.to_ne_bytes())
        .collect::<Vec<u8>>();
    let p_pid = &bytes[KP_PROC_P_PID_OFFSET..KP_PROC_P_PID_OFFSET + 4];
    if i32::from_ne_bytes(p_pid.try_into().expect("4 bytes")) != pid {
        return Err(Errno::EINVAL); // not the layout described above
    }
    if bytes[KP_PROC_P_STAT_OFFSET] as u32 == libc::SZOMB {
        return Ok(None);
    }
    let sec = i64::from_ne_bytes(bytes[0..8].try_into().expect("8 bytes"));
    let usec = i32::from_ne_bytes(bytes[8..12].try_into().expect("4 bytes"));
    Ok(Some(sec as u64 * 1_000_000 + usec as u64))
}

// ---------------------------------------------------------------------------------------
// Address space.

/// The number of usable bits in a user-space address: 47 on both x86-64 and arm64 macOS
/// (`MACH_VM_MAX_ADDRESS` is `0x7fff_ffe0_0000` and `0x7fff_fe00_0000`). Unlike Linux it
/// cannot be read off the stack: arm64 macOS puts the main stack far below the top.
pub fn user_address_bits() -> u32 {
    47
}

/// Eight random bytes from the kernel (for picking fixed addresses).
pub fn random_u64() -> u64 {
    let mut buf = [0u8; 8];
    // SAFETY: getentropy writes exactly buf.len() (<= 256) bytes into buf.
    if unsafe { libc::getentropy(buf.as_mut_ptr().cast(), buf.len()) } != 0 {
        // Extremely unlikely; fall back to the clock, which is good enough for a hint.
        return super::monotonic_nanos() as u64 ^ (thread_id() as u64) << 32;
    }
    u64::from_ne_bytes(buf)
}

// `<mach/vm_region.h>`: the flavor and its size in `natural_t`s
// (`sizeof(vm_region_basic_info_data_64_t) / sizeof(int)`, the struct being packed to 4).
const VM_REGION_BASIC_INFO_64: c_int = 9;
const VM_REGION_BASIC_INFO_COUNT_64: libc::mach_msg_type_number_t = 9;
const KERN_SUCCESS: libc::kern_return_t = 0;

extern "C" {
    // `<mach/mach_vm.h>` (libSystem); not in the libc crate.
    fn mach_vm_region(
        target_task: libc::mach_port_t,
        address: *mut libc::mach_vm_address_t,
        size: *mut libc::mach_vm_size_t,
        flavor: c_int,
        info: *mut c_int,
        info_count: *mut libc::mach_msg_type_number_t,
        object_name: *mut libc::mach_port_t,
    ) -> libc::kern_return_t;
}

/// The address ranges `[start, end)` mapped in this process now, from a walk of the task's
/// VM map with `mach_vm_region` (each call returns the first region at or above the
/// address asked about). The `MAP_FIXED` safety check relies on this list being complete.
pub fn mapped_ranges() -> Vec<(u64, u64)> {
    #[allow(deprecated)] // the libc crate points to the mach2 crate; the symbol is the same
    // SAFETY: reads the calling task's own send right, set up by libSystem at start-up.
    let task = unsafe { libc::mach_task_self() };
    let mut out = Vec::new();
    let mut address: libc::mach_vm_address_t = 0;
    // A process has a few thousand regions; the cap only guards against a kernel that
    // keeps answering with the same one.
    for _ in 0..1_000_000 {
        let mut size: libc::mach_vm_size_t = 0;
        let mut info: [c_int; 16] = [0; 16];
        let mut count = VM_REGION_BASIC_INFO_COUNT_64;
        let mut object_name: libc::mach_port_t = 0;
        // SAFETY: every out-pointer is a live local; `info` holds 16 ints and `count` (9)
        // tells the kernel it may write at most 9 of them.
        let kr = unsafe {
            mach_vm_region(
                task,
                &mut address,
                &mut size,
                VM_REGION_BASIC_INFO_64,
                info.as_mut_ptr(),
                &mut count,
                &mut object_name,
            )
        };
        if kr != KERN_SUCCESS || size == 0 {
            break; // KERN_INVALID_ADDRESS: nothing mapped at or above `address`
        }
        let Some(end) = address.checked_add(size) else {
            out.push((address, u64::MAX));
            break;
        };
        out.push((address, end));
        address = end;
    }
    out
}

/// How many words [`futex_wait_any`] can watch at once: macOS has no multi-word wait, so
/// each async waiter thread watches one word (the waiter pool adds threads as needed).
pub fn futex_wait_any_capacity() -> usize {
    1
}

/// Sleeps until `words[0]` no longer holds its expected value or is woken, or until
/// `deadline`. Takes at most [`futex_wait_any_capacity`] (one) word.
pub fn futex_wait_any(words: &[(&AtomicU32, u32)], deadline: Option<Deadline>) -> WaitOutcome {
    match words {
        [(word, expected)] => futex_wait(word, *expected, deadline),
        [] => {
            // Nothing to watch: just sleep until the deadline.
            let nanos = deadline.map_or(u128::from(u32::MAX), |d| d.remaining_nanos());
            std::thread::sleep(std::time::Duration::from_nanos(
                nanos.min(u64::MAX as u128) as u64
            ));
            WaitOutcome::TimedOut
        }
        _ => panic!("futex_wait_any: macOS watches one word at a time"),
    }
}

/// macOS has no requeue: always `None`, so callers fall back to waking the waiters
/// (a `notifyAll` there wakes every waiter, which then queue on the lock in turn).
pub fn futex_requeue(
    _from: &AtomicU32,
    _expected: u32,
    _wake: u32,
    _to: &AtomicU32,
    _requeue: u32,
) -> Option<u32> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::Deadline;
    use std::sync::Arc;

    #[test]
    fn thread_ids_carry_the_pid_and_differ_per_thread() {
        let me = thread_id();
        assert_eq!(me >> SLOT_BITS, std::process::id());
        assert_ne!(me, 0);
        assert_ne!(me, 0x3fff_ffff);
        let other = std::thread::spawn(thread_id).join().unwrap();
        assert_ne!(other, me);
        assert_eq!(other >> SLOT_BITS, std::process::id());
        // The other thread exited: its slot is free, so it reads as dead; we are alive.
        assert_eq!(thread_start_time(other), None);
        assert!(thread_start_time(me).is_some());
    }

    #[test]
    fn start_times_agree_and_see_dead_processes() {
        let me = std::process::id() as libc::pid_t;
        let a = start_time_from_proc_pidinfo(me).unwrap().unwrap();
        let b = start_time_from_sysctl(me).unwrap().unwrap();
        assert_eq!(a, b, "proc_pidinfo and sysctl give the same start time");
        // SAFETY: getppid has no preconditions.
        let parent = unsafe { libc::getppid() };
        assert_eq!(
            start_time_from_proc_pidinfo(parent).ok().flatten(),
            start_time_from_sysctl(parent).unwrap()
        );
        // A child that exited: a zombie until reaped, then gone; neither reads as alive.
        // SAFETY: the child calls only _exit.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            // SAFETY: leave the child at once, running nothing of the test harness.
            unsafe { libc::_exit(0) };
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
        assert_eq!(process_start_time(pid), None, "zombie");
        assert_eq!(
            start_time_from_sysctl(pid).unwrap(),
            None,
            "zombie (sysctl)"
        );
        let mut status = 0;
        // SAFETY: reaping our own child.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        assert_eq!(process_start_time(pid), None, "reaped");
    }

    #[test]
    fn waits_time_out_and_wake_across_threads() {
        let word = Arc::new(AtomicU32::new(7));
        let t0 = std::time::Instant::now();
        assert_eq!(
            futex_wait(&word, 7, Some(Deadline::after_ms(30.0))),
            WaitOutcome::TimedOut
        );
        assert!(t0.elapsed().as_millis() >= 25, "{:?}", t0.elapsed());
        assert_eq!(
            futex_wait(&word, 8, None),
            WaitOutcome::Retry,
            "value differs"
        );
        assert_eq!(futex_wake(&word, 1), 0, "nobody waits");
        let w = word.clone();
        let waiter = std::thread::spawn(move || {
            while w.load(Ordering::Acquire) == 7 {
                futex_wait(&w, 7, Some(Deadline::after_ms(10_000.0)));
            }
        });
        std::thread::sleep(std::time::Duration::from_millis(50));
        word.store(8, Ordering::Release);
        futex_wake(&word, u32::MAX);
        let t1 = std::time::Instant::now();
        waiter.join().unwrap();
        assert!(t1.elapsed().as_millis() < 5_000, "woken, not timed out");
        eprintln!("wait backend: {}", wait_backend_name());
    }

    #[test]
    fn mapped_ranges_cover_our_own_memory() {
        let ranges = mapped_ranges();
        assert!(ranges.len() > 10, "{ranges:?}");
        let probe = Box::new(0u64);
        let addr = &*probe as *const u64 as u64;
        assert!(ranges.iter().any(|&(s, e)| s <= addr && addr < e));
        assert!(
            ranges.windows(2).all(|w| w[0].1 <= w[1].0),
            "sorted, disjoint"
        );
    }

    #[test]
    fn emulated_noreplace_bit_is_private() {
        assert_eq!(
            prepare_flags(libc::MAP_SHARED | MAP_FIXED_NOREPLACE),
            libc::MAP_SHARED
        );
        for f in [
            libc::MAP_FIXED,
            libc::MAP_ANON,
            libc::MAP_NORESERVE,
            libc::MAP_SHARED,
        ] {
            assert_eq!(f & MAP_FIXED_NOREPLACE, 0);
        }
    }
}
