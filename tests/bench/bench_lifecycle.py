#!/usr/bin/env python3
"""Lifecycle benchmarks against the real test control plane. Prints figures;
never passes or fails on them.

  1. create-to-ready latency through the controller (POST /v1/sandboxes with
     wait=true), sequential and 20 concurrent, N sandboxes each, against a raw
     Pod with the very same spec, created directly and watched until Ready on
     the same control plane in the same run;
  2. the controller's resident memory idle and with 1,000 sandboxes;
  3. GET /v1/sandboxes/{id} throughput and latency with keep-alive (wrk),
     with an API key, and the resident memory after it.

Usage: bench_lifecycle.py --binary build/sandbox-controller [--n 200] [--rss-n 1000]
It starts its own control plane (tests/cluster/cluster.py) in a temporary dir.
"""
import argparse
import concurrent.futures
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "tests", "e2e"))
from conftest import Api, Controller, Kube  # noqa: E402


def pct(values, p):
    s = sorted(values)
    if not s:
        return float("nan")
    k = (len(s) - 1) * p / 100
    lo, hi = int(k), min(int(k) + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def summary(name, ms):
    print(f"{name:<46} n={len(ms):<4} p50={pct(ms, 50):7.1f} ms  p90={pct(ms, 90):7.1f} ms  "
          f"p99={pct(ms, 99):7.1f} ms  mean={statistics.mean(ms):7.1f} ms", flush=True)


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return -1


class PodWaiter:
    """One watch on the namespace's Pods; wakes whoever waits for a Pod to be Ready."""

    def __init__(self, kube, ns):
        self.kube, self.ns = kube, ns
        self.ready = {}
        self.cv = threading.Condition()
        self.stop = False
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        import http.client
        import ssl
        host = self.kube.server.removeprefix("https://")
        while not self.stop:
            conn = http.client.HTTPSConnection(host, context=self.kube.ctx, timeout=60)
            conn.request("GET", f"/api/v1/namespaces/{self.ns}/pods?watch=1&labelSelector=bench%3Draw",
                         headers={"Authorization": "Bearer " + self.kube.token})
            resp = conn.getresponse()
            buf = b""
            try:
                while not self.stop:
                    chunk = resp.read1(65536)
                    if not chunk:
                        break
                    buf += chunk
                    while b"\n" in buf:
                        line, buf = buf.split(b"\n", 1)
                        ev = json.loads(line)
                        pod = ev["object"]
                        conds = pod.get("status", {}).get("conditions", [])
                        if any(c["type"] == "Ready" and c["status"] == "True" for c in conds):
                            with self.cv:
                                self.ready.setdefault(pod["metadata"]["name"], time.monotonic())
                                self.cv.notify_all()
            except (OSError, ssl.SSLError):
                pass

    def wait(self, name, timeout=60):
        deadline = time.monotonic() + timeout
        with self.cv:
            while name not in self.ready:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(name)
                self.cv.wait(left)
            return self.ready[name]


RAW_POD = {
    "apiVersion": "v1", "kind": "Pod",
    "metadata": {"labels": {"bench": "raw"}},
    "spec": {
        "automountServiceAccountToken": False,
        "securityContext": {"runAsNonRoot": True, "runAsUser": 1000,
                            "seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [{"name": "c", "image": "python:3.12-slim", "command": ["sleep", "infinity"],
                        "securityContext": {"allowPrivilegeEscalation": False,
                                            "capabilities": {"drop": ["ALL"]}}}]},
}


def raw_create(kube, ns, waiter, i):
    pod = json.loads(json.dumps(RAW_POD))
    pod["metadata"].pop("name", None)
    pod["metadata"]["name"] = f"raw-{os.getpid()}-{i}"
    t0 = time.monotonic()
    status, body = kube.request("POST", f"/api/v1/namespaces/{ns}/pods", pod)
    assert status == 201, body
    t1 = waiter.wait(pod["metadata"]["name"])
    kube.request("DELETE", f"/api/v1/namespaces/{ns}/pods/{pod['metadata']['name']}")
    return (t1 - t0) * 1000


def api_create(api, i):
    t0 = time.monotonic()
    status, sb, _ = api.call("POST", "/v1/sandboxes", {"template": "python",
                                                       "labels": {"bench": "api"}})
    t1 = time.monotonic()
    assert status == 201, sb
    return (t1 - t0) * 1000, sb["id"]


