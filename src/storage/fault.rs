//! Testing tools: backends that inject crashes and I/O failures.
//!
//! These are not used by the database itself. They exist so that tests (this crate's and
//! yours) can prove what survives a crash and what a failed operation leaves behind.
//!
//! - [`CrashBackend`] keeps, for every in-memory file, the bytes written and, separately,
//!   the bytes as of the last `sync`. [`CrashBackend::crash`] returns the state a power cut
//!   would leave: synced bytes only. [`CrashBackend::crash_torn`] also keeps a prefix of the
//!   unsynced bytes of each file, optionally followed by garbage, as a torn write would.
//!   Creating, removing and renaming a file are durable at once, as [`FileBackend`]
//!   makes them by syncing the directory after each.
//! - [`FailingBackend`] wraps any backend and fails the Nth operation of a chosen kind
//!   (read, write, sync, set_len, open, rename or remove) with an I/O error (a failed write
//!   first writes half of its bytes).
//!
//! [`FileBackend`]: crate::storage::FileBackend

use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;

use crate::storage::{Backend, MemDir, MemFile, Storage};

pub use crate::rng::SplitMix64 as SplitMix;

/// One in-memory file that remembers what was synced.
#[derive(Debug, Default)]
pub struct CrashFile {
    inner: Mutex<CrashBytes>,
}

#[derive(Debug, Default, Clone)]
struct CrashBytes {
    written: Vec<u8>,
    synced: Vec<u8>,
}

impl CrashFile {
    fn with(bytes: Vec<u8>) -> Self {
        CrashFile {
            inner: Mutex::new(CrashBytes {
                written: bytes.clone(),
                synced: bytes,
            }),
        }
    }

    /// The bytes written so far (what a reader sees now).
    pub fn written(&self) -> Vec<u8> {
        self.inner.lock().written.clone()
    }

    /// The bytes as of the last sync (what survives a crash).
    pub fn synced(&self) -> Vec<u8> {
        self.inner.lock().synced.clone()
    }
}

impl Storage for CrashFile {
    fn len(&self) -> io::Result<u64> {
        u64::try_from(self.inner.lock().written.len()).map_err(io::Error::other)
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let g = self.inner.lock();
        let start = usize::try_from(offset).map_err(io::Error::other)?;
        let end = start
            .checked_add(buf.len())
            .filter(|&e| e <= g.written.len())
            .ok_or_else(|| io::Error::from(io::ErrorKind::UnexpectedEof))?;
        buf.copy_from_slice(&g.written[start..end]);
        Ok(())
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        let mut g = self.inner.lock();
        let start = usize::try_from(offset).map_err(io::Error::other)?;
        let end = start
            .checked_add(buf.len())
            .ok_or_else(|| io::Error::other("write past addressable memory"))?;
        if g.written.len() < end {
            g.written.resize(end, 0);
        }
        g.written[start..end].copy_from_slice(buf);
        Ok(())
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        let len = usize::try_from(len).map_err(io::Error::other)?;
        self.inner.lock().written.resize(len, 0);
        Ok(())
    }
    fn sync(&self) -> io::Result<()> {
        let mut g = self.inner.lock();
        g.synced = g.written.clone();
        Ok(())
    }
}

/// An in-memory directory whose files remember their last synced bytes, so that a crash
/// can be simulated at any moment. Creates, removes and renames are durable at once, as
/// `FileBackend` makes them by syncing the directory.
pub type CrashBackend = MemDir<CrashFile>;

impl MemFile for CrashFile {
    const SCHEME: &'static str = "crash";
}

impl MemDir<CrashFile> {
    /// A directory holding `files` (name, bytes), all of them synced.
    pub fn from_files(files: impl IntoIterator<Item = (String, Vec<u8>)>) -> Self {
        let map = files
            .into_iter()
            .map(|(n, b)| (n, Arc::new(CrashFile::with(b))))
            .collect();
        MemDir {
            files: Arc::new(Mutex::new(map)),
        }
    }

    /// Every file's current (written) bytes, by name, sorted by name.
    pub fn snapshot(&self) -> Vec<(String, Vec<u8>)> {
        let mut v: Vec<(String, Vec<u8>)> = self
            .files
            .lock()
            .iter()
            .map(|(n, f)| (n.clone(), f.written()))
            .collect();
        v.sort();
        v
    }

