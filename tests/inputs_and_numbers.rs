//! Issue 9, "inputs and numbers": every input either works or is refused clearly, and every
//! score is right. One test per failure kind; each reproduction from the issue is a literal
//! case.
#![allow(clippy::unwrap_used)] // tests may unwrap

use std::sync::Arc;

use trajdb::storage::{Backend, MemDir, MemStorage};
use trajdb::{Database, Filter, Level, Metric, Options, SpaceDef, Trajectory};

fn mem_db() -> Database {
    let backend: Arc<dyn Backend> = Arc::new(MemDir::<MemStorage>::new());
    Database::open_backend(backend, Options::default()).unwrap()
}

fn with_key(id: u64, space: &str, v: &[f32]) -> Trajectory {
    let mut t = Trajectory {
        id: Some(id),
        goal: format!("goal {id}"),
        ..Default::default()
    };
    t.keys.insert(space.into(), v.to_vec());
    t
}

/// Issue 9 item 1: `[1e-30, 0]` beside `[1,0]`, `[-1,0]`, `[0,1]` came first for the query
/// `[-1,0]` with score 1.0 (true cosine -1): its squared norm underflows f32. Such keys and
/// queries are now refused; the smallest accepted key ranks by its true cosine.
#[test]
fn cosine_keys_and_queries_whose_norm_underflows_are_refused_and_the_smallest_accepted_rank_right()
{
    let db = mem_db();
    db.create_space(&SpaceDef::new("e", Level::Trajectory, 2, Metric::Cosine))
        .unwrap();
    for (id, v) in [(2, [1.0, 0.0]), (3, [-1.0, 0.0]), (4, [0.0, 1.0])] {
        db.append(&with_key(id, "e", &v)).unwrap();
    }
    for tiny in [1e-30f32, 1e-19, 1e-13] {
        let e = db
            .append(&with_key(1, "e", &[tiny, 0.0]))
            .expect_err("an underflowing cosine key must be refused")
            .to_string();
        assert!(
            e.contains("keys.e") && e.contains("too close to zero"),
            "{e}"
        );
        let e = db
            .search("e", &[tiny, 0.0], 3, &Filter::default())
            .expect_err("an underflowing cosine query must be refused")
            .to_string();
        assert!(
            e.contains("query vector") && e.contains("too close to zero"),
            "{e}"
        );
    }
    // The smallest accepted magnitude scores its true cosine.
    db.append(&with_key(1, "e", &[1e-12, 0.0])).unwrap();
    let hits = db.search("e", &[-1.0, 0.0], 4, &Filter::default()).unwrap();
    assert_eq!(hits[0].id, 3, "{hits:?}");
    let tiny = hits.iter().find(|h| h.id == 1).unwrap();
    assert!((tiny.score + 1.0).abs() < 1e-4, "{hits:?}");
    let hits = db
        .search("e", &[-1e-12, 0.0], 1, &Filter::default())
        .unwrap();
    assert_eq!(hits[0].id, 3, "{hits:?}");
}

/// Issue 9 item 2: keys around 2e19 scored 1.0 in cosine spaces (outranking an exact
/// match) and NaN or -inf in dot and L2 spaces. Values beyond ±1e16 are refused in keys and
/// queries of every metric; values at the limit give finite, correctly ranked scores.
#[test]
fn values_beyond_the_limit_are_refused_and_values_at_the_limit_score_finite_and_right() {
    for metric in [Metric::Cosine, Metric::Dot, Metric::L2] {
        let db = mem_db();
        db.create_space(&SpaceDef::new("e", Level::Trajectory, 3, metric))
            .unwrap();
        let e = db
            .append(&with_key(1, "e", &[2e19, 2e19, 0.0]))
            .expect_err("beyond the limit")
            .to_string();
        assert!(
            e.contains("keys.e[0]") && e.contains("±1e16"),
            "{metric:?}: {e}"
        );
        let e = db
            .search("e", &[2e19, 1.0, 1.0], 1, &Filter::default())
            .expect_err("query beyond the limit")
            .to_string();
        assert!(
            e.contains("query vector") && e.contains("[0]"),
            "{metric:?}: {e}"
        );
        let big = 1e16f32;
        db.append(&with_key(1, "e", &[big, big, -big])).unwrap();
        db.append(&with_key(2, "e", &[-big, -big, big])).unwrap();
        db.append(&with_key(3, "e", &[1.0, 2.0, 3.0])).unwrap();
        for (query, best) in [([big, big, -big], 1), ([-big, -big, big], 2)] {
            let hits = db.search("e", &query, 3, &Filter::default()).unwrap();
            assert_eq!(hits[0].id, best, "{metric:?}: {hits:?}");
            assert!(
                hits.iter().all(|h| h.score.is_finite()),
                "{metric:?}: {hits:?}"
            );
        }
        let hits = db
            .search("e", &[1.0, 2.0, 3.0], 3, &Filter::default())
            .unwrap();
        assert!(
            hits.iter().all(|h| h.score.is_finite()),
            "{metric:?}: {hits:?}"
        );
        if metric != Metric::Dot {
            assert_eq!(hits[0].id, 3, "{metric:?}: {hits:?}");
        }
    }
}

