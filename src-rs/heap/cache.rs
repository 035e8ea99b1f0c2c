//! Per-thread caches of freed small blocks: how a thread frees and re-allocates without
//! the heap lock and without a native call (`lib/heap-cache.ts` runs the protocol in
//! JavaScript), what the allocator does about such blocks, and how the caches of threads
//! that died are reclaimed.
//!
//! # The protocol
//!
//! A cached block is an **allocated** block (in the chain, in `used` and `allocations`)
//! whose size word has [`F_CACHED`] (bit 63) set. Its payload holds the identity of the
//! thread that cached it:
//!
//! | payload off | size | field | meaning |
//! |------------:|-----:|-------|---------|
//! | 0 | 4 | `token` | the owner thread's liveness token for the segment (`sync/liveness.rs`), as in lock words |
//! | 4 | 8 | `start` | the owner thread's start time, as two u32 halves, low first (informational; macOS checks pid reuse with it) |
//! | 12 | 4 | reserved | 0 |
//!
//! - **Put** (a thread frees block `b` of size `s`): validate the offset exactly as
//!   `free` does (16-aligned, in the arena, the check word of `b`, allocated, neither
//!   `INTERNAL` nor `NAMED` nor `CACHED`); write the identity; then compare-and-swap the
//!   high half of the size word (bytes 4..8 on little-endian targets) from 0 to
//!   `0x8000_0000`. Only blocks below 4 GiB have a high half of 0, and the thread caches
//!   only small ones anyway. If the swap fails, free normally.
//! - **Take** (the same thread allocates `s` bytes): pick a block it cached; re-read its
//!   check word (it must still be the one seen at put, so the offset is still that block's
//!   start); the high half must still be `0x8000_0000`: store 0 there (a plain load and a
//!   plain store). The block is the thread's allocation again. A high half of 0: the
//!   block was reclaimed: forget it. No compare-and-swap is needed, because nobody but
//!   the owner writes that half while the owner lives (below).
//! - **Flush** (mapping closed, process exit, `heap.trim()`, `ENOMEM`): take each block
//!   back, then free it under the heap lock.
//!
//! The writes of one 32-bit half are the only writes the protocol makes to the header,
//! and they happen without the heap lock. So the allocator never stores a whole size word of an
//! allocated block: its flag changes (`PREV_FREE` when a neighbour is freed or
//! allocated, `NAMED`) are atomic read-modify-writes of the low half
//! ([`BP::update_low`]), and neither side loses the other's bit. `free` and `realloc` of a
//! cached block report a double free (its user freed it); `stats` counts cached blocks as
//! free (`cached`, `cached_bytes`); `check` accepts `CACHED` on ordinary allocations only.
//!
//! # Reclaiming
//!
//! Blocks cached by a thread that died (its process was killed, or a worker ended without
//! closing the mapping) would stay allocated forever. [`HeapView::reclaim_cached`], under
//! the heap lock, frees every cached block whose owner the caller judges dead (its token
//! is held by nobody: the kernel answers, across PID namespaces): it swaps
//! `CACHED` off and frees it. The owner's take is a plain load and store, so the two must
//! never race: they cannot, because a thread holds its token from before it caches a
//! block until after it has handed its cached blocks back (closing its last mapping of
//! the segment flushes first; the native slot of a heap with a cache holds the token
//! until its `Heap` object, collected, has flushed through it: `heapToken`), and a held
//! token is never judged dead. That is the same
//! judgment that lets a lock be taken from a dead holder: if it could be wrong, locks
//! would already admit two holders. (Caching keeps its compare-and-swap: it orders the
//! owner fields before the bit for a reclaimer reading them, and refuses a block two
//! threads free at once.)

use super::*;

/// `F_CACHED` within the high half of the size word.
const CACHED_HI: u32 = (F_CACHED >> 32) as u32;

/// Who cached a block (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CacheOwner {
    /// The thread's liveness token for the segment.
    pub token: u32,
    /// The thread's start time (0: unknown).
    pub start: u64,
}

impl HeapView {
    /// The identity stored in cached block `b`.
    fn cache_owner(&self, b: u64) -> R<CacheOwner> {
        let p = b + HDR;
        Ok(CacheOwner {
            token: self.ld32(p)?,
            start: u64::from(self.ld32(p + 4)?) | u64::from(self.ld32(p + 8)?) << 32,
        })
    }

