//! The one-call retrieval (multi-key mean with the missing-key rule, success filter, best step
//! match, re-rank, window) equals a brute-force computation of the same definition.

mod support;
use support::*;
use trajdb::index::kernels::reference;
use trajdb::{Filter, Metric, RetrieveQuery, Trajectory};

struct Ref {
    id: u64,
    t: Trajectory,
}

/// Scores every successful trajectory exactly as the method defines: mean of the key
/// similarities (missing key: that key's lowest score), best step, re-rank, window.
fn brute(
    all: &[Ref],
    goal: &[f32],
    plan: &[f32],
    obs: Option<&[f32]>,
    k: usize,
) -> Vec<(u64, Option<u32>)> {
    let ok: Vec<&Ref> = all
        .iter()
        .filter(|r| r.t.outcome.success == Some(true))
        .collect();
    let key_scores = |name: &str, q: &[f32]| -> Vec<Option<f32>> {
        ok.iter()
            .map(|r| r.t.keys.get(name).map(|v| reference(Metric::Cosine, v, q)))
            .collect()
    };
    let g = key_scores("goal", goal);
    let p = key_scores("plan", plan);
    let worst = |s: &[Option<f32>]| s.iter().flatten().copied().fold(f32::INFINITY, f32::min);
    let (wg, wp) = (worst(&g), worst(&p));
    let mut scored: Vec<(f32, usize, u64, Option<u32>)> = Vec::new();
    for (i, r) in ok.iter().enumerate() {
        if g[i].is_none() && p[i].is_none() {
            continue;
        }
        let traj = (g[i].unwrap_or(wg) + p[i].unwrap_or(wp)) / 2.0;
        match obs {
            None => scored.push((traj, i, r.id, None)),
            Some(q) => {
                let mut best: Option<(f32, u32)> = None;
                for (s, v) in r.t.step_keys["observation"].iter().enumerate() {
                    let sc = reference(Metric::Cosine, v, q);
                    if best.is_none_or(|b| sc > b.0) {
                        best = Some((sc, s as u32));
                    }
                }
                if let Some((sc, s)) = best {
                    scored.push((traj + sc, i, r.id, Some(s)));
                }
            }
        }
    }
    scored.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    scored.into_iter().take(k).map(|x| (x.2, x.3)).collect()
}

#[test]
fn retrieval_matches_brute_force_definition() {
    let (_dir, db) = buffered_db("retrieve-ref", 12);
    let mut rng = Rng::new(9);
    let mut all = Vec::new();
    for n in 0..300u64 {
        let steps = 1 + rng.below(12) as usize;
        let t = random_traj(&mut rng, 12, steps, n);
        let id = db.append(&t).unwrap();
        all.push(Ref { id, t });
    }
    for trial in 0..30 {
        let (goal, plan, obs) = (rng.vec(12), rng.vec(12), rng.vec(12));
        let with_step = trial % 2 == 0;
        let k = [1, 6, 10][trial % 3];
        let q = RetrieveQuery {
            keys: vec![("goal".into(), goal.clone()), ("plan".into(), plan.clone())],
            step_key: with_step.then(|| ("observation".into(), obs.clone())),
            k,
            window: 2,
            filter: Filter {
                success_only: true,
                ..Default::default()
            },
            embedder: None,
        };
        let got = db.retrieve(&q).unwrap();
        let want = brute(&all, &goal, &plan, with_step.then_some(&obs[..]), k);
        let got_ids: Vec<(u64, Option<u32>)> = got.iter().map(|e| (e.id, e.matched_step)).collect();
        assert_eq!(got_ids, want, "trial {trial}");
        for e in &got {
            let full = &all.iter().find(|r| r.id == e.id).unwrap().t;
            let (a, b) = (e.window.0 as usize, e.window.1 as usize);
            assert_eq!(e.trajectory.steps, full.steps[a..b].to_vec());
            if let Some(m) = e.matched_step {
                let m = m as usize;
                assert_eq!(a, m.saturating_sub(2));
                assert_eq!(b, (m + 3).min(full.steps.len()));
            } else {
                assert_eq!((a, b), (0, full.steps.len()));
            }
            assert_eq!(full.outcome.success, Some(true));
        }
    }
}

