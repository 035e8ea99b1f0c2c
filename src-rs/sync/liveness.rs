//! Who holds a lock, and whether that holder still lives.
//!
//! The owner bits of a lock word hold the holder's **liveness token**: a number, unique
//! among the live threads using one segment, whose liveness the kernel itself tracks
//! (on Linux an open-file-description lock on the segment's inode, `sys/live_linux.rs`;
//! on macOS the thread's pid-and-slot id, `sys/live_macos.rs`). A thread gets one token
//! per segment (per inode: every mapping of the segment in the thread shares it), claimed
//! on first use and held until the thread exits or closes its last mapping of the
//! segment (a mapping collected without `close()` after a lock was taken through it
//! keeps it to the thread's exit; `js/mapping.rs` hands it between mappings). Because the token is held *before* the compare-and-swap that takes a lock,
//! there is no moment at which a lock is held by a thread whose liveness nobody can
//! check; and because the kernel answers by inode, PID namespaces do not matter.
//!
//! - [`TokenRef`]: a thread's counted hold on its token for one object; the per-thread
//!   table closes the token's description when the last reference goes, or when the
//!   thread exits.
//! - [`Owner`]: the calling thread as a lock record sees it (token, and informational
//!   pid, tid and start time), plus the descriptor through which it checks other
//!   holders.

use crate::error::Result;
use crate::memory::mapping::Region;
use crate::sys::{self, Liveness, TokenClaim};
use std::cell::RefCell;
use std::collections::HashMap;
use std::os::fd::RawFd;
use std::sync::atomic::AtomicU32;

/// How long a thread takes its last `Alive` answer about a holder (same descriptor,
/// token and recorded start) as still true: a waiter thread re-checks thousands of async
/// waits for one lock in one round (their slices end together, `sys::Deadline::slice_ms`),
/// and they all ask about the same holder. Only `Alive` is kept: a holder found dead is
/// recovered at most this much later, one found alive is never taken for dead.
const ALIVE_MEMO_NANOS: u128 = 2_000_000;

type Asked = (RawFd, u32, Option<u64>);

thread_local! {
    /// The last holder this thread found alive, and when.
    static LAST_ALIVE: std::cell::Cell<Option<(Asked, u128)>> = const { std::cell::Cell::new(None) };
}

/// Offset in the segment header of `token_next`, the counter new tokens are drawn from
/// (`docs/FORMAT.md` §2).
pub const TOKEN_NEXT_OFFSET: usize = 76;

/// The calling thread as lock records see it, on one object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owner {
    /// Liveness token: the owner bits of a lock word this thread holds.
    pub token: u32,
    /// Process id in the thread's own PID namespace (informational).
    pub pid: u32,
    /// Thread id in the thread's own PID namespace (informational).
    pub tid: u32,
    /// Thread (Linux) or process (macOS) start time; macOS checks it against pid reuse.
    pub start: u64,
    /// The descriptor through which other holders' liveness is asked: the mapping's own
    /// (which holds no token), valid while the mapping is pinned.
    probe: RawFd,
}

impl Owner {
    /// Whether the holder of `token` lives, as asked through this owner's mapping.
    /// `recorded_start`: the start time the record names for that token, if it does.
    pub fn liveness_of(&self, token: u32, recorded_start: Option<u64>) -> Liveness {
        if token == self.token {
            return Liveness::Alive; // ourselves (a queued async wait of this thread)
        }
        let asked = (self.probe, token, recorded_start);
        let now = sys::monotonic_nanos();
        if LAST_ALIVE
            .get()
            .is_some_and(|(was, at)| was == asked && now - at < ALIVE_MEMO_NANOS)
        {
            return Liveness::Alive;
        }
        let answer = sys::token_liveness(self.probe, token, recorded_start);
        if answer == Liveness::Alive {
            LAST_ALIVE.set(Some((asked, now)));
        }
        answer
    }
}

/// The descriptor that stands for `region`'s object in liveness questions: its own, or
/// for anonymous memory the process's private object.
///
/// # Errors
/// Those of [`sys::private_object`] (out of descriptors), for anonymous memory.
fn object_of(region: &Region) -> Result<RawFd> {
    match region.fd() {
        Some(fd) => Ok(fd),
        None => sys::private_object(),
    }
}

