//! Grenache firmware for the ESP32-C3 (RISC-V), on Wi-Fi.
//!
//! A thin shell around the worker that `firmware/qemu-mps2` runs under QEMU: the board joins
//! a Wi-Fi network as a station ([`config::SSID`], [`config::PASSWORD`]), takes an address
//! with DHCP, and runs
//!
//! * the tutorial's `fibonacci_worker` on TCP [`config::WORKER_PORT`] (grenache-embassy's
//!   worker and its `Fibonacci` handler: Grenache's WebSocket and HTTP transports on one port);
//! * grenache-embassy's DHT announcer on UDP [`config::DHT_PORT`], bootstrapping from
//!   [`config::GRAPES`] and announcing `fibonacci_worker` with `announce_peer`, so that the
//!   grapes store the board's own address (which a client on the LAN can reach).
//!
//! Everything is given at build time (see `README.md`). The Wi-Fi task reconnects whenever the
//! access point drops the board; DHCP starts over on each new link, and every announce round
//! of the DHT client starts from the grapes again.
//!
//! Memory: our code allocates nothing; esp-radio needs a heap (see [`HEAP_RECLAIMED`]).
//! Logs go to the USB-serial-JTAG port / UART0 through esp-println (`espflash monitor`).

#![no_std]
#![no_main]

mod config;

use config::{DHT_PORT, GRAPES, PASSWORD, SSID, WORKER_PORT};
use embassy_executor::Spawner;
use embassy_net::{Runner, Stack, StackResources};
use embassy_time::{Duration, Instant, Timer};
use esp_hal::clock::CpuClock;
use esp_hal::timer::timg::TimerGroup;
use esp_radio::wifi::sta::StationConfig;
use esp_radio::wifi::{
    AuthenticationMethodConfig, Config as WifiConfig, ControllerConfig, Interface, Password, Ssid,
    WifiController,
};
use grenache_embassy::dht::{self, AnnounceConfig, DhtStorage};
use grenache_embassy::worker::{self, Fibonacci, WorkerStorage};
use log::{error, info, warn};
use static_cell::StaticCell;

// The application descriptor the ESP-IDF second-stage bootloader checks before it starts us.
esp_bootloader_esp_idf::esp_app_desc!();

/// Heap in the RAM the second-stage bootloader used and left behind (`#[ram(reclaimed)]`,
/// 0x3FCCE400..0x3FCDE710 on the ESP32-C3, about 64.8 KiB): it costs the application nothing.
///
/// Only esp-radio allocates (the Wi-Fi blobs' buffers, queues and task stacks, and the WPA
/// supplicant). Every upstream Wi-Fi station example (esp-hal's `examples/wifi/embassy_dhcp`
/// among them) gives it this region plus 36 KiB of DRAM, and so does this board: the driver
/// allocates its receive buffers on demand, so a smaller heap fails under load, not at boot.
/// The status task logs the heap's use every minute.
const HEAP_RECLAIMED: usize = 64 * 1024;
/// Heap in ordinary DRAM (`.bss`), on top of [`HEAP_RECLAIMED`].
const HEAP_DRAM: usize = 36 * 1024;
/// Worker connections served at once (two, so back-to-back connections are not reset).
const WORKER_SLOTS: usize = 2;
/// embassy-net sockets: the worker's slots, the DHT's UDP socket and the DHCP client.
const SOCKETS: usize = WORKER_SLOTS + 2;
/// The service the board announces.
const SERVICES: [&str; 1] = ["fibonacci_worker"];
/// Pause between two attempts to join the access point.
const RECONNECT_DELAY: Duration = Duration::from_secs(5);
/// Period of the status line (address, heap use).
const STATUS_PERIOD: Duration = Duration::from_secs(60);
/// Pause before a reset after a panic, so that the message reaches the serial monitor.
const PANIC_RESET_MS: u32 = 5_000;

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    esp_println::println!("PANIC: {}", info);
    // A board in the field restarts rather than hang; the message above stays in the log.
    esp_hal::delay::Delay::new().delay_millis(PANIC_RESET_MS);
    esp_hal::system::software_reset()
}

/// Logs why the board cannot go on, then restarts it.
fn fail(why: &str) -> ! {
    error!("FAIL: {}", why);
    esp_hal::delay::Delay::new().delay_millis(PANIC_RESET_MS);
    esp_hal::system::software_reset()
}

/// The chip's random number generator as grenache-core's [`grenache_core::rng::Rng`].
///
/// With the radio on, the ESP32-C3 mixes RF noise into it: a true random source, so the DHT
/// node id and its transaction ids need no seeding. Created only after Wi-Fi has started.
struct HardwareRng(esp_hal::rng::Rng);

impl grenache_core::rng::Rng for HardwareRng {
    fn next_u32(&mut self) -> u32 {
        self.0.random()
    }

    fn fill_bytes(&mut self, dest: &mut [u8]) {
        self.0.read(dest);
    }
}

#[embassy_executor::task]
async fn net_task(mut runner: Runner<'static, Interface>) -> ! {
    runner.run().await
}

/// Joins the access point, and joins it again whenever it drops the board.
#[embassy_executor::task]
async fn wifi_task(mut controller: WifiController<'static>) -> ! {
    loop {
        info!("wifi: joining '{}'", SSID);
        match controller.connect_async().await {
            Ok(joined) => {
                info!(
                    "wifi: joined '{}' (bssid {:02x?}, channel {})",
                    joined.ssid.as_str(),
                    joined.bssid,
                    joined.channel
                );
                match controller.wait_for_disconnect_async().await {
                    Ok(left) => warn!(
                        "wifi: disconnected ({:?}, rssi {}); joining again",
                        left.reason, left.rssi
                    ),
                    Err(e) => warn!("wifi: link lost ({:?}); joining again", e),
                }
            }
            Err(e) => warn!(
                "wifi: cannot join '{}': {:?}; retry in {} s",
                SSID,
                e,
                RECONNECT_DELAY.as_secs()
            ),
        }
        Timer::after(RECONNECT_DELAY).await;
    }
}

