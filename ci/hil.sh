#!/usr/bin/env bash
# Hardware in the loop, one command for a board owner: flashes a board, waits for it to
# announce fibonacci_worker to two local grapes, runs the QEMU boots' checks against it and
# prints a report.
#
#   ci/hil.sh stm32-f429zi     a NUCLEO-F429ZI on USB (ST-LINK, probe-rs) and Ethernet
#   ci/hil.sh esp32c3          an ESP32-C3 board on USB (espflash) and Wi-Fi (SSID, PASSWORD)
#
# Steps, each bounded in time; the first failure stops the script with what failed, the board's
# log and the report so far:
#  1. the probe: `probe-rs list` (stm32-f429zi) or `espflash board-info` (esp32c3) must see the
#     board; without the tool or the board it fails at once with "no probe found" (ci/test.sh
#     checks this on a machine without a board);
#  2. the host side: the workspace's release `grape` and `fib_client` example (built if
#     missing), the pinned Node packages of tests/interop, two Rust grapes on this PC
#     bootstrapped from each other by its LAN address HOST_IP;
#  3. the firmware, built with GRAPES=HOST_IP:dht-port-A,HOST_IP:dht-port-B and flashed; its log
#     is kept (probe-rs run / espflash monitor);
#  4. the board's announce: `dht: announced to N nodes` with N > 0 within HIL_TIMEOUT seconds,
#     and its DHCP address from its `net: dhcp address` line;
#  5. the checks of ci/lib/qemu-board.sh: the Node tutorial client and the Rust client get
#     fib(10) = 89 (and fib(20), fib(1)) through a grape, RATE_REQUESTS sequential requests
#     straight to the board (all must be answered here), bad input on the worker's port.
#
# Environment: HOST_IP (this PC's address on the board's LAN; default: the source address of
# the default route), WORKER_PORT (default 1337), HIL_TIMEOUT (seconds to wait for the
# announce, default 120), RATE_REQUESTS (default 100), PROBE (stm32-f429zi: probe-rs's
# --probe VID:PID[:serial] when several are attached), PORT (esp32c3: the serial port,
# e.g. /dev/ttyACM0), SSID and PASSWORD (esp32c3: the Wi-Fi network), CARGO_TARGET_DIR (the
# host build, default target/), FIRMWARE_TARGET_DIR (the firmware build, default
# $HOME/.cache/grenache-rs/target-firmware-stm32 or -esp, as ci/test.sh). The PC's firewall
# must let the board reach the grapes' UDP ports (printed in step 2). docs/BOARDS.md says what
# a good boot prints and what to try when a step fails.
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
board=${1:-}
case "$board" in
stm32-f429zi | esp32c3) ;;
*)
    echo "usage: $0 stm32-f429zi|esp32c3   (see the comment at the top of ci/hil.sh)" >&2
    exit 2
    ;;
esac

# step, fail
. "$here/ci/lib/firmware.sh"

report=()
note() { report+=("$*"); }
print_report() {
    local status=$?
    printf '\n=== hil report: %s\n' "$board"
    local line
    for line in "${report[@]}"; do printf '  %s\n' "$line"; done
    if [ "$status" -eq 0 ]; then
        printf '  result: PASSED\n'
    else
        printf '  result: FAILED (see the message above; docs/BOARDS.md, "Troubleshooting")\n'
    fi
}

# 1. The probe, before anything slow: a board owner learns at once that the board is not seen.
step "probe"
case "$board" in
stm32-f429zi)
    command -v probe-rs >/dev/null 2>&1 \
        || fail "no probe found: probe-rs is not installed (install it: curl --proto '=https' --tlsv1.2 -LsSf https://github.com/probe-rs/probe-rs/releases/latest/download/probe-rs-tools-installer.sh | sh, or cargo install probe-rs-tools --locked)"
    probes=$(timeout 30 probe-rs list 2>&1) || true
    # probe-rs lists each probe as "[N]: name -- VID:PID:serial (kind)".
    grep -qE '^\[[0-9]+\]' <<<"$probes" \
        || fail "no probe found: probe-rs list sees no debug probe (plug the NUCLEO's ST-LINK USB, CN1, into this PC; on Linux install probe-rs's udev rules). probe-rs said: $probes"
    echo "$probes"
    note "probe: $(grep -E '^\[[0-9]+\]' <<<"$probes" | head -n 1)"
    ;;
esp32c3)
    command -v espflash >/dev/null 2>&1 \
        || fail "no probe found: espflash is not installed (install it: cargo install espflash --locked)"
    info=$(timeout 60 espflash board-info ${PORT:+--port "$PORT"} </dev/null 2>&1) \
        || fail "no probe found: espflash board-info reaches no ESP32-C3 (plug the board's USB into this PC, set PORT=/dev/ttyACM0 or the like; on Linux the user needs the dialout group). espflash said: $(tail -n 3 <<<"$info")"
    echo "$info"
    note "probe: espflash board-info: $(grep -m 1 -i 'chip type' <<<"$info" || echo "a chip answered")"
    ;;
esac
trap print_report EXIT

