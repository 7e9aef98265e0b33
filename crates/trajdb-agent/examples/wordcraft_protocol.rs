//! Wordcraft served over the environment protocol v1 (the README's "Environments from
//! outside"), so the in-process environment can also be run as an outside one:
//!
//! ```text
//! cargo build --release --example wordcraft_protocol
//! trajdb bootstrap --env-cmd "exec target/release/examples/wordcraft_protocol" \
//!     --method traj-bootstrap --train 100 --test 50 --stand-in imitation
//! ```
//!
//! Tasks: the built-in recipe set, depth 2, the by-recipe split, in the order `trajdb
//! bootstrap --env wordcraft` uses (up to 2,000 train and 1,000 test tasks); ids are
//! [`trajdb_agent::wordcraft_task_id`]. 4 distractors, at most 4 combinations; the reset
//! seed seeds the table. Admissible actions are `select NAME` for each table entity.

use std::io::{BufRead, Write};
use std::sync::Arc;

use clap::Parser;
use serde_json::{json, Value};
use trajdb_agent::bootstrap::{select_tasks, BootstrapArgs};
use trajdb_agent::wordcraft::{RecipeBook, Task, WordcraftEnv};
use trajdb_agent::{wordcraft_task_id, Environment};

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    args: BootstrapArgs,
}

fn reply(out: &mut impl Write, v: &Value) -> std::io::Result<()> {
    writeln!(out, "{v}")?;
    out.flush()
}

fn actions(env: &WordcraftEnv) -> Value {
    if Environment::done(env) {
        Value::Null
    } else {
        json!(env.valid_actions())
    }
}

fn main() -> std::io::Result<()> {
    let book = Arc::new(RecipeBook::builtin_default());
    let args = Cli::parse_from([
        "wordcraft_protocol",
        "--method",
        "fixed",
        "--train",
        "2000",
        "--test",
        "1000",
    ])
    .args;
    let (train, test) = match select_tasks(&args, &book) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("wordcraft_protocol: {e}");
            std::process::exit(1);
        }
    };
    let id = |t: &Task| wordcraft_task_id(&book, t);
    let mut env: Option<WordcraftEnv> = None;
    let stdin = std::io::stdin();
    let mut out = std::io::stdout().lock();
    for line in stdin.lock().lines() {
        let line = line?;
        let Ok(req) = serde_json::from_str::<Value>(&line) else {
            reply(&mut out, &json!({"error": "request is not JSON"}))?;
            continue;
        };
        match req["op"].as_str() {
            Some("hello") => reply(&mut out, &json!({"name": "wordcraft", "protocol": 1}))?,
            Some("tasks") => {
                let list = match req["split"].as_str() {
                    Some("train") => &train,
                    Some("test") => &test,
                    _ => {
                        reply(&mut out, &json!({"error": "split must be train or test"}))?;
                        continue;
                    }
                };
                let ids: Vec<String> = list.iter().map(id).collect();
                reply(&mut out, &json!({ "tasks": ids }))?;
            }
            Some("reset") => {
                let want = req["task"].as_str().unwrap_or_default();
                let seed = req["seed"].as_u64().unwrap_or(0);
                let Some(task) = train.iter().chain(&test).find(|t| id(t) == want) else {
                    reply(&mut out, &json!({"error": format!("unknown task {want}")}))?;
                    continue;
                };
                match WordcraftEnv::new(book.clone(), task.clone(), 4, 4, seed) {
                    Ok(e) => {
                        reply(
                            &mut out,
                            &json!({
                                "goal": Environment::goal(&e),
                                "category": null,
                                "observation": Environment::observation(&e),
                                "actions": actions(&e),
                            }),
                        )?;
                        env = Some(e);
                    }
                    Err(e) => reply(&mut out, &json!({"error": e.to_string()}))?,
                }
            }
            Some("step") => {
                let Some(e) = env.as_mut() else {
                    reply(&mut out, &json!({"error": "step before reset"}))?;
                    continue;
                };
                let action = req["action"].as_str().unwrap_or_default();
                if let Err(err) = Environment::step(e, action) {
                    reply(&mut out, &json!({"error": err.to_string()}))?;
                    continue;
                }
                let done = Environment::done(e);
                reply(
                    &mut out,
                    &json!({
                        "observation": Environment::observation(e),
                        "reward": null,
                        "done": done,
                        "success": done.then(|| Environment::success(e)),
                        "actions": actions(e),
                    }),
                )?;
            }
            Some("achieved") => {
                let items: Vec<Value> = env
                    .as_ref()
                    .map(Environment::achievements)
                    .unwrap_or_default()
                    .into_iter()
                    .map(|a| json!({"goal": a.goal, "steps": [a.steps.0, a.steps.1]}))
                    .collect();
                reply(&mut out, &json!({ "achieved": items }))?;
            }
            Some("close") => break,
            other => reply(&mut out, &json!({"error": format!("unknown op {other:?}")}))?,
        }
    }
    Ok(())
}
