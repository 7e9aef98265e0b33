//! The append-only log: a 64-byte header, then CRC-framed records with contiguous sequence
//! numbers. Scanning it validates every frame, stops at a torn tail and reports damage in the
//! middle as corruption with the byte offset. Layout: `format-spec.md`, "The log file".

use std::path::Path;

use crate::error::{Error, Result};
use crate::format::codec::{ix, off, u32_at, u64_at};
use std::sync::Arc;

use crate::storage::{create_fresh, Backend, Storage};

/// Name of the log file inside a database directory.
pub const LOG_FILE: &str = "log";
/// Magic bytes at offset 0 of the log.
pub const LOG_MAGIC: [u8; 8] = *b"TRAJDBLG";
/// The format version this build writes and the highest it reads.
pub const FORMAT_VERSION: u32 = 1;
/// Size of the log header.
pub const LOG_HEADER_LEN: u64 = 64;
/// Size of a frame header.
pub const FRAME_HEADER_LEN: u64 = 24;
/// Frames start at multiples of this.
pub const FRAME_ALIGN: u64 = 8;
/// Largest payload accepted, checked before anything is allocated.
pub const MAX_PAYLOAD: u32 = 64 << 20;
/// Mixed into the length check so an all-zero header never validates.
pub const LEN_SALT: u32 = 0x5452_4A4C;
/// Mixed into the frame checksum so an all-zero frame never validates.
pub const CRC_SALT: u32 = 0x4652_4D31;

/// Bit of a TRAJECTORY record's provenance kind byte that says the provenance origin follows
/// the step range.
pub const PROVENANCE_ORIGIN_BIT: u8 = 0x80;

/// Offsets inside the log header.
pub mod header {
    /// Magic, 8 bytes.
    pub const MAGIC: usize = 0;
    /// Format version, u32.
    pub const VERSION: usize = 8;
    /// Flags, u32, must be zero.
    pub const FLAGS: usize = 12;
    /// Log identity, u64, new for every rewrite (compaction).
    pub const LOG_ID: usize = 16;
    /// Sequence number of the first frame, u64.
    pub const BASE_SEQ: usize = 24;
    /// Creation time in ms since the epoch, i64.
    pub const CREATED_MS: usize = 32;
    /// Trajectory ids below this are taken even if no record holds them (ids freed by
    /// compaction are not handed out again), u64.
    pub const ID_FLOOR: usize = 40;
    /// Origin id of the database, u64: random and nonzero at creation, kept by compaction;
    /// zero in logs written before origins existed.
    pub const ORIGIN: usize = 48;
    /// Reserved, 4 zero bytes.
    pub const RESERVED: usize = 56;
    /// CRC-32 of bytes 0..60.
    pub const CRC: usize = 60;
}

/// Offsets inside a frame header.
pub mod frame {
    /// Payload length, u32.
    pub const LEN: usize = 0;
    /// CRC-32 of the four length bytes, xor [`super::LEN_SALT`].
    pub const LEN_CHECK: usize = 4;
    /// Sequence number, u64.
    pub const SEQ: usize = 8;
    /// Record kind, u16.
    pub const KIND: usize = 16;
    /// Flags, u16, must be zero.
    pub const FLAGS: usize = 18;
    /// CRC-32 of bytes 8..20 and the payload, xor [`super::CRC_SALT`].
    pub const CRC: usize = 20;
}

/// Record kind codes (the frame header's `kind` field).
pub mod kind {
    /// A key-space definition.
    pub const SPACE: u16 = 1;
    /// A trajectory with its keys.
    pub const TRAJECTORY: u16 = 2;
    /// A tombstone.
    pub const DELETE: u16 = 3;
    /// Start of an episode.
    pub const EPISODE_BEGIN: u16 = 4;
    /// Retrievals logged in an episode.
    pub const RETRIEVALS: u16 = 5;
    /// An episode's outcome.
    pub const EPISODE_OUTCOME: u16 = 6;
    /// A trajectory's outcome set after the fact.
    pub const TRAJ_OUTCOME: u16 = 7;
    /// The origin id in effect from this commit on (a fork's copy gets a new one).
    pub const ORIGIN: u16 = 8;
    /// Start of an episode merged from another database, with its origin.
    pub const EPISODE_MERGED: u16 = 9;
}

/// The decoded log header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LogHeader {
    pub(crate) log_id: u64,
    pub(crate) base_seq: u64,
    pub(crate) created_ms: i64,
    pub(crate) id_floor: u64,
    /// The database's origin id; 0 in logs written before origins.
    pub(crate) origin: u64,
}

