//! A small LRU cache of metadata tables (L2 tables, refcount blocks) keyed by their file
//! offset. It only holds entries; loading and write-back (with their ordering rules) are
//! the caller's job.

use std::collections::HashMap;

pub(crate) struct Entry<T> {
    pub offset: u64,
    pub data: T,
    pub dirty: bool,
    last_use: u64,
}

pub(crate) struct TableCache<T> {
    slots: Vec<Entry<T>>,
    index: HashMap<u64, usize>,
    capacity: usize,
    clock: u64,
}

impl<T> TableCache<T> {
    pub fn new(capacity: usize) -> Self {
        TableCache {
            slots: Vec::new(),
            index: HashMap::new(),
            capacity: capacity.max(2),
            clock: 0,
        }
    }

    /// The cached table at `offset`, marked as just used.
    pub fn get(&mut self, offset: u64) -> Option<&mut Entry<T>> {
        let slot = *self.index.get(&offset)?;
        self.clock += 1;
        let entry = &mut self.slots[slot];
        entry.last_use = self.clock;
        Some(entry)
    }

    pub fn is_full(&self) -> bool {
        self.slots.len() >= self.capacity
    }

    /// Remove and return the least recently used entry.
    pub fn pop_lru(&mut self) -> Option<Entry<T>> {
        let slot = (0..self.slots.len()).min_by_key(|&i| self.slots[i].last_use)?;
        let entry = self.slots.swap_remove(slot);
        self.index.remove(&entry.offset);
        if slot < self.slots.len() {
            let moved = self.slots[slot].offset;
            self.index.insert(moved, slot);
        }
        Some(entry)
    }

    /// Insert a table, replacing any cached table at the same offset; the caller must
    /// have made room (see [`Self::is_full`]).
    pub fn insert(&mut self, offset: u64, data: T, dirty: bool) -> &mut Entry<T> {
        self.clock += 1;
        if let Some(&slot) = self.index.get(&offset) {
            let entry = &mut self.slots[slot];
            entry.data = data;
            entry.dirty = dirty;
            entry.last_use = self.clock;
            return entry;
        }
        self.slots.push(Entry {
            offset,
            data,
            dirty,
            last_use: self.clock,
        });
        let slot = self.slots.len() - 1;
        self.index.insert(offset, slot);
        &mut self.slots[slot]
    }

    /// All dirty entries, for write-back; the caller clears `dirty` after writing.
    pub fn dirty_entries(&mut self) -> impl Iterator<Item = &mut Entry<T>> {
        self.slots.iter_mut().filter(|e| e.dirty)
    }

    pub fn has_dirty(&self) -> bool {
        self.slots.iter().any(|e| e.dirty)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evicts_least_recently_used() {
        let mut c = TableCache::new(2);
        c.insert(1, "a", false);
        c.insert(2, "b", true);
        assert!(c.get(1).is_some());
        assert!(c.is_full());
        let out = c.pop_lru().unwrap();
        assert_eq!(out.offset, 2);
        assert!(out.dirty);
        assert!(c.get(2).is_none());
        assert_eq!(c.get(1).unwrap().data, "a");
        c.insert(3, "c", true);
        assert!(c.has_dirty());
        for e in c.dirty_entries() {
            e.dirty = false;
        }
        assert!(!c.has_dirty());
    }
}
