//! Exact search: top-k over one key space with filters applied inside the scan, and the
//! multi-key, step-matched retrieval of the in-context-example method.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use serde::Serialize;

use crate::db::{Database, Space, State};
use crate::error::{Error, Result};
use crate::format::codec::{ix, off};
use crate::format::record::Metric;
use crate::format::record::{EmbedderId, Level, ProvenanceKind, Trajectory, NO_STEP};
use crate::index::bounds::{Group, StepBounds};
use crate::index::kernels::{check_vector, scan_prepared, Prepared, BLOCK_ROWS};
use crate::index::quant;
use crate::index::sidecar;
use crate::trajs::TrajView;

/// Which trajectories a search may return. Every condition is checked for each row during
/// the scan, before the top-k limit, so if k matching rows exist k come back.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Filter {
    /// Only trajectories whose outcome is success.
    pub success_only: bool,
    /// Only this environment.
    pub env: Option<String>,
    /// Only this task.
    pub task: Option<String>,
    /// Never these trajectory ids.
    pub exclude: Vec<u64>,
    /// Only this provenance kind.
    pub provenance: Option<ProvenanceKind>,
    /// Read the database as of this commit sequence number (None: now): trajectories
    /// committed by then and not deleted by then, with their outcome as of then. Sequence
    /// numbers continue across compaction; a view of a commit that a compaction folded away
    /// is refused with [`Error::ViewEnded`](crate::Error::ViewEnded).
    pub as_of: Option<u64>,
}

/// One search result. `score` is a similarity: higher is better.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Hit {
    /// Trajectory id.
    pub id: u64,
    /// Step index for step-level key spaces.
    pub step: Option<u32>,
    /// Similarity.
    pub score: f32,
}

/// A filter resolved against the state: names turned into interned ids.
pub(crate) struct Compiled<'a> {
    f: &'a Filter,
    env: Option<Option<u32>>,
    task: Option<Option<u32>>,
    exclude: Vec<u64>,
}

impl<'a> Compiled<'a> {
    pub(crate) fn new(st: &State, f: &'a Filter) -> Result<Self> {
        st.check_view(f.as_of)?;
        let mut exclude = f.exclude.clone();
        exclude.sort_unstable();
        Ok(Compiled {
            f,
            env: f.env.as_ref().map(|e| st.names.id_of(e)),
            task: f.task.as_ref().map(|t| st.names.id_of(t)),
            exclude,
        })
    }

    #[inline]
    /// Whether the filter sets no condition at all (so only deletion can fail a row).
    pub(crate) fn is_empty(&self) -> bool {
        self.f.as_of.is_none()
            && !self.f.success_only
            && self.env.is_none()
            && self.task.is_none()
            && self.f.provenance.is_none()
            && self.exclude.is_empty()
    }

    /// Whether every row passes: no condition is set and nothing is deleted, so a scan
    /// need not look at the trajectory table at all (a lookup per row otherwise).
    #[inline]
    pub(crate) fn every_row_passes(&self, st: &State) -> bool {
        self.is_empty() && !st.any_deleted
    }

    pub(crate) fn pass(&self, m: TrajView<'_>) -> bool {
        if !m.visible(self.f.as_of) {
            return false;
        }
        if self.f.success_only && m.success_at(self.f.as_of) != Some(true) {
            return false;
        }
        if self.env.is_some() || self.task.is_some() {
            let (env, task) = m.env_task();
            if self.env.is_some_and(|e| e != Some(env))
                || self.task.is_some_and(|t| t != Some(task))
            {
                return false;
            }
        }
        if let Some(p) = self.f.provenance {
            if p != m.provenance() {
                return false;
            }
        }
        self.exclude.is_empty() || self.exclude.binary_search(&m.id()).is_err()
    }
}

/// Min-heap entry: the worst kept candidate is on top.
#[derive(PartialEq)]
struct Entry {
    score: f32,
    order: u64,
}
impl Eq for Entry {}
impl Ord for Entry {
    fn cmp(&self, o: &Self) -> Ordering {
        // Lower score is "greater" so it sits on top; among equals, later rows go first.
        o.score
            .total_cmp(&self.score)
            .then(self.order.cmp(&o.order))
    }
}
impl PartialOrd for Entry {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}

/// Keeps the k best (score, order) pairs; ties favour the earlier order.
pub(crate) struct TopK {
    k: usize,
    heap: BinaryHeap<Entry>,
}
impl TopK {
    /// Keeps the `k` best of at most `bound` offers: memory is sized by `min(k, bound)`, so a
    /// caller's `k` never sizes an allocation beyond what exists.
    pub(crate) fn new(k: usize, bound: usize) -> Self {
        TopK {
            k,
            heap: BinaryHeap::with_capacity(k.min(bound).saturating_add(1)),
        }
    }
    /// Offers a candidate. Kept when fewer than k are held or when it beats the worst
    /// held one: a higher score, or an equal score and an earlier order. So the result does
    /// not depend on the order of offers.
    #[inline]
    pub(crate) fn offer(&mut self, score: f32, order: u64) {
        if self.heap.len() < self.k {
            self.heap.push(Entry { score, order });
        } else if let Some(top) = self.heap.peek() {
            if score > top.score || (score == top.score && order < top.order) {
                self.heap.pop();
                self.heap.push(Entry { score, order });
            }
        }
    }

