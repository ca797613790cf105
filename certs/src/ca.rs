//! The mesh CA: a root (or an intermediate under an existing CA) for one trust domain, and
//! the workload certificates it issues, each with its SPIFFE identity as its only URI SAN.
//!
//! A CA directory holds `ca.crt` (this CA), `ca.key` (0600), `chain.crt` (the intermediates
//! from this CA up to the root, without it: what a leaf sends after itself; empty for a
//! root) and `bundle.crt` (the root: what peers trust). A workload directory holds `cert.pem` (leaf, then the CA chain), `key.pem` (0600)
//! and `bundle.pem`. The CA certificate carries the trust domain as a URI SAN
//! (`spiffe://mesh.local`), so issuing can refuse identities from another trust domain.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use time::OffsetDateTime;

use crate::spiffe::SpiffeId;

/// Default lifetime of a root CA.
pub const ROOT_TTL: Duration = Duration::from_secs(10 * 365 * 86_400);
/// Default lifetime of an intermediate CA.
pub const INTERMEDIATE_TTL: Duration = Duration::from_secs(365 * 86_400);
/// Clock skew tolerated by backdating `notBefore`.
const BACKDATE: Duration = Duration::from_secs(300);

#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error("{0}")]
    Identity(#[from] crate::spiffe::InvalidSpiffeId),
    #[error("invalid trust domain {0:?}: use lower-case letters, digits, '.', '-' and '_'")]
    TrustDomain(String),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} already exists; pass --force to replace it")]
    Exists { path: PathBuf },
    #[error("{path}: {message}")]
    Bad { path: PathBuf, message: String },
    #[error(
        "identity {identity} is not in this CA's trust domain {trust_domain:?}; issue it from \
         that trust domain's CA"
    )]
    WrongTrustDomain {
        identity: String,
        trust_domain: String,
    },
    #[error("certificate generation failed: {0}")]
    Rcgen(#[from] rcgen::Error),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> CaError + '_ {
    move |source| CaError::Io {
        path: path.to_owned(),
        source,
    }
}

fn read(path: &Path) -> Result<String, CaError> {
    std::fs::read_to_string(path).map_err(io(path))
}

/// Writes a file; keys with mode 0600. Refuses to replace unless `force`.
fn write(path: &Path, text: &str, secret: bool, force: bool) -> Result<(), CaError> {
    if !force && path.exists() {
        return Err(CaError::Exists {
            path: path.to_owned(),
        });
    }
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    if secret {
        opts.mode(0o600);
    }
    let mut f = opts.open(path).map_err(io(path))?;
    if secret {
        // An existing file keeps its mode on open: tighten it.
        use std::os::unix::fs::PermissionsExt;
        f.set_permissions(std::fs::Permissions::from_mode(0o600))
            .map_err(io(path))?;
    }
    f.write_all(text.as_bytes()).map_err(io(path))
}

/// 128 random bits (positive), as CAs should.
fn serial() -> SerialNumber {
    let mut bytes: [u8; 16] = rand::random();
    bytes[0] &= 0x7f;
    SerialNumber::from(bytes.to_vec())
}

fn validity(params: &mut CertificateParams, ttl: Duration) {
    let now = OffsetDateTime::now_utc();
    params.not_before = now - BACKDATE;
    params.not_after = now + ttl;
}

fn check_trust_domain(td: &str) -> Result<(), CaError> {
    let ok = !td.is_empty()
        && td.len() <= 255
        && td.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'_')
        });
    if ok {
        Ok(())
    } else {
        Err(CaError::TrustDomain(td.to_owned()))
    }
}

/// What `ca init` wrote.
#[derive(Debug)]
pub struct InitReport {
    pub dir: PathBuf,
    pub intermediate: bool,
}

/// Makes a CA for `trust_domain` in `out`: a self-signed root, or an intermediate signed by
/// the CA in `parent`.
pub fn init(
    trust_domain: &str,
    out: &Path,
    ttl: Option<Duration>,
    parent: Option<&Path>,
    force: bool,
) -> Result<InitReport, CaError> {
    check_trust_domain(trust_domain)?;
    let parent = parent.map(Ca::load).transpose()?;
    if let Some(p) = &parent
        && p.trust_domain != trust_domain
    {
        return Err(CaError::Bad {
            path: p.dir.clone(),
            message: format!(
                "the parent CA is for trust domain {:?}, not {trust_domain:?}",
                p.trust_domain
            ),
        });
    }
    std::fs::create_dir_all(out).map_err(io(out))?;
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, trust_domain);
    dn.push(
        DnType::CommonName,
        if parent.is_some() {
            "Remora mesh intermediate CA"
        } else {
            "Remora mesh root CA"
        },
    );
    params.distinguished_name = dn;
    params.subject_alt_names = vec![SanType::URI(format!("spiffe://{trust_domain}").try_into()?)];
    params.is_ca = IsCa::Ca(if parent.is_some() {
        BasicConstraints::Constrained(0)
    } else {
        BasicConstraints::Unconstrained
    });
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.serial_number = Some(serial());
    params.use_authority_key_identifier_extension = parent.is_some();
    validity(
        &mut params,
        ttl.unwrap_or(if parent.is_some() {
            INTERMEDIATE_TTL
        } else {
            ROOT_TTL
        }),
    );
    let (cert_pem, chain, bundle) = match &parent {
        None => {
            let cert = params.self_signed(&key)?;
            // A root sends no chain: peers hold it in their bundle.
            (cert.pem(), String::new(), cert.pem())
        }
        Some(p) => {
            let issuer = p.issuer()?;
            let cert = params.signed_by(&key, &issuer)?;
            (
                cert.pem(),
                format!("{}{}", cert.pem(), p.chain),
                p.bundle.clone(),
            )
        }
    };
    write(&out.join("ca.key"), &key.serialize_pem(), true, force)?;
    write(&out.join("ca.crt"), &cert_pem, false, true)?;
    write(&out.join("chain.crt"), &chain, false, true)?;
    write(&out.join("bundle.crt"), &bundle, false, true)?;
    Ok(InitReport {
        dir: out.to_owned(),
        intermediate: parent.is_some(),
    })
}

