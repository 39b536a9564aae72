//! Deterministic task id suffixes from a seed (splitmix64), so reconcile stays pure.

/// Generates task id suffixes from a seed.
#[derive(Debug, Clone)]
pub struct IdGen {
    state: u64,
}

impl IdGen {
    /// A generator starting from `seed`.
    pub fn new(seed: u64) -> Self {
        IdGen { state: seed }
    }

    fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Ten lowercase letters and digits.
    pub fn suffix(&mut self) -> String {
        const ALPHABET: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
        let mut v = self.next_u64();
        (0..10)
            .map(|_| {
                let c = ALPHABET[(v % 36) as usize] as char;
                v /= 36;
                c
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suffixes_are_deterministic_and_distinct() {
        let a: Vec<String> = {
            let mut g = IdGen::new(7);
            (0..100).map(|_| g.suffix()).collect()
        };
        let b: Vec<String> = {
            let mut g = IdGen::new(7);
            (0..100).map(|_| g.suffix()).collect()
        };
        assert_eq!(a, b);
        let set: std::collections::BTreeSet<_> = a.iter().collect();
        assert_eq!(set.len(), 100);
        assert!(a.iter().all(|s| s.len() == 10));
    }
}
