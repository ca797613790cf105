"""A small Kubernetes API server for discovery tests: list and watch of Services and
EndpointSlices, in the real API's shapes (there is no Kubernetes API server on this machine).

  kube_api.py [--port P]

  GET  /api/v1/pods[?labelSelector=KEY][&watch=true]   (all namespaces)
  GET  /api/v1/namespaces/NS/services[?fieldSelector=metadata.name=NAME][&watch=true]
  GET  /apis/discovery.k8s.io/v1/namespaces/NS/endpointslices[?labelSelector=kubernetes.io/service-name=NAME][&watch=true]
  GET  /version
  Test control (not part of the Kubernetes API):
  PUT  /_test/objects      body: {"pods": [...], "services": [...], "endpointslices": [...]} — replaces the
                           state; open watches get ADDED / MODIFIED / DELETED events
  POST /_test/down         closes every watch and answers 503 from then on
  POST /_test/up           serves again
  GET  /_test/requests     the request paths seen so far (JSON list)

Lists carry metadata.resourceVersion; watches honour it (events after it only), send a
BOOKMARK every 2 s and end after timeoutSeconds. Prints ``LISTENING <port>`` once ready.
"""
import argparse
import json
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

LOCK = threading.Condition()
STATE = {"pods": {}, "services": {}, "endpointslices": {}}  # kind -> {(ns, name): object}
EVENTS = []  # (rv, kind, type, object)
RV = [1]
DOWN = [False]
REQUESTS = []

KINDS = {
    "pods": ("v1", "Pod", "PodList"),
    "services": ("v1", "Service", "ServiceList"),
    "endpointslices": ("discovery.k8s.io/v1", "EndpointSlice", "EndpointSliceList"),
}


def stamp(kind, obj):
    obj = json.loads(json.dumps(obj))
    api, k, _ = KINDS[kind]
    obj.setdefault("apiVersion", api)
    obj.setdefault("kind", k)
    meta = obj.setdefault("metadata", {})
    meta.setdefault("namespace", "default")
    meta.setdefault("uid", f"uid-{meta['namespace']}-{meta['name']}")
    meta["resourceVersion"] = str(RV[0])
    return obj


def replace(new):
    with LOCK:
        for kind in KINDS:
            wanted = {}
            for o in new.get(kind, []):
                key = (o["metadata"].get("namespace", "default"), o["metadata"]["name"])
                wanted[key] = o
            old = STATE[kind]
            for key in list(old):
                if key not in wanted:
                    RV[0] += 1
                    gone = old.pop(key)
                    gone["metadata"]["resourceVersion"] = str(RV[0])
                    EVENTS.append((RV[0], kind, "DELETED", gone))
            for key, o in wanted.items():
                RV[0] += 1
                typ = "MODIFIED" if key in old else "ADDED"
                old[key] = stamp(kind, o)
                EVENTS.append((RV[0], kind, typ, old[key]))
        LOCK.notify_all()


def matches(obj, ns, query):
    meta = obj["metadata"]
    if ns is not None and meta.get("namespace", "default") != ns:
        return False
    for sel in query.get("labelSelector", []):
        for term in sel.split(","):
            if "=" in term:
                k, v = term.split("=", 1)
                if meta.get("labels", {}).get(k.rstrip("=")) != v:
                    return False
            elif term and term not in meta.get("labels", {}):
                return False
    for sel in query.get("fieldSelector", []):
        for term in sel.split(","):
            if term.startswith("metadata.name="):
                if meta["name"] != term.split("=", 1)[1]:
                    return False
    return True


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def send_json(self, code, body):
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_PUT(self):
        if self.path == "/_test/objects":
            n = int(self.headers.get("content-length", "0"))
            replace(json.loads(self.rfile.read(n) or b"{}"))
            return self.send_json(200, {"resourceVersion": RV[0]})
        self.send_json(404, {})

    def do_POST(self):
        if self.path == "/_test/down":
            with LOCK:
                DOWN[0] = True
                LOCK.notify_all()
            return self.send_json(200, {})
        if self.path == "/_test/up":
            DOWN[0] = False
            return self.send_json(200, {})
        self.send_json(404, {})

    def do_GET(self):
        url = urllib.parse.urlsplit(self.path)
        query = urllib.parse.parse_qs(url.query)
        if url.path == "/_test/requests":
            return self.send_json(200, REQUESTS)
        REQUESTS.append(self.path)
        if DOWN[0]:
            return self.send_json(503, {"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": "down for the test", "code": 503})
        if url.path == "/version":
            return self.send_json(200, {"major": "1", "minor": "33", "gitVersion": "v1.33.0"})
        parts = url.path.strip("/").split("/")
        # api/v1/namespaces/NS/services  or  apis/discovery.k8s.io/v1/namespaces/NS/endpointslices
        if len(parts) >= 5 and parts[-3] == "namespaces" and parts[-1] in KINDS:
            ns, kind = parts[-2], parts[-1]
        elif parts in (["api", "v1", "pods"], ["api", "v1", "services"], ["apis", "discovery.k8s.io", "v1", "endpointslices"]):
            ns, kind = None, parts[-1]
        else:
            return self.send_json(404, {"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 404, "message": f"no route {url.path}"})
        if query.get("watch", ["false"])[0] in ("true", "1"):
            return self.watch(kind, ns, query)
        with LOCK:
            items = [o for o in STATE[kind].values() if matches(o, ns, query)]
            api, _, list_kind = KINDS[kind]
            self.send_json(200, {"kind": list_kind, "apiVersion": api, "metadata": {"resourceVersion": str(RV[0])}, "items": items})

    def watch(self, kind, ns, query):
        since = int(query.get("resourceVersion", ["0"])[0] or 0)
        timeout = min(int(query.get("timeoutSeconds", ["30"])[0]), 30)
        deadline = time.time() + timeout
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("transfer-encoding", "chunked")
        self.end_headers()

        def chunk(obj):
            data = (json.dumps(obj) + "\n").encode()
            self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            self.wfile.flush()

        sent = since
        try:
            while time.time() < deadline:
                with LOCK:
                    if DOWN[0]:
                        break
                    pending = [e for e in EVENTS if e[0] > sent and e[1] == kind and matches(e[3], ns, query)]
                    latest = RV[0]
                    if not pending:
                        LOCK.wait(timeout=2)
                        pending = [e for e in EVENTS if e[0] > sent and e[1] == kind and matches(e[3], ns, query)]
                        latest = RV[0]
                for rv, _, typ, obj in pending:
                    chunk({"type": typ, "object": obj})
                    sent = max(sent, rv)
                if not pending and query.get("allowWatchBookmarks", ["false"])[0] == "true":
                    api, k, _ = KINDS[kind]
                    chunk({"type": "BOOKMARK", "object": {"kind": k, "apiVersion": api, "metadata": {"resourceVersion": str(latest)}}})
                    sent = max(sent, latest)
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            pass
        self.close_connection = True


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, default=0)
    a = p.parse_args()
    server = ThreadingHTTPServer(("127.0.0.1", a.port), Handler)
    server.daemon_threads = True
    print(f"LISTENING {server.server_address[1]}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
