//! `trajdb bootstrap`: runs a method (fixed, Traj-Bootstrap, curation) on Wordcraft, or on
//! any environment speaking the environment protocol (`--env-cmd`, see [`crate::protocol`]),
//! over several seeds and reports test success before and after, a scaling curve, and the
//! task-success predictor's AUROC and calibration.
//!
//! With `--env-cmd`, the tasks are the first `--train` / `--test` ids the environment lists
//! for its `train` / `test` splits, the same for every seed; the seed is sent with each
//! `reset` and seeds the policy.
//!
//! Tasks: all tasks of the given depth whose goal can actually be made in the environment
//! ([`RecipeBook::is_solvable`]), split into train and test with a fixed seed (0) so every
//! seed and method sees the same tasks; the first `--train` and `--test` tasks of each part
//! after a fixed shuffle are used. Seeds change the tables (distractors, order) and the
//! policy's random choices. Episodes have 4 distractors and at most 4 combinations.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;

use crate::embedders::{check_timeout, EmbedderSpec};
use crate::imitation::ImitationPolicy;
use crate::methods::{run_seed_on, Method, Run, SeedResult, Tasks, WordcraftTasks};
use crate::openai::OpenAiClient;
use crate::policy::{LlmPolicy, OfflineConfig, OfflinePolicy, Policy};
use crate::predict::{auroc, calibration, CalibrationBin};
use crate::protocol::{ProtocolTasks, DEFAULT_TIMEOUT_SECS};
use crate::react::AgentOptions;
use crate::wordcraft::{split, RecipeBook, Split, Task};
use crate::{AgentError, AgentResult};
use trajdb::{Embedder, HashEmbedder};

/// Environments `bootstrap` can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum EnvName {
    /// Wordcraft (Jiang et al. 2020).
    Wordcraft,
}

/// Which policy drives the agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LlmKind {
    /// The built-in non-LLM stand-in ([`OfflinePolicy`]).
    Offline,
    /// An OpenAI-compatible server (`OPENAI_BASE_URL`, `OPENAI_API_KEY`).
    Openai,
}

/// Which non-LLM stand-in policy drives the agent with `--llm offline`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum StandIn {
    /// The Wordcraft-specific stand-in ([`OfflinePolicy`]; reads recipes). Wordcraft only.
    Wordcraft,
    /// The generic imitation stand-in ([`ImitationPolicy`]; any environment with
    /// admissible actions).
    Imitation,
}

impl StandIn {
    fn name(self) -> &'static str {
        match self {
            StandIn::Wordcraft => "wordcraft stand-in",
            StandIn::Imitation => "imitation stand-in",
        }
    }
}

/// How tasks are split into train and test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SplitKind {
    /// Hold out 20 % of the recipes (the benchmark's split).
    Recipe,
    /// Hold out 20 % of the goal entities.
    Goal,
    /// Hold out 20 % of the tasks at random.
    Task,
}

