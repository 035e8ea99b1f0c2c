//! Test support for the heap's tests: process-local memory standing in for a
//! mapping, a heap with guard zones, a small PRNG.

use super::*;
use std::alloc::{alloc_zeroed, dealloc, Layout};
use std::sync::Mutex;

pub(super) const GUARD: usize = 4096;
pub(super) const GUARD_BYTE: u8 = 0xA5;

/// Page-aligned process-local memory standing in for a mapping.
pub(super) struct Mem {
    pub(super) ptr: *mut u8,
    pub(super) len: usize,
}

// SAFETY: plain owned allocation; tests synchronise access themselves.
unsafe impl Send for Mem {}
// SAFETY: as above.
unsafe impl Sync for Mem {}

impl Mem {
    pub(super) fn new(len: usize) -> Mem {
        let layout = Layout::from_size_align(len, 4096).unwrap();
        // SAFETY: non-zero size, valid layout.
        let ptr = unsafe { alloc_zeroed(layout) };
        assert!(!ptr.is_null());
        Mem { ptr, len }
    }
    /// Copy of `len` bytes at `off`.
    pub(super) fn read(&self, off: usize, len: usize) -> Vec<u8> {
        assert!(off + len <= self.len);
        let mut v = vec![0u8; len];
        // SAFETY: in bounds of the allocation; the destination is a fresh Vec.
        unsafe { std::ptr::copy_nonoverlapping(self.ptr.add(off), v.as_mut_ptr(), len) };
        v
    }
    /// Overwrite bytes at `off` (no references to the memory are created).
    pub(super) fn write(&self, off: usize, data: &[u8]) {
        assert!(off + data.len() <= self.len);
        // SAFETY: in bounds of the allocation; `data` is process-local.
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), self.ptr.add(off), data.len()) };
    }
    pub(super) fn fill(&self, off: usize, len: usize, v: u8) {
        assert!(off + len <= self.len);
        // SAFETY: in bounds of the allocation.
        unsafe { std::ptr::write_bytes(self.ptr.add(off), v, len) };
    }
}

impl Drop for Mem {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout.
        unsafe { dealloc(self.ptr, Layout::from_size_align(self.len, 4096).unwrap()) };
    }
}

/// Heap of `len` bytes at offset GUARD inside a mapping with guard zones on both sides.
pub(super) struct T {
    pub(super) h: HeapView,
    pub(super) mem: Mem,
    pub(super) len: usize,
}

impl T {
    pub(super) fn new(len: usize) -> T {
        let mem = Mem::new(len + 2 * GUARD);
        mem.fill(0, GUARD, GUARD_BYTE);
        mem.fill(GUARD + len, GUARD, GUARD_BYTE);
        // SAFETY: mem outlives h (field order: h dropped first; mem never moves its buffer).
        let h = unsafe { HeapView::new(mem.ptr, mem.len, GUARD, len) }.unwrap();
        h.format().unwrap();
        h.check().unwrap();
        T { h, mem, len }
    }
    /// A fresh heap of `len` bytes and its stats as formatted (which tests check it
    /// returns to).
    pub(super) fn with_stats(len: usize) -> (T, HeapStats) {
        let t = T::new(len);
        let s0 = t.h.stats().unwrap();
        (t, s0)
    }
    pub(super) fn guards_ok(&self) -> bool {
        // the lock record at the start of the heap must be untouched too (all zero)
        self.mem.read(0, GUARD).iter().all(|&b| b == GUARD_BYTE)
            && self
                .mem
                .read(GUARD + self.len, GUARD)
                .iter()
                .all(|&b| b == GUARD_BYTE)
            && self.mem.read(GUARD, HEAP_LOCK_SIZE).iter().all(|&b| b == 0)
    }
    pub(super) fn fill(&self, off: usize, len: usize, tag: u8) {
        self.mem.fill(off, len, tag);
    }
    pub(super) fn verify(&self, off: usize, len: usize, tag: u8) -> bool {
        self.mem.read(off, len).iter().all(|&b| b == tag)
    }
    /// Runs `body(id, self, lock)` on `n` threads at once (`lock` stands for the heap's
    /// own lock), then checks that the heap is whole and back to the stats it had.
    pub(super) fn threads(&self, n: u32, body: impl Fn(u32, &T, &Mutex<()>) + Sync) {
        let s0 = self.h.stats().unwrap();
        let lock = Mutex::new(());
        std::thread::scope(|s| {
            for id in 0..n {
                let (body, lock) = (&body, &lock);
                s.spawn(move || body(id, self, lock));
            }
        });
        self.h.check().unwrap();
        assert_eq!(self.h.stats().unwrap(), s0);
    }
}

pub(super) struct Rng(pub(super) u64);
impl Rng {
    pub(super) fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    pub(super) fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

pub(super) fn code(r: Result<impl std::fmt::Debug, HeapError>) -> &'static str {
    match r {
        Ok(_) => "ok",
        Err(e) => e.code(),
    }
}
