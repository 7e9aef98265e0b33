//! The `trajdb` commands and the exact output shapes other tools build on.
#![allow(clippy::unwrap_used)]

mod cli_util;

use cli_util::*;
use serde_json::{json, Value};
use trajdb::{Database, Options, RetrievalEvent, Stage, Trajectory};

fn lines_json(out: &str) -> Vec<Value> {
    out.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn import_then_export_round_trips_every_field() {
    let db = seeded("roundtrip");
    let out = export(&db);
    let want: Vec<Trajectory> = GOOD
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let got: Vec<Trajectory> = records(&out)
        .into_iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(got, want);
    // Export -> import into a new database -> export gives the same bytes.
    let f = file("roundtrip-export.jsonl", out.as_bytes());
    let db2 = tmp("roundtrip2");
    ok(&["import", s(&db2), s(&f)]);
    assert_eq!(export(&db2), out);
    assert_verifies(&db2);
}

#[test]
fn import_reports_a_one_line_summary_on_stderr() {
    let dir = tmp("summary");
    let f = file("summary.jsonl", GOOD.as_bytes());
    let r = trajdb(
        &["import", s(&dir), s(&f), "--metric", "dot", "--durable"],
        None,
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.stderr.lines().count(), 1, "{}", r.stderr);
    assert!(
        r.stderr.contains("imported 3 trajectories (4 steps)"),
        "{}",
        r.stderr
    );
    let st: Value = serde_json::from_str(&ok(&["stats", s(&dir), "--json"])).unwrap();
    assert_eq!(st["spaces"][0]["metric"], "dot");
}

#[test]
fn import_from_a_pipe_is_checked_whole_before_anything_is_written() {
    let dir = tmp("fifo");
    // /dev/stdin is not a regular file: it is saved, then checked and written like a file.
    let r = trajdb(&["import", s(&dir), "/dev/stdin"], Some(GOOD.as_bytes()));
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(records(&export(&dir)).len(), 3);
    let before = export(&dir);
    let bad = "{\"goal\":\"x\"}\n{\"goal\":1}\n";
    let r = trajdb(&["import", s(&dir), "/dev/stdin"], Some(bad.as_bytes()));
    assert_refused(&r, &["/dev/stdin line 2", "nothing was imported"]);
    assert_eq!(export(&dir), before);
    assert_verifies(&dir);
}

#[test]
fn append_prints_one_id_per_committed_record() {
    let dir = tmp("append");
    let input = b"{\"goal\":\"a\",\"keys\":{\"goal\":[1,0]}}\n{\"goal\":\"b\",\"keys\":{\"goal\":[0,1]}}\n\n{\"id\":40,\"goal\":\"c\"}\n";
    let r = trajdb(&["append", s(&dir), "--durable"], Some(input));
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.stdout, "{\"id\":1}\n{\"id\":2}\n{\"id\":40}\n");
    // The first record with keys defined the key space.
    let st: Value = serde_json::from_str(&ok(&["stats", s(&dir), "--json"])).unwrap();
    assert_eq!(st["spaces"][0]["name"], "goal");
    assert_eq!(st["spaces"][0]["rows"], 2);
    let r = trajdb(&["append", s(&dir)], Some(b"{\"goal\":\"d\"}\n"));
    assert_eq!(r.stdout, "{\"id\":41}\n");
}

