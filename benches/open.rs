//! Open time, warm (the files are in the page cache), as the writer and read-only, of
//! databases of N trajectories × 10 steps with two trajectory-level keys (`goal`, `plan`)
//! and one step-level key (`obs`) of D dimensions each.
//!
//! A second group times an open followed by the first retrieval (goal + plan keys,
//! observation step key, k 10, success filter; read-only handle), once with the search
//! bounds files a writer saved at close and once with them removed (so the quantised copies
//! and step bounds are rebuilt from every key row). The keys are independent random unit
//! vectors, the pruned retrieval's worst case, so the retrieval itself scans most step
//! rows either way; the difference between the two is the rebuild.
//!
//! Two more functions time a read-only open followed by a first operation: a point lookup
//! (`contains`) and `stats` (every trajectory). Open leaves the checkpoint's trajectory
//! table, history and row metadata unread; a point lookup checks only the blocks it reads,
//! an operation over every trajectory checks them all (once per handle).
//!
//! Sizes come from `TRAJDB_BENCH_OPEN` as a comma-separated list of `N:D` (default
//! `10000:384,100000:384`; the 100k × 384 database takes about 3.7 GB). Open time should not
//! depend on D once a checkpoint exists, so the scale to 1M trajectories can be measured
//! with small keys: `TRAJDB_BENCH_OPEN=10000:8,100000:8,1000000:8`. Each database is built
//! once and kept in `target/bench-db-open-N-D`; delete that directory to rebuild it.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use criterion::{criterion_main, Criterion, SamplingMode, Throughput};
use trajdb::{Database, Durability, Filter, Level, Options, RetrieveQuery};

use common::{new_db, trajectory, Rng};

const STEPS: usize = 10;

fn sizes() -> Vec<(usize, usize)> {
    let spec = std::env::var("TRAJDB_BENCH_OPEN").unwrap_or_else(|_| "10000:384,100000:384".into());
    spec.split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|s| {
            let (n, d) = s
                .trim()
                .split_once(':')
                .expect("TRAJDB_BENCH_OPEN items are N:D");
            (
                n.parse().expect("N is a number"),
                d.parse().expect("D is a number"),
            )
        })
        .collect()
}

fn db_dir(n: usize, dims: usize) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("target/bench-db-open-{n}-{dims}"))
}

fn read_only() -> Options {
    Options {
        read_only: true,
        ..Options::default()
    }
}

/// True when `dir` holds the database this benchmark expects.
fn is_complete(dir: &Path, n: usize, dims: usize) -> bool {
    let Ok(db) = Database::open(dir, read_only()) else {
        return false;
    };
    let spaces_ok = db.spaces().len() == 3 && db.spaces().iter().all(|s| s.dims as usize == dims);
    spaces_ok && db.stats().trajectories == n as u64
}

