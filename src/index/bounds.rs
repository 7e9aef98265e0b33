//! Per-trajectory upper bounds on step-key similarity, so that retrieval can skip the step
//! rows of trajectories that cannot reach the top k and still return exactly what a full
//! scan returns.
//!
//! For each trajectory with rows in a step-level key space, the bound keeps the trajectory's
//! contiguous row range, the centroid `c` of its step keys and the radius
//! `r = max_i |s_i - c|` (Euclidean). For every step key `s_i` and query `q`:
//!
//! - dot: `q·s_i = q·c + q·(s_i - c) <= q·c + |q| r` (Cauchy-Schwarz);
//! - cosine: the same over unit vectors: with `c`, `r` computed over `s_i / |s_i|`,
//!   `cos(q, s_i) <= q̂·c + r`, and never above 1;
//! - L2 (score `-|q - s_i|`): `|q - s_i| >= |q - c| - r` (triangle inequality), so the
//!   score is at most `-max(0, |q - c| - r)`.
//!
//! Bounds are computed in f64 and widened by a margin larger than the kernels' stated error
//! (relative 1e-4, `kernels` module), so a row the kernel would score above the bound does
//! not exist. The cache is derived, in memory only: built on first use from the mapped rows
//! and extended as rows are appended (a trajectory's rows are appended in one commit, so
//! they are contiguous); no byte on disk changes.

use crate::format::codec::off;
use crate::format::record::Metric;
use crate::index::kernels::Prepared;
use crate::index::quant::{self, QuantRows};
use crate::index::sidecar::{BodyReader, BodyWriter};
use crate::storage::mmap::SharedArray;

/// Slack added to every bound, relative to the magnitude of the score it bounds. The
/// kernels agree with the f64 reference to 1e-4 relative; 1e-3 leaves a tenfold margin.
const MARGIN: f64 = 1e-3;

/// Marks a slot with no rows in the space.
const NONE: u32 = u32::MAX;

/// One trajectory's step rows in one step-level key space.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Group {
    /// First row (index into the key file's rows).
    pub(crate) first: usize,
    /// One past the last row.
    pub(crate) end: usize,
    /// Radius of the step keys around the centroid (over unit vectors for cosine).
    radius: f64,
    /// Largest key norm (dot: bounds the margin's scale).
    max_norm: f64,
}

/// The bounds of every trajectory in one step-level key space.
#[derive(Debug, Default)]
pub(crate) struct StepBounds {
    /// Rows covered so far.
    rows_seen: usize,
    /// Group index per trajectory slot (`NONE` when the slot has no rows here).
    group_of_slot: Vec<u32>,
    groups: Vec<Group>,
    /// Slot of each group.
    slot_of_group: Vec<u32>,
    /// Centroids, `dims` f32 per group.
    /// (A view of a search-bounds file after a load, copied on the first extension.)
    centroids: SharedArray<f32>,
    /// False when rows of one slot were found apart; retrieval then scans every row.
    pub(crate) usable: bool,
    /// The i8 copy of the centroids (cosine and dot; module `index::quant`), so the bound
    /// pass reads a quarter of the bytes once there are `quant::MIN_ROWS` groups.
    quant: QuantRows,
}

/// Rounds a bound up into f32, so the comparison with f32 scores stays conservative.
fn round_up(bound: f64) -> f32 {
    let b = bound as f32;
    if f64::from(b) < bound {
        b.next_up()
    } else {
        b
    }
}

fn norm(v: &[f32]) -> f64 {
    v.iter()
        .map(|&x| f64::from(x) * f64::from(x))
        .sum::<f64>()
        .sqrt()
}

impl StepBounds {
    /// Whether rows beyond those covered exist.
    pub(crate) fn is_behind(&self, rows: usize) -> bool {
        rows != self.rows_seen
    }

