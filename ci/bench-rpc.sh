#!/usr/bin/env bash
# The RPC benchmark of issue #4: echo of a 100-byte JSON payload, 64 requests in flight, over
# WebSocket and HTTP, for
#   Node client -> Node worker, Node client -> Rust worker, Rust client -> Rust worker,
#   Rust client -> Node worker, and a bare echo over the same transport (no Grenache framing,
#   Rust on both sides).
# Clients find workers through two real Node grapes (lookups are cached by both Links).
# Prints one JSON line per run. Needs node and `npm ci --prefix tests/interop`.
#
# Pairs that are compared run alternately ROUNDS times, so that a change of machine load hits
# both alike: Node client -> Node worker with Node client -> Rust worker, and the Rust pair
# with the bare echo (these get RUST_COUNT requests: at COUNT they finish in a fraction of a
# second).
#
# Node client rows also give the client's CPU time per request (user + system, from
# process.cpuUsage), which swings less than throughput on a shared machine.
#
#   ci/bench-rpc.sh                 COUNT=20000, RUST_COUNT=100000, ROUNDS=3
#   COUNT=50000 ROUNDS=5 ci/bench-rpc.sh
#   PIN=1 ci/bench-rpc.sh           workers and grapes on CPU 1 (Rust ones with one runtime
#                                   thread, as Node's), clients on CPU 0 (needs taskset, 2 CPUs):
#                                   the scheduler no longer moves a worker onto its client's CPU
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/grenache-rs/target}"
COUNT="${COUNT:-20000}"
RUST_COUNT="${RUST_COUNT:-$((COUNT * 5))}"
ROUNDS="${ROUNDS:-3}"
PIN="${PIN:-0}"
interop="$here/tests/interop"
[ -d "$interop/node_modules/grenache-nodejs-ws" ] || { echo "run: npm ci --prefix tests/interop" >&2; exit 1; }

# Prefixes of the servers (workers, grapes) and of the clients.
server_cmd=()
client_cmd=()
if [ "$PIN" = 1 ]; then
  command -v taskset >/dev/null || { echo "PIN=1 needs taskset (util-linux)" >&2; exit 1; }
  [ "$(nproc)" -ge 2 ] || { echo "PIN=1 needs 2 CPUs" >&2; exit 1; }
  server_cmd=(env TOKIO_WORKER_THREADS=1 taskset -c 1)
  client_cmd=(env TOKIO_WORKER_THREADS=1 taskset -c 0)
fi

cargo build --release -q -p grenache-tokio --example bench_rpc
bench="$CARGO_TARGET_DIR/release/examples/bench_rpc"

pids=()
results=$(mktemp)
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -f "$results"
}
trap cleanup EXIT

. "$here/ci/lib/ports.sh"

# Two grapes, and per transport a Node worker and a bare echo server.
read -r dp1 dp2 aph1 aph2 port_ws bare_ws port_http bare_http <<<"$(free_ports 8)"
grape="$interop/node_modules/grenache-grape/bin/grape.js"
"${server_cmd[@]}" node "$grape" --dp "$dp1" --aph "$aph1" --bn "127.0.0.1:$dp2" >/dev/null 2>&1 & pids+=($!)
"${server_cmd[@]}" node "$grape" --dp "$dp2" --aph "$aph2" --bn "127.0.0.1:$dp1" >/dev/null 2>&1 & pids+=($!)
GA="http://127.0.0.1:$aph1"; GB="http://127.0.0.1:$aph2"
# The workers start once both grapes answer.
for g in "$GA" "$GB"; do
  for _ in $(seq 1 200); do
    curl -s -X POST -d '{"rid":"w","data":"probe"}' "$g/lookup" 2>/dev/null | grep -q '^\[' && break
    sleep 0.1
  done
done

# Waits until `name` is visible through grape B.
wait_visible() {
  for _ in $(seq 1 200); do
    if curl -s -X POST -H 'content-type: application/json' -d "{\"rid\":\"b\",\"data\":\"$1\"}" "$GB/lookup" 2>/dev/null | grep -q ':'; then
      return 0
    fi
    sleep 0.1
  done
  echo "$1 not visible after 20 s" >&2; exit 1
}

for t in ws http; do
  port_var="port_$t"; port=${!port_var}
  (cd "$interop" && GRAPE=$GA TRANSPORT=$t NAME="bench_node_$t" PORT=$port exec "${server_cmd[@]}" node bench_worker.js) & pids+=($!)
  "${server_cmd[@]}" "$bench" worker "$t" "$GA" "bench_rust_$t" & pids+=($!)
  bare_var="bare_$t"; bare=${!bare_var}
  "${server_cmd[@]}" "$bench" bare-server "$t" "$bare" & pids+=($!)
  wait_visible "bench_node_$t"
  wait_visible "bench_rust_$t"
  node_client() { (cd "$interop" && GRAPE=$GB TRANSPORT=$t NAME="$1" COUNT=$COUNT "${client_cmd[@]}" node bench_client.js) | sed "s/\"setup\":\"node client -> worker\"/\"setup\":\"node client -> $2 worker\"/"; }
  rust_client() { "${client_cmd[@]}" "$bench" client "$t" "$GB" "$1" "$3" | sed "s/\"setup\":\"rust client -> worker\"/\"setup\":\"rust client -> $2 worker\"/"; }
  for _ in $(seq "$ROUNDS"); do
    node_client "bench_node_$t" node | tee -a "$results"
    node_client "bench_rust_$t" rust | tee -a "$results"
  done
  for _ in $(seq "$ROUNDS"); do
    rust_client "bench_rust_$t" rust "$RUST_COUNT" | tee -a "$results"
    "${client_cmd[@]}" "$bench" bare-client "$t" "127.0.0.1:$bare" "$RUST_COUNT" | tee -a "$results"
  done
  rust_client "bench_node_$t" node "$COUNT" | tee -a "$results"
done

# Medians over the rounds, and the ratios issue #4 states its goals in.
python3 - "$results" <<'EOF'
import json, statistics, sys
runs = {}
for line in open(sys.argv[1]):
    line = line.strip()
    if line.startswith("{"):
        r = json.loads(line)
        runs.setdefault((r["transport"], r["setup"]), []).append(r)
print("\n| transport | setup | runs | median req/s | median p50 ms | median p99 ms | median client CPU µs/req |")
print("|---|---|---:|---:|---:|---:|---:|")
med = {}
for (t, setup), rs in sorted(runs.items()):
    m = statistics.median(r["req_per_s"] for r in rs)
    med[(t, setup)] = m
    cpu = [r["cpu_us_per_req"] for r in rs if "cpu_us_per_req" in r]
    print("| %s | %s | %d | %.0f | %.2f | %.2f | %s |" % (t, setup, len(rs), m,
          statistics.median(r["p50_ms"] for r in rs), statistics.median(r["p99_ms"] for r in rs),
          "%.1f" % statistics.median(cpu) if cpu else "-"))
print()
for t in ("ws", "http"):
    pair = med.get((t, "rust client -> rust worker"))
    node = med.get((t, "node client -> node worker"))
    bare = med.get((t, "bare echo (no Grenache framing)"))
    n2r = med.get((t, "node client -> rust worker"))
    if pair and node and bare and n2r:
        print("%s: Rust pair = %.1fx the Node pair, %.0f %% of the bare echo; Node client against"
              " the Rust worker = %.2fx against the Node worker" % (t, pair / node, 100 * pair / bare, n2r / node))
EOF
