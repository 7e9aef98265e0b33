//! Open time of a 100k-trajectory database (goal key of 384 dims, three steps of text),
//! as the writer and read-only. The database is built once and kept in
//! `target/bench-db-100k`; delete that directory to rebuild it.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use criterion::{criterion_main, Criterion, SamplingMode, Throughput};
use trajdb::{Database, Durability, Level, Options};

use common::{new_db, trajectory, Rng};

const DIMS: usize = 384;
const TRAJECTORIES: usize = 100_000;
const STEPS: usize = 3;

fn db_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench-db-100k")
}

fn read_only() -> Options {
    Options {
        read_only: true,
        ..Options::default()
    }
}

/// True when `dir` holds the database this benchmark expects.
fn is_complete(dir: &Path) -> bool {
    let Ok(db) = Database::open(dir, read_only()) else {
        return false;
    };
    let goal_ok = db
        .spaces()
        .iter()
        .any(|s| s.name == "goal" && s.dims as usize == DIMS);
    goal_ok && db.stats().trajectories == TRAJECTORIES as u64
}

/// Builds the database in a side directory and renames it into place, so an interrupted
/// build never leaves a partial database where the next run would trust it.
fn ensure_built() -> PathBuf {
    let dir = db_dir();
    if is_complete(&dir) {
        return dir;
    }
    eprintln!("building {} (once)", dir.display());
    let _ = std::fs::remove_dir_all(&dir);
    let tmp = dir.with_extension("building");
    let _ = std::fs::remove_dir_all(&tmp);
    {
        let db = new_db(
            &tmp,
            Durability::Buffered,
            u32::try_from(DIMS).expect("dims fit in u32"),
            &[("goal", Level::Trajectory)],
        );
        let mut rng = Rng::new(0x0BE4);
        for i in 0..TRAJECTORIES {
            let t = trajectory(&mut rng, i, i % 2 == 0, STEPS, DIMS, &["goal"], &[]);
            db.append(&t).expect("append");
        }
        db.sync().expect("sync");
    }
    std::fs::rename(&tmp, &dir).expect("move the built database into place");
    dir
}

/// Times `iters` opens; closing (which syncs a writer) is not timed.
fn time_opens(dir: &Path, opts: &Options, iters: u64) -> Duration {
    let mut total = Duration::ZERO;
    for _ in 0..iters {
        let start = Instant::now();
        let db = Database::open(dir, opts.clone()).expect("open");
        total += start.elapsed();
        drop(db);
    }
    total
}

fn bench_open(c: &mut Criterion) {
    let dir = ensure_built();
    let writer = Options {
        durability: Durability::Buffered,
        ..Options::default()
    };
    let mut g = c.benchmark_group("open");
    g.sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5));
    g.throughput(Throughput::Elements(TRAJECTORIES as u64));
    g.bench_function("writer_100k", |b| {
        b.iter_custom(|iters| time_opens(&dir, &writer, iters))
    });
    g.bench_function("read_only_100k", |b| {
        b.iter_custom(|iters| time_opens(&dir, &read_only(), iters))
    });
    g.finish();
}

/// The group lives in a private module: the macro makes a public function without docs.
mod group {
    criterion::criterion_group!(benches, super::bench_open);
}
criterion_main!(group::benches);
