//! Approximate search over a space's graph index (module `graph`): `search_approx`, the
//! approximate mode of the paper's retrieve, and building, dropping and inspecting a graph.

use crate::db::{Database, Space, State};
use crate::error::{Error, Result};
use crate::format::codec::{ix, off};
use crate::format::record::Level;
use crate::format::record::Metric;
use crate::index::graph::{with_visited, Graph, GraphParams, GraphStatus, RowScore};
use crate::index::kernels::{scan_prepared, Prepared};
use crate::index::quant::{self, WalkQuery};
use crate::index::search::{
    check_has_key, check_query, hits, space_id, top_rows, Compiled, Example, Filter, Hit,
    RetrieveQuery, TopK,
};
use crate::index::sidecar;
use crate::index::simd::prefetch;
use crate::Options;

/// Rows a search inserts into a graph that is behind its space (the rest of the new rows are
/// scored exactly), so that no single search pays for a whole build.
pub const CATCHUP_PER_SEARCH: usize = 256;

/// A read-only handle's searches insert rows into a graph only while it is at most this
/// many rows (or a sixteenth of the space, when more) behind: what such a handle inserts is
/// lost when it closes, so it catches up the rows appended since the writer last saved the
/// graph, not a whole build. A graph further behind (one discarded as damaged or stale
/// starts empty) leaves its rows to the exact scan until the writer rebuilds it
/// (`build_graph`): a search of an emptied graph is then an exact search
/// ([`SearchPath::NoGraph`]), not a scan of most rows plus 256 insertions.
pub const READ_ONLY_CATCHUP_ROWS: usize = 16 * CATCHUP_PER_SEARCH;

/// Whether a read-only handle's searches insert rows into a graph of `nodes` nodes over a
/// space of `rows` rows ([`READ_ONLY_CATCHUP_ROWS`]).
pub(crate) fn read_only_catches_up(rows: usize, nodes: usize) -> bool {
    rows.saturating_sub(nodes) <= READ_ONLY_CATCHUP_ROWS.max(rows / 16)
}

/// Rows sampled to estimate how many rows a filter passes.
const SAMPLE: usize = 256;

/// Below this fraction of rows passing the filter (1 in 50), `search_approx` scans exactly:
/// the walk would visit most of the graph to find k passing rows.
const SELECTIVE_ONE_IN: usize = 50;

/// From a beam width of a quarter of the rows up, `search_approx` scans exactly: a walk that
/// wide scores about as many rows as the scan does, and only the scan is sure to find every
/// row (a row unlike every other, such as a key opposite a cluster, can be out of a walk's
/// reach at any width). So a beam of at least the row count always gives the exact answer.
const WIDE_BEAM_ONE_IN: usize = 4;

/// How many times [`Database::retrieve_approx`] doubles `ef` when its candidates cannot be
/// shown to hold the top k, before the exact retrieve answers.
pub const RETRIEVE_WIDENINGS: u32 = 1;

/// Which way a search (or one key space of a retrieve) went: through the graph index, or
/// the exact scan and why. Returned by [`Database::search_approx_path`],
/// [`Database::search_mode`] and [`Database::retrieve_mode`]; [`name`](Self::name) gives a
/// stable short name (for JSON, the CLI and Python), `Display` a sentence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SearchPath {
    /// The graph walk, with rows past the graph scored exactly and merged.
    Graph,
    /// The exact scan: the space has no graph (or it is not usable yet).
    NoGraph,
    /// The exact scan: the filter passes too few rows for the walk (sampled).
    SelectiveFilter,
    /// The exact scan: the walk found fewer than k passing rows.
    Short,
    /// The exact scan: [`SearchMode::Auto`](crate::SearchMode::Auto) and the space has a
    /// graph but fewer rows than [`Options::exact_below_rows`](crate::Options::exact_below_rows).
    BelowThreshold,
    /// The exact scan: the caller asked for it ([`SearchMode::Exact`](crate::SearchMode::Exact)).
    Requested,
    /// The exact scan: the beam width (`ef`, raised to `k` when `k` is larger) is at least
    /// a quarter of the space's rows, where the walk would cost about what the scan costs.
    WideBeam,
    /// A retrieve only: the exact retrieve answered, because the candidates the graphs gave,
    /// with `ef` widened [`RETRIEVE_WIDENINGS`] times, could not be shown to hold the top k
    /// ([`Database::retrieve_approx`]: the key spaces' scores disagree, as for independent
    /// keys).
    CandidatesShort,
}

