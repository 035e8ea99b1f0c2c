//! Mappings and managed segments at the boundary: the `Mapping` class (create, open,
//! buffer, close), this thread's table of mappings that the per-operation functions
//! address by id, and the platform's mapping constants.

use crate::error::{Result, ShmError};
use crate::js::args::to_u64;
use crate::js::slots::SlotTable;
use crate::memory::mapping::{self, MapRequest, Region};
use crate::memory::segment::{self, FixedMode, Placement};
use crate::memory::shm;
use crate::sync::liveness::{self, Owner, TokenRef};
use crate::sync::Pinned;
use napi::bindgen_prelude::{ArrayBuffer, FromNapiValue};
use napi::{Either, Env};
use napi_derive::napi;
use std::cell::RefCell;
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

/// One mapping, shared with every ArrayBuffer created over it. Its lifecycle (create,
/// open, buffer, close) goes through this class; the per-call operations (locks,
/// semaphores, conditions, heaps) are free functions taking its `id`, because napi-rs
/// class methods take a process-wide mutex per call for borrow tracking.
#[napi]
pub struct Mapping {
    pub(crate) region: Arc<Region>,
    header: Option<segment::Header>,
    id: u32,
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
}

thread_local! {
    /// This JavaScript thread's mappings, indexed by `Mapping::id`.
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
/// mapping's region.
///
/// # Errors
/// `EINVAL` for an unknown id; `ERR_SHM_CLOSED`; what claiming a token can fail with
/// (`EACCES` for a read-only segment, ...).
pub(crate) fn token_of(id: u32) -> Result<(TokenRef, Arc<Region>)> {
    with_token(id, |token, region| (token.clone(), region.clone()))
}

/// This thread as lock owner in mapping `id` (a slot lookup once the token is claimed).
///
/// # Errors
/// As [`token_of`].
pub(crate) fn owner_of(id: u32) -> Result<Owner> {
    with_token(id, |token, region| token.owner(region))
}

/// Runs `f` with this thread's token on mapping `id` (claimed now if needed).
fn with_token<R>(id: u32, f: impl FnOnce(&TokenRef, &Arc<Region>) -> R) -> Result<R> {
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
        Ok(f(token.as_ref().expect("claimed above"), &slot.region))
    })
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
    Ok(token_of(id)?.0.token())
}

