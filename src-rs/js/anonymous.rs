//! Anonymous segments at the boundary: `anonymousCreate` and `mappingFromFd`
//! (`memory::anonymous` holds what they do; `lib/memory.ts` the public API). Both make
//! a mapping the way `segmentOpen` does (`mapping.rs` `Opened`), exported raw (`raw.rs`).

use crate::error::{Result, ShmError};
use crate::js::args::to_u64;
use crate::js::mapping::{backing, fixed_mode, Opened};
use crate::memory::{anonymous, segment, shm};
use crate::sync::liveness;

/// Creates an anonymous managed segment (no name: a memfd on Linux) with a formatted
/// heap; `prefault` / `reserve` back it at once as `segmentCreate` does.
pub(crate) fn create_anonymous(size: f64, prefault: bool, reserve: bool) -> Result<Opened> {
    let (region, header) = anonymous::create(to_u64("size", size)?, backing(prefault, reserve))?;
    if let Err(e) = crate::heap::format_heap(&region, header.heap_offset, header.heap_size) {
        region.close();
        return Err(e);
    }
    segment::publish(&region);
    // Attached and its creator, for tools (`npx shmutils`) as for named segments.
    liveness::mark_attached(&region, true);
    let inode = region.fd().and_then(|fd| shm::inode(fd).ok()).unwrap_or(0);
    Ok(Opened::managed(region, header, inode, true))
}

/// Maps the managed segment behind descriptor `fd` (which the caller keeps). `fixed`: 0
/// anywhere, 1 prefer, 2 require the creator's address.
pub(crate) fn from_fd(fd: f64, fixed: f64, read_only: bool) -> Result<Opened> {
    if !(fd.fract() == 0.0 && (f64::from(i32::MIN)..=f64::from(i32::MAX)).contains(&fd)) {
        return Err(ShmError::type_error(format!(
            "The \"fd\" argument must be an integer; got {fd}"
        )));
    }
    let (region, header, inode) = anonymous::from_fd(fd as i32, fixed_mode(fixed), read_only)?;
    liveness::mark_attached(&region, false);
    Ok(Opened::managed(region, header, inode, !read_only))
}
