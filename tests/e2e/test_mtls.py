"""End-to-end: TLS client certificates (tls.client_ca_file, auth.client_certs)
against the built daemon and the real control plane. The certificates are
made at test time with the openssl CLI; the client is Python's ssl module with
http.client, presenting (or not) a certificate exactly as a CI runner would.
A row per case, each asserting the exact answer."""
import http.client
import json
import os
import secrets
import ssl
import subprocess
import time

import pytest

from conftest import Controller, wait_until

NS_PODS = "/api/v1/namespaces/{ns}/pods"

# auth.client_certs of the tests: ci-runner and ci-reader are mapped (to two
# tenants, with different scopes); any other subject is not
CLIENT_CERTS = """client_certs:
  - {subject_cn: ci-runner, tenant: certco, scopes: [sandboxes:read, sandboxes:write]}
  - {subject_cn: ci-reader, tenant: other, scopes: [sandboxes:read]}
"""

# one file for every openssl command: nothing depends on the system's openssl.cnf
OPENSSL_CNF = """
[req]
distinguished_name = dn
[dn]
[ca_ext]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
[client]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = clientAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
[server]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = IP:127.0.0.1, DNS:localhost
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
[server_purpose]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
[intermediate]
basicConstraints = critical, CA:TRUE, pathlen:0
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
# `openssl ca`: the only way OpenSSL 3.0's CLI sets a validity in the past
[ca]
default_ca = ca_a
[ca_a]
database = {dir}/ca_a.index
new_certs_dir = {dir}
rand_serial = yes
default_md = sha256
policy = any
unique_subject = no
copy_extensions = none
[any]
commonName = supplied
"""


