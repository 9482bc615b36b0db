//! Interop of the Rust Pub/Sub peers with grenache-nodejs-ws 1.0.0 (`PeerPub`, `PeerSub`)
//! through two real Node grapes: Node publisher → Rust subscriber, Rust publisher → Node
//! subscriber, and a Rust subscriber that survives its publisher restarting elsewhere.
//!
//! Needs `node` and `npm ci --prefix tests/interop`; fails loudly without them.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{free_tcp_port, run_node, spawn_node, start_grapes, wait_visible};
use grenache_tokio::pubsub::{PeerPub, PeerSub, PubMessage, SubConfig, SubEvent, Subscription};
use grenache_tokio::{Link, LinkConfig};
use serde_json::{json, Value};

const VISIBLE: Duration = Duration::from_secs(20);

fn link(grape: &str) -> Link {
    Link::new(LinkConfig::new(grape)).unwrap()
}

/// The next event within `limit`.
async fn next_event(sub: &mut Subscription, limit: Duration) -> SubEvent {
    tokio::time::timeout(limit, sub.recv())
        .await
        .unwrap_or_else(|_| panic!("no event within {limit:?}"))
        .expect("the subscription ended")
}

/// The next text message parsed as JSON, skipping binary ones, within `limit`.
async fn next_json(sub: &mut Subscription, limit: Duration) -> Value {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match next_event(sub, left).await {
            SubEvent::Message(PubMessage::Text(text)) => {
                return serde_json::from_str(&text).unwrap()
            }
            SubEvent::Message(PubMessage::Binary(_)) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_publisher_to_rust_subscriber() {
    let grapes = start_grapes().await;
    let port = free_tcp_port();
    let _publisher = spawn_node(
        "pub.js",
        &[
            ("GRAPE", grapes.a.clone()),
            ("NAME", "node_pub".to_string()),
            ("PORT", port.to_string()),
            ("TAG", "node".to_string()),
        ],
    );
    wait_visible(&grapes.b, "node_pub", port, VISIBLE).await;

    let subscriber = PeerSub::new(link(&grapes.b));
    let mut sub = subscriber
        .sub("node_pub", Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(
        next_event(&mut sub, Duration::from_secs(5)).await,
        SubEvent::Connected(format!("127.0.0.1:{port}"))
    );
    // Text frames arrive as text, Buffers as binary frames, in publishing order.
    let (mut texts, mut binaries, mut last_n) = (0, 0, 0u64);
    while texts < 3 || binaries < 3 {
        match next_event(&mut sub, Duration::from_secs(5)).await {
            SubEvent::Message(PubMessage::Text(text)) => {
                let value: Value = serde_json::from_str(&text).unwrap();
                assert_eq!(value["from"], "node");
                let n = value["n"].as_u64().unwrap();
                assert_eq!(n % 2, 1, "odd messages are text");
                assert!(n > last_n, "in order: {n} after {last_n}");
                last_n = n;
                texts += 1;
            }
            SubEvent::Message(PubMessage::Binary(data)) => {
                let text = String::from_utf8(data.to_vec()).unwrap();
                let n: u64 = text.strip_prefix("bin:").unwrap().parse().unwrap();
                assert_eq!(n % 2, 0, "even messages are binary");
                assert!(n > last_n, "in order: {n} after {last_n}");
                last_n = n;
                binaries += 1;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_publisher_to_node_subscriber() {
    let grapes = start_grapes().await;
    let publisher = Arc::new(PeerPub::new(link(&grapes.a)));
    let port = publisher.listen(0).await.unwrap().port();
    assert!(publisher.start_announcing("rust_pub"));
    wait_visible(&grapes.b, "rust_pub", port, VISIBLE).await;

    let publishing = {
        let publisher = Arc::clone(&publisher);
        tokio::spawn(async move {
            let mut i = 0u64;
            loop {
                i += 1;
                if i % 2 == 1 {
                    publisher.publish(json!({"n": i, "from": "rust"}).to_string());
                } else {
                    publisher.publish(format!("bin:{i}").into_bytes());
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };
    let out = run_node(
        "sub.js",
        &[
            ("GRAPE", grapes.b.clone()),
            ("NAME", "rust_pub".to_string()),
            ("COUNT", "6".to_string()),
        ],
        Duration::from_secs(30),
    )
    .await;
    publishing.abort();
    let lines: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 6, "{out}");
    let mut last_n = 0u64;
    for line in &lines {
        let data = line["data"].as_str().unwrap();
        let n = match line["type"].as_str().unwrap() {
            "text" => {
                let value: Value = serde_json::from_str(data).unwrap();
                assert_eq!(value["from"], "rust");
                value["n"].as_u64().unwrap()
            }
            "binary" => data.strip_prefix("bin:").unwrap().parse().unwrap(),
            other => panic!("type {other}"),
        };
        assert_eq!(line["type"] == "text", n % 2 == 1, "{line}");
        assert!(n > last_n, "in order: {n} after {last_n}");
        last_n = n;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_subscriber_survives_its_publisher_restarting() {
    let grapes = start_grapes().await;
    let start_publisher = |port: u16, tag: &str| {
        spawn_node(
            "pub.js",
            &[
                ("GRAPE", grapes.a.clone()),
                ("NAME", "restarting_pub".to_string()),
                ("PORT", port.to_string()),
                ("TAG", tag.to_string()),
            ],
        )
    };
    let first_port = free_tcp_port();
    let first = start_publisher(first_port, "first");
    wait_visible(&grapes.b, "restarting_pub", first_port, VISIBLE).await;

    let config = SubConfig {
        backoff_max: Duration::from_secs(1),
        max_attempts: 60,
        ..SubConfig::default()
    };
    let subscriber = PeerSub::with_config(link(&grapes.b), config);
    let mut sub = subscriber
        .sub("restarting_pub", Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(
        next_event(&mut sub, Duration::from_secs(5)).await,
        SubEvent::Connected(format!("127.0.0.1:{first_port}"))
    );
    assert_eq!(
        next_json(&mut sub, Duration::from_secs(5)).await["from"],
        "first"
    );

    // The publisher dies; it comes back on another port (so only a fresh lookup finds it).
    drop(first);
    let disconnected = loop {
        match next_event(&mut sub, Duration::from_secs(5)).await {
            SubEvent::Message(_) => {}
            other => break other,
        }
    };
    assert_eq!(
        disconnected,
        SubEvent::Disconnected(format!("127.0.0.1:{first_port}"))
    );
    let second_port = free_tcp_port();
    let _second = start_publisher(second_port, "second");
    // The old announce stays in the grape for a while: the subscriber must skip the dead
    // address and find the new one.
    assert_eq!(
        next_event(&mut sub, Duration::from_secs(40)).await,
        SubEvent::Connected(format!("127.0.0.1:{second_port}"))
    );
    assert_eq!(
        next_json(&mut sub, Duration::from_secs(5)).await["from"],
        "second"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscription_gives_up_after_bounded_attempts() {
    let grapes = start_grapes().await;
    let publisher = PeerPub::new(link(&grapes.a));
    let port = publisher.listen(0).await.unwrap().port();
    publisher.announce("short_lived_pub").await.unwrap();
    wait_visible(&grapes.b, "short_lived_pub", port, VISIBLE).await;
    let config = SubConfig {
        backoff_initial: Duration::from_millis(10),
        backoff_max: Duration::from_millis(50),
        max_attempts: 3,
        ..SubConfig::default()
    };
    let mut sub = PeerSub::with_config(link(&grapes.b), config)
        .sub("short_lived_pub", Duration::from_secs(10))
        .await
        .unwrap();
    assert!(matches!(
        next_event(&mut sub, Duration::from_secs(5)).await,
        SubEvent::Connected(_)
    ));
    drop(publisher);
    assert!(matches!(
        next_event(&mut sub, Duration::from_secs(5)).await,
        SubEvent::Disconnected(_)
    ));
    // The grape still lists the dead publisher: every attempt is refused, then it gives up.
    match next_event(&mut sub, Duration::from_secs(30)).await {
        SubEvent::Closed(e) => assert!(e.to_string().starts_with("ERR_SUB_CONNECT"), "{e}"),
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(sub.recv().await, None);
}
