//! `--embedder minilm:PATH` from the command line: `import --embed`, `search --text`,
//! `retrieve` and `bootstrap` with all-MiniLM-L6-v2 (build with `--features minilm`, model
//! folder in `TRAJDB_MINILM_DIR`; without the folder those tests print SKIP), and the clear
//! refusals: a build without the feature, a bad folder, a query by another embedder.
#![allow(clippy::unwrap_used, reason = "a test fails loudly on any error")]

mod cli_util;

use std::io::Write;

use cli_util::*;
use serde_json::Value;

const PLAIN: &str = r#"{"goal":"make a cup of tea","steps":[{"observation":"a kettle on the stove","action":"boil water"},{"observation":"hot water and tea leaves","action":"steep"}],"outcome":{"success":true}}
{"goal":"repair the flat bicycle tyre","steps":[{"observation":"a bicycle with a flat tyre","action":"take the pump"}],"outcome":{"success":true}}
{"goal":"water the garden plants","steps":[{"observation":"dry soil","action":"water"}],"outcome":{"success":false}}
"#;

/// The model folder, or None (after printing SKIP) when this build has no MiniLM embedder
/// or `TRAJDB_MINILM_DIR` is unset.
fn model_dir(test: &str) -> Option<String> {
    if !cfg!(feature = "minilm") {
        // Straight to stderr, past the test harness's capture, so the skip shows (one
        // write, so lines of parallel tests do not mix).
        let _ = std::io::stderr()
            .write_all(format!("SKIP {test}: built without --features minilm\n").as_bytes());
        return None;
    }
    match std::env::var("TRAJDB_MINILM_DIR") {
        Ok(d) if !d.is_empty() => Some(d),
        _ => {
            let _ = std::io::stderr().write_all(
                format!("SKIP {test}: TRAJDB_MINILM_DIR is not set (an all-MiniLM-L6-v2 folder)\n")
                    .as_bytes(),
            );
            None
        }
    }
}

#[test]
fn minilm_spec_is_refused_clearly_by_a_build_without_it_or_a_bad_folder() {
    let db = tmp("minilm-bad");
    let file = file("minilm-bad.jsonl", PLAIN.as_bytes());
    let missing = tmp("minilm-no-such-folder");
    let spec = format!("minilm:{}", s(&missing));
    let r = trajdb(
        &[
            "import",
            s(&db),
            s(&file),
            "--embed",
            "goal",
            "--embedder",
            &spec,
        ],
        None,
    );
    if cfg!(feature = "minilm") {
        assert_refused(
            &r,
            &[
                &format!("--embedder {spec}: MiniLM model folder {} does not exist or is not a directory", s(&missing)),
                "nothing was imported",
            ],
        );
    } else {
        assert_refused(&r, &["--embedder: ", "--features minilm"]);
    }
    assert!(!db.exists(), "no database was made");
    let r = trajdb(
        &[
            "import",
            s(&db),
            s(&file),
            "--embed",
            "goal",
            "--embedder",
            "minilm:",
        ],
        None,
    );
    assert_refused(&r, &["--embedder: "]);
    // --dims belongs to the hash embedder.
    let r = trajdb(
        &[
            "import",
            s(&db),
            s(&file),
            "--embed",
            "goal",
            "--embedder",
            &spec,
            "--dims",
            "8",
        ],
        None,
    );
    assert_refused(&r, &["--"]);
    assert!(!db.exists(), "no database was made");
}

