//! Bad input to `trajdb import`, `append` and the read commands: each is refused with exit
//! code 1 and one error line saying what and where, and the database keeps everything
//! committed before and still verifies.
#![allow(clippy::unwrap_used)]

mod cli_util;

use cli_util::*;

/// Imports `lines` into a seeded database and checks the refusal, that nothing changed and
/// that the database verifies. Returns the error line.
fn refused_import(name: &str, lines: &[u8], needles: &[&str]) -> String {
    let db = seeded(name);
    let before = export(&db);
    let f = file(&format!("{name}.jsonl"), lines);
    let r = trajdb(&["import", s(&db), s(&f)], None);
    let fname = s(&f).to_owned();
    let mut all = vec![fname.as_str()];
    all.extend_from_slice(needles);
    assert_refused(&r, &all);
    assert_eq!(
        export(&db),
        before,
        "database changed after a refused import"
    );
    assert_verifies(&db);
    r.stderr
}

const OK_LINE: &str = r#"{"id":20,"goal":"fine","keys":{"goal":[1,1,1]}}"#;

#[test]
fn malformed_json_is_refused_with_line_number() {
    let input = format!("{OK_LINE}\n{{\"goal\": \"x\",\n");
    let e = refused_import("malformed", input.as_bytes(), &["line 2", "malformed JSON"]);
    assert!(e.contains("nothing was imported"), "{e}");
}

#[test]
fn missing_goal_is_refused_with_line_and_record_id() {
    let input = format!("{OK_LINE}\n\n{{\"id\":50,\"task\":\"t\"}}\n");
    refused_import(
        "nogoal",
        input.as_bytes(),
        &["line 3 (record id 50)", "missing field `goal`"],
    );
}

#[test]
fn wrong_dimensions_are_refused_with_the_key_path() {
    let input = format!("{OK_LINE}\n{{\"id\":51,\"goal\":\"g\",\"keys\":{{\"goal\":[1,2]}}}}\n");
    refused_import(
        "dims",
        input.as_bytes(),
        &[
            "line 2 (record id 51)",
            "keys.goal",
            "2 dimensions",
            "has 3",
        ],
    );
}

#[test]
fn f32_overflow_to_infinity_is_refused() {
    // 1e39 is a valid JSON number and a finite f64, but overflows f32 to infinity.
    let input =
        format!("{OK_LINE}\n{{\"id\":52,\"goal\":\"g\",\"keys\":{{\"goal\":[1,1e39,0]}}}}\n");
    refused_import(
        "overflow",
        input.as_bytes(),
        &["line 2 (record id 52)", "keys.goal[1]", "not a finite"],
    );
    let steps =
        "{\"id\":53,\"goal\":\"g\",\"steps\":[{}],\"step_keys\":{\"observation\":[[-1e39,0]]}}\n";
    refused_import(
        "overflow-step",
        steps.as_bytes(),
        &["line 1 (record id 53)", "step_keys.observation[0][0]"],
    );
}

#[test]
fn nan_written_as_a_string_is_refused() {
    let input = "{\"id\":54,\"goal\":\"g\",\"keys\":{\"goal\":[1,\"NaN\",0]}}\n";
    refused_import(
        "nan",
        input.as_bytes(),
        &["line 1 (record id 54)", "invalid record", "NaN"],
    );
}

#[test]
fn duplicate_ids_are_refused_against_the_database_and_within_the_file() {
    let stored = format!("{OK_LINE}\n{{\"id\":10,\"goal\":\"again\"}}\n");
    refused_import(
        "dup-stored",
        stored.as_bytes(),
        &["line 2 (record id 10)", "already stored"],
    );
    let twice = format!("{OK_LINE}\n{{\"id\":21,\"goal\":\"a\"}}\n{{\"id\":21,\"goal\":\"b\"}}\n");
    refused_import(
        "dup-file",
        twice.as_bytes(),
        &["line 3 (record id 21)", "already used by line 2"],
    );
}

