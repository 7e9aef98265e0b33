//! Helpers shared by the integration tests: temporary directories, a seeded generator and
//! trajectory builders.
#![allow(dead_code)]

use std::path::PathBuf;

use trajdb::rng::SplitMix64;
use trajdb::{Level, Metric, SpaceDef, Step, Trajectory};

/// A fresh, empty temporary directory path (not created) unique to this test and process.
pub fn tmp(name: &str) -> PathBuf {
    let d = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("trajdb-test-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

/// A small deterministic generator over the crate's SplitMix64.
pub struct Rng(SplitMix64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(SplitMix64::new(seed))
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0.next_u64()
    }
    /// Uniform in [-1, 1).
    pub fn f32(&mut self) -> f32 {
        ((self.next_u64() >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
    pub fn vec(&mut self, dims: usize) -> Vec<f32> {
        (0..dims).map(|_| self.f32()).collect()
    }
}

/// `n` points of `dims` dimensions around `clusters` random centres (noise 0.35 per
/// component), seeded: the graph-index tests' clustered data.
pub fn clustered(rng: &mut Rng, n: usize, clusters: usize, dims: usize) -> Vec<Vec<f32>> {
    let centres: Vec<Vec<f32>> = (0..clusters).map(|_| rng.vec(dims)).collect();
    (0..n)
        .map(|i| {
            let c = &centres[(rng.next_u64() as usize + i) % clusters];
            c.iter().map(|&x| x + 0.35 * rng.f32()).collect()
        })
        .collect()
}

/// The standard test spaces: goal and plan (trajectory level), observation (step level).
pub fn spaces(dims: u32) -> Vec<SpaceDef> {
    vec![
        SpaceDef::new("goal", Level::Trajectory, dims, Metric::Cosine),
        SpaceDef::new("plan", Level::Trajectory, dims, Metric::Cosine),
        SpaceDef::new("observation", Level::Step, dims, Metric::Cosine),
    ]
}

/// A random trajectory with `steps` steps and keys in the standard spaces.
pub fn random_traj(rng: &mut Rng, dims: usize, steps: usize, n: u64) -> Trajectory {
    let mut t = Trajectory {
        task: format!("task-{}", n % 7),
        env: if n.is_multiple_of(3) {
            "alpha".into()
        } else {
            "beta".into()
        },
        goal: format!("goal {n}"),
        plan: format!("plan {n}"),
        ..Default::default()
    };
    t.outcome.success = Some(rng.below(3) != 0);
    t.keys.insert("goal".into(), rng.vec(dims));
    if rng.below(4) != 0 {
        t.keys.insert("plan".into(), rng.vec(dims));
    }
    let mut obs = Vec::new();
    for i in 0..steps {
        t.steps.push(Step {
            observation: format!("obs {n}.{i}"),
            reasoning: format!("think {n}.{i}"),
            action: format!("act {n}.{i}"),
            reward: None,
        });
        obs.push(rng.vec(dims));
    }
    t.step_keys.insert("observation".into(), obs);
    t
}

/// A fresh database under `tmp(name)` with `Durability::Buffered` and the standard spaces of
/// `dims` dimensions.
pub fn buffered_db(name: &str, dims: u32) -> (PathBuf, trajdb::Database) {
    let dir = tmp(name);
    let db = trajdb::Database::open(
        &dir,
        trajdb::Options {
            durability: trajdb::Durability::Buffered,
            ..Default::default()
        },
    )
    .unwrap();
    for s in spaces(dims) {
        db.create_space(&s).unwrap();
    }
    (dir, db)
}
