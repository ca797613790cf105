//! TLS settings: the proxy's mesh identity, TLS on listeners (mesh mTLS or ingress
//! termination by SNI) and TLS towards a cluster's endpoints (mesh mTLS or origination to an
//! external service). Files are only named here; the proxy reads them.

use std::time::Duration;

use crate::error::Errors;
use crate::proto;
use crate::util;

pub const DEFAULT_EXPIRY_WARNING: Duration = Duration::from_secs(24 * 3600);

/// Where the proxy's workload certificate comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdentitySource {
    Files {
        cert_file: String,
        key_file: String,
        bundle_file: String,
    },
    ControlPlane,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub trust_domain: String,
    pub source: IdentitySource,
    pub expiry_warning: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsMode {
    /// Mesh mTLS only.
    Strict,
    /// Mesh mTLS or plaintext.
    Permissive,
    /// TLS without client certificates, certificate by SNI.
    Terminate,
}

impl TlsMode {
    /// Uses the mesh identity (and requires `identity`).
    pub fn is_mesh(self) -> bool {
        matches!(self, TlsMode::Strict | TlsMode::Permissive)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerCertificate {
    /// Lower-case names; "*.example.com" matches one label.
    pub server_names: Vec<String>,
    pub cert_file: String,
    pub key_file: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerTls {
    pub mode: TlsMode,
    pub forward_peer_identity: bool,
    /// `Terminate` only; at least one.
    pub certificates: Vec<ServerCertificate>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClusterTls {
    /// mTLS with the mesh identity; endpoints without their own identity must present
    /// `identity` (None: any id of the trust domain).
    Mesh { identity: Option<String> },
    External {
        sni: String,
        /// None: the system's trust store.
        bundle_file: Option<String>,
        client_cert: Option<(String, String)>,
    },
}

/// Checks that `s` is `spiffe://TRUST_DOMAIN/PATH` by the SPIFFE ID rules: a lower-case
/// trust domain, and a path of non-empty segments of `[A-Za-z0-9.-_]`, none `.` or `..`.
pub(crate) fn spiffe_id(s: &str) -> Result<(), String> {
    let bad = || format!("{s:?} is not a SPIFFE id (spiffe://TRUST_DOMAIN/PATH)");
    let rest = s.strip_prefix("spiffe://").ok_or_else(bad)?;
    let (domain, path) = rest.split_once('/').ok_or_else(bad)?;
    trust_domain(domain)?;
    for seg in path.split('/') {
        let ok = !seg.is_empty()
            && seg != "."
            && seg != ".."
            && seg
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'));
        if !ok {
            return Err(format!(
                "{s:?}: bad path segment {seg:?} (SPIFFE ids use [A-Za-z0-9.-_])"
            ));
        }
    }
    Ok(())
}

fn trust_domain(s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err("required, e.g. \"mesh.local\"".into());
    }
    if !s
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'_'))
    {
        return Err(format!(
            "invalid trust domain {s:?}: use lower-case letters, digits, '.', '-' and '_'"
        ));
    }
    Ok(())
}

pub(crate) fn identity(i: &proto::Identity, errs: &mut Errors<'_>) -> Option<Identity> {
    let domain_ok = errs
        .check("identity.trustDomain", trust_domain(&i.trust_domain))
        .is_some();
    let source = match &i.source {
        Some(proto::identity::Source::Files(f)) => {
            for (field, v) in [
                ("identity.files.certFile", &f.cert_file),
                ("identity.files.keyFile", &f.key_file),
                ("identity.files.bundleFile", &f.bundle_file),
            ] {
                if v.is_empty() {
                    errs.push(field, "required");
                }
            }
            Some(IdentitySource::Files {
                cert_file: f.cert_file.clone(),
                key_file: f.key_file.clone(),
                bundle_file: f.bundle_file.clone(),
            })
        }
        Some(proto::identity::Source::ControlPlane(true)) => Some(IdentitySource::ControlPlane),
        Some(proto::identity::Source::ControlPlane(false)) | None => {
            errs.push(
                "identity",
                "set `files: {certFile, keyFile, bundleFile}` or `controlPlane: true`",
            );
            None
        }
    };
    let expiry_warning = errs.check(
        "identity.expiryWarning",
        util::duration(i.expiry_warning.as_ref(), DEFAULT_EXPIRY_WARNING),
    );
    if !domain_ok {
        return None;
    }
    Some(Identity {
        trust_domain: i.trust_domain.clone(),
        source: source?,
        expiry_warning: expiry_warning?,
    })
}

/// A server name pattern: a DNS name or "*.suffix".
fn server_name(s: &str) -> Result<String, String> {
    let lower = s.to_ascii_lowercase();
    let bare = lower.strip_prefix("*.").unwrap_or(&lower);
    let ok = !bare.is_empty()
        && bare.len() <= 253
        && bare.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
    if ok {
        Ok(lower)
    } else {
        Err(format!(
            "invalid server name {s:?} (a DNS name, or \"*.\" and a DNS name)"
        ))
    }
}

pub(crate) fn listener(t: &proto::ListenerTls, errs: &mut Errors<'_>) -> Option<ListenerTls> {
    let mode = match proto::TlsMode::try_from(t.mode) {
        Ok(proto::TlsMode::Unspecified | proto::TlsMode::Disabled) => return None,
        Ok(proto::TlsMode::Strict) => TlsMode::Strict,
        Ok(proto::TlsMode::Permissive) => TlsMode::Permissive,
        Ok(proto::TlsMode::Terminate) => TlsMode::Terminate,
        Err(_) => {
            errs.push(
                "tls.mode",
                format!(
                    "unknown value {} (use STRICT, PERMISSIVE, TERMINATE or DISABLED)",
                    t.mode
                ),
            );
            return None;
        }
    };
    let mut certificates = Vec::new();
    if mode == TlsMode::Terminate {
        if t.certificates.is_empty() {
            errs.push("tls.certificates", "required when tls.mode is TERMINATE");
        }
        for (i, c) in t.certificates.iter().enumerate() {
            let mut names = Vec::new();
            for (j, n) in c.server_names.iter().enumerate() {
                if let Some(n) = errs.check(
                    format!("tls.certificates[{i}].serverNames[{j}]"),
                    server_name(n),
                ) {
                    names.push(n);
                }
            }
            for (field, v) in [("certFile", &c.cert_file), ("keyFile", &c.key_file)] {
                if v.is_empty() {
                    errs.push(format!("tls.certificates[{i}].{field}"), "required");
                }
            }
            certificates.push(ServerCertificate {
                server_names: names,
                cert_file: c.cert_file.clone(),
                key_file: c.key_file.clone(),
            });
        }
    } else if !t.certificates.is_empty() {
        errs.push(
            "tls.certificates",
            "only used with tls.mode TERMINATE (mesh mTLS uses the proxy's identity)",
        );
    }
    if mode == TlsMode::Terminate && t.forward_peer_identity {
        errs.push(
            "tls.forwardPeerIdentity",
            "TERMINATE asks no client certificate, so there is no identity to forward",
        );
    }
    Some(ListenerTls {
        mode,
        forward_peer_identity: t.forward_peer_identity,
        certificates,
    })
}

pub(crate) fn cluster(t: &proto::ClusterTls, errs: &mut Errors<'_>) -> Option<ClusterTls> {
    let Ok(mode) = proto::ClusterTlsMode::try_from(t.mode) else {
        errs.push(
            "tls.mode",
            format!("unknown value {} (use MESH, EXTERNAL or PLAINTEXT)", t.mode),
        );
        return None;
    };
    let external_only = [
        ("tls.sni", &t.sni),
        ("tls.bundleFile", &t.bundle_file),
        ("tls.certFile", &t.cert_file),
        ("tls.keyFile", &t.key_file),
    ];
    match mode {
        proto::ClusterTlsMode::Unspecified | proto::ClusterTlsMode::Plaintext => None,
        proto::ClusterTlsMode::Mesh => {
            for (field, v) in external_only {
                if !v.is_empty() {
                    errs.push(field, "only used with tls.mode EXTERNAL");
                }
            }
            if !t.identity.is_empty() {
                errs.check("tls.identity", spiffe_id(&t.identity))?;
            }
            Some(ClusterTls::Mesh {
                identity: (!t.identity.is_empty()).then(|| t.identity.clone()),
            })
        }
        proto::ClusterTlsMode::External => {
            if !t.identity.is_empty() {
                errs.push("tls.identity", "only used with tls.mode MESH");
            }
            let sni = if t.sni.is_empty() {
                errs.push(
                    "tls.sni",
                    "required with tls.mode EXTERNAL (the name the server's certificate is for)",
                );
                None
            } else {
                errs.check("tls.sni", server_name(&t.sni))
            };
            if sni.as_deref().is_some_and(|s| s.starts_with("*.")) {
                errs.push("tls.sni", "must be one name, not a wildcard");
                return None;
            }
            let client_cert = match (t.cert_file.is_empty(), t.key_file.is_empty()) {
                (true, true) => None,
                (false, false) => Some((t.cert_file.clone(), t.key_file.clone())),
                _ => {
                    errs.push("tls.certFile", "certFile and keyFile go together");
                    None
                }
            };
            Some(ClusterTls::External {
                sni: sni?,
                bundle_file: (!t.bundle_file.is_empty()).then(|| t.bundle_file.clone()),
                client_cert,
            })
        }
    }
}