# 2. The host side. ci/lib/qemu-board.sh brings the checks, the Node set-up, free_ports and the
# board log ($log) with its clean-up (stop_all, on the EXIT trap with the report).
# shellcheck source=ci/lib/qemu-board.sh
. "$here/ci/lib/qemu-board.sh"
trap 'print_report; cleanup' EXIT
board_log_source="probe-rs run / espflash monitor"
HIL_TIMEOUT="${HIL_TIMEOUT:-120}"
WORKER_PORT="${WORKER_PORT:-1337}"
if [ -z "${HOST_IP:-}" ]; then
    HOST_IP=$(ip -4 route get 1.1.1.1 2>/dev/null | sed -n 's/.* src \([0-9.]*\).*/\1/p')
fi
[ -n "$HOST_IP" ] || fail "cannot tell this PC's LAN address: set HOST_IP to the address the board reaches it at"

step "host: release grape and fib_client, Node packages"
need_node_packages
host_release="${CARGO_TARGET_DIR:-$here/target}/release"
(cd "$here" && CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$here/target}" \
    cargo build --release --locked -p grenache-host --bin grape --example fib_client) \
    || fail "cannot build the host's grape and fib_client (cargo build --release -p grenache-host)"
grape="$host_release/grape"
fib_client="$host_release/examples/fib_client"

read -r dp_a api_a dp_b api_b <<<"$(free_ports 4)" || fail "cannot find free ports on this PC"
[ -n "${api_b:-}" ] || fail "cannot find free ports on this PC"
step "two Rust grapes on $HOST_IP (DHT udp $dp_a and $dp_b: the board must reach them)"
"$grape" --dp "$dp_a" --aph "$api_a" --bn "$HOST_IP:$dp_b" >"$logdir/grape_a.log" 2>&1 &
pids+=($!)
"$grape" --dp "$dp_b" --aph "$api_b" --bn "$HOST_IP:$dp_a" >"$logdir/grape_b.log" 2>&1 &
pids+=($!)
for port in "$api_a" "$api_b"; do
    up=""
    for _ in $(seq 1 100); do
        if bash -c "exec 3<>/dev/tcp/127.0.0.1/$port" 2>/dev/null; then up=yes; break; fi
        sleep 0.1
    done
    [ -n "$up" ] || { show_log; fail "a grape did not open its API port $port within 10 s"; }
done
note "grapes: $HOST_IP:$dp_a (api $api_a), $HOST_IP:$dp_b (api $api_b)"

# 3. Build and flash; the flasher keeps running and writes the board's log to $log.
export GRAPES="$HOST_IP:$dp_a,$HOST_IP:$dp_b" WORKER_PORT
case "$board" in
stm32-f429zi)
    target=thumbv7em-none-eabihf
    export CARGO_TARGET_DIR="${FIRMWARE_TARGET_DIR:-$HOME/.cache/grenache-rs/target-firmware-stm32}"
    ;;
esp32c3)
    target=riscv32imc-unknown-none-elf
    export CARGO_TARGET_DIR="${FIRMWARE_TARGET_DIR:-$HOME/.cache/grenache-rs/target-firmware-esp}"
    [ -n "${SSID:-}" ] || fail "set SSID and PASSWORD to the Wi-Fi network the board joins (PASSWORD= for an open one)"
    ;;
esac
step "firmware build (firmware/$board, GRAPES=$GRAPES WORKER_PORT=$WORKER_PORT)"
(cd "$here/firmware/$board" && cargo build --release --locked) || fail "the firmware does not build"
elf="$CARGO_TARGET_DIR/$target/release/grenache-$board"
note "image: $elf (GRAPES=$GRAPES, WORKER_PORT=$WORKER_PORT)"

step "flash and boot (the board's log: $log)"
: >"$log"
case "$board" in
stm32-f429zi)
    probe-rs run --chip STM32F429ZITx ${PROBE:+--probe "$PROBE"} "$elf" >"$log" 2>&1 &
    ;;
esp32c3)
    espflash flash --chip esp32c3 ${PORT:+--port "$PORT"} --non-interactive --monitor "$elf" \
        </dev/null >"$log" 2>&1 &
    ;;
esac
pids+=($!)
flasher=$!

# 4. The announce.
step "waiting up to ${HIL_TIMEOUT}s for the board to announce fibonacci_worker"
started=$(date +%s)
if ! wait_announced "$log" "$flasher" "$HIL_TIMEOUT"; then
    show_log
    fail "the board did not announce fibonacci_worker within ${HIL_TIMEOUT}s (no 'dht: announced to N' with N > 0 in its log; the last line it printed tells how far it got: docs/BOARDS.md)"
fi
board_ip=$(sed -n 's/.*net: dhcp address \([0-9.]*\)\/.*/\1/p' "$log" | tail -n 1)
[ -n "$board_ip" ] || { show_log; fail "the board announced but logged no 'net: dhcp address'"; }
note "announced after $(($(date +%s) - started)) s from $board_ip:$WORKER_PORT"

# 5. The QEMU boots' checks.
board_check_clients "$board" "$api_b"
note "clients: Node fib_client.js and Rust fib_client got fib(10) = 89 through a grape"
board_check_sequential "$board" "$board_ip:$WORKER_PORT"
note "sequential: $sequential_ok of $RATE_REQUESTS requests answered 89"
[ "$sequential_ok" = "$RATE_REQUESTS" ] \
    || { show_log; fail "only $sequential_ok of $RATE_REQUESTS sequential requests were answered fib(10) = 89"; }
board_check_bad_input "$board" "$board_ip" "$WORKER_PORT"
note "bad input: 400 and 413 with a close, then fib(10) = 89 again"
echo "--- board log ---"
cat "$log"
