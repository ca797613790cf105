//! Tests for `dns.rs` against a tiny DNS responder on 127.0.0.1 (hand-built packets; the
//! system resolver is never used): answers become endpoints, changes are signalled and reach
//! the generated configuration, an empty answer keeps the last known set.

use super::*;
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::discovery::StaticSource;
use crate::metrics::Metrics;
use crate::state::Hub;

/// Answers every A query with the current addresses (TTL 0) and AAAA with no records.
struct Responder {
    addr: SocketAddr,
    answers: Arc<Mutex<Vec<Ipv4Addr>>>,
    queries: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Responder {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn responder(initial: Vec<Ipv4Addr>) -> Responder {
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = socket.local_addr().unwrap();
    let answers = Arc::new(Mutex::new(initial));
    let queries = Arc::new(AtomicUsize::new(0));
    let (a, q) = (Arc::clone(&answers), Arc::clone(&queries));
    let task = tokio::spawn(async move {
        let mut buf = [0u8; 512];
        loop {
            let Ok((n, peer)) = socket.recv_from(&mut buf).await else {
                return;
            };
            let reply = answer(&buf[..n], &a.lock().unwrap());
            if let Some(reply) = reply {
                q.fetch_add(1, Ordering::SeqCst);
                let _ = socket.send_to(&reply, peer).await;
            }
        }
    });
    Responder {
        addr,
        answers,
        queries,
        task,
    }
}

/// Builds the reply to one query packet.
fn answer(query: &[u8], ips: &[Ipv4Addr]) -> Option<Vec<u8>> {
    if query.len() < 12 {
        return None;
    }
    let mut i = 12;
    while *query.get(i)? != 0 {
        i += usize::from(query[i]) + 1;
    }
    let question_end = i + 5;
    let qtype = u16::from_be_bytes([*query.get(i + 1)?, *query.get(i + 2)?]);
    let records: &[Ipv4Addr] = if qtype == 1 { ips } else { &[] };
    let mut out = Vec::new();
    out.extend_from_slice(&query[0..2]); // id
    out.extend_from_slice(&[0x81, 0x80]); // response, recursion desired + available, NOERROR
    out.extend_from_slice(&[0, 1]); // one question
    out.extend_from_slice(&u16::try_from(records.len()).ok()?.to_be_bytes());
    out.extend_from_slice(&[0, 0, 0, 0]); // no authority, no additional
    out.extend_from_slice(query.get(12..question_end)?);
    for ip in records {
        out.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 0, 0, 4]); // name ptr, A, IN, TTL 0, len 4
        out.extend_from_slice(&ip.octets());
    }
    Some(out)
}

const MESH: &str = r#"
services:
  - { name: orders, dns: { name: "orders.test.", port: 8080, refresh: 0.05s } }
sidecars:
  - { service: web, upstreams: [{ service: orders, address: "127.0.0.1:7001" }] }
"#;

fn addresses(hub: &Hub) -> Vec<String> {
    hub.current().config_for("web").endpoints["orders"]
        .iter()
        .map(|e| e.address.clone())
        .collect()
}

#[tokio::test]
async fn dns_answers_become_endpoints_and_changes_reach_the_config() {
    let dns = responder(vec![Ipv4Addr::new(10, 1, 0, 2), Ipv4Addr::new(10, 1, 0, 1)]).await;
    let dir = std::env::temp_dir().join(format!("remora-dns-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("mesh.yaml"), MESH).unwrap();
    let (tx, mut changed) = mpsc::channel(1);
    let source = Arc::new(DnsSource::new(Some(resolver(&[dns.addr]).unwrap()), tx));
    let hub = Hub::load(
        &dir,
        vec![Arc::new(StaticSource), source],
        Arc::new(Metrics::new()),
    )
    .unwrap();
    assert!(addresses(&hub).is_empty(), "nothing resolved yet");

    let wait = std::time::Duration::from_secs(10);
    tokio::time::timeout(wait, changed.recv())
        .await
        .unwrap()
        .unwrap();
    hub.refresh_endpoints();
    assert_eq!(addresses(&hub), vec!["10.1.0.1:8080", "10.1.0.2:8080"]);
    let first = hub.current().config_for("web");

    // The answer changes: a new endpoints version, the same config version.
    *dns.answers.lock().unwrap() = vec![Ipv4Addr::new(10, 1, 0, 3)];
    tokio::time::timeout(wait, changed.recv())
        .await
        .unwrap()
        .unwrap();
    hub.refresh_endpoints();
    assert_eq!(addresses(&hub), vec!["10.1.0.3:8080"]);
    let second = hub.current().config_for("web");
    assert_eq!(second.config_version, first.config_version);
    assert_ne!(second.endpoints_version, first.endpoints_version);

    // An empty answer keeps the last known set (several refreshes later).
    *dns.answers.lock().unwrap() = Vec::new();
    let seen = dns.queries.load(Ordering::SeqCst);
    let deadline = tokio::time::Instant::now() + wait;
    while dns.queries.load(Ordering::SeqCst) < seen + 6 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "resolver stopped asking"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    hub.refresh_endpoints();
    assert_eq!(addresses(&hub), vec!["10.1.0.3:8080"]);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn resolv_conf_parsing_ignores_junk() {
    // Only checks that the parser never panics on this machine's file.
    let _ = system_servers();
}