/// The former name of [`SearchPath`] (from before the automatic choice between the scan and
/// the graph added exact paths that are not fallbacks of an approximate search), kept so
/// that code naming it still compiles.
pub type ApproxPath = SearchPath;

/// `(key space, path)` of each key space of a retrieve, in query order.
pub(crate) type SpacePaths = Vec<(String, SearchPath)>;

impl SearchPath {
    /// True for [`SearchPath::Graph`]: the answer came from the graph walk (approximate
    /// in which rows are found; every score exact).
    pub fn is_graph(self) -> bool {
        self == SearchPath::Graph
    }

    /// A stable short name: `graph`, `exact_no_graph`, `exact_selective_filter`,
    /// `exact_short`, `exact_wide_beam`, `exact_below_threshold`, `exact_requested` or (a
    /// retrieve) `exact_candidates_short`.
    pub fn name(self) -> &'static str {
        match self {
            SearchPath::Graph => "graph",
            SearchPath::NoGraph => "exact_no_graph",
            SearchPath::SelectiveFilter => "exact_selective_filter",
            SearchPath::Short => "exact_short",
            SearchPath::BelowThreshold => "exact_below_threshold",
            SearchPath::Requested => "exact_requested",
            SearchPath::WideBeam => "exact_wide_beam",
            SearchPath::CandidatesShort => "exact_candidates_short",
        }
    }
}

impl std::fmt::Display for SearchPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SearchPath::Graph => "graph index",
            SearchPath::NoGraph => "exact scan (no graph index)",
            SearchPath::SelectiveFilter => {
                "exact scan (the filter passes too few rows for the graph walk)"
            }
            SearchPath::Short => "exact scan (the graph walk found fewer than k passing rows)",
            SearchPath::BelowThreshold => "exact scan (fewer rows than the exact-below threshold)",
            SearchPath::Requested => "exact scan (asked for)",
            SearchPath::WideBeam => {
                "exact scan (the beam, ef or k when k is larger, is a quarter of the rows or wider)"
            }
            SearchPath::CandidatesShort => {
                "exact retrieve (the graphs' candidates, with ef widened, could not be shown to hold the top k)"
            }
        })
    }
}

impl Database {
    /// Builds (or catches up) the graph index of key space `space` with `params`, writes
    /// its file `graph-N.idx` (and, for a cosine or dot space of at least 4,096 rows, the
    /// i8 copy its searches walk on, `quant-N.idx`) and returns its status. From then on
    /// the graph is kept: rows
    /// appended later are inserted by searches ([`CATCHUP_PER_SEARCH`] per call) or by the
    /// next `build_graph`, and the file is rewritten at checkpoints (sync, close) when the
    /// graph has grown by a sixteenth. Different parameters than the graph's rebuild it.
    /// The choice is kept in the graph file: deleting the file drops the graph.
    ///
    /// Cost: one insertion per row (a beam search of width `ef_construction` and a prune),
    /// done in chunks so that appends can proceed in between. Errors: unknown space,
    /// parameters out of range, a read-only handle, I/O writing the file.
    pub fn build_graph(&self, space: &str, params: GraphParams) -> Result<GraphStatus> {
        self.ensure_checked()?;
        if self.opts.read_only {
            return Err(Error::ReadOnly);
        }
        params.check()?;
        loop {
            let st = self.state.read();
            let (_, s) = st.space(space)?;
            let mut slot = s.graph.write();
            if slot.as_ref().is_none_or(|g| g.params != params) {
                *slot = Some(Graph::new(&s.def, params));
            }
            let Some(g) = slot.as_mut() else { break };
            // No graph is derived from rows that fail their checkpoint's checksum.
            let rows = s.rows.all_checked()?;
            // An explicit build checks the file's adjacency checksum too (searches trust it).
            g.ensure_checked(rows, s.rows.known_crc(), true);
            if g.catch_up(rows, 4096) == 0 {
                g.choose_entry(rows);
                break;
            }
        }
        {
            // The i8 copy the walk reads (cosine and dot spaces the quantised search
            // covers), made now so that the checkpoint below saves it (`quant-N.idx`) and
            // a later open maps it instead of quantising every row on its first search.
            let st = self.state.read();
            let (_, s) = st.space(space)?;
            let rows = s.rows.all();
            let dims = ix(s.def.dims);
            let n = rows.len() / dims.max(1);
            if self.opts.quantised_search && s.def.metric != Metric::L2 && n >= quant::MIN_ROWS {
                ensure_quant(&st, s, rows, dims, n);
            }
        }
        self.checkpoint_graphs(Some(space))?;
        self.graph_status(space)?
            .ok_or_else(|| Error::invalid(format!("space `{space}`"), "graph was dropped"))
    }

