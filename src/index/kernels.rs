//! Similarity kernels, with a scalar reference that the tests hold them to. Scores are
//! similarities, higher is better: cosine = 1 - cosine distance, dot = inner product,
//! L2 = -(Euclidean distance).
//!
//! Two ways to score:
//! - stored rows ([`Prepared`], [`scan`]): the key files hold cosine keys normalised
//!   ([`normalised`], key-file version 2), a cosine query is normalised once per call, and
//!   every metric becomes one dot product or squared distance per row, computed by the
//!   blocked row kernel (module `simd`: four rows per pass over the query, AVX2 and FMA, or
//!   SimSIMD per row elsewhere). A row gets the same bits however it is scored (alone, in a
//!   block, in a batch), which exact pruning relies on.
//! - any two vectors ([`similarity`]): SimSIMD's pairwise kernels, for callers outside the
//!   index.
//!
//! # Numeric contract (element type f32, the only one stored today)
//!
//! What a vector may hold is checked by [`check_vector`], the same function on every way in
//! (append, import, `parse_record`, query), so the kernels only ever see:
//! - every component finite, with `|x| <= MAX_ABS_VALUE` (1e16), in every metric;
//! - in cosine spaces, at least one component with `|x| >= MIN_COSINE_PEAK` (1e-12): an
//!   all-zero vector (undefined cosine) and a vector whose squared norm would underflow
//!   f32 are both refused, for keys and queries alike.
//!
//! Why these bounds: dimensions are at most 65,536, so every sum the kernels form in f32
//! (the dot product, the squared norms, the squared L2 distance, whose terms are at most
//! `(2 * 1e16)^2`) stays below 2.7e37, under `f32::MAX` (3.4e38): no accumulator overflows
//! and every score is finite. In cosine spaces the squared norm is at least `1e-24`, a normal
//! f32, so the normalisation is exact to f32 rounding; components too small to matter may
//! underflow to zero in their products, which changes a cosine by at most 1e-9.
//!
//! Accuracy: SimSIMD accumulates f32 products in f32 (or wider) lanes and returns f64;
//! [`reference()`] accumulates in f64. For accepted inputs they agree to within f32
//! accumulation error: cosine to 1e-4 absolute, dot to 1e-4 of `sum |a_i b_i|`, L2 to 1e-4
//! of `|a| + |b|` (the property tests in this module check it at subnormal, near-limit and
//! mixed magnitudes). Cosine distance is clamped at 0 by SimSIMD, so cosine scores are at
//! most 1.

use simsimd::SpatialSimilarity;

use super::simd;

use crate::error::{Error, Result};
use crate::format::record::Metric;

/// Largest absolute value accepted in a vector component, in every metric (see the module
/// documentation for why).
pub const MAX_ABS_VALUE: f32 = 1e16;

/// In a cosine space, a vector's largest absolute component must be at least this.
pub const MIN_COSINE_PEAK: f32 = 1e-12;

/// Checks the components of a vector whose metric is not known yet (a parsed JSONL record):
/// every value finite and within `±MAX_ABS_VALUE`. `at` names the vector (`keys.goal`);
/// errors name the component (`keys.goal[3]`).
pub fn check_components(at: &str, v: &[f32]) -> Result<()> {
    match v
        .iter()
        .position(|x| !x.is_finite() || x.abs() > MAX_ABS_VALUE)
    {
        None => Ok(()),
        Some(i) if !v[i].is_finite() => Err(Error::invalid(
            format!("{at}[{i}]"),
            "value is not a finite 32-bit float (it overflows f32 or is not a number)",
        )),
        Some(i) => Err(Error::invalid(
            format!("{at}[{i}]"),
            format!(
                "value {:e} is outside the accepted range of ±1e16 (the numeric contract in format-spec.md); scale the vector down",
                v[i]
            ),
        )),
    }
}

