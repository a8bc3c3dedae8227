"""End-to-end: the 400/413/415/422/404/405 matrix. Every case answers with the one
error shape and a stable code, and creates nothing."""
import json

import pytest


def post(api, body=None, raw=None, headers=None):
    return api.call("POST", "/v1/sandboxes", body, raw=raw, headers=headers)


CASES = [
    ("invalid json", dict(raw=b"{not json"), 400, "invalid_json"),
    ("not an object", dict(raw=b"[1,2]"), 400, "invalid_type"),
    ("unknown field", dict(body={"template": "python", "image": "evil"}), 400, "unknown_field"),
    ("securityContext is not a client field",
     dict(body={"template": "python", "securityContext": {"privileged": True}}), 400, "unknown_field"),
    ("missing template", dict(body={}), 400, "missing_field"),
    ("template wrong type", dict(body={"template": 7}), 400, "invalid_type"),
    ("timeout wrong type", dict(body={"template": "python", "timeout_seconds": "10"}), 400, "invalid_type"),
    ("timeout fractional", dict(body={"template": "python", "timeout_seconds": 1.5}), 400, "invalid_type"),
    ("wait wrong type", dict(body={"template": "python", "wait": "yes"}), 400, "invalid_type"),
    ("labels wrong type", dict(body={"template": "python", "labels": ["a"]}), 400, "invalid_type"),
    ("label value wrong type", dict(body={"template": "python", "labels": {"a": 1}}), 400, "invalid_type"),
    ("unknown template", dict(body={"template": "nope"}), 422, "unknown_template"),
    ("timeout above max", dict(body={"template": "python", "timeout_seconds": 3601}), 422, "timeout_too_large"),
    ("timeout zero", dict(body={"template": "python", "timeout_seconds": 0}), 422, "invalid_timeout"),
    # beyond int64: never converted (undefined behaviour in C), saturated instead
    ("timeout 1e30", dict(raw=b'{"template":"python","timeout_seconds":1e30}'), 422, "timeout_too_large"),
    ("timeout -1e30", dict(raw=b'{"template":"python","timeout_seconds":-1e30}'), 422, "invalid_timeout"),
    ("timeout 2^63", dict(raw=b'{"template":"python","timeout_seconds":9223372036854775808}'), 422, "timeout_too_large"),
    ("timeout infinite", dict(raw=b'{"template":"python","timeout_seconds":1e999}'), 400, "invalid_type"),
    ("invalid label key", dict(body={"template": "python", "labels": {"bad key": "x"}}), 422, "invalid_label"),
    ("invalid label value", dict(body={"template": "python", "labels": {"k": "-x"}}), 422, "invalid_label"),
    ("label value too long", dict(body={"template": "python", "labels": {"k": "x" * 64}}), 422, "invalid_label"),
    ("too many labels", dict(body={"template": "python", "labels": {f"k{i}": "v" for i in range(5)}}), 422, "too_many_labels"),
    ("invalid env name", dict(body={"template": "python", "env": {"1BAD": "x"}}), 422, "invalid_env"),
    ("env name with =", dict(body={"template": "python", "env": {"A=B": "x"}}), 422, "invalid_env"),
    ("too many env", dict(body={"template": "python", "env": {f"V{i}": "x" for i in range(9)}}), 422, "too_many_env"),
    ("env too large", dict(body={"template": "python", "env": {"BIG": "x" * 2000}}), 422, "env_too_large"),
    ("env set by template", dict(body={"template": "python", "env": {"PYTHONUNBUFFERED": "0"}}), 422, "env_reserved"),
    ("duplicate env name", dict(raw=b'{"template":"python","env":{"A":"1","A":"2"}}'), 400, "duplicate_key"),
    ("duplicate label key", dict(raw=b'{"template":"python","labels":{"k":"1","k":"2"}}'), 400, "duplicate_key"),
    ("HOME is the workspace", dict(body={"template": "python", "env": {"HOME": "/"}}), 422, "env_reserved"),
    ("wrong content type", dict(raw=b"template=python", headers={"Content-Type": "text/plain"}), 415, "unsupported_media_type"),
]


