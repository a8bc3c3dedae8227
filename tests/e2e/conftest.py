"""Fixtures for end-to-end tests: the built sandbox-controller daemon against
the real test control plane (etcd + kube-apiserver + kube-scheduler + kwok),
driven over HTTP exactly as a client would.

Environment (set by CTest): SBX_CLUSTER_ENV (the cluster's env file) and
SBX_BINARY (the daemon)."""
import atexit
import base64
import hashlib
import hmac
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import textwrap
import time
import urllib.error
import urllib.request

import pytest

CONFIG = """
namespace: {namespace}
listen: {{address: 127.0.0.1, port: {port}}}
limits:
  max_body_bytes: {max_body}
  max_env_vars: 8
  max_env_bytes: 1024
  max_labels: 4
  create_timeout: 30s
  rate: {{per_principal: {{rate: {rate}, burst: {burst}}}, per_address: {{rate: {arate}, burst: {aburst}}}}}
log: {{level: info, format: json}}
auth:
  api_keys_file: {keys_file}
  jwt:
    hs256_secret_file: {hs256_file}
    jwks_file: {jwks_file}
    issuer: https://issuer.test
    audience: sandbox-controller
  insecure_dev_mode: {insecure}
{auth_extra}
audit: {{destination: {audit_file}, argv: full}}
quotas: {{tenants: {{tiny: {{sandboxes: 1}}, capped: {{exec_streams: 1}}}}}}
{extra}
templates:
  - name: python
    image: python:3.12-slim
    command: ["sleep", "infinity"]
    workspace: {{path: /workspace, size: 256Mi}}
    tmp_size: 64Mi
    user: 1000
    group: 1000
    resources:
      requests: {{cpu: 100m, memory: 64Mi, ephemeral-storage: 64Mi}}
      limits: {{cpu: 500m, memory: 256Mi, ephemeral-storage: 1Gi}}
    env: {{PYTHONUNBUFFERED: "1"}}
    network: {{profile: none}}
    lifetime: {{default: 10m, max: 1h}}
  - name: web
    image: node:22-slim
    command: ["sleep", "infinity"]
    workspace: {{path: /home/node/work, size: 256Mi}}
    tmp_size: 64Mi
    user: 1000
    group: 1000
    resources:
      requests: {{cpu: 100m, memory: 64Mi, ephemeral-storage: 64Mi}}
      limits: {{cpu: "1", memory: 512Mi, ephemeral-storage: 1Gi}}
    network: {{profile: internet}}
    lifetime: {{default: 4s, max: 30s}}
  - name: ci
    image: debian:bookworm-slim
    command: ["sleep", "infinity"]
    workspace: {{path: /workspace, size: 256Mi}}
    tmp_size: 64Mi
    user: 2000
    group: 2000
    resources:
      requests: {{cpu: 100m, memory: 64Mi, ephemeral-storage: 64Mi}}
      limits: {{cpu: "2", memory: 1Gi, ephemeral-storage: 2Gi}}
    network:
      profile: allowlist
      egress:
        - {{cidr: 203.0.113.0/24, ports: [443]}}
    lifetime: {{default: 10m, max: 1h}}
  # exec tests: kwok's local exec runs commands on this host, so the
  # workspace is a host directory made for the run
  - name: exec
    image: busybox
    command: ["sleep", "infinity"]
    workspace: {{path: {exec_ws}, size: 256Mi}}
    user: 1000
    group: 1000
    resources:
      requests: {{cpu: 100m, memory: 64Mi, ephemeral-storage: 64Mi}}
      limits: {{cpu: 500m, memory: 256Mi, ephemeral-storage: 1Gi}}
    network: {{profile: none}}
    lifetime: {{default: 10m, max: 1h}}
    exec:
      deny: [bash, /usr/bin/perl]
      max_args: 16
      max_arg_bytes: 2Ki
      max_argv_bytes: 8Ki
      max_streams: 4
      default_timeout: 30s
      max_timeout: 2m
      default_output: 64Ki
      max_output: 16Mi
      max_file_bytes: 16Mi
  - name: locked
    image: busybox
    command: ["sleep", "infinity"]
    workspace: {{path: {exec_ws}, size: 256Mi}}
    user: 1000
    group: 1000
    resources:
      requests: {{cpu: 100m, memory: 64Mi, ephemeral-storage: 64Mi}}
      limits: {{cpu: 500m, memory: 256Mi, ephemeral-storage: 1Gi}}
    network: {{profile: none}}
    exec: {{allow: [echo, /bin/true]}}
  - name: noshell
    image: busybox
    command: ["sleep", "infinity"]
    workspace: {{path: {exec_ws}, size: 256Mi}}
    user: 1000
    group: 1000
    resources:
      requests: {{cpu: 100m, memory: 64Mi, ephemeral-storage: 64Mi}}
      limits: {{cpu: 500m, memory: 256Mi, ephemeral-storage: 1Gi}}
    network: {{profile: none}}
    exec: {{shell: /nonexistent/sh}}
  - name: bare
    image: busybox
    command: ["sleep", "infinity"]
    workspace: {{path: {exec_ws}, size: 256Mi}}
    user: 1000
    group: 1000
    resources:
      requests: {{cpu: 100m, memory: 64Mi, ephemeral-storage: 64Mi}}
      limits: {{cpu: 500m, memory: 256Mi, ephemeral-storage: 1Gi}}
    network: {{profile: none}}
    exec: {{shell: none}}
  - name: huge
    image: debian:bookworm-slim
    command: ["sleep", "infinity"]
    workspace: {{path: /workspace, size: 256Mi}}
    tmp_size: 64Mi
    user: 1000
    group: 1000
    resources:
      requests: {{cpu: "5000", memory: 64Mi, ephemeral-storage: 64Mi}}
      limits: {{cpu: "5000", memory: 64Mi, ephemeral-storage: 1Gi}}
    network: {{profile: none}}
    lifetime: {{default: 10m, max: 1h}}
"""


