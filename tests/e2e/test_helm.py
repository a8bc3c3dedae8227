"""End-to-end: the Helm chart helm/sandbox-controller against manifests/ and the
real control plane.

- `helm lint` passes, with the default values and with TLS + client certificates;
- `helm template` with the default values renders the same objects as
  manifests/*.yaml (Helm's standard labels aside): this is what keeps the two
  installs identical;
- the TLS + mTLS values change exactly the Service, the probes, the volumes and
  the config, and bad combinations of values are refused at render time;
- the rendered config.yaml passes the daemon's own `--check-config`;
- the API server accepts every rendered object (`kubectl apply --dry-run=server`)
  without a PodSecurity warning, and the Deployment's Pod is admitted under the
  controller namespace's Pod Security "restricted" (a Pod as well, because for a
  Deployment's template PodSecurity only warns, it never refuses).

The last tests create the rendered Namespaces and ServiceAccount for real,
without Helm's labels (the dry run of a namespaced object needs its namespace,
and a Pod's admission needs its ServiceAccount), as conftest does with
manifests/; they are left in place: this control plane runs no namespace
controller, so a deleted Namespace would stay Terminating. Re-running is
idempotent.

Needs HELM and KUBECTL from the cluster env file (SBX_CLUSTER_ENV), SBX_BINARY
for the config check, and PyYAML."""
import json
import os
import shutil
import subprocess
import tempfile

import pytest

from conftest import ROOT

import yaml  # noqa: E402  (PyYAML: scripts/install-deps.sh installs it)

CHART = os.path.join(ROOT, "helm", "sandbox-controller")
MANIFESTS = os.path.join(ROOT, "manifests")
RELEASE = "sandbox-controller"

# the only difference allowed between the default render and manifests/
HELM_LABELS = {"helm.sh/chart", "app.kubernetes.io/managed-by", "app.kubernetes.io/instance",
               "app.kubernetes.io/version"}

CLIENT_CERTS = [{"subject_cn": "ci-runner.acme", "tenant": "acme",
                 "scopes": ["sandboxes:read", "sandboxes:write", "exec", "files"]}]

# TLS with client certificates, in a namespace pair of its own
TLS_VALUES = {
    "controllerNamespace": "sbx-helm-tls-system",
    "sandboxNamespace": "sbx-helm-tls",
    "tls": {"enabled": True, "secretName": "sandbox-controller-tls"},
    "clientCA": {"enabled": True, "secretName": "sandbox-controller-client-ca",
                 "clientCerts": CLIENT_CERTS},
}


@pytest.fixture(scope="module")
def tools(cluster_env):
    workdir = tempfile.mkdtemp(prefix="sbx-e2e-helm-")
    # helm's cache, config and data in a directory of the run, not in $HOME
    env = dict(os.environ, HELM_CACHE_HOME=os.path.join(workdir, "cache"),
               HELM_CONFIG_HOME=os.path.join(workdir, "config"),
               HELM_DATA_HOME=os.path.join(workdir, "data"))
    yield {"helm": cluster_env["HELM"], "kubectl": cluster_env["KUBECTL"],
           "kubeconfig": cluster_env["KUBECONFIG"], "env": env, "dir": workdir}
    shutil.rmtree(workdir, ignore_errors=True)


def values_file(tools, values):
    """A values file (JSON is YAML) holding values."""
    fd, path = tempfile.mkstemp(suffix=".yaml", dir=tools["dir"])
    with os.fdopen(fd, "w") as f:
        json.dump(values, f)
    return path


def helm(tools, *args, check=True):
    r = subprocess.run([tools["helm"], *args], capture_output=True, text=True,
                       env=tools["env"], timeout=120)
    if check:
        assert r.returncode == 0, f"helm {' '.join(args)}:\n{r.stdout}\n{r.stderr}"
    return r


def render_text(tools, values=None, *extra):
    args = ["template", RELEASE, CHART, *extra]
    if values is not None:
        args += ["-f", values_file(tools, values)]
    return helm(tools, *args).stdout


def load_docs(text):
    return [d for d in yaml.safe_load_all(text) if d is not None]


def render(tools, values=None, *extra):
    return load_docs(render_text(tools, values, *extra))


def manifests():
    docs = []
    for name in sorted(os.listdir(MANIFESTS)):
        if name.endswith(".yaml"):
            with open(os.path.join(MANIFESTS, name)) as f:
                docs += load_docs(f.read())
    return docs


def key(doc):
    return (doc["kind"], doc["metadata"].get("namespace"), doc["metadata"]["name"])


def by_key(docs):
    out = {}
    for d in docs:
        assert key(d) not in out, f"{key(d)} twice"
        out[key(d)] = d
    return out


