//! A quantised first pass that keeps search exact.
//!
//! Each stored row `x` (as the key file holds it: unit vectors in cosine spaces) gets an i8
//! copy: `scale = max_i |x_i| / 127` (rounded to f32), `code_i = round(x_i / scale)` in
//! [-127, 127], so `x̂ = scale * code` and, computed in f64 and rounded up, the row's
//! quantisation error `e = |x - x̂|` and magnitude `m = |x| + |x̂|`.
//!
//! For a query `q`, the pass quantises the query too: `sq = max_i |q_i| / 2047` (f64),
//! `c_i = round(q_i / sq)` (i16, |c_i| <= 2047), `q̂ = sq * c`, and `d = |q - q̂|` (f64,
//! rounded up). It computes the exact integer `code · c` with the integer kernel (a quarter
//! of the bytes of the f32 rows; no rounding) and `a = scale * sq * (code · c)` in f64, and
//! a bound `b` with `|s - a| <= b`, where `s` is the score the f32 kernel gives the row:
//!
//! - `|x·q - x̂·q| <= e |q|` and `|x̂·q - x̂·q̂| <= |x̂| d <= m d` (Cauchy-Schwarz), and
//!   `x̂·q̂ = scale * sq * (code · c)` exactly;
//! - the f32 kernel's rounding is at most `γ |x| |q| <= γ m |q|`, with
//!   `γ = 2 (dims / 8 + 4) 2^-24` (recursive summation of `dims / 8` terms per lane plus the
//!   horizontal sum, doubled; Higham, *Accuracy and Stability of Numerical Algorithms*,
//!   2nd ed., §3.1);
//! - the f64 products forming `a` and the sums forming `b` round by far less than
//!   `4 * 2^-24 |a|`.
//!
//! So `b = (e + γ m) |q| + m d + 2^-22 |a|`, formed in f64 and rounded up. Let `L` be the
//! k-th largest lower bound `a - b` over the rows that pass the filter. At least k rows have
//! `s >= L`, so the k-th best score is at least `L`; a row with `a + b < L` scores below it
//! and cannot be in the top k, nor tie with it. The rows with `a + b >= L` are scored again
//! with the f32 kernel on their f32 rows and ranked exactly as a full scan ranks them (the
//! row kernel gives a row the same bits alone or in a block), so the answer is the full
//! scan's, bit for bit, with typically tens to hundreds of rows rescored.
//!
//! Cosine and dot spaces use it; L2 spaces are scanned in f32. The i8 copy is derived and
//! in memory only (about `dims + 12` bytes per row, a quarter of the f32 rows), built on a
//! space's first search and extended as rows are appended; no byte on disk changes.

use crate::format::codec::off;
use crate::format::record::Metric;
use crate::index::sidecar::{BodyReader, BodyWriter};
use crate::index::simd::{dot_i8_i16_rows, dot_i8_i16_rows_at, prefetch, QUERY_CODE_MAX};
use crate::storage::mmap::SharedArray;

/// Spaces with fewer rows than this are scanned in f32 only: the first pass would not pay.
pub(crate) const MIN_ROWS: usize = 4096;

/// Unit roundoff of f32.
const U: f64 = 1.0 / (1u64 << 24) as f64;

/// Rounds `x` up into f32.
fn up(x: f64) -> f32 {
    let f = x as f32;
    if f64::from(f) < x {
        f.next_up()
    } else {
        f
    }
}

/// An f32 at or above `x` (finite `x`), without a branch on the data: `x` is first
/// raised by `2^-23 |x| + 2^-148`, more than half an f32 unit in the last place of the
/// result (normal or subnormal), and then rounded to nearest. At most four units above
/// the exact round-up [`up`]; values above f32's range become infinite, values below it
/// the lowest f32.
#[inline]
fn up_nearby(x: f64) -> f32 {
    const REL: f64 = 1.0 / (1u64 << 23) as f64;
    const ABS: f64 = 1.0 / (1u128 << 127) as f64 / (1u64 << 21) as f64;
    ((x + x.abs() * REL + ABS) as f32).max(f32::MIN)
}