/// Arguments of `trajdb bootstrap`.
#[derive(Debug, Clone, clap::Args)]
pub struct BootstrapArgs {
    /// Environment.
    #[arg(long, value_enum, default_value = "wordcraft")]
    pub env: EnvName,
    /// An environment speaking the environment protocol (JSON lines on stdin/stdout), run
    /// as `sh -c COMMAND`; replaces `--env`.
    #[arg(long, value_name = "COMMAND")]
    pub env_cmd: Option<String>,
    /// Seconds the `--env-cmd` environment may take to answer one request.
    #[arg(long, default_value_t = DEFAULT_TIMEOUT_SECS, value_name = "SECONDS")]
    pub env_timeout: f64,
    /// Step limit of every episode.
    #[arg(long, default_value_t = 50)]
    pub max_steps: usize,
    /// Non-LLM stand-in for `--llm offline`. Default: `wordcraft` on Wordcraft, `imitation`
    /// with `--env-cmd`.
    #[arg(long, value_enum)]
    pub stand_in: Option<StandIn>,
    /// Recipe file in the benchmark's `alchemy2.json` format (default: the built-in set).
    #[arg(long)]
    pub recipes: Option<PathBuf>,
    /// Recipe-tree depth of the tasks.
    #[arg(long, default_value_t = 2)]
    pub depth: u8,
    /// Method to run.
    #[arg(long, value_enum)]
    pub method: Method,
    /// Training tasks.
    #[arg(long)]
    pub train: usize,
    /// Test tasks.
    #[arg(long)]
    pub test: usize,
    /// Seeds (runs), numbered 0..S.
    #[arg(long, default_value_t = 1)]
    pub seeds: u64,
    /// Examples per retrieval.
    #[arg(long, default_value_t = 10)]
    pub k: usize,
    /// Store hindsight-relabelled trajectories from failed episodes.
    #[arg(long)]
    pub hindsight: bool,
    /// Keep the databases in this directory (must be absent or empty); by default they live
    /// in a temporary directory removed at the end.
    #[arg(long)]
    pub db: Option<PathBuf>,
    /// Policy.
    #[arg(long, value_enum, default_value = "offline")]
    pub llm: LlmKind,
    /// Model name for `--llm openai`.
    #[arg(long)]
    pub model: Option<String>,
    /// Retries of a failed LLM or embeddings request (HTTP 408, 429, 5xx, connection errors,
    /// timeouts), after an exponential backoff with jitter or the server's `Retry-After`.
    #[arg(long, default_value_t = crate::openai::DEFAULT_RETRIES, value_name = "N")]
    pub llm_retries: u32,
    /// Time limit of one LLM or embeddings request, in seconds (connect, send, whole reply).
    #[arg(long, default_value_t = 120.0, value_name = "SECONDS")]
    pub llm_timeout: f64,
    /// Embedder of every key: `hash` (built-in, no model), `minilm:PATH` (all-MiniLM-L6-v2
    /// on the CPU from the model folder PATH; needs a build with `--features minilm`) or
    /// `openai:MODEL` (an OpenAI-compatible /v1/embeddings server at `OPENAI_BASE_URL`).
    #[arg(
        long,
        default_value = "hash",
        value_name = "hash|minilm:PATH|openai:MODEL"
    )]
    pub embedder: String,
    /// Train/test split. Default: recipe, the benchmark's own split (held-out recipes), so
    /// figures compare with the reference; `goal` and `task` are easier and reported too.
    #[arg(long, value_enum, default_value = "recipe")]
    pub split: SplitKind,
    /// Print one JSON object instead of tables.
    #[arg(long)]
    pub json: bool,
    /// Tuning mode: take the test tasks from the training part of the split (the tasks
    /// after the first `--train`), so settings can be chosen without touching test tasks.
    #[arg(long)]
    pub dev: bool,
    /// Offline policy ablation: no episode memory (pairs may repeat, no preference for
    /// entities made in the episode).
    #[arg(long)]
    pub no_episode_memory: bool,
    /// Offline policy ablation: copy the best-matching example step instead of imitating
    /// recipes (the earlier stand-in's behaviour).
    #[arg(long)]
    pub no_recipe_imitation: bool,
    /// Offline policy ablation: imitate only recipes that lead to the goal or come from an
    /// example for the same goal, never other examples' productive pairs.
    #[arg(long)]
    pub no_other_goals: bool,
    /// No progress bar (the `trajdb` binary's global `--quiet`). The bar is drawn only when
    /// stderr is a terminal.
    #[arg(skip)]
    pub quiet: bool,
}

/// One seed's figures.
#[derive(Debug, Clone, Serialize)]
pub struct SeedReport {
    /// The seed.
    pub seed: u64,
    /// Test success with the starting database.
    pub before: f64,
    /// Test success with the final database.
    pub after: f64,
    /// Training success (all episodes of the population).
    pub train_success: f64,
    /// Forks made by db-curation.
    pub forks: usize,
    /// Trajectories in the final database.
    pub trajectories: usize,
    /// Successful trajectories in the final database.
    pub successes: usize,
}

/// The predictor's quality on the test tasks (pooled over seeds).
#[derive(Debug, Clone, Serialize)]
pub struct PredictorReport {
    /// Test tasks predicted.
    pub n: usize,
    /// AUROC (None when only one class occurred or nothing was stored to predict from).
    pub auroc: Option<f64>,
    /// Predicted-probability bins vs observed success.
    pub calibration: Vec<CalibrationBin>,
}

