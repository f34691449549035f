#!/usr/bin/env bash
# Benchmark (not a test): the demo's repave (two release-504 nodes -> two release-505 nodes) run
# BENCH_RUNS times: downtime vs the first new node's build, and the orchestrator's notice latency.
# Report on stdout and in target/bench/repave.json.
#   BENCH_RUNS=3 BENCH_POLL=2s bash tests/bench/repave.sh
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
bash "$root/tests/setup.sh"
cd "$root"
cargo build --locked --quiet
exec "${TFE_TEST_VENV:-$root/.venv}/bin/python" "$root/tests/bench/repave.py"