    /// The k-th best score once k candidates are held.
    pub(crate) fn kth(&self) -> Option<f32> {
        (self.k > 0 && self.heap.len() == self.k)
            .then(|| self.heap.peek().map(|e| e.score))
            .flatten()
    }
    /// Best first.
    pub(crate) fn into_sorted(self) -> Vec<(f32, u64)> {
        let mut v: Vec<(f32, u64)> = self.heap.into_iter().map(|e| (e.score, e.order)).collect();
        v.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        v
    }
}

/// `x` as the nearest finite f32 (a ranking score never becomes infinite).
fn clamp_f32(x: f64) -> f32 {
    x.clamp(f64::from(f32::MIN), f64::from(f32::MAX)) as f32
}

/// The hits of `top`, whose orders are row indexes of key space `s`, best first.
///
/// A hit reads its row's metadata and then its trajectory's record, two dependent cache
/// misses on a large space; every row's metadata is loaded first and then every record, so
/// the misses of all the hits are in flight together rather than one after another.
pub(crate) fn hits(st: &State, s: &Space, top: TopK) -> Vec<Hit> {
    let sorted = top.into_sorted();
    let row = |r: u64| usize::try_from(r).unwrap_or(usize::MAX);
    for &(_, r) in &sorted {
        if let Some(m) = s.row_meta.get(row(r)..row(r).saturating_add(1)) {
            crate::index::simd::prefetch(m);
        }
    }
    let metas: Vec<(f32, crate::db::RowMeta)> = sorted
        .iter()
        .map(|&(score, r)| (score, s.row_meta[row(r)]))
        .collect();
    for (_, m) in &metas {
        st.trajs.prefetch_id(ix(m.slot));
    }
    metas
        .into_iter()
        .map(|(score, meta)| Hit {
            id: st.trajs.id(ix(meta.slot)),
            step: (meta.step != NO_STEP).then_some(meta.step),
            score,
        })
        .collect()
}

/// The id of space `s` of `st`.
pub(crate) fn space_id(st: &State, s: &Space) -> u32 {
    st.space_by_name
        .get(&s.def.name)
        .copied()
        .unwrap_or(u32::MAX)
}

/// The exact top `k` rows of space `s` among those with `keep(row)`, by the row kernel's
/// score against `q`. Cosine and dot spaces of at least `quant::MIN_ROWS` rows take the
/// quantised first pass (module `index::quant`) and rescore its candidates; the result is
/// the full f32 scan's, bit for bit (tests/search_filters.rs holds the two together).
pub(crate) fn top_rows(
    s: &Space,
    id: u32,
    q: &Prepared,
    k: usize,
    quantised: bool,
    keep: impl Fn(usize) -> bool,
) -> TopK {
    let dims = ix(s.def.dims);
    let rows = s.rows.all();
    let n = rows.len() / dims.max(1);
    let mut top = TopK::new(k, n);
    if !quantised || s.def.metric == Metric::L2 || n < quant::MIN_ROWS || k >= n / 4 {
        scan_prepared(q, rows, dims, keep, |r, score| top.offer(score, off(r)));
        return top;
    }
    if s.quant.read().is_behind(n) {
        let mut w = s.quant.write();
        sidecar::prime_quant(s, id, &mut w);
        w.extend(rows, dims);
    }
    let qr = s.quant.read();
    if qr.is_behind(n) {
        // Rows were appended between the two locks: scan in f32 this time.
        drop(qr);
        scan_prepared(q, rows, dims, keep, |r, score| top.offer(score, off(r)));
        return top;
    }
    let c = qr.first_pass(s.def.metric, q.vector(), k, keep);
    for &(hi, r) in &c.rows {
        if hi >= c.threshold {
            let r = ix(r);
            top.offer(q.score(&rows[r * dims..(r + 1) * dims]), off(r));
        }
    }
    top
}

/// Refuses a retrieve query with no key at all (nothing to rank by).
pub(crate) fn check_has_key(q: &RetrieveQuery) -> Result<()> {
    if q.keys.is_empty() && q.step_key.is_none() {
        return Err(Error::invalid(
            "retrieve keys",
            "no trajectory key and no step key: give at least one to rank by",
        ));
    }
    Ok(())
}

pub(crate) fn check_query(
    st: &State,
    space: &str,
    v: &[f32],
    embedder: Option<&EmbedderId>,
) -> Result<u32> {
    let (sid, s) = st.space(space)?;
    if v.len() != ix(s.def.dims) {
        return Err(Error::DimensionMismatch {
            space: space.into(),
            expected: ix(s.def.dims),
            got: v.len(),
        });
    }
    check_vector(&format!("query vector for `{space}`"), s.def.metric, v)?;
    if let (Some(rec), Some(given)) = (&s.def.embedder, embedder) {
        if rec != given {
            return Err(Error::EmbedderMismatch {
                space: space.into(),
                recorded: rec.to_string(),
                given: given.to_string(),
            });
        }
    }
    // Rows a checkpoint vouched for without their being read at open are checked once,
    // before any answer is drawn from them.
    s.rows.check_rows()?;
    Ok(sid)
}

