//! Route tables: virtual hosts chosen by authority, routes matched in order, and what a
//! matched route does (forward over weighted clusters, or answer directly).

use std::sync::Arc;
use std::time::Duration;

use http::{HeaderName, HeaderValue, Method, StatusCode};
use regex::Regex;

use crate::error::Errors;
use crate::proto;
use crate::resilience::{self, HedgePolicy, RetryPolicy};
use crate::util;

/// Regexes are compiled with this size limit so a hostile pattern cannot eat memory.
const REGEX_SIZE_LIMIT: usize = 1 << 20;
const MAX_DIRECT_BODY: usize = 64 * 1024;

#[derive(Debug, Clone)]
pub struct RouteTable {
    pub name: Arc<str>,
    pub virtual_hosts: Vec<VirtualHost>,
}

#[derive(Debug, Clone)]
pub struct VirtualHost {
    pub name: Arc<str>,
    pub domains: Vec<DomainMatch>,
    pub routes: Vec<Arc<Route>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum DomainMatch {
    /// Lower-cased host, port stripped.
    Exact(String),
    /// `*.example.com` stored as `.example.com`.
    Suffix(String),
    Any,
}

#[derive(Debug, Clone)]
pub struct Route {
    pub name: Arc<str>,
    pub matcher: RouteMatch,
    pub action: RouteAction,
    /// `None` when the route rewrites nothing.
    pub request_headers: Option<Arc<HeaderRewrite>>,
    pub response_headers: Option<Arc<HeaderRewrite>>,
    pub timeout: Option<Duration>,
    pub retry: Option<Arc<RetryPolicy>>,
    pub hedge: Option<HedgePolicy>,
    pub stream_idle_timeout: Duration,
    pub force_trace: bool,
    pub rate_limits: Vec<crate::limits::RateLimit>,
    pub fault: Option<crate::limits::Fault>,
}

pub const DEFAULT_STREAM_IDLE_TIMEOUT: Duration = Duration::from_secs(300);

#[derive(Debug, Clone, Default)]
pub struct RouteMatch {
    pub path: Option<PathMatch>,
    pub methods: Vec<Method>,
    pub headers: Vec<HeaderMatch>,
    pub query_params: Vec<QueryParamMatch>,
}

#[derive(Debug, Clone)]
pub enum PathMatch {
    Exact(String),
    Prefix(String),
    Regex(Regex),
}

#[derive(Debug, Clone)]
pub struct HeaderMatch {
    pub name: HeaderName,
    pub condition: ValueMatch,
}

#[derive(Debug, Clone)]
pub struct QueryParamMatch {
    pub name: String,
    pub condition: ValueMatch,
}

#[derive(Debug, Clone)]
pub enum ValueMatch {
    Exact(String),
    Regex(Regex),
    Present,
    Absent,
}

#[derive(Debug, Clone)]
pub enum RouteAction {
    Forward(Vec<WeightedCluster>),
    Direct(Arc<DirectResponse>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WeightedCluster {
    pub name: Arc<str>,
    pub weight: u32,
}

#[derive(Debug, Clone)]
pub struct DirectResponse {
    pub status: StatusCode,
    pub body: bytes::Bytes,
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

#[derive(Debug, Clone, Default)]
pub struct HeaderRewrite {
    pub add: Vec<(HeaderName, HeaderValue)>,
    pub set: Vec<(HeaderName, HeaderValue)>,
    pub remove: Vec<HeaderName>,
}

impl HeaderRewrite {
    pub fn is_empty(&self) -> bool {
        self.add.is_empty() && self.set.is_empty() && self.remove.is_empty()
    }
}

impl RouteAction {
    /// Cluster names this action may send to.
    pub fn clusters(&self) -> impl Iterator<Item = &Arc<str>> {
        let list: &[WeightedCluster] = match self {
            RouteAction::Forward(w) => w,
            RouteAction::Direct(_) => &[],
        };
        list.iter().map(|w| &w.name)
    }
}

pub(crate) fn validate(t: &proto::RouteTable, errs: &mut Errors<'_>) -> Option<RouteTable> {
    let name_ok = errs.check("name", util::name(&t.name)).is_some();
    let mut vhosts = Vec::with_capacity(t.virtual_hosts.len());
    let mut vhost_names = std::collections::HashSet::new();
    let mut all_domains = std::collections::HashSet::new();
    for (i, vh) in t.virtual_hosts.iter().enumerate() {
        let at = format!("virtualHosts[{i}]");
        if errs
            .check(format!("{at}.name"), util::name(&vh.name))
            .is_some()
            && !vhost_names.insert(vh.name.as_str())
        {
            errs.push(
                format!("{at}.name"),
                format!("duplicate virtual host {:?}", vh.name),
            );
        }
        if vh.domains.is_empty() {
            errs.push(
                format!("{at}.domains"),
                "at least one domain is required (\"*\" for any)",
            );
        }
        let mut domains = Vec::with_capacity(vh.domains.len());
        for (j, d) in vh.domains.iter().enumerate() {
            let field = format!("{at}.domains[{j}]");
            let Some(m) = errs.check(field.clone(), domain(d)) else {
                continue;
            };
            if !all_domains.insert(m.clone()) {
                errs.push(
                    field,
                    format!("domain {d:?} is already used by another virtual host"),
                );
            }
            domains.push(m);
        }
        let mut routes = Vec::with_capacity(vh.routes.len());
        let mut route_names = std::collections::HashSet::new();
        for (j, r) in vh.routes.iter().enumerate() {
            let rat = format!("{at}.routes[{j}]");
            if !r.name.is_empty() && !route_names.insert(r.name.as_str()) {
                errs.push(
                    format!("{rat}.name"),
                    format!("duplicate route {:?}", r.name),
                );
            }
            if let Some(r) = route(r, &rat, errs) {
                routes.push(Arc::new(r));
            }
        }
        vhosts.push(VirtualHost {
            name: vh.name.as_str().into(),
            domains,
            routes,
        });
    }
    name_ok.then(|| RouteTable {
        name: t.name.as_str().into(),
        virtual_hosts: vhosts,
    })
}

fn domain(d: &str) -> Result<DomainMatch, String> {
    let d = d.to_ascii_lowercase();
    if d == "*" {
        return Ok(DomainMatch::Any);
    }
    let (suffix, host) = match d.strip_prefix("*.") {
        Some(rest) => (true, rest),
        None => (false, d.as_str()),
    };
    let valid = !host.is_empty()
        && host.len() <= 253
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'));
    if !valid {
        return Err(format!(
            "invalid domain {d:?}: use \"host\", \"*.suffix\" or \"*\" (no port)"
        ));
    }
    Ok(if suffix {
        DomainMatch::Suffix(format!(".{host}"))
    } else {
        DomainMatch::Exact(host.into())
    })
}

fn route(r: &proto::Route, at: &str, errs: &mut Errors<'_>) -> Option<Route> {
    let name: Arc<str> = if r.name.is_empty() {
        errs.push(format!("{at}.name"), "required (it labels metrics)");
        return None;
    } else {
        if let Err(e) = util::name(&r.name) {
            errs.push(format!("{at}.name"), e);
        }
        r.name.as_str().into()
    };
    let matcher = route_match(r.r#match.as_ref(), &format!("{at}.match"), errs);
    let action = match &r.action {
        Some(proto::route::Action::Forward(f)) => forward(f, &format!("{at}.forward"), errs),
        Some(proto::route::Action::DirectResponse(d)) => {
            direct(d, &format!("{at}.directResponse"), errs)
        }
        None => {
            errs.push(
                at.to_owned(),
                "one of `forward` or `directResponse` is required",
            );
            None
        }
    };
    let request_headers = rewrite(
        r.request_headers.as_ref(),
        &format!("{at}.requestHeaders"),
        errs,
    );
    let response_headers = rewrite(
        r.response_headers.as_ref(),
        &format!("{at}.responseHeaders"),
        errs,
    );
    let timeout = errs.check(
        format!("{at}.timeout"),
        util::opt_positive_duration(r.timeout.as_ref()),
    );
    let forwards = matches!(r.action, Some(proto::route::Action::Forward(_)));
    for (set, field) in [(r.retry.is_some(), "retry"), (r.hedge.is_some(), "hedge")] {
        if set && !forwards {
            errs.push(
                format!("{at}.{field}"),
                "only applies to routes that forward; remove it from a directResponse route",
            );
        }
    }
    let retry = r
        .retry
        .as_ref()
        .map(|p| resilience::retry(p, &format!("{at}.retry"), errs).map(Arc::new));
    let hedge = r
        .hedge
        .as_ref()
        .map(|h| resilience::hedge(h, &format!("{at}.hedge"), errs));
    let stream_idle_timeout = errs.check(
        format!("{at}.streamIdleTimeout"),
        util::positive_duration(r.stream_idle_timeout.as_ref(), DEFAULT_STREAM_IDLE_TIMEOUT),
    );
    let errors_before = errs.count();
    let rate_limits = crate::limits::rate_limits(&r.rate_limits, errs, &format!("{at}."));
    let fault = r.fault.as_ref().map(|f| crate::limits::fault(f, at, errs));
    if errs.count() > errors_before {
        return None;
    }
    Some(Route {
        name,
        matcher: matcher?,
        action: action?,
        request_headers: non_empty(request_headers?),
        response_headers: non_empty(response_headers?),
        timeout: timeout?,
        retry: retry.map_or(Some(None), |r| r.map(Some))?,
        hedge: hedge.map_or(Some(None), |h| h.map(Some))?,
        stream_idle_timeout: stream_idle_timeout?,
        force_trace: r.force_trace,
        rate_limits,
        fault,
    })
}

fn non_empty(r: HeaderRewrite) -> Option<Arc<HeaderRewrite>> {
    (!r.is_empty()).then(|| Arc::new(r))
}

fn regex(pattern: &str) -> Result<Regex, String> {
    regex::RegexBuilder::new(&format!("^(?:{pattern})$"))
        .size_limit(REGEX_SIZE_LIMIT)
        .build()
        .map_err(|e| format!("invalid regex {pattern:?}: {}", first_line(&e.to_string())))
}

fn first_line(s: &str) -> String {
    // regex errors span several lines with a caret; keep them readable in one log line.
    s.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

fn route_match(
    m: Option<&proto::RouteMatch>,
    at: &str,
    errs: &mut Errors<'_>,
) -> Option<RouteMatch> {
    let Some(m) = m else {
        return Some(RouteMatch::default());
    };
    let mut ok = true;
    let path = match &m.path {
        None => None,
        Some(proto::route_match::Path::PathExact(p))
        | Some(proto::route_match::Path::PathPrefix(p))
            if !p.starts_with('/') =>
        {
            errs.push(
                format!("{at}.path"),
                format!("path {p:?} must start with '/'"),
            );
            ok = false;
            None
        }
        Some(proto::route_match::Path::PathExact(p)) => Some(PathMatch::Exact(p.clone())),
        Some(proto::route_match::Path::PathPrefix(p)) => Some(PathMatch::Prefix(p.clone())),
        Some(proto::route_match::Path::PathRegex(p)) => {
            match errs.check(format!("{at}.pathRegex"), regex(p)) {
                Some(r) => Some(PathMatch::Regex(r)),
                None => {
                    ok = false;
                    None
                }
            }
        }
    };
    let mut methods = Vec::with_capacity(m.methods.len());
    for (i, meth) in m.methods.iter().enumerate() {
        match Method::from_bytes(meth.as_bytes()) {
            Ok(v) if !meth.is_empty() => methods.push(v),
            _ => {
                errs.push(
                    format!("{at}.methods[{i}]"),
                    format!("invalid method {meth:?}"),
                );
                ok = false;
            }
        }
    }
    let mut headers = Vec::with_capacity(m.headers.len());
    for (i, h) in m.headers.iter().enumerate() {
        let field = format!("{at}.headers[{i}]");
        let name = HeaderName::from_bytes(h.name.as_bytes());
        let cond = value_match(h.condition.as_ref().map(|c| match c {
            proto::header_match::Condition::Exact(v) => Cond::Exact(v),
            proto::header_match::Condition::Regex(v) => Cond::Regex(v),
            proto::header_match::Condition::Present(v) => Cond::Present(*v),
            proto::header_match::Condition::Absent(v) => Cond::Absent(*v),
        }));
        match (name, cond) {
            (Ok(name), Ok(condition)) => headers.push(HeaderMatch { name, condition }),
            (Err(_), _) => {
                errs.push(
                    format!("{field}.name"),
                    format!("invalid header name {:?}", h.name),
                );
                ok = false;
            }
            (_, Err(e)) => {
                errs.push(field, e);
                ok = false;
            }
        }
    }
    let mut query_params = Vec::with_capacity(m.query_params.len());
    for (i, q) in m.query_params.iter().enumerate() {
        let field = format!("{at}.queryParams[{i}]");
        if q.name.is_empty() {
            errs.push(format!("{field}.name"), "required");
            ok = false;
            continue;
        }
        let cond = value_match(q.condition.as_ref().map(|c| match c {
            proto::query_param_match::Condition::Exact(v) => Cond::Exact(v),
            proto::query_param_match::Condition::Regex(v) => Cond::Regex(v),
            proto::query_param_match::Condition::Present(v) => Cond::Present(*v),
            proto::query_param_match::Condition::Absent(v) => Cond::Absent(*v),
        }));
        match cond {
            Ok(condition) => query_params.push(QueryParamMatch {
                name: q.name.clone(),
                condition,
            }),
            Err(e) => {
                errs.push(field, e);
                ok = false;
            }
        }
    }
    ok.then_some(RouteMatch {
        path,
        methods,
        headers,
        query_params,
    })
}

enum Cond<'a> {
    Exact(&'a str),
    Regex(&'a str),
    Present(bool),
    Absent(bool),
}

#[allow(clippy::needless_pass_by_value)] // a tiny borrowed enum, consumed by the match
fn value_match(c: Option<Cond<'_>>) -> Result<ValueMatch, String> {
    match c {
        Some(Cond::Exact(v)) => Ok(ValueMatch::Exact(v.to_owned())),
        Some(Cond::Regex(v)) => regex(v).map(ValueMatch::Regex),
        Some(Cond::Present(true)) => Ok(ValueMatch::Present),
        Some(Cond::Absent(true)) => Ok(ValueMatch::Absent),
        Some(Cond::Present(false) | Cond::Absent(false)) | None => {
            Err("one condition is required: exact, regex, present: true or absent: true".into())
        }
    }
}

fn forward(f: &proto::Forward, at: &str, errs: &mut Errors<'_>) -> Option<RouteAction> {
    match (f.cluster.is_empty(), f.weighted_clusters.is_empty()) {
        (false, true) => Some(RouteAction::Forward(vec![WeightedCluster {
            name: f.cluster.as_str().into(),
            weight: 1,
        }])),
        (true, false) => {
            let mut total: u64 = 0;
            let mut ok = true;
            for (i, w) in f.weighted_clusters.iter().enumerate() {
                if w.name.is_empty() {
                    errs.push(format!("{at}.weightedClusters[{i}].name"), "required");
                    ok = false;
                }
                total += u64::from(w.weight);
            }
            if total == 0 {
                errs.push(
                    format!("{at}.weightedClusters"),
                    "weights sum to zero; at least one must be positive",
                );
                ok = false;
            } else if total > u64::from(u32::MAX) {
                errs.push(
                    format!("{at}.weightedClusters"),
                    "weights sum past 4294967295",
                );
                ok = false;
            }
            ok.then(|| {
                RouteAction::Forward(
                    f.weighted_clusters
                        .iter()
                        .map(|w| WeightedCluster {
                            name: w.name.as_str().into(),
                            weight: w.weight,
                        })
                        .collect(),
                )
            })
        }
        (false, false) => {
            errs.push(
                at.to_owned(),
                "set `cluster` or `weightedClusters`, not both",
            );
            None
        }
        (true, true) => {
            errs.push(at.to_owned(), "`cluster` or `weightedClusters` is required");
            None
        }
    }
}

fn direct(d: &proto::DirectResponse, at: &str, errs: &mut Errors<'_>) -> Option<RouteAction> {
    let status = u16::try_from(d.status)
        .ok()
        .filter(|s| (200..=599).contains(s))
        .and_then(|s| StatusCode::from_u16(s).ok());
    if status.is_none() {
        errs.push(
            format!("{at}.status"),
            format!("invalid status {} (200-599)", d.status),
        );
    }
    if d.body.len() > MAX_DIRECT_BODY {
        errs.push(
            format!("{at}.body"),
            format!("at most {MAX_DIRECT_BODY} bytes"),
        );
        return None;
    }
    let headers = header_values(&d.headers, &format!("{at}.headers"), errs)?;
    Some(RouteAction::Direct(Arc::new(DirectResponse {
        status: status?,
        body: bytes::Bytes::from(d.body.clone()),
        headers,
    })))
}

fn header_values(
    list: &[proto::HeaderValue],
    at: &str,
    errs: &mut Errors<'_>,
) -> Option<Vec<(HeaderName, HeaderValue)>> {
    let mut out = Vec::with_capacity(list.len());
    let mut ok = true;
    for (i, h) in list.iter().enumerate() {
        let name = HeaderName::from_bytes(h.name.as_bytes());
        let value = HeaderValue::from_str(&h.value);
        match (name, value) {
            (Ok(n), Ok(v)) if !is_protected(&n) => out.push((n, v)),
            (Ok(n), Ok(_)) => {
                errs.push(
                    format!("{at}[{i}].name"),
                    format!("header {n} is managed by the proxy and cannot be rewritten"),
                );
                ok = false;
            }
            (Err(_), _) => {
                errs.push(
                    format!("{at}[{i}].name"),
                    format!("invalid header name {:?}", h.name),
                );
                ok = false;
            }
            (_, Err(_)) => {
                errs.push(
                    format!("{at}[{i}].value"),
                    "invalid header value (control characters?)",
                );
                ok = false;
            }
        }
    }
    ok.then_some(out)
}

/// Connection-level headers the proxy owns; rewriting them would break framing.
fn is_protected(n: &HeaderName) -> bool {
    matches!(
        n.as_str(),
        "connection"
            | "transfer-encoding"
            | "content-length"
            | "upgrade"
            | "keep-alive"
            | "te"
            | "host"
    )
}

fn rewrite(
    r: Option<&proto::HeaderRewrite>,
    at: &str,
    errs: &mut Errors<'_>,
) -> Option<HeaderRewrite> {
    let Some(r) = r else {
        return Some(HeaderRewrite::default());
    };
    let add = header_values(&r.add, &format!("{at}.add"), errs);
    let set = header_values(&r.set, &format!("{at}.set"), errs);
    let mut remove = Vec::with_capacity(r.remove.len());
    let mut ok = true;
    for (i, n) in r.remove.iter().enumerate() {
        match HeaderName::from_bytes(n.as_bytes()) {
            Ok(n) if !is_protected(&n) => remove.push(n),
            _ => {
                errs.push(
                    format!("{at}.remove[{i}]"),
                    format!("invalid or proxy-managed header name {n:?}"),
                );
                ok = false;
            }
        }
    }
    Some(HeaderRewrite {
        add: add?,
        set: set?,
        remove: ok.then_some(remove)?,
    })
}
