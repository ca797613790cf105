"""WebSocket client that checks an echo path end to end (directly or via a proxy).

Connects to --url, sends 10 text and 10 binary messages (one binary message
is 256 KiB), checks each echo arrives unchanged with the same type, then
closes with code 1000 and checks the close handshake completed.  Prints one
JSON line per check and exits 0 iff all pass.

Usage: ws_echo_client.py --url ws://HOST:PORT/path
"""
import argparse
import asyncio
import json
import os
import sys

from websockets.asyncio.client import connect
from websockets.protocol import State

TIMEOUT = 5.0
RESULTS = []


def report(name, ok, detail=None):
    RESULTS.append(bool(ok))
    print(json.dumps({"check": name, "ok": bool(ok), "detail": detail}), flush=True)


async def roundtrip(ws, message):
    await asyncio.wait_for(ws.send(message), TIMEOUT)
    return await asyncio.wait_for(ws.recv(), TIMEOUT)


async def amain(url):
    try:
        ws = await asyncio.wait_for(
            connect(url, max_size=16 * 1024 * 1024, open_timeout=TIMEOUT), TIMEOUT)
    except Exception as e:  # noqa: BLE001
        report("connect", False, {"error": "%s: %s" % (type(e).__name__, e)})
        return 1
    report("connect", True, {"url": url, "subprotocol": ws.subprotocol})
    messages = [("text_%d" % i, "hello %d \u00e9\u2603" % i) for i in range(10)]
    messages += [("binary_%d" % i, os.urandom(1024 * (i + 1))) for i in range(9)]
    messages.append(("binary_256kib", os.urandom(256 * 1024)))
    for name, message in messages:
        try:
            reply = await roundtrip(ws, message)
            ok = reply == message and type(reply) is type(message)
            report(name, ok, {"type": type(reply).__name__, "length": len(reply)})
        except Exception as e:  # noqa: BLE001
            report(name, False, {"error": "%s: %s" % (type(e).__name__, e)})
    try:
        await asyncio.wait_for(ws.close(code=1000, reason="done"), TIMEOUT)
        rcvd = ws.protocol.close_rcvd  # None unless the peer's close frame arrived
        ok = rcvd is not None and rcvd.code == 1000 and ws.state is State.CLOSED
        report("close", ok, {"close_code": ws.close_code, "peer_close_frame": str(rcvd),
                             "state": ws.state.name})
    except Exception as e:  # noqa: BLE001
        report("close", False, {"error": "%s: %s" % (type(e).__name__, e)})
    return 0 if all(RESULTS) else 1


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True)
    args = parser.parse_args()
    return asyncio.run(amain(args.url))


if __name__ == "__main__":
    sys.exit(main())
