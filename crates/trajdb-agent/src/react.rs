//! The ReAct loop with retrieval at three stages (plan, then reason and act per step):
//!
//! ```text
//! plan    = plan(goal, retrieve(goal [+ category]))
//! loop until env.done:
//!     obs     = env.observation()
//!     thought = reason(goal, plan, obs, retrieve(goal + plan, step key observation = obs))
//!     action  = act(goal, plan, obs, thought, retrieve(goal + plan, step key reasoning = thought))
//!     env.step(action)
//! ```
//!
//! Reasoning retrieval ([`ReasonRetrieval`]): the reference agent retrieves for reasoning
//! once, at the first step (keyed on the observation), and from the second step on reasons
//! with the examples the previous acting stage retrieved ([`ReasonRetrieval::FirstStep`],
//! the default); [`ReasonRetrieval::EveryStep`] retrieves on the observation at every step.
//!
//! Every retrieval goes through [`Database::retrieve`] and, when the episode is logged, each
//! retrieved example is logged once per retrieval call with its matched step and stage.

use crate::policy::{Context, Policy};
use crate::{AgentResult, Environment};
use trajdb::{
    Database, Embedder, Example, Filter, Level, Metric, Outcome, Provenance, ProvenanceKind,
    RetrievalEvent, RetrieveQuery, SpaceDef, Stage, Step, Trajectory,
};

/// Trajectory-level key spaces.
pub const TRAJ_KEYS: [&str; 3] = ["goal", "category", "plan"];
/// Step-level key spaces.
pub const STEP_KEYS: [&str; 3] = ["observation", "reasoning", "action"];

/// Creates the six key spaces (cosine, recording the embedder) if they do not exist.
pub fn ensure_spaces(db: &Database, embedder: &dyn Embedder) -> AgentResult<()> {
    let id = embedder.id();
    for (names, level) in [(TRAJ_KEYS, Level::Trajectory), (STEP_KEYS, Level::Step)] {
        for name in names {
            db.create_space(
                &SpaceDef::new(name, level, id.dims, Metric::Cosine).with_embedder(id.clone()),
            )?;
        }
    }
    Ok(())
}

/// Which stages retrieve examples.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stages {
    /// Planning retrieves (keyed on goal and category).
    pub plan: bool,
    /// Reasoning retrieves (keyed on goal and plan, step-matched on the observation).
    pub reason: bool,
    /// Acting retrieves (keyed on goal and plan, step-matched on the thought).
    pub act: bool,
}

impl Default for Stages {
    /// All three.
    fn default() -> Self {
        Stages {
            plan: true,
            reason: true,
            act: true,
        }
    }
}

/// When the reasoning stage retrieves (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ReasonRetrieval {
    /// At the first step only (keyed on the observation); later steps reuse the acting
    /// stage's examples of the step before (the reference agent).
    #[default]
    FirstStep,
    /// At every step, keyed on the current observation.
    EveryStep,
}

/// What to store after an episode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Store {
    /// Nothing (evaluation).
    Nothing,
    /// Successful trajectories only (the method).
    #[default]
    Successes,
    /// Every trajectory, with its outcome; failures are kept out of retrieval by the
    /// success filter (needed by the task-success predictor).
    All,
}

/// `embedder.embed(text)`, except that a text with nothing to embed (empty, or only
/// punctuation or emoji, [`trajdb::Error::NothingToEmbed`]) gets the unit vector on dimension
/// 0: the agent stores a key for every step, and a thought or plan may be empty. Such keys
/// match each other exactly; the agent accepts that for its own steps.
pub(crate) fn embed_text(embedder: &dyn Embedder, text: &str) -> trajdb::Result<Vec<f32>> {
    match embedder.embed(text) {
        Err(trajdb::Error::NothingToEmbed { .. }) => {
            let mut v = vec![0f32; usize::try_from(embedder.id().dims).unwrap_or(0)];
            if let Some(x) = v.first_mut() {
                *x = 1.0;
            }
            Ok(v)
        }
        r => r,
    }
}

