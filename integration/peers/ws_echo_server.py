"""WebSocket echo server used as an upstream peer in Remora integration tests.

Accepts WebSocket upgrades on any path and echoes every text and binary
message back unchanged (same frame type).  Built on the ``websockets``
library (asyncio); handles many concurrent connections.

Usage: ws_echo_server.py [--port P]   (prints ``LISTENING <port>`` once ready)
"""
import argparse
import asyncio
import signal
import sys

import websockets
from websockets.asyncio.server import serve


async def echo(ws):
    try:
        async for message in ws:
            await ws.send(message)
    except websockets.ConnectionClosed:
        pass


async def amain(port):
    loop = asyncio.get_running_loop()
    stop = loop.create_future()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, lambda: stop.done() or stop.set_result(None))
    async with serve(echo, "127.0.0.1", port, max_size=16 * 1024 * 1024) as server:
        bound = server.sockets[0].getsockname()[1]
        print("LISTENING %d" % bound, flush=True)
        await stop
    return 0


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    return asyncio.run(amain(args.port))


if __name__ == "__main__":
    sys.exit(main())
