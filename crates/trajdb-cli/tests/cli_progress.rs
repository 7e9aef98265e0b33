//! Progress bars: drawn on stderr when it is a terminal (run under `script`, which gives the
//! command a pseudo-terminal), never into a pipe, never with `--quiet`.
#![allow(clippy::unwrap_used, reason = "a test fails loudly on any error")]

mod cli_util;

use std::process::Command;

use cli_util::*;

fn records(n: usize) -> String {
    (0..n)
        .map(|i| format!("{{\"goal\":\"goal {i}\",\"steps\":[{{\"observation\":\"o\",\"action\":\"a\"}}]}}\n"))
        .collect()
}

/// Runs `trajdb ARGS` on a pseudo-terminal (util-linux `script`); returns what it showed.
fn on_terminal(args: &[&str]) -> String {
    let cmd = std::iter::once(env!("CARGO_BIN_EXE_trajdb"))
        .chain(args.iter().copied())
        .map(|a| format!("'{a}'"))
        .collect::<Vec<_>>()
        .join(" ");
    let out = Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .output()
        .expect("util-linux `script` runs the command on a pseudo-terminal");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn import_and_export_draw_a_bar_on_a_terminal_only() {
    let file = tmp("progress.jsonl");
    std::fs::write(&file, records(2000)).unwrap();
    let db = tmp("progress-tty");
    let shown = on_terminal(&["import", s(&db), s(&file)]);
    assert!(shown.contains("importing ("), "{shown:?}");
    assert!(
        shown.contains("trajdb: imported 2000 trajectories"),
        "{shown:?}"
    );
    let shown = on_terminal(&["export", s(&db), "-q"]);
    assert!(!shown.contains("exporting ["), "--quiet hides the bar");

    // Into a pipe: only the summary line, no escape codes or carriage returns.
    let db2 = tmp("progress-pipe");
    let r = trajdb(&["import", s(&db2), s(&file)], None);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.stderr.lines().count(), 1, "{}", r.stderr);
    assert!(
        !r.stderr.contains('\u{1b}') && !r.stderr.contains('\r'),
        "{:?}",
        r.stderr
    );
    let _ = std::fs::remove_dir_all(&db);
    let _ = std::fs::remove_dir_all(&db2);
    let _ = std::fs::remove_file(&file);
}

#[test]
fn quiet_silences_progress_and_notes_but_not_errors() {
    let file = tmp("quiet.jsonl");
    std::fs::write(&file, records(10)).unwrap();
    let db = tmp("quiet");
    let shown = on_terminal(&["import", s(&db), s(&file), "--quiet"]);
    assert_eq!(shown, "", "{shown:?}");
    let r = trajdb(&["--quiet", "fork", s(&db), s(&tmp("quiet-fork"))], None);
    assert_eq!((r.code, r.stderr.as_str()), (0, ""));
    let r = trajdb(&["--quiet", "import", s(&db), "/nonexistent.jsonl"], None);
    assert_refused(&r, &["cannot open /nonexistent.jsonl"]);
    let _ = std::fs::remove_dir_all(&db);
    let _ = std::fs::remove_dir_all(tmp("quiet-fork"));
    let _ = std::fs::remove_file(&file);
}
