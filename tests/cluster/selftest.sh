#!/usr/bin/env bash
# Self-test of the test control plane (cluster.py): starts a cluster in a
# temporary directory and checks what tests rely on. Prints one line per check;
# exits non-zero on the first failure. Takes about 20 seconds when the binaries
# are cached.
#
# Usage: tests/cluster/selftest.sh [DIR]      (default: a new temporary directory)
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
if [ $# -gt 0 ]; then dir=$1; own_dir=false
else dir=$(mktemp -d "${TMPDIR:-/tmp}/cluster-selftest.XXXXXX"); own_dir=true; fi
cluster() { python3 "$here/cluster.py" "$@" --dir "$dir"; }
ok() { printf 'ok   %s\n' "$*"; }
fail() { printf 'FAIL %s\n' "$*" >&2; exit 1; }
trap 'cluster stop >/dev/null 2>&1 || true' EXIT

t0=$(date +%s.%N)
cluster start --watch-pid $$
ok "start took $(echo "$(date +%s.%N) - $t0" | bc | cut -c1-4)s"

# KEY=VALUE lines, unquoted: the value is everything after the first '='
while IFS= read -r line; do export "${line%%=*}=${line#*=}"; done < "$dir/env"
k() { "$KUBECTL" "$@"; }

ready=$(k get nodes -o jsonpath='{range .items[*]}{.status.conditions[?(@.type=="Ready")].status}{" "}{end}')
[ "$ready" = "True True True " ] || fail "nodes not all Ready: $ready"
ok "3 kwok nodes Ready"

node=${KUBE_NODES%%,*}
pod() { # name, pod-level securityContext, container-level securityContext
	k apply -f - <<EOF
apiVersion: v1
kind: Pod
metadata: {name: $1, namespace: $KUBE_NAMESPACE}
spec:
  nodeName: $node
  securityContext: $2
  containers:
  - name: main
    image: example.invalid/never-pulled
    securityContext: $3
EOF
}
pod selftest '{runAsNonRoot: true, runAsUser: 1000, seccompProfile: {type: RuntimeDefault}}' \
	'{allowPrivilegeEscalation: false, capabilities: {drop: [ALL]}}' >/dev/null
k wait --for=condition=Ready pod/selftest --timeout=30s >/dev/null
ok "restricted-compliant pod Running on $node"

if out=$(pod weak '{}' '{privileged: true}' 2>&1); then fail "privileged pod was admitted"; fi
case $out in *'violates PodSecurity "restricted:latest"'*) ;; *) fail "unexpected: $out" ;; esac
ok "privileged pod rejected by PodSecurity"

[ "$(k exec selftest -- echo hello)" = hello ] || fail "exec echo"
ok "exec echo hello"
set +e; k exec selftest -- sh -c 'exit 3' 2>/dev/null; rc=$?; set -e
[ "$rc" = 3 ] || fail "exit code $rc, want 3"
ok "exec exit code 3"
[ "$(echo hi | timeout 10 "$KUBECTL" exec -i selftest -- cat)" = hi ] || fail "stdin EOF"
ok "exec stdin reaches EOF"
[ "$(k exec selftest -- pwd)" = "$KWOK_EXEC_WORKDIR" ] || fail "exec workDir"
ok "exec runs in $KWOK_EXEC_WORKDIR"

mkdir -p "$KWOK_EXEC_WORKDIR/selftest"
k apply -f - >/dev/null <<EOF
apiVersion: kwok.x-k8s.io/v1alpha1
kind: Exec
metadata: {name: selftest, namespace: $KUBE_NAMESPACE}
spec:
  execs:
  - local: {workDir: "$KWOK_EXEC_WORKDIR/selftest"}
EOF
for _ in $(seq 50); do
	[ "$(k exec selftest -- pwd)" = "$KWOK_EXEC_WORKDIR/selftest" ] && break
	sleep 0.1
done
[ "$(k exec selftest -- pwd)" = "$KWOK_EXEC_WORKDIR/selftest" ] || fail "per-pod Exec"
ok "per-pod Exec object sets the pod's workDir"

k delete pod selftest --timeout=30s >/dev/null
ok "pod deleted"

k create serviceaccount selftest >/dev/null
token=$(k create token selftest)
if out=$("$KUBECTL" --kubeconfig=/dev/null --server="$KUBE_SERVER" \
	--certificate-authority="$KUBE_CA_FILE" --token="$token" get pods 2>&1); then
	fail "service account could list pods"
fi
case $out in *Forbidden*) ;; *) fail "unexpected: $out" ;; esac
ok "TokenRequest works, RBAC forbids the new service account"

port=${KUBE_SERVER##*:}
cluster restart-apiserver --down-seconds 2
[ "$(k get --raw /readyz)" = ok ] || fail "apiserver not ready after restart"
ok "apiserver back on port $port"

ports=$(python3 -c 'import json,sys; print(" ".join(map(str, json.load(open(sys.argv[1]))["ports"].values())))' "$dir/state.json")
cluster stop
trap - EXIT
if pgrep -f -- "$dir/(etcd-data|kwok.yaml|pki)" >/dev/null; then fail "processes left"; fi
for p in $ports; do
	if ss -ltn "sport = :$p" | grep -q LISTEN; then fail "port $p still listening"; fi
done
ok "stop left no process and no listening port"
if $own_dir; then rm -rf "$dir"; fi
