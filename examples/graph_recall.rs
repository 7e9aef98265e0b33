//! Recall@10 and p50 latency of `search_approx` per ef, and the graph's build time, on rows
//! read from raw little-endian f32 files (for example written by numpy with
//! `benches/peers/ann.py`'s data model), against ground truth ids in a raw u32 file.
//!
//! cargo run --release --example graph_recall -- X.f32 Q.f32 GT.u32 [m] [ef_construction]
//!
//! X: n rows of 384 f32; Q: queries of 384 f32; GT: 10 u32 row indexes per query (exact
//! top-10 by inner product). Single thread. Prints one line per ef.

use std::time::Instant;

use trajdb::{Database, Durability, Filter, GraphParams, Level, Options, SpaceDef, Trajectory};

const DIMS: usize = 384;

fn f32s(path: &str) -> Vec<f32> {
    let b = std::fs::read(path).expect("read rows");
    b.chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

fn main() {
    let a: Vec<String> = std::env::args().collect();
    if a.len() < 4 {
        eprintln!("usage: graph_recall X.f32 Q.f32 GT.u32 [m] [ef_construction]");
        std::process::exit(2);
    }
    let x = f32s(&a[1]);
    let q = f32s(&a[2]);
    let gt: Vec<u32> = std::fs::read(&a[3])
        .expect("read truth")
        .chunks_exact(4)
        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    let m = a.get(4).map_or(16, |s| s.parse().expect("m"));
    let efc = a
        .get(5)
        .map_or(100, |s| s.parse().expect("ef_construction"));
    let n = x.len() / DIMS;
    // `GRAPH_DIR=path`: keep the database there and reuse it (opened read-only, graph file
    // mapped) when it already has a graph, so repeated runs (a profiler's) skip the build.
    let keep = std::env::var("GRAPH_DIR").ok();
    let dir = keep.clone().map_or_else(
        || std::env::temp_dir().join(format!("trajdb-graph-recall-{n}")),
        std::path::PathBuf::from,
    );
    let db = if keep.is_some() && dir.join("graph-0.idx").exists() {
        println!("n {n}: reusing {}", dir.display());
        Database::open(
            &dir,
            Options {
                read_only: true,
                ..Default::default()
            },
        )
        .expect("open")
    } else {
        build(&dir, &x, m, efc)
    };
    let nq = q.len() / DIMS;
    let mut exact_hit = 0usize;
    // `SKIP_EXACT=1`: no exact pass (profiling the walk only).
    let exact_queries = if std::env::var("SKIP_EXACT").is_ok() {
        0
    } else {
        nq
    };
    for (i, v) in q.chunks_exact(DIMS).take(exact_queries).enumerate() {
        let h = db
            .search("goal", v, 10, &Filter::default())
            .expect("search");
        let want = &gt[i * 10..i * 10 + 10];
        exact_hit += h
            .iter()
            .filter(|h| want.contains(&((h.id - 1) as u32)))
            .count();
    }
    println!(
        "  exact search against the truth file: recall@10 {:.4}",
        exact_hit as f64 / (nq * 10) as f64
    );
    let efs: Vec<usize> = std::env::var("EFS")
        .ok()
        .map(|s| s.split(',').map(|x| x.parse().expect("EFS")).collect())
        .unwrap_or_else(|| vec![16, 32, 64, 128]);
    // `REPS=r`: every query r times per ef (recall from the last pass), for a profiler.
    let reps: usize = std::env::var("REPS").map_or(1, |s| s.parse().expect("REPS"));
    for ef in efs {
        let mut lat = Vec::with_capacity(nq * reps);
        let mut hit = 0usize;
        for (i, v) in (0..reps).flat_map(|_| q.chunks_exact(DIMS).enumerate()) {
            let t = Instant::now();
            let h = db
                .search_approx("goal", v, 10, ef, &Filter::default())
                .expect("search");
            lat.push(t.elapsed().as_secs_f64() * 1e3);
            let want = &gt[i * 10..i * 10 + 10];
            hit += h
                .iter()
                .filter(|h| want.contains(&((h.id - 1) as u32)))
                .count();
        }
        hit /= reps;
        lat.sort_by(f64::total_cmp);
        println!(
            "  ef {ef:4}: recall@10 {:.4}, p50 {:.3} ms",
            hit as f64 / (nq * 10) as f64,
            lat[lat.len() / 2]
        );
    }
}

/// Appends the rows of `x` to a new database in `dir` and builds the graph of its space.
fn build(dir: &std::path::Path, x: &[f32], m: usize, efc: usize) -> Database {
    let n = x.len() / DIMS;
    let _ = std::fs::remove_dir_all(dir);
    let db = Database::open(
        dir,
        Options {
            durability: Durability::Buffered,
            ..Default::default()
        },
    )
    .expect("open");
    db.create_space(&SpaceDef::new(
        "goal",
        Level::Trajectory,
        DIMS as u32,
        trajdb::Metric::Cosine,
    ))
    .expect("space");
    let ts: Vec<Trajectory> = x
        .chunks_exact(DIMS)
        .enumerate()
        .map(|(i, v)| {
            let mut t = Trajectory {
                goal: String::new(),
                ..Default::default()
            };
            t.outcome.success = Some(i % 10 == 0);
            t.keys.insert("goal".into(), v.to_vec());
            t
        })
        .collect();
    for c in ts.chunks(2000) {
        db.append_many(c).expect("append");
    }
    let t = Instant::now();
    db.build_graph(
        "goal",
        GraphParams {
            m,
            ef_construction: efc,
        },
    )
    .expect("build");
    let build = t.elapsed().as_secs_f64();
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "n {n}, m {m}, ef_construction {efc}: build {build:.1} s; load {}",
        load.trim()
    );
    db
}
