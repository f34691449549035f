#!/usr/bin/env bash
# Builds the .deb (cargo-deb) and the .rpm (cargo-generate-rpm) from one release build and prints
# their paths. Outputs: target/debian/*.deb and target/generate-rpm/*.rpm. The package metadata
# lives in Cargo.toml ([package.metadata.deb], [package.metadata.generate-rpm]); the maintainer
# scripts in packaging/deb/ and packaging/rpm/. Tools: tests/setup.sh installs them.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

for sub in deb generate-rpm; do
  if ! cargo "$sub" --version >/dev/null 2>&1; then
    echo "build.sh: cargo $sub is missing; run tests/setup.sh (cargo install cargo-deb cargo-generate-rpm --locked)" >&2
    exit 1
  fi
done

cargo build --release --locked
# The release profile strips every symbol (Cargo.toml); both tools package target/release/tfe-node-agent.
deb_dir="$root/target/debian"
rpm_dir="$root/target/generate-rpm"
rm -f "$deb_dir"/tfe-node-agent_*.deb "$rpm_dir"/tfe-node-agent-*.rpm
# cargo deb prints the package's path (relative to the repo) as its last line.
deb=$(cargo deb --no-build --locked --output "$deb_dir/" | tail -n 1)
# Default output: target/generate-rpm/ (its --output takes a file name, not a directory).
cargo generate-rpm >&2
rpm=$(ls -1 "$rpm_dir"/tfe-node-agent-*.rpm)
# The two paths, absolute, as the last two lines of stdout (tests/package.rs reads them).
realpath "$deb"
realpath "$rpm"