    /// Removes the graph index of `space` (its file too). Searches then scan exactly.
    pub fn drop_graph(&self, space: &str) -> Result<()> {
        if self.opts.read_only {
            return Err(Error::ReadOnly);
        }
        let _w = self.writer.lock();
        let st = self.state.read();
        let (id, s) = st.space(space)?;
        *s.graph.write() = None;
        let name = crate::index::graph::graph_file_name(id);
        self.backend
            .remove(&name)
            .map_err(|e| Error::io("remove", self.backend.path_of(&name), e))
    }

    /// Checks every key space's graph now rather than at its first search: its rows against
    /// the log's and its adjacency against its checksum, reading each graph file once (about
    /// 128 MB at 1M rows of degree 32). A graph that fails is dropped and rebuilt as at a
    /// search, and [`SpaceStats::graph_discarded`](crate::SpaceStats::graph_discarded) says
    /// why. `trajdb stats` calls it, so it names a damaged graph before any search has.
    pub fn check_graphs(&self) {
        let st = self.state.read();
        for s in &st.spaces {
            let mut slot = s.graph.write();
            if let Some(g) = slot.as_mut() {
                g.ensure_checked(s.rows.all(), s.rows.known_crc(), true);
            }
        }
    }

    /// The graph index of `space`, if it has one.
    pub fn graph_status(&self, space: &str) -> Result<Option<GraphStatus>> {
        let st = self.state.read();
        let (_, s) = st.space(space)?;
        let g = s.graph.read();
        Ok(g.as_ref().map(|g| g.status(s.rows.len())))
    }

    /// Why the graph file of `space` could not be used (damaged, another log's, covering rows
    /// the log no longer has), once a check found it; `None` when it is in use, not checked
    /// yet, or the space has no graph. The same text as
    /// [`SpaceStats::graph_discarded`](crate::SpaceStats::graph_discarded), without the
    /// cost of `stats`. Errors: unknown space.
    pub fn graph_discarded(&self, space: &str) -> Result<Option<String>> {
        let st = self.state.read();
        let (_, s) = st.space(space)?;
        let g = s.graph.read();
        Ok(g.as_ref().and_then(|g| g.discarded().map(str::to_owned)))
    }

    /// Syncs the log and key files, then writes the graph file of `space` (or of every space
    /// whose graph grew enough, with `None`), under the writer lock.
    fn checkpoint_graphs(&self, space: Option<&str>) -> Result<()> {
        let w = self.writer.lock();
        self.check_poison()?;
        self.sync_log_locked(&w)?;
        self.checkpoint_keys()?;
        self.save_search_bounds();
        if let Some(name) = space {
            let st = self.state.read();
            let (id, s) = st.space(name)?;
            let mut slot = s.graph.write();
            if let Some(g) = slot.as_mut() {
                g.persist(
                    self.backend.as_ref(),
                    id,
                    &s.def,
                    st.header.log_id,
                    s.rows.all(),
                )?;
            }
        }
        Ok(())
    }

