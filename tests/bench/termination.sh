#!/usr/bin/env bash
# Benchmark (not a test): how fast the real release binary reacts to a termination notice and a
# system shutdown, and what `run` costs while idle. Report on stdout and in target/bench/termination.json.
#   BENCH_RUNS=10 BENCH_IDLE_SECONDS=60 bash tests/bench/termination.sh
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
bash "$root/tests/setup.sh"
cd "$root"
cargo build --release --locked
exec "${TFE_TEST_VENV:-$root/.venv}/bin/python" "$root/tests/bench/termination.py"
