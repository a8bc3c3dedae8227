"""End-to-end: the files API (PUT/GET/DELETE /v1/sandboxes/{id}/files) over
exec, against the real control plane. kwok's local exec runs the transfer
scripts on this host, in the template's workspace directory (a temporary
host directory), so the tests check the effects on disk directly."""
import hashlib
import os
import tempfile
import urllib.parse

import pytest

from conftest import Controller


@pytest.fixture(scope="module")
def big(cluster_env):
    """A controller whose body limit lets 10 MiB uploads through (the
    template's exec.max_file_bytes is 16 MiB)."""
    c = Controller(cluster_env, os.environ["SBX_BINARY"], tempfile.mkdtemp(prefix="sbx-e2e-files-"),
                   max_body=32 << 20)
    c.start()
    api = c.as_("acme")
    st, sb, _ = api.call("POST", "/v1/sandboxes", {"template": "exec"})
    assert st == 201, sb
    c.sid = sb["id"]
    yield c
    api.call("DELETE", "/v1/sandboxes/" + c.sid)
    c.stop()


def url(c, path, **extra):
    q = urllib.parse.urlencode(dict(path=path, **extra))
    return f"/v1/sandboxes/{c.sid}/files?{q}"


def raw_get(c, path, token=None):
    import urllib.request
    req = urllib.request.Request(c.api.base + url(c, path))
    req.add_header("Authorization", "Bearer " + (token or c.keys["acme"]))
    with urllib.request.urlopen(req, timeout=120) as r:
        return r.status, r.headers.get("Content-Type"), r.read()


def test_10_mib_binary_round_trip(big):
    api = big.as_("acme")
    data = os.urandom(10 << 20)
    st, r, _ = api.call("PUT", url(big, "big/blob.bin", parents="true"), raw=data)
    assert st == 201, r
    assert r == {"path": os.path.join(big.exec_ws, "big/blob.bin"), "size": len(data)}
    with open(os.path.join(big.exec_ws, "big/blob.bin"), "rb") as f:
        assert hashlib.sha256(f.read()).digest() == hashlib.sha256(data).digest()
    st, ctype, got = raw_get(big, "big/blob.bin")
    assert st == 200 and ctype == "application/octet-stream"
    assert hashlib.sha256(got).hexdigest() == hashlib.sha256(data).hexdigest()
    # replacing answers 204, and the content is the new one
    st, r, _ = api.call("PUT", url(big, "big/blob.bin"), raw=b"small")
    assert st == 204
    assert raw_get(big, "/" + os.path.relpath(os.path.join(big.exec_ws, "big/blob.bin"), "/"))[2] == b"small"
    # no temporary file is left behind
    assert sorted(os.listdir(os.path.join(big.exec_ws, "big"))) == ["blob.bin"]


def test_listing_and_delete(big):
    api = big.as_("acme")
    d = os.path.join(big.exec_ws, "list")
    os.makedirs(os.path.join(d, "sub"), exist_ok=True)
    for name, body in (("a b.txt", b"12345"), ("new\nline", b"x"), (".hidden", b"")):
        with open(os.path.join(d, name), "wb") as f:
            f.write(body)
    st, r, _ = api.call("GET", url(big, "list"))
    assert st == 200, r
    got = {e["name"]: (e["type"], e["size"]) for e in r["entries"]}
    assert got["a b.txt"] == ("file", 5)
    assert got["new\nline"] == ("file", 1)
    assert got[".hidden"] == ("file", 0)
    assert got["sub"][0] == "dir"
    assert r["truncated"] is False
    st, _, _ = api.call("DELETE", url(big, "list/a b.txt"))
    assert st == 204 and not os.path.exists(os.path.join(d, "a b.txt"))
    st, r, _ = api.call("DELETE", url(big, "list/a b.txt"))
    assert st == 404 and r["error"]["code"] == "not_found"
    st, r, _ = api.call("DELETE", url(big, "list"))
    assert st == 409 and r["error"]["code"] == "directory_not_empty"
    st, r, _ = api.call("GET", url(big, "list/nothing-here"))
    assert st == 404 and r["error"]["code"] == "not_found"