/// Checks a key or query vector for a space of metric `metric` against the numeric contract
/// (module documentation): [`check_components`], and in cosine spaces a largest component
/// of at least `MIN_COSINE_PEAK`. Dimensions are checked by the caller.
pub fn check_vector(at: &str, metric: Metric, v: &[f32]) -> Result<()> {
    check_components(at, v)?;
    if metric == Metric::Cosine {
        let peak = v.iter().fold(0f32, |m, x| m.max(x.abs()));
        if peak == 0.0 {
            return Err(Error::invalid(
                at,
                "vector is all zeros; cosine similarity is undefined for it",
            ));
        }
        if peak < MIN_COSINE_PEAK {
            return Err(Error::invalid(
                at,
                format!(
                    "vector is too close to zero for cosine similarity (largest component {peak:e}; at least 1e-12 is needed, the numeric contract in format-spec.md); scale it up"
                ),
            ));
        }
    }
    Ok(())
}

/// Similarity of `a` and `b` (equal lengths) under `metric`, via SimSIMD.
#[inline]
pub fn similarity(metric: Metric, a: &[f32], b: &[f32]) -> f32 {
    let d = match metric {
        Metric::Cosine => <f32 as SpatialSimilarity>::cos(a, b).map(|d| 1.0 - d),
        Metric::Dot => <f32 as SpatialSimilarity>::dot(a, b),
        Metric::L2 => <f32 as SpatialSimilarity>::l2(a, b).map(|d| -d),
    };
    match d {
        Some(v) => v as f32,
        None => reference(metric, a, b),
    }
}

/// The vector a cosine key space stores for `v`, and the form a cosine query is scored in:
/// `v / |v|`, with the norm and each quotient computed in f64 and rounded once to f32
/// (deterministic on every machine). Dot and L2 vectors are used as given.
///
/// `v` must satisfy the numeric contract ([`check_vector`]): for cosine its norm is then
/// at least 1e-12, and the result has norm 1 to within f32 rounding. A zero vector (which
/// the contract refuses) is returned unchanged rather than divided by zero.
pub fn normalised(v: &[f32]) -> Vec<f32> {
    let mut out = v.to_vec();
    normalise_in_place(&mut out);
    out
}

/// [`normalised`] in place.
pub fn normalise_in_place(v: &mut [f32]) {
    let n = v
        .iter()
        .map(|&x| f64::from(x) * f64::from(x))
        .sum::<f64>()
        .sqrt();
    if n > 0.0 && n.is_finite() {
        for x in v.iter_mut() {
            *x = (f64::from(*x) / n) as f32;
        }
    }
}

/// A query made ready for scoring stored rows under `metric`: cosine queries are
/// normalised once ([`normalised`]), so every row is scored by a dot product.
#[derive(Debug, Clone)]
pub struct Prepared {
    metric: Metric,
    v: Vec<f32>,
}

impl Prepared {
    /// Prepares `query` (already checked against the numeric contract and the space's
    /// dimensions by the caller).
    pub fn new(metric: Metric, query: &[f32]) -> Self {
        let v = if metric == Metric::Cosine {
            normalised(query)
        } else {
            query.to_vec()
        };
        Prepared { metric, v }
    }

    /// The prepared vector.
    pub fn vector(&self) -> &[f32] {
        &self.v
    }

    /// Scores the first `out.len()` rows of `rows` (row-major, `dims` floats each, as the
    /// key file stores them: unit vectors in cosine spaces) into `out`:
    /// cosine = `row · q̂` clamped to [-1, 1], dot = `row · q`, L2 = `-|row - q|`. The same
    /// row always gets the same bits, whatever other rows are scored in the call (module
    /// `simd`). Rows past those `rows` holds are not scored.
    pub fn score_rows(&self, rows: &[f32], dims: usize, out: &mut [f32]) {
        match self.metric {
            Metric::Cosine => {
                simd::dot_rows(rows, dims, &self.v, out);
                out.iter_mut().for_each(|x| *x = x.clamp(-1.0, 1.0));
            }
            Metric::Dot => simd::dot_rows(rows, dims, &self.v, out),
            Metric::L2 => {
                simd::l2sq_rows(rows, dims, &self.v, out);
                out.iter_mut().for_each(|x| *x = -x.max(0.0).sqrt());
            }
        }
    }

