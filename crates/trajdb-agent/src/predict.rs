//! Task-success prediction before acting: the probability that a new
//! task succeeds, from stored trajectories (successes and failures) and what the task shows
//! before its first action: the goal text and the initial observation.
//!
//! Two predictors:
//!
//! - [`Predictor::predict`], the goal vote: a similarity-weighted vote of the `k` nearest
//!   self-generated trajectories on the `goal` key (relabelled trajectories are left out
//!   because they are successes by construction), shrunk towards a prior:
//!
//!   ```text
//!   p = (prior_weight * prior + sum_i w_i * o_i) / (prior_weight + sum_i w_i),
//!   w_i = max(0, sim_i) ^ power
//!   ```
//!
//!   where `prior` is the success rate of all stored self-generated trajectories. On
//!   Wordcraft goals `create X` rarely recur and say little otherwise, so this vote is close
//!   to uninformative (docs/results.md).
//! - [`Predictor::fit`] then [`Fitted::predict`], a logistic model over the
//!   [`TaskFeatures`] of a task: the goal vote, the same vote on the step-level
//!   `observation` key (the initial observation holds the table), the table's size, and
//!   what the retrieved successful examples show: recipes (read from their steps the way the
//!   offline policy reads them, `select A` on `selected: none` then `select B`, the product
//!   being what appears on the next table) whose ingredients are on the current table, and
//!   whether the goal can be reached from the table through them. The examples are the ones
//!   the agent itself would retrieve first (on the goal key, and on the goal key with the
//!   initial observation as step key), so the features say "do I have a relevant example".
//!   The weights are fitted on the stored self-generated episodes only: each episode's
//!   features are computed from its goal and step-0 observation against the database as it
//!   was just before that episode was stored (an as-of view), so no episode sees itself or
//!   anything stored after it, as at test time. No recipe book or environment is read.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use crate::policy::{goal_entity, parse_table, shown_pairs};
use crate::AgentResult;
use trajdb::{Database, Embedder, Filter, ProvenanceKind, RetrieveQuery, Trajectory};

/// Settings of the predictor.
#[derive(Debug, Clone, Copy)]
pub struct Predictor {
    /// Neighbours used by the votes. Default 20.
    pub k: usize,
    /// Weight of the prior, in units of a perfectly similar neighbour. Default 1.
    pub prior_weight: f64,
    /// Sharpening exponent on similarities. Default 4.
    pub power: f64,
    /// Examples per retrieval read for recipes (the agent's k). Default 10.
    pub examples: usize,
    /// Combinations allowed when checking whether the goal is reachable. Default 4.
    pub budget: usize,
}

impl Default for Predictor {
    fn default() -> Self {
        Predictor {
            k: 20,
            prior_weight: 1.0,
            power: 4.0,
            examples: 10,
            budget: 4,
        }
    }
}

/// What the predictor knows about one task before acting (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize)]
pub struct TaskFeatures {
    /// Goal vote (the probability [`Predictor::predict`] gives).
    pub goal_vote: f64,
    /// The same vote over neighbours on the step-level `observation` key.
    pub obs_vote: f64,
    /// Entities on the initial table.
    pub table_size: f64,
    /// ln(1 + distinct productive recipes shown by the retrieved successes whose two
    /// ingredients are on the initial table).
    pub usable_recipes: f64,
    /// 1 when a retrieved success shows a recipe for the goal whose ingredients are both on
    /// the initial table, else 0.
    pub goal_recipe_on_table: f64,
    /// 1 when the goal can be made from the initial table through the recipes the retrieved
    /// successes show, within the combination budget, else 0.
    pub goal_reachable: f64,
}

/// Number of features in [`TaskFeatures::to_vec`].
pub const FEATURES: usize = 6;

impl TaskFeatures {
    /// The features in a fixed order (the order of the fields).
    pub fn to_vec(&self) -> [f64; FEATURES] {
        [
            self.goal_vote,
            self.obs_vote,
            self.table_size,
            self.usable_recipes,
            self.goal_recipe_on_table,
            self.goal_reachable,
        ]
    }
}

/// A recipe shown by a trajectory: ingredients (sorted) and product.
pub type ShownRecipe = (String, String, String);

/// The productive recipes a trajectory's steps show ([`crate::policy::shown_pairs`], either
/// Wordcraft interface) with exactly one entity new on the table that follows (the next
/// step's observation, or the final observation after the last step). Ingredients are
/// sorted by name.
pub fn shown_recipes(t: &Trajectory) -> Vec<ShownRecipe> {
    let mut out = Vec::new();
    for p in shown_pairs(t) {
        let after = parse_table(p.after);
        let new: Vec<&String> = after.iter().filter(|x| !p.before.contains(x)).collect();
        if let [made] = new.as_slice() {
            let (x, y) = if p.a <= p.b { (p.a, p.b) } else { (p.b, p.a) };
            out.push((x, y, (*made).clone()));
        }
    }
    out
}

