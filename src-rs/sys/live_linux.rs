//! Linux: liveness tokens held as open-file-description (OFD) byte-range locks on the
//! object behind a mapping (`docs/synchronization.md` explains the choice).
//!
//! A token `t` (1 ≤ t < 0x3fff_ffff) is *live* while some open file description holds a
//! write lock on byte [`LIVE_BASE`]` + 16 + t` of the object's inode. Each thread that
//! takes locks in a segment opens a description of its own ([`claim_token`]: the
//! mapping's descriptor re-opened through `/proc/self/fd`, which makes a new description)
//! and locks its token's byte there; closing the description (thread exit, process death,
//! the thread's last mapping of the segment closed) releases it. The kernel tracks these
//! locks per inode, whatever PID namespace the holder and the asker are in, and releases
//! them when the holder dies, so a waiter learns "dead" from the kernel itself
//! ([`token_liveness`], `F_OFD_GETLK`) instead of from `/proc`.
//!
//! | byte                 | lock  | held by                                                |
//! |----------------------|-------|--------------------------------------------------------|
//! | `LIVE_BASE + 0`      | read  | every process while it maps the segment ("attached")   |
//! | `LIVE_BASE + 1`      | write | the creating process while its creating mapping lives  |
//! | `LIVE_BASE + 16 + t` | write | the one thread whose liveness token is `t`             |

use super::{Liveness, TokenClaim, LIVE_ATTACHED, LIVE_CREATOR, LIVE_TOKENS, TOKEN_COUNT};
use crate::error::{Result, ShmError};
use nix::errno::Errno;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;

fn flock(kind: libc::c_int, at: u64) -> libc::flock {
    // SAFETY: flock is plain old data; all-zero is a valid value (and l_pid must be 0
    // for OFD requests).
    let mut l: libc::flock = unsafe { std::mem::zeroed() };
    l.l_type = kind as libc::c_short;
    l.l_whence = libc::SEEK_SET as libc::c_short;
    l.l_start = at as libc::off_t;
    l.l_len = 1;
    l
}

/// `F_OFD_SETLK` of one byte: `Ok(true)` taken, `Ok(false)` held by another description.
fn ofd_try_lock(fd: RawFd, at: u64, kind: libc::c_int) -> std::result::Result<bool, Errno> {
    let l = flock(kind, at);
    loop {
        // SAFETY: `l` is a valid flock that outlives the call; the kernel only reads it.
        let r = unsafe { libc::fcntl(fd, libc::F_OFD_SETLK, &l) };
        if r == 0 {
            return Ok(true);
        }
        match Errno::last() {
            Errno::EINTR => continue,
            Errno::EAGAIN | Errno::EACCES => return Ok(false),
            e => return Err(e),
        }
    }
}

/// `F_OFD_GETLK` on one byte: whether another description holds a lock there that
/// conflicts with a `probe` lock: asked with `F_WRLCK`, any lock; with `F_RDLCK`, only a
/// write lock.
///
/// A token and the creator mark are write locks, which only a description opened for
/// writing can take, so they are asked about with `F_RDLCK`: a read lock there proves
/// nothing, and anyone who can merely read the segment can take one on any byte (asked
/// with `F_WRLCK`, a read lock on a dead holder's byte kept its lock from being
/// recovered, for as long as the reader liked).
fn ofd_held(fd: RawFd, at: u64, probe: libc::c_int) -> std::result::Result<bool, Errno> {
    let mut l = flock(probe, at);
    // SAFETY: `l` is a valid flock that outlives the call; the kernel writes into it.
    if unsafe { libc::fcntl(fd, libc::F_OFD_GETLK, &mut l) } != 0 {
        return Err(Errno::last());
    }
    Ok(l.l_type != libc::F_UNLCK as libc::c_short)
}

