//! The one door for file I/O: a small [`Storage`] trait for a single file and a
//! [`Backend`] that names, creates, renames and removes files of a database.
//!
//! The file backend is the default. [`MemBackend`] keeps files in memory; tests wrap
//! backends to inject crashes (keep only what was synced) and I/O failures.

pub mod fault;
pub(crate) mod mmap;

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;

/// One file: positioned reads and writes, length, and sync.
#[expect(
    clippy::len_without_is_empty,
    reason = "a file's length is an I/O result; emptiness is not a separate question here"
)]
pub trait Storage: Send + Sync {
    /// Current length in bytes.
    fn len(&self) -> io::Result<u64>;
    /// Fills `buf` from `offset`; fails with `UnexpectedEof` past the end.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;
    /// Writes all of `buf` at `offset`, growing the file if needed.
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()>;
    /// Truncates or extends (with zeros) to `len`.
    fn set_len(&self, len: u64) -> io::Result<()>;
    /// Makes everything written so far durable.
    fn sync(&self) -> io::Result<()>;
    /// The operating-system file behind this storage, when there is one (used to mmap).
    fn file(&self) -> Option<&File> {
        None
    }
}

/// The files of one database: a flat namespace of names.
pub trait Backend: Send + Sync {
    /// Opens `name`; creates it empty when absent and `create` is set. `Ok(None)` when absent.
    fn open(&self, name: &str, create: bool) -> io::Result<Option<Arc<dyn Storage>>>;
    /// Opens `name` for reading only (no write permission needed); `Ok(None)` when absent.
    /// Writing through the result fails. The default opens as [`open`](Self::open) does, for
    /// backends with no permissions.
    fn open_read(&self, name: &str) -> io::Result<Option<Arc<dyn Storage>>> {
        self.open(name, false)
    }
    /// Removes `name` if present.
    fn remove(&self, name: &str) -> io::Result<()>;
    /// Atomically replaces `to` with `from` and makes the rename durable.
    fn rename(&self, from: &str, to: &str) -> io::Result<()>;
    /// Names of the files present.
    fn list(&self) -> io::Result<Vec<String>>;
    /// A path for messages (the real path for the file backend).
    fn path_of(&self, name: &str) -> PathBuf;
}

/// Creates `name` empty (removing any file of that name first) and returns it.
pub(crate) fn create_fresh(
    backend: &dyn Backend,
    name: &str,
) -> crate::error::Result<Arc<dyn Storage>> {
    let err = |op, e| crate::error::Error::io(op, backend.path_of(name), e);
    backend.remove(name).map_err(|e| err("remove", e))?;
    backend
        .open(name, true)
        .map_err(|e| err("create", e))?
        .ok_or_else(|| err("create", io::ErrorKind::NotFound.into()))
}

/// Syncs the directory that holds `dir`, so that a directory just created survives a
/// power cut.
pub(crate) fn sync_parent(dir: &Path) -> crate::error::Result<()> {
    let parent = match dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    File::open(parent)
        .and_then(|f| f.sync_all())
        .map_err(|e| crate::error::Error::io("sync", parent, e))
}

/// A file of the operating system.
#[derive(Debug)]
pub struct FileStorage {
    file: File,
}

impl FileStorage {
    /// Wraps an open file.
    pub fn new(file: File) -> Self {
        FileStorage { file }
    }
}

impl Storage for FileStorage {
    fn len(&self) -> io::Result<u64> {
        Ok(self.file.metadata()?.len())
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        std::os::unix::fs::FileExt::read_exact_at(&self.file, buf, offset)
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        std::os::unix::fs::FileExt::write_all_at(&self.file, buf, offset)
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.file.set_len(len)
    }
    fn sync(&self) -> io::Result<()> {
        self.file.sync_data()
    }
    fn file(&self) -> Option<&File> {
        Some(&self.file)
    }
}

/// A directory of the file system.
#[derive(Debug, Clone)]
pub struct FileBackend {
    dir: PathBuf,
}

impl FileBackend {
    /// A backend over `dir`, which must exist.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        FileBackend { dir: dir.into() }
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn sync_dir(&self) -> io::Result<()> {
        File::open(&self.dir)?.sync_all()
    }
}

