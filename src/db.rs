//! The database handle: opening and recovery, commits, deletes, outcomes, episodes,
//! compaction, fork and verification. Search lives in `search.rs`.

use std::collections::HashMap;
use std::fs::File;
use std::hash::{BuildHasher, Hasher};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};
use serde::Serialize;

use crate::checkpoint::{self, Covered, Loaded};
use crate::error::{Error, Result};
use crate::format::codec::{ix, off};
use crate::format::log::{self, Frame, LogHeader, LOG_FILE, MAX_PAYLOAD};
use crate::format::record::{
    self, kind, EncKey, Level, Origin, Outcome, ProvenanceKind, Record, RetrievalEvent, SpaceDef,
    Trajectory, NO_STEP,
};
use crate::id_map::IdMap;
use crate::index::bounds::StepBounds;
use crate::index::graph::Graph;
use crate::index::keyfile::{RowMark, RowStore};
use crate::names::Names;
use crate::storage::mmap::SharedArray;
use crate::storage::{create_fresh, Backend, FileBackend, Storage};
use crate::trajs::Trajs;
use crate::usage::{Episode, Usage, Utility};

/// Name of the lock file in a database directory.
pub const LOCK_FILE: &str = "LOCK";

/// The trajectory id no trajectory may have (`u64::MAX`).
pub(crate) const RESERVED_ID: u64 = u64::MAX;

/// When a commit is durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Durability {
    /// Commits are written to the operating system but not synced; a power cut can lose the
    /// most recent ones (never a part of one). [`Database::sync`] and closing sync them.
    Buffered,
    /// Each commit is synced before the call returns. The default.
    #[default]
    SyncEachCommit,
    /// Each commit returns only after a sync that covers it, but commits from concurrent
    /// threads share one sync (group commit).
    GroupCommit,
}

/// How to open a database. Every field documents its default.
#[derive(Debug, Clone)]
pub struct Options {
    /// Durability of commits. Default: [`Durability::SyncEachCommit`].
    pub durability: Durability,
    /// Open for reading only: no lock is taken, a torn tail is ignored rather than cut, and
    /// writes fail with [`Error::ReadOnly`]. Default: false.
    pub read_only: bool,
    /// Create the database when it does not exist. Default: true.
    pub create: bool,
    /// How long [`Database::open`] for writing waits for another writer to release the lock
    /// (checking every 50 ms) before it fails with [`Error::Locked`], like SQLite's busy
    /// timeout. Default: zero, fail at once.
    pub lock_timeout: std::time::Duration,
    /// Keep an i8 copy of each cosine or dot key space of at least 4,096 rows in memory
    /// (`dims + 12` bytes per row, about a quarter of its key file; built on the space's
    /// first search and extended as rows are appended) and read it instead of the f32 rows
    /// in `search` and `retrieve` (module `index::quant`). Answers are the same bits either
    /// way; false saves the memory and scans the f32 rows. The graph walk of `search_approx`
    /// and `retrieve_approx` steers by the same copy when this is true (scores stay exact;
    /// which rows are found may differ slightly from a walk on the f32 rows). Default: true.
    pub quantised_search: bool,
    /// Open for writing although the log ends before the commits its checkpoint records
    /// (frames were cut from its end: a log restored from an older copy, or truncated by a
    /// tool; trajdb syncs the log before every checkpoint, so no crash does this). The
    /// writer's next checkpoint records the shorter log and the missing commits are given up
    /// for good. Default: false: such a writable open fails with [`Error::Corrupt`] naming
    /// the log before anything is written, so the log can be restored from a copy first;
    /// read-only opens always work and say it ([`OpenReport::log_cut_at`]).
    pub accept_log_cut: bool,
    /// Ignore the checkpoint file and rebuild the state the slow way: decode the whole log
    /// and checksum every row each key file vouches for (what every open did before
    /// checkpoints). For the paranoid; [`Database::verify`] checks more. Default: false.
    pub verify_on_open: bool,
    /// Under [`SearchMode::Auto`](crate::SearchMode::Auto) (the choice of
    /// [`Database::search_mode`] and [`Database::retrieve_mode`], and the default of the CLI
    /// and Python), a key space with fewer rows stored than this is scanned exactly even
    /// when it has a graph index; at or above it, a space with a graph index is answered
    /// through the graph. Rows of deleted trajectories count until compaction (the scan
    /// reads them too). 0 sends every space with a graph through it; `u64::MAX` keeps
    /// every automatic search exact. [`Database::search`] and [`Database::retrieve`] are
    /// always exact whatever this is. Default: 20,000
    /// ([`DEFAULT_EXACT_BELOW_ROWS`](crate::DEFAULT_EXACT_BELOW_ROWS)).
    pub exact_below_rows: u64,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            durability: Durability::SyncEachCommit,
            read_only: false,
            create: true,
            lock_timeout: std::time::Duration::ZERO,
            quantised_search: true,
            accept_log_cut: false,
            verify_on_open: false,
            exact_below_rows: crate::index::mode::DEFAULT_EXACT_BELOW_ROWS,
        }
    }
}

/// What opening a database found and repaired.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct OpenReport {
    /// Bytes of torn tail cut from the log, if any.
    pub truncated_bytes: u64,
    /// Why the tail was cut.
    pub torn_reason: Option<String>,
    /// The file the cut bytes were saved to (`log.cut-OFFSET`), unless they were all zero.
    pub cut_file: Option<String>,
    /// Why the cut bytes could not be saved (they were cut all the same), if they could not.
    pub cut_file_error: Option<String>,
    /// When the state came from the checkpoint file: the log offset it covers (only the log
    /// after it was read).
    pub checkpoint_end: Option<u64>,
    /// Why a checkpoint file that is there was not used (the log was scanned instead): it
    /// belongs to another log, covers frames the log no longer has, is damaged, or a key
    /// file no longer vouches for its rows.
    pub checkpoint_ignored: Option<String>,
    /// Why a writable open could not write a new checkpoint (the open succeeded anyway).
    pub checkpoint_error: Option<String>,
    /// `(log length, covered end)` when the log ends before the end its own checkpoint
    /// recorded: frames that were committed and checkpointed are gone from the log (cut at a
    /// frame boundary, which looks like a whole log). The state is what the log still holds;
    /// the rest is lost unless the log is restored from a copy. A writer's next checkpoint
    /// replaces the stale one, so this is reported once.
    pub log_cut_at: Option<(u64, u64)>,
    /// The end of the commits the checkpoint records, when the log's damaged tail (see
    /// `truncated_bytes`) begins before it: the damaged frames were committed and synced
    /// before that checkpoint was written, so they are damage at rest, not a write a crash
    /// tore. A read-only open ignores them (and says so here); a writable open refuses the
    /// log with [`Error::Corrupt`] unless [`Options::accept_log_cut`] is set.
    pub damaged_committed_end: Option<u64>,
}

/// Per-trajectory state kept in memory; the body stays in the log.
#[derive(Debug, Clone)]
pub(crate) struct TrajMeta {
    pub(crate) id: u64,
    pub(crate) seq: u64,
    pub(crate) offset: u64,
    pub(crate) env: u32,
    pub(crate) task: u32,
    pub(crate) outcome: Outcome,
    /// True when a later record changed the outcome stored in the trajectory's own record.
    pub(crate) relabelled: bool,
    pub(crate) provenance: ProvenanceKind,
    /// Where it was first written: its provenance origin when merged from another database,
    /// else (the origin id in effect when it was committed here, its id).
    pub(crate) origin: Origin,
    /// True when it came from another database (its record carries a provenance origin).
    pub(crate) merged: bool,
    pub(crate) created_ms: i64,
    pub(crate) n_steps: u32,
    pub(crate) deleted_at: Option<u64>,
    /// Outcomes over time, (sequence number, outcome), oldest first: empty until the first
    /// relabel, then the record's own outcome followed by every relabel.
    pub(crate) outcomes: Vec<(u64, Outcome)>,
}

impl TrajMeta {
    /// The outcome as of commit `as_of` (None = now).
    pub(crate) fn outcome_at(&self, as_of: Option<u64>) -> &Outcome {
        match as_of {
            Some(s) => self
                .outcomes
                .iter()
                .rev()
                .find(|(seq, _)| *seq <= s)
                .map_or(&self.outcome, |(_, o)| o),
            None => &self.outcome,
        }
    }

    /// Visible in a view as of commit `as_of` (None = now)?
    pub(crate) fn visible(&self, as_of: Option<u64>) -> bool {
        match as_of {
            None => self.deleted_at.is_none(),
            Some(s) => self.seq <= s && self.deleted_at.is_none_or(|d| d > s),
        }
    }
}

#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
pub(crate) struct RowMeta {
    pub(crate) slot: u32,
    pub(crate) step: u32,
}

pub(crate) struct Space {
    pub(crate) def: SpaceDef,
    pub(crate) rows: RowStore,
    /// Slot and step of each row (a view of the checkpoint until the first change).
    pub(crate) row_meta: SharedArray<RowMeta>,
    /// Per-trajectory step-score bounds for pruned retrieval (step-level spaces; derived,
    /// in memory, built on first use).
    pub(crate) bounds: RwLock<StepBounds>,
    /// The space's graph index, when it has one (module `index::graph`; derived, its file
    /// `graph-N.idx` mapped).
    pub(crate) graph: RwLock<Option<Graph>>,
    /// The i8 copy of the rows for search's exact first pass (derived, in memory, built
    /// on first use; module `index::quant`).
    pub(crate) quant: RwLock<crate::index::quant::QuantRows>,
    /// The row count and key-row checksum the checkpoint this handle opened from records
    /// for the space (None after a scan): what a search-bounds file must be derived from.
    pub(crate) vouch_at_open: Option<(u64, u32)>,
    /// The space's search-bounds files (module `index::sidecar`).
    pub(crate) saved: Mutex<crate::index::sidecar::Saved>,
}

/// Everything derived from the log, rebuilt on open.
pub(crate) struct State {
    pub(crate) header: LogHeader,
    pub(crate) spaces: Vec<Space>,
    pub(crate) space_by_name: HashMap<String, u32>,
    /// Trajectory metadata by slot (a view of the checkpoint, when opened from one).
    pub(crate) trajs: Trajs,
    pub(crate) by_id: IdMap,
    pub(crate) names: Names,
    pub(crate) usage: Usage,
    pub(crate) next_id: u64,
    pub(crate) last_seq: u64,
    /// The origin id in effect: the header's, or the last ORIGIN record's (0 in a log
    /// written before origins).
    pub(crate) origin: u64,
    /// Trajectories merged from other databases: their origin to their slot here (the
    /// latest trajectory with that origin).
    pub(crate) merged: HashMap<Origin, u32>,
    /// Set once any trajectory of this state is marked deleted (never cleared; a new state
    /// starts clear), so a search with an empty filter knows every row passes.
    pub(crate) any_deleted: bool,
    /// The checkpoint this state reads in place, when opened from one: the blocks of its
    /// trajectory table, history and row metadata are checked on first use
    /// ([`State::check_lazy`]).
    pub(crate) ckpt: Option<Arc<checkpoint::Checked>>,
}

