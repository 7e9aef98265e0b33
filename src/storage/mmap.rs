//! Read-only memory maps of key files and graph files. One of the two modules allowed `unsafe`.
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
        // in ways Rust's aliasing rules forbid while the map lives. trajdb maps only key
        // files and graph files. A graph file is written whole under a temporary name,
        // synced and renamed into place, and never written again (the next version is a new
        // file renamed over the name), so no mapped graph byte ever changes. The single writer (it holds the database lock)
        // only grows key files (set_len
        // upwards, then map) and writes rows past every row count it has published or that
        // the file's header vouches for; callers only read rows below those counts, so no
        // row byte a reader can see changes. The 64-byte header is rewritten in place at
        // checkpoints, which is why trajdb reads it with positioned reads, never through a
        // map: only the row region of a map is ever turned into a slice. A key file is never truncated in place: a rebuild
        // writes a new file and renames it over the old name, leaving this mapping's inode
        // intact. Read-only handles in other processes map only vouched rows, which the
        // writer never rewrites. A process that writes the files while ignoring the lock
        // breaks this contract; `format-spec.md` ("Concurrency") states it. The checkpoint
        // file is mapped too: it is written once under a temporary name, synced and renamed
        // into place, and never written, grown or truncated in place afterwards, so the
        // bytes of a map of it never change.
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
