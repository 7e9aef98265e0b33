//! The checkpoint file: the state derived from the log (trajectory metadata, the id map,
//! interned names, key spaces with their row metadata and the key files' vouched row counts
//! and checksums, usage counters and episodes, next ids), written by the writer so that open
//! reads it and only the log after it instead of decoding the whole log and checksumming
//! every key row. It is derived: whenever it does not prove that it belongs to the log it
//! sits beside, open ignores it and scans the log. Layout and rules: `format-spec.md`,
//! "The checkpoint file".
//!
//! Every part of the body is an array of fixed-width little-endian records, read in one go
//! and cast with `bytemuck`; every count is checked against the bytes left in the file
//! before anything is allocated.
//!
//! The body is checksummed in blocks of [`CHECKPOINT_BLOCK_LEN`] bytes, each with its own
//! CRC-32 in a block table after the body; the table has a CRC in the header. Open checks
//! the header, the table and the blocks of the small areas at the front of the body (counts,
//! spaces, names, usage); the large areas at its end (trajectories, outcome history, row
//! metadata) stay mapped and unread, and their blocks are checked on the first operation
//! that uses the state (`Checked`, `Database::ensure_checked`). `verify` checks every
//! block and the consistency of every record.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use bytemuck::{Pod, Zeroable};
use parking_lot::{Mutex, RwLock};

use crate::db::{RowMeta, Space, State, TrajMeta};
use crate::error::{Error, Result};
use crate::format::codec::{ix, off, u32_at, u64_at};
use crate::format::log::{self, LogHeader, LOG_HEADER_LEN};
use crate::format::record::{
    self, kind, Level, Origin, Outcome, ProvenanceKind, Record, RetrievalEvent, SpaceDef, Stage,
    NO_STEP,
};
use crate::id_map::IdMap;
use crate::index::keyfile::RowStore;
use crate::names::Names;
use crate::storage::mmap::{MappedFile, SharedArray, SharedBytes};
use crate::storage::{create_fresh, Backend, Storage};
use crate::trajs::Trajs;
use crate::usage::{Episode, Usage, Utility};

/// Name of the checkpoint file in a database directory.
pub const CHECKPOINT_FILE: &str = "checkpoint";
/// Name the checkpoint is written under before it is renamed into place.
pub const CHECKPOINT_TMP: &str = "checkpoint.new";
/// Magic bytes at offset 0 of the checkpoint file.
pub const CHECKPOINT_MAGIC: [u8; 8] = *b"TRAJDBCP";
/// Checkpoint format version.
pub const CHECKPOINT_VERSION: u32 = 2;
/// log2 of [`CHECKPOINT_BLOCK_LEN`], as the header records it.
pub const CHECKPOINT_BLOCK_SHIFT: u32 = 16;
/// The body is checksummed in blocks of this many bytes (the last one may be shorter).
pub const CHECKPOINT_BLOCK_LEN: u64 = 1 << CHECKPOINT_BLOCK_SHIFT;
/// Size of the checkpoint header; the body starts here.
pub const CHECKPOINT_HEADER_LEN: u64 = 96;
/// [`CHECKPOINT_HEADER_LEN`] as a memory size.
const HEADER: usize = 96;
/// A writer writes a new checkpoint once the log has grown by this many bytes past the
/// last one (and by at least twice the last checkpoint's size).
pub const CHECKPOINT_AUTO_BYTES: u64 = 32 << 20;

/// Offsets inside the checkpoint header.
pub mod header {
    /// Magic, 8 bytes.
    pub const MAGIC: usize = 0;
    /// Version, u32.
    pub const VERSION: usize = 8;
    /// Flags, u32, zero.
    pub const FLAGS: usize = 12;
    /// `log_id` of the log the checkpoint belongs to, u64.
    pub const LOG_ID: usize = 16;
    /// `base_seq` of that log, u64.
    pub const BASE_SEQ: usize = 24;
    /// Log offset just past the last covered frame, u64.
    pub const END: usize = 32;
    /// Offset of the last covered frame (0 when none), u64.
    pub const LAST_OFFSET: usize = 40;
    /// Sequence number of the last covered frame (`base_seq - 1` when none), u64.
    pub const LAST_SEQ: usize = 48;
    /// The `crc` field of the last covered frame (0 when none), u32.
    pub const LAST_CRC: usize = 56;
    /// CRC-32 of the block table (the CRC-32 of each block of the body), u32.
    pub const BLOCKS_CRC: usize = 60;
    /// Body length in bytes, u64.
    pub const BODY_LEN: usize = 64;
    /// log2 of the block length, u32.
    pub const BLOCK_SHIFT: usize = 72;
    /// Reserved, 16 zero bytes.
    pub const RESERVED: usize = 76;
    /// CRC-32 of bytes 0..92, u32.
    pub const CRC: usize = 92;
}

/// The part of the log a checkpoint covers: frames up to `end`, the last of them at
/// `last_offset` with sequence number `last_seq` and frame CRC `last_crc`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Covered {
    pub(crate) end: u64,
    pub(crate) last_offset: u64,
    pub(crate) last_seq: u64,
    pub(crate) last_crc: u32,
}

impl Covered {
    /// An empty log of `base_seq`: no frame covered.
    pub(crate) fn empty(base_seq: u64) -> Self {
        Covered {
            end: LOG_HEADER_LEN,
            last_offset: 0,
            last_seq: base_seq.saturating_sub(1),
            last_crc: 0,
        }
    }
}

/// Counts of every array in the body, in body order (the body's first 128 bytes).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, Pod, Zeroable)]
struct Counts {
    next_id: u64,
    next_episode: u64,
    spaces: u64,
    defs_bytes: u64,
    trajs: u64,
    history: u64,
    names: u64,
    name_bytes: u64,
    rows: u64,
    counters: u64,
    episodes: u64,
    events: u64,
    /// The origin id in effect (the header's or the last ORIGIN record's; 0 before origins).
    origin: u64,
    /// Entries of the merged area.
    merged: u64,
    /// Trajectory slots marked deleted.
    deleted: u64,
    /// Bit 0: the trajectory ids are strictly increasing in slot order (the id map
    /// searches the trajectory area in place). Other bits zero.
    flags: u64,
}

/// `Counts::flags` bit: ids strictly increasing in slot order.
const C_IDS_SORTED: u64 = 1;

/// One trajectory merged from another database: its origin and its slot here (the latest
/// slot with that origin), sorted by origin.
#[repr(C)]
#[derive(Debug, Clone, Copy, Pod, Zeroable)]
struct MergedRec {
    origin_db: u64,
    origin_id: u64,
    slot: u32,
    pad: u32,
}

/// One key space: its rows, the checksum of their bytes (what its key file vouches for),
/// and the length of its SPACE record payload in the definitions area.
#[repr(C)]
#[derive(Debug, Clone, Copy, Pod, Zeroable)]
struct SpaceRec {
    rows: u64,
    rows_crc: u32,
    def_len: u32,
}

const T_RELABELLED: u8 = 1;
const T_DELETED: u8 = 2;
const T_REWARD: u8 = 4;
/// The trajectory came from another database (its record carries a provenance origin).
const T_MERGED: u8 = 8;