pub(crate) fn encode_header(h: &LogHeader) -> [u8; 64] {
    let mut b = [0u8; 64];
    b[header::MAGIC..header::MAGIC + 8].copy_from_slice(&LOG_MAGIC);
    b[header::VERSION..header::VERSION + 4].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    b[header::LOG_ID..header::LOG_ID + 8].copy_from_slice(&h.log_id.to_le_bytes());
    b[header::BASE_SEQ..header::BASE_SEQ + 8].copy_from_slice(&h.base_seq.to_le_bytes());
    b[header::CREATED_MS..header::CREATED_MS + 8].copy_from_slice(&h.created_ms.to_le_bytes());
    b[header::ID_FLOOR..header::ID_FLOOR + 8].copy_from_slice(&h.id_floor.to_le_bytes());
    b[header::ORIGIN..header::ORIGIN + 8].copy_from_slice(&h.origin.to_le_bytes());
    let crc = crc32fast::hash(&b[..header::CRC]);
    b[header::CRC..header::CRC + 4].copy_from_slice(&crc.to_le_bytes());
    b
}

pub(crate) fn decode_header(b: &[u8], path: &Path) -> Result<LogHeader> {
    if b.len() < 8 || b[..8] != LOG_MAGIC {
        return Err(Error::NotADatabase {
            path: path.to_owned(),
            why: "the log does not start with the trajdb magic bytes".into(),
        });
    }
    if b.len() < 64 {
        return Err(Error::NotADatabase {
            path: path.to_owned(),
            why: format!(
                "the log is {} bytes, shorter than its 64-byte header",
                b.len()
            ),
        });
    }
    let stored = u32_at(b, header::CRC);
    let got = crc32fast::hash(&b[..header::CRC]);
    if stored != got {
        return Err(Error::ChecksumMismatch {
            path: path.to_owned(),
            offset: 0,
            expected: stored,
            got,
        });
    }
    let version = u32_at(b, header::VERSION);
    if version == 0 || version > FORMAT_VERSION {
        return Err(Error::IncompatibleVersion {
            path: path.to_owned(),
            found: version,
            supported: FORMAT_VERSION,
        });
    }
    if u32_at(b, header::FLAGS) != 0 || b[header::RESERVED..header::CRC].iter().any(|&x| x != 0) {
        return Err(Error::Corrupt {
            path: path.to_owned(),
            offset: 12,
            what: "reserved header bytes are not zero".into(),
        });
    }
    Ok(LogHeader {
        log_id: u64_at(b, header::LOG_ID),
        base_seq: u64_at(b, header::BASE_SEQ),
        id_floor: u64_at(b, header::ID_FLOOR),
        origin: u64_at(b, header::ORIGIN),
        created_ms: i64::from_le_bytes(
            b[header::CREATED_MS..header::CREATED_MS + 8]
                .try_into()
                .map_err(|_| Error::Corrupt {
                    path: path.to_owned(),
                    offset: 32,
                    what: "short header".into(),
                })?,
        ),
    })
}

/// Bytes a frame with a payload of `len` bytes takes, padding included.
pub(crate) fn frame_size(len: usize) -> u64 {
    let raw = FRAME_HEADER_LEN + off(len);
    raw.div_ceil(FRAME_ALIGN) * FRAME_ALIGN
}

/// Appends one frame (header, payload, zero padding) to `out`.
pub(crate) fn encode_frame(out: &mut Vec<u8>, seq: u64, kind: u16, payload: &[u8]) {
    let start = out.len();
    let len = u32::try_from(payload.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&(crc32fast::hash(&len.to_le_bytes()) ^ LEN_SALT).to_le_bytes());
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(&kind.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes());
    let mut h = crc32fast::Hasher::new();
    h.update(&out[start + frame::SEQ..start + frame::CRC]);
    h.update(payload);
    out.extend_from_slice(&(h.finalize() ^ CRC_SALT).to_le_bytes());
    out.extend_from_slice(payload);
    let total = usize::try_from(frame_size(payload.len())).unwrap_or(usize::MAX);
    out.resize(start + total, 0);
}

/// Reads and checks the log header.
pub(crate) fn read_header(storage: &dyn Storage, path: &Path) -> Result<LogHeader> {
    let len = storage.len().map_err(|e| Error::io("stat", path, e))?;
    if len < LOG_HEADER_LEN {
        return Err(Error::NotADatabase {
            path: path.to_owned(),
            why: format!("the log is {len} bytes, shorter than its 64-byte header"),
        });
    }
    let mut b = [0u8; 64];
    storage
        .read_at(&mut b, 0)
        .map_err(|e| Error::io("read", path, e))?;
    decode_header(&b, path)
}

