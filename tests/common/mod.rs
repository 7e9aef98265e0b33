//! Helpers shared by the reliability tests: deterministic content derived from an id.
#![allow(dead_code)]

use std::sync::Arc;

use trajdb::storage::Backend;
use trajdb::{Database, Durability, Level, Metric, Options, SpaceDef, Step, Trajectory};

/// Dimensions of the trajectory-level key space `goal`.
pub const GOAL_DIMS: u32 = 4;
/// Dimensions of the step-level key space `obs`.
pub const OBS_DIMS: u32 = 3;

/// The two key spaces every reliability test uses.
pub fn spaces() -> [SpaceDef; 2] {
    [
        SpaceDef::new("goal", Level::Trajectory, GOAL_DIMS, Metric::Cosine),
        SpaceDef::new("obs", Level::Step, OBS_DIMS, Metric::L2),
    ]
}

/// Creates the key spaces.
pub fn create_spaces(db: &Database) {
    for s in spaces() {
        db.create_space(&s).unwrap();
    }
}

fn mix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn unit(x: u64) -> f32 {
    // Values in [0.05, 1.05): never zero, so cosine keys are valid.
    0.05 + (mix(x) % 1000) as f32 / 1000.0
}

/// The trajectory stored under `id`: everything, keys included, follows from the id.
pub fn traj_for(id: u64) -> Trajectory {
    let n_steps = (id % 4) as usize;
    let mut t = Trajectory {
        id: Some(id),
        task: format!("task-{}", id % 5),
        env: format!("env-{}", id % 3),
        goal: format!("goal of trajectory {id}"),
        plan: "x".repeat((mix(id) % 50) as usize),
        final_observation: format!("done {id}"),
        created_ms: 1_000 + i64::try_from(id).unwrap(),
        ..Default::default()
    };
    t.outcome.success = match id % 3 {
        0 => Some(true),
        1 => Some(false),
        _ => None,
    };
    for s in 0..n_steps {
        t.steps.push(Step {
            observation: format!("obs {id}.{s}"),
            reasoning: format!("think {id}.{s}"),
            action: format!("act {id}.{s}"),
            reward: (s % 2 == 0).then_some(s as f64),
        });
    }
    t.keys.insert(
        "goal".into(),
        (0..u64::from(GOAL_DIMS))
            .map(|d| unit(id * 31 + d))
            .collect(),
    );
    if n_steps == 0 {
        return t;
    }
    t.step_keys.insert(
        "obs".into(),
        (0..n_steps as u64)
            .map(|s| {
                (0..u64::from(OBS_DIMS))
                    .map(|d| unit(id * 977 + s * 7 + d))
                    .collect()
            })
            .collect(),
    );
    t
}

/// Options with the given durability.
pub fn opts(durability: Durability) -> Options {
    Options {
        durability,
        ..Options::default()
    }
}

/// Opens a database on `backend`.
pub fn open(backend: &Arc<dyn Backend>, durability: Durability) -> trajdb::Result<Database> {
    Database::open_backend(backend.clone(), opts(durability))
}
pub mod model;

/// Begins an episode and logs one planning-stage retrieval of trajectory `id` in it.
pub fn log_plan_retrieval(db: &Database, id: u64) -> u64 {
    let ep = db.begin_episode().unwrap();
    db.log_retrievals(
        ep,
        &[trajdb::RetrievalEvent {
            id,
            step: None,
            stage: trajdb::Stage::Plan,
        }],
    )
    .unwrap();
    ep
}
