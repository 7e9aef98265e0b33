//! The method end to end on top of the engine: environments, LLM plug-ins, the ReAct agent
//! with retrieval at three stages, the bootstrapping and curation methods, and the
//! task-success predictor.
//!
//! This crate is a thin client of [`trajdb::Database`]: every retrieval goes through
//! [`trajdb::Database::retrieve`], every usage count through the episode log
//! ([`trajdb::Database::begin_episode`], [`trajdb::Database::log_retrievals`],
//! [`trajdb::Database::set_episode_outcome`]).
//!
//! Plug-ins:
//! - [`Llm`]: chat messages in, text out ([`openai::OpenAiClient`] implements it);
//! - [`trajdb::Embedder`]: text to keys (the built-in [`trajdb::HashEmbedder`] by default);
//! - [`Environment`]: a text environment ([`wordcraft::WordcraftEnv`] implements it, and
//!   [`protocol::ProtocolEpisode`] for any child process speaking the environment protocol).
//!
//! The agent talks to a [`policy::Policy`]: [`policy::LlmPolicy`] turns each stage into a
//! prompt with the retrieved examples as demonstrations; [`policy::OfflinePolicy`] is a
//! Wordcraft-specific non-LLM stand-in that imitates retrieved recipes, and
//! [`imitation::ImitationPolicy`] a generic non-LLM stand-in that copies retrieved examples'
//! actions among the admissible ones, for runs without a model.

use std::fmt;

pub mod bootstrap;
pub mod embedders;
pub mod imitation;
pub mod methods;
pub mod minilm;
pub mod openai;
pub mod policy;
pub mod predict;
pub mod protocol;
pub mod react;
pub mod report;
pub mod wordcraft;

use openai::{ChatMessage, LlmError, OpenAiClient};
use wordcraft::{ActionError, Interface, RecipeError, WordcraftEnv};

/// Why an agent run failed. `Display` is one line saying what and where.
#[derive(Debug)]
#[non_exhaustive]
pub enum AgentError {
    /// The database refused an operation.
    Db(trajdb::Error),
    /// The language model could not be reached or answered badly.
    Llm(LlmError),
    /// An input file (an environment's data file, for example Wordcraft's recipe file)
    /// could not be read or parsed.
    InputFile {
        /// What kind of file, e.g. `recipe file`.
        kind: &'static str,
        /// The file.
        path: String,
        /// What is wrong with it.
        what: String,
    },
    /// A file-system operation of the agent's own (not the database's) failed.
    Io {
        /// What was being done, e.g. `remove`.
        op: &'static str,
        /// The path it was done on.
        path: String,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// The environment failed (not a refused action: those cost a step).
    Env(String),
    /// A protocol environment (a child process, see [`protocol`]) failed.
    Protocol(protocol::ProtocolError),
    /// More tasks failed with errors than the run tolerates (`--max-failures`).
    TooManyFailures {
        /// Tasks failed so far.
        failed: usize,
        /// Failures tolerated.
        max: usize,
        /// The last task's error.
        last: String,
    },
    /// The MiniLM embedder could not be made (its model folder, or a build without it).
    Embedder(minilm::MiniLmError),
    /// An argument or option is invalid.
    Invalid {
        /// Which argument.
        at: String,
        /// What is wrong with it.
        what: String,
    },
}

impl AgentError {
    /// An invalid-argument error.
    pub fn invalid(at: impl Into<String>, what: impl Into<String>) -> Self {
        AgentError::Invalid {
            at: at.into(),
            what: what.into(),
        }
    }
}

impl fmt::Display for AgentError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AgentError::Db(e) => write!(f, "database: {e}"),
            AgentError::Llm(e) => write!(f, "language model: {e}"),
            AgentError::InputFile { kind, path, what } => write!(f, "{kind} {path}: {what}"),
            AgentError::Io { op, path, source } => write!(f, "{op} {path}: {source}"),
            AgentError::Env(e) => write!(f, "environment: {e}"),
            AgentError::Protocol(e) => write!(f, "environment: {e}"),
            AgentError::TooManyFailures { failed, max, last } => write!(
                f,
                "{failed} tasks failed, more than the {max} tolerated (--max-failures); last: {last}"
            ),
            AgentError::Embedder(e) => write!(f, "{e}"),
            AgentError::Invalid { at, what } => write!(f, "{at}: {what}"),
        }
    }
}

impl std::error::Error for AgentError {}

impl From<trajdb::Error> for AgentError {
    fn from(e: trajdb::Error) -> Self {
        AgentError::Db(e)
    }
}

impl From<minilm::MiniLmError> for AgentError {
    fn from(e: minilm::MiniLmError) -> Self {
        AgentError::Embedder(e)
    }
}

impl From<LlmError> for AgentError {
    fn from(e: LlmError) -> Self {
        AgentError::Llm(e)
    }
}

impl From<protocol::ProtocolError> for AgentError {
    fn from(e: protocol::ProtocolError) -> Self {
        AgentError::Protocol(e)
    }
}

impl From<RecipeError> for AgentError {
    fn from(e: RecipeError) -> Self {
        AgentError::Env(e.to_string())
    }
}

/// Result alias of the agent module.
pub type AgentResult<T> = std::result::Result<T, AgentError>;

/// A chat model: messages in, the reply text out.
pub trait Llm {
    /// The model's reply to `messages`, within `limits` (stop sequences, token bound).
    fn complete(
        &mut self,
        messages: &[ChatMessage],
        limits: &policy::CallLimits,
    ) -> AgentResult<String>;
}