/// A new open file description of the object behind `fd` (close-on-exec), writable: the
/// same file re-opened through `/proc/self/fd` (a `dup` would share the description, and
/// OFD locks belong to descriptions).
fn reopen(fd: RawFd) -> Result<OwnedFd> {
    let path = format!("/proc/self/fd/{fd}\0");
    // SAFETY: `path` is NUL-terminated and outlives the call.
    let new = unsafe { libc::open(path.as_ptr().cast(), libc::O_RDWR | libc::O_CLOEXEC) };
    if new < 0 {
        let mut e = ShmError::last_os("open");
        e.message = format!(
            "{}: cannot open the segment again for this thread's liveness token (the \
             segment must be writable, and /proc mounted)",
            e.message
        );
        return Err(e);
    }
    // SAFETY: `new` is a descriptor we just opened and own.
    Ok(unsafe { OwnedFd::from_raw_fd(new) })
}

/// Claims a liveness token for the calling thread on the object behind `object` (a
/// descriptor of the segment, or [`private_object`]): opens a description of its own and
/// locks the first free token's byte. Candidates come from `next` (the header's
/// `token_next` counter, advanced with `fetch_add`, so a value is reused only after 2^30
/// claims) or, without one, at random; a candidate is the thread's only once the kernel
/// granted the lock (`F_OFD_SETLK`), so two live threads never share a token.
///
/// # Errors
/// `EACCES` when the object cannot be opened for writing (a read-only segment), `ENOLCK`
/// when its filesystem has no OFD locks, `EAGAIN` when no free token was found.
pub fn claim_token(object: RawFd, next: Option<&AtomicU32>) -> Result<TokenClaim> {
    // A descriptor opened read-only maps read-only (managed segments) or belongs to a
    // mapping that cannot take a lock: refuse before touching the counter.
    // SAFETY: F_GETFL only reads the descriptor's flags.
    let flags = unsafe { libc::fcntl(object, libc::F_GETFL) };
    if flags >= 0 && flags & libc::O_ACCMODE == libc::O_RDONLY {
        return Err(ShmError::new(
            "EACCES",
            "the segment is mapped read-only: its locks cannot be taken here",
        ));
    }
    let fd = reopen(object)?;
    const TRIES: u32 = 64;
    let mut read_locked = 0;
    for i in 0..TRIES {
        // Relaxed: the counter only spreads candidates; the kernel's lock decides.
        let n = match next {
            Some(c) if i < TRIES / 2 => c.fetch_add(1, Ordering::Relaxed),
            _ => super::random_u64() as u32,
        };
        let token = 1 + n % TOKEN_COUNT;
        match ofd_try_lock(fd.as_raw_fd(), LIVE_TOKENS + token as u64, libc::F_WRLCK) {
            Ok(true) => {
                return Ok(TokenClaim {
                    token,
                    _hold: Some(fd),
                })
            }
            Ok(false) => {
                // Held: by a live thread (a write lock), or by a reader's read lock.
                if ofd_held(fd.as_raw_fd(), LIVE_TOKENS + token as u64, libc::F_RDLCK) == Ok(false)
                {
                    read_locked += 1;
                }
                continue;
            }
            Err(e) => {
                return Err(ShmError {
                    // The errno of the code, as Node pairs them; the message names the
                    // one fcntl gave.
                    errno: Some(libc::ENOLCK),
                    syscall: Some("fcntl"),
                    ..ShmError::new(
                        "ENOLCK",
                        format!(
                            "the segment's filesystem refuses open-file-description locks ({}), \
                             which shmutils locks need to tell live holders from dead ones",
                            e.desc()
                        ),
                    )
                });
            }
        }
    }
    if read_locked > TRIES / 2 {
        return Err(ShmError::new(
            "EAGAIN",
            "found no free liveness token for this thread: another process holds read locks \
             over the segment's liveness bytes (anyone who can read the segment can take \
             them: give read access to trusted users only, docs/deployment.md)",
        ));
    }
    Err(ShmError::new(
        "EAGAIN",
        "found no free liveness token for this thread",
    ))
}

/// Whether token `token`'s holder is alive, asked through `object` (a descriptor of the
/// segment that holds no token itself: the mapping's own). `_recorded_start` is unused on
/// Linux (the kernel's lock table is the whole truth). A filesystem that cannot answer
/// makes every holder look alive (never steal a lock on a guess).
pub fn token_liveness(object: RawFd, token: u32, _recorded_start: Option<u64>) -> Liveness {
    match ofd_held(object, LIVE_TOKENS + token as u64, libc::F_RDLCK) {
        Ok(false) => Liveness::Dead,
        _ => Liveness::Alive,
    }
}

