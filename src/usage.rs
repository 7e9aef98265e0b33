//! Episodes, retrieval logs and per-trajectory usage counters, with the exemplar utility
//! Q(t) = sum_i o_i f_i(t) / sum_i f_i(t) over the labelled episodes i that retrieved t.
//! Rebuilt from the log's episode records on open.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;

use crate::format::record::RetrievalEvent;

/// Usage counters of one trajectory.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Utility {
    /// Times retrieved, over all episodes: sum of f_i(t).
    pub retrievals: u64,
    /// Episodes that retrieved it at least once.
    pub episodes: u64,
    /// Retrievals in episodes whose outcome is known: sum of f_i(t) over labelled i.
    pub labelled_retrievals: u64,
    /// Retrievals in successful episodes: sum of o_i f_i(t).
    pub success_retrievals: u64,
}

impl Utility {
    /// Q(t), or `None` while no episode that retrieved it has an outcome.
    pub fn q(&self) -> Option<f64> {
        (self.labelled_retrievals > 0)
            .then(|| self.success_retrievals as f64 / self.labelled_retrievals as f64)
    }
}

/// One episode: its outcome and what it retrieved.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Episode {
    /// Episode id.
    pub id: u64,
    /// When it began, ms since the epoch.
    pub created_ms: i64,
    /// `Some(true)` success, `Some(false)` failure, `None` not known yet.
    pub outcome: Option<bool>,
    /// Every retrieval logged, in order.
    pub events: Vec<RetrievalEvent>,
}

impl Episode {
    /// f_i(t) for every trajectory t this episode retrieved, by id.
    pub fn counts(&self) -> BTreeMap<u64, u64> {
        let mut m = BTreeMap::new();
        for e in &self.events {
            *m.entry(e.id).or_insert(0) += 1;
        }
        m
    }
}

/// All episodes and the counters derived from them.
#[derive(Debug, Default)]
pub(crate) struct Usage {
    pub(crate) episodes: BTreeMap<u64, Episode>,
    pub(crate) counters: HashMap<u64, Utility>,
    pub(crate) next_episode: u64,
}

impl Usage {
    pub(crate) fn begin(&mut self, id: u64, created_ms: i64) {
        self.episodes.insert(
            id,
            Episode {
                id,
                created_ms,
                outcome: None,
                events: Vec::new(),
            },
        );
        self.next_episode = self.next_episode.max(id.saturating_add(1));
    }

    pub(crate) fn log(&mut self, episode: u64, events: &[RetrievalEvent]) {
        let Some(ep) = self.episodes.get_mut(&episode) else {
            return;
        };
        for e in events {
            let first = !ep.events.iter().any(|x| x.id == e.id);
            ep.events.push(*e);
            let c = self.counters.entry(e.id).or_default();
            c.retrievals += 1;
            if first {
                c.episodes += 1;
            }
            if let Some(o) = ep.outcome {
                c.labelled_retrievals += 1;
                c.success_retrievals += u64::from(o);
            }
        }
    }

    /// Drops every retrieval of trajectory `id` (its id is given to a new trajectory).
    pub(crate) fn forget(&mut self, id: u64) {
        if self.counters.remove(&id).is_some() {
            for ep in self.episodes.values_mut() {
                ep.events.retain(|e| e.id != id);
            }
        }
    }

    pub(crate) fn set_outcome(&mut self, episode: u64, outcome: Option<bool>) {
        let Some(ep) = self.episodes.get_mut(&episode) else {
            return;
        };
        let old = ep.outcome;
        ep.outcome = outcome;
        for (id, f) in ep.counts() {
            let c = self.counters.entry(id).or_default();
            if let Some(o) = old {
                c.labelled_retrievals -= f;
                c.success_retrievals -= f * u64::from(o);
            }
            if let Some(o) = outcome {
                c.labelled_retrievals += f;
                c.success_retrievals += f * u64::from(o);
            }
        }
    }
}
