//! Search-bounds files: the derived, in-memory bounds of a key space saved beside its key
//! file, so that the first search after an open loads them instead of recomputing them from
//! every key row: `quant-<space id>.idx` holds the quantised copy of the rows (module
//! `index::quant`), `bounds-<space id>.idx` a step-level space's per-trajectory bounds
//! (module `index::bounds`).
//!
//! A search-bounds file is derived and never trusted beyond what it proves: it is used only when
//! its header names this log, this space, its dimensions and metric, and exactly the row
//! count and key-row checksum that the checkpoint this handle opened from records for the
//! space (which is what the writer's key file vouched for when the file was written), and
//! when its body checksum and every structural check pass. Anything else (a missing, stale,
//! foreign, torn or damaged file) means the bounds are rebuilt from the rows, as without the
//! file. Layout: `format-spec.md`, "Search-bounds files".

use crate::format::codec::{off, u32_at, u64_at};
use std::sync::Arc;

use crate::format::record::Metric;
use crate::storage::mmap::{MappedFile, SharedArray, SharedBytes};
use crate::storage::{create_fresh, Backend};

/// Magic bytes at offset 0.
pub const BOUNDS_MAGIC: [u8; 8] = *b"TRAJDBBD";
/// Format version.
pub const BOUNDS_VERSION: u32 = 1;
/// Header length; the body starts here.
pub const BOUNDS_HEADER_LEN: u64 = 64;
/// Body kind: the quantised copy of a space's rows.
pub const KIND_QUANTISED_ROWS: u32 = 1;
/// Body kind: per-trajectory step bounds (with their quantised centroids).
pub const KIND_STEP_BOUNDS: u32 = 2;

/// Name of the bounds file of space `id`.
pub fn bounds_file_name(id: u32) -> String {
    format!("bounds-{id}.idx")
}

/// What a bounds file is derived from: the header's binding fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Binding {
    pub(crate) kind: u32,
    pub(crate) log_id: u64,
    pub(crate) space_id: u32,
    pub(crate) dims: u32,
    pub(crate) metric: u8,
    /// Key rows covered and the CRC-32 of their stored bytes.
    pub(crate) rows: u64,
    pub(crate) rows_crc: u32,
}

fn metric_byte(m: Metric) -> u8 {
    match m {
        Metric::Cosine => 0,
        Metric::Dot => 1,
        Metric::L2 => 2,
    }
}

impl Binding {
    pub(crate) fn new(
        kind: u32,
        log_id: u64,
        space_id: u32,
        dims: u32,
        metric: Metric,
        (rows, rows_crc): (u64, u32),
    ) -> Self {
        Binding {
            kind,
            log_id,
            space_id,
            dims,
            metric: metric_byte(metric),
            rows,
            rows_crc,
        }
    }
}

/// Offsets inside the 64-byte header.
pub mod header {
    /// Magic, 8 bytes.
    pub const MAGIC: usize = 0;
    /// Version, u32.
    pub const VERSION: usize = 8;
    /// Body kind, u32.
    pub const KIND: usize = 12;
    /// `log_id` of the log, u64.
    pub const LOG_ID: usize = 16;
    /// Key-space id, u32.
    pub const SPACE_ID: usize = 24;
    /// Dimensions, u32.
    pub const DIMS: usize = 28;
    /// Key rows covered, u64.
    pub const ROWS: usize = 32;
    /// CRC-32 of those key rows' stored bytes, u32.
    pub const ROWS_CRC: usize = 40;
    /// Metric code (0 cosine, 1 dot, 2 L2), u8, then 3 zero bytes.
    pub const METRIC: usize = 44;
    /// Body length, u64.
    pub const BODY_LEN: usize = 48;
    /// CRC-32 of the body, u32.
    pub const BODY_CRC: usize = 56;
    /// CRC-32 of bytes 0..60, u32.
    pub const CRC: usize = 60;
}

