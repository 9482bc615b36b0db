#!/usr/bin/env bash
# Grape benchmark (issue #3, "Speed and memory"; issue #17, "Serve like nginx"): the Rust grape
# against nginx answering the same /lookup with a fixed body (the reference: Debian's nginx-light
# with ci/nginx-lookup.conf, `worker_processes auto`), the Node grape (grenache-grape 1.0.0 from
# tests/interop) and a naive fixed-body tokio server, in one run, on 127.0.0.1:
#
#   1. /lookup of one announced name: requests/s, p50, p99 (wrk, keep-alive). Each grape runs in
#      a pair with a second grape of its own kind, so a lookup is a real DHT traversal (get_peers
#      over UDP to the other grape) plus the HTTP round trip. The Rust grape runs twice: with its
#      default --lookup_reuse (100 ms: answers are reused that long) and with 0 (a traversal for
#      every request, or a share of a concurrent one of the same name).
#   2. RSS of each grape idle, then after NAMES distinct names were announced through it (and of
#      its peer, which stores them).
#
# Needs: wrk and nginx (Debian: `apt-get install -y wrk nginx-light`), python3, curl, node, and
# `npm ci --prefix tests/interop`. Fails loudly when one is missing.
#
#   ci/bench-grape.sh          defaults: 3 rounds of 10 s wrk -t1 runs at 4, 16 and 64
#                              connections, 10000 names
#   DURATION=5s ROUNDS=5 CONNECTIONS="16 64" NAMES=1000 ci/bench-grape.sh
#   TARGETS="nginx rust" ci/bench-grape.sh   only these servers (of nginx fixed rust rust0 node)
#   GRAPE_THREADS="0 1" ci/bench-grape.sh    also Rust grapes started with --threads 0 and 1
#   EXTRA_GRAPES="base=/path/to/grape" ci/bench-grape.sh   also another build of the grape,
#                                           a row labelled base (label=path, space-separated)
#   PIN=1 CONNECTIONS=8 ci/bench-grape.sh   measured servers on CPU 1 with one runtime thread,
#                                           wrk (-t1) and the peer grapes on CPU 0 (needs
#                                           taskset and 2 CPUs): the tail latency without the
#                                           servers and wrk preempting each other (the
#                                           Rust grape's loops all share CPU 1 then; add
#                                           GRAPE_THREADS=0 for a row on one thread)
#
# At each connection count, the wrk runs alternate between the servers, ROUNDS times, so that a
# change of machine load hits all of them alike; every round is printed, with the load average,
# then the medians with each server's ratio to nginx's.
#
# No thresholds: it prints numbers (a markdown table at the end), it does not judge them.
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/grenache-rs/target}"
DURATION="${DURATION:-10s}"
CONNECTIONS="${CONNECTIONS:-4 16 64}"
THREADS="${THREADS:-1}"
TARGETS="${TARGETS:-nginx fixed rust rust0 node}"
GRAPE_THREADS="${GRAPE_THREADS:-}"
EXTRA_GRAPES="${EXTRA_GRAPES:-}"
NAMES="${NAMES:-10000}"
ROUNDS="${ROUNDS:-3}"
BASE_PORT="${BASE_PORT:-47000}"
fail() { printf 'FAILED: %s\n' "$*" >&2; exit 1; }
command -v wrk >/dev/null || fail "wrk is not installed (Debian: apt-get install -y wrk)"
command -v python3 >/dev/null || fail "python3 is not installed"
command -v curl >/dev/null || fail "curl is not installed"
command -v node >/dev/null || fail "node is not installed"
NGINX="${NGINX:-$(command -v nginx || echo /usr/sbin/nginx)}"
[ -x "$NGINX" ] || fail "nginx is not installed (Debian: apt-get install -y nginx-light)"
PIN="${PIN:-0}"
# Prefixes of the measured servers and of everything else (wrk, the peer grapes).
server_cmd=()
other_cmd=()
if [ "$PIN" = 1 ]; then
    command -v taskset >/dev/null || fail "PIN=1 needs taskset (util-linux)"
    [ "$(nproc)" -ge 2 ] || fail "PIN=1 needs 2 CPUs"
    server_cmd=(env TOKIO_WORKER_THREADS=1 taskset -c 1)
    other_cmd=(taskset -c 0)
    THREADS=1
fi

NODE_GRAPE="$here/tests/interop/node_modules/.bin/grape"
[ -x "$NODE_GRAPE" ] || fail "$NODE_GRAPE is missing: run npm ci --prefix tests/interop"

cargo build --release -q -p grenache-host --bin grape --example fixed_http
RUST_GRAPE="$CARGO_TARGET_DIR/release/grape"
FIXED="$CARGO_TARGET_DIR/release/examples/fixed_http"

work=$(mktemp -d)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }
mib() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }

post() { # post <aph> <endpoint> <json data>
    curl -s --max-time 10 -X POST -H 'Content-Type: application/json' \
        -d "{\"data\":$3,\"rid\":\"bench\"}" "http://127.0.0.1:$1/$2"
}