/// Options of one episode.
#[derive(Debug, Clone)]
pub struct AgentOptions {
    /// Examples per retrieval. Default 10 (the reference's Wordcraft setting).
    pub k: usize,
    /// Steps on each side of the matched step. Default 5.
    pub window: usize,
    /// Which stages retrieve. Default: all.
    pub stages: Stages,
    /// When reasoning retrieves. Default: at the first step (the reference).
    pub reason_retrieval: ReasonRetrieval,
    /// What to store. Default: successes.
    pub store: Store,
    /// Log retrievals and the outcome as an episode. Default true; evaluation runs turn it
    /// off so measuring does not change the usage counters.
    pub log_usage: bool,
    /// Read the database as of this commit (None: now). Default None.
    pub as_of: Option<u64>,
    /// Safety bound on actions per episode. Default 64.
    pub max_steps: usize,
}

impl Default for AgentOptions {
    fn default() -> Self {
        AgentOptions {
            k: 10,
            window: 5,
            stages: Stages::default(),
            reason_retrieval: ReasonRetrieval::FirstStep,
            store: Store::Successes,
            log_usage: true,
            as_of: None,
            max_steps: 64,
        }
    }
}

/// What one episode did.
#[derive(Debug, Clone)]
pub struct EpisodeResult {
    /// The episode id in the usage log (None when not logged).
    pub episode: Option<u64>,
    /// Whether the goal was reached.
    pub success: bool,
    /// Id of the stored trajectory, if stored.
    pub stored: Option<u64>,
    /// The trajectory (with keys).
    pub trajectory: Trajectory,
    /// Retrieval calls made.
    pub retrieval_calls: usize,
    /// Examples retrieved over all calls.
    pub examples_retrieved: usize,
}