impl Llm for OpenAiClient {
    fn complete(
        &mut self,
        messages: &[ChatMessage],
        limits: &policy::CallLimits,
    ) -> AgentResult<String> {
        Ok(self.chat_limited(messages, &limits.stop, limits.max_tokens)?)
    }
}

/// A sub-goal achieved during an episode, for hindsight relabelling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Achieved {
    /// The goal text it accomplishes, e.g. `create steam`.
    pub goal: String,
    /// A short name for the task id of a relabelled trajectory.
    pub name: String,
    /// Steps `[start, end)` that accomplished it.
    pub steps: (usize, usize),
}

/// A text environment constructed for one task.
pub trait Environment {
    /// The environment's name, stored with every trajectory (e.g. `wordcraft`).
    fn name(&self) -> &str;
    /// A stable identifier of the task.
    fn task_id(&self) -> String;
    /// The goal text.
    fn goal(&self) -> String;
    /// The task's category, if the environment has categories.
    fn category(&self) -> Option<String> {
        None
    }
    /// What the agent sees now.
    fn observation(&self) -> String;
    /// The admissible actions now, when the environment knows them (given to the policy
    /// and shown in the LLM prompt). By default unknown.
    fn actions(&self) -> Option<Vec<String>> {
        None
    }
    /// A description of the action syntax for the agent's prompt, when the environment has
    /// one (Wordcraft does; a protocol environment lists its admissible actions instead).
    /// By default none.
    fn action_space(&self) -> Option<String> {
        None
    }
    /// The reward of the last step, if the environment gives rewards. By default none.
    fn reward(&self) -> Option<f64> {
        None
    }
    /// Takes an action. A refused action is not an error: it costs the step and the
    /// environment says so in the next observation or simply does nothing.
    fn step(&mut self, action: &str) -> AgentResult<()>;
    /// Whether the episode has ended.
    fn done(&self) -> bool;
    /// Whether the goal was reached.
    fn success(&self) -> bool;
    /// Called once after an episode, before [`Environment::achievements`] is read, when
    /// hindsight relabelling wants them; an environment that must ask for its sub-goals (a
    /// protocol environment) does it here. By default nothing.
    fn finish(&mut self) -> AgentResult<()> {
        Ok(())
    }
    /// Sub-goals achieved so far with the steps that achieved them (empty when the
    /// environment cannot tell).
    fn achievements(&self) -> Vec<Achieved> {
        Vec::new()
    }
    /// `text` (an observation of this episode) rewritten as if the goal were `goal`; used
    /// when relabelling. By default unchanged.
    fn relabel(&self, text: &str, _goal: &str) -> String {
        text.to_owned()
    }
}

/// Task id of a Wordcraft task: `wordcraft-` and a 64-bit FNV-1a hash of its recipe tree
/// (goal and tree recipes by name), in hex. Stable across runs, unique per tree, and opaque:
/// the id is stored in every trajectory and exported (e.g. in chat data), so it must not
/// spell out the recipes that solve the task.
pub fn wordcraft_task_id(book: &wordcraft::RecipeBook, task: &wordcraft::Task) -> String {
    let name = |id: u32| book.name(id).unwrap_or("?");
    let tree = task
        .recipes
        .iter()
        .map(|&(a, b, r)| format!("{}={}+{}", name(r), name(a), name(b)))
        .collect::<Vec<_>>()
        .join(";");
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    for b in tree.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("wordcraft-{h:016x}")
}

impl Environment for WordcraftEnv {
    fn name(&self) -> &str {
        "wordcraft"
    }

    fn task_id(&self) -> String {
        wordcraft_task_id(self.book(), self.task())
    }

    /// [`WordcraftEnv::goal_text`].
    fn goal(&self) -> String {
        self.goal_text()
    }

    fn observation(&self) -> String {
        WordcraftEnv::observation(self)
    }

    /// `select NAME` for each table entity ([`Interface::Select`]); none with
    /// [`Interface::Combine`] (its actions are pairs, described by `action_space`).
    fn actions(&self) -> Option<Vec<String>> {
        (self.interface() == Interface::Select).then(|| self.valid_actions())
    }

    fn action_space(&self) -> Option<String> {
        Some(WordcraftEnv::action_space(self).to_owned())
    }

    /// With [`Interface::Select`] a refused action (unknown entity, bad syntax) wastes a
    /// combination (see [`WordcraftEnv::skip_step`]); with [`Interface::Combine`] it costs
    /// nothing, as in the reference (the agent's step limit still counts it).
    fn step(&mut self, action: &str) -> AgentResult<()> {
        match WordcraftEnv::step(self, action) {
            Ok(_) => Ok(()),
            Err(ActionError::EpisodeOver) => Ok(()),
            Err(_) if self.interface() == Interface::Combine => Ok(()),
            Err(_) => match self.skip_step() {
                Ok(_) | Err(ActionError::EpisodeOver) => Ok(()),
                Err(e) => Err(AgentError::Env(e.to_string())),
            },
        }
    }

    fn done(&self) -> bool {
        WordcraftEnv::done(self)
    }

    fn success(&self) -> bool {
        WordcraftEnv::success(self)
    }

    fn achievements(&self) -> Vec<Achieved> {
        WordcraftEnv::achievements(self)
            .into_iter()
            .map(|a| Achieved {
                goal: self.goal_text_for(&a.entity),
                name: a.entity,
                steps: (a.first_step, a.last_step + 1),
            })
            .collect()
    }

    /// Replaces the `Goal: create ...` line.
    fn relabel(&self, text: &str, goal: &str) -> String {
        match text.split_once('\n') {
            Some((first, rest)) if first.starts_with("Goal:") => format!("Goal: {goal}\n{rest}"),
            _ => text.to_owned(),
        }
    }
}
