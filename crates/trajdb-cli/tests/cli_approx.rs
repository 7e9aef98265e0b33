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
    // The path line gives the beam the walk used: -k raises --ef to itself.
    let r = trajdb(
        &[
            "search",
            s(&db),
            "--space",
            "goal",
            "--text",
            "tea",
            "--approx",
            "--ef",
            "8",
            "-k",
            "20",
        ],
        None,
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stderr
            .contains("path=graph: graph index, ef 20 (--ef 8 raised to -k)"),
        "{}",
        r.stderr
    );
    ok(&["build-graph", s(&db), "--space", "observation"]);
    assert!(goal_graph.exists() && obs_graph.exists());
    assert_verifies(&db);
    // verify's line counts the graph nodes it checked: 240 goal rows and 720 observations.
    let v = ok(&["verify", s(&db)]);
    assert!(v.contains(", 960 graph nodes checked;"), "{v}");

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
    // clap: usage errors (exit 2) for --ef 0, --m 1, --drop with --m, --approx with
    // --per-trajectory, --exact with --approx or --ef, a negative --exact-below-rows.
    for args in [
        &[&q[..], &["--approx", "--ef", "0"]].concat(),
        &[&q[..], &["--ef", "0"]].concat(),
        &[&q[..], &["--exact", "--approx"]].concat(),
        &[&q[..], &["--exact", "--ef", "10"]].concat(),
        &[&q[..], &["--exact-below-rows", "-1"]].concat(),
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
        &[
            "retrieve",
            s(&db),
            "--keys",
            "goal=tea",
            "--exact",
            "--approx",
        ][..],
        &[
            "retrieve",
            s(&db),
            "--keys",
            "goal=tea",
            "--exact",
            "--ef",
            "9",
        ][..],
    ] {
        let r = trajdb(args, None);
        assert_eq!(r.code, 2, "{args:?}: {}", r.stderr);
    }
    // A number past 64 bits is told the range, as a merely too-large one is.
    for (args, range) in [
        (
            [&q[..], &["--ef", "18446744073709551616"]].concat(),
            "1..=1000000",
        ),
        (
            [
                &["retrieve", s(&db), "--keys", "goal=tea"][..],
                &["--window", "18446744073709551615"],
            ]
            .concat(),
            "0..=1000000",
        ),
        (
            [
                &["retrieve", s(&db), "--keys", "goal=tea"][..],
                &["--window", "1000001"],
            ]
            .concat(),
            "0..=1000000",
        ),
        (
            [&q[..], &["--exact-below-rows", "18446744073709551616"]].concat(),
            "0..=18446744073709551615",
        ),
        (
            vec!["inspect", s(&db), "18446744073709551616"],
            "0..=18446744073709551615",
        ),
        (
            vec!["delete", s(&db), "99999999999999999999999"],
            "0..=18446744073709551615",
        ),
        // A negative number is a value out of range, not an unknown flag.
        (
            [&q[..], &["--ef", "-5"]].concat(),
            "`-5` is not a whole number in 1..=1000000",
        ),
        (
            [&q[..], &["-k", "-3"]].concat(),
            "`-3` is not a whole number in 1..=1000000",
        ),
        (
            [&q[..], &["--exact-below-rows", "-1"]].concat(),
            "0..=18446744073709551615",
        ),
        (
            vec!["build-graph", s(&db), "--space", "goal", "--m", "-8"],
            "2..=128",
        ),
    ] {
        let r = trajdb(&args, None);
        assert_eq!(r.code, 2, "{args:?}: {}", r.stderr);
        assert!(r.stderr.contains(range), "{args:?}: {}", r.stderr);
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
    // A trajectory-level space given twice in --keys would count twice in the mean.
    assert_refused(
        &trajdb(
            &[
                "retrieve",
                s(&db),
                "--keys",
                "goal=tea",
                "--keys",
                "goal=coffee",
            ],
            None,
        ),
        &["--keys", "`goal` twice"],
    );
    let _ = std::fs::remove_dir_all(&db);
}

/// The `path=NAME` token of the stderr line saying which path answered.
fn path_of(stderr: &str) -> &str {
    let line = stderr
        .lines()
        .find(|l| l.contains("path="))
        .unwrap_or_else(|| panic!("no path line in: {stderr}"));
    line.split("path=")
        .nth(1)
        .unwrap()
        .split(':')
        .next()
        .unwrap()
}

/// `trajdb ARGS`, which must succeed: (stdout, the path it reports).
fn run_path(args: &[&str]) -> (String, String) {
    let r = trajdb(args, None);
    assert_eq!(r.code, 0, "{args:?}: {}", r.stderr);
    (r.stdout, path_of(&r.stderr).to_string())
}