#[test]
fn unknown_key_space_is_refused() {
    let input = format!("{OK_LINE}\n{{\"id\":55,\"goal\":\"g\",\"keys\":{{\"nope\":[1]}}}}\n");
    refused_import(
        "unknown-space",
        input.as_bytes(),
        &["line 2 (record id 55)", "no key space named `nope`"],
    );
}

#[test]
fn non_utf8_text_is_refused_with_its_column() {
    let mut input = format!("{OK_LINE}\n").into_bytes();
    input.extend_from_slice(b"{\"id\":56,\"goal\":\"caf\xff\"}\n");
    refused_import(
        "utf8",
        &input,
        &["line 2", "not valid UTF-8", "0xff", "column 21"],
    );
}

#[test]
fn a_line_longer_than_64_mib_is_refused_without_reading_it_all() {
    let mut input = format!("{OK_LINE}\n").into_bytes();
    input.extend_from_slice(b"{\"goal\":\"");
    input.resize(input.len() + (64 << 20) + 16, b'a');
    input.extend_from_slice(b"\"}\n");
    refused_import(
        "huge",
        &input,
        &["line 2", "longer than the limit of 67108864 bytes"],
    );
}

#[test]
fn a_directory_that_is_not_a_database_is_refused_and_left_alone() {
    let dir = tmp("notadb");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("notes.txt"), "mine").unwrap();
    let f = file("notadb.jsonl", OK_LINE.as_bytes());
    let r = trajdb(&["import", s(&dir), s(&f)], None);
    assert_refused(&r, &["is not a trajdb database", s(&dir)]);
    let r = trajdb(&["verify", s(&dir)], None);
    assert_refused(&r, &["is not a trajdb database"]);
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    // Only the lock file may have been added; no log was created.
    assert!(!names.contains(&"log".to_owned()), "{names:?}");
    assert_eq!(
        std::fs::read_to_string(dir.join("notes.txt")).unwrap(),
        "mine"
    );
    let missing = tmp("missing-db");
    assert_refused(
        &trajdb(&["stats", s(&missing)], None),
        &["no database at", "does not exist"],
    );
}

#[test]
fn a_database_from_a_newer_format_version_is_refused_by_every_command() {
    let db = seeded("newer");
    let log = db.join("log");
    let mut b = std::fs::read(&log).unwrap();
    b[8..12].copy_from_slice(&2u32.to_le_bytes());
    let crc = crc32fast::hash(&b[..60]);
    b[60..64].copy_from_slice(&crc.to_le_bytes());
    std::fs::write(&log, &b).unwrap();
    let f = file("newer.jsonl", OK_LINE.as_bytes());
    for args in [
        vec!["import", s(&db), s(&f)],
        vec!["verify", s(&db)],
        vec!["stats", s(&db)],
        vec!["export", s(&db)],
        vec!["get", s(&db), "10"],
        vec!["compact", s(&db)],
    ] {
        let r = trajdb(&args, None);
        assert_refused(&r, &["format version 2", "upgrade trajdb"]);
    }
    let r = trajdb(&["append", s(&db)], Some(OK_LINE.as_bytes()));
    assert_refused(&r, &["format version 2"]);
    assert_eq!(std::fs::read(&log).unwrap(), b, "the log was modified");
}

#[test]
fn a_corrupt_byte_in_the_log_is_reported_with_file_and_offset() {
    let db = seeded("corrupt");
    let log = db.join("log");
    let mut b = std::fs::read(&log).unwrap();
    // Inside the payload of the first frame (header 64 bytes, frame header 24).
    b[64 + 24 + 10] ^= 0xff;
    std::fs::write(&log, &b).unwrap();
    let log_s = s(&log).to_owned();
    // `verify`, and `export` (which checks every commit as it opens, since it reads them
    // all), refuse with the file and offset.
    for args in [vec!["verify", s(&db)], vec!["export", s(&db)]] {
        let r = trajdb(&args, None);
        assert_refused(&r, &[log_s.as_str(), "at byte 64", "checksum"]);
    }
    assert_eq!(
        std::fs::read(&log).unwrap(),
        b,
        "a refused open changed the log"
    );
    // A quick command opens from the checkpoint, which vouches for the commits it covers
    // (format-spec.md, "Checkpoint"): it works, and the damage is still found afterwards.
    ok(&["delete", s(&db), "10"]);
    assert_refused(
        &trajdb(&["verify", s(&db)], None),
        &[log_s.as_str(), "at byte 64", "checksum"],
    );
}

