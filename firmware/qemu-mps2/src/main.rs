//! Grenache firmware for QEMU's `mps2-an386` (Cortex-M4F with an SMSC LAN9118 NIC).
//!
//! Boots (cortex-m-rt), starts the SysTick time driver, brings up embassy-net on the LAN9118
//! with a static address (QEMU user networking: board 10.0.2.15/24, host 10.0.2.2) and runs
//! what qemu-riscv-virt runs (../qemu-common/board.rs): the tutorial's `fibonacci_worker` on
//! TCP, grenache-embassy's DHT announcer, and a UDP control port whose `quit` ends QEMU with
//! status 0 through semihosting. Logs go to the host's stdout through semihosting.

#![no_std]
#![no_main]

#[path = "../../qemu-common/board.rs"]
mod board;
mod lan9118;
#[path = "../../qemu-common/logger.rs"]
mod logger;
#[path = "../../qemu-common/mmio.rs"]
mod mmio;
mod time_driver;

/// The semihosting crate, for ../qemu-common/board.rs.
use cortex_m_semihosting as semihosting;
use embassy_executor::Spawner;
use lan9118::Lan9118;

/// The NIC, for ../qemu-common/board.rs.
type Nic = Lan9118;

/// Brings up the timer, the logger and the NIC, then runs the board (`board::start`, `board::run`).
#[embassy_executor::main]
async fn main(spawner: Spawner) {
    let Some(core) = cortex_m::Peripherals::take() else {
        board::fail("core peripherals already taken");
    };
    time_driver::init(core.SYST);
    logger::init();
    board::print(format_args!("boot: grenache-qemu-mps2 on mps2-an386"));

    let nic = match Lan9118::take() {
        Ok(nic) => nic,
        Err(e) => {
            board::print(format_args!("lan9118: {:?}", e));
            board::fail("no LAN9118");
        }
    };
    board::print(format_args!("lan9118: id {:08x}", nic.id_rev()));
    // The LAN9118's free-running counter (25 MHz since reset) varies between boots.
    let varying = u64::from(nic.free_run());
    let mac = nic.mac();
    let stack = board::start(spawner, nic, mac, varying);
    board::run(stack).await
}