    /// What a power cut now leaves: a new, independent directory holding each file's
    /// synced bytes only. Handles open on `self` do not see or touch it.
    pub fn crash(&self) -> CrashBackend {
        Self::from_files(
            self.files
                .lock()
                .iter()
                .map(|(n, f)| (n.clone(), f.synced())),
        )
    }

    /// Every file's written and synced bytes, sorted by name.
    fn contents(&self) -> Vec<(String, CrashBytes)> {
        let mut v: Vec<(String, CrashBytes)> = self
            .files
            .lock()
            .iter()
            .map(|(n, f)| (n.clone(), f.inner.lock().clone()))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    /// Like [`crash`](Self::crash), but a torn write may have reached each file: the
    /// unsynced bytes up to a random cut point (chosen by `seed`) persist, and when
    /// `garbage` is set, up to 64 random bytes follow the cut beyond the synced length.
    pub fn crash_torn(&self, seed: u64, garbage: bool) -> CrashBackend {
        let mut rng = SplitMix::new(seed);
        let mut out = Vec::new();
        for (name, CrashBytes { written, synced }) in self.contents() {
            out.push((name, torn(&written, &synced, &mut rng, garbage)));
        }
        Self::from_files(out)
    }
}

impl MemDir<CrashFile> {
    /// Like [`crash`](Self::crash), but the unsynced bytes of each file reach the disk out of
    /// order, as the page cache may write them back: each 512-byte sector of the unsynced
    /// region persists or not at random (chosen by `seed`), and the file keeps its written
    /// length when any sector past the synced length persists.
    pub fn crash_reordered(&self, seed: u64) -> CrashBackend {
        let mut rng = SplitMix::new(seed);
        let mut out = Vec::new();
        for (name, CrashBytes { written, synced }) in self.contents() {
            let mut bytes = synced.clone();
            if bytes.len() < written.len() {
                bytes.resize(written.len(), 0);
            }
            let mut keep_len = synced.len();
            for start in (0..written.len()).step_by(512) {
                let end = (start + 512).min(written.len());
                let changed = synced.get(start..end) != Some(&written[start..end]);
                if changed && rng.below(2) == 1 {
                    bytes[start..end].copy_from_slice(&written[start..end]);
                    keep_len = keep_len.max(end);
                }
            }
            bytes.truncate(keep_len.max(synced.len()));
            out.push((name, bytes));
        }
        Self::from_files(out)
    }
}

/// Synced bytes with a prefix (by offset) of the unsynced changes applied, then garbage.
fn torn(written: &[u8], synced: &[u8], rng: &mut SplitMix, garbage: bool) -> Vec<u8> {
    let first_diff = written
        .iter()
        .zip(synced)
        .position(|(a, b)| a != b)
        .unwrap_or(written.len().min(synced.len()));
    if first_diff == written.len() && written.len() == synced.len() {
        return synced.to_vec();
    }
    let span = written.len().saturating_sub(first_diff) as u64;
    let cut = first_diff + usize::try_from(rng.below(span + 1)).unwrap_or(0);
    let mut out = written[..cut.min(written.len())].to_vec();
    if cut < synced.len() {
        out.extend_from_slice(&synced[cut..]);
    }
    if garbage && rng.below(2) == 1 {
        let at = cut.max(synced.len());
        let n = usize::try_from(1 + rng.below(64)).unwrap_or(1);
        if out.len() < at + n {
            out.resize(at + n, 0);
        }
        for b in &mut out[at..at + n] {
            *b = u8::try_from(rng.below(256)).unwrap_or(0);
        }
    }
    out
}

/// The kinds of operation [`FailingBackend`] counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    /// `Storage::read_at`.
    Read,
    /// `Storage::write_at`.
    Write,
    /// `Storage::sync`.
    Sync,
    /// `Storage::set_len`.
    SetLen,
    /// `Backend::open`.
    Open,
    /// `Backend::rename`.
    Rename,
    /// `Backend::remove`.
    Remove,
}

#[derive(Debug)]
struct FailPlan {
    /// Which operations count (None = all kinds above).
    kind: Option<Op>,
    /// The 1-based index of the counted operation that fails.
    fail_at: AtomicU64,
    count: AtomicU64,
    fired: AtomicBool,
}

