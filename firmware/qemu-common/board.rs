//! What the QEMU boards (firmware/qemu-mps2, firmware/qemu-riscv-virt) run alike, included by
//! each as `#[path = "../../qemu-common/board.rs"] mod board;` so that it is built, linted and
//! formatted as part of each board crate (a shared crate outside both workspaces would escape
//! their clippy runs).
//!
//! The board crate provides, at its root, `semihosting` (its architecture's semihosting crate,
//! `use riscv_semihosting as semihosting;` or cortex-m-semihosting: both have `hprintln!` and
//! `debug::exit`) and `type Nic` (its `embassy_net_driver::Driver`); it starts its time driver
//! and brings up its NIC, then calls [`start`] and awaits [`run`].
//!
//! On QEMU's user network the board is 10.0.2.15/24 behind QEMU's NAT and the host 10.0.2.2.
//! The board runs:
//!
//! * the tutorial's `fibonacci_worker` on TCP [`WORKER_PORT`] (grenache-embassy's worker and
//!   its `Fibonacci` handler: Grenache's WebSocket and HTTP transports on one port);
//! * grenache-embassy's DHT announcer, bootstrapping from the grape at
//!   10.0.2.2:[`GRAPE_DHT_PORT`] (the host's loopback through QEMU's NAT) and announcing
//!   `fibonacci_worker` with `announce_peer`;
//! * a UDP control port [`ECHO_PORT`]: every datagram is echoed, `quit` is answered with `bye`
//!   and ends QEMU with exit status 0.
//!
//! Without `quit` the board stops itself, with a failing status, after [`DEADLINE_SECS`].
//!
//! Through QEMU's NAT the grape sees the board's datagrams coming from 127.0.0.1, so it stores
//! `127.0.0.1:WORKER_PORT` for the service: the host forward of that TCP port to the board
//! (`hostfwd=tcp:127.0.0.1:WORKER_PORT-10.0.2.15:WORKER_PORT`) makes that address right.

use embassy_executor::Spawner;
use embassy_net::udp::{PacketMetadata, UdpSocket};
use embassy_net::{Ipv4Address, Ipv4Cidr, Stack, StackResources, StaticConfigV4};
use embassy_time::{Duration, Instant, Timer};
use grenache_core::addr::PeerAddr;
use grenache_core::rng::SplitMix64;
use grenache_embassy::config;
use grenache_embassy::dht::{self, AnnounceConfig, DhtStorage};
use grenache_embassy::worker::{self, Fibonacci, WorkerStorage};
use static_cell::StaticCell;

/// The board gives up (exit status 1) if no `quit` arrived by then, so a test never hangs.
pub const DEADLINE_SECS: u64 = 120;
/// The UDP echo and control port.
pub const ECHO_PORT: u16 = 7;
/// The grape's DHT port on the host (`GRAPE_DHT_PORT` at build time, default 20001).
pub const GRAPE_DHT_PORT: u16 = config::port_or(option_env!("GRAPE_DHT_PORT"), 20001);
/// The worker's TCP port (`WORKER_PORT` at build time, default 1337 as in the tutorial).
pub const WORKER_PORT: u16 = config::port_or(option_env!("WORKER_PORT"), 1337);
/// Worker connections served at once (two, so back-to-back connections are not reset).
const WORKER_SLOTS: usize = 2;
/// Sockets of the stack: the worker's slots, the DHT and the control port.
const SOCKETS: usize = WORKER_SLOTS + 2;
/// The service the board announces.
const SERVICES: [&str; 1] = ["fibonacci_worker"];
/// Grapes to bootstrap from: the host, as seen from QEMU's user network.
static GRAPES: [PeerAddr; 1] = [PeerAddr::new([10, 0, 2, 2], GRAPE_DHT_PORT)];

/// Prints one line to the host.
macro_rules! println {
    ($($arg:tt)*) => { print(format_args!($($arg)*)) };
}

/// Prints one line to the host's stdout through semihosting.
pub fn print(args: core::fmt::Arguments<'_>) {
    crate::semihosting::hprintln!("{}", args);
}

/// Ends QEMU through semihosting, with status 0 for success and 1 for failure.
pub fn exit(success: bool) -> ! {
    use crate::semihosting::debug;
    debug::exit(if success {
        debug::EXIT_SUCCESS
    } else {
        debug::EXIT_FAILURE
    });
    // Only reached when no debugger/QEMU handles semihosting.
    loop {
        core::hint::spin_loop();
    }
}