class Pki:
    """Every certificate of the tests, made with the openssl CLI in dir.
    Each certificate is (pem, key); pem may hold a chain after the leaf."""

    def __init__(self, dir):
        self.dir = dir
        self.cnf = os.path.join(dir, "openssl.cnf")
        with open(self.cnf, "w") as f:
            f.write(OPENSSL_CNF.replace("{dir}", dir))
        open(os.path.join(dir, "ca_a.index"), "w").close()
        self.server_ca = self._ca("server-ca", "/CN=e2e server CA")
        self.server = self._leaf("server", "/CN=127.0.0.1", self.server_ca, "server")
        self.ca_a = self._ca("client-ca-a", "/O=e2e/CN=client CA A")
        self.ca_b = self._ca("client-ca-b", "/O=e2e/CN=client CA B")
        self.runner = self._leaf("runner", "/CN=ci-runner", self.ca_a)
        self.reader = self._leaf("reader", "/CN=ci-reader", self.ca_a)
        self.stranger = self._leaf("stranger", "/CN=stranger", self.ca_a)
        self.no_cn = self._leaf("no-cn", "/O=ci-runner", self.ca_a)
        self.two_cns = self._leaf("two-cns", "/CN=ci-runner/CN=stranger", self.ca_a)
        self.upper = self._leaf("upper", "/CN=CI-RUNNER", self.ca_a)
        self.runner_b = self._leaf("runner-b", "/CN=ci-runner", self.ca_b)
        self.expired = self._expired("expired", "/CN=ci-runner", self.ca_a)
        self.server_purpose = self._leaf("server-purpose", "/CN=ci-runner", self.ca_a,
                                         "server_purpose")
        self.self_signed = self._self_signed("self-signed", "/CN=ci-runner")
        # a certificate issued by a leaf of CA A (CA:FALSE), with that leaf
        # sent along as if it were an intermediate
        leaf_issued = self._leaf("leaf-issued", "/CN=ci-runner", self.stranger)
        self.leaf_issued = self._chain("leaf-issued-chain", leaf_issued, self.stranger)
        # a real intermediate of CA A: the client sends leaf + intermediate
        inter = self._leaf("intermediate-a", "/O=e2e/CN=client intermediate A", self.ca_a,
                           "intermediate")
        via = self._leaf("via-intermediate", "/CN=ci-runner", inter)
        self.via_intermediate = self._chain("via-intermediate-chain", via, inter)

    def openssl(self, *args):
        return subprocess.run(["openssl", *args], check=True, capture_output=True, text=True,
                              cwd=self.dir)

    def _paths(self, name):
        return os.path.join(self.dir, name + ".pem"), os.path.join(self.dir, name + ".key")

    def _keypair_csr(self, name, subj):
        pem, key = self._paths(name)
        csr = os.path.join(self.dir, name + ".csr")
        self.openssl("req", "-new", "-config", self.cnf, "-newkey", "ec", "-pkeyopt",
                     "ec_paramgen_curve:P-256", "-nodes", "-keyout", key, "-out", csr,
                     "-subj", subj)
        return pem, key, csr

    def _ca(self, name, subj):
        pem, key = self._paths(name)
        self.openssl("req", "-x509", "-config", self.cnf, "-extensions", "ca_ext", "-newkey", "ec",
                     "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", key,
                     "-out", pem, "-subj", subj, "-days", "3")
        return pem, key

    def _self_signed(self, name, subj):
        pem, key = self._paths(name)
        self.openssl("req", "-x509", "-config", self.cnf, "-extensions", "client", "-newkey",
                     "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", key,
                     "-out", pem, "-subj", subj, "-days", "3")
        return pem, key

    def _leaf(self, name, subj, issuer, ext="client"):
        pem, key, csr = self._keypair_csr(name, subj)
        self.openssl("x509", "-req", "-in", csr, "-CA", issuer[0], "-CAkey", issuer[1],
                     "-set_serial", "0x" + secrets.token_hex(16), "-days", "2",
                     "-extfile", self.cnf, "-extensions", ext, "-out", pem)
        return pem, key

    def _expired(self, name, subj, issuer):
        pem, key, csr = self._keypair_csr(name, subj)
        self.openssl("ca", "-batch", "-config", self.cnf, "-name", "ca_a", "-cert", issuer[0],
                     "-keyfile", issuer[1], "-in", csr, "-out", pem, "-notext",
                     "-extfile", self.cnf, "-extensions", "client",
                     "-startdate", "20200101000000Z", "-enddate", "20200201000000Z")
        return pem, key

    def _chain(self, name, leaf, *more):
        pem = os.path.join(self.dir, name + ".pem")
        with open(pem, "w") as out:
            for p in (leaf[0],) + tuple(c[0] for c in more):
                with open(p) as f:
                    out.write(f.read())
        return pem, leaf[1]

    def client_context(self, cert=None, version=None):
        """A client that trusts only the server's CA and presents cert."""
        ctx = ssl.create_default_context(cafile=self.server_ca[0])
        if cert:
            ctx.load_cert_chain(cert[0], cert[1])
        if version:
            ctx.minimum_version = ctx.maximum_version = version
        return ctx


def write_atomically(path, data):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(data)
    os.replace(tmp, path)


def read(path):
    with open(path) as f:
        return f.read()


def tls_config(pki, ca_file):
    return (f"tls: {{cert_file: {pki.server[0]}, key_file: {pki.server[1]}, "
            f"client_ca_file: {ca_file}}}")


def call(ctl, ctx, method, path, body=None, authorization=None, request_id=None):
    """One request on a fresh connection (so a fresh handshake) with ctx's
    client certificate. authorization: the raw header value, or None for no
    header at all. Returns (status, parsed body, headers)."""
    conn = http.client.HTTPSConnection("127.0.0.1", ctl.port, context=ctx, timeout=30)
    headers = {}
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    if authorization is not None:
        headers["Authorization"] = authorization
    if request_id:
        headers["X-Request-Id"] = request_id
    try:
        conn.request(method, path, body=data, headers=headers)
        r = conn.getresponse()
        text = r.read()
        try:
            payload = json.loads(text) if text else None
        except ValueError:
            payload = text
        return r.status, payload, dict(r.getheaders())
    finally:
        conn.close()