def normalize(doc):
    """doc without Helm's standard labels, with config.yaml parsed."""
    doc = json.loads(json.dumps(doc))
    labels = doc["metadata"].get("labels")
    if labels is not None:
        for k in HELM_LABELS:
            labels.pop(k, None)
        if not labels:
            del doc["metadata"]["labels"]
    if doc["kind"] == "ConfigMap" and "config.yaml" in doc.get("data", {}):
        doc["data"]["config.yaml"] = yaml.safe_load(doc["data"]["config.yaml"])
    return doc


def find(docs, kind):
    found = [d for d in docs if d["kind"] == kind]
    assert len(found) == 1, f"{len(found)} objects of kind {kind}"
    return found[0]


def config_of(docs):
    return yaml.safe_load(find(docs, "ConfigMap")["data"]["config.yaml"])


# --- 1. helm lint ---------------------------------------------------------

@pytest.mark.parametrize("values", [None, TLS_VALUES], ids=["default", "tls-mtls"])
def test_lint(tools, values):
    args = ["lint", "--strict", CHART]
    if values is not None:
        args += ["-f", values_file(tools, values)]
    r = helm(tools, *args, check=False)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "1 chart(s) linted, 0 chart(s) failed" in r.stdout, r.stdout


# --- 2. the default render is manifests/ -------------------------------------

# the release's own namespace (-n) must not move any object
@pytest.mark.parametrize("extra", [[], ["--namespace", "elsewhere"]], ids=["plain", "with-n"])
def test_default_render_is_manifests(tools, extra):
    rendered = by_key(render(tools, None, *extra))
    expected = by_key(manifests())
    assert sorted(rendered) == sorted(expected), "objects differ"
    for k, want in expected.items():
        got = rendered[k]
        assert normalize(got) == normalize(want), (
            f"{k} differs:\nchart:     {json.dumps(normalize(got), sort_keys=True)}\n"
            f"manifests: {json.dumps(normalize(want), sort_keys=True)}")
        # and the labels that were stripped are Helm's, with this release's values
        extra_labels = set(got["metadata"].get("labels", {})) - set(
            want["metadata"].get("labels", {}))
        assert extra_labels == HELM_LABELS, (k, extra_labels)
        assert got["metadata"]["labels"]["app.kubernetes.io/instance"] == RELEASE


def test_role_is_least_privilege(tools):
    """Spelled out, so that a change to both manifests/ and the chart still shows
    up here: Pods, pods/exec and NetworkPolicies in the sandbox namespace only."""
    docs = render(tools)
    role = find(docs, "Role")
    assert role["metadata"]["namespace"] == "sandboxes"
    assert role["rules"] == [
        {"apiGroups": [""], "resources": ["pods"],
         "verbs": ["get", "list", "watch", "create", "delete", "patch"]},
        {"apiGroups": [""], "resources": ["pods/exec"], "verbs": ["get", "create"]},
        {"apiGroups": ["networking.k8s.io"], "resources": ["networkpolicies"],
         "verbs": ["get", "list", "create", "delete"]},
    ]
    assert not [d for d in docs if d["kind"] in ("ClusterRole", "ClusterRoleBinding")]


def test_namespace_values(tools):
    docs = render(tools, {"controllerNamespace": "ctl", "sandboxNamespace": "boxes"})
    objs = by_key(docs)
    assert ("Namespace", None, "ctl") in objs and ("Namespace", None, "boxes") in objs
    assert objs[("Namespace", None, "boxes")]["metadata"]["labels"][
        "pod-security.kubernetes.io/enforce"] == "restricted"
    assert config_of(docs)["namespace"] == "boxes"
    assert find(docs, "Role")["metadata"]["namespace"] == "boxes"
    binding = find(docs, "RoleBinding")
    assert binding["metadata"]["namespace"] == "boxes"
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "sandbox-controller",
                                    "namespace": "ctl"}]
    for kind in ("ServiceAccount", "ConfigMap", "Deployment", "Service"):
        assert find(docs, kind)["metadata"]["namespace"] == "ctl", kind

    docs = render(tools, {"createNamespaces": False})
    assert not [d for d in docs if d["kind"] == "Namespace"]
    assert len(docs) == len(manifests()) - 2


def test_image_replicas_resources_keys(tools):
    docs = render(tools, {"image": {"repository": "registry.example/sbx", "tag": "1.2.3",
                                    "pullPolicy": "Always"},
                          "replicas": 3, "apiKeys": {"secretName": "my-keys"},
                          "resources": {"limits": {"cpu": "2", "memory": "1Gi"}}})
    dep = find(docs, "Deployment")
    assert dep["spec"]["replicas"] == 3
    pod = dep["spec"]["template"]["spec"]
    c = pod["containers"][0]
    assert c["image"] == "registry.example/sbx:1.2.3"
    assert c["imagePullPolicy"] == "Always"
    # Helm merges maps: requests stay the default
    assert c["resources"] == {"requests": {"cpu": "100m", "memory": "64Mi"},
                              "limits": {"cpu": "2", "memory": "1Gi"}}
    keys = [v for v in pod["volumes"] if v["name"] == "keys"][0]
    assert keys["secret"] == {"secretName": "my-keys", "defaultMode": 0o440}


