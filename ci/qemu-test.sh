#!/usr/bin/env bash
# Boots the firmware of firmware/qemu-mps2 on QEMU's mps2-an386 (Cortex-M4F + LAN9118) and
# checks it over the network from the host; prints the firmware's flash and static RAM sizes.
#
#   ci/qemu-test.sh
#
# What it proves: the image boots, the SysTick time driver and the embassy executor run, the
# LAN9118 driver moves frames both ways under embassy-net (ARP, IPv4, UDP and TCP through
# QEMU's user-mode NAT); the board joins the DHT of two Rust grapes (the workspace's `grape`)
# with grenache-embassy's announcer, and both the Node tutorial client
# (tests/interop/fib_client.js) and the Rust one (host example fib_client) find its
# fibonacci_worker through the *other* grape and get fib(10) = 89 from it; finally the board
# ends QEMU through semihosting with a success status when told (`quit` on UDP port 7).
# Everything is bounded in time; every failure says what failed and prints the board's log.
#
# It runs on two networks with Rust grapes, then once more on the last of them with two Node
# grapes (grenache-grape 1.0.0 from tests/interop, bittorrent-dht) in their place:
#   user  QEMU's user-mode network (slirp): the board is 10.0.2.15 behind QEMU's NAT, the host
#         10.0.2.2; the board's ports are forwarded from 127.0.0.1 (no root needed). The grapes
#         see the board as 127.0.0.1 and store 127.0.0.1:WORKER_PORT, which the forward makes
#         right.
#   tap   a TAP device in a network namespace of its own (needs root and iproute2): the host
#         side is 10.0.2.2 on tap0, the board 10.0.2.15 with its own address, as on a LAN; the
#         grapes store 10.0.2.15:WORKER_PORT and the clients connect to the board directly.
#         Grapes, QEMU and clients all run inside the namespace.
#
# Environment: QEMU_NETS (default "user tap"; the Node grapes run on the last one), QEMU_NODE_GRAPES
# (default 1; 0 skips the Node grape case), QEMU_TIMEOUT (seconds, default 120),
# FIRMWARE_TARGET_DIR (firmware build cache), CARGO_TARGET_DIR (host build cache, as ci/test.sh).
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
target=thumbv7em-none-eabihf
QEMU_NETS="${QEMU_NETS:-user tap}"

# step, fail, firmware_build, find_size_tool, firmware_sizes
. "$here/ci/lib/firmware.sh"
# need_qemu, board_host_setup, board_firmware_build, run_boards; the settings
# QEMU_TIMEOUT, RATE_REQUESTS, host_target and fw_target
. "$here/ci/lib/qemu-board.sh"

# QEMU >= 5.2 has the mps2-an386 machine.
need_qemu qemu-system-arm qemu-system-arm mps2-an386
board_host_setup

board_firmware_build firmware/qemu-mps2 "$target" grenache-qemu-mps2

step "firmware sizes (for docs/BENCHMARKS.md, section \"Firmware sizes\")"
find_size_tool llvm-size rust-size arm-none-eabi-size size
firmware_sizes "$elf" ".vector_table .text .rodata .data" ".data .bss .uninit"

board_title="mps2-an386 with a LAN9118"
board_qemu() {
    qemu_cmd=(qemu-system-arm -M mps2-an386 -nographic -monitor none -serial null
        -semihosting-config enable=on,target=native -nic "$1,model=lan9118" -kernel "$elf")
}
run_boards "qemu firmware"
