//! Read views as of a commit, fork, compaction that really shrinks the files, and the usage
//! counters with Q(t) = sum o_i f_i(t) / sum f_i(t) over labelled episodes.

mod support;
use support::*;
use trajdb::{Database, Durability, Filter, Options, Outcome, RetrievalEvent, Stage, Utility};

fn buffered() -> Options {
    Options {
        durability: Durability::Buffered,
        ..Default::default()
    }
}

#[test]
fn as_of_view_sees_exactly_the_trajectories_committed_by_then() {
    let dir = tmp("as-of");
    let db = Database::open(&dir, buffered()).unwrap();
    for s in spaces(8) {
        db.create_space(&s).unwrap();
    }
    let mut rng = Rng::new(3);
    let mut ids = Vec::new();
    for n in 0..40 {
        ids.push(db.append(&random_traj(&mut rng, 8, 2, n)).unwrap());
    }
    let points = db.commit_points();
    let (_, seq20) = points[19];
    db.delete(ids[5]).unwrap();
    for n in 40..60 {
        ids.push(db.append(&random_traj(&mut rng, 8, 2, n)).unwrap());
    }
    // As of the 20th commit: the first 20 ids, including the one deleted later.
    assert_eq!(db.ids_as_of(Some(seq20)).unwrap(), ids[..20].to_vec());
    let f = Filter {
        as_of: Some(seq20),
        ..Default::default()
    };
    let hits = db.search("goal", &rng.vec(8), 100, &f).unwrap();
    let mut got: Vec<u64> = hits.iter().map(|h| h.id).collect();
    got.sort_unstable();
    assert_eq!(got, ids[..20].to_vec());
    // Now: everything but the deleted one.
    let now = db
        .search("goal", &rng.vec(8), 100, &Filter::default())
        .unwrap();
    assert_eq!(now.len(), 59);
    assert!(now.iter().all(|h| h.id != ids[5]));
}

#[test]
fn fork_copies_content_and_then_diverges_without_touching_the_source() {
    let dir = tmp("fork-src");
    let dst = tmp("fork-dst");
    let db = Database::open(&dir, buffered()).unwrap();
    for s in spaces(8) {
        db.create_space(&s).unwrap();
    }
    let mut rng = Rng::new(5);
    for n in 0..30 {
        db.append(&random_traj(&mut rng, 8, 3, n)).unwrap();
    }
    let ep = db.begin_episode().unwrap();
    db.log_retrievals(
        ep,
        &[RetrievalEvent {
            id: 1,
            step: None,
            stage: Stage::Plan,
        }],
    )
    .unwrap();
    db.set_episode_outcome(ep, Some(true)).unwrap();
    db.fork(&dst).unwrap();
    let before: Vec<_> = db.ids().iter().map(|i| db.get(*i).unwrap()).collect();
    {
        let f = Database::open(&dst, buffered()).unwrap();
        let copied: Vec<_> = f.ids().iter().map(|i| f.get(*i).unwrap()).collect();
        assert_eq!(copied, before);
        assert_eq!(f.utility(1), db.utility(1));
        f.verify().unwrap();
        f.append(&random_traj(&mut rng, 8, 3, 99)).unwrap();
        f.delete(2).unwrap();
        assert_eq!(f.ids().len(), 30);
    }
    let after: Vec<_> = db.ids().iter().map(|i| db.get(*i).unwrap()).collect();
    assert_eq!(after, before);
    db.verify().unwrap();
    // A fork into a non-empty directory is refused.
    assert!(db.fork(&dst).is_err());
}

