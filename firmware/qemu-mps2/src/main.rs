//! Grenache firmware for QEMU's `mps2-an386` (Cortex-M4F with an SMSC LAN9118 NIC).
//!
//! Milestone 1: boots, brings up embassy-net on the LAN9118 with a static address (QEMU user
//! networking: board 10.0.2.15/24, host 10.0.2.2) and answers UDP on port 7: every datagram is
//! echoed, `quit` is answered with `bye` and ends QEMU with exit status 0 through semihosting.
//! Without `quit` the board stops itself, with a failing status, after [`DEADLINE_SECS`].
//! Logs go to the host's stdout through semihosting.

#![no_std]
#![no_main]

mod lan9118;
mod time_driver;

use cortex_m_semihosting::{debug, hprintln};
use embassy_executor::Spawner;
use embassy_net::udp::{PacketMetadata, UdpSocket};
use embassy_net::{Ipv4Address, Ipv4Cidr, StackResources, StaticConfigV4};
use embassy_time::{Duration, Instant, Timer};
use lan9118::{Lan9118, MPS2_LAN9118_BASE};
use static_cell::StaticCell;

/// The board gives up (exit status 1) if no `quit` arrived by then, so a test never hangs.
const DEADLINE_SECS: u64 = 120;
/// The UDP echo port.
const ECHO_PORT: u16 = 7;

/// Ends QEMU through semihosting, with status 0 for success and 1 for failure.
fn exit(success: bool) -> ! {
    debug::exit(if success {
        debug::EXIT_SUCCESS
    } else {
        debug::EXIT_FAILURE
    });
    // Only reached when no debugger/QEMU handles semihosting.
    loop {
        cortex_m::asm::wfi();
    }
}

/// Logs why the board stops and exits with a failing status.
fn fail(why: &str) -> ! {
    hprintln!("FAIL: {}", why);
    exit(false)
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    hprintln!("PANIC: {}", info);
    exit(false)
}

#[embassy_executor::task]
async fn net_task(mut runner: embassy_net::Runner<'static, Lan9118>) -> ! {
    runner.run().await
}

#[embassy_executor::task]
async fn deadline_task() {
    Timer::after(Duration::from_secs(DEADLINE_SECS)).await;
    fail("deadline reached without a quit datagram");
}

#[embassy_executor::main]
async fn main(spawner: Spawner) {
    let Some(core) = cortex_m::Peripherals::take() else {
        fail("core peripherals already taken");
    };
    time_driver::init(core.SYST);
    hprintln!("boot: grenache-qemu-mps2 on mps2-an386");

    let nic = match Lan9118::take(MPS2_LAN9118_BASE) {
        Ok(nic) => nic,
        Err(e) => {
            hprintln!("lan9118: {:?}", e);
            fail("no LAN9118");
        }
    };
    let m = nic.mac();
    hprintln!(
        "lan9118: id {:08x}, mac {:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
        nic.id_rev(),
        m[0],
        m[1],
        m[2],
        m[3],
        m[4],
        m[5]
    );

    let config = embassy_net::Config::ipv4_static(StaticConfigV4 {
        address: Ipv4Cidr::new(Ipv4Address::new(10, 0, 2, 15), 24),
        gateway: Some(Ipv4Address::new(10, 0, 2, 2)),
        dns_servers: Default::default(),
    });
    static RESOURCES: StaticCell<StackResources<4>> = StaticCell::new();
    // No hardware RNG on this board: the seed only spreads ephemeral ports and TCP sequence
    // numbers, so the MAC is enough to tell boards apart.
    let seed = u64::from_le_bytes([m[0], m[1], m[2], m[3], m[4], m[5], 0x9e, 0x37]);
    let (stack, runner) =
        embassy_net::new(nic, config, RESOURCES.init(StackResources::new()), seed);
    match net_task(runner) {
        Ok(token) => spawner.spawn(token),
        Err(_) => fail("cannot spawn the network task"),
    }
    match deadline_task() {
        Ok(token) => spawner.spawn(token),
        Err(_) => fail("cannot spawn the deadline task"),
    }

    stack.wait_config_up().await;
    hprintln!(
        "net: up at 10.0.2.15/24 after {} ms",
        Instant::now().as_millis()
    );

    let mut rx_meta = [PacketMetadata::EMPTY; 4];
    let mut rx_buf = [0u8; 1024];
    let mut tx_meta = [PacketMetadata::EMPTY; 4];
    let mut tx_buf = [0u8; 1024];
    let mut socket = UdpSocket::new(stack, &mut rx_meta, &mut rx_buf, &mut tx_meta, &mut tx_buf);
    if socket.bind(ECHO_PORT).is_err() {
        fail("cannot bind the echo port");
    }
    hprintln!("udp: echo on port {}", ECHO_PORT);
    let mut buf = [0u8; 512];
    loop {
        let (n, meta) = match socket.recv_from(&mut buf).await {
            Ok(got) => got,
            Err(_) => continue, // truncated datagram: ignore it
        };
        let data = buf.get(..n).unwrap_or(&[]);
        if data.trim_ascii() == b"quit" {
            hprintln!("udp: quit from {}", meta.endpoint);
            let _ = socket.send_to(b"bye", meta.endpoint).await;
            // Let the stack put the reply on the wire before QEMU goes away.
            Timer::after(Duration::from_millis(50)).await;
            exit(true);
        }
        if socket.send_to(data, meta.endpoint).await.is_err() {
            hprintln!("udp: echo to {} failed", meta.endpoint);
        }
    }
}
