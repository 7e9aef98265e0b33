//! Key files: one per key space, a 64-byte header then fixed-width little-endian f32 rows in
//! log order (in cosine spaces, each key divided by its norm: [`normalised`](crate::index::kernels::normalised)). They are derived from the log: rows the header does not vouch for are rewritten
//! from the log on open, and a file that does not match the log is rebuilt (a new file renamed
//! over the old name, never truncated in place). Layout: `format-spec.md`, "Key files".

use std::path::PathBuf;
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::format::codec::{ix, off, u32_at, u64_at};
use crate::format::record::{elem_code, le_f32s, metric_code, Metric, SpaceDef};
use crate::index::kernels::normalise_in_place;
use crate::storage::mmap::MappedFile;
use crate::storage::{create_fresh, Backend, Storage};

/// Magic bytes at offset 0 of a key file.
pub const KEY_MAGIC: [u8; 8] = *b"TRAJDBKV";
/// Key-file format version. Version 2 stores cosine keys normalised; a file of another
/// version is rebuilt from the log by a writer and not used by a reader.
pub const KEY_VERSION: u32 = 2;
/// Size of the key-file header; rows start here.
pub const KEY_HEADER_LEN: u64 = 64;
/// Rows are reserved in the file this many at a time at least.
const MIN_RESERVE_ROWS: u64 = 64;

/// Offsets inside the key-file header.
pub mod header {
    /// Magic, 8 bytes.
    pub const MAGIC: usize = 0;
    /// Version, u32.
    pub const VERSION: usize = 8;
    /// Key-space id, u32.
    pub const SPACE_ID: usize = 12;
    /// Dimensions, u32.
    pub const DIMS: usize = 16;
    /// Element type code, u8.
    pub const ELEM: usize = 20;
    /// Metric code, u8.
    pub const METRIC: usize = 21;
    /// Reserved, u16, zero.
    pub const RESERVED0: usize = 22;
    /// Row stride in bytes, u32.
    pub const STRIDE: usize = 24;
    /// Reserved, u32, zero.
    pub const RESERVED1: usize = 28;
    /// Rows synced and vouched for, u64.
    pub const ROWS: usize = 32;
    /// Identity of the log these rows came from, u64.
    pub const LOG_ID: usize = 40;
    /// CRC-32 of the bytes of the first `rows` rows, u32.
    pub const ROWS_CRC: usize = 48;
    /// Reserved, 8 zero bytes.
    pub const RESERVED2: usize = 52;
    /// CRC-32 of bytes 0..60.
    pub const CRC: usize = 60;
}

/// File name of the key file of space `id`.
pub fn key_file_name(id: u32) -> String {
    format!("keys-{id}.vec")
}

/// The bytes a key file stores for a key whose log bytes are `log_row` (little-endian f32):
/// in a cosine space the key divided by its Euclidean norm ([`normalised`]), else the log
/// bytes themselves. `buf` is scratch for the normalised form.
///
/// [`normalised`]: crate::index::kernels::normalised
pub(crate) fn stored_row<'a>(metric: Metric, log_row: &'a [u8], buf: &'a mut Vec<u8>) -> &'a [u8] {
    if metric != Metric::Cosine {
        return log_row;
    }
    let mut v = le_f32s(log_row);
    normalise_in_place(&mut v);
    buf.clear();
    buf.extend(v.iter().flat_map(|x| x.to_le_bytes()));
    buf
}

struct KeyHeader {
    space_id: u32,
    dims: u32,
    elem: u8,
    metric: u8,
    rows: u64,
    log_id: u64,
    rows_crc: u32,
}

fn encode_key_header(h: &KeyHeader) -> [u8; 64] {
    let mut b = [0u8; 64];
    b[..8].copy_from_slice(&KEY_MAGIC);
    b[header::VERSION..header::VERSION + 4].copy_from_slice(&KEY_VERSION.to_le_bytes());
    b[header::SPACE_ID..header::SPACE_ID + 4].copy_from_slice(&h.space_id.to_le_bytes());
    b[header::DIMS..header::DIMS + 4].copy_from_slice(&h.dims.to_le_bytes());
    b[header::ELEM] = h.elem;
    b[header::METRIC] = h.metric;
    let stride = h.dims.saturating_mul(4);
    b[header::STRIDE..header::STRIDE + 4].copy_from_slice(&stride.to_le_bytes());
    b[header::ROWS..header::ROWS + 8].copy_from_slice(&h.rows.to_le_bytes());
    b[header::LOG_ID..header::LOG_ID + 8].copy_from_slice(&h.log_id.to_le_bytes());
    b[header::ROWS_CRC..header::ROWS_CRC + 4].copy_from_slice(&h.rows_crc.to_le_bytes());
    let crc = crc32fast::hash(&b[..header::CRC]);
    b[header::CRC..].copy_from_slice(&crc.to_le_bytes());
    b
}

