#!/usr/bin/env python3
"""Start a real, local Kubernetes control plane for tests (Python 3.11 stdlib only).

The control plane is etcd + kube-apiserver + kwok, built from pinned sources by
build-binaries.sh and cached outside the build tree. kwok plays the kubelet for a
few fake Nodes: their Pods become Running without containers, and `exec` into
them runs the command LOCALLY, on this machine, as this user, in a work
directory under the state directory.

Everything lives in a throwaway state directory DIR and listens on 127.0.0.1 on
free ports. A detached supervisor process (its own session) owns etcd,
kube-apiserver and kwok and tears them down when it gets SIGTERM/SIGINT, when
`stop` asks, or when the --watch-pid process disappears. Components also get
PR_SET_PDEATHSIG, so even a SIGKILLed supervisor takes them down with it.

Subcommands (see docs/test-control-plane.md):
  start --dir DIR [--watch-pid PID|parent] [--nodes N]
  stop --dir DIR
  restart-apiserver --dir DIR [--down-seconds S]
  run --dir DIR [--nodes N] -- CMD...
  status --dir DIR

Files written to DIR: kubeconfig (0600), env (0600, KEY=VALUE lines), ca.crt,
state.json, logs/{etcd,kube-apiserver,kwok,supervisor}.log, pki/, etcd-data/,
exec-work/ (kwok's local exec workDir), kwok.yaml.
"""

from __future__ import annotations

import argparse
import base64
import ctypes
import datetime
import fcntl
import hashlib
import json
import os
import secrets
import select
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
CLUSTER_PY = Path(__file__).resolve()
BUILD_SCRIPT = HERE / "build-binaries.sh"
VERSIONS_FILE = HERE / "versions.env"

NAMESPACE = "sandboxes"
KWOK_NODE_KEY = "kwok.x-k8s.io/node"
KWOK_NODE_VALUE = "fake"
NODE_PREFIX = "kwok-node-"
SERVICE_CIDR = "10.96.0.0/16"
SERVICE_IP = "10.96.0.1"  # first address of SERVICE_CIDR: the `kubernetes` Service
POD_CIDR = "10.244.0.0/16"
SA_ISSUER = "https://kubernetes.default.svc.cluster.local"
KWOK_STAGES = ("node-initialize", "node-heartbeat", "pod-ready", "pod-complete", "pod-delete")

START_TIMEOUT = 300  # whole `start`, seconds
ETCD_TIMEOUT = 30
APISERVER_TIMEOUT = 120
KWOK_TIMEOUT = 60
TERM_GRACE = 5  # SIGTERM -> SIGKILL, seconds
PORT_ATTEMPTS = 3
LOG_TAIL_LINES = 30

EXIT_NOT_RUNNING = 3  # `status` exit code when no cluster runs (LSB convention)


class ClusterError(Exception):
    """A failure whose message is meant for the person running the tests."""


class Interrupted(ClusterError):
    """The supervisor was asked to stop while it was still bringing things up."""


# --------------------------------------------------------------------------- #
# Small helpers
# --------------------------------------------------------------------------- #

def log(msg: str) -> None:
    """Diagnostics go to stderr; stdout is reserved for the documented output."""
    print(f"cluster.py: {msg}", file=sys.stderr, flush=True)


def supervisor_log(msg: str) -> None:
    """The supervisor's stderr is DIR/logs/supervisor.log: timestamp its lines."""
    stamp = datetime.datetime.now().strftime("%H:%M:%S.%f")[:-3]
    print(f"{stamp} {msg}", file=sys.stderr, flush=True)


def write_private(path: Path, text: str) -> None:
    """Write a file readable only by its owner (it may hold a secret)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        os.fchmod(f.fileno(), 0o600)
        f.write(text)


def write_json_atomic(path: Path, data: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1) + "\n")
    os.replace(tmp, path)


def read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def read_env_file(path: Path) -> dict[str, str]:
    """Parse KEY=VALUE lines (no quoting: the value is the rest of the line)."""
    env = {}
    for line in path.read_text().splitlines():
        if line and not line.startswith("#") and "=" in line:
            key, value = line.split("=", 1)
            env[key] = value
    return env


def log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return f"(no log at {path})"
    tail = text.splitlines()[-lines:]
    return "\n".join(f"    {line}" for line in tail) or "    (log is empty)"


def free_port(exclude: set[int]) -> int:
    """A port nobody listens on right now (the OS picks it: bind to port 0)."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in exclude:
            exclude.add(port)
            return port


def listening_ports() -> set[int]:
    """TCP ports in LISTEN state on this host (from /proc/net/tcp{,6})."""
    ports = set()
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(name).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) > 3 and fields[3] == "0A":  # TCP_LISTEN
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


# --------------------------------------------------------------------------- #
# Processes
# --------------------------------------------------------------------------- #

