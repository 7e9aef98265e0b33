//! Builds a fleet of databases with usage logs and times merging them (issue 16).
//!
//! ```text
//! cargo run --release --example fleet -- make DIR DBS TRAJECTORIES EPISODES [SEED]
//! cargo run --release --example fleet -- merge DST SRC...
//! cargo run --release --example fleet -- bench DIR [DBS] [TRAJECTORIES] [EPISODES]
//! ```
//!
//! `make` writes `DIR/src-0` .. `DIR/src-{DBS-1}`, each with TRAJECTORIES trajectories
//! (ids from 1 in every database, so raw ids overlap; 20 tasks; a 32-dimensional goal key and
//! a 16-dimensional key per step; 1 to 6 steps; about half successful) and EPISODES
//! episodes, each retrieving 1 to 8 random trajectories of its database at random steps and
//! stages, three in four of them labelled (two thirds of those successful). `merge` merges
//! sources into DST and prints the rate. `bench` makes the sources (default 5 × 20,000
//! trajectories, 4,000 episodes each), merges them into `DIR/merged` and merges them again
//! (which must add nothing), printing seconds and rates.

use std::path::{Path, PathBuf};
use std::time::Instant;

use trajdb::rng::SplitMix64;
use trajdb::{
    Database, Durability, Level, Metric, Options, RetrievalEvent, SpaceDef, Stage, Step, Trajectory,
};

type Res<T = ()> = Result<T, Box<dyn std::error::Error>>;

fn unit_vec(rng: &mut SplitMix64, dims: usize) -> Vec<f32> {
    (0..dims)
        .map(|_| 0.05 + (rng.next_u64() % 1000) as f32 / 1000.0)
        .collect()
}

fn make_one(dir: &Path, n: u64, episodes: u64, seed: u64) -> Res {
    let db = Database::open(
        dir,
        Options {
            durability: Durability::Buffered,
            ..Options::default()
        },
    )?;
    db.create_space(&SpaceDef::new(
        "goal",
        Level::Trajectory,
        32,
        Metric::Cosine,
    ))?;
    db.create_space(&SpaceDef::new("obs", Level::Step, 16, Metric::Cosine))?;
    let mut rng = SplitMix64::new(seed);
    let mut batch = Vec::new();
    for i in 0..n {
        let steps = 1 + (rng.next_u64() % 6) as usize;
        let mut t = Trajectory {
            task: format!("task-{}", rng.next_u64() % 20),
            env: "fleet".into(),
            goal: format!("goal {i} of database {seed}"),
            plan: "plan".into(),
            steps: (0..steps)
                .map(|s| Step {
                    observation: format!("obs {s}"),
                    reasoning: format!("think {s}"),
                    action: format!("act {s}"),
                    reward: None,
                })
                .collect(),
            ..Default::default()
        };
        t.outcome.success = Some(rng.next_u64().is_multiple_of(2));
        t.keys.insert("goal".into(), unit_vec(&mut rng, 32));
        t.step_keys.insert(
            "obs".into(),
            (0..steps).map(|_| unit_vec(&mut rng, 16)).collect(),
        );
        batch.push(t);
        if batch.len() == 1000 {
            db.append_many(&batch)?;
            batch.clear();
        }
    }
    db.append_many(&batch)?;
    let ids = db.ids();
    let steps: Vec<u32> = ids
        .iter()
        .map(|&id| db.get(id).map(|t| t.steps.len() as u32))
        .collect::<Result<_, _>>()?;
    const STAGES: [Stage; 4] = [Stage::Plan, Stage::Reason, Stage::Act, Stage::Other];
    for _ in 0..episodes {
        let ep = db.begin_episode()?;
        let k = 1 + rng.next_u64() % 8;
        let events: Vec<RetrievalEvent> = (0..k)
            .map(|_| {
                let i = (rng.next_u64() % ids.len() as u64) as usize;
                RetrievalEvent {
                    id: ids[i],
                    step: (rng.next_u64().is_multiple_of(2))
                        .then(|| (rng.next_u64() % u64::from(steps[i])) as u32),
                    stage: STAGES[(rng.next_u64() % 4) as usize],
                }
            })
            .collect();
        db.log_retrievals(ep, &events)?;
        match rng.next_u64() % 6 {
            0..=2 => db.set_episode_outcome(ep, Some(true))?,
            3 => db.set_episode_outcome(ep, Some(false))?,
            _ => {}
        }
    }
    db.close()?;
    Ok(())
}