/// An object's identity (device, inode): what a token is claimed for.
pub type Key = (u64, u64);

/// The key of the object `region` maps (one `fstat`), or `None` if it cannot be asked.
pub fn object_key_of(region: &Region) -> Option<Key> {
    sys::object_key(object_of(region).ok()?).ok()
}

struct Entry {
    claim: TokenClaim,
    refs: usize,
    /// Tells this claim from a later one of the same object (after a release).
    generation: u64,
    /// Held until the thread exits, whatever the references: a mapping of the object was
    /// collected unclosed (see [`TokenRef::keep_until_exit`]).
    kept: bool,
}

/// This thread's tokens by object. Dropped (closing every description, so releasing
/// every token) when the thread exits.
#[derive(Default)]
struct Table {
    /// The process the entries belong to: a child forked with a copy of this table
    /// shares the parent's descriptions, so it must not use them.
    pid: u32,
    /// The thread's informational identity, read once.
    me: Option<(u32, u32, u64)>,
    entries: HashMap<Key, Entry>,
    claims: u64,
}

impl Table {
    fn current(&mut self) -> &mut Self {
        let pid = std::process::id();
        if self.pid != pid {
            // Forked: the parent's tokens are not ours (closing our copies of its
            // descriptions leaves its locks alone: they go with the last copy).
            self.entries.clear();
            self.me = None;
            self.pid = pid;
        }
        self
    }

    /// The live entry `r` refers to (not a later claim of the same object).
    fn entry_of(&mut self, r: &TokenRef) -> Option<&mut Entry> {
        if self.pid != std::process::id() {
            return None;
        }
        self.entries
            .get_mut(&r.key)
            .filter(|e| e.generation == r.generation)
    }

    fn identity(&mut self) -> (u32, u32, u64) {
        *self
            .me
            .get_or_insert_with(|| (self.pid, sys::local_thread_id(), sys::own_start_time()))
    }
}

thread_local! {
    static TABLE: RefCell<Table> = RefCell::new(Table::default());
}

/// A counted hold on the calling thread's token for one object: the token stays claimed
/// while any `TokenRef` for it lives in this thread (and the thread lives). Not `Send`:
/// it belongs to the thread whose token it is.
#[derive(Debug)]
pub struct TokenRef {
    key: Key,
    generation: u64,
    token: u32,
    pid: u32,
    tid: u32,
    start: u64,
    _not_send: std::marker::PhantomData<*const ()>,
}

impl TokenRef {
    /// The calling thread's token for the object mapped by `region`, claimed now if the
    /// thread has none for it. `next`: the segment header's `token_next` counter, for
    /// managed segments.
    ///
    /// # Errors
    /// `EACCES` for a read-only segment; `ENOLCK` where the filesystem has no OFD locks;
    /// `EAGAIN` if no token is free; the errno of `fstat`/`open`.
    pub fn claim(region: &Region, next: Option<&AtomicU32>) -> Result<TokenRef> {
        let object = object_of(region)?;
        let key = sys::object_key(object)?;
        TABLE.with(|t| {
            let mut t = t.borrow_mut();
            let t = t.current();
            let (token, generation) = match t.entries.get_mut(&key) {
                Some(e) => {
                    e.refs += 1;
                    (e.claim.token(), e.generation)
                }
                None => {
                    let claim = sys::claim_token(object, next)?;
                    let token = claim.token();
                    t.claims += 1;
                    let generation = t.claims;
                    t.entries.insert(
                        key,
                        Entry {
                            claim,
                            refs: 1,
                            generation,
                            kept: false,
                        },
                    );
                    (token, generation)
                }
            };
            let (pid, tid, start) = t.identity();
            Ok(TokenRef {
                key,
                generation,
                token,
                pid,
                tid,
                start,
                _not_send: std::marker::PhantomData,
            })
        })
    }

