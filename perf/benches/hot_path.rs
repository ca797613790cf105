//! Micro-benches of the hot pieces: route match (10 and 1,000 routes), balancer pick (10 and
//! 10,000 endpoints), snapshot compile (10,000 endpoints), header rewrite.

// Benchmarks set up fixed inputs; a failure to do so should stop the run loudly.
#![allow(clippy::expect_used)]

use std::hint::black_box;
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use http::{HeaderMap, HeaderValue, Method};
use remora_control_api::load::from_yaml;
use remora_control_api::validate;
use remora_filters::balance::{Balancer, EndpointLoad, HasLoad, PickContext};
use remora_filters::router::{RequestInfo, Router};

fn routes_yaml(n: usize) -> String {
    let mut s = String::from(
        "clusters: [{name: c, endpoints: [{address: '127.0.0.1:1'}]}]\nrouteTables:\n  - name: t\n    virtualHosts:\n      - name: v\n        domains: ['*']\n        routes:\n",
    );
    for i in 0..n {
        s.push_str(&format!(
            "          - {{ name: r{i}, match: {{ pathPrefix: /svc{i}/, headers: [{{name: x-tenant, exact: t{i}}}] }}, forward: {{ cluster: c }} }}\n"
        ));
    }
    s
}

fn router(n: usize) -> Router {
    let cfg = validate(&from_yaml(&routes_yaml(n)).expect("yaml")).expect("valid");
    Router::new(cfg.route_tables.into_iter().next().expect("table"))
}

fn bench_route_match(c: &mut Criterion) {
    let mut headers = HeaderMap::new();
    for n in [10usize, 1000] {
        let r = router(n);
        // The last route: the worst case for first-match-wins.
        let path = format!("/svc{}/items", n - 1);
        headers.insert(
            "x-tenant",
            HeaderValue::from_str(&format!("t{}", n - 1)).expect("value"),
        );
        let method = Method::GET;
        c.bench_function(&format!("route_match/{n}_routes/last"), |b| {
            b.iter(|| {
                let info = RequestInfo {
                    authority: "orders.svc",
                    method: &method,
                    path: &path,
                    query: None,
                    headers: &headers,
                };
                black_box(r.route(black_box(&info)).is_ok())
            });
        });
    }
}

struct E(EndpointLoad);
impl HasLoad for E {
    fn load(&self) -> &EndpointLoad {
        &self.0
    }
}

fn bench_balancer(c: &mut Criterion) {
    use remora_control_api::cluster::{Endpoint, LbPolicy};
    for n in [10usize, 10_000] {
        let eps: Vec<Endpoint> = (0..n)
            .map(|i| Endpoint {
                address: format!("10.{}.{}.{}:80", i / 65536, (i / 256) % 256, i % 256)
                    .parse()
                    .expect("addr"),
                weight: 1 + (i % 3) as u32,
                identity: None,
            })
            .collect();
        let loads: Vec<E> = (0..n).map(|_| E(EndpointLoad::default())).collect();
        for (name, policy) in [
            ("p2c_ewma", LbPolicy::P2cPeakEwma),
            ("round_robin", LbPolicy::RoundRobin),
            (
                "ring_hash",
                LbPolicy::RingHash {
                    key: remora_control_api::cluster::HashKey::SourceIp,
                    ring_size: 1024,
                },
            ),
        ] {
            let b = Balancer::new(&policy, &eps);
            let mut k = 0u64;
            c.bench_function(&format!("balancer_pick/{name}/{n}_endpoints"), |bench| {
                bench.iter(|| {
                    k = k.wrapping_add(0x9e37_79b9_7f4a_7c15);
                    black_box(b.pick(&loads, PickContext { hash: Some(k) }))
                });
            });
        }
    }
}

fn bench_snapshot_compile(c: &mut Criterion) {
    let mut y = String::from("clusters:\n  - name: big\n    endpoints:\n");
    for i in 0..10_000 {
        y.push_str(&format!(
            "      - {{ address: \"10.{}.{}.{}:8080\" }}\n",
            i / 65536,
            (i / 256) % 256,
            i % 256
        ));
    }
    let proto = from_yaml(&y).expect("yaml");
    let registry = remora_proxy::upstream::Registry::default();
    let metrics = remora_proxy::metrics::Metrics::new();
    c.bench_function("snapshot_compile/10000_endpoints", |b| {
        b.iter(|| {
            let cfg = validate(black_box(&proto)).expect("valid");
            let (snap, staged) = remora_proxy::snapshot::Snapshot::compile(
                cfg,
                proto.clone(),
                "v".into(),
                &registry,
                &metrics,
                &Default::default(),
            );
            registry.commit(staged);
            black_box(snap.clusters.len())
        });
    });
}