/// The paper's retrieval, as one call.
#[derive(Debug, Clone, Default)]
pub struct RetrieveQuery {
    /// Trajectory-level keys: (space name, query vector). A candidate's trajectory score is
    /// the mean of its per-key similarities; a candidate with no key in one of these spaces
    /// gets that key's lowest score among the candidates.
    pub keys: Vec<(String, Vec<f32>)>,
    /// Optional step-level key: inside each candidate the best-matching step is found and
    /// candidates are ranked by trajectory score + step score.
    pub step_key: Option<(String, Vec<f32>)>,
    /// Number of examples to return.
    pub k: usize,
    /// Steps returned on each side of the matched step (the reference used 5).
    pub window: usize,
    /// Which trajectories qualify. Set `success_only` for the method's default.
    pub filter: Filter,
    /// When given, refused unless every key space used records this embedder (or none).
    pub embedder: Option<EmbedderId>,
}

/// One retrieved in-context example.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Example {
    /// Trajectory id.
    pub id: u64,
    /// Ranking score: trajectory score (+ step score when a step key was given).
    pub score: f32,
    /// Mean trajectory-level similarity.
    pub traj_score: f32,
    /// Best step similarity, when a step key was given.
    pub step_score: Option<f32>,
    /// The best-matching step.
    pub matched_step: Option<u32>,
    /// Steps `[start, end)` of the trajectory returned in `trajectory.steps`.
    pub window: (u32, u32),
    /// The trajectory without keys, its steps cut to `window`.
    pub trajectory: Trajectory,
}

impl Database {
    /// Exact top-`k` rows of key space `space` by similarity to `query`, filters applied
    /// inside the scan.
    pub fn search(
        &self,
        space: &str,
        query: &[f32],
        k: usize,
        filter: &Filter,
    ) -> Result<Vec<Hit>> {
        self.search_as(space, query, k, filter, None)
    }

    /// [`search`](Self::search), refusing a query made by a different embedder than the one
    /// the key space records.
    pub fn search_as(
        &self,
        space: &str,
        query: &[f32],
        k: usize,
        filter: &Filter,
        embedder: Option<&EmbedderId>,
    ) -> Result<Vec<Hit>> {
        self.ensure_checked()?;
        let st = self.state.read();
        let sid = check_query(&st, space, query, embedder)?;
        let s = &st.spaces[ix(sid)];
        if k == 0 {
            return Ok(Vec::new());
        }
        let c = Compiled::new(&st, filter)?;
        let quantised = self.opts.quantised_search;
        let every_row = c.every_row_passes(&st);
        let top = top_rows(
            s,
            sid,
            &Prepared::new(s.def.metric, query),
            k,
            quantised,
            |r| every_row || c.pass(st.trajs.view(ix(s.row_meta[r].slot))),
        );
        Ok(hits(&st, s, top))
    }

    /// [`search`](Self::search) for several queries in one pass over the rows: each block
    /// of rows is read from memory once and scored against every query while it is in
    /// cache, so `m` queries cost far less than `m` scans. Result `i` is exactly what
    /// `search(space, &queries[i], k, filter)` returns.
    ///
    /// `queries`: each `dims` floats. Errors: as `search`; a bad query is named by its index
    /// (`queries[3]`), and nothing is scored unless every query is valid.
    pub fn search_many<Q: AsRef<[f32]>>(
        &self,
        space: &str,
        queries: &[Q],
        k: usize,
        filter: &Filter,
    ) -> Result<Vec<Vec<Hit>>> {
        self.ensure_checked()?;
        let st = self.state.read();
        let (_, s) = st.space(space)?;
        for (i, q) in queries.iter().enumerate() {
            check_query(&st, space, q.as_ref(), None).map_err(|e| match e {
                Error::InvalidInput { at, what } => Error::InvalidInput {
                    at: format!("queries[{i}]: {at}"),
                    what,
                },
                Error::DimensionMismatch {
                    space,
                    expected,
                    got,
                } => Error::invalid(
                    format!("queries[{i}]"),
                    format!("has {got} dimensions; key space `{space}` has {expected}"),
                ),
                other => other,
            })?;
        }
        if k == 0 || queries.is_empty() {
            return Ok(vec![Vec::new(); queries.len()]);
        }
        let c = Compiled::new(&st, filter)?;
        let dims = ix(s.def.dims);
        let prepared: Vec<Prepared> = queries
            .iter()
            .map(|q| Prepared::new(s.def.metric, q.as_ref()))
            .collect();
        let mut tops: Vec<TopK> = (0..queries.len())
            .map(|_| TopK::new(k, s.row_meta.len()))
            .collect();
        let rows = s.rows.all();
        let every_row = c.every_row_passes(&st);
        let mut kept = [false; BLOCK_ROWS];
        let mut scores = [0f32; BLOCK_ROWS];
        for (b, block) in rows.chunks(BLOCK_ROWS * dims.max(1)).enumerate() {
            let base = b * BLOCK_ROWS;
            let m = block.len() / dims.max(1);
            let mut count = 0;
            for (i, kp) in kept[..m].iter_mut().enumerate() {
                *kp = every_row || c.pass(st.trajs.view(ix(s.row_meta[base + i].slot)));
                count += usize::from(*kp);
            }
            if count == 0 {
                continue;
            }
            for (p, top) in prepared.iter().zip(tops.iter_mut()) {
                // Scored per block, then per row: the same bits as `search` (kernels).
                p.score_rows(block, dims, &mut scores[..m]);
                for i in (0..m).filter(|&i| kept[i]) {
                    top.offer(scores[i], off(base + i));
                }
            }
        }
        Ok(tops.into_iter().map(|t| hits(&st, s, t)).collect())
    }

