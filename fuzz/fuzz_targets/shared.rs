//! Helpers shared by the fuzz targets.
#![allow(dead_code, clippy::unwrap_used)]

use std::sync::{Arc, OnceLock};

use trajdb::storage::{Backend, MemBackend};
use trajdb::{Database, Durability, Options, Trajectory};

#[path = "../../tests/common/mod.rs"]
pub mod common;

/// Files of a small valid database: (name, bytes), sorted by name.
pub fn seed_db() -> &'static Vec<(String, Vec<u8>)> {
    static DB: OnceLock<Vec<(String, Vec<u8>)>> = OnceLock::new();
    DB.get_or_init(|| {
        let mem = MemBackend::new();
        {
            let db = Database::open_backend(Arc::new(mem.clone()), Options::default()).unwrap();
            common::create_spaces(&db);
            for id in 1..=4 {
                db.append(&common::traj_for(id)).unwrap();
            }
            let ep = db.begin_episode().unwrap();
            db.log_retrievals(
                ep,
                &[trajdb::RetrievalEvent {
                    id: 2,
                    step: Some(1),
                    stage: trajdb::Stage::Reason,
                }],
            )
            .unwrap();
            db.set_episode_outcome(ep, Some(true)).unwrap();
            db.delete(3).unwrap();
            db.build_graph(
                "goal",
                trajdb::GraphParams {
                    m: 2,
                    ef_construction: 4,
                },
            )
            .unwrap();
            db.sync().unwrap();
        }
        mem.list()
            .unwrap()
            .into_iter()
            .filter(|n| n != trajdb::LOCK_FILE)
            .map(|n| {
                let b = mem.file(&n).unwrap().snapshot();
                (n, b)
            })
            .collect()
    })
}

/// The valid log's first `n` bytes: header and the two key-space frames.
pub fn log_prefix() -> Vec<u8> {
    let log = &seed_db().iter().find(|(n, _)| n == "log").unwrap().1;
    // Header (64) then frames; walk two frames.
    let mut pos = 64usize;
    for _ in 0..2 {
        let len = u32::from_le_bytes(log[pos..pos + 4].try_into().unwrap()) as usize;
        pos += (24 + len).div_ceil(8) * 8;
    }
    log[..pos].to_vec()
}

/// One frame with valid checks around `payload`.
pub fn frame(seq: u64, kind: u16, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len()).unwrap();
    let mut out = Vec::new();
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(
        &(crc32fast::hash(&len.to_le_bytes()) ^ trajdb::format::log::LEN_SALT).to_le_bytes(),
    );
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(&kind.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes());
    let mut h = crc32fast::Hasher::new();
    h.update(&out[8..20]);
    h.update(payload);
    out.extend_from_slice(&(h.finalize() ^ trajdb::format::log::CRC_SALT).to_le_bytes());
    out.extend_from_slice(payload);
    out.resize((24 + payload.len()).div_ceil(8) * 8, 0);
    out
}

/// A backend holding `files`.
pub fn backend_with(files: &[(String, Vec<u8>)]) -> Arc<dyn Backend> {
    let mem = MemBackend::new();
    for (n, b) in files {
        let f = mem.open(n, true).unwrap().unwrap();
        f.write_at(b, 0).unwrap();
    }
    Arc::new(mem)
}

/// Opens read-only and read-write; whatever opens is verified and read in full. Any error
/// is fine; a panic, hang or unbounded allocation is the bug the fuzzer looks for.
pub fn exercise(files: &[(String, Vec<u8>)]) {
    for read_only in [true, false] {
        let b = backend_with(files);
        let opts = Options {
            read_only,
            durability: Durability::Buffered,
            ..Options::default()
        };
        let Ok(db) = Database::open_backend(b, opts) else {
            continue;
        };
        let _ = db.verify();
        for id in db.ids() {
            let _: Option<Trajectory> = db.get(id).ok();
        }
        let _ = db.utilities();
        let _ = db.stats();
        for s in db.spaces() {
            let q = vec![0.5f32; s.dims as usize];
            let _ = db.search(&s.name, &q, 3, &Default::default());
            let _ = db.search_approx(&s.name, &q, 3, 8, &Default::default());
        }
        if !read_only {
            let _ = db.append(&common::traj_for(1000));
            let _ = db.compact();
            let _ = db.verify();
        }
    }
}

/// A valid step-bounds file (`bounds-1.idx`) of a small database: its step space `obs`
/// after one retrieval built the bounds and a checkpoint saved them.
pub fn seed_bounds() -> Vec<u8> {
    static FILE: OnceLock<Vec<u8>> = OnceLock::new();
    FILE.get_or_init(|| {
        let mem = MemBackend::new();
        let db = Database::open_backend(Arc::new(mem.clone()), Options::default()).unwrap();
        common::create_spaces(&db);
        for id in 1..=6 {
            db.append(&common::traj_for(id)).unwrap();
        }
        let t = common::traj_for(1);
        let q = trajdb::RetrieveQuery {
            keys: vec![("goal".into(), t.keys["goal"].clone())],
            step_key: Some(("obs".into(), t.step_keys["obs"][0].clone())),
            k: 2,
            window: 1,
            filter: trajdb::Filter::default(),
            embedder: None,
        };
        db.retrieve(&q).unwrap();
        db.close().unwrap();
        mem.file("bounds-1.idx")
            .map(|f| f.snapshot())
            .unwrap_or_default()
    })
    .clone()
}
