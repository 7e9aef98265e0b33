//! The data model (trajectories, steps, outcomes, provenance, key-space definitions) and the
//! byte layout of every log record payload (see `format-spec.md`, "Record payloads").

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::format::codec::{Dec, DecResult, DecodeError, Enc};
use crate::format::log::PROVENANCE_ORIGIN_BIT;

/// Largest key-space dimensions.
pub(crate) const MAX_DIMS: u32 = 65_536;
/// Longest key-space name, in bytes.
pub(crate) const MAX_SPACE_NAME: usize = 256;

/// Step index written for a trajectory-level key or a retrieval of a whole trajectory.
pub(crate) const NO_STEP: u32 = u32::MAX;

/// One step of a trajectory: what the agent saw, thought and did.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Step {
    /// Observation text before the step.
    #[serde(default)]
    pub observation: String,
    /// The agent's reasoning (thought).
    #[serde(default)]
    pub reasoning: String,
    /// The action taken.
    #[serde(default)]
    pub action: String,
    /// Reward received for the step, if any.
    #[serde(default)]
    pub reward: Option<f64>,
}

/// How a trajectory ended.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Outcome {
    /// `Some(true)` success, `Some(false)` failure, `None` not yet known.
    #[serde(default)]
    pub success: Option<bool>,
    /// Final reward, if any.
    #[serde(default)]
    pub reward: Option<f64>,
}

/// Where a trajectory came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ProvenanceKind {
    /// Produced by the agent itself.
    #[default]
    SelfGenerated,
    /// Imported from outside.
    Imported,
    /// Relabelled from a sub-sequence of another trajectory (hindsight).
    Relabelled,
}

impl ProvenanceKind {
    pub(crate) fn code(self) -> u8 {
        match self {
            ProvenanceKind::SelfGenerated => 0,
            ProvenanceKind::Imported => 1,
            ProvenanceKind::Relabelled => 2,
        }
    }
    pub(crate) fn from_code(c: u8) -> Option<Self> {
        match c {
            0 => Some(ProvenanceKind::SelfGenerated),
            1 => Some(ProvenanceKind::Imported),
            2 => Some(ProvenanceKind::Relabelled),
            _ => None,
        }
    }
}

/// Where a trajectory or an episode was first written: the origin id of that database and
/// the id it had there. Unique across databases: origin ids are random 64-bit numbers drawn
/// when a database is created (or forked), and ids are unique within one origin.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize,
)]
#[serde(deny_unknown_fields)]
pub struct Origin {
    /// Origin id of the database it was first written to.
    pub db: u64,
    /// Its id in that database.
    pub id: u64,
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:016x}:{}", self.db, self.id)
    }
}

/// Provenance: kind, for relabelled trajectories the parent and the step range taken, and
/// for trajectories merged from another database, where they were first written.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Provenance {
    /// Where the trajectory came from.
    #[serde(default)]
    pub kind: ProvenanceKind,
    /// The trajectory it was derived from.
    #[serde(default)]
    pub parent: Option<u64>,
    /// Steps `[start, end)` of the parent that it was made from.
    #[serde(default)]
    pub steps: Option<(u32, u32)>,
    /// Set when the trajectory came from another database by
    /// [`Database::merge_from`](crate::Database::merge_from): the origin id of the database
    /// it was first written to and its id there. `None` for a trajectory written here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<Origin>,
}

