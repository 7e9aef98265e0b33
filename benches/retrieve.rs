//! The method's retrieval call: goal and plan trajectory keys plus an observation step key,
//! k = 10, window = 5, success filter, over 10k trajectories of 10 steps (384 dims).

mod common;

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_main, Criterion, Throughput};
use trajdb::{Durability, Filter, Level, RetrieveQuery};

use common::{new_db, scratch, trajectory, Rng};

const DIMS: usize = 384;
const TRAJECTORIES: usize = 10_000;
const STEPS: usize = 10;

fn bench_retrieve(c: &mut Criterion) {
    let dir = scratch("retrieve");
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
    for i in 0..TRAJECTORIES {
        let t = trajectory(
            &mut rng,
            i,
            i % 2 == 0,
            STEPS,
            DIMS,
            &["goal", "plan"],
            &["observation"],
        );
        db.append(&t).expect("append");
    }
    db.sync().expect("sync");
    let query = RetrieveQuery {
        keys: vec![
            ("goal".into(), rng.unit_vector(DIMS)),
            ("plan".into(), rng.unit_vector(DIMS)),
        ],
        step_key: Some(("observation".into(), rng.unit_vector(DIMS))),
        k: 10,
        window: 5,
        filter: Filter {
            success_only: true,
            ..Default::default()
        },
        embedder: None,
    };

    let mut g = c.benchmark_group("retrieve");
    g.sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    // Key rows the call reads: two trajectory-level keys and one key per step.
    let rows = TRAJECTORIES * (2 + STEPS);
    g.throughput(Throughput::Bytes((rows * DIMS * 4) as u64));
    g.bench_function("goal_plan_obs_k10_w5_success_10k_x_10_steps", |b| {
        b.iter(|| db.retrieve(black_box(&query)).expect("retrieve"))
    });
    g.finish();
    drop(db);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The group lives in a private module: the macro makes a public function without docs.
mod group {
    criterion::criterion_group!(benches, super::bench_retrieve);
}
criterion_main!(group::benches);
