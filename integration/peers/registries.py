"""Small Consul, Eureka, Nomad and Marathon servers for discovery tests (neither exists on this machine),
speaking the documented subset of each API in the real shapes.

  registries.py consul [--port P] [--token T]
      GET /v1/health/service/NAME?passing=1[&dc=DC][&tag=T...][&index=I&wait=30s]
          (Consul 1.x health API: entries {Node, Service, Checks}; X-Consul-Index; a
          blocking query returns on a change or after `wait`; with --token the request
          needs X-Consul-Token)
  registries.py nomad [--port P]
      GET /v1/service/NAME?namespace=NS[&index=I&wait=30s] (Nomad 1.x native service
          registrations; X-Nomad-Index; blocking like Consul)
  registries.py marathon [--port P]
      GET /v2/apps?embed=apps.tasks, GET /v2/events (server-sent events: one
          status_update_event per change, a comment line every 2 s)
  registries.py eureka [--port P]
      GET /eureka/apps, GET /eureka/apps/delta (Eureka 1.x REST, JSON with
          Accept: application/json; the delta holds the last 3 minutes of changes and the
          registry's apps__hashcode)

Test control (not part of either API):
  PUT  /_test/state   consul: {"NAME": [{"node", "address", "port", "dc", "tags", "passing", "weight"}]}
                      eureka: {"APP": [{"id", "ip", "port", "securePort", "status", "zone"}]}
                      nomad: {"NAME": [{"address", "port", "tags", "namespace"}]}
                      marathon: {"apps": [Marathon app JSON with "tasks"]}
  POST /_test/down, /_test/up      answer 500 / serve again
  POST /_test/lose-delta           the next change is left out of the delta (a missed change)
  GET  /_test/requests             request paths so far
Prints ``LISTENING <port>`` once ready.
"""
import argparse
import json
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

COND = threading.Condition()
STATE = {}
INDEX = [1]
RECENT = []  # eureka: (time, actionType, app, instance)
DOWN = [False]
LOSE = [False]
REQUESTS = []
ARGS = None


def consul_entries(name, query):
    dc = query.get("dc", [None])[0]
    tags = query.get("tag", [])
    out = []
    for e in STATE.get(name, []):
        if query.get("passing") and not e.get("passing", True):
            continue
        if dc and e.get("dc", "dc1") != dc:
            continue
        if any(t not in e.get("tags", []) for t in tags):
            continue
        out.append({
            "Node": {"ID": f"id-{e['node']}", "Node": e["node"], "Address": e.get("nodeAddress", e["address"]),
                     "Datacenter": e.get("dc", "dc1"), "TaggedAddresses": {}, "Meta": {}},
            "Service": {"ID": f"{name}-{e['node']}-{e['port']}", "Service": name, "Tags": e.get("tags", []),
                        "Address": e.get("serviceAddress", ""), "Port": e["port"],
                        "Weights": {"Passing": e.get("weight", 1), "Warning": 1}, "Meta": {}},
            "Checks": [{"Node": e["node"], "CheckID": "serfHealth", "Name": "Serf Health Status",
                        "Status": "passing" if e.get("passing", True) else "critical"}],
        })
    return out


def eureka_instance(app, i, action=None):
    inst = {
        "instanceId": i["id"], "hostName": i["ip"], "app": app, "ipAddr": i["ip"],
        "status": i.get("status", "UP"), "overriddenStatus": "UNKNOWN",
        "port": {"$": i["port"], "@enabled": "true"},
        "securePort": {"$": i.get("securePort", 443), "@enabled": "true" if i.get("securePort") else "false"},
        "countryId": 1,
        "dataCenterInfo": {"@class": "com.netflix.appinfo.InstanceInfo$DefaultDataCenterInfo", "name": "MyOwn"},
        "metadata": {"zone": i["zone"]} if i.get("zone") else {},
        "vipAddress": app.lower(), "isCoordinatingDiscoveryServer": "false",
        "lastUpdatedTimestamp": str(int(time.time() * 1000)),
    }
    if action:
        inst["actionType"] = action
    return inst


def hashcode():
    counts = {}
    for insts in STATE.values():
        for i in insts:
            s = i.get("status", "UP")
            counts[s] = counts.get(s, 0) + 1
    return "".join(f"{s}_{n}_" for s, n in sorted(counts.items()))