/// The i8 copy of a key space's rows.
#[derive(Debug, Default)]
pub(crate) struct QuantRows {
    /// Dimensions rounded up to a multiple of 16 (codes past `dims` are zero).
    padded: usize,
    /// Rows covered.
    rows: usize,
    /// A view of a search-bounds file after a load, copied on the first extension.
    codes: SharedArray<i8>,
    /// Per row: `scale`, `e`, `m` (module documentation).
    meta: SharedArray<[f32; 3]>,
}

/// What one first pass found: candidate rows and the threshold they must reach.
pub(crate) struct Candidates {
    /// (upper bound, row) of every row whose upper bound reached the threshold when seen.
    pub(crate) rows: Vec<(f32, u32)>,
    /// The k-th largest lower bound (`-inf` when fewer than k rows passed).
    pub(crate) threshold: f32,
}

impl QuantRows {
    /// Whether rows beyond those covered exist.
    pub(crate) fn is_behind(&self, rows: usize) -> bool {
        rows != self.rows
    }

    /// Brings the copy up to date with `rows` (row-major, `dims` floats each). Rows are
    /// only ever appended; fewer rows than covered (a new state) rebuilds it.
    pub(crate) fn extend(&mut self, rows: &[f32], dims: usize) {
        if dims == 0 {
            return;
        }
        let n = rows.len() / dims;
        let padded = dims.div_ceil(16) * 16;
        if n < self.rows || self.padded != padded {
            *self = QuantRows {
                padded,
                ..QuantRows::default()
            };
        }
        if n == self.rows {
            return;
        }
        let codes = self.codes.to_mut();
        let metas = self.meta.to_mut();
        codes.reserve((n - self.rows) * padded);
        metas.reserve(n - self.rows);
        for row in rows[self.rows * dims..n * dims].chunks_exact(dims) {
            let peak = row.iter().fold(0f32, |m, x| m.max(x.abs()));
            let scale = peak / 127.0;
            let (mut e2, mut x2, mut h2) = (0f64, 0f64, 0f64);
            for &x in row {
                let c = if scale > 0.0 {
                    (x / scale).round().clamp(-127.0, 127.0)
                } else {
                    0.0
                };
                // Exact: |c| <= 127 and the value fits in i8.
                codes.push(c as i8);
                let xh = f64::from(c) * f64::from(scale);
                e2 += (f64::from(x) - xh).powi(2);
                x2 += f64::from(x).powi(2);
                h2 += xh * xh;
            }
            codes.extend(std::iter::repeat_n(0, padded - dims));
            metas.push([scale, up(e2.sqrt()), up(x2.sqrt() + h2.sqrt())]);
        }
        self.rows = n;
    }

    /// Bounds on the score of every row `r` with `keep(r)` against `q` (the prepared
    /// query, `dims` floats) under `metric` (cosine or dot):
    /// calls `emit(r, lo, hi)` in row order with `lo <= s <= hi` for the f32 kernel's score
    /// `s` of the row (module documentation). `keep` is called once per row, in row order.
    pub(crate) fn bounds(
        &self,
        metric: Metric,
        q: &[f32],
        mut keep: impl FnMut(usize) -> bool,
        mut emit: impl FnMut(usize, f32, f32),
    ) {
        const BLOCK: usize = 64;
        let padded = self.padded;
        let Some(qq) = QueryCodes::new(metric, q, padded) else {
            return;
        };
        let mut dots = [0i64; BLOCK];
        let mut his = [0f32; BLOCK];
        let mut los = [0f32; BLOCK];
        let mut at = [0u32; BLOCK];
        for (b, block) in self.codes.chunks(BLOCK * padded).enumerate() {
            let base = b * BLOCK;
            let m = block.len() / padded;
            // The rows of the block that pass, as positions `base + i`.
            let mut kept = 0;
            for i in 0..m {
                if keep(base + i) {
                    at[kept] = u32::try_from(i).unwrap_or(u32::MAX);
                    kept += 1;
                }
            }
            if kept == 0 {
                continue;
            }
            // A block with rows filtered out reads only the rows that pass.
            if kept == m {
                dot_i8_i16_rows(block, padded, &qq.codes, &mut dots[..m]);
            } else {
                dot_i8_i16_rows_at(block, padded, &qq.codes, &at[..kept], &mut dots[..kept]);
            }
            // Branch-free, so this loop does not stall on the data: the bounds of every
            // kept row of the block first, then the calls.
            for (t, &i) in at[..kept].iter().enumerate() {
                (los[t], his[t]) = qq.bound(self.meta[base + i as usize], dots[t]);
            }
            for (t, &i) in at[..kept].iter().enumerate() {
                emit(base + i as usize, los[t], his[t]);
            }
        }
    }

