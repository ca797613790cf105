"""An HTTPS server outside the mesh, on Python's ssl (OpenSSL), for TLS origination tests.

  tls_server.py --cert FILE --key FILE [--client-ca FILE] [--port P]
      answers every GET with 200 and a JSON body: the request path, the SNI name the client
      sent, the negotiated ALPN protocol, and the client certificate's subject (with
      --client-ca a client certificate is required).

Prints ``LISTENING <port>`` once ready.
"""
import argparse
import http.server
import json
import ssl
import sys
import threading

SNI = threading.local()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--cert", required=True)
    p.add_argument("--key", required=True)
    p.add_argument("--client-ca")
    p.add_argument("--port", type=int, default=0)
    a = p.parse_args()

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(a.cert, a.key)
    ctx.set_alpn_protocols(["http/1.1"])
    names = {}

    def on_sni(sock, name, _ctx):
        names[id(sock)] = name

    ctx.sni_callback = on_sni
    if a.client_ca:
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_verify_locations(a.client_ca)

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self):
            conn = self.connection
            peer = conn.getpeercert() or {}
            body = json.dumps(
                {
                    "path": self.path,
                    "sni": names.get(id(conn)),
                    "alpn": conn.selected_alpn_protocol(),
                    "client": [v for rdn in peer.get("subject", ()) for (_, v) in rdn],
                }
            ).encode()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", a.port), Handler)
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    print(f"LISTENING {server.server_address[1]}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    sys.exit(main())
