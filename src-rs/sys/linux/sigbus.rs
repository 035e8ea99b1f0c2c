//! The SIGBUS guard: a mapped file that loses pages under us must not kill the process.
//!
//! A page of a `MAP_SHARED` file mapping faults with `SIGBUS` (`BUS_ADRERR`) when the
//! kernel cannot give it a page of the file:
//!
//! - the file was **shrunk** (`ftruncate` by any process) below the page: the page no
//!   longer exists;
//! - tmpfs is **out of pages** (a full `/dev/shm`) on the first touch of a hole.
//!
//! The default action kills the process, and for JavaScript code reading a `DataView`
//! over the mapping there is no other place to intervene. So each mapping of a file is
//! registered here, and a process-wide `SIGBUS` handler, installed once and chained to
//! whatever handler was there before (V8's, Node's, another library's), repairs faults in
//! registered mappings:
//!
//! - page beyond the end of the file (**truncated**): every page of the mapping from the
//!   file's new end on is replaced by anonymous private zero pages (one `mmap(MAP_FIXED)`),
//!   and the mapping is marked [`LOST_TRUNCATED`];
//! - page inside the file (**no space**): the handler first tries to back that one page
//!   (`fallocate`, which succeeds if space was freed meanwhile: the access then proceeds
//!   on the real page); failing that, the page is replaced by an anonymous zero page and
//!   the mapping marked [`LOST_NO_SPACE`].
//!
//! The faulting instruction then runs again and succeeds on the zero page. The layers
//! above turn the mark into a typed error on their next operation on that mapping
//! (`ERR_SHM_TRUNCATED`, `ENOSPC`): whatever was read or written on a replaced page is
//! not shared with anyone. Every repair bumps [`generation`], one process-wide word that
//! JavaScript reads (through an external ArrayBuffer) after each access to shared memory:
//! while it is 0, which is always unless a mapping lost pages, the check is one load.
//!
//! Faults elsewhere (not in a registered mapping, or not `BUS_ADRERR`, or signals sent
//! with `kill`) go to the previous handler exactly as if this one did not exist; if that
//! was the default action, it is restored and the fault re-raised, so the process dies as
//! it would have.
//!
//! # Async-signal safety
//!
//! The handler allocates nothing and takes no lock that a thread it interrupted could
//! hold. It reads the table below through atomics only, and makes four raw syscalls
//! (`fstat`, `fallocate`, `mmap`, `sched_yield`) plus `sigaction` (all async-signal-safe;
//! `fallocate` and `mmap` are not in POSIX's list, but glibc's and musl's wrappers are
//! the bare syscalls, so they are here too). It saves and restores `errno`.
//!
//! # The table
//!
//! Registered mappings live in a lock-free list of fixed arrays ([`CHUNK`] slots each),
//! allocated on demand by registering threads and never freed, so the handler can walk
//! it at any moment. A slot's `use_state`:
//!
//! | state     | meaning                                                  | who moves it      |
//! |-----------|----------------------------------------------------------|-------------------|
//! | `FREE`    | unused                                                   | -                 |
//! | `SETUP`   | claimed by a registering or unregistering thread; ignored by the handler | [`register`] (from `FREE`), [`unregister`] (from `LIVE`) |
//! | `LIVE`    | describes a mapping; the handler may repair it           | [`register`] (from `SETUP`) |
//!
//! A live slot's `lost` word (bits `LOST_*`) only grows. `repairing` is a spin flag that
//! serialises repairs of one mapping by threads faulting at once (a repair is one or two
//! syscalls); `zeroed_from` is the lowest address already replaced after a truncation, so
//! a second fault in the lost range does not replace pages again.
//!
//! A mapping is unregistered before it is unmapped, and never while a view of it is in
//! use (views are detached first; native work holds a pin), so the handler never looks
//! at a slot whose memory was given back.

use std::os::fd::RawFd;
use std::ptr;
use std::sync::atomic::Ordering::{AcqRel, Acquire, Relaxed, Release};
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicPtr, AtomicU32, AtomicU64, AtomicUsize};
use std::sync::Once;

/// The mapping lost pages because its file was shrunk.
pub const LOST_TRUNCATED: u32 = 1;
/// The mapping lost pages because the filesystem had no space for them.
pub const LOST_NO_SPACE: u32 = 2;

const FREE: u32 = 0;
const SETUP: u32 = 1;
const LIVE: u32 = 2;

/// Slots per chunk of the table.
const CHUNK: usize = 64;

struct Slot {
    use_state: AtomicU32,
    start: AtomicUsize,
    len: AtomicUsize,
    fd: AtomicI32,
    prot: AtomicI32,
    file_offset: AtomicU64,
    lost: AtomicU32,
    zeroed_from: AtomicUsize,
    repairing: AtomicBool,
}

