"""End-to-end: the sandbox lifecycle over HTTP against the real control plane."""
import re
import time

from conftest import wait_until

ID_RE = re.compile(r"^sb-[a-z2-7]{20}$")
NS_PODS = "/api/v1/namespaces/{ns}/pods"


def create(api, template="python", **kw):
    body = {"template": template}
    body.update(kw)
    return api.call("POST", "/v1/sandboxes", body)


def test_create_wait_get_delete(api, kube, cluster_env):
    status, sb, headers = create(api, labels={"team": "blue"})
    assert status == 201, sb
    assert ID_RE.match(sb["id"])
    assert sb["state"] == "ready"
    assert sb["template"] == "python"
    assert sb["labels"] == {"team": "blue"}
    assert headers.get("X-Request-Id")
    # nothing internal leaks
    for key in ("node", "nodeName", "pod_ip", "podIP", "uid"):
        assert key not in sb
    status, got, _ = api.call("GET", "/v1/sandboxes/" + sb["id"])
    assert status == 200 and got["id"] == sb["id"] and got["state"] == "ready"

    # the Pod the controller made: restricted and locked down
    status, pod = kube.get(NS_PODS.format(ns=cluster_env["KUBE_NAMESPACE"]) + "/" + sb["id"])
    assert status == 200
    spec = pod["spec"]
    assert spec["automountServiceAccountToken"] is False
    assert spec["enableServiceLinks"] is False
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["runAsUser"] == 1000
    assert spec["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    c = spec["containers"][0]
    assert c["securityContext"]["allowPrivilegeEscalation"] is False
    assert c["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert c["resources"]["limits"]["cpu"] == "500m"
    assert not spec.get("hostNetwork") and not spec.get("hostPID")
    assert pod["metadata"]["labels"]["sandbox-controller.dev/network"]

    status, body, _ = api.call("DELETE", "/v1/sandboxes/" + sb["id"])
    assert status == 204 and body is None
    gone = wait_until(lambda: api.call("GET", "/v1/sandboxes/" + sb["id"])[0] == 404)
    assert gone


def test_create_no_wait_is_pending_then_ready(api):
    status, sb, _ = create(api, wait=False)
    assert status == 201
    assert sb["state"] == "pending"
    ready = wait_until(lambda: api.call("GET", "/v1/sandboxes/" + sb["id"])[1].get("state") == "ready"
                       if api.call("GET", "/v1/sandboxes/" + sb["id"])[0] == 200 else False)
    assert ready
    assert api.call("DELETE", "/v1/sandboxes/" + sb["id"])[0] == 204


def test_list_label_filter_and_pages(api):
    ids = []
    for i in range(5):
        status, sb, _ = create(api, wait=False, labels={"batch": "pages", "n": str(i)})
        assert status == 201
        ids.append(sb["id"])
    status, other, _ = create(api, wait=False, labels={"batch": "other"})
    assert status == 201
    wait_until(lambda: len(api.call("GET", "/v1/sandboxes?label=batch=pages")[1]["items"]) == 5)
    seen, cursor, pages = [], None, 0
    while True:
        q = "/v1/sandboxes?label=batch%3Dpages&limit=2" + (f"&continue={cursor}" if cursor else "")
        status, page, _ = api.call("GET", q)
        assert status == 200
        pages += 1
        seen += [s["id"] for s in page["items"]]
        cursor = page.get("continue")
        if not cursor:
            break
    assert sorted(seen) == sorted(ids)
    assert pages == 3
    status, page, _ = api.call("GET", "/v1/sandboxes?label=batch=pages&label=n=3")
    assert [s["id"] for s in page["items"]] == [ids[3]]
    for i in ids + [other["id"]]:
        assert api.call("DELETE", "/v1/sandboxes/" + i)[0] == 204


def test_timeout_extend_and_cap(api):
    status, sb, _ = create(api, template="web", timeout_seconds=20)
    assert status == 201
    created = sb["created_at"]
    status, ext, _ = api.call("POST", f"/v1/sandboxes/{sb['id']}/timeout", {"timeout_seconds": 25})
    assert status == 200, ext
    assert ext["expires_at"] > sb["expires_at"]
    status, err, _ = api.call("POST", f"/v1/sandboxes/{sb['id']}/timeout", {"timeout_seconds": 31})
    assert status == 422 and err["error"]["code"] == "timeout_too_large"
    assert created == ext["created_at"]
    assert api.call("DELETE", "/v1/sandboxes/" + sb["id"])[0] == 204


def test_expiry_deletes(api):
    status, sb, _ = create(api, template="web", timeout_seconds=2)
    assert status == 201
    gone = wait_until(lambda: api.call("GET", "/v1/sandboxes/" + sb["id"])[0] == 404, timeout=30)
    assert gone, "an expired sandbox was not deleted"


def test_unschedulable_fails_clearly_and_cleans_up(api, kube, cluster_env):
    status, err, _ = create(api, template="huge")
    assert status == 503, err
    assert err["error"]["code"] == "unschedulable"
    assert "Insufficient cpu" in err["error"]["message"]
    # nothing half-created stays behind
    def no_huge_pods():
        s, pods = kube.get(NS_PODS.format(ns=cluster_env["KUBE_NAMESPACE"]) +
                           "?labelSelector=sandbox-controller.dev%2Ftemplate%3Dhuge")
        return s == 200 and all(p["metadata"].get("deletionTimestamp") for p in pods["items"])
    assert wait_until(no_huge_pods, timeout=20)


def test_templates(api):
    status, body, _ = api.call("GET", "/v1/templates")
    assert status == 200
    names = {t["name"]: t for t in body["items"]}
    assert set(names) == {"python", "web", "ci", "huge", "exec", "locked", "noshell", "bare"}
    assert names["web"]["network"] == "internet"
    assert names["python"]["max_timeout_seconds"] == 3600


def test_network_policies(api, kube, cluster_env):
    # creating one sandbox of each profile makes sure every policy exists
    ns = cluster_env["KUBE_NAMESPACE"]
    made = []
    for t in ("python", "web", "ci"):
        status, sb, _ = create(api, template=t, wait=False)
        assert status == 201
        made.append(sb["id"])
    status, nps = kube.get(f"/apis/networking.k8s.io/v1/namespaces/{ns}/networkpolicies")
    assert status == 200
    by_name = {n["metadata"]["name"]: n for n in nps["items"]}
    for np in by_name.values():
        if np["metadata"].get("labels", {}).get("app.kubernetes.io/managed-by") != "sandbox-controller":
            continue
        spec = np["spec"]
        assert sorted(spec["policyTypes"]) == ["Egress", "Ingress"]
        assert spec.get("ingress", []) == []
    none = by_name["sbx-net-none"]["spec"]
    assert none.get("egress", []) == []
    internet = by_name["sbx-net-internet"]["spec"]["egress"]
    blocks = [to["ipBlock"] for rule in internet for to in rule.get("to", []) if "ipBlock" in to]
    v4 = [b for b in blocks if b["cidr"] == "0.0.0.0/0"][0]
    for private in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "169.254.0.0/16"):
        assert private in v4["except"]
    allow = by_name["sbx-net-allow-ci"]["spec"]["egress"]
    cidrs = [to["ipBlock"]["cidr"] for rule in allow for to in rule.get("to", []) if "ipBlock" in to]
    assert "203.0.113.0/24" in cidrs
    # every sandbox Pod is selected by its profile's policy
    for i in made:
        s, pod = kube.get(f"/api/v1/namespaces/{ns}/pods/{i}")
        label = pod["metadata"]["labels"]["sandbox-controller.dev/network"]
        assert by_name[label]["spec"]["podSelector"]["matchLabels"] == {
            "sandbox-controller.dev/network": label}
        assert api.call("DELETE", "/v1/sandboxes/" + i)[0] == 204


def test_env_values_never_logged(api, controller):
    secret = "s3cr3t-value-" + str(time.time())
    status, sb, _ = create(api, env={"API_TOKEN": secret}, wait=False)
    assert status == 201
    assert api.call("DELETE", "/v1/sandboxes/" + sb["id"])[0] == 204
    time.sleep(0.5)
    assert secret not in controller.log()


def test_restart_keeps_sandboxes_and_expiry(api, controller):
    status, keep, _ = create(api, wait=False, labels={"batch": "restart"})
    assert status == 201
    status, short, _ = create(api, template="web", timeout_seconds=8, wait=False)
    assert status == 201
    assert controller.stop() == 0
    controller.start()
    status, page, _ = api.call("GET", "/v1/sandboxes?label=batch=restart")
    assert status == 200
    assert [s["id"] for s in page["items"]] == [keep["id"]]
    assert api.call("GET", "/v1/sandboxes/" + short["id"])[0] == 200
    # the expiry written on the Pod is honoured by the new process
    assert wait_until(lambda: api.call("GET", "/v1/sandboxes/" + short["id"])[0] == 404, timeout=40)
    assert api.call("DELETE", "/v1/sandboxes/" + keep["id"])[0] == 204


def test_sigterm_drains_calls_in_flight(api, controller, cluster_env):
    """A call in flight when SIGTERM arrives is answered, not dropped; while
    draining, /readyz is 503 and new calls are refused with 503 shutting_down.
    kwok (the fake kubelet) is paused so that the create is surely still
    waiting for its Pod to become Ready when the signal comes."""
    import json as _json
    import os
    import signal
    import threading
    with open(os.path.join(cluster_env["CLUSTER_DIR"], "state.json")) as f:
        kwok_pid = _json.load(f)["components"]["kwok"]["pid"]
    result = {}
    os.kill(kwok_pid, signal.SIGSTOP)
    try:
        t = threading.Thread(target=lambda: result.setdefault("create", create(api)))
        t.start()
        time.sleep(0.5)
        controller.proc.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        status, body, _ = api.call("GET", "/readyz")
        assert status == 503 and body["draining"] is True
        status, body, headers = create(api)
        assert status == 503 and body["error"]["code"] == "shutting_down"
        assert headers.get("Retry-After")
        assert controller.proc.poll() is None  # still waiting for the call in flight
    finally:
        os.kill(kwok_pid, signal.SIGCONT)
    t.join(30)
    status, sb, _ = result["create"]
    assert status == 201, sb
    assert sb["state"] == "ready"
    assert controller.proc.wait(30) == 0
    counts = [int(n) for n in re.findall(r"draining: (\d+) calls in flight", controller.log())]
    assert counts and counts[-1] == 1
    controller.start()
    assert api.call("DELETE", "/v1/sandboxes/" + sb["id"])[0] == 204
