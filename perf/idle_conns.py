#!/usr/bin/env python3
"""Hold N idle TCP connections to a proxy and report its memory growth per connection.

Usage: idle_conns.py --target HOST:PORT --count N --pids P1,P2,...
Prints one line: IDLEJSON {"conns": n, "rss_before_kb": a, "rss_after_kb": b, "bytes_per_conn": c}
Connections send nothing (like an idle keep-alive client before its next request).
"""
import argparse, json, socket, sys, time


def rss_kb(pids):
    total = 0
    for p in pids:
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
        except OSError:
            pass
    return total


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--target", required=True)
    ap.add_argument("--count", type=int, default=10000)
    ap.add_argument("--pids", required=True)
    a = ap.parse_args()
    host, port = a.target.rsplit(":", 1)
    pids = [p for p in a.pids.split(",") if p]
    before = rss_kb(pids)
    socks = []
    deadline = time.time() + 60
    for _ in range(a.count):
        if time.time() > deadline:
            break
        s = socket.socket()
        s.settimeout(5)
        try:
            s.connect((host, int(port)))
        except OSError as e:
            print(f"connect failed after {len(socks)}: {e}", file=sys.stderr)
            s.close()
            break
        socks.append(s)
    time.sleep(2)  # let the proxy accept and set up every connection (bounded, not a readiness wait)
    after = rss_kb(pids)
    n = len(socks)
    per = (after - before) * 1024 / n if n else float("nan")
    print("IDLEJSON " + json.dumps({"conns": n, "rss_before_kb": before, "rss_after_kb": after, "bytes_per_conn": per}))
    for s in socks:
        s.close()


if __name__ == "__main__":
    main()