impl Slot {
    const fn new() -> Slot {
        Slot {
            use_state: AtomicU32::new(FREE),
            start: AtomicUsize::new(0),
            len: AtomicUsize::new(0),
            fd: AtomicI32::new(-1),
            prot: AtomicI32::new(0),
            file_offset: AtomicU64::new(0),
            lost: AtomicU32::new(0),
            zeroed_from: AtomicUsize::new(0),
            repairing: AtomicBool::new(false),
        }
    }
}

struct Chunk {
    slots: [Slot; CHUNK],
    next: AtomicPtr<Chunk>,
}

impl Chunk {
    const fn new() -> Chunk {
        Chunk {
            slots: [const { Slot::new() }; CHUNK],
            next: AtomicPtr::new(ptr::null_mut()),
        }
    }
}

static FIRST: Chunk = Chunk::new();

/// Bumped by every repair: read by JavaScript after accesses (see the module docs).
static GENERATION: AtomicU32 = AtomicU32::new(0);

/// The handler that was installed before ours, written once before ours is installed.
static mut PREVIOUS: libc::sigaction = unsafe_zeroed_sigaction();
static INSTALL: Once = Once::new();
static INSTALLED: AtomicBool = AtomicBool::new(false);
static PAGE: AtomicUsize = AtomicUsize::new(4096);

const fn unsafe_zeroed_sigaction() -> libc::sigaction {
    // SAFETY: sigaction is a plain C struct for which all-zero is a valid value
    // (SIG_DFL, no flags, empty mask).
    unsafe { std::mem::MaybeUninit::zeroed().assume_init() }
}

/// A registered mapping (see [`register`]): its slot in the table.
#[derive(Clone, Copy)]
pub struct GuardId(&'static Slot);

impl std::fmt::Debug for GuardId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("GuardId")
            .field(&(self.0 as *const Slot))
            .finish()
    }
}

/// The process-wide repair counter (0 until some mapping lost pages).
pub fn generation() -> &'static AtomicU32 {
    &GENERATION
}

fn chunks() -> impl Iterator<Item = &'static Chunk> {
    let mut c: *const Chunk = &FIRST;
    std::iter::from_fn(move || {
        if c.is_null() {
            return None;
        }
        // SAFETY: chunks are FIRST or leaked boxes, never freed.
        let cur = unsafe { &*c };
        c = cur.next.load(Acquire);
        Some(cur)
    })
}

/// Registers `[start, start + len)`, a mapping of the file behind `fd` from
/// `file_offset` with protection `prot`, so that a `SIGBUS` in it is repaired instead of
/// killing the process. Installs the handler on first use. `fd` must stay open until
/// [`unregister`].
pub fn register(start: usize, len: usize, fd: RawFd, file_offset: u64, prot: i32) -> GuardId {
    install();
    let mut chunk: &'static Chunk = &FIRST;
    loop {
        for s in &chunk.slots {
            if s.use_state
                .compare_exchange(FREE, SETUP, Acquire, Relaxed)
                .is_ok()
            {
                s.start.store(start, Relaxed);
                s.len.store(len, Relaxed);
                s.fd.store(fd, Relaxed);
                s.prot.store(prot, Relaxed);
                s.file_offset.store(file_offset, Relaxed);
                s.lost.store(0, Relaxed);
                s.zeroed_from.store(start.saturating_add(len), Relaxed);
                s.repairing.store(false, Relaxed);
                // Release: the handler that sees LIVE (Acquire) sees the fields.
                s.use_state.store(LIVE, Release);
                return GuardId(s);
            }
        }
        let next = chunk.next.load(Acquire);
        chunk = if next.is_null() {
            let fresh = Box::into_raw(Box::new(Chunk::new()));
            match chunk
                .next
                .compare_exchange(ptr::null_mut(), fresh, AcqRel, Acquire)
            {
                // SAFETY: just published; never freed.
                Ok(_) => unsafe { &*fresh },
                Err(other) => {
                    // SAFETY: `fresh` was never shared.
                    drop(unsafe { Box::from_raw(fresh) });
                    // SAFETY: published by another thread; never freed.
                    unsafe { &*other }
                }
            }
        } else {
            // SAFETY: published chunks are never freed.
            unsafe { &*next }
        };
    }
}

/// Stops guarding a mapping; call before unmapping it or closing its descriptor.
pub fn unregister(id: GuardId) {
    let s = id.0;
    if s.use_state
        .compare_exchange(LIVE, SETUP, AcqRel, Relaxed)
        .is_ok()
    {
        // Wait out a repair in progress on another thread (a few syscalls).
        while s.repairing.load(Acquire) {
            std::thread::yield_now();
        }
        s.use_state.store(FREE, Release);
    }
}

