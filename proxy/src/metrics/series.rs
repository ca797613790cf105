//! Per-thread handles of the request series: a family lookup hashes every label string
//! under a lock, so each worker thread resolves a label set once and then counts through the
//! cached counter and histogram. Keys hold the label `Arc`s, compared by address, so an
//! address can never be reused for other names while cached; the cache starts over when a
//! series of configuration changes has filled it.

use std::cell::RefCell;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::Histogram;

use super::{Metrics, RequestLabels};

/// Most label sets cached per thread before the cache starts over.
const MAX_CACHED: usize = 4096;

struct ByAddress(Arc<str>);

impl PartialEq for ByAddress {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}
impl Eq for ByAddress {}
impl Hash for ByAddress {
    fn hash<H: Hasher>(&self, h: &mut H) {
        Arc::as_ptr(&self.0).cast::<u8>().hash(h);
    }
}

#[derive(PartialEq, Eq, Hash)]
struct Key {
    /// Which registry (tests run several proxies' metrics in one thread).
    metrics: usize,
    direction: &'static str,
    listener: ByAddress,
    route: ByAddress,
    cluster: ByAddress,
    status: u16,
}

thread_local! {
    static SERIES: RefCell<HashMap<Key, (Counter, Histogram)>> = RefCell::new(HashMap::new());
    static BYTES: RefCell<HashMap<Key, (Counter, Counter)>> = RefCell::new(HashMap::new());
}

impl Metrics {
    /// The (request, response) byte counters of a route's series, cached per thread.
    pub fn byte_counters(&self, labels: &super::BytesLabels) -> (Counter, Counter) {
        let key = Key {
            metrics: std::ptr::from_ref(self) as usize,
            direction: labels.direction,
            listener: ByAddress(labels.listener.0.clone()),
            route: ByAddress(labels.route.0.clone()),
            cluster: ByAddress(labels.cluster.0.clone()),
            status: 0,
        };
        BYTES.with(|cache| {
            let mut cache = cache.borrow_mut();
            if let Some(c) = cache.get(&key) {
                return c.clone();
            }
            if cache.len() >= MAX_CACHED {
                cache.clear();
            }
            let c = (
                self.request_bytes.get_or_create(labels).clone(),
                self.response_bytes.get_or_create(labels).clone(),
            );
            cache.insert(key, c.clone());
            c
        })
    }

    /// Counts one request and observes its duration under `labels`.
    pub fn record_request(&self, labels: &RequestLabels, seconds: f64) {
        let key = Key {
            metrics: std::ptr::from_ref(self) as usize,
            direction: labels.direction,
            listener: ByAddress(labels.listener.0.clone()),
            route: ByAddress(labels.route.0.clone()),
            cluster: ByAddress(labels.cluster.0.clone()),
            status: labels.status,
        };
        SERIES.with(|cache| {
            let mut cache = cache.borrow_mut();
            if let Some((count, duration)) = cache.get(&key) {
                count.inc();
                duration.observe(seconds);
                return;
            }
            if cache.len() >= MAX_CACHED {
                cache.clear();
            }
            let count = self.requests.get_or_create(labels).clone();
            let duration = self.request_duration.get_or_create(labels).clone();
            count.inc();
            duration.observe(seconds);
            cache.insert(key, (count, duration));
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Name;

    fn labels(route: &Arc<str>, status: u16) -> RequestLabels {
        RequestLabels {
            direction: "outbound",
            listener: Name(Arc::from("l")),
            route: Name(route.clone()),
            cluster: Name(Arc::from("c")),
            status,
        }
    }

    #[test]
    fn cached_and_uncached_label_sets_count_into_the_same_series() {
        let m = Metrics::new();
        let route: Arc<str> = Arc::from("r");
        for _ in 0..3 {
            m.record_request(&labels(&route, 200), 0.001);
        }
        // Same names in new Arcs (as after a configuration swap): the same series.
        m.record_request(&labels(&Arc::from("r"), 200), 0.001);
        m.record_request(&labels(&route, 503), 0.001);
        let text = m.encode();
        assert!(
            text.contains("route=\"r\",cluster=\"c\",status=\"200\"} 4"),
            "{text}"
        );
        assert!(text.contains("status=\"503\"} 1"), "{text}");
    }
}