    /// Brings the bounds up to date with `rows` (row-major, `dims` each), whose row `r`
    /// belongs to slot `slot_of_row(r)`. Rows are only ever appended; if fewer rows exist
    /// than were seen (a new state replaced the old), the bounds are rebuilt.
    pub(crate) fn extend(
        &mut self,
        metric: Metric,
        rows: &[f32],
        dims: usize,
        slot_of_row: impl Fn(usize) -> u32,
    ) {
        if dims == 0 {
            return;
        }
        let n = rows.len() / dims;
        if n < self.rows_seen || self.rows_seen == 0 {
            *self = StepBounds {
                usable: true,
                ..StepBounds::default()
            };
        }
        let mut r = self.rows_seen;
        while r < n {
            let slot = slot_of_row(r);
            let mut end = r + 1;
            while end < n && slot_of_row(end) == slot {
                end += 1;
            }
            let s = slot as usize;
            if self.group_of_slot.len() <= s {
                self.group_of_slot.resize(s + 1, NONE);
            }
            if self.group_of_slot[s] != NONE {
                // Rows of one slot apart from each other: the contiguity this cache relies
                // on does not hold, so it is not used.
                self.usable = false;
            }
            self.group_of_slot[s] = u32::try_from(self.groups.len()).unwrap_or(NONE);
            self.push_group(metric, &rows[r * dims..end * dims], dims, r, end, slot);
            r = end;
        }
        self.rows_seen = n;
        if metric != Metric::L2 && self.groups.len() >= quant::MIN_ROWS {
            self.quant.extend(&self.centroids, dims);
        }
    }

    fn push_group(
        &mut self,
        metric: Metric,
        rows: &[f32],
        dims: usize,
        first: usize,
        end: usize,
        slot: u32,
    ) {
        let unit = metric == Metric::Cosine;
        let scale = |row: &[f32]| -> f64 {
            if unit {
                let n = norm(row);
                if n > 0.0 {
                    1.0 / n
                } else {
                    0.0
                }
            } else {
                1.0
            }
        };
        let mut c = vec![0f64; dims];
        let mut max_norm = 0f64;
        for row in rows.chunks_exact(dims) {
            let s = scale(row);
            max_norm = max_norm.max(norm(row));
            for (ci, &x) in c.iter_mut().zip(row) {
                *ci += f64::from(x) * s;
            }
        }
        let count = (end - first) as f64;
        c.iter_mut().for_each(|x| *x /= count);
        // The centroid is kept in f32; the radius is measured from the f32 centroid so the
        // bound holds for the vector actually used.
        let c32: Vec<f32> = c.iter().map(|&x| x as f32).collect();
        let mut radius = 0f64;
        for row in rows.chunks_exact(dims) {
            let s = scale(row);
            let d2: f64 = row
                .iter()
                .zip(&c32)
                .map(|(&x, &cx)| {
                    let d = f64::from(x) * s - f64::from(cx);
                    d * d
                })
                .sum();
            radius = radius.max(d2.sqrt());
        }
        self.groups.push(Group {
            first,
            end,
            radius,
            max_norm,
        });
        self.slot_of_group.push(slot);
        self.centroids.to_mut().extend_from_slice(&c32);
    }

    /// The rows of `slot`, if it has any.
    pub(crate) fn group(&self, slot: usize) -> Option<(usize, Group)> {
        let g = *self.group_of_slot.get(slot)?;
        (g != NONE).then(|| (g as usize, self.groups[g as usize]))
    }

    /// An upper bound, for every query, of every bound [`upper_all`](Self::upper_all)
    /// gives under `metric`, when one exists without the query: cosine bounds are
    /// `min(t + r, 1) + 2 MARGIN`, so `1 + 2 MARGIN` (rounded up) bounds every step score.
    /// None for dot and L2, whose bounds grow with the query and the keys.
    pub(crate) fn query_free_upper(metric: Metric) -> Option<f32> {
        (metric == Metric::Cosine).then(|| round_up(1.0 + 2.0 * MARGIN))
    }

    /// (Tests: the f64 reference of [`upper_all`](Self::upper_all).)
    #[cfg(test)]
    /// An upper bound on the score of every row of group `g` against `query`, whose
    /// Euclidean norm is `query_norm`, under `metric`. Never below the true score.
    pub(crate) fn upper(
        &self,
        metric: Metric,
        g: usize,
        group: Group,
        query: &[f32],
        query_norm: f64,
    ) -> f32 {
        let dims = query.len();
        let c = &self.centroids[g * dims..(g + 1) * dims];
        let bound = match metric {
            Metric::Cosine => {
                if query_norm == 0.0 {
                    return f32::INFINITY;
                }
                let qc: f64 = query
                    .iter()
                    .zip(c)
                    .map(|(&q, &x)| f64::from(q) * f64::from(x))
                    .sum();
                (qc / query_norm + group.radius).min(1.0) + 2.0 * MARGIN
            }
            Metric::Dot => {
                let qc: f64 = query
                    .iter()
                    .zip(c)
                    .map(|(&q, &x)| f64::from(q) * f64::from(x))
                    .sum();
                qc + query_norm * group.radius + MARGIN * (1.0 + query_norm * group.max_norm)
            }
            Metric::L2 => {
                let d: f64 = query
                    .iter()
                    .zip(c)
                    .map(|(&q, &x)| {
                        let d = f64::from(q) - f64::from(x);
                        d * d
                    })
                    .sum::<f64>()
                    .sqrt();
                -(d - group.radius).max(0.0) + MARGIN * (1.0 + d + group.radius)
            }
        };
        round_up(bound)
    }

