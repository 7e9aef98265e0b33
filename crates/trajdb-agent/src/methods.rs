//! The methods (Traj-Bootstrap, database curation, exemplar curation), run for one seed on
//! the environments of a [`Tasks`]: Wordcraft in-process ([`run_seed`]) or any other
//! ([`run_seed_on`], e.g. a protocol environment).
//!
//! - `fixed`: the starting database (empty) is used as is; no training episodes.
//! - `traj-bootstrap`: training tasks are attempted in order; every episode is stored with
//!   its outcome (failures are kept for the task-success predictor and never retrieved,
//!   because retrieval filters on success).
//! - `db-curation`: a population of N databases (each with its own policy seed) attempts the
//!   same task stream; segments are 20 tasks, then each twice as long as the one before; at
//!   each boundary the database with the best success rate on that segment is forked over
//!   the one with the worst ([`Database::fork`]; the worst is closed, its directory removed,
//!   the fork reopened; it keeps its own policy seed).
//! - `exemplar-curation`: N independent traj-bootstrap databases; afterwards, for each
//!   training task, only the successful trajectory with the highest Q across the population
//!   is kept, in a new database built from those.
//! - `full`: db-curation, then exemplar-curation over the final population.
//!
//! Hindsight (optional): a failed episode that created intermediate entities (Wordcraft) or
//! reached sub-goals (an environment's `achieved` reply) also stores, for each, a successful
//! relabelled trajectory ("create X", the steps that made it). Failures are always stored
//! here, so the relabelled trajectory's `parent` is the id of the stored failed trajectory.
//!
//! Test success is measured with evaluation episodes that neither store nor log. Scaling
//! curves read the final database through as-of views (`Filter::as_of`) at the commits where
//! its count of successful trajectories reaches each checkpoint, instead of copying it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::policy::Policy;
use crate::predict::Predictor;
use crate::react::{ensure_spaces, run_episode, store_relabelled, AgentOptions, Store};
use crate::wordcraft::{RecipeBook, Task, WordcraftEnv};
use crate::{wordcraft_task_id, AgentError, AgentResult, Environment};
use trajdb::{Database, Durability, Embedder, Options, ProvenanceKind};

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

/// Segment ends of db-curation for `n` tasks: 20, 60, 140, 300, ... and `n`.
pub fn segment_ends(n: usize) -> Vec<usize> {
    let mut ends = Vec::new();
    let (mut end, mut len) = (0usize, 20usize);
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
        Ok(Box::new(WordcraftEnv::new(
            self.book.clone(),
            task.clone(),
            self.distractors,
            self.max_combinations,
            mix(seed, salt),
        )?))
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
}

/// Runs `method` for one seed on Wordcraft (see [`run_seed_on`]).
pub fn run_seed(method: Method, e: &mut Experiment<'_>) -> AgentResult<SeedResult> {
    let mut tasks = WordcraftTasks {
        book: e.book.clone(),
        train: e.train,
        test: e.test,
        distractors: e.distractors,
        max_combinations: e.max_combinations,
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
    };
    run_seed_on(method, &mut run, &mut tasks)
}

