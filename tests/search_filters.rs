//! Filters are applied inside the scan: when k matching rows exist, k come back, and they are
//! exactly the k best matching rows of a brute-force reference.

mod support;
use support::*;
use trajdb::index::kernels::reference;
use trajdb::{Database, Filter, Metric, Options, ProvenanceKind, Trajectory};

/// (id, goal key, success, env, task, provenance) of every stored trajectory.
type Row = (u64, Vec<f32>, bool, String, String, ProvenanceKind);

fn brute(rows: &[Row], q: &[f32], k: usize, f: &Filter) -> Vec<u64> {
    let mut v: Vec<(f32, usize, u64)> = rows
        .iter()
        .enumerate()
        .filter(|(_, r)| {
            (!f.success_only || r.2)
                && f.env.as_ref().is_none_or(|e| *e == r.3)
                && f.task.as_ref().is_none_or(|t| *t == r.4)
                && f.provenance.is_none_or(|p| p == r.5)
                && !f.exclude.contains(&r.0)
        })
        .map(|(i, r)| (reference(Metric::Cosine, &r.1, q), i, r.0))
        .collect();
    v.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    v.into_iter().take(k).map(|x| x.2).collect()
}

#[test]
fn filtered_search_returns_k_exact_results_when_k_match() {
    let (_dir, db) = buffered_db("filters", 16);
    let mut rng = Rng::new(42);
    let mut rows = Vec::new();
    for n in 0..600u64 {
        let mut t: Trajectory = random_traj(&mut rng, 16, 2, n);
        // Success is rare so a post-filter on a small over-fetch would come back short.
        t.outcome.success = Some(n % 10 == 0);
        t.provenance.kind = if n % 5 == 0 {
            ProvenanceKind::Relabelled
        } else {
            ProvenanceKind::SelfGenerated
        };
        let id = db.append(&t).unwrap();
        rows.push((
            id,
            t.keys["goal"].clone(),
            n % 10 == 0,
            t.env.clone(),
            t.task.clone(),
            t.provenance.kind,
        ));
    }
    let filters = [
        Filter::default(),
        Filter {
            success_only: true,
            ..Default::default()
        },
        Filter {
            env: Some("alpha".into()),
            success_only: true,
            ..Default::default()
        },
        Filter {
            task: Some("task-3".into()),
            ..Default::default()
        },
        Filter {
            provenance: Some(ProvenanceKind::Relabelled),
            exclude: rows.iter().take(50).map(|r| r.0).collect(),
            ..Default::default()
        },
        Filter {
            env: Some("no-such-env".into()),
            ..Default::default()
        },
    ];
    for (fi, f) in filters.iter().enumerate() {
        for _ in 0..10 {
            let q = rng.vec(16);
            for k in [1, 10, 60] {
                let got: Vec<u64> = db
                    .search("goal", &q, k, f)
                    .unwrap()
                    .iter()
                    .map(|h| h.id)
                    .collect();
                let want = brute(&rows, &q, k, f);
                assert_eq!(got, want, "filter {fi}, k {k}");
            }
        }
        // A batch of queries answers each exactly as a single search does (same ids, steps
        // and score bits), under every filter.
        let batch: Vec<Vec<f32>> = (0..7).map(|_| rng.vec(16)).collect();
        for k in [1, 10, 60] {
            let many = db.search_many("goal", &batch, k, f).unwrap();
            assert_eq!(many.len(), batch.len());
            for (q, got) in batch.iter().zip(&many) {
                assert_eq!(
                    got,
                    &db.search("goal", q, k, f).unwrap(),
                    "filter {fi}, k {k}"
                );
            }
        }
    }
    // 60 successes exist: asking for 60 with success_only gives 60.
    let all_ok = db
        .search(
            "goal",
            &rng.vec(16),
            60,
            &Filter {
                success_only: true,
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(all_ok.len(), 60);
}

#[test]
fn deleted_trajectories_never_appear_in_results() {
    let dir = tmp("filters-deleted");
    let db = Database::open(&dir, Options::default()).unwrap();
    for s in spaces(4) {
        db.create_space(&s).unwrap();
    }
    let mut rng = Rng::new(1);
    let ids: Vec<u64> = (0..20)
        .map(|n| db.append(&random_traj(&mut rng, 4, 1, n)).unwrap())
        .collect();
    // A reader opened before the deletes learns of them by refreshing.
    let reader = Database::open(
        &dir,
        Options {
            read_only: true,
            ..Options::default()
        },
    )
    .unwrap();
    for id in ids.iter().step_by(2) {
        db.delete(*id).unwrap();
    }
    reader.refresh().unwrap();
    let q = rng.vec(4);
    let only_odd = |db: &Database, how: &str| {
        let hits = db.search("goal", &q, 20, &Filter::default()).unwrap();
        assert_eq!(hits.len(), 10, "{how}");
        assert!(
            hits.iter()
                .all(|h| ids.iter().position(|i| *i == h.id).unwrap() % 2 == 1),
            "{how}: a deleted trajectory was returned"
        );
        let many = db
            .search_many("goal", std::slice::from_ref(&q), 20, &Filter::default())
            .unwrap();
        assert_eq!(many, vec![hits], "{how}: search_many differs from search");
    };
    only_odd(&db, "writer");
    only_odd(&reader, "refreshed reader");
    drop((db, reader));
    // Reopened from the checkpoint the writer left: the deletions come from its table.
    let db = Database::open(&dir, Options::default()).unwrap();
    assert!(db.open_report().checkpoint_end.is_some());
    only_odd(&db, "reopened from the checkpoint");
}

#[test]
fn search_many_names_the_bad_query_and_scores_nothing() {
    let (_dir, db) = buffered_db("search-many-errors", 16);
    let mut rng = Rng::new(7);
    for n in 0..20u64 {
        db.append(&random_traj(&mut rng, 16, 1, n)).unwrap();
    }
    let good = rng.vec(16);
    let short = vec![0.5f32; 15];
    let e = db
        .search_many("goal", &[good.clone(), short], 3, &Filter::default())
        .unwrap_err();
    assert!(e.to_string().contains("queries[1]"), "{e}");
    assert!(e.to_string().contains("15 dimensions"), "{e}");
    let mut nan = good.clone();
    nan[2] = f32::NAN;
    let e = db
        .search_many("goal", &[nan, good.clone()], 3, &Filter::default())
        .unwrap_err();
    assert!(e.to_string().contains("queries[0]"), "{e}");
    let none: Vec<Vec<f32>> = Vec::new();
    assert!(db
        .search_many("goal", &none, 3, &Filter::default())
        .unwrap()
        .is_empty());
    assert_eq!(
        db.search_many("goal", &[good], 0, &Filter::default())
            .unwrap(),
        vec![Vec::new()]
    );
    assert!(db
        .search_many("nope", &none, 3, &Filter::default())
        .is_err());
}

/// Spaces of 4,096 rows and more take the quantised first pass (module `index::quant`); its
/// answer must be the f32 scan's bit for bit. `search_many` always scans in f32, so the two
/// are compared directly, on clustered data (near ties) and under filters, for cosine and
/// dot, and against a brute-force ranking by the engine's own kernel.
#[test]
fn quantised_first_pass_returns_the_f32_scan_answer_bit_for_bit() {
    use trajdb::index::kernels::{normalised, Prepared};
    use trajdb::{Level, SpaceDef};
    let dims = 24;
    for metric in [Metric::Cosine, Metric::Dot] {
        let dir = tmp(&format!("quant-{metric:?}"));
        let db = Database::open(
            &dir,
            Options {
                durability: trajdb::Durability::Buffered,
                ..Default::default()
            },
        )
        .unwrap();
        db.create_space(&SpaceDef::new(
            "goal",
            Level::Trajectory,
            dims as u32,
            metric,
        ))
        .unwrap();
        let mut rng = Rng::new(77);
        let centres: Vec<Vec<f32>> = (0..8).map(|_| rng.vec(dims)).collect();
        let mut keys = Vec::new();
        let mut batch = Vec::new();
        for n in 0..6000u64 {
            let c = &centres[rng.below(8) as usize];
            let key: Vec<f32> = c.iter().map(|x| x + 0.05 * rng.f32()).collect();
            let mut t = Trajectory {
                task: format!("task-{}", n % 7),
                env: "alpha".into(),
                goal: format!("g{n}"),
                ..Default::default()
            };
            t.outcome.success = Some(n % 3 == 0);
            t.keys.insert("goal".into(), key.clone());
            keys.push(key);
            batch.push(t);
        }
        let ids = db.append_many(&batch).unwrap();
        db.sync().unwrap();
        // The same database without the quantised copy: f32 scans only.
        let plain = Database::open(
            &dir,
            Options {
                read_only: true,
                quantised_search: false,
                ..Default::default()
            },
        )
        .unwrap();
        let filters = [
            Filter::default(),
            Filter {
                success_only: true,
                ..Default::default()
            },
            Filter {
                task: Some("task-2".into()),
                ..Default::default()
            },
        ];
        for (fi, f) in filters.iter().enumerate() {
            for trial in 0..6 {
                let c = &centres[trial % 8];
                let q: Vec<f32> = c.iter().map(|x| x + 0.05 * rng.f32()).collect();
                for k in [1, 10, 100] {
                    let got = db.search("goal", &q, k, f).unwrap();
                    let scan = db
                        .search_many("goal", std::slice::from_ref(&q), k, f)
                        .unwrap()
                        .remove(0);
                    assert_eq!(got, plain.search("goal", &q, k, f).unwrap());
                    assert_eq!(got.len(), scan.len(), "{metric:?} filter {fi} k {k}");
                    for (g, w) in got.iter().zip(&scan) {
                        assert_eq!(g.id, w.id, "{metric:?} filter {fi} k {k}");
                        assert_eq!(g.score.to_bits(), w.score.to_bits());
                    }
                    // And the brute-force ranking by the same kernel on the stored rows.
                    let p = Prepared::new(metric, &q);
                    let mut want: Vec<(f32, usize)> = keys
                        .iter()
                        .enumerate()
                        .filter(|(i, _)| match fi {
                            1 => i % 3 == 0,
                            2 => i % 7 == 2,
                            _ => true,
                        })
                        .map(|(i, key)| {
                            let row = if metric == Metric::Cosine {
                                normalised(key)
                            } else {
                                key.clone()
                            };
                            (p.score(&row), i)
                        })
                        .collect();
                    want.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
                    let want: Vec<u64> = want.iter().take(k).map(|&(_, i)| ids[i]).collect();
                    assert_eq!(got.iter().map(|h| h.id).collect::<Vec<_>>(), want);
                }
            }
        }
        drop(plain);
        drop(db);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
