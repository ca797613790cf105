//! Trace context on the wire: W3C `traceparent`/`tracestate` (Trace Context Level 1) and B3
//! (single `b3` header and the multi-header `x-b3-*` form), read from a request and written
//! to the request sent upstream. Malformed headers are ignored (a new trace starts), never
//! an error.

use http::{HeaderMap, HeaderValue};

pub const TRACEPARENT: &str = "traceparent";
pub const TRACESTATE: &str = "tracestate";
pub const B3: &str = "b3";
pub const B3_TRACE_ID: &str = "x-b3-traceid";
pub const B3_SPAN_ID: &str = "x-b3-spanid";
pub const B3_PARENT_SPAN_ID: &str = "x-b3-parentspanid";
pub const B3_SAMPLED: &str = "x-b3-sampled";
pub const B3_FLAGS: &str = "x-b3-flags";

/// Which format the caller used (the upstream gets the same, plus W3C).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    W3c,
    B3Single,
    B3Multi,
}

/// The caller's trace context.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Incoming {
    pub trace_id: u128,
    pub span_id: u64,
    /// `None`: the caller deferred the decision (B3 without a sampling state).
    pub sampled: Option<bool>,
    /// B3 debug flag: sample whatever the ratio.
    pub debug: bool,
    pub tracestate: Option<HeaderValue>,
    pub format: Format,
}

fn hex_u128(s: &str) -> Option<u128> {
    if s.len() != 32 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u128::from_str_radix(s, 16).ok().filter(|v| *v != 0)
}

/// B3 trace ids may be 64-bit (16 hex digits); they are widened with zeros in front.
fn b3_trace_id(s: &str) -> Option<u128> {
    match s.len() {
        16 => hex_u64(s).map(u128::from),
        32 => hex_u128(s),
        _ => None,
    }
}

fn hex_u64(s: &str) -> Option<u64> {
    if s.len() != 16 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u64::from_str_radix(s, 16).ok().filter(|v| *v != 0)
}

fn header<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name)?.to_str().ok().map(str::trim)
}

/// `00-<32 hex trace id>-<16 hex parent id>-<2 hex flags>`; later versions are read by
/// their first four fields, as the spec asks.
fn traceparent(v: &str) -> Option<(u128, u64, bool)> {
    let mut parts = v.split('-');
    let version = parts.next()?;
    let trace = parts.next()?;
    let span = parts.next()?;
    let flags = parts.next()?;
    if version.len() != 2 || version.eq_ignore_ascii_case("ff") || flags.len() != 2 {
        return None;
    }
    if version == "00" && (parts.next().is_some() || v.len() != 55) {
        return None;
    }
    let flags = u8::from_str_radix(flags, 16).ok()?;
    Some((hex_u128(trace)?, hex_u64(span)?, flags & 1 == 1))
}

/// Reads the caller's context: `traceparent` first, then `b3`, then `x-b3-*`.
pub fn extract(h: &HeaderMap) -> Option<Incoming> {
    if let Some((trace_id, span_id, sampled)) = header(h, TRACEPARENT).and_then(traceparent) {
        return Some(Incoming {
            trace_id,
            span_id,
            sampled: Some(sampled),
            debug: false,
            tracestate: h.get(TRACESTATE).cloned(),
            format: Format::W3c,
        });
    }
    if let Some(v) = header(h, B3) {
        // {TraceId}-{SpanId}-{SamplingState}-{ParentSpanId}, or only a sampling state.
        let mut parts = v.split('-');
        let (trace, span) = (parts.next()?, parts.next()?);
        let state = parts.next();
        return Some(Incoming {
            trace_id: b3_trace_id(trace)?,
            span_id: hex_u64(span)?,
            sampled: match state {
                Some("1" | "d") => Some(true),
                Some("0") => Some(false),
                _ => None,
            },
            debug: state == Some("d"),
            tracestate: None,
            format: Format::B3Single,
        });
    }
    let trace_id = header(h, B3_TRACE_ID).and_then(b3_trace_id)?;
    let span_id = header(h, B3_SPAN_ID).and_then(hex_u64)?;
    let debug = header(h, B3_FLAGS) == Some("1");
    Some(Incoming {
        trace_id,
        span_id,
        sampled: match header(h, B3_SAMPLED) {
            _ if debug => Some(true),
            Some("1" | "true") => Some(true),
            Some("0" | "false") => Some(false),
            _ => None,
        },
        debug,
        tracestate: None,
        format: Format::B3Multi,
    })
}

