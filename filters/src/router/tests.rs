use http::{HeaderMap, HeaderValue, Method};
use remora_control_api::{load::from_yaml, validate};

use super::*;

fn router(yaml: &str) -> Router {
    let cfg = validate(&from_yaml(yaml).expect("yaml")).expect("valid");
    Router::new(cfg.route_tables.into_iter().next().expect("one table"))
}

const TABLE: &str = r#"
clusters: [{name: c}]
routeTables:
  - name: t
    virtualHosts:
      - name: exact
        domains: [orders.svc]
        routes:
          - name: regex
            match: { pathRegex: "/users/[0-9]+" }
            forward: { cluster: c }
          - name: canary
            match: { pathPrefix: /api, headers: [{name: x-canary, exact: "1"}] }
            forward: { cluster: c }
          - name: post-only
            match: { pathPrefix: /api, methods: [POST] }
            forward: { cluster: c }
          - name: debug
            match: { pathPrefix: /api, queryParams: [{name: debug, present: true}] }
            forward: { cluster: c }
          - name: no-auth
            match: { pathPrefix: /api, headers: [{name: authorization, absent: true}] }
            directResponse: { status: 401 }
          - name: api
            match: { pathPrefix: /api }
            forward: { cluster: c }
      - name: suffix
        domains: ["*.example.com"]
        routes: [{ name: s, forward: { cluster: c } }]
      - name: longer-suffix
        domains: ["*.eu.example.com"]
        routes: [{ name: s, forward: { cluster: c } }]
      - name: fallback
        domains: ["*"]
        routes: [{ name: health, match: { pathExact: /healthz }, directResponse: { status: 200 } }]
"#;

#[allow(clippy::needless_pass_by_value)]
fn pick<'a>(
    r: &'a Router,
    authority: &str,
    method: Method,
    uri: &str,
    headers: &[(&str, &str)],
) -> Result<(&'a str, &'a str), NoRoute> {
    let mut map = HeaderMap::new();
    for (k, v) in headers {
        map.append(
            http::HeaderName::from_bytes(k.as_bytes()).expect("name"),
            HeaderValue::from_str(v).expect("value"),
        );
    }
    let (path, query) = match uri.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (uri, None),
    };
    let info = RequestInfo {
        authority,
        method: &method,
        path,
        query,
        headers: &map,
    };
    r.route(&info).map(|(vh, rt)| (&*vh.name, &*rt.name))
}

#[test]
fn virtual_hosts_by_authority() {
    let r = router(TABLE);
    assert_eq!(
        pick(
            &r,
            "orders.svc",
            Method::GET,
            "/api",
            &[("authorization", "x")]
        )
        .map(|x| x.0),
        Ok("exact")
    );
    assert_eq!(
        pick(
            &r,
            "ORDERS.svc:8080",
            Method::GET,
            "/api",
            &[("authorization", "x")]
        )
        .map(|x| x.0),
        Ok("exact")
    );
    assert_eq!(
        pick(&r, "a.example.com", Method::GET, "/", &[]).map(|x| x.0),
        Ok("suffix")
    );
    assert_eq!(
        pick(&r, "a.eu.example.com", Method::GET, "/", &[]).map(|x| x.0),
        Ok("longer-suffix")
    );
    assert_eq!(
        pick(&r, "example.com", Method::GET, "/healthz", &[]).map(|x| x.0),
        Ok("fallback")
    );
    assert_eq!(
        pick(&r, "[::1]:80", Method::GET, "/healthz", &[]).map(|x| x.0),
        Ok("fallback")
    );
}

#[test]
fn first_match_wins_with_each_condition() {
    let r = router(TABLE);
    let auth = ("authorization", "token");
    let route =
        |m: Method, uri: &str, h: &[(&str, &str)]| pick(&r, "orders.svc", m, uri, h).map(|x| x.1);
    assert_eq!(route(Method::GET, "/users/42", &[]), Ok("regex"));
    assert_eq!(
        route(Method::GET, "/users/42/x", &[auth]),
        Err(NoRoute::NoMatch {
            vhost: "exact".into(),
            method: Method::GET,
            path: "/users/42/x".into()
        })
    );
    assert_eq!(
        route(Method::GET, "/api/x", &[("x-canary", "1"), auth]),
        Ok("canary")
    );
    assert_eq!(
        route(Method::GET, "/api/x", &[("x-canary", "2"), auth]),
        Ok("api")
    );
    assert_eq!(route(Method::POST, "/api/x", &[auth]), Ok("post-only"));
    assert_eq!(route(Method::GET, "/api/x?a=1&debug", &[auth]), Ok("debug"));
    assert_eq!(route(Method::GET, "/api/x?debugger=1", &[auth]), Ok("api"));
    assert_eq!(route(Method::GET, "/api/x", &[]), Ok("no-auth"));
}

#[test]
fn no_virtual_host_names_the_authority() {
    let r = router(
        "clusters: [{name: c}]\nrouteTables:\n  - name: t\n    virtualHosts:\n      - {name: v, domains: [a.svc], routes: [{name: r, forward: {cluster: c}}]}\n",
    );
    assert_eq!(
        pick(&r, "b.svc", Method::GET, "/", &[]),
        Err(NoRoute::NoVirtualHost {
            authority: "b.svc".into()
        })
    );
}

#[test]
fn strip_port_handles_ipv6_and_names() {
    assert_eq!(strip_port("a.svc:80"), "a.svc");
    assert_eq!(strip_port("a.svc"), "a.svc");
    assert_eq!(strip_port("[::1]:8080"), "::1");
    assert_eq!(strip_port("[::1]"), "::1");
}

#[test]
fn every_header_and_query_matcher() {
    let r = router(
        r#"
clusters: [{name: c}]
routeTables:
  - name: t
    virtualHosts:
      - name: all
        domains: ["*"]
        routes:
          - { name: h-regex, match: { headers: [{name: x-user, regex: "^u[0-9]+$"}] }, directResponse: { status: 200 } }
          - { name: h-present, match: { headers: [{name: x-trace, present: true}] }, directResponse: { status: 200 } }
          - { name: q-exact, match: { queryParams: [{name: v, exact: "2"}] }, directResponse: { status: 200 } }
          - { name: q-regex, match: { queryParams: [{name: id, regex: "^[a-f0-9]{4}$"}] }, directResponse: { status: 200 } }
          - { name: q-absent, match: { pathPrefix: /q, queryParams: [{name: skip, absent: true}] }, directResponse: { status: 200 } }
          - { name: rest, directResponse: { status: 404 } }
"#,
    );
    let route = |uri: &str, headers: &[(&str, &str)]| {
        pick(&r, "any", Method::GET, uri, headers)
            .map(|(_, route)| route.to_owned())
            .expect("a route")
    };
    assert_eq!(route("/", &[("x-user", "u42")]), "h-regex");
    assert_eq!(
        route("/", &[("x-user", "u42x")]),
        "rest",
        "regex is anchored as written"
    );
    assert_eq!(route("/", &[("x-trace", "")]), "h-present");
    assert_eq!(route("/?v=2", &[]), "q-exact");
    assert_eq!(route("/?v=20", &[]), "rest");
    assert_eq!(route("/?a=1&id=beef", &[]), "q-regex");
    assert_eq!(route("/?id=beefy", &[]), "rest");
    assert_eq!(route("/q?x=1", &[]), "q-absent");
    assert_eq!(route("/q?skip=1", &[]), "rest");
    assert_eq!(
        route("/q?skip", &[]),
        "rest",
        "a key without a value is present"
    );
}