/// A frame that passed every check.
pub(crate) struct Frame<'a> {
    pub(crate) offset: u64,
    pub(crate) seq: u64,
    pub(crate) kind: u16,
    /// The frame's `crc` field (binds a checkpoint to the frame it ends with).
    pub(crate) crc: u32,
    pub(crate) payload: &'a [u8],
}

/// How a scan ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ScanEnd {
    /// Offset just past the last valid frame.
    pub(crate) end: u64,
    /// Sequence number the next frame must carry.
    pub(crate) next_seq: u64,
    /// Set when bytes after `end` form no valid frame (a torn or zeroed tail): why.
    pub(crate) torn: Option<String>,
}

/// Reads a file in large chunks so scanning does few system calls.
struct Window<'s> {
    storage: &'s dyn Storage,
    file_len: u64,
    start: u64,
    buf: Vec<u8>,
}

const WINDOW: usize = 8 << 20;

impl Window<'_> {
    /// `n` bytes at `pos`, or None when they extend past the end of the file.
    fn get(&mut self, pos: u64, n: usize) -> std::io::Result<Option<&[u8]>> {
        let Some(end) = pos.checked_add(off(n)) else {
            return Ok(None);
        };
        if end > self.file_len {
            return Ok(None);
        }
        let buf_end = self.start + off(self.buf.len());
        if pos < self.start || end > buf_end {
            let want = n
                .max(WINDOW)
                .min(usize::try_from(self.file_len - pos).unwrap_or(n));
            self.buf.resize(want, 0);
            self.storage.read_at(&mut self.buf, pos)?;
            self.start = pos;
        }
        let at = usize::try_from(pos - self.start).unwrap_or(0);
        Ok(Some(&self.buf[at..at + n]))
    }
}

/// Checks the frame at `pos`; `Ok(Err(why))` when it is not a valid frame.
fn check_frame<'w>(
    w: &'w mut Window<'_>,
    pos: u64,
    want_seq: Option<u64>,
) -> std::io::Result<std::result::Result<Frame<'w>, String>> {
    let Some(h) = w.get(pos, 24)? else {
        return Ok(Err("frame header extends past the end of the file".into()));
    };
    let len = u32_at(h, frame::LEN);
    let len_check = u32_at(h, frame::LEN_CHECK);
    if crc32fast::hash(&len.to_le_bytes()) ^ LEN_SALT != len_check {
        return Ok(Err("frame length check does not match".into()));
    }
    if len > MAX_PAYLOAD {
        return Ok(Err(format!(
            "frame length {len} exceeds the maximum {MAX_PAYLOAD}"
        )));
    }
    let seq = u64_at(h, frame::SEQ);
    let kind = u16::from_le_bytes([h[frame::KIND], h[frame::KIND + 1]]);
    let flags = u16::from_le_bytes([h[frame::FLAGS], h[frame::FLAGS + 1]]);
    let stored = u32_at(h, frame::CRC);
    let total = usize::try_from(frame_size(ix(len))).unwrap_or(usize::MAX);
    let Some(all) = w.get(pos, total)? else {
        return Ok(Err(format!(
            "frame of {total} bytes extends past the end of the file"
        )));
    };
    let payload_end = 24 + ix(len);
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&all[frame::SEQ..frame::CRC]);
    hasher.update(&all[24..payload_end]);
    let got = hasher.finalize() ^ CRC_SALT;
    if got != stored {
        return Ok(Err(format!(
            "frame checksum mismatch: stored {stored:#010x}, computed {got:#010x}"
        )));
    }
    if flags != 0 || all[payload_end..].iter().any(|&b| b != 0) {
        return Ok(Err("frame flags or padding are not zero".into()));
    }
    if let Some(want) = want_seq {
        if seq != want {
            return Ok(Err(format!(
                "frame has sequence number {seq}, expected {want}"
            )));
        }
    }
    Ok(Ok(Frame {
        offset: pos,
        seq,
        kind,
        crc: stored,
        payload: &all[24..payload_end],
    }))
}