#[test]
fn embedded_spaces_are_searchable_by_text_and_filled_on_append() {
    let dir = tmp("embed");
    let f = file(
        "embed.jsonl",
        br#"{"goal":"make a cup of tea","env":"kitchen","steps":[{"observation":"kettle on the stove","action":"boil water"}],"outcome":{"success":true}}
{"goal":"bake bread in the oven","env":"kitchen","steps":[{"observation":"a bag of flour","action":"knead"}],"outcome":{"success":true}}
"#,
    );
    let r = trajdb(
        &[
            "import",
            s(&dir),
            s(&f),
            "--embed",
            "goal,observation",
            "--dims",
            "64",
        ],
        None,
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    let st: Value = serde_json::from_str(&ok(&["stats", s(&dir), "--json"])).unwrap();
    assert_eq!(st["spaces"][0]["embedder"]["name"], "trajdb-hash");
    assert_eq!(st["spaces"][0]["dims"], 64);
    assert_eq!(st["spaces"][1]["rows"], 2);
    let r = trajdb(
        &["append", s(&dir)],
        Some(b"{\"goal\":\"brew green tea leaves\",\"steps\":[{\"observation\":\"green leaves\"}]}\n"),
    );
    assert_eq!(r.stdout, "{\"id\":3}\n", "{}", r.stderr);
    let hits: Value = serde_json::from_str(&ok(&[
        "search",
        s(&dir),
        "--space",
        "goal",
        "--text",
        "green tea leaves",
        "-k",
        "1",
        "--json",
    ]))
    .unwrap();
    assert_eq!(hits[0]["id"], 3);
    let hits: Value = serde_json::from_str(&ok(&[
        "search",
        s(&dir),
        "--space",
        "observation",
        "--text",
        "flour",
        "-k",
        "1",
        "--json",
    ]))
    .unwrap();
    assert_eq!(hits[0]["id"], 2);
    assert_eq!(hits[0]["step"], 0);
    // A different --dims conflicts with the recorded space.
    let r = trajdb(
        &["import", s(&dir), s(&f), "--embed", "goal", "--dims", "32"],
        None,
    );
    assert_refused(&r, &["--embed goal", "exists already"]);
}

#[test]
fn search_json_is_an_array_of_id_step_score_best_first() {
    let db = seeded("search");
    let out = ok(&[
        "search",
        s(&db),
        "--space",
        "goal",
        "--vector",
        "[1,0,0]",
        "-k",
        "5",
        "--json",
    ]);
    let v: Value = serde_json::from_str(&out).unwrap();
    let hits = v.as_array().unwrap();
    assert_eq!(hits.len(), 3);
    for h in hits {
        let mut keys: Vec<&String> = h.as_object().unwrap().keys().collect();
        keys.sort();
        assert_eq!(keys, ["id", "score", "step"]);
        assert!(h["step"].is_null());
    }
    assert_eq!(hits[0]["id"], 10);
    let scores: Vec<f64> = hits.iter().map(|h| h["score"].as_f64().unwrap()).collect();
    assert!(scores.windows(2).all(|w| w[0] >= w[1]), "{scores:?}");
    // Filters and step-level spaces.
    let out = ok(&[
        "search",
        s(&db),
        "--space",
        "observation",
        "--vector",
        "[0.6,0.8]",
        "-k",
        "1",
        "--success-only",
        "--env",
        "kitchen",
        "--json",
    ]);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v, json!([{"id": 10, "step": 1, "score": v[0]["score"]}]));
    let qf = file("search-q.json", b"[0.0, 1.0, 0.25]");
    let out = ok(&[
        "search",
        s(&db),
        "--space",
        "goal",
        "--vector-file",
        s(&qf),
        "-k",
        "1",
        "--json",
    ]);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v[0]["id"], 11);
    let table = ok(&[
        "search",
        s(&db),
        "--space",
        "goal",
        "--vector",
        "[1,0,0]",
        "--task",
        "t3",
    ]);
    assert!(
        table.contains("water plants") && !table.contains("make tea"),
        "{table}"
    );
}

#[test]
fn stats_json_has_counts_and_rows_per_space() {
    let db = seeded("stats");
    let v: Value = serde_json::from_str(&ok(&["stats", s(&db), "--json"])).unwrap();
    assert_eq!(v["trajectories"], 3);
    assert_eq!(v["steps"], 4);
    assert_eq!(v["successes"], 2);
    let spaces = v["spaces"].as_array().unwrap();
    assert_eq!(spaces[0]["name"], "goal");
    assert_eq!(spaces[0]["rows"], 3);
    assert_eq!(spaces[1]["name"], "observation");
    assert_eq!(spaces[1]["rows"], 4);
    assert!(spaces[0]["file_bytes"].as_u64().unwrap() > 0);
}

