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
# Then it rewrites the memory table of firmware/esp32c3/README.md from the ELF
# (ci/board-memory-table.sh; MEMORY_TABLE=check fails on a stale table instead).
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

# step, fail, firmware_build, find_size_tool, firmware_sizes
. "$here/ci/lib/firmware.sh"

step "firmware build ($target, release; SSID '$SSID', grapes $GRAPES)"
cd "$fw"
start=$(date +%s)
# esp-radio uses `alloc`, so the nightly -Zbuild-std fallback builds it too.
firmware_build firmware/esp32c3 "$target" core,alloc
echo "built in $(( $(date +%s) - start )) s"
elf="$CARGO_TARGET_DIR/$target/release/grenache-esp32c3"
[ -f "$elf" ] || fail "the build produced no $elf"

step "firmware sizes (for docs/BENCHMARKS.md, section \"Firmware sizes\")"
find_size_tool llvm-size rust-size size
# ESP32-C3 sections (esp-hal's linkall.x): flash holds the code (.text, plus .trap and .rwtext*
# copied to IRAM at boot), the constants (.rodata*), the initial .data* and the app descriptor;
# *_dummy sections only reserve address space and are not counted. IRAM and DRAM are the same
# SRAM, so the static RAM counts the IRAM code too. .dram2_uninit is the heap in the RAM the
# bootloader leaves behind; .stack is whatever SRAM remains.
flash_sections=".trap .rwtext .rwtext.wifi .data .data.wifi .flash.appdesc .rodata .rodata.wifi .text"
ram_sections=".trap .rwtext .rwtext.wifi .data .data.wifi .bss .noinit"
other_sections=".dram2_uninit .stack"
firmware_sizes "$elf" "$flash_sections" "$ram_sections" "$other_sections"
printf '%s\n' "$fw_sizes" | awk '
    $1 == ".dram2_uninit" { heap = $2 }
    $1 == ".stack" { stack = $2 }
    END {
        printf "reclaimed-RAM heap (.dram2_uninit): %d bytes (%.1f KiB)   stack: %d bytes (%.1f KiB)\n",
            heap, heap / 1024, stack, stack / 1024
    }'

step "memory table of firmware/esp32c3/README.md (MEMORY_TABLE=check: fail if stale)"
table_mode=()
[ "${MEMORY_TABLE:-write}" = check ] && table_mode=(--check)
bash "$here/ci/board-memory-table.sh" "${table_mode[@]}" "$fw/README.md" "$elf" \
    "$flash_sections" "$ram_sections" "$other_sections"

echo
echo "esp32c3 firmware: built (compile and size check only; not run: no ESP32 in QEMU, no board in CI)"
