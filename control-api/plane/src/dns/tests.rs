//! Tests for `dns.rs` against a tiny DNS responder on 127.0.0.1 (hand-built packets; the
//! system resolver is never used): answers become endpoints, changes are signalled and reach
//! the generated configuration, an empty answer keeps the last known set.

use super::*;
use std::net::Ipv4Addr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::discovery::StaticSource;
use crate::metrics::Metrics;
use crate::state::Hub;

/// An SRV record: priority, weight, port, target.
type Srv = (u16, u16, u16, &'static str);

/// Answers every A query with the current addresses (TTL 0), AAAA with no records, and SRV
/// with the current SRV records (priority, weight, port, target labels).
struct Responder {
    addr: SocketAddr,
    answers: Arc<Mutex<Vec<Ipv4Addr>>>,
    srv: Arc<Mutex<Vec<Srv>>>,
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
    let srv: Arc<Mutex<Vec<Srv>>> = Arc::default();
    let queries = Arc::new(AtomicUsize::new(0));
    let (a, q, sv) = (Arc::clone(&answers), Arc::clone(&queries), Arc::clone(&srv));
    let task = tokio::spawn(async move {
        let mut buf = [0u8; 512];
        loop {
            let Ok((n, peer)) = socket.recv_from(&mut buf).await else {
                return;
            };
            let reply = answer(&buf[..n], &a.lock().unwrap(), &sv.lock().unwrap());
            if let Some(reply) = reply {
                q.fetch_add(1, Ordering::SeqCst);
                let _ = socket.send_to(&reply, peer).await;
            }
        }
    });
    Responder {
        addr,
        answers,
        srv,
        queries,
        task,
    }
}

/// A domain name in wire format.
fn wire_name(name: &str) -> Vec<u8> {
    let mut out = Vec::new();
    for label in name.trim_end_matches('.').split('.') {
        out.push(u8::try_from(label.len()).unwrap());
        out.extend_from_slice(label.as_bytes());
    }
    out.push(0);
    out
}

/// Builds the reply to one query packet.
fn answer(query: &[u8], ips: &[Ipv4Addr], srv: &[(u16, u16, u16, &str)]) -> Option<Vec<u8>> {
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
    let srv: &[(u16, u16, u16, &str)] = if qtype == 33 { srv } else { &[] };
    let mut out = Vec::new();
    out.extend_from_slice(&query[0..2]); // id
    out.extend_from_slice(&[0x81, 0x80]); // response, recursion desired + available, NOERROR
    out.extend_from_slice(&[0, 1]); // one question
    out.extend_from_slice(&u16::try_from(records.len() + srv.len()).ok()?.to_be_bytes());
    out.extend_from_slice(&[0, 0, 0, 0]); // no authority, no additional
    out.extend_from_slice(query.get(12..question_end)?);
    for ip in records {
        out.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 0, 0, 4]); // name ptr, A, IN, TTL 0, len 4
        out.extend_from_slice(&ip.octets());
    }
    for (priority, weight, port, target) in srv {
        let target = wire_name(target);
        out.extend_from_slice(&[0xc0, 0x0c, 0, 33, 0, 1, 0, 0, 0, 30]); // name ptr, SRV, IN, TTL 30
        out.extend_from_slice(&u16::try_from(6 + target.len()).ok()?.to_be_bytes());
        out.extend_from_slice(&priority.to_be_bytes());
        out.extend_from_slice(&weight.to_be_bytes());
        out.extend_from_slice(&port.to_be_bytes());
        out.extend_from_slice(&target);
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
    let metrics = Arc::new(Metrics::new());
    let source = Arc::new(source(
        Some(resolver(&[dns.addr]).unwrap()),
        tx,
        Arc::clone(&metrics),
    ));
    let hub = Hub::load(&dir, vec![Arc::new(StaticSource), source], metrics).unwrap();
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

    // An empty answer keeps the last known set (several refreshes later), within the
    // grace period.
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
fn resolv_conf_parsing_takes_nameservers_and_ignores_junk() {
    let text = "# comment\nsearch example.com\nnameserver 10.0.0.53\nnameserver   ::1\nnameserver not-an-ip\noptions ndots:5\n";
    assert_eq!(
        servers_in(text),
        vec![
            "10.0.0.53:53".parse::<SocketAddr>().unwrap(),
            "[::1]:53".parse().unwrap()
        ]
    );
    assert!(servers_in("").is_empty());
}

#[tokio::test]
async fn srv_records_give_ports_and_weights_from_the_lowest_priority() {
    let dns = responder(vec![Ipv4Addr::new(10, 2, 0, 1)]).await;
    *dns.srv.lock().unwrap() = vec![
        (10, 3, 9001, "a.orders.test."),
        (10, 1, 9002, "b.orders.test."),
        (20, 1, 9999, "backup.orders.test."),
    ];
    let r = resolver(&[dns.addr]).unwrap();
    let (eps, valid_until) = lookup_srv(&r, "_http._tcp.orders.test.").await.unwrap();
    let got: Vec<(&str, Option<u32>)> = eps
        .iter()
        .map(|e| (e.address.as_str(), e.weight.map(|w| w.value)))
        .collect();
    // Both targets resolve to the same address here; each record keeps its own port.
    assert_eq!(
        got,
        vec![("10.2.0.1:9001", Some(3)), ("10.2.0.1:9002", None)]
    );
    // The A answers' TTL is 0: the refresh follows it (clamped to the 1 s minimum later).
    assert!(valid_until <= std::time::Instant::now() + std::time::Duration::from_secs(30));
}