/// One trajectory (slot order).
#[repr(C)]
#[derive(Debug, Clone, Copy, Pod, Zeroable)]
pub(crate) struct TrajRec {
    /// The trajectory id (the id map searches these in place).
    pub(crate) id: u64,
    pub(crate) seq: u64,
    pub(crate) offset: u64,
    pub(crate) deleted_at: u64,
    pub(crate) reward: u64,
    pub(crate) env: u32,
    pub(crate) task: u32,
    pub(crate) n_steps: u32,
    /// Where this slot's outcome history ends in the history area (it starts where the
    /// previous slot's ends).
    pub(crate) history_end: u32,
    pub(crate) flags: u8,
    pub(crate) success: u8,
    pub(crate) provenance: u8,
    pub(crate) pad: [u8; 5],
    /// Where it was first written: origin id and id there.
    pub(crate) origin_db: u64,
    pub(crate) origin_id: u64,
    pub(crate) created_ms: i64,
}

/// One entry of a trajectory's outcome history (entries of slot 0 first, then slot 1...).
#[repr(C)]
#[derive(Debug, Clone, Copy, Pod, Zeroable)]
pub(crate) struct HistRec {
    pub(crate) seq: u64,
    pub(crate) reward: u64,
    pub(crate) success: u8,
    pub(crate) has_reward: u8,
    pub(crate) pad: [u8; 6],
}

#[repr(C)]
#[derive(Debug, Clone, Copy, Pod, Zeroable)]
struct CounterRec {
    id: u64,
    retrievals: u64,
    episodes: u64,
    labelled: u64,
    success: u64,
}

#[repr(C)]
#[derive(Debug, Clone, Copy, Pod, Zeroable)]
struct EpisodeRec {
    id: u64,
    created_ms: i64,
    events: u64,
    outcome: u8,
    /// 1 when begun by EPISODE_MERGED (from another database), else 0.
    merged: u8,
    pad: [u8; 6],
    /// Where it was first logged: origin id and episode id there.
    origin_db: u64,
    origin_id: u64,
}

#[repr(C)]
#[derive(Debug, Clone, Copy, Pod, Zeroable)]
struct EventRec {
    id: u64,
    step: u32,
    stage: u8,
    pad: [u8; 3],
}

/// Sizes in bytes of the body's fixed-width records, in the order of the spec's table:
/// counts, spaces, name ends, counters, episodes, events, merged, trajectories, history,
/// rows.
pub fn record_sizes() -> [usize; 10] {
    use std::mem::size_of;
    [
        size_of::<Counts>(),
        size_of::<SpaceRec>(),
        size_of::<u32>(),
        size_of::<CounterRec>(),
        size_of::<EpisodeRec>(),
        size_of::<EventRec>(),
        size_of::<MergedRec>(),
        size_of::<TrajRec>(),
        size_of::<HistRec>(),
        size_of::<RowMeta>(),
    ]
}

fn success_code(s: Option<bool>) -> u8 {
    match s {
        Some(false) => 0,
        Some(true) => 1,
        None => 2,
    }
}

fn success_from(c: u8) -> Option<Option<bool>> {
    match c {
        0 => Some(Some(false)),
        1 => Some(Some(true)),
        2 => Some(None),
        _ => None,
    }
}

fn stage_code(s: Stage) -> u8 {
    match s {
        Stage::Plan => 0,
        Stage::Reason => 1,
        Stage::Act => 2,
        Stage::Other => 3,
    }
}

fn stage_from(c: u8) -> Option<Stage> {
    [Stage::Plan, Stage::Reason, Stage::Act, Stage::Other]
        .get(usize::from(c))
        .copied()
}

fn pad8(v: &mut Vec<u8>) {
    v.resize(v.len().next_multiple_of(8), 0);
}

fn put<T: Pod>(out: &mut Vec<u8>, items: &[T]) {
    out.extend_from_slice(bytemuck::cast_slice(items));
    pad8(out);
}