def applications(apps):
    # Eureka renders a one-element list as a bare object: keep that quirk.
    def one_or_many(xs):
        return xs[0] if len(xs) == 1 else xs
    return {"applications": {"versions__delta": str(INDEX[0]), "apps__hashcode": hashcode(),
                             "application": [{"name": n, "instance": one_or_many(v)} for n, v in apps if v]}}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *a):
        pass

    def send(self, code, body, headers=()):
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        for k, v in headers:
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def do_PUT(self):
        if self.path != "/_test/state":
            return self.send(404, {})
        body = json.loads(self.rfile.read(int(self.headers.get("content-length", "0"))) or b"{}")
        with COND:
            if ARGS.kind == "eureka":
                now = time.time()
                for app in set(STATE) | set(body):
                    old = {i["id"]: i for i in STATE.get(app, [])}
                    new = {i["id"]: i for i in body.get(app, [])}
                    if not LOSE[0]:
                        for k in old.keys() - new.keys():
                            RECENT.append((now, "DELETED", app, old[k]))
                        for k, i in new.items():
                            if k not in old:
                                RECENT.append((now, "ADDED", app, i))
                            elif i != old[k]:
                                RECENT.append((now, "MODIFIED", app, i))
                LOSE[0] = False
            STATE.clear()
            STATE.update(body)
            INDEX[0] += 1
            COND.notify_all()
        self.send(200, {"index": INDEX[0]})

    def do_POST(self):
        if self.path in ("/_test/down", "/_test/up"):
            DOWN[0] = self.path == "/_test/down"
            with COND:
                COND.notify_all()
            return self.send(200, {})
        if self.path == "/_test/lose-delta":
            LOSE[0] = True
            return self.send(200, {})
        self.send(404, {})

    def do_GET(self):
        url = urllib.parse.urlsplit(self.path)
        q = urllib.parse.parse_qs(url.query)
        if url.path == "/_test/requests":
            return self.send(200, REQUESTS)
        REQUESTS.append(self.path)
        if DOWN[0]:
            return self.send(500, {"error": "down for the test"})
        if ARGS.kind == "consul" and url.path.startswith("/v1/health/service/"):
            if ARGS.token and self.headers.get("x-consul-token") != ARGS.token:
                self.send_response(403)
                self.send_header("content-length", "18")
                self.end_headers()
                return self.wfile.write(b"ACL not found\n\n\n\n\n")
            name = urllib.parse.unquote(url.path[len("/v1/health/service/"):])
            index = int(q.get("index", ["0"])[0] or 0)
            wait = min(float(q.get("wait", ["0s"])[0].rstrip("s") or 0), 30.0)
            deadline = time.time() + wait
            with COND:
                while index and index >= INDEX[0] and time.time() < deadline and not DOWN[0]:
                    COND.wait(timeout=max(0.0, deadline - time.time()))
                if DOWN[0]:
                    return self.send(500, {"error": "down for the test"})
                body, idx = consul_entries(name, q), INDEX[0]
            return self.send(200, body, [("X-Consul-Index", str(idx)), ("X-Consul-KnownLeader", "true")])
        if ARGS.kind == "nomad" and url.path.startswith("/v1/service/"):
            name = urllib.parse.unquote(url.path[len("/v1/service/"):])
            ns = q.get("namespace", ["default"])[0]
            index = int(q.get("index", ["0"])[0] or 0)
            wait = min(float(q.get("wait", ["0s"])[0].rstrip("s") or 0), 30.0)
            deadline = time.time() + wait
            with COND:
                while index and index >= INDEX[0] and time.time() < deadline and not DOWN[0]:
                    COND.wait(timeout=max(0.0, deadline - time.time()))
                if DOWN[0]:
                    return self.send(500, {"error": "down for the test"})
                regs = [{"ID": f"_nomad-task-{i}", "ServiceName": name, "Namespace": r.get("namespace", "default"),
                         "NodeID": f"node-{i}", "Datacenter": "dc1", "JobID": name, "AllocID": f"alloc-{i}",
                         "Tags": r.get("tags", []), "Address": r["address"], "Port": r["port"],
                         "CreateIndex": INDEX[0], "ModifyIndex": INDEX[0]}
                        for i, r in enumerate(STATE.get(name, [])) if r.get("namespace", "default") == ns]
                idx = INDEX[0]
            return self.send(200, regs, [("X-Nomad-Index", str(idx))])
        if ARGS.kind == "marathon" and url.path == "/v2/apps":
            with COND:
                return self.send(200, {"apps": STATE.get("apps", [])})
        if ARGS.kind == "marathon" and url.path == "/v2/events":
            return self.events()
        if ARGS.kind == "eureka" and url.path == "/eureka/apps":
            with COND:
                apps = [(n, [eureka_instance(n, i) for i in v]) for n, v in sorted(STATE.items())]
                return self.send(200, applications(apps))
        if ARGS.kind == "eureka" and url.path == "/eureka/apps/delta":
            with COND:
                cutoff = time.time() - 180
                RECENT[:] = [r for r in RECENT if r[0] >= cutoff]
                by_app = {}
                for _, action, app, i in RECENT:
                    by_app.setdefault(app, []).append(eureka_instance(app, i, action))
                return self.send(200, applications(sorted(by_app.items())))
        self.send(404, {"error": f"no route {url.path}"})


def _events(self):
    self.send_response(200)
    self.send_header("content-type", "text/event-stream")
    self.send_header("transfer-encoding", "chunked")
    self.end_headers()

    def chunk(text):
        data = text.encode()
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    seen = INDEX[0]
    try:
        chunk("event: event_stream_attached\ndata: {}\n\n")
        while not DOWN[0]:
            with COND:
                if INDEX[0] == seen:
                    COND.wait(timeout=2)
                changed, seen = INDEX[0] != seen, INDEX[0]
            if changed:
                chunk('event: status_update_event\ndata: {"eventType": "status_update_event"}\n\n')
            else:
                chunk(":\n")
        self.wfile.write(b"0\r\n\r\n")
    except (BrokenPipeError, ConnectionResetError):
        pass
    self.close_connection = True


Handler.events = _events


def main():
    global ARGS
    p = argparse.ArgumentParser()
    p.add_argument("kind", choices=["consul", "eureka", "nomad", "marathon"])
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--token")
    ARGS = p.parse_args()
    server = ThreadingHTTPServer(("127.0.0.1", ARGS.port), Handler)
    server.daemon_threads = True
    print(f"LISTENING {server.server_address[1]}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