/// Builds the database in a side directory and renames it into place, so an interrupted
/// build never leaves a partial database where the next run would trust it.
fn ensure_built(n: usize, dims: usize) -> PathBuf {
    let dir = db_dir(n, dims);
    if is_complete(&dir, n, dims) {
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
            u32::try_from(dims).expect("dims fit in u32"),
            &[
                ("goal", Level::Trajectory),
                ("plan", Level::Trajectory),
                ("obs", Level::Step),
            ],
        );
        let mut rng = Rng::new(0x0BE4);
        let mut batch = Vec::with_capacity(256);
        for i in 0..n {
            batch.push(trajectory(
                &mut rng,
                i,
                i % 2 == 0,
                STEPS,
                dims,
                &["goal", "plan"],
                &["obs"],
            ));
            if batch.len() == 256 || i + 1 == n {
                db.append_many(&batch).expect("append");
                batch.clear();
            }
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

fn label(n: usize) -> String {
    if n.is_multiple_of(1_000_000) {
        format!("{}M", n / 1_000_000)
    } else if n.is_multiple_of(1000) {
        format!("{}k", n / 1000)
    } else {
        n.to_string()
    }
}

/// Opens a writer once and closes it, so the checkpoint is this build's (a writer replaces
/// a checkpoint of another version; timed opens never pay for that).
fn ensure_checkpoint(dir: &Path) {
    let db = Database::open(dir, Options::default()).expect("open");
    db.close().expect("close");
}

/// Times `iters` read-only opens each followed by a first operation that reads the state:
/// a point lookup (`contains`, which checks only the checkpoint blocks it reads) or, with
/// `whole`, `stats` (which reads every trajectory, so it checks every block open left
/// unchecked).
fn time_open_first_use(dir: &Path, iters: u64, whole: bool) -> Duration {
    let mut total = Duration::ZERO;
    for _ in 0..iters {
        let start = Instant::now();
        let db = Database::open(dir, read_only()).expect("open");
        if whole {
            std::hint::black_box(db.stats());
        } else {
            std::hint::black_box(db.contains(1));
        }
        total += start.elapsed();
        drop(db);
    }
    total
}

fn bench_open(c: &mut Criterion) {
    let writer = Options {
        durability: Durability::Buffered,
        ..Options::default()
    };
    for (n, dims) in sizes() {
        let dir = ensure_built(n, dims);
        ensure_checkpoint(&dir);
        let mut g = c.benchmark_group(format!("open_{}x{STEPS}x{dims}", label(n)));
        g.sample_size(10)
            .sampling_mode(SamplingMode::Flat)
            .warm_up_time(Duration::from_secs(1))
            .measurement_time(Duration::from_secs(5));
        g.throughput(Throughput::Elements(n as u64));
        g.bench_function("writer", |b| {
            b.iter_custom(|iters| time_opens(&dir, &writer, iters))
        });
        g.bench_function("read_only", |b| {
            b.iter_custom(|iters| time_opens(&dir, &read_only(), iters))
        });
        g.bench_function("read_only_then_contains", |b| {
            b.iter_custom(|iters| time_open_first_use(&dir, iters, false))
        });
        g.bench_function("read_only_then_stats", |b| {
            b.iter_custom(|iters| time_open_first_use(&dir, iters, true))
        });
        g.finish();
    }
}

/// The retrieval timed after each open.
fn first_query(dims: usize) -> RetrieveQuery {
    let mut rng = Rng::new(0x0F1E);
    RetrieveQuery {
        keys: vec![
            ("goal".into(), rng.unit_vector(dims)),
            ("plan".into(), rng.unit_vector(dims)),
        ],
        step_key: Some(("obs".into(), rng.unit_vector(dims))),
        k: 10,
        window: 5,
        filter: Filter {
            success_only: true,
            ..Filter::default()
        },
        embedder: None,
    }
}

fn remove_bounds_files(dir: &Path) {
    for e in std::fs::read_dir(dir)
        .expect("read the database directory")
        .flatten()
    {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.ends_with(".idx") && (name.starts_with("quant-") || name.starts_with("bounds-")) {
            std::fs::remove_file(e.path()).expect("remove a bounds file");
        }
    }
}

fn bench_first_retrieve(c: &mut Criterion) {
    for (n, dims) in sizes() {
        let dir = ensure_built(n, dims);
        let q = first_query(dims);
        // A writer builds the bounds and saves them at close.
        let save = || {
            let db = Database::open(&dir, Options::default()).expect("open");
            db.retrieve(&q).expect("retrieve");
            db.close().expect("close");
        };
        let mut g = c.benchmark_group(format!("open_first_retrieve_{}x{STEPS}x{dims}", label(n)));
        g.sample_size(10)
            .sampling_mode(SamplingMode::Flat)
            .warm_up_time(Duration::from_secs(1))
            .measurement_time(Duration::from_secs(5));
        let timed = |iters: u64, remove: bool| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                if remove {
                    remove_bounds_files(&dir);
                }
                let start = Instant::now();
                let db = Database::open(&dir, read_only()).expect("open");
                db.retrieve(&q).expect("retrieve");
                total += start.elapsed();
                drop(db);
            }
            total
        };
        save();
        g.bench_function("with_bounds_files", |b| {
            b.iter_custom(|iters| timed(iters, false))
        });
        g.bench_function("rebuilding_bounds", |b| {
            b.iter_custom(|iters| timed(iters, true))
        });
        g.finish();
        save();
    }
}

/// The group lives in a private module: the macro makes a public function without docs.
mod group {
    criterion::criterion_group!(benches, super::bench_open, super::bench_first_retrieve);
}
criterion_main!(group::benches);