/// Little-endian writer of a body: fixed-width arrays, each padded to 8 bytes.
#[derive(Default)]
pub(crate) struct BodyWriter {
    pub(crate) out: Vec<u8>,
}

impl BodyWriter {
    pub(crate) fn u64(&mut self, x: u64) {
        self.out.extend_from_slice(&x.to_le_bytes());
    }
    pub(crate) fn u64s(&mut self, xs: impl IntoIterator<Item = u64>) {
        for x in xs {
            self.out.extend_from_slice(&x.to_le_bytes());
        }
    }
    pub(crate) fn f64s(&mut self, xs: impl IntoIterator<Item = f64>) {
        for x in xs {
            self.out.extend_from_slice(&x.to_le_bytes());
        }
        self.pad();
    }
    pub(crate) fn f32s(&mut self, xs: &[f32]) {
        for x in xs {
            self.out.extend_from_slice(&x.to_le_bytes());
        }
        self.pad();
    }
    pub(crate) fn u32s(&mut self, xs: &[u32]) {
        for x in xs {
            self.out.extend_from_slice(&x.to_le_bytes());
        }
        self.pad();
    }
    pub(crate) fn i8s(&mut self, xs: &[i8]) {
        self.out.extend(xs.iter().map(|&x| x.to_le_bytes()[0]));
        self.pad();
    }
    fn pad(&mut self) {
        let n = self.out.len().next_multiple_of(8);
        self.out.resize(n, 0);
    }
}

/// Reader of a body written by [`BodyWriter`]: every count is checked against the bytes
/// left before anything is allocated.
pub(crate) struct BodyReader<'a> {
    b: &'a [u8],
    at: usize,
    /// The bytes `b` lies in and where `b` starts in them: arrays read with the `*_shared`
    /// methods are then views of those bytes instead of copies (little-endian machines).
    shared: Option<(Arc<SharedBytes>, usize)>,
}

impl<'a> BodyReader<'a> {
    pub(crate) fn new(b: &'a [u8]) -> Self {
        BodyReader {
            b,
            at: 0,
            shared: None,
        }
    }

    /// A reader of `b`, which starts at byte `start` of `shared`.
    pub(crate) fn over_shared(b: &'a [u8], shared: Arc<SharedBytes>, start: usize) -> Self {
        BodyReader {
            b,
            at: 0,
            shared: Some((shared, start)),
        }
    }

    /// `n` records of `T` as a view of the shared bytes when there are some and the
    /// machine is little-endian, else as a copy decoded by `decode` from each record's
    /// little-endian bytes.
    fn array_shared<T: bytemuck::Pod>(
        &mut self,
        n: u64,
        what: &str,
        decode: impl Fn(&[u8]) -> T,
    ) -> Result<SharedArray<T>, String> {
        let size = std::mem::size_of::<T>();
        let at = self.at;
        let s = self.take(n, size, what)?;
        if cfg!(target_endian = "little") {
            if let Some((bytes, start)) = &self.shared {
                let count = s.len() / size.max(1);
                if let Some(v) = SharedArray::view(bytes.clone(), start + at, count) {
                    return Ok(v);
                }
            }
        }
        Ok(SharedArray::owned(
            s.chunks_exact(size).map(decode).collect(),
        ))
    }

    pub(crate) fn i8s_shared(&mut self, n: u64, what: &str) -> Result<SharedArray<i8>, String> {
        self.array_shared(n, what, |c| i8::from_le_bytes([c[0]]))
    }