    /// The score of one stored row (`dims` floats); equal to what [`score_rows`](Self::score_rows)
    /// gives that row.
    pub fn score(&self, row: &[f32]) -> f32 {
        let mut s = [0f32];
        self.score_rows(row, row.len(), &mut s);
        s[0]
    }
}

/// Which row kernel this machine uses (`"avx2-fma blocked x4"` or `"simsimd per row"`).
pub fn implementation() -> &'static str {
    simd::implementation()
}

/// Rows per block of [`scan`]: scored together, then emitted (64 rows of 384 f32 are 96 KiB,
/// inside a core's L2 cache, so a batched scan reuses them across queries).
pub const BLOCK_ROWS: usize = 64;

/// [`scan`] scores every row of a block, kept or not, when at least one row in this many
/// of the block is kept: one sequential stream is faster than skipping rows.
const DENSE_ONE_IN: usize = 4;

/// Scores stored rows `rows` (row-major, `dims` floats each) against `query`: for every
/// row index `r` with `keep(r)`, calls `emit(r, score)`, in row order. `keep` is called once
/// per row, in row order. Scores are those of [`Prepared::score_rows`].
///
/// The scan runs block by block ([`BLOCK_ROWS`] rows): the block's `keep` flags first,
/// then, when at least one row in four of the block is kept, the whole block scored in one
/// pass of the blocked kernel (sparser blocks score only their kept rows). Figures in
/// `docs/benchmarks.md`.
pub fn scan(
    metric: Metric,
    rows: &[f32],
    dims: usize,
    query: &[f32],
    keep: impl FnMut(usize) -> bool,
    emit: impl FnMut(usize, f32),
) {
    scan_prepared(&Prepared::new(metric, query), rows, dims, keep, emit);
}

/// [`scan`] with a query prepared once by the caller.
pub fn scan_prepared(
    q: &Prepared,
    rows: &[f32],
    dims: usize,
    mut keep: impl FnMut(usize) -> bool,
    mut emit: impl FnMut(usize, f32),
) {
    if dims == 0 || q.v.len() != dims {
        return;
    }
    let mut kept = [false; BLOCK_ROWS];
    let mut scores = [0f32; BLOCK_ROWS];
    for (b, block) in rows.chunks(BLOCK_ROWS * dims).enumerate() {
        let base = b * BLOCK_ROWS;
        let m = block.len() / dims;
        let mut count = 0;
        for (i, k) in kept[..m].iter_mut().enumerate() {
            *k = keep(base + i);
            count += usize::from(*k);
        }
        if count == 0 {
            continue;
        }
        if count * DENSE_ONE_IN >= m {
            q.score_rows(block, dims, &mut scores[..m]);
            for i in (0..m).filter(|&i| kept[i]) {
                emit(base + i, scores[i]);
            }
        } else {
            for i in (0..m).filter(|&i| kept[i]) {
                q.score_rows(&block[i * dims..(i + 1) * dims], dims, &mut scores[..1]);
                emit(base + i, scores[0]);
            }
        }
    }
}