/// Issue 9 item 3: a zero (or underflowing) query in a cosine space was accepted and
/// "ranked" every key at 0, although zero keys are refused. Dot and L2 accept it.
#[test]
fn zero_query_is_refused_in_cosine_spaces_like_a_zero_key() {
    let db = mem_db();
    db.create_space(&SpaceDef::new("c", Level::Trajectory, 3, Metric::Cosine))
        .unwrap();
    db.create_space(&SpaceDef::new("l", Level::Trajectory, 3, Metric::L2))
        .unwrap();
    let mut t = with_key(1, "c", &[1.0, 0.0, 0.0]);
    t.keys.insert("l".into(), vec![1.0, 0.0, 0.0]);
    db.append(&t).unwrap();
    for q in [[0.0f32, 0.0, 0.0], [1e-50, 0.0, 0.0]] {
        let e = db
            .search("c", &q, 5, &Filter::default())
            .expect_err("refused");
        assert!(matches!(e, trajdb::Error::InvalidInput { .. }), "{e}");
        assert_eq!(db.search("l", &q, 5, &Filter::default()).unwrap().len(), 1);
    }
}

/// Issue 9 item 4: `search` with 3 rows and k = 1e11 aborted on a 1.6 TB allocation, and
/// k = 2^60 panicked with "capacity overflow". k (and the retrieval window) never size an
/// allocation beyond what exists.
#[test]
fn huge_k_and_window_are_bounded_by_what_exists() {
    let db = mem_db();
    db.create_space(&SpaceDef::new("e", Level::Trajectory, 2, Metric::Dot))
        .unwrap();
    db.create_space(&SpaceDef::new("s", Level::Step, 2, Metric::Dot))
        .unwrap();
    for id in 1..=3 {
        let mut t = with_key(id, "e", &[1.0, id as f32]);
        t.steps = vec![Default::default(); 2];
        t.step_keys
            .insert("s".into(), vec![vec![1.0, 0.0], vec![0.0, 1.0]]);
        db.append(&t).unwrap();
    }
    for k in [100_000_000_000usize, 1 << 60, usize::MAX] {
        assert_eq!(
            db.search("e", &[1.0, 1.0], k, &Filter::default())
                .unwrap()
                .len(),
            3
        );
        let q = trajdb::RetrieveQuery {
            keys: vec![("e".into(), vec![1.0, 1.0])],
            step_key: Some(("s".into(), vec![0.0, 1.0])),
            k,
            window: usize::MAX,
            ..Default::default()
        };
        let got = db.retrieve(&q).unwrap();
        assert_eq!(got.len(), 3);
        assert!(got.iter().all(|x| x.window == (0, 2)), "{got:?}");
    }
}

