//! Crash repair: [`HeapView::rebuild`] rebuilds every derived structure from the
//! block chain after a process died holding the heap lock.
//!
//! # Crash tolerance
//!
//! A process can die at any instruction while holding the lock. The design keeps the
//! **block chain** (the sequence of block headers from `header_size` to `arena_end`)
//! valid after every single store, so [`HeapView::rebuild`] can always rebuild the free
//! lists, bitmaps, PREV_FREE bits, footers and counters from it:
//!
//! * A new header (check word, then size word, then footer) is always written inside
//!   the payload of a block that is not yet split, i.e. where the chain walk does not
//!   see it; the chain then changes with **one aligned 8-byte store** of the size word
//!   of the block being split/merged ("commit"), surrounded by compiler fences.
//!   Free-list unlinks happen before the commit and links after it, so at worst a free
//!   block is missing from its list (rebuild re-inserts it) or the allocated block being
//!   returned is leaked (it is marked allocated in the chain but nobody holds it). A
//!   header written for a split that never committed stays behind inside a payload; it
//!   carries the FREE flag, so a bogus `free` of that offset reports a double free and
//!   changes nothing.
//! * Merging makes the absorbed headers unreachable, but their check words would still
//!   validate a later bogus `free` of that offset. They are therefore marked dead right
//!   after the commit; the offsets are recorded in `journal` before the commit so that
//!   rebuild can finish the marking if the process died in between (rebuild only
//!   rewrites a journaled word that is not a block start of the chain and still holds
//!   the live check value, so a stale journal entry is harmless; it is not cleared on
//!   success).
//! * `busy` is set at the start of every heap-mutating operation and cleared at the end.
//!   Any operation that finds it set (the previous holder died mid-operation, or an
//!   operation detected corruption) first runs `rebuild()` automatically. `check()` is
//!   read-only and reports `Corrupt` while `busy` is set.
//! * Read-only operations (`validate_header`, `check`, `usable_size`, `named_list`,
//!   `named_state`; `named_find` and `stats` unless they must repair first) never write
//!   to the region.
//! * `realloc` that moves allocates the new block, copies, then frees the old one: a
//!   crash in between leaks one of them. `named_reserve` allocates the object, then
//!   the entry, and publishes the entry with one store of the bucket head: a crash
//!   earlier leaks the unpublished blocks. An entry published but never set READY (its
//!   creator died while constructing) stays CONSTRUCTING; the caller decides what to do.

use super::named::E_NEXT;
use super::*;

impl HeapView {
    /// Repair after a process died mid-operation (or after corruption of the free
    /// lists): rebuild free lists, bitmaps, boundary tags, PREV_FREE bits, counters and
    /// the directory's reachable set from a walk of the block chain. Adjacent free blocks
    /// are merged. Directory links that do not lead to a valid entry are cut (the entries
    /// behind them leak). `Corrupt` if the block chain itself is broken.
    pub fn rebuild(&self) -> Result<(), HeapError> {
        let r = self.salt().and_then(|salt| {
            self.rebuild_inner(salt)?;
            self.commit();
            self.hst32(H_BUSY, 0)
        });
        r.map_err(|f| self.err(f))
    }

