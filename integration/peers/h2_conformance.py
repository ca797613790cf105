#!/usr/bin/env python3
"""HTTP/2 conformance checker (h2c with prior knowledge), organised by RFC section.

An h2spec-style suite written for Remora: every case opens its own TCP
connection, exchanges the preface and SETTINGS as needed, sends hand-made
frames (hyperframe for well-formed frames, ``raw()`` for malformed ones, hpack
or hand-written bytes for field blocks) and checks the server's reaction
against RFC 9113 (HTTP/2) and RFC 7541 (HPACK).

What each expectation accepts (the same latitude h2spec gives):
* connection error X: a GOAWAY with code X, or the connection being closed
  (a GOAWAY followed by a close may be lost to a TCP reset before we read it);
  ``--require-goaway`` makes a bare close fail.
* stream error X: a RST_STREAM with code X on that stream, or a connection
  error X (RFC 9113 5.4: an endpoint may escalate a stream error).  For a
  malformed request the server may answer (e.g. 400) before resetting.
* ignored / accepted: the connection still answers a PING (and the request
  still gets a complete response, when there is one).  A 400 to a valid
  request fails: it means the server found it malformed.
Every wait is bounded (--timeout, 3 s by default); no case ever sleeps.

Usage: h2_conformance.py --target HOST:PORT [--authority NAME] [--path /]
       [--sections 4.2,5.1,6.5.3/2] [--verbose] [--list] [--require-goaway]
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
TIMEOUT = 3.0
ERRORS = ["NO_ERROR", "PROTOCOL_ERROR", "INTERNAL_ERROR", "FLOW_CONTROL_ERROR",
          "SETTINGS_TIMEOUT", "STREAM_CLOSED", "FRAME_SIZE_ERROR", "REFUSED_STREAM", "CANCEL",
          "COMPRESSION_ERROR", "CONNECT_ERROR", "ENHANCE_YOUR_CALM", "INADEQUATE_SECURITY",
          "HTTP_1_1_REQUIRED"]
CODE = {name: i for i, name in enumerate(ERRORS)}
PROTO, FRAME_SIZE, FLOW, STREAM_CLOSED, COMPRESSION = (
    "PROTOCOL_ERROR", "FRAME_SIZE_ERROR", "FLOW_CONTROL_ERROR", "STREAM_CLOSED", "COMPRESSION_ERROR")
# frame types and flags (RFC 9113 section 6)
DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE, \
    CONTINUATION = range(10)
END_STREAM, ACK, END_HEADERS, PADDED, PRIO = 0x1, 0x1, 0x4, 0x8, 0x20
# settings identifiers (RFC 9113 6.5.2)
TABLE_SIZE, ENABLE_PUSH, MAX_STREAMS, INITIAL_WINDOW, MAX_FRAME, MAX_HEADER_LIST = range(1, 7)
MAX_WINDOW = 2 ** 31 - 1

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
    "8.5": "The CONNECT Method",
    "hpack-2.3": "RFC 7541 Index Address Space", "hpack-4.2": "RFC 7541 Maximum Table Size",
    "hpack-5.1": "RFC 7541 Integer Representation", "hpack-5.2": "RFC 7541 String Literals",
    "hpack-6": "RFC 7541 Binary Format",
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


def goaway(last=0, code="NO_ERROR", sid=0):
    if sid == 0:
        return GoAwayFrame(0, last_stream_id=last, error_code=CODE[code]).serialize()
    return raw(GOAWAY, 0, sid, struct.pack(">II", last, CODE[code]))


def window_update(sid, inc):
    return raw(WINDOW_UPDATE, 0, sid, struct.pack(">I", inc))


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


def hp_literal(name, value):
    """Literal field without indexing, new (literal) name, plain strings."""
    return b"\x00" + hp_str(name) + hp_str(value)


# ----------------------------------------------------------------------------- connection
class Handshake(Exception):
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
        self.buf, self.log, self.frames = bytearray(), [], []
        self.goaway = self.eof = self.send_error = self.hblock = None
        self.rst, self.hdrs, self.body, self.dlen, self.ended = {}, {}, {}, {}, set()
        self.acks, self.peer, self.got_settings, self.settings_acked = [], {}, False, 0
        if handshake:
            self.send(PREFACE + settings(*settings_pairs))
            if not self.wait(lambda: self.got_settings and self.settings_acked):
                raise Handshake("no SETTINGS exchange: " + self.observed())

    # -- sending
    def send(self, *chunks):
        try:
            self.sock.sendall(b"".join(chunks))
        except OSError as e:  # the server may already have closed; what it sent is still read
            self.send_error = type(e).__name__

    def req(self, method="GET", extra=(), path=None):
        return [(":method", method), (":scheme", "http"), (":path", path or self.a.path),
                (":authority", self.a.authority)] + list(extra)

    def block(self, fields):
        return self.enc.encode(fields)

    def request(self, sid=1, method="GET", es=True, extra=(), **kw):
        """A HEADERS frame carrying a request (encoded with this connection's encoder)."""
        return headers(sid, self.block(self.req(method, extra)), es=es, **kw)

    # -- receiving
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
            except Exception as e:  # noqa: BLE001 - record a server framing error, keep going
                self.log.append("UNPARSABLE(type=%d: %s)" % (head[3], e))
                continue
            self.on_frame(f)

    def on_frame(self, f):
        sid, fl, name = f.stream_id, f.flags, type(f).__name__.replace("Frame", "").upper()
        self.frames.append(f)
        short = "".join(x[0] for x in sorted(fl)) if fl else ""
        if isinstance(f, GoAwayFrame):
            code = ERRORS[f.error_code] if f.error_code < len(ERRORS) else hex(f.error_code)
            self.goaway = {"code": code, "last": f.last_stream_id,
                           "debug": bytes(f.additional_data)[:120].decode("latin1")}
            self.log.append("GOAWAY(%s,last=%d)" % (code, f.last_stream_id))
            return
        if isinstance(f, RstStreamFrame):
            code = ERRORS[f.error_code] if f.error_code < len(ERRORS) else hex(f.error_code)
            self.rst.setdefault(sid, code)
            self.log.append("RST_STREAM(%d,%s)" % (sid, code))
            return
        self.log.append("%s(%d%s)" % (name, sid, "," + short if short else ""))
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
                    fields = self.dec.decode(self.hblock, raw=True)
                    self.hdrs.setdefault(sid, []).append(
                        [(k.decode("latin1"), v.decode("latin1")) for k, v in fields])
                except Exception as e:  # noqa: BLE001
                    self.hdrs.setdefault(sid, []).append([("hpack-error", str(e))])
                self.hblock = None
        elif isinstance(f, DataFrame):
            self.body[sid] = self.body.get(sid, b"") + bytes(f.data)
            self.dlen.setdefault(sid, []).append(f.flow_controlled_length)
        if isinstance(f, (HeadersFrame, DataFrame)) and "END_STREAM" in fl:
            self.ended.add(sid)

    # -- what was seen
    def status(self, sid):
        for fields in self.hdrs.get(sid, []):
            for k, v in fields:
                if k == ":status":
                    return int(v) if v.isdigit() else v
        return None

    def received(self, sid):
        return sum(self.dlen.get(sid, []))

    def observed(self, note=""):
        parts = [note] if note else []
        if self.goaway:
            g = self.goaway
            parts.append("GOAWAY %s last_stream_id=%d%s" % (
                g["code"], g["last"], " debug=%r" % g["debug"] if g["debug"] else ""))
        if self.rst:
            parts.append("RST_STREAM " + ", ".join("%d:%s" % kv for kv in list(self.rst.items())[:4]))
        statuses = {s: self.status(s) for s in self.hdrs}
        if statuses:
            parts.append("status " + ", ".join("%d:%s" % kv for kv in statuses.items()))
        if self.eof:
            parts.append("connection " + self.eof)
        if self.send_error:
            parts.append("send failed (%s)" % self.send_error)
        parts.append("frames in: " + (" ".join(self.log[-12:]) or "none"))
        return "; ".join(parts)


# ----------------------------------------------------------------------------- expectations
# Each returns (ok, detail).
def conn_error(c, *codes):
    """RFC 'connection error': GOAWAY with one of codes (or the connection just closing)."""
    c.wait(lambda: c.goaway)
    if c.goaway:
        return c.goaway["code"] in codes, c.observed()
    if c.eof:
        return not c.a.require_goaway, c.observed("closed without a GOAWAY we could read")
    return False, c.observed("no GOAWAY within %.0f s (expected %s)" % (c.a.timeout, "/".join(codes)))


def stream_error(c, sid, *codes):
    """RFC 'stream error': RST_STREAM on sid with one of codes, or a connection error with one."""
    c.wait(lambda: sid in c.rst or c.goaway)
    if sid in c.rst:
        return c.rst[sid] in codes, c.observed()
    if c.goaway or c.eof:
        return conn_error(c, *codes)
    return False, c.observed("no RST_STREAM/GOAWAY within %.0f s (expected %s on stream %d)"
                             % (c.a.timeout, "/".join(codes), sid))


def alive(c, note=""):
    """The connection still works: a PING gets its ACK and nothing was refused with an error."""
    payload = os.urandom(8)
    c.send(ping(payload))
    ok = c.wait(lambda: payload in c.acks)
    bad_goaway = c.goaway and c.goaway["code"] != "NO_ERROR"
    return ok and not bad_goaway, c.observed(note or ("PING answered" if ok else "no PING ACK"))


def response(c, sid=1, also_alive=True):
    """A complete response (HEADERS ... END_STREAM) on sid, without a 400, no reset before it."""
    c.wait(lambda: sid in c.ended or sid in c.rst or c.goaway)
    st = c.status(sid)
    ok = sid in c.ended and isinstance(st, int) and st != 400
    if ok and also_alive:
        return alive(c, "response %s" % st)
    return ok, c.observed("no complete response on stream %d" % sid if not ok else "")


def malformed(a, fields, es=True, then=b""):
    """Send a request with these (invalid) fields: stream error PROTOCOL_ERROR (RFC 9113 8.1.1)."""
    c = Conn(a)
    c.send(headers(1, c.block(fields), es=es), then)
    return stream_error(c, 1, PROTO)


# ----------------------------------------------------------------------------- case registry
CASES = []


def case(section, desc):
    def register(fn):
        n = sum(1 for x in CASES if x[1] == section) + 1
        CASES.append(("%s/%d" % (section, n), section, desc, fn))
        return fn
    return register


def base(a):
    return [(":method", "GET"), (":scheme", "http"), (":path", a.path), (":authority", a.authority)]


# ============================================================================ 3.4 preface
@case("3.4", "valid preface: the server's first frame is SETTINGS and it ACKs ours")
def _(a):
    c = Conn(a, handshake=False)
    c.send(PREFACE + settings())
    ok = c.wait(lambda: c.got_settings and c.settings_acked)
    first = c.frames[0] if c.frames else None
    return ok and isinstance(first, SettingsFrame) and "ACK" not in first.flags, c.observed()


@case("3.4", "invalid preface: connection error PROTOCOL_ERROR (GOAWAY may be omitted)")
def _(a):
    c = Conn(a, handshake=False)
    c.send(b"PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n" + settings())
    return conn_error(c, PROTO)


@case("3.4", "preface followed by a PING instead of SETTINGS: connection error PROTOCOL_ERROR")
def _(a):
    c = Conn(a, handshake=False)
    c.send(PREFACE + ping())
    return conn_error(c, PROTO)


@case("3.4", "a request sent before the server's SETTINGS arrive is answered")
def _(a):
    c = Conn(a, handshake=False)
    c.send(PREFACE + settings(), c.request(1))
    return response(c, 1)


# ============================================================================ 4.1 frame format
@case("4.1", "a frame of unknown type on stream 0 is ignored")
def _(a):
    c = Conn(a)
    c.send(raw(0xEE, 0x5A, 0, b"unknown frame payload"))
    return alive(c)


@case("4.1", "undefined flags on PING are ignored (still answered)")
def _(a):
    c = Conn(a)
    c.send(raw(PING, 0xFE, 0, b"flagsABC"))
    return c.wait(lambda: b"flagsABC" in c.acks), c.observed()


@case("4.1", "undefined flags on HEADERS are ignored")
def _(a):
    c = Conn(a)
    c.send(raw(HEADERS, END_STREAM | END_HEADERS | 0x02 | 0x10 | 0x40 | 0x80, 1, c.block(c.req())))
    return response(c, 1)


@case("4.1", "the reserved bit of the stream identifier is ignored (HEADERS)")
def _(a):
    c = Conn(a)
    c.send(raw(HEADERS, END_STREAM | END_HEADERS, 0x80000001, c.block(c.req())))
    return response(c, 1)


@case("4.1", "the reserved bit of the stream identifier is ignored (PING on stream 0)")
def _(a):
    c = Conn(a)
    c.send(raw(PING, 0, 0x80000000, b"reserved"))
    return c.wait(lambda: b"reserved" in c.acks), c.observed()


# ============================================================================ 4.2 frame size
@case("4.2", "a DATA frame of 16384 octets (the minimum maximum) is accepted")
def _(a):
    c = Conn(a)
    n = min(16384, c.peer.get(INITIAL_WINDOW, 65535))
    c.send(c.request(1, "POST", es=False, extra=[("content-length", str(n))]), data(1, b"x" * n, es=True))
    return response(c, 1)


@case("4.2", "DATA larger than SETTINGS_MAX_FRAME_SIZE: FRAME_SIZE_ERROR")
def _(a):
    c = Conn(a)
    n = c.peer.get(MAX_FRAME, 16384) + 1
    c.send(c.request(1, "POST", es=False), data(1, b"x" * n, es=True))
    return stream_error(c, 1, FRAME_SIZE)


@case("4.2", "HEADERS larger than SETTINGS_MAX_FRAME_SIZE: connection error FRAME_SIZE_ERROR")
def _(a):
    c = Conn(a)
    block = c.block(c.req())
    n = c.peer.get(MAX_FRAME, 16384) + 1 - len(block) - 1 - 5 - 3  # x-pad literal overhead
    c.send(headers(1, block + hp_literal("x-pad", "a" * n)))
    return conn_error(c, FRAME_SIZE)


@case("4.2", "SETTINGS larger than SETTINGS_MAX_FRAME_SIZE: connection error FRAME_SIZE_ERROR")
def _(a):
    c = Conn(a)
    n = c.peer.get(MAX_FRAME, 16384) // 6 + 1
    c.send(settings(*[(0xF000 + i % 0x0F00, 0) for i in range(n)]))
    return conn_error(c, FRAME_SIZE)


# ============================================================================ 4.3 compression
@case("4.3", "an undecodable field block (truncated literal): connection error COMPRESSION_ERROR")
def _(a):
    c = Conn(a)
    c.send(headers(1, b"\x82\x86\x84" + b"\x00\x05x-bad\x0aab"))
    return conn_error(c, COMPRESSION)


@case("4.3", "PRIORITY between HEADERS and CONTINUATION: connection error PROTOCOL_ERROR")
def _(a):
    c = Conn(a)
    b = c.block(c.req())
    c.send(headers(1, b[:2], eh=False), priority(1, 0), cont(1, b[2:]))
    return conn_error(c, PROTO)


@case("4.3", "HEADERS on another stream inside a field block: connection error PROTOCOL_ERROR")
def _(a):
    c = Conn(a)
    b = c.block(c.req())
    c.send(headers(1, b[:2], eh=False), headers(3, b), cont(1, b[2:]))
    return conn_error(c, PROTO)


@case("4.3", "the field block of a rejected request still updates the HPACK decoder")
def _(a):
    c = Conn(a)
    # Stream 1 is malformed (connection-specific field) but inserts entries into the dynamic
    # table; stream 3 then refers to them.  If the server skipped decoding stream 1's block,
    # stream 3 fails to decode.  A connection error on stream 1 leaves this untestable.
    c.send(headers(1, c.block(c.req(extra=[("connection", "close"), ("x-dyn", "remember")]))))
    ok, detail = stream_error(c, 1, PROTO)
    if not ok or c.goaway or c.eof:
        return ok, detail + " (inconclusive: connection closed)" if ok else detail
    c.send(headers(3, c.block(c.req(extra=[("x-dyn", "remember")]))))
    return response(c, 3)


# ============================================================================ 5.1 stream states
def _frame_on(kind, sid):
    return {"DATA": data(sid, b"x", es=True), "RST_STREAM": rst(sid),
            "WINDOW_UPDATE": window_update(sid, 1), "PRIORITY": priority(sid, 0),
            "CONTINUATION": cont(sid, b"\x82")}[kind]


for _kind in ("DATA", "RST_STREAM", "WINDOW_UPDATE", "CONTINUATION"):
    @case("5.1", "idle stream: %s is a connection error PROTOCOL_ERROR" % _kind)
    def _(a, kind=_kind):
        c = Conn(a)
        c.send(_frame_on(kind, 1))
        return conn_error(c, PROTO)


@case("5.1", "idle stream: PRIORITY is allowed and does not open the stream")
def _(a):
    c = Conn(a)
    c.send(priority(3, 0), c.request(1))
    ok, detail = response(c, 1, also_alive=False)
    if not ok:
        return ok, detail
    c.send(c.request(3))
    return response(c, 3)


def _half_closed(a):
    """A connection whose stream 1 is half-closed (remote) from the server's side."""
    c = Conn(a)
    c.send(c.request(1, es=True))
    return c


@case("5.1", "half-closed (remote): DATA is a stream error STREAM_CLOSED")
def _(a):
    c = _half_closed(a)
    c.send(data(1, b"x", es=True))
    return stream_error(c, 1, STREAM_CLOSED)


@case("5.1", "half-closed (remote): HEADERS is a stream error STREAM_CLOSED")
def _(a):
    c = _half_closed(a)
    c.send(headers(1, c.block([("x-late", "1")])))
    return stream_error(c, 1, STREAM_CLOSED)


@case("5.1", "half-closed (remote): CONTINUATION is STREAM_CLOSED or PROTOCOL_ERROR")
def _(a):
    # No field block is open, so RFC 9113 6.10 (PROTOCOL_ERROR) applies as well as 5.1.
    c = _half_closed(a)
    c.send(cont(1, b"\x82"))
    return stream_error(c, 1, STREAM_CLOSED, PROTO)


for _kind in ("WINDOW_UPDATE", "PRIORITY"):
    @case("5.1", "half-closed (remote): %s is allowed, the response completes" % _kind)
    def _(a, kind=_kind):
        c = _half_closed(a)
        c.send(_frame_on(kind, 1))
        return response(c, 1)


@case("5.1", "half-closed (remote): RST_STREAM is allowed, the connection stays up")
def _(a):
    c = _half_closed(a)
    c.send(rst(1))
    return alive(c)


def _reset_by_client(a):
    c = Conn(a)
    c.send(c.request(1, "POST", es=False), rst(1, "CANCEL"))
    return c


@case("5.1", "closed by our RST_STREAM: DATA is a stream error STREAM_CLOSED")
def _(a):
    c = _reset_by_client(a)
    c.send(data(1, b"x", es=True))
    return stream_error(c, 1, STREAM_CLOSED)


@case("5.1", "closed by our RST_STREAM: HEADERS is STREAM_CLOSED or PROTOCOL_ERROR")
def _(a):
    # 5.1 asks STREAM_CLOSED; a server that no longer tracks the stream sees an identifier
    # that is not greater than the last one, which 5.1.1 makes a PROTOCOL_ERROR.
    c = _reset_by_client(a)
    c.send(headers(1, c.block([("x-late", "1")])))
    return stream_error(c, 1, STREAM_CLOSED, PROTO)


@case("5.1", "closed by our RST_STREAM: CONTINUATION is STREAM_CLOSED or PROTOCOL_ERROR")
def _(a):
    c = _reset_by_client(a)
    c.send(cont(1, b"\x82"))
    return stream_error(c, 1, STREAM_CLOSED, PROTO)


def _closed(a):
    """A connection whose stream 1 finished normally (both sides sent END_STREAM)."""
    c = Conn(a)
    c.send(c.request(1))
    if not c.wait(lambda: 1 in c.ended or 1 in c.rst):
        raise Handshake("no response on stream 1: " + c.observed())
    return c


@case("5.1", "closed: DATA is STREAM_CLOSED")
def _(a):
    c = _closed(a)
    c.send(data(1, b"x", es=True))
    return stream_error(c, 1, STREAM_CLOSED)


@case("5.1", "closed: HEADERS is STREAM_CLOSED or PROTOCOL_ERROR")
def _(a):
    c = _closed(a)  # same ambiguity (5.1 vs 5.1.1) as after RST_STREAM
    c.send(c.request(1))
    return stream_error(c, 1, STREAM_CLOSED, PROTO)


@case("5.1", "closed: CONTINUATION is STREAM_CLOSED or PROTOCOL_ERROR")
def _(a):
    c = _closed(a)
    c.send(cont(1, b"\x82"))
    return stream_error(c, 1, STREAM_CLOSED, PROTO)


for _kind in ("PRIORITY", "WINDOW_UPDATE", "RST_STREAM"):
    @case("5.1", "closed (just now): %s is ignored" % _kind)
    def _(a, kind=_kind):
        # PRIORITY is always allowed; WINDOW_UPDATE and RST_STREAM MUST be ignored for a
        # short period after the server sent END_STREAM.
        c = _closed(a)
        c.send(_frame_on(kind, 1))
        return alive(c)


# ============================================================================ 5.1.1 identifiers
@case("5.1.1", "an even stream identifier from a client: connection error PROTOCOL_ERROR")
def _(a):
    c = Conn(a)
    c.send(c.request(2))
    return conn_error(c, PROTO)


@case("5.1.1", "a stream identifier lower than a previous one: PROTOCOL_ERROR or STREAM_CLOSED")
def _(a):
    # 5.1.1 makes it a PROTOCOL_ERROR, but opening stream 5 implicitly closed idle stream 3
    # (5.1), so a server may see HEADERS on a closed stream (haproxy: GOAWAY STREAM_CLOSED).
    c = Conn(a)
    c.send(c.request(5))
    c.wait(lambda: 5 in c.ended or 5 in c.rst)
    c.send(c.request(3))
    return conn_error(c, PROTO, STREAM_CLOSED)


@case("5.1.1", "gaps between stream identifiers are allowed")
def _(a):
    c = Conn(a)
    c.send(c.request(1))
    ok, detail = response(c, 1, also_alive=False)
    if not ok:
        return ok, detail
    c.send(c.request(101))
    return response(c, 101)


# ============================================================================ 5.1.2 concurrency
@case("5.1.2", "exceeding SETTINGS_MAX_CONCURRENT_STREAMS: REFUSED_STREAM or PROTOCOL_ERROR")
def _(a):
    c = Conn(a)
    limit = c.peer.get(MAX_STREAMS)
    if limit is None or limit > 1000:
        return True, "not applicable: server advertises no limit below 1000 (%s)" % limit
    sids = [2 * i + 1 for i in range(limit + 1)]
    c.send(*[c.request(s, "POST", es=False) for s in sids])  # open streams that stay open
    return stream_error(c, sids[-1], "REFUSED_STREAM", PROTO)


# ============================================================================ 5.3 priority
@case("5.3", "HEADERS with a priority block (exclusive, weight 256) is answered")
def _(a):
    c = Conn(a)
    c.send(c.request(1, dep=0, weight=255, excl=True))
    return response(c, 1)


@case("5.3", "a dependency on a stream that does not exist is accepted")
def _(a):
    c = Conn(a)
    c.send(c.request(1, dep=7, weight=0))
    return response(c, 1)


@case("5.3", "PRIORITY on an open stream is accepted")
def _(a):
    c = Conn(a)
    c.send(c.request(1, "POST", es=False), priority(1, 0, 200, True), data(1, b"", es=True))
    return response(c, 1)


@case("5.3.1", "HEADERS depending on its own stream: stream error PROTOCOL_ERROR")
def _(a):
    c = Conn(a)
    c.send(c.request(1, dep=1))
    return stream_error(c, 1, PROTO)


@case("5.3.1", "PRIORITY depending on its own stream: stream error PROTOCOL_ERROR")
def _(a):
    c = Conn(a)
    c.send(c.request(1, "POST", es=False), priority(1, 1))
    return stream_error(c, 1, PROTO)


# ============================================================================ 5.4.1 conn errors
@case("5.4.1", "after a connection error the server sends GOAWAY and closes the connection")
def _(a):
    c = Conn(a)
    c.send(raw(PING, 0, 0, b"123456"))
    c.wait(lambda: c.eof)
    ok = c.goaway is not None and c.goaway["code"] == FRAME_SIZE and c.eof is not None
    return ok, c.observed("" if c.eof else "still open after %.0f s" % a.timeout)


@case("5.4.1", "GOAWAY's last stream identifier covers the stream already answered")
def _(a):
    c = Conn(a)
    c.send(c.request(1))
    c.wait(lambda: 1 in c.ended or 1 in c.rst)
    c.send(raw(PING, 0, 0, b"123456"))
    c.wait(lambda: c.goaway)
    return bool(c.goaway and c.goaway["last"] == 1), c.observed()


# ============================================================================ 5.5 extensions
@case("5.5", "an unknown frame on an open stream is ignored")
def _(a):
    # Not on an idle stream: there the "idle: only HEADERS or PRIORITY" rule of 5.1 competes
    # with "discard unknown frames", and haproxy answers PROTOCOL_ERROR.
    c = Conn(a)
    c.send(c.request(1, "POST", es=False), raw(0xEE, 0x01, 1, b"extension"), data(1, b"", es=True))
    return response(c, 1)


@case("5.5", "an unknown frame inside a field block: connection error PROTOCOL_ERROR")
def _(a):
    c = Conn(a)
    b = c.block(c.req())
    c.send(headers(1, b[:2], eh=False), raw(0xEE, 0, 1, b"extension"), cont(1, b[2:]))
    return conn_error(c, PROTO)


# ============================================================================ 6.1 DATA
@case("6.1", "DATA on stream 0: connection error PROTOCOL_ERROR")
def _(a):
    c = Conn(a)
    c.send(raw(DATA, END_STREAM, 0, b"x"))
    return conn_error(c, PROTO)


@case("6.1", "DATA on a half-closed (remote) stream: STREAM_CLOSED")
def _(a):
    c = Conn(a)
    c.send(c.request(1, "POST", es=False), data(1, b"x", es=True), data(1, b"y", es=True))
    return stream_error(c, 1, STREAM_CLOSED)


@case("6.1", "DATA whose pad length exceeds the payload: connection error PROTOCOL_ERROR")
def _(a):
    c = Conn(a)
    c.send(c.request(1, "POST", es=False), raw(DATA, PADDED | END_STREAM, 1, b"\x08abcd"))
    return conn_error(c, PROTO)


@case("6.1", "padded DATA is accepted (padding is not content)")
def _(a):
    c = Conn(a)
    c.send(c.request(1, "POST", es=False, extra=[("content-length", "5")]),
           data(1, b"hello", es=True, pad=20))
    return response(c, 1)


@case("6.1", "an empty DATA frame with END_STREAM ends the request")
def _(a):
    c = Conn(a)
    c.send(c.request(1, "POST", es=False), data(1, b"", es=True))
    return response(c, 1)


# ============================================================================ 6.2 HEADERS
@case("6.2", "HEADERS without END_HEADERS then PING: connection error PROTOCOL_ERROR")
def _(a):
    c = Conn(a)
    b = c.block(c.req())
    c.send(headers(1, b[:2], eh=False), ping(), cont(1, b[2:]))
    return conn_error(c, PROTO)


@case("6.2", "HEADERS without END_HEADERS then DATA: connection error PROTOCOL_ERROR")
def _(a):
    c = Conn(a)
    b = c.block(c.req("POST"))
    c.send(headers(1, b[:2], es=False, eh=False), data(1, b"x"), cont(1, b[2:]))
    return conn_error(c, PROTO)


@case("6.2", "HEADERS on stream 0: connection error PROTOCOL_ERROR")
def _(a):
    c = Conn(a)
    c.send(raw(HEADERS, END_STREAM | END_HEADERS, 0, c.block(c.req())))
    return conn_error(c, PROTO)


@case("6.2", "HEADERS whose pad length exceeds the payload: connection error PROTOCOL_ERROR")
def _(a):
    c = Conn(a)
    b = c.block(c.req())
    c.send(raw(HEADERS, PADDED | END_HEADERS | END_STREAM, 1, bytes([len(b) + 5]) + b))
    return conn_error(c, PROTO)


@case("6.2", "padded HEADERS is accepted")
def _(a):
    c = Conn(a)
    c.send(c.request(1, pad=32))
    return response(c, 1)


@case("6.2", "padded HEADERS with a priority block is accepted")
def _(a):
    c = Conn(a)
    c.send(c.request(1, pad=7, dep=0, weight=100))
    return response(c, 1)


# ============================================================================ 6.3 PRIORITY
@case("6.3", "PRIORITY on stream 0: connection error PROTOCOL_ERROR")
def _(a):
    c = Conn(a)
    c.send(raw(PRIORITY, 0, 0, b"\x00\x00\x00\x01\x10"))
    return conn_error(c, PROTO)


@case("6.3", "PRIORITY of 4 octets on an open stream: stream error FRAME_SIZE_ERROR")
def _(a):
    c = Conn(a)
    c.send(c.request(1, "POST", es=False), raw(PRIORITY, 0, 1, b"\x00\x00\x00\x00"))
    return stream_error(c, 1, FRAME_SIZE)


@case("6.3", "PRIORITY of 6 octets on an idle stream: stream error FRAME_SIZE_ERROR")
def _(a):
    c = Conn(a)
    c.send(raw(PRIORITY, 0, 3, b"\x00\x00\x00\x00\x10\x00"))
    return stream_error(c, 3, FRAME_SIZE)


# ============================================================================ 6.4 RST_STREAM
@case("6.4", "RST_STREAM on stream 0: connection error PROTOCOL_ERROR")
def _(a):
    c = Conn(a)
    c.send(raw(RST_STREAM, 0, 0, struct.pack(">I", CODE["CANCEL"])))
    return conn_error(c, PROTO)


@case("6.4", "RST_STREAM on an idle stream: connection error PROTOCOL_ERROR")
def _(a):
    c = Conn(a)
    c.send(rst(5))
    return conn_error(c, PROTO)


@case("6.4", "RST_STREAM of 3 octets: connection error FRAME_SIZE_ERROR")
def _(a):
    c = Conn(a)
    c.send(c.request(1, "POST", es=False), raw(RST_STREAM, 0, 1, b"\x00\x00\x08"))
    return conn_error(c, FRAME_SIZE)


@case("6.4", "RST_STREAM of 5 octets: connection error FRAME_SIZE_ERROR")
def _(a):
    c = Conn(a)
    c.send(c.request(1, "POST", es=False), raw(RST_STREAM, 0, 1, b"\x00\x00\x00\x08\x00"))
    return conn_error(c, FRAME_SIZE)


@case("6.4", "RST_STREAM (CANCEL) on an open stream leaves the connection usable")
def _(a):
    c = Conn(a)
    c.send(c.request(1, "POST", es=False), rst(1, "CANCEL"))
    ok, detail = alive(c)
    if not ok:
        return ok, detail
    c.send(c.request(3))
    return response(c, 3)


# ============================================================================ 6.5 SETTINGS
@case("6.5", "SETTINGS ACK with a payload: connection error FRAME_SIZE_ERROR")
def _(a):
    c = Conn(a)
    c.send(raw(SETTINGS, ACK, 0, struct.pack(">HI", INITIAL_WINDOW, 100)))
    return conn_error(c, FRAME_SIZE)


@case("6.5", "SETTINGS on a non-zero stream: connection error PROTOCOL_ERROR")
def _(a):
    c = Conn(a)
    c.send(settings((INITIAL_WINDOW, 100), sid=1))
    return conn_error(c, PROTO)


@case("6.5", "SETTINGS of 3 octets: connection error FRAME_SIZE_ERROR")
def _(a):
    c = Conn(a)
    c.send(raw(SETTINGS, 0, 0, b"\x00\x04\x00"))
    return conn_error(c, FRAME_SIZE)


@case("6.5", "SETTINGS of 8 octets (not a multiple of 6): connection error FRAME_SIZE_ERROR")
def _(a):
    c = Conn(a)
    c.send(raw(SETTINGS, 0, 0, struct.pack(">HI", INITIAL_WINDOW, 100) + b"\x00\x01"))
    return conn_error(c, FRAME_SIZE)


@case("6.5", "an empty SETTINGS frame is acknowledged")
def _(a):
    c = Conn(a)
    c.send(settings())
    return c.wait(lambda: c.settings_acked >= 2), c.observed()


# ============================================================================ 6.5.2 parameters
@case("6.5.2", "the server's own SETTINGS values are valid")
def _(a):
    c = Conn(a)
    p, bad = c.peer, []
    if p.get(ENABLE_PUSH, 0) not in (0,):  # RFC 9113: a client must reject ENABLE_PUSH=1
        bad.append("ENABLE_PUSH=%s" % p[ENABLE_PUSH])
    if not 16384 <= p.get(MAX_FRAME, 16384) <= 2 ** 24 - 1:
        bad.append("MAX_FRAME_SIZE=%s" % p[MAX_FRAME])
    if p.get(INITIAL_WINDOW, 0) > MAX_WINDOW:
        bad.append("INITIAL_WINDOW_SIZE=%s" % p[INITIAL_WINDOW])
    return not bad, c.observed("server settings %s%s" % (p, "; invalid: " + ", ".join(bad) if bad else ""))


for _sid, _val, _code, _why in [
        (ENABLE_PUSH, 2, PROTO, "SETTINGS_ENABLE_PUSH=2"),
        (INITIAL_WINDOW, 2 ** 31, FLOW, "SETTINGS_INITIAL_WINDOW_SIZE=2^31"),
        (MAX_FRAME, 16383, PROTO, "SETTINGS_MAX_FRAME_SIZE=16383"),
        (MAX_FRAME, 2 ** 24, PROTO, "SETTINGS_MAX_FRAME_SIZE=2^24")]:
    @case("6.5.2", "%s: connection error %s" % (_why, _code))
    def _(a, sid=_sid, val=_val, code=_code):
        c = Conn(a)
        c.send(settings((sid, val)))
        return conn_error(c, code)


for _pairs, _why in [(((0xBEEF, 1),), "an unknown setting is ignored"),
                     (((ENABLE_PUSH, 1),), "SETTINGS_ENABLE_PUSH=1 from a client is valid"),
                     (((MAX_FRAME, 2 ** 24 - 1),), "SETTINGS_MAX_FRAME_SIZE=2^24-1 is valid"),
                     (((INITIAL_WINDOW, MAX_WINDOW),), "SETTINGS_INITIAL_WINDOW_SIZE=2^31-1 is valid"),
                     (((MAX_STREAMS, 0),), "SETTINGS_MAX_CONCURRENT_STREAMS=0 is valid")]:
    @case("6.5.2", _why + " (acknowledged, requests still served)")
    def _(a, pairs=_pairs):
        c = Conn(a)
        c.send(settings(*pairs))
        if not c.wait(lambda: c.settings_acked >= 2):
            return False, c.observed("SETTINGS not acknowledged")
        c.send(c.request(1))
        return response(c, 1)


@case("6.5.2", "SETTINGS_HEADER_TABLE_SIZE=0 is honoured by the server's encoder")
def _(a):
    c = Conn(a, settings_pairs=((ENABLE_PUSH, 0), (TABLE_SIZE, 0)))
    c.dec.max_allowed_table_size = 0  # a size update above 0 or a dynamic reference now fails
    c.dec.header_table_size = 0
    for sid in (1, 3, 5):
        c.send(c.request(sid))
        ok, detail = response(c, sid, also_alive=False)
        bad = [f for fs in c.hdrs.get(sid, []) for f in fs if f[0] == "hpack-error"]
        if not ok or bad:
            return False, detail + (" hpack: %s" % bad if bad else "")
    return alive(c)


# ============================================================================ 6.5.3 sync
@case("6.5.3", "several INITIAL_WINDOW_SIZE values in one frame: the last one applies")
def _(a):
    c = Conn(a, settings_pairs=((ENABLE_PUSH, 0), (INITIAL_WINDOW, 100), (INITIAL_WINDOW, 1)))
    c.send(c.request(1))
    c.wait(lambda: c.received(1) > 0 or 1 in c.ended or 1 in c.rst)
    alive(c)
    n = c.received(1)
    return n == 1, c.observed("DATA octets received with a window of 1: %d" % n)


@case("6.5.3", "SETTINGS without ACK is acknowledged by the server")
def _(a):
    c = Conn(a)
    c.send(settings((INITIAL_WINDOW, 65535), (MAX_HEADER_LIST, 65536)))
    return c.wait(lambda: c.settings_acked >= 2), c.observed()


# ============================================================================ 6.7 PING
@case("6.7", "PING is answered with an ACK carrying the same payload")
def _(a):
    c = Conn(a)
    c.send(ping(b"\x00\xffh2ping"))
    return c.wait(lambda: b"\x00\xffh2ping" in c.acks), c.observed()


@case("6.7", "a PING ACK from the client is not answered")
def _(a):
    c = Conn(a)
    c.send(ping(b"ackacka!", ack=True), ping(b"question"))
    c.wait(lambda: b"question" in c.acks)
    return c.acks == [b"question"], c.observed("ACKs received: %r" % c.acks)


@case("6.7", "PING on a non-zero stream: connection error PROTOCOL_ERROR")
def _(a):
    c = Conn(a)
    c.send(raw(PING, 0, 1, b"12345678"))
    return conn_error(c, PROTO)


@case("6.7", "PING of 6 octets: connection error FRAME_SIZE_ERROR")
def _(a):
    c = Conn(a)
    c.send(raw(PING, 0, 0, b"123456"))
    return conn_error(c, FRAME_SIZE)


@case("6.7", "PING ACK of 10 octets: connection error FRAME_SIZE_ERROR")
def _(a):
    c = Conn(a)
    c.send(raw(PING, ACK, 0, b"1234567890"))
    return conn_error(c, FRAME_SIZE)


# ============================================================================ 6.8 GOAWAY
@case("6.8", "GOAWAY on a non-zero stream: connection error PROTOCOL_ERROR")
def _(a):
    c = Conn(a)
    c.send(goaway(0, "NO_ERROR", sid=1))
    return conn_error(c, PROTO)


@case("6.8", "GOAWAY of 4 octets (too short): connection error FRAME_SIZE_ERROR")
def _(a):
    c = Conn(a)
    c.send(raw(GOAWAY, 0, 0, b"\x00\x00\x00\x00"))
    return conn_error(c, FRAME_SIZE)


# ============================================================================ 6.9 WINDOW_UPDATE
@case("6.9", "WINDOW_UPDATE of 0 on the connection: connection error PROTOCOL_ERROR")
def _(a):
    c = Conn(a)
    c.send(window_update(0, 0))
    return conn_error(c, PROTO)


@case("6.9", "WINDOW_UPDATE of 0 on a stream: stream error PROTOCOL_ERROR")
def _(a):
    c = Conn(a)
    c.send(c.request(1, "POST", es=False), window_update(1, 0))
    return stream_error(c, 1, PROTO)


@case("6.9", "WINDOW_UPDATE of 3 octets on stream 0: connection error FRAME_SIZE_ERROR")
def _(a):
    c = Conn(a)
    c.send(raw(WINDOW_UPDATE, 0, 0, b"\x00\x00\x01"))
    return conn_error(c, FRAME_SIZE)


@case("6.9", "WINDOW_UPDATE of 5 octets on a stream: connection error FRAME_SIZE_ERROR")
def _(a):
    c = Conn(a)
    c.send(c.request(1, "POST", es=False), raw(WINDOW_UPDATE, 0, 1, b"\x00\x00\x00\x01\x00"))
    return conn_error(c, FRAME_SIZE)


@case("6.9", "the reserved bit of the window increment is ignored")
def _(a):
    c = Conn(a)  # R bit + increment 1: reading it as 2^31+1 would be a false overflow
    c.send(window_update(0, 0x80000001))
    return alive(c)


# ============================================================================ 6.9.1 window
@case("6.9.1", "with SETTINGS_INITIAL_WINDOW_SIZE=1 the server sends 1 octet of DATA")
def _(a):
    c = Conn(a, settings_pairs=((ENABLE_PUSH, 0), (INITIAL_WINDOW, 1)))
    c.send(c.request(1))
    c.wait(lambda: c.received(1) > 0 or 1 in c.ended or 1 in c.rst)
    alive(c)  # a round trip, so that excess DATA would have shown up
    n = c.received(1)
    return n == 1, c.observed("DATA octets received with a window of 1: %d" % n)


@case("6.9.1", "a stream WINDOW_UPDATE lets the server finish the response")
def _(a):
    c = Conn(a, settings_pairs=((ENABLE_PUSH, 0), (INITIAL_WINDOW, 1)))
    c.send(c.request(1))
    if not c.wait(lambda: c.received(1) > 0 or 1 in c.ended):
        return False, c.observed("no DATA with a window of 1")
    c.send(window_update(1, 65535))
    return response(c, 1)


@case("6.9.1", "connection window above 2^31-1: connection error FLOW_CONTROL_ERROR")
def _(a):
    c = Conn(a)
    c.send(window_update(0, MAX_WINDOW), window_update(0, MAX_WINDOW))
    return conn_error(c, FLOW)


@case("6.9.1", "stream window above 2^31-1: stream error FLOW_CONTROL_ERROR")
def _(a):
    c = Conn(a)
    c.send(c.request(1, "POST", es=False), window_update(1, MAX_WINDOW), window_update(1, MAX_WINDOW))
    return stream_error(c, 1, FLOW)


# ============================================================================ 6.9.2 initial
@case("6.9.2", "raising SETTINGS_INITIAL_WINDOW_SIZE releases DATA on an open stream")
def _(a):
    c = Conn(a, settings_pairs=((ENABLE_PUSH, 0), (INITIAL_WINDOW, 0)))
    c.send(c.request(1))
    c.wait(lambda: 1 in c.hdrs or 1 in c.rst)
    alive(c)
    early = c.received(1)
    c.send(settings((INITIAL_WINDOW, 65535)))
    ok, detail = response(c, 1)
    return ok and early == 0 and c.received(1) > 0, detail + "; DATA octets before: %d" % early


@case("6.9.2", "a window made negative by SETTINGS is honoured until credit returns")
def _(a):
    c = Conn(a, settings_pairs=((ENABLE_PUSH, 0), (INITIAL_WINDOW, 1)))
    c.send(c.request(1))
    if not c.wait(lambda: c.received(1) > 0) or 1 in c.ended:
        return False, c.observed("needs a response body of at least 2 octets")
    c.send(settings((INITIAL_WINDOW, 0)))  # window 0 - 1 = -1
    c.wait(lambda: c.settings_acked >= 2)
    c.send(window_update(1, 1))  # window 0: still nothing may be sent
    alive(c)
    held = c.received(1)
    c.send(window_update(1, 1))  # window 1: one more octet
    c.wait(lambda: c.received(1) > held or 1 in c.rst)
    ok = held == 1 and c.received(1) == 2
    return ok, c.observed("octets: 1 before, %d at window 0, %d at window 1" % (held, c.received(1)))


@case("6.9.2", "SETTINGS_INITIAL_WINDOW_SIZE overflowing an open stream: FLOW_CONTROL_ERROR")
def _(a):
    c = Conn(a, settings_pairs=((ENABLE_PUSH, 0), (INITIAL_WINDOW, 0)))
    # The stream window goes to 2^31-1, then +65536 from the new initial size: the server
    # can have spent at most 65535 octets (its connection window) in between.
    c.send(c.request(1, "POST", es=False))
    c.send(window_update(1, MAX_WINDOW), settings((INITIAL_WINDOW, 65536)))
    return conn_error(c, FLOW)


# ============================================================================ 6.10 CONTINUATION
@case("6.10", "a field block split over HEADERS and several CONTINUATION frames is answered")
def _(a):
    c = Conn(a)
    b = c.block(c.req(extra=[("x-split", "continuation")]))
    c.send(headers(1, b[:3], eh=False), cont(1, b[3:6], eh=False), cont(1, b"", eh=False),
           cont(1, b[6:]))
    return response(c, 1)


@case("6.10", "CONTINUATION followed by a non-CONTINUATION frame: connection error PROTOCOL_ERROR")
def _(a):
    c = Conn(a)
    b = c.block(c.req())
    c.send(headers(1, b[:2], eh=False), cont(1, b[2:4], eh=False), data(1, b"x"), cont(1, b[4:]))
    return conn_error(c, PROTO)


@case("6.10", "CONTINUATION on stream 0: connection error PROTOCOL_ERROR")
def _(a):
    c = Conn(a)
    b = c.block(c.req())
    c.send(headers(1, b[:2], eh=False), raw(CONTINUATION, END_HEADERS, 0, b[2:]))
    return conn_error(c, PROTO)


@case("6.10", "CONTINUATION after HEADERS with END_HEADERS: connection error PROTOCOL_ERROR")
def _(a):
    c = Conn(a)
    c.send(c.request(1, "POST", es=False), cont(1, c.block([("x-more", "1")])))
    return conn_error(c, PROTO)


@case("6.10", "CONTINUATION after a CONTINUATION with END_HEADERS: connection error PROTOCOL_ERROR")
def _(a):
    c = Conn(a)
    b = c.block(c.req("POST"))
    c.send(headers(1, b[:2], es=False, eh=False), cont(1, b[2:]), cont(1, c.block([("x-more", "1")])))
    return conn_error(c, PROTO)


@case("6.10", "CONTINUATION after DATA: connection error PROTOCOL_ERROR")
def _(a):
    c = Conn(a)
    c.send(c.request(1, "POST", es=False), data(1, b"x"), cont(1, c.block([("x-more", "1")])))
    return conn_error(c, PROTO)


@case("6.10", "CONTINUATION on another stream than the HEADERS: connection error PROTOCOL_ERROR")
def _(a):
    c = Conn(a)
    b = c.block(c.req())
    c.send(headers(1, b[:2], eh=False), cont(3, b[2:]))
    return conn_error(c, PROTO)


# ============================================================================ 8.1 messages
@case("8.1", "GET is answered with a final status")
def _(a):
    c = Conn(a)
    c.send(c.request(1))
    return response(c, 1)


@case("8.1", "HEAD is answered without content")
def _(a):
    c = Conn(a)
    c.send(c.request(1, "HEAD"))
    ok, detail = response(c, 1)
    return ok and not c.body.get(1), detail + "; body %d octets" % len(c.body.get(1, b""))


@case("8.1", "POST with a body over several DATA frames is answered")
def _(a):
    c = Conn(a)
    c.send(c.request(1, "POST", es=False), data(1, b"a" * 1000), data(1, b"b" * 1000),
           data(1, b"c", es=True))
    return response(c, 1)


@case("8.1", "POST with trailers (HEADERS with END_STREAM after DATA) is answered")
def _(a):
    c = Conn(a)
    c.send(c.request(1, "POST", es=False, extra=[("te", "trailers")]), data(1, b"body"),
           headers(1, c.block([("x-trailer", "done")])))
    return response(c, 1)


@case("8.1", "a second HEADERS without END_STREAM (trailers must end the stream): PROTOCOL_ERROR")
def _(a):
    c = Conn(a)
    c.send(c.request(1, "POST", es=False), data(1, b"body"),
           headers(1, c.block([("x-trailer", "done")]), es=False))
    return stream_error(c, 1, PROTO)


@case("8.1", "DATA after trailers with END_STREAM: STREAM_CLOSED")
def _(a):
    c = Conn(a)
    c.send(c.request(1, "POST", es=False), data(1, b"body"),
           headers(1, c.block([("x-trailer", "done")])), data(1, b"late"))
    return stream_error(c, 1, STREAM_CLOSED)


# ============================================================================ 8.1.1 malformed
@case("8.1.1", "content-length greater than the DATA received: stream error PROTOCOL_ERROR")
def _(a):
    c = Conn(a)
    c.send(c.request(1, "POST", es=False, extra=[("content-length", "10")]), data(1, b"abcd", es=True))
    return stream_error(c, 1, PROTO)


@case("8.1.1", "content-length less than the DATA received: stream error PROTOCOL_ERROR")
def _(a):
    c = Conn(a)
    c.send(c.request(1, "POST", es=False, extra=[("content-length", "4")]),
           data(1, b"abc"), data(1, b"def", es=True))
    return stream_error(c, 1, PROTO)


@case("8.1.1", "content-length: 4 on HEADERS that ends the stream: stream error PROTOCOL_ERROR")
def _(a):
    return malformed(a, [(":method", "POST")] + base(a)[1:] + [("content-length", "4")])


@case("8.1.1", "content-length equal to the sum of the DATA frames is accepted")
def _(a):
    c = Conn(a)
    c.send(c.request(1, "POST", es=False, extra=[("content-length", "6")]),
           data(1, b"abc"), data(1, b"def", es=True))
    return response(c, 1)


# ============================================================================ 8.2 fields
_MALFORMED = [
    ("8.2", "a field name with uppercase letters", lambda a: base(a) + [("X-Upper", "1")]),
    ("8.2.1", "a field name containing a space", lambda a: base(a) + [("x bad", "1")]),
    ("8.2.1", "a field name containing a colon", lambda a: base(a) + [("x:bad", "1")]),
    ("8.2.1", "an empty field name", lambda a: base(a) + [("", "1")]),
    ("8.2.1", "a field value containing LF", lambda a: base(a) + [("x-bad", "a\nb")]),
    ("8.2.1", "a field value containing CR", lambda a: base(a) + [("x-bad", "a\rb")]),
    ("8.2.1", "a field value containing NUL", lambda a: base(a) + [("x-bad", "a\x00b")]),
    ("8.2.2", "the connection field", lambda a: base(a) + [("connection", "keep-alive")]),
    ("8.2.2", "the keep-alive field", lambda a: base(a) + [("keep-alive", "timeout=5")]),
    ("8.2.2", "the proxy-connection field", lambda a: base(a) + [("proxy-connection", "keep-alive")]),
    ("8.2.2", "the transfer-encoding field", lambda a: base(a) + [("transfer-encoding", "chunked")]),
    ("8.2.2", "the upgrade field", lambda a: base(a) + [("upgrade", "websocket")]),
    ("8.2.2", "te with a value other than trailers", lambda a: base(a) + [("te", "trailers, deflate")]),
    ("8.3", "an unknown pseudo-header", lambda a: base(a) + [(":custom", "1")]),
    ("8.3", "a response pseudo-header in a request", lambda a: base(a) + [(":status", "200")]),
    ("8.3", "a pseudo-header after a regular field",
     lambda a: base(a)[:3] + [("x-regular", "1"), base(a)[3]]),
    ("8.3", "a duplicated :authority", lambda a: base(a) + [(":authority", a.authority)]),
    ("8.3.1", "an empty :path", lambda a: [(k, "" if k == ":path" else v) for k, v in base(a)]),
    ("8.3.1", "no :method", lambda a: base(a)[1:]),
    ("8.3.1", "no :scheme", lambda a: [f for f in base(a) if f[0] != ":scheme"]),
    ("8.3.1", "no :path", lambda a: [f for f in base(a) if f[0] != ":path"]),
    ("8.3.1", "a duplicated :method", lambda a: base(a)[:1] + base(a)),
    ("8.3.1", "a duplicated :scheme", lambda a: base(a)[:2] + base(a)[1:]),
    ("8.3.1", "a duplicated :path", lambda a: base(a)[:3] + base(a)[2:]),
    ("8.5", "CONNECT without :authority", lambda a: [(":method", "CONNECT")]),
    ("8.5", "CONNECT with :scheme and :path (no :protocol)",
     lambda a: [(":method", "CONNECT")] + base(a)[1:]),
]


@case("8.2", "field names and values with allowed characters (incl. obs-text) are accepted")
def _(a):
    c = Conn(a)
    c.send(c.request(1, extra=[("x-chars", "!#$%&'*+-.^_`|~ \tvalue\x80\xff end"),
                               ("x-empty", "")]))
    return response(c, 1)


@case("8.2.2", "te: trailers is accepted")
def _(a):
    c = Conn(a)
    c.send(c.request(1, extra=[("te", "trailers")]))
    return response(c, 1)


for _sec, _what, _fields in _MALFORMED:
    @case(_sec, "request with %s: stream error PROTOCOL_ERROR" % _what)
    def _(a, fields=_fields):
        return malformed(a, fields(a))


@case("8.3", "a pseudo-header in trailers: stream error PROTOCOL_ERROR")
def _(a):
    c = Conn(a)
    c.send(c.request(1, "POST", es=False), data(1, b"body"), headers(1, c.block([(":method", "GET")])))
    return stream_error(c, 1, PROTO)


@case("8.3.1", "no :authority but a host field is accepted")
def _(a):
    c = Conn(a)
    c.send(headers(1, c.block(base(a)[:3] + [("host", a.authority)])))
    return response(c, 1)


@case("8.4", "PUSH_PROMISE from a client: connection error PROTOCOL_ERROR")
def _(a):
    c = Conn(a)
    c.send(c.request(1, "POST", es=False),
           raw(PUSH_PROMISE, END_HEADERS, 1, struct.pack(">I", 2) + c.block(c.req())))
    return conn_error(c, PROTO)


@case("8.5", "CONNECT with only :authority is handled (any answer, connection stays up)")
def _(a):
    # Whether to tunnel is the server's choice: a 2xx, a 4xx/5xx or a RST_STREAM (e.g.
    # REFUSED_STREAM, CONNECT_ERROR) are all fine; a connection error is not.
    c = Conn(a)
    c.send(headers(1, c.block([(":method", "CONNECT"), (":authority", "127.0.0.1:9")]), es=False))
    c.wait(lambda: 1 in c.hdrs or 1 in c.rst or c.goaway)
    ok, detail = alive(c)
    return ok and (1 in c.hdrs or 1 in c.rst), detail


# ============================================================================ RFC 7541 HPACK
def _hpack_bad(block):
    def run(a):
        c = Conn(a)
        c.send(headers(1, block(c)))
        return conn_error(c, COMPRESSION)
    return run


_PSEUDO = b"\x82\x86\x84"  # static indices: :method GET, :scheme http, :path /
for _sec, _what, _block in [
        ("hpack-2.3", "an indexed field beyond both tables", lambda c: _PSEUDO + hp_int(70, 7, 0x80)),
        ("hpack-2.3", "a literal whose name index is beyond both tables",
         lambda c: _PSEUDO + hp_int(70, 4) + hp_str("x")),
        ("hpack-4.2", "a dynamic table size update after a field",
         lambda c: _PSEUDO + hp_literal(":authority", c.a.authority) + hp_int(0, 5, 0x20)),
        ("hpack-4.2", "a size update above SETTINGS_HEADER_TABLE_SIZE",
         lambda c: hp_int(c.peer.get(TABLE_SIZE, 4096) + 1, 5, 0x20) + _PSEUDO),
        ("hpack-5.1", "an integer that overflows", lambda c: _PSEUDO + b"\xff" + b"\xff" * 10 + b"\x7f"),
        ("hpack-5.2", "Huffman padding longer than 7 bits",
         lambda c: _PSEUDO + b"\x00" + hp_str("x-h") + hp_str("", b"\x1f\xff")),
        ("hpack-5.2", "Huffman padding that is not a prefix of EOS",
         lambda c: _PSEUDO + b"\x00" + hp_str("x-h") + hp_str("", b"\x18")),
        ("hpack-5.2", "a Huffman string containing EOS",
         lambda c: _PSEUDO + b"\x00" + hp_str("x-h") + hp_str("", b"\x1f\xff\xff\xff\xff")),
        ("hpack-6", "an indexed field with index 0", lambda c: _PSEUDO + b"\x80")]:
    case(_sec, "%s: connection error COMPRESSION_ERROR" % _what)(_hpack_bad(_block))


@case("hpack-2.3", "references to the dynamic table across requests are decoded")
def _(a):
    c = Conn(a)
    for sid in (1, 3, 5):  # hpack.Encoder indexes fields; later requests refer to them
        c.send(c.request(sid, extra=[("x-repeat", "same value every time")]))
        ok, detail = response(c, sid, also_alive=False)
        if not ok:
            return ok, detail
    return alive(c)


@case("hpack-4.2", "two size updates at the start of a block (0, then 4096) are accepted")
def _(a):
    c = Conn(a)
    c.send(headers(1, hp_int(0, 5, 0x20) + hp_int(4096, 5, 0x20) + _PSEUDO
                   + hp_literal(":authority", a.authority)))
    return response(c, 1)


@case("hpack-4.2", "a size update to 0 evicts entries: referring to one is COMPRESSION_ERROR")
def _(a):
    c = Conn(a)
    c.send(headers(1, _PSEUDO + b"\x41" + hp_str(a.authority)))  # :authority, indexed as 62
    ok, detail = response(c, 1, also_alive=False)
    if not ok:
        return ok, detail
    c.send(headers(3, hp_int(0, 5, 0x20) + hp_int(4096, 5, 0x20) + _PSEUDO + hp_int(62, 7, 0x80)))
    return conn_error(c, COMPRESSION)


@case("hpack-5.2", "plain and Huffman-coded literals are both accepted")
def _(a):
    c = Conn(a)
    huff = hpack.Encoder().encode([("x-huff", "hello world")], huffman=True)
    c.send(headers(1, _PSEUDO + hp_literal(":authority", a.authority) + huff))
    return response(c, 1)


@case("hpack-6", "never-indexed and without-indexing literals are accepted")
def _(a):
    c = Conn(a)
    c.send(headers(1, _PSEUDO + b"\x10" + hp_str(":authority") + hp_str(a.authority)
                   + b"\x00" + hp_str("x-plain") + hp_str("v")))
    return response(c, 1)


# ----------------------------------------------------------------------------- runner
def selected(cases, spec):
    if not spec:
        return cases
    wanted = [s.strip() for s in spec.split(",") if s.strip()]
    return [x for x in cases
            if any(x[0] == w or x[1] == w or x[1].startswith(w + ".") or x[1].startswith(w + "-")
                   for w in wanted)]


def run_case(a, fn):
    try:
        ok, detail = fn(a)
    except Handshake as e:
        ok, detail = False, "setup failed: %s" % e
    except Exception as e:  # noqa: BLE001 - a broken case or socket failure is a failed case
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
    p.add_argument("--timeout", type=float, default=TIMEOUT, help="bound on each wait (s)")
    p.add_argument("--require-goaway", action="store_true",
                   help="a connection error must show a GOAWAY (a bare close fails)")
    p.add_argument("--list", action="store_true", help="list the cases and exit")
    p.add_argument("--verbose", action="store_true", help="also print a progress line to stderr")
    a = p.parse_args()
    cases = selected(CASES, a.sections)
    if a.list:
        for cid, sec, desc, _ in cases:
            print("%-14s %-48s %s" % (cid, "%s %s" % (sec, TITLES.get(sec, "")), desc))
        return 0
    if not a.target:
        p.error("--target is required")
    host, _, port = a.target.rpartition(":")
    a.addr, a.authority = (host, int(port)), a.authority or a.target
    passed = failed = 0
    for cid, sec, desc, fn in cases:
        t0 = time.monotonic()
        ok, detail = run_case(a, fn)
        passed, failed = passed + ok, failed + (not ok)
        print(json.dumps({"id": cid, "section": "%s %s" % (sec, TITLES.get(sec, "")), "desc": desc,
                          "ok": ok, "detail": detail}), flush=True)
        if a.verbose:
            print("%s %-12s %.2fs %s" % ("PASS" if ok else "FAIL", cid, time.monotonic() - t0, desc),
                  file=sys.stderr, flush=True)
    print("%d passed, %d failed" % (passed, failed), flush=True)
    return 0 if failed == 0 and cases else 1


if __name__ == "__main__":
    sys.exit(main())