#[test]
fn compaction_shrinks_log_and_key_files_and_keeps_live_content() {
    let dir = tmp("compact");
    let db = Database::open(&dir, buffered()).unwrap();
    for s in spaces(32) {
        db.create_space(&s).unwrap();
    }
    let mut rng = Rng::new(8);
    let mut ids = Vec::new();
    for n in 0..400 {
        ids.push(db.append(&random_traj(&mut rng, 32, 4, n)).unwrap());
    }
    let ep = db.begin_episode().unwrap();
    db.log_retrievals(
        ep,
        &[
            RetrievalEvent {
                id: ids[399],
                step: Some(1),
                stage: Stage::Reason,
            },
            RetrievalEvent {
                id: ids[0],
                step: None,
                stage: Stage::Plan,
            },
        ],
    )
    .unwrap();
    db.set_episode_outcome(ep, Some(true)).unwrap();
    db.set_outcome(
        ids[398],
        Outcome {
            success: Some(false),
            reward: Some(0.5),
        },
    )
    .unwrap();
    for id in &ids[..360] {
        db.delete(*id).unwrap();
    }
    db.sync().unwrap();
    let size = |name: &str| std::fs::metadata(dir.join(name)).unwrap().len();
    let (log0, obs0) = (size("log"), size("keys-2.vec"));
    let live: Vec<_> = db.ids().iter().map(|i| db.get(*i).unwrap()).collect();
    db.compact().unwrap();
    let (log1, obs1) = (size("log"), size("keys-2.vec"));
    assert!(log1 * 5 < log0, "log {log0} -> {log1}");
    assert!(obs1 * 4 < obs0, "observation keys {obs0} -> {obs1}");
    let after: Vec<_> = db.ids().iter().map(|i| db.get(*i).unwrap()).collect();
    assert_eq!(after, live);
    assert_eq!(db.get(ids[398]).unwrap().outcome.reward, Some(0.5));
    assert_eq!(db.utility(ids[399]).q(), Some(1.0));
    assert_eq!(db.utility(ids[0]), Utility::default());
    db.verify().unwrap();
    let stats = db.stats();
    assert_eq!(stats.trajectories, 40);
    assert_eq!(stats.deleted, 0);
    assert_eq!(stats.spaces[2].rows, 160);
    drop(db);
    let db = Database::open(&dir, buffered()).unwrap();
    let reopened: Vec<_> = db.ids().iter().map(|i| db.get(*i).unwrap()).collect();
    assert_eq!(reopened, live);
    db.verify().unwrap();
}

#[test]
fn q_counts_retrievals_weighted_by_episode_outcome_including_late_labels() {
    let dir = tmp("q");
    let db = Database::open(&dir, buffered()).unwrap();
    for s in spaces(4) {
        db.create_space(&s).unwrap();
    }
    let mut rng = Rng::new(2);
    let a = db.append(&random_traj(&mut rng, 4, 1, 0)).unwrap();
    let b = db.append(&random_traj(&mut rng, 4, 1, 1)).unwrap();
    let ev = |id| RetrievalEvent {
        id,
        step: None,
        stage: Stage::Act,
    };
    // Episode 1: a twice, b once; success.
    let e1 = db.begin_episode().unwrap();
    db.log_retrievals(e1, &[ev(a), ev(a), ev(b)]).unwrap();
    db.set_episode_outcome(e1, Some(true)).unwrap();
    // Episode 2: a three times; failure.
    let e2 = db.begin_episode().unwrap();
    db.log_retrievals(e2, &[ev(a), ev(a), ev(a)]).unwrap();
    db.set_episode_outcome(e2, Some(false)).unwrap();
    // Episode 3: b once; outcome not known yet.
    let e3 = db.begin_episode().unwrap();
    db.log_retrievals(e3, &[ev(b)]).unwrap();
    let ua = db.utility(a);
    assert_eq!((ua.retrievals, ua.episodes), (5, 2));
    assert_eq!(ua.q(), Some(2.0 / 5.0));
    let ub = db.utility(b);
    assert_eq!(
        (ub.retrievals, ub.episodes, ub.labelled_retrievals),
        (2, 2, 1)
    );
    assert_eq!(ub.q(), Some(1.0));
    // Late label: episode 3 failed; then relabelled a success; then episode 2 too.
    db.set_episode_outcome(e3, Some(false)).unwrap();
    assert_eq!(db.utility(b).q(), Some(0.5));
    db.set_episode_outcome(e3, Some(true)).unwrap();
    db.set_episode_outcome(e2, Some(true)).unwrap();
    assert_eq!(db.utility(a).q(), Some(1.0));
    assert_eq!(db.utility(b).q(), Some(1.0));
    // Recount from the episodes equals the counters, and both survive reopen.
    let recount = |db: &Database, id: u64| {
        let (mut s, mut l) = (0u64, 0u64);
        for e in db.episodes() {
            let f = e.counts().get(&id).copied().unwrap_or(0);
            if let Some(o) = e.outcome {
                l += f;
                s += f * u64::from(o);
            }
        }
        (s, l)
    };
    drop(db);
    let db = Database::open(&dir, buffered()).unwrap();
    for id in [a, b] {
        let u = db.utility(id);
        assert_eq!(
            recount(&db, id),
            (u.success_retrievals, u.labelled_retrievals)
        );
    }
    assert_eq!(db.utility(a).q(), Some(1.0));
    // Unknown episodes and trajectories are refused.
    assert!(db.log_retrievals(999, &[ev(a)]).is_err());
    assert!(db.log_retrievals(e1, &[ev(12345)]).is_err());
}