/// Why a key-file header is unusable, or the header.
fn decode_key_header(b: &[u8; 64]) -> std::result::Result<KeyHeader, String> {
    if b[..8] != KEY_MAGIC {
        return Err("magic bytes are wrong".into());
    }
    let crc = crc32fast::hash(&b[..header::CRC]);
    if crc != u32_at(b, header::CRC) {
        return Err("header checksum mismatch".into());
    }
    if u32_at(b, header::VERSION) != KEY_VERSION {
        return Err(format!(
            "key-file version {} is not {KEY_VERSION}",
            u32_at(b, header::VERSION)
        ));
    }
    let reserved = [
        header::RESERVED0..header::RESERVED0 + 2,
        header::RESERVED1..header::RESERVED1 + 4,
        header::RESERVED2..header::CRC,
    ];
    if reserved.into_iter().any(|r| b[r].iter().any(|&x| x != 0)) {
        return Err("reserved header bytes are not zero".into());
    }
    let dims = u32_at(b, header::DIMS);
    if u32_at(b, header::STRIDE) != dims.saturating_mul(4) {
        return Err("row stride does not match dimensions".into());
    }
    Ok(KeyHeader {
        space_id: u32_at(b, header::SPACE_ID),
        dims,
        elem: b[header::ELEM],
        metric: b[header::METRIC],
        rows: u64_at(b, header::ROWS),
        log_id: u64_at(b, header::LOG_ID),
        rows_crc: u32_at(b, header::ROWS_CRC),
    })
}

/// The rows of one key space: mapped from its key file, or held on the heap when the
/// backend has no mappable files or the database is read-only.
pub(crate) struct RowStore {
    dims: usize,
    rows: usize,
    /// The space's metric: cosine rows are stored normalised ([`stored_row`]).
    metric: Metric,
    /// Scratch for the stored form of the row being pushed.
    row_buf: Vec<u8>,
    kind: StoreKind,
    /// Set when a writer's key file turned out to vouch for rows that differ from the
    /// log's: the rows went to the heap from there, and [`settle`](Self::settle) writes
    /// them to a new key file (space id, definition, log id).
    rebuild: Option<(u32, SpaceDef, u64)>,
    /// Rows trusted from a checkpoint without being read at open, checked once on first
    /// use ([`all_checked`](Self::all_checked)).
    pending: Option<PendingCheck>,
}

/// The leading `rows` rows of a store opened from a checkpoint, whose stored bytes must
/// have CRC-32 `crc`: open does not read them (so it does not grow with the data); the
/// first search or build that reads the rows checks them once per handle.
struct PendingCheck {
    rows: usize,
    crc: u32,
    /// The key file, for the error.
    path: PathBuf,
    /// The outcome, computed once: Err holds the computed checksum.
    outcome: std::sync::OnceLock<std::result::Result<(), u32>>,
}

/// A point to roll a [`RowStore`] back to (see [`RowStore::mark`]).
pub(crate) struct RowMark {
    rows: usize,
    hasher: Option<crc32fast::Hasher>,
}

enum StoreKind {
    Heap(Vec<f32>),
    File(FileRows),
    /// A read-only map of a key file whose header vouches for `vouched` rows (checksum
    /// checked at open). Rows past those turn the store into a heap store.
    Mapped {
        map: MappedFile,
        vouched: usize,
        /// CRC-32 of the vouched rows' bytes (the header's, checked at open or continued
        /// from a checkpoint's).
        crc: u32,
    },
}

struct FileRows {
    storage: Arc<dyn Storage>,
    /// The key space's definition (to rebuild the file, see `RowStore::rebuild`).
    def: SpaceDef,
    path: PathBuf,
    space_id: u32,
    elem: u8,
    metric: u8,
    log_id: u64,
    /// Rows already in the file that the header vouches for (not rewritten on open).
    trusted: usize,
    /// Rows the file has room for.
    capacity: u64,
    map: Option<MappedFile>,
    /// Heap mirror used when the storage is not an OS file (in-memory backends).
    mirror: Option<Vec<f32>>,
    /// CRC-32 state over the bytes of every row so far.
    hasher: crc32fast::Hasher,
}

/// The first `n` floats of a mapped key file's row region (empty if the map is shorter or
/// misaligned, which the callers' row counts rule out).
fn rows_of(map: &MappedFile, n: usize) -> &[f32] {
    let start = usize::try_from(KEY_HEADER_LEN).unwrap_or(0);
    map.after(start)
        .get(..n * 4)
        .and_then(|b| bytemuck::try_cast_slice(b).ok())
        .unwrap_or(&[])
}

/// CRC-32 state over the first `rows` rows of a key file, read in large chunks.
fn hash_rows(s: &dyn Storage, rows: u64, stride: u64) -> std::io::Result<crc32fast::Hasher> {
    hash_rows_from(s, crc32fast::Hasher::new(), 0, rows, stride)
}

