//! A reader in another process sees only whole commits: while a child process appends, a
//! read-only handle here refreshes again and again; every time, its trajectories are a
//! prefix of the commit order and each one is complete (content and keys equal to what the
//! writer appended), and searches return only those.
#![allow(clippy::unwrap_used)] // tests may unwrap

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{create_spaces, opts, traj_for, GOAL_DIMS};
use trajdb::{Database, Durability, Filter, Options};

const CHILD_ENV: &str = "TRAJDB_READERS_CHILD_DIR";
const TOTAL: u64 = 600;

/// The writer's role: runs only when the parent set the environment variable.
#[test]
fn readers_child_writer_role() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return;
    };
    let db = Database::open(&dir, opts(Durability::GroupCommit)).unwrap();
    create_spaces(&db);
    for id in 1..=TOTAL {
        assert_eq!(db.append(&traj_for(id)).unwrap(), id);
    }
}

#[test]
fn a_reader_in_another_process_sees_only_whole_commits_in_order() {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("trajdb-readers-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["readers_child_writer_role", "--exact", "--test-threads=1"])
        .env(CHILD_ENV, &dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let ro = Options {
        read_only: true,
        ..Default::default()
    };
    let start = Instant::now();
    // Wait until the writer has created the database and its key spaces.
    let reader = loop {
        if let Ok(db) = Database::open(&dir, ro.clone()) {
            if db.spaces().len() == 2 {
                break db;
            }
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "writer never started"
        );
        std::thread::sleep(Duration::from_millis(2));
    };
    let (mut rounds, mut seen, mut checked) = (0u64, 0u64, 0u64);
    let query = vec![0.5f32; usize::try_from(GOAL_DIMS).unwrap()];
    loop {
        let done = child.try_wait().unwrap().is_some();
        reader.refresh().unwrap();
        let ids = reader.ids();
        let n = u64::try_from(ids.len()).unwrap();
        assert_eq!(
            ids,
            (1..=n).collect::<Vec<_>>(),
            "not a prefix of the commit order"
        );
        assert!(n >= seen, "the reader went back from {seen} to {n} commits");
        for id in ids.iter().rev().take(5) {
            assert_eq!(reader.get(*id).unwrap(), traj_for(*id), "trajectory {id}");
            checked += 1;
        }
        for hit in reader
            .search("goal", &query, 5, &Filter::default())
            .unwrap()
        {
            assert!(
                hit.id <= n,
                "search returned {} beyond the {n} visible",
                hit.id
            );
        }
        seen = n;
        rounds += 1;
        if done {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "writer did not finish"
        );
    }
    assert!(child.wait().unwrap().success());
    reader.refresh().unwrap();
    assert_eq!(reader.ids().len(), usize::try_from(TOTAL).unwrap());
    reader.verify().unwrap();
    eprintln!(
        "cross_process_readers: {rounds} refresh rounds while another process appended {TOTAL}; {checked} trajectories compared"
    );
}
