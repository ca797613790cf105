//! HTTP/1.1 wire format for the upstream client (RFC 9112): the request head with its body
//! framing, the response head parsed with httparse into `http` types without copying header
//! values, the response body framing rules, and the chunked-body decoder.

use bytes::{Buf, Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, StatusCode, Version, request, response};

use super::H1Error;

/// Longest response head accepted (status line and headers).
pub const MAX_HEAD_BYTES: usize = 64 * 1024;
/// Most response header fields accepted.
pub const MAX_HEADERS: usize = 128;
/// Longest chunk-size line (with extensions) and longest trailer section accepted.
const MAX_CHUNK_LINE: usize = 4096;
const MAX_TRAILER_BYTES: usize = 16 * 1024;

/// How the request body is delimited on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestFraming {
    /// No body (no framing header, or `content-length: 0` when the client sent one).
    None {
        zero_length: bool,
    },
    Length(u64),
    Chunked,
}

/// Writes the request line and header fields (the routed, hop-by-hop-stripped request),
/// replacing any framing headers with `framing`.
pub fn encode_head(parts: &request::Parts, framing: RequestFraming, out: &mut BytesMut) {
    let target = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    out.extend_from_slice(parts.method.as_str().as_bytes());
    out.extend_from_slice(b" ");
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in &parts.headers {
        if name == header::CONTENT_LENGTH || name == header::TRANSFER_ENCODING {
            continue;
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    match framing {
        RequestFraming::None { zero_length: false } => {}
        RequestFraming::None { zero_length: true } => {
            out.extend_from_slice(b"content-length: 0\r\n");
        }
        RequestFraming::Length(n) => {
            out.extend_from_slice(b"content-length: ");
            push_decimal(out, n);
            out.extend_from_slice(b"\r\n");
        }
        RequestFraming::Chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
    }
    out.extend_from_slice(b"\r\n");
}

/// Appends the decimal digits of `n` (no allocation).
pub(crate) fn push_decimal(out: &mut BytesMut, mut n: u64) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&buf[i..]);
}

/// The chunk-size line for a chunk of `len` bytes.
pub fn chunk_header(len: usize) -> Bytes {
    Bytes::from(format!("{len:x}\r\n"))
}

/// How the response body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseFraming {
    Empty,
    Length(u64),
    Chunked,
    /// Until the upstream closes (the connection cannot be reused).
    UntilClose,
}

#[derive(Debug)]
pub struct ResponseHead {
    pub parts: response::Parts,
    pub framing: ResponseFraming,
    /// The connection may carry another request once this response is read.
    pub keep_alive: bool,
}

/// Parses a complete response head from the front of `buf`, consuming it. `Ok(None)`: more
/// bytes are needed. Header values share the head's buffer instead of being copied.
pub fn parse_head(
    buf: &mut BytesMut,
    method: &Method,
    spans: &mut Vec<(usize, usize, usize, usize)>,
) -> Result<Option<ResponseHead>, H1Error> {
    let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut rsp = httparse::Response::new(&mut fields);
    let len = match rsp.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD_BYTES => {
            return Err(H1Error::Malformed("response head larger than 64 KiB"));
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(H1Error::Malformed("more than 128 response header fields"));
        }
        Err(_) => return Err(H1Error::Malformed("invalid response head")),
    };
    let status = rsp
        .code
        .and_then(|c| StatusCode::from_u16(c).ok())
        .ok_or(H1Error::Malformed("invalid status code"))?;
    let version = if rsp.version == Some(0) {
        Version::HTTP_10
    } else {
        Version::HTTP_11
    };
    let base = buf.as_ptr() as usize;
    spans.clear();
    for f in rsp.headers.iter() {
        let name = f.name.as_ptr() as usize - base;
        let value = f.value.as_ptr() as usize - base;
        spans.push((name, name + f.name.len(), value, value + f.value.len()));
    }
    let head = buf.split_to(len).freeze();
    let mut headers = HeaderMap::with_capacity(spans.len());
    for &(n0, n1, v0, v1) in spans.iter() {
        let name = HeaderName::from_bytes(&head[n0..n1])
            .map_err(|_| H1Error::Malformed("invalid header name"))?;
        let value = HeaderValue::from_maybe_shared(head.slice(v0..v1))
            .map_err(|_| H1Error::Malformed("invalid header value"))?;
        headers.append(name, value);
    }
    let (framing, delimited) = framing(method, status, &headers)?;
    let keep_alive = delimited && keeps_alive(version, &headers);
    let mut parts = response::Response::new(()).into_parts().0;
    parts.status = status;
    parts.version = version;
    parts.headers = headers;
    Ok(Some(ResponseHead {
        parts,
        framing,
        keep_alive,
    }))
}