    pub(crate) fn f32s_shared(&mut self, n: u64, what: &str) -> Result<SharedArray<f32>, String> {
        self.array_shared(n, what, |c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
    }

    pub(crate) fn f32x3s_shared(
        &mut self,
        n: u64,
        what: &str,
    ) -> Result<SharedArray<[f32; 3]>, String> {
        self.array_shared(n, what, |c| {
            let f = |i: usize| f32::from_le_bytes([c[i], c[i + 1], c[i + 2], c[i + 3]]);
            [f(0), f(4), f(8)]
        })
    }

    fn take(&mut self, n: u64, size: usize, what: &str) -> Result<&'a [u8], String> {
        let left = self.b.len() - self.at;
        let bytes = usize::try_from(n)
            .ok()
            .and_then(|n| n.checked_mul(size))
            .filter(|&b| b <= left)
            .ok_or_else(|| format!("{what}: {n} items do not fit in the {left} bytes left"))?;
        let s = &self.b[self.at..self.at + bytes];
        let padded = bytes.next_multiple_of(8).min(left);
        if self.b[self.at + bytes..self.at + padded]
            .iter()
            .any(|&x| x != 0)
        {
            return Err(format!("{what}: padding is not zero"));
        }
        self.at += padded;
        Ok(s)
    }

    pub(crate) fn u64(&mut self, what: &str) -> Result<u64, String> {
        let s = self.take(1, 8, what)?;
        Ok(u64::from_le_bytes(
            s.try_into().map_err(|_| what.to_owned())?,
        ))
    }
    pub(crate) fn u64s(&mut self, n: u64, what: &str) -> Result<Vec<u64>, String> {
        let s = self.take(n, 8, what)?;
        Ok(s.chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().unwrap_or([0; 8])))
            .collect())
    }
    pub(crate) fn f64s(&mut self, n: u64, what: &str) -> Result<Vec<f64>, String> {
        let s = self.take(n, 8, what)?;
        Ok(s.chunks_exact(8)
            .map(|c| f64::from_le_bytes(c.try_into().unwrap_or([0; 8])))
            .collect())
    }
    pub(crate) fn u32s(&mut self, n: u64, what: &str) -> Result<Vec<u32>, String> {
        let s = self.take(n, 4, what)?;
        Ok(s.chunks_exact(4)
            .map(|c| u32::from_le_bytes(c.try_into().unwrap_or([0; 4])))
            .collect())
    }
    /// Fails unless every byte was read.
    pub(crate) fn finish(self) -> Result<(), String> {
        if self.at == self.b.len() {
            Ok(())
        } else {
            Err(format!(
                "{} bytes after the last array",
                self.b.len() - self.at
            ))
        }
    }
}

/// A whole bounds file: header for `binding`, then `body`.
pub(crate) fn encode(binding: Binding, body: &[u8]) -> Vec<u8> {
    let mut h = [0u8; 64];
    h[header::MAGIC..header::MAGIC + 8].copy_from_slice(&BOUNDS_MAGIC);
    h[header::VERSION..header::VERSION + 4].copy_from_slice(&BOUNDS_VERSION.to_le_bytes());
    h[header::KIND..header::KIND + 4].copy_from_slice(&binding.kind.to_le_bytes());
    h[header::LOG_ID..header::LOG_ID + 8].copy_from_slice(&binding.log_id.to_le_bytes());
    h[header::SPACE_ID..header::SPACE_ID + 4].copy_from_slice(&binding.space_id.to_le_bytes());
    h[header::DIMS..header::DIMS + 4].copy_from_slice(&binding.dims.to_le_bytes());
    h[header::ROWS..header::ROWS + 8].copy_from_slice(&binding.rows.to_le_bytes());
    h[header::ROWS_CRC..header::ROWS_CRC + 4].copy_from_slice(&binding.rows_crc.to_le_bytes());
    h[header::METRIC] = binding.metric;
    h[header::BODY_LEN..header::BODY_LEN + 8].copy_from_slice(&off(body.len()).to_le_bytes());
    h[header::BODY_CRC..header::BODY_CRC + 4].copy_from_slice(&crc32fast::hash(body).to_le_bytes());
    let crc = crc32fast::hash(&h[..header::CRC]);
    h[header::CRC..].copy_from_slice(&crc.to_le_bytes());
    let mut out = Vec::with_capacity(64 + body.len());
    out.extend_from_slice(&h);
    out.extend_from_slice(body);
    out
}