impl State {
    /// Checks what open left unchecked of the checkpoint this state reads (the blocks of
    /// its trajectory table, outcome history and row metadata, and that every row names
    /// an existing slot), once; later calls return at once. A damaged block is an
    /// [`Error::Corrupt`] naming the checkpoint file and the block's offset.
    pub(crate) fn check_lazy(&self) -> Result<()> {
        let Some(c) = &self.ckpt else {
            return Ok(());
        };
        if c.lazy_ok() {
            return Ok(());
        }
        c.check_lazy_blocks()?;
        let n = self.trajs.len();
        for s in &self.spaces {
            // The largest slot first (one pass the compiler vectorises), the row only when
            // it is out of range.
            let max = s.row_meta.iter().map(|m| m.slot).max();
            if max.is_none_or(|m| ix(m) < n) {
                continue;
            }
            if let Some(r) = s.row_meta.iter().position(|m| ix(m.slot) >= n) {
                return Err(Error::Corrupt {
                    path: c.path().to_owned(),
                    offset: 0,
                    what: format!(
                        "row {r} of key space `{}` names slot {} of {n}",
                        s.def.name, s.row_meta[r].slot
                    ),
                });
            }
        }
        c.set_lazy_ok();
        Ok(())
    }

    /// Checks the checkpoint blocks that finding `id` and reading its slot touch (the
    /// trajectory records the id map's search reads, the slot's record, the one before it
    /// and its history entries), when the state reads a checkpoint not yet checked as a
    /// whole. A damaged block is an [`Error::Corrupt`] as in [`State::check_lazy`].
    pub(crate) fn check_point(&self, id: u64) -> Result<()> {
        let Some(c) = &self.ckpt else {
            return Ok(());
        };
        if c.lazy_ok() {
            return Ok(());
        }
        let slot = self
            .by_id
            .get_checked(id, |pos| c.check_traj(pos))
            .map_err(|b| c.damaged(b))?;
        let Some(slot) = slot.map(ix).filter(|&s| s < self.trajs.base_len()) else {
            return Ok(());
        };
        let check = || {
            c.check_traj(slot)?;
            if slot > 0 {
                c.check_traj(slot - 1)?;
            }
            match self.trajs.hist_range(slot) {
                Some((a, b)) => c.check_hist(a, b),
                None => Ok(()),
            }
        };
        check().map_err(|b| c.damaged(b))
    }

    /// The live or deleted trajectory here that was first written as `origin`: merged
    /// from there, or written here under that origin id.
    pub(crate) fn find_origin(&self, origin: Origin) -> Option<usize> {
        if let Some(&slot) = self.merged.get(&origin) {
            return Some(ix(slot));
        }
        let slot = ix(self.by_id.get(origin.id)?);
        (self.trajs.get(slot)?.origin == origin).then_some(slot)
    }

    fn intern(&mut self, s: &str) -> u32 {
        self.names.intern(s)
    }

    pub(crate) fn space(&self, name: &str) -> Result<(u32, &Space)> {
        let id = *self
            .space_by_name
            .get(name)
            .ok_or_else(|| Error::UnknownSpace { name: name.into() })?;
        Ok((id, &self.spaces[ix(id)]))
    }

    pub(crate) fn space_name(&self) -> impl Fn(u32) -> Option<(String, Level)> + '_ {
        move |id| {
            self.spaces
                .get(usize::try_from(id).ok()?)
                .map(|s| (s.def.name.clone(), s.def.level))
        }
    }

    /// Applies one valid frame. `rows` says how to get a key store for a new space.
    fn apply(
        &mut self,
        f: &Frame<'_>,
        path: &Path,
        new_store: &mut dyn FnMut(u32, &SpaceDef) -> Result<RowStore>,
    ) -> Result<()> {
        let corrupt = |at: usize, what: String| Error::Corrupt {
            path: path.to_owned(),
            offset: f.offset + log::FRAME_HEADER_LEN + off(at),
            what: format!("record with sequence number {}: {what}", f.seq),
        };
        // All or nothing: every check comes before the first change, and the one step that
        // can fail after a change (writing key rows) is rolled back, so a record that fails
        // leaves the state exactly as it was.
        if f.kind == kind::TRAJECTORY {
            let t = record::scan_trajectory(f.payload).map_err(|e| corrupt(e.at, e.what))?;
            // A checkpoint's bytes are checked before this record reads them.
            self.check_point(t.id)?;
            // An id may come back only after the trajectory that had it was deleted.
            let reused = match self.by_id.get(t.id) {
                Some(old) if !self.trajs.deleted(ix(old)) => {
                    return Err(corrupt(0, format!("trajectory id {} appears twice", t.id)));
                }
                Some(_) => true,
                None => false,
            };
            let slot = u32::try_from(self.trajs.len())
                .map_err(|_| corrupt(0, "more trajectories than a slot number can count".into()))?;
            // Check every key before any row is stored, so a bad record changes nothing.
            let mut step_run: Option<(u32, u32)> = None; // (space, next expected step)
            for (space, step, v) in &t.keys {
                let Some(s) = self.spaces.get(ix(*space)) else {
                    return Err(corrupt(0, format!("key of undefined key space {space}")));
                };
                if v.len() != ix(s.def.dims) * 4 {
                    return Err(corrupt(
                        0,
                        format!("key of {} dims in a space of {}", v.len() / 4, s.def.dims),
                    ));
                }
                let step_ok = match s.def.level {
                    Level::Trajectory => *step == NO_STEP,
                    Level::Step => {
                        // Step keys of one space are exactly steps 0..n, in order.
                        let want = match step_run {
                            Some((sp, next)) if sp == *space => next,
                            _ => 0,
                        };
                        if step_run.is_some_and(|(sp, next)| sp != *space && next != t.n_steps) {
                            return Err(corrupt(0, "a step key space misses steps".into()));
                        }
                        step_run = Some((*space, want + 1));
                        *step == want && *step < t.n_steps
                    }
                };
                if !step_ok {
                    return Err(corrupt(
                        0,
                        format!("key step {step} does not fit space `{}`", s.def.name),
                    ));
                }
            }
            if step_run.is_some_and(|(_, next)| next != t.n_steps) {
                return Err(corrupt(0, "a step key space misses steps".into()));
            }
            let marks: Vec<(RowMark, usize)> = self
                .spaces
                .iter()
                .map(|s| (s.rows.mark(), s.row_meta.len()))
                .collect();
            for (space, step, v) in &t.keys {
                let s = &mut self.spaces[ix(*space)];
                if let Err(e) = s.rows.push(v) {
                    for (s, (mark, metas)) in self.spaces.iter_mut().zip(marks) {
                        s.rows.rollback(mark);
                        s.row_meta.truncate(metas);
                    }
                    return Err(e);
                }
                s.row_meta.push(RowMeta { slot, step: *step });
            }
            let env = self.intern(t.env);
            let task = self.intern(t.task);
            self.last_seq = f.seq;
            let origin = t.origin.unwrap_or(Origin {
                db: self.origin,
                id: t.id,
            });
            if t.origin.is_some() {
                self.merged.insert(origin, slot);
            }
            self.trajs.push(TrajMeta {
                id: t.id,
                seq: f.seq,
                offset: f.offset,
                env,
                task,
                outcome: Outcome {
                    success: t.success,
                    reward: None,
                },
                relabelled: false,
                provenance: t.provenance,
                origin,
                merged: t.origin.is_some(),
                created_ms: t.created_ms,
                n_steps: t.n_steps,
                deleted_at: None,
                outcomes: Vec::new(),
            });
            self.by_id.insert(t.id, slot);
            if reused {
                // The deleted trajectory's usage is not the new one's (as after compaction).
                self.usage.forget(t.id);
            }
            self.next_id = self.next_id.max(t.id.saturating_add(1));
            return Ok(());
        }
        let rec = record::decode_record(f.kind, f.payload, &self.space_name())
            .map_err(|e| corrupt(e.at, e.what))?;
        match rec {
            Record::Space { id, def } => {
                if ix(id) != self.spaces.len() {
                    return Err(corrupt(0, format!("key space id {id} out of order")));
                }
                if self.space_by_name.contains_key(&def.name) {
                    return Err(corrupt(
                        0,
                        format!("key space `{}` defined twice", def.name),
                    ));
                }
                let rows = new_store(id, &def)?;
                self.space_by_name.insert(def.name.clone(), id);
                self.spaces.push(Space {
                    def,
                    rows,
                    row_meta: SharedArray::default(),
                    bounds: RwLock::default(),
                    graph: RwLock::new(None),
                    quant: RwLock::default(),
                    vouch_at_open: None,
                    saved: Mutex::default(),
                });
            }
            Record::Trajectory(_) => {}
            Record::Delete { id } => {
                self.check_point(id)?;
                let slot = self
                    .live_slot(id)
                    .ok_or_else(|| corrupt(0, format!("delete of unknown trajectory {id}")))?;
                self.trajs.update(slot, |m| m.deleted_at = Some(f.seq));
                self.any_deleted = true;
            }
            Record::TrajOutcome { id, outcome } => {
                self.check_point(id)?;
                let slot = self
                    .live_slot(id)
                    .ok_or_else(|| corrupt(0, format!("outcome for unknown trajectory {id}")))?;
                self.trajs.update(slot, |m| {
                    if m.outcomes.is_empty() {
                        m.outcomes.push((m.seq, m.outcome));
                    }
                    m.outcomes.push((f.seq, outcome));
                    m.outcome = outcome;
                    m.relabelled = true;
                });
            }
            Record::EpisodeBegin {
                episode,
                created_ms,
            } => {
                if self.usage.episodes.contains_key(&episode) {
                    return Err(corrupt(0, format!("episode {episode} begun twice")));
                }
                let origin = Origin {
                    db: self.origin,
                    id: episode,
                };
                self.usage.begin(episode, created_ms, origin, false);
            }
            Record::EpisodeMerged {
                episode,
                created_ms,
                origin,
            } => {
                if self.usage.episodes.contains_key(&episode) {
                    return Err(corrupt(0, format!("episode {episode} begun twice")));
                }
                self.usage.begin(episode, created_ms, origin, true);
            }
            Record::Origin { origin } => self.origin = origin,
            Record::Retrievals { episode, events } => {
                if !self.usage.episodes.contains_key(&episode) {
                    return Err(corrupt(
                        0,
                        format!("retrievals for unknown episode {episode}"),
                    ));
                }
                self.usage.log(episode, &events);
            }
            Record::EpisodeOutcome { episode, success } => {
                if !self.usage.episodes.contains_key(&episode) {
                    return Err(corrupt(0, format!("outcome for unknown episode {episode}")));
                }
                self.usage.set_outcome(episode, success);
            }
        }
        self.last_seq = f.seq;
        Ok(())
    }

    /// Refuses a read view as of a commit that this log no longer holds: sequence numbers
    /// continue across compaction, and the commits before the log's first one were folded
    /// into it, so such a view has ended.
    pub(crate) fn check_view(&self, as_of: Option<u64>) -> Result<()> {
        match as_of {
            // A log that starts at 1 folded nothing: the view of commit 0 is the empty one.
            Some(s) if self.header.base_seq > 1 && s < self.header.base_seq => {
                Err(Error::ViewEnded {
                    as_of: s,
                    first: self.header.base_seq,
                })
            }
            _ => Ok(()),
        }
    }

    pub(crate) fn live_slot(&self, id: u64) -> Option<usize> {
        let slot = ix(self.by_id.get(id)?);
        (slot < self.trajs.len() && !self.trajs.deleted(slot)).then_some(slot)
    }
}

