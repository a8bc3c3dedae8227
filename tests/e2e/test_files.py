"""End-to-end: the files API (PUT/GET/DELETE /v1/sandboxes/{id}/files) over
exec, against the real control plane. kwok's local exec runs the transfer
scripts on this host, in the template's workspace directory (a temporary
host directory), so the tests check the effects on disk directly."""
import hashlib
import os
import tempfile
import time
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


# ---- streaming: files larger than limits.max_body_bytes ----

@pytest.fixture(scope="module")
def small(cluster_env):
    """A controller whose body limit (64 KiB) is far below the template's
    exec.max_file_bytes (16 MiB): file bodies must stream past it."""
    c = Controller(cluster_env, os.environ["SBX_BINARY"], tempfile.mkdtemp(prefix="sbx-e2e-files-s-"),
                   max_body=64 << 10)
    c.start()
    api = c.as_("acme")
    st, sb, _ = api.call("POST", "/v1/sandboxes", {"template": "exec"})
    assert st == 201, sb
    c.sid = sb["id"]
    yield c
    api.call("DELETE", "/v1/sandboxes/" + c.sid)
    c.stop()
    log = c.log()
    assert "AddressSanitizer" not in log and "LeakSanitizer" not in log, log[-5000:]


def raw_http(c, head, body=b"", read_limit=1 << 20, timeout=30, close_after_send=False):
    """Send a request as bytes on a fresh connection; return (status, headers
    dict (lowercase), body bytes) of the response, reading until EOF or
    Content-Length."""
    import socket
    s = socket.create_connection(("127.0.0.1", c.port), timeout=timeout)
    try:
        s.sendall(head.encode() + body)
        if close_after_send:
            return None
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
        hdr, _, rest = data.partition(b"\r\n\r\n")
        lines = hdr.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {l.split(":", 1)[0].lower(): l.split(":", 1)[1].strip() for l in lines[1:] if ":" in l}
        want = int(headers.get("content-length", "0"))
        while len(rest) < min(want, read_limit):
            chunk = s.recv(65536)
            if not chunk:
                break
            rest += chunk
        return status, headers, rest
    finally:
        s.close()


def put_head(c, path, length=None, chunked=False, token=None, extra=""):
    h = f"PUT {url(c, path)} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token or c.keys['acme']}\r\n"
    if chunked:
        h += "Transfer-Encoding: chunked\r\n"
    elif length is not None:
        h += f"Content-Length: {length}\r\n"
    return h + extra + "\r\n"


def test_stream_round_trip_over_max_body(small):
    api = small.as_("acme")
    data = os.urandom((12 << 20) + 12345)
    st, r, _ = api.call("PUT", url(small, "s/big.bin", parents="true"), raw=data)
    assert st == 201, r
    assert r == {"path": os.path.join(small.exec_ws, "s/big.bin"), "size": len(data)}
    with open(os.path.join(small.exec_ws, "s/big.bin"), "rb") as f:
        assert hashlib.sha256(f.read()).digest() == hashlib.sha256(data).digest()
    st, ctype, got = raw_get(small, "s/big.bin")
    assert st == 200 and ctype == "application/octet-stream"
    assert len(got) == len(data) and hashlib.sha256(got).digest() == hashlib.sha256(data).digest()
    # HEAD: the length, no body
    import urllib.request
    req = urllib.request.Request(small.api.base + url(small, "s/big.bin"), method="HEAD")
    req.add_header("Authorization", "Bearer " + small.keys["acme"])
    with urllib.request.urlopen(req, timeout=60) as resp:
        assert resp.status == 200 and int(resp.headers["Content-Length"]) == len(data)
        assert resp.read() == b""
    # an empty file streams too
    st, r, _ = api.call("PUT", url(small, "s/empty"), raw=b"")
    assert st == 201 and r["size"] == 0
    assert raw_get(small, "s/empty")[2] == b""
    # the listing is still JSON
    st, r, _ = api.call("GET", url(small, "s"))
    assert st == 200 and {e["name"] for e in r["entries"]} == {"big.bin", "empty"}
    # other endpoints keep the 64 KiB body limit
    st, r, _ = api.call("POST", f"/v1/sandboxes/{small.sid}/exec", raw=b"{" + b" " * (70 << 10) + b"}")
    assert st == 413 and r["error"]["code"] == "body_too_large"


def test_stream_chunked_upload(small):
    data = os.urandom((3 << 20) + 7)
    body = b""
    for i in range(0, len(data), 100000):
        piece = data[i:i + 100000]
        body += b"%x\r\n" % len(piece) + piece + b"\r\n"
    body += b"0\r\n\r\n"
    st, _, rb = raw_http(small, put_head(small, "chunked.bin", chunked=True), body)
    assert st == 201, rb
    with open(os.path.join(small.exec_ws, "chunked.bin"), "rb") as f:
        assert f.read() == data
    # chunked past exec.max_file_bytes: 413, nothing written, no temporary file
    big = os.urandom(1 << 20)
    body = b"".join(b"%x\r\n" % len(big) + big + b"\r\n" for _ in range(17)) + b"0\r\n\r\n"
    st, _, rb = raw_http(small, put_head(small, "chunked-too-big.bin", chunked=True), body, timeout=60)
    assert st == 413, rb
    assert not os.path.exists(os.path.join(small.exec_ws, "chunked-too-big.bin"))
    assert not [n for n in os.listdir(small.exec_ws) if n.startswith(".sbx-upload")]