#[test]
fn a_damaged_last_frame_fails_verify_but_earlier_commits_stay_readable() {
    let db = seeded("torn");
    let log = db.join("log");
    let mut b = std::fs::read(&log).unwrap();
    let n = b.len();
    b[n - 20] ^= 0xff;
    std::fs::write(&log, &b).unwrap();
    // As a crash leaves it: no checkpoint covers the last frame, which may be a torn write
    // (one that a checkpoint covers is refused: the test after this one).
    std::fs::remove_file(db.join("checkpoint")).unwrap();
    assert_refused(&trajdb(&["verify", s(&db)], None), &["log tail is damaged"]);
    let r = trajdb(&["export", s(&db), "--with-spaces"], None);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(records(&r.stdout).len(), 2);
    assert!(
        r.stderr.contains("warning") && r.stderr.contains("damaged log tail"),
        "{}",
        r.stderr
    );
}

#[test]
fn append_stops_at_a_bad_record_and_keeps_the_ones_before() {
    let db = seeded("append-bad");
    let input = b"{\"goal\":\"one\"}\n{\"goal\":\"two\"}\n{\"goal\":\"three\",\"keys\":{\"goal\":[1]}}\n{\"goal\":\"four\"}\n";
    let r = trajdb(&["append", s(&db)], Some(input));
    assert_eq!(r.stdout, "{\"id\":13}\n{\"id\":14}\n");
    assert_refused(
        &r,
        &[
            "stdin line 3",
            "keys.goal",
            "the 2 records before it were appended",
        ],
    );
    let out = export(&db);
    assert_eq!(records(&out).len(), 5);
    assert!(!out.contains("\"four\""));
    assert_verifies(&db);
}

#[test]
fn bad_query_vectors_are_refused() {
    let db = seeded("query-bad");
    let goal = ["search", s(&db), "--space", "goal"];
    let with = |extra: &[&str]| {
        let mut a = goal.to_vec();
        a.extend_from_slice(extra);
        trajdb(&a, None)
    };
    assert_refused(
        &with(&["--vector", "[1, 1e39, 0]"]),
        &["--vector[1]", "not a finite"],
    );
    assert_refused(
        &with(&["--vector", "[1, 2"]),
        &["--vector", "not a JSON array"],
    );
    assert_refused(&with(&["--vector", "[1, 2]"]), &["3 dimensions", "has 2"]);
    assert_refused(
        &with(&["--text", "tea"]),
        &["records no embedder", "--vector"],
    );
    assert_refused(
        &trajdb(
            &["search", s(&db), "--space", "nope", "--vector", "[1]"],
            None,
        ),
        &["no key space named `nope`"],
    );
    let missing = tmp("query-missing.json");
    assert_refused(
        &with(&["--vector-file", s(&missing)]),
        &["cannot open", s(&missing)],
    );
}

#[test]
fn usage_errors_exit_with_code_2() {
    let db = seeded("usage");
    let r = trajdb(&["search", s(&db), "--space", "goal"], None);
    assert_eq!(r.code, 2, "{}", r.stderr);
    let r = trajdb(
        &[
            "search",
            s(&db),
            "--space",
            "goal",
            "--vector",
            "[1,0,0]",
            "--text",
            "x",
        ],
        None,
    );
    assert_eq!(r.code, 2, "{}", r.stderr);
    let r = trajdb(&["import", s(&db), "x.jsonl", "--embed", "colour"], None);
    assert_eq!(r.code, 2, "{}", r.stderr);
    let r = trajdb(&["get", s(&db), "not-a-number"], None);
    assert_eq!(r.code, 2, "{}", r.stderr);
}

