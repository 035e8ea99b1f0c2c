//! The named-object directory: a hash table of entries, each an allocated block with
//! the INTERNAL flag, mapping a name to an object in the heap. Caller holds the heap
//! lock, except for the state word of [`HeapView::named_state`].
//!
//! # Directory entry (payload of an allocated block with INTERNAL set; offset `e` = block + 16)
//!
//! | off | size | field | meaning |
//! |----:|-----:|-------|---------|
//! |  0 | 8 | next | heap-relative offset of the next entry (payload) in this bucket, 0 = end |
//! |  8 | 8 | hash | FNV-1a 64 of the name (`h = 0xcbf29ce484222325; h = (h ^ byte) * 0x100000001b3`) |
//! | 16 | 8 | object | heap-relative offset of the object (an ordinary allocated block payload) |
//! | 24 | 8 | size | object size in bytes as requested |
//! | 32 | 4 | state | 1 = READY; CONSTRUCTING: `token << 1` (the constructor's liveness token) or 0 (unknown); see [`named_constructor`] (futex word; the creator stores 1 and wakes) |
//! | 36 | 4 | name_len | 1..=255 |
//! | 40 | 4 | type_len | 0..=65536 |
//! | 44 | 4 | align | alignment the object was allocated with |
//! | 48 | name_len | name | name bytes |
//! | 48+name_len | type_len | type_desc | opaque type description bytes (JSON) |
//!
//! The bucket of a name is `hash & (dir_buckets - 1)`.

use super::*;

// Directory entry fields (relative to the entry payload).
pub(super) const E_NEXT: u64 = 0;
pub(super) const E_HASH: u64 = 8;
pub(super) const E_OBJ: u64 = 16;
pub(super) const E_SIZE: u64 = 24;
pub(super) const E_STATE: u64 = 32;
pub(super) const E_NAME_LEN: u64 = 36;
pub(super) const E_TYPE_LEN: u64 = 40;
pub(super) const E_ALIGN: u64 = 44;
pub(super) const E_NAME: u64 = 48;

fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// Validated fields of a directory entry (heap-relative).
pub(super) struct Entry {
    pub(super) block: u64,
    pub(super) block_word: u64,
    pub(super) next: u64,
    pub(super) hash: u64,
    pub(super) obj: u64,
    pub(super) size: u64,
    pub(super) name_len: u64,
    pub(super) type_len: u64,
}

impl HeapView {
    /// Validate the directory entry whose payload is at heap-relative `e`.
    pub(super) fn entry(&self, salt: u64, e: u64, verify_hash: bool) -> R<Entry> {
        let l = self.lay;
        if e < l.header_size + HDR {
            return corrupt("directory link out of range", e);
        }
        let block = e - HDR;
        let bw = self.block(salt, block)?;
        if bw & F_FREE != 0 || bw & F_INTERNAL == 0 {
            return corrupt("directory link does not point at a directory entry", e);
        }
        let usable = w_size(bw) - HDR;
        let name_len = u64::from(self.ld32(e + E_NAME_LEN)?);
        let type_len = u64::from(self.ld32(e + E_TYPE_LEN)?);
        if name_len == 0
            || name_len > MAX_NAME_LEN as u64
            || type_len > MAX_TYPE_DESC_LEN as u64
            || E_NAME + name_len + type_len > usable
        {
            return corrupt("directory entry lengths out of range", e);
        }
        let obj = self.ld(e + E_OBJ)?;
        let size = self.ld(e + E_SIZE)?;
        if obj & 15 != 0
            || obj < l.header_size + HDR
            || obj.checked_add(size).is_none_or(|end| end > l.arena_end)
        {
            return corrupt("directory entry object out of range", e);
        }
        let hash = self.ld(e + E_HASH)?;
        if verify_hash && fnv1a(&self.read_bytes(e + E_NAME, name_len)?) != hash {
            return corrupt("directory entry hash does not match its name", e);
        }
        Ok(Entry {
            block,
            block_word: bw,
            next: self.ld(e + E_NEXT)?,
            hash,
            obj,
            size,
            name_len,
            type_len,
        })
    }

