//! Approximate top-10 through the graph index against the exact scan, on clustered unit
//! 384-d keys (synthetic: 100 centres, noise 0.6 per component, normalised), with and
//! without a success filter passing 1 row in 10; recall@10 against the exact answer is
//! printed for every ef before it is timed. Also the approximate retrieve against the exact
//! one (goal key + step key, success filter). Sizes: `TRAJDB_GRAPH_N` rows (default 20,000;
//! building the graph is one insertion per row).

mod common;

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_main, BenchmarkId, Criterion};
use trajdb::{Database, Durability, Filter, GraphParams, Level, RetrieveQuery};

use common::{new_db, scratch, trajectory, Rng};

const DIMS: usize = 384;

fn clustered(rng: &mut Rng, centres: &[Vec<f32>]) -> Vec<f32> {
    let c = &centres[(rng.next_u64() % centres.len() as u64) as usize];
    let mut v: Vec<f32> = c.iter().map(|&x| x + 0.6 * rng.signed_unit()).collect();
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.iter_mut().for_each(|x| *x /= n);
    v
}

fn build(n: usize, steps: usize) -> (Database, Vec<Vec<f32>>, Vec<Vec<f32>>) {
    let dir = scratch(&format!("graph-{n}-{steps}"));
    let spaces: &[(&str, Level)] = &[("goal", Level::Trajectory), ("obs", Level::Step)];
    let db = new_db(&dir, Durability::Buffered, DIMS as u32, spaces);
    let mut rng = Rng::new(0x6A4F + n as u64);
    let centres: Vec<Vec<f32>> = (0..100).map(|_| rng.unit_vector(DIMS)).collect();
    for i in 0..n {
        let mut t = trajectory(&mut rng, i, i.is_multiple_of(10), steps, DIMS, &[], &[]);
        t.keys.insert("goal".into(), clustered(&mut rng, &centres));
        if steps > 0 {
            let obs = (0..steps).map(|_| clustered(&mut rng, &centres)).collect();
            t.step_keys.insert("obs".into(), obs);
        }
        db.append(&t).expect("append");
    }
    let p = GraphParams {
        m: 16,
        ef_construction: 100,
    };
    let t = Instant::now();
    db.build_graph("goal", p).expect("build");
    eprintln!(
        "graph of {n} goal rows built in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    if steps > 0 {
        let t = Instant::now();
        db.build_graph("obs", p).expect("build");
        eprintln!(
            "graph of {} step rows built in {:.1} s",
            n * steps,
            t.elapsed().as_secs_f64()
        );
    }
    let queries: Vec<Vec<f32>> = (0..50).map(|_| clustered(&mut rng, &centres)).collect();
    let steps_q: Vec<Vec<f32>> = (0..50).map(|_| clustered(&mut rng, &centres)).collect();
    (db, queries, steps_q)
}

fn recall(db: &Database, qs: &[Vec<f32>], ef: usize, f: &Filter) -> f64 {
    let mut hit = 0;
    for q in qs {
        let exact = db.search("goal", q, 10, f).expect("search");
        let approx = db
            .search_approx("goal", q, 10, ef, f)
            .expect("search_approx");
        hit += approx
            .iter()
            .filter(|a| exact.iter().any(|e| e.id == a.id))
            .count();
    }
    hit as f64 / (10 * qs.len()) as f64
}

fn bench_graph(c: &mut Criterion) {
    let n = std::env::var("TRAJDB_GRAPH_N")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20_000);
    let (db, qs, _) = build(n, 0);
    let mut g = c.benchmark_group("graph");
    g.sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    let success = Filter {
        success_only: true,
        ..Default::default()
    };
    for (label, f) in [("all", Filter::default()), ("success", success)] {
        for ef in [16usize, 32, 64, 128] {
            eprintln!(
                "{label} rows, {n}: recall@10 at ef {ef}: {:.4}",
                recall(&db, &qs, ef, &f)
            );
            let mut i = 0;
            g.bench_function(BenchmarkId::new(format!("approx-{label}-ef{ef}"), n), |b| {
                b.iter(|| {
                    i = (i + 1) % qs.len();
                    black_box(
                        db.search_approx("goal", &qs[i], 10, ef, &f)
                            .expect("search"),
                    )
                })
            });
        }
        let mut i = 0;
        g.bench_function(BenchmarkId::new(format!("exact-{label}"), n), |b| {
            b.iter(|| {
                i = (i + 1) % qs.len();
                black_box(db.search("goal", &qs[i], 10, &f).expect("search"))
            })
        });
    }
    g.finish();
}

fn bench_retrieve(c: &mut Criterion) {
    let (db, qs, steps_q) = build(2_000, 10);
    let query = |i: usize| RetrieveQuery {
        keys: vec![("goal".into(), qs[i].clone())],
        step_key: Some(("obs".into(), steps_q[i].clone())),
        k: 10,
        window: 5,
        filter: Filter {
            success_only: true,
            ..Default::default()
        },
        embedder: None,
    };
    for ef in [32usize, 64] {
        let mut hit = 0;
        for i in 0..qs.len() {
            let exact = db.retrieve(&query(i)).expect("retrieve");
            let approx = db.retrieve_approx(&query(i), ef).expect("retrieve_approx");
            hit += approx
                .iter()
                .filter(|a| exact.iter().any(|e| e.id == a.id))
                .count();
        }
        eprintln!(
            "retrieve_approx 2000 x 10: recall@10 at ef {ef}: {:.4}",
            hit as f64 / (10 * qs.len()) as f64
        );
    }
    let mut g = c.benchmark_group("retrieve-graph");
    g.sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    let mut i = 0;
    g.bench_function("approx-ef64-2000x10", |b| {
        b.iter(|| {
            i = (i + 1) % qs.len();
            black_box(db.retrieve_approx(&query(i), 64).expect("retrieve"))
        })
    });
    g.bench_function("exact-2000x10", |b| {
        b.iter(|| {
            i = (i + 1) % qs.len();
            black_box(db.retrieve(&query(i)).expect("retrieve"))
        })
    });
    g.finish();
}

/// The group lives in a private module: the macro makes a public function without docs.
mod group {
    criterion::criterion_group!(benches, super::bench_graph, super::bench_retrieve);
}
criterion_main!(group::benches);