pub(crate) struct Writer {
    pub(crate) end: u64,
    pub(crate) next_seq: u64,
    /// Which log file `end` measures: bumped each time compaction puts a new log in place.
    pub(crate) log_gen: u64,
    /// Offset and `crc` field of the last frame before `end` ((0, 0) when there is none):
    /// what a checkpoint covering `end` records to prove it belongs to this log.
    pub(crate) last_frame: (u64, u32),
    /// The log end the checkpoint file covers (0 when there is none for this log).
    pub(crate) ckpt_end: u64,
    /// Size of that checkpoint file in bytes.
    pub(crate) ckpt_len: u64,
}

/// How far the log is known synced, and which log that is: an offset means nothing once
/// compaction has replaced the file it measured.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Synced {
    /// The [`Writer::log_gen`] of the log measured.
    pub(crate) log_gen: u64,
    /// Offset up to which that log is synced.
    pub(crate) upto: u64,
}

impl Synced {
    /// True when the log `log_gen` is known synced up to `end`.
    fn covers(&self, log_gen: u64, end: u64) -> bool {
        self.log_gen == log_gen && self.upto >= end
    }
}

/// An open trajdb database: one writer at a time, any number of reader threads.
pub struct Database {
    pub(crate) backend: Arc<dyn Backend>,
    pub(crate) opts: Options,
    pub(crate) log: RwLock<Arc<dyn Storage>>,
    pub(crate) log_path: PathBuf,
    pub(crate) state: RwLock<State>,
    pub(crate) writer: Mutex<Writer>,
    /// How far the current log is known synced (group commit). Lock order: `writer`
    /// before `synced`; never take `writer` while holding `synced`.
    pub(crate) synced: Mutex<Synced>,
    /// Set after a failed write or sync: every later write fails with `PreviousIo`.
    pub(crate) poisoned: AtomicBool,
    pub(crate) report: OpenReport,
    /// Held by a merge, so that two merges into this handle never interleave.
    pub(crate) merge_lock: Mutex<()>,
    /// Why the checkpoint was found damaged after open ([`Database::ensure_checked`]).
    pub(crate) ckpt_damage: Mutex<Option<String>>,
    /// Set once the state is checked ([`Database::ensure_checked`]).
    pub(crate) checked: AtomicBool,
    _lock: Option<File>,
}

/// True when the log has grown enough since the checkpoint for a new one: by
/// [`checkpoint::CHECKPOINT_AUTO_BYTES`] and by twice the last checkpoint's size (so
/// checkpoints cost at most half as many bytes written as the commits they cover).
pub(crate) fn checkpoint_due(w: &Writer) -> bool {
    let since = w.end.saturating_sub(w.ckpt_end.max(log::LOG_HEADER_LEN));
    since >= checkpoint::CHECKPOINT_AUTO_BYTES.max(w.ckpt_len.saturating_mul(2))
}

pub(crate) fn now_ms() -> i64 {
    ms_since_epoch(std::time::SystemTime::now())
}

/// Milliseconds from the epoch to `t`, negative before 1970. Never 0, which a trajectory's
/// `created_ms` uses for "unset": the epoch's own millisecond reads as the next one.
pub(crate) fn ms_since_epoch(t: std::time::SystemTime) -> i64 {
    let ms = match t.duration_since(std::time::UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
        Err(before) => i64::try_from(before.duration().as_millis())
            .ok()
            .and_then(i64::checked_neg)
            .unwrap_or(i64::MIN + 1),
    };
    if ms == 0 {
        1
    } else {
        ms
    }
}

pub(crate) fn fresh_log_id() -> u64 {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.write_u32(std::process::id());
    h.finish() | 1
}

/// A new origin id: 64 random bits (from the operating system's hasher keys, the clock and
/// the process id), never 0.
pub(crate) fn fresh_origin() -> u64 {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(fresh_log_id());
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    match h.finish() {
        0 => 1,
        x => x,
    }
}

/// `ms` since the Unix epoch as a UTC time, `2026-11-29 13:18:28 UTC`.
pub(crate) fn utc_time(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Refuses a `log` in `dir` that is not trajdb's (no magic, or shorter than its header)
/// before any write path creates or writes the LOCK file: a directory that holds no trajdb
/// database is left as it was. A missing `log` passes (the caller decides).
pub(crate) fn refuse_foreign_log(dir: &Path) -> Result<()> {
    let Ok(f) = File::open(dir.join(LOG_FILE)) else {
        return Ok(());
    };
    let mut head = Vec::with_capacity(64);
    let _ = f.take(64).read_to_end(&mut head);
    match crate::format::log::decode_header(&head, &dir.join(LOG_FILE)) {
        Err(e @ Error::NotADatabase { .. }) => Err(e),
        _ => Ok(()),
    }
}

pub(crate) fn take_lock(dir: &Path, timeout: std::time::Duration) -> Result<File> {
    let path = dir.join(LOCK_FILE);
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| Error::io("open", &path, e))?;
    let start = std::time::Instant::now();
    loop {
        match f.try_lock() {
            Err(std::fs::TryLockError::WouldBlock) if start.elapsed() < timeout => {
                let left = timeout.saturating_sub(start.elapsed());
                std::thread::sleep(left.min(std::time::Duration::from_millis(50)));
            }
            r => break lock_result(r, &mut f, path)?,
        }
    }
    let who = format!(
        "process {} (since {})",
        std::process::id(),
        utc_time(now_ms())
    );
    let _ = f.set_len(0);
    let _ = f.rewind();
    let _ = f.write_all(who.as_bytes());
    Ok(f)
}

fn lock_result(
    r: std::result::Result<(), std::fs::TryLockError>,
    f: &mut File,
    path: PathBuf,
) -> Result<()> {
    match r {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let mut holder = String::new();
            let _ = f.read_to_string(&mut holder);
            let holder = holder.trim();
            return Err(Error::Locked {
                path,
                holder: if holder.is_empty() {
                    "another process".into()
                } else {
                    holder.to_owned()
                },
            });
        }
        Err(std::fs::TryLockError::Error(e)) => return Err(Error::io("lock", &path, e)),
    }
    Ok(())
}

/// Builds the state by scanning the log, creating key stores through `new_store`. Returns
/// the state, how the scan ended and the offset and CRC of the last frame applied.
pub(crate) fn load_state(
    log: &dyn Storage,
    log_path: &Path,
    new_store: &mut dyn FnMut(u32, &SpaceDef, u64) -> Result<RowStore>,
) -> Result<(State, log::ScanEnd, (u64, u32))> {
    let header = log::read_header(log, log_path)?;
    let st = State {
        header,
        spaces: Vec::new(),
        space_by_name: HashMap::new(),
        trajs: Trajs::default(),
        by_id: IdMap::default(),
        names: Names::default(),
        usage: Usage::default(),
        next_id: header.id_floor.max(1),
        last_seq: header.base_seq.saturating_sub(1),
        origin: header.origin,
        merged: HashMap::new(),
        any_deleted: false,
        ckpt: None,
    };
    load_tail(
        log,
        log_path,
        st,
        log::LOG_HEADER_LEN,
        header.base_seq,
        (0, 0),
        new_store,
    )
}

/// Applies the frames from `start` (a frame boundary whose frame must carry `seq`) to the
/// end of the log to `st`; `last` is the last frame applied before `start`.
pub(crate) fn load_tail(
    log: &dyn Storage,
    log_path: &Path,
    mut st: State,
    start: u64,
    seq: u64,
    mut last: (u64, u32),
    new_store: &mut dyn FnMut(u32, &SpaceDef, u64) -> Result<RowStore>,
) -> Result<(State, log::ScanEnd, (u64, u32))> {
    let log_id = st.header.log_id;
    // A frame that checks but cannot be applied (a duplicate id, say) is kept here: when it
    // is the last commit, recovery treats it as a torn tail rather than refusing to open.
    let mut unappliable: Option<(u64, u64, u64, String)> = None;
    let scanned = log::scan_from(log, log_path, start, seq, |f| {
        st.apply(f, log_path, &mut |id, def| new_store(id, def, log_id))
            .inspect_err(|e| {
                if e.is_corruption() {
                    let next = f.offset + log::frame_size(f.payload.len());
                    unappliable = Some((f.offset, f.seq, next, e.to_string()));
                }
            })?;
        last = (f.offset, f.crc);
        Ok(())
    });
    match (scanned, unappliable) {
        (Ok(end), _) => Ok((st, end, last)),
        (Err(e), Some((offset, seq, next, why))) => {
            // The last commit when no valid frame with the next sequence number follows it.
            if log::valid_prefix_from(log, log_path, next, seq + 1)? != next {
                return Err(e);
            }
            Ok((
                st,
                log::ScanEnd {
                    end: offset,
                    next_seq: seq,
                    torn: Some(format!(
                        "the last commit (sequence number {seq}) checks but cannot be applied: {why}"
                    )),
                },
                last,
            ))
        }
        (Err(e), None) => Err(e),
    }
}

