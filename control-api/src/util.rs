//! Small conversions shared by the resource validators.

use std::net::SocketAddr;
use std::time::Duration;

/// Parses "IP:PORT" (IPv6 as "[::1]:80").
pub(crate) fn socket_addr(s: &str) -> Result<SocketAddr, String> {
    if s.is_empty() {
        return Err("required (\"IP:PORT\")".into());
    }
    s.parse()
        .map_err(|_| format!("invalid socket address {s:?} (expected \"IP:PORT\")"))
}

/// Converts an optional proto duration, rejecting negative or absurd values.
pub(crate) fn duration(
    d: Option<&pbjson_types::Duration>,
    default: Duration,
) -> Result<Duration, String> {
    let Some(d) = d else { return Ok(default) };
    if d.seconds < 0 || d.nanos < 0 {
        return Err("must not be negative".into());
    }
    if d.seconds > 365 * 24 * 3600 {
        return Err("must be at most one year".into());
    }
    #[allow(clippy::cast_sign_loss)]
    Ok(Duration::new(d.seconds as u64, d.nanos as u32))
}

/// Like [`duration`], but zero is rejected.
pub(crate) fn positive_duration(
    d: Option<&pbjson_types::Duration>,
    default: Duration,
) -> Result<Duration, String> {
    let v = duration(d, default)?;
    if v.is_zero() {
        Err("must be greater than zero".into())
    } else {
        Ok(v)
    }
}

/// Like [`duration`], but unset stays `None` and zero is rejected.
pub(crate) fn opt_positive_duration(
    d: Option<&pbjson_types::Duration>,
) -> Result<Option<Duration>, String> {
    match d {
        None => Ok(None),
        Some(_) => {
            let v = duration(d, Duration::ZERO)?;
            if v.is_zero() {
                Err("must be greater than zero (leave it unset for none)".into())
            } else {
                Ok(Some(v))
            }
        }
    }
}

/// Validates a resource name: non-empty, printable ASCII without spaces or quotes, ≤ 128 bytes.
pub(crate) fn name(s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err("required".into());
    }
    if s.len() > 128 {
        return Err("must be at most 128 bytes".into());
    }
    if !s
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'/' | b':'))
    {
        return Err(format!(
            "invalid name {s:?}: use letters, digits and - _ . / :"
        ));
    }
    Ok(())
}
