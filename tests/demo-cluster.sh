#!/usr/bin/env bash
# The cluster demo: two nodes boot against one Redis, the cluster view, a repave to a new release
# (tfe-node-agent repave), the downtime report. Emulators, fake TFE tools and the real binary.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bash "$root/tests/setup.sh"
cd "$root"
cargo build --locked --quiet
exec "${TFE_TEST_VENV:-$root/.venv}/bin/python" "$root/tests/demo_cluster.py"
