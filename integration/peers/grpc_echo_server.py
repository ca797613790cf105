"""gRPC echo server used as an upstream peer in Remora integration tests.

Serves the service ``remora.test.Echo`` with plain grpcio and no generated
stubs: every method takes and returns raw bytes (identity serializers).

Methods:
  Unary         echoes the request; initial metadata ``x-echo-header: yes``,
                trailing metadata ``x-echo-trailer: unary`` and, if the request
                carried ``x-request-id``, ``x-seen-request-id: <that value>``.
  ServerStream  request is an ASCII integer N (1..1000); streams
                ``msg-0`` .. ``msg-{N-1}``, trailer ``x-echo-trailer: server-stream``.
  ClientStream  concatenates every request message into one response.
  BidiStream    answers each message as it arrives with ``echo:`` + message.
  Fail          INVALID_ARGUMENT, details ``bad input``, trailer ``x-echo-trailer: fail``.
  Unavailable   UNAVAILABLE.

Usage: grpc_echo_server.py [--port P]   (prints ``LISTENING <port>`` once ready)
"""
import argparse
import signal
import sys
import threading
from concurrent import futures

import grpc

SERVICE = "remora.test.Echo"
MAX_MSG = 16 * 1024 * 1024


def unary(request, context):
    context.send_initial_metadata((("x-echo-header", "yes"),))
    trailers = [("x-echo-trailer", "unary")]
    for key, value in context.invocation_metadata():
        if key == "x-request-id":
            trailers.append(("x-seen-request-id", value))
    context.set_trailing_metadata(tuple(trailers))
    return request


def server_stream(request, context):
    try:
        n = int(request.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        n = -1
    if not 1 <= n <= 1000:
        context.abort(grpc.StatusCode.INVALID_ARGUMENT, "N must be an integer in 1..1000")
    for i in range(n):
        yield b"msg-%d" % i
    context.set_trailing_metadata((("x-echo-trailer", "server-stream"),))


def client_stream(request_iterator, context):
    return b"".join(request_iterator)


def bidi_stream(request_iterator, context):
    for message in request_iterator:
        yield b"echo:" + message


def fail(request, context):
    context.set_trailing_metadata((("x-echo-trailer", "fail"),))
    context.abort(grpc.StatusCode.INVALID_ARGUMENT, "bad input")


def unavailable(request, context):
    context.abort(grpc.StatusCode.UNAVAILABLE, "unavailable on purpose")


def build_server(port):
    handlers = {
        "Unary": grpc.unary_unary_rpc_method_handler(unary),
        "ServerStream": grpc.unary_stream_rpc_method_handler(server_stream),
        "ClientStream": grpc.stream_unary_rpc_method_handler(client_stream),
        "BidiStream": grpc.stream_stream_rpc_method_handler(bidi_stream),
        "Fail": grpc.unary_unary_rpc_method_handler(fail),
        "Unavailable": grpc.unary_unary_rpc_method_handler(unavailable),
    }
    # No request_deserializer / response_serializer: grpcio passes bytes through.
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=8),
        handlers=(grpc.method_handlers_generic_handler(SERVICE, handlers),),
        options=(
            ("grpc.max_receive_message_length", MAX_MSG),
            ("grpc.max_send_message_length", MAX_MSG),
            ("grpc.so_reuseport", 0),
        ),
    )
    bound = server.add_insecure_port("127.0.0.1:%d" % port)
    if bound == 0:
        raise SystemExit("could not bind 127.0.0.1:%d" % port)
    return server, bound


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    server, port = build_server(args.port)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    server.start()
    print("LISTENING %d" % port, flush=True)
    while not stop.wait(1.0):
        pass
    server.stop(grace=None).wait(5)
    return 0


if __name__ == "__main__":
    sys.exit(main())