#[test]
fn text_queries_are_refused_for_a_space_of_another_embedder() {
    let dir = tmp("other-embedder");
    {
        let d = trajdb::Database::open(&dir, trajdb::Options::default()).unwrap();
        let id = trajdb::EmbedderId {
            name: "all-MiniLM-L6-v2".into(),
            version: "1".into(),
            dims: 3,
        };
        d.create_space(
            &trajdb::SpaceDef::new("goal", trajdb::Level::Trajectory, 3, trajdb::Metric::Dot)
                .with_embedder(id),
        )
        .unwrap();
    }
    let r = trajdb(
        &["search", s(&dir), "--space", "goal", "--text", "make tea"],
        None,
    );
    assert_refused(
        &r,
        &[
            "all-MiniLM-L6-v2@1",
            "can only be embedded with the built-in trajdb-hash@1",
        ],
    );
}

/// Offsets of the log's frames (after the 64-byte header; each frame is a 24-byte head
/// and its body, padded to 8 bytes: format-spec.md "Frames").
fn frame_starts(log: &[u8]) -> Vec<usize> {
    let mut pos = 64usize;
    let mut starts = Vec::new();
    while pos < log.len() {
        starts.push(pos);
        let len = u32::from_le_bytes(log[pos..pos + 4].try_into().unwrap()) as usize;
        pos += (24 + len).div_ceil(8) * 8;
    }
    starts
}

#[test]
fn export_skip_damaged_salvages_every_trajectory_but_the_damaged_one() {
    let db = seeded("salvage");
    let before = records(&export(&db)).len();
    let log = db.join("log");
    let mut b = std::fs::read(&log).unwrap();
    // Damage a frame in the middle: valid commits follow it, so repair would cut them too.
    let starts = frame_starts(&b);
    assert!(starts.len() >= 3, "{} frames", starts.len());
    let at = starts[starts.len() / 2];
    b[at + 30] ^= 0xff;
    std::fs::write(&log, &b).unwrap();
    assert_refused(
        &trajdb(&["export", s(&db)], None),
        &[&format!("at byte {at}"), "--skip-damaged"],
    );
    let r = trajdb(&["export", s(&db), "--skip-damaged", "--with-spaces"], None);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(
        r.stderr.contains("skipped trajectory") && r.stderr.contains(&format!("at byte {at}")),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr.contains("damaged trajectory was skipped"),
        "{}",
        r.stderr
    );
    let salvaged = records(&r.stdout).len();
    assert!(salvaged >= 1 && salvaged < before, "{salvaged} of {before}");
    // The skipped ones are the damaged frame's: every trajectory of the other frames is
    // there, so importing the export gives a sound database of them.
    let f = file("salvage.jsonl", r.stdout.as_bytes());
    let fresh = tmp("salvage-new");
    ok(&["import", s(&fresh), s(&f)]);
    assert_verifies(&fresh);
    assert_eq!(records(&export(&fresh)).len(), salvaged);
    let cut = ok(&["repair", s(&db), "--force"]);
    assert!(cut.contains(&format!("cut the log at byte {at}")), "{cut}");
    assert!(
        records(&export(&db)).len() < salvaged,
        "repair keeps only the prefix; the salvage kept more"
    );
}

#[test]
fn a_damaged_last_frame_its_checkpoint_covers_is_refused_until_repair_force() {
    // A closed database: its checkpoint covers every frame, so damage in the last one is
    // at rest (committed data), not a torn write, and no write command may cut it unasked.
    let db = seeded("covered-tail");
    let before = records(&export(&db)).len();
    let log = db.join("log");
    let mut b = std::fs::read(&log).unwrap();
    let starts = frame_starts(&b);
    let at = *starts.last().unwrap();
    b[at + 30] ^= 0xff;
    std::fs::write(&log, &b).unwrap();
    assert_refused(
        &trajdb(&["export", s(&db)], None),
        &["records as committed", "--skip-damaged"],
    );
    assert_refused(
        &trajdb(&["append", s(&db)], Some(b"{\"goal\":\"x\"}\n")),
        &[&format!("at byte {at}"), "damage at rest", "repair --force"],
    );
    assert_refused(
        &trajdb(&["repair", s(&db)], None),
        &[&format!("from byte {at}"), "--force"],
    );
    let dst = tmp("covered-tail-merge");
    assert_refused(
        &trajdb(&["merge", s(&dst), s(&db)], None),
        &["records as committed", "nothing was merged"],
    );
    assert!(!dst.exists(), "no destination was made");
    assert_eq!(std::fs::read(&log).unwrap(), b, "nothing was written");
    let r = trajdb(&["export", s(&db), "--skip-damaged", "--with-spaces"], None);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains("records as committed"), "{}", r.stderr);
    assert_eq!(records(&r.stdout).len(), before - 1);
    let out = ok(&["repair", s(&db), "--force"]);
    assert!(out.contains(&format!("cut the log at byte {at}")), "{out}");
    assert_verifies(&db);
    assert_eq!(records(&export(&db)).len(), before - 1);
}