def bearer(key):
    return "Bearer " + key


# what a refused handshake looks like to the client: an alert (TLS 1.2: in
# the handshake; TLS 1.3: on the first read after it), or the connection
# closed or reset under it
REFUSED = (ssl.SSLError, ConnectionResetError, ConnectionAbortedError, BrokenPipeError)


def attempt(ctl, ctx):
    """("refused", the error) when the connection died, or ("answered",
    status) when the server answered an anonymous GET /v1/sandboxes."""
    try:
        status, _, _ = call(ctl, ctx, "GET", "/v1/sandboxes")
    except REFUSED as e:
        return "refused", e
    return "answered", status


def audited(ctl, rid, timeout=5):
    """The audit records of request rid, once there are some."""
    return wait_until(lambda: [r for r in ctl.audit() if r.get("request_id") == rid],
                      timeout=timeout) or []


def new_rid():
    return "mtls-" + secrets.token_hex(8)


def ids(status_body):
    status, body = status_body[:2]
    assert status == 200, body
    return {s["id"] for s in body["items"]}


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return Pki(str(tmp_path_factory.mktemp("pki")))


@pytest.fixture(scope="module")
def mtls(cluster_env, pki, tmp_path_factory):
    binary = os.environ.get("SBX_BINARY")
    if not binary:
        pytest.skip("SBX_BINARY not set")
    workdir = str(tmp_path_factory.mktemp("mtls"))
    ca_file = os.path.join(workdir, "client-ca.pem")
    write_atomically(ca_file, read(pki.ca_a[0]))
    c = Controller(cluster_env, binary, workdir, extra=tls_config(pki, ca_file),
                   auth_extra=CLIENT_CERTS, tls_context=pki.client_context())
    c.start()
    yield c
    c.stop()


@pytest.fixture(scope="module")
def runner_ctx(pki):
    return pki.client_context(pki.runner)


@pytest.fixture(scope="module")
def sandboxes(mtls, runner_ctx):
    """A sandbox made by the ci-runner certificate (no Authorization header),
    and one made by the API key of tenant other."""
    rid = new_rid()
    s1, by_cert, _ = call(mtls, runner_ctx, "POST", "/v1/sandboxes", {"template": "python"},
                          request_id=rid)
    s2, by_other, _ = mtls.as_("other").call("POST", "/v1/sandboxes", {"template": "python"})
    assert s1 == 201, by_cert
    assert s2 == 201, by_other
    yield by_cert["id"], by_other["id"], rid
    call(mtls, runner_ctx, "DELETE", "/v1/sandboxes/" + by_cert["id"])
    mtls.as_("other").call("DELETE", "/v1/sandboxes/" + by_other["id"])


def test_certificates_are_what_the_tests_think(pki):
    """The PKI itself: otherwise a refusal below could be for another reason."""
    def verify(cert, ca, *untrusted):
        args = ["openssl", "verify", "-purpose", "sslclient", "-CAfile", ca[0]]
        for u in untrusted:
            args += ["-untrusted", u]
        return subprocess.run(args + [cert], capture_output=True, text=True)

    def checkend(pem):
        return subprocess.run(["openssl", "x509", "-noout", "-checkend", "0", "-in", pem],
                              capture_output=True, text=True).returncode

    for good in (pki.runner, pki.reader, pki.stranger, pki.no_cn, pki.two_cns, pki.upper):
        assert verify(good[0], pki.ca_a).returncode == 0, good[0]
        assert checkend(good[0]) == 0
    assert verify(pki.runner_b[0], pki.ca_b).returncode == 0
    assert verify(pki.runner_b[0], pki.ca_a).returncode != 0
    # expired, really: both dates in the past, and openssl says so
    assert checkend(pki.expired[0]) == 1
    r = verify(pki.expired[0], pki.ca_a)
    assert r.returncode != 0 and "certificate has expired" in r.stdout + r.stderr
    r = verify(pki.server_purpose[0], pki.ca_a)
    assert r.returncode != 0 and "unsuitable certificate purpose" in r.stdout + r.stderr
    assert verify(pki.self_signed[0], pki.ca_a).returncode != 0
    # the chain files: leaf first, then what is sent with it
    inter = os.path.join(pki.dir, "intermediate-a.pem")
    assert verify(os.path.join(pki.dir, "via-intermediate.pem"), pki.ca_a, inter).returncode == 0
    r = verify(os.path.join(pki.dir, "leaf-issued.pem"), pki.ca_a, pki.stranger[0])
    assert r.returncode != 0
    subj = pki.openssl("x509", "-noout", "-subject", "-nameopt", "RFC2253",
                       "-in", pki.two_cns[0]).stdout
    assert subj.count("CN=") == 2