    /// Rebuild; leaves `busy` set (the caller clears it or carries on with an op).
    pub(super) fn rebuild_inner(&self, salt: u64) -> R<()> {
        let l = self.lay;
        self.validate_header_inner()?;
        let was_busy = self.hld32(H_BUSY)? != 0;
        self.hst32(H_BUSY, 1)?;
        self.commit();
        // Pass 1: validate the chain without writing.
        let journal = [self.hld(H_JOURNAL0)?, self.hld(H_JOURNAL1)?];
        let mut jstart = [false; 2];
        let mut b = l.header_size;
        while b < l.arena_end {
            let w = self.block(salt, b)?;
            for (js, &j) in jstart.iter_mut().zip(journal.iter()) {
                *js |= j == b;
            }
            b += w_size(w);
        }
        // Finish an interrupted merge: an absorbed header that still validates is
        // marked dead (only if it really is a stale live header).
        if was_busy {
            for (&j, &js) in journal.iter().zip(jstart.iter()) {
                if j != 0
                    && !js
                    && j & 15 == 0
                    && j >= l.header_size
                    && j <= l.arena_end - MIN_BLOCK
                    && self.ld(j + 8)? == check_word(salt, j)
                {
                    self.mark_dead(salt, j)?;
                }
            }
        }
        self.hst(H_JOURNAL0, 0)?;
        self.hst(H_JOURNAL1, 0)?;
        // Pass 2: reset lists; walk again fixing flags/footers, merging, re-inserting.
        self.hst(H_FL_BITMAP, 0)?;
        for fl in 0..l.fl_count {
            self.st32(self.slb(fl), 0)?;
            for sl in 0..SL_COUNT as u32 {
                self.st(self.head_at(fl, sl), 0)?;
            }
        }
        let (mut used, mut allocs) = (0u64, 0u64);
        let mut run: Option<(u64, u64)> = None; // current free run (start, size)
        let mut b = l.header_size;
        while b < l.arena_end {
            let w = self.block(salt, b)?;
            let size = w_size(w);
            if w & F_FREE != 0 {
                if let Some((p, psize)) = run {
                    let total = psize + size;
                    self.st(p, mk(total, F_FREE))?; // p's PREV_FREE is clear (run start)
                    self.commit();
                    self.mark_dead(salt, b)?;
                    run = Some((p, total));
                } else {
                    if w & F_PREV_FREE != 0 {
                        self.st(b, w & !F_PREV_FREE)?;
                    }
                    run = Some((b, size));
                }
            } else {
                let after_free = run.is_some();
                if let Some((p, psize)) = run.take() {
                    self.st(p + psize - 8, psize)?;
                    self.insert_free(salt, p, psize)?;
                }
                if (w & F_PREV_FREE != 0) != after_free {
                    // The block may be cached meanwhile: its flags change atomically.
                    self.bp(b).update_low(F_PREV_FREE, after_free)?;
                }
                used += size;
                allocs += 1;
            }
            b += size;
        }
        if let Some((p, psize)) = run {
            self.st(p + psize - 8, psize)?;
            self.insert_free(salt, p, psize)?;
        }
        self.hst(H_USED, used)?;
        self.hst(H_ALLOCS, allocs)?;
        // Directory: keep every valid, distinct entry; cut the first bad link of a bucket.
        let mut seen = HashSet::new();
        for i in 0..u64::from(l.buckets) {
            let mut link = l.dir + 8 * i;
            loop {
                let e = self.ld(link)?;
                if e == 0 {
                    break;
                }
                let ok = match self.entry(salt, e, true) {
                    Ok(ent) if ent.hash & (u64::from(l.buckets) - 1) == i => {
                        try_insert(&mut seen, e)?
                    }
                    _ => false,
                };
                if ok {
                    link = e + E_NEXT;
                } else {
                    self.st(link, 0)?;
                    break;
                }
            }
        }
        self.hst(H_DIR_COUNT, seen.len() as u64)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::heap::named::E_OBJ;
    use crate::heap::testing::*;

    #[test]
    fn rebuild_repairs_lists() {
        let (t, s0) = T::with_stats(1 << 20);
        let mut rng = Rng(7);
        let mut live = Vec::new();
        for _ in 0..400 {
            live.push(t.h.malloc(1 + rng.below(2000) as usize, 16).unwrap());
        }
        for i in (0..live.len()).rev().step_by(3) {
            t.h.free(live.swap_remove(i)).unwrap();
        }
        t.h.named_reserve(b"keep", 10, 16, b"t", 0, None).unwrap();
        t.h.check().unwrap();
        let before = t.h.stats().unwrap();
        let l = t.h.lay;
        // break list links: a cycle through a free block's next pointer, a bogus head,
        // wrong counters, wrong bitmaps
        let mut broke = 0;
        for fl in 0..l.fl_count {
            for sl in 0..16 {
                let h = t.h.ld(t.h.head_at(fl, sl)).unwrap();
                if h != 0 {
                    t.h.st(h + B_NEXT, h).unwrap();
                    broke += 1;
                }
            }
        }
        assert!(broke > 0);
        t.h.st(H_USED, 12345).unwrap();
        t.h.st(H_FL_BITMAP, !0).unwrap();
        assert_eq!(code(t.h.check()), "ERR_SHM_CORRUPT");
        // operations fail with Corrupt (no hang), then heal themselves
        let first = t.h.malloc(10_000, 16);
        assert_eq!(code(first), "ERR_SHM_CORRUPT");
        // the next operation rebuilds automatically, then succeeds
        let o = t.h.malloc(10_000, 16).unwrap();
        t.h.check().unwrap();
        t.h.free(o).unwrap();
        t.h.rebuild().unwrap();
        t.h.check().unwrap();
        assert_eq!(t.h.stats().unwrap(), before);
        assert!(t.h.named_find(b"keep").unwrap().is_some());
        // a broken directory link is cut
        let e = t.h.named_find(b"keep").unwrap().unwrap();
        t.h.st((e.entry_off - GUARD) as u64 + E_OBJ, 3).unwrap();
        assert_eq!(code(t.h.check()), "ERR_SHM_CORRUPT");
        t.h.rebuild().unwrap();
        t.h.check().unwrap();
        assert_eq!(t.h.named_find(b"keep").unwrap(), None);
        // a broken block chain cannot be rebuilt
        let victim = live[5];
        t.h.st((victim - GUARD - 16) as u64, mk(1 << 30, 0))
            .unwrap();
        assert_eq!(code(t.h.rebuild()), "ERR_SHM_CORRUPT");
        assert_eq!(code(t.h.malloc(1, 1)), "ERR_SHM_CORRUPT");
        let _ = s0;
        assert!(t.guards_ok());
    }

    /// Simulate a process dying after every possible number of metadata stores during
    /// each kind of operation: rebuild() must always restore a heap that passes check(),
    /// keep every live block intact, and leak at most the blocks being operated on.
    #[test]
    fn crash_at_every_store() {
        type Op = fn(&T, &mut Vec<(usize, usize, u8)>) -> Result<(), HeapError>;
        // Setup (see below): blocks A0..A7, A3 and A5 freed, so live = [A0,A1,A2,A4,A6,A7]
        // and the chain is A0 A1 A2 (A3) A4 (A5) A6 A7 pre-object pre-entry C (rest), C
        // cached.
        let ops: Vec<(&str, Op)> = vec![
            ("malloc_split", |t, _| t.h.malloc(300, 16).map(|_| ())),
            ("malloc_aligned", |t, _| t.h.malloc(300, 1024).map(|_| ())),
            ("malloc_exact_hole", |t, _| t.h.malloc(250, 16).map(|_| ())),
            ("free_no_merge", |t, live| t.h.free(live.remove(0).0)),
            ("free_merge_next", |t, live| t.h.free(live.remove(2).0)),
            ("free_merge_prev", |t, live| t.h.free(live.remove(4).0)),
            ("free_merge_both", |t, live| t.h.free(live.remove(3).0)),
            ("realloc_shrink", |t, live| {
                // bytes beyond the new size are the allocator's from the call on
                live[1].1 = 40;
                live[1].0 = t.h.realloc(live[1].0, 40)?;
                Ok(())
            }),
            ("realloc_shrink_merge", |t, live| {
                live[2].1 = 40;
                live[2].0 = t.h.realloc(live[2].0, 40)?;
                Ok(())
            }),
            ("realloc_grow_split", |t, live| {
                live[2].0 = t.h.realloc(live[2].0, 350)?;
                Ok(())
            }),
            ("realloc_grow_whole", |t, live| {
                live[2].0 = t.h.realloc(live[2].0, 440)?;
                Ok(())
            }),
            ("realloc_move", |t, live| {
                // while a move is in flight the caller owns neither block for sure
                let (o, s, tag) = live.remove(0);
                live.push((t.h.realloc(o, 5000)?, s, tag));
                Ok(())
            }),
            ("named_reserve", |t, _| {
                t.h.named_reserve(b"obj", 100, 16, b"desc", 0, None)
                    .map(|_| ())
            }),
            ("named_remove", |t, _| t.h.named_remove(b"pre").map(|_| ())),
            ("rebuild", |t, _| t.h.rebuild()),
            ("reclaim_cached", |t, _| {
                t.h.reclaim_cached(|_| true).map(drop)
            }),
        ];
        let mut cases = 0;
        for (name, op) in ops {
            let mut k = 1u64;
            loop {
                let t = T::new(1 << 16);
                let mut live: Vec<(usize, usize, u8)> = Vec::new();
                for i in 0..8u8 {
                    let size = 100 + 50 * usize::from(i);
                    let o = t.h.malloc(size, 16).unwrap();
                    t.fill(o, size, i + 1);
                    live.push((o, size, i + 1));
                }
                t.h.named_reserve(b"pre", 8, 16, b"x", 0, None).unwrap();
                // A block cached by a thread (cache.rs): every repair keeps it or
                // reclaims it whole.
                let c = t.h.malloc(64, 16).unwrap();
                assert!(t
                    .h
                    .cache_put(c, crate::heap::CacheOwner { token: 5, start: 6 }));
                t.h.free(live.remove(5).0).unwrap();
                t.h.free(live.remove(3).0).unwrap();
                t.h.check().unwrap();
                let before = t.h.stats().unwrap();
                t.h.crash_at.store(k, Ordering::Relaxed);
                let r = op(&t, &mut live);
                let crashed = t.h.crash_at.load(Ordering::Relaxed) == u64::MAX;
                t.h.crash_at.store(0, Ordering::Relaxed);
                if !crashed {
                    r.unwrap();
                    t.h.check().unwrap();
                    break;
                }
                cases += 1;
                // k == 1 dies on the very first store (setting busy): nothing changed.
                if k > 1 {
                    assert_eq!(
                        code(t.h.check()),
                        "ERR_SHM_CORRUPT",
                        "{name} k={k}: busy must be set"
                    );
                }
                t.h.rebuild()
                    .unwrap_or_else(|e| panic!("{name} k={k}: {e}"));
                t.h.check().unwrap_or_else(|e| panic!("{name} k={k}: {e}"));
                for &(o, size, tag) in &live {
                    assert!(
                        t.verify(o, size.min(t.h.usable_size(o).unwrap()), tag),
                        "{name} k={k}"
                    );
                }
                let after = t.h.stats().unwrap();
                assert!(after.allocations <= before.allocations + 2, "{name} k={k}");
                // the heap still works
                let o = t.h.malloc(200, 16).unwrap();
                t.h.free(o).unwrap();
                for &(o, _, _) in &live {
                    let _ = t.h.free(o);
                }
                t.h.check().unwrap();
                assert!(t.guards_ok());
                k += 1;
            }
        }
        eprintln!("crash points simulated: {cases}");
        assert!(cases > 200, "{cases}");
    }

    /// Auto-recovery: an operation after a crash rebuilds first.
    #[test]
    fn next_op_recovers_after_crash() {
        let t = T::new(1 << 16);
        let a = t.h.malloc(100, 16).unwrap();
        let b = t.h.malloc(100, 16).unwrap();
        t.h.crash_at.store(6, Ordering::Relaxed);
        assert!(t.h.free(a).is_err());
        t.h.crash_at.store(0, Ordering::Relaxed);
        let c = t.h.malloc(100, 16).unwrap();
        t.h.check().unwrap();
        t.h.free(b).unwrap();
        t.h.free(c).unwrap();
        let _ = t.h.free(a);
        t.h.check().unwrap();
    }
}
