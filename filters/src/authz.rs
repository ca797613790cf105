//! Inbound authorization decisions: DENY policies first, then ALLOW policies, then default
//! deny (as soon as a listener has any policy). Dry-run is the caller's business: the
//! decision is the same, the caller just does not enforce it.
//!
//! Paths are matched normalised (percent-encoded unreserved characters decoded, empty and
//! `.` segments dropped, `..` resolved), so `//admin`, `/%61dmin` and `/a/../admin` are all
//! `/admin`; methods case-insensitively. A TCP connection (no path, no method) fails closed:
//! a DENY rule that names paths or methods counts as matching it, an ALLOW rule that names
//! them does not.

use std::net::IpAddr;

use remora_control_api::authz::{
    Action, Authorization, IdentityPattern, PathPattern, Policy, Rule,
};

/// What is known about a request (or, without path and method, a TCP connection).
#[derive(Debug, Clone, Copy)]
pub struct Caller<'a> {
    /// The mTLS peer's SPIFFE id; None for a plaintext client.
    pub identity: Option<&'a str>,
    pub source: IpAddr,
    pub path: Option<&'a str>,
    pub method: Option<&'a http::Method>,
}

/// The name in metrics and logs of a denial no policy asked for.
pub const DEFAULT_DENY: &str = "default-deny";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision<'a> {
    /// The ALLOW policy that matched.
    Allow(&'a str),
    /// The DENY policy that matched, or [`DEFAULT_DENY`].
    Deny(&'a str),
}

pub fn decide<'a>(authz: &'a Authorization, caller: &Caller<'_>) -> Decision<'a> {
    let normalized = caller.path.map(normalize);
    let caller = &Caller {
        path: normalized.as_deref(),
        ..*caller
    };
    let matching = |action: Action| {
        authz
            .policies
            .iter()
            .filter(move |p| p.action == action)
            .find(|p| policy_matches(p, caller))
    };
    if let Some(p) = matching(Action::Deny) {
        return Decision::Deny(&p.name);
    }
    match matching(Action::Allow) {
        Some(p) => Decision::Allow(&p.name),
        None => Decision::Deny(DEFAULT_DENY),
    }
}

fn policy_matches(p: &Policy, caller: &Caller<'_>) -> bool {
    p.rules.iter().any(|r| rule_matches(r, caller, p.action))
}

/// The path as an application would see it after decoding and resolving dot segments.
pub fn normalize(path: &str) -> String {
    let path = path.split(['?', '#']).next().unwrap_or("");
    // Decode percent-escapes of unreserved characters (RFC 3986 2.3), and of '/' and '.'.
    let bytes = path.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
            if let Some(b) = hex.and_then(|h| u8::from_str_radix(h, 16).ok())
                && (b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'/'))
            {
                decoded.push(b);
                i += 3;
                continue;
            }
        }
        decoded.push(bytes[i]);
        i += 1;
    }
    let decoded = String::from_utf8_lossy(&decoded);
    let mut segments: Vec<&str> = Vec::new();
    for seg in decoded.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            s => segments.push(s),
        }
    }
    let trailing = decoded.ends_with('/') && !segments.is_empty();
    let mut out = String::with_capacity(decoded.len());
    for s in &segments {
        out.push('/');
        out.push_str(s);
    }
    if out.is_empty() || trailing {
        out.push('/');
    }
    out
}

fn rule_matches(r: &Rule, c: &Caller<'_>, action: Action) -> bool {
    // A TCP connection has no path or method: fail closed on rules about them.
    if c.path.is_none() && c.method.is_none() && (!r.paths.is_empty() || !r.methods.is_empty()) {
        if action == Action::Allow {
            return false;
        }
        let identity_ok = r.identities.is_empty()
            || c.identity
                .is_some_and(|id| r.identities.iter().any(|p| identity_matches(p, id)));
        let network_ok =
            r.source_networks.is_empty() || r.source_networks.iter().any(|n| n.contains(&c.source));
        return identity_ok && network_ok;
    }
    rule_matches_request(r, c)
}

fn identity_matches(p: &IdentityPattern, id: &str) -> bool {
    match p {
        IdentityPattern::Any => true,
        IdentityPattern::Exact(e) => e == id,
        IdentityPattern::Prefix(prefix) => id.starts_with(prefix.as_str()),
    }
}