/// The `LOST_*` bits of a registered mapping (0: intact). Meaningful until
/// [`unregister`].
pub fn lost(id: GuardId) -> u32 {
    id.0.lost.load(Acquire)
}

fn install() {
    INSTALL.call_once(|| {
        // SAFETY: sysconf has no preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        if page > 0 {
            PAGE.store(page as usize, Relaxed);
        }
        // SAFETY: reading the current action into PREVIOUS before installing ours, from
        // the one thread inside call_once; the handler reads PREVIOUS only after
        // INSTALLED is set (Release/Acquire).
        unsafe {
            let prev = &raw mut PREVIOUS;
            if libc::sigaction(libc::SIGBUS, ptr::null(), prev) != 0 {
                return;
            }
            let mut act: libc::sigaction = std::mem::zeroed();
            act.sa_sigaction = on_sigbus as *const () as usize;
            act.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK | libc::SA_RESTART;
            libc::sigemptyset(&mut act.sa_mask);
            INSTALLED.store(true, Release);
            if libc::sigaction(libc::SIGBUS, &act, ptr::null_mut()) != 0 {
                INSTALLED.store(false, Release);
            }
        }
    });
}

extern "C" fn on_sigbus(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    // SAFETY: errno is thread-local; we restore what the interrupted code had.
    let saved = unsafe { *libc::__errno_location() };
    // SAFETY: the kernel passes a valid siginfo for an SA_SIGINFO handler.
    let (code, addr) = unsafe { ((*info).si_code, (*info).si_addr() as usize) };
    let handled = code == libc::BUS_ADRERR && find(addr).is_some_and(|s| repair(s, addr));
    if !handled {
        // SAFETY: forwarding the handler's own arguments.
        unsafe { chain(sig, info, ctx) };
    }
    // SAFETY: as above.
    unsafe { *libc::__errno_location() = saved };
}

fn find(addr: usize) -> Option<&'static Slot> {
    for c in chunks() {
        for s in &c.slots {
            if s.use_state.load(Acquire) == LIVE {
                let start = s.start.load(Relaxed);
                if addr >= start && addr - start < s.len.load(Relaxed) {
                    return Some(s);
                }
            }
        }
    }
    None
}

/// Repairs the fault at `addr` in `s` (see the module docs). `false`: could not.
fn repair(s: &Slot, addr: usize) -> bool {
    while s
        .repairing
        .compare_exchange(false, true, Acquire, Relaxed)
        .is_err()
    {
        // SAFETY: sched_yield has no preconditions.
        unsafe { libc::sched_yield() };
    }
    let ok = repair_locked(s, addr);
    s.repairing.store(false, Release);
    ok
}