    /// Like [`search`](Self::search), but at most one hit per trajectory: in a step-level key
    /// space, the best-scoring step of each trajectory (ties: the earlier step), so `k`
    /// counts trajectories rather than steps. In a trajectory-level space it is `search`.
    pub fn search_per_trajectory(
        &self,
        space: &str,
        query: &[f32],
        k: usize,
        filter: &Filter,
        embedder: Option<&EmbedderId>,
    ) -> Result<Vec<Hit>> {
        self.ensure_checked()?;
        let st = self.state.read();
        let sid = check_query(&st, space, query, embedder)?;
        let s = &st.spaces[ix(sid)];
        if k == 0 {
            return Ok(Vec::new());
        }
        let c = Compiled::new(&st, filter)?;
        // Best (score, row) per trajectory slot; rows of one trajectory are contiguous.
        let mut best: Vec<(f32, usize)> = Vec::new();
        let mut last_slot = None;
        scan_prepared(
            &Prepared::new(s.def.metric, query),
            s.rows.all(),
            ix(s.def.dims),
            |r| c.pass(st.trajs.view(ix(s.row_meta[r].slot))),
            |r, score| {
                let slot = s.row_meta[r].slot;
                if last_slot == Some(slot) {
                    if let Some(b) = best.last_mut() {
                        if score > b.0 {
                            *b = (score, r);
                        }
                    }
                } else {
                    best.push((score, r));
                    last_slot = Some(slot);
                }
            },
        );
        let mut top = TopK::new(k, best.len());
        for &(score, r) in &best {
            top.offer(score, off(r));
        }
        Ok(hits(&st, s, top))
    }

    /// Builds every key space's search bounds now, as the first search or retrieval would
    /// build them: the quantised copy of each cosine or dot space of at least 4,096 rows
    /// (module `index::quant`) and each step-level space's per-trajectory step bounds
    /// (module `index::bounds`), loading them from their files when those prove current.
    /// A writer's next checkpoint (`close`, `checkpoint`) then saves them, so the next
    /// open's first search does not rebuild them (`trajdb import` and `compact` call this).
    /// Cost: one pass over every key row of the spaces concerned. Never fails.
    pub fn build_search_bounds(&self) {
        // Infallible: after a failed rebuild the handle is poisoned (see `ensure_checked`).
        let _ = self.ensure_checked();
        let st = self.state.read();
        for (id, s) in st.spaces.iter().enumerate() {
            let id = u32::try_from(id).unwrap_or(u32::MAX);
            let dims = ix(s.def.dims);
            // Nothing is derived from rows that fail their checkpoint's checksum (the
            // first search of the space reports it).
            let Ok(rows) = s.rows.all_checked() else {
                continue;
            };
            let n = rows.len() / dims.max(1);
            if self.opts.quantised_search
                && s.def.metric != Metric::L2
                && n >= quant::MIN_ROWS
                && s.quant.read().is_behind(n)
            {
                let mut w = s.quant.write();
                sidecar::prime_quant(s, id, &mut w);
                w.extend(rows, dims);
            }
            if s.def.level == Level::Step && s.bounds.read().is_behind(n) {
                let mut w = s.bounds.write();
                sidecar::prime_bounds(s, id, st.trajs.len(), &mut w);
                w.extend(s.def.metric, rows, dims, |r| s.row_meta[r].slot);
            }
        }
    }

    /// The multi-key, success-filtered, step-matched retrieval of the in-context-example
    /// method (README, "Quick start"), computed exactly: the result is the one that scoring
    /// every qualifying trajectory on every key gives (same ids, scores, matched steps and
    /// windows).
    ///
    /// With a step key, trajectories are visited in descending order of trajectory score
    /// plus an upper bound on their best step score (module `index::bounds`), and the visit
    /// stops when no unvisited trajectory can beat the k-th best; so most step rows are
    /// never read when the trajectory keys separate the candidates. In cosine step spaces a
    /// few trajectories with the best trajectory bounds are scored exactly first; their k-th
    /// best total is a floor of the answer's, and a trajectory whose trajectory bound plus
    /// the largest possible step score (1, with the bound's margin) is below that floor is
    /// ruled out without reading its step bound. Winners are decoded without their keys.
    ///
    /// Errors: no key at all (neither `keys` nor `step_key`), unknown key space, wrong dimensions, non-finite query values, a key space of
    /// the wrong level, a mismatched embedder, and I/O or corruption reading the winners.
    pub fn retrieve(&self, q: &RetrieveQuery) -> Result<Vec<Example>> {
        self.retrieve_with_work(q).map(|(examples, _)| examples)
    }

    /// [`retrieve`](Self::retrieve), also saying how much work the call did.
    pub fn retrieve_with_work(&self, q: &RetrieveQuery) -> Result<(Vec<Example>, RetrieveWork)> {
        self.ensure_checked()?;
        self.retrieve_scratch(q, true)
    }

