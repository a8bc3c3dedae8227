"""End-to-end: authentication, scopes, tenants, scoped tokens, quotas, rate
limits and audit, against the built daemon and the real control plane. A row
per attack, each asserting the exact answer."""
import base64
import hashlib
import hmac
import json
import os
import tempfile
import time

import pytest

from conftest import Controller, b64u, wait_until


def create(api, template="python", **kw):
    body = {"template": template}
    body.update(kw)
    return api.call("POST", "/v1/sandboxes", body)


def unsigned_jwt(alg="none", **claims):
    head = b64u(json.dumps({"alg": alg, "typ": "JWT"}).encode())
    body = b64u(json.dumps(claims).encode())
    return f"{head}.{body}."


@pytest.fixture(scope="module")
def mine(controller):
    """A sandbox of tenant acme, and one of tenant other."""
    a = controller.as_("acme")
    o = controller.as_("other")
    s1, sb_a, _ = create(a, labels={"who": "acme"})
    s2, sb_o, _ = create(o, labels={"who": "other"})
    assert s1 == 201 and s2 == 201
    yield sb_a["id"], sb_o["id"]
    a.call("DELETE", "/v1/sandboxes/" + sb_a["id"])
    o.call("DELETE", "/v1/sandboxes/" + sb_o["id"])


BAD_CREDENTIALS = [
    ("missing", None),
    ("not bearer", "Basic YWRtaW46YWRtaW4="),
    ("bearer without token", "Bearer "),
    ("malformed key", "Bearer sbx_!!!_x"),
    ("unknown key id", "Bearer sbx_nosuchkey1_" + "a" * 52),
    ("alg none", "Bearer " + unsigned_jwt(sub="x", tenant="acme", exp=9999999999)),
    ("garbage jwt", "Bearer a.b.c"),
]


@pytest.mark.parametrize("name,header", BAD_CREDENTIALS, ids=[c[0] for c in BAD_CREDENTIALS])
def test_bad_credentials_are_401(controller, name, header):
    api = controller.api.as_(None)
    status, body, headers = api.call("GET", "/v1/sandboxes", headers={"Authorization": header})
    assert status == 401, body
    assert body["error"]["code"] == "unauthorized"
    assert headers["WWW-Authenticate"].startswith("Bearer")


def test_wrong_secret_expired_and_revoked_keys(controller):
    key = controller.keys["acme"]
    tampered = key[:-1] + ("a" if key[-1] != "a" else "b")
    for k in (tampered, controller.keys["expired"], controller.keys["revoked"]):
        status, body, _ = controller.api.as_(k).call("GET", "/v1/sandboxes")
        assert status == 401, k[:12]


def test_health_needs_no_credentials(controller):
    api = controller.api.as_(None)
    assert api.call("GET", "/healthz")[0] == 200
    assert api.call("GET", "/readyz")[0] == 200
    # but nothing else, not even a 404 or 405 leaks without them
    assert api.call("GET", "/v1/nothing-here")[0] == 401
    assert api.call("PUT", "/v1/sandboxes")[0] == 401


def test_scope_per_endpoint(controller, mine):
    ro = controller.as_("acme_ro")
    sid = mine[0]
    assert ro.call("GET", "/v1/sandboxes/" + sid)[0] == 200
    assert ro.call("GET", "/v1/templates")[0] == 200
    for method, path, body in (("POST", "/v1/sandboxes", {"template": "python"}),
                               ("DELETE", "/v1/sandboxes/" + sid, None),
                               ("POST", f"/v1/sandboxes/{sid}/timeout", {"timeout_seconds": 60}),
                               ("POST", f"/v1/sandboxes/{sid}/tokens", {"ttl_seconds": 60, "scopes": ["exec"]})):
        status, err, _ = ro.call(method, path, body)
        assert status == 403, (method, path, err)
        assert err["error"]["code"] == "forbidden"
        assert "sandboxes:write" in err["error"]["message"]