/// What `bootstrap` measured.
#[derive(Debug, Clone, Serialize)]
pub struct BootstrapReport {
    /// The method.
    pub method: Method,
    /// The environment's name (`wordcraft`, or the protocol environment's `hello` name).
    pub env: String,
    /// The `--env-cmd` command, if any.
    pub env_cmd: Option<String>,
    /// The stand-in policy with `--llm offline`.
    pub stand_in: Option<&'static str>,
    /// Recipe set (`builtin` or the file path).
    pub recipes: String,
    /// Task depth.
    pub depth: u8,
    /// The split.
    pub split: &'static str,
    /// Seeds run.
    pub seeds: u64,
    /// Training tasks.
    pub train: usize,
    /// Test tasks.
    pub test: usize,
    /// Examples per retrieval.
    pub k: usize,
    /// Hindsight relabelling on.
    pub hindsight: bool,
    /// Policy used.
    pub llm: &'static str,
    /// Mean test success with the starting database.
    pub test_success_before: f64,
    /// Sample standard deviation of it over seeds.
    pub test_success_before_sd: f64,
    /// Mean test success with the final database.
    pub test_success_after: f64,
    /// Sample standard deviation of it over seeds.
    pub test_success_after_sd: f64,
    /// Mean training success.
    pub train_success: f64,
    /// Per seed.
    pub per_seed: Vec<SeedReport>,
    /// `[successful trajectories in the database, mean test success]`, from as-of views.
    pub curve: Vec<(usize, f64)>,
    /// Task-success predictor.
    pub predictor: PredictorReport,
    /// The final database of seed 0, when `--db` kept the databases.
    pub db: Option<String>,
    /// Wall time in seconds.
    pub seconds: f64,
}

fn mean_sd(xs: &[f64]) -> (f64, f64) {
    let n = xs.len() as f64;
    if xs.is_empty() {
        return (0.0, 0.0);
    }
    let m = xs.iter().sum::<f64>() / n;
    let sd = if xs.len() > 1 {
        (xs.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / (n - 1.0)).sqrt()
    } else {
        0.0
    };
    (m, sd)
}

fn shuffled(mut v: Vec<Task>, seed: u64) -> Vec<Task> {
    let mut s = seed;
    for i in (1..v.len()).rev() {
        s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = s;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        let j = usize::try_from(z % (i as u64 + 1)).unwrap_or(0);
        v.swap(i, j);
    }
    v
}

/// Reads the recipe book: the built-in set, or a file in `alchemy2.json` format.
pub fn load_book(path: Option<&Path>) -> AgentResult<RecipeBook> {
    let Some(p) = path else {
        return Ok(RecipeBook::builtin_default());
    };
    let bad = |what: String| AgentError::InputFile {
        kind: "recipe file",
        path: p.display().to_string(),
        what,
    };
    let text = std::fs::read_to_string(p).map_err(|e| bad(e.to_string()))?;
    let book = RecipeBook::from_alchemy2_json(&text).map_err(|e| bad(e.to_string()))?;
    if book.entity_count() == 0 {
        return Err(bad("it defines no entities".into()));
    }
    Ok(book)
}

/// The train and test tasks `args` select.
pub fn select_tasks(
    args: &BootstrapArgs,
    book: &RecipeBook,
) -> AgentResult<(Vec<Task>, Vec<Task>)> {
    let tasks: Vec<Task> = book
        .tasks(args.depth)
        .into_iter()
        .filter(|t| book.is_solvable(t))
        .collect();
    let ratio = 0.8;
    let sp = match args.split {
        SplitKind::Recipe => Split::ByRecipe { train_ratio: ratio },
        SplitKind::Goal => Split::ByGoal { train_ratio: ratio },
        SplitKind::Task => Split::ByTask { train_ratio: ratio },
    };
    let (train, test) = split(book, &tasks, sp, 0);
    let (train, test) = (shuffled(train, 1), shuffled(test, 2));
    let (train, test) = if args.dev {
        // Tuning: test on training-split tasks never trained on.
        let dev = train.get(args.train..).unwrap_or(&[]).to_vec();
        (train, dev)
    } else {
        (train, test)
    };
    if args.train > train.len() {
        return Err(AgentError::invalid(
            "--train",
            format!(
                "{} training tasks asked for, the split has {}",
                args.train,
                train.len()
            ),
        ));
    }
    if args.test > test.len() {
        return Err(AgentError::invalid(
            "--test",
            format!(
                "{} test tasks asked for, the split has {}",
                args.test,
                test.len()
            ),
        ));
    }
    Ok((
        train.into_iter().take(args.train).collect(),
        test.into_iter().take(args.test).collect(),
    ))
}

