//! The TLSF core: block headers, the segregated free lists and their bitmaps, and
//! `malloc` / `free` / `realloc` / `stats` on them. Every metadata store keeps the
//! block chain valid (see `repair.rs`). Caller holds the heap lock.
//!
//! # Block (16-byte aligned, heap-relative offset `b`, size a multiple of 16, >= 48)
//!
//! Blocks tile `[header_size, arena_end)` exactly: the next block starts at `b + size`.
//!
//! | off | size | field | meaning |
//! |----:|-----:|-------|---------|
//! | 0 | 8 | word | bit 0 FREE; bit 1 PREV_FREE (the physically previous block is free); bit 2 INTERNAL (directory entry: not freeable by `free`); bit 3 NAMED (the object of a directory entry: `free` also removes its name, `realloc` refuses it; only on allocated, non-INTERNAL blocks); bits 4..7 `log2(align) - 4` of the allocation (0 for free blocks); bits 8..63 `size / 16` (size includes this header) |
//! | 8 | 8 | check | `z = (b ^ salt) * 0x9E3779B97F4A7C15` (wrapping), `(z ^ (z >> 29)) \| 1` for a live block header; `check ^ 0xDEADBEEF_DEADBEE0` once the header has been absorbed by a merge ("dead": freeing it reports a double free) |
//! | 16 | size-16 | payload | user data of an allocated block; the user offset is `heap_off + b + 16` |
//!
//! Free blocks additionally hold, inside their payload:
//!
//! | off | size | field | meaning |
//! |----:|-----:|-------|---------|
//! | 16 | 8 | next | heap-relative offset of the next free block in the same class list, 0 = end |
//! | 24 | 8 | prev | heap-relative offset of the previous free block in the list, 0 = this is the head |
//! | size-8 | 8 | footer | `size` (boundary tag, read by the next block when its PREV_FREE bit is set) |
//!
//! Size classes (two-level segregated fit, 16 second-level classes): a block of size
//! `s < 256` is in class `(0, s / 16)`; otherwise with `l = floor(log2 s)` it is in
//! `(l - 7, (s >> (l - 4)) & 15)`. Invariants: no two free blocks are adjacent (free
//! neighbours are coalesced immediately); every free block is in exactly the list of
//! its class; PREV_FREE is exactly "previous block is free"; the first block never has
//! PREV_FREE; `used + free = arena_end - header_size`.

use super::*;

/// A free block chosen by `find_fit` (already unlinked): block, size word, leading gap.
#[derive(Clone, Copy)]
pub(super) struct Fit {
    pub(super) b: u64,
    pub(super) w: u64,
    pub(super) g: u64,
}