/// The checkpoint of `st`, covering the log up to `cov`; `None` when a key store holds rows
/// its key file does not vouch for (a read-only handle's heap rows), which a checkpoint
/// cannot stand in for, or when the state still reads a checkpoint whose blocks have not
/// all been checked (the caller checks them first: a damaged block must never be copied
/// into a checkpoint with fresh checksums).
pub(crate) fn encode(st: &State, cov: Covered) -> Option<Vec<u8>> {
    if st.ckpt.as_ref().is_some_and(|c| !c.lazy_ok()) {
        return None;
    }
    let mut spaces = Vec::with_capacity(st.spaces.len());
    let mut defs = Vec::new();
    for (i, s) in st.spaces.iter().enumerate() {
        let (rows, crc) = s.rows.vouched()?;
        if rows != off(s.row_meta.len()) {
            return None;
        }
        let def = record::encode_space(u32::try_from(i).ok()?, &s.def);
        spaces.push(SpaceRec {
            rows: rows.to_le(),
            rows_crc: crc.to_le(),
            def_len: u32::try_from(def.len()).ok()?.to_le(),
        });
        defs.extend_from_slice(&def);
        pad8(&mut defs);
    }
    let mut trajs = Vec::with_capacity(st.trajs.len());
    let mut history = Vec::new();
    let mut deleted = 0u64;
    let mut sorted = true;
    let mut prev_id = None;
    for m in st.trajs.iter() {
        let mut flags = 0;
        if m.relabelled {
            flags |= T_RELABELLED;
        }
        if m.deleted_at.is_some() {
            flags |= T_DELETED;
            deleted += 1;
        }
        if m.outcome.reward.is_some() {
            flags |= T_REWARD;
        }
        if m.merged {
            flags |= T_MERGED;
        }
        sorted &= prev_id.is_none_or(|p| p < m.id);
        prev_id = Some(m.id);
        for (seq, o) in &m.outcomes {
            history.push(HistRec {
                seq: seq.to_le(),
                reward: o.reward.unwrap_or(0.0).to_bits().to_le(),
                success: success_code(o.success),
                has_reward: u8::from(o.reward.is_some()),
                pad: [0; 6],
            });
        }
        trajs.push(TrajRec {
            id: m.id.to_le(),
            seq: m.seq.to_le(),
            offset: m.offset.to_le(),
            deleted_at: m.deleted_at.unwrap_or(0).to_le(),
            reward: m.outcome.reward.unwrap_or(0.0).to_bits().to_le(),
            env: m.env.to_le(),
            task: m.task.to_le(),
            n_steps: m.n_steps.to_le(),
            history_end: u32::try_from(history.len()).ok()?.to_le(),
            flags,
            success: success_code(m.outcome.success),
            provenance: m.provenance.code(),
            pad: [0; 5],
            origin_db: m.origin.db.to_le(),
            origin_id: m.origin.id.to_le(),
            created_ms: m.created_ms.to_le(),
        });
    }
    let mut ends = Vec::with_capacity(st.names.len());
    let mut name_bytes = Vec::new();
    for n in st.names.iter() {
        name_bytes.extend_from_slice(n.as_bytes());
        ends.push(u32::try_from(name_bytes.len()).ok()?.to_le());
    }
    let rows: usize = st.spaces.iter().map(|s| s.row_meta.len()).sum();
    let mut counters: Vec<CounterRec> = st
        .usage
        .counters
        .iter()
        .map(|(id, u)| CounterRec {
            id: id.to_le(),
            retrievals: u.retrievals.to_le(),
            episodes: u.episodes.to_le(),
            labelled: u.labelled_retrievals.to_le(),
            success: u.success_retrievals.to_le(),
        })
        .collect();
    counters.sort_by_key(|c| u64::from_le(c.id));
    let mut episodes = Vec::with_capacity(st.usage.episodes.len());
    let mut events = Vec::new();
    for ep in st.usage.episodes.values() {
        episodes.push(EpisodeRec {
            id: ep.id.to_le(),
            created_ms: ep.created_ms.to_le(),
            events: off(ep.events.len()).to_le(),
            outcome: success_code(ep.outcome),
            merged: u8::from(st.usage.merged.get(&ep.origin) == Some(&ep.id)),
            pad: [0; 6],
            origin_db: ep.origin.db.to_le(),
            origin_id: ep.origin.id.to_le(),
        });
        events.extend(ep.events.iter().map(|e| EventRec {
            id: e.id.to_le(),
            step: e.step.unwrap_or(NO_STEP).to_le(),
            stage: stage_code(e.stage),
            pad: [0; 3],
        }));
    }
    let mut merged: Vec<(Origin, u32)> = st.merged.iter().map(|(o, s)| (*o, *s)).collect();
    merged.sort();
    let merged: Vec<MergedRec> = merged
        .into_iter()
        .map(|(o, slot)| MergedRec {
            origin_db: o.db.to_le(),
            origin_id: o.id.to_le(),
            slot: slot.to_le(),
            pad: 0,
        })
        .collect();
    let counts = Counts {
        next_id: st.next_id.to_le(),
        next_episode: st.usage.next_episode.to_le(),
        spaces: off(spaces.len()).to_le(),
        defs_bytes: off(defs.len()).to_le(),
        trajs: off(trajs.len()).to_le(),
        history: off(history.len()).to_le(),
        names: off(ends.len()).to_le(),
        name_bytes: off(name_bytes.len()).to_le(),
        rows: off(rows).to_le(),
        counters: off(counters.len()).to_le(),
        episodes: off(episodes.len()).to_le(),
        events: off(events.len()).to_le(),
        origin: st.origin.to_le(),
        merged: off(merged.len()).to_le(),
        deleted: deleted.to_le(),
        flags: if sorted { C_IDS_SORTED } else { 0 }.to_le(),
    };
    let size = 128
        + spaces.len() * 16
        + defs.len()
        + ends.len() * 4
        + name_bytes.len()
        + counters.len() * 40
        + episodes.len() * 48
        + events.len() * 16
        + merged.len() * 24
        + trajs.len() * 88
        + history.len() * 24
        + rows * 8
        + 48;
    let mut out = Vec::with_capacity(HEADER + size + size / 16384 + 8);
    out.resize(HEADER, 0);
    // The small areas first (checked at open), the large ones last (checked on first use).
    put(&mut out, std::slice::from_ref(&counts));
    put(&mut out, &spaces);
    out.extend_from_slice(&defs);
    put(&mut out, &ends);
    out.extend_from_slice(&name_bytes);
    pad8(&mut out);
    put(&mut out, &counters);
    put(&mut out, &episodes);
    put(&mut out, &events);
    put(&mut out, &merged);
    put(&mut out, &trajs);
    put(&mut out, &history);
    for s in &st.spaces {
        let start = out.len();
        out.extend_from_slice(bytemuck::cast_slice(&s.row_meta));
        if cfg!(target_endian = "big") {
            for c in out[start..].chunks_exact_mut(4) {
                c.reverse();
            }
        }
    }
    pad8(&mut out);
    let body_len = off(out.len() - HEADER);
    let table: Vec<u32> = out[HEADER..]
        .chunks(usize::try_from(CHECKPOINT_BLOCK_LEN).unwrap_or(usize::MAX))
        .map(|b| crc32fast::hash(b).to_le())
        .collect();
    let table_at = out.len();
    put(&mut out, &table);
    let blocks_crc = crc32fast::hash(&out[table_at..table_at + table.len() * 4]);
    let h = &mut out[..HEADER];
    h[header::MAGIC..8].copy_from_slice(&CHECKPOINT_MAGIC);
    h[header::VERSION..header::VERSION + 4].copy_from_slice(&CHECKPOINT_VERSION.to_le_bytes());
    h[header::LOG_ID..header::LOG_ID + 8].copy_from_slice(&st.header.log_id.to_le_bytes());
    h[header::BASE_SEQ..header::BASE_SEQ + 8].copy_from_slice(&st.header.base_seq.to_le_bytes());
    h[header::END..header::END + 8].copy_from_slice(&cov.end.to_le_bytes());
    h[header::LAST_OFFSET..header::LAST_OFFSET + 8].copy_from_slice(&cov.last_offset.to_le_bytes());
    h[header::LAST_SEQ..header::LAST_SEQ + 8].copy_from_slice(&cov.last_seq.to_le_bytes());
    h[header::LAST_CRC..header::LAST_CRC + 4].copy_from_slice(&cov.last_crc.to_le_bytes());
    h[header::BLOCKS_CRC..header::BLOCKS_CRC + 4].copy_from_slice(&blocks_crc.to_le_bytes());
    h[header::BODY_LEN..header::BODY_LEN + 8].copy_from_slice(&body_len.to_le_bytes());
    h[header::BLOCK_SHIFT..header::BLOCK_SHIFT + 4]
        .copy_from_slice(&CHECKPOINT_BLOCK_SHIFT.to_le_bytes());
    let crc = crc32fast::hash(&h[..header::CRC]);
    h[header::CRC..].copy_from_slice(&crc.to_le_bytes());
    Some(out)
}

/// Writes `bytes` as the checkpoint: to `checkpoint.new`, synced, then renamed over
/// `checkpoint` (the backend syncs the directory), so a crash leaves the old checkpoint,
/// the new one, or a `checkpoint.new` that open never reads.
pub(crate) fn write(backend: &dyn Backend, bytes: &[u8]) -> Result<()> {
    let err = |op, e| Error::io(op, backend.path_of(CHECKPOINT_TMP), e);
    let f = create_fresh(backend, CHECKPOINT_TMP)?;
    f.write_at(bytes, 0).map_err(|e| err("write", e))?;
    f.sync().map_err(|e| err("sync", e))?;
    backend
        .rename(CHECKPOINT_TMP, CHECKPOINT_FILE)
        .map_err(|e| err("rename", e))
}

/// A checked checkpoint header.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Header {
    pub(crate) log_id: u64,
    pub(crate) base_seq: u64,
    pub(crate) cov: Covered,
    blocks_crc: u32,
    pub(crate) body_len: u64,
}

impl Header {
    /// Number of blocks of the body.
    fn blocks(&self) -> u64 {
        self.body_len.div_ceil(CHECKPOINT_BLOCK_LEN)
    }

    /// Bytes of the block table (padded to 8).
    fn table_len(&self) -> u64 {
        (self.blocks() * 4).next_multiple_of(8)
    }

    /// The file length the header implies: header, body, block table.
    fn file_len(&self) -> u64 {
        CHECKPOINT_HEADER_LEN + self.body_len + self.table_len()
    }
}

