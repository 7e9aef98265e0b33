//! Similarity kernels: SimSIMD's dispatched SIMD kernels, with a scalar reference that the
//! tests hold them to. Scores are similarities, higher is better:
//! cosine = 1 - cosine distance, dot = inner product, L2 = -(Euclidean distance).
//!
//! Numeric contract: SimSIMD accumulates f32 inputs in f32 or wider lanes and returns f64;
//! results agree with the f64 scalar reference to a relative 1e-4 for finite inputs.
//! Inputs are finite by construction (NaN and infinity are refused on the way in), and cosine
//! keys with zero norm are refused, so no kernel sees an undefined case.

use simsimd::SpatialSimilarity;

use crate::record::Metric;

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
    fn cosine_of_identical_vectors_is_one_and_l2_is_zero() {
        let a = [0.25f32, -1.0, 3.0, 0.5];
        assert!((similarity(Metric::Cosine, &a, &a) - 1.0).abs() < 1e-5);
        assert!(similarity(Metric::L2, &a, &a).abs() < 1e-5);
    }
}
