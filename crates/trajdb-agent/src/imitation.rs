//! [`ImitationPolicy`]: a generic non-LLM **stand-in** policy that knows no environment.
//!
//! It is not a language model and has no commonsense. It can only copy what the retrieved
//! examples did, choosing among the environment's admissible actions, and explore (seeded)
//! when no example applies. It exists so that the method (retrieval of the agent's own
//! successful trajectories) can be measured on any environment without a model; figures
//! obtained with it say what retrieval plus imitation achieves, not what an LLM would.

use std::collections::HashSet;

use crate::policy::{Context, Policy};
use crate::AgentResult;
use trajdb::rng::SplitMix64;
use trajdb::{Embedder, Example, HashEmbedder};

/// Settings of [`ImitationPolicy`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ImitationConfig {
    /// Similarity (cosine of the embedder's vectors) below which an admissible action is
    /// not considered to be what an example did. Default 0.8 (near copies only).
    pub min_similarity: f32,
    /// Examples read per decision, best first. Default 10.
    pub examples: usize,
    /// Weight of an example step `d` observation changes away from its matched step:
    /// `decay^d`. Default 0.5 (the matched state counts most, its neighbours less).
    pub decay: f32,
}

impl Default for ImitationConfig {
    fn default() -> Self {
        ImitationConfig {
            min_similarity: 0.8,
            examples: 10,
            decay: 0.5,
        }
    }
}

/// A generic non-LLM **stand-in** policy (see the module documentation).
///
/// It sees only a [`Context`]: the goal, the observation, the admissible actions and the
/// retrieved examples (each a window of steps around its matched step).
///
/// - Plan: names the goal and the most similar example's goal (or says none was seen).
/// - Reason (examples matched on the current observation): every admissible action not yet
///   taken in this state is scored by its similarity to what the examples did, on the action
///   key: for each example, its window's actions, weighted by the example's retrieval score
///   relative to the best one and by `decay^distance` from the matched step (distance in
///   observation changes). The best action
///   scoring at least `min_similarity` is proposed; otherwise an untried admissible action
///   is drawn (seeded). The thought is `ACTION; WHY`.
/// - Act (examples matched on the thought): takes the action the thought proposes when it
///   is admissible; otherwise scores the admissible actions against the acting examples the
///   same way, on the action and thought keys; otherwise explores.
///
/// Example steps with a known reward of zero or less are not copied: where the environment
/// gives rewards, the unrewarded steps of a successful run are its detours. (Steps without a
/// reward, e.g. Wordcraft's, are all candidates.)
///
/// Example steps after which the observation did not change (the next step in the window
/// has the same observation) made no progress and are not copied.
///
/// An example whose copied action changed nothing (the next state equals the one it was
/// taken in) is not followed again in the episode: it evidently does not apply to this task.
///
/// An action that changed nothing when taken (the state after equals the state before,
/// e.g. `look` or `inventory`) is not taken again in the episode while other actions
/// remain.
///
/// A state is the set of admissible actions (the observation text when there are none):
/// observations mostly describe the last action's effect, while the admissible actions
/// reflect where the agent is and what it holds. An action already taken in a state is not
/// taken there again in the episode (so a failed action is never repeated in a state) unless
/// every admissible action has been.
///
/// Without admissible actions it proposes the best example's action text verbatim and,
/// with no example, `look`.
pub struct ImitationPolicy {
    rng: SplitMix64,
    embedder: Box<dyn Embedder>,
    config: ImitationConfig,
    tried: HashSet<(u64, String)>,
    /// Examples (trajectory ids) whose copied action changed nothing this episode.
    distrusted: HashSet<u64>,
    /// The action reason proposed and the example it copied.
    proposal: Option<(String, u64)>,
    /// The state an action copied from an example was taken in, and the example.
    copied: Option<(u64, u64)>,
    /// The last action and the state it was taken in.
    last: Option<(u64, String)>,
    /// Actions that changed nothing this episode (the state after equalled the state
    /// before).
    noop: HashSet<String>,
}

impl std::fmt::Debug for ImitationPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImitationPolicy")
            .field("embedder", &self.embedder.id())
            .field("config", &self.config)
            .field("tried", &self.tried.len())
            .finish_non_exhaustive()
    }
}

fn fnv(parts: &[&str]) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    for p in parts {
        for b in p.bytes().chain(std::iter::once(0xff)) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    h
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let (mut ab, mut aa, mut bb) = (0f32, 0f32, 0f32);
    for (x, y) in a.iter().zip(b) {
        ab += x * y;
        aa += x * x;
        bb += y * y;
    }
    if aa <= 0.0 || bb <= 0.0 {
        0.0
    } else {
        ab / (aa.sqrt() * bb.sqrt())
    }
}