#[test]
fn import_search_and_retrieve_with_minilm() {
    let Some(model) = model_dir("import_search_and_retrieve_with_minilm") else {
        return;
    };
    let spec = format!("minilm:{model}");
    let db = tmp("minilm-db");
    let file = file("minilm.jsonl", PLAIN.as_bytes());
    let r = trajdb(
        &[
            "import",
            s(&db),
            s(&file),
            "--embed",
            "goal,observation",
            "--embedder",
            &spec,
        ],
        None,
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stderr.contains("with minilm-l6-v2"), "{}", r.stderr);
    // The spaces record the model.
    let head: Value = serde_json::from_str(export(&db).lines().next().unwrap()).unwrap();
    let spaces = head["trajdb_spaces"].as_array().unwrap();
    assert_eq!(spaces.len(), 2);
    for sp in spaces {
        assert_eq!(sp["embedder"]["name"], "minilm-l6-v2", "{sp}");
        assert_eq!(sp["dims"], 384, "{sp}");
    }
    // A query in other words finds the tea trajectory (id 1) first, and the bicycle one
    // (id 2) for a question about a bike.
    let out = ok(&[
        "search",
        s(&db),
        "--space",
        "goal",
        "--text",
        "boil water for a hot drink",
        "--embedder",
        &spec,
        "--json",
    ]);
    let hits: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(hits[0]["id"], 1, "{out}");
    let out = ok(&[
        "search",
        s(&db),
        "--space",
        "goal",
        "--text",
        "fix a puncture on a bike",
        "--embedder",
        &spec,
        "--json",
    ]);
    let hits: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(hits[0]["id"], 2, "{out}");
    let out = ok(&[
        "retrieve",
        s(&db),
        "--keys",
        "goal=brew tea",
        "--step-key",
        "observation=steaming kettle",
        "-k",
        "1",
        "--embedder",
        &spec,
        "--json",
    ]);
    let ex: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(ex[0]["id"], 1, "{out}");
    assert_eq!(ex[0]["matched_step"], 0, "{out}");
    // Without the model folder, or with another embedder, the text query is refused.
    let r = trajdb(
        &["search", s(&db), "--space", "goal", "--text", "tea"],
        None,
    );
    assert_refused(&r, &["minilm-l6-v2", "--embedder minilm:PATH"]);
    let r = trajdb(
        &[
            "search",
            s(&db),
            "--space",
            "goal",
            "--text",
            "tea",
            "--embedder",
            "hash",
        ],
        None,
    );
    assert_refused(&r, &["--embedder hash: key space `goal` holds keys from embedder minilm-l6-v2@1 (384 dims), not trajdb-hash"]);
    let r = trajdb(&["retrieve", s(&db), "--keys", "goal=tea"], None);
    assert_refused(&r, &["--embedder minilm:PATH"]);
    assert_verifies(&db);
}

#[test]
fn bootstrap_with_minilm_records_it_in_every_space() {
    let Some(model) = model_dir("bootstrap_with_minilm_records_it_in_every_space") else {
        return;
    };
    let db = tmp("minilm-bootstrap");
    let cmd = format!(
        "exec python3 {}/../trajdb-agent/tests/scripted_env.py",
        env!("CARGO_MANIFEST_DIR")
    );
    let spec = format!("minilm:{model}");
    let r = trajdb(
        &[
            "bootstrap",
            "--env-cmd",
            &cmd,
            "--method",
            "traj-bootstrap",
            "--train",
            "3",
            "--test",
            "2",
            "--max-steps",
            "4",
            "--embedder",
            &spec,
            "--db",
            s(&db),
            "--json",
        ],
        None,
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    let v: Value = serde_json::from_str(r.stdout.trim()).unwrap();
    let kept = v["db"].as_str().unwrap();
    let head: Value =
        serde_json::from_str(export(std::path::Path::new(kept)).lines().next().unwrap()).unwrap();
    let spaces = head["trajdb_spaces"].as_array().unwrap();
    assert!(!spaces.is_empty());
    for sp in spaces {
        assert_eq!(sp["embedder"]["name"], "minilm-l6-v2", "{sp}");
    }
    let r = trajdb(
        &[
            "bootstrap",
            "--env-cmd",
            &cmd,
            "--method",
            "traj-bootstrap",
            "--train",
            "1",
            "--test",
            "1",
            "--embedder",
            "minilm:/no/such/folder",
        ],
        None,
    );
    assert_refused(&r, &["MiniLM model folder /no/such/folder does not exist"]);
}
