//! Similarity kernels: SimSIMD's dispatched SIMD kernels, with a scalar reference that the
//! tests hold them to. Scores are similarities, higher is better:
//! cosine = 1 - cosine distance, dot = inner product, L2 = -(Euclidean distance).
//!
//! Numeric contract: SimSIMD accumulates f32 inputs in f32 or wider lanes and returns f64;
//! results agree with the f64 scalar reference to a relative 1e-4 for finite inputs.
//! Inputs are finite by construction (NaN and infinity are refused on the way in), and cosine
//! keys with zero norm are refused, so no kernel sees an undefined case.

use simsimd::SpatialSimilarity;

use crate::format::record::Metric;

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

/// How many rows ahead of the row being scored [`scan`] reads one value.
const TOUCH_AHEAD: usize = 4;

/// [`scan`] scores every row, kept or not, when at least one row in this many is kept.
const DENSE_ONE_IN: usize = 4;

/// Scores the rows of `rows` (row-major, `dims` floats each) against `query`: for every row
/// index `r` with `keep(r)`, calls `emit(r, score)` in row order. Scores are those of
/// [`similarity`]. `keep` is called once per row, in row order, before any `emit`.
///
/// The scan is bound by memory reads, and two measures keep it near the machine's
/// sequential read rate (figures in `docs/benchmarks.md`):
/// - Before scoring a row it reads the first value of the row `TOUCH_AHEAD` (4) rows further
///   on. That early load starts the page-table walk and the hardware prefetcher for the
///   coming rows while the current row is being scored; without it the scan of 100k x 384
///   rows took 1.2 to 1.4 times as long.
/// - When at least one row in `DENSE_ONE_IN` (4) is kept, every row is scored and only kept
///   rows are emitted: reading all rows in one stream is faster than skipping every second
///   row, which defeats the prefetcher. Sparser filters skip the rows they reject.
pub fn scan(
    metric: Metric,
    rows: &[f32],
    dims: usize,
    query: &[f32],
    keep: impl FnMut(usize) -> bool,
    mut emit: impl FnMut(usize, f32),
) {
    if dims == 0 {
        return;
    }
    let n = rows.len() / dims;
    let kept: Vec<bool> = (0..n).map(keep).collect();
    let count = kept.iter().filter(|&&k| k).count();
    if count == 0 {
        return;
    }
    let dense = count.saturating_mul(DENSE_ONE_IN) >= n;
    let ahead = TOUCH_AHEAD * dims;
    for ((r, row), &k) in rows.chunks_exact(dims).enumerate().zip(&kept) {
        if let Some(x) = rows.get(r * dims + ahead) {
            std::hint::black_box(*x);
        }
        if dense {
            let score = similarity(metric, row, query);
            if k {
                emit(r, score);
            }
        } else if k {
            emit(r, similarity(metric, row, query));
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
                    .map(|(r, row)| (r, similarity(Metric::Dot, row, &q)))
                    .collect();
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
