//! Merging databases: every trajectory and usage event of a source lands in the destination
//! exactly once, however often the merge is repeated or interrupted.
//!
//! Identity: every database has an origin id (a random u64 in its log header, see
//! `format-spec.md`, "Origins and merging"). A trajectory or episode is identified across
//! databases by its [`Origin`](crate::Origin): the origin id of the database it was first written to and
//! its id there. A merged trajectory's record carries that origin in its provenance, and a
//! merged episode begins with an EPISODE_MERGED record carrying its origin, so the mapping
//! from origins to ids here is part of the very commit that adds the data: there is no
//! separate bookkeeping that a crash could leave out of step.
//!
//! A merge is ordinary commits (one per trajectory, one per episode begun, one per batch of
//! retrievals, one per outcome), synced in batches. Killed at any point, the destination
//! holds whole commits; rerunning the merge compares the source with what is there and adds
//! the rest.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::db::{no_origin, Database, Durability, RESERVED_ID};
use crate::error::{Error, Result};
use crate::format::codec::{ix, off};
use crate::format::log::kind;
use crate::format::record::{self, EncKey, RetrievalEvent, SpaceDef, Stage, NO_STEP};

/// Commits written between two syncs of a merge (under [`Durability::SyncEachCommit`] and
/// [`Durability::GroupCommit`]; a [`Durability::Buffered`] merge is synced by the caller).
const SYNC_EVERY: u64 = 4096;

/// Retrieval events per RETRIEVALS record a merge writes (13 bytes each: well under
/// `MAX_PAYLOAD`).
const EVENTS_PER_RECORD: usize = 65_536;

/// What [`Database::merge_from`] added.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct MergeReport {
    /// Key spaces created here because a source had them.
    pub spaces: u64,
    /// Trajectories added.
    pub trajectories: u64,
    /// Source trajectories that were here already (merged before, or first written here).
    pub trajectories_present: u64,
    /// Outcomes of trajectories here changed to the source's (relabelled there since).
    pub trajectory_outcomes: u64,
    /// Episodes begun here.
    pub episodes: u64,
    /// Retrieval events added.
    pub retrievals: u64,
    /// Retrieval events not added because the trajectory they name is not here (it was
    /// deleted in the source before it could be merged).
    pub retrievals_skipped: u64,
    /// Episode outcomes set to the source's.
    pub episode_outcomes: u64,
    /// Commits written.
    pub commits: u64,
}

impl MergeReport {
    fn add(&mut self, o: &MergeReport) {
        self.spaces += o.spaces;
        self.trajectories += o.trajectories;
        self.trajectories_present += o.trajectories_present;
        self.trajectory_outcomes += o.trajectory_outcomes;
        self.episodes += o.episodes;
        self.retrievals += o.retrievals;
        self.retrievals_skipped += o.retrievals_skipped;
        self.episode_outcomes += o.episode_outcomes;
        self.commits += o.commits;
    }
}

/// A retrieval event's identity for counting: (trajectory id, step, stage).
type EventKey = (u64, u32, Stage);

fn event_key(e: &RetrievalEvent) -> EventKey {
    (e.id, e.step.unwrap_or(NO_STEP), e.stage)
}

impl Database {
    /// The directory of this database, for messages.
    pub(crate) fn dir(&self) -> PathBuf {
        self.log_path
            .parent()
            .map_or_else(|| self.log_path.clone(), Path::to_owned)
    }

    /// Checks that every source can be merged into this database, changing nothing: this
    /// handle is writable and every database has an origin id ([`Error::NoOrigin`]), and a
    /// key space of the same name in this database or in an earlier source has the same
    /// definition (level, dimensions, metric, element type, embedder), else
    /// [`Error::MergeIncompatible`] naming the source and the space.
    pub fn check_merge(&self, sources: &[&Database]) -> Result<()> {
        self.ensure_checked()?;
        if self.opts.read_only {
            return Err(Error::ReadOnly);
        }
        if self.origin().is_none() {
            return Err(no_origin(&self.log_path));
        }
        if let Some(src) = sources.iter().find(|s| std::ptr::eq(**s, self)) {
            return Err(Error::MergeIncompatible {
                source_db: src.dir(),
                what: "it is the destination handle itself".into(),
            });
        }
        check_spaces(self.spaces(), "this database", sources)
    }

    /// Checks that `sources` can be merged into one new database: the checks of
    /// [`check_merge`](Self::check_merge) without a destination, for a caller that creates
    /// the destination only once the sources are known to fit together.
    pub fn check_sources(sources: &[&Database]) -> Result<()> {
        check_spaces(Vec::new(), "", sources)
    }