def test_cross_tenant_is_404(controller, mine):
    acme_sb, other_sb = mine
    o = controller.as_("other")
    for method, path, body in (("GET", "/v1/sandboxes/" + acme_sb, None),
                               ("DELETE", "/v1/sandboxes/" + acme_sb, None),
                               ("POST", f"/v1/sandboxes/{acme_sb}/timeout", {"timeout_seconds": 60}),
                               ("POST", f"/v1/sandboxes/{acme_sb}/tokens", {"ttl_seconds": 60, "scopes": ["sandboxes:read"]})):
        status, err, _ = o.call(method, path, body)
        assert status == 404, (method, path, err)
        assert err["error"]["code"] == "not_found"
    # lists show only one's own tenant; admin sees every tenant
    ids_other = [s["id"] for s in o.call("GET", "/v1/sandboxes?limit=1000")[1]["items"]]
    assert other_sb in ids_other and acme_sb not in ids_other
    ids_admin = [s["id"] for s in controller.as_("admin").call("GET", "/v1/sandboxes?limit=1000")[1]["items"]]
    assert {acme_sb, other_sb} <= set(ids_admin)
    # the sandbox still exists for its owner
    assert controller.as_("acme").call("GET", "/v1/sandboxes/" + acme_sb)[0] == 200


def test_scoped_token(controller, mine):
    acme_sb, other_sb = mine
    a = controller.as_("acme")
    status, tok, _ = a.call("POST", f"/v1/sandboxes/{acme_sb}/tokens",
                            {"ttl_seconds": 2, "scopes": ["sandboxes:read"]})
    assert status == 201, tok
    assert tok["sandbox"] == acme_sb and tok["scopes"] == ["sandboxes:read"]
    t = a.as_(tok["token"])
    assert t.call("GET", "/v1/sandboxes/" + acme_sb)[0] == 200
    # not another sandbox, not the list, not a create, not a write
    assert t.call("GET", "/v1/sandboxes/" + other_sb)[0] == 404
    assert t.call("GET", "/v1/sandboxes")[0] == 403
    assert create(t)[0] == 403
    assert t.call("DELETE", "/v1/sandboxes/" + acme_sb)[0] == 403
    # a scope the issuer does not hold cannot be delegated
    status, err, _ = controller.as_("acme_ro").call(
        "POST", f"/v1/sandboxes/{acme_sb}/tokens", {"ttl_seconds": 60, "scopes": ["exec"]})
    assert status == 403
    # bad requests
    for body, code in (({"ttl_seconds": 60, "scopes": ["admin"]}, "invalid_scope"),
                       ({"ttl_seconds": 0, "scopes": ["exec"]}, "invalid_token_request"),
                       ({"ttl_seconds": 60, "scopes": []}, "invalid_token_request"),
                       ({"ttl_seconds": 1e300, "scopes": ["exec"]}, "invalid_token_request"),
                       ({"ttl_seconds": -1e300, "scopes": ["exec"]}, "invalid_token_request"),
                       ({"ttl_seconds": 2.5, "scopes": ["exec"]}, "invalid_type"),
                       ({"ttl_seconds": 60}, "missing_field")):
        status, err, _ = a.call("POST", f"/v1/sandboxes/{acme_sb}/tokens", body)
        assert err["error"]["code"] == code, body
    # expiry
    time.sleep(3.5)
    assert t.call("GET", "/v1/sandboxes/" + acme_sb)[0] == 401


def test_scoped_token_dies_with_its_sandbox(controller):
    a = controller.as_("acme")
    status, sb, _ = create(a)
    assert status == 201
    status, tok, _ = a.call("POST", f"/v1/sandboxes/{sb['id']}/tokens",
                            {"ttl_seconds": 600, "scopes": ["sandboxes:read"]})
    assert status == 201
    assert a.call("DELETE", "/v1/sandboxes/" + sb["id"])[0] == 204
    t = a.as_(tok["token"])
    assert wait_until(lambda: t.call("GET", "/v1/sandboxes/" + sb["id"])[0] == 404)


def test_quota(controller):
    tiny = controller.as_("tiny")
    status, first, _ = create(tiny)
    assert status == 201
    status, err, _ = create(tiny)
    assert status == 429
    assert err["error"]["code"] == "quota_exceeded"
    assert "sandboxes quota" in err["error"]["message"]
    assert tiny.call("DELETE", "/v1/sandboxes/" + first["id"])[0] == 204
    # once the first is gone the quota has room again
    assert wait_until(lambda: tiny.call("GET", "/v1/sandboxes/" + first["id"])[0] == 404)
    status, again, _ = create(tiny)
    assert status == 201
    assert tiny.call("DELETE", "/v1/sandboxes/" + again["id"])[0] == 204


