//! Power of two choices: draw two distinct endpoints (by weight), send to the cheaper one,
//! where cost is peak-EWMA latency × (outstanding + 1) ÷ weight.

use std::time::Instant;

use super::HasLoad;
use super::weighted::Weighted;

pub(crate) fn pick<E: HasLoad>(weighted: &Weighted, endpoints: &[E], now: Instant) -> usize {
    let n = endpoints.len().min(weighted.len());
    if n < 2 {
        return 0;
    }
    let a = weighted.draw();
    let mut b = weighted.draw();
    if b == a {
        // Heavily skewed weights draw the same endpoint often: take any other one.
        b = (a + 1 + fastrand::usize(..n - 1)) % n;
    }
    let cost = |i: usize| {
        let w = weighted.weight(i);
        endpoints
            .get(i)
            .map_or(f64::INFINITY, |e| e.load().cost(now) / w)
    };
    if cost(b) < cost(a) { b } else { a }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::balance::EndpointLoad;

    struct E(EndpointLoad);
    impl HasLoad for E {
        fn load(&self) -> &EndpointLoad {
            &self.0
        }
    }

    #[test]
    fn prefers_the_faster_endpoint() {
        let now = Instant::now();
        let eps: Vec<E> = (0..3).map(|_| E(EndpointLoad::default())).collect();
        eps[0].0.observe(Duration::from_millis(500), now);
        eps[1].0.observe(Duration::from_millis(1), now);
        eps[2].0.observe(Duration::from_millis(500), now);
        let w = Weighted::new(&[1, 1, 1]);
        let fast = (0..3000).filter(|_| pick(&w, &eps, now) == 1).count();
        // Endpoint 1 wins every pair it is drawn into: 2 of 3 pairs.
        assert!((1800..2200).contains(&fast), "{fast}");
    }

    #[test]
    fn pending_requests_shift_load_away() {
        let now = Instant::now();
        let eps: Vec<E> = (0..2).map(|_| E(EndpointLoad::default())).collect();
        for _ in 0..10 {
            eps[0].0.start();
        }
        let w = Weighted::new(&[1, 1]);
        assert!((0..100).all(|_| pick(&w, &eps, now) == 1));
    }
}