impl HeapView {
    /// Pointer to the first 48 bytes of the block at heap-relative `b`. `b` must have
    /// been range-checked by the caller; as a last line of defence it is clamped into
    /// `[header_size, arena_end - 48]` (16-aligned), which is what makes [`BP`]'s
    /// accessors sound for any input.
    #[inline(always)]
    pub(super) fn bp(&self, b: u64) -> BP<'_> {
        let l = &self.lay;
        debug_assert!(
            b >= l.header_size && b & 15 == 0 && b <= l.arena_end - MIN_BLOCK,
            "unvalidated block offset {b}"
        );
        let c = b.min(l.arena_end - MIN_BLOCK).max(l.header_size) & !15;
        BP {
            p: self.hb.wrapping_add(c as usize),
            v: self,
        }
    }

    /// Free-list head of class (fl, sl) (index clamped into the table).
    #[inline(always)]
    pub(super) fn head_ptr(&self, fl: u32, sl: u32) -> *const AtomicU64 {
        let n = u64::from(self.lay.fl_count) * SL_COUNT;
        let i = (u64::from(fl) * SL_COUNT + u64::from(sl)).min(n - 1);
        self.hb.wrapping_add((self.lay.heads + 8 * i) as usize) as *const AtomicU64
    }

    #[inline(always)]
    pub(super) fn head(&self, fl: u32, sl: u32) -> u64 {
        let p = self.head_ptr(fl, sl);
        // SAFETY: the index is clamped below fl_count * 16, so the word lies inside the
        // heads table, which lies inside the header (<= heap_len); 8-aligned.
        unsafe { (*p).load(Ordering::Relaxed) }
    }

    #[inline(always)]
    pub(super) fn set_head(&self, fl: u32, sl: u32, v: u64) -> R<()> {
        #[cfg(test)]
        self.tick()?;
        let p = self.head_ptr(fl, sl);
        // SAFETY: as in `head`.
        unsafe { (*p).store(v, Ordering::Relaxed) };
        Ok(())
    }

    /// Second-level bitmap word of first-level class `fl` (index clamped).
    #[inline(always)]
    pub(super) fn slb_ptr(&self, fl: u32) -> *const AtomicU32 {
        let i = u64::from(fl.min(self.lay.fl_count - 1));
        self.hb.wrapping_add((H_SL_BITMAPS + 4 * i) as usize) as *const AtomicU32
    }

    #[inline(always)]
    pub(super) fn slbm(&self, fl: u32) -> u32 {
        let p = self.slb_ptr(fl);
        // SAFETY: fl clamped below fl_count: the word lies in the bitmap array inside the
        // header; 4-aligned.
        unsafe { (*p).load(Ordering::Relaxed) }
    }

    #[inline(always)]
    pub(super) fn set_slbm(&self, fl: u32, v: u32) -> R<()> {
        #[cfg(test)]
        self.tick()?;
        let p = self.slb_ptr(fl);
        // SAFETY: as in `slbm`.
        unsafe { (*p).store(v, Ordering::Relaxed) };
        Ok(())
    }

    /// Sanity of a block's size word (check word already verified, `b` in range).
    #[inline(always)]
    pub(super) fn sane_word(&self, b: u64, w: u64) -> R<()> {
        let size = w_size(w);
        // b <= arena_end - MIN_BLOCK, so the right side cannot underflow
        let bad_size = size.wrapping_sub(MIN_BLOCK) > self.lay.arena_end - b - MIN_BLOCK;
        // CACHED marks an ordinary allocation only.
        let bad_cached = w & F_CACHED != 0 && w & (F_FREE | F_INTERNAL | F_NAMED) != 0;
        if bad_size | bad_cached | !FLAGS_OK[(w & FLAG_MASK) as usize] {
            return corrupt("bad block size or flags", b);
        }
        Ok(())
    }

    #[inline(always)]
    pub(super) fn in_arena(&self, b: u64) -> bool {
        b >= self.lay.header_size && b & 15 == 0 && b <= self.lay.arena_end - MIN_BLOCK
    }

    /// Validate the block header at heap-relative `b`; returns its size word.
    #[inline(always)]
    pub(super) fn block(&self, salt: u64, b: u64) -> R<u64> {
        if !self.in_arena(b) {
            return corrupt("block offset out of range", b);
        }
        let p = self.bp(b);
        if p.ld(8) != check_word(salt, b) {
            return corrupt("bad block check word", b);
        }
        let w = p.ld(0);
        self.sane_word(b, w)?;
        Ok(w)
    }

    #[inline(always)]
    pub(super) fn free_block(&self, salt: u64, b: u64) -> R<u64> {
        let w = self.block(salt, b)?;
        if w & F_FREE == 0 {
            return corrupt("free-list node is not a free block", b);
        }
        Ok(w)
    }

    #[inline(always)]
    pub(super) fn mark_dead(&self, salt: u64, b: u64) -> R<()> {
        self.bp(b).st(8, check_word(salt, b) ^ DEAD_XOR)
    }

    /// Validate a caller-supplied (mapping-relative) payload offset of an allocated,
    /// non-internal block. Returns (heap-relative block offset, size word).
    #[inline(always)]
    pub(super) fn user_block(&self, salt: u64, off: usize) -> R<(u64, u64)> {
        let l = self.lay;
        let o = off as u64;
        let ho = self.heap_off as u64;
        if o < ho + l.header_size + HDR || o >= ho + l.arena_end {
            return Err(Fault::BadOff("offset is outside the heap", o));
        }
        if o & 15 != 0 {
            return Err(Fault::BadOff(
                "offset is not 16-byte aligned, so not an allocation",
                o,
            ));
        }
        let b = o - ho - HDR;
        if b > l.arena_end - MIN_BLOCK {
            return Err(Fault::BadOff("offset is not the start of an allocation", o));
        }
        let p = self.bp(b);
        let c = p.ld(8);
        let good = check_word(salt, b);
        if c == good ^ DEAD_XOR {
            return Err(Fault::Double(o));
        }
        if c != good {
            return Err(Fault::BadOff("offset is not the start of an allocation", o));
        }
        let w = p.ld(0);
        self.sane_word(b, w)?;
        // A cached block is free as far as its users know (`cache.rs`).
        if w & (F_FREE | F_CACHED) != 0 {
            return Err(Fault::Double(o));
        }
        if w & F_INTERNAL != 0 {
            return Err(Fault::BadOff("offset is a named-object directory entry", o));
        }
        Ok((b, w))
    }

    /// The block after allocated block `b` of `size`, validated: None at the arena end.
    #[inline(always)]
    pub(super) fn next_of_used(&self, salt: u64, b: u64, size: u64) -> R<Option<(u64, u64)>> {
        let nb = b + size;
        if nb >= self.lay.arena_end {
            return Ok(None);
        }
        let nw = self.block(salt, nb)?;
        if nw & F_PREV_FREE != 0 {
            return corrupt(
                "block after an allocated block claims a free predecessor",
                nb,
            );
        }
        Ok(Some((nb, nw)))
    }

    // ---- free lists --------------------------------------------------------------------

    #[inline(always)]
    pub(super) fn set_bits(&self, fl: u32, sl: u32) -> R<()> {
        self.set_slbm(fl, self.slbm(fl) | (1 << sl))?;
        let f = self.hld(H_FL_BITMAP)?;
        self.hst(H_FL_BITMAP, f | (1 << fl))
    }

    #[inline(always)]
    pub(super) fn clear_bits(&self, fl: u32, sl: u32) -> R<()> {
        let s = self.slbm(fl) & !(1u32 << sl);
        self.set_slbm(fl, s)?;
        if s & 0xFFFF == 0 {
            let f = self.hld(H_FL_BITMAP)?;
            self.hst(H_FL_BITMAP, f & !(1u64 << fl))?;
        }
        Ok(())
    }

    /// The class `(fl, sl)` of free block `b` of `size`, checked against the heap's classes.
    #[inline(always)]
    fn free_class(&self, b: u64, size: u64) -> R<(u32, u32)> {
        let (fl, sl) = mapping(size);
        if fl >= self.lay.fl_count {
            return corrupt("block size beyond the largest class", b);
        }
        Ok((fl, sl))
    }

    /// Push free block `b` (header already written) on the front of its class list.
    #[inline(always)]
    pub(super) fn insert_free(&self, salt: u64, b: u64, size: u64) -> R<()> {
        let (fl, sl) = self.free_class(b, size)?;
        let h = self.head(fl, sl);
        if h != 0 {
            let hw = self.free_block(salt, h)?;
            if mapping(w_size(hw)) != (fl, sl) {
                return corrupt("free-list node in the wrong class", h);
            }
        }
        let p = self.bp(b);
        p.st(B_NEXT, h)?;
        p.st(B_PREV, 0)?;
        if h != 0 {
            self.bp(h).st(B_PREV, b)?;
        }
        self.set_head(fl, sl, b)?;
        if h == 0 {
            self.set_bits(fl, sl)?;
        }
        Ok(())
    }

    /// Unlink free block `b` of `size` from its class list (validating its neighbours
    /// before writing anything).
    #[inline(always)]
    pub(super) fn remove_free(&self, salt: u64, b: u64, size: u64) -> R<()> {
        let (fl, sl) = self.free_class(b, size)?;
        let p = self.bp(b);
        let next = p.ld(B_NEXT);
        let prev = p.ld(B_PREV);
        if next == b || prev == b {
            return corrupt("free-list self loop", b);
        }
        if next != 0 {
            let nw = self.free_block(salt, next)?;
            if mapping(w_size(nw)) != (fl, sl) || self.bp(next).ld(B_PREV) != b {
                return corrupt("free-list links inconsistent", next);
            }
        }
        if prev != 0 {
            self.free_block(salt, prev)?;
            if self.bp(prev).ld(B_NEXT) != b {
                return corrupt("free-list links inconsistent", prev);
            }
        } else if self.head(fl, sl) != b {
            return corrupt("free block missing from its list", b);
        }
        if next != 0 {
            self.bp(next).st(B_PREV, prev)?;
        }
        if prev != 0 {
            self.bp(prev).st(B_NEXT, next)?;
        } else {
            self.set_head(fl, sl, next)?;
            if next == 0 {
                self.clear_bits(fl, sl)?;
            }
        }
        Ok(())
    }

    /// First non-empty class at or above (fl, sl).
    #[inline(always)]
    pub(super) fn find_suitable(&self, fl: u32, sl: u32) -> R<Option<(u32, u32)>> {
        let fc = self.lay.fl_count;
        if fl >= fc || u64::from(sl) >= SL_COUNT {
            return Ok(None);
        }
        let m = self.slbm(fl) & 0xFFFF & (!0u32 << sl);
        if m != 0 {
            return Ok(Some((fl, m.trailing_zeros())));
        }
        let valid = if fc >= 64 { !0u64 } else { (1u64 << fc) - 1 };
        let f = self.hld(H_FL_BITMAP)? & valid & (!0u64 << (fl + 1));
        if f == 0 {
            return Ok(None);
        }
        let fl2 = f.trailing_zeros();
        let m = self.slbm(fl2) & 0xFFFF;
        if m == 0 {
            return corrupt("first-level bitmap set for an empty class", H_FL_BITMAP);
        }
        Ok(Some((fl2, m.trailing_zeros())))
    }

    /// Padding needed in front of the payload of free block `b` to reach `align`.
    #[inline(always)]
    pub(super) fn gap(&self, b: u64, align: u64) -> u64 {
        if align <= 16 {
            return 0;
        }
        let first = self.heap_off as u64 + b + HDR;
        let rem = first & (align - 1);
        let mut g = if rem == 0 { 0 } else { align - rem };
        if g != 0 && g < MIN_BLOCK {
            g += align;
        }
        g
    }

    /// Find and unlink a free block that fits `need` bytes at `align`.
    #[inline(always)]
    pub(super) fn find_fit(&self, salt: u64, need: u64, align: u64) -> R<Fit> {
        let arena = self.arena();
        if need > arena {
            return Err(Fault::NoMem);
        }
        // Fast path (good fit): a class whose every block is large enough.
        let search = if align > 16 {
            need.checked_add(align + 32)
        } else {
            Some(need)
        };
        if let Some(search) = search.filter(|&s| s <= arena) {
            let (fl, sl) = mapping(round_class(search));
            if let Some((fl, sl)) = self.find_suitable(fl, sl)? {
                let b = self.head(fl, sl);
                if b == 0 {
                    return corrupt(
                        "bitmap says non-empty but the list is empty",
                        self.lay.heads,
                    );
                }
                let w = self.free_block(salt, b)?;
                let size = w_size(w);
                let g = self.gap(b, align);
                if mapping(size) != (fl, sl) || g + need > size {
                    return corrupt("free-list node in the wrong class", b);
                }
                self.remove_free(salt, b, size)?;
                return Ok(Fit { b, w, g });
            }
        }
        self.find_fit_slow(salt, need, align)
    }

    /// Slow path: first fit over the classes that may hold a fitting block (only taken
    /// when no class above the rounded request is non-empty).
    #[inline(never)]
    pub(super) fn find_fit_slow(&self, salt: u64, need: u64, align: u64) -> R<Fit> {
        let (mut fl, mut sl) = mapping(need);
        let mut budget = self.budget()?;
        while let Some((f, s)) = self.find_suitable(fl, sl)? {
            let mut b = self.head(f, s);
            if b == 0 {
                return corrupt(
                    "bitmap says non-empty but the list is empty",
                    self.lay.heads,
                );
            }
            let mut prev = 0;
            while b != 0 {
                spend(&mut budget, "free list too long (cycle?)", b)?;
                let w = self.free_block(salt, b)?;
                let size = w_size(w);
                let p = self.bp(b);
                if mapping(size) != (f, s) || p.ld(B_PREV) != prev {
                    return corrupt("free-list node inconsistent", b);
                }
                let g = self.gap(b, align);
                if g + need <= size {
                    self.remove_free(salt, b, size)?;
                    return Ok(Fit { b, w, g });
                }
                prev = b;
                b = p.ld(B_NEXT);
            }
            if u64::from(s) + 1 < SL_COUNT {
                (fl, sl) = (f, s + 1);
            } else {
                (fl, sl) = (f + 1, 0);
            }
        }
        Err(Fault::NoMem)
    }

    /// Block size for a request of `size` payload bytes.
    #[inline(always)]
    pub(super) fn need_for(&self, size: usize) -> R<u64> {
        let s = size.max(1) as u64;
        match s.checked_add(HDR + 15) {
            Some(n) if (n & !15) <= self.arena() => Ok((n & !15).max(MIN_BLOCK)),
            _ => Err(Fault::NoMem),
        }
    }

    /// Write the header and footer of a new free block `r` of `rsz` bytes (inside a
    /// block that is not yet split, so invisible to a chain walk until the commit).
    #[inline(always)]
    pub(super) fn write_free_header(&self, salt: u64, r: u64, rsz: u64, flags: u64) -> R<()> {
        if !self.in_arena(r) {
            return corrupt("split point out of range", r);
        }
        let p = self.bp(r);
        p.st(8, check_word(salt, r))?;
        p.st(0, mk(rsz, F_FREE | flags))?;
        self.st(r + rsz - 8, rsz)
    }

    /// Clear (or set) the PREV_FREE bit of the block at `x` (if `x` is not the end).
    #[inline(always)]
    pub(super) fn set_prev_free(&self, salt: u64, x: u64, on: bool) -> R<()> {
        if x < self.lay.arena_end {
            self.block(salt, x)?;
            self.bp(x).update_low(F_PREV_FREE, on)?;
        }
        Ok(())
    }

    /// Turn the unlinked free block `fit.b` into an allocation of `need` bytes at `align`
    /// after a leading gap `fit.g`. Returns the heap-relative payload offset.
    #[inline(always)]
    pub(super) fn carve(
        &self,
        salt: u64,
        fit: Fit,
        need: u64,
        align: u64,
        internal: bool,
    ) -> R<u64> {
        let Fit { mut b, w, g } = fit;
        let mut size = w_size(w);
        // Back what this writes before writing anything: the fragment's footer, the block
        // handed out and the header of the tail split off (see `with_region`). On failure
        // the block goes back on its list untouched.
        let a = b + g;
        let hi = if size - g - need >= MIN_BLOCK {
            a + need + 32
        } else {
            b + size
        };
        if let Err(f) = self.back(if g > 0 { a - 8 } else { a }, hi) {
            self.insert_free(salt, b, size)?;
            return Err(f);
        }
        let mut prevbit = w & F_PREV_FREE;
        if g > 0 {
            // Split off a leading free fragment [b, b+g). The new header at a = b+g lies
            // inside b's payload (invisible to a chain walk) until the commit store.
            let a = b + g;
            let asz = size - g;
            self.write_free_header(salt, a, asz, F_PREV_FREE)?;
            self.st(a - 8, g)?; // footer of the fragment
            self.commit();
            self.bp(b).st(0, mk(g, F_FREE | prevbit))?; // commit: chain is b(g) -> a
            self.commit();
            self.insert_free(salt, b, g)?;
            b = a;
            size = asz;
            prevbit = F_PREV_FREE;
        }
        let flags = align_bits(align) | if internal { F_INTERNAL } else { 0 } | prevbit;
        let taken = if size - need >= MIN_BLOCK {
            // Split off the tail r; same pattern: write r's header inside b's payload,
            // then commit with one store of b's size word.
            let r = b + need;
            let rsz = size - need;
            self.write_free_header(salt, r, rsz, 0)?;
            self.commit();
            self.bp(b).st(0, mk(need, flags))?; // commit
            self.commit();
            self.insert_free(salt, r, rsz)?;
            need
        } else {
            self.bp(b).st(0, mk(size, flags))?; // commit
            self.commit();
            self.set_prev_free(salt, b + size, false)?;
            size
        };
        self.add(H_USED, taken)?;
        self.add(H_ALLOCS, 1)?;
        Ok(b + HDR)
    }

    #[inline(always)]
    pub(super) fn malloc_inner(
        &self,
        salt: u64,
        size: usize,
        align: u64,
        internal: bool,
    ) -> R<u64> {
        let need = self.need_for(size)?;
        let fit = self.find_fit(salt, need, align)?;
        self.carve(salt, fit, need, align, internal)
    }

    /// Free allocated block `b` (size word `w` already validated), coalescing with free
    /// neighbours.
    #[inline(always)]
    pub(super) fn free_inner(&self, salt: u64, b: u64, w: u64) -> R<()> {
        let l = self.lay;
        let size = w_size(w);
        // Validate both neighbours before writing anything.
        let mut prev = None;
        if w & F_PREV_FREE != 0 {
            if b < l.header_size + MIN_BLOCK {
                return corrupt("first block claims a free predecessor", b);
            }
            let psize = self.ld(b - 8)?;
            if psize < MIN_BLOCK || psize & 15 != 0 || psize > b - l.header_size {
                return corrupt("bad boundary tag", b - 8);
            }
            let p = b - psize;
            let pw = self.free_block(salt, p)?;
            if w_size(pw) != psize {
                return corrupt("boundary tag disagrees with the previous block", p);
            }
            prev = Some((p, pw));
        }
        let after = self.next_of_used(salt, b, size)?;
        let next = match after {
            Some((nb, nw)) if nw & F_FREE != 0 => Some((nb, w_size(nw))),
            _ => None,
        };
        if let Some((p, pw)) = prev {
            self.remove_free(salt, p, w_size(pw))?;
        }
        if let Some((n, nsize)) = next {
            self.remove_free(salt, n, nsize)?;
        }
        let (start, start_flags) = match prev {
            Some((p, pw)) => (p, pw & F_PREV_FREE),
            None => (b, 0),
        };
        let total = size + prev.map_or(0, |(_, pw)| w_size(pw)) + next.map_or(0, |(_, s)| s);
        if prev.is_some() || next.is_some() {
            // Headers about to be absorbed: rebuild marks them dead if we die after
            // the commit but before marking them ourselves.
            self.hst(H_JOURNAL0, if prev.is_some() { b } else { 0 })?;
            self.hst(H_JOURNAL1, next.map_or(0, |(n, _)| n))?;
        }
        self.st(start + total - 8, total)?; // footer (inside the blocks being merged)
        self.commit();
        self.bp(start).st(0, mk(total, F_FREE | start_flags))?; // commit
        self.commit();
        if prev.is_some() {
            self.mark_dead(salt, b)?;
        }
        if let Some((n, _)) = next {
            self.mark_dead(salt, n)?;
        } else if let Some((nb, _)) = after {
            // the (validated, allocated, maybe cached) successor now follows a free block
            self.bp(nb).update_low(F_PREV_FREE, true)?;
        }
        self.insert_free(salt, start, total)?;
        self.sub(H_USED, size)?;
        self.sub(H_ALLOCS, 1)?;
        Ok(())
    }

    pub(super) fn realloc_inner(&self, salt: u64, b: u64, w: u64, size: usize) -> R<u64> {
        let need = self.need_for(size)?;
        let cur = w_size(w);
        let keep = w & FLAG_MASK & !F_FREE;
        let next = self.next_of_used(salt, b, cur)?;
        let next_free = next.filter(|&(_, nw)| nw & F_FREE != 0);
        if need <= cur {
            if cur - need < MIN_BLOCK {
                return Ok(b + HDR);
            }
            // Shrink in place: the tail r becomes free, merged with a free successor.
            let r = b + need;
            let mut rsize = cur - need;
            if let Some((n, nw)) = next_free {
                self.remove_free(salt, n, w_size(nw))?;
                rsize += w_size(nw);
                self.hst(H_JOURNAL0, n)?;
                self.hst(H_JOURNAL1, 0)?;
            }
            self.write_free_header(salt, r, rsize, 0)?;
            self.commit();
            self.bp(b).st(0, mk(need, keep))?; // commit
            self.commit();
            if let Some((n, _)) = next_free {
                self.mark_dead(salt, n)?;
            } else if let Some((n, _)) = next {
                self.bp(n).update_low(F_PREV_FREE, true)?;
            }
            self.insert_free(salt, r, rsize)?;
            self.sub(H_USED, cur - need)?;
            return Ok(b + HDR);
        }
        if let Some((n, nw)) = next_free {
            let nsize = w_size(nw);
            let total = cur + nsize;
            if total >= need {
                // Grow in place into the free successor n: back the grown block and the
                // header of what remains of n first (see `with_region`).
                let hi = if total - need >= MIN_BLOCK {
                    b + need + 32
                } else {
                    b + total
                };
                self.back(b + cur, hi)?;
                self.remove_free(salt, n, nsize)?;
                self.hst(H_JOURNAL0, n)?;
                self.hst(H_JOURNAL1, 0)?;
                self.commit();
                if total - need >= MIN_BLOCK {
                    let r = b + need; // r >= n + 16: n's check word is not overwritten
                    let rsize = total - need;
                    self.write_free_header(salt, r, rsize, 0)?;
                    self.commit();
                    self.bp(b).st(0, mk(need, keep))?; // commit
                    self.commit();
                    self.mark_dead(salt, n)?;
                    self.insert_free(salt, r, rsize)?;
                    self.add(H_USED, need - cur)?;
                } else {
                    self.bp(b).st(0, mk(total, keep))?; // commit
                    self.commit();
                    self.mark_dead(salt, n)?;
                    self.set_prev_free(salt, b + total, false)?;
                    self.add(H_USED, nsize)?;
                }
                return Ok(b + HDR);
            }
        }
        // Move: allocate, copy, free. A crash in between leaks one of the two blocks.
        let align = w_align(w);
        let fit = self.find_fit(salt, need, align)?;
        let new = self.carve(salt, fit, need, align, false)?;
        let n = (cur - HDR).min(size as u64);
        self.copy(b + HDR, new, n)?;
        let w = self.block(salt, b)?; // carve may have changed b's PREV_FREE bit
        self.free_inner(salt, b, w)?;
        Ok(new)
    }

    // ---- public allocation API -----------------------------------------------------------

    /// Allocate `size` bytes aligned to `align` (power of two, 1..=4096; < 16 means 16).
    /// Returns the mapping-relative offset. `size == 0` allocates a minimum block.
    /// Caller holds the heap lock.
    pub fn malloc(&self, size: usize, align: usize) -> Result<usize, HeapError> {
        let align = norm_align(align).map_err(|f| self.err(f))?;
        let r = self.op(|salt| self.malloc_inner(salt, size, align, false))?;
        Ok(self.heap_off + r as usize)
    }

    /// Free the allocation at mapping-relative `off`; a named object loses its name
    /// first (in the same operation), so the directory never points at freed memory.
    /// Caller holds the heap lock.
    pub fn free(&self, off: usize) -> Result<(), HeapError> {
        self.free_named(off, None)
    }

    /// [`free`](Self::free), told where the object's directory entry may be (its
    /// mapping-relative offset, as `named`/`find` reported it): a named object's entry is
    /// then found in its own bucket, not by a walk of the whole directory. A hint that
    /// does not lead to the object's entry (stale, or wrong) costs the walk.
    pub fn free_named(&self, off: usize, entry: Option<usize>) -> Result<(), HeapError> {
        self.op(|salt| {
            let (b, w) = self.user_block(salt, off)?;
            if w & F_NAMED != 0 && !self.unname_hinted(salt, b + HDR, entry)? {
                self.unname_object(salt, b + HDR)?;
            }
            self.free_inner(salt, b, w)
        })
    }

    /// Resize the allocation at `off` to `size` bytes, in place when possible, otherwise
    /// by moving (contents copied up to the smaller size; the original alignment kept).
    /// On `NoMem` the original allocation is untouched. Caller holds the heap lock.
    pub fn realloc(&self, off: usize, size: usize) -> Result<usize, HeapError> {
        let r = self.op(|salt| {
            let (b, w) = self.user_block(salt, off)?;
            if w & F_NAMED != 0 {
                // Moving it would leave its directory entry behind.
                return Err(Fault::BadOff(
                    "offset is a named object, which cannot be resized",
                    off as u64,
                ));
            }
            self.realloc_inner(salt, b, w, size)
        })?;
        Ok(self.heap_off + r as usize)
    }

    /// Usable bytes of the allocation at `off` (>= the requested size). Read-only.
    pub fn usable_size(&self, off: usize) -> Result<usize, HeapError> {
        let r = self.salt().and_then(|salt| self.user_block(salt, off));
        let (_, w) = r.map_err(|f| self.err(f))?;
        Ok((w_size(w) - HDR) as usize)
    }

    /// Heap statistics. Caller holds the heap lock.
    /// Read-only unless an interrupted operation has to be repaired first.
    pub fn stats(&self) -> Result<HeapStats, HeapError> {
        self.repaired_read_op(|salt| {
            // Cached blocks (`cache.rs`) are allocated in the chain but free to their
            // users: they count as free here.
            let (cached, cached_bytes) = self.cached_totals(salt)?;
            let used = self.hld(H_USED)?.wrapping_sub(cached_bytes);
            let allocations = self.hld(H_ALLOCS)?.wrapping_sub(cached);
            let Some(free) = self.arena().checked_sub(used) else {
                return corrupt("used bytes exceed the arena size", H_USED);
            };
            Ok(HeapStats {
                size: self.heap_len as u64,
                used,
                free,
                largest_free: self.largest_free(salt)?.saturating_sub(HDR),
                allocations,
                cached,
                cached_bytes,
            })
        })
    }

    /// Size of the largest free block (0 if none).
    pub(super) fn largest_free(&self, salt: u64) -> R<u64> {
        let fc = self.lay.fl_count;
        let valid = if fc >= 64 { !0u64 } else { (1u64 << fc) - 1 };
        let f = self.hld(H_FL_BITMAP)? & valid;
        if f == 0 {
            return Ok(0);
        }
        let fl = 63 - f.leading_zeros();
        let m = self.ld32(self.slb(fl))? & 0xFFFF;
        if m == 0 {
            return corrupt("first-level bitmap set for an empty class", H_FL_BITMAP);
        }
        let sl = 31 - m.leading_zeros();
        let mut budget = self.budget()?;
        let mut b = self.ld(self.head_at(fl, sl))?;
        if b == 0 {
            return corrupt(
                "bitmap says non-empty but the list is empty",
                self.head_at(fl, sl),
            );
        }
        let mut best = 0;
        while b != 0 {
            spend(&mut budget, "free list too long (cycle?)", b)?;
            let w = self.free_block(salt, b)?;
            if mapping(w_size(w)) != (fl, sl) {
                return corrupt("free-list node in the wrong class", b);
            }
            best = best.max(w_size(w));
            b = self.ld(b + B_NEXT)?;
        }
        Ok(best)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::heap::testing::*;

    #[test]
    fn malloc_free_basic() {
        let (t, s0) = T::with_stats(1 << 20);
        let a = t.h.malloc(100, 1).unwrap();
        let b = t.h.malloc(0, 1).unwrap();
        let c = t.h.malloc(5000, 8).unwrap();
        assert!(a >= GUARD && a < GUARD + t.len);
        assert_eq!(a % 16, 0);
        assert!(t.h.usable_size(a).unwrap() >= 100);
        assert_eq!(t.h.usable_size(b).unwrap(), 32);
        assert_ne!(a, b);
        t.fill(a, 100, 1);
        t.fill(b, 32, 2);
        t.fill(c, 5000, 3);
        t.h.check().unwrap();
        let s = t.h.stats().unwrap();
        assert_eq!(s.allocations, 3);
        assert_eq!(s.used + s.free, s0.free);
        assert!(t.verify(a, 100, 1) && t.verify(b, 32, 2) && t.verify(c, 5000, 3));
        t.h.free(b).unwrap();
        t.h.check().unwrap();
        t.h.free(a).unwrap();
        t.h.check().unwrap();
        t.h.free(c).unwrap();
        t.h.check().unwrap();
        assert_eq!(t.h.stats().unwrap(), s0);
        assert!(t.guards_ok());
    }

    #[test]
    fn every_alignment() {
        let (t, s0) = T::with_stats(1 << 20);
        let mut offs = Vec::new();
        for round in 0..3 {
            for k in 0..=12 {
                let align = 1usize << k;
                for size in [0usize, 1, 17, 100, 4096 + round] {
                    let o = t.h.malloc(size, align).unwrap();
                    assert_eq!(o % align.max(16), 0, "align {align}");
                    assert!(t.h.usable_size(o).unwrap() >= size);
                    t.fill(o, size, k as u8);
                    offs.push((o, size, k as u8));
                }
                t.h.check().unwrap();
            }
        }
        for &(o, size, tag) in &offs {
            assert!(t.verify(o, size, tag));
        }
        // free in an interleaved order
        for i in (0..offs.len()).step_by(2).chain((1..offs.len()).step_by(2)) {
            t.h.free(offs[i].0).unwrap();
            t.h.check().unwrap();
        }
        assert_eq!(t.h.stats().unwrap(), s0);
    }

    #[test]
    fn bad_alignment() {
        let t = T::new(1 << 16);
        for a in [0usize, 3, 24, 8192, usize::MAX, 1 << 40] {
            assert_eq!(code(t.h.malloc(16, a)), "EINVAL", "align {a}");
        }
        t.h.check().unwrap();
    }

    #[test]
    fn realloc_shrink_grow_move() {
        let (t, s0) = T::with_stats(1 << 20);
        let a = t.h.malloc(1000, 16).unwrap();
        t.fill(a, 1000, 7);
        // shrink in place
        let a2 = t.h.realloc(a, 200).unwrap();
        assert_eq!(a2, a);
        assert!(t.verify(a, 200, 7));
        t.h.check().unwrap();
        // grow in place (followed by the big free block)
        let a3 = t.h.realloc(a, 3000).unwrap();
        assert_eq!(a3, a);
        assert!(t.verify(a, 200, 7));
        t.h.check().unwrap();
        // block right after a, so a must move to grow
        let blocker = t.h.malloc(10, 16).unwrap();
        let a4 = t.h.realloc(a, 5000).unwrap();
        assert_ne!(a4, a);
        assert!(t.verify(a4, 200, 7));
        t.h.check().unwrap();
        // the old block is free again: freeing it is a double free or invalid
        assert!(matches!(
            code(t.h.free(a)),
            "ERR_SHM_DOUBLE_FREE" | "EINVAL"
        ));
        // same size: no-op
        assert_eq!(t.h.realloc(a4, 5000).unwrap(), a4);
        // grow in place taking the whole successor (no split)
        let x = t.h.malloc(96, 16).unwrap();
        let y = t.h.malloc(48, 16).unwrap();
        let z = t.h.malloc(16, 16).unwrap();
        t.h.free(y).unwrap();
        t.fill(x, 96, 9);
        assert_eq!(t.h.realloc(x, 96 + 64).unwrap(), x);
        assert!(t.verify(x, 96, 9));
        t.h.check().unwrap();
        // shrink merging with a free successor
        t.h.free(z).unwrap();
        assert_eq!(t.h.realloc(x, 10).unwrap(), x);
        t.h.check().unwrap();
        // aligned block keeps its alignment when it moves
        let al = t.h.malloc(100, 4096).unwrap();
        assert_eq!(al % 4096, 0);
        t.fill(al, 100, 5);
        let pin = t.h.malloc(16, 16).unwrap();
        let _ = pin;
        let mut cur = al;
        for sz in [10_000usize, 50_000, 120_000] {
            cur = t.h.realloc(cur, sz).unwrap();
            assert_eq!(cur % 4096, 0);
            assert!(t.verify(cur, 100, 5));
            t.h.check().unwrap();
        }
        // realloc to an impossible size keeps the block
        assert_eq!(code(t.h.realloc(cur, usize::MAX)), "ENOMEM");
        assert_eq!(code(t.h.realloc(cur, 2 << 20)), "ENOMEM");
        assert!(t.verify(cur, 100, 5));
        for o in [a4, x, blocker, cur, pin] {
            t.h.free(o).unwrap();
        }
        t.h.check().unwrap();
        assert_eq!(t.h.stats().unwrap(), s0);
    }

    #[test]
    fn exhaustion_and_largest_free() {
        let (t, s0) = T::with_stats(1 << 18);
        assert_eq!(code(t.h.malloc(usize::MAX, 16)), "ENOMEM");
        assert_eq!(code(t.h.malloc(usize::MAX - 15, 4096)), "ENOMEM");
        assert_eq!(code(t.h.malloc(1 << 18, 16)), "ENOMEM");
        assert_eq!(code(t.h.malloc(s0.largest_free as usize + 1, 16)), "ENOMEM");
        // exactly the largest free block works
        let big = t.h.malloc(s0.largest_free as usize, 16).unwrap();
        assert_eq!(t.h.stats().unwrap().free, 0);
        assert_eq!(code(t.h.malloc(0, 16)), "ENOMEM");
        t.h.free(big).unwrap();
        assert_eq!(t.h.stats().unwrap(), s0);
        let mut v = Vec::new();
        let mut rng = Rng(99);
        loop {
            match t.h.malloc(1 + rng.below(3000) as usize, 16) {
                Ok(o) => v.push(o),
                Err(HeapError::NoMem) => break,
                Err(e) => panic!("{e}"),
            }
        }
        t.h.check().unwrap();
        let s = t.h.stats().unwrap();
        assert!(s.largest_free < 3000);
        if s.largest_free > 0 {
            let o = t.h.malloc(s.largest_free as usize, 16).unwrap();
            v.push(o);
        }
        for o in v.iter().rev() {
            t.h.free(*o).unwrap();
        }
        t.h.check().unwrap();
        assert_eq!(t.h.stats().unwrap(), s0);
    }

    #[test]
    fn bad_frees() {
        let (t, s0) = T::with_stats(1 << 16);
        let a = t.h.malloc(64, 16).unwrap();
        let b = t.h.malloc(64, 16).unwrap();
        let c = t.h.malloc(64, 16).unwrap();
        assert_eq!(code(t.h.free(a + 16)), "EINVAL"); // interior
        assert_eq!(code(t.h.free(a + 1)), "EINVAL"); // misaligned
        assert_eq!(code(t.h.free(0)), "EINVAL"); // before the heap
        assert_eq!(code(t.h.free(GUARD)), "EINVAL"); // the lock record
        assert_eq!(code(t.h.free(GUARD + 1_000_000)), "EINVAL");
        assert_eq!(code(t.h.free(usize::MAX)), "EINVAL");
        assert_eq!(code(t.h.free(usize::MAX - 15)), "EINVAL");
        assert_eq!(code(t.h.realloc(a + 32, 10)), "EINVAL");
        assert_eq!(code(t.h.usable_size(a - 16)), "EINVAL");
        t.h.free(b).unwrap();
        assert_eq!(code(t.h.free(b)), "ERR_SHM_DOUBLE_FREE"); // free, not merged
        t.h.free(a).unwrap(); // merges b into a
        assert_eq!(code(t.h.free(b)), "ERR_SHM_DOUBLE_FREE"); // dead header
        assert_eq!(code(t.h.free(a)), "ERR_SHM_DOUBLE_FREE");
        assert_eq!(code(t.h.realloc(a, 10)), "ERR_SHM_DOUBLE_FREE");
        t.h.check().unwrap();
        t.h.free(c).unwrap();
        assert_eq!(code(t.h.free(c)), "ERR_SHM_DOUBLE_FREE");
        t.h.check().unwrap();
        assert_eq!(t.h.stats().unwrap(), s0);
        // a directory entry cannot be freed with free()
        let (e, created) = t.h.named_reserve(b"x", 8, 8, b"u64", 0, None).unwrap();
        assert!(created);
        assert_eq!(code(t.h.free(e.entry_off)), "EINVAL");
        t.h.check().unwrap();
    }

    /// Randomized model test with check() after every operation.
    #[test]
    fn model_random() {
        let (t, s0) = T::with_stats(1 << 20);
        let mut rng = Rng(0x1234_5678_9abc_def1);
        let mut live: Vec<(usize, usize, u8)> = Vec::new();
        // Blocks parked in a thread's cache (cache.rs), with their requested size.
        let mut cached: Vec<(usize, usize)> = Vec::new();
        let me = super::cache::CacheOwner { token: 1, start: 2 };
        let n = if cfg!(debug_assertions) {
            12_000
        } else {
            60_000
        };
        for i in 0..n {
            let r = rng.below(100);
            if r >= 90 {
                // The cache: put a live block, take one back, or reclaim them all.
                if r < 95 && !live.is_empty() {
                    let k = rng.below(live.len() as u64) as usize;
                    let (o, size, tag) = live.swap_remove(k);
                    assert!(t.verify(o, size, tag), "block {o} damaged");
                    assert!(t.h.cache_put(o, me));
                    cached.push((o, size));
                } else if r < 99 && !cached.is_empty() {
                    let k = rng.below(cached.len() as u64) as usize;
                    let (o, size) = cached.swap_remove(k);
                    assert!(t.h.cache_take(o));
                    let tag = (i % 251) as u8;
                    t.fill(o, size, tag);
                    live.push((o, size, tag));
                } else {
                    let n = t.h.reclaim_cached(|o| o == me).unwrap();
                    assert_eq!(n as usize, cached.len());
                    cached.clear();
                }
            } else if r < 50 || live.is_empty() {
                let size = match rng.below(10) {
                    0 => 0,
                    1..=6 => rng.below(256) as usize,
                    7 | 8 => rng.below(8192) as usize,
                    _ => rng.below(100_000) as usize,
                };
                let align = if rng.below(4) == 0 {
                    1 << rng.below(13)
                } else {
                    16
                };
                match t.h.malloc(size, align) {
                    Ok(o) => {
                        assert_eq!(o % align.max(16), 0);
                        let tag = (i % 251) as u8;
                        t.fill(o, size, tag);
                        live.push((o, size, tag));
                    }
                    Err(HeapError::NoMem) => {}
                    Err(e) => panic!("{e}"),
                }
            } else if r < 80 {
                let k = rng.below(live.len() as u64) as usize;
                let (o, size, tag) = live.swap_remove(k);
                assert!(t.verify(o, size, tag), "block {o} damaged");
                t.h.free(o).unwrap();
            } else {
                let k = rng.below(live.len() as u64) as usize;
                let (o, size, tag) = live[k];
                let ns = rng.below(20_000) as usize;
                match t.h.realloc(o, ns) {
                    Ok(no) => {
                        assert!(t.verify(no, size.min(ns), tag));
                        t.fill(no, ns, tag);
                        live[k] = (no, ns, tag);
                    }
                    Err(HeapError::NoMem) => assert!(t.verify(o, size, tag)),
                    Err(e) => panic!("{e}"),
                }
            }
            t.h.check().unwrap_or_else(|e| panic!("op {i}: {e}"));
        }
        for (o, size, tag) in live {
            assert!(t.verify(o, size, tag));
            t.h.free(o).unwrap();
        }
        assert_eq!(t.h.stats().unwrap().cached as usize, cached.len());
        t.h.reclaim_cached(|_| true).unwrap();
        t.h.check().unwrap();
        assert_eq!(t.h.stats().unwrap(), s0);
        assert!(t.guards_ok());
    }

    #[test]
    fn threads_share_one_heap() {
        let t = T::new(32 << 20);
        let ops = 40_000;
        t.threads(3, |id, t, lock| {
            let id = id as u8;
            let mut rng = Rng(0x9E37_79B9 ^ ((u64::from(id) + 1) * 0x1000_0001));
            let tag = 0x40 + id;
            let mut live: Vec<(usize, usize)> = Vec::new();
            for _ in 0..ops {
                if live.is_empty() || (live.len() < 300 && rng.below(2) == 0) {
                    let size = 1 + rng.below(16384) as usize;
                    let align = if rng.below(5) == 0 {
                        1 << rng.below(13)
                    } else {
                        16
                    };
                    let r = {
                        let _g = lock.lock().unwrap();
                        t.h.malloc(size, align)
                    };
                    match r {
                        Ok(o) => {
                            assert_eq!(o % align.max(16), 0);
                            t.fill(o, size, tag);
                            live.push((o, size));
                        }
                        Err(HeapError::NoMem) => {}
                        Err(e) => panic!("{e}"),
                    }
                } else {
                    let k = rng.below(live.len() as u64) as usize;
                    let (o, size) = live.swap_remove(k);
                    assert!(t.verify(o, size, tag), "overlap detected");
                    let _g = lock.lock().unwrap();
                    t.h.free(o).unwrap();
                }
            }
            for (o, size) in live {
                assert!(t.verify(o, size, tag), "overlap detected");
                let _g = lock.lock().unwrap();
                t.h.free(o).unwrap();
            }
        });
        assert!(t.guards_ok());
    }

    #[test]
    fn class_mapping() {
        let mut last = (0, 0);
        for s in (48..1 << 20).step_by(16) {
            let c = mapping(s);
            assert!(c >= last);
            last = c;
            let r = round_class(s);
            let (f, sl) = mapping(r);
            // every block in the rounded class is >= s
            let min = if f == 0 {
                u64::from(sl) * 16
            } else {
                (16 + u64::from(sl)) << (f + 3)
            };
            assert!(min >= s || (f, sl) == mapping(s) && min == s, "s={s}");
        }
        assert_eq!(mapping(256), (1, 0));
        assert_eq!(mapping(511), (1, 15));
        assert_eq!(mapping(512), (2, 0));
    }
}