#[test]
fn export_skip_damaged_names_damage_that_held_no_trajectory() {
    // The first frame defines the key spaces; every trajectory still reads back.
    let db = seeded("salvage-space-frame");
    let before = records(&export(&db)).len();
    let log = db.join("log");
    let mut b = std::fs::read(&log).unwrap();
    b[64 + 30] ^= 0xff;
    std::fs::write(&log, &b).unwrap();
    let r = trajdb(&["export", s(&db), "--skip-damaged", "--with-spaces"], None);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(records(&r.stdout).len(), before);
    assert!(
        r.stderr
            .contains("the log is damaged where it holds no trajectory")
            && r.stderr.contains("at byte 64"),
        "{}",
        r.stderr
    );
}

#[test]
fn damage_followed_by_valid_frames_is_refused_and_repair_keeps_the_prefix() {
    let db = seeded("repair");
    let before = records(&export(&db)).len();
    let log = db.join("log");
    let mut b = std::fs::read(&log).unwrap();
    // Damage the second to last frame.
    let starts = frame_starts(&b);
    let at = starts[starts.len() - 2];
    b[at + 30] ^= 0xff;
    std::fs::write(&log, &b).unwrap();
    assert_refused(
        &trajdb(&["verify", s(&db)], None),
        &[&format!("at byte {at}")],
    );
    assert_refused(
        &trajdb(&["export", s(&db)], None),
        &[&format!("at byte {at}"), "trajdb repair"],
    );
    // Valid commits follow the damage: repair says what it would remove and waits for
    // --force, changing nothing.
    let log_before = std::fs::read(&log).unwrap();
    assert_refused(
        &trajdb(&["repair", s(&db)], None),
        &[&format!("damaged frame at byte {at}"), "--force"],
    );
    assert_eq!(std::fs::read(&log).unwrap(), log_before);
    let out = ok(&["repair", s(&db), "--force"]);
    assert!(out.contains(&format!("cut the log at byte {at}")), "{out}");
    assert!(db.join(format!("log.cut-{at}")).is_file());
    // The damaged frame and the valid one after it are cut.
    assert_eq!(records(&export(&db)).len(), before - 2);
    assert_verifies(&db);
    let again = ok(&["repair", s(&db)]);
    assert!(again.contains("nothing to repair"), "{again}");
}

/// Issue 9 item 5: a JSONL whose second trajectory has 20,000 steps, imported with
/// `--embed observation --dims 1024`, committed line 1 and then refused line 2 as too large;
/// the refused record still created a key space. The size limit (with the keys embedding
/// adds) is now checked with everything else before anything is written.
#[test]
fn import_refused_for_size_after_embedding_writes_nothing_not_even_a_key_space() {
    let db = seeded("size-embed");
    let before = export(&db);
    let steps: Vec<String> = (0..20_000)
        .map(|i| format!("{{\"observation\":\"room {i}\",\"action\":\"look {i}\"}}"))
        .collect();
    let input = format!(
        "{{\"goal\":\"small\"}}\n{{\"goal\":\"long\",\"steps\":[{}]}}\n",
        steps.join(",")
    );
    let f = file("size-embed.jsonl", input.as_bytes());
    let r = trajdb(
        &[
            "import",
            s(&db),
            s(&f),
            "--embed",
            "action",
            "--dims",
            "1024",
        ],
        None,
    );
    assert_refused(
        &r,
        &[
            "line 2",
            "too large",
            "with the keys embedding adds",
            "nothing was imported",
        ],
    );
    assert_eq!(export(&db), before, "a refused import changed the database");
    assert_verifies(&db);
}