fn check_args(args: &BootstrapArgs) -> AgentResult<()> {
    if args.depth == 0 {
        return Err(AgentError::invalid("--depth", "must be at least 1"));
    }
    if args.test == 0 {
        return Err(AgentError::invalid("--test", "must be at least 1"));
    }
    if args.seeds == 0 {
        return Err(AgentError::invalid("--seeds", "must be at least 1"));
    }
    if args.k == 0 {
        return Err(AgentError::invalid("--k", "must be at least 1"));
    }
    check_timeout(args.llm_timeout, "--llm-timeout")?;
    EmbedderSpec::parse(&args.embedder, "--embedder")?;
    if args.max_steps == 0 {
        return Err(AgentError::invalid("--max-steps", "must be at least 1"));
    }
    if !(args.env_timeout.is_finite() && args.env_timeout > 0.0 && args.env_timeout <= 1e6) {
        return Err(AgentError::invalid(
            "--env-timeout",
            "must be a number of seconds above 0 (at most 1000000)",
        ));
    }
    if args.env_cmd.is_some() {
        if args.recipes.is_some() {
            return Err(AgentError::invalid(
                "--recipes",
                "only applies to Wordcraft, not with --env-cmd",
            ));
        }
        if args.stand_in == Some(StandIn::Wordcraft) {
            return Err(AgentError::invalid(
                "--stand-in",
                "the wordcraft stand-in only plays Wordcraft; use imitation with --env-cmd",
            ));
        }
    }
    match (args.llm, &args.model) {
        (LlmKind::Openai, None) => Err(AgentError::invalid(
            "--model",
            "is required with --llm openai",
        )),
        (LlmKind::Offline, Some(_)) => Err(AgentError::invalid(
            "--model",
            "only applies to --llm openai",
        )),
        _ => Ok(()),
    }
}

/// Checkpoints of the scaling curve: 10, 20, 50, 100, 200, 500, 1000, ...
fn checkpoints(max: usize) -> Vec<usize> {
    let mut v = Vec::new();
    let mut base = 10;
    while base <= max {
        for m in [1, 2, 5] {
            if base * m <= max {
                v.push(base * m);
            }
        }
        base *= 10;
    }
    v
}

