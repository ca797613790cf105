//! Marathon discovery, as marathon-lb did it: all apps with their tasks
//! (`GET /v2/apps?embed=apps.tasks`, Marathon 1.x), re-read whenever the event stream
//! (`GET /v2/events`, server-sent events) reports a task, health or deployment change, and
//! at least every 30 s. A service with `marathon: {app, portIndex | portName}` gets the
//! app's running tasks that pass every health check, on the task's port at that index.

use std::net::IpAddr;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use http_body_util::BodyExt;
use remora_control_api::proto::Endpoint;
use remora_control_api::proto::mesh::Service;
use serde_json::Value;
use tokio::sync::watch;

use crate::polled::{Answer, BoxFuture, HttpClient, Registry};

const TIMEOUT: Duration = Duration::from_secs(10);
/// Re-read at least this often even without events.
const REREAD: Duration = Duration::from_secs(30);
/// Events after which the apps are read again.
const EVENTS: [&str; 7] = [
    "status_update_event",
    "health_status_changed_event",
    "instance_health_changed_event",
    "deployment_success",
    "deployment_step_success",
    "app_terminated_event",
    "api_post_event",
];

pub struct Marathon {
    base: String,
    http: HttpClient,
    /// Bumped on every relevant event.
    events: watch::Sender<u64>,
    stream: Mutex<Option<tokio::task::AbortHandle>>,
}

impl Marathon {
    /// `base` like `http://127.0.0.1:8080`.
    pub fn new(base: &str) -> Self {
        Self {
            base: base.trim_end_matches('/').to_owned(),
            http: HttpClient::default(),
            events: watch::channel(0).0,
            stream: Mutex::new(None),
        }
    }

    /// Starts the event-stream reader once.
    fn follow_events(&self) {
        let mut s = self.stream.lock().unwrap_or_else(PoisonError::into_inner);
        if s.is_some() {
            return;
        }
        let (url, http, tx) = (
            format!("{}/v2/events", self.base),
            self.http.clone(),
            self.events.clone(),
        );
        *s = Some(tokio::spawn(read_events(url, http, tx)).abort_handle());
    }
}

impl Drop for Marathon {
    fn drop(&mut self) {
        if let Some(t) = self
            .stream
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            t.abort();
        }
    }
}

/// Reads the SSE stream for ever (reconnecting with backoff), bumping `tx` on changes.
async fn read_events(url: String, http: HttpClient, tx: watch::Sender<u64>) {
    let mut failures = 0u32;
    loop {
        match http.stream(&url, &[("accept", "text/event-stream")]).await {
            Ok(mut body) => {
                failures = 0;
                let mut pending = String::new();
                while let Some(Ok(frame)) = body.frame().await {
                    let Ok(data) = frame.into_data() else {
                        continue;
                    };
                    pending.push_str(&String::from_utf8_lossy(&data));
                    while let Some(nl) = pending.find('\n') {
                        let line: String = pending.drain(..=nl).collect();
                        if let Some(kind) = line.trim().strip_prefix("event:")
                            && EVENTS.contains(&kind.trim())
                        {
                            tx.send_modify(|n| *n += 1);
                        }
                    }
                    if pending.len() > 1 << 20 {
                        pending.clear();
                    }
                }
                // The stream ended: something may have been missed.
                tx.send_modify(|n| *n += 1);
            }
            Err(e) => {
                failures = failures.saturating_add(1);
                if failures == 1 {
                    tracing::warn!(%url, error = %e, "Marathon event stream unavailable; re-reading apps every 30s");
                }
            }
        }
        let wait = Duration::from_millis(500)
            .saturating_mul(1 << failures.min(6))
            .min(Duration::from_secs(30));
        tokio::time::sleep(wait).await;
    }
}

fn port_index(app: &Value, name: &str) -> Option<usize> {
    let named = |list: &Value| {
        list.as_array()?
            .iter()
            .position(|p| p["name"].as_str() == Some(name))
    };
    named(&app["portDefinitions"])
        .or_else(|| named(&app["container"]["portMappings"]))
        .or_else(|| named(&app["container"]["docker"]["portMappings"]))
}