    /// [`upper`](Self::upper) for every group at once, into `out` (index = group): the
    /// query-centroid terms come from one blocked pass of the row kernel over the centroids
    /// (`q` prepared for `metric`), whose f32 error (module `simd`: below 1e-4 of
    /// `|q| |c|`) the margin covers. `query_norm` is the Euclidean norm of the query as
    /// given. Only the groups of slots with `keep(slot)` need a bound: with the quantised
    /// copy the others are not read and get `+inf` (still an upper bound). Returns how many
    /// centroids were read.
    pub(crate) fn upper_all(
        &self,
        metric: Metric,
        q: &Prepared,
        query_norm: f64,
        mut keep: impl FnMut(usize) -> bool,
        out: &mut Vec<f32>,
    ) -> usize {
        let dims = q.vector().len();
        out.clear();
        out.resize(self.groups.len(), f32::INFINITY);
        if dims == 0 {
            return 0;
        }
        let mut read = 0;
        if metric != Metric::L2 && !self.quant.is_behind(self.groups.len()) {
            // Upper bounds of `c·q` from the quantised copy (module `index::quant`).
            self.quant.bounds(
                metric,
                q.vector(),
                |g| keep(self.slot_of_group[g] as usize),
                |g, _, hi| {
                    out[g] = hi;
                    read += 1;
                },
            );
        } else {
            q.score_rows(&self.centroids, dims, out);
            read = self.groups.len();
        }
        for (o, group) in out.iter_mut().zip(&self.groups) {
            if *o == f32::INFINITY {
                continue;
            }
            let t = f64::from(*o);
            let bound = match metric {
                // `t` = c·q̂ (clamped to [-1, 1]).
                Metric::Cosine => (t + group.radius).min(1.0) + 2.0 * MARGIN,
                // `t` = c·q.
                Metric::Dot => {
                    t + query_norm * group.radius + MARGIN * (1.0 + query_norm * group.max_norm)
                }
                // `t` = -|q - c|.
                Metric::L2 => {
                    let d = -t;
                    -(d - group.radius).max(0.0) + MARGIN * (1.0 + d + group.radius)
                }
            };
            *o = round_up(bound);
        }
        read
    }

    /// Rows covered.
    pub(crate) fn rows(&self) -> usize {
        self.rows_seen
    }

    /// Appends the bounds to a bounds-file body (`format-spec.md`, "Search-bounds files"):
    /// rows covered, usable, slot and group counts, the group of each slot, per group its
    /// first and end rows, radius and largest norm, the slot of each group, the centroids,
    /// then their quantised copy.
    pub(crate) fn write_body(&self, w: &mut BodyWriter) {
        w.u64(off(self.rows_seen));
        w.u64(u64::from(self.usable));
        w.u64(off(self.group_of_slot.len()));
        w.u64(off(self.groups.len()));
        w.u32s(&self.group_of_slot);
        w.u64s(self.groups.iter().map(|g| off(g.first)));
        w.u64s(self.groups.iter().map(|g| off(g.end)));
        w.f64s(self.groups.iter().map(|g| g.radius));
        w.f64s(self.groups.iter().map(|g| g.max_norm));
        w.u32s(&self.slot_of_group);
        w.f32s(&self.centroids);
        self.quant.write_body(w);
    }