/// Checks a checkpoint header (magic, CRC, version, block length, reserved bytes).
pub(crate) fn decode_header(b: &[u8; 96]) -> std::result::Result<Header, String> {
    if b[..8] != CHECKPOINT_MAGIC {
        return Err("magic bytes are wrong".into());
    }
    if crc32fast::hash(&b[..header::CRC]) != u32_at(b, header::CRC) {
        return Err("header checksum mismatch".into());
    }
    let version = u32_at(b, header::VERSION);
    if version != CHECKPOINT_VERSION {
        return Err(format!(
            "checkpoint version {version} is not {CHECKPOINT_VERSION}"
        ));
    }
    if u32_at(b, header::FLAGS) != 0 || b[header::RESERVED..header::CRC].iter().any(|&x| x != 0) {
        return Err("reserved header bytes are not zero".into());
    }
    let shift = u32_at(b, header::BLOCK_SHIFT);
    if shift != CHECKPOINT_BLOCK_SHIFT {
        return Err(format!(
            "block length 2^{shift} is not 2^{CHECKPOINT_BLOCK_SHIFT}"
        ));
    }
    let body_len = u64_at(b, header::BODY_LEN);
    if !body_len.is_multiple_of(8) || body_len > u64::MAX / 2 {
        return Err(format!("body length {body_len} is not a multiple of 8"));
    }
    Ok(Header {
        log_id: u64_at(b, header::LOG_ID),
        base_seq: u64_at(b, header::BASE_SEQ),
        cov: Covered {
            end: u64_at(b, header::END),
            last_offset: u64_at(b, header::LAST_OFFSET),
            last_seq: u64_at(b, header::LAST_SEQ),
            last_crc: u32_at(b, header::LAST_CRC),
        },
        blocks_crc: u32_at(b, header::BLOCKS_CRC),
        body_len,
    })
}

/// The body of a checkpoint and its block checksums: which blocks have been checked so
/// far (a bit per block, set once its CRC-32 matched; never cleared, the bytes never
/// change), and whether the areas left unchecked at open have been checked since.
pub(crate) struct Checked {
    bytes: Arc<SharedBytes>,
    /// Where the body starts in `bytes`.
    body_start: usize,
    body_len: usize,
    /// CRC-32 of each block, from the block table (checked against the header).
    crcs: Vec<u32>,
    verified: Vec<AtomicU64>,
    n_verified: AtomicUsize,
    /// Body offset where the areas checked on first use start (the trajectories).
    lazy_from: AtomicUsize,
    /// Body offsets of the trajectory and history areas (set by `decode_body`).
    trajs_at: AtomicUsize,
    hist_at: AtomicUsize,
    /// Set once every block from `lazy_from` on is checked and the state's cheap checks
    /// of those areas passed (`State::check_lazy`).
    lazy_ok: AtomicBool,
    /// The checkpoint file, for errors.
    path: PathBuf,
}

impl Checked {
    /// The body of `len` bytes at `start` of `bytes`, followed there by its block table
    /// (whose CRC-32 must be `table_crc`).
    fn new(
        bytes: Arc<SharedBytes>,
        start: usize,
        h: &Header,
        path: PathBuf,
    ) -> std::result::Result<Checked, String> {
        let body_len = usize::try_from(h.body_len).map_err(|e| e.to_string())?;
        let blocks = usize::try_from(h.blocks()).map_err(|e| e.to_string())?;
        let table = bytes
            .bytes()
            .get(start + body_len..)
            .and_then(|t| t.get(..blocks * 4))
            .ok_or("the block table is past the end of the file")?;
        if crc32fast::hash(table) != h.blocks_crc {
            return Err("block table checksum mismatch".into());
        }
        let crcs = table
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        Ok(Checked {
            body_start: start,
            body_len,
            crcs,
            verified: (0..blocks.div_ceil(64))
                .map(|_| AtomicU64::new(0))
                .collect(),
            n_verified: AtomicUsize::new(0),
            lazy_from: AtomicUsize::new(body_len),
            trajs_at: AtomicUsize::new(body_len),
            hist_at: AtomicUsize::new(body_len),
            lazy_ok: AtomicBool::new(false),
            path,
            bytes,
        })
    }

    /// The body's bytes (not all checked; see [`Checked::check_range`]).
    fn body(&self) -> &[u8] {
        &self.bytes.bytes()[self.body_start..self.body_start + self.body_len]
    }

