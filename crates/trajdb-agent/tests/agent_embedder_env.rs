//! `bootstrap --embedder openai:MODEL` reaches the embeddings server before any episode: a
//! server that is down is one clear error. (Own test binary: it sets `OPENAI_BASE_URL`.)
#![allow(clippy::unwrap_used, reason = "a test fails loudly on any error")]

use clap::Parser;
use trajdb_agent::bootstrap::{run, BootstrapArgs};

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    args: BootstrapArgs,
}

#[test]
fn bootstrap_with_an_unreachable_embeddings_server_fails_before_any_episode() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    std::env::set_var("OPENAI_BASE_URL", format!("http://127.0.0.1:{port}/v1"));
    std::env::set_var("OPENAI_API_KEY", "sk-never-shown");
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("trajdb-embedder-down-{}", std::process::id()));
    let args = Cli::try_parse_from([
        "bootstrap",
        "--method",
        "traj-bootstrap",
        "--train",
        "2",
        "--test",
        "1",
        "--embedder",
        "openai:toy",
        "--llm-retries",
        "1",
        "--llm-timeout",
        "2",
        "--db",
        dir.to_str().unwrap(),
    ])
    .unwrap()
    .args;
    let e = run(&args).err().map(|e| e.to_string()).unwrap_or_default();
    assert!(
        e.starts_with("language model: cannot connect to http://127.0.0.1:"),
        "{e}"
    );
    assert!(e.ends_with("(gave up after 2 attempts)"), "{e}");
    assert!(!e.contains("sk-never-shown"), "{e}");
    assert!(!dir.exists(), "no database was made");
}
