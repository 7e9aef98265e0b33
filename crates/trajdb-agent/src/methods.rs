//! The methods (Traj-Bootstrap, database curation, exemplar curation), run for one seed on
//! the environments of a [`Tasks`]: Wordcraft in-process ([`run_seed`]) or any other
//! ([`run_seed_on`], e.g. a protocol environment).
//!
//! - `fixed`: the starting database (empty) is used as is; no training episodes.
//! - `traj-bootstrap`: training tasks are attempted in order; every episode is stored with
//!   its outcome (failures are kept for the task-success predictor and never retrieved,
//!   because retrieval filters on success).
//! - `db-curation`: a population of N databases (each with its own policy seed) attempts the
//!   same task stream; segments are `segment_first` tasks (10 for Wordcraft in the reference
//!   code, 20 in the paper's text), then each twice as long as the one before; at
//!   each boundary the database with the best success rate on that segment is forked over
//!   the one with the worst ([`Database::fork`]; the worst is closed, its directory removed,
//!   the fork reopened; it keeps its own policy seed).
//! - `exemplar-curation`: N independent traj-bootstrap databases; afterwards, for each
//!   training task and goal, only the successful trajectory with the highest Q across the
//!   population is kept, in a new database built from those ([`Curation`]: which Q, and
//!   whether a Q of 0 or no Q at all is kept).
//! - `full`: db-curation, then exemplar-curation over the final population.
//!
//! Hindsight (optional): a failed episode that created intermediate entities (Wordcraft) or
//! reached sub-goals (an environment's `achieved` reply) also stores, for each, a successful
//! relabelled trajectory ("create X", the steps that made it). Failures are always stored
//! here, so the relabelled trajectory's `parent` is the id of the stored failed trajectory.
//!
//! A starter database (the reference's Fixed-DB: a few hand-written example trajectories) is
//! appended to every database before training; "before" is measured on it.
//!
//! A task whose episode fails with an error that is not the database's (an LLM or
//! environment error) is recorded ([`TaskFailure`]; in training also stored as a trajectory
//! with an unknown outcome and the error in `meta["error"]`) and the run goes on, unless more
//! than `max_failures` tasks have failed ([`AgentError::TooManyFailures`]).
//!
//! Test success is measured with evaluation episodes that neither store nor log. Scaling
//! curves read the final database through as-of views (`Filter::as_of`) at the commits where
//! its count of successful trajectories reaches each checkpoint, instead of copying it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::policy::Policy;
use crate::predict::Predictor;
use crate::react::{
    append_with_keys, ensure_spaces, run_episode, store_relabelled, AgentOptions, Store,
};
use crate::wordcraft::{RecipeBook, Task, WordcraftEnv};
use crate::{wordcraft_task_id, AgentError, AgentResult, Environment};
use trajdb::{Database, Durability, Embedder, Options, ProvenanceKind, Trajectory};

/// A method: fixed, Traj-Bootstrap, database curation, exemplar curation or both.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Method {
    /// The starting database, unchanged.
    Fixed,
    /// Successful training trajectories are added.
    TrajBootstrap,
    /// Population-based database curation.
    DbCuration,
    /// Per-task best-Q exemplar curation over a population.
    ExemplarCuration,
    /// DB curation, then exemplar curation.
    Full,
}

impl Method {
    /// The name used on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Method::Fixed => "fixed",
            Method::TrajBootstrap => "traj-bootstrap",
            Method::DbCuration => "db-curation",
            Method::ExemplarCuration => "exemplar-curation",
            Method::Full => "full",
        }
    }
}

/// How retrievals count towards an exemplar's Q in exemplar curation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum QWeighting {
    /// The paper's formula as written (METHOD.md section 4): `Q(t) = sum_i o_i f_i(t) /
    /// sum_i f_i(t)`, `f_i(t)` the times episode `i` retrieved `t` (the engine's
    /// [`Database::utility`]). Long episodes (usually failures) weigh more.
    Paper,
    /// The reference code's weighting: each retrieval call of episode `i` counts
    /// `1 / n_i`, `n_i` the episode's retrieval calls, so every episode weighs about the same
    /// whatever its length: `Q(t) = sum_i o_i f_i(t) / n_i / sum_i f_i(t) / n_i`. `n_i` is
    /// read from the episode's stored trajectory (`meta["retrieval_calls"]`); an episode
    /// without one counts `n_i = 1`.
    PerCall,
}

