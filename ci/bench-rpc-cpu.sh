#!/usr/bin/env bash
# CPU time per RPC request (issue #4's benchmark, explained): the user and system CPU time the
# client and the worker processes spend per echo request, for the Rust pair and for the bare
# echo (no Grenache framing), over WebSocket and HTTP, with ci/bench-rpc.sh's load (100-byte
# payload, 64 requests in flight). Throughput on 2 shared cores is noisy; CPU time per request
# is what a change to the code moves, so this is the figure to compare before and after one.
#
#   ci/bench-rpc-cpu.sh                       COUNT=50000 requests per run, ROUNDS=2, ws and http
#   COUNT=100000 ROUNDS=3 TRANSPORTS=http ci/bench-rpc-cpu.sh
#
# The worker finds itself through two Rust grapes (the client's lookup is cached after the
# warm-up, so the grapes are idle while measuring). CPU times come from /proc/<pid>/stat
# (utime, stime: clock ticks, so the resolution is 1e6 / (CLK_TCK * COUNT) µs per request).
# Prints one line per run; no thresholds. Needs node (for free ports, ci/lib/ports.sh).
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/grenache-rs/target}"
COUNT="${COUNT:-50000}"
ROUNDS="${ROUNDS:-2}"
TRANSPORTS="${TRANSPORTS:-ws http}"

fail() { printf 'FAILED: %s\n' "$*" >&2; exit 1; }
command -v python3 >/dev/null || fail "python3 is not installed"
command -v curl >/dev/null || fail "curl is not installed"

cargo build --release -q -p grenache-tokio --example bench_rpc
cargo build --release -q -p grenache-host --bin grape
bench="$CARGO_TARGET_DIR/release/examples/bench_rpc"
grape="$CARGO_TARGET_DIR/release/grape"

pids=()
work=$(mktemp -d)
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

. "$here/ci/lib/ports.sh"

# Two grapes and a bare echo server per transport.
read -r dp1 dp2 aph1 aph2 bare_ws bare_http <<<"$(free_ports 6)"
"$grape" --dp "$dp1" --aph "$aph1" --bn "127.0.0.1:$dp2" 2>/dev/null & pids+=($!)
"$grape" --dp "$dp2" --aph "$aph2" --bn "127.0.0.1:$dp1" 2>/dev/null & pids+=($!)

tick=$(getconf CLK_TCK)
# µs per request of a tick count.
per_request() { awk -v t="$1" -v hz="$tick" -v n="$COUNT" 'BEGIN { printf "%.1f", t * 1e6 / hz / n }'; }
cpu_ticks() { awk '{print $14, $15}' "/proc/$1/stat" 2>/dev/null; }

# measure <label> <transport> <server pid> <client command...>: runs the client, sampling its
# CPU time until it exits (its last sample is at most 20 ms old), and the server's around it.
measure() {
    local label=$1 transport=$2 server=$3
    shift 3
    local su0 ss0 su1 ss1 cu=0 cs=0 sample
    read -r su0 ss0 < <(cpu_ticks "$server")
    "$@" >"$work/out.json" &
    local client=$!
    while kill -0 "$client" 2>/dev/null; do
        if sample=$(cpu_ticks "$client") && [ -n "$sample" ]; then read -r cu cs <<<"$sample"; fi
        sleep 0.02
    done
    wait "$client" || fail "$label client over $transport failed"
    read -r su1 ss1 < <(cpu_ticks "$server")
    local rps
    rps=$(grep -o '"req_per_s":[0-9.]*' "$work/out.json" | cut -d: -f2)
    printf '%-4s %-28s %9s req/s | client user %5s sys %5s | worker user %5s sys %5s | total %5s µs/request\n' \
        "$transport" "$label" "$rps" "$(per_request "$cu")" "$(per_request "$cs")" \
        "$(per_request $((su1 - su0)))" "$(per_request $((ss1 - ss0)))" \
        "$(per_request $((cu + cs + su1 - su0 + ss1 - ss0)))"
}

for t in $TRANSPORTS; do
    name="cpu_bench_$t"
    "$bench" worker "$t" "http://127.0.0.1:$aph1" "$name" & worker=$!; pids+=($worker)
    bare_var="bare_$t"; bare=${!bare_var}
    "$bench" bare-server "$t" "$bare" & server=$!; pids+=($server)
    visible=no
    for _ in $(seq 200); do
        if curl -s -X POST -d "{\"data\":\"$name\"}" "http://127.0.0.1:$aph2/lookup" | grep -q ':'; then
            visible=yes; break
        fi
        sleep 0.1
    done
    [ "$visible" = yes ] || fail "$name not visible through the second grape after 20 s"
    for _ in $(seq "$ROUNDS"); do
        measure "rust client -> rust worker" "$t" "$worker" \
            "$bench" client "$t" "http://127.0.0.1:$aph2" "$name" "$COUNT"
        measure "bare echo (no Grenache)" "$t" "$server" \
            "$bench" bare-client "$t" "127.0.0.1:$bare" "$COUNT"
    done
done
