//! The OpenAI LLM path driving a full Wordcraft episode against a local HTTP server, and the
//! clear errors of `bootstrap` for bad flags and bad recipe files.
#![allow(clippy::unwrap_used, reason = "a test fails loudly on any error")]

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::mpsc;
use std::sync::Arc;
use std::thread;

use clap::Parser;
use trajdb::{Database, HashEmbedder, Options};
use trajdb_agent::bootstrap::{run, BootstrapArgs};
use trajdb_agent::openai::OpenAiClient;
use trajdb_agent::policy::LlmPolicy;
use trajdb_agent::react::{ensure_spaces, run_episode, AgentOptions, Store};
use trajdb_agent::wordcraft::{RecipeBook, WordcraftEnv};

/// Reads one HTTP request's body.
fn read_body(s: &mut std::net::TcpStream) -> String {
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
                let n = s.read(&mut buf).unwrap();
                if n == 0 {
                    break;
                }
                data.extend_from_slice(&buf[..n]);
            }
            return String::from_utf8_lossy(&data[i + 4..]).into_owned();
        }
        let n = s.read(&mut buf).unwrap();
        if n == 0 {
            return String::new();
        }
        data.extend_from_slice(&buf[..n]);
    }
}

/// A chat server that answers action requests from `actions` in order and everything else
/// with a fixed sentence; sends each request's last user message on the channel.
fn serve(actions: Vec<String>, requests: usize) -> (String, mpsc::Receiver<String>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut next = actions.into_iter();
        for _ in 0..requests {
            let Ok((mut s, _)) = l.accept() else { return };
            let body = read_body(&mut s);
            let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
            let user = v["messages"][1]["content"]
                .as_str()
                .unwrap_or("")
                .to_owned();
            let reply = if user.ends_with("in the form the examples use.") {
                format!("Action: {}", next.next().unwrap_or_default())
            } else {
                "Combine the two ingredients of the goal.".to_owned()
            };
            let out = serde_json::json!({"choices": [{"message": {"role": "assistant", "content": reply}}]}).to_string();
            let _ = write!(s, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{out}", out.len());
            let _ = tx.send(user);
        }
    });
    (format!("http://127.0.0.1:{port}/v1"), rx)
}

#[test]
fn openai_policy_plays_a_wordcraft_episode_through_a_local_server() {
    let book = Arc::new(RecipeBook::builtin_default());
    let task = book.tasks(1).into_iter().next().unwrap();
    let (a, b, _) = task.recipes[0];
    let actions = vec![
        format!("select {}", book.name(a).unwrap()),
        format!("select {}", book.name(b).unwrap()),
    ];
    // 1 plan + 2 steps x (reason + act).
    let (url, rx) = serve(actions, 5);
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("trajdb-openai-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let db = Database::open(&dir, Options::default()).unwrap();
    let emb = HashEmbedder::default();
    ensure_spaces(&db, &emb).unwrap();
    let mut policy = LlmPolicy {
        llm: OpenAiClient::new(&url, None, "test-model").unwrap(),
    };
    let mut env = WordcraftEnv::new(book.clone(), task, 4, 1, 3).unwrap();
    let opts = AgentOptions {
        store: Store::Successes,
        ..Default::default()
    };
    let r = run_episode(&db, &emb, &mut policy, &mut env, &opts).unwrap();
    assert!(r.success, "{:?}", r.trajectory.steps);
    let t = db.get(r.stored.unwrap()).unwrap();
    assert_eq!(t.plan, "Combine the two ingredients of the goal.");
    assert_eq!(t.steps.len(), 2);
    assert!(t.steps[0].action.starts_with("select "));
    let seen: Vec<String> = rx.try_iter().collect();
    assert_eq!(seen.len(), 5);
    assert!(seen[0].contains(&format!("Goal: create {}", env.goal_name())));
    assert!(seen[2].contains("Thought: Combine the two ingredients"));
    drop(db);
    let _ = std::fs::remove_dir_all(&dir);
}

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    args: BootstrapArgs,
}

fn parse(extra: &[&str]) -> Result<BootstrapArgs, clap::Error> {
    let mut v = vec![
        "bootstrap",
        "--method",
        "traj-bootstrap",
        "--train",
        "5",
        "--test",
        "3",
    ];
    v.extend_from_slice(extra);
    Cli::try_parse_from(v).map(|c| c.args)
}

fn err(extra: &[&str]) -> String {
    match run(&parse(extra).unwrap()) {
        Ok(_) => panic!("{extra:?} was accepted"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn bad_flags_and_bad_recipe_files_give_one_clear_line() {
    assert!(Cli::try_parse_from([
        "bootstrap",
        "--method",
        "nope",
        "--train",
        "1",
        "--test",
        "1"
    ])
    .is_err());
    assert!(parse(&["--split", "sideways"]).is_err());
    assert!(parse(&["--llm", "gpt"]).is_err());
    assert_eq!(
        err(&["--llm", "openai"]),
        "--model: is required with --llm openai"
    );
    assert_eq!(err(&["--seeds", "0"]), "--seeds: must be at least 1");
    assert_eq!(err(&["--k", "0"]), "--k: must be at least 1");
    assert_eq!(
        err(&["--llm-timeout", "0"]),
        "--llm-timeout: must be more than 0 and at most 86400 seconds, got 0"
    );
    assert!(parse(&["--llm-retries", "-1"]).is_err());
    assert_eq!(
        err(&["--embedder", "minilm"]),
        "--embedder: unknown embedder \"minilm\"; expected hash, minilm:PATH or openai:MODEL"
    );
    let mut big = parse(&[]).unwrap();
    big.train = 100_000;
    let e = run(&big).err().map(|e| e.to_string()).unwrap_or_default();
    assert!(
        e.starts_with("--train: 100000 training tasks asked for"),
        "{e}"
    );
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("trajdb-badrecipes-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let missing = dir.join("missing.json");
    let e = err(&["--recipes", missing.to_str().unwrap()]);
    assert!(
        e.starts_with(&format!("recipe file {}: ", missing.display())),
        "{e}"
    );
    let bad = dir.join("bad.json");
    std::fs::write(
        &bad,
        "{\"entities\": {\"a\": {\"id\": 0, \"recipes\": [[\"b\"]]}}}",
    )
    .unwrap();
    let e = err(&["--recipes", bad.to_str().unwrap()]);
    assert!(
        e.contains("bad.json") && e.contains("expected 2 ingredients"),
        "{e}"
    );
    std::fs::write(&bad, "{\"entities\": [").unwrap();
    let e = err(&["--recipes", bad.to_str().unwrap()]);
    assert!(e.contains("invalid recipe JSON at line 1"), "{e}");
    assert!(!e.contains('\n'));
    let full = dir.join("full");
    std::fs::create_dir_all(&full).unwrap();
    std::fs::write(full.join("x"), "x").unwrap();
    assert!(err(&["--db", full.to_str().unwrap()]).contains("exists and is not empty"));
    let _ = std::fs::remove_dir_all(&dir);
}
