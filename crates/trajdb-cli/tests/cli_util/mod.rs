//! Helpers for the CLI integration tests: run the built `trajdb` binary and check results.
#![allow(dead_code, clippy::unwrap_used)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// What one run of the binary did.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `trajdb ARGS` with `stdin` (empty when None).
pub fn trajdb(args: &[&str], stdin: Option<&[u8]>) -> Run {
    trajdb_env(args, stdin, &[])
}

/// Runs `trajdb ARGS` with `stdin` and extra environment variables.
pub fn trajdb_env(args: &[&str], stdin: Option<&[u8]>, env: &[(&str, &str)]) -> Run {
    let mut child = Command::new(env!("CARGO_BIN_EXE_trajdb"))
        .args(args)
        .envs(env.iter().copied())
        .env("RUST_BACKTRACE", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Feed stdin from a thread: the child may exit before reading it all (a refusal at an
    // early line), which makes the write fail with BrokenPipe; that is the child's answer,
    // not a test failure. Writing beside `wait_with_output` also keeps a child that writes
    // a lot before reading everything from blocking on a full pipe.
    let si = child.stdin.take().unwrap();
    let feeder = stdin.map(|b| {
        let b = b.to_vec();
        std::thread::spawn(move || {
            let mut si = si;
            match si.write_all(&b) {
                Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
                    panic!("writing the child's stdin: {e}")
                }
                _ => {}
            }
        })
    });
    let out = child.wait_with_output().unwrap();
    if let Some(f) = feeder {
        f.join().unwrap();
    }
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Runs and asserts success; returns stdout.
pub fn ok(args: &[&str]) -> String {
    let r = trajdb(args, None);
    assert_eq!(r.code, 0, "trajdb {args:?} failed: {}", r.stderr);
    r.stdout
}

/// Asserts a refusal: exit 1, one `trajdb: error:` line containing every needle, no panic.
pub fn assert_refused(r: &Run, needles: &[&str]) {
    assert_eq!(r.code, 1, "expected exit 1, stderr: {}", r.stderr);
    assert!(!r.stderr.contains("panicked"), "panic: {}", r.stderr);
    assert!(!r.stderr.contains("stack backtrace"), "{}", r.stderr);
    let lines: Vec<&str> = r.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "expected one error line, got: {}", r.stderr);
    assert!(lines[0].starts_with("trajdb: error: "), "{}", lines[0]);
    for n in needles {
        assert!(lines[0].contains(n), "`{n}` missing from: {}", lines[0]);
    }
}

/// A fresh, empty temporary path (not created).
pub fn tmp(name: &str) -> PathBuf {
    let d = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("trajdb-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    let _ = std::fs::remove_file(&d);
    d
}

pub fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Three records with ids, vectors and every field set.
pub const GOOD: &str = r#"{"id":10,"task":"t1","env":"kitchen","category":"cooking","goal":"make tea","plan":"boil then steep","steps":[{"observation":"a kettle","reasoning":"boil first","action":"boil","reward":0.5},{"observation":"hot water","reasoning":"now steep","action":"steep","reward":null}],"final_observation":"tea is ready","outcome":{"success":true,"reward":1.0},"meta":{"model":"m1","seed":"3"},"provenance":{"kind":"imported","parent":null,"steps":null},"created_ms":1700000000000,"keys":{"goal":[1.0,0.0,0.5]},"step_keys":{"observation":[[1.0,0.0],[0.0,1.0]]}}
{"id":11,"task":"t2","env":"kitchen","category":null,"goal":"make coffee","plan":"","steps":[{"observation":"beans","reasoning":"","action":"grind","reward":null}],"final_observation":"","outcome":{"success":false,"reward":null},"meta":{},"provenance":{"kind":"relabelled","parent":10,"steps":[0,1]},"created_ms":1700000000001,"keys":{"goal":[0.0,1.0,0.25]},"step_keys":{"observation":[[0.6,0.8]]}}
{"id":12,"task":"t3","env":"garden","category":null,"goal":"water plants","plan":"","steps":[{"observation":"dry soil","reasoning":"plants need water","action":"water","reward":2.5}],"final_observation":"wet soil","outcome":{"success":true,"reward":null},"meta":{},"provenance":{"kind":"self_generated","parent":null,"steps":null},"created_ms":1700000000002,"keys":{"goal":[0.3,0.3,0.1]},"step_keys":{"observation":[[0.5,0.5]]}}
"#;

/// A database holding [`GOOD`]; returns its path.
pub fn seeded(name: &str) -> PathBuf {
    let dir = tmp(name);
    let file = tmp(&format!("{name}-seed.jsonl"));
    std::fs::write(&file, GOOD).unwrap();
    ok(&["import", s(&dir), s(&file)]);
    dir
}

/// Writes `bytes` to a fresh temporary file named `name`.
pub fn file(name: &str, bytes: &[u8]) -> PathBuf {
    let p = tmp(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

/// `trajdb export DB` output.
/// `trajdb export DB --with-spaces`: the key-space header line, then the records.
pub fn export(db: &Path) -> String {
    ok(&["export", s(db), "--with-spaces"])
}

/// The record lines of `trajdb export --with-spaces` output: the lines after the key-space
/// header, which must be the first line.
pub fn records(out: &str) -> Vec<&str> {
    let mut lines = out.lines();
    let head = lines.next().unwrap_or_default();
    assert!(
        head.starts_with("{\"trajdb_spaces\":["),
        "export does not start with the key-space header: {head}"
    );
    lines.collect()
}

/// Asserts `trajdb verify DB` passes.
pub fn assert_verifies(db: &Path) {
    let out = ok(&["verify", s(db)]);
    assert!(out.starts_with("ok: "), "{out}");
}
