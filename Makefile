# Shortcuts for developers (GNU make). The scripts they call are the source of truth: the README's
# two commands (`bash tests/demo.sh`, `bash tests/run.sh`) and CI (.ci/run) use them directly.
# docs/development/README.md describes each target.

root := $(patsubst %/,%,$(dir $(abspath $(lastword $(MAKEFILE_LIST)))))

.DEFAULT_GOAL := help
.PHONY: help setup check test e2e demo bench package

help: ## list the targets
	@echo "make TARGET, where TARGET is one of:"
	@awk 'BEGIN { FS = ":.*## " } /^[a-z0-9-]+:.*## / { printf "  %-8s %s\n", $$1, $$2 }' $(MAKEFILE_LIST)

setup: ## install what the tests and the demo need (tests/setup.sh; safe to run again)
	bash "$(root)/tests/setup.sh"

check: ## cargo fmt --check, clippy --all-targets -D warnings, cargo deny (tests/run.sh check)
	bash "$(root)/tests/run.sh" check

test: ## every test, the README's test command (tests/run.sh, setup included)
	bash "$(root)/tests/run.sh"

e2e: setup ## the end-to-end tiers only: systemd-nspawn and QEMU (needs root; minutes)
	cd "$(root)" && cargo test --locked --test e2e_nspawn --test e2e_qemu -- --include-ignored --nocapture

demo: ## the demo, boot to terminate hook (tests/demo.sh, setup included)
	bash "$(root)/tests/demo.sh"

bench: ## the termination and idle benchmark (tests/bench/termination.sh; BENCH_RUNS, BENCH_IDLE_SECONDS)
	bash "$(root)/tests/bench/termination.sh"

package: ## the .deb and the .rpm (packaging/build.sh; tools from make setup)
	bash "$(root)/packaging/build.sh"
