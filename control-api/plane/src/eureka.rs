//! Eureka discovery, as Eureka clients do it: the whole registry once (`GET /eureka/apps`),
//! then every refresh only the changes (`GET /eureka/apps/delta`), checked against the
//! server's `apps__hashcode` (a mismatch means a missed change: fetch everything again). A
//! service with `eureka: {app, secure, zone}` gets that application's instances with status
//! `UP`, on their `port` (or `securePort` with `secure`), optionally only from one zone
//! (`metadata.zone`). JSON answers (`Accept: application/json`) of the Eureka 1.x REST API.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use remora_control_api::proto::Endpoint;
use remora_control_api::proto::mesh::Service;
use serde_json::Value;

use crate::polled::{Answer, BoxFuture, HttpClient, Registry};

const TIMEOUT: Duration = Duration::from_secs(10);
pub const DEFAULT_REFRESH: Duration = Duration::from_secs(30);

#[derive(Default)]
struct Cache {
    /// instanceId → (APP, instance).
    instances: HashMap<String, (String, Value)>,
    synced: bool,
    at: Option<Instant>,
}

pub struct Eureka {
    base: String,
    refresh: Duration,
    http: HttpClient,
    cache: Mutex<Cache>,
}

impl Eureka {
    /// `base` like `http://127.0.0.1:8761/eureka`.
    pub fn new(base: &str, refresh: Duration) -> Self {
        Self {
            base: base.trim_end_matches('/').to_owned(),
            refresh,
            http: HttpClient::default(),
            cache: Mutex::new(Cache::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Cache> {
        self.cache.lock().unwrap_or_else(PoisonError::into_inner)
    }

    async fn get(&self, path: &str) -> Result<Value, String> {
        let url = format!("{}{path}", self.base);
        let (status, _, body) = self
            .http
            .get(&url, &[("accept", "application/json")], TIMEOUT)
            .await?;
        if !status.is_success() {
            return Err(format!("{url}: {status}"));
        }
        serde_json::from_slice(&body).map_err(|e| format!("{url}: not Eureka JSON: {e}"))
    }

    /// Brings the cache up to date: a delta when it can, the whole registry when it must.
    async fn refresh(&self) -> Result<(), String> {
        let (synced, fresh) = {
            let c = self.lock();
            (
                c.synced,
                c.at.is_some_and(|t| t.elapsed() < self.refresh / 2),
            )
        };
        if fresh {
            return Ok(());
        }
        if synced {
            let delta = self.get("/apps/delta").await?;
            let mut c = self.lock();
            for (app, i) in instances(&delta) {
                let id = instance_id(&i);
                match i["actionType"].as_str() {
                    Some("DELETED") => {
                        c.instances.remove(&id);
                    }
                    _ => {
                        c.instances.insert(id, (app, i));
                    }
                }
            }
            let want = delta["applications"]["apps__hashcode"]
                .as_str()
                .unwrap_or("");
            if hashcode(c.instances.values().map(|(_, i)| i)) == want {
                c.at = Some(Instant::now());
                return Ok(());
            }
            tracing::info!(
                "Eureka delta does not add up to the server's hash; fetching the whole registry"
            );
        }
        let all = self.get("/apps").await?;
        let mut c = self.lock();
        c.instances = instances(&all)
            .into_iter()
            .map(|(app, i)| (instance_id(&i), (app, i)))
            .collect();
        c.synced = true;
        c.at = Some(Instant::now());
        Ok(())
    }
}

/// A JSON value that Eureka renders as an object when there is one and an array when more.
fn many(v: &Value) -> Vec<&Value> {
    match v {
        Value::Array(a) => a.iter().collect(),
        Value::Null => Vec::new(),
        other => vec![other],
    }
}

/// (APP, instance) pairs of an `applications` answer.
fn instances(v: &Value) -> Vec<(String, Value)> {
    many(&v["applications"]["application"])
        .into_iter()
        .flat_map(|a| {
            let app = a["name"].as_str().unwrap_or_default().to_ascii_uppercase();
            many(&a["instance"])
                .into_iter()
                .map(move |i| (app.clone(), i.clone()))
        })
        .collect()
}

fn instance_id(i: &Value) -> String {
    i["instanceId"]
        .as_str()
        .map(str::to_owned)
        .unwrap_or_else(|| {
            format!(
                "{}:{}:{}",
                i["hostName"].as_str().unwrap_or(""),
                i["app"].as_str().unwrap_or(""),
                i["port"]["$"]
            )
        })
}

/// Eureka's registry hash: instance counts per status, `STATUS_COUNT_` in status order.
pub fn hashcode<'a>(instances: impl Iterator<Item = &'a Value>) -> String {
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for i in instances {
        *counts
            .entry(i["status"].as_str().unwrap_or("UNKNOWN").to_owned())
            .or_default() += 1;
    }
    counts.iter().map(|(s, n)| format!("{s}_{n}_")).collect()
}

fn number(v: &Value) -> Option<u16> {
    v.as_u64()
        .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
        .and_then(|n| u16::try_from(n).ok())
        .filter(|n| *n != 0)
}

fn enabled(v: &Value) -> bool {
    match &v["@enabled"] {
        Value::Bool(b) => *b,
        Value::String(s) => s == "true",
        _ => true,
    }
}

/// The UP instances of `app` as endpoints.
pub fn endpoints<'a>(
    instances: impl Iterator<Item = (&'a String, &'a Value)>,
    app: &str,
    secure: bool,
    zone: &str,
) -> Vec<Endpoint> {
    let out: Vec<Endpoint> = instances
        .filter(|(a, i)| a.eq_ignore_ascii_case(app) && i["status"] == "UP")
        .filter(|(_, i)| zone.is_empty() || i["metadata"]["zone"].as_str() == Some(zone))
        .filter_map(|(_, i)| {
            let ip: IpAddr = i["ipAddr"].as_str()?.parse().ok()?;
            let port = if secure {
                enabled(&i["securePort"])
                    .then(|| number(&i["securePort"]["$"]))
                    .flatten()
            } else {
                enabled(&i["port"])
                    .then(|| number(&i["port"]["$"]))
                    .flatten()
            }?;
            Some(crate::discovery::endpoint(ip, port, None))
        })
        .collect();
    crate::discovery::tidy(out)
}

impl Registry for Eureka {
    fn kind(&self) -> &'static str {
        "eureka"
    }