#[test]
fn search_and_retrieve_choose_the_graph_by_size_and_exact_or_approx_override_it() {
    let db = topic_db("approx-cli-auto");
    // A deliberately sparse graph, so that its answers differ from the exact ones.
    ok(&[
        "build-graph",
        s(&db),
        "--space",
        "goal",
        "--m",
        "2",
        "--ef-construction",
        "2",
    ]);
    let q = [
        "search",
        s(&db),
        "--space",
        "goal",
        "--text",
        "tea",
        "-k",
        "7",
        "--json",
    ];
    let with = |extra: &[&str]| run_path(&[&q[..], extra].concat());
    let (exact, path) = with(&["--exact"]);
    assert_eq!(path, "exact_requested");
    let (graph, path) = with(&["--approx", "--ef", "1"]);
    assert_eq!(path, "graph");
    assert_ne!(
        graph, exact,
        "the sparse graph's answer must differ for this test"
    );
    // Default: 240 rows is below the default threshold (20000): exact, said so.
    let (auto, path) = with(&["--ef", "1"]);
    assert_eq!(
        (auto.as_str(), path.as_str()),
        (exact.as_str(), "exact_below_threshold")
    );
    // At the threshold: the graph.
    let (auto, path) = with(&["--ef", "1", "--exact-below-rows", "240"]);
    assert_eq!((auto.as_str(), path.as_str()), (graph.as_str(), "graph"));
    // One row more than the space holds: exact again.
    let (auto, path) = with(&["--ef", "1", "--exact-below-rows", "241"]);
    assert_eq!(
        (auto.as_str(), path.as_str()),
        (exact.as_str(), "exact_below_threshold")
    );
    // --exact overrides the size.
    let (forced, path) = with(&["--exact", "--exact-below-rows", "0"]);
    assert_eq!(
        (forced.as_str(), path.as_str()),
        (exact.as_str(), "exact_requested")
    );
    // --quiet: no path line.
    let r = trajdb(&[&q[..], &["-q", "--exact-below-rows", "0"]].concat(), None);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stderr.is_empty(), "{}", r.stderr);
    // A space without a graph: exact, whatever the threshold; --per-trajectory too.
    let obs = [
        "search",
        s(&db),
        "--space",
        "observation",
        "--text",
        "tea seen",
        "--exact-below-rows",
        "0",
    ];
    assert_eq!(run_path(&obs).1, "exact_no_graph");
    assert_eq!(
        run_path(&[&obs[..], &["--approx"]].concat()).1,
        "exact_no_graph"
    );
    assert_eq!(
        run_path(&[&obs[..], &["--per-trajectory"]].concat()).1,
        "exact_per_trajectory"
    );

    // retrieve: the graph only when every key space qualifies.
    let r = [
        "retrieve",
        s(&db),
        "--keys",
        "goal=bread job",
        "--step-key",
        "observation=bread seen",
        "-k",
        "5",
        "--json",
        "--exact-below-rows",
        "0",
    ];
    let (exact_r, path) = run_path(&[&r[..], &["--exact"]].concat());
    assert_eq!(path, "exact_requested");
    // Below, a beam narrower than a quarter of the 240 goal rows (a wider one is answered
    // by the scan).
    let wide = [&r[..], &["--ef", "60"]].concat();
    let r = [&r[..], &["--ef", "16"]].concat();
    let rr = trajdb(&r, None);
    assert_eq!(rr.code, 0, "{}", rr.stderr);
    assert_eq!(path_of(&rr.stderr), "exact_no_graph");
    assert!(
        rr.stderr.contains("key space `observation`"),
        "{}",
        rr.stderr
    );
    assert_eq!(rr.stdout, exact_r);
    ok(&["build-graph", s(&db), "--space", "observation"]);
    let rr = trajdb(&r, None);
    assert_eq!(rr.code, 0, "{}", rr.stderr);
    assert_eq!(path_of(&rr.stderr), "graph");
    assert!(
        rr.stderr.contains("goal=graph, observation=graph"),
        "{}",
        rr.stderr
    );
    assert_eq!(rr.stdout, ok(&[&r[..], &["--approx"]].concat()));
    let rw = trajdb(&wide, None);
    assert_eq!(rw.code, 0, "{}", rw.stderr);
    assert!(rw.stderr.contains("goal=exact_wide_beam"), "{}", rw.stderr);
    // Default threshold: 240 goal rows are too few, so the whole retrieve is exact.
    let (def, path) = run_path(&r[..9]);
    assert_eq!(
        (def.as_str(), path.as_str()),
        (exact_r.as_str(), "exact_below_threshold")
    );

    // stats: graph rows and whether the automatic choice uses the graph.
    let st: Value = serde_json::from_str(&ok(&[
        "stats",
        s(&db),
        "--json",
        "--exact-below-rows",
        "500",
    ]))
    .unwrap();
    assert_eq!(st["exact_below_rows"], 500);
    let sp = |name: &str| {
        st["spaces"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["name"] == name)
            .unwrap()
            .clone()
    };
    assert_eq!(sp("goal")["graph_rows"], 240);
    assert_eq!(sp("goal")["auto_uses_graph"], false);
    assert_eq!(sp("observation")["graph_rows"], 720);
    assert_eq!(sp("observation")["auto_uses_graph"], true);
    ok(&["build-graph", s(&db), "--space", "goal", "--drop"]);
    let text = ok(&["stats", s(&db), "--exact-below-rows", "500"]);
    let head = text.lines().find(|l| l.starts_with("space ")).unwrap();
    assert!(head.ends_with("graph rows   auto"), "{text}");
    let goal_line = text.lines().find(|l| l.starts_with("goal ")).unwrap();
    assert!(goal_line.ends_with("-  exact"), "{goal_line}");
    let obs_line = text
        .lines()
        .find(|l| l.starts_with("observation "))
        .unwrap();
    assert!(obs_line.ends_with("720  graph"), "{obs_line}");
    let _ = std::fs::remove_dir_all(&db);
}

