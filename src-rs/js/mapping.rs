//! Mappings and managed segments at the boundary: making, opening and closing mappings
//! (the hot ones exported raw, `raw.rs`), this thread's table of mappings that every
//! other function addresses by id (no class: napi-rs class methods take a process-wide
//! mutex per call), their buffers, and the platform's mapping constants.

use crate::error::{Result, ShmError};
use crate::js::args::to_u64;
use crate::js::slots::SlotTable;
use crate::memory::mapping::{self, MapRequest, Region};
use crate::memory::segment::{self, FixedMode, Placement};
use crate::memory::shm;
use crate::sync::liveness::{self, Owner, TokenRef};
use crate::sync::Pinned;
use napi::bindgen_prelude::{ArrayBuffer, FromNapiValue};
use napi::Env;
use napi_derive::napi;
use std::cell::{Cell, RefCell};
use std::sync::Arc;

/// The system page size.
#[napi]
pub fn page_size() -> u32 {
    mapping::page_size() as u32
}

/// Unmaps memory previously released with `detach()`.
#[napi]
pub fn munmap(address: f64, size: f64) -> napi::Result<()> {
    Ok(mapping::munmap_forgotten(
        to_u64("address", address)?,
        to_u64("size", size)?,
    )?)
}

/// Detaches an ArrayBuffer so that every view over it reads as length 0.
#[napi]
pub fn detach_buffer(buffer: ArrayBuffer) -> napi::Result<()> {
    buffer.detach()
}

/// One mapping of this thread: the region, and this thread's liveness token on the
/// object it maps (claimed on first use, released when the mapping closes).
struct MapSlot {
    region: Arc<Region>,
    /// Whether the region is a managed segment (its header has a `token_next` counter).
    managed: bool,
    /// Whether the mapping is writable: a read-only one can take no lock (its token would
    /// be shared with the thread's writable mappings of the same segment).
    writable: bool,
    token: RefCell<Option<TokenRef>>,
    /// Whether a lock may have been taken through this mapping (its token was asked for
    /// as a lock owner, not only for the heap lock or the heap cache): decides what
    /// becomes of the token when the mapping goes (see [`hand_over`]).
    locks: Cell<bool>,
    /// The key of the object it maps, asked once (see [`MapSlot::object_key`]).
    object: std::cell::OnceCell<Option<liveness::Key>>,
}

impl MapSlot {
    /// The key of the object this mapping maps: one `fstat` on first use, then kept (a
    /// mapping never changes its object), so that [`hand_over`], which asks every
    /// mapping of the thread, costs no system call per mapping.
    fn object_key(&self) -> Option<liveness::Key> {
        *self
            .object
            .get_or_init(|| liveness::object_key_of(&self.region))
    }
}

thread_local! {
    /// This JavaScript thread's mappings, by the id JavaScript passes back. A slot is
    /// released when the `MappedMemory` is collected (`mappingRelease`), not at close:
    /// until then a call with its id still finds the (closed) region and says so.
    static REGIONS: RefCell<SlotTable<MapSlot>> = const { RefCell::new(SlotTable::new()) };
}

fn no_mapping(id: u32) -> ShmError {
    ShmError::new("EINVAL", format!("no mapping with id {id} in this thread"))
}

/// The region of this thread's mapping `id`.
///
/// # Errors
/// `EINVAL` for an id this thread never handed out (or whose mapping was collected).
pub(crate) fn region_of(id: u32) -> Result<Arc<Region>> {
    REGIONS
        .with(|r| r.borrow().get(id).map(|s| s.region.clone()))
        .ok_or_else(|| no_mapping(id))
}

/// This thread's token on the object of mapping `id` (claimed now if needed), and the
/// mapping's region, for the heap: its lock (held only within a call) and its cache
/// (whose blocks go back before the heap's slot lets go of the token).
///
/// # Errors
/// `EINVAL` for an unknown id; `ERR_SHM_CLOSED`; what claiming a token can fail with
/// (`EACCES` for a read-only segment, ...).
pub(crate) fn token_of(id: u32) -> Result<(TokenRef, Arc<Region>)> {
    with_token(id, false, |token, region| (token.clone(), region.clone()))
}

