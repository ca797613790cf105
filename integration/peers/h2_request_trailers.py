#!/usr/bin/env python3
"""Sends one HTTP/2 (h2c prior knowledge) POST /echo whose body ends with a trailer
(x-checksum: abc123), using the hyper-h2 library, and prints the response body.

Usage: h2_request_trailers.py --target HOST:PORT [--authority NAME]
Exits 0 with the body on stdout once the response completes; 1 on any failure. Every socket
wait is bounded (5 s), the whole exchange by a 15 s deadline.
"""
import argparse
import socket
import sys
import time

import h2.config
import h2.connection
import h2.events


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--target", required=True)
    ap.add_argument("--authority", default="localhost")
    args = ap.parse_args()
    host, port = args.target.rsplit(":", 1)
    sock = socket.create_connection((host, int(port)), timeout=5)
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    conn.initiate_connection()
    sid = conn.get_next_available_stream_id()
    conn.send_headers(sid, [(":method", "POST"), (":scheme", "http"),
                            (":authority", args.authority), (":path", "/echo"),
                            ("te", "trailers")])
    conn.send_data(sid, b"hello")
    conn.send_headers(sid, [("x-checksum", "abc123")], end_stream=True)
    sock.sendall(conn.data_to_send())
    body, status, done = b"", None, False
    deadline = time.monotonic() + 15
    while not done and time.monotonic() < deadline:
        data = sock.recv(65535)
        if not data:
            break
        for event in conn.receive_data(data):
            if isinstance(event, h2.events.ResponseReceived):
                status = dict(event.headers).get(b":status")
            elif isinstance(event, h2.events.DataReceived):
                body += event.data
                conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            elif isinstance(event, (h2.events.StreamEnded, h2.events.StreamReset)):
                done = True
        sock.sendall(conn.data_to_send())
    sock.close()
    if not done or status != b"200":
        print(f"no complete 200 response (status {status!r}): {body!r}", file=sys.stderr)
        return 1
    print(body.decode())
    return 0


if __name__ == "__main__":
    sys.exit(main())
