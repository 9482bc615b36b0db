# Shared parts of the QEMU board scripts (ci/qemu-test.sh, ci/qemu-riscv-test.sh): sourced, not
# run, after ci/lib/firmware.sh (step, fail). Each script builds its own firmware and says how
# to boot it; this file holds what the boards share: the QEMU and Node set-up, the free ports,
# the host's grape and fib_client, and one boot of a board between two grapes with the clients,
# the UDP control port and the semihosting exit.
#
#   here=$(cd "$(dirname "$0")/.." && pwd)
#   . "$here/ci/lib/firmware.sh"
#   . "$here/ci/lib/qemu-board.sh"
#   need_qemu qemu-system-arm qemu-system-arm mps2-an386
#   board_host_setup
#   board_firmware_build firmware/qemu-mps2 thumbv7em-none-eabihf grenache-qemu-mps2
#   ... print its sizes ...
#   board_title="mps2-an386 with a LAN9118"
#   board_qemu() { qemu_cmd=(qemu-system-arm ... -nic "$1,model=lan9118" -kernel "$elf"); }
#   run_boards "qemu firmware"
#
# Settings read: QEMU_NETS (networks: user and/or tap; the script sets its default),
# QEMU_NODE_GRAPES (1, the default: one more boot with Node grapes on the last network),
# QEMU_TIMEOUT (seconds a boot may last, default 120), RATE_REQUESTS (default 100),
# CARGO_TARGET_DIR (host build cache, as ci/test.sh; sets host_target) and FIRMWARE_TARGET_DIR
# (firmware build cache; sets fw_target).

# free_ports
. "$here/ci/lib/ports.sh"

QEMU_TIMEOUT="${QEMU_TIMEOUT:-120}"
RATE_REQUESTS="${RATE_REQUESTS:-100}"
host_target="${CARGO_TARGET_DIR:-$HOME/.cache/grenache-rs/target}"
# The firmware has its own rustflags (linker script): a target dir of its own avoids rebuilding
# the host workspace's dependencies back and forth.
fw_target="${FIRMWARE_TARGET_DIR:-$HOME/.cache/grenache-rs/target-firmware}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

