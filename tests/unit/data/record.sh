#!/usr/bin/env bash
# Re-record the API server answers the unit tests decode, from a running test
# control plane:  record.sh CLUSTER_DIR   (a dir made by tests/cluster/cluster.py start)
# Writes status-*.json, watch-error-gone.json and watch-configmaps.jsonl here.
set -euo pipefail
dir=$1
out=$(cd "$(dirname "$0")" && pwd)
while IFS='=' read -r key val; do
	[ -n "$key" ] && export "$key=$val"
done < "$dir/env"
ns=record-$RANDOM
tok=$KUBE_ADMIN_TOKEN
k() { curl -sS --cacert "$KUBE_CA_FILE" -H "Authorization: Bearer $tok" "$@"; }
api=$KUBE_SERVER
j='Content-Type: application/json'

k -X POST -H "$j" "$api/api/v1/namespaces" -d "{\"metadata\":{\"name\":\"$ns\"}}" >/dev/null
cm() { echo "{\"metadata\":{\"name\":\"$1\"},\"data\":{\"v\":\"$2\"}}"; }

k "$api/api/v1/namespaces/$ns/configmaps/absent" > "$out/status-notfound.json"
k -X POST -H "$j" "$api/api/v1/namespaces/$ns/configmaps" -d "$(cm c1 a)" >/dev/null
k -X POST -H "$j" "$api/api/v1/namespaces/$ns/configmaps" -d "$(cm c1 a)" > "$out/status-alreadyexists.json"
k -X PUT -H "$j" "$api/api/v1/namespaces/$ns/configmaps/c1" \
	-d '{"metadata":{"name":"c1","resourceVersion":"1"},"data":{"v":"b"}}' > "$out/status-conflict.json"
k -X POST -H "$j" "$api/api/v1/namespaces/$ns/configmaps" -d "$(cm Bad_Name a)" > "$out/status-invalid.json"
curl -sS --cacert "$KUBE_CA_FILE" -H "Authorization: Bearer not-a-token" \
	"$api/api/v1/namespaces/$ns/configmaps" > "$out/status-unauthorized.json"
# a ServiceAccount with no permissions
k -X POST -H "$j" "$api/api/v1/namespaces/$ns/serviceaccounts" -d '{"metadata":{"name":"nobody"}}' >/dev/null
satok=$(k -X POST -H "$j" "$api/api/v1/namespaces/$ns/serviceaccounts/nobody/token" \
	-d '{"spec":{"expirationSeconds":600}}' | python3 -c 'import json,sys; print(json.load(sys.stdin)["status"]["token"])')
curl -sS --cacert "$KUBE_CA_FILE" -H "Authorization: Bearer $satok" \
	"$api/api/v1/namespaces/$ns/configmaps" > "$out/status-forbidden.json"
# a privileged Pod in the namespace that enforces "restricted"
k -X POST -H "$j" "$api/api/v1/namespaces/$KUBE_NAMESPACE/pods" \
	-d '{"metadata":{"name":"weak"},"spec":{"containers":[{"name":"c","image":"busybox","securityContext":{"privileged":true}}]}}' \
	> "$out/status-podsecurity.json"
# compact etcd to its current revision and restart the API server (so its
# watch cache starts after the compaction), then watch from before it: 410 Gone
rev=$(curl -sS -X POST "$ETCD_URL/v3/kv/range" -d '{"key":"AA=="}' | python3 -c 'import json,sys; print(json.load(sys.stdin)["header"]["revision"])')
curl -sS -X POST "$ETCD_URL/v3/kv/compaction" -d "{\"revision\":\"$rev\",\"physical\":true}" >/dev/null
python3 "$CLUSTER_PY" restart-apiserver --dir "$dir" --down-seconds 1 >/dev/null
k "$api/api/v1/namespaces/$ns/configmaps?watch=1&resourceVersion=1&timeoutSeconds=5" | head -n 1 > "$out/watch-error-gone.json"
# a watch stream: w1 added, modified, w2 added, w1 deleted; then the
# bookmarks of a second watch (sendInitialEvents, matching nothing) appended
rv=$(k "$api/api/v1/namespaces/$ns/configmaps" | python3 -c 'import json,sys; print(json.load(sys.stdin)["metadata"]["resourceVersion"])')
k -N "$api/api/v1/namespaces/$ns/configmaps?watch=1&resourceVersion=$rv&timeoutSeconds=4&allowWatchBookmarks=true" > "$out/watch-configmaps.jsonl" &
sleep 1
k -X POST -H "$j" "$api/api/v1/namespaces/$ns/configmaps" -d "$(cm w1 a)" >/dev/null
k -X PATCH -H 'Content-Type: application/merge-patch+json' "$api/api/v1/namespaces/$ns/configmaps/w1" -d '{"data":{"v":"b"}}' >/dev/null
k -X POST -H "$j" "$api/api/v1/namespaces/$ns/configmaps" -d "$(cm w2 a)" >/dev/null
k -X DELETE "$api/api/v1/namespaces/$ns/configmaps/w1" >/dev/null
wait
k -N "$api/api/v1/namespaces/$ns/configmaps?watch=1&sendInitialEvents=true&resourceVersionMatch=NotOlderThan&allowWatchBookmarks=true&labelSelector=none%3Dnone&timeoutSeconds=2" >> "$out/watch-configmaps.jsonl"
echo "recorded into $out (namespace $ns left in the throwaway cluster)"