/// The retrieval of the definition computed with the engine's own kernel and the engine's
/// f32 arithmetic, so that scores can be compared bit for bit: (id, matched step, score).
fn brute_exact(
    all: &[Ref],
    metric: Metric,
    goal: &[f32],
    plan: &[f32],
    obs: &[f32],
    k: usize,
) -> Vec<(u64, Option<u32>, f32)> {
    use trajdb::index::kernels::{normalised, Prepared};
    // The engine's kernel on the rows as the key file stores them (cosine keys normalised).
    let similarity = |metric: Metric, v: &[f32], q: &[f32]| {
        let row = if metric == Metric::Cosine {
            normalised(v)
        } else {
            v.to_vec()
        };
        Prepared::new(metric, q).score(&row)
    };
    let ok: Vec<&Ref> = all
        .iter()
        .filter(|r| r.t.outcome.success == Some(true))
        .collect();
    let key_scores = |name: &str, q: &[f32]| -> Vec<Option<f32>> {
        ok.iter()
            .map(|r| r.t.keys.get(name).map(|v| similarity(metric, v, q)))
            .collect()
    };
    let g = key_scores("goal", goal);
    let p = key_scores("plan", plan);
    let worst = |s: &[Option<f32>]| s.iter().flatten().copied().fold(f32::INFINITY, f32::min);
    let (wg, wp) = (worst(&g), worst(&p));
    let mut scored = Vec::new();
    for (i, r) in ok.iter().enumerate() {
        // The engine's arithmetic: key scores summed and averaged in f64, the final score
        // rounded into f32 once.
        let traj = (0.0 + f64::from(g[i].unwrap_or(wg)) + f64::from(p[i].unwrap_or(wp))) / 2.0;
        let mut best: Option<(f32, u32)> = None;
        for (s, v) in r.t.step_keys["observation"].iter().enumerate() {
            let sc = similarity(metric, v, obs);
            if best.is_none_or(|b| sc > b.0) {
                best = Some((sc, s as u32));
            }
        }
        if let Some((sc, s)) = best {
            scored.push(((traj + f64::from(sc)) as f32, i, r.id, Some(s)));
        }
    }
    scored.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    scored
        .into_iter()
        .take(k)
        .map(|x| (x.2, x.3, x.0))
        .collect()
}

/// A point near `center`: each component moved by up to `spread`.
fn near(rng: &mut Rng, center: &[f32], spread: f32) -> Vec<f32> {
    center.iter().map(|c| c + spread * rng.f32()).collect()
}

#[test]
fn pruned_retrieval_equals_the_full_definition_bit_for_bit_and_skips_step_rows() {
    pruned_case(600);
}

/// From 4,096 rows a trajectory key space is bounded through its quantised copy (module
/// `index::quant`) instead of scored in full; the answer must not change by a bit.
#[test]
fn pruned_retrieval_over_quantised_trajectory_keys_equals_the_definition_bit_for_bit() {
    pruned_case(5000);
}