/// Exemplar curation's rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Curation {
    /// Which Q.
    pub weighting: QWeighting,
    /// Keep a task's best trajectory only if its Q is above 0 (the reference); false keeps
    /// the best even with Q = 0 or no Q (trajdb's earlier rule; a measured Q still ranks
    /// above none).
    pub positive_only: bool,
}

impl Curation {
    /// The reference code's rule: per-call weighting, only Q > 0 kept.
    pub const REFERENCE: Curation = Curation {
        weighting: QWeighting::PerCall,
        positive_only: true,
    };
    /// trajdb's earlier rule: the paper's formula, the best kept even without a positive Q.
    pub const TRAJDB: Curation = Curation {
        weighting: QWeighting::Paper,
        positive_only: false,
    };
}

impl Default for Curation {
    /// [`Curation::REFERENCE`].
    fn default() -> Self {
        Curation::REFERENCE
    }
}

/// Q of every trajectory of `db` that a labelled episode retrieved, under `weighting`
/// (trajectories never retrieved in a labelled episode are absent).
pub fn q_values(
    db: &Database,
    weighting: QWeighting,
) -> AgentResult<std::collections::HashMap<u64, f64>> {
    use std::collections::HashMap;
    let mut out = HashMap::new();
    match weighting {
        QWeighting::Paper => {
            for id in db.ids() {
                if let Some(q) = db.utility(id).q() {
                    out.insert(id, q);
                }
            }
        }
        QWeighting::PerCall => {
            let mut calls: HashMap<u64, f64> = HashMap::new();
            for id in db.ids() {
                let t = db.get(id)?;
                let ep = t.meta.get("episode").and_then(|v| v.parse::<u64>().ok());
                let n = t
                    .meta
                    .get("retrieval_calls")
                    .and_then(|v| v.parse::<u64>().ok());
                if let (Some(ep), Some(n)) = (ep, n) {
                    calls.insert(ep, n.max(1) as f64);
                }
            }
            let mut sums: HashMap<u64, (f64, f64)> = HashMap::new();
            for ep in db.episodes() {
                let Some(o) = ep.outcome else { continue };
                let n = calls.get(&ep.id).copied().unwrap_or(1.0);
                for (id, f) in ep.counts() {
                    let w = f as f64 / n;
                    let e = sums.entry(id).or_insert((0.0, 0.0));
                    e.0 += if o { w } else { 0.0 };
                    e.1 += w;
                }
            }
            for (id, (num, den)) in sums {
                if den > 0.0 {
                    out.insert(id, num / den);
                }
            }
        }
    }
    Ok(out)
}

/// A task whose episode failed with an error (see the module documentation).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TaskFailure {
    /// Training or test task.
    pub part: &'static str,
    /// Index of the task in its part.
    pub index: usize,
    /// Population member (training) or 0 (test).
    pub member: usize,
    /// The error, one line.
    pub error: String,
}

/// Whether an error ends the run at once: the database's own errors, file-system errors,
/// invalid arguments, and protocol environment errors (the child process and its streams
/// are shared by every task, so after one error no later request can be trusted; the
/// protocol ends the run, see [`crate::protocol`]). Others (LLM errors, Wordcraft
/// environment errors) fail one task.
pub fn is_fatal(e: &AgentError) -> bool {
    matches!(
        e,
        AgentError::Db(_)
            | AgentError::Protocol(_)
            | AgentError::Io { .. }
            | AgentError::Invalid { .. }
            | AgentError::TooManyFailures { .. }
    )
}

/// Makes a policy from a seed.
pub type PolicyFactory<'a> = &'a dyn Fn(u64) -> AgentResult<Box<dyn Policy>>;