fn bench_header_rewrite(c: &mut Criterion) {
    use http::HeaderName;
    use remora_control_api::route::HeaderRewrite;
    let rw = Arc::new(HeaderRewrite {
        add: vec![(
            HeaderName::from_static("x-served-by"),
            HeaderValue::from_static("remora"),
        )],
        set: vec![(
            HeaderName::from_static("x-env"),
            HeaderValue::from_static("prod"),
        )],
        remove: vec![HeaderName::from_static("x-secret")],
    });
    let mut base = HeaderMap::new();
    for (k, v) in [
        ("host", "orders.svc"),
        ("user-agent", "bench"),
        ("accept", "*/*"),
        ("x-secret", "1"),
        ("x-env", "dev"),
    ] {
        base.insert(k, HeaderValue::from_static(v));
    }
    c.bench_function("header_rewrite/3_ops_5_headers", |b| {
        b.iter(|| {
            let mut h = base.clone();
            remora_filters::rewrite::apply(&rw, &mut h);
            black_box(h.len())
        });
    });
}

/// What the resilience layers add to every request that succeeds: a `maxRequests` slot,
/// a retry-budget deposit, an outlier-detector success, the availability check of a pick.
fn bench_resilience(c: &mut Criterion) {
    use remora_control_api::resilience::{OutlierDetection, RetryBudget};
    use remora_filters::breaker::{Counter, Limit};
    use remora_filters::budget::Budget;
    use remora_filters::outlier::{ClusterOutliers, EndpointOutlier, Observed};
    use std::sync::Arc;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
    let _guard = rt.enter();
    let counter = Arc::new(Counter::default());
    c.bench_function("resilience/breaker_slot_acquire_release", |b| {
        b.iter(|| black_box(counter.try_acquire(Limit::Requests, 1024).is_ok()));
    });
    let budget = Budget::new();
    let cfg = RetryBudget::default();
    c.bench_function("resilience/budget_deposit", |b| {
        b.iter(|| budget.deposit(&cfg, tokio::time::Instant::now()));
    });
    c.bench_function("resilience/budget_withdraw", |b| {
        b.iter(|| black_box(budget.withdraw(&cfg, tokio::time::Instant::now())));
    });
    let (endpoint, cluster) = (EndpointOutlier::default(), ClusterOutliers::default());
    let outlier = OutlierDetection::default();
    c.bench_function("resilience/outlier_record_success", |b| {
        b.iter(|| {
            black_box(endpoint.record(
                &cluster,
                &outlier,
                10,
                Observed::Success,
                tokio::time::Instant::now,
            ))
        });
    });
    let with_rate = OutlierDetection {
        success_rate_threshold: Some(0.8),
        ..outlier
    };
    c.bench_function("resilience/outlier_record_success_with_success_rate", |b| {
        b.iter(|| {
            black_box(endpoint.record(
                &cluster,
                &with_rate,
                10,
                Observed::Success,
                tokio::time::Instant::now,
            ))
        });
    });
    use remora_control_api::cluster::{Endpoint, LbPolicy};
    let eps: Vec<Endpoint> = (0..10)
        .map(|i| Endpoint {
            address: format!("10.0.0.{}:80", i + 1).parse().expect("addr"),
            weight: 1,
            identity: None,
        })
        .collect();
    let loads: Vec<E> = (0..10).map(|_| E(EndpointLoad::default())).collect();
    let b = Balancer::new(&LbPolicy::P2cPeakEwma, &eps);
    c.bench_function("resilience/pick_available/p2c_ewma/10_endpoints", |bench| {
        bench.iter(|| black_box(b.pick_available(&loads, PickContext::default(), None)));
    });
    let mut h = http::HeaderMap::new();
    for i in 0..8 {
        h.insert(
            http::HeaderName::from_bytes(format!("x-header-{i}").as_bytes()).expect("name"),
            http::HeaderValue::from_static("value"),
        );
    }
    c.bench_function("resilience/retry_headers_clone_8", |bench| {
        bench.iter(|| black_box(h.clone()));
    });
}

criterion_group!(
    benches,
    bench_route_match,
    bench_balancer,
    bench_snapshot_compile,
    bench_header_rewrite,
    bench_resilience
);
criterion_main!(benches);