/// Loads the graph file of every space of `st` (headers only; module `index::graph`), or
/// with `check` (`Options::verify_on_open`) checks each against its rows and its adjacency
/// checksum too, reading both whole.
pub(crate) fn load_graphs(backend: &dyn Backend, st: &mut State, check: bool) {
    let log_id = st.header.log_id;
    for (i, s) in st.spaces.iter_mut().enumerate() {
        let id = u32::try_from(i).unwrap_or(u32::MAX);
        let mut g = Graph::load(backend, id, &s.def, log_id, s.rows.len());
        if check {
            if let Some(g) = g.as_mut() {
                g.ensure_checked(s.rows.all(), None, true);
            }
        }
        *s.graph.get_mut() = g;
    }
}

/// Writes the graph file of every space whose graph has grown enough since its file was
/// written (or every graph, with `all`). The caller has synced the log and checkpointed the
/// key files.
pub(crate) fn persist_graphs(backend: &dyn Backend, st: &State, all: bool) -> Result<()> {
    let log_id = st.header.log_id;
    for (i, s) in st.spaces.iter().enumerate() {
        let mut g = s.graph.write();
        if let Some(g) = g.as_mut() {
            if all || g.should_persist() {
                let id = u32::try_from(i).unwrap_or(u32::MAX);
                g.persist(backend, id, &s.def, log_id, s.rows.all())?;
            }
        }
    }
    Ok(())
}

/// Counts and sizes, as `trajdb stats` prints them.
#[derive(Debug, Clone, Serialize)]
pub struct Stats {
    /// Live trajectories.
    pub trajectories: u64,
    /// Steps of live trajectories.
    pub steps: u64,
    /// Trajectories deleted but not yet compacted away.
    pub deleted: u64,
    /// Successful live trajectories.
    pub successes: u64,
    /// Episodes logged.
    pub episodes: u64,
    /// Sequence number of the last commit.
    pub commit_seq: u64,
    /// Bytes in the log.
    pub log_bytes: u64,
    /// Per key space.
    pub spaces: Vec<SpaceStats>,
    /// The handle's [`Options::exact_below_rows`]: the row count from which
    /// [`SearchMode::Auto`](crate::SearchMode::Auto) uses a space's graph index.
    pub exact_below_rows: u64,
}

/// Statistics of one key space.
#[derive(Debug, Clone, Serialize)]
pub struct SpaceStats {
    /// The definition.
    #[serde(flatten)]
    pub def: SpaceDef,
    /// Rows stored (including rows of deleted trajectories until compaction).
    pub rows: u64,
    /// Rows of live trajectories.
    pub live_rows: u64,
    /// Bytes of the key file.
    pub file_bytes: u64,
    /// Rows the space's graph index covers (the rest are scored exactly by a graph
    /// search), or `None` when the space has no graph index.
    pub graph_rows: Option<u64>,
    /// Whether [`SearchMode::Auto`](crate::SearchMode::Auto) answers this space through
    /// its graph index: it has one and `rows` is at least [`Stats::exact_below_rows`].
    pub auto_uses_graph: bool,
    /// Why the space's graph file was not used (damaged, another log's, rows the log no
    /// longer has), until the graph covers every row again: it restarts empty, searches
    /// insert a few rows each and scan the rest exactly, and `build_graph` rebuilds it at
    /// once. `None` when the file was used or there is none.
    pub graph_discarded: Option<String>,
}

fn check_vector(at: &str, space: &Space, v: &[f32]) -> Result<()> {
    if v.len() != ix(space.def.dims) {
        return Err(Error::DimensionMismatch {
            space: space.def.name.clone(),
            expected: ix(space.def.dims),
            got: v.len(),
        });
    }
    crate::index::kernels::check_vector(at, space.def.metric, v)
}

/// The error for writing origin-dependent records into a log written before origins.
pub(crate) fn no_origin(log_path: &Path) -> Error {
    let dir = log_path.parent().unwrap_or(log_path);
    Error::NoOrigin {
        path: dir.to_owned(),
    }
}

fn check_text(at: &str, s: &str) -> Result<()> {
    if s.len() > ix(MAX_PAYLOAD) {
        return Err(Error::TooLarge {
            what: at.into(),
            len: off(s.len()),
            max: u64::from(MAX_PAYLOAD),
        });
    }
    Ok(())
}

impl Database {
    /// Opens (by default creating) the database in directory `path`.
    pub fn open(path: impl AsRef<Path>, opts: Options) -> Result<Database> {
        let dir = path.as_ref();
        match std::fs::metadata(dir) {
            Ok(m) if !m.is_dir() => {
                return Err(Error::NotADatabase {
                    path: dir.to_owned(),
                    why: "it is a file, not a database directory".into(),
                })
            }
            Ok(_) => {}
            Err(e)
                if e.kind() == std::io::ErrorKind::NotFound && opts.create && !opts.read_only =>
            {
                std::fs::create_dir_all(dir).map_err(|e| Error::io("create", dir, e))?;
                crate::storage::sync_parent(dir)?;
            }
            Err(e) => return Err(Error::io("open", dir, e)),
        }
        if !dir.join(LOG_FILE).exists() {
            let foreign = std::fs::read_dir(dir)
                .map_err(|e| Error::io("list", dir, e))?
                .filter_map(|e| e.ok())
                .any(|e| {
                    let n = e.file_name();
                    n != LOCK_FILE && n.to_str() != Some("log.new")
                });
            // A process racing to create the same database writes its log before any other
            // file: files seen with the log now present are that database, not foreign ones.
            let created_meanwhile = dir.join(LOG_FILE).exists();
            if !created_meanwhile && (foreign || opts.read_only || !opts.create) {
                return Err(Error::NotADatabase {
                    path: dir.to_owned(),
                    why: if foreign {
                        "the directory has files but no trajdb log; refusing to create a database in it".into()
                    } else {
                        "there is no log file".into()
                    },
                });
            }
        }
        refuse_foreign_log(dir)?;
        let lock = if opts.read_only {
            None
        } else {
            Some(take_lock(dir, opts.lock_timeout)?)
        };
        let backend: Arc<dyn Backend> = Arc::new(FileBackend::new(dir));
        let mut db = Self::open_backend(backend, opts)?;
        db._lock = lock;
        Ok(db)
    }

    /// Opens a database on any [`Backend`] (in-memory, fault-injecting). The caller ensures
    /// no other writer uses the same files.
    pub fn open_backend(backend: Arc<dyn Backend>, opts: Options) -> Result<Database> {
        let log_path = backend.path_of(LOG_FILE);
        let io = |op, e| Error::io(op, log_path.clone(), e);
        // A read-only handle opens every file for reading only: no write permission needed.
        let existing = if opts.read_only {
            backend.open_read(LOG_FILE)
        } else {
            backend.open(LOG_FILE, false)
        };
        let log = match existing.map_err(|e| io("open", e))? {
            Some(l) => l,
            None => {
                if opts.read_only || !opts.create {
                    return Err(Error::NotADatabase {
                        path: log_path.clone(),
                        why: "there is no log file".into(),
                    });
                }
                if backend
                    .list()
                    .map_err(|e| io("list", e))?
                    .iter()
                    .any(|n| n != LOCK_FILE && n != "log.new")
                {
                    return Err(Error::NotADatabase {
                        path: log_path.clone(),
                        why: "the directory has files but no trajdb log; refusing to create a database in it".into(),
                    });
                }
                let tmp = format!("{LOG_FILE}.new");
                let l = create_fresh(backend.as_ref(), &tmp)?;
                let hdr = LogHeader {
                    log_id: fresh_log_id(),
                    base_seq: 1,
                    created_ms: now_ms(),
                    id_floor: 1,
                    origin: fresh_origin(),
                };
                l.write_at(&log::encode_header(&hdr), 0)
                    .map_err(|e| io("write", e))?;
                l.sync().map_err(|e| io("sync", e))?;
                backend
                    .rename(&tmp, LOG_FILE)
                    .map_err(|e| io("rename", e))?;
                l
            }
        };
        let read_only = opts.read_only;
        let b2 = backend.clone();
        let mut new_store = |id: u32, def: &SpaceDef, log_id: u64| {
            if read_only {
                RowStore::open_read_only(b2.as_ref(), id, def, log_id)
            } else {
                RowStore::open(b2.as_ref(), id, def, log_id)
            }
        };
        let mut report = OpenReport::default();
        let header = log::read_header(log.as_ref(), &log_path)?;
        let loaded = if opts.verify_on_open {
            Loaded::Absent
        } else {
            checkpoint::load(
                backend.as_ref(),
                log.as_ref(),
                &log_path,
                &header,
                read_only,
            )
        };
        // The checkpoint's state and the log after it; anything wrong there means a scan
        // of the whole log, as without a checkpoint.
        let mut from_ckpt = None;
        match loaded {
            Loaded::Used(st, cov, len) => {
                match load_tail(
                    log.as_ref(),
                    &log_path,
                    *st,
                    cov.end,
                    cov.last_seq + 1,
                    (cov.last_offset, cov.last_crc),
                    &mut new_store,
                ) {
                    Ok(r) => from_ckpt = Some((r, cov.end, len)),
                    Err(e) => {
                        report.checkpoint_ignored =
                            Some(format!("the log after it does not apply: {e}"));
                    }
                }
            }
            Loaded::Ignored(why) => {
                report.checkpoint_ignored = Some(why);
                if let Some((covered, _)) = checkpoint::covered_end(backend.as_ref(), &header) {
                    let len = log.len().map_err(|e| io("stat", e))?;
                    if covered > len {
                        report.log_cut_at = Some((len, covered));
                        if !read_only && !opts.accept_log_cut {
                            return Err(Error::Corrupt {
                                path: log_path.clone(),
                                offset: len,
                                what: format!(
                                    "the log ends at byte {len}, but its checkpoint records commits up to byte {covered}: committed frames were cut from the end of the log. Nothing was written. Restore the log from a copy if you have one; to go on without those commits, open for writing with accept_log_cut (CLI: `trajdb repair --force`), which makes the loss permanent"
                                ),
                            });
                        }
                    }
                }
            }
            Loaded::Absent => {}
        }
        let ((state, end, last_frame), ckpt_end, ckpt_len) = match from_ckpt {
            Some((r, covered, len)) => {
                report.checkpoint_end = Some(covered);
                (r, covered, len)
            }
            None => (load_state(log.as_ref(), &log_path, &mut new_store)?, 0, 0),
        };
        if let Some(why) = &end.torn {
            let len = log.len().map_err(|e| io("stat", e))?;
            report.truncated_bytes = len - end.end;
            report.torn_reason = Some(why.clone());
            // A checkpoint is written only once the log is synced up to the end it records:
            // damage before that end is to committed frames, which a cut would lose for good.
            // (A checkpoint past the log's end is a log cut short, `log_cut_at`, refused
            // above for writers.)
            let committed = checkpoint::covered_end(backend.as_ref(), &header)
                .map(|(covered, _)| covered)
                .filter(|&covered| covered > end.end && covered <= len);
            report.damaged_committed_end = committed;
            if let (Some(covered), false, false) = (committed, read_only, opts.accept_log_cut) {
                return Err(Error::Corrupt {
                    path: log_path.clone(),
                    offset: end.end,
                    what: format!(
                        "{why}; the damaged frames end the log, but its checkpoint records commits up to byte {covered}: they were committed and synced, so this is damage at rest, not a write a crash tore. Nothing was written. Restore the log from a copy if you have one; `trajdb export --skip-damaged --with-spaces` exports every other trajectory; to cut them and go on, open for writing with accept_log_cut (CLI: `trajdb repair --force`), which makes the loss permanent"
                    ),
                });
            }
            if !read_only {
                // Keeping a copy of the cut bytes is for inspection only. When it cannot be
                // made (a full disk, say), the tail is cut anyway and the report says why no
                // copy was kept: a torn tail must never keep every writer out, since writers
                // are what can delete or compact to free space.
                match log::keep_cut_tail(backend.as_ref(), log.as_ref(), end.end, len) {
                    Ok(f) => report.cut_file = f,
                    Err(e) => {
                        let _ = backend.remove(&format!("{LOG_FILE}.cut-{}", end.end));
                        report.cut_file_error = Some(e.to_string());
                    }
                }
                log.set_len(end.end).map_err(|e| io("truncate", e))?;
                log.sync().map_err(|e| io("sync", e))?;
            }
        }
        let mut db = Database {
            backend,
            opts,
            log: RwLock::new(log),
            log_path,
            writer: Mutex::new(Writer {
                end: end.end,
                next_seq: end.next_seq,
                log_gen: 0,
                last_frame,
                ckpt_end,
                ckpt_len,
            }),
            poisoned: AtomicBool::new(false),
            // What is known synced: nothing after a scan, so the first sync (below) covers
            // what the scan found, which a crashed process may have written without syncing.
            // After an open from a checkpoint, the log up to the checkpoint's covered end: a
            // checkpoint is written only after the log is synced that far
            // (`write_checkpoint`), and the log is only ever appended to; the first sync
            // then syncs only when the log goes on past it.
            synced: Mutex::new(Synced {
                log_gen: 0,
                upto: ckpt_end,
            }),
            state: RwLock::new(state),
            report,
            merge_lock: Mutex::new(()),
            ckpt_damage: Mutex::new(None),
            checked: AtomicBool::new(false),
            _lock: None,
        };
        // Spaces opened from a checkpoint may load their search bounds from their files.
        {
            let st = db.state.read();
            for s in &st.spaces {
                if let Some(vouch) = s.vouch_at_open {
                    s.saved.lock().from = Some(crate::index::sidecar::SavedFrom {
                        backend: db.backend.clone(),
                        log_id: st.header.log_id,
                        vouch,
                    });
                }
            }
        }
        if !read_only {
            {
                let mut st = db.state.write();
                for s in &mut st.spaces {
                    s.rows.settle(db.backend.as_ref())?;
                }
            }
        }
        // Graph files, headers only, against the rows as settled (a key file rewritten for
        // a log that lost its tail has fewer rows than a graph written before the loss).
        load_graphs(
            db.backend.as_ref(),
            &mut db.state.write(),
            db.opts.verify_on_open,
        );
        if !read_only {
            db.sync()?;
            // A new checkpoint when there was none for this log (and the log has commits),
            // or when the log after it has grown past the automatic threshold. Failing to
            // write one costs the next open time, not data: the open goes on.
            let mut w = db.writer.lock();
            let due = if ckpt_end == 0 {
                w.end > log::LOG_HEADER_LEN
            } else {
                checkpoint_due(&w)
            };
            if due {
                if let Err(e) = db.write_checkpoint(&mut w) {
                    db.report.checkpoint_error = Some(e.to_string());
                }
            }
            drop(w);
        }
        Ok(db)
    }