/// A CA loaded from its directory.
#[derive(Debug)]
pub struct Ca {
    pub dir: PathBuf,
    pub trust_domain: String,
    cert: String,
    key: String,
    chain: String,
    bundle: String,
}

impl Ca {
    pub fn load(dir: &Path) -> Result<Self, CaError> {
        Self::load_for(dir, None)
    }

    /// Loads a CA for `trust_domain`. A CA certificate that names its trust domain (a URI
    /// SAN `spiffe://TD`, as `remora-certs ca init` writes) must name this one; one that
    /// names none (a CA made by other tools, such as the Helm chart's) is taken for it.
    pub fn load_for(dir: &Path, trust_domain: Option<&str>) -> Result<Self, CaError> {
        let cert = read(&dir.join("ca.crt"))?;
        let key = read(&dir.join("ca.key"))?;
        let chain = read(&dir.join("chain.crt")).unwrap_or_default();
        let bundle = read(&dir.join("bundle.crt")).or_else(|_| Ok::<_, CaError>(cert.clone()))?;
        let bad = |message: String| CaError::Bad {
            path: dir.join("ca.crt"),
            message,
        };
        let named = crate::inspect::certs_in(&cert)
            .map_err(bad)?
            .into_iter()
            .next()
            .and_then(|c| {
                c.uris
                    .iter()
                    .find_map(|u| u.strip_prefix("spiffe://").map(str::to_owned))
            });
        let trust_domain = match (named, trust_domain) {
            (Some(n), Some(t)) if n != t => {
                return Err(bad(format!(
                    "this CA is for trust domain {n:?}, not {t:?}; use that trust domain's CA"
                )));
            }
            (Some(n), _) => n,
            (None, Some(t)) => {
                check_trust_domain(t)?;
                t.to_owned()
            }
            (None, None) => {
                return Err(bad(
                    "not a Remora mesh CA (no spiffe://TRUST_DOMAIN URI SAN); pass the trust domain"
                        .into(),
                ));
            }
        };
        Ok(Self {
            dir: dir.to_owned(),
            trust_domain,
            cert,
            key,
            chain,
            bundle,
        })
    }

    fn issuer(&self) -> Result<Issuer<'static, KeyPair>, CaError> {
        let key = ca_key(&self.key).map_err(|message| CaError::Bad {
            path: self.dir.join("ca.key"),
            message: format!("not a usable private key: {message}"),
        })?;
        Issuer::from_ca_cert_pem(&self.cert, key).map_err(|e| CaError::Bad {
            path: self.dir.join("ca.crt"),
            message: format!("not a usable CA certificate: {e}"),
        })
    }

    /// The PEM roots peers trust.
    pub fn bundle(&self) -> &str {
        &self.bundle
    }

    /// A workload certificate for `identity`, valid for `ttl`, for the public key `key`:
    /// (leaf PEM followed by the CA chain).
    pub fn sign(
        &self,
        identity: &SpiffeId,
        ttl: Duration,
        key: &impl rcgen::PublicKeyData,
    ) -> Result<String, CaError> {
        if identity.trust_domain() != self.trust_domain {
            return Err(CaError::WrongTrustDomain {
                identity: identity.to_string(),
                trust_domain: self.trust_domain.clone(),
            });
        }
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, self.trust_domain.as_str());
        params.distinguished_name = dn;
        params.subject_alt_names = vec![SanType::URI(identity.to_string().try_into()?)];
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyAgreement,
        ];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.serial_number = Some(serial());
        params.use_authority_key_identifier_extension = true;
        validity(&mut params, ttl);
        let cert = params.signed_by(key, &self.issuer()?)?;
        Ok(format!("{}{}", cert.pem(), self.chain))
    }
}

