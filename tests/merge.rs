//! Merging databases (issue 16): every trajectory and usage event of each source lands in
//! the destination exactly once, identified by its origin; repeats add nothing, grown
//! sources add only what is new, a merge killed anywhere is completed by a rerun, Q after a
//! merge is Q over the union of the sources' episodes, and incompatible sources change
//! nothing.
#![allow(clippy::unwrap_used)] // tests may unwrap

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use common::{create_spaces, open, traj_for};
use trajdb::storage::fault::{CrashBackend, FailingBackend, Op, SplitMix};
use trajdb::storage::Backend;
use trajdb::{
    Database, Durability, EmbedderId, Error, Level, Metric, Origin, RetrievalEvent, SpaceDef,
    Stage, Trajectory,
};

/// An in-memory database (with its backend, to crash it or look at its bytes).
fn mem() -> (CrashBackend, Database) {
    let crash = CrashBackend::new();
    let b: Arc<dyn Backend> = Arc::new(crash.clone());
    let db = open(&b, Durability::SyncEachCommit).unwrap();
    (crash, db)
}

fn reopen(crash: &CrashBackend) -> Database {
    let b: Arc<dyn Backend> = Arc::new(crash.clone());
    open(&b, Durability::SyncEachCommit).unwrap()
}

const STAGES: [Stage; 4] = [Stage::Plan, Stage::Reason, Stage::Act, Stage::Other];

/// Appends `n` trajectories (ids assigned from 1 in every source, so raw ids overlap) whose
/// text names `tag`, and `episodes` episodes retrieving random trajectories of this source.
fn fill(db: &Database, tag: &str, n: u64, episodes: u64, seed: u64) {
    if db.spaces().is_empty() {
        create_spaces(db);
    }
    let mut rng = SplitMix::new(seed);
    let ts: Vec<Trajectory> = (1..=n)
        .map(|i| {
            let mut t = traj_for(i + seed % 5);
            t.id = None;
            t.goal = format!("{tag}: {}", t.goal);
            t
        })
        .collect();
    db.append_many(&ts).unwrap();
    add_episodes(db, episodes, &mut rng);
}

fn add_episodes(db: &Database, episodes: u64, rng: &mut SplitMix) {
    let ids = db.ids();
    for _ in 0..episodes {
        let ep = db.begin_episode().unwrap();
        let k = 1 + rng.next_u64() % 6;
        let events: Vec<RetrievalEvent> = (0..k)
            .map(|_| {
                let id = ids[(rng.next_u64() % ids.len() as u64) as usize];
                let steps = db.get(id).unwrap().steps.len() as u64;
                RetrievalEvent {
                    id,
                    step: (steps > 0 && rng.next_u64().is_multiple_of(2))
                        .then(|| (rng.next_u64() % steps) as u32),
                    stage: STAGES[(rng.next_u64() % 4) as usize],
                }
            })
            .collect();
        db.log_retrievals(ep, &events).unwrap();
        match rng.next_u64() % 3 {
            0 => db.set_episode_outcome(ep, Some(true)).unwrap(),
            1 => db.set_episode_outcome(ep, Some(false)).unwrap(),
            _ => {}
        }
    }
}

/// A retrieval event named by the retrieved trajectory's origin.
type Ev = (Origin, Option<u32>, String);

/// What a database holds, by origin: trajectories (id and provenance origin cleared) and
/// episodes (outcome, retrieval events counted by trajectory origin, step and stage).
#[derive(Debug, Default, PartialEq)]
struct Content {
    trajs: BTreeMap<Origin, Trajectory>,
    episodes: BTreeMap<Origin, (Option<bool>, BTreeMap<Ev, u64>)>,
}

fn content(db: &Database) -> Content {
    let mut c = Content::default();
    for id in db.ids() {
        let o = db.trajectory_origin(id).unwrap();
        let mut t = db.get(id).unwrap();
        if let Some(po) = t.provenance.origin {
            assert_eq!(po, o, "trajectory {id}: its provenance names its origin");
        }
        t.id = None;
        t.provenance.origin = None;
        t.provenance.parent = None;
        assert!(c.trajs.insert(o, t).is_none(), "origin {o} twice");
    }
    for ep in db.episodes() {
        let mut evs = BTreeMap::new();
        for e in &ep.events {
            let o = db.trajectory_origin(e.id).unwrap();
            *evs.entry((o, e.step, format!("{:?}", e.stage)))
                .or_insert(0) += 1;
        }
        assert!(
            c.episodes.insert(ep.origin, (ep.outcome, evs)).is_none(),
            "episode origin {} twice",
            ep.origin
        );
    }
    c
}

