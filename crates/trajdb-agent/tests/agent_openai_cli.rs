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
use trajdb_agent::bootstrap::{load_starter, resolve, run, BootstrapArgs};
use trajdb_agent::methods::{Curation, QWeighting};
use trajdb_agent::openai::OpenAiClient;
use trajdb_agent::policy::LlmPolicy;
use trajdb_agent::policy::{goal_entity_of, parse_table};
use trajdb_agent::react::{ensure_spaces, run_episode, AgentOptions, Store};
use trajdb_agent::wordcraft::parse_pair;
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
            let reply = if user.ends_with("Action:") {
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
    let mut policy = LlmPolicy::new(OpenAiClient::new(&url, None, "test-model").unwrap());
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
    let mut big = parse(&["--draw", "in-order"]).unwrap();
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

#[test]
fn reference_setting_is_the_default_and_each_item_has_a_named_option() {
    let r = resolve(&parse(&[]).unwrap()).unwrap();
    assert_eq!(
        (r.split, r.train_ratio, r.distractors, r.action, r.draw),
        ("task", 0.95, 0, "combine", "with-replacement")
    );
    assert_eq!(
        (
            r.reason_retrieval,
            r.curation,
            r.segment_first,
            r.starter.as_str()
        ),
        ("first-step", Curation::REFERENCE, 10, "builtin")
    );
    assert_eq!((r.temperature, r.max_steps), (0.1, 100));
    assert!(!r.stand_in_other_goals);
    let t = resolve(&parse(&["--setting", "trajdb"]).unwrap()).unwrap();
    assert_eq!(
        (t.split, t.train_ratio, t.distractors, t.action, t.draw),
        ("recipe", 0.8, 4, "select", "in-order")
    );
    assert_eq!(
        (
            t.reason_retrieval,
            t.curation,
            t.segment_first,
            t.starter.as_str()
        ),
        ("every-step", Curation::TRAJDB, 20, "none")
    );
    assert_eq!((t.temperature, t.max_steps), (0.0, 50));
    assert!(t.stand_in_other_goals);
    // Single items on top of the reference setting.
    let m = resolve(
        &parse(&[
            "--distractors",
            "4",
            "--split",
            "recipe",
            "--action",
            "select",
            "--retrieve-every-step",
            "--q-weighting",
            "paper",
            "--keep-unproven",
            "--segment-first",
            "20",
            "--starter",
            "none",
        ])
        .unwrap(),
    )
    .unwrap();
    assert_eq!(
        (m.distractors, m.split, m.action, m.reason_retrieval),
        (4, "recipe", "select", "every-step")
    );
    assert_eq!(
        (
            m.curation.weighting,
            m.curation.positive_only,
            m.segment_first
        ),
        (QWeighting::Paper, false, 20)
    );
    assert_eq!(m.starter, "none");
    assert_eq!(
        err(&["--temperature", "3"]),
        "--temperature: 3 is not between 0 and 2"
    );
    assert!(err(&["--stand-in", "imitation"]).starts_with("--stand-in: the imitation stand-in"));
    assert!(err(&["--starter", "/nonexistent/s.jsonl"])
        .starts_with("starter file /nonexistent/s.jsonl: "));
}

#[test]
fn builtin_starter_trajectories_replay_in_the_builtin_recipes() {
    let book = RecipeBook::builtin_default();
    let starter = load_starter("builtin").unwrap();
    assert_eq!(starter.len(), 4);
    for t in &starter {
        assert_eq!(t.outcome.success, Some(true));
        let goal = goal_entity_of(&t.goal);
        for (i, st) in t.steps.iter().enumerate() {
            let table = parse_table(&st.observation);
            let (a, b) = parse_pair(&st.action, &table).unwrap();
            let made = book.combine(book.id(&table[a]).unwrap(), book.id(&table[b]).unwrap());
            let next = t
                .steps
                .get(i + 1)
                .map_or(t.final_observation.as_str(), |s| s.observation.as_str());
            let after = parse_table(next);
            match made.and_then(|m| book.name(m)) {
                Some(name) if !table.iter().any(|x| x == name) => {
                    assert_eq!(after.last().map(String::as_str), Some(name), "{}", t.goal);
                    assert_eq!(after.len(), table.len() + 1);
                }
                _ => assert_eq!(after, table, "{}: step {i} makes nothing", t.goal),
            }
        }
        assert_eq!(
            parse_table(&t.final_observation).last().map(String::as_str),
            Some(goal)
        );
    }
}

#[test]
fn llm_timeout_comes_from_the_flag_else_the_environment_variable_else_120_seconds() {
    // Only this test sets the variable; a valid value cannot disturb tests running beside it.
    std::env::set_var(trajdb_agent::bootstrap::LLM_TIMEOUT_ENV, "7.5");
    let from_env = resolve(&parse(&[]).unwrap()).unwrap().llm_timeout;
    let from_flag = resolve(&parse(&["--llm-timeout", "300"]).unwrap())
        .unwrap()
        .llm_timeout;
    std::env::remove_var(trajdb_agent::bootstrap::LLM_TIMEOUT_ENV);
    let default = resolve(&parse(&[]).unwrap()).unwrap().llm_timeout;
    assert_eq!((from_env, from_flag, default), (7.5, 300.0, 120.0));
}

/// A chat server for whole bootstrap runs: acting requests get the first two entities of the
/// last observation; every request's JSON body is sent on the channel. Runs until the
/// process ends.
fn serve_bootstrap() -> (String, mpsc::Receiver<serde_json::Value>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || loop {
        let Ok((mut s, _)) = l.accept() else { return };
        let body = read_body(&mut s);
        let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        let user = v["messages"][1]["content"]
            .as_str()
            .unwrap_or("")
            .to_owned();
        let reply = if user.ends_with("Action:") {
            let table = user
                .lines()
                .rev()
                .find_map(|l| l.strip_prefix("Observation: "))
                .map(parse_table)
                .unwrap_or_default();
            format!("{}, {}", table[0], table[table.len().min(2) - 1])
        } else {
            "Combine two of the ingredients.".to_owned()
        };
        let out =
            serde_json::json!({"choices": [{"message": {"role": "assistant", "content": reply}}]})
                .to_string();
        let _ = write!(
            s,
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{out}",
            out.len()
        );
        let _ = tx.send(v);
    });
    (format!("http://127.0.0.1:{port}/v1"), rx)
}