@pytest.mark.parametrize("name,kw,status,code", CASES, ids=[c[0] for c in CASES])
def test_create_rejects(api, name, kw, status, code):
    before = len(api.call("GET", "/v1/sandboxes?limit=1000")[1]["items"])
    got, body, headers = post(api, **kw)
    assert got == status, body
    assert set(body) == {"error"}
    err = body["error"]
    assert err["code"] == code
    assert err["message"]
    assert err["request_id"] == headers["X-Request-Id"]
    after = len(api.call("GET", "/v1/sandboxes?limit=1000")[1]["items"])
    assert after == before


def test_body_too_large(api):
    big = json.dumps({"template": "python", "labels": {"a": "x" * 70000}}).encode()
    status, body, _ = post(api, raw=big)
    assert status == 413
    assert body["error"]["code"] == "body_too_large"


def test_unknown_id(api):
    for method, path in (("GET", "/v1/sandboxes/sb-aaaaaaaaaaaaaaaaaaaa"),
                         ("DELETE", "/v1/sandboxes/sb-aaaaaaaaaaaaaaaaaaaa"),
                         ("POST", "/v1/sandboxes/sb-aaaaaaaaaaaaaaaaaaaa/timeout")):
        status, body, _ = api.call(method, path, {"timeout_seconds": 5} if method == "POST" else None)
        assert status == 404, (method, path, body)
        assert body["error"]["code"] == "not_found"


def test_wrong_method(api):
    # HEAD is allowed wherever GET is
    for method, path, allow in (("PUT", "/v1/sandboxes", {"GET", "HEAD", "POST"}),
                                ("PATCH", "/v1/sandboxes/sb-x", {"GET", "HEAD", "DELETE"}),
                                ("DELETE", "/v1/templates", {"GET", "HEAD"}),
                                ("GET", "/v1/sandboxes/sb-x/timeout", {"POST"})):
        status, body, headers = api.call(method, path)
        assert status == 405, (method, path)
        assert body["error"]["code"] == "method_not_allowed"
        assert {m.strip() for m in headers["Allow"].split(",")} == allow


def test_unknown_path(api):
    status, body, _ = api.call("GET", "/v2/whatever")
    assert status == 404 and body["error"]["code"] == "not_found"


def test_list_bad_queries(api):
    for q, code in (("limit=0", "invalid_limit"), ("limit=abc", "invalid_limit"),
                    ("limit=1001", "invalid_limit"), ("label=novalue", "invalid_label_filter"),
                    ("label=bad%20key=v", "invalid_label_filter"), ("continue=zzz", "invalid_continue"),
                    ("color=red", "unknown_parameter")):
        status, body, _ = api.call("GET", "/v1/sandboxes?" + q)
        assert status == 400, q
        assert body["error"]["code"] == code, q


def test_timeout_bad_bodies(api):
    status, sb, _ = api.call("POST", "/v1/sandboxes", {"template": "python", "wait": False})
    assert status == 201
    path = f"/v1/sandboxes/{sb['id']}/timeout"
    for raw, st, code in ((b"nope", 400, "invalid_json"), (b'{"timeout_seconds":"5"}', 400, "invalid_type"),
                          (b'{"seconds":5}', 400, "unknown_field"), (b"{}", 400, "missing_field"),
                          (b'{"timeout_seconds":-1}', 422, "invalid_timeout"),
                          (b'{"timeout_seconds":999999}', 422, "timeout_too_large"),
                          (b'{"timeout_seconds":1e300}', 422, "timeout_too_large"),
                          (b'{"timeout_seconds":-1e300}', 422, "invalid_timeout"),
                          (b'{"timeout_seconds":-1e999}', 400, "invalid_type")):
        status, body, _ = api.call("POST", path, raw=raw)
        assert status == st, raw
        assert body["error"]["code"] == code, raw
    assert api.call("DELETE", "/v1/sandboxes/" + sb["id"])[0] == 204


def test_request_id_echo(api):
    status, _, headers = api.call("GET", "/healthz", headers={"X-Request-Id": "abc-123.x_y"})
    assert status == 200 and headers["X-Request-Id"] == "abc-123.x_y"
    status, _, headers = api.call("GET", "/healthz", headers={"X-Request-Id": "bad id with spaces"})
    assert headers["X-Request-Id"] != "bad id with spaces" and headers["X-Request-Id"]