wait_api() { # wait_api <aph>: at most 20 s
    for _ in $(seq 200); do
        if [ "$(post "$1" lookup '"probe"')" = "[]" ]; then return 0; fi
        sleep 0.1
    done
    fail "grape API on port $1 not answering after 20 s"
}

# start_pair <kind> <program> <offset> [flags of the measured grape…]: a measured grape and its
# peer, bootstrapped to each other.
start_pair() {
    local kind=$1 prog=$2 off=$3
    shift 3
    local dp1=$((BASE_PORT + off)) dp2=$((BASE_PORT + off + 1))
    local aph1=$((BASE_PORT + 100 + off)) aph2=$((BASE_PORT + 100 + off + 1))
    "${server_cmd[@]}" "$prog" --dp "$dp1" --aph "$aph1" --bn "127.0.0.1:$dp2" --dpa 600000 "$@" \
        2>>"$work/$kind.log" &
    pids+=($!); eval "${kind}_pid=$!"; eval "${kind}_aph=$aph1"
    "${other_cmd[@]}" "$prog" --dp "$dp2" --aph "$aph2" --bn "127.0.0.1:$dp1" --dpa 600000 2>>"$work/$kind.log" &
    pids+=($!); eval "${kind}_peer_pid=$!"
    wait_api "$aph1"
    wait_api "$aph2"
    # The first announce may race the bootstrap: retry for up to 10 s.
    for _ in $(seq 50); do
        case "$(post "$aph1" announce '["bench_svc",1337]')" in
            [0-9]*) return 0 ;;
        esac
        sleep 0.2
    done
    fail "$kind grape pair does not connect"
}

# The memory rows need the default Rust grape and the Node grape.
start_pair rust "$RUST_GRAPE" 0
start_pair node "$NODE_GRAPE" 10
case " $TARGETS " in *" rust0 "*)
    # Without reusing answers: every request a traversal (or a share of a concurrent one).
    start_pair rust0 "$RUST_GRAPE" 20 --lookup_reuse 0 ;;
esac
off=30
for n in $GRAPE_THREADS; do
    start_pair "rust_t$n" "$RUST_GRAPE" "$off" --threads "$n"
    TARGETS="$TARGETS rust_t$n"
    off=$((off + 2))
done
# Other builds of the grape, each a row of its own in the same alternating run (e.g. a build
# without a feature, to measure what the feature costs).
for extra in $EXTRA_GRAPES; do
    label=${extra%%=*}
    [[ "$label" =~ ^[a-z][a-z0-9_]*$ ]] || fail "EXTRA_GRAPES: '$label' is not a label (a-z, 0-9, _)"
    [ -x "${extra#*=}" ] || fail "EXTRA_GRAPES: ${extra#*=} is not an executable"
    start_pair "$label" "${extra#*=}" "$off"
    TARGETS="$TARGETS $label"
    off=$((off + 2))
done
case " $TARGETS " in *" fixed "*)
    "${server_cmd[@]}" "$FIXED" "$((BASE_PORT + 199))" 2>/dev/null &
    pids+=($!) ;;
esac
case " $TARGETS " in *" nginx "*)
    mkdir -p "$work/nginx"
    sed "s/__PORT__/$((BASE_PORT + 198))/" ci/nginx-lookup.conf >"$work/nginx/nginx.conf"
    "${server_cmd[@]}" "$NGINX" -p "$work/nginx/" -c "$work/nginx/nginx.conf" &
    pids+=($!) ;;
esac
sleep 0.5

cat >"$work/lookup.lua" <<'EOF'
wrk.method = "POST"
wrk.body = '{"data":"bench_svc","rid":"bench"}'
wrk.headers["Content-Type"] = "application/json"
done = function(summary, latency, requests)
  local errors = summary.errors.connect + summary.errors.read + summary.errors.write
    + summary.errors.status + summary.errors.timeout
  io.write(string.format("RESULT %.0f %.3f %.3f %d %d\n",
    summary.requests / (summary.duration / 1e6),
    latency:percentile(50) / 1000, latency:percentile(99) / 1000,
    summary.requests, errors))
end
EOF

declare -A rps p50 p99 reqs errs load
for conns in $CONNECTIONS; do
for round in $(seq "$ROUNDS"); do
  for target in $TARGETS; do
    case $target in
        nginx) port=$((BASE_PORT + 198)) ;;
        fixed) port=$((BASE_PORT + 199)) ;;
        *) aph_var="${target}_aph"; port=${!aph_var} ;;
    esac
    # Every target must give the same answer.
    answer=$(post "$port" lookup '"bench_svc"')
    [ "$answer" = '["127.0.0.1:1337"]' ] || fail "$target answers $answer to the lookup"
    key="$target.$conns.$round"
    load[$key]=$(cut -d' ' -f1 /proc/loadavg)
    "${other_cmd[@]}" wrk -t "$THREADS" -c "$conns" -d "$DURATION" -s "$work/lookup.lua" \
        "http://127.0.0.1:$port/lookup" >"$work/wrk-$key.txt"
    read -r _ rps[$key] p50[$key] p99[$key] reqs[$key] errs[$key] \
        < <(grep '^RESULT' "$work/wrk-$key.txt")
  done
