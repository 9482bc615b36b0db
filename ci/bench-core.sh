#!/usr/bin/env bash
# The core's criterion benchmarks, with the settings docs/BENCHMARKS.md records.
# Prints one line per benchmark: name and criterion's [low mid high] time estimate.
#   ci/bench-core.sh               all benches
#   ci/bench-core.sh krpc http     some of them
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/grenache-rs/target}"
benches=("$@")
[ ${#benches[@]} -gt 0 ] || benches=(krpc table http ws frame store)
echo "machine: $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg), $(rustc --version)"
for b in "${benches[@]}"; do
    cargo bench -q -p grenache-core --bench "$b" -- --warm-up-time 1 --measurement-time 3 2>/dev/null \
        | awk '/change:/ { next } /time:/ { if ($1 == "time:") print prev, $0; else print $0; next } { prev = $0 }' \
        | sed -E 's/ +/ /g'
done
