#!/usr/bin/env python3
"""Summarise raw.tsv from perf/run: medians per (target, test), ratios to `direct` and to the
best peer, as a markdown table (stdout), summary.json and summary.svg in OUTDIR.

Usage: summarize.py RAW_TSV [OUTDIR]      MAX_FOREIGN=PCT drops runs where other tenants used
more than PCT % of all CPUs.
"""
import csv, json, os, statistics as st, sys
from collections import defaultdict

raw = sys.argv[1]
outdir = sys.argv[2] if len(sys.argv) > 2 else os.path.dirname(raw)
rows = list(csv.DictReader((l for l in open(raw) if not l.startswith("#")), delimiter="\t"))
F = lambda r, k: float(r.get(k, "nan") or "nan")
mf = float(os.environ.get("MAX_FOREIGN", "inf"))
dropped = [r for r in rows if F(r, "foreign_cpu_pct") > mf]
rows = [r for r in rows if F(r, "foreign_cpu_pct") <= mf]
groups = defaultdict(list)
for r in rows:
    groups[(r["target"], r["test"])].append(r)
targets = list(dict.fromkeys(r["target"] for r in rows))
tests = list(dict.fromkeys(r["test"] for r in rows))
nan = float("nan")


def med(rs, k):
    v = [F(r, k) for r in rs if F(r, k) == F(r, k)]
    return st.median(v) if v else nan


def paired_ratio(rs, base, k):
    b = {r["rep"]: F(r, k) for r in base}
    v = [F(r, k) / b[r["rep"]] for r in rs if b.get(r["rep"])]
    return st.median(v) if v else nan


summary = {"tests": {}}
for test in tests:
    base = groups.get(("direct", test), [])
    per = {}
    for t in targets:
        rs = groups.get((t, test))
        if not rs:
            continue
        d = {
            "n": len(rs),
            "rps": med(rs, "rps"),
            "p50_us": med(rs, "p50_us"), "p99_us": med(rs, "p99_us"), "p999_us": med(rs, "p999_us"),
            "mean_us": med(rs, "mean_us"),
            "cpu_s_per_100k": med(rs, "proxy_cpu_us_per_req") / 10.0,
            "proxy_cores": med(rs, "proxy_cores"),
            "rss_idle_mib": med(rs, "idle_rss_kb") / 1024, "rss_load_peak_mib": med(rs, "proxy_hwm_kb") / 1024,
            "bytes_per_idle_conn": med(rs, "bytes_per_idle_conn"),
            "errors": int(sum(F(r, "errors") for r in rs if F(r, "errors") == F(r, "errors"))),
            "foreign_cpu_pct_max": max(F(r, "foreign_cpu_pct") for r in rs),
        }
        if base and t != "direct":
            d["ratio_vs_direct"] = paired_ratio(rs, base, "rps")
            d["added_p50_us"] = d["p50_us"] - med(base, "p50_us")
            d["added_p99_us"] = d["p99_us"] - med(base, "p99_us")
        per[t] = d
    peers = [t for t in per if not t.startswith(("direct", "remora"))]
    for t, d in per.items():
        if peers and t.startswith("remora"):
            best = max(peers, key=lambda p: per[p]["rps"] if per[p]["rps"] == per[p]["rps"] else -1)
            d["vs_best_peer"] = {"peer": best, "rps_ratio": d["rps"] / per[best]["rps"] if per[best]["rps"] else nan,
                                 "cpu_ratio": d["cpu_s_per_100k"] / per[best]["cpu_s_per_100k"] if per[best]["cpu_s_per_100k"] else nan}
    summary["tests"][test] = per

