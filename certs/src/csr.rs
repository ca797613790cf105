//! Certificate signing requests: a proxy makes a fresh P-256 key and a CSR; the CA certifies
//! the CSR's public key (after checking its self-signature) for an identity it chooses.

use std::time::Duration;

use rcgen::{CertificateParams, CertificateSigningRequestParams, KeyPair};

use crate::SpiffeId;
use crate::ca::{Ca, CaError};

/// A new key (PEM, PKCS#8) and a CSR for it (PEM).
pub fn request() -> Result<(String, String), CaError> {
    let key = KeyPair::generate()?;
    let csr = CertificateParams::default().serialize_request(&key)?;
    Ok((key.serialize_pem(), csr.pem()?))
}

/// Signs the public key of `csr_pem` for `identity`; the CSR's own subject and names are
/// ignored. Returns the leaf followed by the CA chain (PEM).
pub fn sign(ca: &Ca, csr_pem: &str, identity: &SpiffeId, ttl: Duration) -> Result<String, CaError> {
    let csr = CertificateSigningRequestParams::from_pem(csr_pem)?;
    ca.sign(identity, ttl, &csr.public_key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_csr_is_signed_for_the_identity_the_ca_chooses() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        crate::ca::init("mesh.local", dir.path(), None, None, false)
            .unwrap_or_else(|e| panic!("{e}"));
        let ca = Ca::load(dir.path()).unwrap_or_else(|e| panic!("{e}"));
        let (_key, csr) = request().unwrap_or_else(|e| panic!("{e}"));
        let id = SpiffeId::parse("spiffe://mesh.local/ns/default/sa/orders")
            .unwrap_or_else(|e| panic!("{e}"));
        let chain =
            sign(&ca, &csr, &id, Duration::from_secs(3600)).unwrap_or_else(|e| panic!("{e}"));
        let certs = crate::inspect::certs_in(&chain).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(certs[0].uris, vec![id.to_string()]);
        // A tampered request (its signature no longer matches) is refused.
        let mut bad = csr.into_bytes();
        let i = bad.len() / 2;
        bad[i] = if bad[i] == b'A' { b'B' } else { b'A' };
        let bad = String::from_utf8(bad).unwrap_or_default();
        assert!(sign(&ca, &bad, &id, Duration::from_secs(3600)).is_err());
    }
}
