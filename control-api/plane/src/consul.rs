//! Consul discovery: a service with `consul: {service, datacenter, tags}` gets its passing
//! instances from the health API (`GET /v1/health/service/NAME?passing=1`, Consul 1.x),
//! watched with blocking queries (`index` from `X-Consul-Index`, `wait=30s`). The ACL token
//! comes from `CONSUL_HTTP_TOKEN` (sent as `X-Consul-Token`).

use std::net::IpAddr;
use std::time::Duration;

use remora_control_api::proto::Endpoint;
use remora_control_api::proto::mesh::Service;
use serde::Deserialize;

use crate::polled::{Answer, Blocking, BoxFuture, HttpClient, Registry, blocking_get};

const TIMEOUT: Duration = Duration::from_secs(40);

pub struct Consul {
    base: String,
    token: Option<String>,
    http: HttpClient,
}

impl Consul {
    /// `base` like `http://127.0.0.1:8500`.
    pub fn new(base: &str, token: Option<String>) -> Self {
        Self {
            base: base.trim_end_matches('/').to_owned(),
            token: token.filter(|t| !t.is_empty()),
            http: HttpClient::default(),
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Entry {
    node: Node,
    service: Instance,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Node {
    #[serde(default)]
    address: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Instance {
    #[serde(default)]
    address: String,
    port: u16,
    #[serde(default)]
    weights: Option<Weights>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Weights {
    passing: u32,
}

/// Query parameters for a key (`service\u{1}dc\u{1}tag,tag`).
fn encode(service: &str, dc: &str, tags: &[String]) -> String {
    format!("{service}\u{1}{dc}\u{1}{}", tags.join("\u{2}"))
}

fn query(key: &str) -> String {
    let mut parts = key.split('\u{1}');
    let service = parts.next().unwrap_or_default();
    let dc = parts.next().unwrap_or_default();
    let tags = parts.next().unwrap_or_default();
    let enc = crate::polled::escape;
    let mut q = format!("/v1/health/service/{}?passing=1", enc(service));
    if !dc.is_empty() {
        q.push_str(&format!("&dc={}", enc(dc)));
    }
    for t in tags.split('\u{2}').filter(|t| !t.is_empty()) {
        q.push_str(&format!("&tag={}", enc(t)));
    }
    q
}

/// The endpoints of a health answer: the service address (else the node's) and port,
/// weighted by `Weights.Passing`.
pub fn endpoints(body: &[u8]) -> Result<Vec<Endpoint>, String> {
    let entries: Vec<Entry> =
        serde_json::from_slice(body).map_err(|e| format!("not a Consul health answer: {e}"))?;
    let out: Vec<Endpoint> = entries
        .into_iter()
        .filter_map(|e| {
            let addr = if e.service.address.is_empty() {
                e.node.address
            } else {
                e.service.address
            };
            let ip: IpAddr = addr.parse().ok()?;
            let weight = e.service.weights.map(|w| w.passing.clamp(1, 10_000));
            (e.service.port != 0).then(|| crate::discovery::endpoint(ip, e.service.port, weight))
        })
        .collect();
    Ok(crate::discovery::tidy(out))
}

impl Registry for Consul {
    fn kind(&self) -> &'static str {
        "consul"
    }

    fn key(&self, s: &Service) -> Option<String> {
        let c = s.consul.as_ref()?;
        let name = if c.service.is_empty() {
            &s.name
        } else {
            &c.service
        };
        Some(encode(name, &c.datacenter, &c.tags))
    }

    fn fetch<'a>(
        &'a self,
        key: &'a str,
        index: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Answer, String>> {
        Box::pin(async move {
            let blocking = Blocking {
                token: self.token.as_deref().map(|t| ("x-consul-token", t)),
                index_header: "x-consul-index",
                timeout: TIMEOUT,
            };
            let url = format!("{}{}", self.base, query(key));
            let (body, new_index) = blocking_get(&self.http, url, index, &blocking).await?;
            Ok(Answer {
                endpoints: endpoints(&body)?,
                index: new_index,
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_answers_become_weighted_endpoints() {
        let body = br#"[
          {"Node": {"Node": "n1", "Address": "10.0.0.1", "Datacenter": "dc1"},
           "Service": {"ID": "orders-1", "Service": "orders", "Tags": ["v1"], "Address": "", "Port": 8080, "Weights": {"Passing": 1, "Warning": 1}},
           "Checks": []},
          {"Node": {"Node": "n2", "Address": "10.0.0.2"},
           "Service": {"ID": "orders-2", "Service": "orders", "Address": "10.0.1.2", "Port": 8080, "Weights": {"Passing": 3, "Warning": 1}},
           "Checks": []},
          {"Node": {"Node": "n3", "Address": "not-an-ip"},
           "Service": {"ID": "orders-3", "Service": "orders", "Address": "", "Port": 8080}}
        ]"#;
        let eps = endpoints(body).unwrap_or_else(|e| panic!("{e}"));
        let got: Vec<(&str, Option<u32>)> = eps
            .iter()
            .map(|e| (e.address.as_str(), e.weight.map(|w| w.value)))
            .collect();
        assert_eq!(
            got,
            vec![("10.0.0.1:8080", None), ("10.0.1.2:8080", Some(3))]
        );
        assert!(endpoints(b"{}").is_err());
    }

    #[test]
    fn queries_carry_the_filters() {
        let q = query(&encode("orders", "dc 2", &["v1".into(), "canary".into()]));
        assert_eq!(
            q,
            "/v1/health/service/orders?passing=1&dc=dc%202&tag=v1&tag=canary"
        );
    }
}