def test_stream_refused_before_the_body(small):
    # Content-Length over exec.max_file_bytes: 413 at once, the body never sent
    t0 = time.time()
    st, h, rb = raw_http(small, put_head(small, "huge.bin", length=1 << 40))
    assert st == 413 and b"file_too_large" in rb and h.get("connection") == "close"
    assert time.time() - t0 < 10
    # a bad credential with a body on its way: 401, answered while the body
    # is still coming (dropped), the client reads its answer
    body = os.urandom(4 << 20)
    st, h, rb = raw_http(small, put_head(small, "x.bin", length=len(body), token="nope"), body)
    assert st == 401 and h.get("connection") == "close"
    # Expect: 100-continue refused: no 100, the answer
    st, h, rb = raw_http(small, put_head(small, "../x", length=10, extra="Expect: 100-continue\r\n"))
    assert st == 400 and b"invalid_path" in rb
    assert not os.path.exists(os.path.join(small.exec_ws, "x.bin"))


def test_stream_expect_continue(small):
    import socket
    s = socket.create_connection(("127.0.0.1", small.port), timeout=30)
    s.sendall(put_head(small, "expect.bin", length=5, extra="Expect: 100-continue\r\n").encode())
    first = s.recv(4096)
    assert first.startswith(b"HTTP/1.1 100"), first
    s.sendall(b"hello")
    resp = b""
    while b"\r\n\r\n" not in resp:
        resp += s.recv(4096)
    s.close()
    assert resp.startswith(b"HTTP/1.1 201"), resp
    assert open(os.path.join(small.exec_ws, "expect.bin"), "rb").read() == b"hello"


def slots_free(c, n=6):
    """Transfers still work n times over (more than the template's
    exec.max_streams): nothing leaked a slot."""
    api = c.as_("acme")
    for i in range(n):
        st, r, _ = api.call("PUT", url(c, f"slot-{i}"), raw=b"x")
        assert st in (201, 204), r


def test_stream_client_vanishes_mid_upload(small):
    target = os.path.join(small.exec_ws, "vanish-up.bin")
    with open(target, "wb") as f:
        f.write(b"original")
    # announces 8 MiB, sends 1 MiB, leaves
    raw_http(small, put_head(small, "vanish-up.bin", length=8 << 20), os.urandom(1 << 20),
             close_after_send=True)
    deadline = time.time() + 20
    while time.time() < deadline and [n for n in os.listdir(small.exec_ws) if n.startswith(".sbx-upload")]:
        time.sleep(0.2)
    time.sleep(1)
    assert open(target, "rb").read() == b"original"
    assert not [n for n in os.listdir(small.exec_ws) if n.startswith(".sbx-upload")]
    slots_free(small)


def test_stream_client_vanishes_mid_download(small):
    import socket
    with open(os.path.join(small.exec_ws, "vanish-down.bin"), "wb") as f:
        f.write(os.urandom(12 << 20))
    for _ in range(3):
        s = socket.create_connection(("127.0.0.1", small.port), timeout=30)
        s.sendall(f"GET {url(small, 'vanish-down.bin')} HTTP/1.1\r\nHost: x\r\n"
                  f"Authorization: Bearer {small.keys['acme']}\r\n\r\n".encode())
        got = b""
        while len(got) < (256 << 10):
            got += s.recv(65536)
        assert got.startswith(b"HTTP/1.1 200") and b"Content-Length: %d" % (12 << 20) in got
        s.close()
    time.sleep(1)
    slots_free(small)
    st, _, got = raw_get(small, "vanish-down.bin")
    assert st == 200 and len(got) == 12 << 20


def test_stream_slow_reader_keeps_every_byte(small):
    """A reader that pauses: back-pressure reaches the exec (v4: nothing is
    lost upstream), and the file arrives whole."""
    import socket
    data = os.urandom(6 << 20)
    with open(os.path.join(small.exec_ws, "slow.bin"), "wb") as f:
        f.write(data)
    s = socket.create_connection(("127.0.0.1", small.port), timeout=60)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 << 10)
    s.sendall(f"GET {url(small, 'slow.bin')} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
              f"Authorization: Bearer {small.keys['acme']}\r\n\r\n".encode())
    got = b""
    n = 0
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        got += chunk
        n += 1
        if n % 16 == 0 and len(got) < (3 << 20):
            time.sleep(0.3)
    s.close()
    body = got.partition(b"\r\n\r\n")[2]
    assert hashlib.sha256(body).digest() == hashlib.sha256(data).digest()
