//! Throughput of the MiniLM embedder (`--features minilm`) on trajectory-like texts of 20 to
//! 60 word pieces, in batches of 32: prints the sentences per second of each run and their
//! median.
//!
//! ```text
//! cargo run --release -p trajdb-agent --features minilm --example minilm_throughput -- DIR [TEXTS] [RUNS]
//! ```
//! DIR is the all-MiniLM-L6-v2 folder; TEXTS (default 512) texts per run, RUNS (default 5).

use std::time::Instant;

use trajdb::Embedder;
use trajdb_agent::minilm::{MiniLmEmbedder, MINILM_BATCH};

/// A text like an agent's observation, thought or action, varied by `i`.
fn trajectory_text(i: usize) -> String {
    let rooms = [
        "kitchen", "garden", "hallway", "bedroom", "cellar", "workshop",
    ];
    let things = [
        "a kettle",
        "a red key",
        "an apple",
        "a locked drawer",
        "a lamp",
        "a map",
    ];
    let room = rooms[i % rooms.len()];
    let a = things[i % things.len()];
    let b = things[(i / 3) % things.len()];
    match i % 3 {
        0 => format!(
            "You are in the {room}. You see {a} and {b} on the table. Exits lead north and east. Step {i}."
        ),
        1 => format!(
            "Thought: to finish the task I should take {a} from the {room}, then use it with {b}; if that fails, go back and look for another way in {i} moves."
        ),
        _ => format!(
            "Action: take {a} from the {room}, put it next to {b}, close the door and check the inventory (attempt {i})."
        ),
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let dir = args
        .next()
        .ok_or("usage: minilm_throughput DIR [TEXTS] [RUNS]")?;
    let n: usize = args.next().map_or(Ok(512), |s| s.parse())?;
    let runs: usize = args.next().map_or(Ok(5), |s| s.parse())?;
    let e = MiniLmEmbedder::load(&dir)?;
    let texts: Vec<String> = (0..n).map(trajectory_text).collect();
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let mut tokens = Vec::with_capacity(n);
    for t in &refs {
        tokens.push(e.token_count(t)?);
    }
    tokens.sort_unstable();
    println!(
        "{n} texts, word pieces min {} median {} max {}; batches of {MINILM_BATCH}",
        tokens[0],
        tokens[n / 2],
        tokens[n - 1]
    );
    // Warm-up (allocations, thread pool).
    e.embed_batch(&refs[..MINILM_BATCH.min(n)])?;
    let mut rates = Vec::with_capacity(runs);
    for r in 0..runs {
        let t = Instant::now();
        let v = e.embed_batch(&refs)?;
        let secs = t.elapsed().as_secs_f64();
        assert_eq!(v.len(), n);
        let rate = n as f64 / secs;
        println!("run {}: {secs:.3} s, {rate:.1} sentences/s", r + 1);
        rates.push(rate);
    }
    rates.sort_by(f64::total_cmp);
    println!("median: {:.1} sentences/s", rates[rates.len() / 2]);
    Ok(())
}