    /// Merges `src` into this database: see [`merge_all`](Self::merge_all).
    pub fn merge_from(&self, src: &Database) -> Result<MergeReport> {
        self.merge_all(&[src])
    }

    /// Merges each source in turn into this database, after checking them all
    /// ([`check_merge`](Self::check_merge)) so that an incompatible one changes nothing.
    ///
    /// Every live trajectory of a source lands here exactly once, under a new id, with its
    /// origin in its provenance (`provenance.origin`) and its parent, when the parent is
    /// here, named by its id here; every episode of a source is begun here once (keeping its
    /// origin), gets the retrievals it has there that it lacks here (counted per trajectory,
    /// step and stage), and takes the source's outcome when that is known. A trajectory
    /// already here (merged before, from this source or through another database, or first
    /// written here) is not added again; when its outcome there differs it is relabelled.
    /// Repeating a merge adds nothing; merging a source that grew adds what is new.
    /// Deletions in a source are not carried over, and retrievals of a trajectory that was
    /// deleted in the source before it was merged are skipped (counted in the report).
    ///
    /// Commits are synced every 4096 commits and at the end (not at all under
    /// [`Durability::Buffered`]). A merge that fails or is killed leaves whole commits; run
    /// it again to complete it. Each source's state is read-locked while it is merged.
    pub fn merge_all(&self, sources: &[&Database]) -> Result<MergeReport> {
        self.ensure_checked()?;
        self.check_merge(sources)?;
        // Each source's state is read in whole: its checkpoint blocks are checked first.
        for src in sources {
            src.ensure_checked()?;
        }
        let _one_merge = self.merge_lock.lock();
        let mut total = MergeReport::default();
        for src in sources {
            let r = self.merge_one(src);
            // Whatever was written is synced before returning, error or not.
            let synced = self.merge_sync();
            total.add(&r?);
            synced?;
        }
        Ok(total)
    }

    fn merge_sync(&self) -> Result<()> {
        if self.opts.durability == Durability::Buffered {
            return Ok(());
        }
        self.sync()
    }