/// `h` (the CRC-32 state over rows `0..from`) continued over rows `from..to` of a key file.
fn hash_rows_from(
    s: &dyn Storage,
    mut h: crc32fast::Hasher,
    from: u64,
    to: u64,
    stride: u64,
) -> std::io::Result<crc32fast::Hasher> {
    let start = from.saturating_mul(stride);
    let total = to.saturating_mul(stride);
    let mut buf =
        vec![0u8; usize::try_from(total.saturating_sub(start).min(8 << 20)).unwrap_or(8 << 20)];
    let mut done = start;
    while done < total {
        let n = usize::try_from((total - done).min(off(buf.len()))).unwrap_or(buf.len());
        s.read_at(&mut buf[..n], KEY_HEADER_LEN + done)?;
        h.update(&buf[..n]);
        done += off(n);
    }
    Ok(h)
}

impl RowStore {
    /// For a read-only handle: maps key file `id` when its header matches the space and
    /// the log and its rows' checksum holds; otherwise a heap store filled from the log.
    /// Rows the file vouches for are never rewritten by a writer (a rebuild renames a new
    /// file over the name), so the map stays valid while another process writes.
    pub(crate) fn open_read_only(
        backend: &dyn Backend,
        id: u32,
        def: &SpaceDef,
        log_id: u64,
    ) -> Result<Self> {
        let dims = ix(def.dims);
        let heap = RowStore::heap(def);
        let name = key_file_name(id);
        let Ok(Some(s)) = backend.open_read(&name) else {
            return Ok(heap);
        };
        let Some(file) = s.file() else {
            return Ok(heap);
        };
        let Ok(len) = s.len() else {
            return Ok(heap);
        };
        let Ok(len_us) = usize::try_from(len) else {
            return Ok(heap);
        };
        if len < KEY_HEADER_LEN {
            return Ok(heap);
        }
        let Ok(map) = MappedFile::map(file, len_us) else {
            return Ok(heap);
        };
        // The header is rewritten in place at checkpoints, so it is read with `read_at`,
        // never through the map; the map is only read in the row region.
        let mut b = [0u8; 64];
        if s.read_at(&mut b, 0).is_err() {
            return Ok(heap);
        }
        let Ok(h) = decode_key_header(&b) else {
            return Ok(heap);
        };
        let stride = u64::from(def.dims) * 4;
        let Some(end) = h
            .rows
            .checked_mul(stride)
            .and_then(|n| n.checked_add(KEY_HEADER_LEN))
            .filter(|&e| e <= len)
        else {
            return Ok(heap);
        };
        let matches = h.space_id == id
            && h.dims == def.dims
            && h.elem == elem_code(def.elem)
            && h.metric == metric_code(def.metric)
            && h.log_id == log_id;
        let start = usize::try_from(KEY_HEADER_LEN).unwrap_or(64);
        let row_bytes = usize::try_from(end).unwrap_or(start) - start;
        let rows = map.after(start).get(..row_bytes).unwrap_or(&[]);
        if !matches || rows.len() != row_bytes || crc32fast::hash(rows) != h.rows_crc {
            return Ok(heap);
        }
        Ok(RowStore {
            dims,
            rows: 0,
            metric: def.metric,
            row_buf: Vec::new(),
            rebuild: None,
            pending: None,
            kind: StoreKind::Mapped {
                map,
                vouched: usize::try_from(h.rows).unwrap_or(0),
                crc: h.rows_crc,
            },
        })
    }

    /// A store that keeps the rows of space `def` on the heap only.
    pub(crate) fn heap(def: &SpaceDef) -> Self {
        RowStore {
            dims: ix(def.dims),
            rows: 0,
            metric: def.metric,
            row_buf: Vec::new(),
            rebuild: None,
            pending: None,
            kind: StoreKind::Heap(Vec::new()),
        }
    }

    /// Opens (or creates, or rebuilds) the key file of space `id` for a writer.
    pub(crate) fn open(
        backend: &dyn Backend,
        id: u32,
        def: &SpaceDef,
        log_id: u64,
    ) -> Result<Self> {
        let name = key_file_name(id);
        usize::try_from(def.dims).map_err(|_| Error::TooLarge {
            what: "key dimensions".into(),
            len: u64::from(def.dims),
            max: u64::from(u32::MAX),
        })?;
        let want = KeyHeader {
            space_id: id,
            dims: def.dims,
            elem: elem_code(def.elem),
            metric: metric_code(def.metric),
            rows: 0,
            log_id,
            rows_crc: crc32fast::hash(&[]),
        };
        let io = |op, e| Error::io(op, backend.path_of(&name), e);
        let mut trusted = 0u64;
        let mut rows_hasher = crc32fast::Hasher::new();
        let mut storage = None;
        if let Some(s) = backend.open(&name, false).map_err(|e| io("open", e))? {
            let mut b = [0u8; 64];
            let len = s.len().map_err(|e| io("stat", e))?;
            if len >= KEY_HEADER_LEN && s.read_at(&mut b, 0).is_ok() {
                if let Ok(h) = decode_key_header(&b) {
                    let stride = u64::from(def.dims) * 4;
                    let fits = h.rows.saturating_mul(stride).saturating_add(KEY_HEADER_LEN) <= len;
                    if h.space_id == id
                        && h.dims == def.dims
                        && h.elem == want.elem
                        && h.metric == want.metric
                        && h.log_id == log_id
                        && fits
                    {
                        // Rows are vouched for only if their checksum holds; damaged rows
                        // make the whole file be rebuilt from the log.
                        let hasher =
                            hash_rows(s.as_ref(), h.rows, stride).map_err(|e| io("read", e))?;
                        if hasher.clone().finalize() == h.rows_crc {
                            trusted = h.rows;
                            rows_hasher = hasher;
                            storage = Some(s);
                        }
                    }
                }
            }
        }
        let storage = match storage {
            Some(s) => s,
            None => {
                // Build a fresh file beside the old one and rename it over: never truncate a
                // file that a reader may have mapped.
                let tmp = format!("{name}.new");
                let s = create_fresh(backend, &tmp)?;
                s.write_at(&encode_key_header(&want), 0)
                    .map_err(|e| io("write", e))?;
                s.sync().map_err(|e| io("sync", e))?;
                backend.rename(&tmp, &name).map_err(|e| io("rename", e))?;
                s
            }
        };
        Self::file_store(backend, storage, id, def, log_id, trusted, rows_hasher, 0)
    }

