//! The map from trajectory id to slot. After an open from a checkpoint whose trajectories
//! have strictly increasing ids (the usual case: ids are assigned in commit order; the
//! checkpoint's counts record it), the
//! map is the checkpoint's own trajectory array, searched by binary search in place, plus
//! a hash map of the ids given slots since; no per-trajectory work or memory at open.
//! Otherwise it is a hash map of every id.

use std::collections::HashMap;

use crate::checkpoint::TrajRec;
use crate::storage::mmap::SharedArray;

/// Trajectory id → slot (the trajectory's position in the state's trajectory array).
#[derive(Default)]
pub(crate) struct IdMap {
    /// The checkpoint's trajectory records, slot `i` at position `i`, ids strictly
    /// increasing; empty when there is none.
    base: SharedArray<TrajRec>,
    /// Ids given a slot after the base was made (including ids reused after a deletion,
    /// which shadow the base's entry).
    extra: HashMap<u64, u32>,
}

impl IdMap {
    /// A map of `base`'s ids to their positions. `None` when the ids are not strictly
    /// increasing (the caller then builds the map with [`IdMap::insert`]).
    #[cfg(test)]
    pub(crate) fn over_sorted(base: SharedArray<TrajRec>) -> Option<IdMap> {
        if u32::try_from(base.len()).is_err() {
            return None;
        }
        let sorted = base
            .windows(2)
            .all(|w| u64::from_le(w[0].id) < u64::from_le(w[1].id));
        sorted.then(|| IdMap {
            base,
            extra: HashMap::new(),
        })
    }

    /// The slot of `id`, if it was ever given one.
    #[inline]
    pub(crate) fn get(&self, id: u64) -> Option<u32> {
        if let Some(&slot) = self.extra.get(&id) {
            return Some(slot);
        }
        let pos = self
            .base
            .binary_search_by_key(&id, |r| u64::from_le(r.id))
            .ok()?;
        // `over_sorted` checked that every position fits in u32.
        u32::try_from(pos).ok()
    }

    /// A map of `base`'s ids to their positions, trusting that they are strictly
    /// increasing (a checkpoint's counts say so, and `verify` checks it): no record is read.
    /// `None` when there are more records than slot numbers.
    pub(crate) fn over_sorted_trusted(base: SharedArray<TrajRec>) -> Option<IdMap> {
        u32::try_from(base.len()).ok()?;
        Some(IdMap {
            base,
            extra: HashMap::new(),
        })
    }

    /// [`IdMap::get`], calling `check(pos)` before each base record it reads (so the
    /// caller can check the bytes first); stops at the first error.
    pub(crate) fn get_checked<E>(
        &self,
        id: u64,
        mut check: impl FnMut(usize) -> Result<(), E>,
    ) -> Result<Option<u32>, E> {
        if let Some(&slot) = self.extra.get(&id) {
            return Ok(Some(slot));
        }
        let (mut lo, mut hi) = (0, self.base.len());
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            check(mid)?;
            match u64::from_le(self.base[mid].id).cmp(&id) {
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
                std::cmp::Ordering::Equal => return Ok(u32::try_from(mid).ok()),
            }
        }
        Ok(None)
    }

    /// True when `id` was ever given a slot.
    pub(crate) fn contains_key(&self, id: u64) -> bool {
        self.get(id).is_some()
    }

    /// Gives `id` the slot `slot`, returning the slot it had.
    pub(crate) fn insert(&mut self, id: u64, slot: u32) -> Option<u32> {
        let old = self.get(id);
        self.extra.insert(id, slot);
        old
    }

    /// Every (id, slot), in no particular order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (u64, u32)> + '_ {
        let base = self
            .base
            .iter()
            .enumerate()
            .map(|(slot, r)| (u64::from_le(r.id), u32::try_from(slot).unwrap_or(u32::MAX)))
            .filter(|(id, _)| !self.extra.contains_key(id));
        base.chain(self.extra.iter().map(|(&id, &slot)| (id, slot)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::mmap::SharedBytes;
    use std::sync::Arc;

    fn recs(ids: &[u64]) -> SharedArray<TrajRec> {
        let size = std::mem::size_of::<TrajRec>();
        let mut words = vec![0u64; ids.len() * size / 8];
        for (i, id) in ids.iter().enumerate() {
            words[i * size / 8] = id.to_le();
        }
        SharedArray::view(Arc::new(SharedBytes::Heap(words)), 0, ids.len()).expect("fits")
    }

    #[test]
    fn id_map_over_sorted_ids_finds_each_slot_and_later_inserts_shadow_it() {
        let mut m = IdMap::over_sorted(recs(&[3, 7, 9, 20])).expect("sorted");
        assert_eq!(m.get(3), Some(0));
        assert_eq!(m.get(9), Some(2));
        assert_eq!(m.get(20), Some(3));
        assert_eq!(m.get(8), None);
        assert!(!m.contains_key(1));
        for id in 0..25 {
            let mut read = Vec::new();
            let got = m.get_checked(id, |p| {
                read.push(p);
                Ok::<(), ()>(())
            });
            assert_eq!(got, Ok(m.get(id)), "id {id}");
            assert!(read.len() <= 3 && read.iter().all(|&p| p < 4), "{read:?}");
        }
        assert_eq!(
            m.get_checked(9, |p| if p == 2 { Err(p) } else { Ok(()) }),
            Err(2)
        );
        // An id reused after its deletion gets a new slot, which wins.
        assert_eq!(m.insert(7, 4), Some(1));
        assert_eq!(m.insert(21, 5), None);
        assert_eq!(m.get(7), Some(4));
        assert_eq!(m.get(21), Some(5));
        let mut all: Vec<_> = m.iter().collect();
        all.sort();
        assert_eq!(all, vec![(3, 0), (7, 4), (9, 2), (20, 3), (21, 5)]);
    }

    #[test]
    fn id_map_refuses_a_base_whose_ids_are_not_strictly_increasing() {
        assert!(IdMap::over_sorted(recs(&[1, 5, 5])).is_none());
        assert!(IdMap::over_sorted(recs(&[4, 2])).is_none());
        assert!(IdMap::over_sorted(recs(&[])).is_some());
    }
}
