#!/usr/bin/env bash
# Boots the firmware of firmware/qemu-riscv-virt on QEMU's RISC-V virt board (RV32IMAC with a
# virtio-net device on virtio-mmio) and checks it over the network from the host; prints the
# firmware's code and static RAM sizes.
#
#   ci/qemu-riscv-test.sh
#
# What it proves, as ci/qemu-test.sh does for the Cortex-M board: the image boots in machine
# mode (`-bios none`), the CLINT time driver and the embassy executor run, the virtio-net driver
# moves frames both ways under embassy-net (ARP, IPv4, UDP and TCP through QEMU's user-mode
# NAT); the board joins the DHT of two Rust grapes (the workspace's `grape`) with
# grenache-embassy's announcer, and both the Node tutorial client (tests/interop/fib_client.js)
# and the Rust one (host example fib_client) find its fibonacci_worker through the *other*
# grape and get fib(10) = 89 from it; finally the board ends QEMU through semihosting with a
# success status when told (`quit` on UDP port 7). Everything is bounded in time; every failure
# says what failed and prints the board's log.
#
# The boot itself is ci/lib/qemu-board.sh's, shared with ci/qemu-test.sh; see there for the
# networks. QEMU's virtio-mmio speaks the legacy interface unless told otherwise:
# `-global virtio-mmio.force-legacy=false` gives the virtio 1.x one the driver needs.
#
# Environment: QEMU_NETS (default "user"; "user tap" adds the TAP network, which needs root),
# QEMU_NODE_GRAPES (default 0; 1 adds a boot with two Node grapes), QEMU_TIMEOUT (seconds,
# default 120), FIRMWARE_TARGET_DIR (firmware build cache), CARGO_TARGET_DIR (host build cache,
# as ci/test.sh).
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
target=riscv32imac-unknown-none-elf
QEMU_NETS="${QEMU_NETS:-user}"
QEMU_NODE_GRAPES="${QEMU_NODE_GRAPES:-0}"

# step, fail, firmware_build, find_size_tool, firmware_sizes
. "$here/ci/lib/firmware.sh"
# need_qemu, board_host_setup, board_firmware_build, run_boards; the settings
# QEMU_TIMEOUT, RATE_REQUESTS, host_target and fw_target
. "$here/ci/lib/qemu-board.sh"

need_qemu qemu-system-riscv32 qemu-system-misc virt
board_host_setup

board_firmware_build firmware/qemu-riscv-virt "$target" grenache-qemu-riscv-virt

step "firmware sizes (for docs/BENCHMARKS.md, section \"Firmware sizes\")"
find_size_tool llvm-size rust-size riscv64-unknown-elf-size size
# riscv-rt's sections: RAM is both load and run address (no flash on QEMU virt), so "flash"
# here is the image's code and constants (.eh_frame comes with the prebuilt core library).
firmware_sizes "$elf" ".text .init.rust .rodata .eh_frame .data" ".data .bss .uninit" ".heap"

board_title="QEMU virt (riscv32) with virtio-net on virtio-mmio"
board_qemu() {
    qemu_cmd=(qemu-system-riscv32 -M virt -bios none -nographic -monitor none -serial null
        -semihosting-config enable=on,target=native -global virtio-mmio.force-legacy=false
        -netdev "$1,id=net0" -device virtio-net-device,netdev=net0 -kernel "$elf")
}
run_boards "qemu riscv firmware"