/// Issue 9 item 5: a validation error on the first record of a new database left an empty
/// database directory behind. The file is checked before the directory is made.
#[test]
fn refused_import_into_a_new_database_leaves_no_directory() {
    let db = tmp("new-refused");
    for bad in [
        "{\"goal\":1}\n".to_owned(),
        "{\"goal\":\"a\",\"keys\":{\"e\":[0,0]}}\n".to_owned(),
        format!("{OK_LINE}\n{{\"goal\":\"b\",\"keys\":{{\"other\":[1]}}}}\n"),
        "{\"goal\":\"g\",\"created_ms\":-5}\n".to_owned(),
        "{\"goal\":\"g\",\"provenance\":{\"kind\":\"relabelled\",\"parent\":1,\"steps\":[3,1]}}\n"
            .to_owned(),
    ] {
        let f = file("new-refused.jsonl", bad.as_bytes());
        let r = trajdb(&["import", s(&db), s(&f)], None);
        assert_refused(&r, &["nothing was imported"]);
        assert!(
            !db.exists(),
            "{bad}: a refused import made {}",
            db.display()
        );
    }
}

/// Issue 9 item 6: rerunning an interrupted import was refused at line 1 on a duplicate id.
/// `--skip-existing` skips records stored with identical content and still refuses a stored
/// id with different content; without it the refusal points to the flag.
#[test]
fn skip_existing_finishes_an_interrupted_import_and_refuses_changed_records() {
    let db = tmp("skip-existing");
    let first_two: String = GOOD.lines().take(2).map(|l| format!("{l}\n")).collect();
    let f = file("skip-existing-part.jsonl", first_two.as_bytes());
    ok(&["import", s(&db), s(&f)]);
    let all = file("skip-existing-all.jsonl", GOOD.as_bytes());
    let r = trajdb(&["import", s(&db), s(&all)], None);
    assert_refused(
        &r,
        &["line 1 (record id 10)", "already stored", "--skip-existing"],
    );
    // `append` has no such flag, so it does not suggest it.
    let r = trajdb(&["append", s(&db)], Some(b"{\"id\":10,\"goal\":\"x\"}\n"));
    assert_refused(&r, &["stdin line 1 (record id 10)", "already stored"]);
    assert!(!r.stderr.contains("--skip-existing"), "{}", r.stderr);
    let r = trajdb(&["import", s(&db), s(&all), "--skip-existing"], None);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stderr.contains("skipped 2 already stored"),
        "{}",
        r.stderr
    );
    let want = seeded("skip-existing-want");
    assert_eq!(export(&db), export(&want));
    let changed = GOOD.replacen("make tea", "make green tea", 1);
    let f = file("skip-existing-changed.jsonl", changed.as_bytes());
    let r = trajdb(&["import", s(&db), s(&f), "--skip-existing"], None);
    assert_refused(
        &r,
        &[
            "line 1 (record id 10)",
            "different content",
            "`goal` differs",
            "nothing was imported",
        ],
    );
    assert_verifies(&db);
}

/// Issue 9 item 9: a first record with `"step_keys":{"s":[]}` was refused as "no key space
/// named s".
#[test]
fn new_step_space_from_an_empty_list_says_dimensions_cannot_be_inferred() {
    let db = tmp("empty-step-list");
    let f = file(
        "empty-step-list.jsonl",
        b"{\"goal\":\"a\",\"step_keys\":{\"s\":[]}}\n",
    );
    let r = trajdb(&["import", s(&db), s(&f)], None);
    assert_refused(
        &r,
        &[
            "line 1",
            "step_keys.s",
            "cannot infer the dimensions",
            "empty list",
        ],
    );
    let r = trajdb(
        &["append", s(&db)],
        Some(b"{\"goal\":\"a\",\"step_keys\":{\"s\":[]}}\n"),
    );
    assert_refused(&r, &["stdin line 1", "cannot infer the dimensions"]);
}