def test_config_override(tools):
    """config: is merged into the default; a list replaces the default list;
    null removes a key; listen.port moves the container port."""
    template = {"name": "node", "image": "node:22-slim", "command": ["sleep", "infinity"],
                "workspace": {"size": "1Gi"}, "user": 1000, "group": 1000,
                "resources": {"requests": {"cpu": "100m", "memory": "128Mi",
                                           "ephemeral-storage": "256Mi"},
                              "limits": {"cpu": "1", "memory": "512Mi",
                                         "ephemeral-storage": "2Gi"}}}
    docs = render(tools, {"config": {"log": {"level": "debug"}, "listen": {"port": 9090},
                                     "audit": None, "templates": [template]}})
    cfg = config_of(docs)
    assert cfg["log"] == {"level": "debug", "format": "json"}
    assert "audit" not in cfg
    assert [t["name"] for t in cfg["templates"]] == ["node"]
    assert cfg["namespace"] == "sandboxes"
    c = find(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    assert c["ports"] == [{"name": "http", "containerPort": 9090}]


# --- 3. TLS and client certificates -------------------------------------------

def test_tls_render(tools):
    docs = render(tools, TLS_VALUES)
    cfg = config_of(docs)
    assert cfg["namespace"] == "sbx-helm-tls"
    assert cfg["tls"] == {"cert_file": "/etc/sandbox-controller/tls/tls.crt",
                          "key_file": "/etc/sandbox-controller/tls/tls.key",
                          "client_ca_file": "/etc/sandbox-controller/client-ca/ca.crt"}
    assert cfg["auth"] == {"api_keys_file": "/etc/sandbox-controller/keys/keys.yaml",
                           "client_certs": CLIENT_CERTS}
    svc = find(docs, "Service")
    assert svc["spec"]["ports"] == [{"name": "https", "port": 443, "targetPort": "https"}]
    pod = find(docs, "Deployment")["spec"]["template"]["spec"]
    c = pod["containers"][0]
    assert c["ports"] == [{"name": "https", "containerPort": 8080}]
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "https",
                                              "scheme": "HTTPS"}
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "https",
                                             "scheme": "HTTPS"}
    mounts = {m["name"]: m for m in c["volumeMounts"]}
    assert mounts["tls"] == {"name": "tls", "mountPath": "/etc/sandbox-controller/tls",
                             "readOnly": True}
    assert mounts["client-ca"] == {"name": "client-ca", "readOnly": True,
                                   "mountPath": "/etc/sandbox-controller/client-ca"}
    vols = {v["name"]: v for v in pod["volumes"]}
    assert vols["tls"]["secret"] == {"secretName": "sandbox-controller-tls", "defaultMode": 0o440}
    assert vols["client-ca"]["secret"] == {"secretName": "sandbox-controller-client-ca",
                                           "defaultMode": 0o440}

    # the CA from a ConfigMap instead; TLS without client certificates
    docs = render(tools, dict(TLS_VALUES, clientCA={
        "enabled": True, "configMapName": "client-ca", "clientCerts": CLIENT_CERTS}))
    vols = {v["name"]: v for v in find(docs, "Deployment")["spec"]["template"]["spec"]["volumes"]}
    assert vols["client-ca"] == {"name": "client-ca", "configMap": {"name": "client-ca"}}
    docs = render(tools, {"tls": TLS_VALUES["tls"]})
    cfg = config_of(docs)
    assert set(cfg["tls"]) == {"cert_file", "key_file"}
    assert "client_certs" not in cfg["auth"]
    pod = find(docs, "Deployment")["spec"]["template"]["spec"]
    assert [v["name"] for v in pod["volumes"]] == ["config", "keys", "tls"]


