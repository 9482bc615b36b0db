#!/usr/bin/env bash
# Builds the ESP32-C3 firmware of firmware/esp32c3 (Wi-Fi station, DHCP, the fibonacci_worker
# and the DHT announcer) and prints its flash and static RAM sizes.
#
#   ci/firmware-esp32c3.sh
#
# What it proves: the board crate compiles and links for riscv32imc-unknown-none-elf against
# the pinned esp-hal / esp-rtos / esp-radio (Cargo.lock, --locked), is rustfmt- and
# clippy-clean, and fits the chip (the linker checks the memory map). It does NOT run the
# firmware: ESP32 chips are not in upstream QEMU and CI has no board (see
# firmware/esp32c3/README.md for flashing one by hand).
#
# Wi-Fi credentials and grapes are baked in at build time; CI uses dummy values (override
# with SSID, PASSWORD, GRAPES, WORKER_PORT, DHT_PORT).
#
# Environment: CARGO_TARGET_DIR (build cache of this firmware, default
# $HOME/.cache/grenache-rs/target-firmware-esp; the firmware has its own rustflags and target,
# so it keeps away from the host's and the other boards' caches).
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
fw="$here/firmware/esp32c3"
target=riscv32imc-unknown-none-elf
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/grenache-rs/target-firmware-esp}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
export SSID="${SSID:-grenache-ci}" PASSWORD="${PASSWORD:-not-a-real-passphrase}"
export GRAPES="${GRAPES:-192.168.1.10:20001,192.168.1.10:20002}"

step() { printf '\n=== %s\n' "$*"; }
fail() { printf '\nFAILED: %s\n' "$*" >&2; exit 1; }

step "firmware build ($target, release; SSID '$SSID', grapes $GRAPES)"
cd "$fw"
stale="(if firmware/esp32c3/Cargo.lock is stale after a change of core or adapters/embassy: cd firmware/esp32c3 && cargo update --workspace)"
start=$(date +%s)
if rustup target list --installed 2>/dev/null | grep -qx "$target" \
    || rustup target add "$target" >/dev/null 2>&1; then
    cargo fmt --check || fail "cargo fmt reports unformatted firmware code (cd firmware/esp32c3 && cargo fmt)"
    cargo clippy --release --locked -- -D warnings || fail "clippy rejects the firmware $stale"
    cargo build --release --locked || fail "the firmware does not build $stale"
elif cargo +nightly --version >/dev/null 2>&1 \
    && { rustup +nightly component list --installed 2>/dev/null | grep -q '^rust-src' \
         || rustup +nightly component add rust-src >/dev/null 2>&1; }; then
    echo "rustup cannot add $target: building core and alloc from source with nightly -Zbuild-std"
    # esp-radio uses `alloc`, so the fallback builds it too.
    cargo +nightly build --release --locked -Zbuild-std=core,alloc \
        || fail "the firmware does not build with nightly -Zbuild-std $stale"
else
    fail "no $target: 'rustup target add $target' failed and no nightly with rust-src for -Zbuild-std"
fi
echo "built in $(( $(date +%s) - start )) s"
elf="$CARGO_TARGET_DIR/$target/release/grenache-esp32c3"
[ -f "$elf" ] || fail "the build produced no $elf"

step "firmware sizes (for docs/BENCHMARKS.md, section \"Firmware sizes\")"
sizetool=""
for t in llvm-size rust-size size; do
    if command -v "$t" >/dev/null 2>&1; then sizetool=$t; break; fi
done
if [ -z "$sizetool" ]; then
    fail "no size tool (llvm-size, rust-size or binutils' size)"
fi
# ESP32-C3 sections (esp-hal's linkall.x): flash holds the code (.text, plus .trap and .rwtext*
# copied to IRAM at boot), the constants (.rodata*), the initial .data* and the app descriptor;
# *_dummy sections only reserve address space and are not counted. IRAM and DRAM are the same
# SRAM, so the static RAM counts the IRAM code too. .dram2_uninit is the heap in the RAM the
# bootloader leaves behind; .stack is whatever SRAM remains.
"$sizetool" -A "$elf" | awk -v tool="$sizetool" '
    $1 ~ /^\.(trap|rwtext|rwtext\.wifi|data|data\.wifi|flash\.appdesc|rodata|rodata\.wifi|text)$/ { flash += $2 }
    $1 ~ /^\.(trap|rwtext|rwtext\.wifi|data|data\.wifi|bss|noinit)$/ { ram += $2 }
    $1 == ".dram2_uninit" { heap = $2 }
    $1 == ".stack" { stack = $2 }
    $1 ~ /^\.(trap|rwtext|rwtext\.wifi|data|data\.wifi|flash\.appdesc|rodata|rodata\.wifi|text|bss|noinit|dram2_uninit|stack)$/ {
        printf "  %-14s %8d\n", $1, $2
    }
    END {
        printf "flash: %d bytes (%.1f KiB)   static RAM: %d bytes (%.1f KiB) + stack   [%s -A]\n",
            flash, flash / 1024, ram, ram / 1024, tool
        printf "reclaimed-RAM heap (.dram2_uninit): %d bytes (%.1f KiB)   stack: %d bytes (%.1f KiB)\n",
            heap, heap / 1024, stack, stack / 1024
    }'
echo
echo "esp32c3 firmware: built (compile and size check only; not run: no ESP32 in QEMU, no board in CI)"
