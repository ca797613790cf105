//! `remora-certs` end to end: a root, an intermediate and a workload certificate, checked by
//! OpenSSL (a real peer): the chain verifies for TLS client and server use, the SPIFFE id is
//! the only URI SAN, keys are 0600, and mistakes are refused with a reason.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

fn certs(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_remora-certs"))
        .args(args)
        .output()
        .expect("run remora-certs")
}

fn ok(args: &[&str]) -> String {
    let out = certs(args);
    assert!(
        out.status.success(),
        "remora-certs {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn openssl(args: &[&str]) -> (bool, String) {
    let out = Command::new("openssl")
        .args(args)
        .output()
        .expect("openssl");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn p(path: &Path) -> &str {
    path.to_str().expect("utf-8 path")
}

#[test]
fn a_chain_that_openssl_verifies() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (root, mid, wl) = (
        dir.path().join("root"),
        dir.path().join("mid"),
        dir.path().join("orders"),
    );
    let out = ok(&[
        "ca",
        "init",
        "--trust-domain",
        "mesh.local",
        "--out",
        p(&root),
    ]);
    assert!(out.contains("root CA for trust domain mesh.local"), "{out}");
    ok(&[
        "ca",
        "init",
        "--trust-domain",
        "mesh.local",
        "--out",
        p(&mid),
        "--parent",
        p(&root),
    ]);
    let out = ok(&[
        "issue",
        "--ca",
        p(&mid),
        "--identity",
        "spiffe://mesh.local/ns/default/sa/orders",
        "--ttl",
        "24h",
        "--out",
        p(&wl),
    ]);
    assert!(
        out.contains("issued spiffe://mesh.local/ns/default/sa/orders"),
        "{out}"
    );
    for key in [root.join("ca.key"), mid.join("ca.key"), wl.join("key.pem")] {
        let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", key.display());
    }
    let cert = wl.join("cert.pem");
    for purpose in ["sslclient", "sslserver"] {
        let (good, text) = openssl(&[
            "verify",
            "-purpose",
            purpose,
            "-CAfile",
            p(&wl.join("bundle.pem")),
            "-untrusted",
            p(&cert),
            p(&cert),
        ]);
        assert!(good, "openssl verify ({purpose}): {text}");
    }
    let (_, san) = openssl(&["x509", "-in", p(&cert), "-noout", "-ext", "subjectAltName"]);
    assert!(
        san.contains("URI:spiffe://mesh.local/ns/default/sa/orders"),
        "{san}"
    );
    assert!(!san.contains("DNS:"), "{san}");
    let (_, key) = openssl(&["pkey", "-in", p(&wl.join("key.pem")), "-noout", "-text"]);
    assert!(key.contains("prime256v1") || key.contains("P-256"), "{key}");
    // A certificate from another mesh's CA does not verify against this bundle.
    let other = dir.path().join("other");
    ok(&[
        "ca",
        "init",
        "--trust-domain",
        "mesh.local",
        "--out",
        p(&other),
    ]);
    let (good, _) = openssl(&[
        "verify",
        "-CAfile",
        p(&other.join("bundle.crt")),
        "-untrusted",
        p(&cert),
        p(&cert),
    ]);
    assert!(!good, "a foreign root must not verify our leaf");

    let report = ok(&["inspect", p(&cert)]);
    assert!(report.contains("[0] workload certificate"), "{report}");
    assert!(
        report.contains("URI SAN:   spiffe://mesh.local/ns/default/sa/orders"),
        "{report}"
    );
    assert!(report.contains("[1] intermediate CA"), "{report}");
    assert!(report.contains("chain: 2 certificates"), "{report}");
    assert!(
        report.contains("(in 23h 59m)") || report.contains("(in 1d 0h)"),
        "{report}"
    );
    let report = ok(&["inspect", p(&root.join("ca.crt"))]);
    assert!(
        report.contains("root CA") && report.contains("URI SAN:   spiffe://mesh.local"),
        "{report}"
    );
    let report = ok(&["inspect", p(&wl.join("key.pem"))]);
    assert!(
        report.contains("private key") && !report.contains("BEGIN"),
        "{report}"
    );
}

#[test]
fn mistakes_are_refused_with_a_reason() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("root");
    ok(&[
        "ca",
        "init",
        "--trust-domain",
        "mesh.local",
        "--out",
        p(&root),
    ]);
    let paths: Vec<String> = ["a", "b", "c", "d", "missing.pem"]
        .iter()
        .map(|n| p(&dir.path().join(n)).to_owned())
        .collect();
    let cases: [(&[&str], &str); 6] = [
        (
            &[
                "ca",
                "init",
                "--trust-domain",
                "mesh.local",
                "--out",
                p(&root),
            ],
            "already exists; pass --force",
        ),
        (
            &[
                "issue",
                "--ca",
                p(&root),
                "--identity",
                "spiffe://elsewhere/x",
                "--out",
                &paths[0],
            ],
            "not in this CA's trust domain \"mesh.local\"",
        ),
        (
            &[
                "issue",
                "--ca",
                p(&root),
                "--identity",
                "orders",
                "--out",
                &paths[1],
            ],
            "must start with spiffe://",
        ),
        (
            &[
                "issue",
                "--ca",
                p(&root),
                "--identity",
                "spiffe://mesh.local/x",
                "--ttl",
                "1y",
                "--out",
                &paths[2],
            ],
            "invalid duration \"1y\"",
        ),
        (
            &[
                "ca",
                "init",
                "--trust-domain",
                "Bad Domain",
                "--out",
                &paths[3],
            ],
            "invalid trust domain",
        ),
        (&["inspect", &paths[4]], "missing.pem"),
    ];
    for (args, want) in cases {
        let out = certs(args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(err.contains(want), "{args:?}: {err}");
    }
}

/// A CA made by other tools (as the Helm chart's `genCAWithKey`): a SEC1 `EC PRIVATE KEY`
/// and no SPIFFE URI SAN. It is used for the trust domain it is given, and refused without.
#[test]
fn a_foreign_ec_ca_serves_the_trust_domain_it_is_given() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = dir.path();
    let key = ca.join("ca.key").display().to_string();
    let crt = ca.join("ca.crt").display().to_string();
    let (ok1, out) = openssl(&[
        "ecparam",
        "-name",
        "prime256v1",
        "-genkey",
        "-noout",
        "-out",
        &key,
    ]);
    assert!(ok1, "{out}");
    assert!(
        std::fs::read_to_string(&key)
            .expect("key")
            .contains("BEGIN EC PRIVATE KEY")
    );
    let (ok2, out) = openssl(&[
        "req",
        "-x509",
        "-new",
        "-key",
        &key,
        "-subj",
        "/CN=Remora mesh CA (mesh.local)",
        "-days",
        "10",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
        "-out",
        &crt,
    ]);
    assert!(ok2, "{out}");
    let err = remora_certs::ca::Ca::load(ca).expect_err("no trust domain");
    assert!(err.to_string().contains("pass the trust domain"), "{err}");
    let loaded = remora_certs::ca::Ca::load_for(ca, Some("mesh.local")).expect("load");
    let (_key, csr) = remora_certs::csr::request().expect("csr");
    let id = remora_certs::SpiffeId::parse("spiffe://mesh.local/ns/shop/sa/orders").expect("id");
    let chain = remora_certs::csr::sign(&loaded, &csr, &id, std::time::Duration::from_secs(3600))
        .expect("sign");
    let leaf = ca.join("leaf.pem");
    std::fs::write(&leaf, chain).expect("write");
    let (ok3, out) = openssl(&[
        "verify",
        "-CAfile",
        &crt,
        "-purpose",
        "sslserver",
        leaf.to_str().expect("path"),
    ]);
    assert!(ok3, "{out}");
    // A CA naming one trust domain is not taken for another.
    let own = dir.path().join("own");
    ok(&[
        "ca",
        "init",
        "--trust-domain",
        "mesh.local",
        "--out",
        own.to_str().expect("path"),
    ]);
    let err = remora_certs::ca::Ca::load_for(&own, Some("other.local")).expect_err("mismatch");
    assert!(err.to_string().contains("not \"other.local\""), "{err}");
}