    pub(super) fn public_entry(&self, e: u64, ent: &Entry) -> R<NamedEntry> {
        let state = self.ld32(e + E_STATE)?;
        if state == NAMED_READY {
            // pairs with the creator's release store of READY (made without the heap lock)
            std::sync::atomic::fence(Ordering::Acquire);
        }
        Ok(NamedEntry {
            entry_off: self.heap_off + e as usize,
            offset: self.heap_off + ent.obj as usize,
            size: ent.size as usize,
            type_desc: self.read_bytes(e + E_NAME + ent.name_len, ent.type_len)?,
            ready: state == NAMED_READY,
            state,
            name: self.read_bytes(e + E_NAME, ent.name_len)?,
        })
    }

    /// Find `name`; returns (link word offset, entry offset, entry).
    pub(super) fn find_inner(&self, salt: u64, name: &[u8]) -> R<Option<(u64, u64, Entry)>> {
        let hash = fnv1a(name);
        let mut budget = self.walk_budget()?;
        self.find_in_bucket(
            salt,
            hash & (u64::from(self.lay.buckets) - 1),
            &mut budget,
            |e, ent| {
                Ok(ent.hash == hash
                    && ent.name_len == name.len() as u64
                    && self.read_bytes(e + E_NAME, ent.name_len)? == name)
            },
        )
    }

    /// How many entries a walk may visit before calling the directory cyclic.
    fn walk_budget(&self) -> R<u64> {
        Ok(self.hld(H_ALLOCS)?.min(self.arena() / MIN_BLOCK) + 1)
    }

    /// The first entry of `bucket` that `wanted(entry offset, entry)` accepts; returns
    /// (link word offset, entry offset, entry). Each visited entry spends one unit of
    /// `budget` (shared by the walks of one operation), so a cycle ends in `Corrupt`.
    fn find_in_bucket(
        &self,
        salt: u64,
        bucket: u64,
        budget: &mut u64,
        wanted: impl Fn(u64, &Entry) -> R<bool>,
    ) -> R<Option<(u64, u64, Entry)>> {
        let mut link = self.lay.dir + 8 * bucket;
        loop {
            let e = self.ld(link)?;
            if e == 0 {
                return Ok(None);
            }
            spend(budget, "directory chain too long (cycle?)", e)?;
            let ent = self.entry(salt, e, false)?;
            if wanted(e, &ent)? {
                return Ok(Some((link, e, ent)));
            }
            link = e + E_NEXT;
        }
    }

    pub(super) fn check_name(&self, name: &[u8]) -> R<()> {
        if name.is_empty() || name.len() > MAX_NAME_LEN {
            return Err(Fault::Arg("name must be 1 to 255 bytes", name.len() as u64));
        }
        Ok(())
    }

    /// Look up a named object. Read-only, unless a heap left `busy` must be rebuilt first
    /// (its directory cannot be trusted before). Caller holds the heap lock.
    pub fn named_find(&self, name: &[u8]) -> Result<Option<NamedEntry>, HeapError> {
        self.check_name(name).map_err(|f| self.err(f))?;
        self.repaired_read_op(|salt| match self.find_inner(salt, name)? {
            Some((_, e, ent)) => Ok(Some(self.live_entry(salt, e, &ent)?)),
            None => Ok(None),
        })
    }