/// A stored trajectory, with its keys (embedding vectors) by key-space name.
///
/// The JSON form is the JSONL record format of `trajdb import` and `trajdb export`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Trajectory {
    /// Unique id; assigned on append when absent.
    #[serde(default)]
    pub id: Option<u64>,
    /// Task identifier.
    #[serde(default)]
    pub task: String,
    /// Environment name.
    #[serde(default)]
    pub env: String,
    /// Optional task category.
    #[serde(default)]
    pub category: Option<String>,
    /// The goal text.
    pub goal: String,
    /// The plan text.
    #[serde(default)]
    pub plan: String,
    /// The steps, in order.
    #[serde(default)]
    pub steps: Vec<Step>,
    /// The observation after the last step.
    #[serde(default)]
    pub final_observation: String,
    /// How it ended.
    #[serde(default)]
    pub outcome: Outcome,
    /// Free metadata.
    #[serde(default)]
    pub meta: BTreeMap<String, String>,
    /// Where it came from.
    #[serde(default)]
    pub provenance: Provenance,
    /// Creation time, milliseconds since the Unix epoch; set on append when 0.
    #[serde(default)]
    pub created_ms: i64,
    /// Trajectory-level keys: key-space name to vector.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub keys: BTreeMap<String, Vec<f32>>,
    /// Step-level keys: key-space name to one vector per step.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub step_keys: BTreeMap<String, Vec<Vec<f32>>>,
}

/// Whether a key space holds one key per trajectory or one per step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Level {
    /// One key per trajectory (goal, category, plan).
    Trajectory,
    /// One key per step (observation, reasoning, action).
    Step,
}

/// How similarity is measured. Scores are similarities: higher is better.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    /// Cosine similarity in [-1, 1].
    Cosine,
    /// Inner product.
    Dot,
    /// Negative Euclidean distance.
    L2,
}

/// Element type of the stored vectors. Only `F32` is written today; the format reserves codes
/// for narrower types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ElemType {
    /// 32-bit IEEE float.
    F32,
}

/// Which embedder produced a key space's vectors.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct EmbedderId {
    /// Embedder name, e.g. `trajdb-hash` or a model name.
    pub name: String,
    /// Version string; a change of version is a different embedder.
    pub version: String,
    /// Output dimensions.
    pub dims: u32,
}

impl std::fmt::Display for EmbedderId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}@{} ({} dims)", self.name, self.version, self.dims)
    }
}

/// A key space: named, at trajectory or step level, with dimensions, metric and element type.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpaceDef {
    /// Name, e.g. `goal` or `observation`.
    pub name: String,
    /// Trajectory or step level.
    pub level: Level,
    /// Vector dimensions.
    pub dims: u32,
    /// Similarity measure.
    pub metric: Metric,
    /// Element type.
    pub elem: ElemType,
    /// The embedder that makes its keys, when recorded.
    pub embedder: Option<EmbedderId>,
}

impl SpaceDef {
    /// An f32 space without a recorded embedder.
    pub fn new(name: impl Into<String>, level: Level, dims: u32, metric: Metric) -> Self {
        SpaceDef {
            name: name.into(),
            level,
            dims,
            metric,
            elem: ElemType::F32,
            embedder: None,
        }
    }

    /// The same space with `embedder` recorded.
    pub fn with_embedder(mut self, embedder: EmbedderId) -> Self {
        self.embedder = Some(embedder);
        self
    }
}

pub(crate) fn level_code(l: Level) -> u8 {
    match l {
        Level::Trajectory => 0,
        Level::Step => 1,
    }
}
pub(crate) fn metric_code(m: Metric) -> u8 {
    match m {
        Metric::Cosine => 0,
        Metric::Dot => 1,
        Metric::L2 => 2,
    }
}
pub(crate) fn elem_code(e: ElemType) -> u8 {
    match e {
        ElemType::F32 => 0,
    }
}
pub(crate) fn metric_from(c: u8) -> Option<Metric> {
    match c {
        0 => Some(Metric::Cosine),
        1 => Some(Metric::Dot),
        2 => Some(Metric::L2),
        _ => None,
    }
}
fn success_code(s: Option<bool>) -> u8 {
    match s {
        Some(false) => 0,
        Some(true) => 1,
        None => 2,
    }
}
fn success_from(d: &mut Dec<'_>) -> DecResult<Option<bool>> {
    match d.u8()? {
        0 => Ok(Some(false)),
        1 => Ok(Some(true)),
        2 => Ok(None),
        c => d.err(format!("outcome code {c} is not 0, 1 or 2")),
    }
}