    /// Approximate top-`k` rows of key space `space` by similarity to `query`, through the
    /// space's graph index, with `filter` applied during the walk.
    ///
    /// `ef` is the beam width (at least `k` is used): larger is slower and closer to exact.
    /// Every hit's score is the exact score (the same bits as [`search`](Self::search)); what
    /// is approximate is which rows are found. In cosine and dot spaces of at least 4,096
    /// rows (with [`Options::quantised_search`](crate::Options::quantised_search), the
    /// default) the walk is steered by the space's i8 copy (one byte per dimension, module
    /// `index::quant`), and of the `ef` rows it finds those whose proven upper bound reaches
    /// the k-th largest lower bound are rescored with the f32 kernel: the same top k as
    /// rescoring all `ef`. Rows appended after the graph was built are
    /// scored exactly and merged, so a new row is never missed. Deleted and filtered-out
    /// rows are walked through but never returned. The exact scan answers instead when the
    /// space has no graph, when a sample of rows says the filter passes fewer than 1 in 50,
    /// and when the walk finds fewer than `k` passing rows: so `k` hits come back whenever
    /// `k` rows pass.
    ///
    /// Errors: as [`search`](Self::search).
    pub fn search_approx(
        &self,
        space: &str,
        query: &[f32],
        k: usize,
        ef: usize,
        filter: &Filter,
    ) -> Result<Vec<Hit>> {
        self.search_approx_path(space, query, k, ef, filter)
            .map(|(h, _)| h)
    }

    /// [`search_approx`](Self::search_approx), also saying which way it went.
    pub fn search_approx_path(
        &self,
        space: &str,
        query: &[f32],
        k: usize,
        ef: usize,
        filter: &Filter,
    ) -> Result<(Vec<Hit>, SearchPath)> {
        self.ensure_checked()?;
        let st = self.state.read();
        let sid = check_query(&st, space, query, None)?;
        let s = &st.spaces[ix(sid)];
        let c = Compiled::new(&st, filter)?;
        let q = Prepared::new(s.def.metric, query);
        let (top, path) = approx_top(&st, s, &c, &q, k, ef, &self.opts);
        Ok((hits(&st, s, top), path))
    }

    /// The paper's retrieve (see [`retrieve`](Self::retrieve)) with candidates from the
    /// graph indexes: each trajectory key's `max(ef, 4 k)` nearest trajectories and the
    /// trajectories of the step key's `4 max(ef, 4 k)` nearest steps (by
    /// [`search_approx`](Self::search_approx), filter applied) are the candidates, and every
    /// candidate is then scored exactly as `retrieve` scores it (mean trajectory-key score,
    /// best step, window). A candidate without a key in a trajectory-key space gets that key's
    /// lowest score among the candidates (exact `retrieve`: among every qualifying
    /// trajectory). So the examples returned are a subset-exact ranking; recall against
    /// `retrieve` is measured in `tests/graph_index.rs` and `benches/peers/peers.py`.
    ///
    /// The candidates are kept only when they can be shown to hold the top k. Let `τ` be,
    /// for each key space, the lowest score among the rows its search kept (when it kept
    /// every qualifying row: the lowest candidate score for a trajectory key, nothing for the
    /// step key). A trajectory that is no candidate scores at most `τ` in every key space, as
    /// far as the walks found each space's best rows (a row a walk missed can score higher:
    /// that is the graph's approximation, the same as a search's), so it scores at most
    /// `T` = the mean of the trajectory keys' `τ` plus the step key's `τ`. When the k-th best
    /// candidate scores at least `T` (the threshold rule of Fagin, Lotem and Naor, "Optimal
    /// aggregation algorithms for middleware", PODS 2001), the candidates answer; otherwise
    /// `ef` is doubled and the walks run again, at most [`RETRIEVE_WIDENINGS`] times, after
    /// which the exact `retrieve` answers. Keys that agree (a task's goal and its steps) pass
    /// at the first round and cost what the walks cost; keys whose best trajectories differ
    /// (independent keys, where the first round's candidates could hold a quarter of the top
    /// k) get the exact answer at 1.0-1.7x the exact retrieve's time (the rounds before it;
    /// 100k x 10, docs/benchmarks.md, "Approximate retrieve").
    ///
    /// Errors: as `retrieve`.
    pub fn retrieve_approx(&self, q: &RetrieveQuery, ef: usize) -> Result<Vec<Example>> {
        self.retrieve_approx_paths(q, ef).map(|(ex, _, _)| ex)
    }

