//! Power of two choices over peak-EWMA cost (latency estimate × (outstanding + 1)).
//!
//! Equal weights (the common case): draw two distinct endpoints at random, send to the
//! cheaper one, as Linkerd does. Unequal weights: draw two endpoints by weight *with*
//! replacement and send to the cheaper; with equal costs each endpoint then gets exactly its
//! weight's share, and load still moves away from a slow or busy endpoint.

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
        if !weighted.is_uniform() {
            return a;
        }
        b = (a + 1 + fastrand::usize(..n - 1)) % n;
    }
    let cost = |i: usize| {
        endpoints
            .get(i)
            .map_or(f64::INFINITY, |e| e.load().cost(now))
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
    fn unequal_weights_give_proportional_shares_at_equal_cost() {
        let now = Instant::now();
        let eps: Vec<E> = (0..2).map(|_| E(EndpointLoad::default())).collect();
        for e in &eps {
            e.0.observe(Duration::from_millis(30), now);
        }
        let w = Weighted::new(&[1, 3]);
        let heavy = (0..8000).filter(|_| pick(&w, &eps, now) == 1).count();
        // Expected 6000; binomial sd ≈ 39, so ±250 is over 6 sd.
        assert!((5750..6250).contains(&heavy), "{heavy}");
        // A slow heavy endpoint still loses every mixed pair it is drawn into.
        eps[1].0.observe(Duration::from_millis(900), now);
        let heavy = (0..8000).filter(|_| pick(&w, &eps, now) == 1).count();
        // Only the (heavy, heavy) draws: 9/16 of 8000 = 4500.
        assert!((4250..4750).contains(&heavy), "{heavy}");
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