    /// Checks block `i` unless it was checked before; `Err(i)` when its CRC-32 does not
    /// match.
    fn check_block(&self, i: usize) -> std::result::Result<(), usize> {
        let (word, bit) = (i / 64, 1u64 << (i % 64));
        if self.verified[word].load(Ordering::Acquire) & bit != 0 {
            return Ok(());
        }
        let b = usize::try_from(CHECKPOINT_BLOCK_LEN).unwrap_or(usize::MAX);
        let block = &self.body()[i * b..((i + 1) * b).min(self.body_len)];
        if crc32fast::hash(block) != self.crcs[i] {
            return Err(i);
        }
        if self.verified[word].fetch_or(bit, Ordering::AcqRel) & bit == 0 {
            self.n_verified.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Checks the blocks holding body bytes `start..end`; `Err(block)` names the first
    /// damaged one.
    pub(crate) fn check_range(&self, start: usize, end: usize) -> std::result::Result<(), usize> {
        let b = usize::try_from(CHECKPOINT_BLOCK_LEN).unwrap_or(usize::MAX);
        let end = end.min(self.body_len);
        if start >= end {
            return Ok(());
        }
        (start / b..end.div_ceil(b)).try_for_each(|i| self.check_block(i))
    }

    /// Checks every block and returns the damaged ones (all of them, for `verify`).
    pub(crate) fn damaged_blocks(&self) -> Vec<usize> {
        (0..self.crcs.len())
            .filter(|&i| self.check_block(i).is_err())
            .collect()
    }

    /// File offset and length of block `i`.
    pub(crate) fn block_span(&self, i: usize) -> (u64, u64) {
        let start = CHECKPOINT_HEADER_LEN + off(i) * CHECKPOINT_BLOCK_LEN;
        let len = (off(self.body_len) - off(i) * CHECKPOINT_BLOCK_LEN).min(CHECKPOINT_BLOCK_LEN);
        (start, len)
    }

    /// The error for damaged block `i`.
    pub(crate) fn damaged(&self, i: usize) -> Error {
        let (offset, len) = self.block_span(i);
        Error::Corrupt {
            path: self.path.clone(),
            offset,
            what: format!(
                "checkpoint body block {i} (bytes {offset}..{}) does not match its checksum",
                offset + len
            ),
        }
    }

    /// Checks every block not checked at open (trajectories, outcome history, row
    /// metadata).
    pub(crate) fn check_lazy_blocks(&self) -> Result<()> {
        self.check_range(self.lazy_from.load(Ordering::Relaxed), self.body_len)
            .map_err(|i| self.damaged(i))
    }

    /// Checks the blocks holding trajectory record `pos`; `Err(block)` names a damaged one.
    pub(crate) fn check_traj(&self, pos: usize) -> std::result::Result<(), usize> {
        let size = std::mem::size_of::<TrajRec>();
        let at = self.trajs_at.load(Ordering::Relaxed) + pos * size;
        self.check_range(at, at + size)
    }

    /// Checks the blocks holding history entries `start..end`.
    pub(crate) fn check_hist(&self, start: usize, end: usize) -> std::result::Result<(), usize> {
        let size = std::mem::size_of::<HistRec>();
        let at = self.hist_at.load(Ordering::Relaxed);
        self.check_range(at + start * size, at + end * size)
    }

    /// True once the areas not checked at open have been checked.
    #[inline]
    pub(crate) fn lazy_ok(&self) -> bool {
        self.lazy_ok.load(Ordering::Acquire)
    }

    /// Records that the areas not checked at open have been checked.
    pub(crate) fn set_lazy_ok(&self) {
        self.lazy_ok.store(true, Ordering::Release);
    }

    /// (blocks checked so far, blocks).
    pub(crate) fn blocks_verified(&self) -> (usize, usize) {
        (self.n_verified.load(Ordering::Relaxed), self.crcs.len())
    }

    /// The checkpoint file.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}

/// A key space as the checkpoint records it.
pub(crate) struct SpacePart {
    pub(crate) def: SpaceDef,
    pub(crate) rows: u64,
    pub(crate) rows_crc: u32,
    pub(crate) row_meta: SharedArray<RowMeta>,
}

/// Everything a checkpoint body holds; the trajectory table and the row metadata are
/// views of it.
pub(crate) struct Body {
    pub(crate) next_id: u64,
    pub(crate) origin: u64,
    pub(crate) merged: HashMap<Origin, u32>,
    pub(crate) spaces: Vec<SpacePart>,
    pub(crate) trajs: Trajs,
    pub(crate) by_id: IdMap,
    pub(crate) names: Names,
    pub(crate) usage: Usage,
    pub(crate) any_deleted: bool,
}

/// Reads fixed-width arrays off an 8-aligned body, each count bounded by the bytes left.
struct Cursor<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn bytes(&mut self, n: u64, what: &str) -> std::result::Result<&'a [u8], String> {
        let left = self.b.len() - self.at;
        let n = usize::try_from(n)
            .ok()
            .filter(|&n| n <= left)
            .ok_or_else(|| format!("{what}: {n} bytes, only {left} left in the body"))?;
        let s = &self.b[self.at..self.at + n];
        // Every area starts 8-aligned; padding is zero.
        let padded = n.next_multiple_of(8).min(left);
        if self.b[self.at + n..self.at + padded]
            .iter()
            .any(|&x| x != 0)
        {
            return Err(format!("{what}: padding is not zero"));
        }
        self.at += padded;
        Ok(s)
    }

    fn array<T: Pod>(&mut self, n: u64, what: &str) -> std::result::Result<&'a [T], String> {
        let size = off(std::mem::size_of::<T>());
        let bytes = n
            .checked_mul(size)
            .ok_or_else(|| format!("{what}: count {n} overflows"))?;
        let b = self.bytes(bytes, what)?;
        bytemuck::try_cast_slice(b).map_err(|e| format!("{what}: {e:?}"))
    }
}

/// Slot `r`'s metadata from its record and its history entries. Codes no build writes
/// (which only a checkpoint that fails `verify` holds) read as the neutral value.
pub(crate) fn traj_from_rec(r: &TrajRec, hist: &[HistRec]) -> TrajMeta {
    let outcome_of = |code: u8| success_from(code).unwrap_or(None);
    TrajMeta {
        id: u64::from_le(r.id),
        seq: u64::from_le(r.seq),
        offset: u64::from_le(r.offset),
        env: u32::from_le(r.env),
        task: u32::from_le(r.task),
        outcome: Outcome {
            success: outcome_of(r.success),
            reward: (r.flags & T_REWARD != 0).then(|| f64::from_bits(u64::from_le(r.reward))),
        },
        relabelled: r.flags & T_RELABELLED != 0,
        provenance: ProvenanceKind::from_code(r.provenance).unwrap_or_default(),
        n_steps: u32::from_le(r.n_steps),
        deleted_at: rec_deleted(r).then(|| u64::from_le(r.deleted_at)),
        outcomes: hist
            .iter()
            .map(|h| {
                (
                    u64::from_le(h.seq),
                    Outcome {
                        success: outcome_of(h.success),
                        reward: (h.has_reward == 1).then(|| f64::from_bits(u64::from_le(h.reward))),
                    },
                )
            })
            .collect(),
        origin: Origin {
            db: u64::from_le(r.origin_db),
            id: u64::from_le(r.origin_id),
        },
        merged: r.flags & T_MERGED != 0,
        created_ms: i64::from_le(r.created_ms),
    }
}

/// The success flag an outcome code stands for (a code no build writes reads as unknown).
#[inline]
pub(crate) fn success_of(code: u8) -> Option<bool> {
    success_from(code).unwrap_or(None)
}

/// True when the record marks its slot deleted.
#[inline]
pub(crate) fn rec_deleted(r: &TrajRec) -> bool {
    r.flags & T_DELETED != 0
}