    /// [`retrieve_approx`](Self::retrieve_approx), also saying which way each key space's
    /// candidate search went (`(space, path)` for the trajectory keys in order, then the
    /// step key, of the last round) and whether the exact retrieve answered because the
    /// candidates of graph walks could not be shown to hold the top k.
    pub(crate) fn retrieve_approx_paths(
        &self,
        q: &RetrieveQuery,
        ef: usize,
    ) -> Result<(Vec<Example>, SpacePaths, bool)> {
        check_has_key(q)?;
        self.ensure_checked()?;
        let mut ef = ef.max(1);
        let mut round = 0;
        loop {
            let (examples, paths) = {
                let st = self.state.read();
                self.retrieve_round(&st, q, ef)?
            };
            if let Some(examples) = examples {
                return Ok((examples, paths, false));
            }
            // No graph walked (every space scanned exactly): the candidates were each space's
            // exact top rows and still fell short; the exact retrieve answers, reported by
            // the spaces' own paths.
            let walked = paths.iter().any(|(_, p)| p.is_graph());
            if !walked || round == RETRIEVE_WIDENINGS {
                return Ok((self.retrieve(q)?, paths, walked));
            }
            round += 1;
            ef = ef.saturating_mul(2);
        }
    }

    /// One round of [`retrieve_approx`](Self::retrieve_approx) at beam width `ef`: the
    /// examples when the candidates can be shown to hold the top k (else `None`), and each
    /// key space's path.
    fn retrieve_round(
        &self,
        st: &State,
        q: &RetrieveQuery,
        ef: usize,
    ) -> Result<(Option<Vec<Example>>, SpacePaths)> {
        let c = Compiled::new(st, &q.filter)?;
        let fetch = ef.max(q.k.saturating_mul(4)).max(1);
        // The candidate trajectories (slots) the walks found. Everything below is sized by
        // them, not by the database: a call costs the same at 10k and at 10M trajectories.
        let mut cands: Vec<usize> = Vec::new();
        let mut traj_spaces = Vec::new();
        let mut paths = Vec::new();
        // Per key space: the lowest score its search kept (`None`: it kept every qualifying
        // row), for the threshold rule.
        let mut traj_taus = Vec::new();
        let mut step_tau = None;
        for (name, v) in &q.keys {
            let sid = check_query(st, name, v, q.embedder.as_ref())?;
            let s = &st.spaces[ix(sid)];
            if s.def.level != Level::Trajectory {
                return Err(Error::invalid(
                    format!("retrieve keys `{name}`"),
                    "is a step-level key space; pass it as the step key",
                ));
            }
            let p = Prepared::new(s.def.metric, v);
            let (top, path) = approx_top(st, s, &c, &p, fetch, ef, &self.opts);
            paths.push((name.clone(), path));
            traj_taus.push(top.kth());
            for (_, r) in top.into_sorted() {
                if let Some(m) = s.row_meta.get(ix_row(r)) {
                    cands.push(ix(m.slot));
                }
            }
            traj_spaces.push((s, p));
        }
        let step = match &q.step_key {
            None => None,
            Some((name, v)) => {
                let sid = check_query(st, name, v, q.embedder.as_ref())?;
                let s = &st.spaces[ix(sid)];
                if s.def.level != Level::Step {
                    return Err(Error::invalid(
                        format!("retrieve step key `{name}`"),
                        "is a trajectory-level key space; pass it in keys",
                    ));
                }
                let p = Prepared::new(s.def.metric, v);
                let (top, path) =
                    approx_top(st, s, &c, &p, fetch.saturating_mul(4), ef, &self.opts);
                paths.push((name.clone(), path));
                step_tau = Some(top.kth());
                for (_, r) in top.into_sorted() {
                    if let Some(m) = s.row_meta.get(ix_row(r)) {
                        cands.push(ix(m.slot));
                    }
                }
                Some((s, p))
            }
        };
        cands.sort_unstable();
        cands.dedup();
        let nc = cands.len();
        // Exact scores of the candidates, key by key (NaN: no key); index `i` is candidate
        // `cands[i]`.
        let mut sum = vec![0f64; nc];
        let mut has_any = vec![false; nc];
        let mut nkeys = 0usize;
        let mut scores = vec![f32::NAN; nc];
        // Per trajectory key: the score a trajectory without that key gets (0 when no
        // candidate has the key: it adds nothing to any trajectory).
        let mut traj_worst = Vec::with_capacity(traj_spaces.len());
        for (s, p) in &traj_spaces {
            nkeys += 1;
            let dims = ix(s.def.dims);
            let rows = s.rows.all();
            scores.iter_mut().for_each(|x| *x = f32::NAN);
            for (i, &slot) in cands.iter().enumerate() {
                for r in rows_of_slot(s, slot) {
                    if let Some(row) = rows.get(r * dims..(r + 1) * dims) {
                        scores[i] = p.score(row);
                        has_any[i] = true;
                    }
                }
            }
            let worst = scores
                .iter()
                .copied()
                .filter(|x| !x.is_nan())
                .fold(f32::INFINITY, f32::min);
            if worst == f32::INFINITY {
                traj_worst.push(0.0);
                continue;
            }
            traj_worst.push(worst);
            for (acc, &x) in sum.iter_mut().zip(&scores) {
                *acc += f64::from(if x.is_nan() { worst } else { x });
            }
        }
        let traj_score = |i: usize| {
            if nkeys == 0 {
                0.0
            } else {
                sum[i] / nkeys as f64
            }
        };
        let mut best_step: Vec<Option<(f32, u32)>> = vec![None; nc];
        let mut top = TopK::new(q.k, nc);
        match &step {
            None => {
                for (i, &slot) in cands.iter().enumerate() {
                    if nkeys == 0 || has_any[i] {
                        top.offer(clamp_f32(traj_score(i)), off(slot));
                    }
                }
            }
            Some((s, p)) => {
                let dims = ix(s.def.dims);
                let rows = s.rows.all();
                for (i, &slot) in cands.iter().enumerate() {
                    for r in rows_of_slot(s, slot) {
                        let (Some(row), Some(m)) =
                            (rows.get(r * dims..(r + 1) * dims), s.row_meta.get(r))
                        else {
                            continue;
                        };
                        let sc = p.score(row);
                        if best_step[i].is_none_or(|(b, _)| sc > b) {
                            best_step[i] = Some((sc, m.step));
                        }
                    }
                    if let Some((sc, _)) = best_step[i] {
                        top.offer(clamp_f32(traj_score(i) + f64::from(sc)), off(slot));
                    }
                }
            }
        }
        // The threshold rule (see `retrieve_approx`): at most `bound` for a trajectory that is
        // no candidate. `None` from `kth`: the search kept every qualifying row.
        let mut bound = 0f64;
        for (t, w) in traj_taus.iter().zip(&traj_worst) {
            bound += f64::from(t.unwrap_or(*w)) / nkeys.max(1) as f64;
        }
        match step_tau {
            Some(Some(t)) => bound += f64::from(t),
            // Every qualifying step row is a candidate's: no other trajectory is offered.
            Some(None) => bound = f64::NEG_INFINITY,
            // Without a step key, a trajectory with no trajectory key is never offered; when
            // every search kept every qualifying row, no other trajectory is either.
            None if traj_taus.iter().all(Option::is_none) => bound = f64::NEG_INFINITY,
            None => {}
        }
        let proven = match top.kth() {
            Some(kth) => f64::from(kth) >= bound,
            None => bound == f64::NEG_INFINITY || q.k == 0,
        };
        if !proven {
            return Ok((None, paths));
        }
        let mut out = Vec::new();
        for (score, slot) in top.into_sorted() {
            let slot = ix_row(slot);
            // Present: every offer was a candidate's slot.
            let i = cands.binary_search(&slot).unwrap_or(0);
            let traj = clamp_f32(traj_score(i));
            out.push(self.example(st, slot, score, traj, best_step[i], q.window)?);
        }
        Ok((Some(out), paths))
    }
}

