//! Task-success prediction before acting (METHOD.md section 6): the probability that a new
//! task succeeds, from the outcomes of stored trajectories with similar goals.
//!
//! The estimate is a similarity-weighted vote of the `k` nearest self-generated trajectories
//! on the `goal` key (successes and failures; relabelled trajectories are left out because
//! they are successes by construction), shrunk towards a prior:
//!
//! ```text
//! p = (prior_weight * prior + sum_i w_i * o_i) / (prior_weight + sum_i w_i),
//! w_i = max(0, sim_i) ^ power
//! ```
//!
//! where `prior` is the success rate of all stored self-generated trajectories.

use serde::Serialize;

use crate::agent::AgentResult;
use crate::{Database, Embedder, Filter, ProvenanceKind};

/// Settings of the predictor.
#[derive(Debug, Clone, Copy)]
pub struct Predictor {
    /// Neighbours used. Default 20.
    pub k: usize,
    /// Weight of the prior, in units of a perfectly similar neighbour. Default 1.
    pub prior_weight: f64,
    /// Sharpening exponent on similarities. Default 4.
    pub power: f64,
}

impl Default for Predictor {
    fn default() -> Self {
        Predictor {
            k: 20,
            prior_weight: 1.0,
            power: 4.0,
        }
    }
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
    /// (see [`Predictor::prior`]).
    pub fn predict(
        &self,
        db: &Database,
        embedder: &dyn Embedder,
        goal: &str,
        prior: f64,
    ) -> AgentResult<f64> {
        let q = embedder.embed(goal)?;
        let hits = db.search_as(
            "goal",
            &q,
            self.k,
            &Filter {
                provenance: Some(ProvenanceKind::SelfGenerated),
                ..Default::default()
            },
            Some(&embedder.id()),
        )?;
        let mut num = self.prior_weight * prior;
        let mut den = self.prior_weight;
        for h in hits {
            let o = match db.get(h.id)?.outcome.success {
                Some(o) => f64::from(u8::from(o)),
                None => continue,
            };
            let w = f64::from(h.score.max(0.0)).powf(self.power);
            num += w * o;
            den += w;
        }
        Ok(if den > 0.0 { num / den } else { prior })
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
    let mut acc = vec![(0usize, 0.0f64, 0usize); bins];
    for (&s, &l) in scores.iter().zip(labels) {
        let b = ((s.clamp(0.0, 1.0) * bins as f64) as usize).min(bins - 1);
        acc[b].0 += 1;
        acc[b].1 += s;
        acc[b].2 += usize::from(l);
    }
    acc.iter()
        .enumerate()
        .filter(|(_, a)| a.0 > 0)
        .map(|(b, &(n, sum, pos))| CalibrationBin {
            lo: b as f64 / bins as f64,
            hi: (b + 1) as f64 / bins as f64,
            count: n,
            mean_predicted: sum / n as f64,
            observed: pos as f64 / n as f64,
        })
        .collect()
}