impl Backend for FileBackend {
    fn open(&self, name: &str, create: bool) -> io::Result<Option<Arc<dyn Storage>>> {
        let path = self.dir.join(name);
        let mut opts = OpenOptions::new();
        opts.read(true).write(true);
        if create {
            opts.create(true);
        }
        match opts.open(&path) {
            Ok(file) => {
                if create {
                    self.sync_dir()?;
                }
                Ok(Some(Arc::new(FileStorage::new(file))))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }
    fn open_read(&self, name: &str) -> io::Result<Option<Arc<dyn Storage>>> {
        match File::open(self.dir.join(name)) {
            Ok(file) => Ok(Some(Arc::new(FileStorage::new(file)))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }
    fn remove(&self, name: &str) -> io::Result<()> {
        match std::fs::remove_file(self.dir.join(name)) {
            Ok(()) => self.sync_dir(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        }
    }
    fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        std::fs::rename(self.dir.join(from), self.dir.join(to))?;
        self.sync_dir()
    }
    fn list(&self) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in std::fs::read_dir(&self.dir)? {
            let entry = entry?;
            if entry.file_type()?.is_file() {
                if let Some(name) = entry.file_name().to_str() {
                    names.push(name.to_owned());
                }
            }
        }
        names.sort();
        Ok(names)
    }
    fn path_of(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

/// A file held in memory.
#[derive(Debug, Default)]
pub struct MemStorage {
    data: Mutex<Vec<u8>>,
}

impl MemStorage {
    /// A copy of the current bytes.
    pub fn snapshot(&self) -> Vec<u8> {
        self.data.lock().clone()
    }
}

impl Storage for MemStorage {
    fn len(&self) -> io::Result<u64> {
        u64::try_from(self.data.lock().len()).map_err(io::Error::other)
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let data = self.data.lock();
        let start = usize::try_from(offset).map_err(io::Error::other)?;
        let end = start
            .checked_add(buf.len())
            .filter(|&e| e <= data.len())
            .ok_or_else(|| io::Error::from(io::ErrorKind::UnexpectedEof))?;
        buf.copy_from_slice(&data[start..end]);
        Ok(())
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        let mut data = self.data.lock();
        let start = usize::try_from(offset).map_err(io::Error::other)?;
        let end = start
            .checked_add(buf.len())
            .ok_or_else(|| io::Error::other("write past addressable memory"))?;
        if data.len() < end {
            data.resize(end, 0);
        }
        data[start..end].copy_from_slice(buf);
        Ok(())
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        let len = usize::try_from(len).map_err(io::Error::other)?;
        self.data.lock().resize(len, 0);
        Ok(())
    }
    fn sync(&self) -> io::Result<()> {
        Ok(())
    }
}

/// A kind of in-memory file that [`MemDir`] can hold.
pub trait MemFile: Storage + Default + 'static {
    /// Prefix of the paths shown in messages (`mem:log`).
    const SCHEME: &'static str;
}

impl MemFile for MemStorage {
    const SCHEME: &'static str = "mem";
}

/// A database directory held in memory: a map from names to files of kind `F`. Clones share
/// the same files.
#[derive(Debug)]
pub struct MemDir<F> {
    pub(crate) files: Arc<Mutex<HashMap<String, Arc<F>>>>,
}

impl<F> Clone for MemDir<F> {
    fn clone(&self) -> Self {
        MemDir {
            files: self.files.clone(),
        }
    }
}

impl<F> Default for MemDir<F> {
    fn default() -> Self {
        MemDir {
            files: Arc::new(Mutex::new(HashMap::new())),
        }
    }
}

impl<F> MemDir<F> {
    /// An empty directory.
    pub fn new() -> Self {
        Self::default()
    }

    /// The file called `name`, if present.
    pub fn file(&self, name: &str) -> Option<Arc<F>> {
        self.files.lock().get(name).cloned()
    }
}

/// A database directory held in memory (for tests and throw-away databases).
pub type MemBackend = MemDir<MemStorage>;

impl<F: MemFile> Backend for MemDir<F> {
    fn open(&self, name: &str, create: bool) -> io::Result<Option<Arc<dyn Storage>>> {
        let mut files = self.files.lock();
        if let Some(f) = files.get(name) {
            return Ok(Some(f.clone() as Arc<dyn Storage>));
        }
        if !create {
            return Ok(None);
        }
        let f = Arc::new(F::default());
        files.insert(name.to_owned(), f.clone());
        Ok(Some(f as Arc<dyn Storage>))
    }
    fn remove(&self, name: &str) -> io::Result<()> {
        self.files.lock().remove(name);
        Ok(())
    }
    fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        let mut files = self.files.lock();
        let f = files
            .remove(from)
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?;
        files.insert(to.to_owned(), f);
        Ok(())
    }
    fn list(&self) -> io::Result<Vec<String>> {
        let mut names: Vec<String> = self.files.lock().keys().cloned().collect();
        names.sort();
        Ok(names)
    }
    fn path_of(&self, name: &str) -> PathBuf {
        PathBuf::from(format!("{}:{name}", F::SCHEME))
    }
}
