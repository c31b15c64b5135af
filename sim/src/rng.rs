//! Seeded randomness: one `u64` seed, split into independent ChaCha streams by label, so adding
//! a node or a component does not reshuffle the draws of the others. Probabilities are ratios
//! of integers.

use rand_chacha::ChaCha8Rng;
use rand_core::{RngCore, SeedableRng};
use sha2::{Digest, Sha256};

#[derive(Clone, Debug)]
pub struct Rng(ChaCha8Rng);

impl Rng {
    /// The stream `label` of run `seed`.
    pub fn stream(seed: u64, label: &str) -> Rng {
        let mut h = Sha256::new();
        h.update(seed.to_be_bytes());
        h.update(label.as_bytes());
        Rng(ChaCha8Rng::from_seed(h.finalize().into()))
    }
    pub fn u64(&mut self) -> u64 {
        self.0.next_u64()
    }
    /// Uniform in `0..n` (n > 0), without modulo bias worth caring about for n << 2^64.
    pub fn below(&mut self, n: u64) -> u64 {
        assert!(n > 0, "below(0)");
        ((self.u64() as u128 * n as u128) >> 64) as u64
    }
    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        if hi <= lo {
            return lo;
        }
        lo + self.below(hi - lo + 1)
    }
    /// True with probability `num / den`.
    pub fn chance(&mut self, num: u32, den: u32) -> bool {
        den > 0 && num > 0 && self.below(den as u64) < num as u64
    }
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        let mut v = vec![0u8; n];
        self.0.fill_bytes(&mut v);
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_are_reproducible_and_independent() {
        let a: Vec<u64> = (0..4).map(|_| Rng::stream(7, "net").u64()).collect();
        assert!(a.windows(2).all(|w| w[0] == w[1]));
        assert_ne!(Rng::stream(7, "net").u64(), Rng::stream(7, "node-0").u64());
        assert_ne!(Rng::stream(7, "net").u64(), Rng::stream(8, "net").u64());
    }

    #[test]
    fn chance_respects_the_ratio() {
        let mut r = Rng::stream(1, "x");
        let hits = (0..100_000).filter(|_| r.chance(1, 4)).count();
        assert!((24_000..26_000).contains(&hits), "{hits}");
    }
}