    fn key(&self, s: &Service) -> Option<String> {
        let e = s.eureka.as_ref()?;
        let app = if e.app.is_empty() { &s.name } else { &e.app };
        Some(format!(
            "{}\u{1}{}\u{1}{}",
            app.to_ascii_uppercase(),
            e.secure,
            e.zone
        ))
    }

    fn fetch<'a>(
        &'a self,
        key: &'a str,
        index: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Answer, String>> {
        Box::pin(async move {
            if index.is_some() {
                tokio::time::sleep(self.refresh).await;
            }
            self.refresh().await?;
            let mut parts = key.split('\u{1}');
            let app = parts.next().unwrap_or_default();
            let secure = parts.next() == Some("true");
            let zone = parts.next().unwrap_or_default();
            let c = self.lock();
            Ok(Answer {
                endpoints: endpoints(c.instances.values().map(|(a, i)| (a, i)), app, secure, zone),
                index: Some("polled".into()),
            })
        })
    }

    fn min_interval(&self) -> Duration {
        Duration::ZERO
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn up_instances_ports_zones_and_single_object_quirks() {
        let body: Value = serde_json::from_str(r#"{"applications": {"versions__delta": "1", "apps__hashcode": "DOWN_1_UP_2_",
          "application": [
            {"name": "ORDERS", "instance": [
              {"instanceId": "o1", "app": "ORDERS", "ipAddr": "10.0.0.1", "status": "UP",
               "port": {"$": 8080, "@enabled": "true"}, "securePort": {"$": 8443, "@enabled": "true"},
               "metadata": {"zone": "a"}},
              {"instanceId": "o2", "app": "ORDERS", "ipAddr": "10.0.0.2", "status": "DOWN",
               "port": {"$": 8080, "@enabled": "true"}, "securePort": {"$": 8443, "@enabled": "false"}}
            ]},
            {"name": "USERS", "instance":
              {"instanceId": "u1", "app": "USERS", "ipAddr": "10.0.1.1", "status": "UP",
               "port": {"$": "9090", "@enabled": "true"}, "securePort": {"$": 443, "@enabled": "false"},
               "metadata": {"zone": "b"}}
            }
          ]}}"#).unwrap_or_else(|e| panic!("{e}"));
        let all = instances(&body);
        assert_eq!(hashcode(all.iter().map(|(_, i)| i)), "DOWN_1_UP_2_");
        let pairs = || all.iter().map(|(a, i)| (a, i));
        let addrs = |e: Vec<Endpoint>| e.into_iter().map(|e| e.address).collect::<Vec<_>>();
        assert_eq!(
            addrs(endpoints(pairs(), "orders", false, "")),
            vec!["10.0.0.1:8080"]
        );
        assert_eq!(
            addrs(endpoints(pairs(), "ORDERS", true, "")),
            vec!["10.0.0.1:8443"]
        );
        assert_eq!(
            addrs(endpoints(pairs(), "users", false, "")),
            vec!["10.0.1.1:9090"]
        );
        assert!(
            endpoints(pairs(), "users", true, "").is_empty(),
            "secure port disabled"
        );
        assert!(
            endpoints(pairs(), "orders", false, "b").is_empty(),
            "other zone"
        );
    }
}