/// Decodes a checkpoint body whose blocks `c` checks. With `full`, checks every block and
/// the consistency of every record first (`verify`, the fuzzers); otherwise checks only the
/// blocks of the small areas at the front and reads them (the trajectory table, its
/// history and the row metadata stay unread views, checked on first use). Every count is
/// bounded by the body's length before allocation.
pub(crate) fn decode_body(c: &Checked, full: bool) -> std::result::Result<Body, String> {
    let shared = &c.bytes;
    let body_start = c.body_start;
    let body = c.body();
    let damaged = |i: usize| format!("body checksum mismatch in block {i}");
    c.check_range(0, std::mem::size_of::<Counts>())
        .map_err(damaged)?;
    if full {
        if let Some(&i) = c.damaged_blocks().first() {
            return Err(damaged(i));
        }
    }
    let mut cur = Cursor { b: body, at: 0 };
    let counts = cur.array::<Counts>(1, "counts")?[0];
    let n = |x: u64| u64::from_le(x);
    let spaces_rec = cur.array::<SpaceRec>(n(counts.spaces), "key spaces")?;
    let defs = cur.bytes(n(counts.defs_bytes), "key-space definitions")?;
    let ends_at = body_start + cur.at;
    let ends = cur.array::<u32>(n(counts.names), "name ends")?;
    let name_bytes_at = body_start + cur.at;
    let name_bytes = cur.bytes(n(counts.name_bytes), "names")?;
    let counter_recs = cur.array::<CounterRec>(n(counts.counters), "usage counters")?;
    let ep_recs = cur.array::<EpisodeRec>(n(counts.episodes), "episodes")?;
    let event_recs = cur.array::<EventRec>(n(counts.events), "retrieval events")?;
    let merged_recs = cur.array::<MergedRec>(n(counts.merged), "merged trajectories")?;
    // Everything up to here is checked now; the rest on first use.
    let lazy_from = cur.at;
    c.check_range(0, lazy_from).map_err(damaged)?;
    c.lazy_from.store(lazy_from, Ordering::Relaxed);
    c.trajs_at.store(cur.at, Ordering::Relaxed);
    let trajs_at = body_start + cur.at;
    let traj_recs = cur.array::<TrajRec>(n(counts.trajs), "trajectories")?;
    c.hist_at.store(cur.at, Ordering::Relaxed);
    let hist_at = body_start + cur.at;
    let hist_recs = cur.array::<HistRec>(n(counts.history), "outcome history")?;
    let rows_at = body_start + cur.at;
    let rows_all = cur.array::<RowMeta>(n(counts.rows), "row metadata")?;
    if cur.at != body.len() {
        return Err(format!(
            "{} bytes after the last array",
            body.len() - cur.at
        ));
    }
    let flags = n(counts.flags);
    if flags & !C_IDS_SORTED != 0 {
        return Err("unknown count flags".into());
    }

    // Names: the table stays a view of the checkpoint on little-endian machines.
    let (ends_view, bytes_view) = if cfg!(target_endian = "little") {
        (
            SharedArray::view(shared.clone(), ends_at, ends.len()),
            SharedArray::view(shared.clone(), name_bytes_at, name_bytes.len()),
        )
    } else {
        (None, None)
    };
    let names = Names::from_table(
        ends_view
            .unwrap_or_else(|| SharedArray::owned(ends.iter().map(|e| u32::from_le(*e)).collect())),
        bytes_view.unwrap_or_else(|| SharedArray::owned(name_bytes.to_vec())),
    )?;

    // Trajectories: views of the records and their history (both little-endian structs
    // read with `from_le`, so views on any machine).
    let n_trajs = traj_recs.len();
    let base = SharedArray::<TrajRec>::view(shared.clone(), trajs_at, n_trajs)
        .ok_or("trajectory area misaligned")?;
    let hist = SharedArray::<HistRec>::view(shared.clone(), hist_at, hist_recs.len())
        .ok_or("history area misaligned")?;
    let ids_sorted = flags & C_IDS_SORTED != 0;
    if full {
        check_trajs(traj_recs, hist_recs, names.len(), &counts, ids_sorted)?;
    }
    let by_id = if ids_sorted {
        IdMap::over_sorted_trusted(base.clone_view())
            .ok_or("more trajectories than a slot number can count")?
    } else {
        // Ids out of slot order (ids given by the caller): a map of every id, which reads
        // the whole trajectory area, so its blocks are checked now.
        c.check_range(trajs_at - body_start, hist_at - body_start)
            .map_err(damaged)?;
        let mut by_id = IdMap::default();
        for (slot, r) in traj_recs.iter().enumerate() {
            let slot = u32::try_from(slot).map_err(|_| "slot out of range")?;
            by_id.insert(u64::from_le(r.id), slot);
        }
        by_id
    };
    let trajs = Trajs::from_checkpoint(base, hist);

    // Trajectories merged from elsewhere, by origin.
    let mut merged = HashMap::with_capacity(merged_recs.len());
    let mut prev: Option<Origin> = None;
    for (i, r) in merged_recs.iter().enumerate() {
        let origin = Origin {
            db: u64::from_le(r.origin_db),
            id: u64::from_le(r.origin_id),
        };
        let slot = u32::from_le(r.slot);
        if r.pad != 0 || ix(slot) >= n_trajs || prev.is_some_and(|p| p >= origin) {
            return Err(format!(
                "merged entry {i}: slot out of range, padding or out of order"
            ));
        }
        prev = Some(origin);
        merged.insert(origin, slot);
    }
    if full {
        // The merged area is what the trajectory flags give.
        let mut want = HashMap::new();
        for (slot, r) in traj_recs.iter().enumerate() {
            if r.flags & T_MERGED != 0 {
                let o = Origin {
                    db: u64::from_le(r.origin_db),
                    id: u64::from_le(r.origin_id),
                };
                want.insert(o, u32::try_from(slot).map_err(|_| "slot out of range")?);
            }
        }
        if want != merged {
            return Err("the merged area does not match the trajectories' flags".into());
        }
    }

    // Key spaces and their rows.
    let mut spaces = Vec::with_capacity(spaces_rec.len());
    let mut def_at = 0usize;
    let mut row_at = 0usize;
    for (i, s) in spaces_rec.iter().enumerate() {
        let bad = |what: String| format!("key space {i}: {what}");
        let len = ix(u32::from_le(s.def_len));
        let payload = defs
            .get(def_at..def_at.saturating_add(len))
            .ok_or_else(|| bad("definition runs past its area".into()))?;
        def_at = def_at.saturating_add(len).next_multiple_of(8);
        let no_names = |_: u32| None;
        let def = match record::decode_record(kind::SPACE, payload, &no_names) {
            Ok(Record::Space { id, def }) if ix(id) == i => def,
            Ok(_) => return Err(bad("definition names another space".into())),
            Err(e) => return Err(bad(format!("definition: {}", e.what))),
        };
        if spaces.iter().any(|p: &SpacePart| p.def.name == def.name) {
            return Err(bad(format!("name `{}` defined twice", def.name)));
        }
        let rows = u64::from_le(s.rows);
        let n_rows = usize::try_from(rows)
            .ok()
            .filter(|&r| r <= rows_all.len() - row_at)
            .ok_or_else(|| bad(format!("{rows} rows, more than the row metadata holds")))?;
        // The rows' metadata stays a view of the checkpoint (no copy) on little-endian
        // machines, where the bytes on disk are the values.
        let view = if cfg!(target_endian = "little") {
            SharedArray::view(
                shared.clone(),
                rows_at + row_at * std::mem::size_of::<RowMeta>(),
                n_rows,
            )
        } else {
            None
        };
        let row_meta = view.unwrap_or_else(|| {
            SharedArray::owned(
                rows_all[row_at..row_at + n_rows]
                    .iter()
                    .map(|m| RowMeta {
                        slot: u32::from_le(m.slot),
                        step: u32::from_le(m.step),
                    })
                    .collect(),
            )
        });
        row_at += n_rows;
        if full {
            for (r, m) in row_meta.iter().enumerate() {
                let t = traj_recs
                    .get(ix(m.slot))
                    .ok_or_else(|| bad(format!("row {r} names slot {} of none", m.slot)))?;
                let ok = match def.level {
                    Level::Trajectory => m.step == NO_STEP,
                    Level::Step => m.step < u32::from_le(t.n_steps),
                };
                if !ok {
                    return Err(bad(format!(
                        "row {r} has step {} that does not fit",
                        m.step
                    )));
                }
            }
        }
        spaces.push(SpacePart {
            def,
            rows,
            rows_crc: u32::from_le(s.rows_crc),
            row_meta,
        });
    }
    if def_at != defs.len() || row_at != rows_all.len() {
        return Err("definitions or row metadata left over".into());
    }

    // Usage.
    let mut usage = Usage {
        next_episode: u64::from_le(counts.next_episode),
        ..Usage::default()
    };
    usage.counters.reserve(counter_recs.len());
    for r in counter_recs {
        let u = Utility {
            retrievals: u64::from_le(r.retrievals),
            episodes: u64::from_le(r.episodes),
            labelled_retrievals: u64::from_le(r.labelled),
            success_retrievals: u64::from_le(r.success),
        };
        if usage.counters.insert(u64::from_le(r.id), u).is_some() {
            return Err(format!(
                "usage counters of {} appear twice",
                u64::from_le(r.id)
            ));
        }
    }
    let mut events = event_recs.iter();
    let mut episodes = BTreeMap::new();
    for r in ep_recs {
        let id = u64::from_le(r.id);
        let outcome = success_from(r.outcome)
            .filter(|_| r.pad == [0; 6] && r.merged <= 1)
            .ok_or_else(|| format!("episode {id}: outcome code or padding"))?;
        let n_events = u64::from_le(r.events);
        let mut evs = Vec::with_capacity(
            usize::try_from(n_events)
                .unwrap_or(usize::MAX)
                .min(events.len()),
        );
        for _ in 0..n_events {
            let e = events
                .next()
                .ok_or_else(|| format!("episode {id}: retrieval events run out"))?;
            let stage = stage_from(e.stage)
                .filter(|_| e.pad == [0; 3])
                .ok_or_else(|| format!("episode {id}: stage code or padding"))?;
            let step = u32::from_le(e.step);
            evs.push(RetrievalEvent {
                id: u64::from_le(e.id),
                step: (step != NO_STEP).then_some(step),
                stage,
            });
        }
        let origin = Origin {
            db: u64::from_le(r.origin_db),
            id: u64::from_le(r.origin_id),
        };
        if r.merged == 1 && usage.merged.insert(origin, id).is_some() {
            return Err(format!(
                "episode {id}: merged origin {origin} appears twice"
            ));
        }
        let ep = Episode {
            id,
            created_ms: i64::from_le(r.created_ms),
            outcome,
            events: evs,
            origin,
        };
        if episodes.insert(id, ep).is_some() {
            return Err(format!("episode {id} appears twice"));
        }
    }
    if events.next().is_some() {
        return Err("retrieval events left over".into());
    }
    usage.episodes = episodes;
    Ok(Body {
        next_id: u64::from_le(counts.next_id),
        origin: u64::from_le(counts.origin),
        merged,
        spaces,
        trajs,
        by_id,
        names,
        usage,
        any_deleted: n(counts.deleted) > 0,
    })
}