/// The union of the sources' contents (sources with disjoint origins).
fn union(dbs: &[&Database]) -> Content {
    let mut u = Content::default();
    for db in dbs {
        let c = content(db);
        u.trajs.extend(c.trajs);
        u.episodes.extend(c.episodes);
    }
    u
}

/// Q of every trajectory origin, counted from the sources' episodes with the formula of
/// METHOD.md §4 (sum of o_i f_i over sum of f_i, labelled episodes only).
fn q_recount(dbs: &[&Database]) -> BTreeMap<Origin, f64> {
    let mut num: BTreeMap<Origin, (u64, u64)> = BTreeMap::new();
    for db in dbs {
        for ep in db.episodes() {
            let Some(o) = ep.outcome else { continue };
            for e in &ep.events {
                let t = db.trajectory_origin(e.id).unwrap();
                let c = num.entry(t).or_default();
                c.0 += u64::from(o);
                c.1 += 1;
            }
        }
    }
    num.into_iter()
        .map(|(t, (s, l))| (t, s as f64 / l as f64))
        .collect()
}

fn q_by_origin(db: &Database) -> BTreeMap<Origin, f64> {
    db.utilities()
        .into_iter()
        .filter_map(|(id, u)| Some((db.trajectory_origin(id).unwrap(), u.q()?)))
        .collect()
}

fn log_len(crash: &CrashBackend) -> usize {
    crash
        .snapshot()
        .into_iter()
        .find(|(n, _)| n == "log")
        .unwrap()
        .1
        .len()
}

#[test]
fn two_databases_with_overlapping_ids_merge_once_each_with_q_over_the_union() {
    let (_, a) = mem();
    let (_, b) = mem();
    fill(&a, "a", 30, 40, 1);
    fill(&b, "b", 25, 30, 2);
    assert_ne!(a.origin(), b.origin());
    assert_eq!(a.ids()[..25], b.ids()[..], "raw ids overlap");
    let (_, dst) = mem();
    let r = dst.merge_all(&[&a, &b]).unwrap();
    assert_eq!((r.trajectories, r.trajectories_present), (55, 0));
    assert_eq!(r.episodes, 70);
    assert_eq!(r.retrievals_skipped, 0);
    assert_eq!(dst.ids().len(), 55);
    assert_eq!(content(&dst), union(&[&a, &b]));
    assert_eq!(q_by_origin(&dst), q_recount(&[&a, &b]));
    // Provenance names the origin; ids here are new and unique.
    for id in dst.ids() {
        let t = dst.get(id).unwrap();
        let o = t.provenance.origin.unwrap();
        assert!(o.db == a.origin().unwrap() || o.db == b.origin().unwrap());
    }
    dst.verify().unwrap();
}

#[test]
fn five_databases_merge_into_one_with_every_trajectory_and_event_once() {
    let srcs: Vec<(CrashBackend, Database)> = (0..5).map(|_| mem()).collect();
    for (i, (_, s)) in srcs.iter().enumerate() {
        fill(s, &format!("s{i}"), 20 + i as u64 * 3, 25, 10 + i as u64);
    }
    let refs: Vec<&Database> = srcs.iter().map(|(_, d)| d).collect();
    let (crash, dst) = mem();
    // The destination has trajectories of its own, with raw ids the sources use too.
    fill(&dst, "dst", 10, 5, 99);
    let own = content(&dst);
    let r = dst.merge_all(&refs).unwrap();
    assert_eq!(r.trajectories, (0..5).map(|i| 20 + i * 3).sum::<u64>());
    let mut want = union(&refs);
    want.trajs.extend(own.trajs);
    want.episodes.extend(own.episodes);
    assert_eq!(content(&dst), want);
    drop(dst);
    // The same after reopening: the mapping is in the log.
    let dst = reopen(&crash);
    assert_eq!(content(&dst), want);
    let got = q_by_origin(&dst);
    let want_q = q_recount(&refs);
    for (o, q) in &want_q {
        assert_eq!(got.get(o), Some(q), "Q of {o}");
    }
    dst.verify().unwrap();
}