def run_batch(fn, n, concurrency):
    results = []
    with concurrent.futures.ThreadPoolExecutor(max_workers=concurrency) as pool:
        for r in pool.map(fn, range(n)):
            results.append(r)
    return results


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--binary", required=True)
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--rss-n", type=int, default=1000)
    ap.add_argument("--wrk-seconds", type=int, default=10)
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="sbx-bench-")
    cdir = os.path.join(work, "cluster")
    cluster_py = os.path.join(ROOT, "tests", "cluster", "cluster.py")
    line = subprocess.run([sys.executable, cluster_py, "start", "--dir", cdir, "--watch-pid",
                           str(os.getpid())], check=True, capture_output=True, text=True).stdout
    print(line.strip())
    ctl = None
    try:
        env = {}
        with open(os.path.join(cdir, "env")) as f:
            for l in f:
                k, v = l.rstrip("\n").split("=", 1)
                env[k] = v
        kube = Kube(env)
        ns = env["KUBE_NAMESPACE"]
        # rate limits out of the way: this measures the lifecycle, not the limiter
        ctl = Controller(env, os.path.abspath(args.binary), work, rate=1e6, burst=1e6,
                         arate=1e6, aburst=1e6)
        ctl.start()
        api = ctl.api
        waiter = PodWaiter(kube, ns)
        print(f"machine: {os.cpu_count()} cores; n={args.n}")
        # The raw Pods get exactly the spec the controller builds (volumes,
        # resources, security context), so that the comparison isolates what
        # the controller adds: take it from a sandbox the controller made.
        status, sb, _ = api.call("POST", "/v1/sandboxes", {"template": "python"})
        assert status == 201, sb
        _, made = kube.get(f"/api/v1/namespaces/{ns}/pods/{sb['id']}")
        spec = made["spec"]
        spec.pop("nodeName", None)
        RAW_POD["spec"] = spec
        api.call("DELETE", "/v1/sandboxes/" + sb["id"])

        def settle(selector):
            """Wait until every Pod of the previous phase is gone: kwok and the
            API server must not still be busy deleting them while the next
            phase is timed (that made the second phase look slower)."""
            deadline = time.time() + 120
            while time.time() < deadline:
                _, pods = kube.get(f"/api/v1/namespaces/{ns}/pods?labelSelector={selector}")
                if not pods["items"]:
                    return
                time.sleep(0.5)

        # 1. create-to-ready, each phase on a quiet control plane
        for conc in (1, 20):
            raw = run_batch(lambda i: raw_create(kube, ns, waiter, i + conc * 100000), args.n, conc)
            settle("bench%3Draw")
            res = run_batch(lambda i: api_create(api, i), args.n, conc)
            ctl_ms = [r[0] for r in res]
            summary(f"raw Pod create-to-Ready, concurrency {conc}", raw)
            summary(f"controller create (wait=true), concurrency {conc}", ctl_ms)
            print(f"{'':<46} controller adds {pct(ctl_ms, 50) - pct(raw, 50):+.1f} ms at p50 "
                  f"({(pct(ctl_ms, 50) / pct(raw, 50) - 1) * 100:+.1f}%)", flush=True)
            for _, sid in res:
                api.call("DELETE", "/v1/sandboxes/" + sid)
            settle("app.kubernetes.io%2Fmanaged-by%3Dsandbox-controller")

        # 2. memory, before any load test has grown the heap
        time.sleep(12)
        print(f"RSS idle (no sandbox): {rss_kib(ctl.proc.pid) / 1024:.1f} MiB")
        run_batch(lambda i: api.call("POST", "/v1/sandboxes",
                                     {"template": "python", "wait": False, "labels": {"bench": "rss"}}),
                  args.rss_n, 20)
        def count():
            return len(api.call("GET", "/v1/sandboxes?label=bench=rss&limit=1000")[1]["items"])
        deadline = time.time() + 300
        while count() < min(args.rss_n, 1000) and time.time() < deadline:
            time.sleep(1)
        time.sleep(12)  # steady state: the daemon trims freed memory every 10 s
        print(f"RSS with {args.rss_n} sandboxes: {rss_kib(ctl.proc.pid) / 1024:.1f} MiB")
        # 3. GET with keep-alive (last: it grows buffers)
        status, sb, _ = api.call("POST", "/v1/sandboxes", {"template": "python"})
        url = f"http://127.0.0.1:{ctl.port}/v1/sandboxes/{sb['id']}"
        if shutil.which("wrk"):
            out = subprocess.run(["wrk", "-t2", "-c32", f"-d{args.wrk_seconds}s", "--latency",
                                  "-H", "Authorization: Bearer " + ctl.keys["acme"], url],
                                 capture_output=True, text=True).stdout
            print("wrk -t2 -c32 -d%ds --latency GET /v1/sandboxes/{id}:" % args.wrk_seconds)
            for l in out.splitlines():
                if any(k in l for k in ("Requests/sec", "50%", "90%", "99%", "Latency", "requests in",
                                        "Non-2xx")):
                    print("   " + l.strip())
            print(f"RSS after the wrk run: {rss_kib(ctl.proc.pid) / 1024:.1f} MiB")
        else:
            print("wrk not installed: GET throughput skipped")

        waiter.stop = True
    finally:
        if ctl:
            ctl.stop()
        subprocess.run([sys.executable, cluster_py, "stop", "--dir", cdir], check=False)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