/// Trial finding: a damaged graph header silently emptied the graph (searches scanned the
/// rows exactly, stats showed 0 graph rows with no reason). It is now said: `search` warns
/// naming the space, the reason and the command that rebuilds it, `stats` says why, and
/// the answers stay those of the exact scan.
#[test]
fn a_damaged_graph_file_is_warned_about_and_named_by_stats_and_answers_stay_exact() {
    let db = topic_db("approx-cli-damaged-graph");
    ok(&["build-graph", s(&db), "--space", "goal"]);
    let graph = db.join(format!("graph-{}.idx", space_index(&db, "goal")));
    let mut b = std::fs::read(&graph).unwrap();
    b[3] ^= 0xFF;
    std::fs::write(&graph, &b).unwrap();
    let q = [
        "search",
        s(&db),
        "--space",
        "goal",
        "--text",
        "tea",
        "--json",
    ];
    let r = trajdb(&[&q[..], &["--approx", "--ef", "200"]].concat(), None);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stderr.contains("graph index of `goal` was not used")
            && r.stderr.contains("header is damaged")
            && r.stderr.contains("build-graph"),
        "{}",
        r.stderr
    );
    assert_eq!(ids(&r.stdout), ids(&ok(&[&q[..], &["--exact"]].concat())));
    let stats = ok(&["stats", s(&db)]);
    assert!(
        stats.contains("graph index of `goal` not used: its header is damaged"),
        "{stats}"
    );
    // Damage past the header is named by `stats` too, before any search has read the file.
    ok(&["build-graph", s(&db), "--space", "goal"]);
    assert!(!ok(&["stats", s(&db)]).contains("not used"));
    let mut b = std::fs::read(&graph).unwrap();
    b[64 + 8] ^= 0x01;
    std::fs::write(&graph, &b).unwrap();
    let stats = ok(&["stats", s(&db)]);
    assert!(
        stats.contains("graph index of `goal` not used") && stats.contains("checksum"),
        "{stats}"
    );
    let _ = std::fs::remove_dir_all(&db);
}

#[test]
fn stats_and_the_path_line_say_when_a_graph_covers_too_few_rows() {
    let db = topic_db("approx-behind");
    ok(&["build-graph", s(&db), "--space", "goal"]);
    // 480 more trajectories: the graph covers a third of the rows.
    let more: String = (240..720)
        .map(|i| {
            format!(
                "{{\"id\":{},\"goal\":\"tea job {i}\",\"steps\":[{{\"observation\":\"seen {i}\",\"action\":\"look\"}}],\"outcome\":{{\"success\":true}}}}\n",
                i + 1
            )
        })
        .collect();
    let f = file("approx-behind-more.jsonl", more.as_bytes());
    ok(&["import", s(&db), s(&f)]);
    let stats = ok(&["stats", s(&db)]);
    assert!(
        stats.contains(
            "graph index of `goal`: the graph covers 240 of 720 rows; the other 480 are scanned exactly until `trajdb build-graph` catches it up"
        ),
        "{stats}"
    );
    let search = |db: &std::path::Path| {
        trajdb(
            &[
                "search",
                s(db),
                "--space",
                "goal",
                "--text",
                "tea",
                "--approx",
            ],
            None,
        )
    };
    // A search inserts some rows (256) in memory and says how far the graph still lags.
    let r = search(&db);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stderr
            .contains("path=graph: graph index, ef 64; the graph covers 496 of 720 rows"),
        "{}",
        r.stderr
    );
    let r = trajdb(
        &["retrieve", s(&db), "--keys", "goal=tea", "--approx"],
        None,
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stderr.contains("; `goal`: the graph covers"),
        "{}",
        r.stderr
    );
    ok(&["build-graph", s(&db), "--space", "goal"]);
    assert!(!ok(&["stats", s(&db)]).contains("the graph covers"));
    let r = search(&db);
    assert!(!r.stderr.contains("the graph covers"), "{}", r.stderr);
}
