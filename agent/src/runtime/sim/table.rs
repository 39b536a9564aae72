//! The simulated runtime's tasks by the number in their handle id. Numbers are handed out
//! in increasing order, so the table is one vector sorted by number: a new task goes at
//! the end, a lookup is a binary search, and a removed task leaves a hole until holes are a
//! quarter of the vector, when it is compacted. Hollow agents hold one slot per task (the
//! number and the entry, 48 bytes) and at most half as much again in holes and spare
//! room, where a hash table doubles and is half to seven-eighths full.

use crate::room::{give_back_room, make_room};

/// Tasks by number; `T` is what the runtime keeps for each.
#[derive(Debug)]
pub(super) struct Table<T> {
    /// Sorted by number; `None`: a removed task's hole.
    slots: Vec<(u64, Option<T>)>,
    holes: usize,
}

impl<T> Default for Table<T> {
    fn default() -> Self {
        Table {
            slots: Vec::new(),
            holes: 0,
        }
    }
}

impl<T> Table<T> {
    /// Room made at least, when the vector is full.
    const MIN_GROWTH: usize = 16;

    /// Number of tasks held.
    pub(super) fn len(&self) -> usize {
        self.slots.len() - self.holes
    }

    /// Slots allocated, holes and spare room included.
    #[cfg(test)]
    pub(super) fn capacity(&self) -> usize {
        self.slots.capacity()
    }

    fn find(&self, n: u64) -> Result<usize, usize> {
        self.slots.binary_search_by_key(&n, |(k, _)| *k)
    }

    pub(super) fn get(&self, n: u64) -> Option<&T> {
        self.slots[self.find(n).ok()?].1.as_ref()
    }

    pub(super) fn get_mut(&mut self, n: u64) -> Option<&mut T> {
        let i = self.find(n).ok()?;
        self.slots[i].1.as_mut()
    }

    /// Adds task `n`, replacing one of that number. Numbers come in increasing order, but
    /// two tasks started at once may arrive swapped: one of them then goes in its place.
    pub(super) fn insert(&mut self, n: u64, value: T) {
        make_room(&mut self.slots, Self::MIN_GROWTH);
        match self.slots.last() {
            Some((last, _)) if *last >= n => match self.find(n) {
                Ok(i) => {
                    if self.slots[i].1.is_none() {
                        self.holes -= 1;
                    }
                    self.slots[i].1 = Some(value);
                }
                Err(i) => self.slots.insert(i, (n, Some(value))),
            },
            _ => self.slots.push((n, Some(value))),
        }
    }

    /// Takes task `n` out.
    pub(super) fn remove(&mut self, n: u64) -> Option<T> {
        let i = self.find(n).ok()?;
        let value = self.slots[i].1.take()?;
        self.holes += 1;
        if self.holes * 4 > self.slots.len() {
            self.slots.retain(|(_, v)| v.is_some());
            self.holes = 0;
            give_back_room(&mut self.slots);
        }
        Some(value)
    }

    /// Every task, by number.
    pub(super) fn iter(&self) -> impl Iterator<Item = (u64, &T)> {
        self.slots
            .iter()
            .filter_map(|(n, v)| v.as_ref().map(|v| (*n, v)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tasks_are_found_by_number_whatever_order_they_arrive_in() {
        let mut t = Table::default();
        for n in [1, 2, 4, 3, 5] {
            t.insert(n, n * 10);
        }
        t.insert(4, 41);
        assert_eq!(t.len(), 5);
        assert_eq!(t.get(4), Some(&41));
        assert_eq!(t.get(6), None);
        *t.get_mut(1).unwrap() = 11;
        let all: Vec<_> = t.iter().map(|(n, v)| (n, *v)).collect();
        assert_eq!(all, [(1, 11), (2, 20), (3, 30), (4, 41), (5, 50)]);
        assert_eq!(t.remove(2), Some(20));
        assert_eq!(t.remove(2), None, "removed once");
        assert_eq!(t.get(2), None);
        t.insert(2, 21);
        assert_eq!(t.get(2), Some(&21), "a hole is filled again");
        assert_eq!(t.len(), 5);
    }

    #[test]
    fn holes_are_compacted_and_room_given_back() {
        let mut t = Table::default();
        for n in 0..10_000u64 {
            t.insert(n, n);
        }
        assert!(t.capacity() <= 10_000 + 10_000 / 4 + Table::<u64>::MIN_GROWTH);
        // Every other task goes, then most of the rest.
        for n in (0..10_000).step_by(2) {
            assert_eq!(t.remove(n), Some(n));
        }
        assert!(t.slots.len() <= 5_000 + 5_000 / 4 + 1, "holes compacted");
        for n in (1..9_000).step_by(2) {
            t.remove(n);
        }
        assert_eq!(t.len(), 500);
        assert!(t.capacity() < 1_500, "{} slots kept for 500", t.capacity());
        assert!((9_001..10_000).step_by(2).all(|n| t.get(n) == Some(&n)));
    }
}
