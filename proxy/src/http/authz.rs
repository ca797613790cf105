//! Enforcing a listener's authorization policy: the decision (from `remora-filters`),
//! counted in `remora_authz_decisions_total{listener, policy, decision}` and, for denials,
//! logged with the caller; in dry-run mode a denial is counted and logged as `would-deny`
//! and the request goes on.

use std::sync::Arc;

use remora_control_api::authz::Authorization;
use remora_filters::authz::{Caller, Decision, decide};

use crate::metrics::{AuthzLabels, Name};
use crate::state::Proxy;

pub enum Outcome {
    Allow,
    /// Dry run: would have been denied.
    WouldDeny,
    /// Denied by this policy (or `default-deny`).
    Deny(Arc<str>),
}

pub fn check(
    proxy: &Proxy,
    authz: &Authorization,
    listener: &Name,
    caller: &Caller<'_>,
) -> Outcome {
    let (policy, decision, outcome) = match decide(authz, caller) {
        Decision::Allow(p) => (p, "allow", Outcome::Allow),
        Decision::Deny(p) if authz.dry_run => (p, "would-deny", Outcome::WouldDeny),
        Decision::Deny(p) => (p, "deny", Outcome::Deny(Arc::from(p))),
    };
    proxy
        .metrics
        .authz_decisions
        .get_or_create(&AuthzLabels {
            listener: listener.clone(),
            policy: Name(Arc::from(policy)),
            decision,
        })
        .inc();
    if !matches!(outcome, Outcome::Allow) {
        tracing::info!(
            listener = %listener.0,
            policy,
            decision,
            client = %caller.source,
            identity = caller.identity.unwrap_or("-"),
            path = caller.path.unwrap_or("-"),
            "authorization: request not allowed"
        );
    }
    outcome
}

/// For a TCP connection: true when it may go on (allowed, or dry run).
pub fn record(proxy: &Proxy, authz: &Authorization, listener: &Name, caller: &Caller<'_>) -> bool {
    !matches!(check(proxy, authz, listener, caller), Outcome::Deny(_))
}