/// The body of a bounds file held in `bytes` when its header is sound and carries exactly
/// `want`; else why not.
pub(crate) fn check(bytes: &[u8], want: Binding) -> Result<&[u8], String> {
    let h = bytes.get(..64).ok_or("shorter than its header")?;
    if h[header::MAGIC..header::MAGIC + 8] != BOUNDS_MAGIC {
        return Err("not a bounds file (magic)".into());
    }
    if crc32fast::hash(&h[..header::CRC]) != u32_at(h, header::CRC) {
        return Err("header checksum mismatch".into());
    }
    let version = u32_at(h, header::VERSION);
    if version != BOUNDS_VERSION {
        return Err(format!(
            "version {version}, this build reads {BOUNDS_VERSION}"
        ));
    }
    if h[header::METRIC + 1..header::METRIC + 4] != [0, 0, 0] {
        return Err("reserved header bytes are not zero".into());
    }
    let got = Binding {
        kind: u32_at(h, header::KIND),
        log_id: u64_at(h, header::LOG_ID),
        space_id: u32_at(h, header::SPACE_ID),
        dims: u32_at(h, header::DIMS),
        metric: h[header::METRIC],
        rows: u64_at(h, header::ROWS),
        rows_crc: u32_at(h, header::ROWS_CRC),
    };
    if got != want {
        return Err(format!(
            "derived from other rows or another space ({got:?}, this space has {want:?})"
        ));
    }
    let body = &bytes[64..];
    if off(body.len()) != u64_at(h, header::BODY_LEN) {
        return Err("the body's length is not the header's (a write cut short)".into());
    }
    if crc32fast::hash(body) != u32_at(h, header::BODY_CRC) {
        return Err("body checksum mismatch".into());
    }
    Ok(body)
}

/// Writes kind `kind`'s file of space `id`: to a temporary name, then renamed into place.
/// It is not synced: a torn or lost file fails its checks and the bounds are rebuilt.
fn write(backend: &dyn Backend, kind: u32, id: u32, bytes: &[u8]) -> std::io::Result<()> {
    let name = file_name(kind, id);
    let tmp = format!("{name}.new");
    let f = create_fresh(backend, &tmp).map_err(std::io::Error::other)?;
    f.write_at(bytes, 0)?;
    drop(f);
    backend.rename(&tmp, &name)
}

/// Where a space's bounds files may be loaded from: set for spaces of a database opened
/// from a checkpoint, with the row count and key-row checksum the checkpoint records.
#[derive(Clone)]
pub(crate) struct SavedFrom {
    pub(crate) backend: std::sync::Arc<dyn Backend>,
    pub(crate) log_id: u64,
    pub(crate) vouch: (u64, u32),
}

/// A space's bounds files as this handle knows them.
#[derive(Default)]
pub(crate) struct Saved {
    /// Set at open from a checkpoint; taken by the first load of each kind.
    pub(crate) from: Option<SavedFrom>,
    /// Rows the quantised-rows file covers (0: none known).
    pub(crate) quant_rows: u64,
    /// Rows the step-bounds file covers (0: none known).
    pub(crate) bounds_rows: u64,
    /// Loads done (tests and reports): quantised rows, step bounds.
    pub(crate) loaded: (bool, bool),
}

/// Kind `kind`'s file name for space `id`.
fn file_name(kind: u32, id: u32) -> String {
    if kind == KIND_STEP_BOUNDS {
        bounds_file_name(id)
    } else {
        quant_file_name(id)
    }
}

/// Name of the quantised-rows file of space `id`.
pub fn quant_file_name(id: u32) -> String {
    format!("quant-{id}.idx")
}