/// Marks this process as attached to the object behind `fd` (a read lock on
/// [`LIVE_ATTACHED`] held by `fd`'s description) and, for the `creator`, a write lock on
/// [`LIVE_CREATOR`]. Best effort: a filesystem without OFD locks just has no marks.
pub fn mark_attached(fd: RawFd, creator: bool) {
    let _ = ofd_try_lock(fd, LIVE_ATTACHED, libc::F_RDLCK);
    if creator {
        let _ = ofd_try_lock(fd, LIVE_CREATOR, libc::F_WRLCK);
    }
}

/// Whether any process (any description other than `fd`'s) holds the mark at byte `at`
/// of the object: a lock of any kind at [`LIVE_ATTACHED`] ("is the segment mapped
/// anywhere": read-only mappings mark it too), a write lock elsewhere ([`LIVE_CREATOR`],
/// "is its creator still there"; a token's byte, "is its holder alive").
pub fn live_byte_held(fd: RawFd, at: u64) -> Option<bool> {
    let probe = if at == LIVE_ATTACHED {
        libc::F_WRLCK
    } else {
        libc::F_RDLCK
    };
    ofd_held(fd, at, probe).ok()
}

/// A process-private object for the liveness tokens of mappings without a descriptor
/// (anonymous memory, shared only with this process's threads and forked children): a
/// `memfd` created once and never closed.
///
/// # Errors
/// The errno of `memfd_create` when out of descriptors or memory (`EMFILE`, `ENFILE`,
/// `ENOMEM`); of `mkostemp` where there is no memfd.
/// A failure is not remembered: the next call tries again (once descriptors are free).
pub fn private_object() -> Result<RawFd> {
    static FD: OnceLock<RawFd> = OnceLock::new();
    if let Some(&fd) = FD.get() {
        return Ok(fd);
    }
    // SAFETY: a NUL-terminated name and valid flags.
    let mut fd = unsafe { libc::memfd_create(c"shmutils-liveness".as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        let memfd = ShmError::last_os("memfd_create");
        if matches!(
            memfd.errno,
            Some(libc::EMFILE | libc::ENFILE | libc::ENOMEM)
        ) {
            return Err(memfd); // a temporary file would need the same
        }
        // No memfd (a very old kernel or a sandbox): an unlinked temporary file does too.
        let mut path = *b"/tmp/shmutils-liveness-XXXXXX\0";
        // SAFETY: a writable NUL-terminated template.
        fd = unsafe { libc::mkostemp(path.as_mut_ptr().cast(), libc::O_CLOEXEC) };
        if fd < 0 {
            return Err(ShmError::last_os("mkostemp"));
        }
        // SAFETY: the NUL-terminated path mkostemp filled in.
        unsafe { libc::unlink(path.as_ptr().cast()) };
    }
    // Two threads may get here at once: one object wins, the other is closed.
    let kept = *FD.get_or_init(|| fd);
    if kept != fd {
        // SAFETY: `fd` was opened above and is owned by nobody else.
        unsafe { libc::close(fd) };
    }
    Ok(kept)
}

/// The identity of the object behind `fd` (device, inode): one token per thread per
/// object, however many mappings of it the thread has.
///
/// # Errors
/// The `fstat` errno.
pub fn object_key(fd: RawFd) -> Result<(u64, u64)> {
    // SAFETY: stat is plain old data, filled by fstat.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `st` is a valid out-pointer.
    if unsafe { libc::fstat(fd, &mut st) } != 0 {
        return Err(ShmError::last_os("fstat"));
    }
    Ok((st.st_dev, st.st_ino))
}

/// The calling thread's id in its own PID namespace (informational in lock records).
pub fn local_thread_id() -> u32 {
    super::thread_id()
}

/// When the calling thread started, in clock ticks since boot (informational in lock
/// records; `/proc/thread-self`, which names this thread whatever the PID namespace).
pub fn own_start_time() -> u64 {
    super::linux::start_time_in("/proc/thread-self/stat").unwrap_or(0)
}