    /// Number and bytes of the cached blocks (a walk of the chain; no writes).
    pub(super) fn cached_totals(&self, salt: u64) -> R<(u64, u64)> {
        let (mut n, mut bytes) = (0, 0);
        let mut b = self.lay.header_size;
        while b < self.lay.arena_end {
            let w = self.block(salt, b)?;
            if w & F_CACHED != 0 {
                n += 1;
                bytes += w_size(w);
            }
            b += w_size(w);
        }
        Ok((n, bytes))
    }

    /// Frees every cached block whose owner `dead` says is gone; returns how many. Caller
    /// holds the heap lock.
    ///
    /// # Errors
    /// `Corrupt` for a broken chain (nothing is freed then).
    pub fn reclaim_cached(
        &self,
        mut dead: impl FnMut(CacheOwner) -> bool,
    ) -> Result<u64, HeapError> {
        self.op(|salt| {
            // Pass 1, no writes: the cached blocks of dead owners.
            let mut victims = Vec::new();
            let mut b = self.lay.header_size;
            while b < self.lay.arena_end {
                let w = self.block(salt, b)?;
                if w & F_CACHED != 0 {
                    // Acquire (with the relaxed load in `block`): the identity the owner
                    // wrote before its swap set CACHED is the one read here.
                    std::sync::atomic::fence(Ordering::Acquire);
                    if dead(self.cache_owner(b)?) {
                        try_push(&mut victims, b)?;
                    }
                }
                b += w_size(w);
            }
            // Pass 2: free them. Freeing only merges free blocks, so every victim, an
            // allocated block, is still a block start.
            let mut n = 0;
            for b in victims {
                let hi = self.bp(b).high();
                let h = hi.load(Ordering::Relaxed);
                // The same swap as a take: if it fails, the owner took it back.
                if h & CACHED_HI == 0
                    || hi
                        .compare_exchange(h, h & !CACHED_HI, Ordering::Acquire, Ordering::Relaxed)
                        .is_err()
                {
                    continue;
                }
                let w = self.block(salt, b)?;
                self.free_inner(salt, b, w)?;
                n += 1;
            }
            Ok(n)
        })
    }

    /// The put of the protocol, as `lib/heap-cache.ts` runs it (tests drive the
    /// allocator with it).
    #[cfg(test)]
    pub(super) fn cache_put(&self, off: usize, owner: CacheOwner) -> bool {
        let Ok(salt) = self.salt() else { return false };
        let Ok((b, w)) = self.user_block(salt, off) else {
            return false;
        };
        if w & F_NAMED != 0 {
            return false;
        }
        let p = b + HDR;
        let stored = self.st32(p, owner.token).is_ok()
            && self.st32(p + 4, owner.start as u32).is_ok()
            && self.st32(p + 8, (owner.start >> 32) as u32).is_ok()
            && self.st32(p + 12, 0).is_ok();
        stored
            && self
                .bp(b)
                .high()
                .compare_exchange(0, CACHED_HI, Ordering::SeqCst, Ordering::Relaxed)
                .is_ok()
    }