#[test]
fn llm_bootstrap_sends_reference_sampling_stage_limits_action_space_and_member_seeds() {
    let (url, rx) = serve_bootstrap();
    // Only this test in this binary runs bootstrap with --llm openai.
    std::env::set_var("OPENAI_BASE_URL", &url);
    let args = Cli::try_parse_from([
        "bootstrap",
        "--method",
        "db-curation",
        "--train",
        "2",
        "--test",
        "2",
        "--seeds",
        "1",
        "--llm",
        "openai",
        "--model",
        "fake",
        "--llm-retries",
        "0",
    ])
    .unwrap()
    .args;
    let r = run(&args).unwrap();
    assert!(r.failures.is_empty(), "{:?}", r.failures);
    let reqs: Vec<serde_json::Value> = rx.try_iter().collect();
    assert!(reqs.len() > 20);
    assert!(reqs.iter().all(|q| q["temperature"].as_f64() == Some(0.1)));
    let acts: Vec<&serde_json::Value> = reqs
        .iter()
        .filter(|q| {
            q["messages"][1]["content"]
                .as_str()
                .unwrap()
                .ends_with("Action:")
        })
        .collect();
    assert!(!acts.is_empty());
    for q in &acts {
        assert_eq!(q["stop"], serde_json::json!(["\n"]));
        assert_eq!(q["max_tokens"].as_u64(), Some(32));
        let system = q["messages"][0]["content"].as_str().unwrap();
        assert!(system.contains("Actions: One action names the two table entities"));
    }
    // Five population members and the evaluation policy: six distinct seeds.
    let seeds: std::collections::BTreeSet<u64> =
        reqs.iter().filter_map(|q| q["seed"].as_u64()).collect();
    assert_eq!(seeds.len(), 6, "{seeds:?}");
}

#[test]
fn a_context_overflow_answer_is_retried_with_fewer_examples_and_noted_in_the_episode() {
    // A server whose model "fits" at most 2 examples: a prompt with a third gets OpenAI's
    // HTTP 400 context_length_exceeded. Acting answers name the first two table entities.
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let (tx, rx) = mpsc::channel::<usize>();
    thread::spawn(move || loop {
        let Ok((mut s, _)) = l.accept() else { return };
        let body = read_body(&mut s);
        let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        let user = v["messages"][1]["content"]
            .as_str()
            .unwrap_or("")
            .to_owned();
        let shown = user.matches("## Example").count();
        let _ = tx.send(shown);
        if shown > 2 {
            let out = r#"{"error":{"message":"This model's maximum context length is 2048 tokens","code":"context_length_exceeded"}}"#;
            let _ = write!(s, "HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{out}", out.len());
            continue;
        }
        let reply = if user.ends_with("Action:") {
            let table = user
                .lines()
                .rev()
                .find_map(|l| l.strip_prefix("Observation: "))
                .map(parse_table)
                .unwrap_or_default();
            format!("{}, {}", table[0], table[table.len().min(2) - 1])
        } else {
            "Combine two of the ingredients.".to_owned()
        };
        let out =
            serde_json::json!({"choices": [{"message": {"role": "assistant", "content": reply}}]})
                .to_string();
        let _ = write!(
            s,
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{out}",
            out.len()
        );
    });
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("trajdb-overflow-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let db = Database::open(&dir, Options::default()).unwrap();
    let emb = HashEmbedder::default();
    ensure_spaces(&db, &emb).unwrap();
    for t in load_starter("builtin").unwrap() {
        trajdb_agent::react::append_with_keys(&db, &emb, &t).unwrap();
    }
    let book = Arc::new(RecipeBook::builtin_default());
    let task = book.tasks(2).into_iter().next().unwrap();
    let mut env = WordcraftEnv::new(book, task, 0, 4, 1)
        .unwrap()
        .with_interface(trajdb_agent::wordcraft::Interface::Combine);
    let client = OpenAiClient::new(&format!("http://127.0.0.1:{port}/v1"), None, "m")
        .unwrap()
        .with_retries(0);
    let mut policy = LlmPolicy::new(client);
    let opts = AgentOptions {
        store: Store::All,
        k: 4,
        max_steps: 2,
        ..Default::default()
    };
    let r = run_episode(&db, &emb, &mut policy, &mut env, &opts).unwrap();
    let shown: Vec<usize> = rx.try_iter().collect();
    // The plan prompt showed 4 examples (refused), then 2 (answered).
    assert_eq!(&shown[..2], &[4, 2]);
    assert!(shown.iter().skip(1).all(|&n| n <= 4));
    let t = db.get(r.stored.unwrap()).unwrap();
    let retries: usize = t.meta["context_retries"].parse().unwrap();
    let dropped: usize = t.meta["prompt_examples_dropped"].parse().unwrap();
    let refused = shown.iter().filter(|&&n| n > 2).count();
    assert_eq!(retries, refused);
    assert!(dropped >= 2 * retries);
    drop(db);
    let _ = std::fs::remove_dir_all(&dir);
}
