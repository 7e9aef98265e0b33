//! Maintenance of a database: verify, compact, fork and repair.

use std::fs::File;
use std::path::Path;

use serde::Serialize;

use crate::checkpoint::{self, Covered, CHECKPOINT_FILE};
use crate::db::LOCK_FILE;
use crate::db::{fresh_log_id, fresh_origin, load_state, now_ms, take_lock, Database, Synced};
use crate::error::{Error, Result};
use crate::format::codec::{ix, off};
use crate::format::log::{self, kind, LogHeader, LOG_FILE};
use crate::format::record::{self, RetrievalEvent};
use crate::index::keyfile::{key_file_name, RowStore};
use crate::storage::{create_fresh, sync_parent, Backend, FileBackend};

/// What [`Database::repair`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RepairReport {
    /// Offset of the first damaged frame, where the log was cut; `None` when the log had no
    /// damage and nothing was cut.
    pub cut_at: Option<u64>,
    /// Bytes removed from the log.
    pub cut_bytes: u64,
    /// Where the removed bytes were saved (`log.cut-OFFSET`), unless they were all zero.
    pub cut_file: Option<String>,
    /// `(commits, end)` when the checkpoint of this log recorded commits up to sequence
    /// number `commits`, ending at log byte `end`, past what the repaired log keeps: frames
    /// that had been synced are missing (the log was cut at rest, not torn by a crash), and
    /// the repair removed that checkpoint with the cut, so no later open reports it. A
    /// caller that wants to stop before that checks `OpenReport::log_cut_at` of a read-only
    /// open first (`trajdb repair` without `--force` does).
    pub checkpoint_lost: Option<(u64, u64)>,
}

/// What `verify` checked.
#[derive(Debug, Clone, Default, Serialize)]
pub struct VerifyReport {
    /// Frames whose checksums and contents were checked.
    pub frames: u64,
    /// Trajectory records decoded in full.
    pub trajectories: u64,
    /// Key rows compared bit for bit with the log.
    pub rows: u64,
    /// Key-file rows on disk checked against their header checksum and the log (read-only
    /// handles, which may not map every key file).
    pub key_file_rows: u64,
    /// Nodes of current graph files whose header, adjacency checksum and neighbour ids were
    /// checked (graph files of another log, or of rows the log no longer has, are stale and
    /// rebuilt on use; they are not counted).
    pub graph_rows: u64,
    /// Sound graph files that are not used because they index other rows, as
    /// `"space (graph-N.idx): why"` (built for another log, covering rows the log no longer has, rows
    /// that differ): not damage, so `verify` passes, but their space searches without a
    /// graph until it is rebuilt (`build_graph`).
    pub stale_graphs: Vec<String>,
}

impl Database {
    /// Cuts the log of the database in `path` at its first damaged frame, keeping every
    /// commit before it, and saves the removed bytes to `log.cut-OFFSET`.
    ///
    /// Opening refuses a log whose damaged frame is followed by valid frames, because that is
    /// what damage to committed data looks like. After a power cut under
    /// [`Durability::Buffered`](crate::Durability::Buffered) or [`Durability::GroupCommit`](crate::Durability::GroupCommit), unacknowledged frames can
    /// reach the disk out of order and look the same; `repair` is the explicit way to keep
    /// the prefix. It takes the writer lock.
    pub fn repair(path: impl AsRef<Path>) -> Result<RepairReport> {
        let dir = path.as_ref();
        if !dir.join(LOG_FILE).is_file() {
            return Err(Error::NotADatabase {
                path: dir.to_owned(),
                why: "there is no log file".into(),
            });
        }
        crate::db::refuse_foreign_log(dir)?;
        let _lock = take_lock(dir, std::time::Duration::ZERO)?;
        Self::repair_backend(&FileBackend::new(dir))
    }

