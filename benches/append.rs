//! Append throughput per durability mode: trajectories of 10 steps with a goal key and three
//! step keys (384 dims), counted in steps per second.

mod common;

use std::time::{Duration, Instant};

use criterion::{criterion_main, BenchmarkId, Criterion, Throughput};
use trajdb::{Database, Durability, Level, Trajectory};

use common::{new_db, scratch, trajectory, Rng};

const DIMS: usize = 384;
const STEPS: usize = 10;
const POOL: usize = 64;
const STEP_KEYS: [&str; 3] = ["observation", "reasoning", "action"];

fn open(name: &str, durability: Durability) -> (std::path::PathBuf, Database) {
    let dir = scratch(name);
    let mut spaces = vec![("goal", Level::Trajectory)];
    spaces.extend(STEP_KEYS.iter().map(|s| (*s, Level::Step)));
    let db = new_db(
        &dir,
        durability,
        u32::try_from(DIMS).expect("dims fit in u32"),
        &spaces,
    );
    (dir, db)
}

/// Appends `iters` trajectories from `pool` spread over `threads` threads; returns the
/// wall time.
fn append_n(db: &Database, pool: &[Trajectory], iters: u64, threads: u64) -> Duration {
    let start = Instant::now();
    std::thread::scope(|s| {
        for t in 0..threads {
            let n = iters / threads + u64::from(t < iters % threads);
            s.spawn(move || {
                for i in 0..n {
                    let i = usize::try_from(i).expect("count fits in usize");
                    db.append(&pool[i % pool.len()]).expect("append");
                }
            });
        }
    });
    start.elapsed()
}

fn bench_append(c: &mut Criterion) {
    let mut rng = Rng::new(0xA99E4D);
    let pool: Vec<Trajectory> = (0..POOL)
        .map(|i| trajectory(&mut rng, i, true, STEPS, DIMS, &["goal"], &STEP_KEYS))
        .collect();

    let mut g = c.benchmark_group("append");
    g.sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    g.throughput(Throughput::Elements(STEPS as u64));
    let modes = [
        ("buffered", Durability::Buffered, 1),
        ("sync_each_commit", Durability::SyncEachCommit, 1),
        ("group_commit", Durability::GroupCommit, 1),
        ("sync_each_commit", Durability::SyncEachCommit, 4),
        ("group_commit", Durability::GroupCommit, 4),
    ];
    for (name, durability, threads) in modes {
        let (dir, db) = open(&format!("append-{name}-{threads}"), durability);
        g.bench_function(BenchmarkId::new(name, format!("{threads}_threads")), |b| {
            b.iter_custom(|iters| append_n(&db, &pool, iters, threads))
        });
        drop(db);
        let _ = std::fs::remove_dir_all(&dir);
    }
    g.finish();
}

/// The group lives in a private module: the macro makes a public function without docs.
mod group {
    criterion::criterion_group!(benches, super::bench_append);
}
criterion_main!(group::benches);
