//! Nomad discovery: a service with `nomad: {service, namespace, tags}` gets its
//! registrations from Nomad's native service API (`GET /v1/service/NAME`, Nomad 1.3+),
//! watched with blocking queries (`index` from `X-Nomad-Index`, `wait=30s`). The ACL token
//! comes from `NOMAD_TOKEN` (sent as `X-Nomad-Token`).

use std::net::IpAddr;
use std::time::Duration;

use remora_control_api::proto::Endpoint;
use remora_control_api::proto::mesh::Service;
use serde::Deserialize;

use crate::polled::{Answer, Blocking, BoxFuture, HttpClient, Registry, blocking_get};

const TIMEOUT: Duration = Duration::from_secs(40);

pub struct Nomad {
    base: String,
    token: Option<String>,
    http: HttpClient,
}

impl Nomad {
    /// `base` like `http://127.0.0.1:4646`.
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
struct Registration {
    address: String,
    port: u16,
    #[serde(default)]
    tags: Vec<String>,
}

/// The endpoints of a service answer that carry every tag of `tags`.
pub fn endpoints(body: &[u8], tags: &[&str]) -> Result<Vec<Endpoint>, String> {
    let regs: Vec<Registration> =
        serde_json::from_slice(body).map_err(|e| format!("not a Nomad service answer: {e}"))?;
    let out: Vec<Endpoint> = regs
        .into_iter()
        .filter(|r| tags.iter().all(|t| r.tags.iter().any(|x| x == t)))
        .filter_map(|r| {
            let ip: IpAddr = r.address.parse().ok()?;
            (r.port != 0).then(|| crate::discovery::endpoint(ip, r.port, None))
        })
        .collect();
    Ok(crate::discovery::tidy(out))
}

impl Registry for Nomad {
    fn kind(&self) -> &'static str {
        "nomad"
    }

    fn key(&self, s: &Service) -> Option<String> {
        let n = s.nomad.as_ref()?;
        let name = if n.service.is_empty() {
            &s.name
        } else {
            &n.service
        };
        let ns = if n.namespace.is_empty() {
            "default"
        } else {
            &n.namespace
        };
        Some(format!("{name}\u{1}{ns}\u{1}{}", n.tags.join("\u{2}")))
    }

    fn fetch<'a>(
        &'a self,
        key: &'a str,
        index: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Answer, String>> {
        Box::pin(async move {
            let mut parts = key.split('\u{1}');
            let name = parts.next().unwrap_or_default();
            let ns = parts.next().unwrap_or_default();
            let tags: Vec<&str> = parts
                .next()
                .unwrap_or_default()
                .split('\u{2}')
                .filter(|t| !t.is_empty())
                .collect();
            let url = format!(
                "{}/v1/service/{}?namespace={}",
                self.base,
                crate::polled::escape(name),
                crate::polled::escape(ns)
            );
            let blocking = Blocking {
                token: self.token.as_deref().map(|t| ("x-nomad-token", t)),
                index_header: "x-nomad-index",
                timeout: TIMEOUT,
            };
            let (body, index) = blocking_get(&self.http, url, index, &blocking).await?;
            Ok(Answer {
                endpoints: endpoints(&body, &tags)?,
                index,
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registrations_with_the_tags_become_endpoints() {
        let body = br#"[
          {"ID": "_nomad-task-1", "ServiceName": "orders", "Namespace": "default", "NodeID": "n1",
           "Datacenter": "dc1", "JobID": "shop", "AllocID": "a1", "Tags": ["v1", "http"],
           "Address": "10.0.0.1", "Port": 23456, "CreateIndex": 10, "ModifyIndex": 10},
          {"ID": "_nomad-task-2", "ServiceName": "orders", "Namespace": "default", "NodeID": "n2",
           "Datacenter": "dc1", "JobID": "shop", "AllocID": "a2", "Tags": ["v2"],
           "Address": "10.0.0.2", "Port": 23457, "CreateIndex": 11, "ModifyIndex": 11}
        ]"#;
        let all = endpoints(body, &[]).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(all.len(), 2);
        let v1 = endpoints(body, &["v1"]).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            v1.iter().map(|e| e.address.as_str()).collect::<Vec<_>>(),
            vec!["10.0.0.1:23456"]
        );
        assert!(endpoints(b"{\"not\": \"a list\"}", &[]).is_err());
    }
}