#[test]
fn repeating_a_merge_adds_nothing() {
    let (_, a) = mem();
    let (_, b) = mem();
    fill(&a, "a", 15, 20, 3);
    fill(&b, "b", 15, 20, 4);
    let (crash, dst) = mem();
    dst.merge_all(&[&a, &b]).unwrap();
    let before = log_len(&crash);
    let r = dst.merge_all(&[&a, &b, &a]).unwrap();
    assert_eq!(r.commits, 0, "{r:?}");
    assert_eq!(r.trajectories_present, 45);
    assert_eq!(log_len(&crash), before, "not one byte written");
    assert_eq!(content(&dst), union(&[&a, &b]));
}

#[test]
fn a_grown_source_adds_only_what_is_new() {
    let (_, a) = mem();
    fill(&a, "a", 12, 10, 5);
    let (_, dst) = mem();
    dst.merge_from(&a).unwrap();
    // The source grows: new trajectories, new episodes, retrievals and a late outcome in an
    // episode merged already, and a relabelled trajectory.
    let old_ep = a.episodes()[0].id;
    let first = a.ids()[0];
    let more: Vec<Trajectory> = (20..25)
        .map(|i| {
            let mut t = traj_for(i);
            t.id = None;
            t
        })
        .collect();
    a.append_many(&more).unwrap();
    let unlabelled = a
        .episodes()
        .iter()
        .find(|e| e.outcome.is_none())
        .map(|e| e.id);
    a.log_retrievals(
        old_ep,
        &[RetrievalEvent {
            id: first,
            step: None,
            stage: Stage::Act,
        }],
    )
    .unwrap();
    if let Some(e) = unlabelled {
        a.set_episode_outcome(e, Some(true)).unwrap();
    }
    let relabel = !a.get(first).unwrap().outcome.success.unwrap_or(false);
    a.set_outcome(
        first,
        trajdb::Outcome {
            success: Some(relabel),
            reward: None,
        },
    )
    .unwrap();
    let mut rng = SplitMix::new(77);
    add_episodes(&a, 4, &mut rng);
    let r = dst.merge_from(&a).unwrap();
    assert_eq!(r.trajectories, 5);
    assert_eq!(r.trajectories_present, 12);
    assert_eq!(r.trajectory_outcomes, 1);
    assert_eq!(r.episodes, 4);
    assert!(r.retrievals >= 5, "{r:?}");
    assert_eq!(
        r.episode_outcomes as usize,
        a.episodes()[10..]
            .iter()
            .filter(|e| e.outcome.is_some())
            .count()
            + usize::from(unlabelled.is_some())
    );
    assert_eq!(content(&dst), content(&a));
    assert_eq!(q_by_origin(&dst), q_recount(&[&a]));
    // And once more: nothing.
    assert_eq!(dst.merge_from(&a).unwrap().commits, 0);
}

#[test]
fn compaction_of_source_or_destination_keeps_every_origin() {
    let (_, a) = mem();
    fill(&a, "a", 10, 8, 6);
    let (crash, dst) = mem();
    dst.merge_from(&a).unwrap();
    a.delete(a.ids()[3]).unwrap();
    a.compact().unwrap();
    dst.compact().unwrap();
    drop(dst);
    let dst = reopen(&crash);
    let r = dst.merge_from(&a).unwrap();
    assert_eq!(r.commits, 0, "{r:?}");
    assert_eq!(r.trajectories_present, 9);
    // The trajectory deleted in the source stays here (deletions are not carried over).
    assert_eq!(dst.ids().len(), 10);
    dst.verify().unwrap();
}