/// Everything one seed's run needs.
pub struct Experiment<'a> {
    /// The recipe book.
    pub book: Arc<RecipeBook>,
    /// Training tasks, in order.
    pub train: &'a [Task],
    /// Test tasks.
    pub test: &'a [Task],
    /// The seed.
    pub seed: u64,
    /// Agent options for training episodes (k, window, stages).
    pub agent: AgentOptions,
    /// Store hindsight-relabelled trajectories from failed episodes.
    pub hindsight: bool,
    /// Population size for the population methods (5 in the reference).
    pub population: usize,
    /// Directory for this seed's databases (created; must be empty or absent).
    pub dir: PathBuf,
    /// Distractors on the table.
    pub distractors: usize,
    /// Combination limit per episode.
    pub max_combinations: usize,
    /// The embedder for every key.
    pub embedder: &'a dyn Embedder,
    /// Makes policies.
    pub policy: PolicyFactory<'a>,
    /// Checkpoints (successful trajectories in the database) for the scaling curve.
    pub checkpoints: Vec<usize>,
    /// Called after each episode with (episodes done, episodes planned).
    pub progress: &'a mut dyn FnMut(usize, usize),
    /// How the table is played ([`crate::wordcraft::Interface`]).
    pub interface: crate::wordcraft::Interface,
    /// Length of db-curation's first segment.
    pub segment_first: usize,
    /// Exemplar curation's rule.
    pub curation: Curation,
    /// Starter trajectories appended to every database first.
    pub starter: &'a [Trajectory],
    /// Failed tasks tolerated before the run ends.
    pub max_failures: usize,
}

/// What one seed's run measured.
#[derive(Debug, Clone)]
pub struct SeedResult {
    /// Test success with the starting (empty) database.
    pub before: f64,
    /// Test success with the final database.
    pub after: f64,
    /// Training success over all episodes of the population.
    pub train_success: f64,
    /// (successful trajectories visible, test success) at each checkpoint reached.
    pub curve: Vec<(usize, f64)>,
    /// (predicted probability, observed success) per test task.
    pub predictions: Vec<(f64, bool)>,
    /// Where the final database is.
    pub final_db: PathBuf,
    /// Forks made by db-curation.
    pub forks: usize,
    /// Trajectories in the final database (all, and successful).
    pub final_trajectories: (usize, usize),
    /// Tasks that failed with an error.
    pub failures: Vec<TaskFailure>,
    /// Successful starter trajectories in the final database.
    pub starter_successes: usize,
}

fn open_db(dir: &Path, embedder: &dyn Embedder) -> AgentResult<Database> {
    let db = Database::open(
        dir,
        Options {
            durability: Durability::Buffered,
            ..Default::default()
        },
    )?;
    ensure_spaces(&db, embedder)?;
    Ok(db)
}

fn mix(a: u64, b: u64) -> u64 {
    let mut z = a ^ b.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

struct Member {
    dir: PathBuf,
    db: Option<Database>,
    policy: Box<dyn Policy>,
}

impl Member {
    fn db(&self) -> AgentResult<&Database> {
        self.db
            .as_ref()
            .ok_or_else(|| AgentError::Env(format!("database {} is closed", self.dir.display())))
    }
}

/// Segment ends of db-curation for `n` tasks with a first segment of `first` tasks (0 counts
/// as 1), each next one twice as long: `first` = 10 gives 10, 30, 70, 150, ... and `n`;
/// 20 gives 20, 60, 140, 300, ...
pub fn segment_ends(n: usize, first: usize) -> Vec<usize> {
    let mut ends = Vec::new();
    let (mut end, mut len) = (0usize, first.max(1));
    while end < n {
        end = (end + len).min(n);
        ends.push(end);
        len *= 2;
    }
    ends
}

/// Which list of tasks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// Training tasks.
    Train,
    /// Test tasks.
    Test,
}