f0 = lambda x: "–" if x != x else f"{x:,.0f}"
f2 = lambda x: "–" if x != x else f"{x:.2f}"
f1 = lambda x: "–" if x != x else f"{x:.1f}"
for test, per in summary["tests"].items():
    print(f"\n### {test}\n")
    if test == "idle":
        print("| target | n | connections held | idle RSS MiB | bytes per idle connection |")
        print("|---|---|---|---|---|")
        for t, d in per.items():
            reqs = med(groups[(t, test)], "requests")
            print(f"| {t} | {d['n']} | {f0(reqs)} | {f1(d['rss_idle_mib'])} | {f0(d['bytes_per_idle_conn'])} |")
        continue
    print("| target | n | req/s | × direct | × best peer | p50 µs | p99 µs | p99.9 µs | +p50 µs | +p99 µs "
          "| CPU s/100k req | idle RSS MiB | peak RSS MiB | errors |")
    print("|" + "---|" * 14)
    for t, d in per.items():
        vb = d.get("vs_best_peer", {})
        vbs = f"{f2(vb['rps_ratio'])} ({vb['peer']})" if vb else "–"
        print("| " + " | ".join([t, str(d["n"]), f0(d["rps"]), f2(d.get("ratio_vs_direct", nan)), vbs,
                                 f0(d["p50_us"]), f0(d["p99_us"]), f0(d["p999_us"]),
                                 f0(d.get("added_p50_us", nan)), f0(d.get("added_p99_us", nan)),
                                 f2(d["cpu_s_per_100k"]), f1(d["rss_idle_mib"]), f1(d["rss_load_peak_mib"]),
                                 str(d["errors"])]) + " |")
if dropped:
    print(f"\n{len(dropped)} run(s) dropped for foreign CPU > {mf}%")
steal = [F(r, "steal_pct") for r in rows]
if steal:
    print(f"\nsteal %: median {st.median(steal):.2f}; foreign CPU % max "
          f"{max(F(r, 'foreign_cpu_pct') for r in rows):.0f}")

json.dump(summary, open(os.path.join(outdir, "summary.json"), "w"), indent=2, default=lambda x: None)


def svg(summary):
    """Grouped bars: req/s relative to direct per test, one colour per target; CPU per 100k below."""
    tests_ = [t for t in summary["tests"] if t != "idle"]
    tg = [t for t in targets if t != "direct"]
    colors = ["#1b9e77", "#d95f02", "#7570b3", "#e7298a", "#66a61e", "#e6ab02", "#a6761d", "#666666"]
    W, H, top, left, bar = 900, 560, 60, 70, 14
    gw = (W - left - 20) / max(len(tests_), 1)
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">',
           f'<rect width="{W}" height="{H}" fill="white"/>',
           '<text x="10" y="22" font-size="15" font-weight="bold">Throughput relative to direct (higher is better) and proxy CPU per 100k requests (lower is better)</text>']
    ph = 200  # panel height
    for panel, (key, label, y0) in enumerate([("ratio_vs_direct", "× direct req/s", top), ("cpu_s_per_100k", "CPU s / 100k req", top + ph + 60)]):
        vals = [summary["tests"][t].get(g, {}).get(key) for t in tests_ for g in tg]
        vals = [v for v in vals if isinstance(v, (int, float)) and v == v]
        vmax = max(vals + [1e-9]) * 1.1
        out.append(f'<text x="10" y="{y0 - 8}" font-weight="bold">{label}</text>')
        out.append(f'<line x1="{left}" y1="{y0 + ph}" x2="{W - 10}" y2="{y0 + ph}" stroke="#333"/>')
        for i, test in enumerate(tests_):
            gx = left + i * gw
            if panel == 1:
                out.append(f'<text x="{gx + gw / 2}" y="{y0 + ph + 16}" text-anchor="middle">{test}</text>')
            for j, t in enumerate(tg):
                v = summary["tests"][test].get(t, {}).get(key)
                if not isinstance(v, (int, float)) or v != v:
                    continue
                h = ph * v / vmax
                x = gx + 6 + j * (bar + 2)
                out.append(f'<rect x="{x:.1f}" y="{y0 + ph - h:.1f}" width="{bar}" height="{h:.1f}" fill="{colors[j % len(colors)]}"><title>{t} {test}: {v:.2f}</title></rect>')
                out.append(f'<text x="{x + bar / 2:.1f}" y="{y0 + ph - h - 3:.1f}" text-anchor="middle" font-size="9">{v:.2f}</text>')
    for j, t in enumerate(tg):
        out.append(f'<rect x="{left + j * 130}" y="{H - 22}" width="12" height="12" fill="{colors[j % len(colors)]}"/>')
        out.append(f'<text x="{left + j * 130 + 16}" y="{H - 12}">{t}</text>')
    out.append("</svg>")
    return "\n".join(out)


open(os.path.join(outdir, "summary.svg"), "w").write(svg(summary))