/// The retrieval stage a usage event was logged for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    /// Planning (keyed on the goal).
    Plan,
    /// Reasoning (keyed on the observation).
    Reason,
    /// Acting (keyed on the thought).
    Act,
    /// Any other use.
    Other,
}

impl Stage {
    fn code(self) -> u8 {
        match self {
            Stage::Plan => 0,
            Stage::Reason => 1,
            Stage::Act => 2,
            Stage::Other => 3,
        }
    }
    fn from_code(d: &mut Dec<'_>) -> DecResult<Self> {
        match d.u8()? {
            0 => Ok(Stage::Plan),
            1 => Ok(Stage::Reason),
            2 => Ok(Stage::Act),
            3 => Ok(Stage::Other),
            c => d.err(format!("stage code {c} is not 0..=3")),
        }
    }
}

/// One retrieval logged in an episode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetrievalEvent {
    /// The trajectory retrieved.
    pub id: u64,
    /// The matched step, if a step was matched.
    pub step: Option<u32>,
    /// The stage that retrieved it.
    pub stage: Stage,
}

/// A decoded log record.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Record {
    Space {
        id: u32,
        def: SpaceDef,
    },
    Trajectory(Box<Trajectory>),
    Delete {
        id: u64,
    },
    EpisodeBegin {
        episode: u64,
        created_ms: i64,
    },
    Retrievals {
        episode: u64,
        events: Vec<RetrievalEvent>,
    },
    EpisodeOutcome {
        episode: u64,
        success: Option<bool>,
    },
    TrajOutcome {
        id: u64,
        outcome: Outcome,
    },
    Origin {
        origin: u64,
    },
    EpisodeMerged {
        episode: u64,
        created_ms: i64,
        origin: Origin,
    },
}

pub(crate) use crate::format::log::kind;

/// A trajectory-level (`step == NO_STEP`) or step-level key, resolved to a space id.
pub(crate) struct EncKey<'a> {
    pub(crate) space: u32,
    pub(crate) step: u32,
    pub(crate) vector: &'a [f32],
}

pub(crate) fn encode_space(id: u32, def: &SpaceDef) -> Vec<u8> {
    let mut e = Enc::default();
    e.u32(id);
    e.u8(level_code(def.level));
    e.u8(metric_code(def.metric));
    e.u8(elem_code(def.elem));
    e.u8(0);
    e.u32(def.dims);
    e.str(&def.name);
    match &def.embedder {
        Some(m) => {
            e.u8(1);
            e.str(&m.name);
            e.str(&m.version);
        }
        None => e.u8(0),
    }
    e.buf
}

