//! What diagnostic tools (`npx shmutils inspect`, `ls`) read of a heap: the objects that
//! carry a kind tag ([`HeapView::tagged_blocks`], under the heap lock), and the header's
//! counters read from raw bytes without mapping anything ([`peek_counters`]).
//!
//! Synchronization records and container headers carry a kind tag, a `u32` at offset 8
//! of the object (docs/FORMAT.md §6): a block whose payload starts with such a record is
//! reported with its tag. The tag is a hint, not a proof (user data may hold the same
//! bytes); readers validate what they find before believing it.

use super::*;

/// An allocated block whose payload starts with a kind tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TaggedBlock {
    /// Mapping-relative offset of the payload (the object).
    pub offset: usize,
    /// Payload bytes (the block minus its header).
    pub len: usize,
    /// The `u32` at offset 8 of the payload.
    pub kind: u32,
    /// Whether the block is a named object's.
    pub named: bool,
}

/// The header's counters, as [`peek_counters`] reads them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counters {
    /// Length of the heap region.
    pub heap_len: u64,
    /// Bytes in allocated blocks (headers included).
    pub used: u64,
    /// Bytes in free blocks (headers included): `arena_end - header_size - used`.
    pub free: u64,
    /// Allocated blocks, directory entries included.
    pub allocations: u64,
    /// Named objects.
    pub named: u64,
    /// Whether an operation is in progress, or its process died inside it.
    pub busy: bool,
}

/// Bytes of the heap header [`peek_counters`] needs.
pub const PEEK_LEN: usize = H_FIXED_END as usize;

/// The counters of a heap from the first [`PEEK_LEN`] bytes of its region, read without
/// the heap lock (a snapshot that may be torn by a concurrent operation: for display
/// only). `None` if the bytes are not a heap header of a heap of `heap_len` bytes, or the
/// counters are out of range.
pub fn peek_counters(b: &[u8], heap_len: u64) -> Option<Counters> {
    let u64_at = |off: u64| -> Option<u64> {
        let o = off as usize;
        Some(u64::from_le_bytes(b.get(o..o + 8)?.try_into().ok()?))
    };
    let u32_at = |off: u64| -> Option<u32> {
        let o = off as usize;
        Some(u32::from_le_bytes(b.get(o..o + 4)?.try_into().ok()?))
    };
    let lay = compute_layout(heap_len)?;
    if u64_at(H_MAGIC)? != HEAP_MAGIC
        || u32_at(H_VERSION)? != HEAP_VERSION
        || u64::from(u32_at(H_HEADER_SIZE)?) != lay.header_size
        || u64_at(H_HEAP_LEN)? != heap_len
        || u64_at(H_ARENA_END)? != lay.arena_end
    {
        return None;
    }
    let arena = lay.arena_end - lay.header_size;
    let used = u64_at(H_USED)?;
    let allocations = u64_at(H_ALLOCS)?;
    let named = u64_at(H_DIR_COUNT)?;
    if used > arena || allocations > arena / MIN_BLOCK || named > allocations {
        return None;
    }
    Some(Counters {
        heap_len,
        used,
        free: arena - used,
        allocations,
        named,
        busy: u32_at(H_BUSY)? != 0,
    })
}

impl HeapView {
    /// Every allocated, non-internal block whose payload is at least 32 bytes and holds
    /// a `u32` at offset 8 that `is_tag` accepts, in address order; at most `max` of
    /// them. Read-only. Caller holds the heap lock.
    pub fn tagged_blocks(
        &self,
        is_tag: impl Fn(u32) -> bool,
        max: usize,
    ) -> Result<Vec<TaggedBlock>, HeapError> {
        self.read_op(|salt| {
            let l = self.lay;
            let mut out = Vec::new();
            let mut b = l.header_size;
            while b < l.arena_end && out.len() < max {
                let w = self.block(salt, b)?;
                let size = w_size(w);
                // A cached block (cache.rs) is free to its users: whatever it held is gone.
                if w & (F_FREE | F_INTERNAL | F_CACHED) == 0 && size >= HDR + 32 {
                    let kind = self.ld32(b + HDR + 8)?;
                    if is_tag(kind) {
                        try_push(
                            &mut out,
                            TaggedBlock {
                                offset: self.heap_off + (b + HDR) as usize,
                                len: (size - HDR) as usize,
                                kind,
                                named: w & F_NAMED != 0,
                            },
                        )?;
                    }
                }
                b += size;
            }
            Ok(out)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::heap::testing::*;

    #[test]
    fn tagged_blocks_and_counters() {
        let t = T::new(1 << 16);
        let a = t.h.malloc(64, 64).unwrap();
        let b = t.h.malloc(16, 16).unwrap();
        let c = t.h.malloc(200, 16).unwrap();
        t.fill(a, 64, 0);
        t.fill(b, 16, 0);
        t.fill(c, 200, 0);
        t.mem.write(a + 8, &1u32.to_le_bytes());
        t.mem.write(b + 8, &1u32.to_le_bytes()); // a 16-byte request gets a 32-byte payload
        t.mem.write(c + 8, &99u32.to_le_bytes());
        let known = |k: u32| (1..=7).contains(&k) || k == 16 || k == 17;
        let found = t.h.tagged_blocks(known, 100).unwrap();
        let offs: Vec<usize> = found.iter().map(|x| x.offset).collect();
        let mut want = vec![a, b];
        want.sort();
        assert_eq!(offs, want, "address order; c's tag is unknown");
        assert!(found.iter().all(|x| x.kind == 1 && !x.named && x.len >= 32));
        assert!(found.iter().any(|x| x.offset == a && x.len >= 64));
        assert_eq!(t.h.tagged_blocks(known, 1).unwrap().len(), 1, "bounded");
        t.h.free(a).unwrap();
        assert_eq!(t.h.tagged_blocks(known, 100).unwrap().len(), 1);

        let s = t.h.stats().unwrap();
        let header = t.mem.read(GUARD, PEEK_LEN);
        let n = peek_counters(&header, s.size).unwrap();
        assert_eq!(
            (n.used, n.free, n.allocations),
            (s.used, s.free, s.allocations)
        );
        assert_eq!(n.named, 0);
        assert!(!n.busy);
        assert_eq!(peek_counters(&header, s.size + 16), None, "another length");
        assert_eq!(peek_counters(&header[..100], s.size), None, "too short");
        let mut bad = header.clone();
        bad[H_USED as usize + 7] = 0xff;
        assert_eq!(peek_counters(&bad, s.size), None, "absurd counter");
    }
}
