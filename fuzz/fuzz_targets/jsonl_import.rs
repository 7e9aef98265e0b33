//! One JSONL line parsed as a trajectory and appended to an in-memory database.
#![no_main]

mod shared;

use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use trajdb::storage::MemBackend;
use trajdb::{Database, Options, Trajectory};

fuzz_target!(|data: &[u8]| {
    let Ok(t) = serde_json::from_slice::<Trajectory>(data) else {
        return;
    };
    let db = Database::open_backend(Arc::new(MemBackend::new()), Options::default()).unwrap();
    shared::common::create_spaces(&db);
    if let Ok(id) = db.append(&t) {
        let back = db.get(id).unwrap();
        assert_eq!(back.goal, t.goal);
        assert_eq!(back.steps.len(), t.steps.len());
        db.verify().unwrap();
    }
});
