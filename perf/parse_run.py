#!/usr/bin/env python3
"""Turn one wrk/h2load/idle_conns output file plus /proc counters into one TSV row of raw.tsv."""
import json, re, sys

(f, test, rep, name, hz, pc0, pc1, uc0, uc1, a0, a1,
 s0b, s0t, s0s, s0i, s1b, s1t, s1s, s1i, pss, rss, hwm, idle_rss) = sys.argv[1:]
hz = float(hz)
txt = open(f, errors="replace").read()

def us(v):
    m = re.match(r"([\d.]+)(us|ms|s)$", v)
    x = float(m.group(1))
    return x * {"us": 1, "ms": 1e3, "s": 1e6}[m.group(2)]

row = dict(rps=float("nan"), p50=float("nan"), p99=float("nan"), mean=float("nan"),
           p999=float("nan"), requests=0, errors=-1, wall=float("nan"))
per_conn = float("nan")
mi = re.search(r"^IDLEJSON (.*)$", txt, re.M)
if mi:
    j = json.loads(mi.group(1))
    per_conn = j["bytes_per_conn"] if j["bytes_per_conn"] is not None else float("nan")
    row.update(requests=j["conns"], errors=0, wall=float("nan"))
m = re.search(r"^WRKJSON (.*)$", txt, re.M)
if m:
    j = json.loads(m.group(1))
    row.update(requests=j["requests"], errors=j["errors"], wall=j["duration_us"] / 1e6,
               p50=j["p50_us"], p99=j["p99_us"], mean=j["mean_us"], p999=j["p999_us"])
    row["rps"] = j["requests"] / row["wall"]
else:
    m1 = re.search(r"finished in ([\d.]+)(ms|s), ([\d.]+) req/s", txt)
    m2 = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored", txt)
    m3 = re.search(r"time for request:\s+(\S+)\s+(\S+)\s+(\S+)\s+(\S+)", txt)
    if m1 and m2:
        wall = float(m1.group(1)) * (1e-3 if m1.group(2) == "ms" else 1)
        row.update(rps=float(m1.group(3)), requests=int(m2.group(4)),
                   errors=int(m2.group(5)) + int(m2.group(6)), wall=wall)
    if m3:
        row["mean"] = us(m3.group(3))

req = max(row["requests"], 1)
m = re.search(r"^LOADGEN_CPU ([\d.]+) ([\d.]+)$", txt, re.M)
lcpu = float(m.group(1)) + float(m.group(2)) if m else float("nan")
pcpu = (int(pc1) - int(pc0)) / hz
ucpu = (int(uc1) - int(uc0)) / hz
busy = int(s1b) - int(s0b); irq = int(s1i) - int(s0i); tot = max(int(s1t) - int(s0t), 1); steal = int(s1s) - int(s0s)
try:
    newconns = int(a1) - int(a0) - 1  # minus the status probe itself
except ValueError:
    newconns = -1
fmt = lambda x, d=1: ("%.*f" % (d, x)) if x == x else "nan"
print("\t".join([
    rep, name, test, fmt(row["rps"]), fmt(row["p50"]), fmt(row["p99"]), fmt(row["mean"]), fmt(row["p999"]),
    str(row["requests"]), str(row["errors"]),
    fmt(pcpu * 1e6 / req, 2), fmt(pcpu / row["wall"], 3) if row["wall"] == row["wall"] else "nan",
    pss, rss, hwm, fmt(ucpu * 1e6 / req, 2), str(newconns),
    fmt(100.0 * busy / tot), fmt(100.0 * steal / tot, 2), fmt(lcpu * 1e6 / req, 2),
    # CPU used by processes outside this harness (other tenants) during the run, % of all CPUs
    # (irq/softirq ticks are not subtracted: without CONFIG_IRQ_TIME_ACCOUNTING the kernel also
    #  charges softirq work run in a task's context to that task's stime)
    fmt(100.0 * ((busy - steal) / hz - pcpu - ucpu - (lcpu if lcpu == lcpu else 0)) / (tot / hz)),
    fmt(100.0 * irq / tot), idle_rss, fmt(per_conn, 0)]))