/// Reads and checks the header, then every frame in order up to `limit` (a snapshot's end),
/// calling `on_frame` for each.
///
/// A damaged frame followed by no valid frame is a torn tail: the scan stops there and says
/// why in [`ScanEnd::torn`]. A damaged frame followed by a valid one is corruption of
/// committed data: an error naming the offset.
pub(crate) fn scan_limited(
    storage: &dyn Storage,
    path: &Path,
    limit: u64,
    mut on_frame: impl FnMut(&Frame<'_>) -> Result<()>,
) -> Result<(LogHeader, ScanEnd)> {
    let file_len = storage
        .len()
        .map_err(|e| Error::io("stat", path, e))?
        .min(limit);
    let mut w = Window {
        storage,
        file_len,
        start: 0,
        buf: Vec::new(),
    };
    let head = w
        .get(0, 64)
        .map_err(|e| Error::io("read", path, e))?
        .ok_or_else(|| Error::NotADatabase {
            path: path.to_owned(),
            why: format!("the log is {file_len} bytes, shorter than its 64-byte header"),
        })?
        .to_vec();
    let hdr = decode_header(&head, path)?;
    let end = scan_frames(&mut w, path, LOG_HEADER_LEN, hdr.base_seq, &mut on_frame)?;
    Ok((hdr, end))
}

/// Scans frames from `start` (a frame boundary whose frame must carry `seq`) to the end of
/// the log, as [`scan_limited`] does; used to catch up with frames appended since an earlier scan.
pub(crate) fn scan_from(
    storage: &dyn Storage,
    path: &Path,
    start: u64,
    seq: u64,
    mut on_frame: impl FnMut(&Frame<'_>) -> Result<()>,
) -> Result<ScanEnd> {
    let file_len = storage.len().map_err(|e| Error::io("stat", path, e))?;
    let mut w = Window {
        storage,
        file_len,
        start: 0,
        buf: Vec::new(),
    };
    scan_frames(&mut w, path, start, seq, &mut on_frame)
}

fn scan_frames(
    w: &mut Window<'_>,
    path: &Path,
    start: u64,
    seq: u64,
    on_frame: &mut dyn FnMut(&Frame<'_>) -> Result<()>,
) -> Result<ScanEnd> {
    let file_len = w.file_len;
    let mut pos = start;
    let mut seq = seq;
    loop {
        if pos == file_len {
            return Ok(ScanEnd {
                end: pos,
                next_seq: seq,
                torn: None,
            });
        }
        match check_frame(w, pos, Some(seq)).map_err(|e| Error::io("read", path, e))? {
            Ok(f) => {
                let size = frame_size(f.payload.len());
                on_frame(&f)?;
                pos += size;
                seq += 1;
            }
            Err(why) => {
                // Is there a valid later frame after this point? Then committed data is
                // damaged. When the damaged frame's length is intact, the bytes it spans are
                // its own payload (user text and vectors can hold anything, a whole valid
                // frame included), so the search starts after them; a frame that reaches
                // past the end of the file is the torn last frame. A later frame carries a
                // later sequence number.
                let mut probe = match intact_len(w, pos).map_err(|e| Error::io("read", path, e))? {
                    Some(len) => pos + frame_size(ix(len)),
                    None => pos + FRAME_ALIGN,
                };
                while probe + FRAME_HEADER_LEN <= file_len {
                    if let Ok(Ok(f)) = check_frame(w, probe, None) {
                        if f.seq <= seq {
                            probe += FRAME_ALIGN;
                            continue;
                        }
                        return Err(Error::Corrupt {
                            path: path.to_owned(),
                            offset: pos,
                            what: format!(
                                "{why} (frame with sequence number {seq}; a valid frame follows at byte {probe}); commits before this offset are intact. If the database crashed under Buffered or GroupCommit durability, `trajdb repair` cuts the log here and keeps the cut bytes; to keep every other trajectory instead, `trajdb export --skip-damaged --with-spaces` exports what reads back (when a checkpoint covers the damage)"
                            ),
                        });
                    }
                    probe += FRAME_ALIGN;
                }
                return Ok(ScanEnd {
                    end: pos,
                    next_seq: seq,
                    torn: Some(why),
                });
            }
        }
    }
}

/// The payload length of the frame header at `pos` when its length check holds (the length
/// was written as it reads), else None.
fn intact_len(w: &mut Window<'_>, pos: u64) -> std::io::Result<Option<u32>> {
    let Some(h) = w.get(pos, 8)? else {
        return Ok(None);
    };
    let len = u32_at(h, frame::LEN);
    let ok = crc32fast::hash(&len.to_le_bytes()) ^ LEN_SALT == u32_at(h, frame::LEN_CHECK);
    Ok((ok && len <= MAX_PAYLOAD).then_some(len))
}

/// The end offset and `crc` field of the frame at `offset` when a valid frame carrying
/// sequence number `seq` is there (its length, checksums, flags and padding all check).
pub(crate) fn frame_at(
    storage: &dyn Storage,
    path: &Path,
    offset: u64,
    seq: u64,
) -> Result<Option<(u64, u32)>> {
    let file_len = storage.len().map_err(|e| Error::io("stat", path, e))?;
    let mut w = Window {
        storage,
        file_len,
        start: 0,
        buf: Vec::new(),
    };
    match check_frame(&mut w, offset, Some(seq)).map_err(|e| Error::io("read", path, e))? {
        Ok(f) => Ok(Some((offset + frame_size(f.payload.len()), f.crc))),
        Err(_) => Ok(None),
    }
}

/// Offset of the first frame that does not check (or the end of the log when all do).
pub(crate) fn valid_prefix(storage: &dyn Storage, path: &Path) -> Result<u64> {
    let hdr = read_header(storage, path)?;
    valid_prefix_from(storage, path, LOG_HEADER_LEN, hdr.base_seq)
}

/// Like [`valid_prefix`], starting at frame boundary `start` whose frame carries `seq`.
pub(crate) fn valid_prefix_from(
    storage: &dyn Storage,
    path: &Path,
    start: u64,
    seq: u64,
) -> Result<u64> {
    let file_len = storage.len().map_err(|e| Error::io("stat", path, e))?;
    let mut w = Window {
        storage,
        file_len,
        start: 0,
        buf: Vec::new(),
    };
    let mut pos = start;
    let mut seq = seq;
    while pos < file_len {
        match check_frame(&mut w, pos, Some(seq)).map_err(|e| Error::io("read", path, e))? {
            Ok(f) => {
                pos += frame_size(f.payload.len());
                seq += 1;
            }
            Err(_) => return Ok(pos),
        }
    }
    Ok(file_len)
}

/// Reads the frame at `offset` (known valid from an earlier scan) and returns its payload.
pub(crate) fn read_payload(storage: &dyn Storage, path: &Path, offset: u64) -> Result<Vec<u8>> {
    let mut h = [0u8; 24];
    storage
        .read_at(&mut h, offset)
        .map_err(|e| Error::io("read", path, e))?;
    let len = u32_at(&h, frame::LEN);
    if len > MAX_PAYLOAD {
        return Err(Error::Corrupt {
            path: path.to_owned(),
            offset,
            what: format!("frame length {len} exceeds the maximum {MAX_PAYLOAD}"),
        });
    }
    let mut payload = vec![0u8; ix(len)];
    storage
        .read_at(&mut payload, offset + FRAME_HEADER_LEN)
        .map_err(|e| Error::io("read", path, e))?;
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&h[frame::SEQ..frame::CRC]);
    hasher.update(&payload);
    let got = hasher.finalize() ^ CRC_SALT;
    let stored = u32_at(&h, frame::CRC);
    if got != stored {
        return Err(Error::ChecksumMismatch {
            path: path.to_owned(),
            offset,
            expected: stored,
            got,
        });
    }
    Ok(payload)
}

/// Copies the log bytes from `end` to `len` to `log.cut-END` before they are cut, so that
/// a frame damaged at rest rather than torn by a crash can still be inspected. Copies in
/// chunks; a tail that is all zeros (pre-allocated space) is not kept.
pub(crate) fn keep_cut_tail(
    backend: &dyn Backend,
    log: &dyn Storage,
    end: u64,
    len: u64,
) -> Result<Option<String>> {
    let log_path = backend.path_of(LOG_FILE);
    let chunk = usize::try_from((len - end).min(4 << 20)).unwrap_or(4 << 20);
    let mut buf = vec![0u8; chunk];
    let mut out: Option<(String, Arc<dyn Storage>)> = None;
    let mut pos = end;
    while pos < len {
        let n = usize::try_from((len - pos).min(off(chunk))).unwrap_or(chunk);
        log.read_at(&mut buf[..n], pos)
            .map_err(|e| Error::io("read", log_path.clone(), e))?;
        if out.is_none() && buf[..n].iter().any(|&b| b != 0) {
            let name = format!("{LOG_FILE}.cut-{end}");
            let f = create_fresh(backend, &name)?;
            out = Some((name, f));
        }
        if let Some((name, f)) = &out {
            f.write_at(&buf[..n], pos - end)
                .map_err(|e| Error::io("write", backend.path_of(name), e))?;
        }
        pos += off(n);
    }
    match out {
        Some((name, f)) => {
            f.sync()
                .map_err(|e| Error::io("sync", backend.path_of(&name), e))?;
            Ok(Some(name))
        }
        None => Ok(None),
    }
}