/// Recipe features of a table: (usable recipes, goal recipe on the table, goal reachable
/// within `budget` combinations) given the recipes `known`.
pub fn recipe_features(
    known: &BTreeSet<ShownRecipe>,
    table: &[String],
    goal: &str,
    budget: usize,
) -> (usize, bool, bool) {
    let on: BTreeSet<&str> = table.iter().map(String::as_str).collect();
    let usable = known
        .iter()
        .filter(|(a, b, _)| on.contains(a.as_str()) && on.contains(b.as_str()))
        .count();
    let direct = known
        .iter()
        .any(|(a, b, p)| p == goal && on.contains(a.as_str()) && on.contains(b.as_str()));
    // Forward chaining: each round adds every product whose ingredients are available.
    let mut have: BTreeSet<&str> = on.clone();
    let mut reachable = have.contains(goal);
    for _ in 0..budget {
        let new: Vec<&str> = known
            .iter()
            .filter(|(a, b, p)| {
                have.contains(a.as_str()) && have.contains(b.as_str()) && !have.contains(p.as_str())
            })
            .map(|(_, _, p)| p.as_str())
            .collect();
        if new.is_empty() {
            break;
        }
        have.extend(new);
        if have.contains(goal) {
            reachable = true;
            break;
        }
    }
    (usable, direct, reachable)
}

fn sigmoid(z: f64) -> f64 {
    1.0 / (1.0 + (-z).exp())
}

/// A fitted logistic predictor (see [`Predictor::fit`]).
#[derive(Debug, Clone)]
pub struct Fitted {
    /// The settings features are computed with.
    pub settings: Predictor,
    /// Success rate of the stored self-generated episodes (Laplace-smoothed).
    pub prior: f64,
    /// Feature means on the training episodes (for standardising).
    pub mean: [f64; FEATURES],
    /// Feature standard deviations (1 where a feature is constant).
    pub sd: [f64; FEATURES],
    /// Weights on the standardised features.
    pub weights: [f64; FEATURES],
    /// Intercept.
    pub bias: f64,
    /// Episodes fitted on.
    pub n: usize,
}

impl Fitted {
    /// The probability that the task with goal `goal` and initial observation `observation`
    /// succeeds, from the whole database.
    pub fn predict(
        &self,
        db: &Database,
        embedder: &dyn Embedder,
        goal: &str,
        observation: &str,
    ) -> AgentResult<f64> {
        let f = self
            .settings
            .features(db, embedder, goal, observation, None, self.prior)?;
        Ok(self.score(&f))
    }

    /// The model's probability for features `f`.
    pub fn score(&self, f: &TaskFeatures) -> f64 {
        let x = f.to_vec();
        let z = self.bias
            + (0..FEATURES)
                .map(|j| self.weights[j] * (x[j] - self.mean[j]) / self.sd[j])
                .sum::<f64>();
        sigmoid(z)
    }
}

/// Fits a logistic regression (L2 penalty `l2` on the weights, not the intercept) on
/// standardised features by gradient descent. Returns (mean, sd, weights, bias).
pub fn fit_logistic(
    xs: &[[f64; FEATURES]],
    ys: &[bool],
    l2: f64,
) -> ([f64; FEATURES], [f64; FEATURES], [f64; FEATURES], f64) {
    let n = xs.len().max(1) as f64;
    let mut mean = [0.0; FEATURES];
    let mut sd = [1.0; FEATURES];
    for j in 0..FEATURES {
        mean[j] = xs.iter().map(|x| x[j]).sum::<f64>() / n;
        let v = xs.iter().map(|x| (x[j] - mean[j]).powi(2)).sum::<f64>() / n;
        sd[j] = if v > 1e-12 { v.sqrt() } else { 1.0 };
    }
    let z: Vec<[f64; FEATURES]> = xs
        .iter()
        .map(|x| std::array::from_fn(|j| (x[j] - mean[j]) / sd[j]))
        .collect();
    let pos = ys.iter().filter(|&&y| y).count() as f64;
    let p0 = ((pos + 0.5) / (n + 1.0)).clamp(1e-6, 1.0 - 1e-6);
    let mut b = (p0 / (1.0 - p0)).ln();
    let mut w = [0.0; FEATURES];
    let rate = 0.5;
    for _ in 0..3000 {
        let mut gw = [0.0; FEATURES];
        let mut gb = 0.0;
        for (x, &y) in z.iter().zip(ys) {
            let p = sigmoid(b + (0..FEATURES).map(|j| w[j] * x[j]).sum::<f64>());
            let e = p - f64::from(u8::from(y));
            gb += e;
            for j in 0..FEATURES {
                gw[j] += e * x[j];
            }
        }
        b -= rate * gb / n;
        for j in 0..FEATURES {
            w[j] -= rate * (gw[j] / n + l2 * w[j]);
        }
    }
    (mean, sd, w, b)
}