    /// Find-or-create: returns the existing entry (`false`), or allocates a zeroed
    /// object of `size` bytes at `align` plus an entry for it (`true`). Caller holds the
    /// heap lock.
    ///
    /// - `image` given: the object's first bytes (at most `size`), written before the
    ///   entry is published READY. The object is created and published by this one call:
    ///   nothing of the caller's can come between (a JavaScript `vm` timeout stopped a
    ///   caller that constructed in between, and left the name CONSTRUCTING for good by a
    ///   live thread).
    /// - `None`: the entry is CONSTRUCTING by `constructor` (the caller's liveness token;
    ///   0: none); the caller initialises the object, then stores [`NAMED_READY`] in the
    ///   state word and wakes (as a C peer may, FORMAT.md).
    ///
    /// # Errors
    /// `EINVAL` for a bad name, alignment, a type description over 65536 bytes or an
    /// image longer than the object; `ENOMEM`; `ERR_SHM_CORRUPT`.
    pub fn named_reserve(
        &self,
        name: &[u8],
        size: usize,
        align: usize,
        type_desc: &[u8],
        constructor: u32,
        image: Option<&[u8]>,
    ) -> Result<(NamedEntry, bool), HeapError> {
        self.check_name(name).map_err(|f| self.err(f))?;
        if type_desc.len() > MAX_TYPE_DESC_LEN {
            return Err(self.err(Fault::Arg(
                "type description longer than 65536 bytes",
                type_desc.len() as u64,
            )));
        }
        if let Some(image) = image.filter(|i| i.len() > size) {
            return Err(self.err(Fault::Arg(
                "initial image longer than the object",
                image.len() as u64,
            )));
        }
        let align = norm_align(align).map_err(|f| self.err(f))?;
        self.op(|salt| {
            if let Some((_, e, ent)) = self.find_inner(salt, name)? {
                return Ok((self.live_entry(salt, e, &ent)?, false));
            }
            let obj = self.malloc_inner(salt, size, align, false)?;
            self.zero(obj, size as u64)?;
            if let Some(image) = image {
                self.write_bytes(obj, image)?;
            }
            // Mark it named (one atomic update of its size word; a crash before the
            // entry is published leaks it either way).
            let ob = obj - HDR;
            self.block(salt, ob)?;
            self.bp(ob).update_low(F_NAMED, true)?;
            let esize = E_NAME as usize + name.len() + type_desc.len();
            let e = match self.malloc_inner(salt, esize, 16, true) {
                Ok(e) => e,
                Err(f) => {
                    let ob = obj - HDR;
                    let w = self.block(salt, ob)?;
                    self.free_inner(salt, ob, w)?;
                    return Err(f);
                }
            };
            let hash = fnv1a(name);
            let bucket = self.lay.dir + 8 * (hash & (u64::from(self.lay.buckets) - 1));
            self.st(e + E_NEXT, self.ld(bucket)?)?;
            self.st(e + E_HASH, hash)?;
            self.st(e + E_OBJ, obj)?;
            self.st(e + E_SIZE, size as u64)?;
            let state = match (image, constructor) {
                (Some(_), _) => NAMED_READY,
                (None, 0) => NAMED_CONSTRUCTING,
                (None, token) => named_constructing_by(token),
            };
            self.st32(e + E_STATE, state)?;
            self.st32(e + E_NAME_LEN, name.len() as u32)?;
            self.st32(e + E_TYPE_LEN, type_desc.len() as u32)?;
            self.st32(e + E_ALIGN, align as u32)?;
            self.write_bytes(e + E_NAME, name)?;
            self.write_bytes(e + E_NAME + name.len() as u64, type_desc)?;
            self.commit();
            self.st(bucket, e)?; // publish
            self.commit();
            self.add(H_DIR_COUNT, 1)?;
            let ent = self.entry(salt, e, false)?;
            Ok((self.public_entry(e, &ent)?, true))
        })
    }

    /// The state word of the entry at mapping-relative `entry_off` (0 CONSTRUCTING,
    /// 1 READY). Read-only; the returned pointer stays valid while the mapping is.
    pub fn named_state(&self, entry_off: usize) -> Result<*const AtomicU32, HeapError> {
        let r = self.salt().and_then(|salt| {
            let e = (entry_off as u64)
                .checked_sub(self.heap_off as u64)
                .filter(|&e| e < self.heap_len as u64)
                .ok_or(Fault::BadOff(
                    "offset is outside the heap",
                    entry_off as u64,
                ))?;
            if e & 15 != 0 || e < self.lay.header_size + HDR {
                return Err(Fault::BadOff(
                    "offset is not a directory entry",
                    entry_off as u64,
                ));
            }
            match self.entry(salt, e, false) {
                Ok(_) => Ok(self.at(e + E_STATE) as *const AtomicU32),
                Err(_) => Err(Fault::BadOff(
                    "offset is not a directory entry",
                    entry_off as u64,
                )),
            }
        });
        r.map_err(|f| self.err(f))
    }

    /// Unlink and free the directory entry for `name` (the object itself is not freed).
    /// Returns whether it existed. Caller holds the heap lock.
    pub fn named_remove(&self, name: &[u8]) -> Result<bool, HeapError> {
        self.check_name(name).map_err(|f| self.err(f))?;
        self.op(|salt| match self.find_inner(salt, name)? {
            None => Ok(false),
            Some((link, _, ent)) => {
                self.unlink_entry(salt, link, &ent)?;
                // The object is no longer named: `free` need not look for its entry.
                let ob = ent.obj - HDR;
                if let Ok(ow) = self.block(salt, ob) {
                    if ow & (F_FREE | F_INTERNAL) == 0 && ow & F_NAMED != 0 {
                        self.bp(ob).update_low(F_NAMED, false)?;
                    }
                }
                Ok(true)
            }
        })
    }