    /// Keeps the calling thread's token on this object claimed until the thread exits,
    /// whatever becomes of the other references. For a mapping collected without
    /// `close()`: a lock the thread took through it may still be held (nothing says it
    /// was released), and must not look abandoned to other processes while the thread
    /// lives. A closed mapping releases its reference instead (the caller said it is
    /// done). Costs the token's open file description until then.
    pub fn keep_until_exit(self) {
        let _ = TABLE.try_with(|t| {
            if let Ok(mut t) = t.try_borrow_mut() {
                if let Some(e) = t.entry_of(&self) {
                    e.kept = true;
                }
            }
        });
        // `self` drops here: its reference goes, the entry stays.
    }

    /// Whether this is the token for the object of key `key` (from [`object_key_of`]).
    pub fn is_for(&self, key: Option<Key>) -> bool {
        key == Some(self.key)
    }

    /// The token.
    pub fn token(&self) -> u32 {
        self.token
    }

    /// This thread as owner of locks in `region` (which must map this token's object).
    pub fn owner(&self, region: &Region) -> Owner {
        Owner {
            token: self.token,
            pid: self.pid,
            tid: self.tid,
            start: self.start,
            // A token was claimed for this object, so its descriptor is known (a private
            // object, once made, is kept for good).
            probe: object_of(region).unwrap_or(-1),
        }
    }
}

impl Clone for TokenRef {
    fn clone(&self) -> Self {
        let _ = TABLE.try_with(|t| {
            if let Some(e) = t.borrow_mut().entry_of(self) {
                e.refs += 1;
            }
        });
        TokenRef {
            key: self.key,
            generation: self.generation,
            token: self.token,
            pid: self.pid,
            tid: self.tid,
            start: self.start,
            _not_send: std::marker::PhantomData,
        }
    }
}

impl Drop for TokenRef {
    fn drop(&mut self) {
        // `try_with`: the thread may be exiting, its table already gone (and with it the
        // token's description).
        let _ = TABLE.try_with(|t| {
            let Ok(mut t) = t.try_borrow_mut() else {
                return;
            };
            if let Some(e) = t.entry_of(self) {
                e.refs -= 1;
                if e.refs == 0 && !e.kept {
                    t.entries.remove(&self.key);
                }
            }
        });
    }
}

/// The calling thread's informational identity as lock records store it: pid and thread
/// id in its own PID namespace, start time.
pub fn thread_identity() -> (u32, u32, u64) {
    TABLE.with(|t| t.borrow_mut().current().identity())
}

/// Releases every token of the calling thread now (its JavaScript environment is being
/// torn down: it will never release a lock again, so its locks must look abandoned).
pub fn release_thread_tokens() {
    let _ = TABLE.try_with(|t| {
        if let Ok(mut t) = t.try_borrow_mut() {
            t.entries.clear();
        }
    });
}

