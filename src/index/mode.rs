//! The per-space choice between the exact scan and the graph walk: [`SearchMode`] and the
//! entry points [`Database::search_mode`] and [`Database::retrieve_mode`] that take it.
//!
//! The rule (issue 15): a key space is answered through its graph index when it has one and
//! holds at least [`Options::exact_below_rows`](crate::Options::exact_below_rows) rows
//! (default [`DEFAULT_EXACT_BELOW_ROWS`]); below that the exact scan is fast and exact
//! (README "Speed": exact top-10 over 10k × 384 rows in 0.60 ms, 100k in 4.5 ms; it grows
//! linearly with the rows). A query can force either way. This follows the idea of a
//! full-scan threshold with a per-query `exact` override found in vector databases such as
//! Qdrant, counted here in rows rather than kilobytes because a key space has one fixed
//! dimension.

use crate::db::{Database, Space, State};
use crate::error::Result;
use crate::format::codec::off;
use crate::index::approx::SearchPath;
use crate::index::search::{Example, Filter, Hit, RetrieveQuery};

/// The default of [`Options::exact_below_rows`](crate::Options::exact_below_rows): key
/// spaces with fewer rows are scanned exactly under [`SearchMode::Auto`].
pub const DEFAULT_EXACT_BELOW_ROWS: u64 = 20_000;

/// How a search or retrieve picks between the exact scan and the graph index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum SearchMode {
    /// The graph walk when the key space has a graph index and at least
    /// [`Options::exact_below_rows`](crate::Options::exact_below_rows) rows stored
    /// ([`Database::search_approx`] then answers, with its own fallbacks to the scan);
    /// otherwise the exact scan ([`Database::search`]). For a retrieve, the graph only when
    /// every key space of the query (trajectory keys and step key) qualifies. The default.
    #[default]
    Auto,
    /// Always the exact scan ([`Database::search`], [`Database::retrieve`]).
    Exact,
    /// Always the graph walk when the space has a graph index
    /// ([`Database::search_approx`], [`Database::retrieve_approx`], with their fallbacks).
    Approx,
}

/// Which way a [`Database::retrieve_mode`] went.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RetrievePath {
    /// [`SearchPath::Graph`] when the candidates came from the graph indexes
    /// ([`Database::retrieve_approx`]); otherwise the reason the exact
    /// [`Database::retrieve`] answered: [`SearchPath::Requested`], or under
    /// [`SearchMode::Auto`] [`SearchPath::NoGraph`] / [`SearchPath::BelowThreshold`] for the
    /// first key space that did not qualify.
    pub path: SearchPath,
    /// The key space that made an automatic retrieve exact (`None` otherwise).
    pub decided_by: Option<String>,
    /// For an approximate retrieve, which way each key space's candidate search went:
    /// `(space, path)`, the trajectory keys in order, then the step key (a space can fall
    /// back to the scan on its own: no graph, selective filter, short walk). Empty for an
    /// exact retrieve.
    pub spaces: Vec<(String, SearchPath)>,
}

/// Whether [`SearchMode::Auto`] walks the graph of `s`: [`SearchPath::Graph`] when it has a
/// graph index this handle can walk and at least `threshold` rows stored, else the reason
/// it does not. A read-only handle cannot walk a graph that has no nodes and that it would
/// not catch up (one discarded as damaged: see
/// [`READ_ONLY_CATCHUP_ROWS`](crate::READ_ONLY_CATCHUP_ROWS)), so that is no graph to it.
pub(crate) fn auto_choice(s: &Space, threshold: u64, read_only: bool) -> SearchPath {
    let walkable = s.graph.read().as_ref().is_some_and(|g| {
        let n = s.row_meta.len();
        g.len() > 0 || !read_only || crate::index::approx::read_only_catches_up(n, 0)
    });
    if !walkable {
        SearchPath::NoGraph
    } else if off(s.row_meta.len()) < threshold {
        SearchPath::BelowThreshold
    } else {
        SearchPath::Graph
    }
}

/// [`auto_choice`] of key space `space` of `st`; an unknown space counts as qualifying (the
/// search that follows refuses it with its own error).
fn auto_choice_named(st: &State, space: &str, threshold: u64, read_only: bool) -> SearchPath {
    st.space(space).map_or(SearchPath::Graph, |(_, s)| {
        auto_choice(s, threshold, read_only)
    })
}