#[test]
fn stats_text_is_an_aligned_table() {
    let db = seeded("stats-table");
    let text = ok(&["stats", s(&db)]);
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines[0].starts_with("trajectories") && lines[0].ends_with(" 3"),
        "{text}"
    );
    // The counts: names left-aligned, numbers right-aligned in one column.
    let counts: Vec<&str> = lines
        .iter()
        .take_while(|l| !l.is_empty())
        .copied()
        .collect();
    assert_eq!(counts.len(), 9, "{text}");
    assert!(counts[8].starts_with("exact below rows") && counts[8].ends_with(" 20000"));
    assert!(counts.iter().all(|l| l.len() == counts[0].len()), "{text}");
    // The key spaces: a header, then one row per space, every column starting where its
    // header does.
    let head = lines[counts.len() + 1];
    assert!(
        head.starts_with("space ") && head.ends_with("key file bytes  graph rows   auto"),
        "{text}"
    );
    let rows = &lines[counts.len() + 2..];
    assert_eq!(rows.len(), 2, "{text}");
    assert!(
        rows[0].starts_with("goal ") && rows[1].starts_with("observation "),
        "{text}"
    );
    let level_at = head.find("level").unwrap();
    assert_eq!(&rows[0][level_at..level_at + 10], "trajectory", "{text}");
    assert_eq!(&rows[1][level_at..level_at + 4], "step", "{text}");
    assert!(rows.iter().all(|r| r.len() == head.len()), "{text}");
    // No graph index: no graph rows, and the automatic choice scans.
    assert!(rows.iter().all(|r| r.ends_with("-  exact")), "{text}");
}

#[test]
fn usage_export_and_utility_stats_follow_the_episode_log() {
    let db = seeded("usage");
    {
        let d = Database::open(&db, Options::default()).unwrap();
        let ev = |id| RetrievalEvent {
            id,
            step: None,
            stage: Stage::Plan,
        };
        let e1 = d.begin_episode().unwrap();
        d.log_retrievals(e1, &[ev(10), ev(10), ev(12)]).unwrap();
        d.set_episode_outcome(e1, Some(true)).unwrap();
        let e2 = d.begin_episode().unwrap();
        d.log_retrievals(e2, &[ev(10)]).unwrap();
        d.set_episode_outcome(e2, Some(false)).unwrap();
        let e3 = d.begin_episode().unwrap();
        d.log_retrievals(e3, &[ev(11)]).unwrap();
    }
    let usage = lines_json(&ok(&["export", s(&db), "--usage"]));
    assert_eq!(
        usage,
        vec![
            json!({"episode":1,"outcome":true,"retrieved":[{"id":10,"count":2},{"id":12,"count":1}]}),
            json!({"episode":2,"outcome":false,"retrieved":[{"id":10,"count":1}]}),
            json!({"episode":3,"outcome":null,"retrieved":[{"id":11,"count":1}]}),
        ]
    );
    let util = lines_json(&ok(&["stats", s(&db), "--utility", "--json"]));
    assert_eq!(
        util,
        vec![
            json!({"id":10,"retrievals":3,"episodes":2,"q":2.0/3.0}),
            json!({"id":11,"retrievals":1,"episodes":1,"q":null}),
            json!({"id":12,"retrievals":1,"episodes":1,"q":1.0}),
        ]
    );
}

