"""Raw HTTP/2 client machinery shared by h2_edge.py (not a test by itself).

``Peer`` is one h2c (prior-knowledge) TCP connection that sends hand-made
bytes (built with ``hyperframe``/``hpack``) and parses whatever the server
sends back into an outcome summary: GOAWAY code, RST_STREAM codes, response
statuses, WINDOW_UPDATE credit, PING ACKs, EOF/reset.  ``h2_get`` is a
well-behaved GET made with the ``h2`` library, used as the health probe.
Every socket operation is bounded by OP_TIMEOUT and every loop by a deadline.
"""
import json
import select
import socket
import time
from collections import Counter

import h2.config
import h2.connection
import h2.events
import hpack
from h2.errors import ErrorCodes
from hyperframe.frame import (ContinuationFrame, DataFrame, Frame, GoAwayFrame, HeadersFrame,
                              PingFrame, RstStreamFrame, SettingsFrame, WindowUpdateFrame)

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
CODES = {c.value: c.name for c in ErrorCodes}
OP_TIMEOUT = 5.0
RESULTS = []


def report(name, ok, detail=None):
    RESULTS.append(bool(ok))
    print(json.dumps({"check": name, "ok": bool(ok), "detail": detail}, default=str), flush=True)


def request_headers(args, method="GET"):
    return [(":method", method), (":scheme", "http"), (":authority", args.authority),
            (":path", args.path), ("user-agent", "remora-h2-edge")]


def h2_get(args):
    """A well-behaved GET with the h2 library on a fresh connection; returns :status."""
    conn = h2.connection.H2Connection(h2.config.H2Configuration(header_encoding="utf-8"))
    deadline, status = time.monotonic() + OP_TIMEOUT, None
    with socket.create_connection(args.addr, timeout=OP_TIMEOUT) as sock:
        conn.initiate_connection()
        sid = conn.get_next_available_stream_id()
        conn.send_headers(sid, request_headers(args), end_stream=True)
        sock.sendall(conn.data_to_send())
        while time.monotonic() < deadline:
            data = sock.recv(65536)
            if not data:
                raise EOFError("connection closed before response ended")
            for ev in conn.receive_data(data):
                if isinstance(ev, h2.events.ResponseReceived) and ev.stream_id == sid:
                    status = int(dict(ev.headers)[":status"])
                elif isinstance(ev, h2.events.DataReceived):
                    conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                elif isinstance(ev, h2.events.StreamEnded) and ev.stream_id == sid:
                    conn.close_connection()
                    sock.sendall(conn.data_to_send())
                    return status
                elif isinstance(ev, (h2.events.StreamReset, h2.events.ConnectionTerminated)):
                    raise ConnectionError("refused: %r" % ev)
            sock.sendall(conn.data_to_send())
    raise TimeoutError("no complete response within %.0f s" % OP_TIMEOUT)