/// The scalar reference: the same score computed in f64 without SIMD.
pub fn reference(metric: Metric, a: &[f32], b: &[f32]) -> f32 {
    let (mut ab, mut aa, mut bb, mut l2) = (0f64, 0f64, 0f64, 0f64);
    for (&x, &y) in a.iter().zip(b) {
        let (x, y) = (f64::from(x), f64::from(y));
        ab += x * y;
        aa += x * x;
        bb += y * y;
        l2 += (x - y) * (x - y);
    }
    let s = match metric {
        Metric::Cosine => {
            if aa == 0.0 || bb == 0.0 {
                0.0
            } else {
                ab / (aa.sqrt() * bb.sqrt())
            }
        }
        Metric::Dot => ab,
        Metric::L2 => -l2.sqrt(),
    };
    s as f32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lcg(seed: &mut u64) -> f32 {
        *seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((*seed >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }

    #[test]
    fn simd_kernels_agree_with_scalar_reference() {
        let mut seed = 7;
        for dims in [1usize, 3, 8, 15, 16, 17, 64, 127, 384, 1000] {
            for _ in 0..20 {
                let a: Vec<f32> = (0..dims).map(|_| lcg(&mut seed)).collect();
                let b: Vec<f32> = (0..dims).map(|_| lcg(&mut seed)).collect();
                for m in [Metric::Cosine, Metric::Dot, Metric::L2] {
                    let fast = similarity(m, &a, &b);
                    let slow = reference(m, &a, &b);
                    let tol = 1e-4 * (1.0 + slow.abs());
                    assert!(
                        (fast - slow).abs() <= tol,
                        "{m:?} dims {dims}: simd {fast} vs scalar {slow}"
                    );
                }
            }
        }
    }

    /// A vector of `dims` values at magnitude class `class` (0: subnormal up to 1e-20,
    /// 1: around the cosine floor 1e-12, 2: near the 1e16 limit, 3: ordinary, 4: mixed
    /// across all of them), with one component pinned so every metric accepts it.
    fn extreme(seed: &mut u64, dims: usize, class: u32) -> Vec<f32> {
        let mut v: Vec<f32> = (0..dims)
            .map(|i| {
                let u = lcg(seed);
                let c = if class == 4 { (i as u32) % 4 } else { class };
                match c {
                    0 => u * 1e-20 * (lcg(seed).abs() * 1e-18).max(1e-25),
                    1 => u * MIN_COSINE_PEAK * 4.0,
                    2 => u * MAX_ABS_VALUE,
                    _ => u,
                }
            })
            .collect();
        let pin = (lcg(seed).abs() * dims as f32) as usize % dims;
        v[pin] = match class {
            0 | 1 => MIN_COSINE_PEAK,
            2 => -MAX_ABS_VALUE,
            _ => 1.0,
        };
        v
    }

    /// f64 sums the tolerances are relative to.
    fn magnitudes(a: &[f32], b: &[f32]) -> (f64, f64) {
        let abs_dot: f64 = a
            .iter()
            .zip(b)
            .map(|(&x, &y)| (f64::from(x) * f64::from(y)).abs())
            .sum();
        let norm = |v: &[f32]| v.iter().map(|&x| f64::from(x).powi(2)).sum::<f64>().sqrt();
        (abs_dot, norm(a) + norm(b))
    }

    #[test]
    fn every_kernel_gives_finite_scores_within_the_contract_at_extreme_magnitudes() {
        let mut seed = 99;
        for dims in [1usize, 2, 7, 16, 33, 384, 4096] {
            for ca in 0..5 {
                for cb in 0..5 {
                    let a = extreme(&mut seed, dims, ca);
                    let b = extreme(&mut seed, dims, cb);
                    for m in [Metric::Cosine, Metric::Dot, Metric::L2] {
                        check_vector("a", m, &a).expect("a is accepted");
                        check_vector("b", m, &b).expect("b is accepted");
                        let exact = {
                            let (mut ab, mut aa, mut bb, mut l2) = (0f64, 0f64, 0f64, 0f64);
                            for (&x, &y) in a.iter().zip(&b) {
                                let (x, y) = (f64::from(x), f64::from(y));
                                ab += x * y;
                                aa += x * x;
                                bb += y * y;
                                l2 += (x - y) * (x - y);
                            }
                            match m {
                                Metric::Cosine => ab / (aa.sqrt() * bb.sqrt()),
                                Metric::Dot => ab,
                                Metric::L2 => -l2.sqrt(),
                            }
                        };
                        let (abs_dot, norms) = magnitudes(&a, &b);
                        let tol = match m {
                            Metric::Cosine => 1e-4,
                            Metric::Dot => 1e-4 * abs_dot + 1e-30,
                            Metric::L2 => 1e-4 * norms + 1e-30,
                        };
                        for (name, got) in [
                            ("simd", similarity(m, &a, &b)),
                            ("scalar", reference(m, &a, &b)),
                        ] {
                            assert!(
                                got.is_finite() && (f64::from(got) - exact).abs() <= tol,
                                "{m:?} dims {dims} classes {ca}/{cb}: {name} {got} vs f64 {exact} (tol {tol:e})"
                            );
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn vectors_outside_the_contract_are_refused_with_the_component() {
        let e = check_components("keys.e", &[1.0, 2e19]).expect_err("too large");
        assert!(e.to_string().contains("keys.e[1]"), "{e}");
        assert!(e.to_string().contains("±1e16"), "{e}");
        let e = check_components("q", &[f32::NAN]).expect_err("NaN");
        assert!(e.to_string().contains("not a finite"), "{e}");
        for m in [Metric::Dot, Metric::L2] {
            assert!(check_vector("q", m, &[2e19, 0.0]).is_err());
            assert!(check_vector("q", m, &[0.0, 0.0]).is_ok());
            assert!(check_vector("q", m, &[1e-30, 0.0]).is_ok());
        }
        let e = check_vector("q", Metric::Cosine, &[1e-30, 0.0]).expect_err("underflows");
        assert!(e.to_string().contains("too close to zero"), "{e}");
        let e = check_vector("q", Metric::Cosine, &[0.0, -0.0]).expect_err("zero");
        assert!(e.to_string().contains("all zeros"), "{e}");
        assert!(check_vector("q", Metric::Cosine, &[MIN_COSINE_PEAK, 0.0]).is_ok());
        assert!(check_vector("q", Metric::Cosine, &[-MAX_ABS_VALUE, 1e-40]).is_ok());
    }

    #[test]
    fn scan_emits_exactly_the_kept_rows_with_their_similarity_in_order() {
        let mut seed = 11;
        let dims = 5;
        // Fewer rows than the touch-ahead distance as well as more.
        for n in [0usize, 1, 3, 17] {
            let rows: Vec<f32> = (0..n * dims).map(|_| lcg(&mut seed)).collect();
            let q: Vec<f32> = (0..dims).map(|_| lcg(&mut seed)).collect();
            // One in three kept (scored densely) and one in seven (rows skipped).
            for every in [3, 7] {
                let mut got = Vec::new();
                scan(
                    Metric::Dot,
                    &rows,
                    dims,
                    &q,
                    |r| r % every == 1,
                    |r, s| got.push((r, s)),
                );
                let want: Vec<(usize, f32)> = rows
                    .chunks_exact(dims)
                    .enumerate()
                    .filter(|(r, _)| r % every == 1)
                    .map(|(r, row)| (r, Prepared::new(Metric::Dot, &q).score(row)))
                    .collect();
                for (r, sc) in &want {
                    let slow = reference(Metric::Dot, &rows[r * dims..(r + 1) * dims], &q);
                    assert!((sc - slow).abs() <= 1e-5, "row {r}: {sc} vs {slow}");
                }
                assert_eq!(got, want, "{n} rows, one in {every} kept");
            }
        }
    }

    #[test]
    fn scan_of_zero_dimensions_emits_nothing() {
        let mut got = 0;
        scan(Metric::Dot, &[1.0, 2.0], 0, &[], |_| true, |_, _| got += 1);
        assert_eq!(got, 0);
    }

    #[test]
    fn cosine_of_identical_vectors_is_one_and_l2_is_zero() {
        let a = [0.25f32, -1.0, 3.0, 0.5];
        assert!((similarity(Metric::Cosine, &a, &a) - 1.0).abs() < 1e-5);
        assert!(similarity(Metric::L2, &a, &a).abs() < 1e-5);
    }
}
