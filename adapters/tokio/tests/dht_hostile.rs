//! Hostile hosts next to real DHT nodes on loopback (127.0.0.2 and up are loopback too, so a
//! socket bound there is another host as far as the node can tell): forged answers do not
//! poison lookups, and a flood of queries gets answers only within the source's budget.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use grenache_core::addr::PeerAddr;
use grenache_core::dht::id::NodeId;
use grenache_core::dht::ratelimit::RateLimit;
use grenache_core::wire::krpc;
use grenache_tokio::grape::node::{Dht, DhtConfig, DhtThread};
use grenache_tokio::grape::GrapeDht;
use grenache_tokio::grape::{BootstrapNode, GrapeConfig};

fn grape(bind: &str, bootstrap: &[SocketAddrV4]) -> (Dht, DhtThread) {
    let mut config = GrapeConfig::new(0, 1);
    config.bind = Some(bind.into());
    config.bootstrap = bootstrap
        .iter()
        .map(|a| BootstrapNode {
            host: a.ip().to_string(),
            port: a.port(),
        })
        .collect();
    let mut dht = DhtConfig::for_grape(&config).unwrap();
    // A grape binds 0.0.0.0 and answers from whichever loopback address routing picks: bound
    // to one address, it is one host of its own.
    dht.bind = SocketAddrV4::new(bind.parse().unwrap(), 0);
    Dht::spawn(dht).unwrap()
}