# need_qemu BINARY PACKAGE MACHINE
# Installs Debian's PACKAGE with apt-get when BINARY is missing, prints its version and checks
# that it has the MACHINE model.
need_qemu() {
    local bin=$1 pkg=$2 machine=$3
    step "$bin"
    if ! command -v "$bin" >/dev/null 2>&1; then
        echo "installing Debian's $pkg (apt-get install -y $pkg)"
        { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$pkg" >/dev/null; } \
            || fail "cannot install $pkg with apt-get (needs root and Debian's package mirror)"
    fi
    "$bin" --version | head -n 1
    "$bin" -M help | grep -q "^$machine " || fail "this QEMU has no $machine machine"
}

# need_node_packages: node, and the pinned Node packages of tests/interop (npm ci if missing).
need_node_packages() {
    command -v node >/dev/null 2>&1 || fail "node is not installed: the host side uses Node (tests/qemu, tests/interop)"
    [ -d "$here/tests/interop/node_modules/grenache-nodejs-ws" ] || {
        echo "installing the pinned Node packages (tests/interop: npm ci)"
        (cd "$here/tests/interop" && npm ci --no-audit --no-fund --loglevel=error) \
            || fail "npm ci in tests/interop failed (the npm registry must be reachable)"
    }
}

# board_ports: sets dp_a api_a dp_b api_b worker_port ctl_port: grape A (DHT, API), grape B
# (DHT, API), the worker (TCP, forwarded to the board), the control port (UDP, forwarded to
# the board's port 7).
board_ports() {
    read -r dp_a api_a dp_b api_b worker_port ctl_port <<<"$(free_ports 6)" \
        || fail "cannot find free ports on 127.0.0.1"
    [ -n "${ctl_port:-}" ] || fail "cannot find free ports on 127.0.0.1"
    echo "ports: grape A dht $dp_a api $api_a, grape B dht $dp_b api $api_b, worker $worker_port, control $ctl_port"
}

# build_host_tools TARGET_DIR: builds the host's grape and the fib_client example there; sets
# `grape` and `fib_client`.
build_host_tools() {
    step "host binaries: grape and the fib_client example"
    (cd "$here" && CARGO_TARGET_DIR="$1" cargo build --locked -p grenache-host --bin grape --example fib_client) \
        || fail "cannot build the host's grape and fib_client"
    grape="$1/debug/grape"
    fib_client="$1/debug/examples/fib_client"
}

# board_host_setup: Node and its packages, the free ports, the host's grape and fib_client.
board_host_setup() {
    need_node_packages
    board_ports
    build_host_tools "$host_target"
}

# board_firmware_build DIR TARGET BIN
# Builds the board crate DIR (e.g. firmware/qemu-mps2) for TARGET in fw_target with the grape's
# DHT port and the worker port baked in (ci/lib/firmware.sh's firmware_build: fmt, clippy,
# build); sets `elf` to the image BIN. Leaves the shell in DIR.
board_firmware_build() {
    local dir=$1 target=$2 bin=$3
    step "firmware build ($target, release; grape DHT port $dp_a and worker port $worker_port baked in)"
    cd "$here/$dir"
    export CARGO_TARGET_DIR="$fw_target" GRAPE_DHT_PORT="$dp_a" WORKER_PORT="$worker_port"
    firmware_build "$dir" "$target" core
    elf="$CARGO_TARGET_DIR/$target/release/$bin"
    [ -f "$elf" ] || fail "the build produced no $elf"
}

# ---------------------------------------------------------------------------------------------
# One boot of the board on network $1 (user or tap), with two grapes of kind $2 (rust or node)
# and both clients. The caller defines `board_title` and `board_qemu NETDEV`, which sets the
# array `qemu_cmd` to the QEMU command line with NETDEV (a -netdev/-nic backend with its options:
# `user,hostfwd=...` or `tap,ifname=tap0,...`) as the board's network.
log=$(mktemp)
logdir=$(mktemp -d)
pids=()
qemu_pid=""
netns=""
stop_all() {
    for p in "${pids[@]}" $qemu_pid; do kill "$p" 2>/dev/null || true; done
    for p in "${pids[@]}" $qemu_pid; do wait "$p" 2>/dev/null || true; done
    pids=()
    qemu_pid=""
    if [ -n "$netns" ]; then ip netns del "$netns" 2>/dev/null || true; netns=""; fi
}
cleanup() {
    stop_all
    rm -f "$log"
    rm -rf "$logdir"
}
trap cleanup EXIT
# wait_announced LOG PID SECONDS: succeeds once LOG shows the board's DHT announce
# ('dht: announced to N', N > 0), fails when PID (the emulator or flasher) has ended or
# SECONDS have passed.
wait_announced() {
    local log=$1 pid=$2 deadline=$(($(date +%s) + $3))
    while [ "$(date +%s)" -lt "$deadline" ]; do
        grep -q 'dht: announced to [1-9]' "$log" && return 0
        kill -0 "$pid" 2>/dev/null || return 1
        sleep 0.1
    done
    grep -q 'dht: announced to [1-9]' "$log"
}

show_log() {
    echo "--- board log (${board_log_source:-semihosting}) ---" >&2; cat "$log" >&2; echo "--- end of board log ---" >&2
    for g in a b; do echo "--- grape $g log (tail) ---" >&2; tail -n 20 "$logdir/grape_$g.log" >&2 || true; done
}
# Runs a command on the test network: inside the namespace in tap mode.
on_net() {
    if [ -n "$netns" ]; then ip netns exec "$netns" "$@"; else "$@"; fi
}
# The same for a background process: `bg_net cmd... &`; the exec makes $! the process itself
# (not a subshell around it), so that stop_all's kill reaches it.
bg_net() {
    if [ -n "$netns" ]; then exec ip netns exec "$netns" "$@"; else exec "$@"; fi
}

passed=0
run_board() {
    local mode=$1 kind=$2 netdev board_host grape_host
    local -a grape_cmd
    case "$kind" in
    rust) grape_cmd=("$grape") ;;
    node) grape_cmd=(node "$here/tests/interop/node_modules/grenache-grape/bin/grape.js") ;;
    *) fail "unknown grape kind '$kind' (rust or node)" ;;
    esac
    local tag=$mode
    [ "$kind" = node ] && tag="$mode, Node grapes"
    case "$mode" in
    user)
        netdev="user,hostfwd=udp:127.0.0.1:$ctl_port-10.0.2.15:7,hostfwd=tcp:127.0.0.1:$worker_port-10.0.2.15:$worker_port"
        board_host=127.0.0.1 # through the forwards
        grape_host=127.0.0.1
        ;;
    tap)
        netns="grenache-qemu-$$"
        ip netns add "$netns" || fail "cannot create network namespace $netns (tap mode needs root and iproute2; QEMU_NETS=user skips it)"
        on_net ip link set lo up
        on_net ip tuntap add dev tap0 mode tap || fail "cannot create tap0 in $netns (/dev/net/tun?)"
        on_net ip addr add 10.0.2.2/24 dev tap0
        on_net ip link set tap0 up
        netdev="tap,ifname=tap0,script=no,downscript=no"
        board_host=10.0.2.15 # the board's own address
        grape_host=10.0.2.2  # so that the grapes tell the board addresses it can reach
        ;;
    *) fail "unknown network mode '$mode' in QEMU_NETS (user or tap)" ;;
    esac

    step "[$tag] two $kind grapes"
    bg_net "${grape_cmd[@]}" --dp "$dp_a" --aph "$api_a" --bn "$grape_host:$dp_b" >"$logdir/grape_a.log" 2>&1 &
    pids+=($!)
    bg_net "${grape_cmd[@]}" --dp "$dp_b" --aph "$api_b" --bn "$grape_host:$dp_a" >"$logdir/grape_b.log" 2>&1 &
    pids+=($!)
    # The board bootstraps once at boot: the grapes must answer before it starts.
    local port up
    for port in "$api_a" "$api_b"; do
        up=""
        for _ in $(seq 1 100); do
            if on_net bash -c "exec 3<>/dev/tcp/127.0.0.1/$port" 2>/dev/null; then up=yes; break; fi
            sleep 0.1
        done
        [ -n "$up" ] || { show_log; fail "[$tag] a grape did not open its API port $port within 10 s"; }
    done
    sleep 0.5
    echo "grapes up: A dht $dp_a api $api_a, B dht $dp_b api $api_b (bootstrap via $grape_host)"

    step "[$tag] boot on $board_title"
    board_qemu "$netdev"
    echo "${qemu_cmd[*]}"
    : >"$log"
    bg_net timeout "$QEMU_TIMEOUT" "${qemu_cmd[@]}" >"$log" 2>&1 &
    qemu_pid=$!
    if ! wait_announced "$log" "$qemu_pid" 30; then
        show_log
        fail "[$tag] the board did not announce fibonacci_worker to a grape within 30 s (no 'dht: announced to N' in its log)"
    fi
    echo "board up and announced; lookup of fibonacci_worker on grape B:"
    on_net curl -s -m 5 -X POST "http://127.0.0.1:$api_b/lookup" -d '{"data":"fibonacci_worker"}' || true
    echo

    board_check_clients "$tag" "$api_b"
    board_check_sequential "$tag" "$board_host:$worker_port"
    board_check_bad_input "$tag" "$board_host" "$worker_port"

    step "[$tag] UDP control port: echo, then quit"
    local ctl=7
    [ "$mode" = user ] && ctl=$ctl_port
    if ! on_net timeout 30 node "$here/tests/qemu/udp_echo.js" "$ctl" "$board_host"; then
        show_log
        fail "[$tag] the host could not talk to the board over UDP (see udp_echo's message above)"
    fi
    local status=0
    wait "$qemu_pid" || status=$?
    qemu_pid=""
    if [ "$status" -ne 0 ]; then
        show_log
        if [ "$status" -eq 124 ]; then fail "[$tag] QEMU was still running after ${QEMU_TIMEOUT}s"; fi
        fail "[$tag] QEMU exited with status $status (semihosting exit 1 = the firmware reported a failure)"
    fi
    echo "--- board log ---"
    cat "$log"
    echo "[$tag] the board exited through semihosting with status 0"
    passed=$((passed + 7)) # announce, Node client, Rust client x3, bad input, UDP control and exit
    stop_all
}