    /// [`repair`](Self::repair) on any [`Backend`]; the caller ensures no writer is open.
    pub fn repair_backend(backend: &dyn Backend) -> Result<RepairReport> {
        let log_path = backend.path_of(LOG_FILE);
        let log = backend
            .open(LOG_FILE, false)
            .map_err(|e| Error::io("open", &log_path, e))?
            .ok_or_else(|| Error::io("open", &log_path, std::io::ErrorKind::NotFound.into()))?;
        let end = log::valid_prefix(log.as_ref(), &log_path)?;
        let len = log.len().map_err(|e| Error::io("stat", &log_path, e))?;
        if end >= len {
            return Ok(RepairReport::default());
        }
        let checkpoint_lost = log::read_header(log.as_ref(), &log_path)
            .ok()
            .and_then(|h| checkpoint::covered_end(backend, &h))
            .filter(|&(covered, _)| covered > end)
            .map(|(covered, last_seq)| (last_seq, covered));
        let cut_file = log::keep_cut_tail(backend, log.as_ref(), end, len)?;
        // A checkpoint may cover frames about to be cut; open would see that (the frame it
        // ends with is gone), but one that can never apply is better gone first.
        backend
            .remove(CHECKPOINT_FILE)
            .map_err(|e| Error::io("remove", backend.path_of(CHECKPOINT_FILE), e))?;
        log.set_len(end)
            .map_err(|e| Error::io("truncate", &log_path, e))?;
        log.sync().map_err(|e| Error::io("sync", &log_path, e))?;
        Ok(RepairReport {
            cut_at: Some(end),
            cut_bytes: len - end,
            cut_file,
            checkpoint_lost,
        })
    }

    /// The checkpoint this handle reads in place (if it reads one): every block against
    /// its checksum, all damaged blocks named in one error, then the consistency of every
    /// record. Runs before the state is checked for use, which would replace a damaged
    /// checkpoint's state by a scan of the log.
    fn verify_checkpoint(&self) -> Result<()> {
        let ckpt_path = || {
            self.log_path
                .parent()
                .unwrap_or(&self.log_path)
                .join(checkpoint::CHECKPOINT_FILE)
        };
        // Damage found after open (the handle rebuilt its state from the log) or at open
        // (the checkpoint was ignored and the log answered): every answer is sound, but the
        // file stays damaged until a writer replaces it, so it is checked again as it is
        // now. Other reasons to ignore a checkpoint (another log's, an older version,
        // frames the log lost) are not damage to the file.
        let damage_seen = self.checkpoint_damage().is_some()
            || self
                .report
                .checkpoint_ignored
                .as_deref()
                .is_some_and(|why| {
                    why.contains("checksum mismatch") || why.contains("shorter than")
                });
        if damage_seen {
            if let Ok(bytes) = std::fs::read(ckpt_path()) {
                if let Err(why) = checkpoint::decode_file(&bytes) {
                    return Err(Error::Corrupt {
                        path: ckpt_path(),
                        offset: 0,
                        what: format!(
                            "the checkpoint is damaged ({why}); this handle answers from the \
                             log, and a writer's next checkpoint replaces the file"
                        ),
                    });
                }
            }
        }
        let st = self.state.read();
        // The checkpoint this handle reads in place: every block against its checksum
        // (all damaged blocks named), then the consistency of every record.
        if let Some(c) = &st.ckpt {
            let damaged = c.damaged_blocks();
            if let Some(&first) = damaged.first() {
                let spans: Vec<String> = damaged
                    .iter()
                    .map(|&i| {
                        let (at, len) = c.block_span(i);
                        format!("block {i} at bytes {at}..{}", at + len)
                    })
                    .collect();
                return Err(Error::Corrupt {
                    path: c.path().to_owned(),
                    offset: c.block_span(first).0,
                    what: format!(
                        "{} checkpoint block(s) do not match their checksums: {}",
                        damaged.len(),
                        spans.join(", ")
                    ),
                });
            }
            checkpoint::decode_body(c, true).map_err(|what| Error::Corrupt {
                path: c.path().to_owned(),
                offset: 0,
                what: format!("checkpoint body: {what}"),
            })?;
        }
        Ok(())
    }

