#!/usr/bin/env bash
# Under attack (issue #12): one hostile host against real grapes and a real worker, at full
# speed with default settings, and what an honest client still gets. Prints the figures of
# docs/BENCHMARKS.md ("Under attack"); see host/examples/under_attack.rs for the scenarios.
#
#   ci/bench-attack.sh                      every scenario
#   ci/bench-attack.sh conn-flood sybil     some of them
#
# No thresholds: it prints numbers, it does not judge them (the hostile tests in
# `cargo test` assert the outcomes; this measures them at full speed).
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/grenache-rs/target}"
# The connection floods hold thousands of sockets at once, on both sides.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
cargo build --release -q -p grenache-host --bin grape --example fib_server --example under_attack
export GRAPE_BIN="$CARGO_TARGET_DIR/release/grape"
export WORKER_BIN="$CARGO_TARGET_DIR/release/examples/fib_server"
echo "commit $(git rev-parse --short HEAD)$(git diff --quiet || echo ' (modified)'), $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg)"
exec "$CARGO_TARGET_DIR/release/examples/under_attack" "$@"