/// Runs `bootstrap` and returns the report. Progress goes to stderr when it is a terminal.
pub fn run(args: &BootstrapArgs) -> AgentResult<BootstrapReport> {
    let start = Instant::now();
    check_args(args)?;
    let (book, train, test) = if args.env_cmd.is_some() {
        (
            Arc::new(RecipeBook::builtin_default()),
            Vec::new(),
            Vec::new(),
        )
    } else {
        let book = Arc::new(load_book(args.recipes.as_deref())?);
        let (train, test) = select_tasks(args, &book)?;
        (book, train, test)
    };
    let (base, temp) = match &args.db {
        Some(d) => {
            if std::fs::read_dir(d).is_ok_and(|mut r| r.next().is_some()) {
                return Err(AgentError::invalid(
                    "--db",
                    format!("{} exists and is not empty", d.display()),
                ));
            }
            (d.clone(), false)
        }
        None => (
            std::env::temp_dir().join(format!(
                "trajdb-bootstrap-{}-{}",
                std::process::id(),
                start.elapsed().as_nanos()
                    ^ std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |d| d.as_nanos())
            )),
            true,
        ),
    };
    let timeout = check_timeout(args.llm_timeout, "--llm-timeout")?;
    let retries = args.llm_retries;
    let embedder = EmbedderSpec::parse(&args.embedder, "--embedder")?.build(
        HashEmbedder::default().id().dims,
        Some(timeout),
        Some(retries),
    )?;
    let embedder = embedder.as_ref();
    let model = args.model.clone();
    let llm = args.llm;
    let stand_in = args.stand_in.unwrap_or(if args.env_cmd.is_some() {
        StandIn::Imitation
    } else {
        StandIn::Wordcraft
    });
    let offline = OfflineConfig {
        episode_memory: !args.no_episode_memory,
        recipe_aware: !args.no_recipe_imitation,
        imitate_other_goals: !args.no_other_goals,
    };
    let factory = move |seed: u64| -> AgentResult<Box<dyn Policy>> {
        Ok(match llm {
            LlmKind::Offline => match stand_in {
                StandIn::Wordcraft => Box::new(OfflinePolicy::with_config(seed, offline)),
                StandIn::Imitation => Box::new(ImitationPolicy::new(seed)),
            },
            LlmKind::Openai => Box::new(LlmPolicy {
                llm: OpenAiClient::from_env(model.as_deref().unwrap_or_default())?
                    .with_timeout(timeout)
                    .with_retries(retries),
            }),
        })
    };
    let show = !args.quiet && std::io::stderr().is_terminal();
    let mut results: Vec<SeedResult> = Vec::new();
    let mut env_name = "wordcraft".to_owned();
    let outcome = (|| -> AgentResult<()> {
        let mut source: Box<dyn Tasks + '_> = match &args.env_cmd {
            Some(cmd) => {
                let t = ProtocolTasks::start(
                    cmd,
                    std::time::Duration::from_secs_f64(args.env_timeout),
                    args.train,
                    args.test,
                    args.dev,
                    args.hindsight,
                )?;
                t.name().clone_into(&mut env_name);
                Box::new(t)
            }
            None => Box::new(WordcraftTasks {
                book: book.clone(),
                train: &train,
                test: &test,
                distractors: 4,
                max_combinations: 4,
            }),
        };
        for seed in 0..args.seeds {
            let bar = show.then(|| {
                let style = indicatif::ProgressStyle::with_template(
                    "{msg} [{bar:30}] {pos}/{len} episodes ({per_sec}, {eta} left)",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
                .progress_chars("=> ");
                let b = indicatif::ProgressBar::new(0).with_style(style);
                b.set_message(format!(
                    "{} seed {}/{}",
                    args.method.name(),
                    seed + 1,
                    args.seeds
                ));
                b
            });
            let mut progress = |done: usize, total: usize| {
                if let Some(b) = &bar {
                    b.set_length(total as u64);
                    b.set_position(done as u64);
                }
            };
            let mut e = Run {
                seed,
                agent: AgentOptions {
                    k: args.k,
                    max_steps: args.max_steps,
                    ..Default::default()
                },
                hindsight: args.hindsight,
                population: 5,
                dir: base.join(format!("seed-{seed}")),
                embedder,
                policy: &factory,
                checkpoints: checkpoints(args.train),
                progress: &mut progress,
            };
            let result = run_seed_on(args.method, &mut e, source.as_mut());
            if let Some(b) = &bar {
                b.finish_and_clear();
            }
            results.push(result?);
        }
        Ok(())
    })();
    if temp {
        let _ = std::fs::remove_dir_all(&base);
    }
    outcome?;
    let befores: Vec<f64> = results.iter().map(|r| r.before).collect();
    let afters: Vec<f64> = results.iter().map(|r| r.after).collect();
    let trains: Vec<f64> = results.iter().map(|r| r.train_success).collect();
    let (b, bsd) = mean_sd(&befores);
    let (a, asd) = mean_sd(&afters);
    let mut points: BTreeMap<usize, Vec<f64>> = BTreeMap::new();
    for r in &results {
        for &(x, y) in &r.curve[..r.curve.len().saturating_sub(1)] {
            points.entry(x).or_default().push(y);
        }
    }
    let mut curve: Vec<(usize, f64)> = points
        .into_iter()
        .map(|(x, ys)| (x, mean_sd(&ys).0))
        .collect();
    let final_x = results
        .iter()
        .map(|r| r.curve.last().map_or(0, |p| p.0))
        .sum::<usize>()
        / results.len().max(1);
    if curve.last().is_none_or(|p| p.0 < final_x) {
        curve.push((final_x, a));
    }
    let (scores, labels): (Vec<f64>, Vec<bool>) = results
        .iter()
        .flat_map(|r| r.predictions.iter().copied())
        .unzip();
    Ok(BootstrapReport {
        method: args.method,
        env: env_name,
        env_cmd: args.env_cmd.clone(),
        stand_in: (args.llm == LlmKind::Offline).then(|| stand_in.name()),
        recipes: args
            .recipes
            .as_ref()
            .map_or_else(|| "builtin".to_owned(), |p| p.display().to_string()),
        depth: args.depth,
        split: match args.split {
            SplitKind::Recipe => "recipe",
            SplitKind::Goal => "goal",
            SplitKind::Task => "task",
        },
        seeds: args.seeds,
        train: args.train,
        test: args.test,
        k: args.k,
        hindsight: args.hindsight,
        llm: match args.llm {
            LlmKind::Offline => "offline",
            LlmKind::Openai => "openai",
        },
        test_success_before: b,
        test_success_before_sd: bsd,
        test_success_after: a,
        test_success_after_sd: asd,
        train_success: mean_sd(&trains).0,
        per_seed: results
            .iter()
            .enumerate()
            .map(|(s, r)| SeedReport {
                seed: s as u64,
                before: r.before,
                after: r.after,
                train_success: r.train_success,
                forks: r.forks,
                trajectories: r.final_trajectories.0,
                successes: r.final_trajectories.1,
            })
            .collect(),
        curve,
        predictor: PredictorReport {
            n: scores.len(),
            auroc: auroc(&scores, &labels),
            calibration: calibration(&scores, &labels, 5),
        },
        db: (!temp)
            .then(|| results.first().map(|r| r.final_db.display().to_string()))
            .flatten(),
        seconds: start.elapsed().as_secs_f64(),
    })
}

