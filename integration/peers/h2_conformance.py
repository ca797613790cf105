#!/usr/bin/env python3
"""HTTP/2 conformance checker (h2c with prior knowledge), organised by RFC section.

An h2spec-style suite written for Remora.  Every case opens its own TCP
connection, exchanges the preface and SETTINGS as needed, sends hand-made
frames (hyperframe for well-formed frames, ``raw()`` for malformed ones, hpack
or hand-written bytes for field blocks) and checks the server's reaction
against RFC 9113 (HTTP/2) and RFC 7541 (HPACK).

What the expectations accept (like h2spec, except that a GOAWAY with the wrong code
fails even when a close follows it, where h2spec would pass it):
* connection error X: a GOAWAY with code X, or the connection closing (a GOAWAY
  followed by a close can be lost to a TCP reset before we read it);
  ``--require-goaway`` makes a bare close fail.
* stream error X: RST_STREAM X on that stream, or a connection error X (RFC 9113
  5.4 lets an endpoint escalate).  Whichever of RST_STREAM/GOAWAY came first
  decides; a RST_STREAM NO_ERROR/CANCEL that only ends a completed response does not
  count.  For a malformed request the server may answer (e.g. 400) first.
* ignored / answered: the connection still answers a PING, and the request
  gets a complete response.  A 400 to a valid request fails (it was judged
  malformed).
Cases that send the rest of a request after its HEADERS (trailers, late DATA)
pass as "inconclusive" when the server had already answered and reset the
stream: RFC 9113 5.1 lets it bound how long it ignores frames after that.
``--strict`` adds cases for RFC requirements that go beyond h2spec and that
haproxy 2.6 does not meet (marked "strict:"), and takes the exact error code
where a lenient alternative is accepted by default.
Every wait is bounded (--timeout, 3 s by default); no case ever sleeps.

Usage: h2_conformance.py --target HOST:PORT [--authority NAME] [--path /]
       [--sections 4.2,5.1,6.5.3/2] [--strict] [--require-goaway] [--verbose] [--list]
Prints one JSON line per case, then "N passed, M failed"; exits 0 iff all pass.
"""
import argparse
import json
import os
import select
import socket
import struct
import sys
import time

import hpack
from hyperframe.frame import (ContinuationFrame, DataFrame, Frame, GoAwayFrame, HeadersFrame,
                              PingFrame, PriorityFrame, RstStreamFrame, SettingsFrame)

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
ERRORS = ["NO_ERROR", "PROTOCOL_ERROR", "INTERNAL_ERROR", "FLOW_CONTROL_ERROR",
          "SETTINGS_TIMEOUT", "STREAM_CLOSED", "FRAME_SIZE_ERROR", "REFUSED_STREAM", "CANCEL",
          "COMPRESSION_ERROR", "CONNECT_ERROR", "ENHANCE_YOUR_CALM", "INADEQUATE_SECURITY",
          "HTTP_1_1_REQUIRED"]
CODE = {name: i for i, name in enumerate(ERRORS)}
PROTO, FRAME_SIZE, FLOW, CLOSED, COMPRESSION = (
    "PROTOCOL_ERROR", "FRAME_SIZE_ERROR", "FLOW_CONTROL_ERROR", "STREAM_CLOSED", "COMPRESSION_ERROR")
DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE, \
    CONTINUATION = range(10)                                                  # RFC 9113 6.x
END_STREAM, ACK, END_HEADERS, PADDED = 0x1, 0x1, 0x4, 0x8
TABLE_SIZE, ENABLE_PUSH, MAX_STREAMS, INITIAL_WINDOW, MAX_FRAME, MAX_HEADER_LIST = range(1, 7)
MAX_WINDOW = 2 ** 31 - 1
FLAG_ABBR = {"END_STREAM": "ES", "END_HEADERS": "EH", "ACK": "ACK", "PADDED": "PAD",
             "PRIORITY": "PRIO"}
TITLES = {
    "3.4": "HTTP/2 Connection Preface", "4.1": "Frame Format", "4.2": "Frame Size",
    "4.3": "Field Section Compression and Decompression", "5.1": "Stream States",
    "5.1.1": "Stream Identifiers", "5.1.2": "Stream Concurrency", "5.3": "Prioritization",
    "5.3.1": "Background on Priority in RFC 7540", "5.4.1": "Connection Error Handling",
    "5.5": "Extending HTTP/2", "6.1": "DATA", "6.2": "HEADERS", "6.3": "PRIORITY",
    "6.4": "RST_STREAM", "6.5": "SETTINGS", "6.5.2": "Defined Settings",
    "6.5.3": "Settings Synchronization", "6.7": "PING", "6.8": "GOAWAY", "6.9": "WINDOW_UPDATE",
    "6.9.1": "The Flow-Control Window", "6.9.2": "Initial Flow-Control Window Size",
    "6.10": "CONTINUATION", "8.1": "HTTP Message Framing", "8.1.1": "Malformed Messages",
    "8.2": "HTTP Fields", "8.2.1": "Field Validity", "8.2.2": "Connection-Specific Header Fields",
    "8.3": "HTTP Control Data", "8.3.1": "Request Pseudo-Header Fields", "8.4": "Server Push",
    "8.5": "The CONNECT Method", "hpack-2.3": "RFC 7541 Index Address Space",
    "hpack-4.2": "RFC 7541 Maximum Table Size", "hpack-5.1": "RFC 7541 Integer Representation",
    "hpack-5.2": "RFC 7541 String Literal Representation", "hpack-6": "RFC 7541 Binary Format",
}


# ----------------------------------------------------------------------------- frame builders
def raw(ftype, flags, sid, payload=b""):
    """Any frame, including invalid ones: 24-bit length, type, flags, 32-bit stream id."""
    return struct.pack(">I", len(payload))[1:] + struct.pack(">BBI", ftype, flags, sid) + payload


def settings(*pairs, ack=False, sid=0):
    """SETTINGS with (id, value) pairs in order (repeats allowed, which SettingsFrame can't do)."""
    return raw(SETTINGS, ACK if ack else 0, sid, b"".join(struct.pack(">HI", k, v) for k, v in pairs))


def headers(sid, block, es=True, eh=True, pad=None, dep=None, weight=15, excl=False):
    f = HeadersFrame(sid, block, flags=(["END_STREAM"] if es else []) + (["END_HEADERS"] if eh else []))
    if pad is not None:
        f.flags.add("PADDED")
        f.pad_length = pad
    if dep is not None:
        f.flags.add("PRIORITY")
        f.depends_on, f.stream_weight, f.exclusive = dep, weight, excl
    return f.serialize()


def data(sid, payload=b"", es=False, pad=None):
    f = DataFrame(sid, payload, flags=["END_STREAM"] if es else [])
    if pad is not None:
        f.flags.add("PADDED")
        f.pad_length = pad
    return f.serialize()


def cont(sid, block, eh=True):
    return ContinuationFrame(sid, block, flags=["END_HEADERS"] if eh else []).serialize()


def priority(sid, dep, weight=15, excl=False):
    return PriorityFrame(sid, depends_on=dep, stream_weight=weight, exclusive=excl).serialize()


def rst(sid, code="CANCEL"):
    return RstStreamFrame(sid, error_code=CODE[code]).serialize()


def ping(payload=b"12345678", ack=False):
    return PingFrame(0, opaque_data=payload, flags=["ACK"] if ack else []).serialize()


def goaway(last=0, code="NO_ERROR"):
    return GoAwayFrame(0, last_stream_id=last, error_code=CODE[code]).serialize()


def window_update(sid, inc):
    return raw(WINDOW_UPDATE, 0, sid, struct.pack(">I", inc))  # raw: any increment, R bit too


