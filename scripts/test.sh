#!/usr/bin/env bash
# The whole test suite, as CI runs it (.ci/run calls this script):
#   1. install missing packages; build the test control plane's binaries
#      (cached in ~/.cache/sandbox-controller, minutes the first time)
#   2. build normally, with ASan+UBSan, and the libFuzzer targets (clang)
#   3. run every suite (unit, integration against a real etcd + kube-apiserver
#      + kwok) in the first two builds, and a short fuzz smoke run
# Extra arguments go to ctest, e.g. scripts/test.sh -L unit
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

scripts/install-deps.sh
start=$SECONDS
tests/cluster/build-binaries.sh >/dev/null
echo "test: control plane binaries ready in $((SECONDS - start))s"

scripts/build.sh build
scripts/build.sh build-asan -DSANDBOX_SANITIZE=ON
CC=clang scripts/build.sh build-fuzz -DSANDBOX_FUZZ=ON

export ASAN_OPTIONS=detect_leaks=1:abort_on_error=0:strict_string_checks=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
status=0
for b in build build-asan; do
	echo "=== ctest in $b"
	if ! (cd "$b" && ctest --output-on-failure --timeout 1800 "$@"); then
		status=1
	fi
	# the integration tests print the versions of the control plane they ran on
	grep -m1 -h '^control plane: ' "$b/Testing/Temporary/LastTest.log" 2>/dev/null || true
done
# fuzz targets: a bounded smoke run over the seed corpora (only with no filter)
if [ $# -eq 0 ]; then
	echo "=== ctest -L fuzz in build-fuzz"
	(cd build-fuzz && ctest --output-on-failure -L fuzz) || status=1
fi
exit $status