/// Loads the quantised copy of space `s` (id `id`) from its file into `q` when `q` is
/// empty and the file belongs to the rows this handle opened with. Never fails: a file
/// that does not prove itself is ignored.
pub(crate) fn prime_quant(s: &crate::db::Space, id: u32, q: &mut crate::index::quant::QuantRows) {
    if q.rows() != 0 {
        return;
    }
    let mut saved = s.saved.lock();
    let Some(from) = saved.from.clone() else {
        return;
    };
    let dims = usize::try_from(s.def.dims).unwrap_or(0);
    let padded = off(dims.div_ceil(16) * 16);
    let want = Binding::new(
        KIND_QUANTISED_ROWS,
        from.log_id,
        id,
        s.def.dims,
        s.def.metric,
        from.vouch,
    );
    if from.vouch.0 == 0 || from.vouch.0 > off(s.rows.len()) {
        return;
    }
    let max_len = BOUNDS_HEADER_LEN + 64 + from.vouch.0.saturating_mul(padded + 16);
    let Some((shared, len)) = read_kind(from.backend.as_ref(), KIND_QUANTISED_ROWS, id, max_len)
    else {
        return;
    };
    let Some(file) = shared.bytes().get(..len) else {
        return;
    };
    let Ok(body) = check(file, want) else {
        return;
    };
    let mut r = BodyReader::over_shared(body, shared.clone(), 64);
    let Ok(loaded) = crate::index::quant::QuantRows::read_body(&mut r, dims) else {
        return;
    };
    if r.finish().is_err() || off(loaded.rows()) != from.vouch.0 {
        return;
    }
    *q = loaded;
    saved.quant_rows = from.vouch.0;
    saved.loaded.0 = true;
}

/// Loads the step bounds of space `s` (id `id`) from its file into `b` when `b` is empty
/// and the file belongs to the rows this handle opened with; `n_slots` bounds the slot
/// count read. Never fails: a file that does not prove itself is ignored.
pub(crate) fn prime_bounds(
    s: &crate::db::Space,
    id: u32,
    n_slots: usize,
    b: &mut crate::index::bounds::StepBounds,
) {
    if b.rows() != 0 {
        return;
    }
    let mut saved = s.saved.lock();
    let Some(from) = saved.from.clone() else {
        return;
    };
    let dims = usize::try_from(s.def.dims).unwrap_or(0);
    let rows = from.vouch.0;
    if rows == 0 || rows > off(s.rows.len()) || rows > off(s.row_meta.len()) {
        return;
    }
    let want = Binding::new(
        KIND_STEP_BOUNDS,
        from.log_id,
        id,
        s.def.dims,
        s.def.metric,
        from.vouch,
    );
    let per_row = off(dims).saturating_mul(5).saturating_add(64);
    let max_len =
        BOUNDS_HEADER_LEN + 256 + rows.saturating_mul(per_row) + off(n_slots).saturating_mul(4);
    let Some((shared, len)) = read_kind(from.backend.as_ref(), KIND_STEP_BOUNDS, id, max_len)
    else {
        return;
    };
    let Some(file) = shared.bytes().get(..len) else {
        return;
    };
    let Ok(body) = check(file, want) else {
        return;
    };
    let mut r = BodyReader::over_shared(body, shared.clone(), 64);
    let Ok(rows_us) = usize::try_from(rows) else {
        return;
    };
    let Ok(loaded) = crate::index::bounds::StepBounds::read_body(&mut r, rows_us, dims, |row| {
        s.row_meta[row].slot
    }) else {
        return;
    };
    if r.finish().is_err() {
        return;
    }
    *b = loaded;
    saved.bounds_rows = rows;
    saved.loaded.1 = true;
}

