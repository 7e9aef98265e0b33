//! A failed sync makes the handle fail stop, and reopening recovers from what was synced.
#![allow(clippy::unwrap_used)] // tests may unwrap

mod common;

use std::sync::Arc;

use common::{create_spaces, open, traj_for};
use trajdb::storage::fault::{CrashBackend, FailingBackend, Op};
use trajdb::storage::Backend;
use trajdb::{Durability, Error, Outcome};

/// Appends ids 1.. until the injected sync failure; returns the acknowledged ids.
fn append_until_failure(db: &trajdb::Database, max: u64) -> (Vec<u64>, Option<u64>) {
    let mut acked = Vec::new();
    for id in 1..=max {
        match db.append(&traj_for(id)) {
            Ok(got) => {
                assert_eq!(got, id);
                acked.push(id);
            }
            Err(e) => {
                assert!(matches!(e, Error::Io { op: "sync", .. }), "got {e}");
                return (acked, Some(id));
            }
        }
    }
    (acked, None)
}

#[test]
fn failed_sync_poisons_every_later_write_and_reopen_recovers_acknowledged_commits() {
    for durability in [Durability::SyncEachCommit, Durability::GroupCommit] {
        for fail_at in 1..=12u64 {
            let crash = CrashBackend::new();
            let inner: Arc<dyn Backend> = Arc::new(crash.clone());
            let failing = FailingBackend::new(inner, Some(Op::Sync), 0);
            let backend: Arc<dyn Backend> = Arc::new(failing.clone());
            let db = open(&backend, durability).unwrap();
            create_spaces(&db);
            failing.fail_after(fail_at);
            let (acked, failed) = append_until_failure(&db, 20);
            let failed = failed.expect("the injected sync failure must surface");
            assert!(failing.fired());
            // Fail stop: every later write is refused, none is reported durable.
            assert!(matches!(db.append(&traj_for(1000)), Err(Error::PreviousIo)));
            assert!(matches!(db.delete(1), Err(Error::PreviousIo)));
            assert!(matches!(db.begin_episode(), Err(Error::PreviousIo)));
            assert!(matches!(
                db.set_outcome(1, Outcome::default()),
                Err(Error::PreviousIo) | Err(Error::NotFound { .. })
            ));
            assert!(matches!(db.sync(), Err(Error::PreviousIo)));
            assert!(matches!(db.compact(), Err(Error::PreviousIo)));
            drop(db);
            // A power cut now: only synced bytes survive.
            let after: Arc<dyn Backend> = Arc::new(crash.crash());
            let db = open(&after, durability).unwrap();
            let ids = db.ids();
            // Acknowledged commits are all there; the failed one is there whole or not at all.
            assert!(
                ids == acked || ids == [acked.clone(), vec![failed]].concat(),
                "{durability:?} fail_at {fail_at}: ids {ids:?}, acknowledged {acked:?}"
            );
            for id in &ids {
                assert_eq!(db.get(*id).unwrap(), traj_for(*id));
            }
            db.verify().unwrap();
            // The reopened handle writes again.
            db.append(&traj_for(500)).unwrap();
            db.verify().unwrap();
        }
    }
}

#[test]
fn failed_sync_in_group_commit_never_acknowledges_a_later_commit() {
    let crash = CrashBackend::new();
    let failing = FailingBackend::new(Arc::new(crash.clone()), Some(Op::Sync), 0);
    let backend: Arc<dyn Backend> = Arc::new(failing.clone());
    let db = open(&backend, Durability::GroupCommit).unwrap();
    create_spaces(&db);
    db.append(&traj_for(1)).unwrap();
    failing.fail_after(1);
    assert!(db.append(&traj_for(2)).is_err());
    for id in 3..10 {
        assert!(matches!(db.append(&traj_for(id)), Err(Error::PreviousIo)));
    }
    drop(db);
    let db = open(
        &(Arc::new(crash.crash()) as Arc<dyn Backend>),
        Durability::GroupCommit,
    )
    .unwrap();
    assert!(db.ids().starts_with(&[1]));
    assert!(db.ids().iter().all(|&id| id <= 2));
    db.verify().unwrap();
}
