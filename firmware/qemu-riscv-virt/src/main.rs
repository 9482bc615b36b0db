//! Grenache firmware for QEMU's RISC-V `virt` board (RV32IMAC with a virtio-net NIC).
//!
//! Boots in machine mode (`-bios none`, riscv-rt), starts the CLINT time driver, brings up
//! embassy-net on the virtio-net device with a static address (QEMU user networking: board
//! 10.0.2.15/24, host 10.0.2.2) and runs what qemu-mps2 runs (../qemu-common/board.rs): the
//! tutorial's `fibonacci_worker` on TCP, grenache-embassy's DHT announcer, and a UDP control
//! port whose `quit` ends QEMU with status 0 through semihosting. Logs go to the host's stdout
//! through semihosting.

#![no_std]
#![no_main]

#[path = "../../qemu-common/board.rs"]
mod board;
#[path = "../../qemu-common/logger.rs"]
mod logger;
#[path = "../../qemu-common/mmio.rs"]
mod mmio;
mod time_driver;
mod virtio_net;

use embassy_executor::Spawner;
/// The semihosting crate, for ../qemu-common/board.rs.
use riscv_semihosting as semihosting;
use virtio_net::VirtioNet;

/// The NIC, for ../qemu-common/board.rs.
type Nic = VirtioNet;

/// Brings up the timer, the logger and the NIC, then runs the board (`board::start`, `board::run`).
#[embassy_executor::main]
async fn main(spawner: Spawner) {
    time_driver::init();
    logger::init();
    board::print(format_args!(
        "boot: grenache-qemu-riscv-virt on QEMU virt (riscv32)"
    ));

    let nic = match VirtioNet::probe() {
        Ok(nic) => nic,
        Err(e) => {
            board::print(format_args!("virtio-net: {:?}", e));
            board::fail("no usable virtio-net device");
        }
    };
    board::print(format_args!("virtio-net: at {:#010x}", nic.base()));
    // `mtime` counts QEMU's virtual clock (10 MHz) since QEMU started: it varies between boots.
    let mac = nic.mac();
    let stack = board::start(spawner, nic, mac, time_driver::counter());
    board::run(stack).await
}