/// A forged `get_peers` answer with transaction id `t`, naming `peer`.
fn forged_answer(t: &[u8], peer: PeerAddr) -> Vec<u8> {
    let mut buf = [0u8; 256];
    let n = krpc::encode_response_values(&mut buf, t, &NodeId([0x66; 20]), b"tk", [peer]).unwrap();
    buf[..n].to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_on_the_queried_ip_flooding_guessed_answers_poisons_no_lookup() {
    // The honest grape A and a silent bootstrap node S (a dead grape: every lookup waits a
    // stall timeout for it, a window for the forger) share 127.0.0.2 with the forger F.
    let (a, _ta) = grape("127.0.0.2", &[]);
    let silent = UdpSocket::bind("127.0.0.2:0").unwrap();
    let silent_addr = match silent.local_addr().unwrap() {
        std::net::SocketAddr::V4(s) => s,
        other => panic!("{other}"),
    };
    let (b, _tb) = grape("127.0.0.1", &[a.local_addr(), silent_addr]);
    let honest = SocketAddrV4::new(Ipv4Addr::new(127, 0, 0, 2), 4242);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !matches!(a.announce(b"hostile_svc".to_vec(), 4242).await, Ok(n) if n > 0) {
        assert!(Instant::now() < deadline, "A never reached B");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // F sprays B with answers for every 2-byte transaction id (k-rpc-socket's counter) and
    // random 4-byte ones, naming a poisoned peer, until the lookups are done.
    let poison = PeerAddr::new([6, 6, 6, 6], 666);
    let target = b.local_addr();
    let stop = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&stop);
    let forger = std::thread::spawn(move || {
        let f = UdpSocket::bind("127.0.0.2:0").unwrap();
        let started = Instant::now();
        let mut sent = 0u64;
        let mut x: u32 = 0x9e37_79b9;
        while !flag.load(Ordering::Relaxed) && started.elapsed() < Duration::from_secs(30) {
            for tid in 0..=u16::MAX {
                let _ = f.send_to(&forged_answer(&tid.to_be_bytes(), poison), target);
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                let _ = f.send_to(&forged_answer(&x.to_be_bytes(), poison), target);
                sent += 2;
                if tid % 4096 == 0 {
                    if flag.load(Ordering::Relaxed) {
                        break;
                    }
                    // Leave the honest answers some room in B's receive buffer.
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        }
        sent
    });

    const LOOKUPS: usize = 10;
    let (mut poisoned, mut found) = (0, 0);
    for _ in 0..LOOKUPS {
        let peers = b.lookup(b"hostile_svc".to_vec()).await;
        poisoned += usize::from(peers.contains(&SocketAddrV4::new(Ipv4Addr::new(6, 6, 6, 6), 666)));
        found += usize::from(peers.contains(&honest));
    }
    stop.store(true, Ordering::Relaxed);
    let sent = forger.join().unwrap();
    drop(silent);
    assert!(sent > 100_000, "the forger sent only {sent} answers");
    assert_eq!(poisoned, 0, "{poisoned} of {LOOKUPS} lookups poisoned");
    assert!(found > 0, "no lookup found the honest worker");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_to_a_flooding_source_stay_within_its_budget() {
    let (g, _tg) = grape("127.0.0.1", &[]);
    let limit = RateLimit::DEFAULT;
    let to = g.local_addr();
    let flooder = UdpSocket::bind("127.0.0.3:0").unwrap();
    flooder.set_nonblocking(true).unwrap();
    // 47-byte get_peers without an id: the amplification vector.
    let q = b"d1:ad9:info_hash3:svce1:q9:get_peers1:t2:aa1:y1:qe";
    let started = Instant::now();
    let (mut packets, mut bytes) = (0u64, 0u64);
    let mut buf = [0u8; 2048];
    let mut sent = 0u64;
    // 4000 queries over about 2 s, reading the answers as they come.
    while started.elapsed() < Duration::from_secs(2) && sent < 4_000 {
        flooder.send_to(q, to).unwrap();
        sent += 1;
        std::thread::sleep(Duration::from_micros(400));
        while let Ok((n, _)) = flooder.recv_from(&mut buf) {
            packets += 1;
            bytes += n as u64;
        }
    }
    let quiet = Instant::now() + Duration::from_millis(300);
    while Instant::now() < quiet {
        match flooder.recv_from(&mut buf) {
            Ok((n, _)) => {
                packets += 1;
                bytes += n as u64;
            }
            Err(_) => std::thread::sleep(Duration::from_millis(5)),
        }
    }
    let secs = started.elapsed().as_secs_f64();
    let max_packets = f64::from(limit.packets_burst) + f64::from(limit.packets_per_sec) * secs;
    let max_bytes = f64::from(limit.bytes_burst) + f64::from(limit.bytes_per_sec) * secs;
    assert!(sent >= 2 * max_packets as u64, "sent only {sent} queries");
    assert!(packets > 0, "nothing answered");
    assert!(
        packets as f64 <= max_packets,
        "{packets} answers in {secs:.2} s"
    );
    assert!(bytes as f64 <= max_bytes, "{bytes} bytes in {secs:.2} s");

    // Another source is answered at once.
    let honest = UdpSocket::bind("127.0.0.4:0").unwrap();
    honest
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    honest.send_to(q, to).unwrap();
    let (n, from) = honest.recv_from(&mut buf).unwrap();
    assert_eq!(from, std::net::SocketAddr::V4(to));
    assert!(buf[..n].starts_with(b"d1:rd2:id20:"));
}

/// 40 Sybil nodes on one IP, with ids next to a service name (the name is 20 bytes: each id is
/// the name with its last byte changed), that answer every query as live nodes do, list each
/// other, and never hold a value. They introduce themselves to both grapes again and again.
/// A worker announces through grape A; lookups through grape B, A's bootstrap node and B's,
/// still find it: every traversal queries the `--bn` grapes, wherever their ids.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sybil_nodes_next_to_a_name_do_not_hide_its_worker() {
    const NAME: &[u8; 20] = b"sybil_target_service";
    let (b, _tb) = grape("127.0.0.3", &[]);
    let (a, _ta) = grape("127.0.0.1", &[b.local_addr()]);
    let grapes = [a.local_addr(), b.local_addr()];
    let sybils: Vec<(NodeId, UdpSocket)> = (0..40u8)
        .map(|i| {
            let mut id = *NAME;
            id[19] ^= i + 1;
            let socket = UdpSocket::bind("127.0.0.2:0").unwrap();
            socket
                .set_read_timeout(Some(Duration::from_millis(50)))
                .unwrap();
            (NodeId(id), socket)
        })
        .collect();
    let contacts: Vec<(NodeId, PeerAddr)> = sybils
        .iter()
        .map(|(id, s)| {
            let port = s.local_addr().unwrap().port();
            (*id, PeerAddr::new([127, 0, 0, 2], port))
        })
        .collect();
    let stop = Arc::new(AtomicBool::new(false));
    let threads: Vec<_> = sybils
        .into_iter()
        .enumerate()
        .map(|(i, (id, socket))| {
            let others: Vec<_> = contacts
                .iter()
                .cycle()
                .skip(i + 1)
                .take(8)
                .copied()
                .collect();
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                let started = Instant::now();
                let mut hello = Instant::now();
                let (mut buf, mut rx) = ([0u8; 1500], [0u8; 1500]);
                while !stop.load(Ordering::Relaxed) && started.elapsed() < Duration::from_secs(40) {
                    if hello.elapsed() >= Duration::from_millis(500) || hello == started {
                        for g in grapes {
                            let n = krpc::encode_find_node(&mut buf, b"hi", &id, NAME).unwrap();
                            let _ = socket.send_to(&buf[..n], g);
                        }
                        hello = Instant::now();
                    }
                    let Ok((n, from)) = socket.recv_from(&mut rx) else {
                        continue;
                    };
                    let Ok(krpc::Message::Query { t, query, .. }) = krpc::parse(&rx[..n]) else {
                        continue;
                    };
                    let written = match query {
                        krpc::Query::Ping | krpc::Query::AnnouncePeer(_) | krpc::Query::Put(_) => {
                            krpc::encode_response_id(&mut buf, t, &id)
                        }
                        _ => krpc::encode_response_nodes_token(
                            &mut buf,
                            t,
                            &id,
                            others.iter().copied(),
                            b"sybiltoken",
                        ),
                    };
                    if let Ok(n) = written {
                        let _ = socket.send_to(&buf[..n], from);
                    }
                }
            })
        })
        .collect();
    // Let both grapes meet the Sybils (queried, pinged, answered).
    tokio::time::sleep(Duration::from_secs(2)).await;
    let honest = SocketAddrV4::new(Ipv4Addr::new(127, 0, 0, 1), 4242);
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut found = 0;
    let mut lookups = 0;
    while lookups < 20 && Instant::now() < deadline {
        let _ = a.announce(NAME.to_vec(), 4242).await;
        lookups += 1;
        if b.lookup(NAME.to_vec()).await.contains(&honest) {
            found += 1;
        }
    }
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(lookups, 20, "20 announce/lookup rounds did not fit in 15 s");
    assert_eq!(
        found, 20,
        "{found} of 20 lookups through B found the worker"
    );
}