/// This thread as lock owner in mapping `id` (a slot lookup once the token is claimed).
///
/// # Errors
/// As [`token_of`].
pub(crate) fn owner_of(id: u32) -> Result<Owner> {
    with_token(id, true, |token, region| token.owner(region))
}

/// Runs `f` with this thread's token on mapping `id` (claimed now if needed). `locks`:
/// asked for as a lock owner (marks the mapping, see [`MapSlot::locks`]).
fn with_token<R>(id: u32, locks: bool, f: impl FnOnce(&TokenRef, &Arc<Region>) -> R) -> Result<R> {
    REGIONS.with(|r| {
        let table = r.borrow();
        let slot = table.get(id).ok_or_else(|| no_mapping(id))?;
        if !slot.region.is_live() {
            return Err(crate::memory::mapping::closed());
        }
        if !slot.writable || slot.region.is_read_only() {
            return Err(crate::memory::mapping::read_only());
        }
        let mut token = slot.token.borrow_mut();
        if token.is_none() {
            let next = slot.managed.then(|| {
                // SAFETY: a managed segment is at least 4096 bytes, so the 4-aligned
                // header field lies inside the live mapping, which outlives this call
                // (the slot holds the region).
                unsafe {
                    &*((slot.region.addr() + liveness::TOKEN_NEXT_OFFSET)
                        as *const std::sync::atomic::AtomicU32)
                }
            });
            *token = Some(TokenRef::claim(&slot.region, next)?);
        }
        if locks {
            slot.locks.set(true);
        }
        Ok(f(token.as_ref().expect("claimed above"), &slot.region))
    })
}

/// Gives up mapping `id`'s hold on this thread's token (closed or forgotten: no lock can
/// be released through it any more). The token itself stays while the thread has another
/// open mapping of the segment (see [`hand_over`]).
fn drop_token(id: u32, region: &Region) {
    let _ = REGIONS.try_with(|r| {
        let table = r.borrow();
        let Some(slot) = table.get(id) else { return };
        let Some(token) = slot.token.borrow_mut().take() else {
            return;
        };
        // Released here unless another open mapping takes it over.
        drop(hand_over(&table, slot, token, slot.locks.replace(false)));
    });
    crate::js::heap::release_heap_tokens(region);
}

/// The token of a mapping that goes (`from`): a thread's locks in a segment are its own
/// until it exits or has closed every mapping of the segment, so another open, writable
/// mapping of the same object in this thread takes the token over (and `locks`, whether
/// locks may have been taken through `from`). Returns the token when there is none.
fn hand_over(
    table: &SlotTable<MapSlot>,
    from: &MapSlot,
    token: TokenRef,
    locks: bool,
) -> Option<TokenRef> {
    let Some(heir) = table.iter().find(|s| {
        !std::ptr::eq(*s, from) && s.writable && s.region.is_live() && token.is_for(s.object_key())
    }) else {
        return Some(token);
    };
    let mut t = heir.token.borrow_mut();
    if t.is_none() {
        *t = Some(token);
    }
    if locks {
        heir.locks.set(true);
    }
    None
}

/// The record of type `T` at `offset` of this thread's mapping `id`, pinned. Every
/// synchronization record is written to, so a read-only or truncated mapping is refused.
pub(crate) fn record<T>(id: u32, offset: f64) -> Result<Pinned<T>> {
    let region = region_of(id)?;
    region.check_writable()?;
    region.check_intact()?;
    Pinned::new(&region, to_u64("offset", offset)?)
}

/// The record at `offset` of mapping `id`, pinned, and this thread as its owner.
pub(crate) fn owned_record<T>(id: u32, offset: f64) -> Result<(Pinned<T>, Owner)> {
    Ok((record(id, offset)?, owner_of(id)?))
}

/// What lock records store about the calling thread besides its token.
#[napi(object)]
pub struct ThreadIdentity {
    /// Process id in the thread's own PID namespace (informational).
    pub pid: u32,
    /// Thread id in the thread's own PID namespace (informational).
    pub tid: u32,
    /// Low 32 bits of the start time.
    pub start_lo: u32,
    /// High 32 bits of the start time.
    pub start_hi: u32,
}