def proc_stat(pid: int) -> tuple[str, int] | None:
    """(state letter, start time in clock ticks) of a process, None if gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2:].split()
    return fields[0], int(fields[19])


def pid_alive(pid: int) -> bool:
    """True if the process exists and is not a zombie."""
    stat = proc_stat(pid)
    return stat is not None and stat[0] not in ("Z", "X")


def proc_cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [a.decode(errors="replace") for a in raw.split(b"\0") if a]


def wait_pids_gone(pids: list[int], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not any(pid_alive(p) for p in pids):
            return True
        time.sleep(0.1)
    return not any(pid_alive(p) for p in pids)


_LIBC = ctypes.CDLL(None, use_errno=True)
_PR_SET_PDEATHSIG = 1


def _child_setup_for(parent_pid: int):
    """preexec_fn: die with the supervisor even if it is SIGKILLed."""
    def setup() -> None:
        _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent_pid:  # the parent died before prctl
            os._exit(1)
    return setup


def terminate(procs: list[subprocess.Popen], grace: float = TERM_GRACE) -> None:
    """SIGTERM, wait up to `grace` seconds, then SIGKILL; reap them all."""
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace
    for p in procs:
        try:
            p.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


# --------------------------------------------------------------------------- #
# Layout of the state directory and of the binary cache
# --------------------------------------------------------------------------- #

class Layout:
    """Paths inside the state directory DIR."""

    def __init__(self, root: str | Path):
        self.root = Path(root).resolve()
        self.logs = self.root / "logs"
        self.pki = self.root / "pki"
        self.etcd_data = self.root / "etcd-data"
        self.exec_work = self.root / "exec-work"
        self.home = self.root / "home"  # HOME of the components (keeps ~/.kwok out)
        self.kubeconfig = self.root / "kubeconfig"
        self.ca_crt = self.root / "ca.crt"
        self.env = self.root / "env"
        self.state = self.root / "state.json"
        self.supervisor_pid = self.root / "supervisor.pid"
        self.kwok_config = self.root / "kwok.yaml"
        self.token_file = self.pki / "tokens.csv"
        self.admin_token = self.pki / "admin.token"
        self.restart_request = self.root / "restart-apiserver.request"
        self.restart_result = self.root / "restart-apiserver.result"

    def log(self, component: str) -> Path:
        return self.logs / f"{component}.log"

    def fresh(self) -> None:
        """Remove what a previous cluster left; keep anything else in DIR."""
        for d in (self.logs, self.pki, self.etcd_data, self.exec_work, self.home):
            shutil.rmtree(d, ignore_errors=True)
        for f in (self.kubeconfig, self.ca_crt, self.env, self.state, self.supervisor_pid,
                  self.kwok_config, self.restart_request, self.restart_result):
            f.unlink(missing_ok=True)
        self.root.mkdir(parents=True, exist_ok=True)
        for d in (self.logs, self.exec_work, self.home):
            d.mkdir()
        self.pki.mkdir(mode=0o700)
        self.etcd_data.mkdir(mode=0o700)


def read_versions() -> dict[str, str]:
    versions = {}
    for line in VERSIONS_FILE.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            key, value = line.split("=", 1)
            versions[key] = value.strip().strip('"')
    return versions


@dataclass
class Binaries:
    """Where build-binaries.sh put each binary (the cache is keyed by version)."""
    cache: Path
    versions: dict[str, str] = field(default_factory=read_versions)

    @property
    def etcd(self) -> Path:
        return self.cache / f"etcd-{self.versions['ETCD_VERSION']}" / "etcd"

    @property
    def apiserver(self) -> Path:
        return self.cache / f"kubernetes-{self.versions['KUBE_VERSION']}-2" / "kube-apiserver"

    @property
    def scheduler(self) -> Path:
        return self.apiserver.with_name("kube-scheduler")

    @property
    def kwok_dir(self) -> Path:
        """Same key as build-binaries.sh: the version, plus the hash of our patch."""
        key = f"kwok-{self.versions['KWOK_VERSION']}"
        patch = HERE / "patches" / f"{key}.patch"
        if patch.exists():
            key += "-patched-" + hashlib.sha256(patch.read_bytes()).hexdigest()[:12]
        return self.cache / key

    @property
    def kwok(self) -> Path:
        return self.kwok_dir / "kwok"

    @property
    def kubectl(self) -> Path:
        return self.cache / f"kubectl-{self.versions['KUBECTL_NPM_VERSION']}" / "kubectl"

    @property
    def helm(self) -> Path:
        return self.kubectl.with_name("helm")

    def stage_file(self, name: str) -> Path:
        return self.kwok_dir / "stages" / f"{name}.yaml"

    @property
    def exec_crd(self) -> Path:
        return self.kwok_dir / "crds" / "kwok.x-k8s.io_execs.yaml"

    def check(self) -> None:
        needed = [self.etcd, self.apiserver, self.scheduler, self.kwok, self.kubectl, self.helm]
        needed += [self.stage_file(s) for s in KWOK_STAGES] + [self.exec_crd]
        missing = [str(p) for p in needed if not p.exists()]
        if missing:
            raise ClusterError("missing from the binary cache (remove the entry and rerun "
                               "build-binaries.sh): " + ", ".join(missing))


def default_cache() -> Path:
    return Path(os.environ.get("SANDBOX_CACHE") or Path.home() / ".cache/sandbox-controller")


def build_binaries() -> Path:
    """Run build-binaries.sh (a no-op when cached) under a lock; return the cache."""
    cache = default_cache()
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / ".build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # parallel `start`s must not build twice
        result = subprocess.run(["bash", str(BUILD_SCRIPT)], stdout=subprocess.PIPE,
                                stdin=subprocess.DEVNULL, text=True, check=False)
    if result.returncode != 0:
        raise ClusterError(f"{BUILD_SCRIPT} failed with exit code {result.returncode}")
    return Path(result.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------- #
# PKI, token, kubeconfig, env file, kwok config
# --------------------------------------------------------------------------- #

def openssl(*args: str, cwd: Path) -> None:
    result = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True,
                            check=False)
    if result.returncode != 0:
        raise ClusterError(f"openssl {args[0]} failed: {result.stderr.strip()}")


def generate_pki(layout: Layout) -> None:
    """CA, apiserver serving cert, ServiceAccount signing key pair (all EC P-256)."""
    pki = layout.pki
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.crt", "-days", "3650",
            "-subj", "/CN=sandbox-controller-test-ca",
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=pki)
    sans = ",".join(["IP:127.0.0.1", f"IP:{SERVICE_IP}", "DNS:localhost", "DNS:kubernetes",
                     "DNS:kubernetes.default", "DNS:kubernetes.default.svc",
                     "DNS:kubernetes.default.svc.cluster.local"])
    (pki / "apiserver.ext").write_text(
        f"subjectAltName={sans}\n"
        "extendedKeyUsage=serverAuth\n"
        "keyUsage=critical,digitalSignature,keyEncipherment\n"
        "basicConstraints=critical,CA:FALSE\n")
    openssl("req", "-new", *ec, "-keyout", "apiserver.key", "-out", "apiserver.csr",
            "-subj", "/CN=kube-apiserver", cwd=pki)
    openssl("x509", "-req", "-in", "apiserver.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
            "-CAcreateserial", "-days", "365", "-extfile", "apiserver.ext",
            "-out", "apiserver.crt", cwd=pki)
    openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256",
            "-out", "sa.key", cwd=pki)
    openssl("pkey", "-in", "sa.key", "-pubout", "-out", "sa.pub", cwd=pki)
    for key in pki.glob("*.key"):
        key.chmod(0o600)
    shutil.copyfile(pki / "ca.crt", layout.ca_crt)


def generate_admin_token(layout: Layout) -> None:
    token = secrets.token_hex(32)  # 32 random bytes
    write_private(layout.admin_token, token + "\n")
    write_private(layout.token_file, f'{token},admin,admin,"system:masters"\n')


def admin_token(layout: Layout) -> str:
    return layout.admin_token.read_text().strip()


def write_kubeconfig(layout: Layout, server: str) -> None:
    ca_data = base64.b64encode(layout.ca_crt.read_bytes()).decode()
    write_private(layout.kubeconfig, f"""\