    /// Reads bounds written by [`write_body`](Self::write_body) for `rows` key rows of
    /// `dims` dimensions whose row `r` belongs to slot `slot_of_row(r)`, checking every
    /// group against the rows (contiguous, in order, all of one slot, covering them all)
    /// so that bounds of other rows are refused.
    pub(crate) fn read_body(
        r: &mut BodyReader<'_>,
        rows: usize,
        dims: usize,
        slot_of_row: impl Fn(usize) -> u32,
    ) -> Result<Self, String> {
        let rows_seen = r.u64("step bounds: rows")?;
        if rows_seen != off(rows) {
            return Err(format!("step bounds cover {rows_seen} rows, not {rows}"));
        }
        let usable = match r.u64("step bounds: usable")? {
            0 => false,
            1 => true,
            x => return Err(format!("step bounds: usable flag {x}")),
        };
        let n_slots = r.u64("step bounds: slots")?;
        let n_groups = r.u64("step bounds: groups")?;
        let group_of_slot = r.u32s(n_slots, "step bounds: group of each slot")?;
        let firsts = r.u64s(n_groups, "step bounds: first rows")?;
        let ends = r.u64s(n_groups, "step bounds: end rows")?;
        let radii = r.f64s(n_groups, "step bounds: radii")?;
        let norms = r.f64s(n_groups, "step bounds: largest norms")?;
        let slot_of_group = r.u32s(n_groups, "step bounds: slot of each group")?;
        let centroids = r.f32s_shared(
            n_groups
                .checked_mul(off(dims))
                .ok_or("step bounds: centroids overflow")?,
            "step bounds: centroids",
        )?;
        let quant = QuantRows::read_body(r, dims)?;
        let mut groups = Vec::with_capacity(firsts.len());
        let mut next = 0usize;
        for (g, &first) in firsts.iter().enumerate() {
            let bad = |what: &str| format!("step bounds: group {g}: {what}");
            let first = usize::try_from(first).map_err(|_| bad("first row"))?;
            let end = usize::try_from(ends[g]).map_err(|_| bad("end row"))?;
            if first != next || end <= first || end > rows {
                return Err(bad("rows out of order or out of range"));
            }
            let slot = *slot_of_group.get(g).ok_or_else(|| bad("no slot"))?;
            if (first..end).any(|row| slot_of_row(row) != slot) {
                return Err(bad("rows of another slot"));
            }
            let gi = u32::try_from(g).map_err(|_| bad("index"))?;
            let slot_us = usize::try_from(slot).map_err(|_| bad("slot"))?;
            if group_of_slot.get(slot_us) != Some(&gi) && usable {
                return Err(bad("its slot names another group"));
            }
            let (radius, max_norm) = (radii[g], norms[g]);
            if !(radius.is_finite() && radius >= 0.0 && max_norm.is_finite() && max_norm >= 0.0) {
                return Err(bad("radius or norm is negative or not finite"));
            }
            groups.push(Group {
                first,
                end,
                radius,
                max_norm,
            });
            next = end;
        }
        if next != rows {
            return Err("step bounds: the groups do not cover every row".into());
        }
        if group_of_slot
            .iter()
            .any(|&g| g != NONE && u64::from(g) >= n_groups)
        {
            return Err("step bounds: a slot names a group that does not exist".into());
        }
        if centroids.iter().any(|x| !x.is_finite()) {
            return Err("step bounds: a centroid is not finite".into());
        }
        if quant.rows() != groups.len() && quant.rows() != 0 {
            return Err("step bounds: the quantised centroids do not match the groups".into());
        }
        Ok(StepBounds {
            rows_seen: rows,
            group_of_slot,
            groups,
            slot_of_group,
            centroids,
            usable,
            quant,
        })
    }