def test_mapped_cert_without_authorization(mtls, runner_ctx, sandboxes, kube, cluster_env):
    by_cert, by_other, rid = sandboxes
    # read: its own tenant's sandboxes only
    seen = ids(call(mtls, runner_ctx, "GET", "/v1/sandboxes?limit=1000"))
    assert by_cert in seen and by_other not in seen
    status, got, _ = call(mtls, runner_ctx, "GET", "/v1/sandboxes/" + by_cert)
    assert status == 200 and got["id"] == by_cert
    # the create was made in the mapped tenant: the Pod says so, keys of
    # other tenants cannot see it, and the audit record names the certificate
    status, pod = kube.get(NS_PODS.format(ns=cluster_env["KUBE_NAMESPACE"]) + "/" + by_cert)
    assert status == 200
    assert pod["metadata"]["labels"]["sandbox-controller.dev/tenant"] == "certco"
    for name in ("acme", "other"):
        assert mtls.as_(name).call("GET", "/v1/sandboxes/" + by_cert)[0] == 404, name
    assert by_cert in ids(mtls.as_("admin").call("GET", "/v1/sandboxes?limit=1000"))
    recs = [r for r in audited(mtls, rid) if r.get("action") == "sandbox.create"]
    assert len(recs) == 1, recs
    assert recs[0]["principal"] == {"id": "ci-runner", "kind": "cert"}
    assert recs[0]["tenant"] == "certco" and recs[0]["status"] == 201
    assert recs[0]["outcome"] == "success" and recs[0]["sandbox"] == by_cert
    # a scope the mapping does not grant
    status, err, _ = call(mtls, runner_ctx, "POST", f"/v1/sandboxes/{by_cert}/exec",
                          {"command": ["true"]})
    assert status == 403, err
    assert err["error"]["code"] == "forbidden" and '"exec"' in err["error"]["message"]
    status, err, _ = call(mtls, runner_ctx, "GET",
                          f"/v1/sandboxes/{by_cert}/files?path=/workspace/x")
    assert status == 403 and '"files"' in err["error"]["message"]


def test_second_mapping_has_its_own_tenant_and_scopes(mtls, pki, sandboxes):
    by_cert, by_other, _ = sandboxes
    reader = pki.client_context(pki.reader)
    seen = ids(call(mtls, reader, "GET", "/v1/sandboxes?limit=1000"))
    assert by_other in seen and by_cert not in seen
    assert call(mtls, reader, "GET", "/v1/sandboxes/" + by_cert)[0] == 404
    status, err, _ = call(mtls, reader, "POST", "/v1/sandboxes", {"template": "python"})
    assert status == 403, err
    assert "sandboxes:write" in err["error"]["message"]


# (name, pki attribute, the CN the audit names: only a CN that could be listed)
UNMAPPED = [("stranger", "stranger", "stranger"), ("no CN", "no_cn", None),
            ("two CNs", "two_cns", None), ("CN in another case", "upper", "CI-RUNNER")]


