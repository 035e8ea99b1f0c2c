//! The read-only checker: verifies every invariant of the header, the block chain,
//! the free lists, the bitmaps, the counters and the directory (the layouts in
//! `mod.rs`, `tlsf.rs` and `named.rs`). Caller holds the heap lock.

use super::named::{E_OBJ, E_STATE};
use super::*;

impl HeapView {
    /// Verify every invariant: header, block chain, boundary tags, flags, free lists,
    /// bitmaps, counters, directory. Read-only. Caller holds the heap lock.
    pub fn check(&self) -> Result<(), HeapError> {
        self.check_inner().map_err(|f| self.err(f))
    }

    pub(super) fn check_inner(&self) -> R<()> {
        let l = self.lay;
        self.validate_header_inner()?;
        let salt = self.hld(H_SALT)?;
        if self.hld32(H_BUSY)? != 0 {
            return corrupt(
                "an operation was interrupted (busy flag set); rebuild() repairs it",
                H_BUSY,
            );
        }
        // Block chain.
        let mut frees: Vec<u64> = Vec::new();
        // Ordinary allocations (block, size), in chain order: what entries may point at.
        let mut objects: Vec<(u64, u64)> = Vec::new();
        let (mut used, mut allocs) = (0u64, 0u64);
        let mut prev_free = false;
        let mut b = l.header_size;
        while b < l.arena_end {
            let w = self.block(salt, b)?;
            let size = w_size(w);
            if (w & F_PREV_FREE != 0) != prev_free {
                return corrupt("PREV_FREE bit does not match the previous block", b);
            }
            if w & F_FREE != 0 {
                if prev_free {
                    return corrupt("two adjacent free blocks", b);
                }
                if self.ld(b + size - 8)? != size {
                    return corrupt("bad boundary tag of a free block", b + size - 8);
                }
                try_push(&mut frees, b)?;
            } else {
                used += size;
                allocs += 1;
                // A cached block is free to its users (cache.rs): no entry may lead there.
                if w & (F_INTERNAL | F_CACHED) == 0 {
                    try_push(&mut objects, (b, size))?;
                }
            }
            prev_free = w & F_FREE != 0;
            b += size;
        }
        if used != self.hld(H_USED)? || allocs != self.hld(H_ALLOCS)? {
            return corrupt("header counters do not match the block chain", H_USED);
        }
        // Free lists and bitmaps.
        let mut seen = Vec::new();
        seen.try_reserve_exact(frees.len())
            .map_err(|_| Fault::ProcessMemory)?;
        seen.resize(frees.len(), false);
        let mut listed = 0usize;
        let fbm = self.hld(H_FL_BITMAP)?;
        if l.fl_count < 64 && fbm >> l.fl_count != 0 {
            return corrupt(
                "first-level bitmap has bits beyond the last class",
                H_FL_BITMAP,
            );
        }
        for fl in 0..l.fl_count {
            let sbm = self.ld32(self.slb(fl))?;
            if sbm >> SL_COUNT != 0 || (sbm != 0) != (fbm & (1 << fl) != 0) {
                return corrupt("bitmaps inconsistent", self.slb(fl));
            }
            for sl in 0..SL_COUNT as u32 {
                let mut n = self.ld(self.head_at(fl, sl))?;
                if (n != 0) != (sbm & (1 << sl) != 0) {
                    return corrupt(
                        "second-level bitmap does not match the list head",
                        self.head_at(fl, sl),
                    );
                }
                let mut prev = 0;
                while n != 0 {
                    let i = match frees.binary_search(&n) {
                        Ok(i) => i,
                        Err(_) => {
                            return corrupt("free-list node is not a free block of the chain", n)
                        }
                    };
                    if seen[i] {
                        return corrupt("free block listed twice (cycle?)", n);
                    }
                    seen[i] = true;
                    listed += 1;
                    let w = self.ld(n)?;
                    if mapping(w_size(w)) != (fl, sl) {
                        return corrupt("free block in the wrong class list", n);
                    }
                    if self.ld(n + B_PREV)? != prev {
                        return corrupt("free-list back link wrong", n);
                    }
                    prev = n;
                    n = self.ld(n + B_NEXT)?;
                }
            }
        }
        if listed != frees.len() {
            return corrupt("free block missing from the free lists", l.heads);
        }
        // Directory.
        let mut seen_e = HashSet::new();
        for i in 0..u64::from(l.buckets) {
            let mut e = self.ld(l.dir + 8 * i)?;
            while e != 0 {
                if !try_insert(&mut seen_e, e)? {
                    return corrupt("directory entry reachable twice (cycle?)", e);
                }
                let ent = self.entry(salt, e, true)?;
                if ent.hash & (u64::from(l.buckets) - 1) != i {
                    return corrupt("directory entry in the wrong bucket", e);
                }
                if named_constructor(self.ld32(e + E_STATE)?).is_err() {
                    return corrupt(
                        "directory entry state is not 0, 1 or a constructor's token",
                        e + E_STATE,
                    );
                }
                let ob = ent.obj - HDR;
                match objects.binary_search_by_key(&ob, |&(b, _)| b) {
                    Ok(i) if ob + objects[i].1 >= ent.obj + ent.size => {}
                    _ => {
                        return corrupt(
                            "directory entry points at memory that is not its allocated object (freed while still named?)",
                            e + E_OBJ,
                        )
                    }
                }
                e = ent.next;
            }
        }
        if seen_e.len() as u64 != self.hld(H_DIR_COUNT)? {
            return corrupt("directory count mismatch", H_DIR_COUNT);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::heap::testing::*;

    #[test]
    fn read_only_ops_do_not_write() {
        let t = T::new(1 << 16);
        let a = t.h.malloc(100, 16).unwrap();
        let (e, _) = t.h.named_reserve(b"ro", 8, 8, b"t", 0, None).unwrap();
        let snap = t.mem.read(0, t.mem.len);
        for _ in 0..3 {
            t.h.validate_header().unwrap();
            t.h.check().unwrap();
            t.h.stats().unwrap();
            t.h.usable_size(a).unwrap();
            t.h.named_find(b"ro").unwrap().unwrap();
            assert_eq!(t.h.named_find(b"nope").unwrap(), None);
            assert_eq!(t.h.named_list().unwrap().len(), 1);
            t.h.named_state(e.entry_off).unwrap();
            let _ = t.h.usable_size(a + 16);
        }
        assert!(
            snap == t.mem.read(0, t.mem.len),
            "a read-only operation wrote to the heap"
        );
    }
}