fn repair_locked(s: &Slot, addr: usize) -> bool {
    let page = PAGE.load(Relaxed);
    let (start, len) = (s.start.load(Relaxed), s.len.load(Relaxed));
    let (fd, prot, file_offset) = (
        s.fd.load(Relaxed),
        s.prot.load(Relaxed),
        s.file_offset.load(Relaxed),
    );
    let end = start + len;
    let at = addr & !(page - 1);
    let zeroed_from = s.zeroed_from.load(Relaxed);
    if at >= zeroed_from {
        return true; // another thread replaced this page while we waited: just retry
    }
    // SAFETY: fstat writes into our zeroed buffer; a stale fd gives an error.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `st` is a valid stat buffer.
    if unsafe { libc::fstat(fd, &mut st) } != 0 {
        return false;
    }
    let size = st.st_size as u64;
    let page_file_offset = file_offset + (at - start) as u64;
    let (from, to, why) = if page_file_offset >= size {
        // Truncated: everything from the file's new end on is gone.
        let keep = size.saturating_sub(file_offset);
        let keep = keep.div_ceil(page as u64) * page as u64;
        let from = start.saturating_add(keep.min(len as u64) as usize).min(at);
        (from, zeroed_from.min(end), LOST_TRUNCATED)
    } else {
        // Inside the file: no page for it. Back it if space appeared meanwhile.
        // SAFETY: a plain syscall on our descriptor; KEEP_SIZE never grows the file.
        let r = unsafe {
            libc::fallocate(
                fd,
                libc::FALLOC_FL_KEEP_SIZE,
                page_file_offset as libc::off_t,
                page as libc::off_t,
            )
        };
        if r == 0 {
            return true;
        }
        (at, at + page, LOST_NO_SPACE)
    };
    if from >= to {
        return true;
    }
    // SAFETY: [from, to) lies inside the registered mapping, which we own and which is
    // not unmapped while registered; replacing its pages with zero pages is exactly the
    // repair (nothing else of the process lives there).
    let p = unsafe {
        libc::mmap(
            from as *mut libc::c_void,
            to - from,
            prot,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return false;
    }
    if why == LOST_TRUNCATED {
        s.zeroed_from.store(from, Relaxed);
    }
    s.lost.fetch_or(why, Release);
    GENERATION.fetch_add(1, Release);
    true
}

/// Hands a signal that is not ours to the handler installed before ours.
///
/// # Safety
/// Called from our handler with its arguments.
unsafe fn chain(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    // SAFETY: PREVIOUS was written before INSTALLED was set and never changes after.
    let prev = unsafe { ptr::read(&raw const PREVIOUS) };
    let h = prev.sa_sigaction;
    if h == libc::SIG_DFL || h == libc::SIG_IGN {
        // Restore the default and let the fault happen again (a hardware fault re-raises
        // on return; a signal sent by kill() is re-sent): the process dies as it would
        // have without us. Ignoring a fault is impossible anyway.
        // SAFETY: sigaction and raise are async-signal-safe.
        unsafe {
            let mut dfl: libc::sigaction = std::mem::zeroed();
            dfl.sa_sigaction = libc::SIG_DFL;
            libc::sigaction(sig, &dfl, ptr::null_mut());
            if (*info).si_code <= 0 {
                libc::raise(sig);
            }
        }
        return;
    }
    if prev.sa_flags & libc::SA_SIGINFO != 0 {
        // SAFETY: the previous owner installed this as a three-argument handler.
        let f: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) =
            unsafe { std::mem::transmute(h) };
        f(sig, info, ctx);
    } else {
        // SAFETY: the previous owner installed this as a one-argument handler.
        let f: extern "C" fn(libc::c_int) = unsafe { std::mem::transmute(h) };
        f(sig);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh tmpfs object of `len` bytes (unlinked when dropped) and a shared mapping
    /// of it.
    fn mapped(len: usize) -> (crate::memory::shm::TestObject, *mut u8) {
        let obj = crate::memory::shm::TestObject::new("sigbus", len as u64);
        // SAFETY: a fresh shared mapping of our own object.
        let p = unsafe {
            libc::mmap(
                ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                obj.fd,
                0,
            )
        };
        assert_ne!(p, libc::MAP_FAILED);
        (obj, p.cast())
    }

    #[test]
    fn a_truncated_mapping_reads_zeros_and_is_marked() {
        let len = 16 * 4096;
        let (obj, p) = mapped(len);
        let fd = obj.fd;
        let id = register(p as usize, len, fd, 0, libc::PROT_READ | libc::PROT_WRITE);
        // SAFETY: in bounds of our mapping.
        unsafe { p.add(len - 1).write_volatile(7) };
        assert_eq!(lost(id), 0);
        crate::memory::shm::truncate(fd, 4096 * 3).unwrap();
        let g0 = generation().load(Acquire);
        // SAFETY: in bounds; the page is gone from the file, the guard repairs the fault.
        let v = unsafe { p.add(len - 1).read_volatile() };
        assert_eq!(v, 0);
        assert_eq!(lost(id), LOST_TRUNCATED);
        assert!(generation().load(Acquire) > g0);
        // The pages that still exist are still shared.
        // SAFETY: in bounds.
        unsafe { p.add(4096 * 2).write_volatile(9) };
        let mut b = [0u8; 1];
        // SAFETY: pread into a local buffer.
        let n = unsafe { libc::pread(fd, b.as_mut_ptr().cast(), 1, 4096 * 2) };
        assert_eq!(n, 1);
        assert_eq!(b[0], 9);
        // A second fault in the lost range needs no repair.
        // SAFETY: in bounds; zero page.
        unsafe { p.add(4096 * 5).write_volatile(1) };
        unregister(id);
        // SAFETY: our mapping.
        unsafe { libc::munmap(p.cast(), len) };
    }

    #[test]
    fn slots_are_found_while_registered_and_grow_past_a_chunk() {
        // Fake ranges far from anything mapped (the handler is never asked about them).
        let at = |i: usize| 0x10_0000_0000 + 0x1000 * i;
        let ids: Vec<GuardId> = (0..CHUNK * 2 + 3)
            .map(|i| register(at(i), 0x1000, -1, 0, 0))
            .collect();
        assert!(ids.iter().all(|&id| lost(id) == 0));
        for i in [0, CHUNK, CHUNK * 2 + 2] {
            assert!(find(at(i) + 5).is_some_and(|s| std::ptr::eq(s, ids[i].0)));
        }
        for id in ids {
            unregister(id);
        }
        assert!(find(at(0)).is_none() && find(at(CHUNK * 2 + 2)).is_none());
        assert!(INSTALLED.load(Acquire));
    }
}