    /// [`retrieve_with_work`](Self::retrieve_with_work) scoring every step row (no
    /// pruning), for benchmarks and tests that compare the two paths. Not part of the
    /// stable API.
    #[doc(hidden)]
    pub fn retrieve_exhaustive(&self, q: &RetrieveQuery) -> Result<(Vec<Example>, RetrieveWork)> {
        self.ensure_checked()?;
        self.retrieve_scratch(q, false)
    }

    fn retrieve_scratch(
        &self,
        q: &RetrieveQuery,
        prune: bool,
    ) -> Result<(Vec<Example>, RetrieveWork)> {
        SCRATCH.with(|cell| match cell.try_borrow_mut() {
            Ok(mut scratch) => self.retrieve_in(q, &mut scratch, prune),
            Err(_) => self.retrieve_in(q, &mut Scratch::default(), prune),
        })
    }

    fn retrieve_in(
        &self,
        q: &RetrieveQuery,
        scratch: &mut Scratch,
        prune: bool,
    ) -> Result<(Vec<Example>, RetrieveWork)> {
        check_has_key(q)?;
        let st = self.state.read();
        let n = st.trajs.len();
        let mut work = RetrieveWork::default();
        let c = Compiled::new(&st, &q.filter)?;
        // Every key is checked before any work is done.
        let mut keys: Vec<(&Space, Prepared)> = Vec::with_capacity(q.keys.len());
        for (name, v) in &q.keys {
            let sid = check_query(&st, name, v, q.embedder.as_ref())?;
            let s = &st.spaces[ix(sid)];
            if s.def.level != Level::Trajectory {
                return Err(Error::invalid(
                    format!("retrieve keys `{name}`"),
                    "is a step-level key space; pass it as the step key",
                ));
            }
            keys.push((s, Prepared::new(s.def.metric, v)));
        }
        let step = match &q.step_key {
            None => None,
            Some((name, v)) => {
                let sid = check_query(&st, name, v, q.embedder.as_ref())?;
                let s = &st.spaces[ix(sid)];
                if s.def.level != Level::Step {
                    return Err(Error::invalid(
                        format!("retrieve step key `{name}`"),
                        "is a trajectory-level key space; pass it in keys",
                    ));
                }
                Some((s, v.as_slice(), Prepared::new(s.def.metric, v)))
            }
        };
        let Scratch {
            pass,
            sum,
            has_any,
            scores,
            best_step,
            order,
            step_scores,
            uppers,
            lows,
            key_rows,
        } = scratch;
        reset(pass, n, false);
        for (slot, p) in pass.iter_mut().enumerate() {
            *p = c.pass(st.trajs.view(slot));
        }
        // The step key's bounds, brought up to date (pruned visits only).
        let step_bounds = match &step {
            Some((s, _, _)) if prune => {
                let dims = ix(s.def.dims);
                let rows = s.rows.all();
                if s.bounds.read().is_behind(rows.len() / dims.max(1)) {
                    let mut w = s.bounds.write();
                    sidecar::prime_bounds(s, space_id(&st, s), n, &mut w);
                    w.extend(s.def.metric, rows, dims, |r| s.row_meta[r].slot);
                }
                let b = s.bounds.read();
                (b.usable && !b.is_behind(rows.len() / dims.max(1))).then_some(b)
            }
            _ => None,
        };
        let nkeys = keys.len();
        let nkeys_f = nkeys.max(1) as f64;
        // Trajectory keys. Exact mode: every slot's exact score, summed into `sum`. Bounded
        // mode (a pruned visit over quantised copies, module `index::quant`): `sum` holds an
        // upper bound of the same sum, and a visited slot's exact sum is formed by
        // `exact_sum`, in the same order with the same f64 arithmetic as the exact mode, so
        // both give the same bits.
        let quantisable = |s: &Space| {
            self.opts.quantised_search
                && s.def.metric != Metric::L2
                && s.rows.len() >= quant::MIN_ROWS
        };
        let bounded = prune
            && (step.is_none() || step_bounds.is_some())
            && keys.iter().any(|(s, _)| quantisable(s));
        reset(sum, n, 0.0);
        reset(has_any, n, false);
        // Per key: the exact worst score (filled in for slots without the key; None when no
        // qualifying slot has the key, and then the key adds nothing).
        let mut worsts: Vec<Option<f32>> = Vec::with_capacity(nkeys);
        if bounded {
            reset(key_rows, nkeys * n, u32::MAX);
        }
        for (i, (s, p)) in keys.iter().enumerate() {
            let dims = ix(s.def.dims);
            let rows = s.rows.all();
            reset(scores, n, f32::NAN);
            if bounded && quantisable(s) {
                let nrows = rows.len() / dims.max(1);
                if s.quant.read().is_behind(nrows) {
                    let mut w = s.quant.write();
                    sidecar::prime_quant(s, space_id(&st, s), &mut w);
                    w.extend(rows, dims);
                }
                let qr = s.quant.read();
                reset(lows, n, f32::NAN);
                let kr = &mut key_rows[i * n..(i + 1) * n];
                qr.bounds(
                    s.def.metric,
                    p.vector(),
                    |r| pass[ix(s.row_meta[r].slot)],
                    |r, lo, hi| {
                        let slot = ix(s.row_meta[r].slot);
                        lows[slot] = lo;
                        scores[slot] = hi;
                        has_any[slot] = true;
                        kr[slot] = u32::try_from(r).unwrap_or(u32::MAX);
                    },
                );
                // The exact minimum: the row that has it has a lower bound at or below the
                // least upper bound, so rescoring those rows finds it.
                let min_hi = scores
                    .iter()
                    .copied()
                    .filter(|x| !x.is_nan())
                    .fold(f32::INFINITY, f32::min);
                // The worst score only fills in for qualifying slots without this key;
                // when every qualifying slot has it, any finite value serves.
                let any_missing = (0..n).any(|slot| pass[slot] && kr[slot] == u32::MAX);
                let worst = if min_hi != f32::INFINITY && !any_missing {
                    min_hi
                } else {
                    (0..n)
                        .filter(|&slot| !lows[slot].is_nan() && lows[slot] <= min_hi)
                        .map(|slot| {
                            let r = ix(kr[slot]);
                            p.score(&rows[r * dims..(r + 1) * dims])
                        })
                        .fold(f32::INFINITY, f32::min)
                };
                if worst == f32::INFINITY {
                    worsts.push(None);
                    continue;
                }
                worsts.push(Some(worst));
            } else {
                // Exact scores (in bounded mode also the rows, for `exact_sum`).
                let mut kr = bounded.then(|| &mut key_rows[i * n..(i + 1) * n]);
                scan_prepared(
                    p,
                    rows,
                    dims,
                    |r| pass[ix(s.row_meta[r].slot)],
                    |r, score| {
                        let slot = ix(s.row_meta[r].slot);
                        scores[slot] = score;
                        has_any[slot] = true;
                        if let Some(kr) = kr.as_mut() {
                            kr[slot] = u32::try_from(r).unwrap_or(u32::MAX);
                        }
                    },
                );
                let worst = scores
                    .iter()
                    .copied()
                    .filter(|x| !x.is_nan())
                    .fold(f32::INFINITY, f32::min);
                if worst == f32::INFINITY {
                    worsts.push(None);
                    continue;
                }
                worsts.push(Some(worst));
            }
            let worst = worsts.last().copied().flatten().unwrap_or(0.0);
            for (acc, x) in sum.iter_mut().zip(scores.iter()) {
                *acc += f64::from(if x.is_nan() { worst } else { *x });
            }
        }
        // The exact key sum of a slot in bounded mode (same order and arithmetic as above).
        let exact_sum = |slot: usize| -> f64 {
            let mut acc = 0f64;
            for (i, (s, p)) in keys.iter().enumerate() {
                let Some(worst) = worsts[i] else { continue };
                let r = key_rows[i * n + slot];
                acc += f64::from(if r == u32::MAX {
                    worst
                } else {
                    let dims = ix(s.def.dims);
                    let r = ix(r);
                    p.score(&s.rows.all()[r * dims..(r + 1) * dims])
                });
            }
            acc
        };
        // Sums and means in f64: every term is a finite f32 (the numeric contract), their
        // sum may not be; the score is clamped into f32 once, at the end.
        let traj_score = |slot: usize| -> f64 {
            if nkeys == 0 {
                0.0
            } else if bounded {
                exact_sum(slot) / nkeys_f
            } else {
                sum[slot] / nkeys_f
            }
        };
        // An upper bound of `traj_score` (itself in exact mode): f64 addition and division
        // are monotonic, so term-wise upper bounds give an upper bound of the sum.
        let traj_upper = |slot: usize| -> f64 {
            if nkeys == 0 {
                0.0
            } else {
                sum[slot] / nkeys_f
            }
        };
        let mut top = TopK::new(q.k, n);
        reset(best_step, n, None);
        match &step {
            None if bounded => {
                order.clear();
                for slot in (0..n).filter(|&slot| pass[slot] && has_any[slot]) {
                    order.push((
                        clamp_f32(traj_upper(slot)),
                        u32::try_from(slot).unwrap_or(u32::MAX),
                    ));
                }
                in_descending_order(order, q.k, |upper, slot| {
                    if top.kth().is_some_and(|kth| upper < kth) {
                        return false;
                    }
                    let slot = ix(slot);
                    top.offer(clamp_f32(traj_score(slot)), off(slot));
                    true
                });
            }
            None => {
                for slot in 0..n {
                    if pass[slot] && (nkeys == 0 || has_any[slot]) {
                        top.offer(clamp_f32(traj_score(slot)), off(slot));
                    }
                }
            }
            Some((s, v, pq)) => {
                let dims = ix(s.def.dims);
                let rows = s.rows.all();
                if let Some(bounds) = &step_bounds {
                    // Pruned visit: candidates by descending upper bound.
                    let qn = v
                        .iter()
                        .map(|&x| f64::from(x) * f64::from(x))
                        .sum::<f64>()
                        .sqrt();
                    // The step bounds are needed only for slots that could reach the k-th
                    // best even with the largest step score any query can get
                    // (`query_free_upper`). A lower bound `floor` of the k-th best comes
                    // from scoring exactly the few slots with the best trajectory bounds;
                    // a slot with `traj_upper + step_max < floor` scores below the k-th
                    // best (strictly, so not even a tie) and its centroid is never read.
                    let mut floor = f32::NEG_INFINITY;
                    let step_max = StepBounds::query_free_upper(s.def.metric);
                    if let (Some(_), true) = (step_max, nkeys > 0) {
                        order.clear();
                        for slot in (0..n).filter(|&slot| pass[slot]) {
                            if bounds.group(slot).is_some() {
                                order.push((
                                    clamp_f32(traj_upper(slot)),
                                    u32::try_from(slot).unwrap_or(u32::MAX),
                                ));
                            }
                        }
                        let probe = q.k.saturating_mul(4).max(32);
                        if order.len() > probe.saturating_mul(4) && q.k > 0 {
                            let cmp = |a: &(f32, u32), b: &(f32, u32)| {
                                b.0.total_cmp(&a.0).then(a.1.cmp(&b.1))
                            };
                            order.select_nth_unstable_by(probe - 1, cmp);
                            let mut probed = TopK::new(q.k, probe);
                            for &(_, slot) in &order[..probe] {
                                let slot = ix(slot);
                                let Some((_, group)) = bounds.group(slot) else {
                                    continue;
                                };
                                let best = best_in_group(pq, rows, dims, group, s, step_scores);
                                work.step_rows_scored += off(group.end - group.first);
                                work.trajectories_visited += 1;
                                if let Some((sc, step)) = best {
                                    // Kept, so the visit below does not score the rows again.
                                    best_step[slot] = Some((sc, step));
                                    probed.offer(
                                        clamp_f32(traj_score(slot) + f64::from(sc)),
                                        off(slot),
                                    );
                                }
                            }
                            floor = probed.kth().unwrap_or(f32::NEG_INFINITY);
                        }
                    }
                    let step_max = step_max.unwrap_or(f32::INFINITY);
                    let needed = |slot: usize| {
                        pass[slot] && clamp_f32(traj_upper(slot) + f64::from(step_max)) >= floor
                    };
                    order.clear();
                    let read = bounds.upper_all(s.def.metric, pq, qn, needed, uppers);
                    work.step_bounds_read = off(read);
                    for slot in (0..n).filter(|&slot| needed(slot)) {
                        if let Some((g, _)) = bounds.group(slot) {
                            // Rounding to f32 is monotonic, so this bounds the f32 score of
                            // every step of the slot.
                            order.push((
                                clamp_f32(traj_upper(slot) + f64::from(uppers[g])),
                                u32::try_from(slot).unwrap_or(u32::MAX),
                            ));
                        }
                    }
                    in_descending_order(order, q.k, |upper, slot| {
                        if top.kth().is_some_and(|kth| upper < kth) {
                            return false;
                        }
                        let slot = ix(slot);
                        let Some((_, group)) = bounds.group(slot) else {
                            return true;
                        };
                        let best = match best_step[slot] {
                            // Scored while finding the floor.
                            Some(best) => Some(best),
                            None => {
                                work.trajectories_visited += 1;
                                work.step_rows_scored += off(group.end - group.first);
                                best_in_group(pq, rows, dims, group, s, step_scores)
                            }
                        };
                        if let Some((sc, step)) = best {
                            best_step[slot] = Some((sc, step));
                            top.offer(clamp_f32(traj_score(slot) + f64::from(sc)), off(slot));
                        }
                        true
                    });
                } else {
                    // Full scan: every kept step row.
                    scan_prepared(
                        pq,
                        rows,
                        dims,
                        |r| pass[ix(s.row_meta[r].slot)],
                        |r, sc| {
                            let m = s.row_meta[r];
                            let slot = ix(m.slot);
                            work.step_rows_scored += 1;
                            if best_step[slot].is_none_or(|(b, _)| sc > b) {
                                best_step[slot] = Some((sc, m.step));
                            }
                        },
                    );
                    let visited = best_step.iter().filter(|b| b.is_some()).count();
                    work.trajectories_visited = off(visited);
                    for (slot, best) in best_step.iter().enumerate() {
                        if let Some((sc, _)) = best {
                            top.offer(clamp_f32(traj_score(slot) + f64::from(*sc)), off(slot));
                        }
                    }
                }
            }
        }
        drop(step_bounds);
        let mut out = Vec::new();
        for (score, slot) in top.into_sorted() {
            let slot = usize::try_from(slot).unwrap_or(usize::MAX);
            let traj = clamp_f32(traj_score(slot));
            out.push(self.example(&st, slot, score, traj, best_step[slot], q.window)?);
        }
        Ok((out, work))
    }
}