/// After a checkpoint (the key files vouch for every row): saves space `s`'s quantised
/// copy and step bounds when they cover exactly the vouched rows and have grown by an
/// eighth since the file this handle knows of (or there is none). Derived data: a failure
/// is ignored and the bounds are rebuilt by the next handle that needs them.
pub(crate) fn save(backend: &dyn Backend, log_id: u64, id: u32, s: &crate::db::Space) {
    let Some(vouch) = s.rows.vouched() else {
        return;
    };
    // Writes kind `kind` when its bounds cover exactly the vouched rows and have grown by
    // an eighth since the file this handle knows of (`known` rows; 0: none).
    let save_kind = |kind: u32, rows: usize, known: &mut u64, body: &dyn Fn(&mut BodyWriter)| {
        let grown = *known == 0 || vouch.0 >= known.saturating_add(*known / 8).saturating_add(1);
        if off(rows) != vouch.0 || vouch.0 == 0 || !grown {
            return;
        }
        let mut w = BodyWriter::default();
        body(&mut w);
        let binding = Binding::new(kind, log_id, id, s.def.dims, s.def.metric, vouch);
        if write(backend, kind, id, &encode(binding, &w.out)).is_ok() {
            *known = vouch.0;
        }
    };
    // Locks in the order searches take them: the bounds first, then `saved`.
    {
        let q = s.quant.read();
        let mut saved = s.saved.lock();
        save_kind(KIND_QUANTISED_ROWS, q.rows(), &mut saved.quant_rows, &|w| {
            q.write_body(w)
        });
    }
    let b = s.bounds.read();
    let mut saved = s.saved.lock();
    save_kind(KIND_STEP_BOUNDS, b.rows(), &mut saved.bounds_rows, &|w| {
        b.write_body(w)
    });
}

/// Kind `kind`'s file of space `id` and its length, mapped (or read into 8-aligned memory
/// when the backend has no OS file), when it exists and is no longer than `max_len` bytes (the caller's
/// bound from the space's size, so a damaged length never drives an allocation).
fn read_kind(
    backend: &dyn Backend,
    kind: u32,
    id: u32,
    max_len: u64,
) -> Option<(Arc<SharedBytes>, usize)> {
    let f = backend.open_read(&file_name(kind, id)).ok()??;
    let len = f.len().ok()?;
    if len > max_len || len < BOUNDS_HEADER_LEN {
        return None;
    }
    let len_us = usize::try_from(len).ok()?;
    let bytes = match f.file() {
        Some(file) => SharedBytes::Map(MappedFile::map(file, len_us).ok()?),
        None => {
            let mut words = vec![0u64; len_us.div_ceil(8)];
            let buf = &mut bytemuck::cast_slice_mut::<u64, u8>(&mut words)[..len_us];
            f.read_at(buf, 0).ok()?;
            SharedBytes::Heap(words)
        }
    };
    Some((Arc::new(bytes), len_us))
}

