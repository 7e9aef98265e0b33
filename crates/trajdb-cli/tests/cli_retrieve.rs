//! `trajdb retrieve` (the paper's call from the command line) and `trajdb inspect`.
#![allow(clippy::unwrap_used, reason = "a test fails loudly on any error")]

mod cli_util;

use cli_util::*;
use serde_json::Value;

const TEXTS: &str = r#"{"id":1,"goal":"make tea","plan":"boil then steep","steps":[{"observation":"a kettle","reasoning":"boil first","action":"boil","reward":0.5},{"observation":"hot water","action":"steep"},{"observation":"tea leaves","action":"pour"},{"observation":"a cup","action":"serve"}],"final_observation":"tea is ready","outcome":{"success":true,"reward":1.0}}
{"id":2,"goal":"make tea quickly","steps":[{"observation":"hot water","action":"steep"}],"outcome":{"success":false}}
{"id":3,"goal":"water plants","steps":[{"observation":"dry soil","action":"water"}],"outcome":{"success":true}}
"#;

fn texts_db(name: &str) -> std::path::PathBuf {
    let db = tmp(name);
    let file = tmp(&format!("{name}.jsonl"));
    std::fs::write(&file, TEXTS).unwrap();
    ok(&[
        "import",
        s(&db),
        s(&file),
        "--embed",
        "goal,plan,observation",
        "--dims",
        "64",
    ]);
    let _ = std::fs::remove_file(&file);
    db
}

#[test]
fn retrieve_json_ranks_by_keys_and_cuts_the_window_around_the_matched_step() {
    let db = texts_db("retrieve-json");
    let out = ok(&[
        "retrieve",
        s(&db),
        "--keys",
        "goal=make tea",
        "--step-key",
        "observation=hot water",
        "-k",
        "10",
        "--window",
        "1",
        "--json",
    ]);
    let v: Value = serde_json::from_str(&out).unwrap();
    let ex = v.as_array().unwrap();
    assert_eq!(ex.len(), 3);
    assert_eq!(ex[0]["id"], 1, "{out}");
    assert_eq!(ex[0]["matched_step"], 1, "{out}");
    // Steps 0..3: the matched step 1 with one step on each side.
    assert_eq!(ex[0]["window"], serde_json::json!([0, 3]), "{out}");
    assert_eq!(ex[0]["trajectory"]["steps"].as_array().unwrap().len(), 3);
    let scores: Vec<f64> = ex.iter().map(|e| e["score"].as_f64().unwrap()).collect();
    assert!(
        scores.windows(2).all(|w| w[0] >= w[1]),
        "best first: {scores:?}"
    );

    // --success-only drops the failure (id 2); several --keys average.
    let out = ok(&[
        "retrieve",
        s(&db),
        "--keys",
        "goal=make tea",
        "plan=boil then steep",
        "-k",
        "5",
        "--success-only",
        "--json",
    ]);
    let ids: Vec<u64> = serde_json::from_str::<Value>(&out)
        .unwrap()
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_u64().unwrap())
        .collect();
    assert_eq!(ids, vec![1, 3], "{out}");
    let _ = std::fs::remove_dir_all(&db);
}

#[test]
fn retrieve_reads_a_vector_file_and_prints_readable_examples() {
    let db = texts_db("retrieve-text");
    // The hash embedder's own vector for the goal, as a file.
    let export = ok(&["export", s(&db)]);
    let rec: Value =
        serde_json::from_str(export.lines().find(|l| l.contains("\"id\":1")).unwrap()).unwrap();
    let vfile = tmp("retrieve-vector.json");
    std::fs::write(&vfile, rec["keys"]["goal"].to_string()).unwrap();
    let key = format!("goal=@{}", s(&vfile));
    let out = ok(&["retrieve", s(&db), "--keys", &key, "-k", "1"]);
    let first = out.lines().next().unwrap();
    assert!(first.starts_with("#1 id 1  score 1.0000"), "{out}");
    assert!(out.contains("   goal: make tea"), "{out}");
    // Steps count from 0, as in --json and search.
    assert!(out.contains("  0. a kettle -> boil"), "{out}");
    let _ = std::fs::remove_file(&vfile);
    let _ = std::fs::remove_dir_all(&db);
}