/// The context this hop sends upstream: the trace, this hop's span as the parent, and the
/// sampling decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outgoing {
    pub trace_id: u128,
    pub span_id: u64,
    pub parent_span_id: Option<u64>,
    pub sampled: bool,
}

fn value(s: String) -> HeaderValue {
    // Hex digits and dashes only: always a valid header value.
    HeaderValue::try_from(s).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// Writes `out` into the request for the upstream: always `traceparent` (and `tracestate`
/// as received), and B3 too when the caller spoke B3. Any earlier context headers are
/// replaced.
pub fn inject(
    h: &mut HeaderMap,
    out: &Outgoing,
    format: Option<Format>,
    tracestate: Option<&HeaderValue>,
) {
    let flags = if out.sampled { "01" } else { "00" };
    h.insert(
        TRACEPARENT,
        value(format!(
            "00-{:032x}-{:016x}-{flags}",
            out.trace_id, out.span_id
        )),
    );
    match tracestate {
        Some(ts) => {
            h.insert(TRACESTATE, ts.clone());
        }
        None => {
            h.remove(TRACESTATE);
        }
    }
    for name in [
        B3,
        B3_TRACE_ID,
        B3_SPAN_ID,
        B3_PARENT_SPAN_ID,
        B3_SAMPLED,
        B3_FLAGS,
    ] {
        h.remove(name);
    }
    let sampled = if out.sampled { "1" } else { "0" };
    match format {
        Some(Format::B3Single) => {
            let mut v = format!("{:032x}-{:016x}-{sampled}", out.trace_id, out.span_id);
            if let Some(p) = out.parent_span_id {
                v.push_str(&format!("-{p:016x}"));
            }
            h.insert(B3, value(v));
        }
        Some(Format::B3Multi) => {
            h.insert(B3_TRACE_ID, value(format!("{:032x}", out.trace_id)));
            h.insert(B3_SPAN_ID, value(format!("{:016x}", out.span_id)));
            if let Some(p) = out.parent_span_id {
                h.insert(B3_PARENT_SPAN_ID, value(format!("{p:016x}")));
            }
            h.insert(
                B3_SAMPLED,
                HeaderValue::from_static(if out.sampled { "1" } else { "0" }),
            );
        }
        Some(Format::W3c) | None => {}
    }
}

/// A random non-zero id.
pub fn new_span_id() -> u64 {
    loop {
        let v = fastrand::u64(..);
        if v != 0 {
            return v;
        }
    }
}

pub fn new_trace_id() -> u128 {
    loop {
        let v = fastrand::u128(..);
        if v != 0 {
            return v;
        }
    }
}

/// The ratio decision for a new trace, from the trace id alone (the low 64 bits, as
/// OpenTelemetry's TraceIdRatioBased), so every proxy that sees the trace decides alike.
pub fn ratio_sampled(trace_id: u128, ratio: f64) -> bool {
    if ratio >= 1.0 {
        return true;
    }
    if ratio <= 0.0 {
        return false;
    }
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss
    )]
    let bound = (ratio * u64::MAX as f64) as u64;
    #[allow(clippy::cast_possible_truncation)]
    let low = trace_id as u64;
    low < bound
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn traceparent_is_read_and_bad_ones_ignored() {
        let h = headers(&[
            (
                TRACEPARENT,
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            ),
            (TRACESTATE, "congo=t61rcWkgMzE"),
        ]);
        let c = extract(&h).expect("context");
        assert_eq!(c.trace_id, 0x4bf9_2f35_77b3_4da6_a3ce_929d_0e0e_4736);
        assert_eq!(c.span_id, 0x00f0_67aa_0ba9_02b7);
        assert_eq!(c.sampled, Some(true));
        assert_eq!(c.format, Format::W3c);
        assert_eq!(
            c.tracestate.as_ref().map(|v| v.as_bytes()),
            Some(&b"congo=t61rcWkgMzE"[..])
        );
        for bad in [
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-xyz92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "garbage",
        ] {
            let h = headers(&[(TRACEPARENT, bad)]);
            assert_eq!(extract(&h), None, "{bad}");
        }
        // A later version with more fields is read by its first four.
        let h = headers(&[(
            TRACEPARENT,
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00-what",
        )]);
        assert_eq!(extract(&h).map(|c| c.sampled), Some(Some(false)));
    }

    #[test]
    fn b3_single_and_multi_are_read() {
        let h = headers(&[(
            B3,
            "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1-05e3ac9a4f6e3b90",
        )]);
        let c = extract(&h).expect("b3");
        assert_eq!(c.trace_id, 0x80f1_98ee_5634_3ba8_64fe_8b2a_57d3_eff7);
        assert_eq!(c.span_id, 0xe457_b5a2_e4d8_6bd1);
        assert_eq!((c.sampled, c.format), (Some(true), Format::B3Single));
        let h = headers(&[(B3, "64fe8b2a57d3eff7-e457b5a2e4d86bd1-d")]);
        let c = extract(&h).expect("b3 64-bit");
        assert_eq!(c.trace_id, 0x64fe_8b2a_57d3_eff7);
        assert!(c.debug);
        let h = headers(&[
            (B3_TRACE_ID, "463ac35c9f6413ad48485a3953bb6124"),
            (B3_SPAN_ID, "a2fb4a1d1a96d312"),
            (B3_SAMPLED, "0"),
        ]);
        let c = extract(&h).expect("multi");
        assert_eq!((c.sampled, c.format), (Some(false), Format::B3Multi));
        let h = headers(&[
            (B3_TRACE_ID, "463ac35c9f6413ad48485a3953bb6124"),
            (B3_SPAN_ID, "a2fb4a1d1a96d312"),
        ]);
        assert_eq!(extract(&h).map(|c| c.sampled), Some(None));
        assert_eq!(extract(&headers(&[(B3, "0")])), None);
        assert_eq!(extract(&headers(&[])), None);
    }

    #[test]
    fn inject_writes_w3c_and_the_callers_format() {
        let out = Outgoing {
            trace_id: 0xabc,
            span_id: 0x1234,
            parent_span_id: Some(0x99),
            sampled: true,
        };
        let mut h = headers(&[(B3, "stale"), (TRACESTATE, "old=1")]);
        inject(&mut h, &out, Some(Format::B3Multi), None);
        assert_eq!(
            h.get(TRACEPARENT).map(HeaderValue::as_bytes),
            Some(&b"00-00000000000000000000000000000abc-0000000000001234-01"[..])
        );
        assert!(h.get(B3).is_none() && h.get(TRACESTATE).is_none());
        assert_eq!(
            h.get(B3_SPAN_ID).map(HeaderValue::as_bytes),
            Some(&b"0000000000001234"[..])
        );
        assert_eq!(
            h.get(B3_PARENT_SPAN_ID).map(HeaderValue::as_bytes),
            Some(&b"0000000000000099"[..])
        );
        assert_eq!(
            h.get(B3_SAMPLED).map(HeaderValue::as_bytes),
            Some(&b"1"[..])
        );
        // Round trip.
        let c = extract(&h).expect("context");
        assert_eq!(
            (c.trace_id, c.span_id, c.sampled),
            (0xabc, 0x1234, Some(true))
        );
        let mut h = HeaderMap::new();
        inject(&mut h, &out, Some(Format::B3Single), None);
        let c = extract(&{
            let mut only_b3 = HeaderMap::new();
            only_b3.insert(B3, h[B3].clone());
            only_b3
        })
        .expect("b3 round trip");
        assert_eq!((c.trace_id, c.span_id), (0xabc, 0x1234));
    }

    #[test]
    fn the_ratio_decides_by_trace_id() {
        assert!(ratio_sampled(5, 1.0));
        assert!(!ratio_sampled(5, 0.0));
        let sampled = (0..10_000u128)
            .filter(|i| ratio_sampled(u128::from(fastrand::u64(..)) | (i << 64), 0.1))
            .count();
        assert!((800..1200).contains(&sampled), "{sampled}");
        let id = new_trace_id();
        assert_eq!(ratio_sampled(id, 0.5), ratio_sampled(id, 0.5));
    }
}