    /// A writer's store over key file `id` whose first `trusted` rows the header vouches for
    /// (`hasher` is the CRC-32 state over them), holding `rows` rows so far.
    #[expect(clippy::too_many_arguments, reason = "the parts of one store, named")]
    fn file_store(
        backend: &dyn Backend,
        storage: Arc<dyn Storage>,
        id: u32,
        def: &SpaceDef,
        log_id: u64,
        trusted: u64,
        rows_hasher: crc32fast::Hasher,
        rows: usize,
    ) -> Result<Self> {
        let name = key_file_name(id);
        let path = backend.path_of(&name);
        let io = |op, e| Error::io(op, backend.path_of(&name), e);
        let dims = ix(def.dims);
        let len = storage.len().map_err(|e| io("stat", e))?;
        let stride = u64::from(def.dims) * 4;
        let capacity = len
            .saturating_sub(KEY_HEADER_LEN)
            .checked_div(stride)
            .unwrap_or(u64::MAX);
        let mut fr = FileRows {
            storage,
            def: def.clone(),
            path,
            space_id: id,
            elem: elem_code(def.elem),
            metric: metric_code(def.metric),
            log_id,
            trusted: usize::try_from(trusted).unwrap_or(usize::MAX),
            capacity,
            map: None,
            mirror: None,
            hasher: rows_hasher,
        };
        if fr.storage.file().is_some() {
            fr.remap()?;
        } else {
            let n = usize::try_from(trusted)
                .ok()
                .and_then(|t| t.checked_mul(dims))
                .ok_or_else(|| io("read", std::io::ErrorKind::InvalidData.into()))?;
            let mut bytes = vec![0u8; n * 4];
            fr.storage
                .read_at(&mut bytes, KEY_HEADER_LEN)
                .map_err(|e| io("read", e))?;
            fr.mirror = Some(
                bytes
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect(),
            );
        }
        Ok(RowStore {
            dims,
            rows,
            metric: def.metric,
            row_buf: Vec::new(),
            rebuild: None,
            pending: None,
            kind: StoreKind::File(fr),
        })
    }