/// What an example did, for scoring: its text, weight, and which example (position and
/// trajectory id).
struct Did {
    text: String,
    weight: f32,
    example: usize,
    id: u64,
}

impl ImitationPolicy {
    /// A stand-in seeded by `seed`, comparing texts with the built-in hash embedder.
    pub fn new(seed: u64) -> Self {
        Self::with(
            seed,
            Box::new(HashEmbedder::default()),
            ImitationConfig::default(),
        )
    }

    /// A stand-in with another embedder or settings.
    pub fn with(seed: u64, embedder: Box<dyn Embedder>, config: ImitationConfig) -> Self {
        ImitationPolicy {
            rng: SplitMix64::new(seed ^ 0x1A17_A710_5EED_0001),
            embedder,
            config,
            tried: HashSet::new(),
            distrusted: HashSet::new(),
            proposal: None,
            copied: None,
            last: None,
            noop: HashSet::new(),
        }
    }

    fn state(c: &Context<'_>) -> u64 {
        match c.actions {
            Some(a) => {
                let mut parts: Vec<&str> = a.iter().map(String::as_str).collect();
                parts.sort_unstable();
                fnv(&parts)
            }
            None => fnv(&[c.observation]),
        }
    }

    /// What the examples did around their matched steps; `thoughts` adds their thoughts.
    fn did(&self, examples: &[Example], thoughts: bool) -> Vec<Did> {
        let best = examples
            .iter()
            .take(self.config.examples)
            .map(|e| e.score)
            .fold(f32::MIN, f32::max);
        let mut out = Vec::new();
        for (n, e) in examples.iter().take(self.config.examples).enumerate() {
            if self.distrusted.contains(&e.id) {
                continue;
            }
            let rel = if best > 0.0 {
                (e.score / best).clamp(0.0, 1.0)
            } else {
                1.0
            };
            let steps = &e.trajectory.steps;
            let matched = e
                .matched_step
                .and_then(|m| m.checked_sub(e.window.0))
                .map_or(0, |m| m as usize);
            // Distance counts changes of observation, not steps: steps that made no progress
            // do not push the step that did away from the matched one.
            let mut state_of = Vec::with_capacity(steps.len());
            let mut k = 0usize;
            for (i, st) in steps.iter().enumerate() {
                if i > 0 && steps[i - 1].observation != st.observation {
                    k += 1;
                }
                state_of.push(k);
            }
            let here = state_of.get(matched).copied().unwrap_or(0);
            for (i, st) in steps.iter().enumerate() {
                // A step that earned no reward where the environment gives rewards is one of
                // the success's detours.
                if st.reward.is_some_and(|r| r <= 0.0) {
                    continue;
                }
                // A step after which nothing visible changed made no progress: not copied.
                if steps
                    .get(i + 1)
                    .is_some_and(|n| n.observation == st.observation)
                {
                    continue;
                }
                let d = state_of[i].abs_diff(here);
                let w = rel * self.config.decay.powi(i32::try_from(d).unwrap_or(i32::MAX));
                if w <= 0.0 {
                    continue;
                }
                out.push(Did {
                    text: st.action.clone(),
                    weight: w,
                    example: n,
                    id: e.id,
                });
                if thoughts && !st.reasoning.is_empty() {
                    out.push(Did {
                        text: st.reasoning.clone(),
                        weight: w,
                        example: n,
                        id: e.id,
                    });
                }
            }
        }
        out
    }

    /// The admissible, untried action closest to what the examples did, with the example.
    fn imitate(
        &self,
        candidates: &[String],
        did: &[Did],
    ) -> AgentResult<Option<(String, usize, String, u64)>> {
        if did.is_empty() || candidates.is_empty() {
            return Ok(None);
        }
        let did_v = did
            .iter()
            .map(|d| self.embedder.embed(&d.text))
            .collect::<Result<Vec<_>, _>>()?;
        let mut best: Option<(f32, usize, usize)> = None;
        for (ci, cand) in candidates.iter().enumerate() {
            let cv = self.embedder.embed(cand)?;
            for (di, d) in did.iter().enumerate() {
                let sim = cosine(&cv, &did_v[di]);
                if sim < self.config.min_similarity {
                    continue;
                }
                let v = sim * d.weight;
                if best.is_none_or(|(b, _, _)| v > b) {
                    best = Some((v, ci, di));
                }
            }
        }
        Ok(best.map(|(_, ci, di)| {
            (
                candidates[ci].clone(),
                did[di].example,
                did[di].text.clone(),
                did[di].id,
            )
        }))
    }