apiVersion: v1
kind: Config
clusters:
- name: sandbox-test
  cluster:
    server: {server}
    certificate-authority-data: {ca_data}
users:
- name: admin
  user:
    token: {admin_token(layout)}
contexts:
- name: sandbox-test
  context:
    cluster: sandbox-test
    user: admin
    namespace: {NAMESPACE}
current-context: sandbox-test
""")


def write_kwok_config(layout: Layout, bins: Binaries) -> None:
    """Stages from kwok's module plus a ClusterExec that runs every exec locally."""
    docs = [bins.stage_file(s).read_text().strip().removeprefix("---").strip()
            for s in KWOK_STAGES]
    docs.append(f"""\
apiVersion: kwok.x-k8s.io/v1alpha1
kind: ClusterExec
metadata:
  name: local-exec
spec:
  execs:
  - local:
      workDir: {json.dumps(str(layout.exec_work))}""")
    layout.kwok_config.write_text("\n---\n".join(docs) + "\n")


# --------------------------------------------------------------------------- #
# HTTP to the apiserver / etcd / kwok (never through a proxy)
# --------------------------------------------------------------------------- #

class Http:
    """Tiny JSON client. Proxies from the environment are ignored on purpose."""

    def __init__(self, ca_file: Path | None = None, token: str | None = None,
                 verify: bool = True):
        if ca_file is not None:
            ctx = ssl.create_default_context(cafile=str(ca_file))
        else:
            ctx = ssl.create_default_context()
            if not verify:
                ctx.check_hostname = False
                ctx.verify_mode = ssl.CERT_NONE
        self.opener = urllib.request.build_opener(
            urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=ctx))
        self.token = token

    def request(self, method: str, url: str, body: dict | None = None,
                timeout: float = 10) -> tuple[int, dict | str, dict]:
        """(status, decoded body, headers); HTTP errors are returned, not raised."""
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(url, data=data, method=method)
        if data is not None:
            req.add_header("Content-Type", "application/merge-patch+json"
                           if method == "PATCH" else "application/json")
        if self.token:
            req.add_header("Authorization", f"Bearer {self.token}")
        try:
            with self.opener.open(req, timeout=timeout) as resp:
                return resp.status, _decode(resp.read()), dict(resp.headers)
        except urllib.error.HTTPError as e:
            return e.code, _decode(e.read()), dict(e.headers)

    def ok(self, url: str, timeout: float = 2) -> bool:
        try:
            return self.request("GET", url, timeout=timeout)[0] == 200
        except (OSError, ssl.SSLError):
            return False


def _decode(raw: bytes) -> dict | str:
    try:
        return json.loads(raw)
    except ValueError:
        return raw.decode(errors="replace")


# --------------------------------------------------------------------------- #
# The supervisor: owns etcd, kube-apiserver and kwok
# --------------------------------------------------------------------------- #

class ComponentFailed(ClusterError):
    def __init__(self, name: str, reason: str, log_path: Path):
        self.name = name
        self.log_path = log_path
        super().__init__(f"{name} {reason}; last lines of {log_path}:\n{log_tail(log_path)}")

    def port_clash(self) -> bool:
        try:
            text = self.log_path.read_text(errors="replace")[-20000:]
        except OSError:
            return False
        return "address already in use" in text