    /// Opens key file `id` for a database opened from a checkpoint that records `rows` rows
    /// of this space whose bytes have CRC-32 `rows_crc`. Those rows are trusted without
    /// being read: the header must match the space and the log and vouch for at least
    /// them, and the rows it vouches for beyond them (commits after the checkpoint) must
    /// continue `rows_crc` to the header's checksum, which reads only those rows. `Ok(Err)`
    /// says why the file cannot stand in for the checkpoint's rows (then open scans the log).
    pub(crate) fn open_checkpointed(
        backend: &dyn Backend,
        id: u32,
        def: &SpaceDef,
        log_id: u64,
        rows: u64,
        rows_crc: u32,
        read_only: bool,
    ) -> Result<std::result::Result<Self, String>> {
        if rows == 0 {
            // Nothing to trust: the ordinary open (which reads only rows vouched for since).
            return if read_only {
                Self::open_read_only(backend, id, def, log_id).map(Ok)
            } else {
                Self::open(backend, id, def, log_id).map(Ok)
            };
        }
        let name = key_file_name(id);
        let io = |op, e| Error::io(op, backend.path_of(&name), e);
        let opened = if read_only {
            backend.open_read(&name)
        } else {
            backend.open(&name, false)
        };
        let Some(s) = opened.map_err(|e| io("open", e))? else {
            return Ok(Err("the key file is missing".into()));
        };
        let len = s.len().map_err(|e| io("stat", e))?;
        let mut b = [0u8; 64];
        if len < KEY_HEADER_LEN {
            return Ok(Err("the key file is shorter than its header".into()));
        }
        s.read_at(&mut b, 0).map_err(|e| io("read", e))?;
        let h = match decode_key_header(&b) {
            Ok(h) => h,
            Err(why) => return Ok(Err(format!("header: {why}"))),
        };
        let stride = u64::from(def.dims) * 4;
        let matches = h.space_id == id
            && h.dims == def.dims
            && h.elem == elem_code(def.elem)
            && h.metric == metric_code(def.metric)
            && h.log_id == log_id;
        if !matches {
            return Ok(Err("the header names another space or log".into()));
        }
        if h.rows < rows {
            return Ok(Err(format!(
                "the header vouches for {} rows, fewer than the checkpoint's {rows}",
                h.rows
            )));
        }
        let fits = h
            .rows
            .checked_mul(stride)
            .and_then(|n| n.checked_add(KEY_HEADER_LEN));
        if fits.is_none_or(|e| e > len) {
            return Ok(Err(
                "the rows the header vouches for do not fit in the file".into(),
            ));
        }
        let hasher = hash_rows_from(
            s.as_ref(),
            crc32fast::Hasher::new_with_initial(rows_crc),
            rows,
            h.rows,
            stride,
        )
        .map_err(|e| io("read", e))?;
        if hasher.clone().finalize() != h.rows_crc {
            return Ok(Err(
                "the header's checksum does not continue the checkpoint's".into(),
            ));
        }
        let n_rows = usize::try_from(rows)
            .map_err(|_| io("read", std::io::ErrorKind::InvalidData.into()))?;
        let pending = || {
            Some(PendingCheck {
                rows: n_rows,
                crc: rows_crc,
                path: backend.path_of(&name),
                outcome: std::sync::OnceLock::new(),
            })
        };
        if !read_only {
            let mut store = Self::file_store(backend, s, id, def, log_id, h.rows, hasher, n_rows)?;
            store.pending = pending();
            return Ok(Ok(store));
        }
        let Some(file) = s.file() else {
            return Ok(Err("the key file cannot be mapped".into()));
        };
        let len_us =
            usize::try_from(len).map_err(|_| io("mmap", std::io::ErrorKind::InvalidData.into()))?;
        let map = MappedFile::map(file, len_us).map_err(|e| io("mmap", e))?;
        Ok(Ok(RowStore {
            dims: ix(def.dims),
            rows: n_rows,
            metric: def.metric,
            row_buf: Vec::new(),
            rebuild: None,
            pending: None,
            kind: StoreKind::Mapped {
                map,
                vouched: usize::try_from(h.rows).unwrap_or(0),
                crc: h.rows_crc,
            },
        })
        .map(|mut store| {
            store.pending = pending();
            store
        }))
    }

    /// The rows and their checksum when the key file's header vouches for every row this
    /// store holds (a writer's store after a key-file checkpoint); None otherwise.
    pub(crate) fn vouched(&self) -> Option<(u64, u32)> {
        match &self.kind {
            StoreKind::File(f) if f.trusted == self.rows => {
                Some((off(self.rows), f.hasher.clone().finalize()))
            }
            _ => None,
        }
    }

    /// Leading rows `0..n` of this store and the CRC-32 of their stored bytes, when the
    /// store knows it without reading them: a writer's running checksum over every row
    /// (vouched for by the key file's header, or appended from the log since), or the
    /// checksum a read-only map's header vouches for (checked at open). `None` for heap
    /// stores, and while the store holds fewer rows than its file vouches for.
    pub(crate) fn known_crc(&self) -> Option<(usize, u32)> {
        match &self.kind {
            StoreKind::File(f) if self.rows >= f.trusted => {
                Some((self.rows, f.hasher.clone().finalize()))
            }
            StoreKind::Mapped { vouched, crc, .. } if *vouched <= self.rows => {
                Some((*vouched, *crc))
            }
            _ => None,
        }
    }

    /// Number of rows.
    pub(crate) fn len(&self) -> usize {
        self.rows
    }

    /// All rows, row-major, `len() * dims` floats.
    pub(crate) fn all(&self) -> &[f32] {
        let n = self.rows * self.dims;
        match &self.kind {
            StoreKind::Heap(v) => &v[..n],
            StoreKind::Mapped { map, .. } => rows_of(map, n),
            StoreKind::File(f) => {
                if let Some(m) = &f.mirror {
                    return &m[..n];
                }
                match &f.map {
                    Some(map) => rows_of(map, n),
                    None => &[],
                }
            }
        }
    }

    /// [`all`](Self::all), after checking once per handle that the rows a checkpoint
    /// vouched for without their being read at open still have the checksum it recorded
    /// (about 1 ms per 10 MB of rows, paid by the first search, retrieval or build that
    /// reads this space).
    ///
    /// Errors: [`Error::Corrupt`] naming the key file when they do not: a damaged key
    /// file. Nothing committed is lost (the log holds every row); `trajdb verify` reports
    /// it and `trajdb compact`, or removing the `checkpoint` file, rebuilds the file.
    pub(crate) fn all_checked(&self) -> Result<&[f32]> {
        self.check_rows()?;
        Ok(self.all())
    }