    fn merge_one(&self, src: &Database) -> Result<MergeReport> {
        let mut rep = MergeReport::default();
        let mut since_sync = 0u64;
        let mut tick = |rep: &mut MergeReport| -> Result<()> {
            rep.commits += 1;
            since_sync += 1;
            if since_sync >= SYNC_EVERY && self.opts.durability != Durability::Buffered {
                let w = self.writer.lock();
                self.sync_log_locked(&w)?;
                since_sync = 0;
            }
            Ok(())
        };
        for def in src.spaces() {
            if self.state.read().space(&def.name).is_err() {
                self.create_space(&def)?;
                rep.spaces += 1;
                tick(&mut rep)?;
            }
        }
        let sst = src.state.read();
        // Trajectories, in the source's commit order (a parent before what was made from it).
        for (slot, m) in sst.trajs.iter().enumerate() {
            if m.deleted_at.is_some() {
                continue;
            }
            let here = {
                let st = self.state.read();
                st.find_origin(m.origin)
                    .map(|d| st.trajs.at(d))
                    .map(|t| (t.id, t.created_ms, t.outcome))
            };
            match here {
                // The same trajectory (a source that reused a deleted trajectory's id has a
                // different one under the same origin: its creation time tells them apart).
                Some((id, created_ms, outcome)) if created_ms == m.created_ms => {
                    rep.trajectories_present += 1;
                    if outcome.success != m.outcome.success {
                        let o = src.read_trajectory_as(&sst, slot, false)?.outcome;
                        self.commit_with(kind::TRAJ_OUTCOME, false, |_| {
                            Ok(record::encode_traj_outcome(id, o))
                        })?;
                        rep.trajectory_outcomes += 1;
                        tick(&mut rep)?;
                    }
                    continue;
                }
                _ => {}
            }
            let mut t = src.read_trajectory(&sst, slot)?;
            t.provenance.origin = Some(m.origin);
            // The parent by its id here, when it is here.
            t.provenance.parent = t.provenance.parent.and_then(|p| {
                let ps = ix(sst.by_id.get(p)?);
                let st = self.state.read();
                st.find_origin(sst.trajs.at(ps).origin)
                    .map(|d| st.trajs.id(d))
            });
            self.commit_with(kind::TRAJECTORY, false, |st| {
                let id = st.next_id;
                if id == RESERVED_ID {
                    return Err(Error::IdsExhausted);
                }
                if st.by_id.contains_key(id) {
                    return Err(Error::DuplicateId { id });
                }
                let mut keys = Vec::new();
                for (name, v) in &t.keys {
                    keys.push(EncKey {
                        space: st.space(name)?.0,
                        step: NO_STEP,
                        vector: v,
                    });
                }
                for (name, vs) in &t.step_keys {
                    let sid = st.space(name)?.0;
                    for (i, v) in vs.iter().enumerate() {
                        keys.push(EncKey {
                            space: sid,
                            step: u32::try_from(i).unwrap_or(NO_STEP),
                            vector: v,
                        });
                    }
                }
                keys.sort_by_key(|k| (k.space, k.step));
                Ok(record::encode_trajectory(&t, id, t.created_ms, &keys))
            })?;
            rep.trajectories += 1;
            tick(&mut rep)?;
        }
        // Episodes: begun once, missing retrievals added, the source's outcome taken.
        for ep in sst.usage.episodes.values() {
            let found = self.state.read().usage.find(ep.origin);
            let here = match found {
                Some(e) => e,
                None => {
                    let mut id = 0;
                    self.commit_with(kind::EPISODE_MERGED, false, |st| {
                        id = st.usage.next_episode.max(1);
                        Ok(record::encode_episode_merged(id, ep.created_ms, ep.origin))
                    })?;
                    rep.episodes += 1;
                    tick(&mut rep)?;
                    id
                }
            };
            let (add, outcome_here) = {
                let st = self.state.read();
                let Some(dep) = st.usage.episodes.get(&here) else {
                    return Err(Error::NotFound {
                        kind: "episode",
                        id: here,
                    });
                };
                let mut have: HashMap<EventKey, u64> = HashMap::new();
                for e in &dep.events {
                    *have.entry(event_key(e)).or_default() += 1;
                }
                let mut add = Vec::new();
                let mut ids: HashMap<u64, Option<u64>> = HashMap::new();
                for e in &ep.events {
                    let mapped = *ids.entry(e.id).or_insert_with(|| {
                        let s = ix(sst.by_id.get(e.id)?);
                        st.find_origin(sst.trajs.at(s).origin)
                            .map(|d| st.trajs.id(d))
                    });
                    let Some(id) = mapped else {
                        rep.retrievals_skipped += 1;
                        continue;
                    };
                    let e = RetrievalEvent { id, ..*e };
                    match have.get_mut(&event_key(&e)) {
                        Some(n) if *n > 0 => *n -= 1,
                        _ => add.push(e),
                    }
                }
                (add, dep.outcome)
            };
            for chunk in add.chunks(EVENTS_PER_RECORD) {
                self.commit_with(kind::RETRIEVALS, false, |_| {
                    Ok(record::encode_retrievals(here, chunk))
                })?;
                rep.retrievals += off(chunk.len());
                tick(&mut rep)?;
            }
            if ep.outcome.is_some() && ep.outcome != outcome_here {
                self.commit_with(kind::EPISODE_OUTCOME, false, |_| {
                    Ok(record::encode_episode_outcome(here, ep.outcome))
                })?;
                rep.episode_outcomes += 1;
                tick(&mut rep)?;
            }
        }
        Ok(rep)
    }
}

/// Checks every source's origin id and key spaces against `initial` (the destination's,
/// named `whose`) and the sources before it.
fn check_spaces(initial: Vec<SpaceDef>, whose: &str, sources: &[&Database]) -> Result<()> {
    let mut spaces: BTreeMap<String, (SpaceDef, String)> = initial
        .into_iter()
        .map(|d| (d.name.clone(), (d, whose.to_owned())))
        .collect();
    for src in sources {
        if src.origin().is_none() {
            return Err(no_origin(&src.log_path));
        }
        for def in src.spaces() {
            match spaces.get(&def.name) {
                Some((have, whose)) if *have != def => {
                    return Err(Error::MergeIncompatible {
                        source_db: src.dir(),
                        what: format!(
                            "key space `{}` is {} there but {} in {whose}",
                            def.name,
                            describe(&def),
                            describe(have)
                        ),
                    })
                }
                Some(_) => {}
                None => {
                    let whose = src.dir().display().to_string();
                    spaces.insert(def.name.clone(), (def, whose));
                }
            }
        }
    }
    Ok(())
}

/// A key space's definition in words, for a refusal.
fn describe(d: &SpaceDef) -> String {
    format!(
        "{}-level, {} dims, {}, {}",
        format!("{:?}", d.level).to_lowercase(),
        d.dims,
        format!("{:?}", d.metric).to_lowercase(),
        d.embedder.as_ref().map_or_else(
            || "no recorded embedder".to_owned(),
            |e| format!("embedder {e}")
        )
    )
}
