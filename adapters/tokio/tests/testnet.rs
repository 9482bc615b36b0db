//! `grenache_tokio::testnet::Testnet`: grapes that find each other as soon as `start` returns,
//! for every size, and that leave no thread or port behind when dropped or stopped.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, UdpSocket};

use grenache_tokio::testnet::{Testnet, TestnetError, MAX_SIZE, READY_PROBE};
use grenache_tokio::LinkError;

/// The tests run one at a time: the leak test counts this process's grape threads, which a
/// testnet of a test running beside it would add to.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The threads of this process that grapes and testnets start (DHT nodes, the testnets'
/// runtimes): all named `grenache-…`.
fn grape_threads() -> usize {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter(|task| {
            let comm = std::fs::read_to_string(task.as_ref().unwrap().path().join("comm"));
            comm.is_ok_and(|name| name.starts_with("grenache-"))
        })
        .count()
}

/// The worker port announced for the service of grape `i`: any port will do, nothing
/// connects to it.
fn service_port(i: usize) -> u16 {
    40_000 + u16::try_from(i).unwrap()
}

/// Announces one service through each grape, then looks every one up through every grape,
/// right after `start`: each lookup must find its service, and only it.
async fn every_announce_is_found_through_every_grape(size: usize) {
    let _serial = SERIAL.lock().await;
    let net = Testnet::start(size).await.unwrap();
    assert_eq!(net.api_urls().len(), size);
    assert_eq!(net.dht_addrs().len(), size);
    for i in 0..size {
        net.link(i)
            .unwrap()
            .announce(&format!("service-{i}"), service_port(i))
            .await
            .unwrap_or_else(|e| panic!("announce through grape {i} of {size}: {e}"));
    }
    // What `start` waited for: every grape's probe reached the others, so every grape's
    // lookup of the probe finds all of them (each announced its own DHT port).
    let mut every_grape: Vec<String> = net.dht_addrs().iter().map(|a| a.to_string()).collect();
    every_grape.sort();
    for j in 0..size {
        let link = net.link(j).unwrap();
        let mut probes = link.lookup(READY_PROBE).await.unwrap();
        probes.sort();
        assert_eq!(
            probes, every_grape,
            "the probes through grape {j} of {size}"
        );
        for i in 0..size {
            let peers = link
                .lookup(&format!("service-{i}"))
                .await
                .unwrap_or_else(|e| panic!("service-{i} through grape {j} of {size}: {e}"));
            assert_eq!(
                peers,
                vec![format!("127.0.0.1:{}", service_port(i))],
                "service-{i} through grape {j} of {size}"
            );
        }
    }
    net.stop().await;
}

#[tokio::test]
async fn two_grapes_find_each_others_announces() {
    every_announce_is_found_through_every_grape(2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_grapes_find_each_others_announces() {
    every_announce_is_found_through_every_grape(5).await;
}

/// The largest testnet is whole too: each grape's table holds all the others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_largest_testnet_finds_each_others_announces() {
    every_announce_is_found_through_every_grape(MAX_SIZE).await;
}

#[tokio::test]
async fn one_grape_keeps_its_own_announces() {
    let _serial = SERIAL.lock().await;
    let net = Testnet::start(1).await.unwrap();
    assert_eq!(net.api_urls().len(), 1);
    assert!(net.api_urls()[0].starts_with("http://127.0.0.1:"));
    assert_eq!(net.dht_addrs()[0].ip(), &Ipv4Addr::LOCALHOST);
    let link = net.link(0).unwrap();
    // Nobody to announce to, as with a lone Node grape ...
    assert_eq!(
        link.announce("alone", 4001).await,
        Err(LinkError::Grape("No nodes to query".into()))
    );
    // ... but the grape kept the announce and answers it.
    assert_eq!(
        link.lookup("alone").await.unwrap(),
        vec!["127.0.0.1:4001".to_string()]
    );
    let missing = net.link(1).unwrap_err();
    assert!(
        matches!(missing, TestnetError::NoSuchGrape { index: 1, size: 1 }),
        "{missing:?}"
    );
    assert_eq!(missing.to_string(), "no grape 1 in a testnet of 1 (0 to 0)");
}

#[tokio::test]
async fn sizes_out_of_range_are_clear_errors() {
    let error = Testnet::start(0).await.unwrap_err();
    assert!(matches!(error, TestnetError::Empty), "{error:?}");
    assert_eq!(
        error.to_string(),
        "a testnet needs at least one grape, not 0"
    );
    let error = Testnet::start(MAX_SIZE + 1).await.unwrap_err();
    assert!(
        matches!(error, TestnetError::TooLarge { size } if size == MAX_SIZE + 1),
        "{error:?}"
    );
    assert!(
        error
            .to_string()
            .starts_with("a testnet has at most 11 grapes, not 12"),
        "{error}"
    );
}

/// Starts testnets and ends them one after the other, by `drop` or by `stop`: as soon as
/// either returns, the grapes' threads are gone and their API and DHT ports can be bound
/// again, although a Link still holds a keep-alive connection to the grape it used.
#[tokio::test]
async fn ending_a_testnet_frees_its_threads_and_ports() {
    let _serial = SERIAL.lock().await;
    let before = grape_threads();
    for round in 0..4 {
        let net = Testnet::start(3).await.unwrap();
        assert!(
            grape_threads() >= before + 4,
            "a runtime thread and three DHT threads run"
        );
        let link = net.link(round % 3).unwrap();
        assert!(matches!(
            link.lookup("nobody").await,
            Err(LinkError::LookupEmpty)
        ));
        let api_ports: Vec<u16> = net
            .api_urls()
            .iter()
            .map(|url| url.rsplit(':').next().unwrap().parse().unwrap())
            .collect();
        let dht_ports: Vec<u16> = net.dht_addrs().iter().map(SocketAddrV4::port).collect();
        if round % 2 == 0 {
            drop(net);
        } else {
            net.stop().await;
        }
        assert_eq!(
            grape_threads(),
            before,
            "round {round}: threads left running"
        );
        for port in api_ports {
            TcpListener::bind((Ipv4Addr::LOCALHOST, port))
                .unwrap_or_else(|e| panic!("round {round}: API port {port} still taken: {e}"));
        }
        for port in dht_ports {
            UdpSocket::bind((Ipv4Addr::UNSPECIFIED, port))
                .unwrap_or_else(|e| panic!("round {round}: DHT port {port} still taken: {e}"));
        }
        drop(link);
    }
}