#[test]
fn read_only_handle_catches_up_with_a_writer_through_refresh_and_compaction() {
    let dir = tmp("refresh");
    let w = Database::open(&dir, buffered()).unwrap();
    for s in spaces(8) {
        w.create_space(&s).unwrap();
    }
    let mut rng = Rng::new(21);
    let mut ids = Vec::new();
    for n in 0..10 {
        ids.push(w.append(&random_traj(&mut rng, 8, 2, n)).unwrap());
    }
    w.sync().unwrap();
    let r = Database::open(
        &dir,
        Options {
            read_only: true,
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(r.ids(), ids);
    for n in 10..15 {
        ids.push(w.append(&random_traj(&mut rng, 8, 2, n)).unwrap());
    }
    w.delete(ids[0]).unwrap();
    assert_eq!(
        r.ids().len(),
        10,
        "a read-only handle is a snapshot until refreshed"
    );
    assert_eq!(r.refresh().unwrap(), 6);
    assert_eq!(r.ids(), ids[1..].to_vec());
    let q = rng.vec(8);
    assert_eq!(
        r.search("goal", &q, 5, &Filter::default()).unwrap(),
        w.search("goal", &q, 5, &Filter::default()).unwrap()
    );
    w.compact().unwrap();
    ids.push(w.append(&random_traj(&mut rng, 8, 2, 99)).unwrap());
    r.refresh().unwrap();
    assert_eq!(r.ids(), ids[1..].to_vec());
    assert_eq!(r.get(ids[15]).unwrap(), w.get(ids[15]).unwrap());
    r.verify().unwrap();
    assert!(matches!(
        r.append(&random_traj(&mut rng, 8, 1, 5)),
        Err(trajdb::Error::ReadOnly)
    ));
}

#[test]
fn ids_dropped_by_compaction_are_not_assigned_again() {
    let dir = tmp("id-floor");
    let db = Database::open(&dir, buffered()).unwrap();
    for s in spaces(4) {
        db.create_space(&s).unwrap();
    }
    let mut rng = Rng::new(4);
    let ids: Vec<u64> = (0..5)
        .map(|n| db.append(&random_traj(&mut rng, 4, 1, n)).unwrap())
        .collect();
    db.delete(ids[4]).unwrap();
    db.compact().unwrap();
    let next = db.append(&random_traj(&mut rng, 4, 1, 9)).unwrap();
    assert!(next > ids[4], "id {next} reuses a dropped id");
    drop(db);
    let db = Database::open(&dir, buffered()).unwrap();
    let after = db.append(&random_traj(&mut rng, 4, 1, 10)).unwrap();
    assert!(after > next);
}

#[test]
fn read_only_open_maps_clean_key_files_and_never_trusts_damaged_ones() {
    let dir = tmp("ro-map");
    let mut rng = Rng::new(31);
    let q = rng.vec(8);
    let want = {
        let w = Database::open(&dir, buffered()).unwrap();
        for s in spaces(8) {
            w.create_space(&s).unwrap();
        }
        for n in 0..50 {
            w.append(&random_traj(&mut rng, 8, 2, n)).unwrap();
        }
        w.search("goal", &q, 10, &Filter::default()).unwrap()
    };
    let ro = || Options {
        read_only: true,
        ..Default::default()
    };
    {
        let r = Database::open(&dir, ro()).unwrap();
        // A cleanly closed database's key files are mapped, not copied from the log.
        assert!(r.stats().spaces[0].file_bytes > 0);
        assert_eq!(r.search("goal", &q, 10, &Filter::default()).unwrap(), want);
        r.verify().unwrap();
    }
    // Damage a vouched row. An ordinary open trusts the rows the checkpoint covers without
    // reading them; `verify` compares every row with the log and reports the damage.
    let mut k = std::fs::read(dir.join("keys-0.vec")).unwrap();
    k[64 + 3 * 8 * 4] ^= 0x20;
    std::fs::write(dir.join("keys-0.vec"), &k).unwrap();
    let r = Database::open(&dir, ro()).unwrap();
    assert!(r.open_report().checkpoint_end.is_some());
    assert!(r.verify().is_err(), "verify reports the damaged key file");
    drop(r);
    // The open that checks everything finds the rows' checksum fails, so the read-only
    // handle takes the rows from the log instead and still answers exactly.
    let r = Database::open(
        &dir,
        Options {
            verify_on_open: true,
            ..ro()
        },
    )
    .unwrap();
    assert_eq!(r.stats().spaces[0].file_bytes, 0);
    assert_eq!(r.search("goal", &q, 10, &Filter::default()).unwrap(), want);
    assert!(r.verify().is_err(), "verify reports the damaged key file");
}
