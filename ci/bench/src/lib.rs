//! The benchmark harness of storage-tracker: a deterministic tree generator with ground truth
//! ([`truth`]), and the pieces the runner measures with (a raw walk as the floor, process
//! timing with peak RSS).

pub mod floor;
pub mod runner;
pub mod truth;

/// A small deterministic generator (xorshift64*): the same seed makes the same tree.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in 0..n.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// Geometric-ish: mostly small, sometimes large, mean about `mean`.
    pub fn skewed(&mut self, mean: u64) -> u64 {
        let u = (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        (-(1.0 - u).ln() * mean as f64) as u64
    }
}