/// Who the calling thread is, as lock records store it (cached per thread by
/// `lib/identity.ts`).
#[napi]
pub fn thread_identity() -> ThreadIdentity {
    let (pid, tid, start) = liveness::thread_identity();
    ThreadIdentity {
        pid,
        tid,
        start_lo: start as u32,
        start_hi: (start >> 32) as u32,
    }
}

thread_local! {
    /// Whether this JavaScript thread registered the cleanup hook that releases its
    /// tokens when its environment goes (`worker.terminate()`).
    static HOOKED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Releases every token of this thread once its JavaScript environment is torn down
/// (the thread-local table would also do it when the thread exits; this is earlier).
pub(crate) fn release_tokens_at_teardown(env: &Env) -> Result<()> {
    if !HOOKED.with(|h| h.replace(true)) {
        env.add_env_cleanup_hook((), |()| liveness::release_thread_tokens())
            .map_err(|e| ShmError::new("EINVAL", e.reason))?;
    }
    Ok(())
}

/// This thread's liveness token in mapping `id`: the owner bits of the lock words it
/// holds there (claimed on the first call; `lib/identity.ts` caches it per mapping).
#[napi]
pub fn lock_token(env: Env, id: u32) -> napi::Result<u32> {
    release_tokens_at_teardown(&env)?;
    with_token(id, true, |token, _| token.token()).map_err(Into::into)
}

/// The `fixedAddress` option of opening: 0 = `false`, 1 = `'prefer'`, 2 = `'require'`.
pub(crate) fn fixed_mode(fixed: f64) -> FixedMode {
    match fixed as i64 {
        2 => FixedMode::Require,
        1 => FixedMode::Prefer,
        _ => FixedMode::No,
    }
}

/// How much of a new segment to back at once: the `prefault` and `reserve` options.
pub(crate) fn backing(prefault: bool, reserve: bool) -> segment::Backing {
    if prefault {
        segment::Backing::Prefault
    } else if reserve {
        segment::Backing::Reserve
    } else {
        segment::Backing::Lazy
    }
}

/// What JavaScript learns of a new mapping, as numbers in a `Float64Array` it passes in
/// (`OUT` in `lib/memory.ts`, which decodes them): the raw calls that make mappings fill
/// it instead of building an object property by property.
pub(crate) mod out {
    /// Id for the free functions of this thread.
    pub const ID: usize = 0;
    /// Absolute address of the first byte.
    pub const ADDRESS: usize = 1;
    /// Length in bytes.
    pub const SIZE: usize = 2;
    /// The creator's base address (pointers are stored relative to it); for a raw
    /// mapping, its own address.
    pub const BASE: usize = 3;
    /// Start of the heap region (managed segments), else 0.
    pub const HEAP_OFFSET: usize = 4;
    /// Length of the heap region (managed segments), else 0.
    pub const HEAP_SIZE: usize = 5;
    /// The header's `uid`, high and low 32 bits (0 for raw mappings and old segments).
    pub const UID_HI: usize = 6;
    /// See [`UID_HI`].
    pub const UID_LO: usize = 7;
    /// The object's inode number, high and low 32 bits (0: none).
    pub const INODE_HI: usize = 8;
    /// See [`INODE_HI`].
    pub const INODE_LO: usize = 9;
    /// Creation time from the header, ms since the Unix epoch (0: unknown or raw).
    pub const CREATED_MS: usize = 10;
    /// The creator's pid from the header (0: unknown or raw).
    pub const CREATOR_PID: usize = 11;
    /// The creator's process start time from the header (0: unknown or raw).
    pub const CREATOR_START: usize = 12;
    /// 1 for a segment opened read-only.
    pub const READ_ONLY: usize = 13;
    /// 1 for a managed segment (it has a header).
    pub const MANAGED: usize = 14;
    /// The mapping's own descriptor of the object it maps (closed with the mapping), or
    /// -1 (anonymous memory).
    pub const FD: usize = 15;
    /// Length of the array.
    pub const LEN: usize = 16;
}

/// A mapping just made, before JavaScript has it.
pub(crate) struct Opened {
    region: Arc<Region>,
    header: Option<segment::Header>,
    inode: u64,
    /// Whether the library may write through it (and take locks in it).
    writable: bool,
}

impl Opened {
    /// Registers the mapping in this thread's table and describes it in `out` (at least
    /// [`out::LEN`] numbers).
    pub(crate) fn register(self, out: &mut [f64]) {
        let Opened {
            region,
            header,
            inode,
            writable,
        } = self;
        let slot = MapSlot {
            region: region.clone(),
            managed: header.is_some(),
            writable,
            token: RefCell::new(None),
            locks: Cell::new(false),
            object: std::cell::OnceCell::new(),
        };
        let id = REGIONS.with(|r| r.borrow_mut().insert(slot));
        let addr = region.addr() as f64;
        let h = header.unwrap_or(segment::Header {
            size: 0,
            base: region.addr() as u64,
            flags: 0,
            heap_offset: 0,
            heap_size: 0,
            uid: 0,
            created_ms: 0,
            creator_pid: 0,
            creator_start: 0,
        });
        out[out::ID] = f64::from(id);
        out[out::ADDRESS] = addr;
        out[out::SIZE] = region.len() as f64;
        out[out::BASE] = h.base as f64;
        out[out::HEAP_OFFSET] = h.heap_offset as f64;
        out[out::HEAP_SIZE] = h.heap_size as f64;
        out[out::UID_HI] = f64::from((h.uid >> 32) as u32);
        out[out::UID_LO] = f64::from(h.uid as u32);
        out[out::INODE_HI] = f64::from((inode >> 32) as u32);
        out[out::INODE_LO] = f64::from(inode as u32);
        out[out::CREATED_MS] = h.created_ms as f64;
        out[out::CREATOR_PID] = f64::from(h.creator_pid);
        out[out::CREATOR_START] = h.creator_start as f64;
        out[out::READ_ONLY] = f64::from(u8::from(region.is_read_only()));
        out[out::MANAGED] = f64::from(u8::from(header.is_some()));
        out[out::FD] = f64::from(region.fd().unwrap_or(-1));
    }

    /// A managed segment just made (or opened) by `what`.
    pub(crate) fn managed(
        region: Arc<Region>,
        header: segment::Header,
        inode: u64,
        writable: bool,
    ) -> Opened {
        Opened {
            region,
            header: Some(header),
            inode,
            writable,
        }
    }
}

/// A raw mapping: `mmap(address, size, protection, flags, fd, offset)`; `address` < 0
/// lets the kernel choose, `fd` < 0 maps anonymous memory. (Exported raw: `raw.rs`.)
pub(crate) fn map_raw(
    address: f64,
    size: f64,
    protection: f64,
    flags: f64,
    fd: f64,
    offset: f64,
) -> Result<Opened> {
    let address = if address < 0.0 {
        None
    } else {
        Some(to_u64("address", address)?)
    };
    let int = |what: &str, v: f64| -> Result<i32> {
        if !v.is_finite() || v.fract() != 0.0 {
            Err(ShmError::type_error(format!(
                "The \"{what}\" argument must be an integer; got {v}"
            )))
        } else if (f64::from(i32::MIN)..=f64::from(i32::MAX)).contains(&v) {
            Ok(v as i32)
        } else {
            Err(ShmError::range(format!(
                "The \"{what}\" argument must be within {}..{}; got {v}",
                i32::MIN,
                i32::MAX
            )))
        }
    };
    let fd = int("fd", fd)?;
    let mut prot = int("protection", protection)?;
    let mut flags = int("flags", flags)?;
    // Readable but not writable: mapped copy-on-write (as read-only opens of segments
    // are), so that a stray write through a view lands in a private page instead of
    // killing the process (SIGSEGV); the region is read-only, so every write of the
    // library's own (a lock, a heap) is refused, where it would land in a private copy
    // nobody else sees.
    let cow = prot & libc::PROT_READ != 0 && prot & libc::PROT_WRITE == 0;
    if cow {
        prot |= libc::PROT_WRITE;
        flags = (flags & !libc::MAP_SHARED) | libc::MAP_PRIVATE;
    }
    let req = MapRequest {
        address,
        len: to_u64("size", size)?,
        prot,
        flags,
        fd,
        offset: to_u64("offset", offset)?,
    };
    let region = Region::map(req)?;
    if cow {
        region.set_read_only();
    }
    let mut inode = 0;
    if fd >= 0 {
        // The caller keeps its descriptor; the region gets a duplicate of its own.
        let own = crate::memory::shm::dup_cloexec(fd).inspect_err(|_| region.close())?;
        region.adopt_fd(own);
        liveness::mark_attached(&region, false);
        inode = shm::size_and_inode(own).map_or(0, |(_, ino)| ino);
    }
    Ok(Opened {
        region,
        header: None,
        inode,
        writable: !cow && prot & libc::PROT_WRITE != 0,
    })
}

/// Creates a managed segment. `fixed`: -1 = anywhere, -2 = a free high address, else
/// exactly that address. `prefault` backs and maps every page now, `reserve` backs every
/// page now (both report `ENOSPC` instead of faulting later). (Exported raw: `raw.rs`.)
pub(crate) fn create_segment(
    name: &str,
    size: f64,
    permissions: f64,
    fixed: f64,
    prefault: bool,
    reserve: bool,
) -> Result<Opened> {
    let placement = if fixed == -1.0 {
        Placement::Anywhere
    } else if fixed == -2.0 {
        Placement::FreeHigh
    } else {
        Placement::At(to_u64("fixedAddress", fixed)?)
    };
    let backing = backing(prefault, reserve);
    let permissions = to_u64("permissions", permissions)?;
    let (region, header) =
        segment::create(name, to_u64("size", size)?, permissions, placement, backing)?;
    let inode = region.fd().and_then(|fd| shm::inode(fd).ok()).unwrap_or(0);
    if let Err(e) = crate::heap::format_heap(&region, header.heap_offset, header.heap_size) {
        region.close();
        let _ = shm::unlink(&shm::normalize_name(name)?);
        return Err(e.with_path(&shm::normalize_name(name)?));
    }
    segment::publish(&region);
    liveness::mark_attached(&region, true);
    Ok(Opened {
        region,
        header: Some(header),
        inode,
        writable: true,
    })
}

/// Opens a managed segment. `fixed`: 0 = anywhere, 1 = prefer the creator's address, 2 =
/// require it. (Exported raw: `raw.rs`.)
pub(crate) fn open_segment(name: &str, fixed: f64, read_only: bool) -> Result<Opened> {
    let (region, header, inode) = segment::open(name, fixed_mode(fixed), read_only)?;
    liveness::mark_attached(&region, false);
    Ok(Opened {
        region,
        header: Some(header),
        inode,
        writable: !read_only,
    })
}

/// Unmaps mapping `id` (once every in-flight native wait let go; the caller detached its
/// ArrayBuffers first). Idempotent. (Exported raw: `raw.rs`.)
pub(crate) fn close(id: u32) -> Result<()> {
    let region = region_of(id)?;
    end_waits(&region);
    drop_token(id, &region);
    region.close();
    Ok(())
}

/// Ends every async wait that uses `region` (closed or detached): the running ones with
/// `CLOSED`, and those whose completion is on its way to this thread give back what they
/// took, while the pages are mapped and before this thread's token goes (a lock taken for
/// it would look abandoned to the next process meanwhile).
fn end_waits(region: &Region) {
    crate::sync::waiter::close_region(region);
    crate::js::waits::settle_queued(region);
}

/// Forgets mapping `id` (collected): its slot goes; the pages go with the last ArrayBuffer
/// over them, unless it was closed or detached already. A token the mapping still holds
/// (it was never closed) goes to another open mapping of the segment ([`hand_over`]);
/// with none, it stays claimed until the thread exits if a lock may have been taken
/// through the mapping (nothing says it was released), and is released otherwise.
/// (Exported raw: `raw.rs`.)
pub(crate) fn release(id: u32) {
    // `try_with`: the thread may be exiting.
    let _ = REGIONS.try_with(|r| {
        let Some(slot) = r.borrow_mut().remove(id) else {
            return;
        };
        let Some(token) = slot.token.borrow_mut().take() else {
            return;
        };
        let locks = slot.locks.get();
        if let Some(token) = hand_over(&r.borrow(), &slot, token, locks) {
            if locks {
                token.keep_until_exit();
            }
        }
    });
}

/// An external ArrayBuffer over `[offset, offset + length)` of mapping `id` (zero-copy),
/// made in `env`. Throws instead of copying when the runtime forbids external buffers (a
/// copy would not be shared), and `ERR_SHM_BUFFER_TOO_LARGE` when it refuses one this
/// large (Node 20: above 4 GiB); `lib/memory.ts` then serves windows instead. (Exported
/// raw: `raw.rs`; the first use of a mapping's memory after `open` makes one.)
pub(crate) fn buffer(
    env: napi::sys::napi_env,
    id: u32,
    offset: f64,
    length: f64,
) -> Result<napi::sys::napi_value> {
    let (offset, length) = (to_u64("offset", offset)?, to_u64("length", length)?);
    let region = region_of(id)?;
    let pin = region.pin()?;
    let start = pin.region().check_range(offset, length)?;
    external_buffer(env, &region, start, length as usize)
}

/// Backs `[offset, offset + length)` of mapping `id` with real pages now, so that raw
/// writes there cannot fault on a full filesystem.
#[napi]
pub fn mapping_reserve(id: u32, offset: f64, length: f64) -> napi::Result<()> {
    let (offset, length) = (to_u64("offset", offset)?, to_u64("length", length)?);
    let region = region_of(id)?;
    let pin = region.pin()?;
    pin.region().check_intact()?;
    pin.region().reserve(offset, length)?;
    Ok(())
}

/// Throws `ERR_SHM_TRUNCATED` / `ENOSPC` if mapping `id` lost pages (see
/// `sys/linux/sigbus.rs`), `ERR_SHM_CLOSED` once closed.
#[napi]
pub fn mapping_check_intact(id: u32) -> napi::Result<()> {
    let region = region_of(id)?;
    let pin = region.pin()?;
    Ok(pin.region().check_intact()?)
}

/// Forgets mapping `id` without unmapping it; the caller owns the pages.
#[napi]
pub fn mapping_forget(id: u32) -> napi::Result<bool> {
    let region = region_of(id)?;
    // No wait may touch the pages once the caller owns them (it may unmap them next).
    end_waits(&region);
    drop_token(id, &region);
    Ok(region.forget())
}

/// An external ArrayBuffer over `len` bytes at offset `start` of `region` (in bounds,
/// region pinned or just made by the caller), holding a reference to the region until
/// collected.
///
/// # Errors
/// `ERR_SHM_UNSUPPORTED_PLATFORM` where the runtime forbids external buffers,
/// `ERR_SHM_BUFFER_TOO_LARGE` where it refuses this one.
fn external_buffer(
    env: napi::sys::napi_env,
    region: &Arc<Region>,
    start: usize,
    len: usize,
) -> Result<napi::sys::napi_value> {
    // The finalizer's reference to the region, shared with this function: whether the
    // runtime ran the finalizer (Node 20 runs it at once when it refuses the buffer, then
    // reports failure) shows in the count, so nothing is ever freed twice or leaked.
    let token = Arc::new(region.clone());
    let hint = Arc::into_raw(token.clone()) as *mut std::ffi::c_void;
    let mut value = std::ptr::null_mut();
    // SAFETY: the pointer/length describe live memory of our mapping (checked and pinned
    // by the caller); the finalizer owns one reference to the region, so the pages stay
    // mapped until the buffer is collected or close() detached it first.
    let status = unsafe {
        napi::sys::napi_create_external_arraybuffer(
            env,
            (region.addr() + start) as *mut std::ffi::c_void,
            len,
            Some(release_region),
            hint,
            &mut value,
        )
    };
    if status == napi::sys::Status::napi_ok {
        return Ok(value);
    }
    if Arc::strong_count(&token) == 2 {
        // The finalizer did not run and never will: drop its reference here.
        // SAFETY: `hint` came from Arc::into_raw above and was not consumed.
        drop(unsafe { Arc::from_raw(hint as *const Arc<Region>) });
    }
    clear_pending_exception(env);
    Err(
        if status == napi::sys::Status::napi_no_external_buffers_allowed {
            ShmError::new(
                "ERR_SHM_UNSUPPORTED_PLATFORM",
                "this JavaScript runtime forbids external ArrayBuffers; shared memory cannot be \
             exposed without copying, which would not be shared",
            )
        } else {
            ShmError::new(
                "ERR_SHM_BUFFER_TOO_LARGE",
                format!(
                    "the JavaScript runtime refused an ArrayBuffer of {len} bytes \
                 (napi_create_external_arraybuffer: {status}); use mem.view(offset, length)"
                ),
            )
        },
    )
}

/// Clears an exception the runtime left pending (Node throws its own error when it
/// refuses a buffer), so that ours is the one JavaScript sees.
fn clear_pending_exception(env: napi::sys::napi_env) {
    let mut pending = false;
    // SAFETY: plain queries on the live env of the running call.
    unsafe {
        if napi::sys::napi_is_exception_pending(env, &mut pending) == napi::sys::Status::napi_ok
            && pending
        {
            let mut ignored = std::ptr::null_mut();
            napi::sys::napi_get_and_clear_last_exception(env, &mut ignored);
        }
    }
}

/// Finalizer of an external ArrayBuffer over a mapping: drops its reference to the
/// region (which unmaps only if nobody closed or detached it and this was the last
/// reference).
unsafe extern "C" fn release_region(
    _env: napi::sys::napi_env,
    _data: *mut std::ffi::c_void,
    hint: *mut std::ffi::c_void,
) {
    // SAFETY: `hint` is the Arc<Arc<Region>> leaked in `external_buffer()`, and the
    // runtime calls each finalizer at most once.
    drop(unsafe { Arc::from_raw(hint as *const Arc<Region>) });
}

/// The process-wide SIGBUS repair counter as a 4-byte ArrayBuffer (see
/// `sys/linux/sigbus.rs`): JavaScript reads it after touching shared memory; non-zero
/// means some mapping of the process lost pages.
#[napi]
pub fn guard_generation<'env>(env: &'env Env) -> napi::Result<ArrayBuffer<'env>> {
    let word = crate::sys::guard_generation();
    let mut value = std::ptr::null_mut();
    // SAFETY: the word is a static that lives as long as the process; the finalizer has
    // nothing to free.
    let status = unsafe {
        napi::sys::napi_create_external_arraybuffer(
            env.raw(),
            word.as_ptr().cast(),
            4,
            Some(release_nothing),
            std::ptr::null_mut(),
            &mut value,
        )
    };
    if status != napi::sys::Status::napi_ok {
        clear_pending_exception(env.raw());
        return Err(ShmError::new(
            "ERR_SHM_UNSUPPORTED_PLATFORM",
            format!("napi_create_external_arraybuffer: {status}"),
        )
        .into());
    }
    // SAFETY: `value` is the ArrayBuffer just created in this env.
    unsafe { ArrayBuffer::from_napi_value(env.raw(), value) }
}

