//! Corruption sweep: flip a byte, or cut the file, at many offsets of every file of a small
//! database; opening (read-write and read-only) and `verify` either recover everything
//! committed before the damage or refuse with a typed error naming the file and offset.
//! Never a panic, never a hang.
#![allow(clippy::unwrap_used)] // tests may unwrap

mod common;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{create_spaces, log_plan_retrieval, traj_for};
use trajdb::storage::{Backend, MemBackend};
use trajdb::{Database, Durability, Error, Options};

/// Files of a database: (name, bytes).
type Files = Vec<(String, Vec<u8>)>;

/// Files of the small database and, for the log, (end offset, id) of each trajectory frame.
fn build() -> (Files, Vec<(u64, u64)>) {
    let mem = MemBackend::new();
    {
        let db = Database::open_backend(Arc::new(mem.clone()), Options::default()).unwrap();
        create_spaces(&db);
        for id in 1..=6 {
            db.append(&traj_for(id)).unwrap();
            if id % 2 == 0 {
                let ep = log_plan_retrieval(&db, id);
                db.set_episode_outcome(ep, Some(true)).unwrap();
            }
        }
        db.sync().unwrap();
    }
    let files: Vec<(String, Vec<u8>)> = mem
        .list()
        .unwrap()
        .into_iter()
        .map(|n| {
            let b = mem.file(&n).unwrap().snapshot();
            (n, b)
        })
        .collect();
    // Walk the log's frames: kind 2 is a trajectory; its id is the payload's first 8 bytes.
    let log = &files.iter().find(|(n, _)| n == "log").unwrap().1;
    let mut ends = Vec::new();
    let mut pos = 64usize;
    while pos + 24 <= log.len() {
        let len = u32::from_le_bytes(log[pos..pos + 4].try_into().unwrap()) as usize;
        let kind = u16::from_le_bytes([log[pos + 16], log[pos + 17]]);
        let end = pos + (24 + len).div_ceil(8) * 8;
        if kind == 2 {
            let id = u64::from_le_bytes(log[pos + 24..pos + 32].try_into().unwrap());
            ends.push((end as u64, id));
        }
        pos = end;
    }
    (files, ends)
}

fn backend(files: &[(String, Vec<u8>)]) -> Arc<dyn Backend> {
    let mem = MemBackend::new();
    for (n, b) in files {
        mem.open(n, true).unwrap().unwrap().write_at(b, 0).unwrap();
    }
    Arc::new(mem)
}

#[derive(Default, Debug)]
struct Tally {
    cases: u64,
    recovered: u64,
    refused_open: u64,
    refused_verify: u64,
}

/// A typed refusal whose message names the damaged file (and, for damage inside the
/// file, the byte offset).
fn check_refusal(e: &Error, file: &str, case: &str) {
    let msg = e.to_string();
    match e {
        Error::Corrupt { .. } | Error::ChecksumMismatch { .. } => {
            assert!(msg.contains("at byte"), "{case}: no offset in `{msg}`");
        }
        Error::NotADatabase { .. } | Error::IncompatibleVersion { .. } => {}
        other => panic!("{case}: untyped refusal {other:?}"),
    }
    assert!(msg.contains(file), "{case}: `{msg}` does not name {file}");
    assert!(!msg.contains('\n'), "{case}: message is not one line");
}

/// One damaged directory: opens it both ways and judges the outcome.
fn judge(
    files: &[(String, Vec<u8>)],
    damaged: &str,
    at: u64,
    ends: &[(u64, u64)],
    case: &str,
    t: &mut Tally,
) {
    for read_only in [true, false] {
        t.cases += 1;
        let opts = Options {
            read_only,
            durability: Durability::SyncEachCommit,
            ..Options::default()
        };
        let db = match Database::open_backend(backend(files), opts) {
            Ok(db) => db,
            Err(e) => {
                check_refusal(&e, damaged, case);
                t.refused_open += 1;
                continue;
            }
        };
        match db.verify() {
            Ok(_) => {
                // Recovered: everything committed before the damage is intact.
                let ids = db.ids();
                for (end, id) in ends {
                    if damaged != "log" || *end <= at {
                        assert!(ids.contains(id), "{case}: id {id} lost");
                        assert_eq!(db.get(*id).unwrap(), traj_for(*id), "{case}: id {id}");
                    }
                }
                for id in &ids {
                    assert_eq!(db.get(*id).unwrap(), traj_for(*id), "{case}: id {id}");
                }
                t.recovered += 1;
            }
            Err(e) => {
                // Key-file damage in rows the header vouches for is found by verify.
                check_refusal(&e, damaged, case);
                t.refused_verify += 1;
            }
        }
    }
}

fn offsets(len: usize, dense_until: usize) -> Vec<usize> {
    let mut v: Vec<usize> = (0..len.min(dense_until)).collect();
    let mut o = dense_until;
    while o < len {
        v.push(o);
        o += 251;
    }
    v
}

#[test]
fn every_flip_and_cut_recovers_or_refuses_with_a_typed_error() {
    let (files, ends) = build();
    let progress = Arc::new(AtomicU64::new(0));
    let current = Arc::new(Mutex::new(String::new()));
    let (p2, c2) = (progress.clone(), current.clone());
    let start = Instant::now();
    // Watchdog: a case that runs for 20 s is a hang; report it and fail the run.
    std::thread::spawn(move || {
        let mut last = (0, Instant::now());
        loop {
            std::thread::sleep(Duration::from_millis(500));
            let now = p2.load(Ordering::SeqCst);
            if now != last.0 {
                last = (now, Instant::now());
            } else if last.1.elapsed() > Duration::from_secs(20) {
                eprintln!("corruption_sweep: hang in case {}", c2.lock().unwrap());
                std::process::exit(101);
            }
        }
    });
    let mut tally = Tally::default();
    let mut panics = Vec::new();
    for (fi, (name, bytes)) in files.iter().enumerate() {
        // Key files reserve room for many rows: sweep the used part densely.
        let dense = if name == "log" {
            bytes.len()
        } else {
            64 + 6 * 4 * 16
        };
        for off in offsets(bytes.len(), dense) {
            for action in ["flip", "cut"] {
                let mut damaged = files.clone();
                if action == "flip" {
                    damaged[fi].1[off] ^= 0x5A;
                } else {
                    damaged[fi].1.truncate(off);
                }
                let case = format!("{action} {name} at {off}");
                *current.lock().unwrap() = case.clone();
                let r = catch_unwind(AssertUnwindSafe(|| {
                    judge(&damaged, name, off as u64, &ends, &case, &mut tally)
                }));
                if r.is_err() {
                    panics.push(case);
                }
                progress.fetch_add(1, Ordering::SeqCst);
            }
        }
    }
    eprintln!(
        "corruption_sweep: {} cases ({} files: {}) in {:.1} s: {} recovered, {} refused at open, {} refused by verify, {} panics",
        tally.cases,
        files.len(),
        files.iter().map(|(n, b)| format!("{n} {} B", b.len())).collect::<Vec<_>>().join(", "),
        start.elapsed().as_secs_f64(),
        tally.recovered,
        tally.refused_open,
        tally.refused_verify,
        panics.len()
    );
    assert!(panics.is_empty(), "cases that panicked: {panics:?}");
    assert!(tally.cases > 5000, "only {} cases", tally.cases);
}