impl Predictor {
    /// The success rate of stored self-generated trajectories, or None when there are none.
    pub fn prior(db: &Database) -> AgentResult<Option<f64>> {
        let (mut n, mut s) = (0u64, 0u64);
        for id in db.ids() {
            let t = db.get(id)?;
            if t.provenance.kind == ProvenanceKind::SelfGenerated {
                if let Some(o) = t.outcome.success {
                    n += 1;
                    s += u64::from(o);
                }
            }
        }
        Ok((n > 0).then(|| s as f64 / n as f64))
    }

    /// The predicted success probability of a task with goal text `goal`, given the prior
    /// (see [`Predictor::prior`]): the goal vote.
    pub fn predict(
        &self,
        db: &Database,
        embedder: &dyn Embedder,
        goal: &str,
        prior: f64,
    ) -> AgentResult<f64> {
        self.vote(db, embedder, "goal", goal, None, prior)
    }

    /// The vote over the `k` nearest self-generated trajectories on key space `space` for
    /// `text`, as of commit `as_of` (a trajectory counts once, at its best-matching step).
    fn vote(
        &self,
        db: &Database,
        embedder: &dyn Embedder,
        space: &str,
        text: &str,
        as_of: Option<u64>,
        prior: f64,
    ) -> AgentResult<f64> {
        let q = crate::react::embed_text(embedder, text)?;
        let hits = db.search_as(
            space,
            &q,
            self.k,
            &Filter {
                provenance: Some(ProvenanceKind::SelfGenerated),
                as_of,
                ..Default::default()
            },
            Some(&embedder.id()),
        )?;
        let mut best: BTreeMap<u64, f32> = BTreeMap::new();
        for h in hits {
            let s = best.entry(h.id).or_insert(h.score);
            *s = s.max(h.score);
        }
        let mut num = self.prior_weight * prior;
        let mut den = self.prior_weight;
        for (id, score) in best {
            let o = match db.get(id)?.outcome.success {
                Some(o) => f64::from(u8::from(o)),
                None => continue,
            };
            let w = f64::from(score.max(0.0)).powf(self.power);
            num += w * o;
            den += w;
        }
        Ok(if den > 0.0 { num / den } else { prior })
    }

    /// The features of a task (goal text, initial observation) against the database as of
    /// commit `as_of` (None: now); `prior` is the success rate the votes shrink towards.
    pub fn features(
        &self,
        db: &Database,
        embedder: &dyn Embedder,
        goal: &str,
        observation: &str,
        as_of: Option<u64>,
        prior: f64,
    ) -> AgentResult<TaskFeatures> {
        let goal_vote = self.vote(db, embedder, "goal", goal, as_of, prior)?;
        let obs_vote = self.vote(db, embedder, "observation", observation, as_of, prior)?;
        let emb = embedder.id();
        let goal_v = crate::react::embed_text(embedder, goal)?;
        let obs_v = crate::react::embed_text(embedder, observation)?;
        let mut known: BTreeSet<ShownRecipe> = BTreeSet::new();
        for step_key in [None, Some(("observation".to_owned(), obs_v))] {
            let ex = db.retrieve(&RetrieveQuery {
                keys: vec![("goal".to_owned(), goal_v.clone())],
                step_key,
                k: self.examples,
                window: 64,
                filter: Filter {
                    success_only: true,
                    as_of,
                    ..Default::default()
                },
                embedder: Some(emb.clone()),
            })?;
            for e in &ex {
                known.extend(shown_recipes(&e.trajectory));
            }
        }
        let table = parse_table(observation);
        let (usable, direct, reachable) =
            recipe_features(&known, &table, goal_entity(goal), self.budget);
        Ok(TaskFeatures {
            goal_vote,
            obs_vote,
            table_size: table.len() as f64,
            usable_recipes: (1.0 + usable as f64).ln(),
            goal_recipe_on_table: f64::from(u8::from(direct)),
            goal_reachable: f64::from(u8::from(reachable)),
        })
    }

