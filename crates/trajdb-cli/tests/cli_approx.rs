//! `trajdb build-graph` and the approximate mode of `search` and `retrieve` (`--approx
//! --ef N`): the graph file is written and dropped, a beam as wide as the data gives the
//! exact answer, and bad values are refused with a usage error or one error line.
#![allow(clippy::unwrap_used, reason = "a test fails loudly on any error")]

mod cli_util;

use cli_util::*;
use serde_json::Value;

const TOPICS: [&str; 6] = ["tea", "plants", "bread", "bicycle", "letters", "garden"];

/// 240 trajectories over six topics, three steps each, embedded with the built-in hash
/// embedder (goal and observation keys, 64 dimensions); every second one a success.
fn topic_db(name: &str) -> std::path::PathBuf {
    let db = tmp(name);
    let mut jsonl = String::new();
    for i in 0..240 {
        let t = TOPICS[i % TOPICS.len()];
        jsonl.push_str(&format!(
            r#"{{"id":{},"goal":"{t} job {i}","steps":[{{"observation":"{t} seen {i}","action":"look"}},{{"observation":"{t} touched {}","action":"touch"}},{{"observation":"done {i}","action":"stop"}}],"outcome":{{"success":{}}}}}"#,
            i + 1,
            i % 7,
            i % 2 == 0
        ));
        jsonl.push('\n');
    }
    let file = tmp(&format!("{name}.jsonl"));
    std::fs::write(&file, jsonl).unwrap();
    ok(&[
        "import",
        s(&db),
        s(&file),
        "--embed",
        "goal,observation",
        "--dims",
        "64",
    ]);
    let _ = std::fs::remove_file(&file);
    db
}

fn ids(json: &str) -> Vec<u64> {
    serde_json::from_str::<Value>(json)
        .unwrap()
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_u64().unwrap())
        .collect()
}

/// The index of key space `name` (its graph file is `graph-INDEX.idx`).
fn space_index(db: &std::path::Path, name: &str) -> usize {
    let stats: Value = serde_json::from_str(&ok(&["stats", s(db), "--json"])).unwrap();
    stats["spaces"]
        .as_array()
        .unwrap()
        .iter()
        .position(|sp| sp["name"] == name)
        .unwrap()
}

#[test]
fn build_graph_then_approximate_search_and_retrieve_match_the_exact_answer_at_a_wide_beam() {
    let db = topic_db("approx-cli");
    let goal_graph = db.join(format!("graph-{}.idx", space_index(&db, "goal")));
    let obs_graph = db.join(format!("graph-{}.idx", space_index(&db, "observation")));
    assert!(!goal_graph.exists());
    let out = ok(&["build-graph", s(&db), "--space", "goal", "--m", "8"]);
    assert!(out.contains("240 of 240 rows, m 8"), "{out}");
    ok(&["build-graph", s(&db), "--space", "observation"]);
    assert!(goal_graph.exists() && obs_graph.exists());
    assert_verifies(&db);

    // search: with a beam as wide as the space the walk reaches every row, so the answer is
    // the exact search's (ids and scores: the JSON texts are equal).
    let q = [
        "search",
        s(&db),
        "--space",
        "goal",
        "--text",
        "tea job",
        "-k",
        "7",
    ];
    let exact = ok(&[&q[..], &["--json"]].concat());
    let approx = ok(&[&q[..], &["--json", "--approx", "--ef", "300"]].concat());
    assert_eq!(approx, exact);
    assert_eq!(ids(&exact).len(), 7);
    // A narrow beam still returns k hits, each with its exact score.
    let narrow = ok(&[&q[..], &["--json", "--approx", "--ef", "8"]].concat());
    assert_eq!(ids(&narrow).len(), 7);
    // Text output works too.
    let text = ok(&[&q[..], &["--approx"]].concat());
    assert!(text.starts_with("rank"), "{text}");

    // retrieve: goal key + step key, success filter; the same examples as the exact call.
    let r = [
        "retrieve",
        s(&db),
        "--keys",
        "goal=bread job",
        "--step-key",
        "observation=bread seen",
        "-k",
        "5",
        "--window",
        "1",
        "--success-only",
        "--json",
    ];
    let exact = ok(&r);
    let approx = ok(&[&r[..], &["--approx", "--ef", "1000"]].concat());
    assert_eq!(approx, exact);
    let got = ids(&approx);
    assert_eq!(got.len(), 5);
    assert!(got.iter().all(|id| id % 2 == 1), "successes only: {got:?}");
    let text = ok(&[&r[..10], &["--approx"]].concat());
    assert!(text.starts_with("#1 id "), "{text}");

    // Dropped: the file goes, and --approx scans exactly (same answer).
    let r = trajdb(&["build-graph", s(&db), "--space", "goal", "--drop"], None);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stderr.contains("dropped the graph index"), "{}", r.stderr);
    assert!(!goal_graph.exists());
    // Dropping again says there was nothing to drop.
    let r = trajdb(&["build-graph", s(&db), "--space", "goal", "--drop"], None);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stderr.contains("had no graph index"), "{}", r.stderr);
    let after = ok(&[&q[..], &["--json", "--approx", "--ef", "8"]].concat());
    assert_eq!(after, ok(&[&q[..], &["--json"]].concat()));
    let _ = std::fs::remove_dir_all(&db);
}

#[test]
fn bad_approximate_arguments_are_refused_with_one_line() {
    let db = topic_db("approx-cli-bad");
    let q = ["search", s(&db), "--space", "goal", "--text", "tea"];
    // clap: usage errors (exit 2) for --ef without --approx, --ef 0, --m 1, --approx
    // with --per-trajectory.
    for args in [
        &[&q[..], &["--ef", "10"]].concat(),
        &[&q[..], &["--approx", "--ef", "0"]].concat(),
        &["build-graph", s(&db), "--space", "goal", "--m", "1"][..],
        &[
            "build-graph",
            s(&db),
            "--space",
            "goal",
            "--drop",
            "--m",
            "4",
        ][..],
        &[&q[..], &["--approx", "--per-trajectory"]].concat(),
    ] {
        let r = trajdb(args, None);
        assert_eq!(r.code, 2, "{args:?}: {}", r.stderr);
    }
    // Engine errors: one line naming what is wrong.
    assert_refused(
        &trajdb(&["build-graph", s(&db), "--space", "nope"], None),
        &["nope"],
    );
    assert_refused(
        &trajdb(
            &[
                "build-graph",
                s(&db),
                "--space",
                "goal",
                "--m",
                "8",
                "--ef-construction",
                "4",
            ],
            None,
        ),
        &["ef_construction"],
    );
    assert_refused(
        &trajdb(
            &[&q[..3], &["nope", "--text", "x", "--approx"]].concat(),
            None,
        ),
        &["nope"],
    );
    let _ = std::fs::remove_dir_all(&db);
}