    /// Writes the checkpoint file for the state as of now, under the writer lock: syncs the
    /// log, checkpoints the key files (so their headers vouch for every row), then writes
    /// `checkpoint.new`, syncs it and renames it over `checkpoint`. Does nothing when some
    /// key store holds rows no key file vouches for.
    pub(crate) fn write_checkpoint(&self, w: &mut Writer) -> Result<()> {
        self.check_poison()?;
        self.sync_log_locked(w)?;
        self.checkpoint_keys()?;
        let cov = Covered {
            end: w.end,
            last_offset: w.last_frame.0,
            last_seq: w.next_seq.saturating_sub(1),
            last_crc: w.last_frame.1,
        };
        // A checkpoint is encoded from checked state only: a damaged block of the one this
        // state reads must never be copied into a file with fresh checksums.
        self.state.read().check_lazy()?;
        let bytes = checkpoint::encode(&self.state.read(), cov);
        let Some(bytes) = bytes else {
            return Ok(());
        };
        checkpoint::write(self.backend.as_ref(), &bytes)?;
        w.ckpt_end = w.end;
        w.ckpt_len = off(bytes.len());
        self.save_search_bounds();
        Ok(())
    }

    /// Syncs the log and key files, then writes a checkpoint of the state unless the
    /// checkpoint file already covers every commit (so the next open reads it and no log).
    /// [`close`](Self::close) and dropping a writer do this.
    pub fn checkpoint(&self) -> Result<()> {
        self.ensure_checked()?;
        if self.opts.read_only {
            return Err(Error::ReadOnly);
        }
        let mut w = self.writer.lock();
        self.check_poison()?;
        self.sync_log_locked(&w)?;
        self.checkpoint_keys()?;
        if w.ckpt_end == w.end {
            // The checkpoint is current; search bounds built since may still be saved.
            self.save_search_bounds();
            return Ok(());
        }
        self.write_checkpoint(&mut w)
    }

    /// Saves each space's search bounds that cover every vouched row (module
    /// `index::sidecar`); called under the writer lock after the key files are vouched.
    pub(crate) fn save_search_bounds(&self) {
        let st = self.state.read();
        for (id, s) in st.spaces.iter().enumerate() {
            if let Ok(id) = u32::try_from(id) {
                crate::index::sidecar::save(self.backend.as_ref(), st.header.log_id, id, s);
            }
        }
    }

    pub(crate) fn log(&self) -> Arc<dyn Storage> {
        self.log.read().clone()
    }

    /// Makes sure the state this handle answers from is checked: when it reads a
    /// checkpoint in place, the blocks open left unchecked (trajectory table, outcome
    /// history, row metadata) are checked on the first call, and every later call returns
    /// at once. Every public operation that reads the state calls it first.
    ///
    /// When a block is damaged, the state is rebuilt by scanning the log, as an open that
    /// had found the damage would have (the checkpoint is derived; the log holds
    /// everything), and the reason is kept ([`Database::checkpoint_damage`]); so an answer
    /// never comes from a damaged block. Fails only when that scan fails (the handle is
    /// then poisoned).
    pub(crate) fn ensure_checked(&self) -> Result<()> {
        // Once checked, no state this handle installs reads a checkpoint again (only open
        // loads one), so the flag stays true.
        if self.checked.load(Ordering::Acquire) {
            return Ok(());
        }
        let damage = match self.state.read().check_lazy() {
            Ok(()) => {
                self.checked.store(true, Ordering::Release);
                return Ok(());
            }
            Err(e) => e,
        };
        self.rebuild_after_damage(damage)
    }

    /// [`Database::ensure_checked`] for an operation that reads only trajectory `id`
    /// (`contains`, `get`, `trajectory_origin`): checks only the checkpoint blocks finding
    /// and reading it touch, so a point lookup right after open stays cheap.
    pub(crate) fn ensure_point(&self, id: u64) -> Result<()> {
        if self.checked.load(Ordering::Acquire) {
            return Ok(());
        }
        let damage = match self.state.read().check_point(id) {
            Ok(()) => return Ok(()),
            Err(e) => e,
        };
        self.rebuild_after_damage(damage)
    }

    /// After `damage` was found in a block of the checkpoint the state reads: checks the
    /// rest and rebuilds the state by scanning the log (see [`Database::ensure_checked`]).
    fn rebuild_after_damage(&self, damage: Error) -> Result<()> {
        // No commit may land while the state is replaced; the writer lock also orders
        // this with `refresh`. Callers never hold either lock here.
        let mut w = self.writer.lock();
        let mut st = self.state.write();
        if st.check_lazy().is_ok() {
            self.checked.store(true, Ordering::Release);
            return Ok(());
        }
        let read_only = self.opts.read_only;
        let backend = self.backend.clone();
        let log = self.log();
        let rebuilt = load_state(log.as_ref(), &self.log_path, &mut |id, def, log_id| {
            if read_only {
                RowStore::open_read_only(backend.as_ref(), id, def, log_id)
            } else {
                RowStore::open(backend.as_ref(), id, def, log_id)
            }
        })
        .and_then(|(mut state, end, last_frame)| {
            if !read_only {
                if end.torn.is_some() || end.end != w.end {
                    return Err(Error::Corrupt {
                        path: self.log_path.clone(),
                        offset: end.end,
                        what: format!(
                            "rebuilding the state after a damaged checkpoint, the log's valid frames end at byte {} but this writer wrote up to {}",
                            end.end, w.end
                        ),
                    });
                }
                for s in &mut state.spaces {
                    s.rows.settle(self.backend.as_ref())?;
                }
            }
            load_graphs(self.backend.as_ref(), &mut state, self.opts.verify_on_open);
            Ok((state, end, last_frame))
        });
        match rebuilt {
            Ok((state, end, last_frame)) => {
                *st = state;
                w.end = end.end;
                w.next_seq = end.next_seq;
                w.last_frame = last_frame;
                *self.ckpt_damage.lock() = Some(damage.to_string());
                self.checked.store(true, Ordering::Release);
                drop(st);
                if !read_only {
                    // A writer replaces the damaged checkpoint at once, so the next open
                    // reads a sound one. Failing costs the next open time, not data.
                    if let Err(e) = self.write_checkpoint(&mut w) {
                        let mut d = self.ckpt_damage.lock();
                        if let Some(why) = d.as_mut() {
                            why.push_str(&format!("; writing a new checkpoint failed: {e}"));
                        }
                    }
                }
                Ok(())
            }
            Err(e) => {
                self.poison();
                Err(e)
            }
        }
    }