/// Checks and decodes any bounds file whose header claims at most `max_rows` rows, with
/// the binding its own header gives (the fuzzers' entry; a search checks the binding
/// against its own rows instead). True when it decoded.
pub(crate) fn decode_any(bytes: &[u8], max_rows: u64, slot_of_row: impl Fn(usize) -> u32) -> bool {
    let Some(h) = bytes.get(..64) else {
        return false;
    };
    let claimed = Binding {
        kind: u32_at(h, header::KIND),
        log_id: u64_at(h, header::LOG_ID),
        space_id: u32_at(h, header::SPACE_ID),
        dims: u32_at(h, header::DIMS),
        metric: h[header::METRIC],
        rows: u64_at(h, header::ROWS),
        rows_crc: u32_at(h, header::ROWS_CRC),
    };
    if claimed.rows > max_rows
        || claimed.dims == 0
        || claimed.dims > crate::format::record::MAX_DIMS
    {
        return false;
    }
    let Ok(body) = check(bytes, claimed) else {
        return false;
    };
    let (Ok(dims), Ok(rows)) = (usize::try_from(claimed.dims), usize::try_from(claimed.rows))
    else {
        return false;
    };
    let mut r = BodyReader::new(body);
    let ok = match claimed.kind {
        KIND_QUANTISED_ROWS => crate::index::quant::QuantRows::read_body(&mut r, dims).is_ok(),
        KIND_STEP_BOUNDS => {
            crate::index::bounds::StepBounds::read_body(&mut r, rows, dims, slot_of_row).is_ok()
        }
        _ => false,
    };
    ok && r.finish().is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::bounds::StepBounds;
    use crate::index::quant::QuantRows;
    use crate::rng::SplitMix64;

    fn rows(rng: &mut SplitMix64, n: usize, dims: usize) -> Vec<f32> {
        (0..n * dims)
            .map(|_| (rng.next_u64() >> 40) as f32 / (1u64 << 24) as f32 - 0.5)
            .collect()
    }

    fn files() -> Vec<Vec<u8>> {
        let mut rng = SplitMix64::new(4);
        let dims = 20;
        let data = rows(&mut rng, 60, dims);
        let mut q = QuantRows::default();
        q.extend(&data, dims);
        let mut b = StepBounds::default();
        b.extend(Metric::Dot, &data, dims, |r| {
            u32::try_from(r / 3).unwrap_or(0)
        });
        let mut out = Vec::new();
        for kind in [KIND_QUANTISED_ROWS, KIND_STEP_BOUNDS] {
            let mut w = BodyWriter::default();
            if kind == KIND_QUANTISED_ROWS {
                q.write_body(&mut w);
            } else {
                b.write_body(&mut w);
            }
            let binding = Binding::new(kind, 9, 2, 20, Metric::Dot, (60, 0xABCD));
            out.push(encode(binding, &w.out));
        }
        out
    }

    #[test]
    fn a_written_bounds_file_decodes_and_any_flipped_byte_is_refused() {
        for file in files() {
            let slot = |r: usize| u32::try_from(r / 3).unwrap_or(0);
            assert!(decode_any(&file, 1 << 16, slot), "a valid file decodes");
            for at in (0..file.len()).step_by(7) {
                let mut bad = file.clone();
                bad[at] ^= 0x10;
                assert!(!decode_any(&bad, 1 << 16, slot), "byte {at} flipped");
            }
            assert!(
                !decode_any(&file[..file.len() - 8], 1 << 16, slot),
                "cut short"
            );
        }
    }

    #[test]
    fn a_bounds_file_is_refused_for_other_rows_or_another_space() {
        let file = &files()[0];
        let want = Binding::new(KIND_QUANTISED_ROWS, 9, 2, 20, Metric::Dot, (60, 0xABCD));
        assert!(check(file, want).is_ok());
        for other in [
            Binding {
                rows_crc: 0xABCE,
                ..want
            },
            Binding { rows: 61, ..want },
            Binding { log_id: 8, ..want },
            Binding {
                space_id: 1,
                ..want
            },
            Binding { metric: 0, ..want },
            Binding {
                kind: KIND_STEP_BOUNDS,
                ..want
            },
        ] {
            assert!(check(file, other).is_err(), "{other:?}");
        }
    }

    #[test]
    fn step_bounds_of_rows_in_other_slots_are_refused() {
        let file = &files()[1];
        let body = &file[64..];
        let mut r = BodyReader::new(body);
        assert!(
            StepBounds::read_body(&mut r, 60, 20, |r| u32::try_from(r / 3).unwrap_or(0)).is_ok()
        );
        let mut r = BodyReader::new(body);
        assert!(
            StepBounds::read_body(&mut r, 60, 20, |r| u32::try_from(r / 4).unwrap_or(0)).is_err()
        );
        let mut r = BodyReader::new(body);
        assert!(
            StepBounds::read_body(&mut r, 59, 20, |r| u32::try_from(r / 3).unwrap_or(0)).is_err()
        );
    }
}
