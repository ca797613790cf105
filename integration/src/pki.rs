//! Test certificates from `remora-certs`: a mesh CA in a temporary directory, workload
//! certificates issued from it, and the `identity:` YAML that points a proxy at them.

use std::path::{Path, PathBuf};
use std::time::Duration;

use remora_certs::ca;

pub const DAY: Duration = Duration::from_secs(86_400);

pub struct Pki {
    pub dir: tempfile::TempDir,
    pub root: PathBuf,
}

impl Pki {
    /// A root CA for `trust_domain`.
    pub fn new(trust_domain: &str) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("ca");
        ca::init(trust_domain, &root, None, None, false).expect("ca init");
        Self { dir, root }
    }

    /// Issues `spiffe://…` into `DIR/name` (cert.pem, key.pem, bundle.pem), replacing it.
    pub fn issue(&self, name: &str, identity: &str, ttl: Duration) -> PathBuf {
        let out = self.dir.path().join(name);
        ca::issue(&self.root, identity, ttl, &out, true).expect("issue");
        out
    }
}

/// `identity:` for a proxy using the files in `dir`.
pub fn identity_yaml(dir: &Path, trust_domain: &str, extra: &str) -> String {
    let f = |n: &str| dir.join(n).display().to_string();
    format!(
        "identity:\n  trustDomain: {trust_domain}\n  files: {{ certFile: \"{}\", keyFile: \"{}\", bundleFile: \"{}\" }}\n{extra}",
        f("cert.pem"),
        f("key.pem"),
        f("bundle.pem"),
    )
}