/// The CA's key pair from PEM: PKCS#8, or a SEC1 `EC PRIVATE KEY` (P-256, as Helm's
/// `genPrivateKey "ecdsa"` writes), converted to PKCS#8 for rcgen.
fn ca_key(pem: &str) -> Result<KeyPair, String> {
    use rustls_pki_types::PrivateSec1KeyDer;
    use rustls_pki_types::pem::PemObject;
    if !pem.contains("BEGIN EC PRIVATE KEY") {
        return KeyPair::from_pem(pem).map_err(|e| e.to_string());
    }
    let sec1 = PrivateSec1KeyDer::from_pem_slice(pem.as_bytes()).map_err(|e| e.to_string())?;
    let pair = aws_lc_rs::signature::EcdsaKeyPair::from_private_key_der(
        &aws_lc_rs::signature::ECDSA_P256_SHA256_ASN1_SIGNING,
        sec1.secret_sec1_der(),
    )
    .map_err(|e| format!("not a P-256 key: {e}"))?;
    let pkcs8 = pair
        .to_pkcs8v1()
        .map_err(|_| "cannot re-encode the key".to_owned())?;
    KeyPair::try_from(pkcs8.as_ref()).map_err(|e| e.to_string())
}

/// What `issue` wrote.
#[derive(Debug)]
pub struct IssueReport {
    pub dir: PathBuf,
    pub identity: SpiffeId,
}

/// Issues a workload certificate and key for `identity` into `out`.
pub fn issue(
    ca_dir: &Path,
    identity: &str,
    ttl: Duration,
    out: &Path,
    force: bool,
) -> Result<IssueReport, CaError> {
    let identity = SpiffeId::parse(identity)?;
    let ca = Ca::load(ca_dir)?;
    let key = KeyPair::generate()?;
    let cert = ca.sign(&identity, ttl, &key)?;
    std::fs::create_dir_all(out).map_err(io(out))?;
    write(&out.join("key.pem"), &key.serialize_pem(), true, force)?;
    write(&out.join("cert.pem"), &cert, false, true)?;
    write(&out.join("bundle.pem"), ca.bundle(), false, true)?;
    Ok(IssueReport {
        dir: out.to_owned(),
        identity,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_root_an_intermediate_and_a_leaf() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let root = dir.path().join("root");
        let mid = dir.path().join("mid");
        let leaf = dir.path().join("orders");
        init("mesh.local", &root, None, None, false).unwrap_or_else(|e| panic!("{e}"));
        init("mesh.local", &mid, None, Some(&root), false).unwrap_or_else(|e| panic!("{e}"));
        let r = issue(
            &mid,
            "spiffe://mesh.local/ns/default/sa/orders",
            Duration::from_secs(86_400),
            &leaf,
            false,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.identity.path(), "/ns/default/sa/orders");
        for key in [
            root.join("ca.key"),
            mid.join("ca.key"),
            leaf.join("key.pem"),
        ] {
            let mode = std::fs::metadata(&key)
                .map(|m| m.permissions().mode() & 0o777)
                .unwrap_or(0);
            assert_eq!(mode, 0o600, "{}", key.display());
        }
        let pem = std::fs::read_to_string(leaf.join("cert.pem")).unwrap_or_default();
        let certs = crate::inspect::certs_in(&pem).unwrap_or_default();
        assert_eq!(certs.len(), 2, "leaf and intermediate");
        assert_eq!(certs[0].uris, ["spiffe://mesh.local/ns/default/sa/orders"]);
        assert!(!certs[0].is_ca && certs[1].is_ca);
        assert!(certs[0].dns.is_empty());
        let ttl = certs[0].not_after - certs[0].not_before;
        assert!((86_400..=86_400 + 301).contains(&ttl), "{ttl}");
        // The bundle is the root.
        let bundle = std::fs::read_to_string(leaf.join("bundle.pem")).unwrap_or_default();
        let root_pem = std::fs::read_to_string(root.join("ca.crt")).unwrap_or_default();
        assert_eq!(bundle, root_pem);
    }

    #[test]
    fn refusals_say_why() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let root = dir.path().join("root");
        init("mesh.local", &root, None, None, false).unwrap_or_else(|e| panic!("{e}"));
        let again = init("mesh.local", &root, None, None, false);
        assert!(matches!(again, Err(CaError::Exists { .. })), "{again:?}");
        assert!(init("mesh.local", &root, None, None, true).is_ok());
        let other = issue(
            &root,
            "spiffe://other.domain/x",
            Duration::from_secs(60),
            &dir.path().join("x"),
            false,
        );
        let msg = other
            .map(|_| ())
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            msg.contains("not in this CA's trust domain \"mesh.local\""),
            "{msg}"
        );
        assert!(matches!(
            init("Mesh", &dir.path().join("bad"), None, None, false),
            Err(CaError::TrustDomain(_))
        ));
        let missing = issue(
            &dir.path().join("nope"),
            "spiffe://mesh.local/x",
            Duration::from_secs(60),
            &dir.path().join("y"),
            false,
        );
        assert!(
            missing
                .map(|_| ())
                .err()
                .is_some_and(|e| e.to_string().contains("nope/ca.crt"))
        );
    }
}
