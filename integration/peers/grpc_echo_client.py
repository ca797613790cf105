"""gRPC client that exercises grpc_echo_server.py, directly or through a proxy.

Runs every call shape (unary, large unary, server/client/bidi streaming) plus
the two error methods, and checks bodies, initial metadata, trailers, status
codes and details.  Prints one JSON line per check and exits 0 iff all pass.

Usage: grpc_echo_client.py --target HOST:PORT [--authority NAME]
"""
import argparse
import json
import os
import queue
import sys

import grpc

SERVICE = "/remora.test.Echo/"
DEADLINE = 10.0
RESULTS = []


def report(name, ok, detail=None):
    RESULTS.append(bool(ok))
    print(json.dumps({"check": name, "ok": bool(ok), "detail": detail}), flush=True)


def md(metadata):
    return {k: v for k, v in (metadata or ())}


def run(name, fn):
    try:
        ok, detail = fn()
    except grpc.RpcError as e:
        ok, detail = False, {"code": e.code().name, "details": e.details()}
    except Exception as e:  # noqa: BLE001 - any failure is a failed check
        ok, detail = False, {"error": "%s: %s" % (type(e).__name__, e)}
    report(name, ok, detail)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", required=True)
    parser.add_argument("--authority")
    args = parser.parse_args()
    options = [("grpc.max_receive_message_length", 16 << 20),
               ("grpc.max_send_message_length", 16 << 20)]
    if args.authority:
        options.append(("grpc.default_authority", args.authority))
    channel = grpc.insecure_channel(args.target, options=options)
    uu = lambda m: channel.unary_unary(SERVICE + m)  # noqa: E731
    us = channel.unary_stream(SERVICE + "ServerStream")
    su = channel.stream_unary(SERVICE + "ClientStream")
    ss = channel.stream_stream(SERVICE + "BidiStream")

    def unary():
        body, call = uu("Unary").with_call(
            b"hello remora", timeout=DEADLINE, metadata=(("x-request-id", "req-42"),))
        init, trail = md(call.initial_metadata()), md(call.trailing_metadata())
        ok = (body == b"hello remora" and init.get("x-echo-header") == "yes"
              and trail.get("x-echo-trailer") == "unary"
              and trail.get("x-seen-request-id") == "req-42")
        return ok, {"body": body.decode(), "initial": init, "trailing": trail}

    def unary_large():
        payload = os.urandom(1 << 20)
        body, call = uu("Unary").with_call(payload, timeout=DEADLINE)
        trail = md(call.trailing_metadata())
        return (body == payload and trail.get("x-echo-trailer") == "unary",
                {"sent": len(payload), "received": len(body), "equal": body == payload})

    def server_stream():
        call = us(b"100", timeout=DEADLINE)
        got = list(call)
        trail = md(call.trailing_metadata())
        want = [b"msg-%d" % i for i in range(100)]
        return (got == want and trail.get("x-echo-trailer") == "server-stream",
                {"received": len(got), "in_order": got == want, "trailing": trail})

    def client_stream():
        parts = [b"part-%02d;" % i for i in range(50)]
        body = su(iter(parts), timeout=DEADLINE)
        return body == b"".join(parts), {"sent": len(parts), "received_bytes": len(body)}

    def bidi():
        outbox = queue.Queue()

        def requests():
            while True:
                item = outbox.get(timeout=DEADLINE)
                if item is None:
                    return
                yield item

        call = ss(requests(), timeout=DEADLINE)
        mismatches = []
        for i in range(20):
            msg = b"bidi-%d" % i
            outbox.put(msg)  # send one, wait for its echo before sending the next
            reply = next(call)
            if reply != b"echo:" + msg:
                mismatches.append({"sent": msg.decode(), "got": reply.decode("latin1")})
        outbox.put(None)
        rest = list(call)
        ok = not mismatches and not rest and call.code() == grpc.StatusCode.OK
        return ok, {"exchanged": 20, "mismatches": mismatches, "extra": len(rest)}

    def expect_error(method, code, details=None, trailer=None):
        def check():
            try:
                uu(method).with_call(b"x", timeout=DEADLINE)
                return False, {"error": "call unexpectedly succeeded"}
            except grpc.RpcError as e:
                trail = md(e.trailing_metadata())
                ok = e.code() == code
                ok = ok and (details is None or e.details() == details)
                ok = ok and (trailer is None or trail.get("x-echo-trailer") == trailer)
                return ok, {"code": e.code().name, "details": e.details(), "trailing": trail}
        return check

    run("unary", unary)
    run("unary_1mib", unary_large)
    run("server_stream_100", server_stream)
    run("client_stream_50", client_stream)
    run("bidi_stream_20", bidi)
    run("fail_invalid_argument",
        expect_error("Fail", grpc.StatusCode.INVALID_ARGUMENT, "bad input", "fail"))
    # Details are checked too so that "proxy could not reach the upstream" (also
    # UNAVAILABLE) is not mistaken for the server's own UNAVAILABLE.
    run("unavailable", expect_error("Unavailable", grpc.StatusCode.UNAVAILABLE,
                                    "unavailable on purpose"))
    channel.close()
    return 0 if RESULTS and all(RESULTS) else 1


if __name__ == "__main__":
    sys.exit(main())
