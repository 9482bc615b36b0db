#!/usr/bin/env bash
# Builds the NUCLEO-F429ZI firmware (firmware/stm32-f429zi), prints its flash and static RAM
# sizes and fails when they are over issue #5's budget.
#
#   ci/firmware-stm32.sh
#
# What it proves: the firmware (embassy-stm32's RMII Ethernet, embassy-net with DHCP, defmt
# over RTT, grenache-embassy's worker and DHT announcer) formats, passes clippy and builds for
# thumbv7em-none-eabihf from the committed Cargo.lock. It does not run it: QEMU has no STM32
# board with Ethernet, and CI has no board (firmware/stm32-f429zi/README.md, "Flash a board").
#
# Budget: FLASH_BUDGET bytes of flash (.vector_table + .text + .rodata + .data, default 65536)
# and RAM_BUDGET bytes of static RAM (.data + .bss + .uninit, default 24576), HAL included.
# BUDGET=warn reports an overrun without failing (for measuring a change that is not done).
#
# Environment: FIRMWARE_TARGET_DIR or CARGO_TARGET_DIR (build cache, default
# $HOME/.cache/grenache-rs/target-firmware), GRAPES and WORKER_PORT (baked into the image, see
# firmware/stm32-f429zi/src/config.rs). A cold build downloads embassy-stm32's register crate
# (stm32-metapac: 13 MB compressed, 250 MB unpacked) from crates.io.
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
fw="$here/firmware/stm32-f429zi"
target=thumbv7em-none-eabihf
bin=grenache-stm32-f429zi
FLASH_BUDGET="${FLASH_BUDGET:-65536}"
RAM_BUDGET="${RAM_BUDGET:-24576}"
BUDGET="${BUDGET:-fail}"
export CARGO_TARGET_DIR="${FIRMWARE_TARGET_DIR:-${CARGO_TARGET_DIR:-$HOME/.cache/grenache-rs/target-firmware}}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

step() { printf '\n=== %s\n' "$*"; }
fail() { printf '\nFAILED: %s\n' "$*" >&2; exit 1; }

step "firmware build ($target, release, firmware/stm32-f429zi)"
cd "$fw"
stale="(if firmware/stm32-f429zi/Cargo.lock is stale after a change of core or adapters/embassy: cd firmware/stm32-f429zi && cargo update --workspace)"
if rustup target list --installed 2>/dev/null | grep -qx "$target" \
    || rustup target add "$target" >/dev/null 2>&1; then
    cargo fmt --check || fail "cargo fmt reports unformatted firmware code (cd firmware/stm32-f429zi && cargo fmt)"
    cargo clippy --release --locked -- -D warnings || fail "clippy rejects the firmware $stale"
    cargo build --release --locked || fail "the firmware does not build $stale"
elif cargo +nightly --version >/dev/null 2>&1 \
    && { rustup +nightly component list --installed 2>/dev/null | grep -q '^rust-src' \
         || rustup +nightly component add rust-src >/dev/null 2>&1; }; then
    echo "rustup cannot add $target: building core from source with nightly -Zbuild-std"
    cargo +nightly build --release --locked -Zbuild-std=core || fail "the firmware does not build with nightly -Zbuild-std $stale"
else
    fail "no $target: 'rustup target add $target' failed and no nightly with rust-src for -Zbuild-std"
fi
elf="$CARGO_TARGET_DIR/$target/release/$bin"
[ -f "$elf" ] || fail "the build produced no $elf"

step "firmware sizes (budget: flash $FLASH_BUDGET bytes, static RAM $RAM_BUDGET bytes)"
sizetool=""
for t in llvm-size rust-size arm-none-eabi-size size; do
    if command -v "$t" >/dev/null 2>&1; then sizetool=$t; break; fi
done
[ -n "$sizetool" ] || fail "no size tool (llvm-size, rust-size, arm-none-eabi-size or binutils' size)"
sizes=$("$sizetool" -A "$elf") || fail "$sizetool cannot read $elf"
printf '%s\n' "$sizes" | awk -v tool="$sizetool" '
    $1 ~ /^\.(vector_table|text|rodata|data)$/ { flash += $2 }
    $1 ~ /^\.(data|bss|uninit)$/ { ram += $2 }
    $1 ~ /^\.(vector_table|text|rodata|data|bss|uninit)$/ { printf "  %-14s %8d\n", $1, $2 }
    END {
        printf "flash: %d bytes (%.1f KiB)   static RAM: %d bytes (%.1f KiB) + stack   [%s -A]\n",
            flash, flash / 1024, ram, ram / 1024, tool
    }'
read -r flash ram < <(printf '%s\n' "$sizes" | awk '
    $1 ~ /^\.(vector_table|text|rodata|data)$/ { flash += $2 }
    $1 ~ /^\.(data|bss|uninit)$/ { ram += $2 }
    END { print flash + 0, ram + 0 }')
over=""
[ "$flash" -lt "$FLASH_BUDGET" ] || over="flash $flash >= $FLASH_BUDGET bytes"
[ "$ram" -lt "$RAM_BUDGET" ] || over="${over:+$over, }static RAM $ram >= $RAM_BUDGET bytes"
if [ -n "$over" ]; then
    echo "the biggest symbols (llvm-nm -S --size-sort):"
    if command -v llvm-nm >/dev/null 2>&1; then
        llvm-nm -S --size-sort -C "$elf" | tail -n 15 | while read -r _ size kind name; do
            printf '  %7d %s %s\n' "$((16#$size))" "$kind" "${name:0:120}"
        done
    fi
    if [ "$BUDGET" = warn ]; then
        echo "OVER BUDGET (BUDGET=warn, not failing): $over"
        exit 0
    fi
    fail "over budget: $over"
fi
echo "within budget: flash $flash < $FLASH_BUDGET, static RAM $ram < $RAM_BUDGET"