    /// Why the checkpoint this handle opened from was found damaged after open (a block
    /// that did not match its checksum on first use), when it was; the state was then
    /// rebuilt from the log.
    pub fn checkpoint_damage(&self) -> Option<String> {
        self.ckpt_damage.lock().clone()
    }

    /// (checkpoint blocks checked so far, checkpoint blocks) of the checkpoint this
    /// handle reads in place; `None` when it reads none (opened by a scan). For tests and
    /// diagnostics; not part of the stable API.
    #[doc(hidden)]
    pub fn checkpoint_blocks_checked(&self) -> Option<(usize, usize)> {
        self.state.read().ckpt.as_ref().map(|c| c.blocks_verified())
    }

    /// For a read-only handle: reads the commits a writer (in this or another process) has
    /// appended since this handle opened or last refreshed, and returns how many records
    /// were applied. Readers see whole commits only: a frame still being written is left for
    /// a later refresh. When the writer has compacted (a new log replaced the old), the state
    /// is rebuilt from the new log. A writable handle is always current and returns 0.
    pub fn refresh(&self) -> Result<u64> {
        self.ensure_checked()?;
        if !self.opts.read_only {
            return Ok(0);
        }
        let mut w = self.writer.lock();
        let io = |op, e| Error::io(op, self.log_path.clone(), e);
        let current = self
            .backend
            .open_read(LOG_FILE)
            .map_err(|e| io("open", e))?
            .ok_or_else(|| Error::NotADatabase {
                path: self.log_path.clone(),
                why: "the log file has gone".into(),
            })?;
        let hdr = log::read_header(current.as_ref(), &self.log_path)?;
        let heap = &mut |_: u32, def: &SpaceDef| Ok(RowStore::heap(def));
        let mut st = self.state.write();
        if hdr.log_id != st.header.log_id {
            let (state, end, _) =
                load_state(current.as_ref(), &self.log_path, &mut |id, def, _| {
                    heap(id, def)
                })?;
            let n = state.last_seq;
            let mut state = state;
            load_graphs(self.backend.as_ref(), &mut state, self.opts.verify_on_open);
            *st = state;
            *self.log.write() = current;
            w.end = end.end;
            w.next_seq = end.next_seq;
            return Ok(n);
        }
        let mut n = 0;
        let path = self.log_path.clone();
        let end = log::scan_from(current.as_ref(), &path, w.end, w.next_seq, |f| {
            n += 1;
            st.apply(f, &path, heap)
        })?;
        w.end = end.end;
        w.next_seq = end.next_seq;
        Ok(n)
    }

    /// For each key space, in id order: its name and whether its quantised copy and its
    /// step bounds were loaded from their search-bounds files (module `index::sidecar`)
    /// rather than built from the rows. For tests and diagnostics; not part of the stable
    /// API.
    #[doc(hidden)]
    pub fn search_bounds_loaded(&self) -> Vec<(String, bool, bool)> {
        let st = self.state.read();
        st.spaces
            .iter()
            .map(|s| {
                let l = s.saved.lock().loaded;
                (s.def.name.clone(), l.0, l.1)
            })
            .collect()
    }

    /// A text rendering of the whole derived state (trajectory metadata, id map, names, key
    /// spaces with their row metadata and a CRC of their row bytes, usage, next ids, last
    /// sequence number and log position), for tests that compare a checkpoint-based open
    /// with a full scan. Not part of the stable API.
    #[doc(hidden)]
    pub fn state_digest(&self) -> String {
        // Infallible: after a failed rebuild the handle is poisoned (see `ensure_checked`).
        let _ = self.ensure_checked();
        use std::fmt::Write as _;
        let w = self.writer.lock();
        let st = self.state.read();
        let mut o = String::new();
        let _ = writeln!(
            o,
            "header {:?} next_id {} last_seq {} end {} next_seq {}",
            st.header, st.next_id, st.last_seq, w.end, w.next_seq
        );
        for (i, m) in st.trajs.iter().enumerate() {
            let _ = writeln!(o, "traj {i} {m:?}");
        }
        let mut by_id: Vec<_> = st.by_id.iter().collect();
        by_id.sort();
        let _ = writeln!(o, "by_id {by_id:?}");
        let names: Vec<&str> = st.names.iter().collect();
        let _ = writeln!(o, "names {names:?}");
        let mut name_ids: Vec<_> = names.iter().map(|n| (*n, st.names.id_of(n))).collect();
        name_ids.sort();
        let _ = writeln!(o, "name_ids {name_ids:?}");
        for s in &st.spaces {
            let bytes: &[u8] = bytemuck::cast_slice(s.rows.all());
            let _ = writeln!(
                o,
                "space {:?} rows {} crc {:#x} meta {:?} by_name {:?}",
                s.def,
                s.rows.len(),
                crc32fast::hash(bytes),
                s.row_meta,
                st.space_by_name.get(&s.def.name)
            );
        }
        let mut counters: Vec<_> = st.usage.counters.iter().collect();
        counters.sort_by_key(|c| *c.0);
        let _ = writeln!(
            o,
            "usage next_episode {} counters {counters:?} episodes {:?}",
            st.usage.next_episode, st.usage.episodes
        );
        let mut merged: Vec<_> = st.merged.iter().map(|(k, v)| (k.db, k.id, *v)).collect();
        merged.sort();
        let mut merged_eps: Vec<_> = st
            .usage
            .merged
            .iter()
            .map(|(k, v)| (k.db, k.id, *v))
            .collect();
        merged_eps.sort();
        let _ = writeln!(
            o,
            "origin {} merged {merged:?} merged episodes {merged_eps:?}",
            st.origin
        );
        o
    }

    /// What opening found and repaired.
    pub fn open_report(&self) -> &OpenReport {
        &self.report
    }

    /// The options the database was opened with.
    pub fn options(&self) -> &Options {
        &self.opts
    }

    pub(crate) fn checkpoint_keys(&self) -> Result<()> {
        let mut st = self.state.write();
        for s in &mut st.spaces {
            s.rows.checkpoint()?;
        }
        // After the log and the key files: a graph file covers only rows that are durable.
        persist_graphs(self.backend.as_ref(), &st, false)
    }

    /// Syncs the log and the key files: everything committed so far becomes durable.
    pub fn sync(&self) -> Result<()> {
        if self.opts.read_only {
            return Ok(());
        }
        // The writer lock is held throughout, so no commit lands between the log sync and
        // the key-file checkpoint: a key-file header never vouches for a row whose log frame
        // is not synced.
        let w = self.writer.lock();
        self.check_poison()?;
        self.sync_log_locked(&w)?;
        self.checkpoint_keys()
    }

    /// Syncs the log up to `w.end`; the caller holds the writer lock.
    pub(crate) fn sync_log_locked(&self, w: &Writer) -> Result<()> {
        let mut synced = self.synced.lock();
        if synced.covers(w.log_gen, w.end) {
            return Ok(());
        }
        if let Err(e) = self.log().sync() {
            self.poison();
            return Err(Error::io("sync", self.log_path.clone(), e));
        }
        *synced = Synced {
            log_gen: w.log_gen,
            upto: w.end,
        };
        Ok(())
    }

    pub(crate) fn poison(&self) {
        self.poisoned.store(true, Ordering::SeqCst);
    }

    pub(crate) fn check_poison(&self) -> Result<()> {
        if self.poisoned.load(Ordering::SeqCst) {
            return Err(Error::PreviousIo);
        }
        Ok(())
    }

    /// Syncs log `log_gen` up to at least `end`, sharing the sync with concurrent
    /// committers.
    fn sync_log(&self, log_gen: u64, end: u64) -> Result<()> {
        // Everything written to this log before this point is covered by the sync below.
        let (log, target) = {
            let w = self.writer.lock();
            (self.log(), (w.log_gen == log_gen).then_some(w.end))
        };
        let Some(target) = target else {
            // Compaction replaced the log after this commit was written: it copied the commit
            // into the new log and synced that before putting it in place.
            return Ok(());
        };
        let mut synced = self.synced.lock();
        if synced.log_gen != log_gen || synced.covers(log_gen, end) {
            return Ok(());
        }
        self.check_poison()?;
        if let Err(e) = log.sync() {
            self.poison();
            return Err(Error::io("sync", self.log_path.clone(), e));
        }
        synced.upto = synced.upto.max(target).max(end);
        Ok(())
    }

    /// Writes one record and applies it; `build` validates against the state and encodes the
    /// payload under the writer lock, so no other commit can interleave.
    fn commit(&self, kind: u16, build: impl FnOnce(&State) -> Result<Vec<u8>>) -> Result<u64> {
        self.commit_with(kind, true, build)
    }

    /// [`commit`](Self::commit); with `sync` false the commit is written but not synced
    /// whatever the durability mode, and the caller syncs (a batch shares one sync).
    pub(crate) fn commit_with(
        &self,
        kind: u16,
        sync: bool,
        build: impl FnOnce(&State) -> Result<Vec<u8>>,
    ) -> Result<u64> {
        self.ensure_checked()?;
        if self.opts.read_only {
            return Err(Error::ReadOnly);
        }
        let mut w = self.writer.lock();
        self.check_poison()?;
        let payload = build(&self.state.read())?;
        if payload.len() > ix(MAX_PAYLOAD) {
            return Err(Error::TooLarge {
                what: "record".into(),
                len: off(payload.len()),
                max: u64::from(MAX_PAYLOAD),
            });
        }
        let seq = w.next_seq;
        let mut buf = Vec::with_capacity(payload.len() + 32);
        log::encode_frame(&mut buf, seq, kind, &payload);
        let crc = u32::from_le_bytes([buf[20], buf[21], buf[22], buf[23]]);
        let offset = w.end;
        if let Err(e) = self.log().write_at(&buf, offset) {
            self.poison();
            return Err(Error::io("write", self.log_path.clone(), e));
        }
        w.end += off(buf.len());
        w.last_frame = (offset, crc);
        w.next_seq += 1;
        if sync && self.opts.durability == Durability::SyncEachCommit {
            if let Err(e) = self.log().sync() {
                self.poison();
                return Err(Error::io("sync", self.log_path.clone(), e));
            }
            *self.synced.lock() = Synced {
                log_gen: w.log_gen,
                upto: w.end,
            };
        }
        let frame = Frame {
            offset,
            seq,
            kind,
            crc,
            payload: &payload,
        };
        let applied = {
            let mut st = self.state.write();
            let backend = self.backend.clone();
            let log_id = st.header.log_id;
            st.apply(&frame, &self.log_path, &mut |id, def| {
                RowStore::open(backend.as_ref(), id, def, log_id)
            })
        };
        if let Err(e) = applied {
            // The record is in the log but not in memory: stop writing; reopen recovers.
            self.poison();
            return Err(Error::AfterCommit {
                seq,
                source: Box::new(e),
            });
        }
        // Not under `Buffered`: an automatic checkpoint syncs the log and key files, which a
        // caller who chose no syncs did not ask for (close and `checkpoint()` still write
        // one).
        if self.opts.durability != Durability::Buffered && checkpoint_due(&w) {
            // The commit is applied and (per mode) durable whatever happens here: a failed
            // checkpoint only leaves the older one, which still covers a prefix of this log.
            // A failed log sync poisons the handle as any failed sync does.
            let _ = self.write_checkpoint(&mut w);
        }
        let (log_gen, end) = (w.log_gen, w.end);
        drop(w);
        if sync && self.opts.durability == Durability::GroupCommit {
            self.sync_log(log_gen, end)?;
        }
        Ok(seq)
    }