class Supervisor:
    def __init__(self, layout: Layout, bins: Binaries, nodes: int, watch_pid: int):
        self.layout = layout
        self.bins = bins
        self.nodes = [f"{NODE_PREFIX}{i}" for i in range(nodes)]
        self.watch_pid = watch_pid
        self.watch_start = proc_stat(watch_pid)[1] if watch_pid and proc_stat(watch_pid) else None
        self.procs: dict[str, subprocess.Popen] = {}
        self.argv: dict[str, list[str]] = {}
        self.ports: dict[str, int] = {}
        self.used_ports: set[int] = set()
        self.status = "starting"
        self.versions = ""
        self.stop_reason: str | None = None
        self.restart_pending = False
        self.env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                    "HOME": str(layout.home), "LANG": "C.UTF-8",
                    "KWOK_WORKDIR": str(layout.home / ".kwok")}
        self.http = Http()
        self.api: Http | None = None

    # -- signals and state ------------------------------------------------- #

    def install_signal_handlers(self) -> None:
        def on_stop(signum, _frame):
            self.stop_reason = f"received {signal.Signals(signum).name}"
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, on_stop)
        signal.signal(signal.SIGUSR1, lambda *_: setattr(self, "restart_pending", True))

    def check_interrupted(self) -> None:
        if self.stop_reason:
            raise Interrupted(f"start aborted: supervisor {self.stop_reason}")

    def save_state(self) -> None:
        write_json_atomic(self.layout.state, {
            "supervisor_pid": os.getpid(),
            "status": self.status,
            "watch_pid": self.watch_pid,
            "nodes": self.nodes,
            "ports": self.ports,
            "versions": self.versions,
            "components": {name: {"pid": p.pid, "exe": self.argv[name][0],
                                  "running": p.poll() is None}
                           for name, p in self.procs.items()},
        })

    def watched_process_gone(self) -> bool:
        if not self.watch_pid:
            return False
        stat = proc_stat(self.watch_pid)
        return stat is None or stat[0] in ("Z", "X") or stat[1] != self.watch_start

    # -- components --------------------------------------------------------- #

    def spawn(self, name: str, argv: list[str]) -> subprocess.Popen:
        self.argv[name] = argv
        with open(self.layout.log(name), "ab") as logf:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=logf,
                                    stderr=subprocess.STDOUT, env=self.env,
                                    cwd=self.layout.home, close_fds=True,
                                    preexec_fn=_child_setup_for(os.getpid()))
        self.procs[name] = proc
        self.save_state()
        return proc

    def wait_for(self, name: str, ready, timeout: float, what: str) -> None:
        """Poll `ready()` until true; fail if the component exits or time runs out."""
        proc = self.procs[name]
        deadline = time.monotonic() + timeout
        while True:
            self.check_interrupted()
            if proc.poll() is not None:
                raise ComponentFailed(name, f"exited with code {proc.returncode}",
                                      self.layout.log(name))
            if ready():
                return
            if time.monotonic() > deadline:
                raise ComponentFailed(name, f"not {what} after {timeout}s",
                                      self.layout.log(name))
            time.sleep(0.1)

    def start_with_free_ports(self, name: str, port_names: list[str], starter) -> None:
        """Pick free ports and start; retry with new ports if one was taken meanwhile."""
        for attempt in range(1, PORT_ATTEMPTS + 1):
            for p in port_names:
                self.ports[p] = free_port(self.used_ports)
            try:
                starter()
                return
            except ComponentFailed as e:
                if not e.port_clash() or attempt == PORT_ATTEMPTS:
                    raise
                supervisor_log(f"{name}: a port was taken before {name} could bind it; retrying")
                terminate([self.procs.pop(name)])

    def start_etcd(self) -> None:
        shutil.rmtree(self.layout.etcd_data, ignore_errors=True)
        self.layout.etcd_data.mkdir(mode=0o700)
        client = f"http://127.0.0.1:{self.ports['etcd_client']}"
        peer = f"http://127.0.0.1:{self.ports['etcd_peer']}"
        self.spawn("etcd", [
            str(self.bins.etcd),
            "--name=sandbox-test",
            f"--data-dir={self.layout.etcd_data}",
            f"--listen-client-urls={client}",
            f"--advertise-client-urls={client}",
            f"--listen-peer-urls={peer}",
            f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster=sandbox-test={peer}",
            "--initial-cluster-state=new",
            "--unsafe-no-fsync=true",  # throwaway data: durability buys nothing
            # a single member elects itself after one election timeout (default 1s)
            "--heartbeat-interval=20",
            "--election-timeout=200",
            "--log-level=warn",
        ])
        self.wait_for("etcd", lambda: self.http.ok(f"{client}/health"), ETCD_TIMEOUT,
                      "healthy")

    def apiserver_argv(self) -> list[str]:
        pki = self.layout.pki
        return [
            str(self.bins.apiserver),
            f"--etcd-servers=http://127.0.0.1:{self.ports['etcd_client']}",
            "--advertise-address=127.0.0.1",
            "--bind-address=127.0.0.1",
            f"--secure-port={self.ports['apiserver']}",
            f"--cert-dir={pki}",
            f"--tls-cert-file={pki / 'apiserver.crt'}",
            f"--tls-private-key-file={pki / 'apiserver.key'}",
            f"--client-ca-file={pki / 'ca.crt'}",
            f"--token-auth-file={self.layout.token_file}",
            "--authorization-mode=Node,RBAC",
            f"--service-account-issuer={SA_ISSUER}",
            f"--service-account-signing-key-file={pki / 'sa.key'}",
            f"--service-account-key-file={pki / 'sa.pub'}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--kubelet-preferred-address-types=InternalIP",
            # so that privileged Pods are refused by PodSecurity, as in a real cluster
            "--allow-privileged=true",
            # on SIGTERM, close the HTTP server 2s after in-flight requests drain
            # instead of waiting up to --request-timeout (60s) for open watches
            "--shutdown-send-retry-after=true",
            "--profiling=false",
            "--v=1",
        ]

    def apiserver_ready(self) -> bool:
        return self.api is not None and self.api.ok(self.api_url("/readyz"))

    def api_url(self, path: str) -> str:
        return f"https://127.0.0.1:{self.ports['apiserver']}{path}"

    def start_apiserver(self) -> None:
        self.api = Http(ca_file=self.layout.ca_crt, token=admin_token(self.layout))
        self.spawn("kube-apiserver", self.apiserver_argv())
        self.wait_for("kube-apiserver", self.apiserver_ready, APISERVER_TIMEOUT, "ready")

    def start_scheduler(self) -> None:
        """The real kube-scheduler, so that Pods are placed as in a real cluster
        (the controller never sets spec.nodeName) and unschedulable ones say so."""
        self.spawn("kube-scheduler", [
            str(self.bins.scheduler),
            f"--kubeconfig={self.layout.kubeconfig}",
            "--leader-elect=false",
            "--secure-port=0",  # no serving endpoint: nothing here scrapes it
            "--v=1",
        ])
        # it has no endpoint to poll: alive after a moment is as good as it gets
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            if self.procs["kube-scheduler"].poll() is not None:
                raise ComponentFailed("kube-scheduler", "exited at start",
                                      self.layout.log("kube-scheduler"))
            time.sleep(0.1)

    def kwok_argv(self) -> list[str]:
        port = self.ports["kwok"]
        return [
            str(self.bins.kwok),
            f"--config={self.layout.kwok_config}",
            f"--kubeconfig={self.layout.kubeconfig}",
            "--manage-all-nodes=false",
            f"--manage-nodes-with-annotation-selector={KWOK_NODE_KEY}={KWOK_NODE_VALUE}",
            "--node-ip=127.0.0.1",
            f"--node-port={port}",
            f"--server-address=127.0.0.1:{port}",
            f"--cidr={POD_CIDR}",
            # Exec objects from the API (a Pod's own workDir); ClusterExec and the
            # stages still come from --config
            "--enable-crds=Exec",
        ]

    def kwok_server_version(self) -> str | None:
        """kwok's server says `Server: kwok/0.8.0` (its own version).

        Plain HTTP on purpose: kwok serves HTTP and HTTPS on one port (cmux), and
        Python's TLS 1.3 handshake fails there ("bad record MAC" in kwok's log)
        although Go's and curl's succeed.
        """
        try:
            status, _, headers = self.http.request(
                "GET", f"http://127.0.0.1:{self.ports['kwok']}/healthz", timeout=2)
        except (OSError, ssl.SSLError):
            return None
        server = headers.get("Server", "")
        if status != 200 or not server.startswith("kwok/"):
            return None
        return "v" + server.removeprefix("kwok/").lstrip("v")

    def start_kwok(self) -> None:
        self.spawn("kwok", self.kwok_argv())
        self.wait_for("kwok", lambda: self.kwok_server_version() is not None, KWOK_TIMEOUT,
                      "serving")

    # -- API objects -------------------------------------------------------- #

    def create(self, path: str, obj: dict, retry_404_for: float = 0) -> None:
        """POST an object; an existing one is fine. Retry 404s (namespace not there yet)."""
        deadline = time.monotonic() + retry_404_for
        while True:
            status, body, _ = self.api.request("POST", self.api_url(path), obj)
            if status in (200, 201, 409):
                return
            if status == 404 and time.monotonic() < deadline:
                self.check_interrupted()
                time.sleep(0.1)
                continue
            message = body.get("message") if isinstance(body, dict) else body
            raise ClusterError(f"creating {obj['kind']} {obj['metadata']['name']}: "
                               f"HTTP {status}: {message}")

    def create_namespace_and_service_accounts(self) -> None:
        self.create("/api/v1/namespaces", {
            "apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": NAMESPACE, "labels": {
                "pod-security.kubernetes.io/enforce": "restricted",
                "pod-security.kubernetes.io/enforce-version": "latest"}}})
        # kube-controller-manager would create these; it does not run here.
        ca = self.layout.ca_crt.read_text()
        for ns in (NAMESPACE, "default"):
            self.create(f"/api/v1/namespaces/{ns}/serviceaccounts", {
                "apiVersion": "v1", "kind": "ServiceAccount",
                "metadata": {"name": "default", "namespace": ns}}, retry_404_for=30)
            self.create(f"/api/v1/namespaces/{ns}/configmaps", {
                "apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "kube-root-ca.crt", "namespace": ns},
                "data": {"ca.crt": ca}})

    def install_exec_crd(self) -> None:
        """kwok's Exec CRD: lets a test give one Pod its own exec workDir."""
        kubectl = [str(self.bins.kubectl), f"--kubeconfig={self.layout.kubeconfig}"]
        for args in (["apply", "--server-side", "-f", str(self.bins.exec_crd)],
                     ["wait", "--for=condition=Established", "--timeout=30s",
                      "crd/execs.kwok.x-k8s.io"]):
            result = subprocess.run(kubectl + args, capture_output=True, text=True,
                                    env=self.env, check=False)
            if result.returncode != 0:
                raise ClusterError(f"kubectl {args[0]} (kwok Exec CRD) failed: "
                                   f"{result.stderr.strip()}")

    def create_nodes(self) -> None:
        for name in self.nodes:
            self.create("/api/v1/nodes", {
                "apiVersion": "v1", "kind": "Node",
                "metadata": {
                    "name": name,
                    "annotations": {KWOK_NODE_KEY: KWOK_NODE_VALUE,
                                    "node.alpha.kubernetes.io/ttl": "0"},
                    "labels": {KWOK_NODE_KEY: KWOK_NODE_VALUE, "type": "kwok",
                               "kubernetes.io/hostname": name,
                               "kubernetes.io/os": "linux",
                               "kubernetes.io/arch": "amd64"}},
                "spec": {}})

    def nodes_ready(self) -> bool:
        status, body, _ = self.api.request(
            "GET", self.api_url(f"/api/v1/nodes?labelSelector={KWOK_NODE_KEY}%3D{KWOK_NODE_VALUE}"))
        if status != 200:
            return False
        ready = {n["metadata"]["name"] for n in body.get("items", [])
                 if any(c.get("type") == "Ready" and c.get("status") == "True"
                        for c in n.get("status", {}).get("conditions", []))}
        return ready >= set(self.nodes)

    def untaint_nodes(self) -> None:
        """Make the kwok nodes schedulable as real ones would be. Remove the
        node.kubernetes.io/not-ready taint the API server puts on
        every new Node. In a real cluster kube-controller-manager's node
        lifecycle controller lifts it once the node reports Ready; none runs
        here, so the harness does it once kwok has made the nodes Ready."""
        for name in self.nodes:
            status, body, _ = self.api.request(
                "PATCH", self.api_url(f"/api/v1/nodes/{name}"), {"spec": {"taints": None}})
            if status != 200:
                raise ClusterError(f"removing the not-ready taint of {name}: {status} {body}")
            # kwok's node-initialize stage reports cpu, memory and pods only; real
            # kubelets also report ephemeral storage, which sandbox Pods request
            storage = {"ephemeral-storage": "1Ti"}
            status, body, _ = self.api.request(
                "PATCH", self.api_url(f"/api/v1/nodes/{name}/status"),
                {"status": {"capacity": storage, "allocatable": storage}})
            if status != 200:
                raise ClusterError(f"adding ephemeral storage to {name}: {status} {body}")

    # -- bring-up, loop, teardown ------------------------------------------- #

    def read_versions_line(self) -> str:
        status, apiv, _ = self.api.request("GET", self.api_url("/version"))
        _, etcdv, _ = self.http.request(
            "GET", f"http://127.0.0.1:{self.ports['etcd_client']}/version")
        kwokv = self.kwok_server_version()
        if status != 200 or not isinstance(etcdv, dict) or not kwokv:
            raise ClusterError("could not read the versions of the running components")
        return (f"control plane: kube-apiserver {apiv['gitVersion']}, "
                f"etcd v{etcdv['etcdserver']}, kwok {kwokv}")

    def write_env(self) -> None:
        server = self.api_url("")
        values = {
            "KUBECONFIG": self.layout.kubeconfig,
            "KUBE_SERVER": server,
            "KUBE_CA_FILE": self.layout.ca_crt,
            "KUBE_ADMIN_TOKEN": admin_token(self.layout),
            "KUBE_NAMESPACE": NAMESPACE,
            "KUBE_NODES": ",".join(self.nodes),
            "ETCD_URL": f"http://127.0.0.1:{self.ports['etcd_client']}",
            "KWOK_EXEC_WORKDIR": self.layout.exec_work,
            "KWOK_NODE_PORT": self.ports["kwok"],
            "CLUSTER_DIR": self.layout.root,
            "CLUSTER_PY": CLUSTER_PY,
            "KUBECTL": self.bins.kubectl,
            "HELM": self.bins.helm,
            "CONTROL_PLANE_VERSIONS": self.versions,
        }
        write_private(self.layout.env, "".join(f"{k}={v}\n" for k, v in values.items()))

    def bring_up(self) -> None:
        began = time.monotonic()

        def done(what: str) -> None:
            supervisor_log(f"{what} at +{time.monotonic() - began:.2f}s")

        self.start_with_free_ports("etcd", ["etcd_client", "etcd_peer"], self.start_etcd)
        done("etcd healthy")
        self.start_with_free_ports("kube-apiserver", ["apiserver"], self.start_apiserver)
        done("kube-apiserver ready")
        write_kubeconfig(self.layout, self.api_url(""))
        self.create_namespace_and_service_accounts()
        self.install_exec_crd()
        self.create_nodes()
        done("namespace, service accounts, root CA configmaps, Exec CRD and nodes created")
        self.start_scheduler()
        done("kube-scheduler started")
        self.start_with_free_ports("kwok", ["kwok"], self.start_kwok)
        self.wait_for("kwok", self.nodes_ready, KWOK_TIMEOUT, "reporting all nodes Ready")
        self.untaint_nodes()
        done("kwok serving, nodes Ready")
        self.versions = self.read_versions_line()
        self.write_env()

    def restart_apiserver(self) -> None:
        """Handle a `restart-apiserver` request (SIGUSR1 + request file)."""
        self.restart_pending = False
        request = read_json(self.layout.restart_request) or {}
        result = {"id": request.get("id"), "ok": False}
        began = time.monotonic()
        try:
            self.status = "restarting kube-apiserver"
            self.save_state()
            terminate([self.procs["kube-apiserver"]], grace=30)
            result["stop_seconds"] = round(time.monotonic() - began, 2)
            supervisor_log(f"kube-apiserver stopped in {result['stop_seconds']}s; "
                           f"down for {request.get('down_seconds', 2)}s")
            down_until = time.monotonic() + float(request.get("down_seconds", 2))
            while time.monotonic() < down_until:
                self.check_interrupted()
                time.sleep(0.05)
            restarted = time.monotonic()
            self.spawn("kube-apiserver", self.argv["kube-apiserver"])
            self.wait_for("kube-apiserver", self.apiserver_ready, APISERVER_TIMEOUT, "ready")
            result.update(ok=True, port=self.ports["apiserver"],
                          pid=self.procs["kube-apiserver"].pid,
                          ready_seconds=round(time.monotonic() - restarted, 2))
            supervisor_log(f"kube-apiserver ready again after {result['ready_seconds']}s")
        except ClusterError as e:
            result["error"] = str(e)
        self.status = "ready" if result["ok"] else "kube-apiserver restart failed"
        self.save_state()
        result["total_seconds"] = round(time.monotonic() - began, 2)
        write_json_atomic(self.layout.restart_result, result)

    def report_unexpected_exits(self, reported: set[int]) -> None:
        for name, proc in self.procs.items():
            if proc.poll() is not None and proc.pid not in reported:
                reported.add(proc.pid)
                supervisor_log(f"{name} exited unexpectedly with code {proc.returncode}; "
                               f"see {self.layout.log(name)}")
                self.status = f"degraded: {name} exited"
                self.save_state()

    def loop(self) -> None:
        reported: set[int] = set()
        while self.stop_reason is None:
            if self.watched_process_gone():
                self.stop_reason = f"watched pid {self.watch_pid} is gone"
                break
            if self.restart_pending:
                self.restart_apiserver()
                continue
            self.report_unexpected_exits(reported)
            time.sleep(0.5)

    def teardown(self) -> None:
        """kwok and the apiserver first, etcd last."""
        self.status = "stopping"
        self.save_state()
        terminate([self.procs[n] for n in ("kwok", "kube-apiserver") if n in self.procs])
        terminate([self.procs[n] for n in ("etcd",) if n in self.procs])
        self.status = "stopped"
        self.save_state()

    def run(self, ready_fd: int) -> int:
        self.install_signal_handlers()
        self.save_state()
        started = False
        error = "unexpected error (see the traceback below)"
        try:
            self.bring_up()
            started = True
        except (ClusterError, OSError) as e:
            error = str(e)
        finally:  # also on a bug: never leave processes behind
            if not started:
                supervisor_log(f"start failed: {error}")
                self.teardown()
        if not started:
            self.report(ready_fd, {"ok": False, "error": error})
            return 1
        self.status = "ready"
        self.save_state()
        supervisor_log(f"ready: {self.versions}")
        if not self.report(ready_fd, {"ok": True, "versions": self.versions}):
            self.stop_reason = "`start` exited before it heard that the cluster was ready"
        try:
            self.loop()
        finally:
            supervisor_log(f"stopping: {self.stop_reason or 'supervisor error'}")
            self.teardown()
        return 0

    @staticmethod
    def report(fd: int, message: dict) -> bool:
        """Tell `start` how it went; False if `start` is no longer listening."""
        try:
            os.write(fd, (json.dumps(message) + "\n").encode())
            return True
        except OSError:
            return False
        finally:
            os.close(fd)


