#!/usr/bin/env bash
# Every configuration we ship must be one the daemon accepts: the sample in
# docs/ and the one embedded in manifests/20-config.yaml.
# Usage: check_configs.sh BINARY
set -euo pipefail
bin=$1
root=$(cd "$(dirname "$0")/.." && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# a key file for the configs that name one
"$bin" keygen --tenant ci --scopes sandboxes:read >/dev/null 2>"$tmp/entry"
{ echo "keys:"; grep '^  - {' "$tmp/entry"; } > "$tmp/keys.yaml"
python3 - "$root/manifests/20-config.yaml" "$tmp/manifest-config.yaml" <<'PY'
import sys, re
text = open(sys.argv[1]).read()
# the ConfigMap's data."config.yaml" block scalar: the indented lines after it
m = re.search(r"config\.yaml: \|\n((?:    .*\n|\n)+)", text)
block = "".join(l[4:] if l.startswith("    ") else l for l in m.group(1).splitlines(True))
open(sys.argv[2], "w").write(block)
PY
sed -i "s#/etc/sandbox-controller/keys/keys.yaml#$tmp/keys.yaml#" "$tmp/manifest-config.yaml"
"$bin" --check-config --config "$tmp/manifest-config.yaml"
{ cat "$root/docs/sample-config.yaml"; echo "auth: {api_keys_file: $tmp/keys.yaml}"; } > "$tmp/sample.yaml"
"$bin" --check-config --config "$tmp/sample.yaml"
# and without credentials the daemon refuses, saying why
if "$bin" --check-config --config "$root/docs/sample-config.yaml" 2>"$tmp/err"; then
	echo "FAIL: a configuration without credentials was accepted" >&2
	exit 1
fi
grep -q "no credentials are configured" "$tmp/err"
echo "configs: OK"
