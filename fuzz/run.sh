#!/usr/bin/env bash
# Coverage-guided fuzzing of the agent's parsers with AFL++ through cargo-afl (stable toolchain).
#   bash fuzz/run.sh [SECONDS] [TARGET...]
# Fuzzes each target (default: all five) for SECONDS (default 60) one after the other, prints the
# executions and findings of each, and exits 1 when any target found a crash (a panic, which
# includes a broken invariant such as a secret value in an output). Findings stay in fuzz/out/
# (crashes in fuzz/out/TARGET/default/crashes/); a second run resumes from there.
# Needs cargo-afl: `cargo install --locked cargo-afl` (it builds its own AFL++ on install).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
seconds="${1:-60}"
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(shared_secret system_status app_status health_check agent_config)
export CARGO_TARGET_DIR="${FUZZ_TARGET_DIR:-$here/target}"
cd "$here"

echo "== cargo afl build --release (instrumented)"
cargo afl build --release --locked

# In containers and CI: no CPU frequency governor to check, core dumps may be piped elsewhere,
# and other jobs may hold the cores AFL would bind to.
export AFL_SKIP_CPUFREQ=1 AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES=1 AFL_NO_AFFINITY=1
export AFL_NO_UI=1 AFL_AUTORESUME=1 AFL_QUIET=1
found=0
for t in "${targets[@]}"; do
  seeds="$here/out/seeds/$t"
  mkdir -p "$seeds" "$here/out/$t"
  cp "$here/seeds/$t/"* "$seeds/" 2>/dev/null || true
  # The documented example is the best agent.toml seed; copied, so it never drifts.
  [ "$t" != agent_config ] || cp "$here/../packaging/agent.toml.example" "$seeds/example.toml"
  echo "== $t: ${seconds}s"
  cargo afl fuzz -V "$seconds" -i "$seeds" -o "$here/out/$t" "$CARGO_TARGET_DIR/release/$t" \
    > "$here/out/$t.log" 2>&1 || { echo "afl-fuzz failed, see fuzz/out/$t.log"; tail -20 "$here/out/$t.log"; exit 2; }
  stats="$here/out/$t/default/fuzzer_stats"
  stat() { sed -n "s/^$1 *: //p" "$stats"; }
  crashes=$(find "$here/out/$t/default/crashes" -type f -name 'id:*' 2>/dev/null | wc -l)
  echo "$t: $(stat execs_done) executions ($(stat execs_per_sec)/s), corpus $(stat corpus_count), crashes $crashes, hangs $(stat saved_hangs)"
  [ "$crashes" -eq 0 ] || { found=1; ls "$here/out/$t/default/crashes"; }
done
exit "$found"
