//! The interned env and task names. After an open from a checkpoint the names are the
//! checkpoint's own name table (end offsets and UTF-8 bytes), read in place; the map from
//! name to id is built on the first lookup that needs it (a filter by env or task, or an
//! append), not at open. Names interned later are kept beside them.

use std::collections::HashMap;
use std::sync::OnceLock;

use crate::storage::mmap::SharedArray;

/// Interned names: id → name and name → id.
#[derive(Default)]
pub(crate) struct Names {
    /// End offset (exclusive, into `base_bytes`) of each checkpoint name.
    base_ends: SharedArray<u32>,
    base_bytes: SharedArray<u8>,
    /// Names interned after the base.
    extra: Vec<String>,
    /// Name → id, built on first use.
    ids: OnceLock<HashMap<String, u32>>,
}

impl Names {
    /// The names of a checkpoint: `ends[i]` is where name `i` ends in `bytes` (little-endian
    /// on disk; the caller gives native values). Checks that the ends rise, stay inside the
    /// bytes and cover them, and that every name is UTF-8; else says which name is wrong.
    pub(crate) fn from_table(
        ends: SharedArray<u32>,
        bytes: SharedArray<u8>,
    ) -> Result<Names, String> {
        if u32::try_from(ends.len()).is_err() {
            return Err("more names than ids".into());
        }
        let mut start = 0usize;
        for (i, &e) in ends.iter().enumerate() {
            let end = usize::try_from(e).map_err(|_| format!("name {i}: end offset"))?;
            let s = bytes.get(start..end).ok_or_else(|| {
                format!("name {i} ends at {end}, before {start} or past the names")
            })?;
            std::str::from_utf8(s).map_err(|_| format!("name {i} is not UTF-8"))?;
            start = end;
        }
        if start != bytes.len() {
            return Err("name bytes are not all used".into());
        }
        Ok(Names {
            base_ends: ends,
            base_bytes: bytes,
            extra: Vec::new(),
            ids: OnceLock::new(),
        })
    }

    /// Number of names.
    pub(crate) fn len(&self) -> usize {
        self.base_ends.len() + self.extra.len()
    }

    /// Name `i`.
    pub(crate) fn get(&self, i: usize) -> Option<&str> {
        if i < self.base_ends.len() {
            let start = match i {
                0 => 0,
                _ => usize::try_from(self.base_ends[i - 1]).ok()?,
            };
            let end = usize::try_from(self.base_ends[i]).ok()?;
            // Checked UTF-8 in `from_table`.
            std::str::from_utf8(self.base_bytes.get(start..end)?).ok()
        } else {
            self.extra.get(i - self.base_ends.len()).map(String::as_str)
        }
    }

    /// Every name, in id order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &str> + '_ {
        (0..self.len()).filter_map(|i| self.get(i))
    }

    fn map(&self) -> &HashMap<String, u32> {
        self.ids.get_or_init(|| {
            let mut m = HashMap::with_capacity(self.len());
            for (i, s) in self.iter().enumerate() {
                // A name twice (only in a damaged table) keeps its first id.
                m.entry(s.to_owned())
                    .or_insert(u32::try_from(i).unwrap_or(u32::MAX));
            }
            m
        })
    }

    /// The id of `s`, if it is interned.
    pub(crate) fn id_of(&self, s: &str) -> Option<u32> {
        self.map().get(s).copied()
    }

    /// The id of `s`, interning it first if needed.
    pub(crate) fn intern(&mut self, s: &str) -> u32 {
        if let Some(i) = self.id_of(s) {
            return i;
        }
        let i = u32::try_from(self.len()).unwrap_or(u32::MAX);
        self.extra.push(s.to_owned());
        if let Some(m) = self.ids.get_mut() {
            m.insert(s.to_owned(), i);
        }
        i
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::mmap::SharedBytes;
    use std::sync::Arc;

    fn table(names: &[&str]) -> (SharedArray<u32>, SharedArray<u8>) {
        let mut ends = Vec::new();
        let mut bytes = Vec::new();
        for n in names {
            bytes.extend_from_slice(n.as_bytes());
            ends.push(u32::try_from(bytes.len()).unwrap());
        }
        let mut words = vec![0u64; bytes.len().div_ceil(8)];
        bytemuck::cast_slice_mut::<u64, u8>(&mut words)[..bytes.len()].copy_from_slice(&bytes);
        let b = SharedArray::view(Arc::new(SharedBytes::Heap(words)), 0, bytes.len()).unwrap();
        (SharedArray::owned(ends), b)
    }

    #[test]
    fn names_from_a_table_are_read_in_place_found_and_extended() {
        let (ends, bytes) = table(&["alpha", "", "beta"]);
        let mut n = Names::from_table(ends, bytes).unwrap();
        assert_eq!(n.iter().collect::<Vec<_>>(), ["alpha", "", "beta"]);
        assert_eq!(n.id_of("beta"), Some(2));
        assert_eq!(n.id_of("gamma"), None);
        assert_eq!(n.intern("gamma"), 3);
        assert_eq!(n.intern("alpha"), 0);
        assert_eq!(n.id_of("gamma"), Some(3));
        assert_eq!(n.get(3), Some("gamma"));
        assert_eq!(n.len(), 4);
    }

    #[test]
    fn a_name_table_out_of_order_past_its_bytes_or_not_utf8_is_refused() {
        let (_, bytes) = table(&["ab", "cd"]);
        assert!(Names::from_table(SharedArray::owned(vec![3, 2]), bytes).is_err());
        let (_, bytes) = table(&["ab", "cd"]);
        assert!(Names::from_table(SharedArray::owned(vec![2, 9]), bytes).is_err());
        let (_, bytes) = table(&["ab", "cd"]);
        assert!(Names::from_table(SharedArray::owned(vec![2]), bytes).is_err());
        let (ends, _) = table(&["ab"]);
        let bad = SharedArray::owned(vec![0xFFu8, 0xFE]);
        assert!(Names::from_table(ends, bad).is_err());
    }
}
