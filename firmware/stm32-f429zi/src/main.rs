//! Grenache firmware for the NUCLEO-F429ZI (STM32F429ZI, RMII Ethernet with a LAN8742A PHY).
//!
//! A thin shell around the worker that `firmware/qemu-mps2` runs: it brings up the clocks, the
//! hardware RNG and the Ethernet MAC, gets an address by DHCP, and runs two grenache-embassy
//! tasks:
//!
//! * the tutorial's `fibonacci_worker` on TCP [`WORKER_PORT`] (the adapter's worker and its
//!   `Fibonacci` handler: Grenache's WebSocket and HTTP transports on one port);
//! * the DHT announcer, bootstrapping from [`GRAPES`] and announcing `fibonacci_worker` with
//!   `announce_peer`, so the grapes store the board's own DHCP address.
//!
//! Grapes and the worker port are fixed at build time (environment variables `GRAPES` and
//! `WORKER_PORT`, see the `config` module); a malformed value fails the build. Logs go out through
//! defmt over RTT (`probe-rs run` prints them).

#![no_std]
#![no_main]

mod config;

use defmt::{info, unwrap};
use embassy_executor::Spawner;
use embassy_net::StackResources;
use embassy_stm32::eth::{self, Ethernet, GenericPhy, PacketQueue, Sma};
use embassy_stm32::peripherals::{ETH, ETH_SMA, RNG};
use embassy_stm32::rng::{self, Rng};
use embassy_stm32::time::Hertz;
use embassy_stm32::{bind_interrupts, peripherals, Config};
use grenache_embassy::dht::{self, AnnounceConfig, DhtStorage};
use grenache_embassy::worker::{self, Fibonacci, WorkerStorage};
use static_cell::{ConstStaticCell, StaticCell};
use {defmt_rtt as _, panic_probe as _};

use config::{GRAPES, WORKER_PORT};

bind_interrupts!(struct Irqs {
    ETH => eth::InterruptHandler;
    HASH_RNG => rng::InterruptHandler<peripherals::RNG>;
});

/// Worker connections served at once (two, so back-to-back connections are not reset).
const WORKER_SLOTS: usize = 2;
/// The worker's memory: per slot, TCP windows of 384 bytes each way, 640 bytes of request
/// (a Node client's HTTP head is about 300 bytes, its frame under 200), WebSocket messages up
/// to 512 bytes, results up to 64 bytes (a Fibonacci number has at most 20 digits) and
/// 256-byte replies: 2.3 KiB a slot instead of the adapter's default 6.2 KiB.
type Worker = WorkerStorage<WORKER_SLOTS, 384, 384, 640, 512, 64, 256>;
/// Socket slots: the worker's, the DHT's and DHCP's.
const SOCKETS: usize = WORKER_SLOTS + 2;
/// The service the board announces.
const SERVICES: [&str; 1] = ["fibonacci_worker"];

type Device = Ethernet<'static, ETH, GenericPhy<Sma<'static, ETH_SMA>>>;