unsafe extern "C" fn release_nothing(
    _env: napi::sys::napi_env,
    _data: *mut std::ffi::c_void,
    _hint: *mut std::ffi::c_void,
) {
}

/// `PROT_*` and `MAP_*` values of this platform.
#[napi(object)]
pub struct MapConstants {
    /// PROT_NONE
    pub prot_none: i32,
    /// PROT_READ
    pub prot_read: i32,
    /// PROT_WRITE
    pub prot_write: i32,
    /// PROT_EXEC
    pub prot_exec: i32,
    /// MAP_SHARED
    pub map_shared: i32,
    /// MAP_PRIVATE
    pub map_private: i32,
    /// MAP_ANONYMOUS
    pub map_anonymous: i32,
    /// MAP_FIXED
    pub map_fixed: i32,
    /// MAP_FIXED_NOREPLACE (emulated where the kernel has none)
    pub map_fixed_noreplace: i32,
    /// MAP_NORESERVE
    pub map_noreserve: i32,
    /// MAP_POPULATE (0 where unsupported)
    pub map_populate: i32,
}

/// The platform's mapping constants.
#[napi]
pub fn map_constants() -> MapConstants {
    MapConstants {
        prot_none: libc::PROT_NONE,
        prot_read: libc::PROT_READ,
        prot_write: libc::PROT_WRITE,
        prot_exec: libc::PROT_EXEC,
        map_shared: libc::MAP_SHARED,
        map_private: libc::MAP_PRIVATE,
        map_anonymous: libc::MAP_ANON,
        map_fixed: libc::MAP_FIXED,
        map_fixed_noreplace: crate::sys::MAP_FIXED_NOREPLACE,
        map_noreserve: libc::MAP_NORESERVE,
        map_populate: crate::sys::MAP_POPULATE,
    }
}
