//! The operator commands (`apply`, `diff`, `get`): a small HTTP/1.1 client for the API and
//! the human-readable output.

use std::fmt::Write as _;

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde_json::Value;

use crate::cli::{GetKind, Output};

/// Sends one request to the API at `server` (`http://HOST:PORT`).
pub async fn call(
    server: &str,
    method: Method,
    path: &str,
    body: Option<Vec<u8>>,
) -> anyhow::Result<(StatusCode, Value)> {
    let authority = server
        .strip_prefix("http://")
        .ok_or_else(|| anyhow::anyhow!("--server {server:?}: expected http://HOST:PORT"))?
        .trim_end_matches('/');
    let stream = tokio::net::TcpStream::connect(authority).await.map_err(|e| {
        anyhow::anyhow!("cannot reach the control plane at {server}: {e} (is `remora-control serve` running? set --server or REMORA_CONTROL_SERVER)")
    })?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let req = Request::builder()
        .method(method)
        .uri(path)
        .header(http::header::HOST, authority)
        .header(http::header::CONTENT_TYPE, "application/yaml")
        .body(Full::new(Bytes::from(body.unwrap_or_default())))?;
    let resp = sender.send_request(req).await?;
    let status = resp.status();
    let bytes = resp.into_body().collect().await?.to_bytes();
    let value = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
    Ok((status, value))
}

/// `apply` or `diff`: prints the result; an error lists every problem.
pub async fn change(server: &str, file: &std::path::Path, apply: bool) -> anyhow::Result<()> {
    let text = if file.as_os_str() == "-" {
        std::io::read_to_string(std::io::stdin())?
    } else {
        std::fs::read_to_string(file)
            .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", file.display()))?
    };
    let path = if apply { "/v1/apply" } else { "/v1/diff" };
    let (status, value) = call(server, Method::POST, path, Some(text.into_bytes())).await?;
    if !status.is_success() {
        anyhow::bail!(
            "{}: refused ({status}); nothing was changed\n{}",
            file.display(),
            error_lines(&value)
        );
    }
    print!("{}", render_report(&value, apply));
    Ok(())
}

fn error_lines(value: &Value) -> String {
    match value.get("errors").and_then(Value::as_array) {
        Some(errors) => errors
            .iter()
            .map(|e| format!("  - {}", e.as_str().unwrap_or_default()))
            .collect::<Vec<_>>()
            .join("\n"),
        None => format!("  - {value}"),
    }
}

fn strings(value: &Value, key: &str) -> Vec<String> {
    value
        .get(key)
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(ToOwned::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

/// The human summary of an apply or diff answer.
pub fn render_report(value: &Value, applied: bool) -> String {
    let mut out = String::new();
    let verb = if applied { "applied" } else { "would apply" };
    let sections = [("added", "+"), ("changed", "~"), ("removed", "-")];
    let mut any = false;
    for (key, mark) in sections {
        for r in strings(value, key) {
            any = true;
            let _ = writeln!(out, "{mark} {r} ({key})");
        }
    }
    if !any {
        let _ = writeln!(out, "no resource changes");
    }
    let pushes = value
        .get("pushes")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if pushes.is_empty() {
        let _ = writeln!(out, "{verb}: no proxy gets an update");
    }
    for p in pushes {
        let service = p.get("service").and_then(Value::as_str).unwrap_or_default();
        let kind = p.get("type").and_then(Value::as_str).unwrap_or_default();
        let proxies = strings(&p, "proxies");
        let _ = writeln!(
            out,
            "{verb}: proxies of {service:?} receive {} ({} connected{}{})",
            kind.to_uppercase(),
            proxies.len(),
            if proxies.is_empty() { "" } else { ": " },
            proxies.join(", ")
        );
    }
    out
}

/// `get`: prints a table or JSON.
pub async fn get(server: &str, what: GetKind, output: Output) -> anyhow::Result<()> {
    let path = match what {
        GetKind::Services => "/v1/services",
        GetKind::Policies => "/v1/policies",
        GetKind::Proxies => "/v1/proxies",
    };
    let (status, value) = call(server, Method::GET, path, None).await?;
    if !status.is_success() {
        anyhow::bail!("{path}: {status}\n{}", error_lines(&value));
    }
    match output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&value)?),
        Output::Table => print!("{}", render_table(what, &value)),
    }
    Ok(())
}

fn field(v: &Value, key: &str) -> String {
    match v.get(key) {
        Some(Value::String(s)) if s.is_empty() => "-".into(),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => "-".into(),
        Some(other) => other.to_string(),
    }
}

/// Renders the API's list as an aligned table.
pub fn render_table(what: GetKind, value: &Value) -> String {
    let items = value.as_array().cloned().unwrap_or_default();
    let (header, rows): (Vec<&str>, Vec<Vec<String>>) = match what {
        GetKind::Services => (
            vec!["NAME", "SOURCE", "ENDPOINTS", "FROM", "STALE"],
            items
                .iter()
                .map(|s| {
                    let n = s
                        .get("endpoints")
                        .and_then(Value::as_array)
                        .map_or(0, Vec::len);
                    vec![
                        field(s, "name"),
                        field(s, "source"),
                        n.to_string(),
                        field(s, "origin"),
                        field(s, "stale"),
                    ]
                })
                .collect(),
        ),
        GetKind::Policies => (
            vec!["SERVICE", "ROUTES", "FROM"],
            items
                .iter()
                .map(|p| vec![field(p, "service"), field(p, "routes"), field(p, "origin")])
                .collect(),
        ),
        GetKind::Proxies => (
            vec![
                "NODE",
                "SERVICE",
                "CONNECTED",
                "PEER",
                "VERSION",
                "CONFIG",
                "ENDPOINTS",
                "IN-SYNC",
                "LAST NACK",
            ],
            items
                .iter()
                .map(|p| {
                    let nack = p
                        .get("lastNack")
                        .and_then(|n| n.get("error"))
                        .and_then(Value::as_str)
                        .map_or_else(
                            || "-".to_owned(),
                            |e| e.lines().next().unwrap_or_default().to_owned(),
                        );
                    vec![
                        field(p, "node"),
                        field(p, "service"),
                        field(p, "connected"),
                        field(p, "peer"),
                        field(p, "proxyVersion"),
                        format!(
                            "{}/{}",
                            field(p, "ackedConfigVersion"),
                            field(p, "wantedConfigVersion")
                        ),
                        format!(
                            "{}/{}",
                            field(p, "ackedEndpointsVersion"),
                            field(p, "wantedEndpointsVersion")
                        ),
                        field(p, "inSync"),
                        nack,
                    ]
                })
                .collect(),
        ),
    };
    table(&header, &rows)
}

fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: Vec<String>| {
        let last = cells.len().saturating_sub(1);
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            if i == last {
                out.push_str(cell);
            } else {
                let _ = write!(out, "{cell:<w$}  ");
            }
        }
        out.push('\n');
    };
    line(header.iter().map(|h| (*h).to_owned()).collect());
    for row in rows {
        line(row.clone());
    }
    out
}