/// RFC 9112 6.3: how long the body is, and whether its end is known without a close.
fn framing(
    method: &Method,
    status: StatusCode,
    headers: &HeaderMap,
) -> Result<(ResponseFraming, bool), H1Error> {
    if method == Method::HEAD
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        return Ok((ResponseFraming::Empty, true));
    }
    if headers.contains_key(header::TRANSFER_ENCODING) {
        let last_is_chunked = headers
            .get_all(header::TRANSFER_ENCODING)
            .iter()
            .next_back()
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.rsplit(',').next())
            .is_some_and(|c| c.trim().eq_ignore_ascii_case("chunked"));
        // With both headers the message is suspect: read it as chunked, never reuse the
        // connection (RFC 9112 6.3 item 3).
        let clean = !headers.contains_key(header::CONTENT_LENGTH);
        return Ok(if last_is_chunked {
            (ResponseFraming::Chunked, clean)
        } else {
            (ResponseFraming::UntilClose, false)
        });
    }
    let mut length = None;
    for v in headers.get_all(header::CONTENT_LENGTH) {
        for part in v
            .to_str()
            .map_err(|_| H1Error::Malformed("invalid content-length"))?
            .split(',')
        {
            let n: u64 = part
                .trim()
                .parse()
                .map_err(|_| H1Error::Malformed("invalid content-length"))?;
            if length.is_some_and(|l| l != n) {
                return Err(H1Error::Malformed("conflicting content-length values"));
            }
            length = Some(n);
        }
    }
    Ok(match length {
        Some(0) => (ResponseFraming::Empty, true),
        Some(n) => (ResponseFraming::Length(n), true),
        None => (ResponseFraming::UntilClose, false),
    })
}

fn keeps_alive(version: Version, headers: &HeaderMap) -> bool {
    let has = |token: &str| {
        headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    };
    if version == Version::HTTP_10 {
        has("keep-alive")
    } else {
        !has("close")
    }
}

/// One step of decoding a response body from the read buffer.
#[derive(Debug)]
pub enum Decoded {
    Data(Bytes),
    Trailers(HeaderMap),
    End,
    /// The buffer holds no complete piece: read more.
    NeedMore,
}

/// Where a chunked body decoder is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Chunked {
    Size,
    Data(u64),
    DataEnd,
    Trailers,
    Done,
}

impl Chunked {
    /// Decodes what `buf` allows, consuming it; data is returned without copying.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Decoded, H1Error> {
        loop {
            match *self {
                Chunked::Size => {
                    let Some(eol) = find_crlf(buf, MAX_CHUNK_LINE)? else {
                        return Ok(Decoded::NeedMore);
                    };
                    let line = &buf[..eol];
                    let digits = line
                        .iter()
                        .position(|b| *b == b';' || *b == b' ' || *b == b'\t')
                        .map_or(line, |i| &line[..i]);
                    if digits.is_empty() || digits.len() > 15 {
                        return Err(H1Error::Malformed("invalid chunk size"));
                    }
                    let mut size: u64 = 0;
                    for d in digits {
                        let v = (*d as char)
                            .to_digit(16)
                            .ok_or(H1Error::Malformed("invalid chunk size"))?;
                        size = size * 16 + u64::from(v);
                    }
                    buf.advance(eol + 2);
                    *self = if size == 0 {
                        Chunked::Trailers
                    } else {
                        Chunked::Data(size)
                    };
                }
                Chunked::Data(left) => {
                    if buf.is_empty() {
                        return Ok(Decoded::NeedMore);
                    }
                    let n = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
                    let data = buf.split_to(n).freeze();
                    let left = left - n as u64;
                    *self = if left == 0 {
                        Chunked::DataEnd
                    } else {
                        Chunked::Data(left)
                    };
                    return Ok(Decoded::Data(data));
                }
                Chunked::DataEnd => {
                    if buf.len() < 2 {
                        return Ok(Decoded::NeedMore);
                    }
                    if &buf[..2] != b"\r\n" {
                        return Err(H1Error::Malformed("chunk not followed by CRLF"));
                    }
                    buf.advance(2);
                    *self = Chunked::Size;
                }
                Chunked::Trailers => {
                    if buf.starts_with(b"\r\n") {
                        buf.advance(2);
                        *self = Chunked::Done;
                        return Ok(Decoded::End);
                    }
                    let Some(end) = find(buf, b"\r\n\r\n", MAX_TRAILER_BYTES)? else {
                        return Ok(Decoded::NeedMore);
                    };
                    let section = buf.split_to(end + 4);
                    *self = Chunked::Done;
                    return Ok(Decoded::Trailers(parse_trailers(&section)?));
                }
                Chunked::Done => return Ok(Decoded::End),
            }
        }
    }
}

fn find_crlf(buf: &[u8], max: usize) -> Result<Option<usize>, H1Error> {
    find(buf, b"\r\n", max)
}

fn find(buf: &[u8], needle: &[u8], max: usize) -> Result<Option<usize>, H1Error> {
    match buf.windows(needle.len()).position(|w| w == needle) {
        Some(i) => Ok(Some(i)),
        None if buf.len() > max => Err(H1Error::Malformed("chunk framing line too long")),
        None => Ok(None),
    }
}

fn parse_trailers(section: &[u8]) -> Result<HeaderMap, H1Error> {
    let mut fields = [httparse::EMPTY_HEADER; 32];
    let parsed = httparse::parse_headers(section, &mut fields)
        .map_err(|_| H1Error::Malformed("invalid trailer section"))?;
    let httparse::Status::Complete((_, fields)) = parsed else {
        return Err(H1Error::Malformed("incomplete trailer section"));
    };
    let mut map = HeaderMap::with_capacity(fields.len());
    for f in fields {
        let name = HeaderName::from_bytes(f.name.as_bytes())
            .map_err(|_| H1Error::Malformed("invalid trailer name"))?;
        let value = HeaderValue::from_bytes(f.value)
            .map_err(|_| H1Error::Malformed("invalid trailer value"))?;
        map.append(name, value);
    }
    Ok(map)
}

/// The trailer section of a chunked request body (last chunk included).
pub fn encode_trailers(trailers: &HeaderMap) -> Bytes {
    let mut out = BytesMut::with_capacity(64);
    out.extend_from_slice(b"0\r\n");
    for (name, value) in trailers {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.freeze()
}

#[cfg(test)]
mod tests;
