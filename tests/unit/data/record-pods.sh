#!/usr/bin/env bash
# Record a real watch stream of one sandbox-shaped Pod's life on the test
# control plane (kwok node): created (Pending), scheduled, Running and Ready,
# deleted. Usage: record-pods.sh CLUSTER_DIR. Writes watch-pods.jsonl here.
set -euo pipefail
dir=$1
out=$(cd "$(dirname "$0")" && pwd)
while IFS='=' read -r key val; do
	[ -n "$key" ] && export "$key=$val"
done < "$dir/env"
k() { curl -sS --cacert "$KUBE_CA_FILE" -H "Authorization: Bearer $KUBE_ADMIN_TOKEN" "$@"; }
api=$KUBE_SERVER/api/v1/namespaces/$KUBE_NAMESPACE/pods
node=${KUBE_NODES%%,*}
id=sb-recorded$RANDOM
sel=sandbox-controller.dev%2Fid%3D$id
rv=$(k "$api?labelSelector=$sel" | python3 -c 'import json,sys; print(json.load(sys.stdin)["metadata"]["resourceVersion"])')
k -N "$api?watch=1&labelSelector=$sel&resourceVersion=$rv&timeoutSeconds=8" > "$out/watch-pods.jsonl" &
sleep 1
k -X POST -H 'Content-Type: application/json' "$api" -d @- >/dev/null <<JSON
{"metadata":{"name":"$id","labels":{"app.kubernetes.io/managed-by":"sandbox-controller",
  "sandbox-controller.dev/id":"$id","sandbox-controller.dev/template":"python",
  "sandbox-controller.dev/tenant":"default","user.sandbox-controller.dev/team":"blue"},
  "annotations":{"sandbox-controller.dev/created-at":"1700000000","sandbox-controller.dev/expires-at":"1700003600"}},
 "spec":{"nodeName":"$node","automountServiceAccountToken":false,
  "securityContext":{"runAsNonRoot":true,"runAsUser":1000,"runAsGroup":1000,"seccompProfile":{"type":"RuntimeDefault"}},
  "containers":[{"name":"sandbox","image":"python:3.12-slim","command":["sleep","infinity"],
   "securityContext":{"allowPrivilegeEscalation":false,"capabilities":{"drop":["ALL"]},"readOnlyRootFilesystem":true}}]}}
JSON
sleep 3
k -X DELETE "$api/$id" >/dev/null
wait
echo "recorded $(wc -l < "$out/watch-pods.jsonl") events into $out/watch-pods.jsonl"
