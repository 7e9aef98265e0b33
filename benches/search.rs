//! Exact top-10 search over one 384-dim cosine key space, with and without the success
//! filter, and batched (`search_many`, 8 queries per pass), next to baselines over a buffer
//! of the same size: a plain sequential memory read (sum of f32s), the blocked row kernel
//! over every row (what a search runs), and SimSIMD's pairwise cosine per row (what
//! searches ran before key-file version 2).

mod common;

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_main, BenchmarkId, Criterion, Throughput};
use trajdb::index::kernels::{implementation, similarity, Prepared, BLOCK_ROWS};
use trajdb::{Database, Durability, Filter, Level, Metric, Options};

use common::{new_db, scratch, trajectory, Rng};

const DIMS: usize = 384;
const SIZES: [usize; 2] = [10_000, 100_000];

/// A database of `n` trajectories with only a `goal` key; every second one successful.
fn build(n: usize) -> (std::path::PathBuf, Database) {
    let dir = scratch(&format!("search-{n}"));
    let dims = u32::try_from(DIMS).expect("dims fit in u32");
    let db = new_db(
        &dir,
        Durability::Buffered,
        dims,
        &[("goal", Level::Trajectory)],
    );
    let mut rng = Rng::new(0x5EA2C4 + n as u64);
    for i in 0..n {
        let t = trajectory(&mut rng, i, i % 2 == 0, 0, DIMS, &["goal"], &[]);
        db.append(&t).expect("append");
    }
    db.sync().expect("sync");
    (dir, db)
}

/// Sum of all values with 16 independent accumulators, so the loop vectorises without
/// reassociating one long chain of float additions.
fn sum_f32(buf: &[f32]) -> f32 {
    let mut acc = [0f32; 16];
    let mut chunks = buf.chunks_exact(16);
    for c in &mut chunks {
        for (a, x) in acc.iter_mut().zip(c) {
            *a += *x;
        }
    }
    acc.iter().sum::<f32>() + chunks.remainder().iter().sum::<f32>()
}

fn bench_search(c: &mut Criterion) {
    eprintln!("row kernel: {}", implementation());
    let mut g = c.benchmark_group("search");
    g.sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    let mut q_rng = Rng::new(42);
    let query = q_rng.unit_vector(DIMS);
    for n in SIZES {
        let bytes = (n * DIMS * 4) as u64;
        g.throughput(Throughput::Bytes(bytes));

        // Baselines over a heap buffer of the same size.
        let mut rng = Rng::new(7);
        let buf: Vec<f32> = (0..n * DIMS).map(|_| rng.signed_unit()).collect();
        g.bench_with_input(
            BenchmarkId::new("memory_read_sum_f32", n),
            &buf,
            |b, buf| b.iter(|| sum_f32(black_box(buf))),
        );
        let prepared = Prepared::new(Metric::Cosine, &query);
        g.bench_with_input(
            BenchmarkId::new("kernel_only_blocked", n),
            &buf,
            |b, buf| {
                let mut out = [0f32; BLOCK_ROWS];
                b.iter(|| {
                    let mut best = f32::NEG_INFINITY;
                    for block in black_box(buf).chunks(BLOCK_ROWS * DIMS) {
                        let m = block.len() / DIMS;
                        prepared.score_rows(block, DIMS, &mut out[..m]);
                        best = out[..m].iter().fold(best, |a, &x| a.max(x));
                    }
                    best
                })
            },
        );
        g.bench_with_input(
            BenchmarkId::new("kernel_only_pairwise_cosine", n),
            &buf,
            |b, buf| {
                b.iter(|| {
                    let mut best = f32::NEG_INFINITY;
                    for row in black_box(buf).chunks_exact(DIMS) {
                        best = best.max(similarity(Metric::Cosine, row, &query));
                    }
                    best
                })
            },
        );
        drop(buf);

        let (dir, db) = build(n);
        let all = Filter::default();
        let ok = Filter {
            success_only: true,
            ..Default::default()
        };
        g.bench_with_input(BenchmarkId::new("top10_no_filter", n), &db, |b, db| {
            b.iter(|| {
                db.search("goal", black_box(&query), 10, &all)
                    .expect("search")
            })
        });
        g.bench_with_input(BenchmarkId::new("top10_success_only", n), &db, |b, db| {
            b.iter(|| {
                db.search("goal", black_box(&query), 10, &ok)
                    .expect("search")
            })
        });
        // The same search on a read-only handle that scans the f32 rows (no i8 first
        // pass): issue 15's "i8 scan + f32 rerank at >= 3x the f32 scan" compares
        // `top10_no_filter` with this line.
        let f32_handle = Database::open(
            &dir,
            Options {
                read_only: true,
                quantised_search: false,
                ..Options::default()
            },
        )
        .expect("open read-only f32 handle");
        let i8_handle = Database::open(
            &dir,
            Options {
                read_only: true,
                ..Options::default()
            },
        )
        .expect("open read-only handle");
        g.bench_with_input(
            BenchmarkId::new("top10_read_only_f32_scan", n),
            &f32_handle,
            |b, db| {
                b.iter(|| {
                    db.search("goal", black_box(&query), 10, &all)
                        .expect("search")
                })
            },
        );
        g.bench_with_input(
            BenchmarkId::new("top10_read_only_i8_first_pass", n),
            &i8_handle,
            |b, db| {
                b.iter(|| {
                    db.search("goal", black_box(&query), 10, &all)
                        .expect("search")
                })
            },
        );
        drop((f32_handle, i8_handle));
        // Eight queries in one pass; throughput counts the rows' bytes once per query, so
        // the figure compares with the single-query lines directly.
        let batch: Vec<Vec<f32>> = (0..8).map(|_| q_rng.unit_vector(DIMS)).collect();
        g.throughput(Throughput::Bytes(bytes * 8));
        g.bench_with_input(BenchmarkId::new("top10_search_many_8", n), &db, |b, db| {
            b.iter(|| {
                db.search_many("goal", black_box(&batch), 10, &all)
                    .expect("search_many")
            })
        });
        drop(db);
        let _ = std::fs::remove_dir_all(&dir);
    }
    g.finish();
}

/// The group lives in a private module: the macro makes a public function without docs.
mod group {
    criterion::criterion_group!(benches, super::bench_search);
}
criterion_main!(group::benches);
