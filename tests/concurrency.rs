//! Concurrency: a second writer is refused with `Error::Locked` naming the holder (from
//! this process and from another), and readers running beside a writer only ever see
//! whole trajectories of a committed prefix.
#![allow(clippy::unwrap_used)] // tests may unwrap

mod common;

use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{create_spaces, log_plan_retrieval, traj_for};
use trajdb::{Database, Error, Filter, Options};

const CHILD_ENV: &str = "TRAJDB_LOCK_CHILD_DIR";

/// Child role: tries to open the directory for writing and prints what happened.
#[test]
fn lock_child_role() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return;
    };
    let t = Instant::now();
    match Database::open(&dir, Options::default()) {
        Err(e @ Error::Locked { .. }) => {
            println!("CHILD locked {} ms: {e}", t.elapsed().as_millis())
        }
        Err(e) => println!("CHILD other error: {e}"),
        Ok(_) => println!("CHILD opened"),
    }
}

#[test]
fn second_writer_is_refused_immediately_and_nothing_is_corrupted() {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("trajdb-lock-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let db = Database::open(&dir, Options::default()).unwrap();
    create_spaces(&db);
    for id in 1..=5 {
        db.append(&traj_for(id)).unwrap();
    }
    // Same process.
    let t = Instant::now();
    match Database::open(&dir, Options::default()) {
        Err(Error::Locked { holder, .. }) => {
            assert!(holder.contains(&std::process::id().to_string()), "{holder}")
        }
        other => panic!("expected Locked, got {:?}", other.map(|_| ())),
    }
    assert!(t.elapsed() < Duration::from_secs(1), "not immediate");
    // Another process.
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "lock_child_role",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, &dir)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find_map(|l| l.find("CHILD ").map(|at| &l[at..]))
        .unwrap_or_else(|| panic!("child said nothing: {text}"));
    assert!(line.starts_with("CHILD locked"), "{line}");
    assert!(
        line.contains(&format!("process {}", std::process::id())),
        "holder not named: {line}"
    );
    // Readers are fine meanwhile, and the writer carries on.
    let ro = Database::open(
        &dir,
        Options {
            read_only: true,
            ..Options::default()
        },
    )
    .unwrap();
    assert_eq!(ro.ids(), [1, 2, 3, 4, 5]);
    db.append(&traj_for(6)).unwrap();
    db.verify().unwrap();
    drop(db);
    let db = Database::open(&dir, Options::default()).unwrap();
    assert_eq!(db.ids(), [1, 2, 3, 4, 5, 6]);
    db.verify().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn readers_beside_a_writer_see_only_whole_trajectories_of_a_committed_prefix() {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("trajdb-stress-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let db = Arc::new(
        Database::open(
            &dir,
            Options {
                durability: trajdb::Durability::Buffered,
                ..Options::default()
            },
        )
        .unwrap(),
    );
    create_spaces(&db);
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (db, stop) = (db.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut id = 1;
            let start = Instant::now();
            while start.elapsed() < Duration::from_secs(2) {
                db.append(&traj_for(id)).unwrap();
                log_plan_retrieval(&db, id);
                id += 1;
            }
            stop.store(true, Ordering::SeqCst);
            id - 1
        })
    };
    let readers: Vec<_> = (0..3)
        .map(|r| {
            let (db, stop) = (db.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut checks = 0u64;
                let mut last_len = 0;
                while !stop.load(Ordering::SeqCst) {
                    let ids = db.ids();
                    // A committed prefix: 1..=n in commit order, never shrinking.
                    assert!(ids.iter().copied().eq(1..=ids.len() as u64), "reader {r}");
                    assert!(ids.len() >= last_len);
                    last_len = ids.len();
                    if let Some(&id) = ids.last() {
                        assert_eq!(db.get(id).unwrap(), traj_for(id), "reader {r}");
                    }
                    let q = traj_for(checks % 50 + 1).keys["goal"].clone();
                    for h in db.search("goal", &q, 5, &Filter::default()).unwrap() {
                        // A hit is whole: its stored keys are those derived from its id.
                        let t = db.get(h.id).unwrap();
                        assert_eq!(t, traj_for(h.id), "reader {r}");
                    }
                    for h in db
                        .search("obs", &[0.5, 0.5, 0.5], 5, &Filter::default())
                        .unwrap()
                    {
                        let t = traj_for(h.id);
                        assert!((h.step.unwrap() as usize) < t.steps.len());
                    }
                    checks += 1;
                }
                checks
            })
        })
        .collect();
    let written = writer.join().unwrap();
    let checks: u64 = readers.into_iter().map(|h| h.join().unwrap()).sum();
    assert!(
        written > 10 && checks > 10,
        "written {written}, reads {checks}"
    );
    db.verify().unwrap();
    eprintln!("concurrency: {written} trajectories written while 3 readers made {checks} consistent reads");
    let _ = std::fs::remove_dir_all(&dir);
}