# hand-written HPACK pieces (RFC 7541 5.1, 5.2, 6.x) for blocks hpack.Encoder won't produce
def hp_int(value, prefix_bits, first=0):
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes([first | value])
    out, value = bytearray([first | limit]), value - limit
    while value >= 128:
        out.append(0x80 | (value & 0x7F))
        value >>= 7
    return bytes(out + bytes([value]))


def hp_str(s, huffman_bytes=None):
    if huffman_bytes is not None:
        return hp_int(len(huffman_bytes), 7, 0x80) + huffman_bytes
    return hp_int(len(s), 7) + s.encode()


def hp_literal(name, value, first=0x00):
    """Literal field with a literal name (0x00: without indexing, 0x10: never indexed)."""
    return bytes([first]) + hp_str(name) + hp_str(value)


def pseudo(c):
    """:method GET, :scheme http (static table) and :path (static "/" or a literal)."""
    return b"\x82\x86" + (b"\x84" if c.a.path == "/" else b"\x04" + hp_str(c.a.path))


# ----------------------------------------------------------------------------- connection
class SetupFailed(Exception):
    pass


class Conn:
    """One h2c connection: raw bytes out, parsed frames in, plus a record of what came back."""
    opened = []

    def __init__(self, a, settings_pairs=((ENABLE_PUSH, 0),), handshake=True):
        self.a = a
        self.sock = socket.create_connection(a.addr, timeout=a.timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        Conn.opened.append(self.sock)
        self.enc, self.dec = hpack.Encoder(), hpack.Decoder()
        self.buf, self.log, self.frames, self.errors = bytearray(), [], [], []
        self.goaway = self.eof = self.send_error = self.hblock = None
        self.rst, self.hdrs, self.body, self.dlen, self.ended = {}, {}, {}, {}, set()
        self.acks, self.peer, self.got_settings, self.settings_acked = [], {}, False, 0
        if handshake:
            self.send(PREFACE + settings(*settings_pairs))
            if not self.wait(lambda: self.got_settings and self.settings_acked):
                raise SetupFailed("no SETTINGS exchange: " + self.observed())

    def send(self, *chunks):
        try:
            self.sock.sendall(b"".join(chunks))
        except OSError as e:  # the server may have closed already; what it sent is still read
            self.send_error = type(e).__name__

    def req(self, method="GET", extra=()):
        return [(":method", method), (":scheme", "http"), (":path", self.a.path),
                (":authority", self.a.authority)] + list(extra)

    def block(self, fields):
        return self.enc.encode(fields)

    def request(self, sid=1, method="GET", es=True, extra=(), **kw):
        """HEADERS carrying a request, encoded with this connection's HPACK encoder."""
        return headers(sid, self.block(self.req(method, extra)), es=es, **kw)

    def post(self, sid=1, extra=()):
        return self.request(sid, "POST", es=False, extra=extra)

    def wait(self, pred, timeout=None):
        """Read frames until pred() holds, the connection closes, or the timeout passes."""
        end = time.monotonic() + (timeout or self.a.timeout)
        while not pred():
            left = end - time.monotonic()
            if self.eof or left <= 0:
                return bool(pred())
            if select.select([self.sock], [], [], left)[0]:
                self.recv()
        return True

    def recv(self):
        try:
            chunk = self.sock.recv(65536)
        except OSError as e:
            self.eof = "reset" if isinstance(e, ConnectionResetError) else type(e).__name__
            return
        if not chunk:
            self.eof = "closed"
            return
        self.buf += chunk
        while len(self.buf) >= 9:
            length = int.from_bytes(self.buf[:3], "big")
            if len(self.buf) < 9 + length:
                return
            head, body = bytes(self.buf[:9]), bytes(self.buf[9:9 + length])
            del self.buf[:9 + length]
            try:
                f, _ = Frame.parse_frame_header(memoryview(head))
                f.parse_body(memoryview(body))
            except Exception as e:  # noqa: BLE001 - note a frame we cannot parse, keep going
                self.log.append("UNPARSABLE(type=%d: %s)" % (head[3], e))
                continue
            self.on_frame(f)

    def on_frame(self, f):
        sid, fl = f.stream_id, f.flags
        self.frames.append(f)
        if isinstance(f, (GoAwayFrame, RstStreamFrame)):
            code = ERRORS[f.error_code] if f.error_code < len(ERRORS) else hex(f.error_code)
            if isinstance(f, GoAwayFrame):
                self.goaway = {"code": code, "last": f.last_stream_id,
                               "debug": bytes(f.additional_data)[:120].decode("latin1")}
                self.log.append("GOAWAY(%s,last=%d)" % (code, f.last_stream_id))
            else:
                self.rst.setdefault(sid, code)
                self.log.append("RST_STREAM(%d,%s)" % (sid, code))
            # (stream or None for GOAWAY, code, whether it is a RST_STREAM NO_ERROR/CANCEL after
            # a complete response: the server just asks us to stop sending, RFC 9113 8.1)
            self.errors.append((sid or None, code, sid in self.ended and code in ("NO_ERROR", "CANCEL")))
            return
        flags = "".join("," + FLAG_ABBR.get(x, x) for x in sorted(fl))
        self.log.append("%s(%d%s)" % (type(f).__name__.replace("Frame", "").upper(), sid, flags))
        if isinstance(f, SettingsFrame):
            if "ACK" in fl:
                self.settings_acked += 1
            else:
                self.peer.update(f.settings)
                self.got_settings = True
                self.send(settings(ack=True))
        elif isinstance(f, PingFrame):
            if "ACK" in fl:
                self.acks.append(bytes(f.opaque_data))
            else:
                self.send(ping(bytes(f.opaque_data), ack=True))
        elif isinstance(f, (HeadersFrame, ContinuationFrame)):
            self.hblock = (self.hblock or b"") + bytes(f.data)
            if "END_HEADERS" in fl:
                try:
                    fields = [(k.decode("latin1"), v.decode("latin1"))
                              for k, v in self.dec.decode(self.hblock, raw=True)]
                except Exception as e:  # noqa: BLE001
                    fields = [("hpack-error", str(e))]
                self.hdrs.setdefault(sid, []).append(fields)
                self.hblock = None
        elif isinstance(f, DataFrame):
            self.body[sid] = self.body.get(sid, b"") + bytes(f.data)
            self.dlen.setdefault(sid, []).append(f.flow_controlled_length)
        if isinstance(f, (HeadersFrame, DataFrame)) and "END_STREAM" in fl:
            self.ended.add(sid)

    def status(self, sid):
        for fields in self.hdrs.get(sid, []):
            for k, v in fields:
                if k == ":status":
                    return int(v) if v.isdigit() else v
        return None

    def received(self, sid):
        return sum(self.dlen.get(sid, []))

    def done(self, sid):
        return lambda: sid in self.ended or sid in self.rst or self.goaway

    def observed(self, note=""):
        parts = [note] if note else []
        if self.goaway:
            g = self.goaway
            parts.append("GOAWAY %s last_stream_id=%d%s" % (
                g["code"], g["last"], " debug=%r" % g["debug"] if g["debug"] else ""))
        if self.rst:
            parts.append("RST_STREAM " + ", ".join("%d:%s" % kv for kv in list(self.rst.items())[:4]))
        if self.hdrs:
            parts.append("status " + ", ".join("%d:%s" % (s, self.status(s)) for s in list(self.hdrs)[:6])
                         + (" (%d streams)" % len(self.hdrs) if len(self.hdrs) > 6 else ""))
        if self.eof:
            parts.append("connection " + self.eof)
        if self.send_error:
            parts.append("send failed (%s)" % self.send_error)
        parts.append("frames in: " + (" ".join(self.log[-12:]) or "none"))
        return "; ".join(parts)


# ----------------------------------------------------------------------------- expectations
# Each takes the connection (after the case sent its frames) and returns (ok, detail).
def conn_error(c, *codes, close_ok=False):
    """RFC 'connection error': GOAWAY with one of codes, or the connection just closing."""
    c.wait(lambda: c.goaway)
    if c.goaway:
        return c.goaway["code"] in codes, c.observed()
    if c.eof:
        return close_ok or not c.a.require_goaway, c.observed("closed without a GOAWAY we could read")
    return False, c.observed("no GOAWAY within %.0f s (expected %s)" % (c.a.timeout, "/".join(codes)))


def stream_error(c, sid, *codes):
    """RFC 'stream error': RST_STREAM on sid or GOAWAY, whichever came first, with one of codes
    (a RST_STREAM that only ends a completed response does not count)."""
    def first():
        return next((e for e in c.errors if e[0] is None or (e[0] == sid and not e[2])), None)
    c.wait(first)
    e = first()
    if e and e[0] == sid:
        return e[1] in codes, c.observed()
    if c.goaway or c.eof:
        return conn_error(c, *codes)
    return False, c.observed("no RST_STREAM/GOAWAY within %.0f s (expected %s on stream %d)"
                             % (c.a.timeout, "/".join(codes), sid))


def alive(c, note=""):
    """The connection still works: a PING gets its ACK, and no GOAWAY with an error came."""
    payload = os.urandom(8)
    c.send(ping(payload))
    ok = c.wait(lambda: payload in c.acks)
    bad_goaway = c.goaway and c.goaway["code"] != "NO_ERROR"
    return ok and not bad_goaway, c.observed(note or ("PING answered" if ok else "no PING ACK"))


def response(c, sid=1, then_alive=True):
    """A complete response (HEADERS ... END_STREAM) on sid, not a 400, then a live connection."""
    c.wait(c.done(sid))
    st = c.status(sid)
    if sid in c.ended and isinstance(st, int) and st != 400:
        return alive(c, "response %s" % st) if then_alive else (True, c.observed())
    return False, c.observed("no complete non-400 response on stream %d" % sid)


def answered_early(c, sid, result):
    """Let a failed result pass as inconclusive when the server answered and reset the stream
    (NO_ERROR/CANCEL) before it read the frames the case is about."""
    ok, detail = result
    if not ok and any(e[0] == sid and e[2] for e in c.errors):
        return True, "inconclusive: the server answered and reset stream %d before reading the " \
                     "rest of the request; %s" % (sid, detail)
    return ok, detail


# ----------------------------------------------------------------------------- case registry
CASES = []  # (id, section, desc, fn, strict)


def case(section, desc, strict=False):
    def register(fn):
        n = sum(1 for x in CASES if x[1] == section) + 1
        CASES.append(("%s/%d" % (section, n), section, ("strict: " if strict else "") + desc, fn, strict))
        return fn
    return register


def _codes(c, codes, lenient):
    return codes if c.a.strict else codes + lenient


def _text(kind, codes, lenient):
    return "%s error %s%s" % (kind, "/".join(codes), " (or %s)" % "/".join(lenient) if lenient else "")


# lenient: codes also accepted unless --strict, where the RFC's wording and practice differ.
def CONN(*codes, lenient=()):
    return _text("connection", codes, lenient), lambda c: conn_error(c, *_codes(c, codes, lenient))


def STREAM(*codes, sid=1, lenient=()):
    return _text("stream", codes, lenient), lambda c: stream_error(c, sid, *_codes(c, codes, lenient))


def LATE(*codes, sid=1, lenient=()):  # a stream error caused by frames after the request's HEADERS
    return _text("stream", codes, lenient), lambda c: answered_early(
        c, sid, stream_error(c, sid, *_codes(c, codes, lenient)))


def ANSWERED(sid=1):
    return "answered", lambda c: response(c, sid)


IGNORED = ("ignored", alive)


def PONG(payload):
    return "answered with a PING ACK carrying the same payload", lambda c: (
        c.wait(lambda: payload in c.acks), c.observed())


class NotApplicable(Exception):
    pass


def T(section, desc, frames, expect, settings_pairs=((ENABLE_PUSH, 0),), strict=False, handshake=True):
    """A one-step case: connect, send frames(c), check expect = (text, check(c))."""
    text, check = expect

    def run(a):
        c = Conn(a, settings_pairs, handshake)
        try:
            out = frames(c)
        except NotApplicable as e:
            return True, "not applicable: %s" % e
        c.send(*(out if isinstance(out, (list, tuple)) else [out]))
        return check(c)
    case(section, "%s: %s" % (desc, text), strict)(run)


def base(a):
    return [(":method", "GET"), (":scheme", "http"), (":path", a.path), (":authority", a.authority)]


def split(c, fields, at=2, es=True):
    """A field block cut in two: (HEADERS without END_HEADERS, rest of the block)."""
    b = c.block(fields)
    return headers(1, b[:at], es=es, eh=False), b[at:]


# ============================================================================ 3.4 preface
@case("3.4", "valid preface: the server's first frame is SETTINGS and it ACKs ours")
def _(a):
    c = Conn(a, handshake=False)
    c.send(PREFACE + settings())
    ok = c.wait(lambda: c.got_settings and c.settings_acked)
    first = c.frames[0] if c.frames else None
    return ok and isinstance(first, SettingsFrame) and "ACK" not in first.flags, c.observed()


# An invalid preface is a PROTOCOL_ERROR connection error whose GOAWAY MAY be omitted; the
# preface includes the first SETTINGS frame, so a PING in its place makes it invalid too.
PREFACE_ERROR = ("connection error PROTOCOL_ERROR (GOAWAY optional)",
                 lambda c: conn_error(c, PROTO, close_ok=True))
T("3.4", "an invalid preface", lambda c: b"PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n" + settings(),
  PREFACE_ERROR, handshake=False)
T("3.4", "the preface followed by PING instead of SETTINGS", lambda c: PREFACE + ping(), PREFACE_ERROR,
  handshake=False)
T("3.4", "a request sent before the server's SETTINGS arrive", lambda c: PREFACE + settings() + c.request(1),
  ANSWERED(), handshake=False)


# ============================================================================ 4 frames
T("4.1", "a frame of unknown type on stream 0", lambda c: raw(0xEE, 0x5A, 0, b"unknown"), IGNORED)
T("4.1", "PING with all undefined flags set", lambda c: raw(PING, 0xFE, 0, b"flagsABC"), PONG(b"flagsABC"))
T("4.1", "HEADERS with undefined flags set", lambda c: raw(
    HEADERS, END_STREAM | END_HEADERS | 0xD2, 1, c.block(c.req())), ANSWERED())
T("4.1", "HEADERS with the stream identifier's reserved bit set", lambda c: raw(
    HEADERS, END_STREAM | END_HEADERS, 0x80000001, c.block(c.req())), ANSWERED())
T("4.1", "PING with the stream identifier's reserved bit set",
  lambda c: raw(PING, 0, 0x80000000, b"reserved"), PONG(b"reserved"))


def max_frame(c):
    """The server's SETTINGS_MAX_FRAME_SIZE, if a larger frame is possible at all."""
    if c.peer.get(MAX_FRAME, 16384) >= 2 ** 24 - 1:
        raise NotApplicable("SETTINGS_MAX_FRAME_SIZE is 2^24-1, the largest length a frame can have")
    return c.peer.get(MAX_FRAME, 16384)


def body_of(c, n):  # a POST of n octets in one DATA frame, within the server's window
    n = min(n, c.peer.get(INITIAL_WINDOW, 65535))
    return [c.post(extra=[("content-length", str(n))]), data(1, b"x" * n, es=True)]


T("4.2", "DATA of 16384 octets (the smallest allowed maximum)", lambda c: body_of(c, 16384), ANSWERED())
T("4.2", "DATA larger than SETTINGS_MAX_FRAME_SIZE", lambda c: body_of(c, max_frame(c) + 1),
  STREAM(FRAME_SIZE))
T("4.2", "HEADERS larger than SETTINGS_MAX_FRAME_SIZE", lambda c: headers(1, c.block(c.req()) + hp_literal(
    "x-pad", "a" * max_frame(c))), CONN(FRAME_SIZE))
T("4.2", "SETTINGS larger than SETTINGS_MAX_FRAME_SIZE", lambda c: settings(
    *[(0xF000 + i % 0xF00, 0) for i in range(max_frame(c) // 6 + 1)]), CONN(FRAME_SIZE))
T("4.3", "an undecodable field block (literal longer than the block)",
  lambda c: headers(1, pseudo(c) + b"\x00\x05x-bad\x0aab"), CONN(COMPRESSION))
T("4.3", "PRIORITY inside a field block", lambda c: (lambda h: [h[0], priority(1, 0), cont(1, h[1])])(
    split(c, c.req())), CONN(PROTO))
T("4.3", "HEADERS of another stream inside a field block", lambda c: [
    split(c, c.req())[0], c.request(3), cont(1, b"\x82")], CONN(PROTO))


@case("4.3", "the field block of a rejected request still updates the HPACK decoder")
def _(a):
    # Stream 1 is malformed (connection-specific field) but inserts fields into the dynamic
    # table; stream 3 then refers to them.  A server that skipped decoding stream 1's block
    # cannot decode stream 3.  A connection error on stream 1 leaves this untestable.
    c = Conn(a)
    c.send(headers(1, c.block(c.req(extra=[("connection", "close"), ("x-dyn", "remember")]))))
    ok, detail = stream_error(c, 1, PROTO)
    if not ok or c.goaway or c.eof:
        return ok, ("inconclusive (connection error): " if ok else "") + detail
    c.send(headers(3, c.block(c.req(extra=[("x-dyn", "remember")]))))
    return response(c, 3)


# ============================================================================ 5.1 stream states
def on(kind, sid=1):
    return {"DATA": data(sid, b"x", es=True), "RST_STREAM": rst(sid), "PRIORITY": priority(sid, 0),
            "WINDOW_UPDATE": window_update(sid, 1), "CONTINUATION": cont(sid, b"\x82")}[kind]


for _k in ("DATA", "RST_STREAM", "WINDOW_UPDATE", "CONTINUATION"):
    T("5.1", "idle stream: " + _k, lambda c, k=_k: on(k), CONN(PROTO))
T("5.1", "idle stream: PRIORITY on 3 (which stays idle), then requests on 1 and 3",
  lambda c: [priority(3, 0), c.request(1), c.request(3)], ANSWERED(3))
# half-closed (remote): the request ended with END_STREAM on its HEADERS
T("5.1", "half-closed (remote): DATA", lambda c: [c.request(1), on("DATA")], LATE(CLOSED))
# 5.1 asks STREAM_CLOSED.  A field block after END_STREAM also breaks 8.1's message framing,
# and haproxy makes any HEADERS there a PROTOCOL_ERROR connection error (as does h2spec, by
# passing any GOAWAY followed by a close); accepted unless --strict.
T("5.1", "half-closed (remote): HEADERS", lambda c: [
    c.request(1), headers(1, c.block([("x-late", "1")]))], LATE(CLOSED, lenient=(PROTO,)))
# No field block is open, so 6.10's PROTOCOL_ERROR competes with 5.1's STREAM_CLOSED.
T("5.1", "half-closed (remote): CONTINUATION", lambda c: [c.request(1), on("CONTINUATION")],
  LATE(CLOSED, PROTO))
for _k in ("WINDOW_UPDATE", "PRIORITY"):
    T("5.1", "half-closed (remote): " + _k, lambda c, k=_k: [c.request(1), on(k)], ANSWERED())
T("5.1", "half-closed (remote): RST_STREAM", lambda c: [c.request(1), rst(1)], IGNORED)
# closed by our RST_STREAM.  For HEADERS, 5.1 asks STREAM_CLOSED, but a server that forgot the
# stream sees an identifier that is not new, which 5.1.1 makes a PROTOCOL_ERROR.
T("5.1", "closed by our RST_STREAM: DATA", lambda c: [c.post(), rst(1), on("DATA")], LATE(CLOSED))
T("5.1", "closed by our RST_STREAM: HEADERS", lambda c: [
    c.post(), rst(1), headers(1, c.block([("x-late", "1")]))], LATE(CLOSED, PROTO))
T("5.1", "closed by our RST_STREAM: CONTINUATION", lambda c: [c.post(), rst(1), on("CONTINUATION")],
  LATE(CLOSED, PROTO))


def after_response(section, desc, late, expect, strict=False):
    """Stream 1 completes normally (END_STREAM both ways), then late(c) is sent."""
    text, check = expect

    def run(a):
        c = Conn(a)
        c.send(c.request(1))
        if not c.wait(c.done(1)) or 1 not in c.ended:
            raise SetupFailed("no response on stream 1: " + c.observed())
        c.send(late(c))
        return check(c)
    case(section, "%s: %s" % (desc, text), strict)(run)


after_response("5.1", "closed: DATA", lambda c: on("DATA"), STREAM(CLOSED))
after_response("5.1", "closed: HEADERS", lambda c: c.request(1), STREAM(CLOSED, PROTO))
after_response("5.1", "closed: CONTINUATION", lambda c: on("CONTINUATION"), STREAM(CLOSED, PROTO))
# PRIORITY is always allowed; WINDOW_UPDATE and RST_STREAM MUST be ignored for a short while
# after the server sent END_STREAM.
for _k in ("PRIORITY", "WINDOW_UPDATE", "RST_STREAM"):
    after_response("5.1", "closed (just now): " + _k, lambda c, k=_k: on(k), IGNORED)

# ============================================================================ 5.1.1 - 5.5
T("5.1.1", "an even stream identifier from the client", lambda c: c.request(2), CONN(PROTO))
# 5.1.1 makes a lower identifier a PROTOCOL_ERROR, but opening stream 5 implicitly closed idle
# stream 3 (5.1), so a server may see HEADERS on a closed stream (haproxy: STREAM_CLOSED).
T("5.1.1", "a stream identifier lower than the previous one (5, then 3)",
  lambda c: [c.request(5), c.request(3)], CONN(PROTO, CLOSED))
after_response("5.1.1", "a gap between stream identifiers (1, then 101)",
               lambda c: c.request(101), ANSWERED(101))


@case("5.1.2", "more streams than SETTINGS_MAX_CONCURRENT_STREAMS: REFUSED_STREAM or PROTOCOL_ERROR")
def _(a):
    c = Conn(a)
    limit = c.peer.get(MAX_STREAMS)
    if limit is None or limit > 1000:
        return True, "not applicable: no advertised limit below 1000 (%s)" % limit
    sids = [2 * i + 1 for i in range(limit + 1)]
    c.send(*[c.post(s) for s in sids])  # streams that stay open: no END_STREAM
    ok, detail = stream_error(c, sids[-1], "REFUSED_STREAM", PROTO)
    # A server may answer and reset streams as they come (nginx does); a stream it reset before
    # it saw the last HEADERS no longer counts, so the limit was not exceeded.
    seen_last = next((i for i, f in enumerate(c.frames) if f.stream_id == sids[-1]), len(c.frames))
    freed = sum(1 for f in c.frames[:seen_last] if isinstance(f, RstStreamFrame))
    if not ok and freed and c.status(sids[-1]) is not None:
        return True, "inconclusive: the server reset %d streams before answering the last" % freed
    return ok, detail


T("5.3", "HEADERS with a priority block (exclusive, weight 256)",
  lambda c: c.request(1, dep=0, weight=255, excl=True), ANSWERED())
T("5.3", "HEADERS depending on a stream that does not exist",
  lambda c: c.request(1, dep=7, weight=0), ANSWERED())
T("5.3", "PRIORITY on an open stream",
  lambda c: [c.post(), priority(1, 0, 200, True), data(1, b"", es=True)], ANSWERED())
T("5.3.1", "HEADERS depending on its own stream", lambda c: c.request(1, dep=1), STREAM(PROTO))
T("5.3.1", "PRIORITY depending on its own stream", lambda c: [c.post(), priority(1, 1)], LATE(PROTO))


@case("5.4.1", "after a connection error the server sends GOAWAY and closes the connection")
def _(a):
    c = Conn(a)
    c.send(raw(PING, 0, 0, b"123456"))
    c.wait(lambda: c.eof)
    ok = c.goaway is not None and c.goaway["code"] == FRAME_SIZE and c.eof is not None
    return ok, c.observed("" if c.eof else "still open after %.0f s" % a.timeout)


after_response("5.4.1", "GOAWAY's last stream identifier is the stream already answered (1)",
               lambda c: raw(PING, 0, 0, b"123456"),
               ("GOAWAY last_stream_id=1", lambda c: (c.wait(lambda: c.goaway) and c.goaway["last"] == 1,
                                                      c.observed())))
# Not on an idle stream: there 5.1 ("idle: only HEADERS or PRIORITY") competes with 5.5's
# "discard unknown frames", and haproxy answers PROTOCOL_ERROR.
T("5.5", "an unknown frame on an open stream", lambda c: [
    c.post(), raw(0xEE, 0x01, 1, b"extension"), data(1, b"", es=True)], ANSWERED())
T("5.5", "an unknown frame inside a field block", lambda c: [
    split(c, c.req())[0], raw(0xEE, 0, 1, b"extension"), cont(1, b"\x82")], CONN(PROTO))

# ============================================================================ 6.1 - 6.4
T("6.1", "DATA on stream 0", lambda c: raw(DATA, END_STREAM, 0, b"x"), CONN(PROTO))
T("6.1", "DATA after the request ended", lambda c: [
    c.post(), data(1, b"x", es=True), data(1, b"y", es=True)], LATE(CLOSED))
T("6.1", "DATA whose pad length exceeds the payload", lambda c: [
    c.post(), raw(DATA, PADDED | END_STREAM, 1, b"\x08abcd")], CONN(PROTO))
# haproxy 2.6.12 misparses DATA padding: the padding octets are read as the next frame.
T("6.1", "a padded DATA frame", lambda c: [
    c.post(extra=[("content-length", "5")]), data(1, b"hello", es=True, pad=20)], ANSWERED(),
  strict=True)
T("6.1", "an empty DATA frame with END_STREAM", lambda c: [c.post(), data(1, b"", es=True)], ANSWERED())
T("6.2", "HEADERS without END_HEADERS, then PING",
  lambda c: [split(c, c.req())[0], ping(), cont(1, b"\x82")], CONN(PROTO))
T("6.2", "HEADERS without END_HEADERS, then DATA",
  lambda c: [split(c, c.req("POST"), es=False)[0], data(1, b"x"), cont(1, b"\x82")], CONN(PROTO))
T("6.2", "HEADERS on stream 0", lambda c: raw(HEADERS, END_STREAM | END_HEADERS, 0, c.block(c.req())),
  CONN(PROTO))
T("6.2", "HEADERS whose pad length exceeds the payload", lambda c: raw(
    HEADERS, PADDED | END_HEADERS | END_STREAM, 1, b"\xff" + c.block(c.req())), CONN(PROTO))
T("6.2", "padded HEADERS", lambda c: c.request(1, pad=32), ANSWERED())
T("6.2", "padded HEADERS with a priority block", lambda c: c.request(1, pad=7, dep=0), ANSWERED())
T("6.3", "PRIORITY on stream 0", lambda c: raw(PRIORITY, 0, 0, b"\x00\x00\x00\x01\x10"), CONN(PROTO))
T("6.3", "PRIORITY of 4 octets on an open stream",
  lambda c: [c.post(), raw(PRIORITY, 0, 1, b"\x00\x00\x00\x00")], LATE(FRAME_SIZE))
T("6.3", "PRIORITY of 6 octets on an idle stream",
  lambda c: raw(PRIORITY, 0, 3, b"\x00\x00\x00\x00\x10\x00"), STREAM(FRAME_SIZE, sid=3))
T("6.4", "RST_STREAM on stream 0", lambda c: raw(RST_STREAM, 0, 0, b"\x00\x00\x00\x08"), CONN(PROTO))
T("6.4", "RST_STREAM on an idle stream", lambda c: rst(5), CONN(PROTO))
T("6.4", "RST_STREAM of 3 octets", lambda c: [c.post(), raw(RST_STREAM, 0, 1, b"\x00\x00\x08")],
  CONN(FRAME_SIZE))
T("6.4", "RST_STREAM of 5 octets", lambda c: [c.post(), raw(RST_STREAM, 0, 1, b"\x00\x00\x00\x08\x00")],
  CONN(FRAME_SIZE))
T("6.4", "RST_STREAM (CANCEL) on an open stream, then a new request",
  lambda c: [c.post(), rst(1), c.request(3)], ANSWERED(3))

# ============================================================================ 6.5 SETTINGS
T("6.5", "SETTINGS ACK with a payload", lambda c: settings((INITIAL_WINDOW, 100), ack=True),
  CONN(FRAME_SIZE))
T("6.5", "SETTINGS on stream 1", lambda c: settings((INITIAL_WINDOW, 100), sid=1), CONN(PROTO))
T("6.5", "SETTINGS of 3 octets", lambda c: raw(SETTINGS, 0, 0, b"\x00\x04\x00"), CONN(FRAME_SIZE))
T("6.5", "SETTINGS of 8 octets (not a multiple of 6)",
  lambda c: raw(SETTINGS, 0, 0, struct.pack(">HIH", INITIAL_WINDOW, 100, 1)), CONN(FRAME_SIZE))
ACKED = ("acknowledged", lambda c: (c.wait(lambda: c.settings_acked >= 2), c.observed()))
T("6.5", "an empty SETTINGS frame", lambda c: settings(), ACKED)


@case("6.5.2", "the server's own SETTINGS values are valid")
def _(a):
    c = Conn(a)
    p = c.peer
    bad = ["%s=%s" % (n, p[k]) for k, n, valid in [
        (ENABLE_PUSH, "ENABLE_PUSH", lambda v: v == 0),  # 9113: clients reject 1 from a server
        (MAX_FRAME, "MAX_FRAME_SIZE", lambda v: 16384 <= v <= 2 ** 24 - 1),
        (INITIAL_WINDOW, "INITIAL_WINDOW_SIZE", lambda v: v <= MAX_WINDOW)] if k in p and not valid(p[k])]
    return not bad, c.observed("server settings %s%s" % (p, "; invalid: %s" % bad if bad else ""))


for _id, _v, _code, _name in [(ENABLE_PUSH, 2, PROTO, "SETTINGS_ENABLE_PUSH=2"),
                              (INITIAL_WINDOW, 2 ** 31, FLOW, "SETTINGS_INITIAL_WINDOW_SIZE=2^31"),
                              (MAX_FRAME, 16383, PROTO, "SETTINGS_MAX_FRAME_SIZE=16383"),
                              (MAX_FRAME, 2 ** 24, PROTO, "SETTINGS_MAX_FRAME_SIZE=2^24")]:
    T("6.5.2", _name, lambda c, i=_id, v=_v: settings((i, v)), CONN(_code))
for _pairs, _name in [(((0xBEEF, 1),), "an unknown setting"),
                      (((ENABLE_PUSH, 1),), "SETTINGS_ENABLE_PUSH=1 from a client"),
                      (((MAX_FRAME, 2 ** 24 - 1),), "SETTINGS_MAX_FRAME_SIZE=2^24-1"),
                      (((INITIAL_WINDOW, MAX_WINDOW),), "SETTINGS_INITIAL_WINDOW_SIZE=2^31-1"),
                      (((MAX_STREAMS, 0),), "SETTINGS_MAX_CONCURRENT_STREAMS=0")]:
    T("6.5.2", _name + " is accepted and requests are still served",
      lambda c, p=_pairs: [settings(*p), c.request(1)], ANSWERED())


@case("6.5.2", "SETTINGS_HEADER_TABLE_SIZE=0 is honoured by the server's HPACK encoder")
def _(a):
    c = Conn(a, settings_pairs=((ENABLE_PUSH, 0), (TABLE_SIZE, 0)))
    c.dec.max_allowed_table_size = c.dec.header_table_size = 0  # dynamic references now fail
    for sid in (1, 3, 5):
        c.send(c.request(sid))
        ok, detail = response(c, sid, then_alive=False)
        bad = [f for fs in c.hdrs.get(sid, []) for f in fs if f[0] == "hpack-error"]
        if not ok or bad:
            return False, detail + (" hpack: %s" % bad if bad else "")
    return alive(c)


def window_probe(c, sid=1):
    """Wait for the first DATA octets on sid, then a PING round trip so excess DATA shows."""
    c.wait(lambda: c.received(sid) > 0 or sid in c.ended or sid in c.rst)
    alive(c)
    return c.received(sid)


def one_octet(c):
    """Expectation for a stream window of 1: exactly 1 octet of DATA arrives."""
    n = window_probe(c)
    return n == 1, c.observed("DATA octets received with a window of 1: %d" % n)


T("6.5.3", "several INITIAL_WINDOW_SIZE values in one SETTINGS (100, then 1)", lambda c: c.request(1),
  ("the last applies: 1 octet of DATA", one_octet),
  settings_pairs=((ENABLE_PUSH, 0), (INITIAL_WINDOW, 100), (INITIAL_WINDOW, 1)))
T("6.5.3", "SETTINGS without ACK", lambda c: settings((INITIAL_WINDOW, 65535), (MAX_HEADER_LIST, 65536)),
  ACKED)

# ============================================================================ 6.7 - 6.9
T("6.7", "PING", lambda c: ping(b"\x00\xffh2ping"), PONG(b"\x00\xffh2ping"))
T("6.7", "a PING ACK from the client, then a PING", lambda c: [ping(b"ackacka!", True), ping(b"question")], (
    "only the PING is answered", lambda c: (c.wait(lambda: b"question" in c.acks) and c.acks == [b"question"],
                                            c.observed("ACKs: %r" % c.acks))))
T("6.7", "PING on stream 1", lambda c: raw(PING, 0, 1, b"12345678"), CONN(PROTO))
T("6.7", "PING of 6 octets", lambda c: raw(PING, 0, 0, b"123456"), CONN(FRAME_SIZE))
T("6.7", "PING ACK of 10 octets", lambda c: raw(PING, ACK, 0, b"1234567890"), CONN(FRAME_SIZE))
T("6.8", "GOAWAY on stream 1", lambda c: raw(GOAWAY, 0, 1, bytes(8)), CONN(PROTO))
T("6.8", "GOAWAY of 4 octets (too short)", lambda c: raw(GOAWAY, 0, 0, bytes(4)), CONN(FRAME_SIZE))
# A client's GOAWAY only concerns server-initiated streams: its own request still gets answered
# (the server may close the connection afterwards, so no PING check).
T("6.8", "a request, then GOAWAY (NO_ERROR, last stream 0) from the client",
  lambda c: [c.request(1), goaway(0)], ("answered", lambda c: response(c, 1, then_alive=False)))
T("6.9", "WINDOW_UPDATE of 0 on the connection", lambda c: window_update(0, 0), CONN(PROTO))
T("6.9", "WINDOW_UPDATE of 0 on a stream", lambda c: [c.post(), window_update(1, 0)], LATE(PROTO))
T("6.9", "WINDOW_UPDATE of 3 octets on stream 0", lambda c: raw(WINDOW_UPDATE, 0, 0, b"\x00\x00\x01"),
  CONN(FRAME_SIZE))
T("6.9", "WINDOW_UPDATE of 5 octets on a stream",
  lambda c: [c.post(), raw(WINDOW_UPDATE, 0, 1, b"\x00\x00\x00\x01\x00")], CONN(FRAME_SIZE))
# RFC 9113 6.9: the increment's reserved bit MUST be ignored; reading 0x80000001 as 2^31+1
# is a false overflow (haproxy 2.6 does that).
T("6.9", "WINDOW_UPDATE with the increment's reserved bit set", lambda c: window_update(0, 0x80000001),
  IGNORED, strict=True)
T("6.9.1", "a request with SETTINGS_INITIAL_WINDOW_SIZE=1", lambda c: c.request(1),
  ("1 octet of DATA", one_octet), settings_pairs=((ENABLE_PUSH, 0), (INITIAL_WINDOW, 1)))


@case("6.9.1", "a stream WINDOW_UPDATE lets the server finish the response")
def _(a):
    c = Conn(a, settings_pairs=((ENABLE_PUSH, 0), (INITIAL_WINDOW, 1)))
    c.send(c.request(1))
    if not c.wait(lambda: c.received(1) > 0 or 1 in c.ended):
        return False, c.observed("no DATA with a window of 1")
    c.send(window_update(1, 65535))
    return response(c, 1)


T("6.9.1", "the connection window raised above 2^31-1",
  lambda c: [window_update(0, MAX_WINDOW), window_update(0, MAX_WINDOW)], CONN(FLOW))
T("6.9.1", "a stream window raised above 2^31-1",
  lambda c: [c.post(), window_update(1, MAX_WINDOW), window_update(1, MAX_WINDOW)], LATE(FLOW))


@case("6.9.2", "raising SETTINGS_INITIAL_WINDOW_SIZE releases DATA on an open stream")
def _(a):
    c = Conn(a, settings_pairs=((ENABLE_PUSH, 0), (INITIAL_WINDOW, 0)))
    c.send(c.request(1))
    c.wait(lambda: 1 in c.hdrs or 1 in c.rst)
    early = window_probe(c)
    c.send(settings((INITIAL_WINDOW, 65535)))
    ok, detail = response(c, 1)
    return ok and early == 0 and c.received(1) > 0, detail + "; DATA octets before: %d" % early


@case("6.9.2", "a window made negative by SETTINGS is honoured until credit returns")
def _(a):
    c = Conn(a, settings_pairs=((ENABLE_PUSH, 0), (INITIAL_WINDOW, 1)))
    c.send(c.request(1))
    if not c.wait(lambda: c.received(1) > 0) or 1 in c.ended:
        return False, c.observed("needs a response body of at least 2 octets (see --path)")
    c.send(settings((INITIAL_WINDOW, 0)))  # window: 0 - 1 = -1
    c.wait(lambda: c.settings_acked >= 2)
    c.send(window_update(1, 1))  # window 0: nothing may be sent yet
    alive(c)
    held = c.received(1)
    c.send(window_update(1, 1))  # window 1: exactly one more octet
    c.wait(lambda: c.received(1) > held or 1 in c.rst)
    return held == 1 and c.received(1) == 2, c.observed(
        "DATA octets: %d at window 0, %d at window 1" % (held, c.received(1)))


# The stream window reaches 2^31-1, then +65536 from the new initial size; the server can have
# spent at most 65535 octets (its connection window) in between.  haproxy 2.6 never checks.
T("6.9.2", "SETTINGS_INITIAL_WINDOW_SIZE pushing an open stream's window above 2^31-1",
  lambda c: [c.post(), window_update(1, MAX_WINDOW), settings((INITIAL_WINDOW, 65536))], CONN(FLOW),
  settings_pairs=((ENABLE_PUSH, 0), (INITIAL_WINDOW, 0)), strict=True)

# ============================================================================ 6.10 CONTINUATION
T("6.10", "a field block in HEADERS and three CONTINUATION frames (one empty)", lambda c: (lambda b: [
    headers(1, b[:3], eh=False), cont(1, b[3:6], eh=False), cont(1, b"", eh=False), cont(1, b[6:])])(
    c.block(c.req(extra=[("x-split", "continuation")]))), ANSWERED())
T("6.10", "CONTINUATION followed by DATA", lambda c: [
    split(c, c.req())[0], cont(1, b"", eh=False), data(1, b"x"), cont(1, b"\x82")], CONN(PROTO))
T("6.10", "CONTINUATION on stream 0", lambda c: [
    split(c, c.req())[0], raw(CONTINUATION, END_HEADERS, 0, b"\x82")], CONN(PROTO))
T("6.10", "CONTINUATION after HEADERS with END_HEADERS",
  lambda c: [c.post(), cont(1, c.block([("x-more", "1")]))], CONN(PROTO))
T("6.10", "CONTINUATION after a CONTINUATION with END_HEADERS", lambda c: (lambda h: [
    h[0], cont(1, h[1]), cont(1, c.block([("x-more", "1")]))])(split(c, c.req("POST"), es=False)),
  CONN(PROTO))
T("6.10", "CONTINUATION after DATA", lambda c: [c.post(), data(1, b"x"), cont(1, b"\x82")], CONN(PROTO))
T("6.10", "CONTINUATION on another stream than its HEADERS",
  lambda c: [split(c, c.req())[0], cont(3, b"\x82")], CONN(PROTO))

# ============================================================================ 8.1 messages
def no_content(c):
    ok, detail = response(c)
    return ok and not c.body.get(1), detail + "; body: %d octets" % len(c.body.get(1, b""))


T("8.1", "GET", lambda c: c.request(1), ANSWERED())
T("8.1", "HEAD", lambda c: c.request(1, "HEAD"), ("answered without content", no_content))
T("8.1", "POST with a body in three DATA frames",
  lambda c: [c.post(), data(1, b"a" * 1000), data(1, b"b" * 1000), data(1, b"c", es=True)], ANSWERED())
T("8.1", "POST with trailers", lambda c: [
    c.post(extra=[("te", "trailers")]), data(1, b"body"), headers(1, c.block([("x-trailer", "done")]))],
  ("answered", lambda c: answered_early(c, 1, response(c))))
T("8.1", "a second HEADERS without END_STREAM", lambda c: [
    c.post(), data(1, b"body"), headers(1, c.block([("x-trailer", "done")]), es=False)], LATE(PROTO))
T("8.1", "DATA after trailers", lambda c: [
    c.post(), data(1, b"body"), headers(1, c.block([("x-trailer", "done")])), data(1, b"late")],
  LATE(CLOSED))
T("8.1.1", "content-length greater than the DATA sent",
  lambda c: [c.post(extra=[("content-length", "10")]), data(1, b"abcd", es=True)], LATE(PROTO))
T("8.1.1", "content-length less than the DATA sent (two frames)", lambda c: [
    c.post(extra=[("content-length", "4")]), data(1, b"abc"), data(1, b"def", es=True)], LATE(PROTO))
T("8.1.1", "content-length equal to the DATA sent (two frames)", lambda c: [
    c.post(extra=[("content-length", "6")]), data(1, b"abc"), data(1, b"def", es=True)], ANSWERED())
# No DATA at all is a sum of 0, which 8.1.1 makes malformed too; haproxy 2.6 answers it.
T("8.1.1", "content-length: 4 on HEADERS that end the stream", lambda c: headers(1, c.block(
    c.req("POST", [("content-length", "4")]))), STREAM(PROTO), strict=True)

# ============================================================================ 8.2 - 8.5 fields
T("8.2", "field values with SP, HTAB and obs-text inside, and an empty value", lambda c: c.request(
    1, extra=[("x-chars", "!#$%&'*+-.^_`|~ \tvalue\x80\xff end"), ("x-empty", "")]), ANSWERED())
T("8.2.2", "te: trailers", lambda c: c.request(1, extra=[("te", "trailers")]), ANSWERED())
T("8.3.1", "no :authority but a host field",
  lambda c: headers(1, c.block(base(c.a)[:3] + [("host", c.a.authority)])), ANSWERED())
# Malformed requests (RFC 9113 8.1.1: stream error PROTOCOL_ERROR).  Fields with CR, LF or an
# empty name are also accepted as a connection error COMPRESSION_ERROR (haproxy rejects them
# while decoding; such a field is never forwarded, which is 8.2.1's point) unless --strict.
for _sec, _what, _fields, _lenient in [
        ("8.2", "a field name with uppercase letters", lambda a: base(a) + [("X-Upper", "1")], False),
        ("8.2.1", "a field name containing a space", lambda a: base(a) + [("x bad", "1")], False),
        ("8.2.1", "a field name containing a colon", lambda a: base(a) + [("x:bad", "1")], False),
        ("8.2.1", "an empty field name", lambda a: base(a) + [("", "1")], True),
        ("8.2.1", "a field value containing LF", lambda a: base(a) + [("x-bad", "a\nb")], True),
        ("8.2.1", "a field value containing CR", lambda a: base(a) + [("x-bad", "a\rb")], True),
        ("8.2.1", "a field value containing NUL", lambda a: base(a) + [("x-bad", "a\x00b")], True),
        ("8.2.2", "a connection field", lambda a: base(a) + [("connection", "keep-alive")], False),
        ("8.2.2", "a keep-alive field", lambda a: base(a) + [("keep-alive", "timeout=5")], False),
        ("8.2.2", "a proxy-connection field", lambda a: base(a) + [("proxy-connection", "close")], False),
        ("8.2.2", "a transfer-encoding field", lambda a: base(a) + [("transfer-encoding", "chunked")], False),
        ("8.2.2", "an upgrade field", lambda a: base(a) + [("upgrade", "websocket")], False),
        ("8.2.2", "te with a value other than trailers", lambda a: base(a) + [("te", "trailers, deflate")],
         False),
        ("8.3", "an unknown pseudo-header", lambda a: base(a) + [(":custom", "1")], False),
        ("8.3", "a response pseudo-header (:status)", lambda a: base(a) + [(":status", "200")], False),
        ("8.3", "a pseudo-header after a regular field", lambda a: base(a)[:3] + [("x-a", "1"), base(a)[3]],
         False),
        ("8.3", "a duplicated :authority", lambda a: base(a) + [(":authority", a.authority)], False),
        ("8.3.1", "an empty :path", lambda a: base(a)[:2] + [(":path", "")] + base(a)[3:], False),
        ("8.3.1", "no :method", lambda a: base(a)[1:], False),
        ("8.3.1", "no :scheme", lambda a: base(a)[:1] + base(a)[2:], False),
        ("8.3.1", "no :path", lambda a: base(a)[:2] + base(a)[3:], False),
        ("8.3.1", "a duplicated :method", lambda a: base(a)[:1] + base(a), False),
        ("8.3.1", "a duplicated :scheme", lambda a: base(a)[:2] + base(a)[1:], False),
        ("8.3.1", "a duplicated :path", lambda a: base(a)[:3] + base(a)[2:], False),
        ("8.5", "CONNECT without :authority", lambda a: [(":method", "CONNECT")], False),
        ("8.5", "CONNECT with :scheme and :path but no :protocol",
         lambda a: [(":method", "CONNECT")] + base(a)[1:], False)]:
    T(_sec, "a request with " + _what, lambda c, f=_fields: headers(1, c.block(f(c.a))),
      STREAM(PROTO, lenient=(COMPRESSION,) if _lenient else ()))
# haproxy 2.6 resets such a stream with INTERNAL_ERROR (seen with "http-request wait-for-body").
T("8.3", "a pseudo-header in trailers", lambda c: [
    c.post(), data(1, b"body"), headers(1, c.block([(":method", "GET")]))],
  LATE(PROTO, lenient=("INTERNAL_ERROR",)))
T("8.4", "PUSH_PROMISE from a client", lambda c: [
    c.post(), raw(PUSH_PROMISE, END_HEADERS, 1, struct.pack(">I", 2) + c.block(c.req()))], CONN(PROTO))


def any_answer(c):
    """Tunnelling is the server's choice: a 2xx, a 4xx/5xx or a RST_STREAM (REFUSED_STREAM,
    CONNECT_ERROR, ...) are all fine; a connection error is not."""
    answered = c.wait(lambda: 1 in c.hdrs or 1 in c.rst or c.goaway)
    ok, detail = alive(c)
    return ok and answered, detail


T("8.5", "CONNECT with only :authority", lambda c: headers(
    1, c.block([(":method", "CONNECT"), (":authority", "127.0.0.1:9")]), es=False),
  ("handled (any answer, connection stays up)", any_answer))

# ============================================================================ RFC 7541 HPACK
for _sec, _what, _block in [
        ("hpack-2.3", "an indexed field beyond both tables", lambda c: pseudo(c) + hp_int(70, 7, 0x80)),
        ("hpack-2.3", "a literal whose name index is beyond both tables",
         lambda c: pseudo(c) + hp_int(70, 4) + hp_str("x")),
        ("hpack-4.2", "a dynamic table size update after a field",
         lambda c: pseudo(c) + hp_literal(":authority", c.a.authority) + hp_int(0, 5, 0x20)),
        ("hpack-4.2", "a table size update above SETTINGS_HEADER_TABLE_SIZE",
         lambda c: hp_int(c.peer.get(TABLE_SIZE, 4096) + 1, 5, 0x20) + pseudo(c)),
        ("hpack-5.1", "an integer that overflows", lambda c: pseudo(c) + b"\xff" + b"\xff" * 10 + b"\x7f"),
        ("hpack-5.2", "Huffman padding longer than 7 bits",
         lambda c: pseudo(c) + b"\x00" + hp_str("x-h") + hp_str("", b"\x1f\xff")),
        ("hpack-5.2", "Huffman padding that is not a prefix of EOS",
         lambda c: pseudo(c) + b"\x00" + hp_str("x-h") + hp_str("", b"\x18")),
        ("hpack-5.2", "a Huffman string containing EOS",
         lambda c: pseudo(c) + b"\x00" + hp_str("x-h") + hp_str("", b"\x1f\xff\xff\xff\xff")),
        ("hpack-6", "an indexed field with index 0", lambda c: pseudo(c) + b"\x80")]:
    T(_sec, "a field block with " + _what, lambda c, b=_block: headers(1, b(c)), CONN(COMPRESSION))
T("hpack-4.2", "two size updates at the start of a block (0, then 4096)", lambda c: headers(
    1, hp_int(0, 5, 0x20) + hp_int(4096, 5, 0x20) + pseudo(c) + hp_literal(":authority", c.a.authority)),
  ANSWERED())
T("hpack-5.2", "plain and Huffman-coded literals", lambda c: headers(1, pseudo(c) + hp_literal(
    ":authority", c.a.authority) + hpack.Encoder().encode([("x-huff", "hello world")], huffman=True)),
  ANSWERED())
T("hpack-6", "never-indexed and without-indexing literals", lambda c: headers(1, pseudo(c) + hp_literal(
    ":authority", c.a.authority, 0x10) + hp_literal("x-plain", "v")), ANSWERED())


@case("hpack-2.3", "references to the dynamic table across requests are decoded")
def _(a):
    c = Conn(a)
    for sid in (1, 3, 5):  # hpack.Encoder indexes fields, so later requests refer to them
        c.send(c.request(sid, extra=[("x-repeat", "same value every time")]))
        ok, detail = response(c, sid, then_alive=False)
        if not ok:
            return ok, detail
    return alive(c)


# haproxy 2.6 ignores size updates (no eviction), so this one is strict.
after_response("hpack-4.2", "after a size update to 0, a reference to an evicted entry",
               lambda c: headers(3, hp_int(0, 5, 0x20) + hp_int(4096, 5, 0x20) + pseudo(c) + b"\xbe"),
               CONN(COMPRESSION), strict=True)


# ----------------------------------------------------------------------------- runner
def order(x):  # RFC 9113 sections in numeric order, then RFC 7541; cases by number
    sec, n = x[0].rsplit("/", 1)
    return sec.startswith("hpack"), [int(p) for p in sec.replace("hpack-", "").split(".")], int(n)


def selected(cases, spec, strict):
    cases = sorted((x for x in cases if strict or not x[4]), key=order)
    if not spec:
        return cases
    want = [s.strip() for s in spec.split(",") if s.strip()]
    return [x for x in cases if any(x[0] == w or x[1] == w or x[1].startswith(w + ".")
                                    or x[1].startswith(w + "-") for w in want)]


def run_case(a, fn):
    try:
        ok, detail = fn(a)
    except SetupFailed as e:
        ok, detail = False, "setup failed: %s" % e
    except Exception as e:  # noqa: BLE001 - a socket failure (or a broken case) fails the case
        ok, detail = False, "error: %s: %s" % (type(e).__name__, e)
    finally:
        for s in Conn.opened:
            s.close()
        Conn.opened.clear()
    return bool(ok), detail


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--target", help="HOST:PORT of an h2c (prior knowledge) server")
    p.add_argument("--authority", help=":authority to send (default: the target)")
    p.add_argument("--path", default="/", help=":path of a resource with a body of >= 2 octets")
    p.add_argument("--sections", help="comma-separated sections (5.1 includes 5.1.1) or case ids")
    p.add_argument("--timeout", type=float, default=3.0, help="bound on each wait, seconds")
    p.add_argument("--strict", action="store_true", help="add the strict cases and exact codes")
    p.add_argument("--require-goaway", action="store_true",
                   help="a connection error must show a GOAWAY (a bare close fails)")
    p.add_argument("--list", action="store_true", help="list the cases and exit")
    p.add_argument("--verbose", action="store_true", help="progress and timing on stderr")
    a = p.parse_args()
    cases = selected(CASES, a.sections, a.strict)
    if a.list:
        for cid, sec, desc, _, _ in cases:
            print("%-13s %-44s %s" % (cid, "%s %s" % (sec, TITLES.get(sec, "")), desc))
        return 0
    if not a.target:
        p.error("--target is required")
    host, _, port = a.target.rpartition(":")
    a.addr, a.authority = (host.strip("[]"), int(port)), a.authority or a.target
    passed = failed = 0
    for cid, sec, desc, fn, _ in cases:
        t0 = time.monotonic()
        ok, detail = run_case(a, fn)
        passed, failed = passed + ok, failed + (not ok)
        print(json.dumps({"id": cid, "section": "%s %s" % (sec, TITLES.get(sec, "")), "desc": desc,
                          "ok": ok, "detail": detail}), flush=True)
        if a.verbose:
            print("%s %-12s %5.2fs %s" % ("PASS" if ok else "FAIL", cid, time.monotonic() - t0, desc),
                  file=sys.stderr, flush=True)
    print("%d passed, %d failed" % (passed, failed), flush=True)
    return 0 if failed == 0 and cases else 1


if __name__ == "__main__":
    sys.exit(main())