@pytest.mark.parametrize("name,attr,named", UNMAPPED, ids=[u[0] for u in UNMAPPED])
def test_unmapped_cert_is_401_and_audited(mtls, pki, name, attr, named):
    cert = getattr(pki, attr)
    ctx = pki.client_context(cert)
    # the handshake itself is fine (the certificate verifies) ...
    assert call(mtls, ctx, "GET", "/healthz")[0] == 200
    # ... but it is no one: 401, audited with its reason. Refusals are
    # audited at most once a second per address, so ask until one is.
    recs = []
    deadline = time.time() + 10
    while not recs and time.time() < deadline:
        rid = new_rid()
        status, err, headers = call(mtls, ctx, "GET", "/v1/sandboxes", request_id=rid)
        assert status == 401, err
        assert err["error"]["code"] == "unauthorized"
        assert headers["WWW-Authenticate"].startswith("Bearer")
        recs = audited(mtls, rid, timeout=1.2)
    assert len(recs) == 1, f"no audit record of a refused {name} certificate"
    r = recs[0]
    assert r["action"] == "auth.failure" and r["reason"] == "unknown_client_cert"
    assert r["outcome"] == "denied" and r["status"] == 401
    assert r["client_addr"] == "127.0.0.1"
    # authenticated as no one: no tenant, no principal of kind cert; the
    # (CA-verified) CN is named when it is one auth.client_certs could list
    assert "tenant" not in r
    assert r.get("principal", {}).get("kind") in (None, "none")
    assert r.get("principal", {}).get("id") == named
    # nothing secret: no client private key in the audit log or the log
    text = read(mtls.audit_path) + mtls.log()
    key_lines = [l for l in read(cert[1]).splitlines() if l and not l.startswith("-----")]
    assert key_lines and not any(l in text for l in key_lines)


def test_bearer_without_cert_still_works(mtls, pki, sandboxes):
    by_cert, by_other, _ = sandboxes
    plain = pki.client_context()  # asked for a certificate, sends none
    status, body, _ = call(mtls, plain, "GET", "/v1/sandboxes?limit=1000",
                           authorization=bearer(mtls.keys["other"]))
    assert status == 200, body
    assert by_other in {s["id"] for s in body["items"]}
    jwt = mtls.jwt.hs256(mtls.jwt.claims())
    assert call(mtls, plain, "GET", "/v1/sandboxes", authorization=bearer(jwt))[0] == 200
    rid = new_rid()
    status, err, _ = call(mtls, plain, "GET", "/v1/sandboxes", request_id=rid)
    assert status == 401, err
    assert err["error"]["code"] == "unauthorized"
    for r in audited(mtls, rid, timeout=2):
        assert r["reason"] == "missing"


def test_authorization_header_decides_over_cert(mtls, runner_ctx, sandboxes):
    by_cert, by_other, _ = sandboxes
    # the key's tenant, not the certificate's
    seen = ids(call(mtls, runner_ctx, "GET", "/v1/sandboxes?limit=1000",
                    authorization=bearer(mtls.keys["other"])))
    assert by_other in seen and by_cert not in seen
    assert call(mtls, runner_ctx, "GET", "/v1/sandboxes/" + by_cert,
                authorization=bearer(mtls.keys["other"]))[0] == 404
    # the key's scopes, not the certificate's: a read-only key cannot create
    status, err, _ = call(mtls, runner_ctx, "POST", "/v1/sandboxes", {"template": "python"},
                          authorization=bearer(mtls.keys["acme_ro"]))
    assert status == 403, err
    assert "sandboxes:write" in err["error"]["message"]
    # and the key's scopes even where they exceed the certificate's: the
    # certificate alone gets 403 for exec; with the key of tenant other
    # (which has exec) the scope check passes and the tenant check answers
    # 404, since by_cert is not tenant other's
    status, err, _ = call(mtls, runner_ctx, "POST", f"/v1/sandboxes/{by_cert}/exec",
                          {"command": ["true"]}, authorization=bearer(mtls.keys["other"]))
    assert status == 404, err
    # a bad credential is not rescued by a good certificate
    key = mtls.keys["acme"]
    tampered = key[:-1] + ("a" if key[-1] != "a" else "b")
    for name, header in (("unknown key", bearer("sbx_nosuchkey9_" + "d" * 52)),
                         ("tampered key", bearer(tampered)),
                         ("expired key", bearer(mtls.keys["expired"])),
                         ("revoked key", bearer(mtls.keys["revoked"])),
                         ("garbage jwt", "Bearer a.b.c"),
                         ("bearer without token", "Bearer "),
                         ("basic", "Basic YWRtaW46YWRtaW4="),
                         ("tab only", "\t")):
        rid = new_rid()
        status, err, _ = call(mtls, runner_ctx, "GET", "/v1/sandboxes", authorization=header,
                              request_id=rid)
        assert status == 401, (name, err)
        assert err["error"]["code"] == "unauthorized", name
        for r in [r for r in mtls.audit() if r.get("request_id") == rid]:
            assert r["reason"] != "unknown_client_cert", name
            assert "principal" not in r or r["principal"].get("kind") != "cert", name