/// The per-trajectory consistency checks (`verify` and the fuzzers; open skips them):
/// name indexes in range, known flags and codes, zero padding, history ends rising within
/// the history area and every entry valid, an id live in at most one slot, and the counts'
/// deleted number and sorted flag what the records give.
fn check_trajs(
    recs: &[TrajRec],
    hist: &[HistRec],
    n_names: usize,
    counts: &Counts,
    ids_sorted: bool,
) -> std::result::Result<(), String> {
    let n_names = off(n_names);
    let mut live: HashMap<u64, usize> = HashMap::new();
    let mut hist_at = 0usize;
    let mut deleted = 0u64;
    let mut sorted = true;
    for (slot, r) in recs.iter().enumerate() {
        let bad = |what: &str| format!("trajectory slot {slot}: {what}");
        let (env, task) = (u32::from_le(r.env), u32::from_le(r.task));
        if u64::from(env) >= n_names || u64::from(task) >= n_names {
            return Err(bad("env or task name out of range"));
        }
        if r.flags & !(T_RELABELLED | T_DELETED | T_REWARD | T_MERGED) != 0 || r.pad != [0; 5] {
            return Err(bad("unknown flags or non-zero padding"));
        }
        success_from(r.success).ok_or_else(|| bad("outcome code"))?;
        ProvenanceKind::from_code(r.provenance).ok_or_else(|| bad("provenance code"))?;
        let end = ix(u32::from_le(r.history_end));
        let entries = hist
            .get(hist_at..end)
            .ok_or_else(|| bad("outcome history ends out of order or past the history"))?;
        for h in entries {
            if h.has_reward > 1 || h.pad != [0; 6] || success_from(h.success).is_none() {
                return Err(bad("outcome history entry"));
            }
        }
        hist_at = end;
        let id = u64::from_le(r.id);
        if slot > 0 && u64::from_le(recs[slot - 1].id) >= id {
            sorted = false;
        }
        if rec_deleted(r) {
            deleted += 1;
        } else if live.insert(id, slot).is_some() {
            return Err(bad(&format!("id {id} is live in two slots")));
        }
    }
    if hist_at != hist.len() {
        return Err("outcome history entries left over".into());
    }
    if deleted != u64::from_le(counts.deleted) {
        return Err(format!(
            "{deleted} trajectories are deleted, the counts say {}",
            u64::from_le(counts.deleted)
        ));
    }
    if ids_sorted && !sorted {
        return Err("the counts say the ids are in slot order, they are not".into());
    }
    Ok(())
}

/// Decodes and checks a whole checkpoint file held in memory (header, every block and the
/// consistency of every record): the fuzzers' entry.
pub(crate) fn decode_file(bytes: &[u8]) -> std::result::Result<(Header, Body), String> {
    let head: &[u8; 96] = bytes
        .get(..96)
        .and_then(|h| h.try_into().ok())
        .ok_or("shorter than the header")?;
    let h = decode_header(head)?;
    if off(bytes.len()) != h.file_len() {
        return Err(format!(
            "the file is {} bytes, the header implies {}",
            bytes.len(),
            h.file_len()
        ));
    }
    // An 8-aligned copy of body and table for the casts.
    let rest = &bytes[96..];
    let mut aligned = vec![0u64; rest.len() / 8];
    bytemuck::cast_slice_mut::<u64, u8>(&mut aligned).copy_from_slice(rest);
    let c = Checked::new(
        Arc::new(SharedBytes::Heap(aligned)),
        0,
        &h,
        PathBuf::from(CHECKPOINT_FILE),
    )?;
    let b = decode_body(&c, true)?;
    Ok((h, b))
}

/// Treats everything after the header of `file` as a body (cut to a multiple of 8 bytes),
/// appends its block table and rewrites the header's body length, block length and
/// checksums, so a mutated body reaches the decoder. For the fuzzers and tests.
pub(crate) fn fix_checksums(file: &mut Vec<u8>) {
    if file.len() < HEADER {
        return;
    }
    let body_len = (file.len() - HEADER) / 8 * 8;
    file.truncate(HEADER + body_len);
    let table: Vec<u32> = file[HEADER..]
        .chunks(usize::try_from(CHECKPOINT_BLOCK_LEN).unwrap_or(usize::MAX))
        .map(|b| crc32fast::hash(b).to_le())
        .collect();
    let table_at = file.len();
    put(file, &table);
    let blocks_crc = crc32fast::hash(&file[table_at..table_at + table.len() * 4]);
    let h = &mut file[..HEADER];
    h[header::BLOCKS_CRC..header::BLOCKS_CRC + 4].copy_from_slice(&blocks_crc.to_le_bytes());
    h[header::BODY_LEN..header::BODY_LEN + 8].copy_from_slice(&off(body_len).to_le_bytes());
    h[header::BLOCK_SHIFT..header::BLOCK_SHIFT + 4]
        .copy_from_slice(&CHECKPOINT_BLOCK_SHIFT.to_le_bytes());
    let crc = crc32fast::hash(&h[..header::CRC]);
    h[header::CRC..].copy_from_slice(&crc.to_le_bytes());
}

/// The body of a whole checkpoint file (header, body, block table) without its block
/// table, for [`fix_checksums`] after a mutation of the body; `None` when the header's
/// body length does not fit the file.
pub(crate) fn body_of(file: &[u8]) -> Option<&[u8]> {
    let len = usize::try_from(u64_at(file.get(..HEADER)?, header::BODY_LEN)).ok()?;
    file.get(..HEADER.checked_add(len)?)
}

