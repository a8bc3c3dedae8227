#!/usr/bin/env bash
# One command from a fresh checkout to a running controller: install what is
# missing, build, start a local control plane (etcd + kube-apiserver + kwok
# nodes, namespace "sandboxes" enforcing Pod Security "restricted"), and run
# the controller against it in the foreground. Ctrl-C stops everything.
# The cluster's kubeconfig is in .dev-cluster/kubeconfig while it runs.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
scripts/install-deps.sh
scripts/build.sh build
exec python3 tests/cluster/cluster.py run --dir "$root/.dev-cluster" -- \
	"$root/build/sandbox-controller" --log-format text "$@"
