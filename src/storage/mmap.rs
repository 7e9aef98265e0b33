//! Read-only memory maps of key files, graph files, search-bounds files and the checkpoint,
//! and arrays that borrow from them. One of the two modules allowed `unsafe`.
#![allow(unsafe_code)]

use std::fs::File;
use std::io;

/// A read-only shared mapping of the first `len` bytes of a file.
#[derive(Debug)]
pub(crate) struct MappedFile {
    map: memmap2::Mmap,
}

impl MappedFile {
    /// Maps `len` bytes of `file`; `len` must not exceed the file's length.
    pub(crate) fn map(file: &File, len: usize) -> io::Result<Self> {
        // SAFETY: memmap2 requires that the mapped bytes are not truncated away or modified
        // in ways Rust's aliasing rules forbid while the map lives. trajdb maps key files,
        // graph files, search-bounds files (`quant-N.idx`, `bounds-N.idx`) and the
        // checkpoint.
        // - Key files: the single writer (it holds the database lock) only grows them
        //   (set_len upwards, then map) and writes rows past every row count it has
        //   published or that the file's header vouches for; callers only read rows below
        //   those counts, so no row byte a reader can see changes. A vouched row that
        //   differs from the log is never rewritten in place either: the writer builds a new
        //   file and renames it over the name. The 64-byte header is rewritten in place at
        //   checkpoints, which is why trajdb reads it with positioned reads, never through a
        //   map: only the row region of a map is ever turned into a slice. A key file is
        //   never truncated in place: a rebuild writes a new file and renames it over the
        //   old name, leaving this mapping's inode intact.
        // - Graph files, search-bounds files and the checkpoint are written whole under a
        //   temporary name and renamed into place, and never written, grown or truncated in
        //   place afterwards (the next version is a new file renamed over the name), so the
        //   bytes of a map of one never change.
        // A process that writes the files while ignoring the lock breaks this contract;
        // `format-spec.md` ("Concurrency") states it.
        let map = unsafe { memmap2::MmapOptions::new().len(len).map(file)? };
        Ok(MappedFile { map })
    }

    /// The mapped bytes from `offset` on (empty past the end). Key files are only read
    /// from their row region through a map, never their header.
    pub(crate) fn after(&self, offset: usize) -> &[u8] {
        self.map.get(offset..).unwrap_or(&[])
    }

    /// Length of the mapping.
    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }
}

/// Bytes that several arrays borrow from: a map of a file that is never changed in place
/// (the checkpoint), or an 8-aligned heap copy of such a file when the backend has no OS
/// file to map.
#[derive(Debug)]
pub(crate) enum SharedBytes {
    /// A read-only map; see [`MappedFile::map`] for why its bytes never change.
    Map(MappedFile),
    /// A heap copy, as `u64` words so that it is 8-aligned.
    Heap(Vec<u64>),
}

impl SharedBytes {
    /// All the bytes.
    pub(crate) fn bytes(&self) -> &[u8] {
        match self {
            SharedBytes::Map(m) => m.after(0),
            SharedBytes::Heap(v) => bytemuck::cast_slice(v),
        }
    }
}

/// An array of fixed-width records that starts as a view of [`SharedBytes`] (no copy, no
/// fresh memory at open) and becomes an owned `Vec` the first time it is changed.
///
/// Reads go through `Deref<Target = [T]>`. The view's bounds and alignment are checked
/// once, when it is made ([`SharedArray::view`]).
pub(crate) struct SharedArray<T: bytemuck::Pod> {
    repr: Repr<T>,
}

enum Repr<T> {
    View {
        bytes: std::sync::Arc<SharedBytes>,
        start: usize,
        len: usize,
    },
    Owned(Vec<T>),
}

impl<T: bytemuck::Pod> SharedArray<T> {
    /// An owned array.
    pub(crate) fn owned(v: Vec<T>) -> Self {
        SharedArray {
            repr: Repr::Owned(v),
        }
    }

