#!/usr/bin/env python3
"""Exec benchmarks against the real test control plane (kwok local exec).
Prints figures; never passes or fails on them.

  1. round trip of `true`: a WebSocket exec through the controller
     (GET /v1/sandboxes/{id}/exec) against a WebSocket exec straight to the
     API server (pods/exec, same Pod, same client code, same run), and the
     one-shot POST /v1/sandboxes/{id}/exec;
  2. streaming throughput: N MiB of stdout (`head -c N /dev/zero`) through
     the bridge vs direct, counted by the same reader;
  3. memory per idle open stream: the controller's RSS before and after
     opening K streams of `cat` that wait on stdin.

Usage: bench_exec.py --binary build/sandbox-controller [--n 200] [--mib 1024] [--idle 200]
It starts its own control plane (tests/cluster/cluster.py) in a temporary dir.
"""
import argparse
import base64
import os
import socket
import ssl
import statistics
import struct
import subprocess
import sys
import tempfile
import time
import urllib.parse

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "tests", "e2e"))
from conftest import Controller  # noqa: E402


def pct(values, p):
    s = sorted(values)
    k = (len(s) - 1) * p / 100
    lo, hi = int(k), min(int(k) + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def summary(name, ms):
    print(f"{name:<52} n={len(ms):<4} p50={pct(ms, 50):7.2f} ms  p90={pct(ms, 90):7.2f} ms  "
          f"p99={pct(ms, 99):7.2f} ms  mean={statistics.mean(ms):7.2f} ms", flush=True)


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return -1


class Stream:
    """A WebSocket exec client that reads fast: frames are parsed from a
    bytearray, payloads of channel 1 are counted, not kept."""

    def __init__(self, host, port, target, headers, tls_ctx=None):
        raw = socket.create_connection((host, port))
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock = tls_ctx.wrap_socket(raw, server_hostname=host) if tls_ctx else raw
        key = base64.b64encode(os.urandom(16)).decode()
        lines = [f"GET {target} HTTP/1.1", f"Host: {host}", "Upgrade: websocket",
                 "Connection: Upgrade", f"Sec-WebSocket-Key: {key}", "Sec-WebSocket-Version: 13",
                 "Sec-WebSocket-Protocol: v4.channel.k8s.io"] + headers
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        self.buf = bytearray()
        while b"\r\n\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError("handshake")
            self.buf += chunk
        i = self.buf.index(b"\r\n\r\n")
        if not self.buf.startswith(b"HTTP/1.1 101"):
            raise RuntimeError(bytes(self.buf[:i]).decode(errors="replace"))
        del self.buf[:i + 4]

    def drain(self):
        """Read to the close frame; returns (stdout bytes counted, status seen)."""
        count, status, pos, ch = 0, None, 0, None
        buf = self.buf
        while True:
            while True:
                if len(buf) - pos < 2:
                    break
                n, off = buf[pos + 1] & 0x7F, 2
                if n == 126:
                    if len(buf) - pos < 4:
                        break
                    n, off = struct.unpack_from(">H", buf, pos + 2)[0], 4
                elif n == 127:
                    if len(buf) - pos < 10:
                        break
                    n, off = struct.unpack_from(">Q", buf, pos + 2)[0], 10
                if len(buf) - pos < off + n:
                    break
                op, fin = buf[pos] & 0x0F, buf[pos] & 0x80
                if op == 8:
                    return count, status
                if op in (1, 2) and n:  # a message's first frame: channel byte first
                    ch = buf[pos + off]
                    if ch == 1:
                        count += n - 1
                    elif ch == 3:
                        status = bytes(buf[pos + off + 1:pos + off + n])
                elif op == 0 and ch == 1:  # continuation of a stdout message
                    count += n
                elif op == 0 and ch == 3:
                    status += bytes(buf[pos + off:pos + off + n])
                if op in (0, 1, 2) and fin:
                    ch = None
                pos += off + n
            if pos:
                del buf[:pos]
                pos = 0
            chunk = self.sock.recv(1 << 20)
            if not chunk:
                return count, status
            buf += chunk

    def close(self):
        self.sock.close()


def q(cmd, **flags):
    items = [("command", c) for c in cmd] + [(k, v) for k, v in flags.items()]
    return urllib.parse.urlencode(items)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--binary", required=True)
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--mib", type=int, default=1024)
    ap.add_argument("--idle", type=int, default=200)
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="sbx-bench-exec-")
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
        ctl = Controller(env, os.path.abspath(args.binary), work, rate=1e6, burst=1e6,
                         arate=1e6, aburst=1e6)
        ctl.start()
        api = ctl.api
        st, sb, _ = api.call("POST", "/v1/sandboxes", {"template": "exec"})
        assert st == 201, sb
        sid, ns = sb["id"], env["KUBE_NAMESPACE"]
        # exec.shell: none: the same exec without the wrapper shell (and so
        # without env, workdir and the kill on timeout): what the controller
        # itself adds, apart from the wrapper's process start
        st, bare, _ = api.call("POST", "/v1/sandboxes", {"template": "bare"})
        assert st == 201, bare
        print(f"machine: {os.cpu_count()} cores")
        u = urllib.parse.urlparse(env["KUBE_SERVER"])
        ctx = ssl.create_default_context(cafile=env["KUBE_CA_FILE"])
        direct_hdr = ["Authorization: Bearer " + env["KUBE_ADMIN_TOKEN"]]
        ours_hdr = ["Authorization: Bearer " + ctl.keys["acme"]]

        def direct(cmd):
            return Stream(u.hostname, u.port, f"/api/v1/namespaces/{ns}/pods/{sid}/exec?" +
                          q(cmd, stdout="true", stderr="true"), direct_hdr, ctx)

        def ours(cmd):
            return Stream("127.0.0.1", ctl.port, f"/v1/sandboxes/{sid}/exec?" + q(cmd),
                          ours_hdr)

        def ours_bare(cmd):
            return Stream("127.0.0.1", ctl.port, f"/v1/sandboxes/{bare['id']}/exec?" + q(cmd),
                          ours_hdr)

        # 1. round trip of `true`, interleaved so that drift hits both alike
        d_ms, o_ms, b_ms, p_ms = [], [], [], []
        for i in range(args.n + 10):
            for fn, acc in ((direct, d_ms), (ours, o_ms), (ours_bare, b_ms)):
                t0 = time.perf_counter()
                s = fn(["true"])
                _, status = s.drain()
                s.close()
                dt = (time.perf_counter() - t0) * 1000
                assert status and b"Success" in status, status
                if i >= 10:  # warm-up
                    acc.append(dt)
            t0 = time.perf_counter()
            st, r, _ = api.call("POST", f"/v1/sandboxes/{sid}/exec", {"command": ["true"]})
            assert st == 200 and r["exit_code"] == 0, r
            if i >= 10:
                p_ms.append((time.perf_counter() - t0) * 1000)
        summary("direct WebSocket exec `true` (API server)", d_ms)
        summary("through the controller (WebSocket)", o_ms)
        print(f"{'':<52} controller adds {pct(o_ms, 50) - pct(d_ms, 50):+.2f} ms at p50", flush=True)
        summary("through the controller, exec.shell: none", b_ms)
        print(f"{'':<52} controller without the wrapper adds "
              f"{pct(b_ms, 50) - pct(d_ms, 50):+.2f} ms at p50", flush=True)
        summary("through the controller (one-shot POST, keep-alive off)", p_ms)

        # 2. throughput
        n = args.mib << 20
        cmd = ["head", "-c", str(n), "/dev/zero"]
        for name, fn in (("direct", direct), ("controller", ours), ("direct", direct),
                         ("controller", ours)):
            t0 = time.perf_counter()
            s = fn(cmd)
            count, status = s.drain()
            s.close()
            dt = time.perf_counter() - t0
            ok = count == n and status and b"Success" in status
            print(f"stdout {args.mib} MiB {name:<11} {dt:7.2f} s  {n / dt / (1 << 20):8.1f} MiB/s"
                  f"  {'complete' if ok else 'INCOMPLETE: %d bytes' % count}", flush=True)

        # 3. memory per idle stream
        time.sleep(12)  # the daemon trims freed memory every 10 s
        before = rss_kib(ctl.proc.pid)
        ids = [sid]
        per = 4  # the template allows 4 streams per sandbox
        while len(ids) * per < args.idle:
            st, sb2, _ = api.call("POST", "/v1/sandboxes", {"template": "exec"})
            assert st == 201
            ids.append(sb2["id"])
        time.sleep(12)
        base = rss_kib(ctl.proc.pid)
        streams = []
        for i in range(args.idle):
            s = Stream("127.0.0.1", ctl.port,
                       f"/v1/sandboxes/{ids[i // per]}/exec?" + q(["cat"], stdin="true"), ours_hdr)
            streams.append(s)
        time.sleep(3)
        time.sleep(12)
        opened = rss_kib(ctl.proc.pid)
        print(f"RSS: {before / 1024:.1f} MiB idle, {base / 1024:.1f} MiB with {len(ids)} sandboxes, "
              f"{opened / 1024:.1f} MiB with {args.idle} idle streams open: "
              f"{(opened - base) / args.idle:.1f} KiB per idle stream", flush=True)
        for s in streams:
            s.close()
    finally:
        if ctl:
            ctl.stop()
        subprocess.run([sys.executable, cluster_py, "stop", "--dir", cdir], capture_output=True)


if __name__ == "__main__":
    main()
