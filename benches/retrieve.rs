//! The method's retrieval call: goal and plan trajectory keys plus an observation step key,
//! k = 10, window = 5, success filter, over 10k trajectories of 10 steps (384 dims).
//!
//! Two data sets: `random` (every key an independent random unit vector: the bounds cannot
//! prune, so this is the pruned path's worst case) and `clustered` (trajectories drawn
//! around 100 topics, their keys and step keys near the topic: the shape of real agent
//! experience, where similar goals have similar steps). Each is run through the pruned
//! `retrieve` and the exhaustive scan, in the same process, on the same data; the step rows
//! scored per call are printed.

mod common;

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_main, Criterion, Throughput};
use trajdb::{Durability, Filter, Level, RetrieveQuery};

use common::{new_db, scratch, trajectory, Rng};
use trajdb::Database;

const DIMS: usize = 384;
const TRAJECTORIES: usize = 10_000;
const STEPS: usize = 10;

/// A unit vector near `centre`: the centre plus noise of per-component scale `spread`.
fn near(rng: &mut Rng, centre: &[f32], spread: f32) -> Vec<f32> {
    let v: Vec<f32> = centre
        .iter()
        .map(|c| c + spread * rng.signed_unit())
        .collect();
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.into_iter().map(|x| x / norm).collect()
}

fn build(name: &str, clustered: bool) -> (std::path::PathBuf, Database, RetrieveQuery) {
    let dir = scratch(name);
    let db = new_db(
        &dir,
        Durability::Buffered,
        u32::try_from(DIMS).expect("dims fit in u32"),
        &[
            ("goal", Level::Trajectory),
            ("plan", Level::Trajectory),
            ("observation", Level::Step),
        ],
    );
    let mut rng = Rng::new(0x2E72);
    let topics: Vec<Vec<f32>> = (0..100).map(|_| rng.unit_vector(DIMS)).collect();
    // Noise per component: 0.05 over 384 dims puts a key at cosine about 0.7 to its topic.
    let spread = 0.05;
    for i in 0..TRAJECTORIES {
        let mut t = trajectory(
            &mut rng,
            i,
            i % 2 == 0,
            STEPS,
            DIMS,
            &["goal", "plan"],
            &["observation"],
        );
        if clustered {
            let topic = &topics[i % topics.len()];
            for k in ["goal", "plan"] {
                t.keys.insert(k.into(), near(&mut rng, topic, spread));
            }
            let steps = (0..STEPS).map(|_| near(&mut rng, topic, spread)).collect();
            t.step_keys.insert("observation".into(), steps);
        }
        db.append(&t).expect("append");
    }
    db.sync().expect("sync");
    let (goal, plan, obs) = if clustered {
        // An even topic: trajectory i has topic i % 100 and succeeds when i is even.
        let topic = topics[8].clone();
        (
            near(&mut rng, &topic, spread),
            near(&mut rng, &topic, spread),
            near(&mut rng, &topic, spread),
        )
    } else {
        (
            rng.unit_vector(DIMS),
            rng.unit_vector(DIMS),
            rng.unit_vector(DIMS),
        )
    };
    let query = RetrieveQuery {
        keys: vec![("goal".into(), goal), ("plan".into(), plan)],
        step_key: Some(("observation".into(), obs)),
        k: 10,
        window: 5,
        filter: Filter {
            success_only: true,
            ..Default::default()
        },
        embedder: None,
    };
    (dir, db, query)
}

fn bench_retrieve(c: &mut Criterion) {
    let mut g = c.benchmark_group("retrieve");
    g.sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    // Key rows a full call reads: two trajectory-level keys and one key per step.
    let rows = TRAJECTORIES * (2 + STEPS);
    g.throughput(Throughput::Bytes((rows * DIMS * 4) as u64));
    for (data, clustered) in [("random", false), ("clustered", true)] {
        let (dir, db, query) = build(&format!("retrieve-{data}"), clustered);
        let (pruned, work) = db.retrieve_with_work(&query).expect("retrieve");
        let (full, full_work) = db.retrieve_exhaustive(&query).expect("retrieve");
        let ids =
            |v: &[trajdb::Example]| v.iter().map(|e| (e.id, e.matched_step)).collect::<Vec<_>>();
        assert_eq!(
            ids(&pruned),
            ids(&full),
            "pruned and exhaustive retrieval differ"
        );
        eprintln!(
            "retrieve/{data}: step rows scored per call: pruned {} (trajectories visited {}), exhaustive {}",
            work.step_rows_scored, work.trajectories_visited, full_work.step_rows_scored
        );
        g.bench_function(
            format!("{data}/pruned_goal_plan_obs_k10_w5_success_10k_x_10_steps"),
            |b| b.iter(|| db.retrieve(black_box(&query)).expect("retrieve")),
        );
        g.bench_function(
            format!("{data}/exhaustive_goal_plan_obs_k10_w5_success_10k_x_10_steps"),
            |b| b.iter(|| db.retrieve_exhaustive(black_box(&query)).expect("retrieve")),
        );
        drop(db);
        let _ = std::fs::remove_dir_all(&dir);
    }
    g.finish();
}

/// The group lives in a private module: the macro makes a public function without docs.
mod group {
    criterion::criterion_group!(benches, super::bench_retrieve);
}
criterion_main!(group::benches);
