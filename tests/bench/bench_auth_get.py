#!/usr/bin/env python3
"""The cost of authentication on the GET path: wrk against
GET /v1/sandboxes/{id} on one controller, without credentials (insecure dev
mode: anonymous, the baseline), with an API key, with an HS256 JWT and with an
RS256 JWT. Same run, same sandbox, rate limits set out of the way. Prints
figures; never passes or fails on them.

Two controls separate the HTTP server's share of the cost from the
authentication's: an anonymous request carrying a User-Agent header as long
as the Authorization header (libwebsockets stores and parses a known header
character by character: the cost of the bytes alone), and one carrying an
X-Padding header of that length (an unknown header, which it skips).

On a 2-core machine wrk and the controller share the CPUs and a single run
varies by 10% and more, so the cases are interleaved round by round and each
is reported as the median of its rounds (with the range), and its loss as the
median of the per-round losses against that round's anonymous run. The
controller's CPU time per request (user + system, from /proc, over the wrk
run) is printed too: it moves much less than throughput when something else
runs on the machine.

--baseline BINARY starts a second controller (another build, e.g. before a
change) on the same cluster and sandbox and interleaves its rounds with the
first one's, so that two builds are compared in the same run.

Usage: bench_auth_get.py --binary build/sandbox-controller [--seconds 10]
       [--rounds 5] [--cases none,key,ua,pad,hs256,rs256] [--baseline OTHER]
       [--perf DIR]
"""
import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "tests", "e2e"))
from conftest import Controller  # noqa: E402

CASES = {
    "none": "none (insecure dev mode, anonymous)",
    "key": "API key",
    "ua": "none + User-Agent (same length)",
    "pad": "none + X-Padding (same length)",
    "hs256": "JWT HS256",
    "rs256": "JWT RS256 (2048-bit)",
}


