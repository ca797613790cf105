//! Weighted choice among a route's clusters (traffic splits such as a 90/10 canary). Splits
//! are short lists, so a draw is a sum and a linear scan, with no allocation.

use std::sync::Arc;

use remora_control_api::route::WeightedCluster;

/// Picks a cluster with probability proportional to its weight; `None` when all weights are
/// zero (validation rejects that).
pub fn pick(clusters: &[WeightedCluster]) -> Option<&Arc<str>> {
    match clusters {
        [only] => Some(&only.name),
        _ => pick_with(clusters, |total| fastrand::u64(..total)),
    }
}

fn pick_with(clusters: &[WeightedCluster], draw: impl FnOnce(u64) -> u64) -> Option<&Arc<str>> {
    let total: u64 = clusters.iter().map(|c| u64::from(c.weight)).sum();
    if total == 0 {
        return None;
    }
    let mut x = draw(total);
    for c in clusters {
        let w = u64::from(c.weight);
        if x < w {
            return Some(&c.name);
        }
        x -= w;
    }
    None
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
        let s = [wc("a", 90), wc("zero", 0), wc("b", 10)];
        let at = |x: u64| pick_with(&s, |_| x).map(|n| n.to_string());
        assert_eq!(at(0).as_deref(), Some("a"));
        assert_eq!(at(89).as_deref(), Some("a"));
        assert_eq!(at(90).as_deref(), Some("b"));
        assert_eq!(at(99).as_deref(), Some("b"));
        assert_eq!(
            pick(&[wc("a", 0)]).map(|n| &**n),
            Some("a"),
            "a single cluster needs no draw"
        );
        assert_eq!(pick(&[wc("a", 0), wc("b", 0)]), None);
    }

    #[test]
    fn distribution_is_roughly_proportional() {
        let s = [wc("a", 3), wc("b", 1)];
        let a = (0..40_000)
            .filter(|_| pick(&s).map(|n| &**n) == Some("a"))
            .count();
        assert!((28_000..32_000).contains(&a), "{a}");
    }
}
