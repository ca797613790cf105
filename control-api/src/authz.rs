//! Inbound authorization policy: validated rules (identity patterns, CIDR ranges, paths,
//! methods). The decision itself is made in `remora-filters` (`authz`).

use std::sync::Arc;

use ipnet::IpNet;

use crate::error::Errors;
use crate::proto;
use crate::util;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authorization {
    pub policies: Vec<Policy>,
    pub dry_run: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Allow,
    Deny,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    pub name: Arc<str>,
    pub action: Action,
    pub rules: Vec<Rule>,
}

/// Every non-empty list must have a match.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Rule {
    pub identities: Vec<IdentityPattern>,
    pub source_networks: Vec<IpNet>,
    pub paths: Vec<PathPattern>,
    pub methods: Vec<http::Method>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdentityPattern {
    /// Any authenticated (mTLS) caller.
    Any,
    Exact(String),
    /// Ids starting with this (which ends in '/').
    Prefix(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathPattern {
    Exact(String),
    Prefix(String),
}

fn identity(s: &str) -> Result<IdentityPattern, String> {
    if s == "*" {
        return Ok(IdentityPattern::Any);
    }
    if let Some(prefix) = s.strip_suffix('*') {
        if !prefix.ends_with('/') {
            return Err(format!(
                "{s:?}: a wildcard must be a whole last segment (\"spiffe://mesh.local/ns/payments/*\")"
            ));
        }
        crate::tls::spiffe_id(&format!("{prefix}x"))?;
        return Ok(IdentityPattern::Prefix(prefix.to_owned()));
    }
    if s.contains('*') {
        return Err(format!("{s:?}: '*' is only allowed at the end"));
    }
    crate::tls::spiffe_id(s)?;
    Ok(IdentityPattern::Exact(s.to_owned()))
}

fn path(s: &str) -> Result<PathPattern, String> {
    if !s.starts_with('/') {
        return Err(format!("{s:?} must start with '/'"));
    }
    match s.strip_suffix('*') {
        Some(p) if p.contains('*') => Err(format!("{s:?}: '*' is only allowed at the end")),
        Some(p) => Ok(PathPattern::Prefix(p.to_owned())),
        None if s.contains('*') => Err(format!("{s:?}: '*' is only allowed at the end")),
        None => Ok(PathPattern::Exact(s.to_owned())),
    }
}

fn network(s: &str) -> Result<IpNet, String> {
    s.parse::<IpNet>()
        .or_else(|_| s.parse::<std::net::IpAddr>().map(IpNet::from))
        .map(|n| n.trunc())
        .map_err(|_| format!("invalid network {s:?} (CIDR, e.g. \"10.0.0.0/8\" or \"::1/128\")"))
}

pub(crate) fn validate(a: &proto::Authorization, errs: &mut Errors<'_>) -> Option<Authorization> {
    let mut policies = Vec::with_capacity(a.policies.len());
    let mut names = std::collections::HashSet::new();
    let mut ok = true;
    for (i, p) in a.policies.iter().enumerate() {
        let at = format!("authorization.policies[{i}]");
        if errs
            .check(format!("{at}.name"), util::name(&p.name))
            .is_none()
        {
            ok = false;
        } else if !names.insert(p.name.as_str()) {
            errs.push(
                format!("{at}.name"),
                format!("duplicate policy {:?}", p.name),
            );
            ok = false;
        }
        let action = match proto::AuthorizationAction::try_from(p.action) {
            Ok(proto::AuthorizationAction::Unspecified | proto::AuthorizationAction::Allow) => {
                Action::Allow
            }
            Ok(proto::AuthorizationAction::Deny) => Action::Deny,
            Err(_) => {
                errs.push(
                    format!("{at}.action"),
                    format!("unknown value {} (use ALLOW or DENY)", p.action),
                );
                ok = false;
                Action::Deny
            }
        };
        let mut rules = Vec::with_capacity(p.rules.len());
        for (j, r) in p.rules.iter().enumerate() {
            let at = format!("{at}.rules[{j}]");
            let mut rule = Rule::default();
            for (k, s) in r.identities.iter().enumerate() {
                match errs.check(format!("{at}.identities[{k}]"), identity(s)) {
                    Some(p) => rule.identities.push(p),
                    None => ok = false,
                }
            }
            for (k, s) in r.source_networks.iter().enumerate() {
                match errs.check(format!("{at}.sourceNetworks[{k}]"), network(s)) {
                    Some(n) => rule.source_networks.push(n),
                    None => ok = false,
                }
            }
            for (k, s) in r.paths.iter().enumerate() {
                match errs.check(format!("{at}.paths[{k}]"), path(s)) {
                    Some(p) => rule.paths.push(p),
                    None => ok = false,
                }
            }
            for (k, s) in r.methods.iter().enumerate() {
                match http::Method::from_bytes(s.to_ascii_uppercase().as_bytes()) {
                    Ok(m) => rule.methods.push(m),
                    Err(_) => {
                        errs.push(
                            format!("{at}.methods[{k}]"),
                            format!("invalid method {s:?}"),
                        );
                        ok = false;
                    }
                }
            }
            rules.push(rule);
        }
        policies.push(Policy {
            name: p.name.as_str().into(),
            action,
            rules,
        });
    }
    ok.then_some(Authorization {
        policies,
        dry_run: a.dry_run,
    })
}