/// Issue 9 item 11: `trajdb import` labelled records `self_generated` unless told
/// otherwise. Imported records default to `imported`; explicit provenance is kept, and
/// `append` (an agent storing its own runs) keeps the `self_generated` default.
#[test]
fn imported_records_default_to_imported_provenance() {
    let db = tmp("provenance");
    let f = file(
        "provenance.jsonl",
        b"{\"id\":1,\"goal\":\"a\"}\n{\"id\":2,\"goal\":\"b\",\"provenance\":{\"kind\":\"self_generated\"}}\n{\"id\":3,\"goal\":\"c\",\"meta\":{\"provenance\":\"x\"}}\n",
    );
    ok(&["import", s(&db), s(&f)]);
    ok(&["append", s(&db)]);
    let r = trajdb(&["append", s(&db)], Some(b"{\"id\":4,\"goal\":\"d\"}\n"));
    assert_eq!(r.code, 0, "{}", r.stderr);
    let kinds: Vec<String> = records(&export(&db))
        .iter()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            v["provenance"]["kind"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(
        kinds,
        ["imported", "self_generated", "imported", "self_generated"]
    );
}

/// Issue 9 item 13: empty, emoji-only and punctuation-only text got one made-up vector that
/// scored 1.0 against each other. A query text without features is refused; an imported
/// record whose text has none gets no key there, and the import says how many.
#[test]
fn text_without_features_is_refused_as_a_query_and_left_unkeyed_on_import() {
    let db = tmp("no-features");
    let f = file(
        "no-features.jsonl",
        "{\"id\":1,\"goal\":\"make tea\"}\n{\"id\":2,\"goal\":\"🙂🎉\"}\n{\"id\":3,\"goal\":\"?!\"}\n"
            .as_bytes(),
    );
    let r = trajdb(&["import", s(&db), s(&f), "--embed", "goal"], None);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stderr.contains("2 keys were left out") && r.stderr.contains("nothing to embed"),
        "{}",
        r.stderr
    );
    for text in ["", "🙂", "..."] {
        let r = trajdb(&["search", s(&db), "--space", "goal", "--text", text], None);
        assert_refused(&r, &["nothing to embed"]);
    }
    let out = ok(&[
        "search",
        s(&db),
        "--space",
        "goal",
        "--text",
        "tea",
        "--json",
    ]);
    let hits: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(hits.as_array().unwrap().len(), 1, "{out}");
}

/// Issue 9 item 15: the test helper panicked with BrokenPipe when the child refused an early
/// line and exited before reading the rest of stdin (a timing race). A refusal at line 1
/// followed by megabytes of unread input is the child's answer, not a test failure.
#[test]
fn refusal_with_megabytes_of_unread_stdin_is_reported_not_a_helper_panic() {
    let db = seeded("unread-stdin");
    let mut input = b"[1,2]\n".to_vec();
    let line = b"{\"goal\":\"never read\"}\n";
    while input.len() < 16 << 20 {
        input.extend_from_slice(line);
    }
    let r = trajdb(&["append", s(&db)], Some(&input));
    assert_refused(&r, &["stdin line 1", "each line must be a JSON object"]);
    assert_eq!(records(&export(&db)).len(), 3);
}

/// A new user's finding: a write command that cut a damaged last commit said nothing, so the
/// loss of that (acknowledged) commit went unnoticed. The writer now warns, once, on stderr,
/// naming the file that keeps the cut bytes, and still does its work.
#[test]
fn writer_that_cuts_a_damaged_tail_warns_and_names_the_kept_bytes() {
    let db = seeded("cut-warn");
    let before = records(&export(&db)).len();
    let log = db.join("log");
    let mut b = std::fs::read(&log).unwrap();
    let n = b.len();
    b[n - 3] ^= 0xff;
    std::fs::write(&log, &b).unwrap();
    // As a crash leaves it: no checkpoint covers the last frame, so it may be a torn write.
    std::fs::remove_file(db.join("checkpoint")).unwrap();
    let r = trajdb(&["append", s(&db)], Some(b"{\"goal\":\"after\"}\n"));
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stdout.starts_with("{\"id\":"), "{}", r.stdout);
    let lines: Vec<&str> = r.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{}", r.stderr);
    assert!(
        lines[0].starts_with("trajdb: warning: ")
            && lines[0].contains("bytes of damaged log tail")
            && lines[0].contains("log.cut-"),
        "{}",
        lines[0]
    );
    // The damaged last commit is gone, the new record is there.
    assert_eq!(records(&export(&db)).len(), before);
    // A second writer finds nothing to cut and says nothing.
    let again = trajdb(&["append", s(&db)], Some(b"{\"goal\":\"again\"}\n"));
    assert_eq!(again.code, 0, "{}", again.stderr);
    assert!(again.stderr.is_empty(), "{}", again.stderr);
}