    /// The first pass for the top `k` (see [`bounds`](Self::bounds) for the arguments):
    /// the rows whose upper bound reaches the k-th largest lower bound.
    pub(crate) fn first_pass(
        &self,
        metric: Metric,
        q: &[f32],
        k: usize,
        keep: impl FnMut(usize) -> bool,
    ) -> Candidates {
        // The k largest lower bounds, smallest on top.
        let mut lows: std::collections::BinaryHeap<std::cmp::Reverse<Ord32>> =
            std::collections::BinaryHeap::with_capacity(k.saturating_add(1));
        let mut threshold = f32::NEG_INFINITY;
        let mut rows = Vec::new();
        self.bounds(metric, q, keep, |r, lo, hi| {
            if k > 0 {
                if lows.len() < k {
                    lows.push(std::cmp::Reverse(Ord32(lo)));
                } else if lows.peek().is_some_and(|t| lo > t.0 .0) {
                    lows.pop();
                    lows.push(std::cmp::Reverse(Ord32(lo)));
                }
                if lows.len() == k {
                    threshold = lows.peek().map_or(f32::NEG_INFINITY, |t| t.0 .0);
                }
            }
            if hi >= threshold {
                rows.push((hi, u32::try_from(r).unwrap_or(u32::MAX)));
            }
        });
        Candidates { rows, threshold }
    }

    /// Rows covered.
    pub(crate) fn rows(&self) -> usize {
        self.rows
    }

    /// Appends the copy to a bounds-file body: padded dims, rows, the codes, then per row
    /// `scale`, `e`, `m` (`format-spec.md`, "Search-bounds files").
    pub(crate) fn write_body(&self, w: &mut BodyWriter) {
        w.u64(off(self.padded));
        w.u64(off(self.rows));
        w.i8s(&self.codes);
        let meta: Vec<f32> = self.meta.iter().flatten().copied().collect();
        w.f32s(&meta);
    }

    /// Reads a copy written by [`write_body`](Self::write_body) for rows of `dims`
    /// dimensions, checking that its shape is the one [`extend`](Self::extend) makes and
    /// that every bound term is finite and non-negative.
    pub(crate) fn read_body(r: &mut BodyReader<'_>, dims: usize) -> Result<Self, String> {
        let padded = r.u64("quantised copy: padded dimensions")?;
        let rows = r.u64("quantised copy: rows")?;
        let want_padded = off(dims.div_ceil(16) * 16);
        if rows > 0 && padded != want_padded {
            return Err(format!(
                "quantised copy: {padded} padded dimensions, expected {want_padded}"
            ));
        }
        let n_codes = rows
            .checked_mul(padded)
            .ok_or("quantised copy: code count overflows")?;
        let codes = r.i8s_shared(n_codes, "quantised copy: codes")?;
        if codes.contains(&i8::MIN) {
            return Err("quantised copy: a code is -128".into());
        }
        let meta = r.f32x3s_shared(rows, "quantised copy: row terms")?;
        if meta.iter().flatten().any(|x| !x.is_finite() || *x < 0.0) {
            return Err("quantised copy: a row term is negative or not finite".into());
        }
        Ok(QuantRows {
            padded: usize::try_from(padded).map_err(|e| e.to_string())?,
            rows: usize::try_from(rows).map_err(|e| e.to_string())?,
            codes,
            meta,
        })
    }

    /// Bytes held.
    #[cfg(test)]
    pub(crate) fn bytes(&self) -> usize {
        self.codes.len() + self.meta.len() * 12
    }
}

