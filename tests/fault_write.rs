//! A failed write (cut short half way) leaves nothing half there after reopening.
#![allow(clippy::unwrap_used)] // tests may unwrap

mod common;

use std::sync::Arc;

use common::{create_spaces, open, traj_for};
use trajdb::storage::fault::{CrashBackend, FailingBackend, Op};
use trajdb::storage::Backend;
use trajdb::{Durability, Error, RetrievalEvent, Stage};

#[test]
fn failed_write_leaves_no_partial_record_after_reopen() {
    let mut cases = 0;
    for kind in [Some(Op::Write), Some(Op::SetLen), Some(Op::Read), None] {
        for fail_at in 1..=40u64 {
            let crash = CrashBackend::new();
            let failing = FailingBackend::new(Arc::new(crash.clone()), kind, 0);
            let backend: Arc<dyn Backend> = Arc::new(failing.clone());
            let db = open(&backend, Durability::SyncEachCommit).unwrap();
            create_spaces(&db);
            failing.fail_after(fail_at);
            let mut acked = Vec::new();
            let mut ep_events = 0u64;
            let mut failed = None;
            for id in 1..=8u64 {
                let r = db.append(&traj_for(id)).and_then(|_| {
                    acked.push(id);
                    let ep = db.begin_episode()?;
                    db.log_retrievals(
                        ep,
                        &[RetrievalEvent {
                            id,
                            step: None,
                            stage: Stage::Plan,
                        }],
                    )?;
                    ep_events += 1;
                    Ok(())
                });
                if let Err(e) = r {
                    failed = Some(id);
                    assert!(
                        matches!(
                            e,
                            Error::Io { .. } | Error::PreviousIo | Error::AfterCommit { .. }
                        ),
                        "unexpected error {e}"
                    );
                    break;
                }
            }
            if failed.is_none() {
                continue;
            }
            cases += 1;
            assert!(matches!(db.append(&traj_for(99)), Err(Error::PreviousIo)));
            drop(db);
            for (label, state) in [("no crash", crash.clone()), ("crash", crash.crash())] {
                let b: Arc<dyn Backend> = Arc::new(state);
                let db = open(&b, Durability::SyncEachCommit)
                    .unwrap_or_else(|e| panic!("{kind:?} #{fail_at} {label}: reopen failed: {e}"));
                let ids = db.ids();
                let f = failed.unwrap_or(0);
                assert!(
                    ids == acked || ids == [acked.clone(), vec![f]].concat(),
                    "{kind:?} #{fail_at} {label}: ids {ids:?} acked {acked:?}"
                );
                for id in &ids {
                    assert_eq!(db.get(*id).unwrap(), traj_for(*id));
                }
                let events: u64 = db.episodes().iter().map(|e| e.events.len() as u64).sum();
                assert!(events == ep_events || events == ep_events + 1);
                db.verify().unwrap();
            }
        }
    }
    assert!(cases > 40, "only {cases} failures were injected");
    eprintln!("fault_write: {cases} injected failures recovered");
}