# An Authorization header that is empty (or only spaces, which the HTTP
# server trims) counts as absent, as auth_check treats it (AUTH_MISSING), so
# the certificate decides; documented in docs/authentication.md. A value
# that is not blank (a tab, "Bearer ") is a credential and is refused above.
@pytest.mark.parametrize("value", [pytest.param("", id="empty"), pytest.param("   ", id="spaces")])
def test_blank_authorization_header_counts_as_absent(mtls, runner_ctx, pki, value):
    # without a certificate it is a 401 ("missing")
    assert call(mtls, pki.client_context(), "GET", "/v1/sandboxes", authorization=value)[0] == 401
    status, body, _ = call(mtls, runner_ctx, "GET", "/v1/sandboxes", authorization=value)
    assert status == 200, body


FOREIGN = [("signed by CA B", "runner_b"), ("expired, signed by A", "expired"),
           ("server purpose only", "server_purpose"), ("self-signed", "self_signed"),
           ("issued by a leaf of A", "leaf_issued")]
VERSIONS = [("TLS1.2", ssl.TLSVersion.TLSv1_2), ("TLS1.3", ssl.TLSVersion.TLSv1_3)]


@pytest.mark.parametrize("version", [v[1] for v in VERSIONS], ids=[v[0] for v in VERSIONS])
@pytest.mark.parametrize("name,attr", FOREIGN, ids=[f[0] for f in FOREIGN])
def test_cert_that_does_not_verify_fails_the_handshake(mtls, pki, name, attr, version):
    # the same server, the same TLS version: the mapped certificate of CA A
    # is answered, and so is no certificate at all ...
    assert attempt(mtls, pki.client_context(pki.runner, version)) == ("answered", 200)
    assert attempt(mtls, pki.client_context(None, version)) == ("answered", 401)
    # ... every one of these carries CN ci-runner (or is issued by a CA A
    # leaf) and must not get as far as HTTP
    what, detail = attempt(mtls, pki.client_context(getattr(pki, attr), version))
    assert what == "refused", f"{name}: the server answered HTTP {detail}"


def test_cert_via_intermediate_of_the_ca_is_accepted(mtls, pki):
    ctx = pki.client_context(pki.via_intermediate)
    status, body, _ = call(mtls, ctx, "GET", "/v1/sandboxes")
    assert status == 200, body


