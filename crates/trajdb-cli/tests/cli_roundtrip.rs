//! `trajdb export` then `trajdb import` (or `append`) rebuilds the same content, key-space
//! definitions included: metric, level, dimensions and recorded embedder, via the key-space
//! header line that `export --with-spaces` writes first. Plain `export` writes one trajectory
//! a line and nothing else.
#![allow(clippy::unwrap_used)]

mod cli_util;

use std::path::{Path, PathBuf};

use cli_util::*;
use serde_json::Value;

/// Trajectory-level keys in a 3-dim space `near`, imported with `--metric l2`.
const L2_RECORDS: &str = r#"{"goal":"make tea","task":"t1","outcome":{"success":true,"reward":null},"keys":{"near":[1.0,0.0,0.5]}}
{"goal":"make coffee","task":"t2","outcome":{"success":false,"reward":null},"keys":{"near":[0.9,0.1,0.4]}}
{"goal":"water the plants","task":"t3","keys":{"near":[-2.0,3.0,1.0]}}
{"goal":"boil an egg","task":"t4","keys":{"near":[4.0,4.0,4.0]}}
"#;

/// Step-level keys in a 2-dim space `act`, imported with `--metric dot --embed goal`.
const DOT_RECORDS: &str = r#"{"goal":"make green tea","task":"t5","steps":[{"observation":"kettle","action":"boil"},{"observation":"cup","action":"pour"}],"step_keys":{"act":[[1.0,2.0],[3.0,-1.0]]}}
{"goal":"sweep the floor","task":"t6","steps":[{"observation":"broom","action":"sweep"}],"step_keys":{"act":[[0.5,0.5]]}}
{"goal":"make tea with milk","task":"t7","steps":[{"observation":"milk","action":"pour"}],"step_keys":{"act":[[5.0,0.1]]}}
"#;

/// A database with an l2 space `near`, a dot step-level space `act` and a dot space `goal`
/// recording the built-in hash embedder (`--embed goal --dims 16`).
fn mixed_db(name: &str) -> PathBuf {
    let db = tmp(name);
    let a = file(&format!("{name}-l2.jsonl"), L2_RECORDS.as_bytes());
    let b = file(&format!("{name}-dot.jsonl"), DOT_RECORDS.as_bytes());
    ok(&["import", s(&db), s(&a), "--metric", "l2"]);
    ok(&[
        "import",
        s(&db),
        s(&b),
        "--metric",
        "dot",
        "--embed",
        "goal",
        "--dims",
        "16",
    ]);
    db
}

fn stats_spaces(db: &Path) -> Value {
    let st: Value = serde_json::from_str(&ok(&["stats", s(db), "--json"])).unwrap();
    st["spaces"].clone()
}

fn search(db: &Path, space: &str, query: &[&str]) -> String {
    let mut args = vec!["search", s(db), "--space", space, "-k", "10", "--json"];
    args.extend_from_slice(query);
    ok(&args)
}

/// The searches compared between a database and its rebuilt copy.
const QUERIES: [(&str, &[&str]); 4] = [
    ("near", &["--vector", "[1.0,0.0,0.4]"]),
    ("act", &["--vector", "[1.0,1.0]"]),
    ("goal", &["--text", "make tea"]),
    ("goal", &["--text", "sweep"]),
];