    /// The check of [`all_checked`](Self::all_checked) alone.
    pub(crate) fn check_rows(&self) -> Result<()> {
        let Some(p) = &self.pending else {
            return Ok(());
        };
        let outcome = p.outcome.get_or_init(|| {
            let rows = self.all().get(..p.rows * self.dims).unwrap_or(&[]);
            let got = if rows.len() == p.rows * self.dims {
                crc32fast::hash(bytemuck::cast_slice(rows))
            } else {
                // Fewer rows mapped than vouched for: never the recorded checksum's bytes.
                !p.crc
            };
            if got == p.crc {
                Ok(())
            } else {
                Err(got)
            }
        });
        match outcome {
            Ok(()) => Ok(()),
            Err(got) => Err(Error::Corrupt {
                path: p.path.clone(),
                offset: KEY_HEADER_LEN,
                what: format!(
                    "the {} key rows the checkpoint vouches for do not have the checksum it \
                     recorded (recorded {:#010x}, computed {got:#010x}): the key file is \
                     damaged; the log still holds every row: `trajdb verify` reports it, and \
                     `trajdb compact` (or removing the `checkpoint` file) rebuilds the key file",
                    p.rows, p.crc
                ),
            }),
        }
    }

    /// Row `i`.
    pub(crate) fn row(&self, i: usize) -> &[f32] {
        &self.all()[i * self.dims..(i + 1) * self.dims]
    }

    /// Where the store stands now, to [`rollback`](Self::rollback) to if a commit fails part
    /// way through writing its rows.
    pub(crate) fn mark(&self) -> RowMark {
        RowMark {
            rows: self.rows,
            hasher: match &self.kind {
                StoreKind::File(f) => Some(f.hasher.clone()),
                _ => None,
            },
        }
    }

    /// Forgets every row pushed since `mark`. Bytes already written past the kept rows are
    /// not vouched for by any header and are overwritten by the next push.
    pub(crate) fn rollback(&mut self, mark: RowMark) {
        let n = mark.rows.min(self.rows);
        let dims = self.dims;
        match &mut self.kind {
            StoreKind::Heap(h) => h.truncate(n * dims),
            StoreKind::Mapped { .. } => {}
            StoreKind::File(f) => {
                if let Some(h) = mark.hasher {
                    f.hasher = h;
                }
                if let Some(m) = &mut f.mirror {
                    m.truncate(n * dims);
                }
            }
        }
        self.rows = n;
    }

    /// Appends the key whose log bytes are `log_row` (little-endian f32, `dims * 4` of
    /// them), in its stored form ([`stored_row`]). During open, rows the key file already
    /// vouches for are only counted.
    pub(crate) fn push(&mut self, log_row: &[u8]) -> Result<()> {
        let mut buf = std::mem::take(&mut self.row_buf);
        let r = self.push_stored(stored_row(self.metric, log_row, &mut buf));
        self.row_buf = buf;
        r
    }

    fn push_stored(&mut self, bytes: &[u8]) -> Result<()> {
        let dims = self.dims;
        if let StoreKind::Mapped { vouched, map, .. } = &self.kind {
            // A row the file vouches for is used only when it equals the row in the log just
            // read: the file may vouch for rows of frames this handle's log no longer has
            // (its tail was cut and a writer appended other commits in their place).
            let stride = dims * 4;
            let start = usize::try_from(KEY_HEADER_LEN).unwrap_or(64) + self.rows * stride;
            let same = map.after(start).get(..stride) == Some(bytes);
            if self.rows < *vouched && same {
                self.rows += 1;
                return Ok(());
            }
            // Past what the file vouches for, or differing from the log: the heap from here.
            self.kind = StoreKind::Heap(self.all().to_vec());
        }
        if let StoreKind::File(f) = &self.kind {
            if self.rows < f.trusted {
                // As for a mapped file: a vouched row is kept only when it equals the log's
                // row (a key file copied from a diverged fork vouches for its own rows,
                // which are not this log's). From the first difference the rows go to the
                // heap, and `settle` writes them to a new file: the file's vouched rows are
                // never rewritten in place, since readers may have them mapped.
                if f.row_bytes(self.rows, dims) == Some(bytes) {
                    self.rows += 1;
                    return Ok(());
                }
                self.rebuild = Some((f.space_id, f.def.clone(), f.log_id));
                self.kind = StoreKind::Heap(self.all().to_vec());
            }
        }
        match &mut self.kind {
            StoreKind::Heap(h) => h.extend(le_f32s(bytes)),
            StoreKind::Mapped { .. } => {}
            StoreKind::File(f) => {
                let stride = off(dims) * 4;
                let row = off(self.rows);
                if row >= f.capacity {
                    let cap = (f.capacity.saturating_mul(2)).max(MIN_RESERVE_ROWS);
                    f.storage
                        .set_len(KEY_HEADER_LEN + cap * stride)
                        .map_err(|e| Error::io("grow", f.path.clone(), e))?;
                    if f.storage.file().is_some() {
                        f.remap()?;
                    }
                    // Only once the map covers the new room: a failed remap leaves the
                    // store as it was, and the next push grows and maps again.
                    f.capacity = cap;
                }
                f.storage
                    .write_at(bytes, KEY_HEADER_LEN + row * stride)
                    .map_err(|e| Error::io("write", f.path.clone(), e))?;
                f.hasher.update(bytes);
                if let Some(m) = &mut f.mirror {
                    m.truncate(self.rows * dims);
                    m.extend(le_f32s(bytes));
                }
            }
        }
        self.rows += 1;
        Ok(())
    }

