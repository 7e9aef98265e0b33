//! SplitMix64, the one small seeded generator the project uses (synthetic recipe sets, the
//! offline policy's exploration, crash simulation, benchmarks). Deterministic across
//! platforms; not for cryptography.

/// SplitMix64 (Steele, Lea and Flood's mixing of a Weyl sequence).
#[derive(Debug, Clone)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    /// A generator started from `seed`.
    pub fn new(seed: u64) -> Self {
        SplitMix64 { state: seed }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` by remainder (0 when `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next_u64() % n
        }
    }

    /// A number in `0..n` by the multiply-high method (0 when `n` is 0). Generators seeded
    /// from it (test data, benchmark data, the agent crate's environments) depend on its
    /// exact sequence; changing it changes their output.
    pub fn below_scaled(&mut self, n: usize) -> usize {
        let n64 = u64::try_from(n).unwrap_or(u64::MAX);
        let hi = (u128::from(self.next_u64()) * u128::from(n64)) >> 64;
        usize::try_from(hi).unwrap_or(0)
    }

    /// Fisher-Yates shuffle, drawing with [`below_scaled`](Self::below_scaled).
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.below_scaled(i + 1);
            items.swap(i, j);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_first_outputs_for_seed_zero() {
        // Reference values of SplitMix64 from seed 0.
        let mut r = SplitMix64::new(0);
        assert_eq!(r.next_u64(), 0xE220_A839_7B1D_CDAF);
        assert_eq!(r.next_u64(), 0x6E78_9E6A_A1B9_65F4);
    }

    #[test]
    fn draws_stay_in_range() {
        let mut r = SplitMix64::new(7);
        for n in [1u64, 2, 3, 10, 1000] {
            for _ in 0..100 {
                assert!(r.below(n) < n);
                assert!(r.below_scaled(usize::try_from(n).unwrap()) < usize::try_from(n).unwrap());
            }
        }
        assert_eq!(r.below(0), 0);
        assert_eq!(r.below_scaled(0), 0);
    }
}