impl Database {
    /// Top-`k` rows of key space `space` by similarity to `query`, by the exact scan or the
    /// graph index as `mode` says, with the path that answered.
    ///
    /// - [`SearchMode::Exact`]: [`search`](Self::search); path [`SearchPath::Requested`].
    /// - [`SearchMode::Approx`]: [`search_approx_path`](Self::search_approx_path) with
    ///   beam width `ef` (its path: graph, or the scan with its reason).
    /// - [`SearchMode::Auto`]: as `Approx` when the space has a graph index and at least
    ///   [`Options::exact_below_rows`](crate::Options::exact_below_rows) rows stored (rows
    ///   of deleted trajectories count until compaction, as the scan reads them too), else
    ///   as `search` with path [`SearchPath::NoGraph`] or [`SearchPath::BelowThreshold`].
    ///
    /// Scores are exact on every path; only which rows the graph walk finds is
    /// approximate. `ef` is ignored by the exact scan. Errors: as [`search`](Self::search).
    pub fn search_mode(
        &self,
        space: &str,
        query: &[f32],
        k: usize,
        filter: &Filter,
        mode: SearchMode,
        ef: usize,
    ) -> Result<(Vec<Hit>, SearchPath)> {
        let exact = match mode {
            SearchMode::Exact => SearchPath::Requested,
            SearchMode::Approx => SearchPath::Graph,
            SearchMode::Auto => {
                let st = self.state.read();
                auto_choice_named(&st, space, self.opts.exact_below_rows, self.opts.read_only)
            }
        };
        if exact.is_graph() {
            self.search_approx_path(space, query, k, ef, filter)
        } else {
            Ok((self.search(space, query, k, filter)?, exact))
        }
    }

    /// The paper's retrieve by the exact scan ([`retrieve`](Self::retrieve)) or through the
    /// graph indexes ([`retrieve_approx`](Self::retrieve_approx), beam width `ef`) as
    /// `mode` says, with the path that answered.
    ///
    /// Under [`SearchMode::Auto`] the graph is used only when every key space of the query
    /// (each trajectory key and the step key) has a graph index and at least
    /// [`Options::exact_below_rows`](crate::Options::exact_below_rows) rows: one small or
    /// unindexed space makes the whole retrieve exact, since its candidates would come from
    /// a full scan anyway and the exact retrieve prunes better than a mix.
    /// [`RetrievePath::decided_by`] names that space.
    ///
    /// Errors: as [`retrieve`](Self::retrieve).
    pub fn retrieve_mode(
        &self,
        q: &RetrieveQuery,
        mode: SearchMode,
        ef: usize,
    ) -> Result<(Vec<Example>, RetrievePath)> {
        let (path, decided_by) = match mode {
            SearchMode::Exact => (SearchPath::Requested, None),
            SearchMode::Approx => (SearchPath::Graph, None),
            SearchMode::Auto => {
                let st = self.state.read();
                let threshold = self.opts.exact_below_rows;
                q.keys
                    .iter()
                    .chain(&q.step_key)
                    .map(|(name, _)| {
                        (
                            auto_choice_named(&st, name, threshold, self.opts.read_only),
                            name,
                        )
                    })
                    .find(|(p, _)| !p.is_graph())
                    .map_or((SearchPath::Graph, None), |(p, name)| {
                        (p, Some(name.clone()))
                    })
            }
        };
        if path.is_graph() {
            let (examples, spaces, widened_out) = self.retrieve_approx_paths(q, ef)?;
            // When no key space's candidates came from a graph, the call was an exact scan
            // of each: say so, naming the first space and its reason. When the graphs'
            // candidates could not be shown to hold the top k, the exact retrieve answered.
            let (path, decided_by) = match spaces.iter().find(|(_, p)| p.is_graph()) {
                Some(_) if widened_out => (SearchPath::CandidatesShort, None),
                Some(_) => (path, decided_by),
                None => spaces
                    .first()
                    .map_or((path, decided_by), |(name, p)| (*p, Some(name.clone()))),
            };
            Ok((
                examples,
                RetrievePath {
                    path,
                    decided_by,
                    spaces,
                },
            ))
        } else {
            Ok((
                self.retrieve(q)?,
                RetrievePath {
                    path,
                    decided_by,
                    spaces: Vec::new(),
                },
            ))
        }
    }

    /// Whether [`SearchMode::Auto`] would walk the graph of key space `space` now:
    /// [`SearchPath::Graph`], or [`SearchPath::NoGraph`] / [`SearchPath::BelowThreshold`].
    /// (The walk itself can still fall back to the scan for a selective filter or a short
    /// walk.) Errors: unknown space.
    pub fn auto_path(&self, space: &str) -> Result<SearchPath> {
        let st = self.state.read();
        let (_, s) = st.space(space)?;
        Ok(auto_choice(
            s,
            self.opts.exact_below_rows,
            self.opts.read_only,
        ))
    }
}