/// The `fixedAddress` option of opening: `'require' | 'prefer' | 'no'`.
pub(crate) fn fixed_mode(fixed: &str) -> Result<FixedMode> {
    match fixed {
        "require" => Ok(FixedMode::Require),
        "prefer" => Ok(FixedMode::Prefer),
        "no" => Ok(FixedMode::No),
        _ => Err(ShmError::type_error(format!(
            "The \"fixedAddress\" option must be 'require', 'prefer' or false; got {fixed:?}"
        ))),
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

/// Where a mapping is and what its header says, read in one call.
#[napi(object)]
pub struct MappingInfo {
    /// Id for the free functions of this thread.
    pub id: u32,
    /// Absolute address of the first byte.
    pub address: f64,
    /// Length in bytes.
    pub size: f64,
    /// The creator's base address (pointers in the segment are stored relative to it);
    /// for a raw mapping, its own address.
    pub base: f64,
    /// Start of the heap region (managed segments), else 0.
    pub heap_offset: f64,
    /// Length of the heap region (managed segments), else 0.
    pub heap_size: f64,
    /// The segment's identity from its header (16 hex digits); absent for raw mappings
    /// and for segments made before the field existed.
    pub uid: Option<String>,
    /// The inode number of the mapped object (decimal); absent for anonymous mappings and
    /// where the system reports none.
    pub inode: Option<String>,
    /// Creation time from the header, ms since the Unix epoch; 0 if unknown or raw.
    pub created_ms: f64,
    /// The creator's pid from the header; 0 if unknown or raw.
    pub creator_pid: u32,
    /// The creator's process start time from the header; 0 if unknown or raw.
    pub creator_start: f64,
    /// The mapping's own descriptor of the object it maps (closed with the mapping), or
    /// -1 (anonymous memory).
    pub fd: i32,
    /// A segment opened read-only (mapped copy-on-write; the library writes nothing).
    pub read_only: bool,
}

impl Mapping {
    /// Registers a new mapping in this thread's table.
    pub(crate) fn new(
        region: Arc<Region>,
        header: Option<segment::Header>,
        writable: bool,
    ) -> Mapping {
        let slot = MapSlot {
            region: region.clone(),
            managed: header.is_some(),
            writable,
            token: RefCell::new(None),
        };
        let id = REGIONS.with(|r| r.borrow_mut().insert(slot));
        Mapping { region, header, id }
    }

    /// Releases this thread's hold on its token for the mapping (closed or forgotten:
    /// no lock in it can be released through it any more).
    fn drop_token(&self) {
        let token = REGIONS.try_with(|r| {
            r.borrow()
                .get(self.id)
                .and_then(|s| s.token.borrow_mut().take())
        });
        drop(token);
        crate::js::heap::release_heap_tokens(&self.region);
    }

    /// The mapped region.
    pub(crate) fn region(&self) -> &Arc<Region> {
        &self.region
    }

    /// This mapping's id in its thread's table.
    pub(crate) fn id(&self) -> u32 {
        self.id
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // Collected on its own JavaScript thread; `try_with`: the thread may be exiting.
        let _ = REGIONS.try_with(|r| r.borrow_mut().remove(self.id));
    }
}

#[napi]
impl Mapping {
    /// A raw mapping: `mmap(address, size, protection, flags, fd, offset)`.
    #[napi(factory)]
    pub fn map(
        address: Option<f64>,
        size: f64,
        protection: i32,
        flags: i32,
        fd: i32,
        offset: f64,
    ) -> napi::Result<Mapping> {
        let address = address.map(|a| to_u64("address", a)).transpose()?;
        let req = MapRequest {
            address,
            len: to_u64("size", size)?,
            prot: protection,
            flags,
            fd,
            offset: to_u64("offset", offset)?,
        };
        let region = Region::map(req)?;
        if fd >= 0 {
            // The caller keeps its descriptor; the region gets a duplicate of its own.
            region.adopt_fd(crate::memory::shm::dup_cloexec(fd)?);
            liveness::mark_attached(&region, false);
        }
        Ok(Mapping::new(
            region,
            None,
            protection & libc::PROT_WRITE != 0,
        ))
    }

    /// Creates a managed segment. `fixed`: false = anywhere, true = a free high address,
    /// a number = exactly there. `prefault` backs and maps every page now, `reserve` backs
    /// every page now (both report `ENOSPC` instead of faulting later).
    #[napi(factory)]
    pub fn create_segment(
        name: String,
        size: f64,
        permissions: u32,
        fixed: Either<bool, f64>,
        prefault: bool,
        reserve: bool,
    ) -> napi::Result<Mapping> {
        let placement = match fixed {
            Either::A(false) => Placement::Anywhere,
            Either::A(true) => Placement::FreeHigh,
            Either::B(addr) => Placement::At(to_u64("fixedAddress", addr)?),
        };
        let (region, header) = segment::create(
            &name,
            to_u64("size", size)?,
            permissions,
            placement,
            backing(prefault, reserve),
        )?;
        if let Err(e) = crate::heap::format_heap(&region, header.heap_offset, header.heap_size) {
            region.close();
            let _ = shm::unlink(&shm::normalize_name(&name)?);
            return Err(e.with_path(&shm::normalize_name(&name)?).into());
        }
        segment::publish(&region);
        liveness::mark_attached(&region, true);
        Ok(Mapping::new(region, Some(header), true))
    }

    /// Opens a managed segment. `fixed`: `'require' | 'prefer' | 'no'`.
    #[napi(factory)]
    pub fn open_segment(name: String, fixed: String, read_only: bool) -> napi::Result<Mapping> {
        let (region, header) = segment::open(&name, fixed_mode(&fixed)?, read_only)?;
        liveness::mark_attached(&region, false);
        Ok(Mapping::new(region, Some(header), !read_only))
    }

    /// Where the mapping is and what its header says.
    #[napi]
    pub fn info(&self) -> MappingInfo {
        let addr = self.region.addr() as f64;
        MappingInfo {
            id: self.id,
            address: addr,
            size: self.region.len() as f64,
            base: self.header.map_or(addr, |h| h.base as f64),
            heap_offset: self.header.map_or(0.0, |h| h.heap_offset as f64),
            heap_size: self.header.map_or(0.0, |h| h.heap_size as f64),
            uid: self
                .header
                .filter(|h| h.uid != 0)
                .map(|h| format!("{:016x}", h.uid)),
            inode: self
                .region
                .fd()
                .and_then(|fd| shm::inode(fd).ok())
                .filter(|&ino| ino != 0)
                .map(|ino| ino.to_string()),
            created_ms: self.header.map_or(0.0, |h| h.created_ms as f64),
            creator_pid: self.header.map_or(0, |h| h.creator_pid),
            creator_start: self.header.map_or(0.0, |h| h.creator_start as f64),
            fd: self.region.fd().unwrap_or(-1),
            read_only: self.region.is_read_only(),
        }
    }

    /// An external ArrayBuffer over `[offset, offset + length)` of the mapping
    /// (zero-copy). Throws instead of copying when the runtime forbids external buffers (a
    /// copy would not be shared), and `ERR_SHM_BUFFER_TOO_LARGE` when it refuses one this
    /// large (Node 20: above 4 GiB); `lib/memory.ts` then serves windows instead.
    #[napi]
    pub fn buffer<'env>(
        &self,
        env: &'env Env,
        offset: f64,
        length: f64,
    ) -> napi::Result<ArrayBuffer<'env>> {
        let (offset, length) = (to_u64("offset", offset)?, to_u64("length", length)?);
        let pin = self.region.pin()?;
        let start = pin.region().check_range(offset, length)?;
        external_buffer(env, &self.region, start, length as usize)
    }

    /// Backs `[offset, offset + length)` with real pages now, so that raw writes there
    /// cannot fault on a full filesystem.
    #[napi]
    pub fn reserve(&self, offset: f64, length: f64) -> napi::Result<()> {
        let (offset, length) = (to_u64("offset", offset)?, to_u64("length", length)?);
        let pin = self.region.pin()?;
        pin.region().check_intact()?;
        pin.region().reserve(offset, length)?;
        Ok(())
    }

    /// Throws `ERR_SHM_TRUNCATED` / `ENOSPC` if the mapping lost pages (see
    /// `sys/linux/sigbus.rs`), `ERR_SHM_CLOSED` once closed.
    #[napi]
    pub fn check_intact(&self) -> napi::Result<()> {
        let pin = self.region.pin()?;
        Ok(pin.region().check_intact()?)
    }

    /// Unmaps (once every in-flight native wait has let go). The caller detaches its
    /// ArrayBuffer first. Idempotent.
    #[napi]
    pub fn close(&self) {
        crate::sync::waiter::close_region(&self.region);
        self.drop_token();
        self.region.close();
    }

    /// Forgets the mapping without unmapping it; the caller owns the pages.
    #[napi]
    pub fn forget(&self) -> bool {
        self.drop_token();
        self.region.forget()
    }
}

