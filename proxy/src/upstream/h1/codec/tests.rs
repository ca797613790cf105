use bytes::BytesMut;
use http::{Method, Request, StatusCode};
use proptest::prelude::*;

use super::*;

fn head(text: &str, method: &Method) -> Result<Option<ResponseHead>, H1Error> {
    let mut buf = BytesMut::from(text.as_bytes());
    parse_head(&mut buf, method, &mut Vec::new())
}

#[test]
fn request_head_carries_our_framing_only() {
    let req = Request::post("/a?b=1")
        .header("host", "orders")
        .header("content-length", "99")
        .header("transfer-encoding", "chunked")
        .header("x-a", "1")
        .body(())
        .unwrap();
    let (parts, ()) = req.into_parts();
    let mut out = BytesMut::new();
    encode_head(&parts, RequestFraming::Length(5), &mut out);
    assert_eq!(
        &out[..],
        b"POST /a?b=1 HTTP/1.1\r\nhost: orders\r\nx-a: 1\r\ncontent-length: 5\r\n\r\n"
    );
    out.clear();
    encode_head(&parts, RequestFraming::Chunked, &mut out);
    assert!(out.ends_with(b"x-a: 1\r\ntransfer-encoding: chunked\r\n\r\n"));
    out.clear();
    encode_head(&parts, RequestFraming::None { zero_length: true }, &mut out);
    assert!(out.ends_with(b"content-length: 0\r\n\r\n"));
}

#[test]
fn response_framing_per_rfc9112() {
    let get = Method::GET;
    let h = head("HTTP/1.1 200 OK\r\ncontent-length: 12\r\n\r\nhello", &get)
        .unwrap()
        .unwrap();
    assert_eq!(h.parts.status, StatusCode::OK);
    assert_eq!(h.framing, ResponseFraming::Length(12));
    assert!(h.keep_alive);
    assert_eq!(h.parts.headers["content-length"], "12");

    let h = head(
        "HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, chunked\r\n\r\n",
        &get,
    )
    .unwrap()
    .unwrap();
    assert_eq!(h.framing, ResponseFraming::Chunked);

    let h = head("HTTP/1.1 200 OK\r\n\r\n", &get).unwrap().unwrap();
    assert_eq!(h.framing, ResponseFraming::UntilClose);
    assert!(!h.keep_alive, "a close-delimited body ends the connection");

    let h = head(
        "HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n",
        &Method::HEAD,
    )
    .unwrap()
    .unwrap();
    assert_eq!(h.framing, ResponseFraming::Empty, "HEAD has no body");
    for status in ["204 No Content", "304 Not Modified"] {
        let h = head(&format!("HTTP/1.1 {status}\r\n\r\n"), &get)
            .unwrap()
            .unwrap();
        assert_eq!(h.framing, ResponseFraming::Empty);
        assert!(h.keep_alive);
    }

    let h = head(
        "HTTP/1.1 200 OK\r\ncontent-length: 1\r\nconnection: close\r\n\r\n",
        &get,
    )
    .unwrap()
    .unwrap();
    assert!(!h.keep_alive);
    let h = head("HTTP/1.0 200 OK\r\ncontent-length: 1\r\n\r\n", &get)
        .unwrap()
        .unwrap();
    assert!(!h.keep_alive, "HTTP/1.0 closes unless it says keep-alive");
    let h = head(
        "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ncontent-length: 3\r\n\r\n",
        &get,
    )
    .unwrap()
    .unwrap();
    assert_eq!(h.framing, ResponseFraming::Chunked);
    assert!(!h.keep_alive, "both framing headers: never reuse");
}

#[test]
fn bad_response_heads_are_errors_not_panics() {
    let get = Method::GET;
    assert!(
        head("HTTP/1.1 200 OK\r\ncontent-len", &get)
            .unwrap()
            .is_none()
    );
    for bad in [
        "HTTP/1.1 200 OK\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\n",
        "HTTP/1.1 200 OK\r\ncontent-length: -1\r\n\r\n",
        "HTTP/1.1 2000 OK\r\n\r\n",
        "HTTP/9.9 200 OK\r\n\r\n",
        "garbage\r\n\r\n",
    ] {
        assert!(head(bad, &get).is_err(), "{bad:?}");
    }
    let huge = format!("HTTP/1.1 200 OK\r\nx: {}", "a".repeat(70 * 1024));
    assert!(head(&huge, &get).is_err());
    let many: String = (0..200).map(|i| format!("x-{i}: 1\r\n")).collect();
    assert!(head(&format!("HTTP/1.1 200 OK\r\n{many}\r\n"), &get).is_err());
}

fn decode_all(input: &[u8], split: usize) -> Result<(Vec<u8>, Option<HeaderMap>), H1Error> {
    let mut dec = Chunked::Size;
    let mut buf = BytesMut::new();
    let mut body = Vec::new();
    let mut trailers = None;
    for piece in input.chunks(split.max(1)) {
        buf.extend_from_slice(piece);
        loop {
            match dec.decode(&mut buf)? {
                Decoded::Data(d) => body.extend_from_slice(&d),
                Decoded::Trailers(t) => trailers = Some(t),
                Decoded::End => return Ok((body, trailers)),
                Decoded::NeedMore => break,
            }
        }
    }
    Err(H1Error::Malformed("incomplete"))
}

#[test]
fn chunked_bodies_with_extensions_and_trailers_in_any_split() {
    let wire = b"5;ext=1\r\nhello\r\nA\r\n, chunked!\r\n0\r\nx-sum: 7\r\n\r\n";
    for split in 1..wire.len() {
        let (body, trailers) = decode_all(wire, split).unwrap();
        assert_eq!(body, b"hello, chunked!");
        assert_eq!(trailers.unwrap()["x-sum"], "7");
    }
    let (body, trailers) = decode_all(b"3\r\nabc\r\n0\r\n\r\n", 2).unwrap();
    assert_eq!((body.as_slice(), trailers), (&b"abc"[..], None));
    for bad in [&b"zz\r\n"[..], b"3\r\nabcX\r\n", b"ffffffffffffffffff\r\n"] {
        assert!(decode_all(bad, 64).is_err(), "{bad:?}");
    }
}

proptest! {
    /// Arbitrary bytes from an upstream: parsing a head and decoding a chunked body return
    /// errors or results, never panic.
    #[test]
    fn hostile_upstream_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let mut buf = BytesMut::from(&bytes[..]);
        let _ = parse_head(&mut buf, &Method::GET, &mut Vec::new());
        let _ = decode_all(&bytes, 7);
    }
}