    /// Number of groups (trajectories with rows here).
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.groups.len()
    }

    /// Slot of group `g`.
    #[cfg(test)]
    pub(crate) fn slot(&self, g: usize) -> u32 {
        self.slot_of_group[g]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::kernels::normalise_in_place;
    use crate::rng::SplitMix64;

    fn vecs(rng: &mut SplitMix64, n: usize, dims: usize, scale: f32) -> Vec<f32> {
        (0..n * dims)
            .map(|_| ((rng.next_u64() >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale)
            .collect()
    }

    #[test]
    fn bound_is_never_below_any_row_score_for_every_metric() {
        let mut rng = SplitMix64::new(5);
        for metric in [Metric::Cosine, Metric::Dot, Metric::L2] {
            for dims in [1usize, 3, 16, 97] {
                for scale in [1e-3f32, 1.0, 1e3] {
                    let lens = [1usize, 2, 7, 1, 12];
                    let total: usize = lens.iter().sum();
                    let mut rows = vecs(&mut rng, total, dims, scale);
                    if metric == Metric::Cosine {
                        // As the key file stores them.
                        rows.chunks_mut(dims).for_each(normalise_in_place);
                    }
                    let mut slot_of_row = Vec::new();
                    for (slot, &l) in lens.iter().enumerate() {
                        slot_of_row.extend(std::iter::repeat_n(slot as u32, l));
                    }
                    let mut b = StepBounds::default();
                    b.extend(metric, &rows, dims, |r| slot_of_row[r]);
                    assert!(b.usable);
                    assert_eq!(b.len(), lens.len());
                    for _ in 0..20 {
                        let q = vecs(&mut rng, 1, dims, scale);
                        let qn = norm(&q);
                        let pq = Prepared::new(metric, &q);
                        let mut all = Vec::new();
                        b.upper_all(metric, &pq, qn, |_| true, &mut all);
                        assert_eq!(all.len(), lens.len());
                        for slot in 0..lens.len() {
                            let (g, group) = b.group(slot).unwrap();
                            assert_eq!(b.slot(g), slot as u32);
                            let up = b.upper(metric, g, group, &q, qn);
                            for row in rows[group.first * dims..group.end * dims].chunks(dims) {
                                let s = pq.score(row);
                                for (how, bound) in [("upper", up), ("upper_all", all[g])] {
                                    assert!(
                                        s <= bound,
                                        "{metric:?} dims {dims} scale {scale}: score {s} > {how} {bound}"
                                    );
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn bounds_from_the_quantised_centroids_are_never_below_any_row_score() {
        let mut rng = SplitMix64::new(8);
        let dims = 12;
        let groups = quant::MIN_ROWS + 50;
        for metric in [Metric::Cosine, Metric::Dot] {
            let lens: Vec<usize> = (0..groups).map(|g| 1 + g % 3).collect();
            let total: usize = lens.iter().sum();
            let mut rows = vecs(&mut rng, total, dims, 1.0);
            if metric == Metric::Cosine {
                rows.chunks_mut(dims).for_each(normalise_in_place);
            }
            let mut slot_of_row = Vec::new();
            for (slot, &l) in lens.iter().enumerate() {
                slot_of_row.extend(std::iter::repeat_n(slot as u32, l));
            }
            let mut b = StepBounds::default();
            b.extend(metric, &rows, dims, |r| slot_of_row[r]);
            assert!(!b.quant.is_behind(groups), "the quantised copy is in use");
            for _ in 0..5 {
                let q = vecs(&mut rng, 1, dims, 1.0);
                let pq = Prepared::new(metric, &q);
                let mut all = Vec::new();
                b.upper_all(metric, &pq, norm(&q), |_| true, &mut all);
                for (g, group) in b.groups.iter().enumerate() {
                    for row in rows[group.first * dims..group.end * dims].chunks(dims) {
                        let s = pq.score(row);
                        assert!(s <= all[g], "{metric:?} group {g}: {s} > {}", all[g]);
                    }
                }
            }
        }
    }

    #[test]
    fn extending_in_pieces_equals_building_at_once() {
        let mut rng = SplitMix64::new(9);
        let dims = 8;
        let lens = [3usize, 1, 4, 2];
        let total: usize = lens.iter().sum();
        let rows = vecs(&mut rng, total, dims, 1.0);
        let mut slot_of_row = Vec::new();
        for (slot, &l) in lens.iter().enumerate() {
            slot_of_row.extend(std::iter::repeat_n(slot as u32, l));
        }
        let mut once = StepBounds::default();
        once.extend(Metric::Cosine, &rows, dims, |r| slot_of_row[r]);
        let mut pieces = StepBounds::default();
        // Extend at trajectory boundaries, as commits append whole trajectories.
        for upto in [3usize, 4, 8, 10] {
            pieces.extend(Metric::Cosine, &rows[..upto * dims], dims, |r| {
                slot_of_row[r]
            });
            assert!(!pieces.is_behind(upto));
        }
        assert_eq!(once.centroids[..], pieces.centroids[..]);
        assert_eq!(once.groups.len(), pieces.groups.len());
        for (a, b) in once.groups.iter().zip(&pieces.groups) {
            assert_eq!((a.first, a.end, a.radius), (b.first, b.end, b.radius));
        }
    }

    #[test]
    fn rows_of_one_slot_found_apart_make_the_bounds_unusable() {
        let rows = [1.0f32, 0.0, 0.0, 1.0, 1.0, 1.0];
        let slots = [0u32, 1, 0];
        let mut b = StepBounds::default();
        b.extend(Metric::Dot, &rows, 2, |r| slots[r]);
        assert!(!b.usable);
    }
}
