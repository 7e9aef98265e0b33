//! `trajdb bootstrap`: runs a method (fixed, Traj-Bootstrap, curation) on Wordcraft, or on
//! any environment speaking the environment protocol (`--env-cmd`, see [`crate::protocol`]),
//! over several seeds and reports test success before and after, a scaling curve, and the
//! task-success predictor's AUROC and calibration.
//!
//! With `--env-cmd`, the tasks are the first `--train` / `--test` ids the environment lists
//! for its `train` / `test` splits, the same for every seed; the seed is sent with each
//! `reset` and seeds the policy.
//!
//! Settings (`--setting`): `reference` (the default) runs Wordcraft and the agent as the
//! reference code (Sarukkai et al.) ran them; `trajdb` is this project's earlier setting.
//! Every item can be changed on its own by a flag:
//!
//! | item | `reference` | `trajdb` | flag |
//! |---|---|---|---|
//! | split | 5 % of tasks held out at random | 20 % of ingredient pairs held out | `--split`, `--train-ratio` |
//! | distractors on the table | 0 | 4 | `--distractors` |
//! | action | names two entities, lenient; unparseable costs nothing | selects one entity; invalid costs a combination | `--action` |
//! | training stream | drawn with replacement | first N of a shuffle | `--draw` |
//! | starting database | 4 hand-written examples (built-in recipes) | empty | `--starter` |
//! | reasoning retrieval | first step, then the acting stage's examples | every step | `--reason-retrieval` |
//! | exemplar Q | 1 / (calls in episode) weighting | the paper's formula | `--q-weighting` |
//! | exemplar kept if | Q > 0 | best, any Q | `--keep-unproven` |
//! | db-curation first segment | 10 | 20 | `--segment-first` |
//! | temperature (`--llm openai`) | 0.1 | 0 | `--temperature` |
//! | agent step limit | 100 | 50 | `--max-steps` |
//!
//! Tasks: all tasks of the given depth whose goal can actually be made in the environment
//! ([`RecipeBook::is_solvable`]), split into train and test with a fixed seed (0) so every
//! seed and method sees the same tasks; the test tasks are the first `--test` of the test
//! part after a fixed shuffle, the training stream the first `--train` of the training part
//! after a fixed shuffle or `--train` draws with replacement from it (fixed seed). Seeds change
//! the tables (distractor choice, order) and the policy's random choices. Episodes have at most
//! 4 combinations.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;

use crate::embedders::{check_timeout, EmbedderSpec};
use crate::imitation::ImitationPolicy;
use crate::methods::{
    run_seed_on, Curation, Method, QWeighting, Run, SeedResult, TaskFailure, Tasks, WordcraftTasks,
};
use crate::openai::OpenAiClient;
use crate::policy::{LlmPolicy, OfflineConfig, OfflinePolicy, Policy};
use crate::predict::{auroc, calibration, CalibrationBin};
use crate::protocol::{ProtocolTasks, DEFAULT_TIMEOUT_SECS};
use crate::react::{AgentOptions, ReasonRetrieval};
use crate::wordcraft::{split, Interface, RecipeBook, Split, Task};
use crate::{AgentError, AgentResult};
use trajdb::{Embedder, HashEmbedder, Trajectory};

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
    /// Hold out a share of the ingredient pairs (the Wordcraft benchmark's split; trajdb's
    /// setting, 20 %).
    Recipe,
    /// Hold out a share of the goal entities.
    Goal,
    /// Hold out a share of the tasks at random (the reference code's `by_task`, 5 %).
    Task,
}

impl SplitKind {
    fn name(self) -> &'static str {
        match self {
            SplitKind::Recipe => "recipe",
            SplitKind::Goal => "goal",
            SplitKind::Task => "task",
        }
    }
}

/// A whole setting: the reference's or trajdb's earlier one (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Setting {
    /// As the reference code ran Wordcraft and its agent.
    Reference,
    /// trajdb's earlier setting (benchmark split, distractors, select actions).
    Trajdb,
}

/// Wordcraft's action interface on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ActionKind {
    /// One action names two entities ([`Interface::Combine`]).
    Combine,
    /// One action selects one entity ([`Interface::Select`]).
    Select,
}

