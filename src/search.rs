//! Exact search: top-k over one key space with filters applied inside the scan, and the
//! multi-key, step-matched retrieval of the in-context-example method.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use serde::Serialize;

use crate::codec::{ix, off};
use crate::db::{Database, State, TrajMeta};
use crate::error::{Error, Result};
use crate::kernels::{check_vector, scan};
use crate::record::{EmbedderId, Level, ProvenanceKind, Trajectory, NO_STEP};

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
    /// Read the database as of this commit sequence number (None: now).
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
struct Compiled<'a> {
    f: &'a Filter,
    env: Option<Option<u32>>,
    task: Option<Option<u32>>,
    exclude: Vec<u64>,
}

impl<'a> Compiled<'a> {
    fn new(st: &State, f: &'a Filter) -> Self {
        let mut exclude = f.exclude.clone();
        exclude.sort_unstable();
        Compiled {
            f,
            env: f.env.as_ref().map(|e| st.name_ids.get(e).copied()),
            task: f.task.as_ref().map(|t| st.name_ids.get(t).copied()),
            exclude,
        }
    }

    #[inline]
    fn pass(&self, m: &TrajMeta) -> bool {
        if !m.visible(self.f.as_of) {
            return false;
        }
        if self.f.success_only && m.outcome.success != Some(true) {
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
struct TopK {
    k: usize,
    heap: BinaryHeap<Entry>,
}
impl TopK {
    /// Keeps the `k` best of at most `bound` offers: memory is sized by `min(k, bound)`, so a
    /// caller's `k` never sizes an allocation beyond what exists.
    fn new(k: usize, bound: usize) -> Self {
        TopK {
            k,
            heap: BinaryHeap::with_capacity(k.min(bound).saturating_add(1)),
        }
    }
    #[inline]
    fn offer(&mut self, score: f32, order: u64) {
        if self.heap.len() < self.k {
            self.heap.push(Entry { score, order });
        } else if let Some(top) = self.heap.peek() {
            if score > top.score {
                self.heap.pop();
                self.heap.push(Entry { score, order });
            }
        }
    }
    /// Best first.
    fn into_sorted(self) -> Vec<(f32, u64)> {
        let mut v: Vec<(f32, u64)> = self.heap.into_iter().map(|e| (e.score, e.order)).collect();
        v.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        v
    }
}

/// `x` as the nearest finite f32 (a ranking score never becomes infinite).
fn clamp_f32(x: f64) -> f32 {
    x.clamp(f64::from(f32::MIN), f64::from(f32::MAX)) as f32
}

fn check_query(st: &State, space: &str, v: &[f32], embedder: Option<&EmbedderId>) -> Result<u32> {
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
        let c = Compiled::new(&st, filter);
        let metric = s.def.metric;
        let dims = ix(s.def.dims);
        let mut top = TopK::new(k, s.row_meta.len());
        scan(
            metric,
            s.rows.all(),
            dims,
            query,
            |r| c.pass(&st.trajs[ix(s.row_meta[r].slot)]),
            |r, score| top.offer(score, off(r)),
        );
        Ok(top
            .into_sorted()
            .into_iter()
            .map(|(score, r)| {
                let meta = s.row_meta[usize::try_from(r).unwrap_or(usize::MAX)];
                Hit {
                    id: st.trajs[ix(meta.slot)].id,
                    step: (meta.step != NO_STEP).then_some(meta.step),
                    score,
                }
            })
            .collect())
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
        let c = Compiled::new(&st, filter);
        // Best (score, row) per trajectory slot; rows of one trajectory are contiguous.
        let mut best: Vec<(f32, usize)> = Vec::new();
        let mut last_slot = None;
        scan(
            s.def.metric,
            s.rows.all(),
            ix(s.def.dims),
            query,
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
        Ok(top
            .into_sorted()
            .into_iter()
            .map(|(score, r)| {
                let meta = s.row_meta[usize::try_from(r).unwrap_or(usize::MAX)];
                Hit {
                    id: st.trajs[ix(meta.slot)].id,
                    step: (meta.step != NO_STEP).then_some(meta.step),
                    score,
                }
            })
            .collect())
    }

    /// The multi-key, success-filtered, step-matched retrieval of the in-context-example method (README, "Quick start"),
    /// computed exactly: every qualifying trajectory is scored on every key.
    pub fn retrieve(&self, q: &RetrieveQuery) -> Result<Vec<Example>> {
        let st = self.state.read();
        let n = st.trajs.len();
        let c = Compiled::new(&st, &q.filter);
        let pass: Vec<bool> = st.trajs.iter().map(|m| c.pass(m)).collect();
        // Per key: one score per trajectory slot (NaN = no key).
        let mut sum = vec![0f64; n];
        let mut has_any = vec![false; n];
        let mut per_key: Vec<Vec<f32>> = Vec::with_capacity(q.keys.len());
        for (name, v) in &q.keys {
            let sid = check_query(&st, name, v, q.embedder.as_ref())?;
            let s = &st.spaces[ix(sid)];
            if s.def.level != Level::Trajectory {
                return Err(Error::invalid(
                    format!("retrieve keys `{name}`"),
                    "is a step-level key space; pass it as the step key",
                ));
            }
            let mut scores = vec![f32::NAN; n];
            let dims = ix(s.def.dims);
            scan(
                s.def.metric,
                s.rows.all(),
                dims,
                v,
                |r| pass[ix(s.row_meta[r].slot)],
                |r, score| {
                    let slot = ix(s.row_meta[r].slot);
                    scores[slot] = score;
                    has_any[slot] = true;
                },
            );
            per_key.push(scores);
        }
        for scores in &per_key {
            let worst = scores
                .iter()
                .copied()
                .filter(|x| !x.is_nan())
                .fold(f32::INFINITY, f32::min);
            if worst == f32::INFINITY {
                continue;
            }
            for (slot, x) in scores.iter().enumerate() {
                sum[slot] += f64::from(if x.is_nan() { worst } else { *x });
            }
        }
        let nkeys = per_key.len().max(1) as f64;
        let mut best_step: Vec<Option<(f32, u32)>> = vec![None; n];
        if let Some((name, v)) = &q.step_key {
            let sid = check_query(&st, name, v, q.embedder.as_ref())?;
            let s = &st.spaces[ix(sid)];
            if s.def.level != Level::Step {
                return Err(Error::invalid(
                    format!("retrieve step key `{name}`"),
                    "is a trajectory-level key space; pass it in keys",
                ));
            }
            let dims = ix(s.def.dims);
            scan(
                s.def.metric,
                s.rows.all(),
                dims,
                v,
                |r| pass[ix(s.row_meta[r].slot)],
                |r, sc| {
                    let m = s.row_meta[r];
                    let slot = ix(m.slot);
                    if best_step[slot].is_none_or(|(b, _)| sc > b) {
                        best_step[slot] = Some((sc, m.step));
                    }
                },
            );
        }
        let mut top = TopK::new(q.k, n);
        for slot in 0..n {
            if !pass[slot] {
                continue;
            }
            let traj = if per_key.is_empty() {
                0.0
            } else {
                sum[slot] / nkeys
            };
            // Both terms are finite f32 (the numeric contract); their sum may not be in f32.
            let score = match (&q.step_key, best_step[slot]) {
                (Some(_), Some((s, _))) => clamp_f32(traj + f64::from(s)),
                (Some(_), None) => continue,
                (None, _) => {
                    if !per_key.is_empty() && !has_any[slot] {
                        continue;
                    }
                    clamp_f32(traj)
                }
            };
            top.offer(score, off(slot));
        }
        let mut out = Vec::new();
        for (score, slot) in top.into_sorted() {
            let slot = usize::try_from(slot).unwrap_or(usize::MAX);
            let mut t = self.read_trajectory(&st, slot)?;
            t.keys.clear();
            t.step_keys.clear();
            let nsteps = t.steps.len();
            let traj_score = if per_key.is_empty() {
                0.0
            } else {
                clamp_f32(sum[slot] / nkeys)
            };
            let (start, end, matched, step_score) = match best_step[slot] {
                Some((s, m)) => {
                    let m_us = ix(m);
                    let start = m_us.saturating_sub(q.window);
                    let end = m_us.saturating_add(q.window).saturating_add(1).min(nsteps);
                    (start, end, Some(m), Some(s))
                }
                None => (0, nsteps, None, None),
            };
            t.steps = t.steps[start..end].to_vec();
            out.push(Example {
                id: st.trajs[slot].id,
                score,
                traj_score,
                step_score,
                matched_step: matched,
                window: (
                    u32::try_from(start).unwrap_or(u32::MAX),
                    u32::try_from(end).unwrap_or(u32::MAX),
                ),
                trajectory: t,
            });
        }
        Ok(out)
    }
}