def test_audit_records_and_no_secrets(controller):
    a = controller.as_("acme")
    secret_env = "env-secret-" + str(time.time())
    status, sb, headers = create(a, env={"TOKEN": secret_env}, wait=False)
    assert status == 201
    rid = headers["X-Request-Id"]
    assert a.call("DELETE", "/v1/sandboxes/" + sb["id"])[0] == 204
    controller.api.as_(None).call("GET", "/v1/sandboxes",
                                  headers={"Authorization": "Bearer sbx_nosuchkey2_" + "b" * 52})
    time.sleep(0.5)
    records = controller.audit()
    created = [r for r in records if r.get("action") == "sandbox.create" and r.get("request_id") == rid]
    assert len(created) == 1
    r = created[0]
    assert r["outcome"] == "success" and r["status"] == 201
    assert r["tenant"] == "acme" and r["sandbox"] == sb["id"]
    assert r["principal"] == "e2eacme" or r.get("principal", {}) != ""
    assert r["client_addr"] == "127.0.0.1"
    assert any(x.get("action") == "sandbox.delete" and x.get("sandbox") == sb["id"] for x in records)
    fails = [x for x in records if x.get("action") == "auth.failure"]
    assert fails and all(x["outcome"] == "denied" and x["status"] == 401 and x.get("reason") for x in fails)
    jwt = controller.jwt.hs256(controller.jwt.claims())
    assert controller.api.as_(jwt).call("GET", "/v1/sandboxes")[0] == 200
    status, tok, _ = a.call("POST", f"/v1/sandboxes/{sb['id']}/tokens",
                            {"ttl_seconds": 60, "scopes": ["sandboxes:read"]})
    time.sleep(0.5)
    # no secret anywhere: not in the controller's log, the audit log, nor any
    # log of the control plane (kube-apiserver, etcd, kwok, scheduler)
    logs_dir = os.path.join(controller.env["CLUSTER_DIR"], "logs")
    text = open(controller.audit_path).read() + controller.log()
    for name in sorted(os.listdir(logs_dir)):
        with open(os.path.join(logs_dir, name), errors="replace") as f:
            text += f.read()
    secrets = list(controller.keys.values()) + [k.split("_")[-1] for k in controller.keys.values()]
    secrets += [secret_env, "nosuchkey2_bbbb", jwt, jwt.split(".")[2],
                controller.jwt.secret.hex(), base64.b64encode(controller.jwt.secret).decode()]
    if status == 201:
        secrets.append(tok["token"])
    for secret in secrets:
        assert secret not in text, "a secret reached a log"


@pytest.fixture(scope="module")
def limited(cluster_env):
    binary = os.environ["SBX_BINARY"]
    c = Controller(cluster_env, binary, tempfile.mkdtemp(prefix="sbx-e2e-rl-"),
                   rate=2, burst=3, arate=1, aburst=3)
    c.start()
    yield c
    c.stop()


def test_rate_limit_per_principal_trips_and_recovers(limited):
    a = limited.as_("acme")
    statuses = [a.call("GET", "/v1/templates") for _ in range(6)]
    codes = [s[0] for s in statuses]
    assert codes[:3] == [200, 200, 200]
    refused = [s for s in statuses if s[0] == 429]
    assert refused, codes
    assert refused[0][1]["error"]["code"] == "rate_limited"
    assert int(refused[0][2]["Retry-After"]) >= 1
    # another principal is not affected
    assert limited.as_("other").call("GET", "/v1/templates")[0] == 200
    time.sleep(int(refused[0][2]["Retry-After"]) + 0.2)
    assert a.call("GET", "/v1/templates")[0] == 200


