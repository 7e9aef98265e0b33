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
    let (ckpt, full) = (
        common::model::CHECKPOINT_OPENS.load(std::sync::atomic::Ordering::Relaxed),
        common::model::FULL_SCAN_CHECKS.load(std::sync::atomic::Ordering::Relaxed),
    );
    eprintln!(
        "model_ops: {seeds} sequences, {ops} operations, {checks} crash/reopen states checked in {:.1} s; {full} opens compared with a full scan, {ckpt} of them from a checkpoint",
        start.elapsed().as_secs_f64()
    );
    assert!(
        seeds < 20 || ckpt * 4 > full,
        "too few opens used a checkpoint: {ckpt} of {full}"
    );
}

/// Compaction in a loop beside `GroupCommit` appends (with deletes) and readers; what a
/// power cut leaves is checked again and again: every acknowledged commit there.
#[test]
fn compaction_beside_group_commit_appends_and_readers_loses_nothing() {
    let secs: f64 = std::env::var("TRAJDB_CONCURRENT_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(4.0);
    let f = common::model::run_concurrent(secs, 11);
    eprintln!(
        "model_ops concurrent: {secs} s, {} crash states checked, {} commits acknowledged, {} compactions, {} reads beside them, nothing lost",
        f.crashes, f.acked, f.compactions, f.reads
    );
    assert!(f.crashes > 10 && f.compactions > 10, "{f:?}");
}

/// Every I/O operation of compact, fork (source and destination side) and checkpoint
/// failed in turn, for every kind of failure, on varied content and both durable modes.
#[test]
fn failure_at_every_step_of_compact_fork_and_checkpoint_matches_the_model() {
    use common::model::{fault_every_step, Maintenance};
    let seeds: u64 = std::env::var("TRAJDB_FAULT_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(4);
    let (mut injected, mut states) = (0, 0);
    for seed in 0..seeds {
        for what in [
            Maintenance::Compact,
            Maintenance::ForkSource,
            Maintenance::ForkDestination,
            Maintenance::Checkpoint,
            Maintenance::StateCheckpoint,
        ] {
            let durability = [
                trajdb::Durability::SyncEachCommit,
                trajdb::Durability::GroupCommit,
            ][usize::try_from(seed % 2).unwrap()];
            let f = fault_every_step(what, seed, durability);
            injected += f.injected;
            states += f.states;
        }
    }
    eprintln!(
        "model_ops faults: {seeds} seeds x compact, fork (source, destination), sync, checkpoint: {injected} failures injected, {states} states checked against the model, nothing lost"
    );
    assert!(injected > 100, "{injected}");
}
