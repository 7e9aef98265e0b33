//! Helpers shared by the benchmarks: a small seeded PRNG, random unit vectors, scratch
//! directories and database builders.

#![allow(dead_code)] // each bench uses a different subset

use std::path::{Path, PathBuf};

use trajdb::rng::SplitMix64;
use trajdb::{Database, Durability, Level, Metric, Options, SpaceDef, Step, Trajectory};

/// A seeded, reproducible generator (the crate's SplitMix64).
pub struct Rng(SplitMix64);

impl Rng {
    /// A generator started from `seed`.
    pub fn new(seed: u64) -> Self {
        Rng(SplitMix64::new(seed))
    }

    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0.next_u64()
    }

    /// Uniform in [-1, 1).
    pub fn signed_unit(&mut self) -> f32 {
        // 24 random bits give every f32 in the range the same spacing.
        let bits = u32::try_from(self.next_u64() >> 40).expect("24 bits fit in u32");
        let x = f64::from(bits) / f64::from(1u32 << 24);
        (x * 2.0 - 1.0) as f32
    }

    /// A random vector of `dims` values scaled to unit length.
    pub fn unit_vector(&mut self, dims: usize) -> Vec<f32> {
        loop {
            let v: Vec<f32> = (0..dims).map(|_| self.signed_unit()).collect();
            let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
            if norm > 1e-6 {
                return v.into_iter().map(|x| x / norm).collect();
            }
        }
    }
}

/// A fresh, empty scratch directory under the system temp dir (removed first if present).
pub fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("trajdb-bench-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

/// Options for building a database quickly: buffered commits.
pub fn buffered() -> Options {
    Options {
        durability: Durability::Buffered,
        ..Options::default()
    }
}

/// Opens a new database in `dir` with `durability` and creates the key spaces
/// `(name, level)`, all cosine over `dims` dimensions.
pub fn new_db(dir: &Path, durability: Durability, dims: u32, spaces: &[(&str, Level)]) -> Database {
    let db = Database::open(
        dir,
        Options {
            durability,
            ..Options::default()
        },
    )
    .expect("open bench database");
    for (name, level) in spaces {
        db.create_space(&SpaceDef::new(*name, *level, dims, Metric::Cosine))
            .expect("create key space");
    }
    db
}

/// A trajectory of `steps` short text steps, success or failure, with keys filled in by
/// `rng`: one unit vector per trajectory-level space in `traj_keys` and one per step per
/// step-level space in `step_keys`.
pub fn trajectory(
    rng: &mut Rng,
    i: usize,
    success: bool,
    steps: usize,
    dims: usize,
    traj_keys: &[&str],
    step_keys: &[&str],
) -> Trajectory {
    let mut t = Trajectory {
        task: format!("task-{}", i % 1000),
        env: "bench".into(),
        goal: format!("goal number {i}: put a clean mug in the coffee machine"),
        plan: format!("plan {i}: find mug, clean mug, put mug in coffee machine"),
        ..Default::default()
    };
    t.outcome.success = Some(success);
    for s in 0..steps {
        t.steps.push(Step {
            observation: format!("you are in the kitchen; step {s}; you see a mug and a sink"),
            reasoning: format!("think: the mug must be cleaned first (step {s})"),
            action: format!("go to sink {s}"),
            reward: None,
        });
    }
    for name in traj_keys {
        t.keys.insert((*name).into(), rng.unit_vector(dims));
    }
    for name in step_keys {
        t.step_keys.insert(
            (*name).into(),
            (0..steps).map(|_| rng.unit_vector(dims)).collect(),
        );
    }
    t
}
