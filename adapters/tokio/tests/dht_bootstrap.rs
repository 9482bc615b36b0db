//! Two DHT nodes on real UDP sockets where only one bootstraps from the other: the first
//! query of a fresh socket must not be lost (it was: tokio's `try_send_to` says `WouldBlock`
//! until the socket has been seen writable), and the node that was queried learns the other.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant};

use grenache_tokio::grape::node::{Dht, DhtConfig};
use grenache_tokio::grape::GrapeDht;
use grenache_tokio::grape::{BootstrapNode, GrapeConfig};

#[tokio::test]
async fn a_one_way_bootstrap_joins_both_nodes() {
    let mut config_a = GrapeConfig::new(0, 1);
    config_a.bind = Some("127.0.0.1".into());
    let (a, _thread_a) = Dht::spawn(DhtConfig::for_grape(&config_a).unwrap()).unwrap();
    let mut config_b = GrapeConfig::new(0, 1);
    config_b.bind = Some("127.0.0.1".into());
    config_b.bootstrap = vec![BootstrapNode {
        host: "127.0.0.1".into(),
        port: a.local_addr().port(),
    }];
    let (b, _thread_b) = Dht::spawn(DhtConfig::for_grape(&config_b).unwrap()).unwrap();

    // A knows nobody until B's bootstrap query reaches it; then announcing through A works.
    let deadline = Instant::now() + Duration::from_secs(3);
    let stored = loop {
        match a.announce(b"one_way_svc".to_vec(), 4242).await {
            Ok(n) if n > 0 => break n,
            other => assert!(
                Instant::now() < deadline,
                "A still cannot announce after 3 s: {other:?}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(stored >= 1);
    let peers = b.lookup(b"one_way_svc".to_vec()).await;
    assert_eq!(peers, vec![SocketAddrV4::new(Ipv4Addr::LOCALHOST, 4242)]);
}
