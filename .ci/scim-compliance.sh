#!/usr/bin/env bash
# Runs the public SCIM compliance checker (scim2-tester, pinned) against the SCIM
# endpoint that `muster up` serves for its demo directory.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
work=$(mktemp -d)
venv="$work/venv"
if ! python3 -m venv "$venv" 2>/dev/null; then
  # Debian's python3 keeps venv in a package of its own.
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv
  python3 -m venv "$venv"
fi
"$venv/bin/pip" install -q -r .ci/scim-compliance-requirements.txt

cargo build -p muster --locked -q
cd "$work"
# Ports away from the defaults (a developer's own `muster up`) and below the
# ephemeral range (32768+), where a busy machine's client sockets would collide.
"${CARGO_TARGET_DIR:-$root/target}/debug/muster" up --data-dir "$work/data" \
  --policy-addr 127.0.0.1:27051 --membership-addr 127.0.0.1:27052 --directory-addr 127.0.0.1:27053 \
  --scim-addr 127.0.0.1:27080 --metrics-addr "" > "$work/up.log" 2>&1 &
up=$!
trap 'kill $up 2>/dev/null || true; wait $up 2>/dev/null || true; rm -rf "$work"' EXIT
for _ in $(seq 1 120); do
  grep -q 'SCIM base URL' "$work/up.log" && break
  kill -0 $up 2>/dev/null || { cat "$work/up.log"; exit 1; }
  sleep 0.5
done
base=$(grep 'SCIM base URL' "$work/up.log" | awk '{print $4}')
[ -n "$base" ] || { echo "muster up printed no SCIM base URL"; cat "$work/up.log"; exit 1; }
"$venv/bin/python" "$root/.ci/scim_compliance.py" "$base" "$(cat "$work/data/scim-token")"