#[test]
fn a_damaged_checkpoint_is_warned_about_answered_from_the_log_and_fails_verify() {
    let db = seeded("damaged-checkpoint");
    let before = export(&db);
    let stats = ok(&["stats", s(&db)]);
    let ckpt = db.join("checkpoint");
    let mut b = std::fs::read(&ckpt).unwrap();
    b[8] ^= 0x01; // inside the header, whose checksum then fails
    std::fs::write(&ckpt, &b).unwrap();
    let r = trajdb(&["stats", s(&db)], None);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.stdout, stats, "the log answers exactly as before");
    assert!(
        r.stderr.contains("warning") && r.stderr.contains("checkpoint file is damaged"),
        "{}",
        r.stderr
    );
    assert_refused(
        &trajdb(&["verify", s(&db)], None),
        &["checkpoint is damaged"],
    );
    // A write command replaces the checkpoint: verify passes and no warning is left.
    let r = trajdb(&["compact", s(&db)], None);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_verifies(&db);
    assert_eq!(export(&db), before);
    let r = trajdb(&["stats", s(&db)], None);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(!r.stderr.contains("warning"), "{}", r.stderr);
}

/// Trial findings: after the log was cut short (at a frame boundary, or inside a frame)
/// before the commits its checkpoint records, any write command accepted the shorter log and
/// wrote a checkpoint over the evidence, after which `verify` passed; and `repair` cut a torn
/// frame there and removed the checkpoint without a word. Write commands and `repair` now
/// refuse it, changing nothing, and `repair --force` is the one way to accept the loss.
#[test]
fn a_log_cut_before_its_checkpoint_keeps_write_commands_out_until_repair_force() {
    for inside_a_frame in [false, true] {
        let db = seeded(if inside_a_frame {
            "log-cut-torn"
        } else {
            "log-cut"
        });
        let log = db.join("log");
        let b = std::fs::read(&log).unwrap();
        let starts = frame_starts(&b);
        let last = starts[starts.len() - 1];
        let at = if inside_a_frame { last + 5 } else { last };
        std::fs::write(&log, &b[..at]).unwrap();
        let cut = std::fs::read(&log).unwrap();
        let ckpt = std::fs::read(db.join("checkpoint")).unwrap();
        assert_refused(
            &trajdb(&["delete", s(&db), "10"], None),
            &[&format!("ends at byte {at}"), "repair --force"],
        );
        assert_refused(
            &trajdb(&["compact", s(&db)], None),
            &["were cut from the end of the log"],
        );
        assert_refused(
            &trajdb(&["repair", s(&db)], None),
            &[&format!("ends at byte {at}"), "--force"],
        );
        assert_eq!(std::fs::read(&log).unwrap(), cut, "nothing was written");
        assert_eq!(std::fs::read(db.join("checkpoint")).unwrap(), ckpt);
        assert_refused(
            &trajdb(&["verify", s(&db)], None),
            &["were cut from the end of the log"],
        );
        let out = ok(&["repair", s(&db), "--force"]);
        assert!(out.contains("gave up the commits"), "{out}");
        assert!(!out.contains("nothing to repair"), "{out}");
        assert_verifies(&db);
        // The cut commit (the last, id 12) is gone; the others are there and writable.
        let left = export(&db);
        assert_eq!(records(&left).len(), 2, "{left}");
        ok(&["delete", s(&db), "10"]);
        assert_verifies(&db);
    }
}