# ---------------------------------------------------------------------------------------------
# The checks of a board that has announced itself, shared by the QEMU boots (run_board) and
# the hardware-in-the-loop script (ci/hil.sh). Each runs its clients through on_net (inside the
# test's network namespace, if any) and fails, with the board's log, when the board is wrong.

# board_check_clients TAG API_PORT: the Node tutorial client (grenache-nodejs-ws) and the Rust
# fib_client example ask fibonacci_worker through the grape whose HTTP API is on
# 127.0.0.1:API_PORT; fib(10) = 89, fib(20) = 10946, fib(1) = 1.
board_check_clients() {
    local tag=$1 api=$2
    step "[$tag] Node tutorial client (grenache-nodejs-ws) -> grape on $api -> board"
    ask_fib "$tag: node fib_client.js" on_net env GRAPE="http://127.0.0.1:$api" timeout 30 node "$here/tests/interop/fib_client.js"

    step "[$tag] Rust fib_client example -> grape on $api -> board"
    ask_fib "$tag: rust fib_client" on_net timeout 30 "$fib_client" "http://127.0.0.1:$api" 10
    expect="Fibonacci number at place 20 in the sequence: 10946"
    ask_fib "$tag: rust fib_client 20" on_net timeout 30 "$fib_client" "http://127.0.0.1:$api" 20
    expect="Fibonacci number at place 1 in the sequence: 1"
    ask_fib "$tag: rust fib_client 1" on_net timeout 30 "$fib_client" "http://127.0.0.1:$api" 1
    expect=$expect_10
}

