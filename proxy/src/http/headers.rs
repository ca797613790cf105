//! Header handling per RFC 9110 §7.6.1 and RFC 9113 §8.2.2: hop-by-hop headers stripped in
//! both directions, authority preserved across HTTP versions, `x-request-id` ensured.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, Uri, Version};

use crate::http::body::ProxyBody;
use crate::http::error::ProxyError;

static REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");
static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");

/// True for an HTTP/1.1 `Upgrade` request (e.g. WebSocket).
pub fn is_upgrade<B>(req: &Request<B>) -> bool {
    req.version() == Version::HTTP_11
        && req.headers().contains_key(header::UPGRADE)
        && connection_has(req.headers(), "upgrade")
}

fn connection_has(headers: &HeaderMap, token: &str) -> bool {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// Removes hop-by-hop headers: the fixed set and any named in `Connection`. With `upgrade`
/// the `Connection: upgrade` and `Upgrade` headers are kept for the next hop.
pub fn strip_hop_by_hop(headers: &mut HeaderMap, upgrade: bool) {
    // Usually there is none: one pass over the names instead of a lookup per header kind.
    let any = headers.keys().any(|n| {
        n == header::CONNECTION
            || n == header::TRANSFER_ENCODING
            || n == header::UPGRADE
            || n == KEEP_ALIVE
            || n == PROXY_CONNECTION
    });
    if !any && !upgrade {
        return;
    }
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .filter(|n| !(upgrade && *n == header::UPGRADE))
        .collect();
    for n in named {
        headers.remove(n);
    }
    headers.remove(&KEEP_ALIVE);
    headers.remove(&PROXY_CONNECTION);
    headers.remove(header::TRANSFER_ENCODING);
    if upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    } else {
        headers.remove(header::CONNECTION);
        headers.remove(header::UPGRADE);
    }
}

/// Adds `x-request-id` (a random UUID v4) when the request has none.
pub fn ensure_request_id(headers: &mut HeaderMap) {
    if headers.contains_key(&REQUEST_ID) {
        return;
    }
    let mut bytes = fastrand::u128(..).to_be_bytes();
    bytes[6] = (bytes[6] & 0x0f) | 0x40; // version 4
    bytes[8] = (bytes[8] & 0x3f) | 0x80; // RFC 4122 variant
    let hex = b"0123456789abcdef";
    let mut buf = [0u8; 36];
    let mut j = 0;
    for (i, byte) in bytes.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            buf[j] = b'-';
            j += 1;
        }
        buf[j] = hex[usize::from(byte >> 4)];
        buf[j + 1] = hex[usize::from(byte & 0xf)];
        j += 2;
    }
    if let Ok(v) = HeaderValue::from_bytes(&buf) {
        headers.insert(REQUEST_ID.clone(), v);
    }
}

/// The request's authority: `:authority` (URI) first, then `Host`.
pub fn authority<B>(req: &Request<B>) -> Option<&str> {
    req.uri().authority().map(|a| a.as_str()).or_else(|| {
        req.headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
    })
}

/// A gRPC request or response (`content-type: application/grpc[+proto|…]`).
pub fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

