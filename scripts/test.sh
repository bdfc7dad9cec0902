#!/usr/bin/env bash
# THE test command (README, CI): installs the test peers, builds every workspace binary (the
# end-to-end tests start them from target/debug), then runs every test of the workspace,
# doctests included. Quiet on success; failures print their output. Exits non-zero on failure.
set -euo pipefail
cd "$(dirname "$0")/.."
# The end-to-end tests look for binaries next to the test executables: use one target dir.
unset CARGO_TARGET_DIR

step() { printf '== %s\n' "$*" >&2; }

step "test dependencies"
bash scripts/install-test-deps.sh

step "cargo build --workspace --bins"
cargo build --workspace --bins --quiet

step "cargo test --workspace"
cargo test --workspace --quiet --no-fail-fast

step "all tests passed"
