//! HTTP/1.1 wire format for downstream connections (RFC 9112): the request head parsed with
//! httparse into `http` types without copying header values, the checks that decide whether
//! the fast path may serve it, and the response head with its framing.

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, StatusCode, Uri, Version, request};

/// Longest request head accepted (request line and headers).
pub const MAX_HEAD_BYTES: usize = 64 * 1024;
/// Most request header fields accepted.
pub const MAX_HEADERS: usize = 128;
/// Largest request body the fast path reads whole before routing; larger ones stream
/// through hyper.
pub const MAX_INLINE_BODY: u64 = 64 * 1024;

/// What the front of the read buffer holds. (A transient value, moved once: the size of the
/// `Simple` variant costs nothing worth a box.)
#[derive(Debug)]
#[allow(clippy::large_enum_variant)]
pub enum Parsed {
    /// A request the fast path serves: its head length and body length (bytes after it).
    Simple {
        parts: request::Parts,
        head_len: usize,
        body_len: usize,
        close: bool,
    },
    /// Valid HTTP, but with something the fast path leaves to hyper (a streamed or chunked
    /// body, an upgrade, `Expect`, HTTP/1.0): hand the connection over, bytes untouched.
    HandOver,
    /// More bytes needed.
    Partial,
    /// Not a valid request: answer this status and close.
    Invalid(StatusCode),
}

/// Parses the request head at the front of `buf` without consuming anything.
pub fn parse_request(buf: &BytesMut, spans: &mut Vec<(usize, usize, usize, usize)>) -> Parsed {
    let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut fields);
    let head_len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD_BYTES => {
            return Parsed::Invalid(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
        }
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        Err(httparse::Error::TooManyHeaders) => {
            return Parsed::Invalid(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
        }
        Err(_) => return Parsed::Invalid(StatusCode::BAD_REQUEST),
    };
    if req.version != Some(1) {
        return Parsed::HandOver;
    }
    let (Some(method), Some(path)) = (req.method, req.path) else {
        return Parsed::Invalid(StatusCode::BAD_REQUEST);
    };
    let Ok(method) = Method::from_bytes(method.as_bytes()) else {
        return Parsed::Invalid(StatusCode::BAD_REQUEST);
    };
    if method == Method::CONNECT {
        return Parsed::HandOver;
    }
    let Ok(uri) = Uri::try_from(path) else {
        return Parsed::Invalid(StatusCode::BAD_REQUEST);
    };
    let base = buf.as_ptr() as usize;
    spans.clear();
    let mut length: Option<u64> = None;
    let mut close = false;
    for f in req.headers.iter() {
        let name = f.name.as_bytes();
        if name.eq_ignore_ascii_case(b"transfer-encoding")
            || name.eq_ignore_ascii_case(b"expect")
            || name.eq_ignore_ascii_case(b"upgrade")
        {
            return Parsed::HandOver;
        }
        if name.eq_ignore_ascii_case(b"content-length") {
            match parse_length(f.value) {
                Some(n) if length.is_none_or(|l| l == n) => length = Some(n),
                _ => return Parsed::Invalid(StatusCode::BAD_REQUEST),
            }
        }
        if name.eq_ignore_ascii_case(b"connection") && has_token(f.value, b"close") {
            close = true;
        }
        let n = f.name.as_ptr() as usize - base;
        let v = f.value.as_ptr() as usize - base;
        spans.push((n, n + f.name.len(), v, v + f.value.len()));
    }
    let body_len = match length {
        Some(n) if n > MAX_INLINE_BODY => return Parsed::HandOver,
        Some(n) => n as usize,
        None => 0,
    };
    let mut parts = Request::new(()).into_parts().0;
    parts.method = method;
    parts.uri = uri;
    parts.version = Version::HTTP_11;
    Parsed::Simple {
        parts,
        head_len,
        body_len,
        close,
    }
}

/// Builds the header map from the spans of a parsed head, sharing `head`'s bytes.
pub fn headers(head: &Bytes, spans: &[(usize, usize, usize, usize)]) -> Option<HeaderMap> {
    let mut map = HeaderMap::with_capacity(spans.len());
    for &(n0, n1, v0, v1) in spans {
        let name = HeaderName::from_bytes(&head[n0..n1]).ok()?;
        let value = HeaderValue::from_maybe_shared(head.slice(v0..v1)).ok()?;
        map.append(name, value);
    }
    Some(map)
}

fn parse_length(v: &[u8]) -> Option<u64> {
    if v.is_empty() || v.len() > 19 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(v).ok()?.parse().ok()
}

fn has_token(v: &[u8], token: &[u8]) -> bool {
    v.split(|b| *b == b',')
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token))
}

/// How the response body goes on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body bytes (HEAD, 1xx, 204, 304): header fields as the upstream gave them.
    None,
    Length(u64),
    Chunked,
}

/// Writes the status line and header fields, with `framing`'s header and, when the
/// connection ends after this response, `connection: close`.
pub fn encode_response_head(
    status: StatusCode,
    headers: &HeaderMap,
    framing: Framing,
    close: bool,
    out: &mut BytesMut,
) {
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.extend_from_slice(b" ");
    out.extend_from_slice(status.canonical_reason().unwrap_or("Unknown").as_bytes());
    out.extend_from_slice(b"\r\n");
    for (name, value) in headers {
        let framing_header = name == header::CONTENT_LENGTH || name == header::TRANSFER_ENCODING;
        if (framing_header && framing != Framing::None) || name == header::CONNECTION {
            continue;
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    match framing {
        Framing::None => {}
        Framing::Length(n) => {
            out.extend_from_slice(b"content-length: ");
            crate::upstream::h1::codec::push_decimal(out, n);
            out.extend_from_slice(b"\r\n");
        }
        Framing::Chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
    }
    if close {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// A bare response the fast path answers itself (a malformed request), then closes.
pub fn error_response(status: StatusCode) -> Bytes {
    let reason = status.canonical_reason().unwrap_or("Error");
    Bytes::from(format!(
        "HTTP/1.1 {} {reason}\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{reason}\n",
        status.as_str(),
        reason.len() + 1
    ))
}

#[cfg(test)]
mod tests;