/// The request's `grpc-timeout` (a gRPC deadline: up to 8 digits and a unit, H M S m u n),
/// if it has a valid one.
pub fn grpc_timeout(headers: &HeaderMap) -> Option<std::time::Duration> {
    let v = headers.get("grpc-timeout")?.as_bytes();
    let (digits, unit) = v.split_at(v.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n: u64 = std::str::from_utf8(digits).ok()?.parse().ok()?;
    use std::time::Duration;
    Some(match unit {
        b"H" => Duration::from_secs(n.checked_mul(3600)?),
        b"M" => Duration::from_secs(n.checked_mul(60)?),
        b"S" => Duration::from_secs(n),
        b"m" => Duration::from_millis(n),
        b"u" => Duration::from_micros(n),
        b"n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// Prepares a routed request for the upstream hop in `version`: hop-by-hop headers out,
/// URI form and `Host` per version, authority preserved.
pub fn prepare_request(
    req: &mut Request<ProxyBody>,
    version: Version,
    upgrade: bool,
) -> Result<(), ProxyError> {
    if version == Version::HTTP_11 && req.uri().authority().is_none() {
        // Origin-form target, HTTP/1.1 on: the URI goes as it is; Host must be there.
        strip_hop_by_hop(req.headers_mut(), upgrade);
        if req.headers().contains_key(header::TE) {
            req.headers_mut().remove(header::TE);
        }
        if !req.headers().contains_key(header::HOST) {
            return Err(ProxyError::BadRequest("missing Host"));
        }
        *req.version_mut() = version;
        return Ok(());
    }
    let authority = authority(req).map(str::to_owned);
    let keep_te = version == Version::HTTP_2
        && req
            .headers()
            .get(header::TE)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"trailers"));
    strip_hop_by_hop(req.headers_mut(), upgrade);
    req.headers_mut().remove(header::TE);
    if keep_te {
        req.headers_mut()
            .insert(header::TE, HeaderValue::from_static("trailers"));
    }
    let path = req
        .uri()
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_owned();
    if version == Version::HTTP_2 {
        req.headers_mut().remove(header::HOST);
        let authority = authority.ok_or(ProxyError::BadRequest("missing Host or :authority"))?;
        *req.uri_mut() = Uri::builder()
            .scheme("http")
            .authority(authority.as_str())
            .path_and_query(path.as_str())
            .build()
            .map_err(|_| ProxyError::BadRequest("invalid authority or path"))?;
    } else {
        if let Some(a) = &authority
            && !req.headers().contains_key(header::HOST)
        {
            let v = HeaderValue::from_str(a)
                .map_err(|_| ProxyError::BadRequest("invalid authority"))?;
            req.headers_mut().insert(header::HOST, v);
        }
        *req.uri_mut() = path
            .parse()
            .map_err(|_| ProxyError::BadRequest("invalid path"))?;
    }
    *req.version_mut() = version;
    Ok(())
}

/// Prepares an upstream response for the downstream hop.
pub fn prepare_response(rsp: &mut Response<ProxyBody>, downstream: Version) {
    let upgrade = rsp.status() == http::StatusCode::SWITCHING_PROTOCOLS;
    strip_hop_by_hop(rsp.headers_mut(), upgrade);
    *rsp.version_mut() = downstream;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_hop_by_hop_and_connection_named() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-private"),
        );
        h.insert("x-private", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        h.insert("x-kept", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h, false);
        assert_eq!(h.len(), 1, "{h:?}");
        assert!(h.contains_key("x-kept"));
    }

    #[test]
    fn upgrade_keeps_upgrade_headers() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        strip_hop_by_hop(&mut h, true);
        assert_eq!(
            h.get(header::UPGRADE).map(|v| v.as_bytes()),
            Some(&b"websocket"[..])
        );
        assert_eq!(
            h.get(header::CONNECTION).map(|v| v.as_bytes()),
            Some(&b"upgrade"[..])
        );
    }

    #[test]
    fn request_id_is_a_uuid_v4_and_kept_if_present() {
        let mut h = HeaderMap::new();
        ensure_request_id(&mut h);
        let id = h
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        assert_eq!(id.len(), 36, "{id}");
        assert_eq!(&id[14..15], "4", "{id}");
        assert!(matches!(&id[19..20], "8" | "9" | "a" | "b"), "{id}");
        ensure_request_id(&mut h);
        assert_eq!(
            h.get("x-request-id").and_then(|v| v.to_str().ok()),
            Some(id.as_str())
        );
    }

    #[test]
    fn h1_to_h2_moves_host_into_authority() {
        let mut req = Request::builder()
            .uri("/p?q=1")
            .header(header::HOST, "orders.svc:8080")
            .header(header::TE, "trailers")
            .body(ProxyBody::empty())
            .expect("request");
        prepare_request(&mut req, Version::HTTP_2, false).expect("ok");
        assert_eq!(req.uri().to_string(), "http://orders.svc:8080/p?q=1");
        assert!(req.headers().get(header::HOST).is_none());
        assert_eq!(
            req.headers().get(header::TE).map(|v| v.as_bytes()),
            Some(&b"trailers"[..])
        );
    }

    #[test]
    fn h2_to_h1_sets_host() {
        let mut req = Request::builder()
            .uri("http://orders.svc/p")
            .version(Version::HTTP_2)
            .header(header::TE, "trailers")
            .body(ProxyBody::empty())
            .expect("request");
        prepare_request(&mut req, Version::HTTP_11, false).expect("ok");
        assert_eq!(req.uri().to_string(), "/p");
        assert_eq!(
            req.headers().get(header::HOST).map(|v| v.as_bytes()),
            Some(&b"orders.svc"[..])
        );
        assert!(req.headers().get(header::TE).is_none());
    }
}