# --------------------------------------------------------------------------- #
# Commands
# --------------------------------------------------------------------------- #

def supervisor_pid(layout: Layout) -> int | None:
    """The pid of DIR's supervisor if it is alive (and really ours)."""
    try:
        pid = int(layout.supervisor_pid.read_text())
    except (OSError, ValueError):
        return None
    cmd = proc_cmdline(pid)
    if pid_alive(pid) and "_supervise" in cmd and str(layout.root) in cmd:
        return pid
    return None


def stop_cluster(layout: Layout) -> bool:
    """Stop DIR's cluster; True if something was running. Leaves no process or port."""
    state = read_json(layout.state) or {}
    pid = supervisor_pid(layout)
    if pid:
        os.kill(pid, signal.SIGTERM)
        if not wait_pids_gone([pid], 3 * TERM_GRACE + 5):
            log(f"supervisor {pid} ignored SIGTERM; killing it")
            os.kill(pid, signal.SIGKILL)  # components follow (PDEATHSIG)
            wait_pids_gone([pid], 5)
    leftovers = [c["pid"] for c in state.get("components", {}).values()
                 if pid_alive(c["pid"]) and proc_cmdline(c["pid"])[:1] == [c["exe"]]]
    for p in leftovers:
        os.kill(p, signal.SIGKILL)
    if not wait_pids_gone(leftovers, 10):
        raise ClusterError(f"processes {leftovers} survived SIGKILL")
    ports = set(state.get("ports", {}).values())
    deadline = time.monotonic() + 10
    while ports & listening_ports():
        if time.monotonic() > deadline:
            raise ClusterError(f"ports still listening: {sorted(ports & listening_ports())}")
        time.sleep(0.1)
    layout.supervisor_pid.unlink(missing_ok=True)
    return bool(pid or leftovers)


