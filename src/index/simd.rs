//! Blocked row kernels: the dot product and squared Euclidean distance of many stored rows
//! against one query, four rows per pass over the query. One of the modules allowed
//! `unsafe` (the kernel room): `std::arch` intrinsics behind runtime CPU detection.
//!
//! # Determinism
//!
//! A row's result depends only on the row and the query, never on which other rows share
//! its pass: the four-row and the one-row paths run the same operations in the same order
//! per row (one 8-lane accumulator fed by fused multiply-adds over the 8-wide chunks, a
//! fixed horizontal sum, then the `dims % 8` remaining components added one by one in
//! f32). So a full scan, a pruned visit that scores a few rows, and a batched scan give
//! bit-identical scores for the same row.
//!
//! # Accuracy
//!
//! Accumulation is in f32, as in SimSIMD's f32 kernels and BLAS `sdot`. Each lane sums
//! `ceil(dims / 8)` products, so the error is at most about `(dims / 8 + 3) * 2^-24` times
//! `sum |a_i b_i|` (the standard bound for recursive summation, Higham, *Accuracy and
//! Stability of Numerical Algorithms*, 2nd ed., §3.1): 3e-6 relative at 384 dimensions,
//! 1e-4 at about 13,000, 5e-4 at the format's limit of 65,536 (the property tests in
//! `kernels` check 1e-4 up to 4,096 dimensions).
//!
//! Machines without AVX2 and FMA use SimSIMD's per-row kernels (its own dispatch picks
//! NEON, SVE or AVX-512 where present); results are then those of SimSIMD.

#![allow(unsafe_code)]

use simsimd::SpatialSimilarity;

/// Which implementation [`dot_rows`] and [`l2sq_rows`] use on this machine, for reports
/// (`"avx2-fma blocked x4"` or `"simsimd per row"`).
pub fn implementation() -> &'static str {
    if has_avx2_fma() {
        "avx2-fma blocked x4"
    } else {
        "simsimd per row"
    }
}

