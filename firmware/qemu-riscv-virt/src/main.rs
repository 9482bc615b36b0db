//! Grenache firmware for QEMU's RISC-V `virt` board (RV32IMAC with a virtio-net NIC).
//!
//! Boots in machine mode (`-bios none`), brings up embassy-net on virtio-net with a static
//! address (QEMU user networking: board 10.0.2.15/24, host 10.0.2.2) and runs three things, as
//! the qemu-mps2 firmware does:
//!
//! * the tutorial's `fibonacci_worker` on TCP [`WORKER_PORT`] (grenache-embassy's worker and
//!   its `Fibonacci` handler: Grenache's WebSocket and HTTP transports on one port);
//! * grenache-embassy's DHT announcer, bootstrapping from the grape at
//!   10.0.2.2:[`GRAPE_DHT_PORT`] (the host's loopback through QEMU's NAT) and announcing
//!   `fibonacci_worker` with `announce_peer`;
//! * a UDP control port 7: every datagram is echoed, `quit` is answered with `bye` and ends
//!   QEMU with exit status 0 through semihosting.
//!
//! Without `quit` the board stops itself, with a failing status, after [`DEADLINE_SECS`].
//! Logs go to the host's stdout through semihosting.
//!
//! Through QEMU's NAT the grape sees the board's datagrams coming from 127.0.0.1, so it stores
//! `127.0.0.1:WORKER_PORT` for the service: the host forward of that TCP port to the board
//! (`hostfwd=tcp:127.0.0.1:WORKER_PORT-10.0.2.15:WORKER_PORT`) makes that address right.

#![no_std]
#![no_main]

mod logger;
mod time_driver;
mod virtio_net;

use embassy_executor::Spawner;
use embassy_net::udp::{PacketMetadata, UdpSocket};
use embassy_net::{Ipv4Address, Ipv4Cidr, StackResources, StaticConfigV4};
use embassy_time::{Duration, Instant, Timer};
use grenache_core::addr::PeerAddr;
use grenache_core::rng::SplitMix64;
use grenache_embassy::config;
use grenache_embassy::dht::{self, AnnounceConfig, DhtStorage};
use grenache_embassy::worker::{self, Fibonacci, WorkerStorage};
use riscv_semihosting::{debug, hprintln};
use static_cell::StaticCell;
use virtio_net::VirtioNet;

/// The board gives up (exit status 1) if no `quit` arrived by then, so a test never hangs.
const DEADLINE_SECS: u64 = 120;
/// The UDP echo and control port.
const ECHO_PORT: u16 = 7;
/// The grape's DHT port on the host (`GRAPE_DHT_PORT` at build time, default 20001).
const GRAPE_DHT_PORT: u16 = config::port_or(option_env!("GRAPE_DHT_PORT"), 20001);
/// The worker's TCP port (`WORKER_PORT` at build time, default 1337 as in the tutorial).
const WORKER_PORT: u16 = config::port_or(option_env!("WORKER_PORT"), 1337);
/// Worker connections served at once (two, so back-to-back connections are not reset).
const WORKER_SLOTS: usize = 2;
/// The service the board announces.
const SERVICES: [&str; 1] = ["fibonacci_worker"];
/// Grapes to bootstrap from: the host, as seen from QEMU's user network.
static GRAPES: [PeerAddr; 1] = [PeerAddr::new([10, 0, 2, 2], GRAPE_DHT_PORT)];

/// Ends QEMU through semihosting, with status 0 for success and 1 for failure.
fn exit(success: bool) -> ! {
    debug::exit(if success {
        debug::EXIT_SUCCESS
    } else {
        debug::EXIT_FAILURE
    });
    // Only reached when no debugger/QEMU handles semihosting.
    loop {
        riscv::asm::wfi();
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
async fn net_task(mut runner: embassy_net::Runner<'static, VirtioNet>) -> ! {
    runner.run().await
}

#[embassy_executor::task]
async fn dht_task(
    stack: embassy_net::Stack<'static>,
    storage: &'static mut DhtStorage<SplitMix64>,
) -> ! {
    let config = AnnounceConfig::new(&GRAPES, &SERVICES, WORKER_PORT);
    dht::run_announcer(stack, storage, &config).await
}

#[embassy_executor::task]
async fn worker_task(
    stack: embassy_net::Stack<'static>,
    storage: &'static mut WorkerStorage<WORKER_SLOTS>,
) -> ! {
    worker::serve(stack, WORKER_PORT, &mut Fibonacci, storage).await
}

#[embassy_executor::task]
async fn deadline_task() {
    Timer::after(Duration::from_secs(DEADLINE_SECS)).await;
    fail("deadline reached without a quit datagram");
}

/// Brings up the timer, the logger and the NIC, spawns the tasks and serves the control port.
#[embassy_executor::main]
async fn main(spawner: Spawner) {
    time_driver::init();
    logger::init();
    hprintln!("boot: grenache-qemu-riscv-virt on QEMU virt (riscv32)");

    let nic = match VirtioNet::probe() {
        Ok(nic) => nic,
        Err(e) => {
            hprintln!("virtio-net: {:?}", e);
            fail("no usable virtio-net device");
        }
    };
    let m = nic.mac();
    hprintln!(
        "virtio-net: at {:#010x}, mac {:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
        nic.base(),
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
    // Sockets: the worker's slots, the DHT and the control port.
    static RESOURCES: StaticCell<StackResources<{ WORKER_SLOTS + 2 }>> = StaticCell::new();
    // No entropy source on this board as QEMU models it (no virtio-rng is attached). The seed
    // spreads ephemeral ports, TCP sequence numbers, the DHT node id and its transaction ids:
    // the MAC tells boards apart and `mtime` (10 MHz, QEMU's virtual clock since it started)
    // varies between boots. Not a secret, which a real board must fix with its TRNG.
    let clock = embassy_time_driver::now() ^ Instant::now().as_ticks().rotate_left(29);
    let seed = u64::from_le_bytes([m[0], m[1], m[2], m[3], m[4], m[5], 0x9e, 0x37]) ^ (clock << 17);
    let (stack, runner) =
        embassy_net::new(nic, config, RESOURCES.init(StackResources::new()), seed);
    match net_task(runner) {
        Ok(token) => spawner.spawn(token),
        Err(_) => fail("cannot spawn the network task"),
    }
    static DHT: StaticCell<DhtStorage<SplitMix64>> = StaticCell::new();
    let dht_storage = DHT.init(DhtStorage::new(SplitMix64::new(seed ^ 0x5bd1_e995)));
    static WORKER: StaticCell<WorkerStorage<WORKER_SLOTS>> = StaticCell::new();
    let worker_storage = WORKER.init(WorkerStorage::new());
    match worker_task(stack, worker_storage) {
        Ok(token) => spawner.spawn(token),
        Err(_) => fail("cannot spawn the worker task"),
    }
    match dht_task(stack, dht_storage) {
        Ok(token) => spawner.spawn(token),
        Err(_) => fail("cannot spawn the DHT task"),
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
    hprintln!(
        "udp: echo on port {}; worker on tcp {}; grape 10.0.2.2:{}",
        ECHO_PORT,
        WORKER_PORT,
        GRAPE_DHT_PORT
    );
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
