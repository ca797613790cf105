//! Protocol detection from a connection's first bytes: the HTTP/2 connection preface, an
//! HTTP/1.x request line, or anything else (opaque TCP). A client that sends nothing within
//! the timeout is a server-speaks-first protocol and is treated as opaque TCP.

use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt};

pub const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// Longest HTTP/1 request line we wait for before calling the stream opaque.
const MAX_REQUEST_LINE: usize = 16 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Detected {
    Http1,
    Http2,
    /// Not HTTP (or nothing arrived in time).
    Opaque,
    /// The client closed before sending anything.
    Closed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Is(Detected),
    NeedMore,
}

/// Classifies the bytes read so far.
fn classify(buf: &[u8]) -> Verdict {
    if buf.is_empty() {
        return Verdict::NeedMore;
    }
    let n = buf.len().min(H2_PREFACE.len());
    if buf[..n] == H2_PREFACE[..n] {
        return if n == H2_PREFACE.len() {
            Verdict::Is(Detected::Http2)
        } else {
            Verdict::NeedMore
        };
    }
    // HTTP/1: METHOD SP TARGET SP HTTP/1.x CRLF, method a token.
    let method_len = buf.iter().take_while(|b| is_token(**b)).count();
    if method_len == buf.len() {
        return if method_len > 32 {
            Verdict::Is(Detected::Opaque)
        } else {
            Verdict::NeedMore
        };
    }
    if method_len == 0 || buf[method_len] != b' ' {
        return Verdict::Is(Detected::Opaque);
    }
    let Some(eol) = buf.iter().position(|b| *b == b'\n') else {
        return if buf.len() >= MAX_REQUEST_LINE || buf.iter().any(|b| *b < 0x20 && *b != b'\r') {
            Verdict::Is(Detected::Opaque)
        } else {
            Verdict::NeedMore
        };
    };
    let line = buf[..eol].strip_suffix(b"\r").unwrap_or(&buf[..eol]);
    let is_h1 = line.len() > method_len + 10
        && line[line.len() - 9..].starts_with(b" HTTP/1.")
        && line[line.len() - 1].is_ascii_digit();
    Verdict::Is(if is_h1 {
        Detected::Http1
    } else {
        Detected::Opaque
    })
}

fn is_token(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Reads from `io` into `buf` until the protocol is known. With `opaque_after` set, silence
/// for that long means opaque TCP; without it (an HTTP-only listener) HTTP/1 is assumed once
/// the bytes cannot be the HTTP/2 preface, and hyper reports malformed requests.
pub async fn detect<I: AsyncRead + Unpin>(
    io: &mut I,
    buf: &mut BytesMut,
    opaque_after: Option<Duration>,
) -> std::io::Result<Detected> {
    let deadline = opaque_after.map(|d| tokio::time::Instant::now() + d);
    loop {
        match classify(buf) {
            Verdict::Is(Detected::Opaque) if opaque_after.is_none() => return Ok(Detected::Http1),
            Verdict::Is(d) => return Ok(d),
            Verdict::NeedMore if opaque_after.is_none() && !H2_PREFACE.starts_with(buf) => {
                return Ok(Detected::Http1);
            }
            Verdict::NeedMore => {}
        }
        // Small: an idle client that has sent nothing should cost little (a request head
        // that needs more gets it once it is HTTP).
        buf.reserve(1024);
        let read = io.read_buf(buf);
        let n = match deadline {
            Some(at) => match tokio::time::timeout_at(at, read).await {
                Ok(r) => r?,
                Err(_) => return Ok(Detected::Opaque),
            },
            None => read.await?,
        };
        if n == 0 {
            return Ok(if buf.is_empty() {
                Detected::Closed
            } else {
                Detected::Opaque
            });
        }
    }
}

/// GOAWAY (last stream 0, PROTOCOL_ERROR): the answer to a client whose first frame after
/// the preface is not SETTINGS.
pub const GOAWAY_PROTOCOL_ERROR: [u8; 17] = [0, 0, 8, 7, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
const SETTINGS_FRAME_TYPE: u8 = 0x4;

/// RFC 9113 3.4: after the preface the client's first frame must be SETTINGS. With the
/// preface in `buf`, reads (bounded by `within`) until the next frame header is there and
/// says whether it is SETTINGS. `Ok(false)` also for a client that goes silent or closes.
pub async fn settings_first<I: AsyncRead + Unpin>(
    io: &mut I,
    buf: &mut BytesMut,
    within: Duration,
) -> std::io::Result<bool> {
    let header_end = H2_PREFACE.len() + 9;
    let read_header = async {
        while buf.len() < header_end {
            buf.reserve(4096);
            if io.read_buf(buf).await? == 0 {
                return Ok(false);
            }
        }
        Ok(buf[H2_PREFACE.len() + 3] == SETTINGS_FRAME_TYPE)
    };
    tokio::time::timeout(within, read_header)
        .await
        .unwrap_or(Ok(false))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[test]
    fn classifies_first_bytes() {
        assert_eq!(classify(H2_PREFACE), Verdict::Is(Detected::Http2));
        assert_eq!(classify(&H2_PREFACE[..10]), Verdict::NeedMore);
        assert_eq!(
            classify(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"),
            Verdict::Is(Detected::Http1)
        );
        assert_eq!(
            classify(b"POST /x?y=1 HTTP/1.0\n"),
            Verdict::Is(Detected::Http1)
        );
        assert_eq!(classify(b"GET /very/long"), Verdict::NeedMore);
        assert_eq!(
            classify(b"\x16\x03\x01\x02\x00"),
            Verdict::Is(Detected::Opaque)
        );
        assert_eq!(
            classify(b"HELO example.com\r\n"),
            Verdict::Is(Detected::Opaque)
        );
        assert_eq!(
            classify(b"*1\r\n$4\r\nPING\r\n"),
            Verdict::Is(Detected::Opaque)
        );
        assert_eq!(classify(b"PRX"), Verdict::NeedMore);
    }

    #[tokio::test(start_paused = true)]
    async fn silent_client_is_opaque_after_timeout() {
        let (_client, mut server) = tokio::io::duplex(64);
        let mut buf = BytesMut::new();
        let d = detect(&mut server, &mut buf, Some(Duration::from_secs(1)))
            .await
            .expect("io");
        assert_eq!(d, Detected::Opaque);
    }

    #[tokio::test]
    async fn split_preface_is_http2() {
        let (mut client, mut server) = tokio::io::duplex(64);
        let task = tokio::spawn(async move {
            client.write_all(&H2_PREFACE[..5]).await.expect("w");
            tokio::task::yield_now().await;
            client.write_all(&H2_PREFACE[5..]).await.expect("w");
            client
        });
        let mut buf = BytesMut::new();
        let d = detect(&mut server, &mut buf, Some(Duration::from_secs(5)))
            .await
            .expect("io");
        assert_eq!(d, Detected::Http2);
        assert_eq!(&buf[..], H2_PREFACE);
        drop(task.await);
    }
}
