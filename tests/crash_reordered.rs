//! Under Buffered durability, unsynced frames may reach the disk out of order. After such a
//! crash the database either opens with a prefix of the commits, or refuses with a
//! corruption error and `repair` keeps a prefix; either way every commit synced before the
//! crash is there, intact, and nothing is half there.
#![allow(clippy::unwrap_used)] // tests may unwrap

mod common;

use std::sync::Arc;

use common::{create_spaces, open, traj_for};
use trajdb::storage::fault::CrashBackend;
use trajdb::storage::Backend;
use trajdb::{Database, Durability, Error};

#[test]
fn out_of_order_unsynced_writes_leave_a_prefix_that_open_or_repair_recovers() {
    let (mut opened, mut repaired) = (0, 0);
    for seed in 0..200u64 {
        let crash = CrashBackend::new();
        let backend: Arc<dyn Backend> = Arc::new(crash.clone());
        let db = open(&backend, Durability::Buffered).unwrap();
        create_spaces(&db);
        let synced = 3 + seed % 5;
        for id in 1..=synced {
            db.append(&traj_for(id)).unwrap();
        }
        db.sync().unwrap();
        let total = synced + 1 + seed % 7;
        for id in synced + 1..=total {
            db.append(&traj_for(id)).unwrap();
        }
        let after = crash.crash_reordered(seed);
        std::mem::forget(db); // the process died: no sync on drop
        let b: Arc<dyn Backend> = Arc::new(after.clone());
        let db = match open(&b, Durability::Buffered) {
            Ok(db) => {
                opened += 1;
                db
            }
            Err(e) => {
                assert!(matches!(e, Error::Corrupt { .. }), "seed {seed}: {e}");
                let report = Database::repair_backend(&after).unwrap();
                assert!(report.cut_at.is_some(), "seed {seed}: repair found nothing");
                repaired += 1;
                open(&b, Durability::Buffered)
                    .unwrap_or_else(|e| panic!("seed {seed}: open after repair: {e}"))
            }
        };
        let ids = db.ids();
        let n = u64::try_from(ids.len()).unwrap();
        assert!(
            n >= synced && n <= total,
            "seed {seed}: {n} of {total} commits"
        );
        assert_eq!(
            ids,
            (1..=n).collect::<Vec<_>>(),
            "seed {seed}: not a prefix"
        );
        for id in ids {
            assert_eq!(db.get(id).unwrap(), traj_for(id), "seed {seed}: id {id}");
        }
        db.verify().unwrap();
    }
    assert!(
        repaired > 0 && opened > 0,
        "opened {opened}, repaired {repaired}"
    );
    eprintln!("crash_reordered: 200 crashes, {opened} opened directly, {repaired} needed repair");
}
