//! SPIFFE identities: `spiffe://TRUST_DOMAIN/PATH`.

use std::fmt;

/// A SPIFFE identity, `spiffe://TRUST_DOMAIN/PATH`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SpiffeId {
    trust_domain: String,
    path: String,
}

/// Why a string is not a SPIFFE identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidSpiffeId(pub String);

impl fmt::Display for InvalidSpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid SPIFFE id: {}", self.0)
    }
}

impl std::error::Error for InvalidSpiffeId {}

impl SpiffeId {
    /// Parses `spiffe://trust.domain/path`, following the SPIFFE ID rules: lower-case trust
    /// domain of `[a-z0-9.-_]`, a non-empty path of segments without `.`/`..`.
    pub fn parse(s: &str) -> Result<Self, InvalidSpiffeId> {
        let rest = s
            .strip_prefix("spiffe://")
            .ok_or_else(|| InvalidSpiffeId(format!("{s:?} must start with spiffe://")))?;
        let (td, path) = rest.split_once('/').unwrap_or((rest, ""));
        if td.is_empty()
            || !td.bytes().all(|b| {
                b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'_')
            })
        {
            return Err(InvalidSpiffeId(format!("{s:?}: bad trust domain {td:?}")));
        }
        if path.is_empty() {
            return Err(InvalidSpiffeId(format!(
                "{s:?}: a workload path is required"
            )));
        }
        for seg in path.split('/') {
            if seg.is_empty() || seg == "." || seg == ".." {
                return Err(InvalidSpiffeId(format!("{s:?}: bad path segment {seg:?}")));
            }
            if !seg
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
            {
                return Err(InvalidSpiffeId(format!("{s:?}: bad character in {seg:?}")));
            }
        }
        Ok(Self {
            trust_domain: td.to_owned(),
            path: format!("/{path}"),
        })
    }

    pub fn trust_domain(&self) -> &str {
        &self.trust_domain
    }

    pub fn path(&self) -> &str {
        &self.path
    }
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "spiffe://{}{}", self.trust_domain, self.path)
    }
}

#[cfg(test)]
mod tests {
    use super::SpiffeId;

    #[test]
    fn parses_and_prints() {
        let id = SpiffeId::parse("spiffe://mesh.local/ns/default/sa/orders").expect("valid");
        assert_eq!(id.trust_domain(), "mesh.local");
        assert_eq!(id.path(), "/ns/default/sa/orders");
        assert_eq!(id.to_string(), "spiffe://mesh.local/ns/default/sa/orders");
    }

    #[test]
    fn rejects_bad_ids() {
        for bad in [
            "http://x/y",
            "spiffe://",
            "spiffe://Mesh/x",
            "spiffe://m/",
            "spiffe://m/a//b",
            "spiffe://m/../x",
        ] {
            assert!(SpiffeId::parse(bad).is_err(), "{bad}");
        }
    }
}