class Peer:
    """One raw HTTP/2 connection: hand-made bytes out, parsed frames in."""
    opened = []  # every socket, so the runner can close them after each case

    def __init__(self, args):
        self.args, self.sid = args, 1
        self.sock = socket.create_connection(args.addr, timeout=OP_TIMEOUT)
        Peer.opened.append(self.sock)
        self.enc, self.dec = hpack.Encoder(), hpack.Decoder()
        self.buf, self.hblock, self.raw_text = bytearray(), {}, None
        self.goaway = self.eof = self.send_error = None
        self.rst, self.status, self.ended, self.acks = {}, {}, set(), set()
        self.settings, self.got_settings, self.settings_acked = {}, False, False
        self.credit, self.counts, self.backpressure = Counter(), Counter(), False

    @property
    def closed(self):
        return bool(self.eof or self.goaway)

    def handshake(self):
        self.pump(PREFACE + SettingsFrame(0, settings={SettingsFrame.ENABLE_PUSH: 0}).serialize())
        if not self.drain(lambda: self.got_settings and self.settings_acked):
            raise ConnectionError("no SETTINGS exchange: %s" % self.summary())
        self.pump(SettingsFrame(0, flags=["ACK"]).serialize())

    def request(self, method="GET", end_stream=True):
        sid, self.sid = self.sid, self.sid + 2
        flags = ["END_HEADERS"] + (["END_STREAM"] if end_stream else [])
        return sid, HeadersFrame(sid, self.enc.encode(request_headers(self.args, method)),
                                 flags=flags).serialize()

    def pump(self, data, deadline=None):
        """Send data without reading; only if the peer stops reading us for 1 s
        (backpressure) also read, so neither side deadlocks.  True if all sent."""
        deadline = deadline or time.monotonic() + OP_TIMEOUT
        view, off, reading = memoryview(data), 0, False
        self.sock.setblocking(False)
        try:
            while off < len(view) and not self.eof and time.monotonic() < deadline:
                r, w, _ = select.select([self.sock] if reading else [], [self.sock], [], 1.0)
                if r:
                    self.read_once()
                if w:
                    try:
                        off += self.sock.send(view[off:off + 262144])
                    except BlockingIOError:
                        pass
                elif not r:
                    reading = self.backpressure = True
        except OSError as e:
            self.send_error = type(e).__name__
        finally:
            self.sock.settimeout(OP_TIMEOUT)
        return off == len(view)

    def read_once(self):
        try:
            data = self.sock.recv(262144)
        except (BlockingIOError, TimeoutError):
            return
        except OSError as e:
            self.eof = type(e).__name__
            return
        if not data:
            self.eof = "eof"
        self.feed(data)

    def drain(self, until=lambda: False, timeout=OP_TIMEOUT):
        """Read until until() holds, the connection closes or GOAWAYs, or timeout."""
        deadline = time.monotonic() + timeout
        while not until() and not self.closed and time.monotonic() < deadline:
            wait = min(1.0, max(0.0, deadline - time.monotonic()))
            if select.select([self.sock], [], [], wait)[0]:
                self.read_once()
        return until()

    def feed(self, data):
        if self.raw_text is not None or (not self.counts and data[:5] == b"HTTP/"):
            self.raw_text = (self.raw_text or b"") + data  # not HTTP/2 (e.g. an HTTP/1 reply)
            return
        self.buf += data
        while len(self.buf) >= 9:
            frame, length = Frame.parse_frame_header(memoryview(bytes(self.buf[:9])))
            if len(self.buf) < 9 + length:
                return
            frame.parse_body(memoryview(bytes(self.buf[9:9 + length])))
            del self.buf[:9 + length]
            self.on_frame(frame)

    def on_frame(self, f):
        self.counts[type(f).__name__.replace("Frame", "")] += 1
        sid, flags = f.stream_id, f.flags
        if isinstance(f, GoAwayFrame):
            self.goaway = CODES.get(f.error_code, f.error_code)
            self.goaway_info = {"last_stream_id": f.last_stream_id,
                                "debug": bytes(f.additional_data)[:200].decode("latin1")}
        elif isinstance(f, RstStreamFrame):
            self.rst.setdefault(sid, CODES.get(f.error_code, f.error_code))  # keep the first
        elif isinstance(f, SettingsFrame):
            if "ACK" in flags:
                self.settings_acked = True
            else:
                self.settings.update(f.settings)
                self.got_settings = True
        elif isinstance(f, WindowUpdateFrame):
            self.credit[sid] += f.window_increment
        elif isinstance(f, PingFrame) and "ACK" in flags:
            self.acks.add(bytes(f.opaque_data))
        elif isinstance(f, (HeadersFrame, ContinuationFrame)):
            self.hblock[sid] = self.hblock.get(sid, b"") + f.data
            if "END_HEADERS" in flags:
                try:
                    headers = dict(self.dec.decode(self.hblock.pop(sid)))
                    self.status[sid] = int(headers.get(":status", 0))
                except Exception as e:  # noqa: BLE001 - record, keep reading
                    self.status[sid] = "hpack error: %s" % e
        if isinstance(f, (HeadersFrame, DataFrame)) and "END_STREAM" in flags:
            self.ended.add(sid)

    def summary(self, **extra):
        d = {"goaway": self.goaway, "goaway_info": getattr(self, "goaway_info", None),
             "closed": self.eof, "rst": dict(list(self.rst.items())[:5]),
             "rst_count": len(self.rst),
             "status": dict(list(self.status.items())[:5]), "frames_in": dict(self.counts),
             "backpressure": self.backpressure, "still_open": not self.closed,
             "send_error": self.send_error,
             "non_h2_reply": self.raw_text[:80] if self.raw_text else None}
        d.update(extra)
        return {k: v for k, v in d.items() if v not in (None, {}, 0, False)}
