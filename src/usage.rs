//! Episodes, retrieval logs and per-trajectory usage counters, with the exemplar utility
//! Q(t) = sum_i o_i f_i(t) / sum_i f_i(t) over the labelled episodes i that retrieved t.
//! Rebuilt from the log's episode records on open.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;

use crate::format::record::{Origin, RetrievalEvent};

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
    /// Where the episode was first logged: the origin id of that database and the
    /// episode's id there (for an episode begun here: this database's origin id and `id`;
    /// the origin id is 0 in a log written before origins).
    pub origin: Origin,
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
    /// Episodes merged from other databases: their origin to their id here.
    pub(crate) merged: HashMap<Origin, u64>,
}

impl Usage {
    /// Begins episode `id`; `origin` is where it was first logged, `merged` says it came
    /// from another database.
    pub(crate) fn begin(&mut self, id: u64, created_ms: i64, origin: Origin, merged: bool) {
        self.episodes.insert(
            id,
            Episode {
                id,
                created_ms,
                outcome: None,
                events: Vec::new(),
                origin,
            },
        );
        if merged {
            self.merged.insert(origin, id);
        }
        self.next_episode = self.next_episode.max(id.saturating_add(1));
    }

    /// The episode here whose origin is `origin`, if any.
    pub(crate) fn find(&self, origin: Origin) -> Option<u64> {
        if let Some(&id) = self.merged.get(&origin) {
            return Some(id);
        }
        self.episodes
            .get(&origin.id)
            .filter(|ep| ep.origin == origin)
            .map(|ep| ep.id)
    }

    pub(crate) fn log(&mut self, episode: u64, events: &[RetrievalEvent]) {
        let Some(ep) = self.episodes.get_mut(&episode) else {
            return;
        };
        // Trajectories this episode retrieved before, so each event is checked in O(1)
        // (a scan of the episode's events per event is quadratic in long episodes).
        let mut seen: std::collections::HashSet<u64> = ep.events.iter().map(|x| x.id).collect();
        for e in events {
            let first = seen.insert(e.id);
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
