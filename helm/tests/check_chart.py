"""Checks the remora chart offline, as CI runs it (`integration/tests/e2e/helm.rs`).

  check_chart.py --chart helm/remora

Renders the chart with the Helm v4 SDK (helm-python-sdk) for the default values and for
non-default ones, validates every rendered manifest with `kubernetes-validate --strict` for
Kubernetes 1.29 and 1.33, checks that bad values are rejected by values.schema.json (or a
template's `fail`) with a message naming the value, and that the values table in the chart's
README matches values.yaml. Prints one JSON line per check, exits 0 only if all passed.
"""
import argparse
import json
import os
import re
import subprocess
import sys
import tempfile

from helm_python import chart as hc

KUBE_VERSIONS = ["1.29.0", "1.33.0"]
FAILED = []


def check(name, ok, detail=""):
    print(json.dumps({"check": name, "ok": bool(ok), "detail": detail}), flush=True)
    if not ok:
        FAILED.append(name)


def documents(rendered):
    """Every non-empty YAML document of the rendered templates (NOTES.txt aside)."""
    docs = []
    for path, text in sorted(rendered.items()):
        if path.endswith("NOTES.txt"):
            continue
        for doc in re.split(r"(?m)^---\s*$", text):
            body = "\n".join(l for l in doc.splitlines() if not l.startswith("#")).strip()
            if body:
                docs.append((path, doc))
    return docs


def validate(name, rendered):
    docs = documents(rendered)
    kinds = sorted({re.search(r"(?m)^kind: (\w+)", d).group(1) for _, d in docs if re.search(r"(?m)^kind: (\w+)", d)})
    with tempfile.TemporaryDirectory() as tmp:
        files = []
        for i, (_, doc) in enumerate(docs):
            f = os.path.join(tmp, f"{i:02d}.yaml")
            with open(f, "w") as out:
                out.write(doc)
            files.append(f)
        for k in KUBE_VERSIONS:
            p = subprocess.run(
                ["kubernetes-validate", "--strict", "--quiet", "-k", k, *files],
                capture_output=True, text=True, timeout=120,
            )
            check(f"{name}: valid for Kubernetes {k}", p.returncode == 0, (p.stdout + p.stderr)[-2000:] or f"{len(files)} manifests: {', '.join(kinds)}")
    return docs


def render(c, values):
    return c.render(values, name="remora", namespace="remora-system", is_install=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--chart", required=True)
    a = ap.parse_args()
    c = hc.Chart.load(a.chart)

    docs = validate("defaults", render(c, None))
    text = "\n".join(d for _, d in docs)
    for kind in ["Deployment", "Service", "ServiceAccount", "ClusterRole", "ClusterRoleBinding",
                 "PodDisruptionBudget", "ConfigMap", "Secret", "MutatingWebhookConfiguration"]:
        check(f"defaults: renders a {kind}", f"kind: {kind}" in text)
    check("defaults: generates the mesh CA (ECDSA)", "ca.key:" in text and "mtls:" in text)
    check("defaults: the webhook never fails pod creation", "failurePolicy: Ignore" in text and "failurePolicy: Fail" not in text)
    check("defaults: probes on /ready and /live", "path: /ready" in text and "path: /live" in text)
    check("defaults: scrape annotations", 'prometheus.io/scrape: "true"' in text)

    custom = {
        "controlPlane": {"replicas": 3, "certTtl": "12h", "podDisruptionBudget": {"enabled": False}},
        "ca": {"trustDomain": "prod.example", "existingSecret": "my-ca"},
        "mesh": {"mtls": {"enabled": True, "mode": "PERMISSIVE"},
                 "documents": {"orders.yaml": {"services": [{"name": "orders", "endpoints": [{"address": "10.0.0.1:8080"}]}]}}},
        "injection": {"nativeSidecar": "never", "label": "mesh.example/inject"},
        "metrics": {"scrape": False},
    }
    docs = validate("custom values", render(c, custom))
    text = "\n".join(d for _, d in docs)
    check("custom: uses the given CA Secret and generates none", "secretName: my-ca" in text and "ca.key:" not in text)
    check("custom: the mesh document and PERMISSIVE mode", "orders.yaml: |" in text and "mode: PERMISSIVE" in text)
    check("custom: no PodDisruptionBudget", "kind: PodDisruptionBudget" not in text)
    check("custom: regular-container injection", '"nativeSidecar":false' in text)
    check("custom: the injection label", "mesh.example/inject: enabled" in text)
    check("custom: no scrape annotations", "prometheus.io/scrape" not in text)

    off = {"injection": {"enabled": False}, "mesh": {"mtls": {"enabled": False}}}
    docs = validate("injection and mTLS off", render(c, off))
    text = "\n".join(d for _, d in docs)
    check("off: no webhook, no CA", "MutatingWebhookConfiguration" not in text and "ca.key:" not in text)

    for name, values, needle in [
        ("replicas 0", {"controlPlane": {"replicas": 0}}, "replicas"),
        ("unknown key", {"controlPlane": {"replica": 2}}, "replica"),
        ("bad mTLS mode", {"mesh": {"mtls": {"mode": "LOOSE"}}}, "mode"),
        ("bad trust domain", {"ca": {"trustDomain": "Mesh.Local"}}, "trustDomain"),
        ("bad port", {"proxy": {"inboundPort": 70000}}, "inboundPort"),
        ("bad certificate lifetime", {"controlPlane": {"certTtl": "1 day"}}, "certTtl"),
        ("bad native-sidecar mode", {"injection": {"nativeSidecar": "yes"}}, "nativeSidecar"),
        ("a CA certificate without its key", {"ca": {"cert": "-----BEGIN CERTIFICATE-----"}}, "ca.key"),
    ]:
        try:
            render(c, values)
            check(f"rejects {name}", False, "rendered")
        except Exception as e:  # HelmValuesError or HelmRenderError
            msg = str(e)
            check(f"rejects {name}", needle in msg, msg[:300])

    readme = open(os.path.join(a.chart, "README.md")).read()
    table = set(re.findall(r"(?m)^\| `([a-zA-Z0-9.]+)` \|", readme))
    values = c.values

    def leaves(prefix, v):
        if isinstance(v, dict) and v and prefix not in ("mesh.documents",):
            for k, x in v.items():
                yield from leaves(f"{prefix}.{k}" if prefix else k, x)
        else:
            yield prefix

    keys = set(leaves("", values))
    keys = {k for k in keys if not re.match(r"^(controlPlane|proxy)\.resources\.", k)} | {"controlPlane.resources", "proxy.resources"}
    check("README values table matches values.yaml", keys == table,
          f"missing from README: {sorted(keys - table)}; not in values: {sorted(table - keys)}")

    sys.exit(1 if FAILED else 0)


if __name__ == "__main__":
    main()