fn pruned_case(n_trajs: u64) {
    let dims = 16;
    for metric in [Metric::Cosine, Metric::Dot, Metric::L2] {
        let dir = support::tmp(&format!("retrieve-pruned-{metric:?}-{n_trajs}"));
        let db = trajdb::Database::open(
            &dir,
            trajdb::Options {
                durability: trajdb::Durability::Buffered,
                ..Default::default()
            },
        )
        .unwrap();
        for name in ["goal", "plan"] {
            db.create_space(&trajdb::SpaceDef::new(
                name,
                trajdb::Level::Trajectory,
                dims as u32,
                metric,
            ))
            .unwrap();
        }
        db.create_space(&trajdb::SpaceDef::new(
            "observation",
            trajdb::Level::Step,
            dims as u32,
            metric,
        ))
        .unwrap();
        // Clustered data: trajectory and step keys near one of 12 centres, so the
        // trajectory keys separate candidates and the step bounds are tight.
        let mut rng = Rng::new(31);
        let centres: Vec<Vec<f32>> = (0..12).map(|_| rng.vec(dims)).collect();
        let mut all = Vec::new();
        let mut total_rows = 0u64;
        for n in 0..n_trajs {
            let c = &centres[rng.below(12) as usize];
            let steps = 1 + rng.below(15) as usize;
            let mut t = random_traj(&mut rng, dims, steps, n);
            t.keys.insert("goal".into(), near(&mut rng, c, 0.1));
            if t.keys.contains_key("plan") {
                t.keys.insert("plan".into(), near(&mut rng, c, 0.1));
            }
            let obs = (0..steps).map(|_| near(&mut rng, c, 0.2)).collect();
            t.step_keys.insert("observation".into(), obs);
            if t.outcome.success == Some(true) {
                total_rows += steps as u64;
            }
            let id = db.append(&t).unwrap();
            all.push(Ref { id, t });
            // Interleave retrievals with appends, so the bounds are extended, not only built.
            if n == 300 {
                let q = RetrieveQuery {
                    keys: vec![("goal".into(), centres[0].clone())],
                    step_key: Some(("observation".into(), centres[0].clone())),
                    k: 3,
                    window: 1,
                    filter: Filter::default(),
                    embedder: None,
                };
                assert_eq!(db.retrieve(&q).unwrap().len(), 3);
            }
        }
        let mut pruned_calls = 0;
        // Calls that read the step bound of under half the qualifying trajectories.
        let mut bounds_skipped_calls = 0;
        let successes = all
            .iter()
            .filter(|r| r.t.outcome.success == Some(true))
            .count() as u64;
        for trial in 0..24 {
            let c = &centres[trial % 12];
            let (goal, plan, obs) = (
                near(&mut rng, c, 0.05),
                near(&mut rng, c, 0.05),
                near(&mut rng, c, 0.2),
            );
            let k = [1, 5, 10][trial % 3];
            let q = RetrieveQuery {
                keys: vec![("goal".into(), goal.clone()), ("plan".into(), plan.clone())],
                step_key: Some(("observation".into(), obs.clone())),
                k,
                window: 2,
                filter: Filter {
                    success_only: true,
                    ..Default::default()
                },
                embedder: None,
            };
            let (got, work) = db.retrieve_with_work(&q).unwrap();
            let want = brute_exact(&all, metric, &goal, &plan, &obs, k);
            let got: Vec<(u64, Option<u32>, f32)> = got
                .iter()
                .map(|e| (e.id, e.matched_step, e.score))
                .collect();
            assert_eq!(got.len(), want.len(), "{metric:?} trial {trial}");
            for (g, w) in got.iter().zip(&want) {
                assert_eq!((g.0, g.1), (w.0, w.1), "{metric:?} trial {trial}");
                assert_eq!(g.2.to_bits(), w.2.to_bits(), "{metric:?} trial {trial}");
            }
            assert!(work.step_rows_scored <= total_rows);
            // Without a step key: the pruned and the exhaustive paths agree exactly.
            let no_step = RetrieveQuery {
                step_key: None,
                ..q.clone()
            };
            assert_eq!(
                db.retrieve(&no_step).unwrap(),
                db.retrieve_exhaustive(&no_step).unwrap().0,
                "{metric:?} trial {trial}, no step key"
            );
            // A deep k reaches trajectories without a plan key (scored with the plan key's
            // worst score), with and without the step key.
            for step_key in [None, q.step_key.clone()]
                .into_iter()
                .filter(|_| trial % 4 == 0)
            {
                let deep = RetrieveQuery {
                    step_key,
                    k: 400,
                    ..q.clone()
                };
                assert_eq!(
                    db.retrieve(&deep).unwrap(),
                    db.retrieve_exhaustive(&deep).unwrap().0,
                    "{metric:?} trial {trial}, k 400"
                );
            }
            if work.step_rows_scored < total_rows / 2 {
                pruned_calls += 1;
            }
            assert!(work.step_bounds_read <= n_trajs);
            if work.step_bounds_read < successes / 2 {
                bounds_skipped_calls += 1;
            }
        }
        // The bound must actually prune on clustered data (else this test proves nothing
        // about the pruned path).
        assert!(
            pruned_calls >= 12,
            "{metric:?}: only {pruned_calls} of 24 calls scored under half the step rows"
        );
        // Cosine step scores are at most 1 for every query, so once a few candidates are
        // scored exactly, most trajectories are ruled out by their trajectory keys alone and
        // their step bound is never read (at 5,000 trajectories: the probe needs more
        // qualifying trajectories than 16 times the probe of 4 k).
        if metric == Metric::Cosine && n_trajs >= 5000 {
            assert!(
                bounds_skipped_calls >= 12,
                "only {bounds_skipped_calls} of 24 calls read under half the step bounds"
            );
        }
        drop(db);
        let _ = std::fs::remove_dir_all(&dir);
    }
}

#[test]
fn retrieve_without_any_key_is_refused() {
    let (_dir, db) = buffered_db("retrieve-no-keys", 8);
    let mut rng = Rng::new(3);
    for n in 0..5u64 {
        db.append(&random_traj(&mut rng, 8, 2, n)).unwrap();
    }
    let q = RetrieveQuery {
        k: 3,
        ..Default::default()
    };
    let e = db.retrieve(&q).unwrap_err();
    assert!(
        e.to_string().contains("no trajectory key and no step key"),
        "{e}"
    );
}
