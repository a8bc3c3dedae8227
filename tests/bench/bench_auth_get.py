#!/usr/bin/env python3
"""The cost of authentication on the GET path: wrk against
GET /v1/sandboxes/{id} on one controller, without credentials (insecure dev
mode: anonymous, the baseline), with an API key, with an HS256 JWT and with an
RS256 JWT. Same run, same sandbox, rate limits set out of the way. Prints
figures; never passes or fails on them.

Usage: bench_auth_get.py --binary build/sandbox-controller [--seconds 10] [--rounds 2]
"""
import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "tests", "e2e"))
from conftest import Controller  # noqa: E402


def wrk(url, seconds, header=None):
    cmd = ["wrk", "-t2", "-c32", f"-d{seconds}s", "--latency"]
    if header:
        cmd += ["-H", header]
    out = subprocess.run(cmd + [url], capture_output=True, text=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    p50 = re.search(r"50%\s+([\d.]+\w+)", out).group(1)
    p99 = re.search(r"99%\s+([\d.]+\w+)", out).group(1)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return rps, p50, p99, int(non2xx.group(1)) if non2xx else 0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--binary", required=True)
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    if not shutil.which("wrk"):
        sys.exit("wrk is needed (apt-get install wrk)")
    work = tempfile.mkdtemp(prefix="sbx-bench-auth-")
    cdir = os.path.join(work, "cluster")
    cluster_py = os.path.join(ROOT, "tests", "cluster", "cluster.py")
    print(subprocess.run([sys.executable, cluster_py, "start", "--dir", cdir, "--watch-pid",
                          str(os.getpid())], check=True, capture_output=True, text=True).stdout.strip())
    ctl = None
    try:
        env = {}
        with open(os.path.join(cdir, "env")) as f:
            for line in f:
                k, v = line.rstrip("\n").split("=", 1)
                env[k] = v
        ctl = Controller(env, os.path.abspath(args.binary), work, rate=1e6, burst=1e6,
                         arate=1e6, aburst=1e6, insecure=True)
        ctl.start()
        status, sb, _ = ctl.as_("admin").call("POST", "/v1/sandboxes", {"template": "python"})
        assert status == 201, sb
        url = f"http://127.0.0.1:{ctl.port}/v1/sandboxes/{sb['id']}"
        j = ctl.jwt
        claims = j.claims(tenant="ops", scope="admin", exp=2_000_000_000)
        cases = [
            ("none (insecure dev mode, anonymous)", None),
            ("API key", "Authorization: Bearer " + ctl.keys["admin"]),
            ("JWT HS256", "Authorization: Bearer " + j.hs256(claims)),
            ("JWT RS256 (2048-bit)", "Authorization: Bearer " + j.rs256(claims)),
        ]
        print(f"wrk -t2 -c32 -d{args.seconds}s --latency GET /v1/sandboxes/{{id}}, {os.cpu_count()} cores")
        results = {name: [] for name, _ in cases}
        for r in range(args.rounds):
            for name, header in cases:
                results[name].append(wrk(url, args.seconds, header))
        base = max(x[0] for x in results[cases[0][0]])
        for name, _ in cases:
            best = max(results[name], key=lambda x: x[0])
            rps, p50, p99, bad = best
            print(f"{name:<38} {rps:10.0f} req/s  p50 {p50:>8}  p99 {p99:>8}  "
                  f"{(rps / base - 1) * 100:+6.1f}% vs none  non-2xx {bad}  "
                  f"(rounds: {', '.join(f'{x[0]:.0f}' for x in results[name])})", flush=True)
    finally:
        if ctl:
            ctl.stop()
        subprocess.run([sys.executable, cluster_py, "stop", "--dir", cdir], check=False)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