fn rule_matches_request(r: &Rule, c: &Caller<'_>) -> bool {
    let identity_ok = r.identities.is_empty()
        || c.identity
            .is_some_and(|id| r.identities.iter().any(|p| identity_matches(p, id)));
    let network_ok =
        r.source_networks.is_empty() || r.source_networks.iter().any(|n| n.contains(&c.source));
    let path_ok = r.paths.is_empty()
        || c.path.is_some_and(|path| {
            r.paths.iter().any(|p| match p {
                PathPattern::Exact(e) => e == path,
                PathPattern::Prefix(prefix) => path.starts_with(prefix.as_str()),
            })
        });
    let method_ok = r.methods.is_empty()
        || c.method.is_some_and(|m| {
            r.methods
                .iter()
                .any(|x| x.as_str().eq_ignore_ascii_case(m.as_str()))
        });
    identity_ok && network_ok && path_ok && method_ok
}

#[cfg(test)]
mod tests {
    use super::*;
    use remora_control_api::proto;

    fn authz(yaml_policies: &str) -> Authorization {
        let yaml = format!(
            "listeners:\n- name: in\n  address: 127.0.0.1:1\n  protocol: HTTP\n  routeTable: t\n  authorization:\n{yaml_policies}\nrouteTables:\n- name: t\n"
        );
        let cfg: proto::Config =
            remora_control_api::load::from_yaml(&yaml).unwrap_or_else(|e| panic!("{e}"));
        let cfg = remora_control_api::validate(&cfg).unwrap_or_else(|e| panic!("{e}"));
        cfg.listeners[0]
            .authorization
            .clone()
            .unwrap_or_else(|| panic!("no authorization"))
    }

