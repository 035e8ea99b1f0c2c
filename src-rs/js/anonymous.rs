//! Anonymous segments at the boundary: `Mapping.createAnonymous` and `Mapping.fromFd`
//! (`memory::anonymous` holds what they do; `lib/memory.ts` the public API).

use crate::js::args::to_u64;
use crate::js::mapping::{backing, fixed_mode, Mapping};
use crate::memory::{anonymous, segment};
use crate::sync::liveness;
use napi_derive::napi;

#[napi]
impl Mapping {
    /// Creates an anonymous managed segment (no name: a memfd on Linux) with a formatted
    /// heap; `prefault` / `reserve` back it at once as `createSegment` does.
    #[napi(factory)]
    pub fn create_anonymous(size: f64, prefault: bool, reserve: bool) -> napi::Result<Mapping> {
        let (region, header) =
            anonymous::create(to_u64("size", size)?, backing(prefault, reserve))?;
        if let Err(e) = crate::heap::format_heap(&region, header.heap_offset, header.heap_size) {
            region.close();
            return Err(e.into());
        }
        segment::publish(&region);
        // Attached and its creator, for tools (`npx shmutils`) as for named segments.
        liveness::mark_attached(&region, true);
        Ok(Mapping::new(region, Some(header), true))
    }

    /// Maps the managed segment behind descriptor `fd` (which the caller keeps).
    /// `fixed`: `'require' | 'prefer' | 'no'`.
    #[napi(factory)]
    pub fn from_fd(fd: i32, fixed: String, read_only: bool) -> napi::Result<Mapping> {
        let (region, header) = anonymous::from_fd(fd, fixed_mode(&fixed)?, read_only)?;
        liveness::mark_attached(&region, false);
        Ok(Mapping::new(region, Some(header), !read_only))
    }
}
