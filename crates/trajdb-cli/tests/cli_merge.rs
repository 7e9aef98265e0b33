//! `trajdb merge DST SRC...`: sources with overlapping ids land once each, a rerun adds
//! nothing, Q in the merged database is Q over the union of the sources' episodes, and an
//! incompatible source is refused with one line before anything is written.
#![allow(clippy::unwrap_used)]

mod cli_util;

use cli_util::*;
use serde_json::Value;
use trajdb::{Database, Options, RetrievalEvent, Stage};

/// A seeded database whose episodes retrieve its trajectories: (outcome, ids retrieved).
fn with_usage(name: &str, episodes: &[(Option<bool>, &[u64])]) -> std::path::PathBuf {
    let dir = seeded(name);
    let db = Database::open(&dir, Options::default()).unwrap();
    for (outcome, ids) in episodes {
        let ep = db.begin_episode().unwrap();
        let ev: Vec<RetrievalEvent> = ids
            .iter()
            .map(|&id| RetrievalEvent {
                id,
                step: None,
                stage: Stage::Plan,
            })
            .collect();
        db.log_retrievals(ep, &ev).unwrap();
        db.set_episode_outcome(ep, *outcome).unwrap();
    }
    dir
}

fn utility(db: &std::path::Path) -> Vec<Value> {
    ok(&["stats", s(db), "--utility", "--json"])
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn merge_adds_each_source_once_and_q_is_over_the_union() {
    let a = with_usage("merge-a", &[(Some(true), &[10, 12]), (Some(false), &[10])]);
    let b = with_usage("merge-b", &[(Some(true), &[10, 10]), (None, &[11])]);
    let dst = tmp("merge-dst");
    let out = ok(&["merge", s(&dst), s(&a), s(&b)]);
    assert!(
        out.contains("3 trajectories added (0 already there"),
        "{out}"
    );
    assert_eq!(out.lines().count(), 2, "{out}");
    let again = ok(&["merge", s(&dst), s(&a), s(&b), "--json"]);
    for l in again.lines() {
        let v: Value = serde_json::from_str(l).unwrap();
        assert_eq!(v["report"]["commits"], 0, "{l}");
        assert_eq!(v["report"]["trajectories_present"], 3, "{l}");
    }
    let stats: Value = serde_json::from_str(&ok(&["stats", s(&dst), "--json"])).unwrap();
    assert_eq!(stats["trajectories"], 6);
    assert_eq!(stats["episodes"], 4);
    // a's 10 was retrieved in a success and a failure (Q 1/2); b's 10 twice in a success.
    let u = utility(&dst);
    let q: Vec<(u64, Option<f64>)> = u
        .iter()
        .map(|v| (v["id"].as_u64().unwrap(), v["q"].as_f64()))
        .collect();
    assert_eq!(
        q,
        [(1, Some(0.5)), (3, Some(1.0)), (4, Some(1.0)), (5, None)]
    );
    assert_verifies(&dst);
}

#[test]
fn an_incompatible_source_is_refused_with_one_line_and_nothing_written() {
    let a = with_usage("merge-ok", &[(Some(true), &[10])]);
    let other = tmp("merge-other.jsonl");
    std::fs::write(&other, r#"{"goal":"x","keys":{"goal":[1.0,0.0,0.5,0.1]}}"#).unwrap();
    let bad = tmp("merge-bad");
    ok(&["import", s(&bad), s(&other)]);
    let dst = tmp("merge-dst-refused");
    let r = trajdb(&["merge", s(&dst), s(&a), s(&bad)], None);
    assert_refused(
        &r,
        &[
            "cannot merge",
            "key space `goal`",
            "4 dims",
            "3 dims",
            "nothing was merged",
        ],
    );
    assert!(!dst.exists(), "no destination was created");
    let dst = seeded("merge-dst-existing");
    let before = export(&dst);
    let r = trajdb(&["merge", s(&dst), s(&a), s(&bad)], None);
    assert_refused(&r, &["cannot merge", "key space `goal`"]);
    assert_eq!(export(&dst), before);
}

/// A source with a damaged commit (found by the full check merge opens its sources with,
/// though a checkpoint covers it) is refused before the destination is created.
#[test]
fn a_damaged_source_is_refused_before_the_destination_exists() {
    let a = seeded("merge-damaged-src");
    let log = a.join("log");
    let mut b = std::fs::read(&log).unwrap();
    let mid = b.len() / 2;
    b[mid] ^= 0xff;
    std::fs::write(&log, &b).unwrap();
    let dst = tmp("merge-dst-damaged");
    let r = trajdb(&["merge", s(&dst), s(&a)], None);
    assert_refused(&r, &[s(&log)]);
    assert!(!dst.exists(), "no destination was created");
}