impl Database {
    /// The retrieval result for `slot`: its record decoded without keys, cut to `window`
    /// steps either side of its best step `best` (score, step; the whole trajectory when
    /// None). Shared by the exact and the approximate retrieval.
    pub(crate) fn example(
        &self,
        st: &State,
        slot: usize,
        score: f32,
        traj_score: f32,
        best: Option<(f32, u32)>,
        window: usize,
    ) -> Result<Example> {
        let mut t = self.read_trajectory_as(st, slot, false)?;
        let nsteps = t.steps.len();
        let (start, end, matched, step_score) = match best {
            Some((s, m)) => {
                let m_us = ix(m);
                let start = m_us.saturating_sub(window);
                let end = m_us.saturating_add(window).saturating_add(1).min(nsteps);
                (start, end, Some(m), Some(s))
            }
            None => (0, nsteps, None, None),
        };
        t.steps.truncate(end);
        t.steps.drain(..start.min(end));
        Ok(Example {
            id: st.trajs.id(slot),
            score,
            traj_score,
            step_score,
            matched_step: matched,
            window: (
                u32::try_from(start).unwrap_or(u32::MAX),
                u32::try_from(end).unwrap_or(u32::MAX),
            ),
            trajectory: t,
        })
    }
}

/// The best step of one trajectory's group of rows in step space `s`: (score, step), the
/// first on ties; None for an empty group. The rows are contiguous, so they are scored in
/// one blocked pass (into `scratch`).
fn best_in_group(
    pq: &Prepared,
    rows: &[f32],
    dims: usize,
    group: Group,
    s: &Space,
    scratch: &mut Vec<f32>,
) -> Option<(f32, u32)> {
    scratch.clear();
    scratch.resize(group.end - group.first, 0.0);
    pq.score_rows(&rows[group.first * dims..group.end * dims], dims, scratch);
    let mut best: Option<(f32, u32)> = None;
    for (r, &sc) in (group.first..group.end).zip(scratch.iter()) {
        if best.is_none_or(|(b, _)| sc > b) {
            best = Some((sc, s.row_meta[r].step));
        }
    }
    best
}