#[test]
fn a_fork_and_its_parent_merge_their_shared_part_once() {
    let (_, a) = mem();
    fill(&a, "a", 8, 6, 7);
    let fork = CrashBackend::new();
    a.fork_into(&fork).unwrap();
    let f = reopen(&fork);
    assert_ne!(
        f.origin(),
        a.origin(),
        "the fork has an origin id of its own"
    );
    // Both write after the fork, with the same raw ids.
    let mut rng = SplitMix::new(8);
    for db in [&a, &f] {
        let mut t = traj_for(40);
        t.id = None;
        assert_eq!(db.append(&t).unwrap(), 9);
        add_episodes(db, 3, &mut rng);
    }
    let (_, dst) = mem();
    dst.merge_all(&[&a, &f]).unwrap();
    assert_eq!(dst.ids().len(), 8 + 1 + 1);
    assert_eq!(dst.episodes().len(), 6 + 3 + 3);
    let mut want = content(&a);
    let cf = content(&f);
    want.trajs.extend(cf.trajs);
    want.episodes.extend(cf.episodes);
    assert_eq!(content(&dst), want);
    // Compacting the fork keeps the inherited part under the parent's origin id.
    f.compact().unwrap();
    assert_eq!(dst.merge_from(&f).unwrap().commits, 0);
}

#[test]
fn trajectories_reaching_a_database_by_two_routes_are_one() {
    let (_, a) = mem();
    let (_, b) = mem();
    fill(&a, "a", 10, 10, 9);
    fill(&b, "b", 10, 10, 10);
    let (_, m1) = mem();
    m1.merge_all(&[&a, &b]).unwrap();
    let (_, m2) = mem();
    let r = m2.merge_all(&[&a, &m1]).unwrap();
    assert_eq!(r.trajectories, 20);
    assert_eq!(r.trajectories_present, 10);
    assert_eq!(content(&m2), union(&[&a, &b]));
    // The relabelled parent link follows the trajectory: a child made in `a` from its
    // first trajectory points at that trajectory's id here.
    let parent = a.ids()[0];
    let mut child = traj_for(50);
    child.id = None;
    child.provenance.kind = trajdb::ProvenanceKind::Relabelled;
    child.provenance.parent = Some(parent);
    let cid = a.append(&child).unwrap();
    m2.merge_from(&a).unwrap();
    let here = |o: Origin| {
        m2.ids()
            .into_iter()
            .find(|&id| m2.trajectory_origin(id) == Some(o))
            .unwrap()
    };
    let c = m2.get(here(a.trajectory_origin(cid).unwrap())).unwrap();
    assert_eq!(
        c.provenance.parent,
        Some(here(a.trajectory_origin(parent).unwrap()))
    );
}

#[test]
fn a_merge_killed_at_random_points_leaves_whole_commits_and_a_rerun_completes_it() {
    let (_, a) = mem();
    let (_, b) = mem();
    fill(&a, "a", 20, 15, 11);
    fill(&b, "b", 20, 15, 12);
    let want = union(&[&a, &b]);
    // How many writes a whole merge makes.
    let writes = {
        let crash = CrashBackend::new();
        let count = FailingBackend::new(Arc::new(crash.clone()), Some(Op::Write), 0);
        let db = Database::open_backend(Arc::new(count.clone()), Default::default()).unwrap();
        let before = count.count();
        db.merge_all(&[&a, &b]).unwrap();
        count.count() - before
    };
    assert!(writes > 80, "{writes} writes");
    let mut rng = SplitMix::new(2026);
    let mut cut_midway = 0;
    for round in 0..40u64 {
        let crash = CrashBackend::new();
        let fail = FailingBackend::new(Arc::new(crash.clone()), Some(Op::Write), 0);
        let db = Database::open_backend(Arc::new(fail.clone()), Default::default()).unwrap();
        fail.fail_after(1 + rng.next_u64() % writes);
        let e = db
            .merge_all(&[&a, &b])
            .expect_err("the injected failure stops it");
        assert!(fail.fired(), "round {round}: {e}");
        std::mem::forget(db); // killed: no sync on drop
        let after = if round % 2 == 0 {
            crash.crash()
        } else {
            crash.crash_torn(round, round % 4 == 1)
        };
        let dst = reopen(&after);
        // Whole commits only: every trajectory there is exactly a source's.
        let partial = content(&dst);
        if (1..40).contains(&partial.trajs.len()) {
            cut_midway += 1;
        }
        for (o, t) in &partial.trajs {
            assert_eq!(Some(t), want.trajs.get(o), "round {round}: {o}");
        }
        dst.verify().unwrap();
        let r = dst.merge_all(&[&a, &b]).unwrap();
        assert_eq!(
            r.trajectories + r.trajectories_present,
            40,
            "round {round}: {r:?}"
        );
        assert_eq!(content(&dst), want, "round {round}");
        assert_eq!(q_by_origin(&dst), q_recount(&[&a, &b]), "round {round}");
        drop(dst);
        assert_eq!(content(&reopen(&after)), want, "round {round} reopened");
    }
    assert!(
        cut_midway >= 10,
        "{cut_midway} of 40 rounds stopped amid the trajectories"
    );
}