    fn caller<'a>(
        identity: Option<&'a str>,
        path: &'a str,
        method: &'a http::Method,
    ) -> Caller<'a> {
        Caller {
            identity,
            source: IpAddr::from([10, 1, 2, 3]),
            path: Some(path),
            method: Some(method),
        }
    }

    const PAYMENTS: &str = "spiffe://mesh.local/ns/payments/sa/api";
    const ORDERS: &str = "spiffe://mesh.local/ns/orders/sa/web";

    #[test]
    fn allow_by_exact_and_wildcard_identity_else_default_deny() {
        let a = authz(
            "    policies:\n    - name: payments\n      rules:\n      - identities: [\"spiffe://mesh.local/ns/payments/*\"]\n    - name: orders-web\n      rules:\n      - identities: [\"spiffe://mesh.local/ns/orders/sa/web\"]\n        methods: [GET]\n",
        );
        let get = http::Method::GET;
        let post = http::Method::POST;
        assert_eq!(
            decide(&a, &caller(Some(PAYMENTS), "/x", &post)),
            Decision::Allow("payments")
        );
        assert_eq!(
            decide(&a, &caller(Some(ORDERS), "/x", &get)),
            Decision::Allow("orders-web")
        );
        assert_eq!(
            decide(&a, &caller(Some(ORDERS), "/x", &post)),
            Decision::Deny(DEFAULT_DENY)
        );
        assert_eq!(
            decide(&a, &caller(None, "/x", &get)),
            Decision::Deny(DEFAULT_DENY)
        );
        // The wildcard is a whole segment: ns/payments-evil is not ns/payments.
        let evil = "spiffe://mesh.local/ns/payments-evil/sa/api";
        assert_eq!(
            decide(&a, &caller(Some(evil), "/x", &get)),
            Decision::Deny(DEFAULT_DENY)
        );
        // Another trust domain with the same path does not match.
        let other = "spiffe://other.local/ns/payments/sa/api";
        assert_eq!(
            decide(&a, &caller(Some(other), "/x", &get)),
            Decision::Deny(DEFAULT_DENY)
        );
    }

    #[test]
    fn deny_wins_over_allow_and_paths_and_networks_narrow() {
        let a = authz(
            "    policies:\n    - name: everyone\n      rules: [{}]\n    - name: no-admin\n      action: DENY\n      rules:\n      - paths: [\"/admin/*\"]\n      - paths: [\"/debug\"]\n        sourceNetworks: [\"10.0.0.0/8\"]\n",
        );
        let get = http::Method::GET;
        assert_eq!(
            decide(&a, &caller(None, "/api", &get)),
            Decision::Allow("everyone")
        );
        assert_eq!(
            decide(&a, &caller(None, "/admin/users", &get)),
            Decision::Deny("no-admin")
        );
        assert_eq!(
            decide(&a, &caller(None, "/debug", &get)),
            Decision::Deny("no-admin")
        );
        let mut from_elsewhere = caller(None, "/debug", &get);
        from_elsewhere.source = IpAddr::from([192, 168, 0, 1]);
        assert_eq!(decide(&a, &from_elsewhere), Decision::Allow("everyone"));
        // A TCP connection has no path: a DENY rule about paths fails it closed.
        let tcp = Caller {
            identity: None,
            source: IpAddr::from([10, 0, 0, 1]),
            path: None,
            method: None,
        };
        assert_eq!(decide(&a, &tcp), Decision::Deny("no-admin"));
    }

    #[test]
    fn paths_are_matched_normalised_and_methods_in_any_case() {
        let a = authz(
            "      policies:\n        - name: everyone\n          rules: [{}]\n        - name: no-admin\n          action: DENY\n          rules:\n            - paths: [\"/admin\", \"/admin/*\"]\n            - methods: [DELETE]\n",
        );
        let get = http::Method::GET;
        for sneaky in [
            "//admin/x",
            "/%61dmin/x",
            "/a/../admin/x",
            "/./admin",
            "/admin",
            "/admin/",
            "/%2e%2e/admin",
        ] {
            assert_eq!(
                decide(&a, &caller(None, sneaky, &get)),
                Decision::Deny("no-admin"),
                "{sneaky}"
            );
        }
        assert_eq!(
            decide(&a, &caller(None, "/administrator", &get)),
            Decision::Allow("everyone")
        );
        let lower = http::Method::from_bytes(b"delete").unwrap_or(http::Method::GET);
        assert_eq!(
            decide(&a, &caller(None, "/x", &lower)),
            Decision::Deny("no-admin")
        );
        assert_eq!(normalize("/a//b/./c/../d?q=1"), "/a/b/d");
        assert_eq!(normalize(""), "/");
        assert_eq!(normalize("/%zz/%4"), "/%zz/%4");
    }

    #[test]
    fn tcp_connections_fail_closed_on_path_and_method_rules() {
        let a = authz(
            "      policies:\n        - name: reads\n          rules: [{ paths: [\"/api/*\"] }]\n",
        );
        let tcp = Caller {
            identity: None,
            source: IpAddr::from([10, 0, 0, 1]),
            path: None,
            method: None,
        };
        assert_eq!(
            decide(&a, &tcp),
            Decision::Deny(DEFAULT_DENY),
            "a path ALLOW does not admit TCP"
        );
        let d = authz(
            "      policies:\n        - name: all\n          rules: [{}]\n        - name: no-admin\n          action: DENY\n          rules: [{ paths: [\"/admin/*\"] }]\n",
        );
        assert_eq!(
            decide(&d, &tcp),
            Decision::Deny("no-admin"),
            "a path DENY closes TCP"
        );
    }

    #[test]
    fn a_policy_without_rules_matches_nothing() {
        let a = authz("    policies:\n    - name: nothing\n");
        let get = http::Method::GET;
        assert_eq!(
            decide(&a, &caller(Some(PAYMENTS), "/", &get)),
            Decision::Deny(DEFAULT_DENY)
        );
    }

    #[test]
    fn bad_rules_are_rejected_naming_the_field() {
        for (rule, field, what) in [
            (
                "identities: [\"spiffe://mesh.local/ns/pay*\"]",
                "identities[0]",
                "whole last segment",
            ),
            (
                "identities: [\"orders\"]",
                "identities[0]",
                "not a SPIFFE id",
            ),
            (
                "sourceNetworks: [\"10.0.0.0/33\"]",
                "sourceNetworks[0]",
                "invalid network",
            ),
            ("paths: [\"api/*\"]", "paths[0]", "must start with '/'"),
            ("paths: [\"/a*b\"]", "paths[0]", "only allowed at the end"),
        ] {
            let yaml = format!(
                "listeners:\n- name: in\n  address: 127.0.0.1:1\n  protocol: HTTP\n  routeTable: t\n  authorization:\n    policies:\n    - name: p\n      rules:\n      - {rule}\nrouteTables:\n- name: t\n"
            );
            let cfg: proto::Config =
                remora_control_api::load::from_yaml(&yaml).unwrap_or_else(|e| panic!("{e}"));
            let err = remora_control_api::validate(&cfg)
                .err()
                .unwrap_or_else(|| panic!("{rule} accepted"))
                .to_string();
            assert!(
                err.contains(&format!("authorization.policies[0].rules[0].{field}"))
                    && err.contains(what),
                "{rule}: {err}"
            );
        }
    }
}