#[test]
fn export_then_import_keeps_metrics_embedders_search_results_and_bytes() {
    let db = mixed_db("rt-mixed");
    let spaces = stats_spaces(&db);
    let metrics: Vec<&str> = spaces
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["metric"].as_str().unwrap())
        .collect();
    assert_eq!(metrics, ["l2", "dot", "dot"], "{spaces}");
    // `--embed` spaces are created first; `goal` has keys only for the 3 records imported
    // with `--embed goal`, and the copy must not embed the other 4.
    assert_eq!(spaces[1]["name"], "goal");
    assert_eq!(spaces[1]["embedder"]["name"], "trajdb-hash");
    assert_eq!(spaces[1]["rows"], 3);

    let first = export(&db);
    assert_eq!(records(&first).len(), 7);
    let f = file("rt-mixed-export.jsonl", first.as_bytes());
    let db2 = tmp("rt-mixed-copy");
    ok(&["import", s(&db2), s(&f)]);

    assert_eq!(stats_spaces(&db2), spaces);
    for (space, q) in QUERIES {
        let want = search(&db, space, q);
        let hits: Vec<Value> = serde_json::from_str(&want).unwrap();
        assert!(!hits.is_empty(), "no hits in {space} for {q:?}");
        assert_eq!(search(&db2, space, q), want, "{space} {q:?}");
    }
    // l2 scores are negative distances: the nearest key is 0.1 away.
    let near: Vec<Value> = serde_json::from_str(&search(&db2, "near", QUERIES[0].1)).unwrap();
    let best = near[0]["score"].as_f64().unwrap();
    assert!((best + 0.1).abs() < 1e-5, "{near:?}");

    assert_eq!(export(&db2), first);
    assert_verifies(&db2);
}

#[test]
fn append_applies_a_leading_key_space_header() {
    let db = mixed_db("rt-append");
    let out = export(&db);
    let db2 = tmp("rt-append-copy");
    let r = trajdb(&["append", s(&db2)], Some(out.as_bytes()));
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.stdout.lines().count(), 7);
    assert_eq!(stats_spaces(&db2), stats_spaces(&db));
    assert_eq!(export(&db2), out);
}

#[test]
fn a_header_after_the_first_line_is_refused_with_its_line_number() {
    let db = mixed_db("rt-middle");
    let out = export(&db);
    let mut lines: Vec<&str> = out.lines().collect();
    let header = lines.remove(0);
    lines.insert(2, header);
    let moved = lines.join("\n") + "\n";
    let f = file("rt-middle.jsonl", moved.as_bytes());
    let db2 = tmp("rt-middle-copy");
    let r = trajdb(&["import", s(&db2), s(&f)], None);
    assert_refused(
        &r,
        &[
            "rt-middle.jsonl-",
            " line 3: ",
            "key-space header",
            "only be the first non-blank line",
            "nothing was imported",
        ],
    );
    let r = trajdb(&["append", s(&db2)], Some(moved.as_bytes()));
    assert_refused(&r, &["stdin line 3: ", "key-space header"]);
    // Blank lines before the header are fine: it is the first non-blank line.
    let f = file("rt-blank-first.jsonl", format!("\n  \n{out}").as_bytes());
    let db3 = tmp("rt-blank-first-copy");
    ok(&["import", s(&db3), s(&f)]);
    assert_eq!(export(&db3), out);
}

#[test]
fn a_header_that_conflicts_with_an_existing_space_is_refused() {
    // `seeded` has a cosine `goal` space of 3 dims; this header defines `goal` as l2.
    let target = seeded("rt-conflict");
    let before = export(&target);
    let src = tmp("rt-conflict-src");
    let f = file(
        "rt-conflict-src.jsonl",
        b"{\"id\":100,\"goal\":\"x\",\"keys\":{\"goal\":[1,2,3]}}\n",
    );
    ok(&["import", s(&src), s(&f), "--metric", "l2"]);
    let g = file("rt-conflict-export.jsonl", export(&src).as_bytes());
    let r = trajdb(&["import", s(&target), s(&g)], None);
    assert_refused(
        &r,
        &[
            "key space `goal` already exists",
            "3 dims, cosine",
            "3 dims, l2",
            "rt-conflict-export.jsonl-",
            " line 1 ",
            "nothing was imported",
        ],
    );
    let r = trajdb(&["append", s(&target)], Some(export(&src).as_bytes()));
    assert_refused(
        &r,
        &["key space `goal` already exists", "nothing was appended"],
    );
    assert_eq!(export(&target), before);
    // A header whose spaces the database has with the same definition is accepted; the
    // spaces it lacks are created.
    let same = tmp("rt-same");
    let z = file(
        "rt-same.jsonl",
        b"{\"id\":99,\"goal\":\"z\",\"keys\":{\"goal\":[0,0,1]}}\n",
    );
    ok(&["import", s(&same), s(&z)]);
    let h = file("rt-same-export.jsonl", before.as_bytes());
    ok(&["import", s(&same), s(&h)]);
    let defs = |db: &Path| -> Vec<Value> {
        let mut v = stats_spaces(db).as_array().unwrap().clone();
        for s in &mut v {
            let o = s.as_object_mut().unwrap();
            for k in ["rows", "live_rows", "file_bytes"] {
                o.remove(k);
            }
        }
        v
    };
    assert_eq!(defs(&same), defs(&target));
    assert_eq!(records(&export(&same)).len(), 4);
}

