#!/usr/bin/env bash
# One command from a fresh checkout to a running controller: install what is
# missing, build, start a local control plane (etcd + kube-apiserver + kwok
# nodes, namespace "sandboxes" enforcing Pod Security "restricted"), and run
# the controller against it in the foreground, serving the API on
# http://127.0.0.1:8080 with an admin API key kept in .dev/api-key. Ctrl-C
# stops everything.
# The cluster's kubeconfig is in .dev-cluster/kubeconfig while it runs.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
scripts/install-deps.sh
scripts/build.sh build

# The API needs credentials (there is no default): make an admin API key for
# this checkout once, kept in .dev/ (git-ignored), and a config that uses it.
dev=$root/.dev
mkdir -p "$dev"
chmod 700 "$dev"
if [ ! -s "$dev/api-key" ]; then
	umask 077
	build/sandbox-controller keygen --tenant dev --scopes admin --id devadmin \
		> "$dev/api-key" 2> "$dev/keygen.txt"
	{ echo "keys:"; grep '^  - {' "$dev/keygen.txt"; } > "$dev/keys.yaml"
fi
# kwok's fake nodes run exec commands on THIS machine, as you, in the
# template's workspace path: point every workspace at a directory of .dev/
# (the real cluster mounts an emptyDir there instead)
mkdir -p "$dev/workspace"
{ sed -E "s#(path: )(/workspace|/home/sandbox)#\1$dev/workspace#" docs/sample-config.yaml
  echo; echo "auth: {api_keys_file: $dev/keys.yaml}"; } > "$dev/config.yaml"
echo "dev: API key in .dev/api-key; try:"
echo "  curl -s -H \"Authorization: Bearer \$(cat .dev/api-key)\" localhost:8080/v1/templates"

# docs/sample-config.yaml: three templates; the API on 127.0.0.1:8080
exec python3 tests/cluster/cluster.py run --dir "$root/.dev-cluster" -- \
	"$root/build/sandbox-controller" --config "$dev/config.yaml" \
	--listen 127.0.0.1 --log-format text "$@"
