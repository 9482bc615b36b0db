//! Mutable BEP44 items through Rust grapes: `Link::put_mutable` signs, the grapes verify and
//! keep them, a get through the other grape returns the newest, and the sequence rules hold.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use grenache_core::dht::bep44::{mutable_key, SigningKey};
use grenache_tokio::grape::{BootstrapNode, Grape, GrapeConfig};
use grenache_tokio::{Link, LinkConfig, LinkError};
use std::time::Duration;

async fn two_grapes() -> (Grape, Grape) {
    let mut c1 = GrapeConfig::new(0, 0);
    c1.bind = Some("127.0.0.1".into());
    let g1 = Grape::start(c1).await.unwrap();
    let mut c2 = GrapeConfig::new(0, 0);
    c2.bind = Some("127.0.0.1".into());
    c2.bootstrap = vec![BootstrapNode {
        host: "127.0.0.1".into(),
        port: g1.dht_port(),
    }];
    let g2 = Grape::start(c2).await.unwrap();
    // Let grape 2's bootstrap reach grape 1 (bounded).
    tokio::time::sleep(Duration::from_millis(500)).await;
    (g1, g2)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutable_items_are_signed_verified_and_ordered_by_seq() {
    let (g1, g2) = two_grapes().await;
    let link1 = Link::new(LinkConfig::new(g1.url())).unwrap();
    let link2 = Link::new(LinkConfig::new(g2.url())).unwrap();
    let key = SigningKey::from_bytes(&[7; 32]);
    let k = key.verifying_key().to_bytes();
    let expected = hex::encode(mutable_key(&k, Some(b"mysalt")));

    let hash = tokio::time::timeout(
        Duration::from_secs(10),
        link1.put_mutable(&key, "hello mutable", 1, Some("mysalt")),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(hash, expected);

    // The same seq again: the other grape refuses it with 302, which the grape reports.
    let again = link1
        .put_mutable(&key, "hello again", 1, Some("mysalt"))
        .await
        .unwrap_err();
    assert!(
        matches!(&again, LinkError::Status { code: 302, .. }),
        "{again:?}"
    );

    link1
        .put_mutable(&key, "newer", 2, Some("mysalt"))
        .await
        .unwrap();
    let got = link2
        .get_salted(&hash, "mysalt")
        .await
        .unwrap()
        .expect("the item is found through the other grape");
    assert_eq!(got["v"], "newer", "{got}");
    assert_eq!(got["seq"], 2, "{got}");
    assert_eq!(got["k"], hex::encode(k), "{got}");

    g2.stop().await;
    g1.stop().await;
}