    /// After open: when the key file vouched for more rows than the log holds (the log lost
    /// its tail), writes a new key file with the log's rows only and renames it over the old
    /// one, so rows another handle may have mapped are never overwritten in place.
    pub(crate) fn settle(&mut self, backend: &dyn Backend) -> Result<()> {
        let dims = self.dims;
        let rows = self.rows;
        if let (Some((id, def, log_id)), StoreKind::Heap(h)) = (&self.rebuild, &self.kind) {
            // The rows as the log has them, to a new file renamed over the one that differed.
            let name = key_file_name(*id);
            let tmp = format!("{name}.new");
            let s = create_fresh(backend, &tmp)?;
            let err = |op, e| Error::io(op, backend.path_of(&tmp), e);
            let bytes: Vec<u8> = h[..rows * dims]
                .iter()
                .flat_map(|x| x.to_le_bytes())
                .collect();
            let mut hasher = crc32fast::Hasher::new();
            hasher.update(&bytes);
            let header = KeyHeader {
                space_id: *id,
                dims: u32::try_from(dims).unwrap_or(u32::MAX),
                elem: elem_code(def.elem),
                metric: metric_code(def.metric),
                rows: off(rows),
                log_id: *log_id,
                rows_crc: hasher.clone().finalize(),
            };
            s.write_at(&encode_key_header(&header), 0)
                .map_err(|e| err("write", e))?;
            s.write_at(&bytes, KEY_HEADER_LEN)
                .map_err(|e| err("write", e))?;
            s.sync().map_err(|e| err("sync", e))?;
            backend.rename(&tmp, &name).map_err(|e| err("rename", e))?;
            let (id, def, log_id) = (*id, def.clone(), *log_id);
            *self = Self::file_store(backend, s, id, &def, log_id, off(rows), hasher, rows)?;
            return Ok(());
        }
        let StoreKind::File(f) = &mut self.kind else {
            return Ok(());
        };
        if rows >= f.trusted {
            return Ok(());
        }
        let name = key_file_name(f.space_id);
        let tmp = format!("{name}.new");
        let s = create_fresh(backend, &tmp)?;
        let err = |op, e| Error::io(op, backend.path_of(&tmp), e);
        let stride = off(dims) * 4;
        let mut bytes = vec![0u8; usize::try_from(off(rows) * stride).unwrap_or(0)];
        f.storage
            .read_at(&mut bytes, KEY_HEADER_LEN)
            .map_err(|e| Error::io("read", f.path.clone(), e))?;
        let mut hasher = crc32fast::Hasher::new();
        hasher.update(&bytes);
        let h = KeyHeader {
            space_id: f.space_id,
            dims: u32::try_from(dims).unwrap_or(u32::MAX),
            elem: f.elem,
            metric: f.metric,
            rows: off(rows),
            log_id: f.log_id,
            rows_crc: hasher.clone().finalize(),
        };
        s.write_at(&encode_key_header(&h), 0)
            .map_err(|e| err("write", e))?;
        s.write_at(&bytes, KEY_HEADER_LEN)
            .map_err(|e| err("write", e))?;
        s.sync().map_err(|e| err("sync", e))?;
        backend.rename(&tmp, &name).map_err(|e| err("rename", e))?;
        f.storage = s;
        f.trusted = rows;
        f.hasher = hasher;
        f.capacity = off(rows);
        if let Some(m) = &mut f.mirror {
            m.truncate(rows * dims);
        }
        if f.storage.file().is_some() {
            f.remap()?;
        }
        Ok(())
    }

    /// Syncs the rows, then records in the header that they are all vouched for.
    pub(crate) fn checkpoint(&mut self) -> Result<()> {
        if let StoreKind::File(f) = &mut self.kind {
            if f.trusted == self.rows {
                // The header already vouches for exactly these rows (synced before it was
                // written): nothing to sync or rewrite.
                return Ok(());
            }
            let err = |op, e| Error::io(op, f.path.clone(), e);
            f.storage.sync().map_err(|e| err("sync", e))?;
            let h = KeyHeader {
                space_id: f.space_id,
                dims: u32::try_from(self.dims).unwrap_or(u32::MAX),
                elem: f.elem,
                metric: f.metric,
                rows: off(self.rows),
                log_id: f.log_id,
                rows_crc: f.hasher.clone().finalize(),
            };
            f.storage
                .write_at(&encode_key_header(&h), 0)
                .map_err(|e| err("write", e))?;
            f.storage.sync().map_err(|e| err("sync", e))?;
            f.trusted = self.rows;
        }
        Ok(())
    }

    /// Bytes the key file takes (0 for heap stores).
    pub(crate) fn file_bytes(&self) -> u64 {
        match &self.kind {
            StoreKind::Heap(_) => 0,
            StoreKind::Mapped { map, .. } => off(map.len()),
            StoreKind::File(f) => f.storage.len().unwrap_or(0),
        }
    }