/// The rows of trajectory slot `slot` in space `s`. Rows are appended a trajectory at a time
/// with all of its keys (`State::apply` pushes them as it gives the trajectory the next
/// slot), so the slots of `row_meta` never decrease and a slot's rows are one run, found by
/// two binary searches: O(log rows), where a pass over `row_meta` costs a read of 8 bytes
/// per row of the space (8 MB at 1M step rows) on every call.
fn rows_of_slot(s: &Space, slot: usize) -> std::ops::Range<usize> {
    let Ok(slot) = u32::try_from(slot) else {
        return 0..0;
    };
    let meta: &[crate::db::RowMeta] = &s.row_meta;
    let a = meta.partition_point(|m| m.slot < slot);
    let b = a + meta[a..].partition_point(|m| m.slot <= slot);
    a..b
}

fn ix_row(r: u64) -> usize {
    usize::try_from(r).unwrap_or(usize::MAX)
}

/// `x` as the nearest finite f32.
fn clamp_f32(x: f64) -> f32 {
    x.clamp(f64::from(f32::MIN), f64::from(f32::MAX)) as f32
}

/// Makes the i8 copy of `s` cover at least the graph's `glen` rows: loaded
/// from its saved file or extended from `rows`, as search does. False when rows were
/// appended between the locks and it still does not (the walk then reads the f32 rows).
fn ensure_quant(st: &State, s: &Space, rows: &[f32], dims: usize, glen: usize) -> bool {
    if s.quant.read().rows() >= glen {
        return true;
    }
    let mut w = s.quant.write();
    sidecar::prime_quant(s, space_id(st, s), &mut w);
    if w.rows() < glen {
        w.extend(rows, dims);
    }
    w.rows() >= glen
}

