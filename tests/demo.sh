#!/usr/bin/env bash
# The demo: emulators, fake TFE tools and the real binary, from boot to a released launch hook.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bash "$root/tests/setup.sh"
cd "$root"
cargo build --locked --quiet
exec "${TFE_TEST_VENV:-$root/.venv}/bin/python" "$root/tests/demo.py"