#[test]
fn chat_export_alternates_turns_and_filters_successes() {
    let db = seeded("chat");
    let all = lines_json(&ok(&["export", s(&db), "--format", "chat"]));
    assert_eq!(all.len(), 3);
    let m = all[0]["messages"].as_array().unwrap();
    let roles: Vec<&str> = m.iter().map(|x| x["role"].as_str().unwrap()).collect();
    assert_eq!(roles, ["system", "user", "assistant", "user", "assistant"]);
    let text = |i: usize| m[i]["content"].as_str().unwrap();
    assert!(
        text(0).contains("kitchen") && text(0).contains("t1"),
        "{}",
        text(0)
    );
    assert!(text(1).contains("Goal: make tea") && text(1).contains("Plan: boil then steep"));
    assert!(text(1).contains("Observation: a kettle"));
    assert_eq!(text(2), "Thought: boil first\nAction: boil");
    assert_eq!(text(3), "Observation: hot water");
    assert_eq!(text(4), "Thought: now steep\nAction: steep");
    let ok_only = lines_json(&ok(&[
        "export",
        s(&db),
        "--format",
        "chat",
        "--success-only",
    ]));
    assert_eq!(ok_only.len(), 2);
    assert!(ok_only.iter().all(|l| l.as_object().unwrap().len() == 1));
}

#[test]
fn get_delete_compact_fork_and_verify() {
    let db = seeded("admin");
    let one: Trajectory = serde_json::from_str(&ok(&["get", s(&db), "11", "--json"])).unwrap();
    assert_eq!(one.goal, "make coffee");
    assert!(ok(&["get", s(&db), "10"]).contains("goal         make tea"));
    let r = trajdb(&["delete", s(&db), "11"], None);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_refused(
        &trajdb(&["get", s(&db), "11"], None),
        &["no trajectory with id 11"],
    );
    assert_refused(
        &trajdb(&["delete", s(&db), "11"], None),
        &["no trajectory with id 11"],
    );
    let before = export(&db);
    let out = ok(&["compact", s(&db)]);
    assert!(
        out.contains("removed 1 deleted") && out.contains("->"),
        "{out}"
    );
    assert_eq!(export(&db), before);
    assert_verifies(&db);
    let dst = tmp("admin-fork");
    ok(&["fork", s(&db), s(&dst)]);
    assert_eq!(export(&dst), before);
    assert_verifies(&dst);
    assert_refused(&trajdb(&["fork", s(&db), s(&dst)], None), &["not empty"]);
}

#[test]
fn read_commands_work_while_a_writer_holds_the_lock() {
    let db = seeded("locked");
    let writer = Database::open(&db, Options::default()).unwrap();
    assert_eq!(records(&export(&db)).len(), 3);
    assert_verifies(&db);
    ok(&[
        "search",
        s(&db),
        "--space",
        "goal",
        "--vector",
        "[1,0,0]",
        "--json",
    ]);
    let r = trajdb(&["delete", s(&db), "10"], None);
    assert_refused(&r, &["locked"]);
    drop(writer);
}

/// Issue 9 item 10: a second writer failed at once, naming the holder's start in
/// milliseconds since the epoch. Without `--wait` the refusal names a UTC time and the flag;
/// with `--wait SECONDS` the command waits for the holder to finish.
#[test]
fn write_commands_wait_for_the_lock_with_wait_seconds() {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let db = seeded("lock-wait");
    let mut holder = Command::new(env!("CARGO_BIN_EXE_trajdb"))
        .args(["append", s(&db)])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = holder.stdin.take().unwrap();
    // The holder has the lock once it has committed and printed a record's id.
    stdin.write_all(b"{\"goal\":\"held\"}\n").unwrap();
    stdin.flush().unwrap();
    let mut first = [0u8; 1];
    std::io::Read::read_exact(holder.stdout.as_mut().unwrap(), &mut first).unwrap();
    let r = trajdb(&["delete", s(&db), "10"], None);
    assert_refused(&r, &["locked for writing", " UTC)", "--wait SECONDS"]);
    assert!(!r.stderr.contains("ms after the epoch"), "{}", r.stderr);
    let releaser = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_millis(300));
        drop(stdin);
        holder.wait().unwrap()
    });
    let r = trajdb(&["delete", s(&db), "10", "--wait", "30"], None);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(releaser.join().unwrap().success());
    let r = trajdb(&["delete", s(&db), "11", "--wait", "-1"], None);
    assert_eq!(r.code, 2, "{}", r.stderr);
}