@pytest.mark.parametrize("values,message", [
    ({"clientCA": {"enabled": True, "secretName": "ca", "clientCerts": CLIENT_CERTS}},
     "clientCA.enabled needs tls.enabled"),
    ({"tls": {"enabled": True}}, "tls.enabled needs tls.secretName"),
    (dict(TLS_VALUES, clientCA={"enabled": True, "clientCerts": CLIENT_CERTS}),
     "exactly one of clientCA.secretName and clientCA.configMapName"),
    (dict(TLS_VALUES, clientCA={"enabled": True, "secretName": "a", "configMapName": "b",
                                "clientCerts": CLIENT_CERTS}),
     "exactly one of clientCA.secretName and clientCA.configMapName"),
    (dict(TLS_VALUES, clientCA={"enabled": True, "secretName": "ca"}),
     "clientCA.enabled needs clientCA.clientCerts"),
    ({"config": {"namespace": "elsewhere"}}, 'config.namespace "elsewhere" differs'),
    ({"sandboxNamespace": "sandbox-system"}, "must differ"),
    ({"config": {"tls": {"cert_file": "/x"}}}, "config.tls: set the tls and clientCA values"),
    ({"config": {"auth": {"client_certs": CLIENT_CERTS}}}, "set clientCA.clientCerts instead"),
], ids=["ca-without-tls", "tls-without-secret", "ca-no-source", "ca-two-sources",
        "ca-no-certs", "config-namespace", "same-namespaces", "config-tls", "config-client-certs"])
def test_bad_values_refused(tools, values, message):
    r = helm(tools, "template", RELEASE, CHART, "-f", values_file(tools, values), check=False)
    assert r.returncode != 0, r.stdout
    assert message in r.stderr, r.stderr


def test_config_namespace_may_repeat_sandbox_namespace(tools):
    docs = render(tools, {"config": {"namespace": "sandboxes"}})
    assert config_of(docs)["namespace"] == "sandboxes"


# --- 4. the daemon accepts the rendered config ---------------------------------

def check_config(tools, docs):
    binary = os.environ.get("SBX_BINARY")
    if not binary:
        pytest.skip("SBX_BINARY not set")
    path = values_file(tools, {})
    with open(path, "w") as f:
        f.write(find(docs, "ConfigMap")["data"]["config.yaml"])
    # --check-config reads no file the config names: the paths of the Pod suffice
    return subprocess.run([binary, "--check-config", "--config", path], capture_output=True,
                          text=True, timeout=60)


@pytest.mark.parametrize("values,namespace", [(None, "sandboxes"),
                                              (TLS_VALUES, "sbx-helm-tls")],
                         ids=["default", "tls-mtls"])
def test_rendered_config_passes_check_config(tools, values, namespace):
    r = check_config(tools, render(tools, values))
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.strip() == f'configuration OK: 1 templates, namespace "{namespace}"', r.stdout


def test_check_config_refuses_config_without_credentials(tools):
    """The check above can fail: without the key file the daemon refuses."""
    r = check_config(tools, render(tools, {"config": {"auth": {"api_keys_file": None}}}))
    assert r.returncode != 0, r.stdout
    assert "no credentials are configured" in r.stderr, r.stderr


# --- 5. the API server accepts the render ---------------------------------------

def kubectl(tools, *args, input=None):
    return subprocess.run([tools["kubectl"], "--kubeconfig", tools["kubeconfig"], *args],
                          input=input, capture_output=True, text=True, timeout=120)


def to_yaml(docs):
    return "---\n".join(json.dumps(d) + "\n" for d in docs)


def pod_of(deployment, name):
    t = deployment["spec"]["template"]
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": deployment["metadata"]["namespace"],
                         "labels": t["metadata"]["labels"]},
            "spec": t["spec"]}


@pytest.mark.parametrize("values", [None, TLS_VALUES], ids=["default", "tls-mtls"])
def test_server_dry_run(tools, values):
    text = render_text(tools, values)
    docs = load_docs(text)
    # prerequisites, for real: the namespaces and the ServiceAccount
    real = [normalize(d) for d in docs if d["kind"] in ("Namespace", "ServiceAccount")]
    r = kubectl(tools, "apply", "-f", "-", input=to_yaml(real))
    assert r.returncode == 0, r.stdout + r.stderr

    # every object, as helm would send it, validated by the API server
    r = kubectl(tools, "apply", "--dry-run=server", "-f", "-", input=text)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.count("(server dry run)") == len(docs), r.stdout
    assert "PodSecurity" not in r.stderr, r.stderr

    # the Deployment's Pod under the controller namespace's Pod Security "restricted"
    deployment = find(docs, "Deployment")
    pod = pod_of(deployment, "helm-dry-run-check")
    r = kubectl(tools, "create", "--dry-run=server", "-o", "name", "-f", "-",
                input=json.dumps(pod))
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.strip() == "pod/helm-dry-run-check", r.stdout

    # and that check can fail: the same Pod, weakened, is refused
    weak = json.loads(json.dumps(pod))
    weak["spec"]["containers"][0]["securityContext"]["allowPrivilegeEscalation"] = True
    r = kubectl(tools, "create", "--dry-run=server", "-o", "name", "-f", "-",
                input=json.dumps(weak))
    assert r.returncode != 0, r.stdout
    assert 'violates PodSecurity "restricted:latest"' in r.stderr, r.stderr
