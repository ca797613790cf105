"""Opaque TCP peers for Remora's L4 (TCP proxy) integration tests.

Subcommands:
  echo-server --port P         reads until EOF, then writes back ``ECHO:`` + all
                               it read and closes: a client that half-closes
                               (shutdown write) must still get the reply, so
                               this tests half-close propagation through a proxy.
  banner-server --port P       server-speaks-first: sends ``220 remora-test
                               ready\\r\\n`` on accept, answers each line with
                               ``250 <line>`` until ``QUIT``, then ``221 bye`` and close.
  banner-client --target H:P   waits for the banner without sending first, then
                               HELO / QUIT; checks every reply.
  halfclose-client --target H:P --size N
                               sends N random bytes, shuts down its write side,
                               reads to EOF and checks the reply is ``ECHO:`` + data.

Servers print ``LISTENING <port>`` once ready and serve many connections at
once (one thread each).  Clients print one JSON line per check and exit 0 iff
all pass.
"""
import argparse
import hashlib
import json
import os
import signal
import socket
import socketserver
import sys
import threading
import time

OP_TIMEOUT = 5.0          # every client socket operation
SERVER_IDLE_TIMEOUT = 30.0  # server side: drop a connection idle this long
BANNER = b"220 remora-test ready\r\n"
RESULTS = []


def report(name, ok, detail=None):
    RESULTS.append(bool(ok))
    print(json.dumps({"check": name, "ok": bool(ok), "detail": detail}), flush=True)


def send_all(sock, data):
    view, off = memoryview(data), 0
    while off < len(view):  # bounded: each send() makes progress or times out
        off += sock.send(view[off:off + 65536])


class EchoHandler(socketserver.BaseRequestHandler):
    def handle(self):
        sock = self.request
        sock.settimeout(SERVER_IDLE_TIMEOUT)
        chunks = []
        try:
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                chunks.append(chunk)
            send_all(sock, b"ECHO:" + b"".join(chunks))
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass


class BannerHandler(socketserver.BaseRequestHandler):
    def handle(self):
        sock = self.request
        sock.settimeout(SERVER_IDLE_TIMEOUT)
        buf = b""
        try:
            send_all(sock, BANNER)
            while True:
                while b"\n" not in buf:
                    chunk = sock.recv(4096)
                    if not chunk or len(buf) > 65536:
                        return
                    buf += chunk
                line, buf = buf.split(b"\n", 1)
                line = line.rstrip(b"\r")
                if line == b"QUIT":
                    send_all(sock, b"221 bye\r\n")
                    sock.shutdown(socket.SHUT_WR)
                    return
                send_all(sock, b"250 " + line + b"\r\n")
        except OSError:
            pass


class Server(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True
    request_queue_size = 512


def serve(handler, port):
    server = Server(("127.0.0.1", port), handler)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2},
                              daemon=True)
    thread.start()
    print("LISTENING %d" % server.server_address[1], flush=True)
    while not stop.wait(1.0):
        pass
    server.shutdown()
    server.server_close()
    return 0


def connect(target):
    host, port = target.rsplit(":", 1)
    return socket.create_connection((host.strip("[]"), int(port)), timeout=OP_TIMEOUT)


def read_line(sock, buf, deadline):
    """Return (line without CRLF, rest of buffer); raises on EOF or deadline."""
    while b"\r\n" not in buf:
        if time.monotonic() > deadline:
            raise TimeoutError("no complete line before deadline; got %r" % buf)
        chunk = sock.recv(4096)
        if not chunk:
            raise EOFError("connection closed; got %r" % buf)
        buf += chunk
    line, rest = buf.split(b"\r\n", 1)
    return line, rest


def banner_client(target):
    try:
        sock = connect(target)
    except OSError as e:
        report("connect", False, {"error": str(e)})
        return 1
    buf = b""
    steps = [("banner", None, b"220 remora-test ready"),
             ("helo", b"HELO x\r\n", b"250 HELO x"),
             ("quit", b"QUIT\r\n", b"221 bye")]
    with sock:
        for name, send, want in steps:
            try:
                if send:
                    send_all(sock, send)
                line, buf = read_line(sock, buf, time.monotonic() + OP_TIMEOUT)
                report(name, line == want, {"got": line.decode("latin1")})
            except (OSError, EOFError) as e:
                report(name, False, {"error": "%s: %s" % (type(e).__name__, e)})
                return 1
        try:
            tail = sock.recv(4096)
            report("closed_after_quit", tail == b"" and buf == b"", {"extra": (buf + tail).hex()})
        except OSError as e:
            report("closed_after_quit", False, {"error": str(e)})
    return 0 if all(RESULTS) else 1


def halfclose_client(target, size):
    data = os.urandom(size)
    try:
        sock = connect(target)
    except OSError as e:
        report("connect", False, {"error": str(e)})
        return 1
    chunks, deadline = [], time.monotonic() + 30 + size / 10e6
    with sock:
        try:
            send_all(sock, data)
            sock.shutdown(socket.SHUT_WR)
            while time.monotonic() < deadline:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                chunks.append(chunk)
            else:
                raise TimeoutError("no EOF before deadline")
        except OSError as e:
            report("halfclose_echo", False, {"error": "%s: %s" % (type(e).__name__, e),
                                             "received": sum(map(len, chunks))})
            return 1
    reply = b"".join(chunks)
    want = b"ECHO:" + data
    report("halfclose_echo", reply == want,
           {"sent": size, "received": len(reply), "expected": len(want),
            "sha256_match": hashlib.sha256(reply).digest() == hashlib.sha256(want).digest()})
    return 0 if all(RESULTS) else 1


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    for name in ("echo-server", "banner-server"):
        sub.add_parser(name).add_argument("--port", type=int, default=0)
    sub.add_parser("banner-client").add_argument("--target", required=True)
    hc = sub.add_parser("halfclose-client")
    hc.add_argument("--target", required=True)
    hc.add_argument("--size", type=int, default=65536)
    args = parser.parse_args()
    if args.cmd == "echo-server":
        return serve(EchoHandler, args.port)
    if args.cmd == "banner-server":
        return serve(BannerHandler, args.port)
    if args.cmd == "banner-client":
        return banner_client(args.target)
    return halfclose_client(args.target, args.size)


if __name__ == "__main__":
    sys.exit(main())