#[inline]
fn has_avx2_fma() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Dot products of the rows of `rows` (row-major, `dims` floats each) with `q` (`dims`
/// floats), into `out` (one per row; `out.len()` rows are scored). Panics never: rows past
/// what `rows` holds are not scored, and `out` beyond them is left as it was.
pub fn dot_rows(rows: &[f32], dims: usize, q: &[f32], out: &mut [f32]) {
    score_rows::<false>(rows, dims, q, out);
}

/// Squared Euclidean distances of the rows of `rows` to `q`, into `out`; as [`dot_rows`].
pub fn l2sq_rows(rows: &[f32], dims: usize, q: &[f32], out: &mut [f32]) {
    score_rows::<true>(rows, dims, q, out);
}

/// [`dot_rows`] (`L2` false) or [`l2sq_rows`] (`L2` true).
fn score_rows<const L2: bool>(rows: &[f32], dims: usize, q: &[f32], out: &mut [f32]) {
    if dims == 0 || q.len() != dims {
        return;
    }
    let n = out.len().min(rows.len() / dims);
    #[cfg(target_arch = "x86_64")]
    {
        if has_avx2_fma() {
            // SAFETY: AVX2 and FMA were detected on this CPU just above; the function reads
            // `n * dims <= rows.len()` floats of `rows` and `dims == q.len()` of `q`, and
            // writes `n <= out.len()` values of `out`.
            unsafe { x86::rows_avx2::<L2>(&rows[..n * dims], dims, q, &mut out[..n]) };
            return;
        }
    }
    for (o, row) in out[..n].iter_mut().zip(rows.chunks_exact(dims)) {
        *o = if L2 {
            <f32 as SpatialSimilarity>::l2sq(row, q)
                .map_or_else(|| scalar_l2sq(row, q), |d| d as f32)
        } else {
            <f32 as SpatialSimilarity>::dot(row, q).map_or_else(|| scalar_dot(row, q), |d| d as f32)
        };
    }
}

/// Asks the CPU to start loading `row` (a key row, a neighbour list) into the caches (every
/// 64-byte line of it), so that reading it a little later does not wait on memory: a graph
/// walk visits rows in no order the hardware prefetcher can guess. A hint only: no effect
/// on results, nothing on other architectures.
#[inline]
pub fn prefetch<T>(row: &[T]) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        let bytes = std::mem::size_of_val(row);
        let p = row.as_ptr().cast::<i8>();
        let mut at = 0;
        while at < bytes {
            // SAFETY: `at < bytes`, so `p + at` is inside `row`; a prefetch reads nothing
            // the program sees and cannot fault.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(p.add(at)) };
            at += 64;
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = row;
}

/// Largest magnitude of a query code for [`dot_i8_i16_rows`]: with row codes in
/// [-127, 127] and at most [`crate::format::record::MAX_DIMS`] dimensions, every AVX2 lane
/// sums at most `MAX_DIMS / 8` products of at most `127 * QUERY_CODE_MAX` and stays inside
/// i32 (checked at compile time below).
pub const QUERY_CODE_MAX: i16 = 2047;
const _: () = assert!(
    127 * (QUERY_CODE_MAX as i64) * (crate::format::record::MAX_DIMS as i64 / 8) < i32::MAX as i64
);

/// Exact integer dot products of rows of i8 codes (row-major, `dims` codes each; `dims` a
/// multiple of 16, codes in [-127, 127]) with the i16 query codes `q` (`dims` codes in
/// [-[`QUERY_CODE_MAX`], [`QUERY_CODE_MAX`]]), into `out`. Integer arithmetic is exact, so
/// the AVX2 path (four rows per pass, `madd` of sign-extended pairs) and the scalar loop
/// give the same value. Nothing is written when the shapes do not fit.
pub fn dot_i8_i16_rows(codes: &[i8], dims: usize, q: &[i16], out: &mut [i64]) {
    if dims == 0
        || q.len() != dims
        || !dims.is_multiple_of(16)
        || dims > crate::format::record::MAX_DIMS as usize
    {
        return;
    }
    let n = out.len().min(codes.len() / dims);
    #[cfg(target_arch = "x86_64")]
    {
        if has_avx2_fma() {
            // SAFETY: AVX2 detected; reads `n * dims <= codes.len()` codes and
            // `dims == q.len()` query codes, writes `n <= out.len()` values; `dims % 16 == 0`
            // and `dims <= MAX_DIMS`, so no lane overflows (the assertion above).
            unsafe { x86::i8_i16_rows_avx2(&codes[..n * dims], dims, q, &mut out[..n]) };
            return;
        }
    }
    for (o, row) in out[..n].iter_mut().zip(codes.chunks_exact(dims)) {
        *o = row
            .iter()
            .zip(q)
            .map(|(&c, &x)| i64::from(c) * i64::from(x))
            .sum();
    }
}

/// [`dot_i8_i16_rows`] over the rows named by `rows` (indices into `codes`, any order),
/// `out[i]` for row `rows[i]`: a filtered pass reads only the rows that pass instead of
/// every row of a block. Nothing is written when the shapes do not fit or an index names
/// no row of `codes`.
pub fn dot_i8_i16_rows_at(codes: &[i8], dims: usize, q: &[i16], rows: &[u32], out: &mut [i64]) {
    if dims == 0
        || q.len() != dims
        || !dims.is_multiple_of(16)
        || dims > crate::format::record::MAX_DIMS as usize
    {
        return;
    }
    let have = codes.len() / dims;
    if rows
        .iter()
        .any(|&r| usize::try_from(r).map_or(true, |r| r >= have))
    {
        return;
    }
    let n = out.len().min(rows.len());
    #[cfg(target_arch = "x86_64")]
    {
        if has_avx2_fma() {
            // SAFETY: AVX2 detected; every index is below `have`, so each row read
            // (`dims` codes from `index * dims`) lies inside `codes`; `dims == q.len()`;
            // writes `n <= out.len()` values; `dims % 16 == 0` and `dims <= MAX_DIMS`.
            unsafe { x86::i8_i16_rows_at_avx2(codes, dims, q, &rows[..n], &mut out[..n]) };
            return;
        }
    }
    for (o, &r) in out[..n].iter_mut().zip(rows) {
        let at = r as usize * dims;
        *o = codes[at..at + dims]
            .iter()
            .zip(q)
            .map(|(&c, &x)| i64::from(c) * i64::from(x))
            .sum();
    }
}

fn scalar_dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn scalar_l2sq(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum()
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::{
        __m128i, __m256, __m256i, _mm256_add_epi32, _mm256_castps256_ps128, _mm256_cvtepi8_epi16,
        _mm256_extractf128_ps, _mm256_fmadd_ps, _mm256_loadu_ps, _mm256_loadu_si256,
        _mm256_madd_epi16, _mm256_setzero_ps, _mm256_setzero_si256, _mm256_storeu_si256,
        _mm256_sub_ps, _mm_add_ps, _mm_add_ss, _mm_cvtss_f32, _mm_loadu_si128, _mm_movehdup_ps,
        _mm_movehl_ps, _mm_prefetch, _MM_HINT_T0,
    };

    /// Horizontal sum of 8 lanes in a fixed order.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    fn hsum(v: __m256) -> f32 {
        let lo = _mm256_castps256_ps128(v);
        let hi = _mm256_extractf128_ps::<1>(v);
        let s = _mm_add_ps(lo, hi);
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_movehdup_ps(s));
        _mm_cvtss_f32(s)
    }

    /// The per-lane term: `a * b` (dot) or `(a - b)^2` (squared L2), added to `acc`.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    fn term<const L2: bool>(a: __m256, b: __m256, acc: __m256) -> __m256 {
        if L2 {
            let d = _mm256_sub_ps(a, b);
            _mm256_fmadd_ps(d, d, acc)
        } else {
            _mm256_fmadd_ps(a, b, acc)
        }
    }

    #[inline]
    fn tail<const L2: bool>(row: &[f32], q: &[f32], from: usize, mut s: f32) -> f32 {
        for (a, b) in row[from..].iter().zip(&q[from..]) {
            s += if L2 { (a - b) * (a - b) } else { a * b };
        }
        s
    }

    /// Horizontal sum of 8 i32 lanes, in i64.
    #[inline]
    #[target_feature(enable = "avx2")]
    fn hsum_i32(v: __m256i) -> i64 {
        let mut lanes = [0i32; 8];
        // SAFETY: `lanes` is 32 writable bytes; an unaligned store.
        unsafe { _mm256_storeu_si256(lanes.as_mut_ptr().cast::<__m256i>(), v) };
        lanes.iter().map(|&x| i64::from(x)).sum()
    }

    /// Rows ahead of the current four whose codes are prefetched.
    const PREFETCH_ROWS: usize = 8;

    /// i8 rows (`dims % 16 == 0`) against i16 query codes: per 16 codes, the row's codes
    /// sign-extended to i16 and `madd`ed with the query's into 8 i32 lanes; four rows per
    /// pass, the rest one at a time.
    ///
    /// # Safety
    /// The CPU must support AVX2; `codes.len() == out.len() * dims`, `q.len() == dims`,
    /// `dims % 16 == 0`, `dims <= MAX_DIMS`, query codes within `QUERY_CODE_MAX`.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn i8_i16_rows_avx2(codes: &[i8], dims: usize, q: &[i16], out: &mut [i64]) {
        let base = codes.as_ptr();
        // SAFETY: rows below `out.len()` lie inside `codes` (the caller's contract); the
        // others are only prefetched (`wrapping_add`, never dereferenced).
        unsafe { i8_i16_rows_by(dims, q, out, |i| base.wrapping_add(i * dims)) }
    }

    /// [`i8_i16_rows_avx2`] over the rows `rows` names, `out[i]` for row `rows[i]`.
    ///
    /// # Safety
    /// As [`i8_i16_rows_avx2`], with every index below `codes.len() / dims` and
    /// `out.len() == rows.len()`.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn i8_i16_rows_at_avx2(
        codes: &[i8],
        dims: usize,
        q: &[i16],
        rows: &[u32],
        out: &mut [i64],
    ) {
        let base = codes.as_ptr();
        let last = rows.len().wrapping_sub(1);
        // SAFETY: positions below `rows.len()` name rows inside `codes` (the caller's
        // contract); a position past the end gives the last row's address, used only for
        // a prefetch.
        unsafe {
            i8_i16_rows_by(dims, q, out, |i| {
                base.wrapping_add(rows[i.min(last)] as usize * dims)
            })
        }
    }

    /// The shared loop: `row(i)` is the address of the `dims` codes of output `i`. While
    /// scoring outputs `r..r + 4` it requests, one cache line per 16 codes, the lines of
    /// outputs `r + PREFETCH_ROWS ..` (`dims / 16` steps cover the `4 * dims / 64` lines),
    /// so the next passes find their codes in cache: without it the loop ran at about half
    /// the read rate on rows out of cache (AMD EPYC, AVX2).
    ///
    /// # Safety
    /// AVX2; `row(i)` points at `dims` readable codes for every `i < out.len()` (other
    /// addresses are only prefetched); `q.len() == dims`, `dims % 16 == 0`,
    /// `dims <= MAX_DIMS`, query codes within `QUERY_CODE_MAX`.
    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn i8_i16_rows_by(
        dims: usize,
        q: &[i16],
        out: &mut [i64],
        row: impl Fn(usize) -> *const i8,
    ) {
        let qp = q.as_ptr();
        let load = |p: *const i8| {
            // SAFETY: callers pass pointers with 16 readable codes.
            let b = unsafe { _mm_loadu_si128(p.cast::<__m128i>()) };
            _mm256_cvtepi8_epi16(b)
        };
        let mut r = 0;
        while r + 4 <= out.len() {
            let (p0, p1, p2, p3) = (row(r), row(r + 1), row(r + 2), row(r + 3));
            let ahead = [
                row(r + PREFETCH_ROWS),
                row(r + PREFETCH_ROWS + 1),
                row(r + PREFETCH_ROWS + 2),
                row(r + PREFETCH_ROWS + 3),
            ];
            let (mut a0, mut a1, mut a2, mut a3) = (
                _mm256_setzero_si256(),
                _mm256_setzero_si256(),
                _mm256_setzero_si256(),
                _mm256_setzero_si256(),
            );
            let mut j = 0;
            while j < dims {
                let step = j / 16;
                // SAFETY: a prefetch is a hint that reads nothing the program sees and
                // cannot fault, so its address may be any (computed with `wrapping_add`,
                // never dereferenced).
                _mm_prefetch::<_MM_HINT_T0>(ahead[step % 4].wrapping_add(step / 4 * 64));
                // SAFETY: j + 16 <= dims: 16 codes of the four rows and 16 query codes.
                let qv = _mm256_loadu_si256(qp.add(j).cast::<__m256i>());
                a0 = _mm256_add_epi32(a0, _mm256_madd_epi16(load(p0.add(j)), qv));
                a1 = _mm256_add_epi32(a1, _mm256_madd_epi16(load(p1.add(j)), qv));
                a2 = _mm256_add_epi32(a2, _mm256_madd_epi16(load(p2.add(j)), qv));
                a3 = _mm256_add_epi32(a3, _mm256_madd_epi16(load(p3.add(j)), qv));
                j += 16;
            }
            out[r] = hsum_i32(a0);
            out[r + 1] = hsum_i32(a1);
            out[r + 2] = hsum_i32(a2);
            out[r + 3] = hsum_i32(a3);
            r += 4;
        }
        while r < out.len() {
            let p = row(r);
            let mut a = _mm256_setzero_si256();
            let mut j = 0;
            while j < dims {
                // SAFETY: as above, within row r and q.
                let qv = _mm256_loadu_si256(qp.add(j).cast::<__m256i>());
                a = _mm256_add_epi32(a, _mm256_madd_epi16(load(p.add(j)), qv));
                j += 16;
            }
            out[r] = hsum_i32(a);
            r += 1;
        }
    }

    /// Scores `out.len()` rows of `rows` (`dims` each) against `q`: four rows per pass, the
    /// remaining rows one at a time with the same per-row operations.
    ///
    /// # Safety
    /// The CPU must support AVX2 and FMA; `rows.len() == out.len() * dims`, `q.len() == dims`.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn rows_avx2<const L2: bool>(
        rows: &[f32],
        dims: usize,
        q: &[f32],
        out: &mut [f32],
    ) {
        let body = dims - dims % 8;
        let qp = q.as_ptr();
        let mut r = 0;
        while r + 4 <= out.len() {
            let base = rows.as_ptr().add(r * dims);
            let (p0, p1, p2, p3) = (base, base.add(dims), base.add(2 * dims), base.add(3 * dims));
            let (mut a0, mut a1, mut a2, mut a3) = (
                _mm256_setzero_ps(),
                _mm256_setzero_ps(),
                _mm256_setzero_ps(),
                _mm256_setzero_ps(),
            );
            let mut j = 0;
            while j < body {
                // SAFETY: j + 8 <= body <= dims, so each load reads within row r..r+3 and q.
                let qv = _mm256_loadu_ps(qp.add(j));
                a0 = term::<L2>(_mm256_loadu_ps(p0.add(j)), qv, a0);
                a1 = term::<L2>(_mm256_loadu_ps(p1.add(j)), qv, a1);
                a2 = term::<L2>(_mm256_loadu_ps(p2.add(j)), qv, a2);
                a3 = term::<L2>(_mm256_loadu_ps(p3.add(j)), qv, a3);
                j += 8;
            }
            for (i, a) in [a0, a1, a2, a3].into_iter().enumerate() {
                let row = &rows[(r + i) * dims..(r + i + 1) * dims];
                out[r + i] = tail::<L2>(row, q, body, hsum(a));
            }
            r += 4;
        }
        while r < out.len() {
            let p = rows.as_ptr().add(r * dims);
            let mut a = _mm256_setzero_ps();
            let mut j = 0;
            while j < body {
                // SAFETY: as above, within row r and q.
                a = term::<L2>(_mm256_loadu_ps(p.add(j)), _mm256_loadu_ps(qp.add(j)), a);
                j += 8;
            }
            let row = &rows[r * dims..(r + 1) * dims];
            out[r] = tail::<L2>(row, q, body, hsum(a));
            r += 1;
        }
    }
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

    fn exact(a: &[f32], b: &[f32], l2: bool) -> (f64, f64) {
        let mut s = 0f64;
        let mut mag = 0f64;
        for (&x, &y) in a.iter().zip(b) {
            let t = if l2 {
                (f64::from(x) - f64::from(y)).powi(2)
            } else {
                f64::from(x) * f64::from(y)
            };
            s += t;
            mag += t.abs();
        }
        (s, mag)
    }

    #[test]
    fn blocked_rows_agree_with_f64_reference_for_every_dimension_and_row_count() {
        let mut seed = 3;
        for dims in [1usize, 2, 7, 8, 9, 15, 16, 17, 63, 64, 65, 384, 1000] {
            for n in [0usize, 1, 3, 4, 5, 8, 11] {
                let rows: Vec<f32> = (0..n * dims).map(|_| lcg(&mut seed)).collect();
                let q: Vec<f32> = (0..dims).map(|_| lcg(&mut seed)).collect();
                let mut dot = vec![f32::NAN; n];
                let mut l2 = vec![f32::NAN; n];
                dot_rows(&rows, dims, &q, &mut dot);
                l2sq_rows(&rows, dims, &q, &mut l2);
                for r in 0..n {
                    let row = &rows[r * dims..(r + 1) * dims];
                    for (got, is_l2) in [(dot[r], false), (l2[r], true)] {
                        let (want, mag) = exact(row, &q, is_l2);
                        assert!(
                            (f64::from(got) - want).abs() <= 1e-5 * mag + 1e-30,
                            "dims {dims} rows {n} row {r} l2 {is_l2}: {got} vs {want}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn a_row_scores_the_same_bits_alone_and_in_any_block_position() {
        let mut seed = 5;
        for dims in [5usize, 8, 13, 384] {
            let n = 9;
            let rows: Vec<f32> = (0..n * dims).map(|_| lcg(&mut seed)).collect();
            let q: Vec<f32> = (0..dims).map(|_| lcg(&mut seed)).collect();
            let mut all = vec![0f32; n];
            dot_rows(&rows, dims, &q, &mut all);
            let mut all_l2 = vec![0f32; n];
            l2sq_rows(&rows, dims, &q, &mut all_l2);
            for start in 0..n {
                let mut part = vec![0f32; n - start];
                dot_rows(&rows[start * dims..], dims, &q, &mut part);
                assert_eq!(
                    part.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
                    all[start..].iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
                    "dims {dims}, from row {start}"
                );
                let mut part = vec![0f32; n - start];
                l2sq_rows(&rows[start * dims..], dims, &q, &mut part);
                assert_eq!(
                    part.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
                    all_l2[start..]
                        .iter()
                        .map(|x| x.to_bits())
                        .collect::<Vec<_>>()
                );
            }
        }
    }

    #[test]
    fn i8_i16_rows_are_the_exact_integer_dot_product_in_any_block_position() {
        let mut seed = 17;
        for dims in [16usize, 32, 64, 384, 1024] {
            let n = 11;
            let mut codes: Vec<i8> = (0..n * dims)
                .map(|_| (lcg(&mut seed) * 127.0).round() as i8)
                .collect();
            let mut q: Vec<i16> = (0..dims)
                .map(|_| (lcg(&mut seed) * f32::from(QUERY_CODE_MAX)).round() as i16)
                .collect();
            // The extremes: the largest products of both signs.
            codes[..dims].fill(127);
            codes[dims..2 * dims].fill(-127);
            q[..dims / 2].fill(QUERY_CODE_MAX);
            let mut all = vec![0i64; n];
            dot_i8_i16_rows(&codes, dims, &q, &mut all);
            for r in 0..n {
                let row = &codes[r * dims..(r + 1) * dims];
                let want: i64 = row
                    .iter()
                    .zip(&q)
                    .map(|(&c, &x)| i64::from(c) * i64::from(x))
                    .sum();
                assert_eq!(all[r], want, "dims {dims} row {r}");
                let mut one = [0i64];
                dot_i8_i16_rows(row, dims, &q, &mut one);
                assert_eq!(one[0], all[r], "dims {dims} row {r} alone");
            }
        }
        let mut out = [i64::MIN];
        dot_i8_i16_rows(&[1; 8], 8, &[1; 8], &mut out); // dims not a multiple of 16: refused
        assert_eq!(out[0], i64::MIN);
    }

    #[test]
    fn i8_i16_rows_by_index_equal_the_contiguous_pass_for_any_subset_and_order() {
        let mut seed = 29;
        for dims in [16usize, 48, 384] {
            let n = 70;
            let codes: Vec<i8> = (0..n * dims)
                .map(|_| (lcg(&mut seed) * 127.0).round() as i8)
                .collect();
            let q: Vec<i16> = (0..dims)
                .map(|_| (lcg(&mut seed) * f32::from(QUERY_CODE_MAX)).round() as i16)
                .collect();
            let mut all = vec![0i64; n];
            dot_i8_i16_rows(&codes, dims, &q, &mut all);
            // Subsets of every size up to past a block of four, in scrambled order and
            // with repeats, so both the four-row pass and the single-row tail are used.
            for len in [0usize, 1, 3, 4, 5, 9, 33, 70] {
                let rows: Vec<u32> = (0..len)
                    .map(|_| ((lcg(&mut seed) * 0.5 + 0.5) * (n - 1) as f32).round() as u32)
                    .collect();
                let mut got = vec![i64::MIN; len];
                dot_i8_i16_rows_at(&codes, dims, &q, &rows, &mut got);
                for (g, &r) in got.iter().zip(&rows) {
                    assert_eq!(*g, all[r as usize], "dims {dims} len {len} row {r}");
                }
            }
            // An index past the rows: nothing is written.
            let mut out = [i64::MIN; 2];
            dot_i8_i16_rows_at(&codes, dims, &q, &[0, n as u32], &mut out);
            assert_eq!(out, [i64::MIN; 2]);
        }
    }

    #[test]
    fn i8_i16_rows_do_not_overflow_at_the_largest_dimensions() {
        let dims = crate::format::record::MAX_DIMS as usize;
        let codes = vec![-127i8; 2 * dims];
        let q = vec![QUERY_CODE_MAX; dims];
        let mut out = [0i64; 2];
        dot_i8_i16_rows(&codes, dims, &q, &mut out);
        let want = -127 * i64::from(QUERY_CODE_MAX) * dims as i64;
        assert_eq!(out, [want, want]);
    }

    #[test]
    fn out_longer_than_the_rows_scores_only_the_rows_there_are() {
        let rows = [1.0f32, 2.0, 3.0, 4.0];
        let mut out = [f32::NAN; 5];
        dot_rows(&rows, 2, &[1.0, 1.0], &mut out);
        assert_eq!(out[..2], [3.0, 7.0]);
        assert!(out[2..].iter().all(|x| x.is_nan()));
        dot_rows(&rows, 3, &[1.0, 1.0], &mut out); // wrong query length: nothing scored
        assert_eq!(out[..2], [3.0, 7.0]);
    }
}