/// How the training stream is drawn from the training part.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Draw {
    /// `--train` draws with replacement (the reference: task i is seeded by i).
    WithReplacement,
    /// The first `--train` tasks of a fixed shuffle, each once.
    InOrder,
}

/// When reasoning retrieves, on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ReasonRetrievalArg {
    /// At the first step; later steps reuse the acting stage's examples (the reference).
    FirstStep,
    /// At every step (trajdb's earlier agent).
    EveryStep,
}

/// Environment variable read for the LLM time limit when `--llm-timeout` is not given.
pub const LLM_TIMEOUT_ENV: &str = "TRAJDB_LLM_TIMEOUT";

/// Arguments of `trajdb bootstrap`.
#[derive(Debug, Clone, clap::Args)]
pub struct BootstrapArgs {
    /// Environment.
    #[arg(long, value_enum, default_value = "wordcraft")]
    pub env: EnvName,
    /// The whole setting: `reference` (as the reference code ran Wordcraft and its agent) or
    /// `trajdb` (this project's earlier setting). The flags below change single items.
    #[arg(long, value_enum, default_value = "reference")]
    pub setting: Setting,
    /// An environment speaking the environment protocol (JSON lines on stdin/stdout), run
    /// as `sh -c COMMAND`; replaces `--env`.
    #[arg(long, value_name = "COMMAND")]
    pub env_cmd: Option<String>,
    /// Seconds the `--env-cmd` environment may take to answer one request.
    #[arg(long, default_value_t = DEFAULT_TIMEOUT_SECS, value_name = "SECONDS")]
    pub env_timeout: f64,
    /// Step limit of every episode (agent actions, refused ones included). Default: 100 on
    /// Wordcraft in the reference setting (the reference's limit), else 50.
    #[arg(long)]
    pub max_steps: Option<usize>,
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
    #[arg(long, value_enum, default_value = "full")]
    pub method: Method,
    /// Training tasks (episodes per population member).
    #[arg(long, default_value_t = 300)]
    pub train: usize,
    /// Test tasks.
    #[arg(long, default_value_t = 200)]
    pub test: usize,
    /// Seeds (runs), numbered 0..S.
    #[arg(long, default_value_t = 3)]
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
    /// Default: the environment variable TRAJDB_LLM_TIMEOUT, else 120.
    #[arg(long, value_name = "SECONDS")]
    pub llm_timeout: Option<f64>,
    /// Sampling temperature sent to the LLM. Default: 0.1 in the reference setting (the
    /// reference's), 0 in the trajdb setting.
    #[arg(long)]
    pub temperature: Option<f64>,
    /// Context budget of one LLM prompt in tokens, estimated from characters (a quarter of
    /// them): the lowest-ranked examples are dropped until the prompt fits (counted in the
    /// episode's meta `prompt_examples_dropped`). Default: no budget.
    #[arg(long, value_name = "TOKENS")]
    pub max_prompt_tokens: Option<usize>,
    /// Tasks that may fail with an error (an LLM or environment error) before the run ends;
    /// each is recorded, counted and reported.
    #[arg(long, default_value_t = 10, value_name = "N")]
    pub max_failures: usize,
    /// Embedder of every key: `hash` (built-in, no model), `minilm:PATH` (all-MiniLM-L6-v2
    /// on the CPU from the model folder PATH; needs a build with `--features minilm`) or
    /// `openai:MODEL` (an OpenAI-compatible /v1/embeddings server at `OPENAI_BASE_URL`).
    #[arg(
        long,
        default_value = "hash",
        value_name = "hash|minilm:PATH|openai:MODEL"
    )]
    pub embedder: String,
    /// Train/test split. Default: `task` in the reference setting, `recipe` in trajdb's.
    #[arg(long, value_enum)]
    pub split: Option<SplitKind>,
    /// Share of the split's unit (tasks, recipes, goals) kept for training. Default: 0.95
    /// in the reference setting, 0.8 in trajdb's.
    #[arg(long)]
    pub train_ratio: Option<f64>,
    /// Distractor entities on the table. Default: 0 (reference), 4 (trajdb).
    #[arg(long)]
    pub distractors: Option<usize>,
    /// Wordcraft action interface. Default: `combine` (reference), `select` (trajdb).
    #[arg(long, value_enum)]
    pub action: Option<ActionKind>,
    /// How the training stream is drawn. Default: `with-replacement` (reference),
    /// `in-order` (trajdb).
    #[arg(long, value_enum)]
    pub draw: Option<Draw>,
    /// When reasoning retrieves. Default: `first-step` (reference), `every-step` (trajdb).
    #[arg(long, value_enum)]
    pub reason_retrieval: Option<ReasonRetrievalArg>,
    /// Shorthand for `--reason-retrieval every-step`.
    #[arg(long, conflicts_with = "reason_retrieval")]
    pub retrieve_every_step: bool,
    /// Exemplar curation's Q. Default: `per-call` (reference code), `paper` (trajdb).
    #[arg(long, value_enum)]
    pub q_weighting: Option<QWeighting>,
    /// Exemplar curation keeps a task's best trajectory even when its Q is 0 or unknown
    /// (trajdb's earlier rule; the reference keeps only Q > 0).
    #[arg(long)]
    pub keep_unproven: bool,
    /// Length of db-curation's first segment. Default: 10 (reference, Wordcraft), 20
    /// (trajdb).
    #[arg(long)]
    pub segment_first: Option<usize>,
    /// Starting database: `builtin` (4 hand-written trajectories for the built-in recipes),
    /// `none`, or a JSONL file of trajectories (keys are computed). Default: `builtin` in the
    /// reference setting with the built-in recipes, else `none`.
    #[arg(long, value_name = "builtin|none|FILE.jsonl")]
    pub starter: Option<String>,
    /// Write a self-contained HTML report (learning curves, calibration) into this
    /// directory (created), with the report's JSON beside it.
    #[arg(long, value_name = "DIR")]
    pub report: Option<PathBuf>,
    /// Print one JSON object instead of the summary.
    #[arg(long)]
    pub json: bool,
    /// Print the learning curve, per-seed table and calibration as well as the summary.
    #[arg(long)]
    pub verbose: bool,
    /// Tuning mode: take the test tasks from the training part of the split, never trained
    /// on, so settings can be chosen without touching test tasks.
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
    /// Offline policy: imitate only recipes that lead to the goal or come from an example
    /// for the same goal, never other examples' productive pairs. The default in the
    /// reference setting (chosen on dev tasks: with 3 base entities and no distractors,
    /// copying other goals' pairs wastes combinations); see `--other-goals`.
    #[arg(long, conflicts_with = "other_goals")]
    pub no_other_goals: bool,
    /// Offline policy: also imitate other examples' productive pairs when nothing leads to
    /// the goal. The default in the trajdb setting (it helps there, on dev tasks).
    #[arg(long)]
    pub other_goals: bool,
    /// No progress bar (the `trajdb` binary's global `--quiet`). The bar is drawn only when
    /// stderr is a terminal.
    #[arg(skip)]
    pub quiet: bool,
}