/// The healthy running tasks of `app_id` (all health checks alive), on the port at the
/// index marathon-lb would use.
pub fn endpoints(apps: &Value, app_id: &str, index: usize, name: &str) -> Vec<Endpoint> {
    let want = format!("/{}", app_id.trim_start_matches('/'));
    let Some(app) = apps["apps"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|a| a["id"].as_str() == Some(want.as_str()))
    else {
        return Vec::new();
    };
    let index = if name.is_empty() {
        Some(index)
    } else {
        port_index(app, name)
    };
    let Some(index) = index else {
        return Vec::new();
    };
    let checks = app["healthChecks"].as_array().map_or(0, Vec::len);
    let out: Vec<Endpoint> = app["tasks"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|t| t["state"].as_str().is_none_or(|s| s == "TASK_RUNNING"))
        .filter(|t| {
            let results = t["healthCheckResults"].as_array();
            checks == 0
                || results.is_some_and(|r| {
                    r.len() >= checks && r.iter().all(|h| h["alive"] == Value::Bool(true))
                })
        })
        .filter_map(|t| {
            let port = u16::try_from(t["ports"][index].as_u64()?).ok()?;
            let ip: IpAddr = t["host"]
                .as_str()
                .and_then(|h| h.parse().ok())
                .or_else(|| t["ipAddresses"][0]["ipAddress"].as_str()?.parse().ok())?;
            Some(crate::discovery::endpoint(ip, port, None))
        })
        .collect();
    crate::discovery::tidy(out)
}

impl Registry for Marathon {
    fn kind(&self) -> &'static str {
        "marathon"
    }

    fn key(&self, s: &Service) -> Option<String> {
        let m = s.marathon.as_ref()?;
        Some(format!(
            "{}\u{1}{}\u{1}{}",
            m.app, m.port_index, m.port_name
        ))
    }

    fn fetch<'a>(
        &'a self,
        key: &'a str,
        index: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Answer, String>> {
        Box::pin(async move {
            self.follow_events();
            // The index is the event count the last answer reflects: an event that came
            // between two queries is not missed.
            let mut rx = self.events.subscribe();
            if let Some(seen) = index.and_then(|i| i.parse::<u64>().ok())
                && *rx.borrow_and_update() == seen
            {
                let _ = tokio::time::timeout(REREAD, rx.changed()).await;
            }
            let reflected = *self.events.borrow();
            let url = format!("{}/v2/apps?embed=apps.tasks", self.base);
            let (status, _, body) = self
                .http
                .get(&url, &[("accept", "application/json")], TIMEOUT)
                .await?;
            if !status.is_success() {
                return Err(format!("{url}: {status}"));
            }
            let apps: Value = serde_json::from_slice(&body)
                .map_err(|e| format!("{url}: not Marathon JSON: {e}"))?;
            let mut parts = key.split('\u{1}');
            let app = parts.next().unwrap_or_default();
            let index: usize = parts.next().and_then(|i| i.parse().ok()).unwrap_or(0);
            let name = parts.next().unwrap_or_default();
            Ok(Answer {
                endpoints: endpoints(&apps, app, index, name),
                index: Some(reflected.to_string()),
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn healthy_running_tasks_on_the_indexed_or_named_port() {
        let apps: Value = serde_json::from_str(r#"{"apps": [
          {"id": "/shop/orders", "portDefinitions": [{"port": 10000, "name": "http"}, {"port": 10001, "name": "admin"}],
           "healthChecks": [{"protocol": "HTTP", "path": "/health"}],
           "tasks": [
             {"id": "t1", "host": "10.0.0.1", "ports": [31000, 31001], "state": "TASK_RUNNING",
              "healthCheckResults": [{"alive": true}]},
             {"id": "t2", "host": "10.0.0.2", "ports": [31002, 31003], "state": "TASK_RUNNING",
              "healthCheckResults": [{"alive": false}]},
             {"id": "t3", "host": "10.0.0.3", "ports": [31004, 31005], "state": "TASK_STAGING"},
             {"id": "t4", "host": "agent-4.example", "ipAddresses": [{"ipAddress": "10.0.0.4"}],
              "ports": [31006, 31007], "healthCheckResults": [{"alive": true}]}
           ]},
          {"id": "/users", "tasks": [{"id": "u1", "host": "10.0.1.1", "ports": [32000]}]}
        ]}"#).unwrap_or_else(|e| panic!("{e}"));
        let addrs = |e: Vec<Endpoint>| e.into_iter().map(|e| e.address).collect::<Vec<_>>();
        assert_eq!(
            addrs(endpoints(&apps, "/shop/orders", 0, "")),
            vec!["10.0.0.1:31000", "10.0.0.4:31006"]
        );
        assert_eq!(
            addrs(endpoints(&apps, "shop/orders", 0, "admin")),
            vec!["10.0.0.1:31001", "10.0.0.4:31007"]
        );
        assert_eq!(
            addrs(endpoints(&apps, "/users", 0, "")),
            vec!["10.0.1.1:32000"],
            "no checks: running is enough"
        );
        assert!(endpoints(&apps, "/users", 1, "").is_empty(), "no such port");
        assert!(endpoints(&apps, "/nope", 0, "").is_empty());
    }
}