    /// A view of `len` records at byte `start` of `bytes`, or `None` when they do not fit
    /// in the bytes or `start` is not aligned for `T`.
    pub(crate) fn view(
        bytes: std::sync::Arc<SharedBytes>,
        start: usize,
        len: usize,
    ) -> Option<Self> {
        let size = len.checked_mul(std::mem::size_of::<T>())?;
        let end = start.checked_add(size)?;
        let area = bytes.bytes().get(start..end)?;
        // Checks alignment (and size) the same way every later read relies on.
        bytemuck::try_cast_slice::<u8, T>(area).ok()?;
        Some(SharedArray {
            repr: Repr::View { bytes, start, len },
        })
    }

    /// True when the records are still a view of shared bytes.
    #[cfg(test)]
    pub(crate) fn is_view(&self) -> bool {
        matches!(self.repr, Repr::View { .. })
    }

    /// The owned records, copying the view into a `Vec` first if needed.
    pub(crate) fn to_mut(&mut self) -> &mut Vec<T> {
        if let Repr::View { .. } = self.repr {
            let v = (**self).to_vec();
            self.repr = Repr::Owned(v);
        }
        match &mut self.repr {
            Repr::Owned(v) => v,
            Repr::View { .. } => unreachable!("made owned just above"),
        }
    }

    /// Appends one record.
    pub(crate) fn push(&mut self, x: T) {
        self.to_mut().push(x);
    }

    /// Keeps the first `len` records.
    pub(crate) fn truncate(&mut self, len: usize) {
        if len < self.len() {
            self.to_mut().truncate(len);
        }
    }
}

impl<T: bytemuck::Pod> SharedArray<T> {
    /// Another handle on the same records: a view shares the bytes (no copy); an owned
    /// array is copied.
    pub(crate) fn clone_view(&self) -> Self {
        SharedArray {
            repr: match &self.repr {
                Repr::View { bytes, start, len } => Repr::View {
                    bytes: bytes.clone(),
                    start: *start,
                    len: *len,
                },
                Repr::Owned(v) => Repr::Owned(v.clone()),
            },
        }
    }
}

impl<T: bytemuck::Pod> Default for SharedArray<T> {
    fn default() -> Self {
        SharedArray::owned(Vec::new())
    }
}

impl<T: bytemuck::Pod> std::ops::Deref for SharedArray<T> {
    type Target = [T];

    #[inline]
    fn deref(&self) -> &[T] {
        match &self.repr {
            Repr::Owned(v) => v,
            Repr::View { bytes, start, len } => {
                let base = bytes.bytes().as_ptr();
                // SAFETY: `view` checked that `len` records of `T` starting at byte `start`
                // lie inside these bytes and that the start is aligned for `T`; `T` is
                // `Pod`, so any bytes are a valid `T`. The bytes live as long as the `Arc`
                // this array holds, and they never change: a heap copy is never written
                // after it is shared, and a map is of a file that is never written in
                // place (see `MappedFile::map`).
                unsafe { std::slice::from_raw_parts(base.add(*start).cast::<T>(), *len) }
            }
        }
    }
}

impl<T: bytemuck::Pod + std::fmt::Debug> std::fmt::Debug for SharedArray<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn shared_array_views_without_copy_and_copies_on_first_change() {
        let words: Vec<u64> = (0..8).collect();
        let bytes = Arc::new(SharedBytes::Heap(words));
        let mut a = SharedArray::<u64>::view(bytes.clone(), 16, 4).expect("fits");
        assert!(a.is_view());
        assert_eq!(&*a, &[2, 3, 4, 5]);
        a.push(99);
        assert!(!a.is_view());
        assert_eq!(&*a, &[2, 3, 4, 5, 99]);
        a.truncate(2);
        assert_eq!(&*a, &[2, 3]);
        // The shared bytes are untouched by the change.
        assert_eq!(
            bytemuck::cast_slice::<u8, u64>(bytes.bytes())[2..6],
            [2, 3, 4, 5]
        );
    }

    #[test]
    fn shared_array_refuses_views_out_of_bounds_or_misaligned() {
        let bytes = Arc::new(SharedBytes::Heap(vec![0u64; 4]));
        assert!(SharedArray::<u64>::view(bytes.clone(), 8, 4).is_none());
        assert!(SharedArray::<u64>::view(bytes.clone(), 4, 1).is_none());
        assert!(SharedArray::<u64>::view(bytes.clone(), usize::MAX, 2).is_none());
        assert!(SharedArray::<u64>::view(bytes, 0, usize::MAX).is_none());
    }
}