/// Every item of a run's setting, resolved from `--setting` and the single flags.
#[derive(Debug, Clone, Serialize)]
pub struct Resolved {
    /// The setting the defaults came from.
    pub setting: Setting,
    /// Split name (`task`, `recipe`, `goal`).
    pub split: &'static str,
    /// Share kept for training.
    pub train_ratio: f64,
    /// Distractors on the table.
    pub distractors: usize,
    /// `combine` or `select`.
    pub action: &'static str,
    /// `with-replacement` or `in-order`.
    pub draw: &'static str,
    /// `first-step` or `every-step`.
    pub reason_retrieval: &'static str,
    /// Exemplar curation's rule.
    pub curation: Curation,
    /// db-curation's first segment.
    pub segment_first: usize,
    /// `builtin`, `none` or the file.
    pub starter: String,
    /// LLM temperature.
    pub temperature: f64,
    /// Agent step limit.
    pub max_steps: usize,
    /// LLM request time limit, seconds.
    pub llm_timeout: f64,
    /// The Wordcraft stand-in also imitates other goals' productive pairs.
    pub stand_in_other_goals: bool,
}

/// Resolves the setting's defaults and the single flags into one [`Resolved`].
pub fn resolve(args: &BootstrapArgs) -> AgentResult<Resolved> {
    let reference = args.setting == Setting::Reference;
    let split = args.split.unwrap_or(if reference {
        SplitKind::Task
    } else {
        SplitKind::Recipe
    });
    let train_ratio = args
        .train_ratio
        .unwrap_or(if reference { 0.95 } else { 0.8 });
    if !(train_ratio > 0.0 && train_ratio < 1.0) {
        return Err(AgentError::invalid(
            "--train-ratio",
            format!("{train_ratio} is not between 0 and 1 (exclusive)"),
        ));
    }
    let action = args.action.unwrap_or(if reference {
        ActionKind::Combine
    } else {
        ActionKind::Select
    });
    let draw = args.draw.unwrap_or(if reference {
        Draw::WithReplacement
    } else {
        Draw::InOrder
    });
    let reason = if args.retrieve_every_step {
        ReasonRetrievalArg::EveryStep
    } else {
        args.reason_retrieval.unwrap_or(if reference {
            ReasonRetrievalArg::FirstStep
        } else {
            ReasonRetrievalArg::EveryStep
        })
    };
    let curation = Curation {
        weighting: args.q_weighting.unwrap_or(if reference {
            QWeighting::PerCall
        } else {
            QWeighting::Paper
        }),
        positive_only: reference && !args.keep_unproven,
    };
    let segment_first = args
        .segment_first
        .unwrap_or(if reference { 10 } else { 20 });
    if segment_first == 0 {
        return Err(AgentError::invalid("--segment-first", "must be at least 1"));
    }
    let starter = args.starter.clone().unwrap_or_else(|| {
        if reference && args.recipes.is_none() && args.env_cmd.is_none() {
            "builtin".to_owned()
        } else {
            "none".to_owned()
        }
    });
    let temperature = args
        .temperature
        .unwrap_or(if reference { 0.1 } else { 0.0 });
    if !(temperature.is_finite() && (0.0..=2.0).contains(&temperature)) {
        return Err(AgentError::invalid(
            "--temperature",
            format!("{temperature} is not between 0 and 2"),
        ));
    }
    let max_steps = args
        .max_steps
        .unwrap_or(if reference && args.env_cmd.is_none() {
            100
        } else {
            50
        });
    let llm_timeout = match args.llm_timeout {
        Some(t) => t,
        None => match std::env::var(LLM_TIMEOUT_ENV) {
            Ok(v) if !v.trim().is_empty() => v.trim().parse::<f64>().map_err(|_| {
                AgentError::invalid(LLM_TIMEOUT_ENV, format!("{v:?} is not a number of seconds"))
            })?,
            _ => 120.0,
        },
    };
    check_timeout(
        llm_timeout,
        if args.llm_timeout.is_some() {
            "--llm-timeout"
        } else {
            LLM_TIMEOUT_ENV
        },
    )?;
    Ok(Resolved {
        setting: args.setting,
        split: split.name(),
        train_ratio,
        distractors: args.distractors.unwrap_or(if reference { 0 } else { 4 }),
        action: match action {
            ActionKind::Combine => "combine",
            ActionKind::Select => "select",
        },
        draw: match draw {
            Draw::WithReplacement => "with-replacement",
            Draw::InOrder => "in-order",
        },
        reason_retrieval: match reason {
            ReasonRetrievalArg::FirstStep => "first-step",
            ReasonRetrievalArg::EveryStep => "every-step",
        },
        curation,
        segment_first,
        starter,
        temperature,
        max_steps,
        llm_timeout,
        stand_in_other_goals: if args.other_goals || args.no_other_goals {
            args.other_goals
        } else {
            !reference
        },
    })
}