def wait_until(fn, timeout=30, interval=0.1):
    """Call fn until it returns something true, for at most timeout seconds;
    that value, or fn()'s last answer."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = fn()
        if v:
            return v
        time.sleep(interval)
    return fn()


def load_env():
    path = os.environ.get("SBX_CLUSTER_ENV")
    if not path:
        pytest.skip("SBX_CLUSTER_ENV not set: run through ctest")
    env = {}
    with open(path) as f:
        for line in f:
            line = line.rstrip("\n")
            if "=" in line and not line.startswith("#"):
                k, v = line.split("=", 1)
                env[k] = v
    return env


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Kube:
    """Direct calls to the API server, to check what the controller did."""

    def __init__(self, env):
        self.server = env["KUBE_SERVER"]
        self.token = env["KUBE_ADMIN_TOKEN"]
        self.ctx = ssl.create_default_context(cafile=env["KUBE_CA_FILE"])

    def request(self, method, path, body=None, ctype="application/json"):
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.server + path, data=data, method=method)
        req.add_header("Authorization", "Bearer " + self.token)
        if data is not None:
            req.add_header("Content-Type", ctype)
        try:
            with urllib.request.urlopen(req, context=self.ctx, timeout=30) as r:
                return r.status, json.loads(r.read() or b"null")
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"null")

    def get(self, path):
        return self.request("GET", path)


class Api:
    """An HTTP client for the controller, calling as one principal (over
    HTTPS when given the ssl context that trusts the controller's certificate)."""

    def __init__(self, base, token=None, ctx=None):
        self.base = base
        self.token = token
        self.ctx = ctx

    def as_(self, token):
        return Api(self.base, token, self.ctx)

    def call(self, method, path, body=None, raw=None, headers=None):
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        req = urllib.request.Request(self.base + path, data=data, method=method)
        if data is not None:
            req.add_header("Content-Type", "application/json")
        if self.token and not (headers and "Authorization" in headers):
            req.add_header("Authorization", "Bearer " + self.token)
        for k, v in (headers or {}).items():
            if v is not None:
                req.add_header(k, v)
        try:
            with urllib.request.urlopen(req, timeout=60, context=self.ctx) as r:
                text = r.read()
                return r.status, (json.loads(text) if text else None), dict(r.headers)
        except urllib.error.HTTPError as e:
            text = e.read()
            try:
                payload = json.loads(text) if text else None
            except ValueError:
                payload = text
            return e.code, payload, dict(e.headers)


ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def least_privilege_kubeconfig(env, workdir):
    """Install the ServiceAccount and Role from manifests/ (exactly what an
    operator applies) and return a kubeconfig holding a token of that
    ServiceAccount, so the controller runs in the tests with the permissions
    it has in production and no more."""
    manifests = os.path.join(ROOT, "manifests")
    for name in ("00-namespaces.yaml", "10-rbac.yaml"):
        subprocess.run([env["KUBECTL"], "--kubeconfig", env["KUBECONFIG"], "apply", "-f",
                        os.path.join(manifests, name)], check=True, capture_output=True)
    kube = Kube(env)
    status, tr = kube.request(
        "POST", "/api/v1/namespaces/sandbox-system/serviceaccounts/sandbox-controller/token",
        {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
         "spec": {"expirationSeconds": 7200}})
    assert status == 201, tr
    path = os.path.join(workdir, "kubeconfig")
    with open(env["KUBE_CA_FILE"], "rb") as f:
        ca = base64.b64encode(f.read()).decode()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(f"""apiVersion: v1
kind: Config
current-context: sa
clusters:
- name: test
  cluster: {{server: "{env['KUBE_SERVER']}", certificate-authority-data: "{ca}"}}
contexts:
- name: sa
  context: {{cluster: test, user: sa, namespace: {env['KUBE_NAMESPACE']}}}
users:
- name: sa
  user: {{token: "{tr['status']['token']}"}}
""")
    return path


def b64u(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class JwtMaker:
    """An identity provider for the tests: an HS256 secret and an RSA key
    published as a JWKS (kid "k1"), made with the openssl CLI; signs tokens
    the way a real provider would, and forges them the way attackers do."""

    ISSUER = "https://issuer.test"
    AUDIENCE = "sandbox-controller"

    def __init__(self, workdir):
        self.dir = workdir
        self.secret = os.urandom(48)
        self.hs256_file = os.path.join(workdir, "hs256.secret")
        fd = os.open(self.hs256_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(self.secret)
        self.rsa_key = os.path.join(workdir, "rsa.pem")
        subprocess.run(["openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt",
                        "rsa_keygen_bits:2048", "-out", self.rsa_key], check=True,
                       capture_output=True)
        pub = subprocess.run(["openssl", "pkey", "-in", self.rsa_key, "-pubout"], check=True,
                             capture_output=True).stdout
        self.rsa_public_pem = pub
        mod = subprocess.run(["openssl", "rsa", "-in", self.rsa_key, "-noout", "-modulus"],
                             check=True, capture_output=True, text=True).stdout
        n = bytes.fromhex(mod.strip().split("=", 1)[1])
        self.jwks_file = os.path.join(workdir, "jwks.json")
        with open(self.jwks_file, "w") as f:
            json.dump({"keys": [{"kty": "RSA", "kid": "k1", "use": "sig", "alg": "RS256",
                                 "n": b64u(n), "e": "AQAB"}]}, f)

    def claims(self, **over):
        now = int(time.time())
        c = {"sub": "alice", "tenant": "acme", "iss": self.ISSUER, "aud": self.AUDIENCE,
             "iat": now, "exp": now + 600, "scope": "sandboxes:read sandboxes:write"}
        c.update(over)
        return {k: v for k, v in c.items() if v is not None}

    @staticmethod
    def _segments(header, claims):
        return (b64u(json.dumps(header).encode()) + "." +
                b64u(json.dumps(claims).encode()))

    def hs256(self, claims, secret=None, header=None):
        signing = self._segments(header or {"alg": "HS256", "typ": "JWT"}, claims)
        sig = hmac.new(secret if secret is not None else self.secret, signing.encode(),
                       hashlib.sha256).digest()
        return signing + "." + b64u(sig)

    def rs256(self, claims, kid="k1"):
        header = {"alg": "RS256", "typ": "JWT"}
        if kid:
            header["kid"] = kid
        signing = self._segments(header, claims)
        sig = subprocess.run(["openssl", "dgst", "-sha256", "-sign", self.rsa_key],
                             input=signing.encode(), check=True, capture_output=True).stdout
        return signing + "." + b64u(sig)


# The principals of the tests: name -> (tenant, scopes, how the key file holds it)
PRINCIPALS = {
    "acme": ("acme", "sandboxes:read,sandboxes:write,exec,files", None),
    "acme_ro": ("acme", "sandboxes:read", None),
    "other": ("other", "sandboxes:read,sandboxes:write,exec,files", None),
    "capped": ("capped", "sandboxes:read,sandboxes:write,exec", None),
    "noexec": ("acme", "sandboxes:read,sandboxes:write", None),
    "admin": ("ops", "admin", None),
    "tiny": ("tiny", "sandboxes:read,sandboxes:write", None),
    "expired": ("acme", "sandboxes:read", "expired"),
    "revoked": ("acme", "sandboxes:read", "revoked"),
}


def make_keys(binary, path):
    """Keys made by the daemon's own `keygen`, as an operator makes them.
    Returns name -> key; writes the key file (hashes only) to path."""
    keys, entries = {}, []
    for name, (tenant, scopes, how) in PRINCIPALS.items():
        out = subprocess.run([binary, "keygen", "--tenant", tenant, "--scopes", scopes,
                              "--id", "e2e" + name.replace("_", "")],
                             capture_output=True, text=True, check=True)
        keys[name] = out.stdout.strip()
        entry = [l for l in out.stderr.splitlines() if l.startswith("  - {")][0]
        if how == "expired":
            entry = entry[:-1] + ', expires: "2020-01-01T00:00:00Z"}'
        elif how == "revoked":
            entry = entry[:-1] + ", disabled: true}"
        entries.append(entry)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write("keys:\n" + "\n".join(entries) + "\n")
    return keys


class Controller:
    """extra: YAML added at the top level of the config (e.g. a tls: block);
    auth_extra: YAML lines added inside its auth: mapping (unindented);
    tls_context: an ssl.SSLContext trusting the controller's certificate,
    given when extra configures TLS: the API is then called over HTTPS."""

    def __init__(self, env, binary, workdir, rate=1000, burst=1000, arate=1000, aburst=1000,
                 extra="", insecure=False, max_body=65536, auth_extra="", tls_context=None):
        self.env = env
        self.workdir = workdir
        self.kubeconfig = least_privilege_kubeconfig(env, workdir)
        self.binary = binary
        self.port = free_port()
        self.keys_file = os.path.join(workdir, "keys.yaml")
        self.keys = make_keys(binary, self.keys_file)
        self.jwt = JwtMaker(workdir)
        self.config = os.path.join(workdir, "config.yaml")
        self.log_path = os.path.join(workdir, "controller.log")
        self.audit_path = os.path.join(workdir, "audit.log")
        # not under /tmp: the config refuses workspaces there
        self.exec_ws = tempfile.mkdtemp(prefix="sbx-e2e-ws-", dir="/var/tmp")
        os.chmod(self.exec_ws, 0o755)
        # it outlives stop() (restarts reuse it); gone when the test run ends
        atexit.register(shutil.rmtree, self.exec_ws, True)
        with open(self.config, "w") as f:
            f.write(CONFIG.format(namespace=env["KUBE_NAMESPACE"], port=self.port,
                                  keys_file=self.keys_file, audit_file=self.audit_path,
                                  hs256_file=self.jwt.hs256_file, jwks_file=self.jwt.jwks_file,
                                  rate=rate, burst=burst, arate=arate, aburst=aburst,
                                  extra=extra, insecure="true" if insecure else "false",
                                  exec_ws=self.exec_ws, max_body=max_body,
                                  auth_extra=textwrap.indent(auth_extra, "  ")))
        self.proc = None
        scheme = "https" if tls_context else "http"
        self.api = Api(f"{scheme}://127.0.0.1:{self.port}", self.keys["acme"], tls_context)

    def as_(self, name):
        return self.api.as_(self.keys[name])

    def start(self):
        log = open(self.log_path, "a")
        env = dict(os.environ, KUBECONFIG=self.kubeconfig)
        self.proc = subprocess.Popen([self.binary, "--config", self.config], stdout=log,
                                     stderr=subprocess.STDOUT, env=env)
        log.close()
        deadline = time.time() + 30
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("controller exited: " + self.log())
            try:
                status, _, _ = self.api.call("GET", "/readyz")
                if status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise RuntimeError("controller not ready in 30 s: " + self.log()[-3000:])

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        rc = self.proc.returncode if self.proc else None
        self.proc = None
        return rc

    def log(self):
        with open(self.log_path) as f:
            return f.read()

    def audit(self):
        """The audit records so far, parsed (every line must be valid JSON)."""
        try:
            with open(self.audit_path) as f:
                return [json.loads(l) for l in f if l.strip()]
        except FileNotFoundError:
            return []


@pytest.fixture(scope="session")
def cluster_env():
    return load_env()


@pytest.fixture(scope="session")
def kube(cluster_env):
    return Kube(cluster_env)


@pytest.fixture(scope="session")
def controller(cluster_env):
    binary = os.environ.get("SBX_BINARY")
    if not binary:
        pytest.skip("SBX_BINARY not set")
    workdir = tempfile.mkdtemp(prefix="sbx-e2e-")
    c = Controller(cluster_env, binary, workdir)
    print(cluster_env.get("CONTROL_PLANE_VERSIONS", ""))
    c.start()
    yield c
    c.stop()


@pytest.fixture
def api(controller):
    return controller.api
