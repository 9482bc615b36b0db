#!/usr/bin/env bash
# Boots the firmware of firmware/qemu-mps2 on QEMU's mps2-an386 (Cortex-M4F + LAN9118) and
# checks it over the network from the host; prints the firmware's flash and static RAM sizes.
#
#   ci/qemu-test.sh
#
# What it proves: the image boots, the SysTick time driver and the embassy executor run, the
# LAN9118 driver moves frames both ways under embassy-net (ARP, IPv4, UDP through QEMU's
# user-mode NAT), and the board ends QEMU through semihosting with a success status when told.
# Everything is bounded in time; every failure says what failed and prints the board's log.
#
# Environment: QEMU_TIMEOUT (seconds, default 90), FIRMWARE_TARGET_DIR (build cache).
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
fw="$here/firmware/qemu-mps2"
target=thumbv7em-none-eabihf
QEMU_TIMEOUT="${QEMU_TIMEOUT:-90}"
# The firmware has its own rustflags (linker script): a target dir of its own avoids rebuilding
# the host workspace's dependencies back and forth.
export CARGO_TARGET_DIR="${FIRMWARE_TARGET_DIR:-$HOME/.cache/grenache-rs/target-firmware}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

step() { printf '\n=== %s\n' "$*"; }
fail() { printf '\nFAILED: %s\n' "$*" >&2; exit 1; }

step "qemu-system-arm"
if ! command -v qemu-system-arm >/dev/null 2>&1; then
    echo "installing Debian's qemu-system-arm (apt-get install -y qemu-system-arm)"
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq qemu-system-arm >/dev/null; } \
        || fail "cannot install qemu-system-arm with apt-get (needs root and Debian's package mirror)"
fi
qemu-system-arm --version | head -n 1
qemu-system-arm -M help | grep -q '^mps2-an386' || fail "this QEMU has no mps2-an386 machine (QEMU >= 5.2 needed)"
command -v node >/dev/null 2>&1 || fail "node is not installed: the host side of the test is tests/qemu/udp_echo.js"

step "firmware build ($target, release)"
cd "$fw"
if rustup target list --installed 2>/dev/null | grep -qx "$target" \
    || rustup target add "$target" >/dev/null 2>&1; then
    cargo build --release --locked
elif cargo +nightly --version >/dev/null 2>&1 \
    && { rustup +nightly component list --installed 2>/dev/null | grep -q '^rust-src' \
         || rustup +nightly component add rust-src >/dev/null 2>&1; }; then
    echo "rustup cannot add $target: building core from source with nightly -Zbuild-std"
    cargo +nightly build --release --locked -Zbuild-std=core
else
    fail "no $target: 'rustup target add $target' failed and no nightly with rust-src for -Zbuild-std"
fi
elf="$CARGO_TARGET_DIR/$target/release/grenache-qemu-mps2"
[ -f "$elf" ] || fail "the build produced no $elf"

step "firmware sizes (for docs/BENCHMARKS.md, section \"Firmware sizes\")"
sizetool=""
for t in llvm-size rust-size arm-none-eabi-size size; do
    if command -v "$t" >/dev/null 2>&1; then sizetool=$t; break; fi
done
if [ -z "$sizetool" ]; then
    fail "no size tool (llvm-size, rust-size, arm-none-eabi-size or binutils' size)"
fi
"$sizetool" -A "$elf" | awk -v tool="$sizetool" '
    $1 ~ /^\.(vector_table|text|rodata|data)$/ { flash += $2 }
    $1 ~ /^\.(data|bss|uninit)$/ { ram += $2 }
    $1 ~ /^\.(vector_table|text|rodata|data|bss|uninit)$/ { printf "  %-14s %8d\n", $1, $2 }
    END {
        printf "flash: %d bytes (%.1f KiB)   static RAM: %d bytes (%.1f KiB) + stack   [%s -A]\n",
            flash, flash / 1024, ram, ram / 1024, tool
    }'

step "boot on mps2-an386 with a LAN9118 on QEMU user networking, UDP echo on port 7"
log=$(mktemp)
qemu_pid=""
cleanup() {
    if [ -n "$qemu_pid" ] && kill -0 "$qemu_pid" 2>/dev/null; then kill "$qemu_pid" 2>/dev/null || true; fi
    rm -f "$log"
}
trap cleanup EXIT
show_log() { echo "--- board log (semihosting) ---" >&2; cat "$log" >&2; echo "--- end of board log ---" >&2; }

# A port on the host's loopback for the forward; QEMU refuses to start if it is taken, so try a few.
started=""
for attempt in 1 2 3 4 5; do
    port=$(( 20000 + RANDOM % 20000 ))
    : >"$log"
    timeout "$QEMU_TIMEOUT" qemu-system-arm -M mps2-an386 -nographic -monitor none -serial null \
        -semihosting-config enable=on,target=native \
        -nic "user,model=lan9118,hostfwd=udp:127.0.0.1:$port-10.0.2.15:7" \
        -kernel "$elf" >"$log" 2>&1 &
    qemu_pid=$!
    for _ in $(seq 1 100); do
        if grep -q '^udp: echo on port' "$log"; then started=yes; break; fi
        kill -0 "$qemu_pid" 2>/dev/null || break
        sleep 0.1
    done
    [ -n "$started" ] && break
    if grep -qi 'could not set up host forwarding' "$log"; then
        wait "$qemu_pid" 2>/dev/null || true
        echo "port $port is taken, trying another"
        continue
    fi
    show_log
    fail "the board did not come up within 10 s (no 'udp: echo on port' in its log)"
done
[ -n "$started" ] || fail "no free UDP port for QEMU's host forward after 5 tries"
echo "board up; host port $port -> 10.0.2.15:7"

if ! timeout 30 node "$here/tests/qemu/udp_echo.js" "$port"; then
    show_log
    fail "the host could not talk to the board over UDP (see udp_echo's message above)"
fi

status=0
wait "$qemu_pid" || status=$?
qemu_pid=""
if [ "$status" -ne 0 ]; then
    show_log
    if [ "$status" -eq 124 ]; then fail "QEMU was still running after ${QEMU_TIMEOUT}s"; fi
    fail "QEMU exited with status $status (semihosting exit 1 = the firmware reported a failure)"
fi
cat "$log"
echo "qemu: the board exited through semihosting with status 0"
echo
echo "qemu firmware: 1 passed, 0 failed"