/// A query's codes and the query terms of the bound (module documentation).
struct QueryCodes {
    metric: Metric,
    /// `padded` i16 codes, zero past the query's dimensions.
    codes: Vec<i16>,
    /// The step `sq`.
    sq: f64,
    /// `|q|`.
    q_norm: f64,
    /// `γ |q| + d`: the factor of a row's magnitude `m` in the bound.
    per_mag: f64,
}

impl QueryCodes {
    /// The codes of `q` (the prepared query) for a copy of `padded` dimensions, or `None`
    /// when the copy cannot score it.
    fn new(metric: Metric, q: &[f32], padded: usize) -> Option<Self> {
        if padded == 0 || q.len() > padded {
            return None;
        }
        // Sums and maxima over eight lanes, which the compiler keeps in vector registers:
        // one chain of dependent f64 adds per quantity and `f64::round` (a call into libm)
        // made preparing the query a twentieth of a search at ef 12 (100k rows). The sums
        // are a different order of the same f64 additions, their rounding as far inside the
        // bound's `2^-22 |a|` term as before.
        const LANES: usize = 8;
        let mut sum = [0f64; LANES];
        let mut top = [0f64; LANES];
        for chunk in q.chunks(LANES) {
            // A short last chunk is padded with zeros, which add nothing to either.
            let mut x8 = [0f32; LANES];
            x8[..chunk.len()].copy_from_slice(chunk);
            for l in 0..LANES {
                let x = f64::from(x8[l]);
                sum[l] += x * x;
                top[l] = top[l].max(x.abs());
            }
        }
        let q_norm = sum.iter().sum::<f64>().sqrt();
        let peak = top.iter().fold(0f64, |m, &x| m.max(x));
        let sq = peak / f64::from(QUERY_CODE_MAX);
        let inv = if sq > 0.0 { 1.0 / sq } else { 0.0 };
        let max = f64::from(QUERY_CODE_MAX);
        let mut codes = vec![0i16; padded];
        let mut err = [0f64; LANES];
        for (cs, xs) in codes.chunks_mut(LANES).zip(q.chunks(LANES)) {
            let mut x8 = [0f32; LANES];
            x8[..xs.len()].copy_from_slice(xs);
            let mut c8 = [0i16; LANES];
            for l in 0..LANES {
                let x = f64::from(x8[l]);
                // The nearest code (half away from zero): `as` truncates toward zero, and
                // |code| <= QUERY_CODE_MAX fits in i16. Any code would do for correctness:
                // the bound is of the codes chosen, `err` summing their actual errors.
                c8[l] = (x * inv + 0.5f64.copysign(x)).clamp(-max, max) as i16;
                let e = x - f64::from(c8[l]) * sq;
                err[l] += e * e;
            }
            let n = cs.len().min(xs.len());
            cs[..n].copy_from_slice(&c8[..n]);
        }
        let d2: f64 = err.iter().sum();
        let d = f64::from(up(d2.sqrt()));
        let gamma = 2.0 * (padded as f64 / 8.0 + 4.0) * U;
        Some(QueryCodes {
            metric,
            codes,
            sq,
            q_norm,
            // `(e + γ m) |q| + m d` as `e |q| + m (γ |q| + d)`: the f64 rounding of either
            // form is far inside the `2^-22 |a|` term.
            per_mag: gamma * q_norm + d,
        })
    }

    /// `(lo, hi)` with `lo <= s <= hi` for the f32 kernel's score `s` of the row with terms
    /// `[scale, e, m]` whose codes give `dot` against these codes (module documentation).
    #[inline]
    fn bound(&self, [scale, e, mag]: [f32; 3], dot: i64) -> (f32, f32) {
        // Exact in f64: |code · c| < 2^53.
        let a = dot as f64 * f64::from(scale) * self.sq;
        let bound = f64::from(e) * self.q_norm + f64::from(mag) * self.per_mag + 4.0 * U * a.abs();
        let clamp = |x: f32| {
            if self.metric == Metric::Cosine {
                x.clamp(-1.0, 1.0)
            } else {
                x
            }
        };
        (clamp(-up_nearby(-(a - bound))), clamp(up_nearby(a + bound)))
    }
}