    fn untried(&self, c: &Context<'_>) -> Vec<String> {
        let s = Self::state(c);
        let all = c.actions.unwrap_or(&[]);
        let pick = |skip_tried: bool, skip_noop: bool| -> Vec<String> {
            all.iter()
                .filter(|a| !skip_tried || !self.tried.contains(&(s, (*a).clone())))
                .filter(|a| !skip_noop || !self.noop.contains(*a))
                .cloned()
                .collect()
        };
        // Untried and not known to do nothing; else untried; else not known to do nothing;
        // else anything.
        for (t, n) in [(true, true), (true, false), (false, true)] {
            let out = pick(t, n);
            if !out.is_empty() {
                return out;
            }
        }
        all.to_vec()
    }

    fn explore(&mut self, candidates: &[String]) -> Option<String> {
        if candidates.is_empty() {
            return None;
        }
        let n = u64::try_from(candidates.len()).unwrap_or(u64::MAX);
        let i = usize::try_from(self.rng.below(n)).unwrap_or(0);
        candidates.get(i).cloned()
    }

    /// The action, why, and the example (trajectory id) it copies.
    fn decide(
        &mut self,
        c: &Context<'_>,
        thoughts: bool,
    ) -> AgentResult<(String, String, Option<u64>)> {
        let did = self.did(c.examples, thoughts);
        if c.actions.is_none() {
            // No admissible actions: copy the best example's action text.
            if let Some(d) = did
                .iter()
                .filter(|d| !d.text.is_empty())
                .max_by(|a, b| a.weight.total_cmp(&b.weight))
            {
                let goal = &c.examples[d.example].trajectory.goal;
                let why = format!("example {} ({goal}) did this", d.example + 1);
                return Ok((d.text.clone(), why, Some(d.id)));
            }
            return Ok((
                "look".into(),
                "no example and no admissible actions".into(),
                None,
            ));
        }
        let candidates = self.untried(c);
        if let Some((action, n, what, id)) = self.imitate(&candidates, &did)? {
            let goal = &c.examples[n].trajectory.goal;
            let why = if what == action {
                format!("example {} ({goal}) did this at a similar step", n + 1)
            } else {
                format!("closest to \"{what}\" of example {} ({goal})", n + 1)
            };
            return Ok((action, why, Some(id)));
        }
        match self.explore(&candidates) {
            Some(a) => Ok((a, "no example applies, so I explore".into(), None)),
            None => Ok(("look".into(), "no admissible action".into(), None)),
        }
    }
}

/// The action a thought `ACTION; WHY` proposes.
fn proposed(thought: &str) -> &str {
    thought.split_once("; ").map_or(thought, |(a, _)| a).trim()
}

impl Policy for ImitationPolicy {
    fn plan(&mut self, c: &Context<'_>) -> AgentResult<String> {
        self.tried.clear();
        self.distrusted.clear();
        self.proposal = None;
        self.copied = None;
        self.last = None;
        self.noop.clear();
        Ok(match c.examples.first() {
            Some(e) => format!(
                "{}: do what similar successful tasks did (closest: {}); explore otherwise.",
                c.goal, e.trajectory.goal
            ),
            None => format!(
                "{}: no similar task seen; explore the admissible actions.",
                c.goal
            ),
        })
    }

    fn reason(&mut self, c: &Context<'_>) -> AgentResult<String> {
        let now = Self::state(c);
        if let Some((state, action)) = self.last.take() {
            if state == now {
                self.noop.insert(action);
            }
        }
        if let Some((state, id)) = self.copied.take() {
            if state == now {
                // The copied action changed nothing: that example does not apply here.
                self.distrusted.insert(id);
            }
        }
        let (action, why, id) = self.decide(c, false)?;
        self.proposal = id.map(|id| (action.clone(), id));
        Ok(format!("{action}; {why}"))
    }

    fn act(&mut self, c: &Context<'_>) -> AgentResult<String> {
        let p = proposed(c.thought);
        let proposal = self.proposal.take();
        let (action, source) = match c.actions {
            None if !p.is_empty() => (p.to_owned(), None),
            Some(a) if a.iter().any(|x| x == p) => (p.to_owned(), None),
            _ => {
                let (a, _, id) = self.decide(c, true)?;
                (a, id)
            }
        };
        let source = source.or(proposal.filter(|(a, _)| *a == action).map(|(_, id)| id));
        let state = Self::state(c);
        self.copied = source.map(|id| (state, id));
        self.last = Some((state, action.clone()));
        self.tried.insert((state, action.clone()));
        Ok(action)
    }
}