def test_client_ca_file_is_reloaded(cluster_env, pki, tmp_path):
    binary = os.environ.get("SBX_BINARY")
    if not binary:
        pytest.skip("SBX_BINARY not set")
    workdir = str(tmp_path)
    ca_file = os.path.join(workdir, "client-ca.pem")
    write_atomically(ca_file, read(pki.ca_a[0]))
    c = Controller(cluster_env, binary, workdir, extra=tls_config(pki, ca_file),
                   auth_extra=CLIENT_CERTS, tls_context=pki.client_context())
    c.start()
    try:
        runner_a = pki.client_context(pki.runner)
        runner_b = pki.client_context(pki.runner_b)
        assert attempt(c, runner_a) == ("answered", 200)
        assert attempt(c, runner_b)[0] == "refused"
        # a broken file is refused and the previous CAs are kept
        failures = c.log().count("still serving the previous certificate")
        write_atomically(ca_file, read(pki.runner[0]))  # a leaf, not a CA
        assert wait_until(lambda: c.log().count("still serving the previous certificate")
                          > failures), c.log()[-2000:]
        assert "is not a CA certificate" in c.log()
        assert attempt(c, runner_a) == ("answered", 200)
        assert attempt(c, runner_b)[0] == "refused"
        # CA B replaces CA A
        write_atomically(ca_file, read(pki.ca_b[0]))
        assert wait_until(lambda: attempt(c, runner_b) == ("answered", 200)), \
            "a certificate of CA B is still refused 10 s after the CA file changed"
        assert attempt(c, runner_a)[0] == "refused"
        # no certificate: the bearer path is unchanged
        assert c.api.call("GET", "/v1/sandboxes")[0] == 200
        # and back to both
        write_atomically(ca_file, read(pki.ca_a[0]) + read(pki.ca_b[0]))
        assert wait_until(lambda: attempt(c, runner_a) == ("answered", 200))
        assert attempt(c, runner_b) == ("answered", 200)
        assert c.proc.poll() is None
    finally:
        c.stop()


CONFIG_ERRORS = [
    ("client_certs without client_ca_file", "tls", CLIENT_CERTS, 2, "auth.client_certs"),
    ("client_ca_file without client_certs", "full", "", 2, "tls.client_ca_file"),
    ("client_ca_file without a certificate", "ca_only", CLIENT_CERTS, 2, "tls.client_ca_file"),
    ("bad scope name", "full",
     "client_certs:\n  - {subject_cn: ci-runner, tenant: certco, scopes: [sandboxes:rwx]}\n",
     None, "auth.client_certs[0].scopes[0]"),
    ("bad scope in the second entry", "full",
     CLIENT_CERTS + "  - {subject_cn: ci-3, tenant: certco, scopes: [exec, root]}\n",
     None, "auth.client_certs[2].scopes[1]"),
    ("bad subject_cn", "full",
     "client_certs:\n  - {subject_cn: 'ci runner', tenant: certco, scopes: [exec]}\n",
     None, "auth.client_certs[0].subject_cn"),
    ("a leaf in the client CA file", "leaf_ca", CLIENT_CERTS, None, "is not a CA certificate"),
]


@pytest.mark.parametrize("name,tls,auth_extra,rc,message", CONFIG_ERRORS,
                         ids=[e[0] for e in CONFIG_ERRORS])
def test_config_errors_refuse_to_start(cluster_env, pki, tmp_path, name, tls, auth_extra, rc,
                                       message):
    binary = os.environ.get("SBX_BINARY")
    if not binary:
        pytest.skip("SBX_BINARY not set")
    workdir = str(tmp_path)
    ca_file = os.path.join(workdir, "client-ca.pem")
    write_atomically(ca_file, read(pki.runner[0] if tls == "leaf_ca" else pki.ca_a[0]))
    extra = {
        "tls": f"tls: {{cert_file: {pki.server[0]}, key_file: {pki.server[1]}}}",
        "full": tls_config(pki, ca_file),
        "leaf_ca": tls_config(pki, ca_file),
        "ca_only": f"tls: {{client_ca_file: {ca_file}}}",
    }[tls]
    c = Controller(cluster_env, binary, workdir, extra=extra, auth_extra=auth_extra,
                   tls_context=pki.client_context())
    try:
        c.start()
    except RuntimeError:
        pass
    if c.proc.poll() is None:
        c.stop()
        pytest.fail(f"{name}: the controller started")
    assert c.proc.returncode != 0
    if rc is not None:
        assert c.proc.returncode == rc, c.log()
    assert message in c.log(), c.log()