/// The built-in starter set: four hand-written Wordcraft trajectories for the built-in
/// recipe set, in the combine interface (JSONL, one trajectory a line, no keys).
pub const BUILTIN_STARTER: &str = include_str!("starter_wordcraft.jsonl");

/// The starter trajectories `spec` names: `none`, `builtin` ([`BUILTIN_STARTER`]) or a JSONL
/// file of trajectories (keys, if any, are ignored and recomputed).
pub fn load_starter(spec: &str) -> AgentResult<Vec<Trajectory>> {
    let (text, source) = match spec {
        "none" => return Ok(Vec::new()),
        "builtin" => (BUILTIN_STARTER.to_owned(), "built-in starter".to_owned()),
        path => (
            std::fs::read_to_string(path).map_err(|e| AgentError::InputFile {
                kind: "starter file",
                path: path.to_owned(),
                what: e.to_string(),
            })?,
            path.to_owned(),
        ),
    };
    let mut reader = trajdb::jsonl::LineReader::new(text.as_bytes(), source.clone());
    let mut out = Vec::new();
    loop {
        match reader.next_record() {
            Ok(Some(t)) => out.push(t),
            Ok(None) => break,
            Err(e) => {
                return Err(AgentError::InputFile {
                    kind: "starter file",
                    path: source,
                    what: e.to_string(),
                })
            }
        }
    }
    Ok(out)
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
    /// Every item of the setting.
    pub resolved: Resolved,
    /// Starter trajectories in every starting database.
    pub starter_trajectories: usize,
    /// Mean over seeds of the successful trajectories in the final database.
    pub stored_successes: f64,
    /// Learning curve per seed: `[successes in the database, test success]` points.
    pub curves: Vec<Vec<(usize, f64)>>,
    /// (predicted probability, observed success) per test task, pooled over seeds.
    pub predictions: Vec<(f64, bool)>,
    /// Tasks that failed with an error, over all seeds.
    pub failures: Vec<TaskFailure>,
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

/// The train and test tasks `args` select (see the module documentation).
pub fn select_tasks(
    args: &BootstrapArgs,
    book: &RecipeBook,
) -> AgentResult<(Vec<Task>, Vec<Task>)> {
    select_tasks_with(args, &resolve(args)?, book)
}

fn select_tasks_with(
    args: &BootstrapArgs,
    r: &Resolved,
    book: &RecipeBook,
) -> AgentResult<(Vec<Task>, Vec<Task>)> {
    let tasks: Vec<Task> = book
        .tasks(args.depth)
        .into_iter()
        .filter(|t| book.is_solvable(t))
        .collect();
    let ratio = r.train_ratio;
    let sp = match r.split {
        "recipe" => Split::ByRecipe { train_ratio: ratio },
        "goal" => Split::ByGoal { train_ratio: ratio },
        _ => Split::ByTask { train_ratio: ratio },
    };
    let (train, test) = split(book, &tasks, sp, 0);
    let (train, test) = (shuffled(train, 1), shuffled(test, 2));
    let with_replacement = r.draw == "with-replacement";
    let (pool, test) = if args.dev {
        // Tuning: test on training-split tasks never trained on.
        if with_replacement {
            let keep = train.len().saturating_sub(args.test);
            let dev = train.get(keep..).unwrap_or(&[]).to_vec();
            (train.get(..keep).unwrap_or(&[]).to_vec(), dev)
        } else {
            let dev = train.get(args.train..).unwrap_or(&[]).to_vec();
            (train, dev)
        }
    } else {
        (train, test)
    };
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
    let test: Vec<Task> = test.into_iter().take(args.test).collect();
    if with_replacement {
        if pool.is_empty() && args.train > 0 {
            return Err(AgentError::invalid(
                "--train",
                "the split has no training tasks to draw from",
            ));
        }
        let mut rng = trajdb::rng::SplitMix64::new(0x7EA1_5EED);
        let n = u64::try_from(pool.len()).unwrap_or(u64::MAX);
        let train = (0..args.train)
            .map(|_| pool[usize::try_from(rng.below(n)).unwrap_or(0)].clone())
            .collect();
        return Ok((train, test));
    }
    if args.train > pool.len() {
        return Err(AgentError::invalid(
            "--train",
            format!(
                "{} training tasks asked for, the split has {}",
                args.train,
                pool.len()
            ),
        ));
    }
    Ok((pool.into_iter().take(args.train).collect(), test))
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
    EmbedderSpec::parse(&args.embedder, "--embedder")?;
    if args.max_steps == Some(0) {
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
        for (flag, given) in [
            ("--action", args.action.is_some()),
            ("--distractors", args.distractors.is_some()),
            ("--split", args.split.is_some()),
            ("--draw", args.draw.is_some()),
        ] {
            if given {
                return Err(AgentError::invalid(
                    flag,
                    "only applies to Wordcraft, not with --env-cmd",
                ));
            }
        }
        if args.stand_in == Some(StandIn::Wordcraft) {
            return Err(AgentError::invalid(
                "--stand-in",
                "the wordcraft stand-in only plays Wordcraft; use imitation with --env-cmd",
            ));
        }
    }
    if args.env_cmd.is_none()
        && args.stand_in == Some(StandIn::Imitation)
        && args.action != Some(ActionKind::Select)
        && !(args.action.is_none() && args.setting == Setting::Trajdb)
    {
        return Err(AgentError::invalid(
            "--stand-in",
            "the imitation stand-in chooses among admissible actions, which Wordcraft lists \
             only with --action select",
        ));
    }
    if args.max_prompt_tokens == Some(0) {
        return Err(AgentError::invalid(
            "--max-prompt-tokens",
            "must be at least 1",
        ));
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
    let resolved = resolve(args)?;
    if resolved.starter == "builtin" && (args.recipes.is_some() || args.env_cmd.is_some()) {
        return Err(AgentError::invalid(
            "--starter",
            "the built-in starter set is for the built-in Wordcraft recipes; give a file or none",
        ));
    }
    let starter = load_starter(&resolved.starter)?;
    let (book, train, test) = if args.env_cmd.is_some() {
        (
            Arc::new(RecipeBook::builtin_default()),
            Vec::new(),
            Vec::new(),
        )
    } else {
        let book = Arc::new(load_book(args.recipes.as_deref())?);
        let (train, test) = select_tasks_with(args, &resolved, &book)?;
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
    let timeout = check_timeout(resolved.llm_timeout, "--llm-timeout")?;
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
        imitate_other_goals: resolved.stand_in_other_goals,
    };
    let temperature = resolved.temperature;
    let max_prompt_tokens = args.max_prompt_tokens;
    let factory = move |seed: u64| -> AgentResult<Box<dyn Policy>> {
        Ok(match llm {
            LlmKind::Offline => match stand_in {
                StandIn::Wordcraft => Box::new(OfflinePolicy::with_config(seed, offline)),
                StandIn::Imitation => Box::new(ImitationPolicy::new(seed)),
            },
            LlmKind::Openai => Box::new(
                LlmPolicy::new(
                    OpenAiClient::from_env(model.as_deref().unwrap_or_default())?
                        .with_timeout(timeout)
                        .with_retries(retries)
                        .with_temperature(temperature)
                        .with_seed(Some(seed)),
                )
                .with_max_prompt_tokens(max_prompt_tokens),
            ),
        })
    };
    let show = !args.quiet && std::io::stderr().is_terminal();
    let mut results: Vec<SeedResult> = Vec::new();
    let mut env_name = "wordcraft".to_owned();
    let mut failed_so_far = 0usize;
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
                distractors: resolved.distractors,
                max_combinations: 4,
                interface: if resolved.action == "combine" {
                    Interface::Combine
                } else {
                    Interface::Select
                },
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
                    max_steps: resolved.max_steps,
                    reason_retrieval: if resolved.reason_retrieval == "first-step" {
                        ReasonRetrieval::FirstStep
                    } else {
                        ReasonRetrieval::EveryStep
                    },
                    ..Default::default()
                },
                hindsight: args.hindsight,
                population: 5,
                dir: base.join(format!("seed-{seed}")),
                embedder,
                policy: &factory,
                checkpoints: checkpoints(args.train),
                progress: &mut progress,
                segment_first: resolved.segment_first,
                curation: resolved.curation,
                starter: &starter,
                max_failures: args.max_failures.saturating_sub(failed_so_far),
            };
            let result = run_seed_on(args.method, &mut e, source.as_mut());
            if let Some(b) = &bar {
                b.finish_and_clear();
            }
            let result = result?;
            failed_so_far += result.failures.len();
            results.push(result);
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
    let predictions: Vec<(f64, bool)> = results
        .iter()
        .flat_map(|r| r.predictions.iter().copied())
        .collect();
    let (scores, labels): (Vec<f64>, Vec<bool>) = predictions.iter().copied().unzip();
    let stored: Vec<f64> = results
        .iter()
        .map(|r| r.final_trajectories.1 as f64)
        .collect();
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
        split: resolved.split,
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
        resolved,
        starter_trajectories: starter.len(),
        stored_successes: mean_sd(&stored).0,
        curves: results.iter().map(|r| r.curve.clone()).collect(),
        predictions,
        failures: results.iter().flat_map(|r| r.failures.clone()).collect(),
        seconds: start.elapsed().as_secs_f64(),
    })
}