/// The STM32's true random number generator, as the core's [`grenache_core::Rng`]: node ids,
/// token secrets and transaction ids must not be predictable.
struct HwRng(Rng<'static, RNG>);

impl grenache_core::Rng for HwRng {
    fn next_u32(&mut self) -> u32 {
        // Blocks for a few dozen cycles until the next word is ready; resets the generator
        // on a seed or clock error (the HAL's recovery).
        self.0.next_u32()
    }
}

#[embassy_executor::task]
async fn net_task(mut runner: embassy_net::Runner<'static, Device>) -> ! {
    runner.run().await
}

#[embassy_executor::task]
async fn dht_task(
    stack: embassy_net::Stack<'static>,
    storage: &'static mut DhtStorage<HwRng>,
) -> ! {
    let config = AnnounceConfig::new(&GRAPES, &SERVICES, WORKER_PORT);
    dht::run_announcer(stack, storage, &config).await
}

#[embassy_executor::task]
async fn worker_task(stack: embassy_net::Stack<'static>, storage: &'static mut Worker) -> ! {
    worker::serve(stack, WORKER_PORT, &mut Fibonacci, storage).await
}

/// 168 MHz from the 8 MHz clock the on-board ST-LINK feeds to PH0 (HSE bypass), and the 48 MHz
/// the RNG needs; the Ethernet MAC needs HCLK of at least 25 MHz.
fn clocks() -> Config {
    use embassy_stm32::rcc::{
        AHBPrescaler, APBPrescaler, Hse, HseMode, Pll, PllMul, PllPDiv, PllPreDiv, PllQDiv,
        PllSource, Sysclk,
    };
    let mut config = Config::default();
    config.rcc.hse = Some(Hse {
        freq: Hertz(8_000_000),
        mode: HseMode::Bypass,
    });
    config.rcc.pll_src = PllSource::HSE;
    config.rcc.pll = Some(Pll {
        prediv: PllPreDiv::DIV4,
        mul: PllMul::MUL168,
        divp: Some(PllPDiv::DIV2), // 8 / 4 * 168 / 2 = 168 MHz
        divq: Some(PllQDiv::DIV7), // 8 / 4 * 168 / 7 = 48 MHz
        divr: None,
    });
    config.rcc.ahb_pre = AHBPrescaler::DIV1;
    config.rcc.apb1_pre = APBPrescaler::DIV4;
    config.rcc.apb2_pre = APBPrescaler::DIV2;
    config.rcc.sys = Sysclk::PLL1_P;
    config
}

#[embassy_executor::main]
async fn main(spawner: Spawner) {
    // Before the clocks: embassy_stm32::init waits for the 8 MHz clock on PH0 without a time
    // limit, so a board whose ST-LINK does not feed it stops after this line, not silently.
    info!(
        "boot: grenache-stm32-f429zi {}; clocks: 8 MHz HSE bypass on PH0 -> 168 MHz",
        env!("CARGO_PKG_VERSION")
    );
    let p = embassy_stm32::init(clocks());
    info!("boot: clocks up");

    let mut rng = HwRng(Rng::new(p.RNG, Irqs));
    let seed = u64::from(grenache_core::Rng::next_u32(&mut rng)) << 32
        | u64::from(grenache_core::Rng::next_u32(&mut rng));

    // A locally administered unicast MAC from the chip's unique id, so boards differ.
    let uid = embassy_stm32::uid::uid();
    let mac = [
        0x02,
        uid[0] ^ uid[6],
        uid[1] ^ uid[7],
        uid[2] ^ uid[8],
        uid[3] ^ uid[9],
        uid[4] ^ uid[10] ^ uid[11],
    ];

    // DMA frames of about 1.5 KiB each, four to send and four to receive: what embassy's
    // examples and its hardware-in-the-loop test use on this board (12 KiB). With fewer, the
    // driver drops frames that arrive while the stack is busy (slow DHCP, TCP retransmits).
    static PACKETS: ConstStaticCell<PacketQueue<4, 4>> = ConstStaticCell::new(PacketQueue::new());
    // The NUCLEO-F429ZI's RMII wiring to its LAN8742A (user manual UM1974, Ethernet section).
    let device = Ethernet::new(
        PACKETS.take(),
        p.ETH,
        Irqs,
        p.PA1,  // REF_CLK
        p.PA7,  // CRS_DV
        p.PC4,  // RXD0
        p.PC5,  // RXD1
        p.PG13, // TXD0
        p.PB13, // TXD1
        p.PG11, // TX_EN
        mac,
        p.ETH_SMA,
        p.PA2, // MDIO
        p.PC1, // MDC
    );

    let config = embassy_net::Config::dhcpv4(Default::default());
    static RESOURCES: StaticCell<StackResources<SOCKETS>> = StaticCell::new();
    let (stack, runner) =
        embassy_net::new(device, config, RESOURCES.init(StackResources::new()), seed);
    spawner.spawn(unwrap!(net_task(runner)));

    static DHT: StaticCell<DhtStorage<HwRng>> = StaticCell::new();
    let dht_storage = DHT.init(DhtStorage::new(rng));
    // Built at run time into .bss: a `ConstStaticCell` would keep the storage's initial image
    // (not all zero bytes: the WebSocket state has enum fields) in flash, 5 KiB of it.
    static WORKER: StaticCell<Worker> = StaticCell::new();
    let worker_storage = WORKER.init_with(Worker::new);
    spawner.spawn(unwrap!(worker_task(stack, worker_storage)));
    spawner.spawn(unwrap!(dht_task(stack, dht_storage)));

    info!(
        "grenache: worker on tcp {}, dht on udp {}, announcing {}",
        WORKER_PORT,
        dht::DEFAULT_DHT_PORT,
        SERVICES[0]
    );
    for grape in &GRAPES {
        let [a, b, c, d] = grape.ip;
        info!(
            "grenache: bootstrap grape {}.{}.{}.{}:{}",
            a, b, c, d, grape.port
        );
    }

    // The PHY's link (the cable and the switch port), then the DHCP lease: the two steps a
    // first boot can hang at, each logged when it is passed.
    stack.wait_link_up().await;
    info!(
        "eth: link up after {} ms",
        embassy_time::Instant::now().as_millis()
    );
    stack.wait_config_up().await;
    if let Some(v4) = stack.config_v4() {
        let [a, b, c, d] = v4.address.address().octets();
        info!(
            "net: dhcp address {}.{}.{}.{}/{} after {} ms",
            a,
            b,
            c,
            d,
            v4.address.prefix_len(),
            embassy_time::Instant::now().as_millis()
        );
    }
}