/// A query quantised for a graph walk over the i8 copy (module `index::graph`): it scores
/// a row `r` as `scale_r * (code_r · c)`, the quantised dot product `x̂ · q̂` without the
/// query's positive step `sq`, so it ranks rows as `x̂ · q̂` does. It reads one byte per
/// dimension (a 64-byte cache line per 64 dimensions, against four for the f32 row) and
/// the row's scale. The rows a walk finds are then rescored with the f32 kernel; the
/// module's bounds ([`bounds`](Self::bounds)) say which of them can be in the top k, so only
/// those are read in f32 and the scores returned are the exact ones.
pub(crate) struct WalkQuery<'a> {
    copy: &'a QuantRows,
    q: QueryCodes,
}

impl<'a> WalkQuery<'a> {
    /// The walk query for `q` (the prepared query of a `metric` space, cosine or dot), or
    /// `None` when the copy cannot score it (no rows, or more dimensions than the copy's).
    pub(crate) fn new(copy: &'a QuantRows, metric: Metric, q: &[f32]) -> Option<Self> {
        let q = QueryCodes::new(metric, q, copy.padded)?;
        Some(WalkQuery { copy, q })
    }

    /// Rows the copy covers: rows `0..covered()` can be scored.
    pub(crate) fn covered(&self) -> usize {
        self.copy.rows
    }

    /// Starts loading what [`score`](Self::score) reads of row `r`: its codes and scale.
    #[inline]
    pub(crate) fn prefetch(&self, r: usize) {
        let p = self.copy.padded;
        if let Some(codes) = self.copy.codes.get(r * p..(r + 1) * p) {
            prefetch(codes);
        }
        if let Some(m) = self.copy.meta.get(r..r + 1) {
            prefetch(m);
        }
    }

    /// The exact integer `code_r · c` and the terms of row `r`, if the copy covers it.
    #[inline]
    fn dot(&self, r: usize) -> Option<(i64, [f32; 3])> {
        let p = self.copy.padded;
        let row = self.copy.codes.get(r * p..(r + 1) * p)?;
        let m = *self.copy.meta.get(r)?;
        let mut dot = [0i64];
        dot_i8_i16_rows(row, p, &self.q.codes, &mut dot);
        Some((dot[0], m))
    }

    /// The walk score of row `r` (`-inf` past the copy).
    #[inline]
    pub(crate) fn score(&self, r: usize) -> f32 {
        // |dot| < 2^53 and the product rounds once: finite for finite scales.
        self.dot(r).map_or(f32::NEG_INFINITY, |(dot, m)| {
            (dot as f64 * f64::from(m[0])) as f32
        })
    }

    /// The walk scores of rows `ids` into `out` (as many as both hold), the same values as
    /// [`score`](Self::score) one by one, in one pass of the gathering kernel
    /// (`dot_i8_i16_rows_at`), which keeps the loads of the rows eight ahead in flight.
    pub(crate) fn score_many(&self, ids: &[u32], out: &mut [f32]) {
        const MAX: usize = 64;
        for (ids, out) in ids.chunks(MAX).zip(out.chunks_mut(MAX)) {
            let n = ids.len().min(out.len());
            let (ids, out) = (&ids[..n], &mut out[..n]);
            // The scales first (12 bytes each, scattered) and the first rows, which the
            // kernel's own prefetch does not cover.
            for &r in ids {
                if let Some(m) = self.copy.meta.get(r as usize..r as usize + 1) {
                    prefetch(m);
                }
            }
            for &r in ids.iter().take(8) {
                self.prefetch(r as usize);
            }
            let mut dots = [0i64; MAX];
            let covered = ids.iter().all(|&r| (r as usize) < self.copy.rows);
            if !covered {
                for (o, &r) in out.iter_mut().zip(ids) {
                    *o = self.score(r as usize);
                }
                continue;
            }
            dot_i8_i16_rows_at(
                &self.copy.codes,
                self.copy.padded,
                &self.q.codes,
                ids,
                &mut dots[..n],
            );
            for ((o, &r), &dot) in out.iter_mut().zip(ids).zip(&dots[..n]) {
                // As `score`: |dot| < 2^53 and the product rounds once.
                *o = self
                    .copy
                    .meta
                    .get(r as usize)
                    .map_or(f32::NEG_INFINITY, |m| (dot as f64 * f64::from(m[0])) as f32);
            }
        }
    }