    /// Reads the header of the key file and checks it against what the log implies.
    pub(crate) fn check_header(&self) -> Result<()> {
        let StoreKind::File(f) = &self.kind else {
            return Ok(());
        };
        let mut b = [0u8; 64];
        f.storage
            .read_at(&mut b, 0)
            .map_err(|e| Error::io("read", f.path.clone(), e))?;
        let h = decode_key_header(&b).map_err(|what| Error::Corrupt {
            path: f.path.clone(),
            offset: 0,
            what,
        })?;
        if h.log_id != f.log_id || h.space_id != f.space_id || h.rows > off(self.rows) {
            return Err(Error::Corrupt {
                path: f.path.clone(),
                offset: 0,
                what: format!(
                    "header says {} rows of space {} from log {:#x}; the log has {} rows of space {} in log {:#x}",
                    h.rows, h.space_id, h.log_id, self.rows, f.space_id, f.log_id
                ),
            });
        }
        Ok(())
    }
}

/// Compares the rows that key file `id` vouches for with `rows` (derived from the log).
/// A missing key file is fine (it is rebuilt on the next writable open); a damaged, stale or
/// differing one is corruption. Returns the rows compared.
pub(crate) fn verify_file(
    backend: &dyn Backend,
    id: u32,
    def: &SpaceDef,
    log_id: u64,
    rows: &RowStore,
) -> Result<u64> {
    let name = key_file_name(id);
    let path = backend.path_of(&name);
    let Some(s) = backend
        .open_read(&name)
        .map_err(|e| Error::io("open", path.clone(), e))?
    else {
        return Ok(0);
    };
    let corrupt = |offset: u64, what: String| Error::Corrupt {
        path: path.clone(),
        offset,
        what,
    };
    let len = s.len().map_err(|e| Error::io("stat", path.clone(), e))?;
    let mut b = [0u8; 64];
    if len < KEY_HEADER_LEN {
        return Err(corrupt(
            0,
            format!("key file is {len} bytes, shorter than its header"),
        ));
    }
    s.read_at(&mut b, 0)
        .map_err(|e| Error::io("read", path.clone(), e))?;
    if b[..8] == KEY_MAGIC && u32_at(&b, header::VERSION) != KEY_VERSION {
        // A key file of another version (an earlier trajdb's): never used, and rebuilt by
        // the next writable open, like a missing one.
        return Ok(0);
    }
    let h = decode_key_header(&b).map_err(|what| corrupt(0, what))?;
    if h.space_id != id || h.dims != def.dims || h.log_id != log_id {
        return Err(corrupt(
            0,
            format!(
                "header names space {} ({} dims) of log {:#x}; expected space {id} ({} dims) of log {log_id:#x}",
                h.space_id, h.dims, h.log_id, def.dims
            ),
        ));
    }
    let stride = u64::from(def.dims) * 4;
    if KEY_HEADER_LEN + h.rows.saturating_mul(stride) > len {
        return Err(corrupt(
            0,
            format!("{} rows do not fit in {len} bytes", h.rows),
        ));
    }
    // A writer in another process may have vouched for rows this handle has not read yet:
    // those are checked against the header's checksum only.
    let n = usize::try_from(h.rows).unwrap_or(0);
    let known = rows.len();
    let mut hasher = crc32fast::Hasher::new();
    let mut buf = vec![0u8; usize::try_from(stride).unwrap_or(0)];
    for r in 0..n {
        let at = KEY_HEADER_LEN + off(r) * stride;
        s.read_at(&mut buf, at)
            .map_err(|e| Error::io("read", path.clone(), e))?;
        let same = r >= known
            || buf
                .chunks_exact(4)
                .zip(rows.row(r))
                .all(|(c, x)| c == x.to_le_bytes());
        if !same {
            return Err(corrupt(at, format!("row {r} differs from the log")));
        }
        hasher.update(&buf);
    }
    if hasher.finalize() != h.rows_crc {
        return Err(corrupt(
            u64::try_from(header::ROWS_CRC).unwrap_or(0),
            "checksum of the rows does not match the header".into(),
        ));
    }
    Ok(h.rows)
}

impl FileRows {
    /// The stored bytes of row `i` (`dims` floats), if the file holds it.
    fn row_bytes(&self, i: usize, dims: usize) -> Option<&[u8]> {
        if let Some(m) = &self.mirror {
            let row = m.get(i * dims..(i + 1) * dims)?;
            return Some(bytemuck::cast_slice(row));
        }
        let stride = dims * 4;
        let start = usize::try_from(KEY_HEADER_LEN).ok()? + i * stride;
        self.map.as_ref()?.after(start).get(..stride)
    }

    fn remap(&mut self) -> Result<()> {
        let Some(file) = self.storage.file() else {
            return Ok(());
        };
        let len = self
            .storage
            .len()
            .map_err(|e| Error::io("stat", self.path.clone(), e))?;
        let len = usize::try_from(len).map_err(|_| Error::TooLarge {
            what: "key file".into(),
            len,
            max: u64::MAX,
        })?;
        self.map =
            Some(MappedFile::map(file, len).map_err(|e| Error::io("mmap", self.path.clone(), e))?);
        Ok(())
    }
}