/// Where a run's environments come from: Wordcraft in-process ([`WordcraftTasks`]) or a
/// child process speaking the environment protocol ([`crate::protocol::ProtocolTasks`]).
pub trait Tasks {
    /// The task ids of a part, in order.
    fn ids(&self, part: Part) -> Vec<String>;
    /// A fresh episode of task `index` of `part`. `seed` is the run seed: environments may
    /// use it (with the task) for their own randomness.
    fn open(
        &mut self,
        part: Part,
        index: usize,
        seed: u64,
    ) -> AgentResult<Box<dyn Environment + '_>>;
}

/// Wordcraft tasks, in-process.
pub struct WordcraftTasks<'a> {
    /// The recipe book.
    pub book: Arc<RecipeBook>,
    /// Training tasks, in order.
    pub train: &'a [Task],
    /// Test tasks.
    pub test: &'a [Task],
    /// Distractors on the table.
    pub distractors: usize,
    /// Combination limit per episode.
    pub max_combinations: usize,
    /// How the table is played.
    pub interface: crate::wordcraft::Interface,
}

impl Tasks for WordcraftTasks<'_> {
    fn ids(&self, part: Part) -> Vec<String> {
        let list = match part {
            Part::Train => self.train,
            Part::Test => self.test,
        };
        list.iter()
            .map(|t| wordcraft_task_id(&self.book, t))
            .collect()
    }

    fn open(
        &mut self,
        part: Part,
        index: usize,
        seed: u64,
    ) -> AgentResult<Box<dyn Environment + '_>> {
        let (list, salt) = match part {
            Part::Train => (self.train, index as u64),
            Part::Test => (self.test, 1 << 40 | index as u64),
        };
        let task = list
            .get(index)
            .ok_or_else(|| AgentError::invalid("task", format!("no {part:?} task {index}")))?;
        Ok(Box::new(
            WordcraftEnv::new(
                self.book.clone(),
                task.clone(),
                self.distractors,
                self.max_combinations,
                mix(seed, salt),
            )?
            .with_interface(self.interface),
        ))
    }
}

/// Everything one seed's run needs, for any [`Tasks`].
pub struct Run<'a> {
    /// The seed.
    pub seed: u64,
    /// Agent options for training episodes (k, window, stages, max steps).
    pub agent: AgentOptions,
    /// Store hindsight-relabelled trajectories from failed episodes.
    pub hindsight: bool,
    /// Population size for the population methods (5 in the reference).
    pub population: usize,
    /// Directory for this seed's databases (created; must be empty or absent).
    pub dir: PathBuf,
    /// The embedder for every key.
    pub embedder: &'a dyn Embedder,
    /// Makes policies.
    pub policy: PolicyFactory<'a>,
    /// Checkpoints (successful trajectories in the database) for the scaling curve.
    pub checkpoints: Vec<usize>,
    /// Called after each episode with (episodes done, episodes planned).
    pub progress: &'a mut dyn FnMut(usize, usize),
    /// Length of db-curation's first segment (10 in the reference's Wordcraft runs).
    pub segment_first: usize,
    /// Exemplar curation's rule.
    pub curation: Curation,
    /// Starter trajectories (keys are computed here) appended to every database first.
    pub starter: &'a [Trajectory],
    /// Failed tasks tolerated in this run before it ends with an error.
    pub max_failures: usize,
}

/// Runs `method` for one seed on Wordcraft (see [`run_seed_on`]).
pub fn run_seed(method: Method, e: &mut Experiment<'_>) -> AgentResult<SeedResult> {
    let mut tasks = WordcraftTasks {
        book: e.book.clone(),
        train: e.train,
        test: e.test,
        distractors: e.distractors,
        max_combinations: e.max_combinations,
        interface: e.interface,
    };
    let mut run = Run {
        seed: e.seed,
        agent: e.agent.clone(),
        hindsight: e.hindsight,
        population: e.population,
        dir: e.dir.clone(),
        embedder: e.embedder,
        policy: e.policy,
        checkpoints: e.checkpoints.clone(),
        progress: &mut *e.progress,
        segment_first: e.segment_first,
        curation: e.curation,
        starter: e.starter,
        max_failures: e.max_failures,
    };
    run_seed_on(method, &mut run, &mut tasks)
}