    /// The take of the protocol (see [`cache_put`](Self::cache_put)): `off` must be a
    /// block this owner put.
    #[cfg(test)]
    pub(super) fn cache_take(&self, off: usize) -> bool {
        let b = (off - self.heap_off) as u64 - HDR;
        self.bp(b)
            .high()
            .compare_exchange(CACHED_HI, 0, Ordering::SeqCst, Ordering::Relaxed)
            .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::heap::testing::*;

    const ME: CacheOwner = CacheOwner {
        token: 7,
        start: 0x1_0000_0002,
    };

    #[test]
    fn put_take_stats_and_double_free() {
        let (t, s0) = T::with_stats(1 << 16);
        let a = t.h.malloc(40, 16).unwrap();
        let b = t.h.malloc(40, 16).unwrap();
        assert!(t.h.cache_put(a, ME));
        assert!(!t.h.cache_put(a, ME), "already cached");
        let s = t.h.stats().unwrap();
        assert_eq!((s.cached, s.cached_bytes), (1, 64));
        assert_eq!(s.allocations, 1, "a cached block counts as free");
        assert_eq!(s.used, 64);
        t.h.check().unwrap();
        assert_eq!(code(t.h.free(a)), "ERR_SHM_DOUBLE_FREE");
        assert_eq!(code(t.h.realloc(a, 10)), "ERR_SHM_DOUBLE_FREE");
        assert_eq!(code(t.h.usable_size(a)), "ERR_SHM_DOUBLE_FREE");
        // Neighbours change around it: its bit survives, theirs are right.
        t.h.free(b).unwrap();
        t.h.check().unwrap();
        assert!(t.h.cache_take(a));
        assert!(!t.h.cache_take(a), "taken once");
        t.h.free(a).unwrap();
        t.h.check().unwrap();
        assert_eq!(t.h.stats().unwrap(), s0);
        // Directory entries and named objects are never cached.
        let (e, _) = t.h.named_reserve(b"n", 16, 16, b"t", 0, None).unwrap();
        assert!(!t.h.cache_put(e.offset, ME));
        assert!(!t.h.cache_put(e.entry_off, ME));
        assert!(t.guards_ok());
    }

    #[test]
    fn reclaim_frees_only_dead_owners_blocks() {
        let (t, s0) = T::with_stats(1 << 16);
        let other = CacheOwner { token: 9, start: 3 };
        let mine: Vec<_> = (0..5).map(|_| t.h.malloc(100, 16).unwrap()).collect();
        let theirs: Vec<_> = (0..5).map(|_| t.h.malloc(100, 16).unwrap()).collect();
        for &o in &mine {
            assert!(t.h.cache_put(o, ME));
        }
        for &o in &theirs {
            assert!(t.h.cache_put(o, other));
        }
        let mut asked = Vec::new();
        let n =
            t.h.reclaim_cached(|o| {
                asked.push(o);
                o == other
            })
            .unwrap();
        assert_eq!(n, 5);
        assert_eq!(asked.len(), 10);
        t.h.check().unwrap();
        assert_eq!(t.h.stats().unwrap().cached, 5);
        assert!(theirs.iter().all(|&o| !t.h.cache_take(o)), "reclaimed");
        for &o in &mine {
            assert!(t.h.cache_take(o));
            t.h.free(o).unwrap();
        }
        assert_eq!(t.h.stats().unwrap(), s0);
    }

    /// Threads cache and take blocks without the lock while others allocate and free
    /// their neighbours under it: no CACHED bit and no PREV_FREE bit is ever lost.
    #[test]
    fn cache_swaps_race_neighbour_updates() {
        let t = T::new(1 << 20);
        let rounds = if cfg!(debug_assertions) {
            4_000
        } else {
            40_000
        };
        t.threads(4, |id, t, lock| {
            let me = CacheOwner {
                token: 100 + id,
                start: u64::from(id),
            };
            let mut rng = Rng(0xC0FFEE ^ u64::from(id + 1) << 20);
            let mut cached: Vec<usize> = Vec::new();
            let mut live: Vec<usize> = Vec::new();
            for _ in 0..rounds {
                match rng.below(4) {
                    0 => {
                        let o = lock.lock().unwrap();
                        let r = t.h.malloc(16 + rng.below(100) as usize, 16);
                        drop(o);
                        if let Ok(o) = r {
                            live.push(o);
                        }
                    }
                    1 if !live.is_empty() => {
                        let o = live.swap_remove(rng.below(live.len() as u64) as usize);
                        if !t.h.cache_put(o, me) {
                            let _g = lock.lock().unwrap();
                            t.h.free(o).unwrap();
                        } else {
                            cached.push(o);
                        }
                    }
                    2 if !cached.is_empty() => {
                        let o = cached.pop().unwrap();
                        assert!(t.h.cache_take(o), "nobody reclaims here");
                        live.push(o);
                    }
                    _ if !live.is_empty() => {
                        let o = live.swap_remove(rng.below(live.len() as u64) as usize);
                        let _g = lock.lock().unwrap();
                        t.h.free(o).unwrap();
                    }
                    _ => {}
                }
            }
            for o in cached {
                assert!(t.h.cache_take(o));
                live.push(o);
            }
            let _g = lock.lock().unwrap();
            for o in live {
                t.h.free(o).unwrap();
            }
        });
    }
}
