//! The embassy adapter on the host: the same `grenache-embassy` code a board runs, on a Linux
//! TAP device (embassy-net-tuntap) with embassy's std executor and clock.
//!
//! `embassy_worker --tap tap0 --ip 10.77.0.2 --grape 10.77.0.1:20001 --port 8080` serves the
//! tutorial's `fibonacci_worker` (HTTP and WebSocket on `--port`) and announces it through the
//! grapes' DHT from its own address. The TAP device must exist and be up (see
//! host/tests/embassy_worker.rs, which builds a network namespace for it).
use std::net::SocketAddrV4;
use std::time::Instant;

use clap::Parser;
use embassy_executor::{Executor, Spawner};
use embassy_net::{Config, Ipv4Address, Ipv4Cidr, Runner, Stack, StackResources, StaticConfigV4};
use embassy_net_tuntap::TunTapDevice;
use grenache_core::addr::PeerAddr;
use grenache_embassy::dht::{self, AnnounceConfig, DhtStorage};
use grenache_embassy::worker::{self, Fibonacci, WorkerStorage};
use grenache_tokio::OsRng;

/// Connection slots of the worker. A slot that is closing does not accept (embassy-net has
/// no listen backlog), and an HTTP client keeps its connection open between requests: the
/// test holds two half-open connections besides, so it needs more than a board's 4.
const WORKERS: usize = 6;

#[derive(Parser, Debug)]
#[command(about = "grenache-embassy's fibonacci worker on a TAP device")]
struct Args {
    /// TAP device (must exist and be up).
    #[arg(long, default_value = "tap0")]
    tap: String,
    /// Our IPv4 address on the TAP's /24.
    #[arg(long)]
    ip: std::net::Ipv4Addr,
    /// A grape's DHT address (`ip:port`), repeatable.
    #[arg(long = "grape", required = true)]
    grapes: Vec<SocketAddrV4>,
    /// TCP port of the worker.
    #[arg(long, default_value_t = 8080)]
    port: u16,
    /// UDP port of the DHT light client.
    #[arg(long, default_value_t = dht::DEFAULT_DHT_PORT)]
    dht_port: u16,
    /// Re-announce period in seconds.
    #[arg(long, default_value_t = 30)]
    interval: u64,
    /// Service name.
    #[arg(long, default_value = "fibonacci_worker")]
    service: String,
}

struct Stderr(Instant);

impl log::Log for Stderr {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }
    fn log(&self, record: &log::Record<'_>) {
        if record.target().starts_with("grenache") {
            eprintln!("[{:8.3}] {}", self.0.elapsed().as_secs_f64(), record.args());
        }
    }
    fn flush(&self) {}
}

#[embassy_executor::task]
async fn net_task(mut runner: Runner<'static, TunTapDevice>) -> ! {
    runner.run().await
}

#[embassy_executor::task]
async fn dht_task(
    stack: Stack<'static>,
    storage: &'static mut DhtStorage<OsRng>,
    config: AnnounceConfig<'static>,
) -> ! {
    dht::run_announcer(stack, storage, &config).await
}

#[embassy_executor::task]
async fn worker_task(
    stack: Stack<'static>,
    port: u16,
    handler: &'static mut Fibonacci,
    storage: &'static mut WorkerStorage<WORKERS>,
) -> ! {
    worker::serve(stack, port, handler, storage).await
}

fn fail(what: &str, e: impl std::fmt::Debug) -> ! {
    eprintln!("embassy_worker: {what}: {e:?}");
    std::process::exit(1)
}

fn main() {
    let args = Args::parse();
    let logger: &'static Stderr = Box::leak(Box::new(Stderr(Instant::now())));
    let _ = log::set_logger(logger).map(|()| log::set_max_level(log::LevelFilter::Info));

    let device = TunTapDevice::new(&args.tap).unwrap_or_else(|e| fail("cannot open the TAP", e));
    let [a, b, c, d] = args.ip.octets();
    let config = Config::ipv4_static(StaticConfigV4 {
        address: Ipv4Cidr::new(Ipv4Address::new(a, b, c, d), 24),
        dns_servers: Default::default(),
        gateway: None,
    });
    let mut rng = OsRng::new().unwrap_or_else(|e| fail("no OS randomness", e));
    let seed = u64::from(grenache_core::Rng::next_u32(&mut rng)) << 32
        | u64::from(grenache_core::Rng::next_u32(&mut rng));
    let resources: &'static mut StackResources<{ WORKERS + 2 }> =
        Box::leak(Box::new(StackResources::new()));
    let (stack, runner) = embassy_net::new(device, config, resources, seed);

    let grapes: &'static [PeerAddr] = Box::leak(
        args.grapes
            .iter()
            .map(|g| PeerAddr::new(g.ip().octets(), g.port()))
            .collect::<Vec<_>>()
            .into_boxed_slice(),
    );
    let service: &'static str = Box::leak(args.service.into_boxed_str());
    let services: &'static [&'static str] = Box::leak(Box::new([service]));
    let mut announce = AnnounceConfig::new(grapes, services, args.port);
    announce.dht_port = args.dht_port;
    announce.interval = embassy_time::Duration::from_secs(args.interval);

    let dht_storage = Box::leak(Box::new(DhtStorage::new(rng)));
    let worker_storage = Box::leak(Box::new(WorkerStorage::<WORKERS>::new()));
    let handler = Box::leak(Box::new(Fibonacci));
    eprintln!(
        "embassy_worker: {} on {}:{} (DHT udp {}), memory: dht {} B, worker {} B",
        service,
        args.ip,
        args.port,
        args.dht_port,
        grenache_embassy::memory::DHT_STORAGE,
        grenache_embassy::memory::worker_storage::<WORKERS>()
    );

    let executor: &'static mut Executor = Box::leak(Box::new(Executor::new()));
    executor.run(|spawner: Spawner| {
        let spawned = [
            net_task(runner).map(|t| spawner.spawn(t)),
            dht_task(stack, dht_storage, announce).map(|t| spawner.spawn(t)),
            worker_task(stack, args.port, handler, worker_storage).map(|t| spawner.spawn(t)),
        ];
        for s in spawned {
            if let Err(e) = s {
                fail("cannot spawn a task", e);
            }
        }
    });
}