    /// Creates a key space, or checks that an existing one has the same definition.
    pub fn create_space(&self, def: &SpaceDef) -> Result<()> {
        self.ensure_checked()?;
        if def.dims == 0 || def.dims > record::MAX_DIMS {
            return Err(Error::invalid(
                format!("space `{}`", def.name),
                format!("dimensions must be 1..=65536, got {}", def.dims),
            ));
        }
        if def.name.is_empty() || def.name.len() > record::MAX_SPACE_NAME {
            return Err(Error::invalid("space name", "must be 1..=256 bytes"));
        }
        if let Some(e) = &def.embedder {
            if e.dims != def.dims {
                return Err(Error::invalid(
                    format!("space `{}`", def.name),
                    format!("embedder {e} does not make {}-dimensional keys", def.dims),
                ));
            }
        }
        if let Ok((_, s)) = self.state.read().space(&def.name) {
            return if s.def == *def {
                Ok(())
            } else {
                Err(Error::SpaceConflict {
                    name: def.name.clone(),
                    what: format!("a different definition ({:?})", s.def),
                })
            };
        }
        self.commit(kind::SPACE, |st| {
            if st.space_by_name.contains_key(&def.name) {
                return Err(Error::SpaceConflict {
                    name: def.name.clone(),
                    what: "a concurrent definition".into(),
                });
            }
            let id = u32::try_from(st.spaces.len())
                .map_err(|_| Error::invalid("space", "too many key spaces"))?;
            Ok(record::encode_space(id, def))
        })?;
        Ok(())
    }

    /// The key spaces, in creation order.
    pub fn spaces(&self) -> Vec<SpaceDef> {
        self.state
            .read()
            .spaces
            .iter()
            .map(|s| s.def.clone())
            .collect()
    }

    /// Refuses `embedder` for `space` when the space records a different one.
    pub fn check_embedder(
        &self,
        space: &str,
        embedder: &crate::format::record::EmbedderId,
    ) -> Result<()> {
        let st = self.state.read();
        let (_, s) = st.space(space)?;
        match &s.def.embedder {
            Some(rec) if rec != embedder => Err(Error::EmbedderMismatch {
                space: space.into(),
                recorded: rec.to_string(),
                given: embedder.to_string(),
            }),
            _ => Ok(()),
        }
    }

    /// Appends a trajectory with its keys as one atomic commit; returns its id.
    pub fn append(&self, t: &Trajectory) -> Result<u64> {
        self.append_as(t, None)
    }

    /// Appends trajectories in order and returns their ids. Each is its own atomic commit,
    /// exactly as [`append`](Self::append) makes it, but the batch shares one sync at the
    /// end (in [`Durability::SyncEachCommit`] and [`Durability::GroupCommit`]) instead of
    /// one per trajectory. When one is refused, the ones before it stay committed (and are
    /// synced before the error returns) and the error names its index: `batch[i]: ...`.
    pub fn append_many(&self, ts: &[Trajectory]) -> Result<Vec<u64>> {
        self.ensure_checked()?;
        let mut ids = Vec::with_capacity(ts.len());
        let mut failed = None;
        for (i, t) in ts.iter().enumerate() {
            match self.append_with(t, None, false) {
                Ok(id) => ids.push(id),
                Err(e) => {
                    failed = Some(crate::jsonl::locate(e, &format!("batch[{i}]")));
                    break;
                }
            }
        }
        if !ids.is_empty() && self.opts.durability != Durability::Buffered {
            let w = self.writer.lock();
            self.sync_log_locked(&w)?;
        }
        match failed {
            Some(e) => Err(e),
            None => Ok(ids),
        }
    }

    /// Like [`append`](Self::append), refusing keys if `embedder` differs from the one a key
    /// space records.
    pub fn append_as(
        &self,
        t: &Trajectory,
        embedder: Option<&crate::format::record::EmbedderId>,
    ) -> Result<u64> {
        self.ensure_checked()?;
        self.append_with(t, embedder, true)
    }

    fn append_with(
        &self,
        t: &Trajectory,
        embedder: Option<&crate::format::record::EmbedderId>,
        sync: bool,
    ) -> Result<u64> {
        if let Some(e) = embedder {
            for name in t.keys.keys().chain(t.step_keys.keys()) {
                self.check_embedder(name, e)?;
            }
        }
        for (at, s) in [
            ("task", &t.task),
            ("env", &t.env),
            ("goal", &t.goal),
            ("plan", &t.plan),
        ] {
            check_text(at, s)?;
        }
        check_fields(t)?;
        let mut id_out = 0;
        self.commit_with(kind::TRAJECTORY, sync, |st| {
            if t.provenance.origin.is_some() && st.origin == 0 {
                return Err(no_origin(&self.log_path));
            }
            // No id, given or assigned, may be reserved or held by a live trajectory; running
            // out of ids is an error before anything is written.
            let id = match t.id {
                Some(id) => {
                    if st.live_slot(id).is_some() {
                        return Err(Error::DuplicateId { id });
                    }
                    if id == RESERVED_ID {
                        return Err(Error::invalid("id", "id 18446744073709551615 is reserved"));
                    }
                    id
                }
                None if st.next_id == RESERVED_ID => return Err(Error::IdsExhausted),
                // An assigned id is never one that was ever stored, deleted or not: only an
                // explicit id may take back the id of a deleted trajectory.
                None if st.by_id.contains_key(st.next_id) => {
                    return Err(Error::DuplicateId { id: st.next_id })
                }
                None => st.next_id,
            };
            let mut keys = Vec::new();
            for (name, v) in &t.keys {
                let (sid, space) = st.space(name)?;
                if space.def.level != Level::Trajectory {
                    return Err(Error::invalid(
                        format!("keys.{name}"),
                        "is a step-level key space; give its vectors under step_keys",
                    ));
                }
                check_vector(&format!("keys.{name}"), space, v)?;
                keys.push(EncKey {
                    space: sid,
                    step: NO_STEP,
                    vector: v,
                });
            }
            for (name, vs) in &t.step_keys {
                let (sid, space) = st.space(name)?;
                if space.def.level != Level::Step {
                    return Err(Error::invalid(
                        format!("step_keys.{name}"),
                        "is a trajectory-level key space; give its vector under keys",
                    ));
                }
                if vs.len() != t.steps.len() {
                    return Err(Error::invalid(
                        format!("step_keys.{name}"),
                        format!("has {} vectors for {} steps", vs.len(), t.steps.len()),
                    ));
                }
                for (i, v) in vs.iter().enumerate() {
                    check_vector(&format!("step_keys.{name}[{i}]"), space, v)?;
                    keys.push(EncKey {
                        space: sid,
                        step: u32::try_from(i).unwrap_or(NO_STEP),
                        vector: v,
                    });
                }
            }
            // Keys are written in space order, then step order: rows of one trajectory are
            // contiguous in every key file.
            keys.sort_by_key(|k| (k.space, k.step));
            let created_ms = if t.created_ms == 0 {
                now_ms()
            } else {
                t.created_ms
            };
            id_out = id;
            Ok(record::encode_trajectory(t, id, created_ms, &keys))
        })?;
        Ok(id_out)
    }

    /// Marks a trajectory deleted (a tombstone); `compact` reclaims its space.
    pub fn delete(&self, id: u64) -> Result<()> {
        self.commit(kind::DELETE, |st| {
            st.live_slot(id).ok_or(Error::NotFound {
                kind: "trajectory",
                id,
            })?;
            Ok(record::encode_delete(id))
        })?;
        Ok(())
    }

    /// Sets a trajectory's outcome after the fact.
    pub fn set_outcome(&self, id: u64, outcome: Outcome) -> Result<()> {
        if outcome.reward.is_some_and(|r| !r.is_finite()) {
            return Err(Error::invalid("outcome.reward", "is not a finite number"));
        }
        self.commit(kind::TRAJ_OUTCOME, |st| {
            st.live_slot(id).ok_or(Error::NotFound {
                kind: "trajectory",
                id,
            })?;
            Ok(record::encode_traj_outcome(id, outcome))
        })?;
        Ok(())
    }

    /// Begins an episode and returns its id.
    pub fn begin_episode(&self) -> Result<u64> {
        let mut ep = 0;
        self.commit(kind::EPISODE_BEGIN, |st| {
            ep = st.usage.next_episode.max(1);
            Ok(record::encode_episode_begin(ep, now_ms()))
        })?;
        Ok(ep)
    }

    /// Logs retrievals made during `episode` (one commit for the batch).
    pub fn log_retrievals(&self, episode: u64, events: &[RetrievalEvent]) -> Result<()> {
        self.ensure_checked()?;
        if events.is_empty() {
            return Ok(());
        }
        self.commit(kind::RETRIEVALS, |st| {
            if !st.usage.episodes.contains_key(&episode) {
                return Err(Error::NotFound {
                    kind: "episode",
                    id: episode,
                });
            }
            for e in events {
                let slot = st.by_id.get(e.id).ok_or(Error::NotFound {
                    kind: "trajectory",
                    id: e.id,
                })?;
                if let Some(s) = e.step {
                    if s >= st.trajs.at(ix(slot)).n_steps {
                        return Err(Error::invalid(
                            "retrieval step",
                            format!("trajectory {} has no step {s}", e.id),
                        ));
                    }
                }
            }
            Ok(record::encode_retrievals(episode, events))
        })?;
        Ok(())
    }

    /// Sets (or changes, or clears with `None`) an episode's outcome; may come long after.
    pub fn set_episode_outcome(&self, episode: u64, success: Option<bool>) -> Result<()> {
        self.commit(kind::EPISODE_OUTCOME, |st| {
            if !st.usage.episodes.contains_key(&episode) {
                return Err(Error::NotFound {
                    kind: "episode",
                    id: episode,
                });
            }
            Ok(record::encode_episode_outcome(episode, success))
        })?;
        Ok(())
    }