/// Issue 9 item 12: `search` in a step-level space counts steps, so one trajectory can take
/// several places; `--help` says so and `--per-trajectory` keeps each trajectory's best step.
#[test]
fn search_per_trajectory_keeps_the_best_step_of_each_trajectory() {
    let db = seeded("per-traj");
    let run = |extra: &[&str]| -> Vec<(u64, Option<u64>)> {
        let mut a = vec![
            "search",
            s(&db),
            "--space",
            "observation",
            "-k",
            "4",
            "--json",
        ];
        a.extend_from_slice(extra);
        let v: Value = serde_json::from_str(&ok(&a)).unwrap();
        v.as_array()
            .unwrap()
            .iter()
            .map(|h| (h["id"].as_u64().unwrap(), h["step"].as_u64()))
            .collect()
    };
    assert_eq!(
        run(&["--vector", "[1,0]"]),
        [(10, Some(0)), (12, Some(0)), (11, Some(0)), (10, Some(1))]
    );
    assert_eq!(
        run(&["--vector", "[1,0]", "--per-trajectory"]),
        [(10, Some(0)), (12, Some(0)), (11, Some(0))]
    );
    assert_eq!(
        run(&["--vector", "[0,1]", "--per-trajectory"]),
        [(10, Some(1)), (11, Some(0)), (12, Some(0))]
    );
    let help = ok(&["search", "--help"]);
    assert!(
        help.contains("step-level space each hit") && help.contains("--per-trajectory"),
        "{help}"
    );
}

/// Issue 9 item 14: `get` printed newlines and control characters raw (a record could
/// forge lines or recolour the terminal) and long fields whole.
#[test]
fn get_escapes_control_characters_and_cuts_long_fields_unless_full() {
    let db = tmp("get-readable");
    let long = "x".repeat(1000);
    let rec = format!(
        "{{\"id\":1,\"goal\":\"line one\\nid           999\\u001b[31m\",\"plan\":\"{long}\"}}\n"
    );
    let r = trajdb(&["append", s(&db)], Some(rec.as_bytes()));
    assert_eq!(r.code, 0, "{}", r.stderr);
    let out = ok(&["get", s(&db), "1"]);
    assert!(!out.contains('\u{1b}'), "{out:?}");
    assert!(
        out.contains("goal         line one\\nid           999\\u{1b}[31m"),
        "{out}"
    );
    assert_eq!(
        out.lines().filter(|l| l.starts_with("id ")).count(),
        1,
        "{out}"
    );
    assert!(
        out.contains("… [600 more characters; --full shows all]"),
        "{out}"
    );
    let full = ok(&["get", s(&db), "1", "--full"]);
    assert!(
        full.contains(&long) && !full.contains("more characters"),
        "{full}"
    );
    let json = ok(&["get", s(&db), "1", "--json"]);
    assert!(json.contains(&long));
}

/// Issue 9 item 7, for query files: a vector file saved with a UTF-8 byte-order mark (as
/// some Windows editors write) is read like JSONL input, not refused.
#[test]
fn vector_file_with_a_byte_order_mark_is_accepted() {
    let db = seeded("bom-vector");
    let f = file("bom-vector.json", "\u{FEFF}[1, 0, 0.5]".as_bytes());
    let out = ok(&[
        "search",
        s(&db),
        "--space",
        "goal",
        "--vector-file",
        s(&f),
        "--json",
    ]);
    let hits: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(hits[0]["id"], 10, "{out}");
}