/// Runs one episode. `db` is read for retrieval and written for the usage log and storage.
pub fn run_episode(
    db: &Database,
    embedder: &dyn Embedder,
    policy: &mut dyn Policy,
    env: &mut dyn Environment,
    opts: &AgentOptions,
) -> AgentResult<EpisodeResult> {
    let emb_id = embedder.id();
    let goal = env.goal();
    let category = env.category();
    let goal_v = embed_text(embedder, &goal)?;
    let cat_v = match &category {
        Some(c) => Some(embed_text(embedder, c)?),
        None => None,
    };
    let episode = if opts.log_usage {
        Some(db.begin_episode()?)
    } else {
        None
    };
    let mut calls = 0usize;
    let mut retrieved = 0usize;
    let mut retrieve = |keys: Vec<(String, Vec<f32>)>,
                        step_key: Option<(String, Vec<f32>)>,
                        stage: Stage|
     -> AgentResult<Vec<Example>> {
        let ex = db.retrieve(&RetrieveQuery {
            keys,
            step_key,
            k: opts.k,
            window: opts.window,
            filter: Filter {
                success_only: true,
                as_of: opts.as_of,
                ..Default::default()
            },
            embedder: Some(emb_id.clone()),
        })?;
        calls += 1;
        retrieved += ex.len();
        if let Some(ep) = episode {
            let events: Vec<RetrievalEvent> = ex
                .iter()
                .map(|e| RetrievalEvent {
                    id: e.id,
                    step: e.matched_step,
                    stage,
                })
                .collect();
            db.log_retrievals(ep, &events)?;
        }
        Ok(ex)
    };

    // Plan.
    let mut plan_keys = vec![("goal".to_owned(), goal_v.clone())];
    if let Some(v) = &cat_v {
        plan_keys.push(("category".to_owned(), v.clone()));
    }
    let plan_examples = if opts.stages.plan {
        retrieve(plan_keys, None, Stage::Plan)?
    } else {
        Vec::new()
    };
    let action_space = env.action_space();
    let plan = policy.plan(&Context {
        goal: &goal,
        category: category.as_deref(),
        plan: "",
        observation: "",
        thought: "",
        actions: None,
        action_space: action_space.as_deref(),
        history: &[],
        examples: &plan_examples,
    })?;
    let plan_v = embed_text(embedder, &plan)?;
    let step_traj_keys = || {
        let mut k = vec![
            ("goal".to_owned(), goal_v.clone()),
            ("plan".to_owned(), plan_v.clone()),
        ];
        if let Some(v) = &cat_v {
            k.push(("category".to_owned(), v.clone()));
        }
        k
    };

    let mut steps: Vec<Step> = Vec::new();
    let mut obs_keys = Vec::new();
    let mut reason_keys = Vec::new();
    let mut action_keys = Vec::new();
    // The acting stage's examples of the step before (reused for reasoning, FirstStep).
    let mut last_act_examples: Option<Vec<Example>> = None;
    while !env.done() && steps.len() < opts.max_steps {
        let obs = env.observation();
        let actions = env.actions();
        let obs_v = embed_text(embedder, &obs)?;
        let reuse = match (opts.reason_retrieval, last_act_examples.take()) {
            (ReasonRetrieval::FirstStep, Some(ex)) if opts.stages.act => Some(ex),
            _ => None,
        };
        let reason_examples = match reuse {
            Some(ex) => ex,
            None if opts.stages.reason => retrieve(
                step_traj_keys(),
                Some(("observation".into(), obs_v.clone())),
                Stage::Reason,
            )?,
            None => Vec::new(),
        };
        let thought = policy.reason(&Context {
            goal: &goal,
            category: category.as_deref(),
            plan: &plan,
            observation: &obs,
            thought: "",
            actions: actions.as_deref(),
            action_space: action_space.as_deref(),
            history: &steps,
            examples: &reason_examples,
        })?;
        let thought_v = embed_text(embedder, &thought)?;
        let act_examples = if opts.stages.act {
            retrieve(
                step_traj_keys(),
                Some(("reasoning".into(), thought_v.clone())),
                Stage::Act,
            )?
        } else {
            Vec::new()
        };
        let action = policy.act(&Context {
            goal: &goal,
            category: category.as_deref(),
            plan: &plan,
            observation: &obs,
            thought: &thought,
            actions: actions.as_deref(),
            action_space: action_space.as_deref(),
            history: &steps,
            examples: &act_examples,
        })?;
        last_act_examples = Some(act_examples);
        let action_v = embed_text(embedder, &action)?;
        env.step(&action)?;
        steps.push(Step {
            observation: obs,
            reasoning: thought,
            action,
            reward: env.reward(),
        });
        obs_keys.push(obs_v);
        reason_keys.push(thought_v);
        action_keys.push(action_v);
    }
    let success = env.success();
    if let Some(ep) = episode {
        db.set_episode_outcome(ep, Some(success))?;
    }
    let mut t = Trajectory {
        task: env.task_id(),
        env: env.name().to_owned(),
        category: category.clone(),
        goal: goal.clone(),
        plan,
        steps,
        final_observation: env.observation(),
        outcome: Outcome {
            success: Some(success),
            reward: Some(if success { 1.0 } else { 0.0 }),
        },
        provenance: Provenance {
            kind: ProvenanceKind::SelfGenerated,
            parent: None,
            steps: None,
            origin: None,
        },
        ..Default::default()
    };
    if let Some(ep) = episode {
        t.meta.insert("episode".into(), ep.to_string());
    }
    t.meta.insert("steps".into(), t.steps.len().to_string());
    t.meta.insert("retrieval_calls".into(), calls.to_string());
    for (k, v) in policy.take_notes() {
        t.meta.insert(k, v);
    }
    t.keys.insert("goal".into(), goal_v);
    t.keys.insert("plan".into(), plan_v);
    if let Some(v) = cat_v {
        t.keys.insert("category".into(), v);
    }
    if !t.steps.is_empty() {
        t.step_keys.insert("observation".into(), obs_keys);
        t.step_keys.insert("reasoning".into(), reason_keys);
        t.step_keys.insert("action".into(), action_keys);
    }
    let store = match opts.store {
        Store::Nothing => false,
        Store::Successes => success,
        Store::All => true,
    };
    let stored = if store {
        Some(db.append_as(&t, Some(&emb_id))?)
    } else {
        None
    };
    Ok(EpisodeResult {
        episode,
        success,
        stored,
        trajectory: t,
        retrieval_calls: calls,
        examples_retrieved: retrieved,
    })
}