/// The exact top-`k` rows of `s` that pass `c`: what [`Database::search`] answers (its
/// quantised first pass and f32 rescore where the space has the i8 copy, else the f32 scan),
/// so a search that falls back from the graph costs what the exact search costs.
fn exact_top(
    st: &State,
    s: &Space,
    c: &Compiled<'_>,
    q: &Prepared,
    k: usize,
    opts: &Options,
) -> TopK {
    if k == 0 {
        return TopK::new(0, 0);
    }
    let all_pass = c.every_row_passes(st);
    top_rows(s, space_id(st, s), q, k, opts.quantised_search, |r| {
        all_pass || c.pass(st.trajs.view(ix(s.row_meta[r].slot)))
    })
}

/// The top-`k` rows of `s` for `q` through the graph (row indexes as orders), or exactly
/// when the graph cannot answer; see [`Database::search_approx`].
fn approx_top(
    st: &State,
    s: &Space,
    c: &Compiled<'_>,
    q: &Prepared,
    k: usize,
    ef: usize,
    opts: &Options,
) -> (TopK, SearchPath) {
    let (quantised, read_only) = (opts.quantised_search, opts.read_only);
    let rows = s.rows.all();
    let dims = ix(s.def.dims);
    let n = s.row_meta.len().min(rows.len() / dims.max(1));
    // Insert some pending rows unless another thread is inserting.
    if let Some(mut slot) = s.graph.try_write() {
        if let Some(g) = slot.as_mut() {
            // Once per handle: the rows it covers are the log's and its adjacency is the
            // one written (a damaged file would lower recall without a word otherwise).
            g.ensure_checked(rows, s.rows.known_crc(), true);
            if !read_only || read_only_catches_up(n, g.len()) {
                g.catch_up(&rows[..n * dims], CATCHUP_PER_SEARCH);
            }
        }
    }
    let slot = s.graph.read();
    let Some(g) = slot
        .as_ref()
        .filter(|g| g.is_checked() && g.len() > 0 && g.len() <= n)
    else {
        return (exact_top(st, s, c, q, k, opts), SearchPath::NoGraph);
    };
    // Every row passes an empty filter when nothing is deleted: the walk then skips the
    // trajectory lookup per node (a cache miss per node otherwise).
    let all_pass = c.every_row_passes(st);
    let pass_row = |r: usize| all_pass || c.pass(st.trajs.view(ix(s.row_meta[r].slot)));
    let sample = SAMPLE.min(n);
    let passing = if all_pass {
        sample
    } else {
        (0..sample).filter(|&i| pass_row(i * n / sample)).count()
    };
    if passing * SELECTIVE_ONE_IN < sample {
        return (exact_top(st, s, c, q, k, opts), SearchPath::SelectiveFilter);
    }
    let ef = ef.max(k);
    if ef.saturating_mul(WIDE_BEAM_ONE_IN) >= n {
        return (exact_top(st, s, c, q, k, opts), SearchPath::WideBeam);
    }
    if k == 0 {
        // Nothing to find: the path is the one a search for rows would take.
        return (TopK::new(0, 0), SearchPath::Graph);
    }
    let cap = (n / 2).max(ef.saturating_mul(64));
    let glen = g.len();
    let mut top = TopK::new(k, n);
    // Cosine and dot spaces with the i8 copy walk on its codes (a quarter of the bytes per
    // node), then rescore in f32 only the rows found that can be in their top k: every
    // score returned is the exact one, what the codes decide is only which rows are found.
    let on_codes = quantised
        && s.def.metric != Metric::L2
        && n >= quant::MIN_ROWS
        && ensure_quant(st, s, rows, dims, glen);
    let qr = on_codes.then(|| s.quant.read());
    match qr
        .as_ref()
        .and_then(|qr| WalkQuery::new(qr, s.def.metric, q.vector()))
    {
        Some(wq) => {
            let w = with_visited(|v| g.walk(&wq, ef, cap, v, pass_row, None));
            // A row whose upper bound is below the k-th largest lower bound among the rows
            // found cannot be in their exact top k (module `quant`); the others are
            // rescored, which gives the same top k as rescoring every row found.
            let bounds: Vec<(f32, f32, usize)> = w
                .found
                .iter()
                .filter_map(|&(_, id)| {
                    let r = ix_row(u64::from(id));
                    wq.bounds(r).map(|(lo, hi)| (lo, hi, r))
                })
                .collect();
            let mut lows: Vec<f32> = bounds.iter().map(|b| b.0).collect();
            let threshold = if lows.len() >= k {
                let (_, kth, _) = lows.select_nth_unstable_by(k - 1, |a, b| b.total_cmp(a));
                *kth
            } else {
                f32::NEG_INFINITY
            };
            let rescore: Vec<(usize, &[f32])> = bounds
                .iter()
                .filter(|b| b.1 >= threshold)
                .filter_map(|b| Some((b.2, rows.get(b.2 * dims..(b.2 + 1) * dims)?)))
                .collect();
            // The rows to rescore are scattered: start loading them all first.
            for &(_, row) in &rescore {
                prefetch(row);
            }
            for &(r, row) in &rescore {
                top.offer(q.score(row), off(r));
            }
        }
        None => {
            let sc = RowScore { rows, dims, q };
            let w = with_visited(|v| g.walk(&sc, ef, cap, v, pass_row, None));
            for &(score, id) in &w.found {
                top.offer(score, u64::from(id));
            }
        }
    }
    drop(qr);
    // Rows past the graph: scored exactly.
    scan_prepared(
        q,
        &rows[glen * dims..n * dims],
        dims,
        |r| pass_row(glen + r),
        |r, score| top.offer(score, off(glen + r)),
    );
    if top.kth().is_none() {
        return (exact_top(st, s, c, q, k, opts), SearchPath::Short);
    }
    (top, SearchPath::Graph)
}