fn pct(x: f64) -> String {
    format!("{:5.1}%", 100.0 * x)
}

/// Runs `bootstrap` and prints the report (tables, or JSON with `--json`). Returns the
/// process exit code: 0 on success, 1 on error (one line on stderr).
pub fn main(args: &BootstrapArgs) -> i32 {
    let r = match run(args) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return 1;
        }
    };
    match print(&r, args.json) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("error: cannot write the report: {e}");
            1
        }
    }
}

/// Prints a report: one JSON object with `json`, else the readable tables.
pub fn print(r: &BootstrapReport, json: bool) -> std::io::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    if json {
        let s = serde_json::to_string(r).map_err(std::io::Error::other)?;
        writeln!(out, "{s}")?;
        return Ok(());
    }
    let setting = match &r.env_cmd {
        Some(cmd) => format!("protocol environment `{cmd}`"),
        None => format!("{}, depth {}, {} split", r.recipes, r.depth, r.split),
    };
    writeln!(
        out,
        "{} on {} ({setting}), {} train / {} test tasks, {} seed(s), k={}{}, {} policy{}",
        r.method.name(),
        r.env,
        r.train,
        r.test,
        r.seeds,
        r.k,
        if r.hindsight { ", hindsight" } else { "" },
        r.llm,
        r.stand_in.map(|s| format!(" ({s})")).unwrap_or_default()
    )?;
    writeln!(out, "\nlearning curve (as-of views of the final database)")?;
    writeln!(out, "  successes in db   test success")?;
    for (x, y) in &r.curve {
        writeln!(out, "  {x:>15}   {}", pct(*y))?;
    }
    writeln!(
        out,
        "\nseed   before    after    train  forks  trajectories  successes"
    )?;
    for s in &r.per_seed {
        writeln!(
            out,
            "{:>4}   {}   {}   {}  {:>5}  {:>12}  {:>9}",
            s.seed,
            pct(s.before),
            pct(s.after),
            pct(s.train_success),
            s.forks,
            s.trajectories,
            s.successes
        )?;
    }
    writeln!(
        out,
        "\ntest success: before {} ± {}, after {} ± {} (mean ± sd over {} seed(s))",
        pct(r.test_success_before),
        pct(r.test_success_before_sd),
        pct(r.test_success_after),
        pct(r.test_success_after_sd),
        r.seeds
    )?;
    match r.predictor.auroc {
        Some(a) => writeln!(
            out,
            "success predictor: AUROC {a:.3} over {} test tasks",
            r.predictor.n
        )?,
        None => writeln!(
            out,
            "success predictor: no AUROC (no stored outcomes or one class only)"
        )?,
    }
    for b in &r.predictor.calibration {
        writeln!(
            out,
            "  predicted {:.1}-{:.1}: {:>4} tasks, mean predicted {}, observed {}",
            b.lo,
            b.hi,
            b.count,
            pct(b.mean_predicted),
            pct(b.observed)
        )?;
    }
    if let Some(d) = &r.db {
        writeln!(out, "final database: {d}")?;
    }
    writeln!(out, "({:.1} s)", r.seconds)?;
    Ok(())
}