#[test]
fn metric_and_embed_options_that_disagree_with_the_header_are_refused() {
    let db = mixed_db("rt-opts");
    let f = file("rt-opts.jsonl", export(&db).as_bytes());
    let fresh = tmp("rt-opts-copy");
    let r = trajdb(&["import", s(&fresh), s(&f), "--metric", "cosine"], None);
    assert_refused(&r, &["--metric cosine", "key-space header", "`near`"]);
    let r = trajdb(&["import", s(&fresh), s(&f), "--embed", "plan"], None);
    assert_refused(&r, &["--embed plan", "defines no space `plan`"]);
    let r = trajdb(
        &["import", s(&fresh), s(&f), "--embed", "goal", "--dims", "8"],
        None,
    );
    assert_refused(&r, &["--embed goal", "16 dims"]);
    // Options that say what the header says are accepted, and `--embed goal` then fills the
    // `goal` keys the records lack (4 of 7), as it asks.
    ok(&[
        "import",
        s(&fresh),
        s(&f),
        "--embed",
        "goal",
        "--dims",
        "16",
    ]);
    let spaces = stats_spaces(&fresh);
    assert_eq!(spaces[1]["name"], "goal");
    assert_eq!(spaces[1]["rows"], 7);
}

#[test]
fn plain_export_is_one_trajectory_a_line_and_imports_with_inferred_spaces() {
    let db = mixed_db("rt-plain");
    let out = ok(&["export", s(&db)]);
    let with = export(&db);
    // The same records, without the header line.
    assert_eq!(out.lines().collect::<Vec<_>>(), records(&with));
    for line in out.lines() {
        let v: Value = serde_json::from_str(line).unwrap();
        assert!(
            v.get("goal").is_some() && v.get("trajdb_spaces").is_none(),
            "{line}"
        );
    }
    // Without the header, `import` infers key spaces from the first record, as for any file:
    // the spaces that record lacks are refused by name, and nothing is imported.
    let f = file("rt-plain.jsonl", out.as_bytes());
    let db2 = tmp("rt-plain-copy");
    let r = trajdb(&["import", s(&db2), s(&f)], None);
    assert_refused(&r, &["no key space named `goal`", "nothing was imported"]);
    // A database whose first record has every key space imports from a plain export.
    let one = tmp("rt-plain-one");
    ok(&[
        "import",
        s(&one),
        s(&file("rt-plain-l2.jsonl", L2_RECORDS.as_bytes())),
        "--metric",
        "l2",
    ]);
    let plain = ok(&["export", s(&one)]);
    let db3 = tmp("rt-plain-one-copy");
    ok(&[
        "import",
        s(&db3),
        s(&file("rt-plain-one.jsonl", plain.as_bytes())),
        "--metric",
        "l2",
    ]);
    assert_eq!(ok(&["export", s(&db3)]), plain);
    // The header is refused where it means nothing.
    let r = trajdb(
        &["export", s(&db), "--with-spaces", "--format", "chat"],
        None,
    );
    assert_refused(&r, &["--with-spaces: only applies to --format jsonl"]);
}
