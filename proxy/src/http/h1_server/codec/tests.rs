use bytes::BytesMut;
use http::StatusCode;
use proptest::prelude::*;

use super::*;

fn parse(text: &[u8]) -> Parsed {
    parse_request(&BytesMut::from(text), &mut Vec::new())
}

#[test]
fn simple_requests_and_what_goes_to_hyper() {
    match parse(b"GET /a?b HTTP/1.1\r\nHost: x\r\n\r\nnext") {
        Parsed::Simple {
            parts,
            head_len,
            body_len,
            close,
        } => {
            assert_eq!(parts.uri.path_and_query().unwrap().as_str(), "/a?b");
            assert_eq!((head_len, body_len, close), (30, 0, false));
        }
        other => panic!("{other:?}"),
    }
    match parse(b"POST / HTTP/1.1\r\nContent-Length: 3\r\nConnection: keep-alive, close\r\n\r\n") {
        Parsed::Simple {
            body_len, close, ..
        } => assert_eq!((body_len, close), (3, true)),
        other => panic!("{other:?}"),
    }
    for handed in [
        &b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"[..],
        b"GET / HTTP/1.1\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n",
        b"PUT / HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n",
        b"GET / HTTP/1.0\r\n\r\n",
        b"CONNECT a:443 HTTP/1.1\r\n\r\n",
        b"POST / HTTP/1.1\r\nContent-Length: 70000\r\n\r\n",
    ] {
        assert!(
            matches!(parse(handed), Parsed::HandOver),
            "{}",
            String::from_utf8_lossy(handed)
        );
    }
    assert!(matches!(parse(b"GET / HTTP/1.1\r\nHo"), Parsed::Partial));
}

#[test]
fn smuggling_shapes_and_garbage_are_rejected() {
    for bad in [
        &b"POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n"[..],
        b"POST / HTTP/1.1\r\nContent-Length: +3\r\n\r\n",
        b"POST / HTTP/1.1\r\nContent-Length: 3x\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost orders\r\n\r\n",
        b"\0\0\0\0\r\n\r\n",
        b"GET /\x01 HTTP/1.1\r\n\r\n",
    ] {
        assert!(
            matches!(parse(bad), Parsed::Invalid(StatusCode::BAD_REQUEST)),
            "{:?}",
            String::from_utf8_lossy(bad)
        );
    }
    let many: String = (0..200).map(|i| format!("x-{i}: 1\r\n")).collect();
    assert!(matches!(
        parse(format!("GET / HTTP/1.1\r\n{many}\r\n").as_bytes()),
        Parsed::Invalid(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE)
    ));
}

#[test]
fn response_heads_carry_one_framing_header() {
    let mut h = HeaderMap::new();
    h.insert("content-length", HeaderValue::from_static("99"));
    h.insert("x-a", HeaderValue::from_static("1"));
    let mut out = BytesMut::new();
    encode_response_head(StatusCode::OK, &h, Framing::Length(5), true, &mut out);
    assert_eq!(
        &out[..],
        b"HTTP/1.1 200 OK\r\nx-a: 1\r\ncontent-length: 5\r\nconnection: close\r\n\r\n"
    );
    out.clear();
    encode_response_head(StatusCode::OK, &h, Framing::None, false, &mut out);
    assert!(
        out.starts_with(b"HTTP/1.1 200 OK\r\ncontent-length: 99\r\n"),
        "HEAD keeps the length"
    );
}

proptest! {
    #[test]
    fn hostile_request_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = parse(&bytes);
    }
}