    /// `(lo, hi)` with `lo <= s <= hi` for the f32 kernel's score `s` of row `r` (as
    /// [`QuantRows::bounds`] gives it); `None` past the copy.
    pub(crate) fn bounds(&self, r: usize) -> Option<(f32, f32)> {
        self.dot(r).map(|(dot, m)| self.q.bound(m, dot))
    }
}

/// f32 with a total order (no NaN reaches here: bounds of finite scores).
#[derive(Debug, Clone, Copy, PartialEq)]
struct Ord32(f32);
impl Eq for Ord32 {}
impl PartialOrd for Ord32 {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Ord32 {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        self.0.total_cmp(&o.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::kernels::{normalise_in_place, Prepared};
    use crate::rng::SplitMix64;

    fn vecs(rng: &mut SplitMix64, n: usize, dims: usize, scale: f32) -> Vec<f32> {
        (0..n * dims)
            .map(|_| ((rng.next_u64() >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale)
            .collect()
    }

    #[test]
    fn every_row_score_lies_within_its_bounds_and_the_top_k_are_candidates() {
        let mut rng = SplitMix64::new(21);
        for metric in [Metric::Cosine, Metric::Dot] {
            for dims in [1usize, 5, 8, 33, 384] {
                for scale in [1e-6f32, 1.0, 1e6] {
                    let n = 300;
                    let mut rows = vecs(&mut rng, n, dims, scale);
                    if metric == Metric::Cosine {
                        rows.chunks_mut(dims).for_each(normalise_in_place);
                    }
                    let mut qr = QuantRows::default();
                    qr.extend(&rows[..100 * dims], dims);
                    qr.extend(&rows, dims);
                    let q = vecs(&mut rng, 1, dims, scale);
                    let p = Prepared::new(metric, &q);
                    // k = n: every row is a candidate, with its upper bound; check bounds.
                    let all = qr.first_pass(metric, p.vector(), n, |_| true);
                    assert_eq!(all.rows.len(), n);
                    let exact: Vec<f32> = rows.chunks_exact(dims).map(|r| p.score(r)).collect();
                    for &(hi, r) in &all.rows {
                        let s = exact[r as usize];
                        assert!(s <= hi, "{metric:?} dims {dims} scale {scale}: {s} > {hi}");
                    }
                    // Top 10 by exact score, every second row filtered out.
                    let k = 10;
                    let c = qr.first_pass(metric, p.vector(), k, |r| r % 2 == 0);
                    let mut order: Vec<usize> = (0..n).filter(|r| r % 2 == 0).collect();
                    order.sort_by(|&a, &b| exact[b].total_cmp(&exact[a]).then(a.cmp(&b)));
                    let kth = exact[order[k - 1]];
                    assert!(c.threshold <= kth, "threshold {} > kth {kth}", c.threshold);
                    for &r in &order[..k] {
                        assert!(
                            c.rows
                                .iter()
                                .any(|&(hi, cr)| cr as usize == r && hi >= c.threshold),
                            "{metric:?} dims {dims}: top row {r} is not a candidate"
                        );
                    }
                    assert!(c.rows.iter().all(|&(_, r)| r % 2 == 0));
                }
            }
        }
    }

    #[test]
    fn the_branch_free_round_up_is_never_below_and_at_most_four_units_above_the_exact_one() {
        let mut rng = SplitMix64::new(5);
        let mut checked = 0;
        for _ in 0..200_000 {
            // Magnitudes from f32's subnormals to past its largest value, both signs.
            let mant = (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64 + 0.5;
            let exp = (rng.next_u64() % 300) as i32 - 160;
            let sign = if rng.next_u64() & 1 == 0 { 1.0 } else { -1.0 };
            let x = sign * mant * 2f64.powi(exp);
            let got = up_nearby(x);
            assert!(f64::from(got) >= x, "{x:e}: {got:e} is below it");
            let exact = up(x);
            if exact.is_finite() {
                assert!(
                    got <= exact.next_up().next_up().next_up().next_up(),
                    "{x:e}: {got:e} is more than four units above {exact:e}"
                );
                checked += 1;
            }
        }
        assert!(checked > 100_000);
        for x in [
            0.0,
            -0.0,
            f64::from(f32::MAX),
            f64::from(f32::MIN_POSITIVE),
            1e-46,
        ] {
            assert!(f64::from(up_nearby(x)) >= x);
        }
    }

    #[test]
    fn the_copy_is_a_quarter_of_the_rows_and_rebuilds_when_rows_shrink() {
        let mut rng = SplitMix64::new(3);
        let rows = vecs(&mut rng, 50, 384, 1.0);
        let mut qr = QuantRows::default();
        qr.extend(&rows, 384);
        assert_eq!(qr.bytes(), 50 * (384 + 12));
        assert!(!qr.is_behind(50));
        qr.extend(&rows[..10 * 384], 384);
        assert_eq!(qr.bytes(), 10 * (384 + 12));
    }

    #[test]
    fn walk_bounds_hold_every_f32_score_and_walk_scores_rank_as_the_bounds_centre() {
        let mut rng = SplitMix64::new(5);
        for metric in [Metric::Cosine, Metric::Dot] {
            for dims in [3usize, 16, 100, 384] {
                let n = 200;
                let mut rows = vecs(&mut rng, n, dims, 1.0);
                if metric == Metric::Cosine {
                    rows.chunks_mut(dims).for_each(normalise_in_place);
                }
                let mut qr = QuantRows::default();
                qr.extend(&rows, dims);
                let q = vecs(&mut rng, 1, dims, 1.0);
                let p = Prepared::new(metric, &q);
                let wq = WalkQuery::new(&qr, metric, p.vector()).expect("walk query");
                assert_eq!(wq.covered(), n);
                let mut via_bounds: Vec<(f32, f32)> = Vec::new();
                qr.bounds(
                    metric,
                    p.vector(),
                    |_| true,
                    |_, lo, hi| via_bounds.push((lo, hi)),
                );
                for (r, row) in rows.chunks_exact(dims).enumerate() {
                    let (lo, hi) = wq.bounds(r).expect("row covered");
                    assert_eq!((lo, hi), via_bounds[r], "same bounds as the first pass");
                    let s = p.score(row);
                    assert!(
                        lo <= s && s <= hi,
                        "{metric:?} dims {dims} row {r}: {s} not in [{lo}, {hi}]"
                    );
                }
                // Walk scores are the quantised dot products without the query's step:
                // their order is that of the bounds' centres.
                let mut by_walk: Vec<usize> = (0..n).collect();
                by_walk.sort_by(|&a, &b| wq.score(b).total_cmp(&wq.score(a)));
                let centre = |r: usize| {
                    let (lo, hi) = wq.bounds(r).unwrap();
                    f64::from(lo) + f64::from(hi)
                };
                for w in by_walk.windows(2) {
                    assert!(
                        centre(w[0]) >= centre(w[1]) - 1e-5,
                        "{metric:?} dims {dims}: walk order disagrees with the bounds"
                    );
                }
                assert_eq!(wq.score(n), f32::NEG_INFINITY, "past the copy");
                assert!(wq.bounds(n).is_none());
                // Scoring many at once (any order, repeats, more than one chunk, one past
                // the copy) gives each row's own score, bit for bit.
                let mut ids: Vec<u32> = (0..n as u32).rev().chain([3, 3, 0]).collect();
                ids.push(n as u32);
                let mut many = vec![0f32; ids.len()];
                wq.score_many(&ids, &mut many);
                for (&r, &got) in ids.iter().zip(&many) {
                    assert_eq!(
                        got.to_bits(),
                        wq.score(r as usize).to_bits(),
                        "{metric:?} dims {dims} row {r}"
                    );
                }
            }
        }
    }
}
