//! Real crashes: a child process appends trajectories and logs usage with
//! `Durability::SyncEachCommit`, printing each id only after the call returned; the parent
//! kills it with SIGKILL at random moments and checks that everything acknowledged is there,
//! intact and in order, that nothing has a gap, and that the database opens and verifies.
#![allow(clippy::unwrap_used)] // tests may unwrap

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{create_spaces, log_plan_retrieval, opts, traj_for};
use trajdb::storage::fault::SplitMix;
use trajdb::{Database, Durability, Utility};

const CHILD_ENV: &str = "TRAJDB_SIGKILL_CHILD_DIR";

/// The child's role: runs only when the parent set the environment variable.
#[test]
fn sigkill_child_role() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return;
    };
    let db = Database::open(&dir, opts(Durability::SyncEachCommit)).unwrap();
    create_spaces(&db);
    let mut next = db.ids().last().map_or(1, |m| m + 1);
    let out = std::io::stdout();
    loop {
        let id = db.append(&traj_for(next)).unwrap();
        assert_eq!(id, next);
        writeln!(out.lock(), "ACK A {id}").unwrap();
        out.lock().flush().unwrap();
        let ep = log_plan_retrieval(&db, id);
        db.set_episode_outcome(ep, Some(id.is_multiple_of(2)))
            .unwrap();
        writeln!(out.lock(), "ACK U {id} {ep}").unwrap();
        out.lock().flush().unwrap();
        next += 1;
    }
}

#[test]
fn sigkill_at_random_moments_loses_no_acknowledged_commit() {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("trajdb-sigkill-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    let mut rng = SplitMix::new(seed);
    let exe = std::env::current_exe().unwrap();
    let start = Instant::now();
    let mut acked: Vec<u64> = Vec::new();
    let mut usage_acked: BTreeMap<u64, u64> = BTreeMap::new();
    let mut rounds = 0u64;
    let mut checked = 0u64;
    while rounds < 30 && start.elapsed() < Duration::from_secs(20) {
        rounds += 1;
        let mut child = Command::new(&exe)
            .args([
                "sigkill_child_role",
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, &dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            let mut lines = Vec::new();
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                lines.push(line);
            }
            lines
        });
        std::thread::sleep(Duration::from_millis(20 + rng.below(280)));
        child.kill().unwrap();
        child.wait().unwrap();
        for line in reader.join().unwrap() {
            // libtest may print its own text before ours on the first line.
            let Some(at) = line.find("ACK ") else {
                continue;
            };
            let f: Vec<&str> = line[at + 4..].split_whitespace().collect();
            match f.as_slice() {
                ["A", id] => acked.push(id.parse().unwrap()),
                ["U", id, ep] => {
                    usage_acked.insert(id.parse().unwrap(), ep.parse().unwrap());
                }
                _ => {}
            }
        }
        // Check after every kill, on a read-only and then a writable open.
        for read_only in [true, false] {
            // A child killed before it created the log (a loaded machine can take longer than
            // the shortest kill delay to get there) leaves nothing for a reader to open; that
            // is only acceptable while nothing was acknowledged.
            if read_only && !dir.join(trajdb::format::log::LOG_FILE).exists() {
                assert!(
                    acked.is_empty(),
                    "round {rounds}: acknowledged commits but no log"
                );
                continue;
            }
            let o = trajdb::Options {
                read_only,
                ..opts(Durability::SyncEachCommit)
            };
            let db = Database::open(&dir, o).unwrap_or_else(|e| {
                panic!("round {rounds} (seed {seed}): the database does not open: {e}")
            });
            let ids = db.ids();
            // Appends are in id order with no deletes: the ids must be 1..=n, no gap.
            let expect: Vec<u64> = (1..=ids.len() as u64).collect();
            assert_eq!(ids, expect, "round {rounds}: ids have a gap");
            let points = db.commit_points();
            assert!(points.windows(2).all(|w| w[0].1 < w[1].1), "commit order");
            // Every acknowledged id is there; whatever is there (acknowledged or not) is whole.
            if let Some(id) = acked.iter().find(|id| **id > ids.len() as u64) {
                panic!("round {rounds} (seed {seed}): acknowledged id {id} is missing");
            }
            for id in &ids {
                let t = db.get(*id).unwrap();
                assert_eq!(t, traj_for(*id), "round {rounds}: id {id} differs");
                checked += 1;
            }
            let episodes = db.episodes();
            for (id, ep) in &usage_acked {
                let e = episodes
                    .iter()
                    .find(|e| e.id == *ep)
                    .unwrap_or_else(|| panic!("round {rounds}: acknowledged episode {ep} missing"));
                assert_eq!(e.outcome, Some(id % 2 == 0));
                assert!(e.events.iter().any(|ev| ev.id == *id));
            }
            let mut recount: BTreeMap<u64, Utility> = BTreeMap::new();
            for e in &episodes {
                for (id, f) in e.counts() {
                    let u = recount.entry(id).or_default();
                    u.retrievals += f;
                    u.episodes += 1;
                    if let Some(o) = e.outcome {
                        u.labelled_retrievals += f;
                        u.success_retrievals += f * u64::from(o);
                    }
                }
            }
            let utils: BTreeMap<u64, Utility> = db.utilities().into_iter().collect();
            assert_eq!(
                utils, recount,
                "round {rounds}: counters differ from a recount"
            );
            db.verify()
                .unwrap_or_else(|e| panic!("round {rounds}: verify: {e}"));
        }
    }
    let missing: Vec<u64> = usage_acked
        .keys()
        .filter(|id| acked.binary_search(id).is_err())
        .copied()
        .collect();
    assert!(
        missing.is_empty(),
        "usage acknowledged for ids never acknowledged: {missing:?}"
    );
    assert!(rounds >= 5, "only {rounds} rounds ran");
    assert!(!acked.is_empty(), "the child never acknowledged a commit");
    eprintln!(
        "crash_sigkill: {rounds} SIGKILL rounds survived, {} commits acknowledged, {checked} record checks (every acknowledged id after every kill), {} usage episodes checked (seed {seed})",
        acked.len(),
        usage_acked.len()
    );
    let _ = std::fs::remove_dir_all(&dir);
}