impl FailPlan {
    /// Counts `op`; true when it is the one that must fail.
    fn hit(&self, op: Op) -> bool {
        if self.kind.is_some_and(|k| k != op) {
            return false;
        }
        let n = self.count.fetch_add(1, Ordering::SeqCst) + 1;
        if n == self.fail_at.load(Ordering::SeqCst) {
            self.fired.store(true, Ordering::SeqCst);
            return true;
        }
        false
    }
}

fn injected(op: Op) -> io::Error {
    io::Error::other(format!("injected failure of {op:?}"))
}

/// Wraps a backend and fails the Nth counted operation with an I/O error.
///
/// A failing `write_at` first writes the first half of its buffer, as a write cut short
/// would. Every other operation passes through to the inner backend.
#[derive(Clone)]
pub struct FailingBackend {
    inner: Arc<dyn Backend>,
    plan: Arc<FailPlan>,
}

impl FailingBackend {
    /// Fails the `n`th (1-based) operation of kind `kind` (any kind when `None`).
    /// `n = 0` never fails and only counts.
    pub fn new(inner: Arc<dyn Backend>, kind: Option<Op>, n: u64) -> Self {
        FailingBackend {
            inner,
            plan: Arc::new(FailPlan {
                kind,
                fail_at: AtomicU64::new(n),
                count: AtomicU64::new(0),
                fired: AtomicBool::new(false),
            }),
        }
    }

    /// Operations of the counted kind seen so far.
    pub fn count(&self) -> u64 {
        self.plan.count.load(Ordering::SeqCst)
    }

    /// True once the failure has been injected.
    pub fn fired(&self) -> bool {
        self.plan.fired.load(Ordering::SeqCst)
    }

    /// Arms the failure at the `n`th counted operation from now (0 disarms).
    pub fn fail_after(&self, n: u64) {
        let now = self.count();
        self.plan
            .fail_at
            .store(if n == 0 { 0 } else { now + n }, Ordering::SeqCst);
    }
}

struct FailingStorage {
    inner: Arc<dyn Storage>,
    plan: Arc<FailPlan>,
}

impl Storage for FailingStorage {
    fn len(&self) -> io::Result<u64> {
        self.inner.len()
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        if self.plan.hit(Op::Read) {
            return Err(injected(Op::Read));
        }
        self.inner.read_at(buf, offset)
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        if self.plan.hit(Op::Write) {
            self.inner.write_at(&buf[..buf.len() / 2], offset)?;
            return Err(injected(Op::Write));
        }
        self.inner.write_at(buf, offset)
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        if self.plan.hit(Op::SetLen) {
            return Err(injected(Op::SetLen));
        }
        self.inner.set_len(len)
    }
    fn sync(&self) -> io::Result<()> {
        if self.plan.hit(Op::Sync) {
            return Err(injected(Op::Sync));
        }
        self.inner.sync()
    }
}

impl Backend for FailingBackend {
    fn open(&self, name: &str, create: bool) -> io::Result<Option<Arc<dyn Storage>>> {
        if self.plan.hit(Op::Open) {
            return Err(injected(Op::Open));
        }
        Ok(self.inner.open(name, create)?.map(|s| {
            Arc::new(FailingStorage {
                inner: s,
                plan: self.plan.clone(),
            }) as Arc<dyn Storage>
        }))
    }
    fn open_read(&self, name: &str) -> io::Result<Option<Arc<dyn Storage>>> {
        if self.plan.hit(Op::Open) {
            return Err(injected(Op::Open));
        }
        Ok(self.inner.open_read(name)?.map(|s| {
            Arc::new(FailingStorage {
                inner: s,
                plan: self.plan.clone(),
            }) as Arc<dyn Storage>
        }))
    }
    fn remove(&self, name: &str) -> io::Result<()> {
        if self.plan.hit(Op::Remove) {
            return Err(injected(Op::Remove));
        }
        self.inner.remove(name)
    }
    fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        if self.plan.hit(Op::Rename) {
            return Err(injected(Op::Rename));
        }
        self.inner.rename(from, to)
    }
    fn list(&self) -> io::Result<Vec<String>> {
        self.inner.list()
    }
    fn path_of(&self, name: &str) -> PathBuf {
        self.inner.path_of(name)
    }
}
