//! `Node::cancel`: an abandoned operation gives back its slot and its transaction slots at
//! once and reports nothing.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use grenache_core::addr::PeerAddr;
use grenache_core::dht::node::{Node, NodeConfig, StartError, REPLY_BUF_LEN};
use grenache_core::rng::SplitMix64;
use grenache_core::Instant;

/// One operation slot and two transaction slots: a lookup that queries two bootstrap nodes
/// takes everything.
type SmallNode = Node<SplitMix64, 64, 16, 16, 4, 1, 16, 2>;

fn node() -> Box<SmallNode> {
    let mut node = Box::new(SmallNode::new(
        SplitMix64::new(7),
        NodeConfig::DEFAULT,
        Instant::ZERO,
    ));
    node.add_bootstrap(PeerAddr::new([10, 0, 0, 1], 20_000));
    node.add_bootstrap(PeerAddr::new([10, 0, 0, 2], 20_000));
    node
}

/// Sends what the node has to send now; returns how many datagrams.
fn drain(node: &mut SmallNode, now: Instant) -> usize {
    let mut buf = [0u8; REPLY_BUF_LEN];
    let mut sent = 0;
    while node.poll_transmit(now, &mut buf).is_some() {
        sent += 1;
        assert!(sent < 100, "the node keeps sending");
    }
    sent
}

#[test]
fn a_cancelled_lookup_frees_its_slot_and_its_queries() {
    let mut node = node();
    let now = Instant::from_millis(1);
    let op = node.lookup(now, b"svc").expect("a free slot");
    assert_eq!(drain(&mut node, now), 2);
    assert_eq!(node.lookup(now, b"other"), Err(StartError::Busy));

    assert!(node.cancel(op));
    assert!(
        node.poll_event().is_none(),
        "a cancelled operation reports nothing"
    );
    assert!(!node.cancel(op), "cancelling twice does nothing");

    // The slot is free, and so are the transaction slots: the next lookup sends at once
    // instead of waiting for the abandoned queries to time out.
    let next = node.lookup(now, b"other").expect("the slot was freed");
    assert_ne!(next, op);
    assert_eq!(drain(&mut node, now), 2);
}

#[test]
fn cancelling_an_unknown_or_finished_operation_is_refused() {
    let mut node = node();
    let now = Instant::from_millis(1);
    let op = node.lookup(now, b"svc").expect("a free slot");
    drain(&mut node, now);
    // Every query times out: the lookup finishes and is reported.
    let mut t = now;
    for _ in 0..100 {
        match node.poll_timeout() {
            Some(due) if node.poll_event().is_none() => {
                t = due.max(t);
                node.handle_timeout(t);
                drain(&mut node, t);
            }
            _ => break,
        }
    }
    assert!(!node.cancel(op));
}