def resolve_watch_pid(value: str | None) -> int:
    if value is None:
        return 0
    pid = os.getppid() if value == "parent" else int(value)
    if not pid_alive(pid):
        raise ClusterError(f"--watch-pid {pid}: no such process")
    return pid


def start_cluster(layout: Layout, nodes: int, watch_pid: int) -> str:
    """Bring a cluster up in DIR; return the versions line. Raises ClusterError."""
    if stop_cluster(layout):
        log(f"stopped the cluster that was running in {layout.root}")
    bins = Binaries(build_binaries())
    bins.check()
    layout.fresh()
    generate_pki(layout)
    generate_admin_token(layout)
    write_kwok_config(layout, bins)

    read_end, write_end = os.pipe()
    with open(layout.log("supervisor"), "ab") as logf:
        sup = subprocess.Popen(
            [sys.executable, str(CLUSTER_PY), "_supervise", "--dir", str(layout.root),
             "--nodes", str(nodes), "--watch-pid", str(watch_pid),
             "--cache", str(bins.cache), "--ready-fd", str(write_end)],
            stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT,
            pass_fds=(write_end,), start_new_session=True, cwd=layout.root)
    os.close(write_end)
    layout.supervisor_pid.write_text(f"{sup.pid}\n")
    try:
        message = read_report(read_end, START_TIMEOUT)
    except BaseException:
        stop_cluster(layout)  # interrupted (Ctrl-C, SIGTERM) or timed out
        raise
    finally:
        os.close(read_end)
    if not message.get("ok"):
        try:
            sup.wait(timeout=3 * TERM_GRACE + 5)  # it has torn down what it started
        except subprocess.TimeoutExpired:
            stop_cluster(layout)
        layout.supervisor_pid.unlink(missing_ok=True)
        raise ClusterError(message.get("error") or
                           f"supervisor died during start; see {layout.log('supervisor')}:\n"
                           f"{log_tail(layout.log('supervisor'))}")
    return message["versions"]


