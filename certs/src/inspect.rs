//! A readable account of a PEM file: for each certificate its subject, issuer, serial,
//! SANs, validity (and how long is left), whether it is a CA, and its key type; private keys
//! are named, never printed.

use std::fmt::Write as _;

use x509_parser::extensions::GeneralName;
use x509_parser::pem::Pem;

/// What one certificate says.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CertInfo {
    pub subject: String,
    pub issuer: String,
    pub serial: String,
    pub uris: Vec<String>,
    pub dns: Vec<String>,
    /// Unix seconds.
    pub not_before: i64,
    pub not_after: i64,
    pub is_ca: bool,
    pub key: String,
}

/// The certificates in a PEM text, in order (other PEM blocks are skipped).
pub fn certs_in(pem: &str) -> Result<Vec<CertInfo>, String> {
    let mut out = Vec::new();
    for block in Pem::iter_from_buffer(pem.as_bytes()) {
        let block = block.map_err(|e| format!("not PEM: {e}"))?;
        if block.label != "CERTIFICATE" {
            continue;
        }
        let cert = block
            .parse_x509()
            .map_err(|e| format!("not an X.509 certificate: {e}"))?;
        let mut info = CertInfo {
            subject: cert.subject().to_string(),
            issuer: cert.issuer().to_string(),
            serial: cert.raw_serial_as_string(),
            not_before: cert.validity().not_before.timestamp(),
            not_after: cert.validity().not_after.timestamp(),
            is_ca: cert.is_ca(),
            key: cert.public_key().algorithm.algorithm.to_id_string(),
            ..CertInfo::default()
        };
        info.key = match info.key.as_str() {
            "1.2.840.10045.2.1" => "ECDSA".into(),
            "1.2.840.113549.1.1.1" => "RSA".into(),
            "1.3.101.112" => "Ed25519".into(),
            other => other.to_owned(),
        };
        if let Ok(Some(san)) = cert.subject_alternative_name() {
            for name in &san.value.general_names {
                match name {
                    GeneralName::URI(u) => info.uris.push((*u).to_owned()),
                    GeneralName::DNSName(d) => info.dns.push((*d).to_owned()),
                    _ => {}
                }
            }
        }
        out.push(info);
    }
    Ok(out)
}

fn when(unix: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| unix.to_string())
}

fn left(secs: i64) -> String {
    if secs <= 0 {
        return format!("EXPIRED {} ago", left(-secs).trim_start_matches("in "));
    }
    let (d, h, m) = (secs / 86_400, (secs % 86_400) / 3600, (secs % 3600) / 60);
    if d > 0 {
        format!("in {d}d {h}h")
    } else if h > 0 {
        format!("in {h}h {m}m")
    } else {
        format!("in {m}m {}s", secs % 60)
    }
}

/// The report `remora-certs inspect FILE` prints.
pub fn report(pem: &str, now_unix: i64) -> Result<String, String> {
    let certs = certs_in(pem)?;
    let keys = Pem::iter_from_buffer(pem.as_bytes())
        .filter_map(Result::ok)
        .filter(|b| b.label.ends_with("PRIVATE KEY"))
        .count();
    if certs.is_empty() {
        return Ok(if keys > 0 {
            format!("{keys} private key(s), no certificate (keys are not printed)\n")
        } else {
            "no certificate in this file\n".to_owned()
        });
    }
    let mut out = String::new();
    for (i, c) in certs.iter().enumerate() {
        let role = match (i, c.is_ca) {
            (0, false) => "workload certificate",
            (_, true) if c.subject == c.issuer => "root CA",
            (_, true) => "intermediate CA",
            _ => "certificate",
        };
        let _ = writeln!(out, "[{i}] {role}");
        let _ = writeln!(out, "  subject:   {}", c.subject);
        let _ = writeln!(out, "  issuer:    {}", c.issuer);
        let _ = writeln!(out, "  serial:    {}", c.serial);
        for u in &c.uris {
            let _ = writeln!(out, "  URI SAN:   {u}");
        }
        for d in &c.dns {
            let _ = writeln!(out, "  DNS SAN:   {d}");
        }
        let _ = writeln!(out, "  key:       {}", c.key);
        let _ = writeln!(out, "  not before {}", when(c.not_before));
        let _ = writeln!(
            out,
            "  not after  {} ({})",
            when(c.not_after),
            left(c.not_after - now_unix)
        );
    }
    if certs.len() > 1 {
        let _ = writeln!(out, "chain: {} certificates", certs.len());
    }
    if keys > 0 {
        let _ = writeln!(out, "also {keys} private key(s) (not printed)");
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_left_read_well() {
        assert_eq!(left(90), "in 1m 30s");
        assert_eq!(left(3 * 3600 + 120), "in 3h 2m");
        assert_eq!(left(2 * 86_400 + 3600), "in 2d 1h");
        assert_eq!(left(-3600), "EXPIRED 1h 0m ago");
    }

    #[test]
    fn garbage_is_an_error_and_a_key_is_not_printed() {
        assert!(
            report(
                "-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n",
                0
            )
            .is_err()
        );
        let key = rcgen::KeyPair::generate()
            .map(|k| k.serialize_pem())
            .unwrap_or_default();
        let r = report(&key, 0).unwrap_or_default();
        assert!(r.contains("1 private key(s), no certificate"), "{r}");
        assert!(!r.contains("BEGIN"), "{r}");
    }
}