#[test]
fn incompatible_key_spaces_are_refused_before_anything_is_written() {
    let (_, good) = mem();
    fill(&good, "good", 5, 3, 13);
    let variants: [(SpaceDef, &str); 3] = [
        (
            SpaceDef::new("goal", Level::Trajectory, 8, Metric::Cosine),
            "8 dims",
        ),
        (
            SpaceDef::new("goal", Level::Trajectory, common::GOAL_DIMS, Metric::Dot),
            "dot",
        ),
        (
            SpaceDef::new("goal", Level::Trajectory, common::GOAL_DIMS, Metric::Cosine)
                .with_embedder(EmbedderId {
                    name: "other".into(),
                    version: "1".into(),
                    dims: common::GOAL_DIMS,
                }),
            "embedder other@1",
        ),
    ];
    for (def, says) in variants {
        let (_, bad) = mem();
        bad.create_space(&def).unwrap();
        let (crash, dst) = mem();
        fill(&dst, "dst", 3, 2, 14);
        let before = crash.snapshot();
        // The good source comes first and is not merged either.
        let e = dst.merge_all(&[&good, &bad]).unwrap_err();
        let msg = e.to_string();
        assert!(matches!(e, Error::MergeIncompatible { .. }), "{msg}");
        assert!(
            msg.contains("key space `goal`") && msg.contains(says),
            "{msg}"
        );
        assert!(
            msg.contains("nothing was merged") && !msg.contains('\n'),
            "{msg}"
        );
        assert_eq!(crash.snapshot(), before, "nothing written");
        assert_eq!(dst.ids().len(), 3);
    }
}

#[test]
fn a_log_without_an_origin_is_refused_until_compaction_gives_it_one() {
    // A log as written before origin ids: header bytes 48..56 zero (as in tests/golden/v1).
    let (crash, db) = mem();
    fill(&db, "old", 5, 2, 15);
    drop(db);
    let mut files = crash.snapshot();
    // Such a log has no checkpoint either (checkpoints came later): it opens by a scan.
    files.retain(|(n, _)| n != "checkpoint");
    let log = &mut files.iter_mut().find(|(n, _)| n == "log").unwrap().1;
    log[48..56].fill(0);
    let crc = crc32fast::hash(&log[..60]);
    log[60..64].copy_from_slice(&crc.to_le_bytes());
    let old = CrashBackend::from_files(files);
    let src = reopen(&old);
    assert_eq!(src.origin(), None);
    let (_, dst) = mem();
    let before = content(&dst);
    let e = dst.merge_from(&src).unwrap_err();
    assert!(matches!(e, Error::NoOrigin { .. }), "{e}");
    assert!(e.to_string().contains("trajdb compact"), "{e}");
    assert_eq!(content(&dst), before);
    // As a destination too.
    let (_, fresh) = mem();
    fill(&fresh, "fresh", 2, 1, 16);
    assert!(matches!(
        src.merge_from(&fresh),
        Err(Error::NoOrigin { .. })
    ));
    src.compact().unwrap();
    let o = src.origin().expect("compaction gave it one");
    let r = dst.merge_from(&src).unwrap();
    assert_eq!(r.trajectories, 5);
    assert_eq!(r.episodes, 2);
    assert_eq!(content(&dst), content(&src));
    assert_eq!(q_by_origin(&dst), q_recount(&[&src]));
    drop(src);
    assert_eq!(reopen(&old).origin(), Some(o), "kept in the header");
}