    /// Removes the entry of `name` at mapping-relative `entry_off` together with its
    /// object, if its state word still reads `state` (a CONSTRUCTING state whose
    /// constructor died: the object was never published, so it never existed for anyone).
    /// Returns whether it did. Caller holds the heap lock.
    ///
    /// # Errors
    /// As the other directory operations (`Corrupt` for a damaged directory).
    pub fn named_abandon(
        &self,
        name: &[u8],
        entry_off: usize,
        state: u32,
    ) -> Result<bool, HeapError> {
        self.check_name(name).map_err(|f| self.err(f))?;
        self.op(|salt| match self.find_inner(salt, name)? {
            Some((link, e, ent))
                if self.heap_off + e as usize == entry_off && self.ld32(e + E_STATE)? == state =>
            {
                self.unlink_entry(salt, link, &ent)?;
                let ob = ent.obj - HDR;
                let w = self.block(salt, ob)?;
                if w & (F_FREE | F_INTERNAL | F_CACHED) != 0 {
                    return corrupt("a named object's block is not an allocation", ob);
                }
                if w & F_NAMED != 0 {
                    self.bp(ob).update_low(F_NAMED, false)?;
                }
                let w = self.block(salt, ob)?;
                self.free_inner(salt, ob, w)?;
                Ok(true)
            }
            _ => Ok(false),
        })
    }

    /// Takes the entry `ent`, linked from the word at `link`, out of the directory and
    /// frees its block. Caller holds the heap lock inside an operation.
    fn unlink_entry(&self, salt: u64, link: u64, ent: &Entry) -> R<()> {
        self.st(link, ent.next)?; // unlink: one store
        self.commit();
        self.sub(H_DIR_COUNT, 1)?;
        self.free_inner(salt, ent.block, ent.block_word)
    }

