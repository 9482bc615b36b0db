//! A grape of the host tests: on 127.0.0.1, API on a free port, DHT on `dht_port` (0: a free
//! one), bootstrapping from the grape whose DHT port is `bootstrap`, if any.

use std::net::Ipv4Addr;

use grenache_tokio::grape::{BootstrapNode, Grape, GrapeConfig};

pub async fn grape(dht_port: u16, bootstrap: Option<u16>) -> Grape {
    let mut config = GrapeConfig::new(dht_port, 0);
    config.bind = Some(Ipv4Addr::LOCALHOST.to_string());
    config.bootstrap = bootstrap
        .map(|port| BootstrapNode {
            host: Ipv4Addr::LOCALHOST.to_string(),
            port,
        })
        .into_iter()
        .collect();
    Grape::start(config).await.expect("grape starts")
}
