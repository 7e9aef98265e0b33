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