/// Test success of `db` as of commit `as_of`, with a fresh policy seeded from the
/// experiment seed (the same for every call, so points are comparable). Returns the rate
/// and the outcome per test task; a task failing with a non-fatal error counts as a failure
/// and is recorded in `failures`.
fn evaluate(
    e: &mut Run<'_>,
    tasks: &mut dyn Tasks,
    db: &Database,
    as_of: Option<u64>,
    done: &mut usize,
    total: usize,
    failures: &mut Vec<TaskFailure>,
) -> AgentResult<(f64, Vec<bool>)> {
    let mut policy = (e.policy)(mix(e.seed, 0xE7A1))?;
    let opts = AgentOptions {
        store: Store::Nothing,
        log_usage: false,
        as_of,
        ..e.agent.clone()
    };
    let n_test = tasks.ids(Part::Test).len();
    let mut outcomes = Vec::with_capacity(n_test);
    for j in 0..n_test {
        let r = tasks
            .open(Part::Test, j, e.seed)
            .and_then(|mut env| run_episode(db, e.embedder, policy.as_mut(), env.as_mut(), &opts));
        match r {
            Ok(r) => outcomes.push(r.success),
            Err(err) if !is_fatal(&err) => {
                let _ = policy.take_notes();
                outcomes.push(false);
                record_failure(failures, e.max_failures, "test", j, 0, &err)?;
            }
            Err(err) => return Err(err),
        }
        *done += 1;
        (e.progress)(*done, total);
    }
    let rate = outcomes.iter().filter(|&&o| o).count() as f64 / outcomes.len().max(1) as f64;
    Ok((rate, outcomes))
}

/// Records a failed task; an error once more than `max` tasks have failed.
fn record_failure(
    failures: &mut Vec<TaskFailure>,
    max: usize,
    part: &'static str,
    index: usize,
    member: usize,
    err: &AgentError,
) -> AgentResult<()> {
    let error = err.to_string().replace('\n', " ");
    failures.push(TaskFailure {
        part,
        index,
        member,
        error: error.clone(),
    });
    if failures.len() > max {
        return Err(AgentError::TooManyFailures {
            failed: failures.len(),
            max,
            last: error,
        });
    }
    Ok(())
}

/// Appends the starter trajectories (marked `meta["starter"] = "true"`, provenance
/// imported) with their keys; returns the commit after them.
fn add_starter(db: &Database, embedder: &dyn Embedder, starter: &[Trajectory]) -> AgentResult<u64> {
    for t in starter {
        let mut t = t.clone();
        t.id = None;
        t.meta.insert("starter".into(), "true".into());
        t.provenance.kind = ProvenanceKind::Imported;
        append_with_keys(db, embedder, &t)?;
    }
    Ok(db.commit_seq())
}