def test_size_limit(big):
    api = big.as_("acme")
    st, r, _ = api.call("PUT", url(big, "toolarge.bin"), raw=os.urandom((16 << 20) + 1))
    assert st == 413 and r["error"]["code"] == "file_too_large"
    assert not os.path.exists(os.path.join(big.exec_ws, "toolarge.bin"))
    # a file grown past the limit inside the sandbox cannot be downloaded
    with open(os.path.join(big.exec_ws, "grown.bin"), "wb") as f:
        f.truncate((16 << 20) + 1)
    st, r, _ = api.call("GET", url(big, "grown.bin"))
    assert st == 413 and r["error"]["code"] == "file_too_large"


TRAVERSAL = [
    ("dot dot", "../etc/passwd", 400, "invalid_path"),
    ("dot dot inside", "a/../b", 400, "invalid_path"),
    ("encoded dot dot", "%2e%2e/etc/passwd", None, None),  # decoded once by the server: literal name
    ("absolute outside", "/etc/passwd", 403, "path_outside_workspace"),
    ("absolute prefix trick", "{ws}-evil/x", 403, "path_outside_workspace"),
    ("control character", "a\x01b", 400, "bad_query"),  # refused by the HTTP server
    pytest.param("newline", "a\nb", 400, "bad_query", marks=pytest.mark.xfail(
        strict=True, reason="known defect: libwebsockets 4.1.6 cuts a query value at a "
        "decoded %0A, so the path arrives as \"a\" (docs/api.md, issue note)")),
    ("empty", "", 400, "invalid_path"),
    ("symlink to /etc", "etc-link/passwd", 403, "path_outside_workspace"),
    ("final symlink", "passwd-link", 403, "symlink_not_followed"),
]


@pytest.mark.parametrize("name,path,status,code", TRAVERSAL)
def test_traversal_is_refused(big, name, path, status, code):
    api = big.as_("acme")
    ws = big.exec_ws
    for link, target in (("etc-link", "/etc"), ("passwd-link", "/etc/passwd")):
        if not os.path.islink(os.path.join(ws, link)):
            os.symlink(target, os.path.join(ws, link))
    path = path.replace("{ws}", ws)
    before = open("/etc/passwd", "rb").read()
    for method, body in (("GET", None), ("PUT", b"pwned"), ("DELETE", None)):
        st, r, _ = api.call(method, url(big, path), raw=body)
        if status is None:
            # "%2e%2e" reaches us as the literal name "%2e%2e/etc/passwd"
            # inside the workspace: no such directory
            assert st in (404,), (method, st, r)
            continue
        assert st == status, (method, r)
        assert r["error"]["code"] == code, (method, r)
    assert open("/etc/passwd", "rb").read() == before


def test_scope_tenant_and_missing_parameter(big):
    st, r, _ = big.as_("noexec").call("GET", url(big, "x"))
    assert st == 403 and r["error"]["code"] == "forbidden"
    st, r, _ = big.as_("other").call("GET", url(big, "x"))
    assert st == 404 and r["error"]["code"] == "not_found"
    st, r, _ = big.as_("acme").call("GET", f"/v1/sandboxes/{big.sid}/files")
    assert st == 400 and r["error"]["code"] == "invalid_path"
    st, r, _ = big.as_("acme").call("GET", f"/v1/sandboxes/{big.sid}/files?path=x&mode=777")
    assert st == 400 and r["error"]["code"] == "unknown_parameter"


def test_audit_names_the_file(big):
    api = big.as_("acme")
    st, _, h = api.call("PUT", url(big, "audited.txt"), raw=b"x")
    assert st in (201, 204)
    rid = h["X-Request-Id"]
    recs = [a for a in big.audit() if a.get("request_id") == rid]
    assert recs and recs[0]["action"] == "files.write"
    assert recs[0]["argv"] == ["PUT", os.path.join(big.exec_ws, "audited.txt")]