    /// Re-reads the whole log, checking every checksum and record, and compares every key
    /// row and key-file header with what the log says.
    pub fn verify(&self) -> Result<VerifyReport> {
        self.verify_checkpoint()?;
        self.ensure_checked()?;
        let _w = self.writer.lock();
        let st = self.state.read();
        let mut report = VerifyReport::default();
        let mut cursor: Vec<usize> = vec![0; st.spaces.len()];
        let mut row_buf = Vec::new();
        // Only the commits this handle knows: a writer in another process may be appending.
        let limit = _w.end;
        let (_, end) = log::scan_limited(self.log().as_ref(), &self.log_path, limit, |f| {
            report.frames += 1;
            let rec = record::decode_record(f.kind, f.payload, &st.space_name()).map_err(|e| {
                Error::Corrupt {
                    path: self.log_path.clone(),
                    offset: f.offset,
                    what: e.what,
                }
            })?;
            if f.kind == kind::TRAJECTORY {
                report.trajectories += 1;
                let t = record::scan_trajectory(f.payload).map_err(|e| Error::Corrupt {
                    path: self.log_path.clone(),
                    offset: f.offset,
                    what: e.what,
                })?;
                drop(rec);
                for (sid, _, v) in &t.keys {
                    let sid = ix(*sid);
                    let Some(space) = st.spaces.get(sid) else {
                        return Err(Error::Corrupt {
                            path: self.log_path.clone(),
                            offset: f.offset,
                            what: format!("key of undefined space {sid}"),
                        });
                    };
                    let r = cursor[sid];
                    cursor[sid] += 1;
                    let path = self.key_path(sid);
                    let want = crate::index::keyfile::stored_row(space.def.metric, v, &mut row_buf);
                    if r >= space.rows.len()
                        || space
                            .rows
                            .row(r)
                            .iter()
                            .zip(want.chunks_exact(4))
                            .any(|(a, b)| a.to_le_bytes() != b)
                    {
                        let offset = crate::index::keyfile::KEY_HEADER_LEN
                            + off(r) * u64::from(space.def.dims) * 4;
                        return Err(Error::Corrupt {
                            path,
                            offset,
                            what: format!(
                                "row {r} of key space `{}` differs from the log record at byte {}",
                                space.def.name, f.offset
                            ),
                        });
                    }
                    report.rows += 1;
                }
            }
            Ok(())
        })?;
        if let Some(why) = end.torn {
            return Err(Error::Corrupt {
                path: self.log_path.clone(),
                offset: end.end,
                what: format!("log tail is damaged: {why}"),
            });
        }
        // A log cut at a frame boundary looks whole; the checkpoint written from it still
        // records how far it went.
        if let Some((covered, last_seq)) =
            crate::checkpoint::covered_end(self.backend.as_ref(), &st.header)
        {
            let len = self
                .log()
                .len()
                .map_err(|e| Error::io("stat", self.log_path.clone(), e))?;
            if covered > len {
                return Err(Error::Corrupt {
                    path: self.log_path.clone(),
                    offset: len,
                    what: format!(
                        "the log ends at byte {len}, but its checkpoint records commits up to sequence number {last_seq} ending at byte {covered}: committed frames were cut from the end of the log (restore it from a copy; a writable open with `Options::accept_log_cut`, which `trajdb repair --force` makes, would make the loss permanent)"
                    ),
                });
            }
        }
        if self.opts.read_only {
            // Past this handle's snapshot a writer may have appended whole frames; anything
            // else there is a damaged tail (which a writable open would cut).
            let log = self.log();
            let len = log
                .len()
                .map_err(|e| Error::io("stat", self.log_path.clone(), e))?;
            let valid =
                log::valid_prefix_from(log.as_ref(), &self.log_path, end.end, end.next_seq)?;
            if valid < len {
                let next = match self.report.damaged_committed_end {
                    Some(covered) => format!(
                        "its checkpoint records commits up to byte {covered}: damage at rest, which writers refuse; `trajdb repair --force` (accept_log_cut) cuts it, `trajdb export --skip-damaged` exports the rest"
                    ),
                    None => "a writable open cuts them; if a writer is appending right now, verify again".into(),
                };
                return Err(Error::Corrupt {
                    path: self.log_path.clone(),
                    offset: valid,
                    what: format!(
                        "log tail is damaged: {} bytes after the last valid frame ({next})",
                        len - valid
                    ),
                });
            }
        }
        for (i, s) in st.spaces.iter().enumerate() {
            if cursor[i] != s.rows.len() {
                return Err(Error::Corrupt {
                    path: self.key_path(i),
                    offset: 0,
                    what: format!(
                        "key space `{}` has {} rows but the log has {}",
                        s.def.name,
                        s.rows.len(),
                        cursor[i]
                    ),
                });
            }
            s.rows.check_header()?;
            let id = u32::try_from(i).unwrap_or(u32::MAX);
            match crate::index::graph::verify_file(
                self.backend.as_ref(),
                id,
                &s.def,
                st.header.log_id,
                s.rows.all(),
            )? {
                crate::index::graph::GraphFileCheck::Absent => {}
                crate::index::graph::GraphFileCheck::Stale(why) => {
                    report.stale_graphs.push(format!(
                        "{} ({}): {why}",
                        s.def.name,
                        crate::index::graph::graph_file_name(id)
                    ));
                }
                crate::index::graph::GraphFileCheck::Checked(nodes) => report.graph_rows += nodes,
            }
            if let Some(g) = s.graph.read().as_ref() {
                g.check_memory().map_err(|what| Error::Corrupt {
                    path: self
                        .backend
                        .path_of(&crate::index::graph::graph_file_name(id)),
                    offset: 0,
                    what: format!("graph in memory: {what}"),
                })?;
            }
            if self.opts.read_only {
                // A read-only handle keeps rows on the heap; check the files on disk too.
                report.key_file_rows += crate::index::keyfile::verify_file(
                    self.backend.as_ref(),
                    u32::try_from(i).unwrap_or(u32::MAX),
                    &s.def,
                    st.header.log_id,
                    &s.rows,
                )?;
            }
        }
        Ok(report)
    }