/// Calls `visit(upper, slot)` on the entries of `order` in descending `upper` (ties: lower
/// slot first) until it returns false: exactly the order of a full sort, but only the part
/// visited is sorted (a chunk at a time, picked by `select_nth_unstable_by`), since a pruned
/// visit usually stops after a few times `k` entries.
fn in_descending_order(
    order: &mut [(f32, u32)],
    k: usize,
    mut visit: impl FnMut(f32, u32) -> bool,
) {
    let cmp = |a: &(f32, u32), b: &(f32, u32)| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1));
    let chunk = k.saturating_mul(8).max(1024);
    let mut rest = order;
    while !rest.is_empty() {
        let take = chunk.min(rest.len());
        if take < rest.len() {
            rest.select_nth_unstable_by(take - 1, cmp);
        }
        let (head, tail) = rest.split_at_mut(take);
        head.sort_unstable_by(cmp);
        for &(upper, slot) in head.iter() {
            if !visit(upper, slot) {
                return;
            }
        }
        rest = tail;
    }
}

/// How much work one [`Database::retrieve_with_work`] call did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct RetrieveWork {
    /// Step-key rows scored (a full scan scores every step row of every qualifying
    /// trajectory; the pruned visit scores only the rows of the trajectories it visits).
    pub step_rows_scored: u64,
    /// Trajectories whose step rows were scored.
    pub trajectories_visited: u64,
    /// Trajectories whose step-key bound (the centroid of their step keys, module
    /// `index::bounds`) was read: the pruned visit reads it only for trajectories that could
    /// still reach the k-th best with the largest step score (cosine spaces); a full scan
    /// reads none.
    pub step_bounds_read: u64,
}