def read_report(fd: int, timeout: float) -> dict:
    """Read the supervisor's one-line JSON report (EOF without one = it died)."""
    data = b""
    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise ClusterError(f"control plane not ready after {timeout}s")
        readable, _, _ = select.select([fd], [], [], remaining)
        if readable:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            data += chunk
    try:
        return json.loads(data.decode().strip().splitlines()[-1])
    except (ValueError, IndexError):
        return {"ok": False}


class TerminatedBySignal(Exception):
    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def raise_on_signal(signum, _frame):
    raise TerminatedBySignal(signum)


def cmd_start(args) -> int:
    layout = Layout(args.dir)
    signal.signal(signal.SIGTERM, raise_on_signal)
    print(start_cluster(layout, args.nodes, resolve_watch_pid(args.watch_pid)), flush=True)
    return 0


def cmd_stop(args) -> int:
    layout = Layout(args.dir)
    was_running = stop_cluster(layout)
    state = read_json(layout.state)
    if state is not None and state.get("status") not in ("stopped",):
        state["status"] = "stopped"
        write_json_atomic(layout.state, state)
    log("stopped" if was_running else "nothing was running")
    return 0


def cmd_restart_apiserver(args) -> int:
    layout = Layout(args.dir)
    pid = supervisor_pid(layout)
    if not pid:
        raise ClusterError(f"no cluster is running in {layout.root}")
    request_id = secrets.token_hex(8)
    layout.restart_result.unlink(missing_ok=True)
    write_json_atomic(layout.restart_request,
                      {"id": request_id, "down_seconds": args.down_seconds})
    os.kill(pid, signal.SIGUSR1)
    deadline = time.monotonic() + args.down_seconds + APISERVER_TIMEOUT + 60
    while time.monotonic() < deadline:
        result = read_json(layout.restart_result)
        if result and result.get("id") == request_id:
            if not result["ok"]:
                raise ClusterError(f"restart-apiserver failed: {result.get('error')}")
            print(f"kube-apiserver restarted on port {result['port']} (pid {result['pid']}; "
                  f"stopped in {result['stop_seconds']}s, down {args.down_seconds}s, "
                  f"ready {result['ready_seconds']}s after restart)")
            return 0
        if not pid_alive(pid):
            raise ClusterError("the supervisor exited during restart-apiserver; see "
                               f"{layout.log('supervisor')}")
        time.sleep(0.1)
    raise ClusterError("restart-apiserver timed out")