#[test]
fn retrieve_bad_keys_are_one_clear_error() {
    let db = texts_db("retrieve-bad");
    let r = trajdb(&["retrieve", s(&db), "--keys", "goal"], None);
    assert_refused(&r, &["--keys \"goal\": expected SPACE=TEXT or SPACE=@FILE"]);
    let r = trajdb(&["retrieve", s(&db), "--keys", "nope=x"], None);
    assert_refused(&r, &["no key space `nope`", "goal, plan, observation"]);
    let r = trajdb(
        &["retrieve", s(&db), "--keys", "goal=@/nonexistent/v.json"],
        None,
    );
    assert_refused(&r, &["cannot open /nonexistent/v.json"]);
    let r = trajdb(&["retrieve", s(&db), "--keys", "goal=@/dev/null"], None);
    assert_refused(&r, &["is not a JSON array of numbers"]);
    let r = trajdb(
        &["retrieve", s(&db), "--keys", "observation=hot water"],
        None,
    );
    assert_refused(&r, &["observation"]);
    let r = trajdb(
        &[
            "retrieve",
            s(&db),
            "--keys",
            "goal=x",
            "--step-key",
            "goal=x",
        ],
        None,
    );
    assert_refused(&r, &["goal"]);
    let _ = std::fs::remove_dir_all(&db);
}

#[test]
fn inspect_shows_goal_plan_numbered_steps_outcome_and_utility() {
    let db = texts_db("inspect");
    let out = ok(&["inspect", s(&db), "1"]);
    let expected = "\
Trajectory 1
Goal:      make tea
Plan:      boil then steep
Steps:     4
  0. Observation: a kettle
     Thought:     boil first
     Action:      boil   (reward 0.5)
  1. Observation: hot water
     Action:      steep
  2. Observation: tea leaves
     Action:      pour
  3. Observation: a cup
     Action:      serve
Final:     tea is ready
Outcome:   success, reward 1
Utility:   retrieved 0 times in 0 episodes; Q not known yet (no labelled episode retrieved it)
";
    assert_eq!(out, expected);
    let r = trajdb(&["inspect", s(&db), "99"], None);
    assert_refused(&r, &["99"]);
    let _ = std::fs::remove_dir_all(&db);
}

/// `import` builds the search bounds and its close saves them: a step-level space's step
/// bounds are in `bounds-N.idx` after the import, and a retrieval reads the same answers.
#[test]
fn import_saves_the_step_bounds_for_the_next_open() {
    let db = seeded("import-bounds");
    let spaces: Value = serde_json::from_str(&ok(&["stats", s(&db), "--json"])).unwrap();
    let step_space = spaces["spaces"]
        .as_array()
        .unwrap()
        .iter()
        .position(|sp| sp["level"] == "step")
        .expect("the seed has a step-level space");
    let bounds = db.join(format!("bounds-{step_space}.idx"));
    assert!(
        bounds.exists(),
        "{} was not written by import",
        bounds.display()
    );
    let gq = file("import-bounds-goal.json", b"[1.0, 0.0, 0.5]");
    let oq = file("import-bounds-obs.json", b"[1.0, 0.0]");
    let (goal, obs) = (
        format!("goal=@{}", s(&gq)),
        format!("observation=@{}", s(&oq)),
    );
    let q = [
        "retrieve",
        s(&db),
        "--keys",
        &goal,
        "--step-key",
        &obs,
        "-k",
        "2",
        "--json",
    ];
    let with = ok(&q);
    std::fs::remove_file(&bounds).unwrap();
    assert_eq!(ok(&q), with, "answers without the bounds file");
    let _ = std::fs::remove_dir_all(&db);
}