/// Encodes a trajectory under `id` with creation time `created_ms` (the fields of `t` of
/// those names are not used) and its keys resolved to spaces.
pub(crate) fn encode_trajectory(
    t: &Trajectory,
    id: u64,
    created_ms: i64,
    keys: &[EncKey<'_>],
) -> Vec<u8> {
    let mut e = Enc::default();
    e.u64(id);
    e.i64(created_ms);
    e.str(&t.task);
    e.str(&t.env);
    e.opt_str(t.category.as_deref());
    e.str(&t.goal);
    e.str(&t.plan);
    e.len(t.steps.len());
    for s in &t.steps {
        e.str(&s.observation);
        e.str(&s.reasoning);
        e.str(&s.action);
        e.opt_f64(s.reward);
    }
    e.str(&t.final_observation);
    e.u8(success_code(t.outcome.success));
    e.opt_f64(t.outcome.reward);
    e.len(t.meta.len());
    for (k, v) in &t.meta {
        e.str(k);
        e.str(v);
    }
    // Bit 7 of the kind byte says that the origin (two u64) follows the step range.
    let origin_bit = if t.provenance.origin.is_some() {
        PROVENANCE_ORIGIN_BIT
    } else {
        0
    };
    e.u8(t.provenance.kind.code() | origin_bit);
    e.opt_u64(t.provenance.parent);
    match t.provenance.steps {
        Some((a, b)) => {
            e.u8(1);
            e.u32(a);
            e.u32(b);
        }
        None => e.u8(0),
    }
    if let Some(o) = t.provenance.origin {
        e.u64(o.db);
        e.u64(o.id);
    }
    e.len(keys.len());
    for k in keys {
        e.u32(k.space);
        e.u32(k.step);
        e.len(k.vector.len());
        e.f32s(k.vector);
    }
    e.buf
}

pub(crate) fn encode_origin(origin: u64) -> Vec<u8> {
    let mut e = Enc::default();
    e.u64(origin);
    e.buf
}

pub(crate) fn encode_episode_merged(episode: u64, created_ms: i64, origin: Origin) -> Vec<u8> {
    let mut e = Enc::default();
    e.u64(episode);
    e.i64(created_ms);
    e.u64(origin.db);
    e.u64(origin.id);
    e.buf
}

pub(crate) fn encode_delete(id: u64) -> Vec<u8> {
    let mut e = Enc::default();
    e.u64(id);
    e.buf
}

pub(crate) fn encode_episode_begin(episode: u64, created_ms: i64) -> Vec<u8> {
    let mut e = Enc::default();
    e.u64(episode);
    e.i64(created_ms);
    e.buf
}

pub(crate) fn encode_retrievals(episode: u64, events: &[RetrievalEvent]) -> Vec<u8> {
    let mut e = Enc::default();
    e.u64(episode);
    e.len(events.len());
    for ev in events {
        e.u64(ev.id);
        e.u32(ev.step.unwrap_or(NO_STEP));
        e.u8(ev.stage.code());
    }
    e.buf
}

pub(crate) fn encode_episode_outcome(episode: u64, success: Option<bool>) -> Vec<u8> {
    let mut e = Enc::default();
    e.u64(episode);
    e.u8(success_code(success));
    e.buf
}

pub(crate) fn encode_traj_outcome(id: u64, outcome: Outcome) -> Vec<u8> {
    let mut e = Enc::default();
    e.u64(id);
    e.u8(success_code(outcome.success));
    e.opt_f64(outcome.reward);
    e.buf
}

/// A trajectory payload read without copying text: what opening a database needs.
pub(crate) struct TrajScan<'a> {
    pub(crate) id: u64,
    pub(crate) created_ms: i64,
    /// The provenance origin of a merged trajectory.
    pub(crate) origin: Option<Origin>,
    pub(crate) task: &'a str,
    pub(crate) env: &'a str,
    pub(crate) success: Option<bool>,
    pub(crate) provenance: ProvenanceKind,
    pub(crate) n_steps: u32,
    /// (space id, step, vector as little-endian f32 bytes) in payload order.
    pub(crate) keys: Vec<(u32, u32, &'a [u8])>,
}

struct Body<'a> {
    id: u64,
    created_ms: i64,
    task: &'a str,
    env: &'a str,
    category: Option<&'a str>,
    goal: &'a str,
    plan: &'a str,
    steps: Vec<(&'a str, &'a str, &'a str, Option<f64>)>,
    final_observation: &'a str,
    outcome: Outcome,
    meta: Vec<(&'a str, &'a str)>,
    provenance: Provenance,
    keys: Vec<(u32, u32, &'a [u8])>,
}

fn decode_body<'a>(d: &mut Dec<'a>) -> DecResult<Body<'a>> {
    let id = d.u64()?;
    let created_ms = d.i64()?;
    let task = d.str()?;
    let env = d.str()?;
    let category = d.opt_str()?;
    let goal = d.str()?;
    let plan = d.str()?;
    // A step is at least 3 string lengths and an option tag.
    let n = d.count(13)?;
    let mut steps = Vec::with_capacity(n);
    for _ in 0..n {
        steps.push((d.str()?, d.str()?, d.str()?, d.opt_f64()?));
    }
    let final_observation = d.str()?;
    let success = success_from(d)?;
    let reward = d.opt_f64()?;
    let n = d.count(8)?;
    let mut meta = Vec::with_capacity(n);
    for _ in 0..n {
        let k = d.str()?;
        if meta.last().is_some_and(|(p, _): &(&str, &str)| *p >= k) {
            return d.err(format!("meta key `{k}` is out of order or repeated"));
        }
        meta.push((k, d.str()?));
    }
    let kind_byte = d.u8()?;
    let kind_code = kind_byte & !PROVENANCE_ORIGIN_BIT;
    let Some(kind) = ProvenanceKind::from_code(kind_code) else {
        return d.err(format!("provenance kind {kind_code} is not 0..=2"));
    };
    let parent = d.opt_u64()?;
    let steps_range = if d.flag()? {
        Some((d.u32()?, d.u32()?))
    } else {
        None
    };
    let origin = if kind_byte & PROVENANCE_ORIGIN_BIT != 0 {
        let db = d.u64()?;
        let id = d.u64()?;
        if db == 0 {
            return d.err("provenance origin id is zero");
        }
        Some(Origin { db, id })
    } else {
        None
    };
    let n = d.count(12)?;
    let mut keys = Vec::with_capacity(n);
    for _ in 0..n {
        let space = d.u32()?;
        let step = d.u32()?;
        let dims = d.count(4)?;
        if keys
            .last()
            .is_some_and(|&(s, t, _): &(u32, u32, &[u8])| (s, t) >= (space, step))
        {
            return d.err(format!(
                "key (space {space}, step {step}) is out of order or repeated"
            ));
        }
        keys.push((space, step, d.take(dims * 4)?));
    }
    d.finish()?;
    Ok(Body {
        id,
        created_ms,
        task,
        env,
        category,
        goal,
        plan,
        steps,
        final_observation,
        outcome: Outcome { success, reward },
        meta,
        provenance: Provenance {
            kind,
            parent,
            steps: steps_range,
            origin,
        },
        keys,
    })
}

