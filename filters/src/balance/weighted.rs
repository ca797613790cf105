//! Weighted random draws over endpoint indices (cumulative weights + binary search).

#[derive(Debug)]
pub(crate) struct Weighted {
    cumulative: Vec<u64>,
    uniform: bool,
}

impl Weighted {
    pub(crate) fn new(weights: &[u32]) -> Self {
        let mut total = 0u64;
        let cumulative = weights
            .iter()
            .map(|w| {
                total += u64::from((*w).max(1));
                total
            })
            .collect();
        let uniform = weights.windows(2).all(|w| w[0] == w[1]);
        Self {
            cumulative,
            uniform,
        }
    }

    /// All weights equal (draws are then plain uniform).
    pub(crate) fn is_uniform(&self) -> bool {
        self.uniform
    }

    pub(crate) fn len(&self) -> usize {
        self.cumulative.len()
    }

    /// An index drawn with probability proportional to its weight.
    pub(crate) fn draw(&self) -> usize {
        let n = self.cumulative.len();
        if self.uniform || n < 2 {
            return fastrand::usize(..n.max(1));
        }
        let total = self.cumulative[n - 1];
        let x = fastrand::u64(..total);
        self.cumulative.partition_point(|&c| c <= x)
    }
}

#[cfg(test)]
mod tests {
    use super::Weighted;

    #[test]
    fn draws_follow_weights() {
        let w = Weighted::new(&[1, 3]);
        let ones = (0..40_000).filter(|_| w.draw() == 1).count();
        assert!((28_000..32_000).contains(&ones), "{ones}");
    }
}