    /// Path of the key file of space `i`, for messages (read-only handles keep rows on the
    /// heap or in a map and have no path of their own).
    fn key_path(&self, i: usize) -> std::path::PathBuf {
        self.backend
            .path_of(&key_file_name(u32::try_from(i).unwrap_or(u32::MAX)))
    }

    /// Rewrites the log with live records only and rebuilds the key files, so deleted
    /// trajectories free their space. Commit numbering continues; read views of earlier
    /// commits end ([`Error::ViewEnded`]).
    pub fn compact(&self) -> Result<()> {
        self.ensure_checked()?;
        if self.opts.read_only {
            return Err(Error::ReadOnly);
        }
        let mut w = self.writer.lock();
        self.check_poison()?;
        let tmp = format!("{LOG_FILE}.compact");
        let tmp_path = self.backend.path_of(&tmp);
        let io = |op, e| Error::io(op, tmp_path.clone(), e);
        let out = create_fresh(self.backend.as_ref(), &tmp)?;
        // Sequence numbers continue: the new log's first commit follows the old log's last,
        // so a read view of an earlier commit is seen to have ended, never silently
        // reinterpreted.
        // The origin id carries over; a log written before origins gets one here, and what
        // was written under none is taken as written under it.
        let (base_seq, id_floor, header_origin, graph_params) = {
            let st = self.state.read();
            let o = match st.header.origin {
                0 => fresh_origin(),
                o => o,
            };
            let params: Vec<_> = st
                .spaces
                .iter()
                .map(|s| s.graph.read().as_ref().map(|g| g.params))
                .collect();
            (st.last_seq + 1, st.next_id, o, params)
        };
        let upgrade = |o: u64| if o == 0 { header_origin } else { o };
        let hdr = LogHeader {
            log_id: fresh_log_id(),
            base_seq,
            created_ms: now_ms(),
            id_floor,
            origin: header_origin,
        };
        let mut buf = log::encode_header(&hdr).to_vec();
        let mut seq = base_seq;
        let mut push = |buf: &mut Vec<u8>, kind: u16, payload: &[u8]| {
            log::encode_frame(buf, seq, kind, payload);
            seq += 1;
        };
        // The origin id in effect in the new log: an ORIGIN record goes before each record
        // written here under another one (a fork's copy has its parent's before its own).
        let mut in_effect = header_origin;
        let mut set_origin = |buf: &mut Vec<u8>, o: u64, push: &mut FramePush<'_>| {
            if o != in_effect {
                push(buf, kind::ORIGIN, &record::encode_origin(o));
                in_effect = o;
            }
        };
        {
            let st = self.state.read();
            for (i, s) in st.spaces.iter().enumerate() {
                push(
                    &mut buf,
                    kind::SPACE,
                    &record::encode_space(u32::try_from(i).unwrap_or(u32::MAX), &s.def),
                );
            }
            for m in st.trajs.iter().filter(|m| m.deleted_at.is_none()) {
                let payload = log::read_payload(self.log().as_ref(), &self.log_path, m.offset)?;
                if !m.merged {
                    set_origin(&mut buf, upgrade(m.origin.db), &mut push);
                }
                push(&mut buf, kind::TRAJECTORY, &payload);
                if m.relabelled {
                    push(
                        &mut buf,
                        kind::TRAJ_OUTCOME,
                        &record::encode_traj_outcome(m.id, m.outcome),
                    );
                }
                if buf.len() > 16 << 20 {
                    let at = out.len().map_err(|e| io("stat", e))?;
                    out.write_at(&buf, at).map_err(|e| io("write", e))?;
                    buf.clear();
                }
            }
            for ep in st.usage.episodes.values() {
                if st.usage.merged.get(&ep.origin) == Some(&ep.id) {
                    push(
                        &mut buf,
                        kind::EPISODE_MERGED,
                        &record::encode_episode_merged(ep.id, ep.created_ms, ep.origin),
                    );
                } else {
                    set_origin(&mut buf, upgrade(ep.origin.db), &mut push);
                    push(
                        &mut buf,
                        kind::EPISODE_BEGIN,
                        &record::encode_episode_begin(ep.id, ep.created_ms),
                    );
                }
                let events: Vec<RetrievalEvent> = ep
                    .events
                    .iter()
                    .filter(|e| st.live_slot(e.id).is_some())
                    .copied()
                    .collect();
                if !events.is_empty() {
                    push(
                        &mut buf,
                        kind::RETRIEVALS,
                        &record::encode_retrievals(ep.id, &events),
                    );
                }
                if ep.outcome.is_some() {
                    push(
                        &mut buf,
                        kind::EPISODE_OUTCOME,
                        &record::encode_episode_outcome(ep.id, ep.outcome),
                    );
                }
            }
            // What is written next is written under the origin id in effect now.
            set_origin(&mut buf, upgrade(st.origin), &mut push);
        }
        let at = out.len().map_err(|e| io("stat", e))?;
        out.write_at(&buf, at).map_err(|e| io("write", e))?;
        out.sync().map_err(|e| io("sync", e))?;
        // The rename is the commit point: before it the old log is the database, after it
        // the new one is, and key files from the old log are rebuilt on open (log id differs).
        // From here on, any failure poisons the handle until it is fully switched: it must
        // never append to the replaced log or at the old log's offsets.
        if let Err(e) = self.backend.rename(&tmp, LOG_FILE) {
            self.poison();
            return Err(Error::io("rename", self.log_path.clone(), e));
        }
        let backend = self.backend.clone();
        let switched = load_state(out.as_ref(), &self.log_path, &mut |id, def, log_id| {
            RowStore::open(backend.as_ref(), id, def, log_id)
        })
        .and_then(|(mut state, end, last)| {
            for s in &mut state.spaces {
                s.rows.checkpoint()?;
            }
            Ok((state, end, last))
        });
        let (state, end, last_frame) = switched.inspect_err(|_| self.poison())?;
        let spaces = state.spaces.len();
        {
            // State, log handle, writer position and sync watermark change together: a
            // reader never pairs the new state's offsets with the old log, and no commit is
            // written or acknowledged against the old one.
            let mut st = self.state.write();
            *self.log.write() = out;
            *st = state;
            w.end = end.end;
            w.next_seq = end.next_seq;
            w.log_gen += 1;
            w.last_frame = last_frame;
            // The checkpoint file belongs to the old log (open ignores it by its log id).
            w.ckpt_end = 0;
            w.ckpt_len = 0;
            *self.synced.lock() = Synced {
                log_gen: w.log_gen,
                upto: end.end,
            };
        }
        // Graphs are rebuilt for the new log (its row numbers differ: deleted rows are gone).
        // The handle is switched already: a failure here leaves a graph file of the old log,
        // which the next open treats as stale and rebuilds with the parameters it records.
        {
            let st = self.state.read();
            for (s, p) in st.spaces.iter().zip(&graph_params) {
                if let Some(p) = p {
                    let mut g = crate::index::graph::Graph::new(&s.def, *p);
                    g.catch_up(s.rows.all(), usize::MAX);
                    g.choose_entry(s.rows.all());
                    *s.graph.write() = Some(g);
                }
            }
            crate::db::persist_graphs(self.backend.as_ref(), &st, true)?;
        }
        // Cleanup: key files of spaces the new log does not define. The handle is switched
        // already; a failure here leaves a stale file that open ignores (its log id differs).
        for s in self
            .backend
            .list()
            .map_err(|e| Error::io("list", self.backend.path_of(""), e))?
        {
            let numbered = s
                .strip_prefix("keys-")
                .and_then(|r| r.strip_suffix(".vec"))
                .or_else(|| {
                    s.strip_prefix("graph-")
                        .and_then(|r| r.strip_suffix(".idx"))
                });
            if let Some(n) = numbered {
                if n.parse::<usize>().map_or(true, |n| n >= spaces) {
                    self.backend
                        .remove(&s)
                        .map_err(|e| Error::io("remove", self.backend.path_of(&s), e))?;
                }
            }
        }
        // A checkpoint for the new log, so the next open need not scan it. The compaction
        // is complete whatever happens here: a failure leaves the old log's checkpoint,
        // which open ignores (another log id) and replaces.
        let _ = self.write_checkpoint(&mut w);
        Ok(())
    }

    /// Makes a new database at `dst` (a directory that must not exist, be empty, or hold
    /// only what an interrupted fork left: no log, and nothing but `log.new` and key files)
    /// with the same content. Files are copied with `std::fs::copy`, which on Linux uses
    /// `copy_file_range`: on file systems with reflinks (Btrfs, XFS) the copy shares extents
    /// instead of bytes. Writes to either database afterwards do not affect the other.
    pub fn fork(&self, dst: impl AsRef<Path>) -> Result<()> {
        let dst = dst.as_ref();
        if let Ok(rd) = std::fs::read_dir(dst) {
            let names: Vec<String> = rd
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect();
            let leftover = |n: &String| {
                let base = n.trim_end_matches(".new");
                n == LOCK_FILE
                    || n == FORK_TMP_LOG
                    || is_key_file_name(base)
                    || is_graph_file_name(base)
            };
            if names.iter().any(|n| n == LOG_FILE) || !names.iter().all(leftover) {
                return Err(Error::invalid(
                    dst.display().to_string(),
                    "fork destination exists and is not empty",
                ));
            }
        }
        let existed = dst.is_dir();
        std::fs::create_dir_all(dst).map_err(|e| Error::io("create", dst, e))?;
        if !existed {
            sync_parent(dst)?;
        }
        self.fork_into(&FileBackend::new(dst))
    }

    /// Copies this database's files into another backend (see [`fork`](Self::fork)).
    ///
    /// The log goes first, under a temporary name renamed into place: a crash before that
    /// rename leaves no log (fork again), after it a database that opens (key files are
    /// derived and rebuilt from the log when missing or partial). Key files follow, each
    /// under a temporary name renamed into place.
    pub fn fork_into(&self, dst: &dyn Backend) -> Result<()> {
        self.ensure_checked()?;
        // The writer lock is held throughout: the copy is one consistent, synced point.
        let w = self.writer.lock();
        self.check_poison()?;
        if !self.opts.read_only {
            self.sync_log_locked(&w)?;
            self.checkpoint_keys()?;
        }
        let st = self.state.read();
        let mut copies: Vec<String> = vec![LOG_FILE.to_owned()];
        copies.extend(
            (0..st.spaces.len()).map(|i| key_file_name(u32::try_from(i).unwrap_or(u32::MAX))),
        );
        copies.extend(
            (0..st.spaces.len()).map(|i| {
                crate::index::graph::graph_file_name(u32::try_from(i).unwrap_or(u32::MAX))
            }),
        );
        for name in copies {
            let tmp = if name == LOG_FILE {
                FORK_TMP_LOG.to_owned()
            } else {
                format!("{name}.new")
            };
            let src_path = self.backend.path_of(&name);
            let dst_path = dst.path_of(&tmp);
            if src_path.is_file() && dst_path.parent().is_some_and(Path::is_dir) {
                std::fs::copy(&src_path, &dst_path).map_err(|e| Error::io("copy", &dst_path, e))?;
                File::open(&dst_path)
                    .and_then(|f| f.sync_all())
                    .map_err(|e| Error::io("sync", &dst_path, e))?;
            } else {
                let Some(src) = self
                    .backend
                    .open_read(&name)
                    .map_err(|e| Error::io("open", &src_path, e))?
                else {
                    continue;
                };
                let out = create_fresh(dst, &tmp)?;
                let len = src.len().map_err(|e| Error::io("stat", &src_path, e))?;
                let mut buf = vec![0u8; 4 << 20];
                let mut pos = 0u64;
                while pos < len {
                    let n = usize::try_from((len - pos).min(off(buf.len()))).unwrap_or(buf.len());
                    src.read_at(&mut buf[..n], pos)
                        .map_err(|e| Error::io("read", &src_path, e))?;
                    out.write_at(&buf[..n], pos)
                        .map_err(|e| Error::io("write", &dst_path, e))?;
                    pos += off(n);
                }
                out.sync().map_err(|e| Error::io("sync", &dst_path, e))?;
            }
            if name == LOG_FILE && st.origin != 0 {
                // The copy gets an origin id of its own from here on: what the two write
                // after the fork must never be taken for each other's when both are merged
                // somewhere, while what they share keeps its origin.
                let out = dst
                    .open(&tmp, false)
                    .map_err(|e| Error::io("open", &dst_path, e))?
                    .ok_or_else(|| {
                        Error::io("open", &dst_path, std::io::ErrorKind::NotFound.into())
                    })?;
                let mut frame = Vec::new();
                log::encode_frame(
                    &mut frame,
                    w.next_seq,
                    kind::ORIGIN,
                    &record::encode_origin(fresh_origin()),
                );
                out.set_len(w.end)
                    .and_then(|()| out.write_at(&frame, w.end))
                    .and_then(|()| out.sync())
                    .map_err(|e| Error::io("write", &dst_path, e))?;
            }
            dst.rename(&tmp, &name)
                .map_err(|e| Error::io("rename", dst.path_of(&name), e))?;
        }
        // A checkpoint of the state copied (same log, same log id), written last: without
        // it the destination opens by scanning its log and writes its own.
        if !self.opts.read_only {
            let cov = Covered {
                end: w.end,
                last_offset: w.last_frame.0,
                last_seq: w.next_seq.saturating_sub(1),
                last_crc: w.last_frame.1,
            };
            if let Some(bytes) = checkpoint::encode(&st, cov) {
                checkpoint::write(dst, &bytes)?;
            }
        }
        Ok(())
    }
}

/// Appends one frame (kind, payload) to a buffer being written as a new log.
type FramePush<'a> = dyn FnMut(&mut Vec<u8>, u16, &[u8]) + 'a;

/// Temporary name of a fork's log until it is complete.
const FORK_TMP_LOG: &str = "log.new";

/// True for `graph-N.idx`.
fn is_graph_file_name(n: &str) -> bool {
    n.strip_prefix("graph-")
        .and_then(|r| r.strip_suffix(".idx"))
        .is_some_and(|d| d.parse::<u32>().is_ok())
}

/// True for `keys-N.vec`.
fn is_key_file_name(n: &str) -> bool {
    n.strip_prefix("keys-")
        .and_then(|r| r.strip_suffix(".vec"))
        .is_some_and(|d| d.parse::<u32>().is_ok())
}
