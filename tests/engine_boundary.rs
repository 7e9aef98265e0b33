//! The engine crate (`src/`, root `Cargo.toml`) holds the engine only: no agent, environment,
//! LLM or command-line code. The agent crate depends on the engine through its public API
//! only. These tests read the sources, so a change that crosses a boundary fails here.
#![allow(clippy::unwrap_used, reason = "a test fails loudly on any error")]

use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Words that name agent, environment, LLM or CLI items. Matched case-insensitively
/// except where the case carries the meaning (`Llm`, `ReAct` as type or module names).
const FORBIDDEN_ANY_CASE: [&str; 6] = [
    "wordcraft",
    "openai",
    "clap",
    "trajdb_agent",
    "mod agent",
    "mod cli",
];
const FORBIDDEN_EXACT: [&str; 3] = ["Llm", "ReAct", "Policy"];

#[test]
fn engine_sources_name_no_agent_llm_environment_or_cli_item() {
    let mut files = Vec::new();
    rust_files(&root().join("src"), &mut files);
    assert!(files.len() > 10, "expected the engine's sources under src/");
    let mut found = Vec::new();
    for f in &files {
        let text = std::fs::read_to_string(f).unwrap();
        let lower = text.to_lowercase();
        for (n, line) in lower.lines().enumerate() {
            for w in FORBIDDEN_ANY_CASE {
                if line.contains(w) {
                    found.push(format!("{}:{}: {w}", f.display(), n + 1));
                }
            }
        }
        for (n, line) in text.lines().enumerate() {
            for w in FORBIDDEN_EXACT {
                if line.contains(w) {
                    found.push(format!("{}:{}: {w}", f.display(), n + 1));
                }
            }
        }
    }
    assert!(
        found.is_empty(),
        "engine sources name agent/CLI items:\n{}",
        found.join("\n")
    );
}

/// The section of a Cargo manifest that starts at `[name]`, up to the next section.
fn section<'a>(manifest: &'a str, name: &str) -> &'a str {
    let head = format!("[{name}]");
    let Some(start) = manifest.find(&head) else {
        return "";
    };
    let body = &manifest[start + head.len()..];
    let end = body.find("\n[").unwrap_or(body.len());
    &body[..end]
}

#[test]
fn engine_manifest_depends_on_no_agent_or_cli_crate() {
    let manifest = std::fs::read_to_string(root().join("Cargo.toml")).unwrap();
    let deps = section(&manifest, "dependencies");
    assert!(
        deps.contains("memmap2"),
        "the engine's [dependencies] section was not found"
    );
    for w in ["clap", "trajdb-agent", "trajdb-cli"] {
        assert!(!deps.contains(w), "the engine depends on {w}");
    }
}

#[test]
fn agent_crate_uses_the_engine_by_path_through_its_public_api() {
    let agent = root().join("crates/trajdb-agent");
    let manifest = std::fs::read_to_string(agent.join("Cargo.toml")).unwrap();
    assert!(
        section(&manifest, "dependencies").contains("trajdb.workspace = true"),
        "trajdb-agent must depend on the workspace's engine crate"
    );
    let workspace = std::fs::read_to_string(root().join("Cargo.toml")).unwrap();
    assert!(workspace.contains("trajdb = { path = \".\""));
    // Public API only. The compiler already refuses private engine items; what it lets
    // through are the `#[doc(hidden)]` ones, which are not part of the API.
    let lib = std::fs::read_to_string(root().join("src/lib.rs")).unwrap();
    let hidden: Vec<&str> = lib
        .split("#[doc(hidden)]")
        .skip(1)
        .filter_map(|rest| {
            let rest = rest.split_once("pub fn ")?.1;
            Some(rest.split('(').next()?.trim())
        })
        .collect();
    assert!(
        !hidden.is_empty(),
        "expected the fuzz entry point to be found as hidden"
    );
    let mut files = Vec::new();
    rust_files(&agent.join("src"), &mut files);
    for f in &files {
        let text = std::fs::read_to_string(f).unwrap();
        for item in &hidden {
            assert!(
                !text.contains(item),
                "{} uses the hidden engine item {item}",
                f.display()
            );
        }
    }
}
