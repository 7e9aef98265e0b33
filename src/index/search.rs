//! Exact search: top-k over one key space with filters applied inside the scan, and the
//! multi-key, step-matched retrieval of the in-context-example method.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use serde::Serialize;

use crate::db::{Database, Space, State, TrajMeta};
use crate::error::{Error, Result};
use crate::format::codec::{ix, off};
use crate::format::record::{EmbedderId, Level, ProvenanceKind, Trajectory, NO_STEP};
use crate::index::kernels::{check_vector, scan_prepared, Prepared, BLOCK_ROWS};

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
            env: f.env.as_ref().map(|e| st.name_ids.get(e).copied()),
            task: f.task.as_ref().map(|t| st.name_ids.get(t).copied()),
            exclude,
        })
    }

    #[inline]
    pub(crate) fn pass(&self, m: &TrajMeta) -> bool {
        if !m.visible(self.f.as_of) {
            return false;
        }
        if self.f.success_only && m.outcome_at(self.f.as_of).success != Some(true) {
            return false;
        }
        if let Some(e) = self.env {
            if e != Some(m.env) {
                return false;
            }
        }
        if let Some(t) = self.task {
            if t != Some(m.task) {
                return false;
            }
        }
        if let Some(p) = self.f.provenance {
            if p != m.provenance {
                return false;
            }
        }
        self.exclude.is_empty() || self.exclude.binary_search(&m.id).is_err()
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
pub(crate) fn hits(st: &State, s: &Space, top: TopK) -> Vec<Hit> {
    top.into_sorted()
        .into_iter()
        .map(|(score, r)| {
            let meta = s.row_meta[usize::try_from(r).unwrap_or(usize::MAX)];
            Hit {
                id: st.trajs[ix(meta.slot)].id,
                step: (meta.step != NO_STEP).then_some(meta.step),
                score,
            }
        })
        .collect()
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
        let st = self.state.read();
        let sid = check_query(&st, space, query, embedder)?;
        let s = &st.spaces[ix(sid)];
        if k == 0 {
            return Ok(Vec::new());
        }
        let c = Compiled::new(&st, filter)?;
        let dims = ix(s.def.dims);
        let mut top = TopK::new(k, s.row_meta.len());
        scan_prepared(
            &Prepared::new(s.def.metric, query),
            s.rows.all(),
            dims,
            |r| c.pass(&st.trajs[ix(s.row_meta[r].slot)]),
            |r, score| top.offer(score, off(r)),
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
        let mut kept = [false; BLOCK_ROWS];
        let mut scores = [0f32; BLOCK_ROWS];
        for (b, block) in rows.chunks(BLOCK_ROWS * dims.max(1)).enumerate() {
            let base = b * BLOCK_ROWS;
            let m = block.len() / dims.max(1);
            let mut count = 0;
            for (i, kp) in kept[..m].iter_mut().enumerate() {
                *kp = c.pass(&st.trajs[ix(s.row_meta[base + i].slot)]);
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
            |r| c.pass(&st.trajs[ix(s.row_meta[r].slot)]),
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

    /// The multi-key, success-filtered, step-matched retrieval of the in-context-example
    /// method (README, "Quick start"), computed exactly: the result is the one that scoring
    /// every qualifying trajectory on every key gives (same ids, scores, matched steps and
    /// windows).
    ///
    /// With a step key, trajectories are visited in descending order of trajectory score
    /// plus an upper bound on their best step score (module `index::bounds`), and the visit
    /// stops when no unvisited trajectory can beat the k-th best; so most step rows are
    /// never read when the trajectory keys separate the candidates. Winners are decoded
    /// without their keys.
    ///
    /// Errors: unknown key space, wrong dimensions, non-finite query values, a key space of
    /// the wrong level, a mismatched embedder, and I/O or corruption reading the winners.
    pub fn retrieve(&self, q: &RetrieveQuery) -> Result<Vec<Example>> {
        self.retrieve_with_work(q).map(|(examples, _)| examples)
    }

    /// [`retrieve`](Self::retrieve), also saying how much work the call did.
    pub fn retrieve_with_work(&self, q: &RetrieveQuery) -> Result<(Vec<Example>, RetrieveWork)> {
        self.retrieve_scratch(q, true)
    }

    /// [`retrieve_with_work`](Self::retrieve_with_work) scoring every step row (no
    /// pruning), for benchmarks and tests that compare the two paths. Not part of the
    /// stable API.
    #[doc(hidden)]
    pub fn retrieve_exhaustive(&self, q: &RetrieveQuery) -> Result<(Vec<Example>, RetrieveWork)> {
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
        let st = self.state.read();
        let n = st.trajs.len();
        let mut work = RetrieveWork::default();
        let c = Compiled::new(&st, &q.filter)?;
        let Scratch {
            pass,
            sum,
            has_any,
            scores,
            best_step,
            order,
            step_scores,
            uppers,
        } = scratch;
        reset(pass, n, false);
        for (p, m) in pass.iter_mut().zip(&st.trajs) {
            *p = c.pass(m);
        }
        // Per key: each slot's score (NaN = no key); folded into `sum` key by key.
        reset(sum, n, 0.0);
        reset(has_any, n, false);
        let mut nkeys = 0usize;
        for (name, v) in &q.keys {
            let sid = check_query(&st, name, v, q.embedder.as_ref())?;
            let s = &st.spaces[ix(sid)];
            if s.def.level != Level::Trajectory {
                return Err(Error::invalid(
                    format!("retrieve keys `{name}`"),
                    "is a step-level key space; pass it as the step key",
                ));
            }
            nkeys += 1;
            reset(scores, n, f32::NAN);
            let dims = ix(s.def.dims);
            scan_prepared(
                &Prepared::new(s.def.metric, v),
                s.rows.all(),
                dims,
                |r| pass[ix(s.row_meta[r].slot)],
                |r, score| {
                    let slot = ix(s.row_meta[r].slot);
                    scores[slot] = score;
                    has_any[slot] = true;
                },
            );
            let worst = scores
                .iter()
                .copied()
                .filter(|x| !x.is_nan())
                .fold(f32::INFINITY, f32::min);
            if worst == f32::INFINITY {
                continue;
            }
            for (acc, x) in sum.iter_mut().zip(scores.iter()) {
                *acc += f64::from(if x.is_nan() { worst } else { *x });
            }
        }
        // Sums and means in f64: every term is a finite f32 (the numeric contract), their
        // sum may not be; the score is clamped into f32 once, at the end.
        let nkeys_f = nkeys.max(1) as f64;
        let traj_score = |slot: usize| {
            if nkeys == 0 {
                0.0
            } else {
                sum[slot] / nkeys_f
            }
        };
        let mut top = TopK::new(q.k, n);
        reset(best_step, n, None);
        match &q.step_key {
            None => {
                for slot in 0..n {
                    if pass[slot] && (nkeys == 0 || has_any[slot]) {
                        top.offer(clamp_f32(traj_score(slot)), off(slot));
                    }
                }
            }
            Some((name, v)) => {
                let sid = check_query(&st, name, v, q.embedder.as_ref())?;
                let s = &st.spaces[ix(sid)];
                if s.def.level != Level::Step {
                    return Err(Error::invalid(
                        format!("retrieve step key `{name}`"),
                        "is a trajectory-level key space; pass it in keys",
                    ));
                }
                let dims = ix(s.def.dims);
                let rows = s.rows.all();
                let pq = Prepared::new(s.def.metric, v);
                let slot_of_row = |r: usize| s.row_meta[r].slot;
                if prune && s.bounds.read().is_behind(rows.len() / dims.max(1)) {
                    s.bounds
                        .write()
                        .extend(s.def.metric, rows, dims, slot_of_row);
                }
                let bounds = s.bounds.read();
                if prune && bounds.usable && !bounds.is_behind(rows.len() / dims.max(1)) {
                    // Pruned visit: candidates by descending upper bound.
                    let qn = v
                        .iter()
                        .map(|&x| f64::from(x) * f64::from(x))
                        .sum::<f64>()
                        .sqrt();
                    order.clear();
                    bounds.upper_all(s.def.metric, &pq, qn, uppers);
                    for slot in (0..n).filter(|&slot| pass[slot]) {
                        if let Some((g, _)) = bounds.group(slot) {
                            let up = uppers[g];
                            // Rounding to f32 is monotonic, so this bounds the
                            // f32 score of every step of the slot.
                            order.push((
                                clamp_f32(traj_score(slot) + f64::from(up)),
                                u32::try_from(slot).unwrap_or(u32::MAX),
                            ));
                        }
                    }
                    order.sort_unstable_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
                    for &(upper, slot) in order.iter() {
                        if top.kth().is_some_and(|kth| upper < kth) {
                            break;
                        }
                        let slot = ix(slot);
                        let Some((_, group)) = bounds.group(slot) else {
                            continue;
                        };
                        work.trajectories_visited += 1;
                        let mut best: Option<(f32, u32)> = None;
                        // The group's rows are contiguous: scored in one blocked pass.
                        step_scores.clear();
                        step_scores.resize(group.end - group.first, 0.0);
                        pq.score_rows(
                            &rows[group.first * dims..group.end * dims],
                            dims,
                            step_scores,
                        );
                        for (r, &sc) in (group.first..group.end).zip(step_scores.iter()) {
                            if best.is_none_or(|(b, _)| sc > b) {
                                best = Some((sc, s.row_meta[r].step));
                            }
                        }
                        work.step_rows_scored += off(group.end - group.first);
                        if let Some((sc, step)) = best {
                            best_step[slot] = Some((sc, step));
                            top.offer(clamp_f32(traj_score(slot) + f64::from(sc)), off(slot));
                        }
                    }
                } else {
                    // Full scan: every kept step row.
                    scan_prepared(
                        &pq,
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
        let mut out = Vec::new();
        for (score, slot) in top.into_sorted() {
            let slot = usize::try_from(slot).unwrap_or(usize::MAX);
            let mut t = self.read_trajectory_as(&st, slot, false)?;
            let nsteps = t.steps.len();
            let (start, end, matched, step_score) = match best_step[slot] {
                Some((s, m)) => {
                    let m_us = ix(m);
                    let start = m_us.saturating_sub(q.window);
                    let end = m_us.saturating_add(q.window).saturating_add(1).min(nsteps);
                    (start, end, Some(m), Some(s))
                }
                None => (0, nsteps, None, None),
            };
            t.steps.truncate(end);
            t.steps.drain(..start.min(end));
            out.push(Example {
                id: st.trajs[slot].id,
                score,
                traj_score: clamp_f32(traj_score(slot)),
                step_score,
                matched_step: matched,
                window: (
                    u32::try_from(start).unwrap_or(u32::MAX),
                    u32::try_from(end).unwrap_or(u32::MAX),
                ),
                trajectory: t,
            });
        }
        Ok((out, work))
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
}

thread_local! {
    static SCRATCH: std::cell::RefCell<Scratch> = std::cell::RefCell::new(Scratch::default());
}

/// Sets `v` to `n` copies of `x`, reusing its allocation.
fn reset<T: Clone>(v: &mut Vec<T>, n: usize, x: T) {
    v.clear();
    v.resize(n, x);
}