/// Per-call buffers of [`Database::retrieve`], kept per thread so a call allocates nothing
/// proportional to the collection once the buffers have grown.
#[derive(Default)]
struct Scratch {
    pass: Vec<bool>,
    sum: Vec<f64>,
    has_any: Vec<bool>,
    scores: Vec<f32>,
    best_step: Vec<Option<(f32, u32)>>,
    order: Vec<(f32, u32)>,
    step_scores: Vec<f32>,
    uppers: Vec<f32>,
    lows: Vec<f32>,
    key_rows: Vec<u32>,
}

thread_local! {
    static SCRATCH: std::cell::RefCell<Scratch> = std::cell::RefCell::new(Scratch::default());
}

/// Sets `v` to `n` copies of `x`, reusing its allocation.
fn reset<T: Clone>(v: &mut Vec<T>, n: usize, x: T) {
    v.clear();
    v.resize(n, x);
}

#[cfg(test)]
mod tests {
    use super::in_descending_order;

    #[test]
    fn visiting_in_chunks_gives_the_full_sort_order_with_ties_by_slot() {
        let mut seed = 1u64;
        for n in [0usize, 1, 5, 1023, 1024, 1025, 5000] {
            let mut order: Vec<(f32, u32)> = (0..n)
                .map(|i| {
                    seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
                    // Few distinct values, so ties are common.
                    (((seed >> 33) % 50) as f32 / 7.0, i as u32)
                })
                .collect();
            let mut want = order.clone();
            want.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
            for k in [1usize, 10, 200] {
                let mut got = Vec::new();
                in_descending_order(&mut order, k, |u, s| {
                    got.push((u, s));
                    true
                });
                assert_eq!(got, want, "n {n} k {k}");
                // Stopping early visits a prefix of the same order.
                let mut first = Vec::new();
                in_descending_order(&mut order, k, |u, s| {
                    first.push((u, s));
                    first.len() < 1500
                });
                assert_eq!(first[..], want[..first.len()], "n {n} k {k}");
            }
        }
    }
}