    /// The stored self-generated episodes as (features, outcome), each episode's features
    /// computed from its goal and step-0 observation against the database as it was just
    /// before the episode was stored. Episodes without steps or outcome are skipped.
    pub fn training_rows(
        &self,
        db: &Database,
        embedder: &dyn Embedder,
    ) -> AgentResult<Vec<(TaskFeatures, bool)>> {
        let mut points = db.commit_points();
        points.sort_by_key(|p| p.1);
        let (mut n, mut s) = (0u64, 0u64);
        let mut rows = Vec::new();
        for (id, seq) in points {
            let t = db.get(id)?;
            if t.provenance.kind != ProvenanceKind::SelfGenerated {
                continue;
            }
            let Some(o) = t.outcome.success else {
                continue;
            };
            if let Some(first) = t.steps.first() {
                let prior = (s as f64 + 1.0) / (n as f64 + 2.0);
                let f = self.features(
                    db,
                    embedder,
                    &t.goal,
                    &first.observation,
                    Some(seq.saturating_sub(1)),
                    prior,
                )?;
                rows.push((f, o));
            }
            n += 1;
            s += u64::from(o);
        }
        Ok(rows)
    }

    /// Fits the logistic predictor on the stored self-generated episodes (see
    /// [`Predictor::training_rows`]). None when they do not contain both a success and a
    /// failure.
    pub fn fit(&self, db: &Database, embedder: &dyn Embedder) -> AgentResult<Option<Fitted>> {
        let rows = self.training_rows(db, embedder)?;
        let pos = rows.iter().filter(|r| r.1).count();
        if pos == 0 || pos == rows.len() {
            return Ok(None);
        }
        let xs: Vec<[f64; FEATURES]> = rows.iter().map(|r| r.0.to_vec()).collect();
        let ys: Vec<bool> = rows.iter().map(|r| r.1).collect();
        let (mean, sd, weights, bias) = fit_logistic(&xs, &ys, 0.01);
        Ok(Some(Fitted {
            settings: *self,
            prior: (pos as f64 + 1.0) / (rows.len() as f64 + 2.0),
            mean,
            sd,
            weights,
            bias,
            n: rows.len(),
        }))
    }
}

/// Area under the ROC curve of `scores` for `labels` (true = positive): the probability that
/// a random positive scores above a random negative, ties counting one half. `None` when
/// either class is empty.
pub fn auroc(scores: &[f64], labels: &[bool]) -> Option<f64> {
    let mut v: Vec<(f64, bool)> = scores.iter().copied().zip(labels.iter().copied()).collect();
    let pos = v.iter().filter(|x| x.1).count();
    let neg = v.len() - pos;
    if pos == 0 || neg == 0 {
        return None;
    }
    v.sort_by(|a, b| a.0.total_cmp(&b.0));
    // Mann-Whitney U with mid-ranks for ties.
    let mut rank_sum = 0.0;
    let mut i = 0;
    while i < v.len() {
        let mut j = i;
        while j + 1 < v.len() && v[j + 1].0 == v[i].0 {
            j += 1;
        }
        let mid = (i + j) as f64 / 2.0 + 1.0;
        rank_sum += mid * v[i..=j].iter().filter(|x| x.1).count() as f64;
        i = j + 1;
    }
    let (p, n) = (pos as f64, neg as f64);
    Some((rank_sum - p * (p + 1.0) / 2.0) / (p * n))
}

/// One row of a calibration table.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct CalibrationBin {
    /// Lower edge of the predicted-probability bin.
    pub lo: f64,
    /// Upper edge.
    pub hi: f64,
    /// Tasks whose prediction fell in the bin.
    pub count: usize,
    /// Mean predicted probability in the bin.
    pub mean_predicted: f64,
    /// Observed success rate in the bin.
    pub observed: f64,
}

/// Calibration table over `bins` equal-width bins of [0, 1] (empty bins left out; a
/// prediction of exactly 1 falls in the last bin).
pub fn calibration(scores: &[f64], labels: &[bool], bins: usize) -> Vec<CalibrationBin> {
    let bins = bins.max(1);
    // Only occupied bins are kept: memory follows the scores, not the caller's `bins`.
    let mut acc: std::collections::BTreeMap<usize, (usize, f64, usize)> = Default::default();
    for (&s, &l) in scores.iter().zip(labels) {
        let b = ((s.clamp(0.0, 1.0) * bins as f64) as usize).min(bins - 1);
        let a = acc.entry(b).or_default();
        a.0 += 1;
        a.1 += s;
        a.2 += usize::from(l);
    }
    acc.into_iter()
        .map(|(b, (n, sum, pos))| CalibrationBin {
            lo: b as f64 / bins as f64,
            hi: (b + 1) as f64 / bins as f64,
            count: n,
            mean_predicted: sum / n as f64,
            observed: pos as f64 / n as f64,
        })
        .collect()
}
