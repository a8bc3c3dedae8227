#!/usr/bin/env bash
# One command from a fresh checkout to a running controller: install what is
# missing, build, start a local control plane (etcd + kube-apiserver + kwok
# nodes, namespace "sandboxes" enforcing Pod Security "restricted"), and run
# the controller against it in the foreground, serving the API on
# http://127.0.0.1:8080 (try: curl -s localhost:8080/v1/templates). Ctrl-C
# stops everything.
# The cluster's kubeconfig is in .dev-cluster/kubeconfig while it runs.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
scripts/install-deps.sh
scripts/build.sh build
# docs/sample-config.yaml: three templates; the API on 127.0.0.1:8080
exec python3 tests/cluster/cluster.py run --dir "$root/.dev-cluster" -- \
	"$root/build/sandbox-controller" --config "$root/docs/sample-config.yaml" \
	--listen 127.0.0.1 --log-format text "$@"