    /// The origin id in effect: trajectories and episodes written by this handle are first
    /// written under it. `None` for a log written before origins existed (compaction gives
    /// it one).
    pub fn origin(&self) -> Option<u64> {
        Some(self.state.read().origin).filter(|&o| o != 0)
    }

    /// Where trajectory `id` (live or deleted, not compacted away) was first written: its
    /// provenance origin when it was merged from another database, else this database's
    /// origin id when it was committed and `id`.
    pub fn trajectory_origin(&self, id: u64) -> Option<Origin> {
        // Infallible: after a failed rebuild the handle is poisoned (see `ensure_checked`).
        let _ = self.ensure_point(id);
        let st = self.state.read();
        st.by_id
            .get(id)
            .and_then(|slot| st.trajs.get(ix(slot)))
            .map(|m| m.origin)
    }

    /// Usage counters of trajectory `id` (zeros when never retrieved).
    pub fn utility(&self, id: u64) -> Utility {
        self.state
            .read()
            .usage
            .counters
            .get(&id)
            .copied()
            .unwrap_or_default()
    }

    /// Usage counters of every trajectory that has been retrieved, by id.
    pub fn utilities(&self) -> Vec<(u64, Utility)> {
        let st = self.state.read();
        let mut v: Vec<(u64, Utility)> = st.usage.counters.iter().map(|(k, u)| (*k, *u)).collect();
        v.sort_by_key(|x| x.0);
        v
    }

    /// Every episode, by id.
    pub fn episodes(&self) -> Vec<Episode> {
        self.state.read().usage.episodes.values().cloned().collect()
    }

    /// Reads a live trajectory, keys included, with its current outcome.
    pub fn get(&self, id: u64) -> Result<Trajectory> {
        self.ensure_point(id)?;
        let st = self.state.read();
        let slot = st.live_slot(id).ok_or(Error::NotFound {
            kind: "trajectory",
            id,
        })?;
        self.read_trajectory(&st, slot)
    }

    pub(crate) fn read_trajectory(&self, st: &State, slot: usize) -> Result<Trajectory> {
        self.read_trajectory_as(st, slot, true)
    }

    /// [`Self::read_trajectory`], skipping the keys (left empty) unless `with_keys`.
    pub(crate) fn read_trajectory_as(
        &self,
        st: &State,
        slot: usize,
        with_keys: bool,
    ) -> Result<Trajectory> {
        let m = st.trajs.at(slot);
        let payload = log::read_payload(self.log().as_ref(), &self.log_path, m.offset)?;
        let decoded = if with_keys {
            record::decode_trajectory(&payload, &st.space_name())
        } else {
            record::decode_trajectory_without_keys(&payload)
        };
        let mut t = decoded.map_err(|e| Error::Corrupt {
            path: self.log_path.clone(),
            offset: m.offset,
            what: e.what,
        })?;
        if t.id != Some(m.id) {
            return Err(Error::Corrupt {
                path: self.log_path.clone(),
                offset: m.offset,
                what: format!("expected trajectory {} here, found {:?}", m.id, t.id),
            });
        }
        if m.relabelled {
            t.outcome = m.outcome;
        }
        Ok(t)
    }

    /// Whether `id` is a live (stored, not deleted) trajectory. A hash lookup.
    pub fn contains(&self, id: u64) -> bool {
        // Infallible: after a failed rebuild the handle is poisoned (see `ensure_checked`).
        let _ = self.ensure_point(id);
        self.state.read().live_slot(id).is_some()
    }

    /// Ids of live trajectories in commit order.
    pub fn ids(&self) -> Vec<u64> {
        // Infallible: after a failed rebuild the handle is poisoned (see `ensure_checked`).
        let _ = self.ensure_checked();
        self.state
            .read()
            .trajs
            .views()
            .filter(|m| m.visible(None))
            .map(|m| m.id())
            .collect()
    }

    /// Ids of the trajectories visible as of commit `as_of`, in commit order; refused with
    /// [`Error::ViewEnded`] when a compaction has folded that commit away.
    pub fn ids_as_of(&self, as_of: Option<u64>) -> Result<Vec<u64>> {
        self.ensure_checked()?;
        let st = self.state.read();
        st.check_view(as_of)?;
        Ok(st
            .trajs
            .views()
            .filter(|m| m.visible(as_of))
            .map(|m| m.id())
            .collect())
    }

    /// (id, commit sequence number) of live trajectories in commit order: the points at
    /// which a read view "as of commit N" can be taken.
    pub fn commit_points(&self) -> Vec<(u64, u64)> {
        // Infallible: after a failed rebuild the handle is poisoned (see `ensure_checked`).
        let _ = self.ensure_checked();
        self.state
            .read()
            .trajs
            .views()
            .filter(|m| m.visible(None))
            .map(|m| (m.id(), m.seq()))
            .collect()
    }

    /// Sequence number of the last commit (0 for an empty database).
    pub fn commit_seq(&self) -> u64 {
        self.state.read().last_seq
    }

    /// Counts and sizes.
    pub fn stats(&self) -> Stats {
        // Infallible: after a failed rebuild the handle is poisoned (see `ensure_checked`).
        let _ = self.ensure_checked();
        let st = self.state.read();
        let (mut live, mut steps, mut successes) = (0u64, 0u64, 0u64);
        for m in st.trajs.views().filter(|m| m.visible(None)) {
            live += 1;
            steps += u64::from(m.n_steps());
            successes += u64::from(m.success_at(None) == Some(true));
        }
        Stats {
            trajectories: live,
            steps,
            deleted: off(st.trajs.len()) - live,
            successes,
            episodes: off(st.usage.episodes.len()),
            commit_seq: st.last_seq,
            log_bytes: self.log().len().unwrap_or(0),
            spaces: st
                .spaces
                .iter()
                .map(|s| SpaceStats {
                    def: s.def.clone(),
                    rows: off(s.rows.len()),
                    // Every row is live while no trajectory was ever deleted.
                    live_rows: if st.any_deleted {
                        s.row_meta
                            .iter()
                            .filter(|r| !st.trajs.deleted(ix(r.slot)))
                            .count()
                            .try_into()
                            .unwrap_or(u64::MAX)
                    } else {
                        off(s.row_meta.len())
                    },
                    file_bytes: s.rows.file_bytes(),
                    graph_rows: s.graph.read().as_ref().map(|g| off(g.len())),
                    auto_uses_graph: crate::index::mode::auto_choice(
                        s,
                        self.opts.exact_below_rows,
                        self.opts.read_only,
                    )
                    .is_graph(),
                    graph_discarded: s
                        .graph
                        .read()
                        .as_ref()
                        .and_then(|g| g.discarded().map(str::to_owned)),
                })
                .collect(),
            exact_below_rows: self.opts.exact_below_rows,
        }
    }
}

impl std::fmt::Debug for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Database")
            .field("log", &self.log_path)
            .field("durability", &self.opts.durability)
            .field("read_only", &self.opts.read_only)
            .finish_non_exhaustive()
    }
}

impl Database {
    /// Syncs and closes the handle, returning the error of that final sync, if any.
    /// Dropping a handle makes the same sync but can only print its error to stderr: call
    /// `close` where a failed final sync must be noticed (under `Buffered`, the commits since
    /// the last `sync` may then be lost).
    pub fn close(self) -> Result<()> {
        self.ensure_checked()?;
        let r = self.sync();
        if r.is_err() {
            // No fsync retry in `drop`: the error is the caller's now.
            self.poison();
            return r;
        }
        // Everything is durable now; a checkpoint only saves the next open time. Its
        // failure is reported, but the handle is not poisoned and nothing is lost.
        let c = if self.opts.read_only {
            Ok(())
        } else {
            self.checkpoint()
        };
        // Drop must not write it again.
        self.poison();
        c
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        if !self.opts.read_only && !self.poisoned.load(Ordering::SeqCst) {
            if let Err(e) = self.sync() {
                eprintln!(
                    "trajdb: the final sync of {} failed while closing: {e}; commits since the last successful sync may be lost (Database::close returns this error)",
                    self.log_path.display()
                );
            } else if let Err(e) = self.checkpoint() {
                eprintln!(
                    "trajdb: writing the checkpoint of {} failed while closing: {e}; nothing is lost, the next open reads more of the log (Database::close returns this error)",
                    self.log_path.display()
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::ms_since_epoch;

    /// Issue 7.13: a clock before 1970 gave `created_ms = 0`, which means "unset".
    #[test]
    fn clock_before_1970_gives_negative_times_never_zero() {
        assert_eq!(
            ms_since_epoch(UNIX_EPOCH - Duration::from_secs(86_400)),
            -86_400_000
        );
        assert_eq!(ms_since_epoch(UNIX_EPOCH - Duration::from_micros(300)), 1);
        assert_eq!(ms_since_epoch(UNIX_EPOCH), 1);
        assert_eq!(ms_since_epoch(UNIX_EPOCH + Duration::from_millis(5)), 5);
    }
}

#[cfg(test)]
mod utc_tests {
    use super::utc_time;

    #[test]
    fn utc_time_matches_the_civil_calendar() {
        for (ms, want) in [
            (0, "1970-01-01 00:00:00 UTC"),
            (1_700_000_000_000, "2023-11-14 22:13:20 UTC"),
            (951_782_400_000, "2000-02-29 00:00:00 UTC"),
            (4_102_444_799_000, "2099-12-31 23:59:59 UTC"),
            (-1000, "1969-12-31 23:59:59 UTC"),
        ] {
            assert_eq!(utc_time(ms), want, "{ms}");
        }
    }
}

/// The checks of a trajectory's own fields that need no database state (provenance and
/// creation time), shared by [`Database::append`] and the import pre-check.
pub(crate) fn check_fields(t: &Trajectory) -> Result<()> {
    if t.provenance.origin.is_some_and(|o| o.db == 0) {
        return Err(Error::invalid(
            "provenance.origin.db",
            "is 0, which is no origin id",
        ));
    }
    if let Some((a, b)) = t.provenance.steps {
        if a > b {
            return Err(Error::invalid(
                "provenance.steps",
                format!("[{a}, {b}) is reversed: the parent's step range [start, end) needs start <= end"),
            ));
        }
    }
    if t.created_ms < 0 {
        return Err(Error::invalid(
            "created_ms",
            format!(
                "{} is before 1970: give milliseconds since the Unix epoch, or 0 for now",
                t.created_ms
            ),
        ));
    }
    Ok(())
}