    /// Removes the directory entry of the object at heap-relative payload offset `obj`
    /// (being freed) through `hint`, the entry's mapping-relative offset as reported when
    /// the object was named or found: `true` if that is its entry, which is then unlinked
    /// from its bucket (a walk of one chain). `false` (nothing changed) for no hint, or
    /// one that does not lead to a valid entry of `obj`. Caller holds the heap lock
    /// inside an operation.
    pub(super) fn unname_hinted(&self, salt: u64, obj: u64, hint: Option<usize>) -> R<bool> {
        let Some(e) = hint.and_then(|h| (h as u64).checked_sub(self.heap_off as u64)) else {
            return Ok(false);
        };
        if e >= self.lay.arena_end {
            return Ok(false);
        }
        // A stale hint may name any bytes now: only a valid entry of this object counts.
        let Ok(ent) = self.entry(salt, e, true) else {
            return Ok(false);
        };
        if ent.obj != obj {
            return Ok(false);
        }
        let mut budget = self.walk_budget()?;
        let bucket = ent.hash & (u64::from(self.lay.buckets) - 1);
        match self.find_in_bucket(salt, bucket, &mut budget, |at, _| Ok(at == e))? {
            Some((link, _, ent)) => {
                self.unlink_entry(salt, link, &ent)?;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// Removes the directory entry of the object at heap-relative payload offset `obj`
    /// (being freed), if there is one: a walk of the whole directory, made only for
    /// objects flagged NAMED. Caller holds the heap lock inside an operation.
    pub(super) fn unname_object(&self, salt: u64, obj: u64) -> R<()> {
        let mut budget = self.walk_budget()?;
        for bucket in 0..u64::from(self.lay.buckets) {
            if let Some((link, _, ent)) =
                self.find_in_bucket(salt, bucket, &mut budget, |_, ent| Ok(ent.obj == obj))?
            {
                return self.unlink_entry(salt, link, &ent);
            }
        }
        Ok(())
    }

    /// The public form of a found entry whose object is still an ordinary allocated
    /// block holding its `size` bytes. An entry whose object was freed (by an older
    /// version of shmutils, or a C peer, that did not remove the name) points at memory
    /// someone else may own by now: `Corrupt` rather than hand it out.
    fn live_entry(&self, salt: u64, e: u64, ent: &Entry) -> R<NamedEntry> {
        let ob = ent.obj - HDR;
        match self.block(salt, ob) {
            Ok(w)
                if w & (F_FREE | F_INTERNAL | F_CACHED) == 0
                    && ob + w_size(w) >= ent.obj + ent.size =>
            {
                self.public_entry(e, ent)
            }
            _ => corrupt(
                "named object was freed while still named (its directory entry is dangling)",
                e + E_OBJ,
            ),
        }
    }

    /// All directory entries (bucket order). Read-only. Caller holds the heap lock.
    pub fn named_list(&self) -> Result<Vec<NamedEntry>, HeapError> {
        self.read_op(|salt| {
            let l = self.lay;
            let mut out = Vec::new();
            let mut seen = HashSet::new();
            let limit = self.hld(H_ALLOCS)?.min(self.arena() / MIN_BLOCK);
            for i in 0..u64::from(l.buckets) {
                let mut e = self.ld(l.dir + 8 * i)?;
                while e != 0 {
                    if !try_insert(&mut seen, e)? || seen.len() as u64 > limit {
                        return corrupt("directory entry reachable twice (cycle?)", e);
                    }
                    let ent = self.entry(salt, e, false)?;
                    try_push(&mut out, self.public_entry(e, &ent)?)?;
                    e = ent.next;
                }
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
    fn a_named_free_takes_the_entry_its_hint_names_and_walks_for_any_other_hint() {
        let t = T::new(1 << 20);
        let names: Vec<Vec<u8>> = (0..40).map(|i| format!("n{i}").into_bytes()).collect();
        let made: Vec<_> = names
            .iter()
            .map(|n| t.h.named_reserve(n, 8, 8, b"t", 0, None).unwrap().0)
            .collect();
        // Freeing made[1..=5]: the right hint; another object's entry; an offset that is no
        // entry; one past everything; none at all.
        let hints = [
            Some(made[1].entry_off),
            Some(made[7].entry_off),
            Some(made[8].offset),
            Some(usize::MAX),
            None,
        ];
        for (k, hint) in hints.into_iter().enumerate() {
            t.h.free_named(made[k + 1].offset, hint).unwrap();
            assert_eq!(t.h.named_find(&names[k + 1]).unwrap(), None, "hint {k}");
            t.h.check().unwrap();
        }
        // Every other name is still there, with its object.
        for (i, n) in names
            .iter()
            .enumerate()
            .filter(|(i, _)| !(1..=5).contains(i))
        {
            assert_eq!(t.h.named_find(n).unwrap().unwrap().offset, made[i].offset);
        }
    }

    #[test]
    fn directory() {
        let (t, s0) = T::with_stats(1 << 20);
        assert_eq!(t.h.named_find(b"a").unwrap(), None);
        assert_eq!(code(t.h.named_find(b"")), "EINVAL");
        assert_eq!(code(t.h.named_find(&[b'x'; 256])), "EINVAL");
        assert_eq!(code(t.h.named_reserve(b"a", 8, 3, b"", 0, None)), "EINVAL");
        assert_eq!(
            code(t.h.named_reserve(b"a", 8, 8, &vec![0; MAX_TYPE_DESC_LEN + 1], 0, None)),
            "EINVAL"
        );
        assert_eq!(
            code(t.h.named_reserve(b"a", usize::MAX, 8, b"", 0, None)),
            "ENOMEM"
        );
        // garbage in the object's future place must be zeroed
        let g = t.h.malloc(4000, 16).unwrap();
        t.fill(g, 4000, 0xEE);
        t.h.free(g).unwrap();
        let (e, created) =
            t.h.named_reserve(b"counter", 4000, 64, b"{\"t\":\"u64\"}", 0, None)
                .unwrap();
        assert!(created);
        assert!(!e.ready);
        assert_eq!(e.offset % 64, 0);
        assert_eq!(e.size, 4000);
        assert_eq!(e.name, b"counter");
        assert_eq!(e.type_desc, b"{\"t\":\"u64\"}");
        assert!(t.verify(e.offset, 4000, 0));
        let st = t.h.named_state(e.entry_off).unwrap();
        // SAFETY: pointer into the live test mapping.
        unsafe { (*st).store(NAMED_READY, Ordering::Release) };
        let (e2, created2) =
            t.h.named_reserve(b"counter", 1, 16, b"other", 0, None)
                .unwrap();
        assert!(!created2);
        assert!(e2.ready);
        assert_eq!(e2.offset, e.offset);
        assert_eq!(e2.type_desc, e.type_desc);
        assert_eq!(t.h.named_find(b"counter").unwrap().unwrap(), e2);
        assert_eq!(code(t.h.named_state(e.offset)), "EINVAL");
        assert_eq!(code(t.h.named_state(e.entry_off + 16)), "EINVAL");
        assert_eq!(code(t.h.named_state(1)), "EINVAL");
        assert_eq!(code(t.h.named_state(usize::MAX)), "EINVAL");
        // many names, long names, big type descriptions
        let mut names = Vec::new();
        for i in 0..300 {
            let name = format!("obj-{i}-{}", "z".repeat(i % 240)).into_bytes();
            let td = vec![b'j'; (i * 37) % 3000];
            let (e, c) = t.h.named_reserve(&name, i + 1, 16, &td, 0, None).unwrap();
            assert!(c);
            assert_eq!(e.type_desc, td);
            names.push((name, e));
        }
        let (big, _) =
            t.h.named_reserve(&[b'n'; 255], 8, 8, &vec![7u8; MAX_TYPE_DESC_LEN], 0, None)
                .unwrap();
        assert_eq!(big.type_desc.len(), MAX_TYPE_DESC_LEN);
        t.h.check().unwrap();
        assert_eq!(t.h.named_list().unwrap().len(), 302);
        for (name, e) in &names {
            assert_eq!(&t.h.named_find(name).unwrap().unwrap(), e);
        }
        // remove everything; objects are freed separately
        for (name, e) in &names {
            assert!(t.h.named_remove(name).unwrap());
            assert!(!t.h.named_remove(name).unwrap());
            assert_eq!(t.h.named_find(name).unwrap(), None);
            t.h.free(e.offset).unwrap();
        }
        assert!(t.h.named_remove(&[b'n'; 255]).unwrap());
        t.h.free(big.offset).unwrap();
        assert!(t.h.named_remove(b"counter").unwrap());
        t.h.free(e.offset).unwrap();
        assert!(t.h.named_list().unwrap().is_empty());
        t.h.check().unwrap();
        assert_eq!(t.h.stats().unwrap(), s0);
    }

    /// The size word of the block whose payload is at mapping-relative `off`.
    fn word_of(t: &T, off: usize) -> u64 {
        u64::from_le_bytes(t.mem.read(off - HDR as usize, 8).try_into().unwrap())
    }

    #[test]
    fn freeing_a_named_object_removes_its_name() {
        let (t, s0) = T::with_stats(1 << 20);
        let (a, _) = t.h.named_reserve(b"a", 100, 16, b"t", 0, None).unwrap();
        let (b, _) = t.h.named_reserve(b"b", 100, 64, b"t", 0, None).unwrap();
        assert_ne!(word_of(&t, a.offset) & F_NAMED, 0);
        assert_eq!(
            code(t.h.realloc(a.offset, 500)),
            "EINVAL",
            "would leave the entry behind"
        );
        t.h.free(a.offset).unwrap();
        assert_eq!(t.h.named_find(b"a").unwrap(), None);
        assert_eq!(t.h.named_find(b"b").unwrap().unwrap().offset, b.offset);
        t.h.check().unwrap();
        // unname clears the flag: the object is then an ordinary allocation
        assert!(t.h.named_remove(b"b").unwrap());
        assert_eq!(word_of(&t, b.offset) & F_NAMED, 0);
        let b2 = t.h.realloc(b.offset, 500).unwrap();
        t.h.free(b2).unwrap();
        t.h.check().unwrap();
        assert_eq!(t.h.stats().unwrap(), s0, "entries and objects all returned");
    }

    #[test]
    fn an_object_made_with_its_image_is_published_by_the_same_call() {
        let t = T::new(1 << 20);
        let (e, created) =
            t.h.named_reserve(b"img", 8, 16, b"t", 7, Some(&[1, 2, 3]))
                .unwrap();
        assert!(created);
        assert!(e.ready, "READY at once, whatever the constructor token");
        assert_eq!(
            t.mem.read(e.offset, 8),
            [1, 2, 3, 0, 0, 0, 0, 0],
            "the image, then zeroes"
        );
        let (again, created) =
            t.h.named_reserve(b"img", 8, 16, b"t", 9, Some(&[5]))
                .unwrap();
        assert!(!created);
        assert_eq!(again.offset, e.offset);
        assert_eq!(t.mem.read(e.offset, 1), [1], "found, not written again");
        assert_eq!(
            code(t.h.named_reserve(b"long", 2, 16, b"t", 0, Some(&[0; 3]))),
            "EINVAL",
            "an image longer than the object"
        );
        assert_eq!(
            t.h.named_find(b"long").unwrap(),
            None,
            "nothing made for it"
        );
        t.h.check().unwrap();
    }

    #[test]
    fn a_dangling_entry_is_corruption() {
        // What an older version (or a C peer) did: free a named object, keeping its name.
        let t = T::new(1 << 20);
        let (a, _) = t.h.named_reserve(b"a", 100, 16, b"t", 0, None).unwrap();
        let w = word_of(&t, a.offset);
        t.mem
            .write(a.offset - HDR as usize, &(w & !F_NAMED).to_le_bytes());
        t.h.check().unwrap();
        t.h.free(a.offset).unwrap();
        assert_eq!(code(t.h.check()), "ERR_SHM_CORRUPT");
        assert_eq!(code(t.h.named_find(b"a")), "ERR_SHM_CORRUPT");
        assert_eq!(
            code(t.h.named_reserve(b"a", 100, 16, b"t", 0, None)),
            "ERR_SHM_CORRUPT"
        );
        // Allocated again at another size: still not the entry's object.
        let x = t.h.malloc(16, 16).unwrap();
        assert_eq!(x, a.offset, "the freed block is reused first");
        assert_eq!(
            code(t.h.named_find(b"a")),
            "ERR_SHM_CORRUPT",
            "16 bytes cannot hold 100"
        );
        assert!(
            t.h.named_remove(b"a").unwrap(),
            "the name can still be removed"
        );
        t.h.check().unwrap();
    }
    #[test]
    fn an_entry_whose_constructor_died_is_taken_back_whole() {
        let t = T::new(1 << 20);
        let s0 = t.h.stats().unwrap();
        let (e, created) = t.h.named_reserve(b"cfg", 100, 16, b"t", 7, None).unwrap();
        assert!(created);
        assert_eq!(e.state, named_constructing_by(7));
        assert_eq!(named_constructor(e.state), Ok(Some(7)));
        t.h.check().unwrap();
        // Only the reservation it saw: another state, another entry, or another name.
        assert!(!t
            .h
            .named_abandon(b"cfg", e.entry_off, named_constructing_by(8))
            .unwrap());
        assert!(!t
            .h
            .named_abandon(b"cfg", e.entry_off + 16, e.state)
            .unwrap());
        assert!(!t.h.named_abandon(b"other", e.entry_off, e.state).unwrap());
        assert!(t.h.named_abandon(b"cfg", e.entry_off, e.state).unwrap());
        assert_eq!(t.h.named_find(b"cfg").unwrap(), None);
        t.h.check().unwrap();
        assert_eq!(
            t.h.stats().unwrap(),
            s0,
            "the entry and the object were freed"
        );
        // Not twice.
        assert!(!t.h.named_abandon(b"cfg", e.entry_off, e.state).unwrap());
        // States that are neither 0, 1 nor a token are corruption, for check() too.
        for bad in [3u32, 0x8000_0000, u32::MAX] {
            assert_eq!(named_constructor(bad), Err(()));
        }
        let (e, _) = t.h.named_reserve(b"cfg", 8, 16, b"t", 0, None).unwrap();
        assert_eq!(e.state, NAMED_CONSTRUCTING);
        t.mem
            .write(e.entry_off + E_STATE as usize, &3u32.to_le_bytes());
        assert_eq!(code(t.h.check()), "ERR_SHM_CORRUPT");
    }
    #[test]
    fn a_lookup_rebuilds_a_heap_left_busy_first() {
        // What a peer does when it recovers the heap lock from a dead holder
        // (docs/FORMAT.md §4.3): busy = 1, then the next shmutils operation rebuilds.
        let t = T::new(1 << 20);
        let (e, _) = t.h.named_reserve(b"x", 8, 16, b"t", 0, None).unwrap();
        t.h.hst32(H_BUSY, 1).unwrap();
        assert_eq!(code(t.h.check()), "ERR_SHM_CORRUPT", "check() reports it");
        let found = t.h.named_find(b"x").unwrap().unwrap();
        assert_eq!(found.offset, e.offset);
        assert_eq!(t.h.hld32(H_BUSY).unwrap(), 0, "rebuilt, and busy cleared");
        t.h.check().unwrap();
        t.h.hst32(H_BUSY, 1).unwrap();
        t.h.stats().unwrap();
        assert_eq!(t.h.hld32(H_BUSY).unwrap(), 0);
    }
}
