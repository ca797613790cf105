//! Route selection: the virtual host by authority (exact, then longest `*.suffix`, then `*`),
//! then the first route whose match holds.

use std::collections::HashMap;
use std::sync::Arc;

use http::{HeaderMap, Method};
use remora_control_api::route::{
    DomainMatch, PathMatch, Route, RouteMatch, RouteTable, ValueMatch, VirtualHost,
};

/// Why no route was found; the proxy answers 404 and says which virtual host was tried.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NoRoute {
    #[error("no virtual host matches authority {authority:?}")]
    NoVirtualHost { authority: String },
    #[error("no route in virtual host {vhost:?} matches {method} {path}")]
    NoMatch {
        vhost: Arc<str>,
        method: Method,
        path: String,
    },
}

/// The parts of a request that routing reads.
#[derive(Debug, Clone, Copy)]
pub struct RequestInfo<'a> {
    /// Host or :authority, possibly with a port and in any case.
    pub authority: &'a str,
    pub method: &'a Method,
    pub path: &'a str,
    pub query: Option<&'a str>,
    pub headers: &'a HeaderMap,
}

/// A compiled route table with its authority index.
#[derive(Debug)]
pub struct Router {
    table: RouteTable,
    exact: HashMap<String, usize>,
    /// `(".suffix", vhost)`, longest first.
    suffixes: Vec<(String, usize)>,
    any: Option<usize>,
}

impl Router {
    pub fn new(table: RouteTable) -> Self {
        let mut exact = HashMap::new();
        let mut suffixes = Vec::new();
        let mut any = None;
        for (i, vh) in table.virtual_hosts.iter().enumerate() {
            for d in &vh.domains {
                match d {
                    DomainMatch::Exact(h) => {
                        exact.entry(h.clone()).or_insert(i);
                    }
                    DomainMatch::Suffix(s) => suffixes.push((s.clone(), i)),
                    DomainMatch::Any => any = any.or(Some(i)),
                }
            }
        }
        suffixes.sort_by_key(|s| std::cmp::Reverse(s.0.len()));
        Self {
            table,
            exact,
            suffixes,
            any,
        }
    }

    pub fn name(&self) -> &Arc<str> {
        &self.table.name
    }

    pub fn table(&self) -> &RouteTable {
        &self.table
    }

    /// Selects the virtual host and route for a request.
    pub fn route(&self, req: &RequestInfo<'_>) -> Result<(&VirtualHost, &Arc<Route>), NoRoute> {
        let vhost = self
            .virtual_host(req.authority)
            .ok_or_else(|| NoRoute::NoVirtualHost {
                authority: req.authority.to_owned(),
            })?;
        vhost
            .routes
            .iter()
            .find(|r| matches(&r.matcher, req))
            .map(|r| (vhost, r))
            .ok_or_else(|| NoRoute::NoMatch {
                vhost: vhost.name.clone(),
                method: req.method.clone(),
                path: req.path.to_owned(),
            })
    }

    fn virtual_host(&self, authority: &str) -> Option<&VirtualHost> {
        let host = strip_port(authority);
        let lowered;
        let host = if host.bytes().any(|b| b.is_ascii_uppercase()) {
            lowered = host.to_ascii_lowercase();
            lowered.as_str()
        } else {
            host
        };
        let i = self
            .exact
            .get(host)
            .copied()
            .or_else(|| {
                self.suffixes
                    .iter()
                    .find(|(s, _)| host.len() > s.len() && host.ends_with(s.as_str()))
                    .map(|(_, i)| *i)
            })
            .or(self.any)?;
        self.table.virtual_hosts.get(i)
    }
}

/// `host:port` → `host`; `[::1]:80` → `::1`.
fn strip_port(authority: &str) -> &str {
    if let Some(rest) = authority.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match authority.rsplit_once(':') {
        Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host,
        _ => authority,
    }
}

/// True when every condition of the match holds.
pub fn matches(m: &RouteMatch, req: &RequestInfo<'_>) -> bool {
    let path_ok = match &m.path {
        None => true,
        Some(PathMatch::Exact(p)) => req.path == p,
        Some(PathMatch::Prefix(p)) => req.path.starts_with(p.as_str()),
        Some(PathMatch::Regex(r)) => r.is_match(req.path),
    };
    path_ok
        && (m.methods.is_empty() || m.methods.iter().any(|x| x == req.method))
        && m.headers.iter().all(|h| {
            let mut values = req.headers.get_all(&h.name).iter();
            match &h.condition {
                ValueMatch::Present => values.next().is_some(),
                ValueMatch::Absent => values.next().is_none(),
                ValueMatch::Exact(v) => values.any(|x| x.as_bytes() == v.as_bytes()),
                ValueMatch::Regex(r) => values.any(|x| x.to_str().is_ok_and(|s| r.is_match(s))),
            }
        })
        && m.query_params.iter().all(|q| {
            let mut values = query_values(req.query, &q.name);
            match &q.condition {
                ValueMatch::Present => values.next().is_some(),
                ValueMatch::Absent => values.next().is_none(),
                ValueMatch::Exact(v) => values.any(|x| x == v),
                ValueMatch::Regex(r) => values.any(|x| r.is_match(x)),
            }
        })
}

/// Raw (not percent-decoded) values of `name` in a query string.
fn query_values<'a>(query: Option<&'a str>, name: &'a str) -> impl Iterator<Item = &'a str> {
    query.unwrap_or("").split('&').filter_map(move |pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == name).then_some(v)
    })
}

#[cfg(test)]
mod tests;
