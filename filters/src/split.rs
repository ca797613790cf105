//! Weighted choice among a route's clusters (traffic splits such as a 90/10 canary).

use std::sync::Arc;

use remora_control_api::route::WeightedCluster;

/// A compiled split: cumulative weights for one random draw and a binary search.
#[derive(Debug, Clone)]
pub struct Split {
    names: Vec<Arc<str>>,
    cumulative: Vec<u64>,
}

impl Split {
    /// Validation guarantees a non-empty list with a positive total.
    pub fn new(clusters: &[WeightedCluster]) -> Self {
        let mut total = 0u64;
        let mut names = Vec::with_capacity(clusters.len());
        let mut cumulative = Vec::with_capacity(clusters.len());
        for c in clusters {
            total += u64::from(c.weight);
            names.push(c.name.clone());
            cumulative.push(total);
        }
        Self { names, cumulative }
    }

    /// Picks a cluster with probability proportional to its weight.
    pub fn pick(&self) -> Option<&Arc<str>> {
        self.pick_with(|total| fastrand::u64(..total))
    }

    fn pick_with(&self, draw: impl FnOnce(u64) -> u64) -> Option<&Arc<str>> {
        if self.names.len() == 1 {
            return self.names.first();
        }
        let total = *self.cumulative.last()?;
        if total == 0 {
            return None;
        }
        let x = draw(total);
        let i = self.cumulative.partition_point(|&c| c <= x);
        self.names.get(i)
    }

    pub fn clusters(&self) -> &[Arc<str>] {
        &self.names
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wc(name: &str, weight: u32) -> WeightedCluster {
        WeightedCluster {
            name: name.into(),
            weight,
        }
    }

    #[test]
    fn boundaries_follow_weights() {
        let s = Split::new(&[wc("a", 90), wc("zero", 0), wc("b", 10)]);
        assert_eq!(s.pick_with(|_| 0).map(|n| &**n), Some("a"));
        assert_eq!(s.pick_with(|_| 89).map(|n| &**n), Some("a"));
        assert_eq!(s.pick_with(|_| 90).map(|n| &**n), Some("b"));
        assert_eq!(s.pick_with(|_| 99).map(|n| &**n), Some("b"));
    }

    #[test]
    fn distribution_is_roughly_proportional() {
        let s = Split::new(&[wc("a", 3), wc("b", 1)]);
        let a = (0..40_000)
            .filter(|_| s.pick().map(|n| &**n) == Some("a"))
            .count();
        assert!((28_000..32_000).contains(&a), "{a}");
    }
}