/// Runs `method` for one seed on the environments of `tasks`.
pub fn run_seed_on(
    method: Method,
    e: &mut Run<'_>,
    tasks: &mut dyn Tasks,
) -> AgentResult<SeedResult> {
    let train_ids = tasks.ids(Part::Train);
    let n_test = tasks.ids(Part::Test).len();
    if let Ok(mut rd) = std::fs::read_dir(&e.dir) {
        if rd.next().is_some() {
            return Err(AgentError::invalid(
                e.dir.display().to_string(),
                "database directory exists and is not empty",
            ));
        }
    }
    let n_members = match method {
        Method::Fixed | Method::TrajBootstrap => 1,
        _ => e.population.max(1),
    };
    let train_len = if method == Method::Fixed {
        0
    } else {
        train_ids.len()
    };
    let n_points = e.checkpoints.len() + 2;
    let total = train_len * n_members + n_test * n_points;
    let mut done = 0usize;
    let mut members = Vec::with_capacity(n_members);
    let mut failures: Vec<TaskFailure> = Vec::new();
    for i in 0..n_members {
        let dir = e.dir.join(format!("db-{i}"));
        let db = open_db(&dir, e.embedder)?;
        add_starter(&db, e.embedder, e.starter)?;
        members.push(Member {
            dir,
            db: Some(db),
            policy: (e.policy)(mix(e.seed, 100 + i as u64))?,
        });
    }
    let opts = AgentOptions {
        store: Store::All,
        log_usage: true,
        ..e.agent.clone()
    };
    let ends = if matches!(method, Method::DbCuration | Method::Full) {
        segment_ends(train_len, e.segment_first)
    } else {
        vec![train_len]
    };
    let mut seg_success = vec![0usize; n_members];
    let mut total_success = vec![0usize; n_members];
    let mut forks = 0;
    let mut next_end = 0;
    for i in 0..train_len {
        for (m, member) in members.iter_mut().enumerate() {
            let Member { dir, db, policy } = member;
            let db = db
                .as_ref()
                .ok_or_else(|| AgentError::Env(format!("database {} is closed", dir.display())))?;
            let mut goal = String::new();
            let attempt = tasks.open(Part::Train, i, e.seed).and_then(|mut env| {
                goal = env.goal();
                let r = run_episode(db, e.embedder, policy.as_mut(), env.as_mut(), &opts)?;
                if !r.success && e.hindsight {
                    env.finish()?;
                    store_relabelled(db, e.embedder, env.as_ref(), &r.trajectory, r.stored)?;
                }
                Ok(r.success)
            });
            match attempt {
                Ok(true) => {
                    seg_success[m] += 1;
                    total_success[m] += 1;
                }
                Ok(false) => {}
                Err(err) if !is_fatal(&err) => {
                    let _ = policy.take_notes();
                    let mut t = Trajectory {
                        task: train_ids.get(i).cloned().unwrap_or_default(),
                        goal,
                        ..Default::default()
                    };
                    t.meta.insert("error".into(), err.to_string());
                    db.append_as(&t, Some(&e.embedder.id()))?;
                    record_failure(&mut failures, e.max_failures, "train", i, m, &err)?;
                }
                Err(err) => return Err(err),
            }
            done += 1;
            (e.progress)(done, total);
        }
        if ends.get(next_end) == Some(&(i + 1)) {
            next_end += 1;
            if n_members > 1 && matches!(method, Method::DbCuration | Method::Full) {
                let best = (0..n_members)
                    .max_by_key(|&m| (seg_success[m], std::cmp::Reverse(m)))
                    .unwrap_or(0);
                let worst = (0..n_members)
                    .min_by_key(|&m| (seg_success[m], std::cmp::Reverse(m)))
                    .unwrap_or(0);
                if seg_success[best] > seg_success[worst] {
                    let wdir = members[worst].dir.clone();
                    members[worst].db = None;
                    std::fs::remove_dir_all(&wdir).map_err(|source| AgentError::Io {
                        op: "remove",
                        path: wdir.display().to_string(),
                        source,
                    })?;
                    members[best].db()?.fork(&wdir)?;
                    members[worst].db = Some(open_db(&wdir, e.embedder)?);
                    forks += 1;
                }
            }
            seg_success.iter_mut().for_each(|s| *s = 0);
        }
    }
    let best = (0..n_members)
        .max_by_key(|&m| (total_success[m], std::cmp::Reverse(m)))
        .unwrap_or(0);
    let train_success = if train_len == 0 {
        0.0
    } else {
        total_success.iter().sum::<usize>() as f64 / (train_len * n_members) as f64
    };

    // The predictor reads the best training database (it keeps failures): a logistic model
    // fitted on its stored episodes, over each test task's goal and initial observation
    // (the table the evaluation episode starts with, known before acting); the goal vote
    // when the stored episodes hold only one outcome.
    let evidence = members[best].db()?;
    let predictor = Predictor::default();
    let prior = Predictor::prior(evidence)?;
    let fitted = predictor.fit(evidence, e.embedder)?;
    let mut predicted = Vec::with_capacity(n_test);
    if let Some(p0) = prior {
        for j in 0..n_test {
            let env = tasks.open(Part::Test, j, e.seed)?;
            let goal = env.goal();
            predicted.push(match &fitted {
                Some(f) => f.predict(evidence, e.embedder, &goal, &env.observation())?,
                None => predictor.predict(evidence, e.embedder, &goal, p0)?,
            });
        }
    }

    let curated;
    let (final_db, final_dir): (&Database, PathBuf) =
        if matches!(method, Method::ExemplarCuration | Method::Full) {
            let dir = e.dir.join("curated");
            curated = curate_with_starter(
                &members,
                &train_ids[..train_len],
                &dir,
                e.embedder,
                e.curation,
                e.starter,
            )?;
            (&curated, dir)
        } else {
            (members[best].db()?, members[best].dir.clone())
        };
    final_db.sync()?;

    // Scaling curve through as-of views of the final database: the starter is committed
    // first, so "before" is the view just after it.
    let mut successes: Vec<u64> = Vec::new();
    let mut starter_seq = 0;
    let mut starter_successes = 0;
    for (id, seq) in final_db.commit_points() {
        let t = final_db.get(id)?;
        if t.meta.get("starter").is_some_and(|v| v == "true") {
            starter_seq = starter_seq.max(seq);
            starter_successes += usize::from(t.outcome.success == Some(true));
        }
        if t.outcome.success == Some(true) {
            successes.push(seq);
        }
    }
    let mut curve = Vec::new();
    let (before, _) = evaluate(
        e,
        tasks,
        final_db,
        Some(starter_seq),
        &mut done,
        total,
        &mut failures,
    )?;
    curve.push((starter_successes, before));
    let checkpoints: Vec<usize> = e
        .checkpoints
        .iter()
        .copied()
        .filter(|&c| c > starter_successes && c < successes.len())
        .collect();
    for c in checkpoints {
        let as_of = Some(successes[c - 1]);
        let (rate, _) = evaluate(e, tasks, final_db, as_of, &mut done, total, &mut failures)?;
        curve.push((c, rate));
    }
    let (after, outcomes) = evaluate(e, tasks, final_db, None, &mut done, total, &mut failures)?;
    curve.push((successes.len(), after));
    (e.progress)(total, total);
    let predictions = predicted.into_iter().zip(outcomes).collect();
    Ok(SeedResult {
        before,
        after,
        train_success,
        curve,
        predictions,
        final_db: final_dir,
        forks,
        final_trajectories: (final_db.ids().len(), successes.len()),
        failures,
        starter_successes,
    })
}

