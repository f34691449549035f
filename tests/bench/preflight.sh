#!/usr/bin/env bash
# Benchmark (not a test): `tfe-node-agent preflight` wall time against local peers, all passing and
# with Redis black-holed. Report on stdout and in target/bench/preflight.json.
#   BENCH_RUNS=10 bash tests/bench/preflight.sh
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
bash "$root/tests/setup.sh"
cd "$root"
cargo build --release --locked
exec "${TFE_TEST_VENV:-$root/.venv}/bin/python" "$root/tests/bench/preflight.py"
