#!/usr/bin/env python3
"""Files API benchmark: memory and throughput of large transfers.
Prints figures; never passes or fails on them.

A controller whose limits.max_body_bytes is 64 KiB and whose `exec` template
allows files up to 1 GiB (the bench writes that into the config it starts
the controller with) moves an N MiB file (default 100) each way:

  1. PUT  /v1/sandboxes/{id}/files (Content-Length, body sent from a
     generator: the client holds 1 MiB at a time);
  2. GET  the same file, read as fast as possible and discarded;
  3. GET  again by a slow reader (pausing 50 ms every 1 MiB);

while a thread samples the controller's VmRSS every 10 ms. For each: time,
MiB/s, the RSS peak seen over the idle RSS before it, and VmHWM (the
kernel's own peak for the process) before and after.

Usage: bench_files.py --binary build/sandbox-controller [--mib 100]
                      [--cluster-env /tmp/sx/env]
Without --cluster-env it starts its own control plane (tests/cluster/cluster.py)
in a temporary dir. The controller must stream PUT bodies
(http_server_opts.stream_body = files_api_stream_body); without that the
upload is refused with 413 at 64 KiB and the bench says so.
"""
import argparse
import hashlib
import http.client
import os
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "tests", "e2e"))
from conftest import Controller  # noqa: E402

MIB = 1 << 20


def status_kib(pid, key):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return -1


class Sampler:
    def __init__(self, pid):
        self.pid = pid
        self.peak = 0
        self.stop = False
        self.th = threading.Thread(target=self.run, daemon=True)

    def run(self):
        while not self.stop:
            try:
                self.peak = max(self.peak, status_kib(self.pid, "VmRSS"))
            except OSError:
                return
            time.sleep(0.01)

    def __enter__(self):
        self.th.start()
        return self

    def __exit__(self, *a):
        self.stop = True
        self.th.join()


def measured(ctl, name, mib, fn):
    pid = ctl.proc.pid
    time.sleep(0.5)
    idle = status_kib(pid, "VmRSS")
    hwm0 = status_kib(pid, "VmHWM")
    t0 = time.time()
    with Sampler(pid) as s:
        result = fn()
    dt = time.time() - t0
    hwm1 = status_kib(pid, "VmHWM")
    print(f"{name:<34} {dt:6.2f} s {mib / dt:8.1f} MiB/s   RSS idle {idle / 1024:6.1f} MiB, "
          f"peak {s.peak / 1024:6.1f} MiB (+{(s.peak - idle) / 1024:5.1f} MiB)   "
          f"VmHWM {hwm0 / 1024:6.1f} -> {hwm1 / 1024:6.1f} MiB", flush=True)
    return result


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--binary", required=True)
    ap.add_argument("--mib", type=int, default=100)
    ap.add_argument("--cluster-env", default=os.environ.get("SBX_CLUSTER_ENV"))
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="sbx-bench-files-")
    cluster_py = os.path.join(ROOT, "tests", "cluster", "cluster.py")
    cdir = None
    env_file = args.cluster_env
    if not env_file:
        cdir = os.path.join(work, "cluster")
        line = subprocess.run([sys.executable, cluster_py, "start", "--dir", cdir, "--watch-pid",
                               str(os.getpid())], check=True, capture_output=True, text=True).stdout
        print(line.strip())
        env_file = os.path.join(cdir, "env")
    ctl = None
    try:
        env = {}
        with open(env_file) as f:
            for l in f:
                k, v = l.rstrip("\n").split("=", 1)
                env[k] = v
        ctl = Controller(env, os.path.abspath(args.binary), work, rate=1e6, burst=1e6,
                         arate=1e6, aburst=1e6, max_body=64 << 10)
        # the e2e templates cap files at 16 MiB: this run's config allows 1 GiB
        with open(ctl.config) as f:
            cfg = f.read()
        assert "max_file_bytes: 16Mi" in cfg
        with open(ctl.config, "w") as f:
            f.write(cfg.replace("max_file_bytes: 16Mi", "max_file_bytes: 1Gi"))
        ctl.start()
        api = ctl.api
        st, sb, _ = api.call("POST", "/v1/sandboxes", {"template": "exec"})
        assert st == 201, sb
        sid = sb["id"]
        print(f"machine: {os.cpu_count()} cores; limits.max_body_bytes 64 KiB; file {args.mib} MiB")
        n = args.mib * MIB
        block = os.urandom(MIB)
        want = hashlib.sha256()
        for _ in range(args.mib):
            want.update(block)

        def target(path):
            return f"/v1/sandboxes/{sid}/files?" + urllib.parse.urlencode({"path": path})

        def conn():
            return http.client.HTTPConnection("127.0.0.1", ctl.port, timeout=600)

        auth = {"Authorization": "Bearer " + ctl.keys["acme"]}

        def put():
            def gen():
                for _ in range(args.mib):
                    yield block
            c = conn()
            c.request("PUT", target("bench.bin"), body=gen(),
                      headers=dict(auth, **{"Content-Length": str(n)}))
            r = c.getresponse()
            body = r.read()
            c.close()
            return r.status, body

        st, body = measured(ctl, f"PUT {args.mib} MiB", args.mib, put)
        if st not in (200, 201, 204):
            print(f"PUT answered {st}: {body[:300]!r} (does this build stream PUT bodies?)")
            return
        with open(os.path.join(ctl.exec_ws, "bench.bin"), "rb") as f:
            h = hashlib.sha256()
            for chunk in iter(lambda: f.read(MIB), b""):
                h.update(chunk)
        print(f"  file on disk intact: {h.digest() == want.digest()}")

        def get(slow):
            def run():
                c = conn()
                c.request("GET", target("bench.bin"), headers=auth)
                r = c.getresponse()
                h = hashlib.sha256()
                got = 0
                while True:
                    chunk = r.read(MIB)
                    if not chunk:
                        break
                    h.update(chunk)
                    got += len(chunk)
                    if slow:
                        time.sleep(0.05)
                c.close()
                return r.status, got, h.digest() == want.digest()
            return run

        st, got, ok = measured(ctl, f"GET {args.mib} MiB", args.mib, get(False))
        print(f"  status {st}, {got} bytes, content intact: {ok}")
        st, got, ok = measured(ctl, f"GET {args.mib} MiB, slow reader", args.mib, get(True))
        print(f"  status {st}, {got} bytes, content intact: {ok}")
        api.call("DELETE", "/v1/sandboxes/" + sid)
    finally:
        if ctl:
            ctl.stop()
        if cdir:
            subprocess.run([sys.executable, cluster_py, "stop", "--dir", cdir], capture_output=True)


if __name__ == "__main__":
    main()