/// Exemplar curation: for each training task and goal (and each hindsight goal), the
/// successful trajectory with the highest Q ([`q_values`] under `rule.weighting`) across
/// `members`, copied into a new database at `dir` in task order. With `rule.positive_only`
/// a trajectory is kept only if its Q is above 0 (the reference); otherwise a trajectory
/// never retrieved in a labelled episode has no Q and ranks below any measured Q. Ties keep
/// the earlier member and the earlier trajectory. Starter trajectories
/// (`meta["starter"] = "true"`) are not candidates.
pub fn curate(
    members: &[impl AsDb],
    train: &[Task],
    book: &RecipeBook,
    dir: &Path,
    embedder: &dyn Embedder,
    rule: Curation,
) -> AgentResult<Database> {
    let order: Vec<String> = train.iter().map(|t| wordcraft_task_id(book, t)).collect();
    curate_ids(members, &order, dir, embedder, rule)
}

/// [`curate`] for any environment: `train` are the training task ids in order.
pub fn curate_ids(
    members: &[impl AsDb],
    train: &[String],
    dir: &Path,
    embedder: &dyn Embedder,
    rule: Curation,
) -> AgentResult<Database> {
    curate_with_starter(members, train, dir, embedder, rule, &[])
}

fn curate_with_starter(
    members: &[impl AsDb],
    train: &[String],
    dir: &Path,
    embedder: &dyn Embedder,
    rule: Curation,
    starter: &[Trajectory],
) -> AgentResult<Database> {
    use std::collections::HashMap;
    let mut order: Vec<(String, String)> = Vec::new();
    let mut best: HashMap<(String, String), (f64, usize, u64)> = HashMap::new();
    for (m, member) in members.iter().enumerate() {
        let db = member.as_db()?;
        let qs = q_values(db, rule.weighting)?;
        for id in db.ids() {
            let t = db.get(id)?;
            if t.outcome.success != Some(true) || t.meta.get("starter").is_some_and(|v| v == "true")
            {
                continue;
            }
            let q = qs.get(&id).copied();
            if rule.positive_only && q.is_none_or(|q| q <= 0.0) {
                continue;
            }
            let q = q.unwrap_or(-1.0);
            let key = (t.task.clone(), t.goal.clone());
            match best.get(&key) {
                Some(&(bq, _, _)) if bq >= q => {}
                prev => {
                    if prev.is_none() {
                        order.push(key.clone());
                    }
                    best.insert(key, (q, m, id));
                }
            }
        }
    }
    // Task order of the training stream (first appearance), then relabelled goals.
    let rank: HashMap<&str, usize> = train
        .iter()
        .enumerate()
        .rev()
        .map(|(i, t)| (t.as_str(), i))
        .collect();
    order.sort_by_key(|(task, _)| rank.get(task.as_str()).copied().unwrap_or(usize::MAX));
    let out = open_db(dir, embedder)?;
    add_starter(&out, embedder, starter)?;
    let emb = embedder.id();
    for key in order {
        let Some(&(q, m, id)) = best.get(&key) else {
            continue;
        };
        let mut t = members[m].as_db()?.get(id)?;
        t.id = None;
        t.meta.insert("curated_from".into(), format!("db-{m}:{id}"));
        if q >= 0.0 {
            t.meta.insert("curated_q".into(), format!("{q:.4}"));
        }
        out.append_as(&t, Some(&emb))?;
    }
    Ok(out)
}

