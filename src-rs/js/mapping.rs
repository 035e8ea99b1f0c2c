//! Mappings and managed segments at the boundary: the `Mapping` class (create, open,
//! buffer, close), this thread's table of mappings that the per-operation functions
//! address by id, and the platform's mapping constants.

use crate::error::{Result, ShmError};
use crate::js::args::to_u64;
use crate::js::slots::SlotTable;
use crate::memory::mapping::{self, MapRequest, Region};
use crate::memory::segment::{self, FixedMode, Placement};
use crate::memory::shm;
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

thread_local! {
    /// This JavaScript thread's mappings, indexed by `Mapping::id`.
    static REGIONS: RefCell<SlotTable<Arc<Region>>> = const { RefCell::new(SlotTable::new()) };
}

/// The region of this thread's mapping `id`.
///
/// # Errors
/// `EINVAL` for an id this thread never handed out (or whose mapping was collected).
pub(crate) fn region_of(id: u32) -> Result<Arc<Region>> {
    REGIONS
        .with(|r| r.borrow().get(id).cloned())
        .ok_or_else(|| ShmError::new("EINVAL", format!("no mapping with id {id} in this thread")))
}

/// The record of type `T` at `offset` of this thread's mapping `id`, pinned.
pub(crate) fn record<T>(id: u32, offset: f64) -> Result<Pinned<T>> {
    Pinned::new(&region_of(id)?, to_u64("offset", offset)?)
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
}

impl Mapping {
    /// Registers a new mapping in this thread's table.
    fn new(region: Arc<Region>, header: Option<segment::Header>) -> Mapping {
        let id = REGIONS.with(|r| r.borrow_mut().insert(region.clone()));
        Mapping { region, header, id }
    }

    /// The mapped region.
    pub(crate) fn region(&self) -> &Arc<Region> {
        &self.region
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
        }
        Ok(Mapping::new(region, None))
    }

    /// Creates a managed segment. `fixed`: false = anywhere, true = a free high address,
    /// a number = exactly there.
    #[napi(factory)]
    pub fn create_segment(
        name: String,
        size: f64,
        permissions: u32,
        fixed: Either<bool, f64>,
        prefault: bool,
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
            prefault,
        )?;
        if let Err(e) = crate::heap::format_heap(&region, header.heap_offset, header.heap_size) {
            let _ = shm::unlink(&shm::normalize_name(&name)?);
            return Err(e.into());
        }
        segment::publish(&region);
        Ok(Mapping::new(region, Some(header)))
    }

    /// Opens a managed segment. `fixed`: `'require' | 'prefer' | 'no'`.
    #[napi(factory)]
    pub fn open_segment(name: String, fixed: String, read_only: bool) -> napi::Result<Mapping> {
        let mode = match fixed.as_str() {
            "require" => FixedMode::Require,
            "prefer" => FixedMode::Prefer,
            "no" => FixedMode::No,
            _ => {
                return Err(ShmError::type_error(format!(
                "The \"fixedAddress\" option must be 'require', 'prefer' or false; got {fixed:?}"
            ))
                .into())
            }
        };
        let (region, header) = segment::open(&name, mode, read_only)?;
        Ok(Mapping::new(region, Some(header)))
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
        }
    }

    /// An external ArrayBuffer over the whole mapping (zero-copy). Throws instead of
    /// copying when the runtime forbids external buffers: a copy would not be shared.
    #[napi]
    pub fn buffer<'env>(&self, env: &'env Env) -> napi::Result<ArrayBuffer<'env>> {
        let pin = self.region.pin()?;
        let hint = Box::into_raw(Box::new(self.region.clone()));
        let mut value = std::ptr::null_mut();
        // SAFETY: the pointer/length describe our live mapping; the finalizer owns one
        // strong reference to the region (the boxed Arc), so the pages stay mapped until
        // the buffer is collected or close() detached it first.
        let status = unsafe {
            napi::sys::napi_create_external_arraybuffer(
                env.raw(),
                pin.region().addr() as *mut std::ffi::c_void,
                pin.region().len(),
                Some(release_region),
                hint.cast(),
                &mut value,
            )
        };
        if status != napi::sys::Status::napi_ok {
            // SAFETY: the buffer was not created, so the finalizer will never run.
            drop(unsafe { Box::from_raw(hint) });
            let e = if status == napi::sys::Status::napi_no_external_buffers_allowed {
                ShmError::new(
                    "ERR_SHM_UNSUPPORTED_PLATFORM",
                    "this JavaScript runtime forbids external ArrayBuffers; shared memory \
                     cannot be exposed without copying, which would not be shared",
                )
            } else {
                ShmError::new(
                    "EINVAL",
                    format!("napi_create_external_arraybuffer: {status}"),
                )
            };
            return Err(e.into());
        }
        // SAFETY: `value` is the ArrayBuffer just created in this env.
        unsafe { ArrayBuffer::from_napi_value(env.raw(), value) }
    }

    /// Unmaps (once every in-flight native wait has let go). The caller detaches its
    /// ArrayBuffer first. Idempotent.
    #[napi]
    pub fn close(&self) {
        crate::sync::waiter::close_region(&self.region);
        self.region.close();
    }

    /// Forgets the mapping without unmapping it; the caller owns the pages.
    #[napi]
    pub fn forget(&self) -> bool {
        self.region.forget()
    }
}

/// Finalizer of an external ArrayBuffer: drops its reference to the region (which unmaps
/// only if nobody closed or detached it and this was the last reference).
unsafe extern "C" fn release_region(
    _env: napi::sys::napi_env,
    _data: *mut std::ffi::c_void,
    hint: *mut std::ffi::c_void,
) {
    // SAFETY: `hint` is the Box<Arc<Region>> leaked in `buffer()`, and V8 calls each
    // finalizer exactly once.
    drop(unsafe { Box::from_raw(hint.cast::<Arc<Region>>()) });
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