/// Issue 9 item 8: appending the id of a deleted trajectory said "already stored" while
/// `get` said it did not exist, and after `compact` it succeeded. The id of a deleted
/// trajectory may be reused, before and after compaction alike, and the new trajectory
/// starts with no usage either way.
#[test]
fn id_of_a_deleted_trajectory_is_reusable_before_and_after_compaction_alike() {
    for compact_first in [false, true] {
        let backend: Arc<dyn Backend> = Arc::new(MemDir::<MemStorage>::new());
        let db = Database::open_backend(backend.clone(), Options::default()).unwrap();
        db.append(&Trajectory {
            id: Some(5),
            goal: "old".into(),
            ..Default::default()
        })
        .unwrap();
        let ep = db.begin_episode().unwrap();
        db.log_retrievals(
            ep,
            &[trajdb::RetrievalEvent {
                id: 5,
                step: None,
                stage: trajdb::Stage::Plan,
            }],
        )
        .unwrap();
        db.set_episode_outcome(ep, Some(true)).unwrap();
        assert_eq!(db.utility(5).retrievals, 1);
        db.delete(5).unwrap();
        assert!(db.get(5).is_err());
        if compact_first {
            db.compact().unwrap();
        }
        db.append(&Trajectory {
            id: Some(5),
            goal: "new".into(),
            ..Default::default()
        })
        .unwrap();
        let e = db
            .append(&Trajectory {
                id: Some(5),
                goal: "again".into(),
                ..Default::default()
            })
            .expect_err("a live id is refused")
            .to_string();
        assert!(
            e.contains("already stored") && e.contains("deleted trajectory may be reused"),
            "{e}"
        );
        let check = |db: &Database, when: &str| {
            assert_eq!(db.get(5).unwrap().goal, "new", "{when}");
            assert_eq!(db.utility(5), trajdb::Utility::default(), "{when}");
            assert_eq!(db.ids(), vec![5], "{when}");
        };
        check(&db, "after reuse");
        drop(db);
        let db = Database::open_backend(backend.clone(), Options::default()).unwrap();
        check(&db, "after reopen");
        db.compact().unwrap();
        check(&db, "after compaction");
        drop(db);
        let db = Database::open_backend(backend, Options::default()).unwrap();
        check(&db, "after reopening the compacted log");
        db.verify().unwrap();
    }
}

/// Issue 9 item 10: a second writer failed at once and named the holder's start in
/// milliseconds since the epoch. `Options::lock_timeout` waits for the lock (and still fails
/// when it is not released in time); the holder's start is a readable UTC time.
#[test]
fn second_writer_waits_up_to_lock_timeout_and_names_the_holder_start_in_utc() {
    use std::time::{Duration, Instant};
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("trajdb-lock-wait-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let first = Database::open(&dir, Options::default()).unwrap();
    let waiting = Options {
        lock_timeout: Duration::from_millis(300),
        ..Options::default()
    };
    let t = Instant::now();
    let e = Database::open(&dir, waiting.clone()).expect_err("still held");
    assert!(t.elapsed() >= Duration::from_millis(300), "did not wait");
    let holder = match &e {
        trajdb::Error::Locked { holder, .. } => holder.clone(),
        other => panic!("expected Locked, got {other}"),
    };
    // "process N (since 2026-11-29 13:18:28 UTC)"
    let since = holder.split("since ").nth(1).unwrap_or_default();
    let b = since.as_bytes();
    assert!(
        since.ends_with(" UTC)")
            && b.len() == 24
            && b[4] == b'-'
            && b[7] == b'-'
            && b[10] == b' '
            && b[13] == b':',
        "{holder}"
    );
    let releaser = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(150));
        drop(first);
    });
    let long = Options {
        lock_timeout: Duration::from_secs(20),
        ..Options::default()
    };
    let t = Instant::now();
    let second = Database::open(&dir, long).expect("the lock is released while waiting");
    assert!(t.elapsed() < Duration::from_secs(10));
    releaser.join().unwrap();
    drop(second);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Issue 9 item 6: after a write failure (a full disk) half-way through an import, the