def cpu_s(pid):
    """user + system CPU seconds of process pid so far (all its threads)"""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wrk(url, seconds, header=None, pid=None, perf_out=None):
    """(req/s, p50, p99, non-2xx, controller CPU microseconds per request)"""
    cmd = ["wrk", "-t2", "-c32", f"-d{seconds}s", "--latency"]
    if header:
        cmd += ["-H", header]
    rec = None
    if perf_out:  # profile the controller for the middle of the run
        rec = subprocess.Popen(["perf", "record", "-q", "-g", "-p", str(pid), "-o", perf_out,
                                "--", "sleep", str(max(1, seconds - 2))],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    cpu0 = cpu_s(pid)
    out = subprocess.run(cmd + [url], capture_output=True, text=True).stdout
    cpu = cpu_s(pid) - cpu0
    if rec:
        rec.wait()
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    n = int(re.search(r"(\d+) requests in", out).group(1))
    p50 = re.search(r"50%\s+([\d.]+\w+)", out).group(1)
    p99 = re.search(r"99%\s+([\d.]+\w+)", out).group(1)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return rps, p50, p99, int(non2xx.group(1)) if non2xx else 0, cpu * 1e6 / max(n, 1)


def headers(ctl):
    j = ctl.jwt
    claims = j.claims(tenant="ops", scope="admin", exp=2_000_000_000)
    auth = "Bearer " + ctl.keys["admin"]
    return {
        "none": None,
        "key": "Authorization: " + auth,
        "ua": "User-Agent: " + "b" * len(auth),
        "pad": "X-Padding: " + "b" * (len(auth) + len("Authorization") - len("X-Padding")),
        "hs256": "Authorization: Bearer " + j.hs256(claims),
        "rs256": "Authorization: Bearer " + j.rs256(claims),
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--binary", required=True)
    ap.add_argument("--baseline", help="a second build to compare, same run")
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--cases", default="none,key,ua,pad,hs256,rs256")
    ap.add_argument("--perf", metavar="DIR",
                    help="record a perf profile of the controller per case into DIR "
                         "(the last round's; read with perf report -i DIR/BUILD-CASE.data)")
    args = ap.parse_args()
    cases = args.cases.split(",")
    if "none" not in cases or any(c not in CASES for c in cases):
        sys.exit(f"--cases: a comma-separated subset of {','.join(CASES)}, with none")
    cases.remove("none")
    cases.insert(0, "none")
    if not shutil.which("wrk"):
        sys.exit("wrk is needed (apt-get install wrk)")
    work = tempfile.mkdtemp(prefix="sbx-bench-auth-")
    cdir = os.path.join(work, "cluster")
    cluster_py = os.path.join(ROOT, "tests", "cluster", "cluster.py")
    print(subprocess.run([sys.executable, cluster_py, "start", "--dir", cdir, "--watch-pid",
                          str(os.getpid())], check=True, capture_output=True, text=True).stdout.strip())
    ctls = []
    try:
        env = {}
        with open(os.path.join(cdir, "env")) as f:
            for line in f:
                k, v = line.rstrip("\n").split("=", 1)
                env[k] = v
        builds = [("new", args.binary)] + ([("baseline", args.baseline)] if args.baseline else [])
        for name, binary in builds:
            wd = os.path.join(work, name)
            os.mkdir(wd)
            ctl = Controller(env, os.path.abspath(binary), wd, rate=1e6, burst=1e6,
                             arate=1e6, aburst=1e6, insecure=True)
            ctl.start()
            ctls.append((name, binary, ctl))
        status, sb, _ = ctls[0][2].as_("admin").call("POST", "/v1/sandboxes", {"template": "python"})
        assert status == 201, sb
        for name, _, ctl in ctls[1:]:  # the other controller sees it through its watch
            for _ in range(100):
                if ctl.as_("admin").call("GET", f"/v1/sandboxes/{sb['id']}")[0] == 200:
                    break
                subprocess.run(["sleep", "0.1"])
        print(f"wrk -t2 -c32 -d{args.seconds}s --latency GET /v1/sandboxes/{{id}}, "
              f"{os.cpu_count()} cores, {args.rounds} interleaved rounds")
        results = {(b, c): [] for b, _, _ in ctls for c in cases}
        hdrs = {b: headers(ctl) for b, _, ctl in ctls}
        for r in range(args.rounds):
            for b, _, ctl in ctls:
                url = f"http://127.0.0.1:{ctl.port}/v1/sandboxes/{sb['id']}"
                for c in cases:
                    perf_out = (os.path.join(args.perf, f"{b}-{c}.data")
                                if args.perf and r == args.rounds - 1 else None)
                    results[(b, c)].append(wrk(url, args.seconds, hdrs[b][c], ctl.proc.pid,
                                               perf_out))
            print(f"round {r + 1}: " + "  ".join(
                f"{b}/{c} {results[(b, c)][-1][0]:.0f}" for b, _, _ in ctls for c in cases),
                flush=True)
        for b, binary, _ in ctls:
            print(f"\n{b}: {binary}")
            base = [x[0] for x in results[(b, "none")]]
            base_cpu = [x[4] for x in results[(b, "none")]]
            for c in cases:
                rs = results[(b, c)]
                rps = [x[0] for x in rs]
                cpu = [x[4] for x in rs]
                mid = sorted(rs, key=lambda x: x[0])[len(rs) // 2]
                loss = statistics.median(x / y - 1 for x, y in zip(rps, base)) * 100
                more = statistics.median(x / y - 1 for x, y in zip(cpu, base_cpu)) * 100
                bad = sum(x[3] for x in rs)
                print(f"  {CASES[c]:<36} median {statistics.median(rps):8.0f} req/s "
                      f"(range {min(rps):.0f}-{max(rps):.0f})  p50 {mid[1]:>8}  p99 {mid[2]:>8}  "
                      f"{loss:+6.1f}% vs none  controller CPU {statistics.median(cpu):5.2f} us/req "
                      f"({more:+5.1f}%)  non-2xx {bad}")
            print(f"  rounds, req/s: " + "; ".join(
                f"{c} " + " ".join(f"{x[0]:.0f}" for x in results[(b, c)]) for c in cases))
            print(f"  rounds, controller CPU us/req: " + "; ".join(
                f"{c} " + " ".join(f"{x[4]:.2f}" for x in results[(b, c)]) for c in cases))
    finally:
        for _, _, ctl in ctls:
            ctl.stop()
        subprocess.run([sys.executable, cluster_py, "stop", "--dir", cdir], check=False)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