fn make(dir: &Path, dbs: u64, n: u64, episodes: u64, seed: u64) -> Res<Vec<PathBuf>> {
    let mut out = Vec::new();
    for i in 0..dbs {
        let d = dir.join(format!("src-{i}"));
        if d.exists() {
            std::fs::remove_dir_all(&d)?;
        }
        let t = Instant::now();
        make_one(&d, n, episodes, seed + i)?;
        eprintln!(
            "made {} ({n} trajectories, {episodes} episodes) in {:.1} s",
            d.display(),
            t.elapsed().as_secs_f64()
        );
        out.push(d);
    }
    Ok(out)
}

fn merge(dst: &Path, srcs: &[PathBuf]) -> Res<(f64, trajdb::MergeReport)> {
    let ro = Options {
        read_only: true,
        create: false,
        ..Options::default()
    };
    let sources: Vec<Database> = srcs
        .iter()
        .map(|p| Database::open(p, ro.clone()))
        .collect::<Result<_, _>>()?;
    let refs: Vec<&Database> = sources.iter().collect();
    let t = Instant::now();
    let db = Database::open(dst, Options::default())?;
    let r = db.merge_all(&refs)?;
    db.close()?;
    Ok((t.elapsed().as_secs_f64(), r))
}

fn main() -> Res {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let num = |i: usize, default: u64| -> Res<u64> {
        Ok(match args.get(i) {
            Some(s) => s.parse()?,
            None => default,
        })
    };
    match args.first().map(String::as_str) {
        Some("make") if args.len() >= 5 => {
            make(
                Path::new(&args[1]),
                num(2, 0)?,
                num(3, 0)?,
                num(4, 0)?,
                num(5, 1)?,
            )?;
        }
        Some("merge") if args.len() >= 3 => {
            let srcs: Vec<PathBuf> = args[2..].iter().map(PathBuf::from).collect();
            let (s, r) = merge(Path::new(&args[1]), &srcs)?;
            println!(
                "merged {} trajectories, {} episodes, {} retrievals in {s:.2} s: {:.0} trajectories/s",
                r.trajectories,
                r.episodes,
                r.retrievals,
                r.trajectories as f64 / s
            );
        }
        Some("bench") if args.len() >= 2 => {
            let dir = Path::new(&args[1]);
            let (dbs, n, eps) = (num(2, 5)?, num(3, 20_000)?, num(4, 4_000)?);
            let srcs = make(dir, dbs, n, eps, 1)?;
            let dst = dir.join("merged");
            if dst.exists() {
                std::fs::remove_dir_all(&dst)?;
            }
            let (s, r) = merge(&dst, &srcs)?;
            println!(
                "merge of {dbs} x {n} trajectories: {} trajectories, {} episodes, {} retrievals, {} commits in {s:.2} s = {:.0} trajectories/s",
                r.trajectories,
                r.episodes,
                r.retrievals,
                r.commits,
                r.trajectories as f64 / s
            );
            let (s2, r2) = merge(&dst, &srcs)?;
            assert_eq!(r2.commits, 0, "a repeated merge adds nothing");
            println!(
                "repeated merge (adds nothing): {s2:.2} s = {:.0} trajectories checked/s",
                r2.trajectories_present as f64 / s2
            );
        }
        _ => {
            eprintln!("usage: fleet make DIR DBS TRAJECTORIES EPISODES [SEED] | fleet merge DST SRC... | fleet bench DIR [DBS] [TRAJECTORIES] [EPISODES]");
            std::process::exit(2);
        }
    }
    Ok(())
}