done
done

# Memory: idle, then after NAMES announces through the measured grape (4 keep-alive clients).
declare -A rss_idle rss_full peer_idle peer_full took failed
for kind in rust node; do
    pid_var="${kind}_pid"; peer_var="${kind}_peer_pid"; aph_var="${kind}_aph"
    rss_idle[$kind]=$(rss_kib "${!pid_var}")
    peer_idle[$kind]=$(rss_kib "${!peer_var}")
    read -r took[$kind] failed[$kind] < <(python3 - "${!aph_var}" "$NAMES" <<'EOF'
import http.client, json, sys, threading, time
port, names = int(sys.argv[1]), int(sys.argv[2])
failed = [0]
def run(k):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    for i in range(k, names, 4):
        body = json.dumps({"data": ["bench_name_%d" % i, 2000 + i % 50000], "rid": "b"})
        c.request("POST", "/announce", body, {"Content-Type": "application/json"})
        r = c.getresponse(); text = r.read()
        if r.status != 200 or not text[:1].isdigit():
            failed[0] += 1
started = time.time()
threads = [threading.Thread(target=run, args=(k,)) for k in range(4)]
for t in threads: t.start()
for t in threads: t.join()
print("%.1f %d" % (time.time() - started, failed[0]))
EOF
)
    rss_full[$kind]=$(rss_kib "${!pid_var}")
    peer_full[$kind]=$(rss_kib "${!peer_var}")
    # Spot check: the last name is found through the measured grape.
    last=$(post "${!aph_var}" lookup "\"bench_name_$((NAMES - 1))\"")
    [ "$last" != "[]" ] || fail "$kind: bench_name_$((NAMES - 1)) not found after the announces"
done

echo
pinned=""
[ "$PIN" = 1 ] && pinned=", PIN=1: servers on CPU 1 with one thread, wrk and peers on CPU 0"
echo "## Grape benchmark ($(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, wrk -t$THREADS -d$DURATION$pinned)"
echo
label() {
    case $1 in
        nginx) echo "nginx $("$NGINX" -v 2>&1 | sed 's|.*/||'), fixed body (reference)" ;;
        fixed) echo "fixed-body tokio server" ;;
        rust) echo "Rust grape (release, defaults)" ;;
        rust0) echo "Rust grape, --lookup_reuse 0" ;;
        rust_t*) echo "Rust grape, --threads ${1#rust_t}" ;;
        node) echo "Node grape 1.0.0 ($(node --version))" ;;
        *) echo "Rust grape, $1 (EXTRA_GRAPES)" ;;
    esac
}
summary=$(mktemp -p "$work")
echo "| /lookup of one announced name | connections | round | requests/s | p50 ms | p99 ms | requests | errors | load avg |"
echo "|---|---|---|---|---|---|---|---|---|"
for conns in $CONNECTIONS; do
    for target in $TARGETS; do
        for round in $(seq "$ROUNDS"); do
            key="$target.$conns.$round"
            echo "| $(label "$target") | $conns | $round | ${rps[$key]} | ${p50[$key]} | ${p99[$key]} | ${reqs[$key]} | ${errs[$key]} | ${load[$key]} |"
            echo "$conns|$target|$(label "$target")|${rps[$key]}|${p99[$key]}" >>"$summary"
        done
    done
done
echo
echo "Medians over the rounds (ratios to nginx at the same connection count):"
echo
python3 - "$summary" <<'EOF'
import statistics, sys
rows = {}
order = []
for line in open(sys.argv[1]):
    conns, target, label, rps, p99 = line.rstrip("\n").split("|")
    key = (int(conns), target)
    if key not in rows:
        order.append(key)
        rows[key] = (label, [], [])
    rows[key][1].append(float(rps))
    rows[key][2].append(float(p99))
print("| server | connections | median req/s | median p99 ms | req/s vs nginx | p99 vs nginx |")
print("|---|---:|---:|---:|---:|---:|")
for conns, target in order:
    label, rps, p99 = rows[(conns, target)]
    r, p = statistics.median(rps), statistics.median(p99)
    ref = rows.get((conns, "nginx"))
    if ref:
        vs = "%.2fx | %.2fx" % (r / statistics.median(ref[1]), p / statistics.median(ref[2]))
    else:
        vs = "- | -"
    print("| %s | %d | %.0f | %.3f | %s |" % (label, conns, r, p, vs))
EOF
echo
echo "| memory (VmRSS) | idle | after $NAMES announces | its peer idle | peer after | announce time | failed |"
echo "|---|---|---|---|---|---|---|"
for kind in rust node; do
    echo "| $kind grape | $(mib "${rss_idle[$kind]}") MiB | $(mib "${rss_full[$kind]}") MiB |" \
        "$(mib "${peer_idle[$kind]}") MiB | $(mib "${peer_full[$kind]}") MiB | ${took[$kind]} s | ${failed[$kind]} |"
done