fn pct(x: f64) -> String {
    format!("{:5.1}%", 100.0 * x)
}

/// Runs `bootstrap` and prints the report (the summary, or JSON with `--json`). Returns the
/// process exit code: 0 on success, 1 on error (one line on stderr).
pub fn main(args: &BootstrapArgs) -> i32 {
    let r = match run(args) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return 1;
        }
    };
    if let Some(dir) = &args.report {
        match crate::report::write(&r, dir) {
            Ok(page) if !args.quiet => eprintln!("report: {}", page.display()),
            Ok(_) => {}
            Err(e) => {
                eprintln!("error: {e}");
                return 1;
            }
        }
    }
    match print(&r, args.json, args.verbose) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("error: cannot write the report: {e}");
            1
        }
    }
}

/// The short human summary: setting, before -> after with the spread over seeds, stored
/// successes, failed tasks, the predictor, seconds.
pub fn summary(r: &BootstrapReport) -> String {
    let s = &r.resolved;
    let setting = match &r.env_cmd {
        Some(cmd) => format!("protocol environment `{cmd}`"),
        None => format!(
            "{} recipes, depth {}, {} split {:.0}/{:.0}, {} actions, {} distractor(s), {} starter trajectories",
            r.recipes,
            r.depth,
            r.split,
            100.0 * s.train_ratio,
            100.0 * (1.0 - s.train_ratio),
            s.action,
            s.distractors,
            r.starter_trajectories
        ),
    };
    let setting_name = match s.setting {
        Setting::Reference => "reference",
        Setting::Trajdb => "trajdb",
    };
    let policy = match r.stand_in {
        Some(si) => format!("offline {si} (not an LLM)"),
        None => format!("{} LLM", r.llm),
    };
    let mut out = String::new();
    out.push_str(&format!(
        "{} on {}, {setting_name} setting ({setting}); {policy}\n",
        r.method.name(),
        r.env
    ));
    out.push_str(&format!(
        "{} training tasks ({}), {} test tasks, {} seed(s), k={}{}\n\n",
        r.train,
        s.draw,
        r.test,
        r.seeds,
        r.k,
        if r.hindsight { ", hindsight" } else { "" }
    ));
    let gain = 100.0 * (r.test_success_after - r.test_success_before);
    out.push_str(&format!(
        "test success      before {:.1}% ± {:.1}  ->  after {:.1}% ± {:.1}   ({gain:+.1} points; mean ± sd over {} seed(s))\n",
        100.0 * r.test_success_before,
        100.0 * r.test_success_before_sd,
        100.0 * r.test_success_after,
        100.0 * r.test_success_after_sd,
        r.seeds
    ));
    out.push_str(&format!(
        "stored successes  {:.0} in the final database (mean over seeds; {} from the starter)\n",
        r.stored_successes, r.starter_trajectories
    ));
    out.push_str(&format!(
        "training success  {:.1}%\n",
        100.0 * r.train_success
    ));
    match r.predictor.auroc {
        Some(a) => out.push_str(&format!(
            "success predictor AUROC {a:.2} over {} test tasks (our measurement)\n",
            r.predictor.n
        )),
        None => out.push_str("success predictor no AUROC (no stored outcomes or one class only)\n"),
    }
    out.push_str(&format!("failed tasks      {}", r.failures.len()));
    if let Some(f) = r.failures.last() {
        out.push_str(&format!(
            " (last: {} task {}: {})",
            f.part, f.index, f.error
        ));
    }
    out.push('\n');
    if let Some(d) = &r.db {
        out.push_str(&format!("final database    {d}\n"));
    }
    out.push_str(&format!("seconds           {:.1}\n", r.seconds));
    out
}

/// Prints a report: one JSON object with `json`, else the summary (and with `verbose` the
/// learning curve, the per-seed table and the calibration table).
pub fn print(r: &BootstrapReport, json: bool, verbose: bool) -> std::io::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    if json {
        let s = serde_json::to_string(r).map_err(std::io::Error::other)?;
        writeln!(out, "{s}")?;
        return Ok(());
    }
    write!(out, "{}", summary(r))?;
    if !verbose {
        return Ok(());
    }
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
    writeln!(out, "\npredictor calibration (pooled over seeds)")?;
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
    Ok(())
}