/// Logs why the board stops and exits with a failing status.
pub fn fail(why: &str) -> ! {
    println!("FAIL: {}", why);
    exit(false)
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    println!("PANIC: {}", info);
    exit(false)
}

/// The static address on QEMU's user network: 10.0.2.15/24, gateway 10.0.2.2 (the host).
fn net_config() -> embassy_net::Config {
    embassy_net::Config::ipv4_static(StaticConfigV4 {
        address: Ipv4Cidr::new(Ipv4Address::new(10, 0, 2, 15), 24),
        gateway: Some(Ipv4Address::new(10, 0, 2, 2)),
        dns_servers: Default::default(),
    })
}

/// The stack's seed from the MAC and a clock or counter value of the board.
///
/// Neither QEMU board has an entropy source as QEMU models it. The seed spreads ephemeral
/// ports, TCP sequence numbers, the DHT node id and its transaction ids: the MAC tells boards
/// apart and `varying` (a counter since reset) differs between boots. Not a secret, which a
/// real board must fix with its TRNG.
fn seed(mac: [u8; 6], varying: u64) -> u64 {
    u64::from_le_bytes([mac[0], mac[1], mac[2], mac[3], mac[4], mac[5], 0x9e, 0x37])
        ^ (varying << 17)
}

#[embassy_executor::task]
async fn net_task(mut runner: embassy_net::Runner<'static, crate::Nic>) -> ! {
    runner.run().await
}

#[embassy_executor::task]
async fn dht_task(stack: Stack<'static>, storage: &'static mut DhtStorage<SplitMix64>) -> ! {
    let config = AnnounceConfig::new(&GRAPES, &SERVICES, WORKER_PORT);
    dht::run_announcer(stack, storage, &config).await
}

#[embassy_executor::task]
async fn worker_task(
    stack: Stack<'static>,
    storage: &'static mut WorkerStorage<WORKER_SLOTS>,
) -> ! {
    worker::serve(stack, WORKER_PORT, &mut Fibonacci, storage).await
}

#[embassy_executor::task]
async fn deadline_task() {
    Timer::after(Duration::from_secs(DEADLINE_SECS)).await;
    fail("deadline reached without a quit datagram");
}

/// Brings up embassy-net on `nic` (a static address, [`net_config`]) and spawns its runner, the
/// worker, the DHT announcer and the deadline; returns the stack for [`run`]. `m` is the NIC's
/// MAC address, `varying` a counter of the board that differs between boots (see [`seed`]).
///
/// Not `async`: an async fn would keep its `nic` argument (the driver and its frame buffers)
/// in the caller's future next to what it moves on to, a copy of static RAM for nothing.
pub fn start(spawner: Spawner, nic: crate::Nic, m: [u8; 6], varying: u64) -> Stack<'static> {
    println!(
        "net: mac {:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
        m[0], m[1], m[2], m[3], m[4], m[5]
    );
    let seed = seed(m, varying);
    static RESOURCES: StaticCell<StackResources<SOCKETS>> = StaticCell::new();
    let (stack, runner) = embassy_net::new(
        nic,
        net_config(),
        RESOURCES.init(StackResources::new()),
        seed,
    );
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
    stack
}

/// Waits for the network, then serves the control port until `quit` ends QEMU.
pub async fn run(stack: Stack<'static>) -> ! {
    stack.wait_config_up().await;
    println!(
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
    println!(
        "udp: echo on port {}; worker on tcp {}; grape 10.0.2.2:{}",
        ECHO_PORT, WORKER_PORT, GRAPE_DHT_PORT
    );
    let mut buf = [0u8; 512];
    loop {
        let (n, meta) = match socket.recv_from(&mut buf).await {
            Ok(got) => got,
            Err(_) => continue, // truncated datagram: ignore it
        };
        let data = buf.get(..n).unwrap_or(&[]);
        if data.trim_ascii() == b"quit" {
            println!("udp: quit from {}", meta.endpoint);
            let _ = socket.send_to(b"bye", meta.endpoint).await;
            // Let the stack put the reply on the wire before QEMU goes away.
            Timer::after(Duration::from_millis(50)).await;
            exit(true);
        }
        if socket.send_to(data, meta.endpoint).await.is_err() {
            println!("udp: echo to {} failed", meta.endpoint);
        }
    }
}