# board_check_sequential TAG HOST:PORT: RATE_REQUESTS HTTP requests for fib(10) straight to the
# worker, one connection each, one after another. Informative (issue #5 sets no goal): it
# prints the count and the rate, and sets `sequential_ok` to the number answered 89.
board_check_sequential() {
    local tag=$1 worker=$2 started elapsed_ms
    step "[$tag] informative: $RATE_REQUESTS HTTP requests to the board, one after another"
    started=$(date +%s%N)
    sequential_ok=$(on_net timeout 60 bash -c '
        n=0
        for _ in $(seq "$1"); do
            curl -s -m 5 -X POST -d "[\"r\",\"fibonacci_worker\",{\"number\":10}]" "http://$2/" \
                | grep -q "^\[\"r\",null,89\]$" && n=$((n + 1))
        done
        echo "$n"' _ "$RATE_REQUESTS" "$worker" 2>/dev/null) || sequential_ok=0
    elapsed_ms=$((($(date +%s%N) - started) / 1000000))
    echo "$tag: $sequential_ok of $RATE_REQUESTS answered fib(10) = 89 in $elapsed_ms ms" \
        "($(awk -v n="$sequential_ok" -v ms="$elapsed_ms" 'BEGIN { printf "%.0f", (ms > 0 ? n * 1000 / ms : 0) }') requests/s, curl's connection setup included)"
}

# board_check_bad_input TAG HOST PORT: bad input on the worker's port gets its HTTP error and a
# close, not a hang or a dead worker: a line that is no request (400), then a body larger than
# the board's buffers (413); then the worker must still answer fib(10) = 89.
board_check_bad_input() {
    local tag=$1 host=$2 port=$3 input answer want
    step "[$tag] bad input on the worker's port $host:$port"
    for input in 'garbage\r\n\r\n|HTTP/1.1 400 Bad Request' \
        'POST / HTTP/1.1\r\nContent-Length: 100000\r\n\r\n[|HTTP/1.1 413 Payload Too Large'; do
        want=${input#*|}
        # The first line of the answer (the status line), within 10 s of the connection.
        answer=$(on_net timeout 10 bash -c '
            exec 3<>"/dev/tcp/$1/$2" || exit 1
            printf "$3" >&3
            IFS= read -r line <&3 && printf "%s" "$line"' _ "$host" "$port" "${input%%|*}" 2>/dev/null \
            | tr -d '\r') || true
        if [ "$answer" != "$want" ]; then
            show_log
            fail "[$tag] bad input ${input%%|*} got '$answer' from the board, not '$want'"
        fi
        echo "$tag: ${input%%|*} -> $answer"
    done
    answer=$(on_net curl -s -m 10 -X POST -d '["r","fibonacci_worker",{"number":10}]' "http://$host:$port/") || true
    [ "$answer" = '["r",null,89]' ] || { show_log; fail "[$tag] after bad input the worker answered '$answer', not [\"r\",null,89]"; }
    echo "$tag: the worker still answers fib(10) = 89 after bad input"
}

expect_10="Fibonacci number at place 10 in the sequence: 89"
expect=$expect_10
ask_fib() { # name, command...: retried, since a lookup can precede the store
    local name=$1 out="" try
    shift
    for try in 1 2 3; do
        out=$("$@" 2>&1) && [ "$(printf '%s' "$out" | tail -n 1)" = "$expect" ] && { echo "$name: $out"; return 0; }
        echo "$name, try $try: $out"
        sleep 2
    done
    show_log
    fail "$name did not get '$expect' from the board through grape B"
}

# run_boards LABEL: one boot with Rust grapes per network of QEMU_NETS, then (QEMU_NODE_GRAPES
# != 0) one with Node grapes on the last network; ends with `LABEL (...): N passed, 0 failed`.
run_boards() {
    local mode runs
    for mode in $QEMU_NETS; do
        run_board "$mode" rust
    done
    runs="$QEMU_NETS with Rust grapes"
    if [ "${QEMU_NODE_GRAPES:-1}" != "0" ]; then
        # Issue #5's second case: the board joins a DHT of Node grapes by itself.
        [ -d "$here/tests/interop/node_modules/grenache-grape" ] \
            || fail "tests/interop/node_modules is missing: run npm ci --prefix tests/interop (QEMU_NODE_GRAPES=0 skips the Node grape case)"
        run_board "${QEMU_NETS##* }" node
        runs="$runs; ${QEMU_NETS##* } with Node grapes"
    fi
    echo
    echo "$1 ($runs): $passed passed, 0 failed"
}