pub(crate) fn scan_trajectory(payload: &[u8]) -> DecResult<TrajScan<'_>> {
    let b = decode_body(&mut Dec::new(payload))?;
    Ok(TrajScan {
        id: b.id,
        created_ms: b.created_ms,
        origin: b.provenance.origin,
        task: b.task,
        env: b.env,
        success: b.outcome.success,
        provenance: b.provenance.kind,
        n_steps: u32::try_from(b.steps.len()).unwrap_or(u32::MAX),
        keys: b.keys,
    })
}

/// Little-endian f32 bytes as floats.
pub(crate) fn le_f32s(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// Decodes a trajectory payload; `space_name` maps a space id and level to its name.
pub(crate) fn decode_trajectory(
    payload: &[u8],
    space_name: &dyn Fn(u32) -> Option<(String, Level)>,
) -> DecResult<Trajectory> {
    let mut b = decode_body(&mut Dec::new(payload))?;
    let mut keys = BTreeMap::new();
    let mut step_keys: BTreeMap<String, Vec<Vec<f32>>> = BTreeMap::new();
    for (space, _step, bytes) in std::mem::take(&mut b.keys) {
        let v = le_f32s(bytes);
        let Some((name, level)) = space_name(space) else {
            return Err(DecodeError {
                at: 0,
                what: format!("key refers to undefined key space {space}"),
            });
        };
        match level {
            Level::Trajectory => {
                keys.insert(name, v);
            }
            Level::Step => step_keys.entry(name).or_default().push(v),
        }
    }
    let mut t = trajectory_of(b);
    t.keys = keys;
    t.step_keys = step_keys;
    Ok(t)
}

/// Decodes a trajectory payload without its keys (`keys` and `step_keys` empty): the text
/// and outcome only, without converting or allocating any vector. The payload is checked as
/// fully as by [`decode_trajectory`] except that key space ids are not resolved.
pub(crate) fn decode_trajectory_without_keys(payload: &[u8]) -> DecResult<Trajectory> {
    let b = decode_body(&mut Dec::new(payload))?;
    Ok(trajectory_of(b))
}

/// The trajectory of a decoded body, keys left empty.
fn trajectory_of(b: Body<'_>) -> Trajectory {
    Trajectory {
        id: Some(b.id),
        task: b.task.to_owned(),
        env: b.env.to_owned(),
        category: b.category.map(str::to_owned),
        goal: b.goal.to_owned(),
        plan: b.plan.to_owned(),
        steps: b
            .steps
            .into_iter()
            .map(|(o, r, a, w)| Step {
                observation: o.to_owned(),
                reasoning: r.to_owned(),
                action: a.to_owned(),
                reward: w,
            })
            .collect(),
        final_observation: b.final_observation.to_owned(),
        outcome: b.outcome,
        meta: b
            .meta
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect(),
        provenance: b.provenance,
        created_ms: b.created_ms,
        keys: BTreeMap::new(),
        step_keys: BTreeMap::new(),
    }
}

/// Decodes any record except trajectories into [`Record`]; trajectories are decoded to
/// `Record::Trajectory` with keys named by `space_name`.
pub(crate) fn decode_record(
    kind_code: u16,
    payload: &[u8],
    space_name: &dyn Fn(u32) -> Option<(String, Level)>,
) -> DecResult<Record> {
    let mut d = Dec::new(payload);
    let rec = match kind_code {
        kind::SPACE => {
            let id = d.u32()?;
            let level = match d.u8()? {
                0 => Level::Trajectory,
                1 => Level::Step,
                c => return d.err(format!("level code {c} is not 0 or 1")),
            };
            let mc = d.u8()?;
            let Some(metric) = metric_from(mc) else {
                return d.err(format!("metric code {mc} is not 0..=2"));
            };
            let elem = match d.u8()? {
                0 => ElemType::F32,
                c => return d.err(format!("element type {c} is not supported (0 = f32)")),
            };
            if d.u8()? != 0 {
                return d.err("reserved byte is not zero");
            }
            let dims = d.u32()?;
            if dims == 0 || dims > MAX_DIMS {
                return d.err(format!("dimensions {dims} are not in 1..={MAX_DIMS}"));
            }
            let name = d.str()?.to_owned();
            if name.is_empty() || name.len() > MAX_SPACE_NAME {
                return d.err(format!(
                    "space name of {} bytes is not 1..={MAX_SPACE_NAME} bytes",
                    name.len()
                ));
            }
            let embedder = if d.flag()? {
                Some(EmbedderId {
                    name: d.str()?.to_owned(),
                    version: d.str()?.to_owned(),
                    dims,
                })
            } else {
                None
            };
            Record::Space {
                id,
                def: SpaceDef {
                    name,
                    level,
                    dims,
                    metric,
                    elem,
                    embedder,
                },
            }
        }
        kind::TRAJECTORY => {
            return decode_trajectory(payload, space_name).map(|t| Record::Trajectory(Box::new(t)))
        }
        kind::DELETE => Record::Delete { id: d.u64()? },
        kind::EPISODE_BEGIN => Record::EpisodeBegin {
            episode: d.u64()?,
            created_ms: d.i64()?,
        },
        kind::RETRIEVALS => {
            let episode = d.u64()?;
            let n = d.count(13)?;
            let mut events = Vec::with_capacity(n);
            for _ in 0..n {
                let id = d.u64()?;
                let step = d.u32()?;
                let stage = Stage::from_code(&mut d)?;
                events.push(RetrievalEvent {
                    id,
                    step: (step != NO_STEP).then_some(step),
                    stage,
                });
            }
            Record::Retrievals { episode, events }
        }
        kind::EPISODE_OUTCOME => Record::EpisodeOutcome {
            episode: d.u64()?,
            success: success_from(&mut d)?,
        },
        kind::TRAJ_OUTCOME => {
            let id = d.u64()?;
            let success = success_from(&mut d)?;
            let reward = d.opt_f64()?;
            Record::TrajOutcome {
                id,
                outcome: Outcome { success, reward },
            }
        }
        kind::ORIGIN => {
            let origin = d.u64()?;
            if origin == 0 {
                return d.err("origin id is zero");
            }
            Record::Origin { origin }
        }
        kind::EPISODE_MERGED => {
            let episode = d.u64()?;
            let created_ms = d.i64()?;
            let db = d.u64()?;
            let id = d.u64()?;
            if db == 0 {
                return d.err("episode origin id is zero");
            }
            Record::EpisodeMerged {
                episode,
                created_ms,
                origin: Origin { db, id },
            }
        }
        k => {
            return Err(DecodeError {
                at: 0,
                what: format!("unknown record kind {k}"),
            })
        }
    };
    d.finish()?;
    Ok(rec)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(id: u32) -> Option<(String, Level)> {
        Some((format!("s{id}"), Level::Step))
    }

    #[test]
    fn keys_out_of_order_or_repeated_are_refused_on_decode() {
        let t = Trajectory {
            goal: "g".into(),
            steps: vec![Step::default(), Step::default()],
            ..Default::default()
        };
        let v = [1.0f32, 2.0];
        let k = |space, step| EncKey {
            space,
            step,
            vector: &v,
        };
        let ok = encode_trajectory(&t, 1, 0, &[k(0, 0), k(0, 1), k(1, 0)]);
        assert!(decode_trajectory(&ok, &names).is_ok());
        for bad in [[k(0, 1), k(0, 0)], [k(0, 0), k(0, 0)]] {
            let p = encode_trajectory(&t, 1, 0, &bad);
            let e = decode_trajectory(&p, &names).expect_err("refused");
            assert!(e.what.contains("out of order or repeated"), "{}", e.what);
            assert!(scan_trajectory(&p).is_err());
        }
    }

    #[test]
    fn space_definitions_with_bad_dimensions_or_names_are_refused_on_decode() {
        let mut def = SpaceDef::new("goal", Level::Trajectory, 0, Metric::Cosine);
        let e = decode_record(kind::SPACE, &encode_space(0, &def), &names).expect_err("dims 0");
        assert!(e.what.contains("dimensions 0"), "{}", e.what);
        def.dims = 4;
        def.name = String::new();
        let e = decode_record(kind::SPACE, &encode_space(0, &def), &names).expect_err("name");
        assert!(e.what.contains("space name"), "{}", e.what);
        def.name = "goal".into();
        assert!(decode_record(kind::SPACE, &encode_space(0, &def), &names).is_ok());
    }

    #[test]
    fn meta_keys_out_of_order_are_refused_on_decode() {
        let t = Trajectory {
            goal: "g".into(),
            meta: [
                ("a".to_owned(), "1".to_owned()),
                ("b".to_owned(), "2".to_owned()),
            ]
            .into_iter()
            .collect(),
            ..Default::default()
        };
        let mut p = encode_trajectory(&t, 1, 0, &[]);
        // Swap the two one-byte keys in place: "a" then "b" becomes "b" then "a".
        let a = p
            .windows(5)
            .position(|w| w == [1, 0, 0, 0, b'a'])
            .expect("key a");
        let b = p
            .windows(5)
            .position(|w| w == [1, 0, 0, 0, b'b'])
            .expect("key b");
        p[a + 4] = b'b';
        p[b + 4] = b'a';
        let e = decode_trajectory(&p, &names).expect_err("refused");
        assert!(e.what.contains("meta key"), "{}", e.what);
    }
}
