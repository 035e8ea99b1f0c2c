//! `peekSegment`, `peekDescriptor`: what `npx shmutils ls` and `gc` know of a segment
//! without mapping it (`memory::peek`); `lockHolderAlive`: whether a lock's holder lives,
//! for `inspect`.

use crate::memory::peek::{self, Kind};
use napi_derive::napi;

/// A heap's counters, read without its lock (a snapshot for display).
#[napi(object)]
pub struct HeapCountersJs {
    /// Bytes of the heap region.
    pub size: f64,
    /// Bytes in allocated blocks.
    pub used: f64,
    /// Bytes in free blocks.
    pub free: f64,
    /// Allocated blocks.
    pub allocations: f64,
    /// Named objects.
    pub named: f64,
    /// An operation is in progress, or its process died inside it.
    pub busy: bool,
}

/// What a segment is, from its header and `fstat`.
#[napi(object)]
pub struct SegmentPeek {
    /// `'segment'`, `'unfinished'` (being created, or its creator died first),
    /// `'version'` (another format version) or `'foreign'`.
    pub kind: String,
    /// Why a `'foreign'` or `'version'` object is not a segment this build can use.
    pub problem: Option<String>,
    /// The header's format version (`'segment'`, `'version'`).
    pub version: Option<u32>,
    /// The object's size in bytes.
    pub size: f64,
    /// Its inode number (decimal; absent where the system has none).
    pub inode: Option<String>,
    /// Its owner's user id.
    pub owner: u32,
    /// Its permission bits.
    pub mode: u32,
    /// The segment's identity (16 hex digits).
    pub uid: Option<String>,
    /// Creation time, ms since the Unix epoch (0: unknown).
    pub created_ms: f64,
    /// The creator's pid in its PID namespace (0: unknown).
    pub creator_pid: u32,
    /// The creator's start time (0: unknown).
    pub creator_start: f64,
    /// Whether the creator still runs, as this process can tell (absent: unknown).
    pub creator_alive: Option<bool>,
    /// The creator's base address.
    pub base: f64,
    /// Whether the base address is fixed for every process.
    pub fixed: bool,
    /// Start of the heap region.
    pub heap_offset: f64,
    /// The heap's counters.
    pub heap: Option<HeapCountersJs>,
    /// Whether some process maps it, in any PID namespace (absent: unknown here).
    pub attached: Option<bool>,
    /// Whether its creator still maps it (absent: unknown here).
    pub creator_mapped: Option<bool>,
}

/// Looks at segment `name` without mapping it.
#[napi]
pub fn peek_segment(name: String) -> napi::Result<SegmentPeek> {
    Ok(to_js(peek::peek(&name)?))
}

/// Looks at the object behind descriptor `fd` (an anonymous segment) without mapping it.
#[napi]
pub fn peek_descriptor(fd: i32) -> napi::Result<SegmentPeek> {
    Ok(to_js(peek::peek_fd(fd)?))
}

fn to_js(p: peek::Peek) -> SegmentPeek {
    let mut out = SegmentPeek {
        kind: String::new(),
        problem: None,
        version: None,
        size: p.size as f64,
        inode: (p.inode != 0).then(|| p.inode.to_string()),
        owner: p.owner,
        mode: p.mode,
        uid: None,
        created_ms: 0.0,
        creator_pid: 0,
        creator_start: 0.0,
        creator_alive: p.creator_alive,
        attached: p.attached,
        creator_mapped: p.creator_mapped,
        base: 0.0,
        fixed: false,
        heap_offset: 0.0,
        heap: p.heap.map(|c| HeapCountersJs {
            size: c.heap_len as f64,
            used: c.used as f64,
            free: c.free as f64,
            allocations: c.allocations as f64,
            named: c.named as f64,
            busy: c.busy,
        }),
    };
    out.kind = match p.kind {
        Kind::Segment(h) => {
            out.version = Some(crate::memory::segment::VERSION);
            out.uid = (h.uid != 0).then(|| format!("{:016x}", h.uid));
            out.created_ms = h.created_ms as f64;
            out.creator_pid = h.creator_pid;
            out.creator_start = h.creator_start as f64;
            out.base = h.base as f64;
            out.fixed = h.flags & crate::memory::segment::FLAG_FIXED != 0;
            out.heap_offset = h.heap_offset as f64;
            "segment"
        }
        Kind::Unfinished => "unfinished",
        Kind::Version(v) => {
            out.version = Some(v);
            out.problem = Some(format!(
                "format version {v}; this shmutils reads version {}",
                crate::memory::segment::VERSION
            ));
            "version"
        }
        Kind::Foreign(why) => {
            out.problem = Some(why);
            "foreign"
        }
    }
    .to_owned();
    out
}

/// Whether the holder of liveness token `token` in mapping `id` of this thread is alive
/// (`F_OFD_GETLK` through the mapping's descriptor on Linux; on macOS the token's process
/// with `start`, its recorded start time, 0 if none). Absent when it cannot be told yet
/// (macOS: a pid that may have been reused) or the mapping has no descriptor.
#[napi]
pub fn lock_holder_alive(id: u32, token: u32, start: f64) -> napi::Result<Option<bool>> {
    let region = crate::js::mapping::region_of(id)?;
    let pin = region.pin()?;
    let Some(fd) = pin.region().fd() else {
        return Ok(None);
    };
    let recorded = (start > 0.0).then_some(start as u64);
    Ok(match crate::sys::token_liveness(fd, token, recorded) {
        crate::sys::Liveness::Alive => Some(true),
        crate::sys::Liveness::Dead => Some(false),
        crate::sys::Liveness::Suspect => None,
    })
}