/// message names the exact last id kept, and rerunning with `skip_existing` adds the rest.
#[test]
fn import_stopped_by_a_write_failure_names_the_last_id_kept_and_a_rerun_finishes_it() {
    use trajdb::import::{check_import, write_import, ImportOptions};
    use trajdb::storage::fault::{FailingBackend, Op};
    let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("trajdb-import-fail-{}.jsonl", std::process::id()));
    let lines: String = [7u64, 3, 11, 5]
        .iter()
        .map(|id| format!("{{\"id\":{id},\"goal\":\"g{id}\",\"keys\":{{\"e\":[1,{id}]}}}}\n"))
        .collect();
    std::fs::write(&path, lines).unwrap();
    let mem: Arc<dyn Backend> = Arc::new(MemDir::<MemStorage>::new());
    let failing = FailingBackend::new(mem.clone(), Some(Op::Write), 0);
    let db = Database::open_backend(Arc::new(failing.clone()), Options::default()).unwrap();
    let plan = check_import(Some(&db), &path, &ImportOptions::default()).unwrap();
    assert_eq!(plan.records, 4);
    // Count the writes one record takes (its log frame and its key row) on a scratch
    // database, then fail the first write of the third record.
    let per_record = {
        let scratch =
            FailingBackend::new(Arc::new(MemDir::<MemStorage>::new()), Some(Op::Write), 0);
        let d = Database::open_backend(Arc::new(scratch.clone()), Options::default()).unwrap();
        d.create_space(&SpaceDef::new("e", Level::Trajectory, 2, Metric::Cosine))
            .unwrap();
        d.append(&with_key(1, "e", &[1.0, 0.0])).unwrap();
        let before = scratch.count();
        d.append(&with_key(2, "e", &[1.0, 0.0])).unwrap();
        scratch.count() - before
    };
    // One write for the key space, then two records.
    failing.fail_after(1 + 2 * per_record + 1);
    let failure = write_import(&db, &plan).expect_err("the injected write failure");
    assert!(failing.fired());
    let msg = failure.to_string();
    assert!(
        msg.contains("injected failure")
            && msg.contains("last id kept 3")
            && msg.contains("--skip-existing"),
        "{msg}"
    );
    assert_eq!(failure.kept.last_id, Some(3));
    drop(db);
    let db = Database::open_backend(mem, Options::default()).unwrap();
    assert_eq!(db.ids(), vec![7, 3]);
    let opts = ImportOptions {
        skip_existing: true,
        ..ImportOptions::default()
    };
    let plan = check_import(Some(&db), &path, &opts).unwrap();
    let report = write_import(&db, &plan).unwrap();
    assert_eq!((report.skipped, report.records), (2, 2));
    assert_eq!(db.ids(), vec![7, 3, 11, 5]);
    let _ = std::fs::remove_file(&path);
}

/// A new user's finding: rerunning an import with `skip_existing` reported the keys it
/// embedded for the records it then skipped. Only written records count.
#[test]
fn skipped_records_do_not_count_as_embedded() {
    use trajdb::import::{check_import, write_import, ImportOptions};
    let base = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"));
    let dir = base.join(format!("trajdb-skip-embed-count-{}", std::process::id()));
    let file = base.join(format!(
        "trajdb-skip-embed-count-{}.jsonl",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::write(
        &file,
        "{\"id\":1,\"goal\":\"make tea\"}\n{\"id\":2,\"goal\":\"boil water\"}\n",
    )
    .unwrap();
    let opts = ImportOptions {
        embed: vec!["goal".into()],
        skip_existing: true,
        ..Default::default()
    };
    let plan = check_import(None, &file, &opts).unwrap();
    let db = trajdb::Database::open(&dir, trajdb::Options::default()).unwrap();
    let first = write_import(&db, &plan).unwrap();
    assert_eq!((first.records, first.embedded, first.skipped), (2, 2, 0));
    let plan = check_import(Some(&db), &file, &opts).unwrap();
    let again = write_import(&db, &plan).unwrap();
    assert_eq!((again.records, again.embedded, again.skipped), (0, 0, 2));
    drop(db);
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_file(&file);
}

/// `Database::contains` answers for live trajectories only: false before an append, true
/// after, false after a delete.
#[test]
fn contains_is_true_exactly_for_live_trajectories() {
    let base = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"));
    let dir = base.join(format!("trajdb-contains-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let db = Database::open(&dir, Options::default()).unwrap();
    assert!(!db.contains(1));
    let id = db
        .append(&Trajectory {
            goal: "g".into(),
            ..Default::default()
        })
        .unwrap();
    assert!(db.contains(id));
    assert!(!db.contains(id + 1));
    db.delete(id).unwrap();
    assert!(!db.contains(id));
    drop(db);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_reversed_provenance_step_range_or_a_time_before_1970_is_refused_and_nothing_is_written() {
    let db = mem_db();
    db.create_space(&SpaceDef::new("goal", Level::Trajectory, 3, Metric::Cosine))
        .unwrap();
    let mut t = with_key(0, "goal", &[1.0, 0.0, 0.0]);
    t.provenance.steps = Some((3, 1));
    let e = db.append(&t).unwrap_err();
    assert!(matches!(e, trajdb::Error::InvalidInput { .. }), "{e}");
    assert!(e.to_string().contains("provenance.steps"), "{e}");
    t.provenance.steps = Some((1, 1));
    t.created_ms = -5;
    let e = db.append(&t).unwrap_err();
    assert!(e.to_string().contains("created_ms"), "{e}");
    assert!(db.ids().is_empty());
    t.created_ms = 0;
    db.append(&t).unwrap();
    assert_eq!(db.ids().len(), 1);
}
