#!/usr/bin/env bash
# Configure and build. Usage: build.sh [DIR [cmake options...]]
# DIR defaults to build/. Example: scripts/build.sh build-asan -DSANDBOX_SANITIZE=ON
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
dir=${1:-build}
shift || true
case "$dir" in /*) ;; *) dir=$root/$dir ;; esac
cmake -S "$root" -B "$dir" -G Ninja "$@" >/dev/null
ninja -C "$dir"