#[embassy_executor::task]
async fn dht_task(stack: Stack<'static>, storage: &'static mut DhtStorage<HardwareRng>) -> ! {
    let grapes = GRAPES.as_slice();
    let mut config = AnnounceConfig::new(grapes, &SERVICES, WORKER_PORT);
    config.dht_port = DHT_PORT;
    dht::run_announcer(stack, storage, &config).await
}

#[embassy_executor::task]
async fn worker_task(
    stack: Stack<'static>,
    storage: &'static mut WorkerStorage<WORKER_SLOTS>,
) -> ! {
    worker::serve(stack, WORKER_PORT, &mut Fibonacci, storage).await
}

#[esp_rtos::main]
async fn main(spawner: Spawner) -> ! {
    esp_println::logger::init_logger(log::LevelFilter::Info);
    let peripherals = esp_hal::init(esp_hal::Config::default().with_cpu_clock(CpuClock::max()));
    esp_alloc::heap_allocator!(#[esp_hal::ram(reclaimed)] size: HEAP_RECLAIMED);
    esp_alloc::heap_allocator!(size: HEAP_DRAM);
    info!(
        "boot: grenache-esp32c3 {}, heap {} KiB",
        env!("CARGO_PKG_VERSION"),
        (HEAP_RECLAIMED + HEAP_DRAM) / 1024
    );

    // The scheduler must run before the radio starts (esp-radio's tasks live on it).
    let timg0 = TimerGroup::new(peripherals.TIMG0);
    esp_rtos::start(timg0.timer0, peripherals.FROM_CPU_INTR0);

    let Ok(ssid) = Ssid::try_from(SSID) else {
        fail("SSID is longer than 32 bytes");
    };
    let auth = if PASSWORD.is_empty() {
        AuthenticationMethodConfig::Open
    } else {
        match Password::try_from(PASSWORD) {
            Ok(p) => AuthenticationMethodConfig::Wpa2Personal(p),
            Err(_) => fail("PASSWORD is longer than 64 bytes"),
        }
    };
    let station = WifiConfig::Station(
        StationConfig::default()
            .with_ssid(ssid)
            .with_authentication(auth),
    );
    let controller = match WifiController::new(
        peripherals.WIFI,
        ControllerConfig::default().with_initial_config(station),
    ) {
        Ok(c) => c,
        Err(e) => {
            error!("wifi: {:?}", e);
            fail("cannot start Wi-Fi");
        }
    };
    let interface = Interface::station();
    let mac = interface.mac_address();
    info!("wifi: started, station mac {:02x?}", mac);

    // The radio is on from here: the RNG is a true random source.
    let rng = esp_hal::rng::Rng::new();
    let seed = u64::from(rng.random()) << 32 | u64::from(rng.random());
    static RESOURCES: StaticCell<StackResources<SOCKETS>> = StaticCell::new();
    let (stack, runner) = embassy_net::new(
        interface,
        embassy_net::Config::dhcpv4(Default::default()),
        RESOURCES.init(StackResources::new()),
        seed,
    );

    static DHT: StaticCell<DhtStorage<HardwareRng>> = StaticCell::new();
    let dht_storage = DHT.init(DhtStorage::new(HardwareRng(rng)));
    // Built at run time: a `ConstStaticCell` would put its non-zero initial value in `.data`,
    // that is 12.5 KiB of flash too.
    static WORKER: StaticCell<WorkerStorage<WORKER_SLOTS>> = StaticCell::new();
    let worker_storage = WORKER.init(WorkerStorage::new());

    match wifi_task(controller) {
        Ok(token) => spawner.spawn(token),
        Err(_) => fail("cannot spawn the Wi-Fi task"),
    }
    match net_task(runner) {
        Ok(token) => spawner.spawn(token),
        Err(_) => fail("cannot spawn the network task"),
    }
    match worker_task(stack, worker_storage) {
        Ok(token) => spawner.spawn(token),
        Err(_) => fail("cannot spawn the worker task"),
    }
    match dht_task(stack, dht_storage) {
        Ok(token) => spawner.spawn(token),
        Err(_) => fail("cannot spawn the DHT task"),
    }
    info!(
        "grenache: worker on tcp {}, dht on udp {}, announcing {}",
        WORKER_PORT, DHT_PORT, SERVICES[0]
    );
    for grape in GRAPES.as_slice() {
        info!("grenache: bootstrap grape {}", grape);
    }

    // Status: the address as DHCP gives and takes it, and the heap's use now and then.
    loop {
        stack.wait_config_up().await;
        match stack.config_v4() {
            Some(v4) => info!(
                "net: dhcp address {} (gateway {:?}) after {} ms",
                v4.address,
                v4.gateway,
                Instant::now().as_millis()
            ),
            None => info!("net: up"),
        }
        while stack.is_config_up() {
            info!(
                "status: heap used {} of {} bytes, free {}",
                esp_alloc::HEAP.used(),
                HEAP_RECLAIMED + HEAP_DRAM,
                esp_alloc::HEAP.free()
            );
            let _ = embassy_time::with_timeout(STATUS_PERIOD, stack.wait_config_down()).await;
        }
        warn!("net: address lost; waiting for Wi-Fi and DHCP");
    }
}