/// Test success of `db` as of commit `as_of`, with a fresh policy seeded from the
/// experiment seed (the same for every call, so points are comparable). Returns the rate
/// and the outcome per test task.
fn evaluate(
    e: &mut Run<'_>,
    tasks: &mut dyn Tasks,
    db: &Database,
    as_of: Option<u64>,
    done: &mut usize,
    total: usize,
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
        let mut env = tasks.open(Part::Test, j, e.seed)?;
        let r = run_episode(db, e.embedder, policy.as_mut(), env.as_mut(), &opts)?;
        outcomes.push(r.success);
        *done += 1;
        (e.progress)(*done, total);
    }
    let rate = outcomes.iter().filter(|&&o| o).count() as f64 / outcomes.len().max(1) as f64;
    Ok((rate, outcomes))
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
    for i in 0..n_members {
        let dir = e.dir.join(format!("db-{i}"));
        let db = open_db(&dir, e.embedder)?;
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
        segment_ends(train_len)
    } else {
        vec![train_len]
    };
    let mut seg_success = vec![0usize; n_members];
    let mut total_success = vec![0usize; n_members];
    let mut forks = 0;
    let mut next_end = 0;
    for i in 0..train_len {
        for (m, member) in members.iter_mut().enumerate() {
            let mut env = tasks.open(Part::Train, i, e.seed)?;
            let Member { dir, db, policy } = member;
            let db = db
                .as_ref()
                .ok_or_else(|| AgentError::Env(format!("database {} is closed", dir.display())))?;
            let r = run_episode(db, e.embedder, policy.as_mut(), env.as_mut(), &opts)?;
            if r.success {
                seg_success[m] += 1;
                total_success[m] += 1;
            } else if e.hindsight {
                env.finish()?;
                store_relabelled(db, e.embedder, env.as_ref(), &r.trajectory, r.stored)?;
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
            curated = curate_ids(&members, &train_ids[..train_len], &dir, e.embedder)?;
            (&curated, dir)
        } else {
            (members[best].db()?, members[best].dir.clone())
        };
    final_db.sync()?;

    // Scaling curve through as-of views of the final database.
    let mut successes: Vec<u64> = Vec::new();
    for (id, seq) in final_db.commit_points() {
        if final_db.get(id)?.outcome.success == Some(true) {
            successes.push(seq);
        }
    }
    let mut curve = Vec::new();
    let (before, _) = evaluate(e, tasks, final_db, Some(0), &mut done, total)?;
    curve.push((0, before));
    let checkpoints: Vec<usize> = e
        .checkpoints
        .iter()
        .copied()
        .filter(|&c| c > 0 && c < successes.len())
        .collect();
    for c in checkpoints {
        let (rate, _) = evaluate(e, tasks, final_db, Some(successes[c - 1]), &mut done, total)?;
        curve.push((c, rate));
    }
    let (after, outcomes) = evaluate(e, tasks, final_db, None, &mut done, total)?;
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
    })
}

/// Exemplar curation: for each training task (and each hindsight goal), the successful
/// trajectory with the highest Q across `members` (a trajectory never retrieved in a
/// labelled episode has no Q and ranks below any measured Q; ties keep the earlier member
/// and the earlier trajectory), copied into a new database at `dir` in task order.
pub fn curate(
    members: &[impl AsDb],
    train: &[Task],
    book: &RecipeBook,
    dir: &Path,
    embedder: &dyn Embedder,
) -> AgentResult<Database> {
    let order: Vec<String> = train.iter().map(|t| wordcraft_task_id(book, t)).collect();
    curate_ids(members, &order, dir, embedder)
}

/// [`curate`] for any environment: `train` are the training task ids in order.
pub fn curate_ids(
    members: &[impl AsDb],
    train: &[String],
    dir: &Path,
    embedder: &dyn Embedder,
) -> AgentResult<Database> {
    let mut order: Vec<String> = train.to_vec();
    let best = select_exemplars(members, &mut order)?;
    let out = open_db(dir, embedder)?;
    let emb = embedder.id();
    let mut seen = std::collections::HashSet::new();
    for task in order {
        if !seen.insert(task.clone()) {
            continue;
        }
        let Some(&(q, m, id)) = best.get(&task) else {
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

/// The choice of [`curate_ids`]: for each task, the successful trajectory (current outcome
/// success) with the highest Q (`Utility::q`, METHOD.md §4) across `members`, as (Q, member
/// index, id). A trajectory without Q (never retrieved in a labelled episode) counts as
/// Q = -1, below any measured Q; ties keep the earlier member and, within a member, the
/// trajectory committed first (`Database::ids` order). A relabelled (hindsight) trajectory's
/// task not seen before is appended to `order`.
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
