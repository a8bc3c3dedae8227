#!/usr/bin/env bash
# HTTP server baseline: api/http_server with a trivial handler (a ~300-byte
# JSON object per GET), driven by wrk with keep-alive on the same machine.
# Usage: tests/bench/bench_http.sh [BUILD_DIR [seconds [connections [wrk threads]]]]
# Builds BUILD_DIR (default build/) if needed, compiles tests/bench/bench_http.c
# against its libraries, and runs it. Prints figures; never fails on them.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
build=${1:-$root/build}
case "$build" in /*) ;; *) build=$root/$build ;; esac
secs=${2:-10}
conns=${3:-32}
threads=${4:-2}

command -v wrk >/dev/null || { echo "wrk is missing: apt-get install -y wrk" >&2; exit 1; }
[ -f "$build/libsbx_api.a" ] || "$root/scripts/build.sh" "$build"

bin=$build/bench_http
if [ ! -x "$bin" ] || [ "$root/tests/bench/bench_http.c" -nt "$bin" ] ||
   [ "$build/libsbx_api.a" -nt "$bin" ]; then
  # shellcheck disable=SC2046
  ${CC:-cc} -std=c17 -O2 -g -Wall -Wextra -Werror -D_GNU_SOURCE \
    -I"$root/api" -I"$root/controller" -I"$build/generated" \
    "$root/tests/bench/bench_http.c" -o "$bin" \
    "$build/libsbx_api.a" "$build/libsbx_controller.a" "$build/libsbx_core.a" \
    $(pkg-config --cflags --libs libwebsockets libcjson libcurl yaml-0.1 openssl) -lpthread
fi

echo "# $(date -u +%Y-%m-%dT%H:%M:%SZ) $(nproc) CPUs, $(uname -r), $(wrk --version 2>&1 | head -1)"
echo "# wrk -t$threads -c$conns -d${secs}s --latency (after a 2 s warm-up)"
exec "$bin" "$secs" "$conns" "$threads"
