//! A per-thread table of native objects handed to JavaScript by index: O(1) insert
//! (freed indices are reused), lookup and removal. JavaScript passes the index back to
//! the free-function bindings; an index that is unknown (never issued, or released) is
//! simply not found, so a bogus id is an error, never a crash.

/// Objects of type `T` by index.
#[derive(Debug)]
pub struct SlotTable<T> {
    slots: Vec<Option<T>>,
    free: Vec<u32>,
}

impl<T> Default for SlotTable<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> SlotTable<T> {
    /// An empty table.
    pub const fn new() -> Self {
        SlotTable {
            slots: Vec::new(),
            free: Vec::new(),
        }
    }

    /// Stores `v` and returns its index.
    pub fn insert(&mut self, v: T) -> u32 {
        match self.free.pop() {
            Some(i) => {
                self.slots[i as usize] = Some(v);
                i
            }
            None => {
                self.slots.push(Some(v));
                (self.slots.len() - 1) as u32
            }
        }
    }

    /// The object at `id`, if any.
    pub fn get(&self, id: u32) -> Option<&T> {
        self.slots.get(id as usize).and_then(|s| s.as_ref())
    }

    /// Every object in the table.
    pub fn iter(&self) -> impl Iterator<Item = &T> {
        self.slots.iter().flatten()
    }

    /// Removes the object at `id` (if any) and returns it; its index may be reused.
    pub fn remove(&mut self, id: u32) -> Option<T> {
        let taken = self.slots.get_mut(id as usize)?.take();
        if taken.is_some() {
            self.free.push(id);
        }
        taken
    }
}

#[cfg(test)]
mod tests {
    use super::SlotTable;

    #[test]
    fn indices_are_reused_and_stale_ones_are_not_found() {
        let mut t = SlotTable::new();
        let a = t.insert("a");
        let b = t.insert("b");
        t.remove(a);
        t.remove(a);
        assert_eq!(t.get(a), None);
        assert_eq!(t.insert("c"), a);
        assert_eq!(t.get(b), Some(&"b"));
        assert_eq!(t.get(99), None);
        assert_eq!(t.insert("d"), 2);
        assert_eq!(t.iter().copied().collect::<Vec<_>>(), ["c", "b", "d"]);
    }
}