/// An external ArrayBuffer over `len` bytes at offset `start` of `region` (in bounds,
/// region pinned by the caller), holding a reference to the region until collected.
fn external_buffer<'env>(
    env: &'env Env,
    region: &Arc<Region>,
    start: usize,
    len: usize,
) -> napi::Result<ArrayBuffer<'env>> {
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
            env.raw(),
            (region.addr() + start) as *mut std::ffi::c_void,
            len,
            Some(release_region),
            hint,
            &mut value,
        )
    };
    if status == napi::sys::Status::napi_ok {
        // SAFETY: `value` is the ArrayBuffer just created in this env.
        return unsafe { ArrayBuffer::from_napi_value(env.raw(), value) };
    }
    if Arc::strong_count(&token) == 2 {
        // The finalizer did not run and never will: drop its reference here.
        // SAFETY: `hint` came from Arc::into_raw above and was not consumed.
        drop(unsafe { Arc::from_raw(hint as *const Arc<Region>) });
    }
    clear_pending_exception(env);
    let e = if status == napi::sys::Status::napi_no_external_buffers_allowed {
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
    };
    Err(e.into())
}

/// Clears an exception the runtime left pending (Node throws its own error when it
/// refuses a buffer), so that ours is the one JavaScript sees.
fn clear_pending_exception(env: &Env) {
    let mut pending = false;
    // SAFETY: plain queries on the live env of the running call.
    unsafe {
        if napi::sys::napi_is_exception_pending(env.raw(), &mut pending)
            == napi::sys::Status::napi_ok
            && pending
        {
            let mut ignored = std::ptr::null_mut();
            napi::sys::napi_get_and_clear_last_exception(env.raw(), &mut ignored);
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
        clear_pending_exception(env);
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