def test_rate_limit_per_address_on_failures(limited):
    bad = limited.api.as_("sbx_nosuchkey3_" + "c" * 52)
    codes = [bad.call("GET", "/v1/templates")[0] for _ in range(5)]
    assert codes[:3] == [401, 401, 401]
    assert 429 in codes
    # the address is refused before its credentials are looked at, briefly
    status, body, headers = limited.as_("other").call("GET", "/v1/templates")
    if status == 429:
        time.sleep(int(headers["Retry-After"]) + 0.2)
    assert wait_until(lambda: limited.as_("other").call("GET", "/v1/templates")[0] == 200, timeout=10)


def jwt_call(controller, token, method="GET", path="/v1/sandboxes", body=None):
    return controller.api.as_(token).call(method, path, body)


def test_jwt_valid_hs256_and_rs256(controller, mine):
    j = controller.jwt
    for tok in (j.hs256(j.claims()), j.rs256(j.claims())):
        status, body, _ = jwt_call(controller, tok)
        assert status == 200, body
        # the JWT's tenant is acme: it sees acme's sandbox, not other's
        ids = [s["id"] for s in body["items"]]
        assert mine[0] in ids and mine[1] not in ids


def _tamper_payload(tok):
    head, body, sig = tok.split(".")
    claims = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    claims["tenant"] = "other"
    return head + "." + b64u(json.dumps(claims).encode()) + "." + sig


def _tamper_signature(tok):
    head, body, sig = tok.split(".")
    raw = bytearray(base64.urlsafe_b64decode(sig + "=" * (-len(sig) % 4)))
    raw[0] ^= 1
    return head + "." + body + "." + b64u(bytes(raw))


JWT_ATTACKS = [
    ("tampered payload", lambda j: _tamper_payload(j.hs256(j.claims()))),
    ("tampered signature", lambda j: _tamper_signature(j.rs256(j.claims()))),
    ("alg none", lambda j: j._segments({"alg": "none", "typ": "JWT"}, j.claims()) + "."),
    ("HS256 signed with the RSA public key", lambda j: j.hs256(j.claims(), secret=j.rsa_public_pem)),
    ("HS256 header on an RS256 signature", lambda j: j._segments({"alg": "HS256", "kid": "k1"}, j.claims())
     + "." + j.rs256(j.claims()).split(".")[2]),
    ("expired", lambda j: j.hs256(j.claims(exp=int(time.time()) - 3600, iat=int(time.time()) - 7200))),
    ("not yet valid", lambda j: j.hs256(j.claims(nbf=int(time.time()) + 3600))),
    ("issued in the future", lambda j: j.hs256(j.claims(iat=int(time.time()) + 3600))),
    ("wrong issuer", lambda j: j.hs256(j.claims(iss="https://evil.test"))),
    ("wrong audience", lambda j: j.hs256(j.claims(aud="someone-else"))),
    ("unknown kid", lambda j: j.rs256(j.claims(), kid="nope")),
    ("no tenant", lambda j: j.hs256(j.claims(tenant=None))),
    ("no exp", lambda j: j.hs256(j.claims(exp=None))),
    ("wrong secret", lambda j: j.hs256(j.claims(), secret=b"x" * 48)),
]


@pytest.mark.parametrize("name,make", JWT_ATTACKS, ids=[a[0] for a in JWT_ATTACKS])
def test_jwt_attacks_are_401(controller, name, make):
    status, body, headers = jwt_call(controller, make(controller.jwt))
    assert status == 401, (name, body)
    assert body["error"]["code"] == "unauthorized"


def test_jwt_scopes_limit_what_it_may_do(controller):
    j = controller.jwt
    ro = j.hs256(j.claims(scope="sandboxes:read"))
    assert jwt_call(controller, ro)[0] == 200
    status, err, _ = jwt_call(controller, ro, "POST", "/v1/sandboxes", {"template": "python"})
    assert status == 403 and "sandboxes:write" in err["error"]["message"]
    # scp as an array works too
    rw = j.hs256(j.claims(scope=None, scp=["sandboxes:read", "sandboxes:write"]))
    status, sb, _ = jwt_call(controller, rw, "POST", "/v1/sandboxes", {"template": "python", "wait": False})
    assert status == 201, sb
    assert jwt_call(controller, rw, "DELETE", "/v1/sandboxes/" + sb["id"])[0] == 204
