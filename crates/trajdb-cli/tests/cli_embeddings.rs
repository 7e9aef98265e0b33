//! `import --embed FIELDS --embedder openai:MODEL` against a local OpenAI-compatible
//! `/v1/embeddings` server, and the clear refusals of bad embedder options.
#![allow(clippy::unwrap_used, reason = "a test fails loudly on any error")]

mod cli_util;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;

use cli_util::*;
use serde_json::Value;

/// Reads one request's body.
fn read_body(s: &mut TcpStream) -> Option<String> {
    let mut data = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        if let Some(i) = data.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&data[..i]).to_lowercase();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            while data.len() < i + 4 + len {
                let n = s.read(&mut buf).ok()?;
                if n == 0 {
                    break;
                }
                data.extend_from_slice(&buf[..n]);
            }
            return Some(String::from_utf8_lossy(&data[i + 4..]).into_owned());
        }
        let n = s.read(&mut buf).ok()?;
        if n == 0 {
            return None;
        }
        data.extend_from_slice(&buf[..n]);
    }
}

/// A 4-dimensional embedding of `text` that a test can recompute: length, vowels, words, 1.
pub fn toy_embedding(text: &str) -> Vec<f32> {
    let vowels = text.chars().filter(|c| "aeiou".contains(*c)).count();
    vec![
        text.len() as f32,
        vowels as f32,
        text.split_whitespace().count() as f32,
        1.0,
    ]
}

/// An embeddings server answering every request with [`toy_embedding`]s; counts inputs.
fn serve_embeddings() -> (String, Arc<AtomicUsize>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let inputs = Arc::new(AtomicUsize::new(0));
    let seen = inputs.clone();
    thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { return };
            let Some(body) = read_body(&mut s) else {
                continue;
            };
            let v: Value = serde_json::from_str(&body).unwrap_or_default();
            let texts: Vec<String> = v["input"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .map(|t| t.as_str().unwrap_or("").to_owned())
                        .collect()
                })
                .unwrap_or_default();
            seen.fetch_add(texts.len(), Ordering::SeqCst);
            let data: Vec<Value> = texts
                .iter()
                .enumerate()
                .map(|(i, t)| serde_json::json!({"index": i, "embedding": toy_embedding(t)}))
                .collect();
            let out = serde_json::json!({"data": data, "model": v["model"]}).to_string();
            let _ = write!(
                s,
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{out}",
                out.len()
            );
        }
    });
    (format!("http://127.0.0.1:{port}/v1"), inputs)
}

const PLAIN: &str = r#"{"goal":"make tea","steps":[{"observation":"a kettle","action":"boil"},{"observation":"hot water","action":"steep"}],"outcome":{"success":true}}
{"goal":"water plants","steps":[{"observation":"dry soil","action":"water"}],"outcome":{"success":false}}
"#;

#[test]
fn import_with_openai_embedder_fills_keys_and_records_the_model() {
    let (base, inputs) = serve_embeddings();
    let db = tmp("openai-embed");
    let file = tmp("openai-embed.jsonl");
    std::fs::write(&file, PLAIN).unwrap();
    let env = [
        ("OPENAI_BASE_URL", base.as_str()),
        ("OPENAI_API_KEY", "sk-test"),
    ];
    let r = trajdb_env(
        &[
            "import",
            s(&db),
            s(&file),
            "--embed",
            "goal,observation",
            "--embedder",
            "openai:toy",
        ],
        None,
        &env,
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stderr
            .contains("embedded 5 keys from text with openai:toy"),
        "{}",
        r.stderr
    );
    // One probe, 2 goals and 3 observations.
    assert_eq!(inputs.load(Ordering::SeqCst), 6);
    let stats: Value = serde_json::from_str(&ok(&["stats", s(&db), "--json"])).unwrap();
    let spaces = stats["spaces"].as_array().unwrap();
    assert_eq!(spaces.len(), 2, "{stats}");
    for sp in spaces {
        assert_eq!(sp["embedder"]["name"], "openai:toy", "{sp}");
        assert_eq!(sp["dims"], 4, "{sp}");
    }
    let out = ok(&["export", s(&db)]);
    let first: Value =
        serde_json::from_str(out.lines().find(|l| l.contains("make tea")).unwrap()).unwrap();
    let goal: Vec<f32> = serde_json::from_value(first["keys"]["goal"].clone()).unwrap();
    assert_eq!(goal, toy_embedding("make tea"));
    let obs: Vec<Vec<f32>> =
        serde_json::from_value(first["step_keys"]["observation"].clone()).unwrap();
    assert_eq!(
        obs,
        vec![toy_embedding("a kettle"), toy_embedding("hot water")]
    );
    let _ = std::fs::remove_dir_all(&db);
    let _ = std::fs::remove_file(&file);
}

#[test]
fn unreachable_embeddings_server_is_one_error_and_nothing_is_written() {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let base = format!("http://127.0.0.1:{port}/v1");
    let db = tmp("openai-down");
    let file = tmp("openai-down.jsonl");
    std::fs::write(&file, PLAIN).unwrap();
    let r = trajdb_env(
        &[
            "import",
            s(&db),
            s(&file),
            "--embed",
            "goal",
            "--embedder",
            "openai:toy",
            "--llm-retries",
            "1",
            "--llm-timeout",
            "2",
        ],
        None,
        &[
            ("OPENAI_BASE_URL", base.as_str()),
            ("OPENAI_API_KEY", "sk-hidden-key"),
        ],
    );
    assert_refused(
        &r,
        &[
            "--embedder openai:toy",
            "cannot connect to",
            "gave up after 2 attempts",
            "nothing was imported",
        ],
    );
    assert!(!r.stderr.contains("sk-hidden-key"));
    assert!(!db.exists(), "the database was not created");
    let _ = std::fs::remove_file(&file);
}

#[test]
fn bad_embedder_options_are_refused_before_anything_is_written() {
    let db = tmp("embedder-bad");
    let file = tmp("embedder-bad.jsonl");
    std::fs::write(&file, PLAIN).unwrap();
    let r = trajdb(
        &[
            "import",
            s(&db),
            s(&file),
            "--embed",
            "goal",
            "--embedder",
            "minilm",
        ],
        None,
    );
    assert_refused(
        &r,
        &["--embedder: unknown embedder \"minilm\"; expected hash, minilm:PATH or openai:MODEL"],
    );
    let r = trajdb(
        &[
            "import",
            s(&db),
            s(&file),
            "--embed",
            "goal",
            "--embedder",
            "openai:m",
            "--dims",
            "8",
        ],
        None,
    );
    assert_refused(&r, &["--dims: only applies to --embedder hash"]);
    let r = trajdb(
        &[
            "import",
            s(&db),
            s(&file),
            "--embed",
            "goal",
            "--embedder",
            "openai:m",
            "--llm-timeout",
            "0",
        ],
        None,
    );
    assert_refused(&r, &["--llm-timeout: must be more than 0"]);
    assert!(!db.exists());
    let _ = std::fs::remove_file(&file);
}