/// Appends `t` with every key computed by `embedder` (goal, plan, category when given; the
/// observation, reasoning and action of each step), `meta["steps"]` set to its step count.
/// Used for starter trajectories, which come without keys. Returns the id.
pub fn append_with_keys(
    db: &Database,
    embedder: &dyn Embedder,
    t: &Trajectory,
) -> AgentResult<u64> {
    let mut t = t.clone();
    t.keys.clear();
    t.step_keys.clear();
    t.meta.insert("steps".into(), t.steps.len().to_string());
    t.keys.insert("goal".into(), embed_text(embedder, &t.goal)?);
    t.keys.insert("plan".into(), embed_text(embedder, &t.plan)?);
    if let Some(c) = &t.category {
        t.keys.insert("category".into(), embed_text(embedder, c)?);
    }
    if !t.steps.is_empty() {
        let mut obs = Vec::new();
        let mut rea = Vec::new();
        let mut act = Vec::new();
        for st in &t.steps {
            obs.push(embed_text(embedder, &st.observation)?);
            rea.push(embed_text(embedder, &st.reasoning)?);
            act.push(embed_text(embedder, &st.action)?);
        }
        t.step_keys.insert("observation".into(), obs);
        t.step_keys.insert("reasoning".into(), rea);
        t.step_keys.insert("action".into(), act);
    }
    Ok(db.append_as(&t, Some(&embedder.id()))?)
}

/// Hindsight relabelling: for each sub-goal `env` achieved other than its own goal, a
/// successful trajectory for that sub-goal made of the steps that achieved it (observations
/// rewritten to the new goal through [`Environment::relabel`], keys recomputed), with
/// provenance `Relabelled`, `parent` = `parent` (the stored failed trajectory, or None when
/// failures are not stored) and the step range. Stored with `append_as`; returns the ids.
pub fn store_relabelled(
    db: &Database,
    embedder: &dyn Embedder,
    env: &dyn Environment,
    episode: &Trajectory,
    parent: Option<u64>,
) -> AgentResult<Vec<u64>> {
    let emb_id = embedder.id();
    let mut ids = Vec::new();
    for a in env.achievements() {
        if a.goal == episode.goal {
            continue;
        }
        let (s, e) = a.steps;
        let Some(slice) = episode.steps.get(s..e) else {
            continue;
        };
        if slice.is_empty() {
            continue;
        }
        let steps: Vec<Step> = slice
            .iter()
            .map(|st| Step {
                observation: env.relabel(&st.observation, &a.goal),
                reasoning: st.reasoning.clone(),
                action: st.action.clone(),
                reward: st.reward,
            })
            .collect();
        let plan = format!(
            "{}: repeat the {} selections that made it.",
            a.goal,
            steps.len()
        );
        let mut t = Trajectory {
            task: format!("hindsight:{}", a.name),
            env: episode.env.clone(),
            category: episode.category.clone(),
            goal: a.goal.clone(),
            plan,
            final_observation: env.relabel(
                episode
                    .steps
                    .get(e)
                    .map_or(&episode.final_observation, |x| &x.observation),
                &a.goal,
            ),
            outcome: Outcome {
                success: Some(true),
                reward: Some(1.0),
            },
            provenance: Provenance {
                kind: ProvenanceKind::Relabelled,
                parent,
                steps: Some((
                    u32::try_from(s).unwrap_or(u32::MAX),
                    u32::try_from(e).unwrap_or(u32::MAX),
                )),
                origin: None,
            },
            steps,
            ..Default::default()
        };
        t.meta.insert("steps".into(), t.steps.len().to_string());
        t.keys.insert("goal".into(), embed_text(embedder, &t.goal)?);
        t.keys.insert("plan".into(), embed_text(embedder, &t.plan)?);
        let mut obs = Vec::new();
        let mut rea = Vec::new();
        let mut act = Vec::new();
        for st in &t.steps {
            obs.push(embed_text(embedder, &st.observation)?);
            rea.push(embed_text(embedder, &st.reasoning)?);
            act.push(embed_text(embedder, &st.action)?);
        }
        t.step_keys.insert("observation".into(), obs);
        t.step_keys.insert("reasoning".into(), rea);
        t.step_keys.insert("action".into(), act);
        ids.push(db.append_as(&t, Some(&emb_id))?);
    }
    Ok(ids)
}
