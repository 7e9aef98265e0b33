//! Model-based test: random operation sequences with crashes, reopens, compaction and
//! forks; after every crash the database equals the model's durable state.
#![allow(clippy::unwrap_used)] // tests may unwrap

mod common;

use common::model::{durability_for, gen_ops, run};

#[test]
fn random_sequences_with_crashes_match_the_model() {
    let seeds: u64 = std::env::var("TRAJDB_MODEL_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(300);
    let start = std::time::Instant::now();
    let mut checks = 0;
    let mut ops = 0;
    for seed in 0..seeds {
        let seq = gen_ops(
            seed,
            std::env::var("TRAJDB_MODEL_LEN")
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(40),
        );
        ops += seq.len();
        let r = std::panic::catch_unwind(|| run(&seq, durability_for(seed)));
        match r {
            Ok(n) => checks += n,
            Err(_) => panic!("sequence seed {seed} failed: {seq:?}"),
        }
    }
    eprintln!(
        "model_ops: {seeds} sequences, {ops} operations, {checks} crash/reopen states checked in {:.1} s",
        start.elapsed().as_secs_f64()
    );
}