/// Marks the process as attached to `region`'s object (and as its creator): see
/// `sys::mark_attached`. Anonymous memory has no marks.
pub fn mark_attached(region: &Region, creator: bool) {
    if let Some(fd) = region.fd() {
        sys::mark_attached(fd, creator);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::segment::{self, Backing, Placement};
    use crate::memory::shm::{self, OpenMode};

    /// A fresh 8 KiB segment for test `tag`, and its name.
    fn test_segment(tag: &str) -> (std::sync::Arc<Region>, String) {
        let name = format!("/shmutils-rs-{tag}-{}", std::process::id());
        let (region, _) =
            segment::create(&name, 8192, 0o600, Placement::Anywhere, Backing::Lazy).unwrap();
        (region, name)
    }

    /// Another open file description of segment `name`, as another process has one.
    fn description(name: &str, mode: OpenMode) -> RawFd {
        shm::open(name, mode, shm::check_permissions(0).unwrap()).unwrap()
    }

    /// The process marks of `docs/FORMAT.md` §6.3, as another description sees them.
    #[test]
    #[cfg_attr(not(target_os = "linux"), ignore = "OFD locks are Linux's")]
    fn attached_and_creator_marks_live_with_the_mapping() {
        let (region, name) = test_segment("marks");
        mark_attached(&region, true);
        let other = description(&name, OpenMode::ReadWrite);
        assert_eq!(sys::live_byte_held(other, sys::LIVE_ATTACHED), Some(true));
        assert_eq!(sys::live_byte_held(other, sys::LIVE_CREATOR), Some(true));
        assert_eq!(sys::live_byte_held(other, sys::LIVE_BASE + 2), Some(false));
        region.close();
        assert_eq!(sys::live_byte_held(other, sys::LIVE_ATTACHED), Some(false));
        assert_eq!(sys::live_byte_held(other, sys::LIVE_CREATOR), Some(false));
        shm::close(other).unwrap();
        shm::unlink(&name).unwrap();
    }

    /// A read lock on a token's byte, which anyone who can read the segment may take, does
    /// not make a dead holder look alive (it did: the holder's lock was never recovered
    /// while the reader kept it); read locks over every token's byte make a claim fail
    /// with an `EAGAIN` that says so.
    #[test]
    #[cfg_attr(not(target_os = "linux"), ignore = "OFD locks are Linux's")]
    fn a_readers_read_lock_is_not_a_live_holder() {
        let (region, name) = test_segment("readlock");
        let other = description(&name, OpenMode::ReadWrite);
        let reader = description(&name, OpenMode::Read);
        let read_lock = |start: u64, len: u64| {
            // SAFETY: flock is plain old data; all-zero is valid (l_pid must be 0 for OFD).
            let mut l: libc::flock = unsafe { std::mem::zeroed() };
            l.l_type = libc::F_RDLCK as libc::c_short;
            l.l_whence = libc::SEEK_SET as libc::c_short;
            l.l_start = start as libc::off_t;
            l.l_len = len as libc::off_t;
            // SAFETY: `l` is a valid flock that outlives the call.
            assert_eq!(unsafe { libc::fcntl(reader, libc::F_OFD_SETLK, &l) }, 0);
        };
        let token = TokenRef::claim(&region, None).unwrap();
        let t = token.token();
        assert_eq!(sys::token_liveness(other, t, None), sys::Liveness::Alive);
        drop(token);
        read_lock(sys::LIVE_TOKENS + u64::from(t), 1);
        assert_eq!(sys::token_liveness(other, t, None), sys::Liveness::Dead);
        assert_eq!(
            sys::live_byte_held(other, sys::LIVE_TOKENS + u64::from(t)),
            Some(false)
        );
        read_lock(sys::LIVE_TOKENS + 1, u64::from(sys::TOKEN_COUNT));
        let Err(e) = TokenRef::claim(&region, None) else {
            panic!("a token was claimed through the read locks");
        };
        assert_eq!(e.code, "EAGAIN");
        assert!(e.message.contains("read locks"), "{}", e.message);
        shm::close(reader).unwrap();
        assert!(TokenRef::claim(&region, None).is_ok());
        region.close();
        shm::close(other).unwrap();
        shm::unlink(&name).unwrap();
    }

    /// A token kept for the thread's life survives its last reference; one that is not
    /// goes with it.
    #[test]
    #[cfg_attr(not(target_os = "linux"), ignore = "OFD locks are Linux's")]
    fn a_kept_token_outlives_its_references() {
        let (region, name) = test_segment("keep");
        let other = description(&name, OpenMode::ReadWrite);
        let held = |t: u32| sys::live_byte_held(other, sys::LIVE_BASE + 16 + u64::from(t));
        let plain = TokenRef::claim(&region, None).unwrap();
        let t = plain.token();
        assert_eq!(held(t), Some(true));
        drop(plain);
        assert_eq!(held(t), Some(false), "the last reference released it");
        let kept = TokenRef::claim(&region, None).unwrap();
        let t = kept.token();
        let again = kept.clone();
        kept.keep_until_exit();
        drop(again);
        assert_eq!(held(t), Some(true), "kept past its last reference");
        assert_eq!(
            TokenRef::claim(&region, None).unwrap().token(),
            t,
            "and claimed again as the same token"
        );
        release_thread_tokens();
        assert_eq!(
            held(t),
            Some(false),
            "until the thread lets go of everything"
        );
        region.close();
        shm::close(other).unwrap();
        shm::unlink(&name).unwrap();
    }
}