/// The exemplar choice of `trajdb curate` and of `docs/fleet.md`'s DuckDB query: for each
/// task, the successful trajectory (current outcome success) with the highest Q
/// (`Utility::q`, the engine's counters, METHOD.md §4) across `members`, as (Q, member
/// index, id). A trajectory without Q (never retrieved in a labelled episode) counts as
/// Q = -1, below any measured Q; ties keep the earlier member and, within a member, the
/// trajectory committed first (`Database::ids` order). A relabelled (hindsight) trajectory's
/// task not seen before is appended to `order`.
///
/// The bootstrap's exemplar curation ([`curate_ids`]) follows its [`Curation`] rule instead
/// (in the reference setting: per (task, goal), Q > 0 only, the chosen Q weighting).
pub fn select_exemplars(
    members: &[impl AsDb],
    order: &mut Vec<String>,
) -> AgentResult<std::collections::HashMap<String, (f64, usize, u64)>> {
    let mut best: std::collections::HashMap<String, (f64, usize, u64)> =
        std::collections::HashMap::new();
    for (m, member) in members.iter().enumerate() {
        let db = member.as_db()?;
        for id in db.ids() {
            let t = db.get(id)?;
            if t.outcome.success != Some(true) {
                continue;
            }
            let q = db.utility(id).q().unwrap_or(-1.0);
            match best.get(&t.task) {
                Some(&(bq, _, _)) if bq >= q => {}
                prev => {
                    if prev.is_none() && t.provenance.kind == ProvenanceKind::Relabelled {
                        order.push(t.task.clone());
                    }
                    best.insert(t.task.clone(), (q, m, id));
                }
            }
        }
    }
    Ok(best)
}

/// Anything that holds an open database (a population member, or a database itself).
pub trait AsDb {
    /// The database.
    fn as_db(&self) -> AgentResult<&Database>;
}

impl AsDb for Database {
    fn as_db(&self) -> AgentResult<&Database> {
        Ok(self)
    }
}

impl AsDb for Member {
    fn as_db(&self) -> AgentResult<&Database> {
        self.db()
    }
}