/// What [`load`] found.
pub(crate) enum Loaded {
    /// No checkpoint file.
    Absent,
    /// A checkpoint that does not prove it belongs to this log and its key files: why.
    Ignored(String),
    /// The state as of the covered end of the log, and the checkpoint file's size.
    Used(Box<State>, Covered, u64),
}

/// Reads the checkpoint beside `log` (whose header is `lh`) and, when it belongs to this
/// log and every key file still vouches for the rows it records, the state it holds, with
/// key stores opened for a writer or read-only. Never fails: anything wrong is a reason to
/// ignore it and scan the log. The state's trajectory table and row metadata are views of
/// the checkpoint whose blocks are checked on first use (`State::check_lazy`).
pub(crate) fn load(
    backend: &dyn Backend,
    log: &dyn Storage,
    log_path: &Path,
    lh: &LogHeader,
    read_only: bool,
) -> Loaded {
    match load_inner(backend, log, log_path, lh, read_only) {
        Ok(Some((st, cov, len))) => Loaded::Used(Box::new(st), cov, len),
        Ok(None) => Loaded::Absent,
        Err(why) => Loaded::Ignored(why),
    }
}

fn load_inner(
    backend: &dyn Backend,
    log: &dyn Storage,
    log_path: &Path,
    lh: &LogHeader,
    read_only: bool,
) -> std::result::Result<Option<(State, Covered, u64)>, String> {
    let f = match backend.open_read(CHECKPOINT_FILE) {
        Ok(Some(f)) => f,
        Ok(None) => return Ok(None),
        Err(e) => return Err(format!("cannot be opened: {e}")),
    };
    let len = f.len().map_err(|e| format!("cannot be read: {e}"))?;
    let mut head = [0u8; 96];
    if len < CHECKPOINT_HEADER_LEN {
        return Err(format!("{len} bytes, shorter than its header"));
    }
    f.read_at(&mut head, 0)
        .map_err(|e| format!("cannot be read: {e}"))?;
    let h = decode_header(&head)?;
    if h.log_id != lh.log_id || h.base_seq != lh.base_seq {
        return Err(format!(
            "it belongs to log {:#x} (base {}), not this log {:#x} (base {}) (a compaction or an older copy)",
            h.log_id, h.base_seq, lh.log_id, lh.base_seq
        ));
    }
    if len != h.file_len() {
        return Err(format!(
            "the file is {len} bytes but the header implies {} (a write cut short)",
            h.file_len()
        ));
    }
    check_covered(log, log_path, lh, h.cov)?;
    let rest = usize::try_from(len - CHECKPOINT_HEADER_LEN).map_err(|e| e.to_string())?;
    // The body is mapped when the file is an OS file (no copy into fresh memory; a
    // checkpoint file is never changed in place, only replaced by a rename), else read
    // into an 8-aligned buffer the size of the file.
    // The state's largest arrays (trajectories, row metadata, the id map's base) stay
    // views of these bytes for as long as they are not changed.
    let (shared, body_start) = match f.file() {
        Some(file) => (
            SharedBytes::Map(
                MappedFile::map(file, HEADER + rest)
                    .map_err(|e| format!("cannot be mapped: {e}"))?,
            ),
            HEADER,
        ),
        None => {
            let mut aligned = vec![0u64; rest / 8];
            f.read_at(
                bytemuck::cast_slice_mut(&mut aligned),
                CHECKPOINT_HEADER_LEN,
            )
            .map_err(|e| format!("cannot be read: {e}"))?;
            (SharedBytes::Heap(aligned), 0)
        }
    };
    let checked = Arc::new(Checked::new(
        Arc::new(shared),
        body_start,
        &h,
        backend.path_of(CHECKPOINT_FILE),
    )?);
    let b = decode_body(&checked, false)?;
    let mut spaces = Vec::with_capacity(b.spaces.len());
    let mut space_by_name = HashMap::with_capacity(b.spaces.len());
    for (i, s) in b.spaces.into_iter().enumerate() {
        let id = u32::try_from(i).map_err(|e| e.to_string())?;
        let rows = RowStore::open_checkpointed(
            backend, id, &s.def, lh.log_id, s.rows, s.rows_crc, read_only,
        )
        .map_err(|e| format!("key file of space {i}: {e}"))?
        .map_err(|why| format!("key file of space {i}: {why}"))?;
        space_by_name.insert(s.def.name.clone(), id);
        spaces.push(Space {
            def: s.def,
            rows,
            row_meta: s.row_meta,
            bounds: RwLock::default(),
            quant: RwLock::default(),
            graph: RwLock::new(None),
            vouch_at_open: Some((s.rows, s.rows_crc)),
            saved: Mutex::default(),
        });
    }
    let st = State {
        header: *lh,
        spaces,
        space_by_name,
        trajs: b.trajs,
        by_id: b.by_id,
        names: b.names,
        usage: b.usage,
        next_id: b.next_id,
        last_seq: h.cov.last_seq,
        origin: b.origin,
        merged: b.merged,
        any_deleted: b.any_deleted,
        ckpt: Some(checked),
    };
    Ok(Some((st, h.cov, len)))
}

/// The log end and last sequence number the checkpoint beside a log (header `lh`) covers,
/// when there is a checkpoint whose header checks and names this log; `None` otherwise.
/// `verify` uses it to notice a log cut back past commits a checkpoint recorded.
pub(crate) fn covered_end(backend: &dyn Backend, lh: &LogHeader) -> Option<(u64, u64)> {
    let f = backend.open_read(CHECKPOINT_FILE).ok()??;
    let mut head = [0u8; 96];
    if f.len().ok()? < CHECKPOINT_HEADER_LEN {
        return None;
    }
    f.read_at(&mut head, 0).ok()?;
    let h = decode_header(&head).ok()?;
    (h.log_id == lh.log_id && h.base_seq == lh.base_seq).then_some((h.cov.end, h.cov.last_seq))
}

/// Checks that the log holds the frames a checkpoint covers: the covered end is inside the
/// log and the frame recorded as the last covered one is there, valid, ends exactly at the
/// covered end and carries the recorded sequence number and CRC.
fn check_covered(
    log: &dyn Storage,
    log_path: &Path,
    lh: &LogHeader,
    cov: Covered,
) -> std::result::Result<(), String> {
    let len = log.len().map_err(|e| format!("log length: {e}"))?;
    if cov.end > len {
        return Err(format!(
            "it covers the log up to byte {}, but the log has {len} bytes (the log was cut)",
            cov.end
        ));
    }
    if cov.last_offset == 0 {
        if cov == Covered::empty(lh.base_seq) {
            return Ok(());
        }
        return Err("it covers no frame but does not start at the log's first frame".into());
    }
    let found = log::frame_at(log, log_path, cov.last_offset, cov.last_seq)
        .map_err(|e| format!("reading its last frame: {e}"))?;
    match found {
        Some((end, crc)) if end == cov.end && crc == cov.last_crc => Ok(()),
        _ => Err(format!(
            "the log has no frame with sequence number {} and CRC {:#010x} ending at byte {} (the log was cut or rewritten)",
            cov.last_seq, cov.last_crc, cov.end
        )),
    }
}