def cmd_status(args) -> int:
    layout = Layout(args.dir)
    pid = supervisor_pid(layout)
    state = read_json(layout.state) or {}
    if not pid:
        print(f"not running ({layout.root})")
        return EXIT_NOT_RUNNING
    print(f"running: supervisor pid {pid}, status {state.get('status', 'unknown')}")
    if layout.env.exists():
        for key, value in read_env_file(layout.env).items():
            shown = f"(secret, see {layout.env})" if "TOKEN" in key else value
            print(f"{key}={shown}")
    return 0


def cmd_run(args) -> int:
    if not args.command:
        raise ClusterError("run: give a command after --")
    layout = Layout(args.dir)
    signal.signal(signal.SIGTERM, raise_on_signal)
    signal.signal(signal.SIGHUP, raise_on_signal)
    child = None
    try:
        log(start_cluster(layout, args.nodes, os.getpid()))
        env = dict(os.environ, **read_env_file(layout.env))
        child = subprocess.Popen(args.command, env=env)
        while True:
            try:
                code = child.wait()
                break
            except KeyboardInterrupt:
                continue  # Ctrl-C reaches the child too (same process group)
            except TerminatedBySignal as e:
                child.send_signal(e.signum)
        return code if code >= 0 else 128 - code
    except KeyboardInterrupt:
        return 130
    finally:
        if child is not None and child.poll() is None:
            terminate([child])
        stop_cluster(layout)


def cmd_supervise(args) -> int:
    """Internal: the detached supervisor started by `start`."""
    layout = Layout(args.dir)
    bins = Binaries(Path(args.cache))
    return Supervisor(layout, bins, args.nodes, args.watch_pid).run(args.ready_fd)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Local etcd + kube-apiserver + kwok control plane for tests.")
    sub = parser.add_subparsers(dest="cmd", required=True)

    def add(name: str, func, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text)
        p.add_argument("--dir", required=True, help="throwaway state directory")
        p.set_defaults(func=func)
        return p

    p = add("start", cmd_start, "start a cluster in DIR (stopping any previous one)")
    p.add_argument("--watch-pid", help="tear down when this pid exits ('parent' = "
                                      "the pid of whoever ran this command)")
    p.add_argument("--nodes", type=int, default=3, help="number of kwok nodes (default 3)")
    add("stop", cmd_stop, "stop DIR's cluster (idempotent)")
    p = add("restart-apiserver", cmd_restart_apiserver,
            "stop kube-apiserver, wait, start it again on the same port")
    p.add_argument("--down-seconds", type=float, default=2)
    p = add("run", cmd_run, "start, run CMD with the env file exported, stop")
    p.add_argument("--nodes", type=int, default=3)
    p.add_argument("command", nargs=argparse.REMAINDER, help="-- CMD ARGS...")
    add("status", cmd_status, "print whether DIR's cluster runs, and its env")
    p = add("_supervise", cmd_supervise, argparse.SUPPRESS)
    p.add_argument("--nodes", type=int, required=True)
    p.add_argument("--watch-pid", type=int, required=True)
    p.add_argument("--cache", required=True)
    p.add_argument("--ready-fd", type=int, required=True)

    args = parser.parse_args(argv)
    if getattr(args, "command", None) and args.command[0] == "--":
        args.command = args.command[1:]
    return args


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    try:
        return args.func(args)
    except ClusterError as e:
        log(f"error: {e}")
        return 1
    except TerminatedBySignal as e:
        log(f"interrupted by {e}")
        return 128 + e.signum
    except KeyboardInterrupt:
        log("interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
