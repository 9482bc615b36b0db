//! Arbitrary sequences of operations on a routing table and a lookup: nothing panics, the
//! bounds hold (bucket ≤ K, table ≤ N, lookup ≤ N, in-flight ≤ concurrency) and every lookup
//! ends once time runs out.
#![no_main]

use grenache_core::addr::PeerAddr;
use grenache_core::dht::id::{bucket_index, NodeId, ID_BITS, ID_LEN};
use grenache_core::dht::lookup::{Lookup, LookupAction, LookupConfig};
use grenache_core::dht::table::{Entry, RoutingTable, K};
use grenache_core::{Duration, Instant};
use libfuzzer_sys::fuzz_target;

/// Ids from one byte, spread over a few buckets of `OWN` and colliding on purpose.
fn id(b: u8) -> NodeId {
    let mut x = [b; ID_LEN];
    x[0] = b.rotate_left(3);
    NodeId(x)
}

fn addr(b: u8) -> PeerAddr {
    PeerAddr::new([10, 0, 0, b & 0x3f], 6881)
}

fuzz_target!(|data: &[u8]| {
    let Some((&head, rest)) = data.split_first() else {
        return;
    };
    let own = id(head);
    let target_len = usize::from(head % 24);
    let target: Vec<u8> = rest.iter().take(target_len).copied().collect();
    let rest = rest.get(target_len..).unwrap_or(&[]);
    let config = LookupConfig {
        k: usize::from(head % 5),
        concurrency: usize::from(head % 4),
        query_timeout: Duration::from_millis(u64::from(head) * 10),
        stall_timeout: Duration::from_millis(u64::from(head.rotate_left(4)) * 10),
        // Both stall rules: fixed, and shrinking to the measured round trips.
        adaptive_stall: head & 0x40 != 0,
    };
    let mut table = RoutingTable::<32>::new(own);
    let seeds = rest.iter().take(4).map(|b| {
        let id = if b & 1 == 0 { Some(id(*b)) } else { None };
        (id, addr(*b))
    });
    let Ok(mut lookup) = Lookup::<12>::new(own, &target, seeds, config, Instant::ZERO) else {
        return;
    };
    let mut now = 0u64;
    for op in rest.chunks(3) {
        let [o, a, b] = [0, 1, 2].map(|i| op.get(i).copied().unwrap_or(0));
        now += u64::from(o >> 3) * 37;
        let t = Instant::from_millis(now);
        match o & 7 {
            0 => {
                let _ = table.insert(t, id(a), addr(b));
            }
            1 => {
                if let grenache_core::dht::table::InsertOutcome::PingToEvict { stale, candidate } =
                    table.insert(t, id(a), addr(b))
                {
                    if b & 1 == 0 {
                        let _ = table.evict_and_insert(t, &stale.0, candidate.0, candidate.1);
                    } else {
                        table.seen(t, &stale.0);
                    }
                }
            }
            2 => {
                table.failed(&id(a));
                table.remove(&id(b));
            }
            3 => {
                let mut out = [Entry::EMPTY; 40];
                let n = table.closest(&target, &mut out[..usize::from(a % 40)]);
                assert!(n <= table.len());
            }
            4 => {
                let _ = lookup.poll(t);
            }
            5 => {
                let closer = [(id(b), addr(b)), (id(a ^ b), addr(a.wrapping_add(b)))];
                let token = if b & 2 == 0 { Some(&op[..]) } else { None };
                let _ = lookup.on_response(t, addr(a), id(a), closer, token);
            }
            6 => {
                lookup.on_failure(t, addr(a));
            }
            _ => {
                let _ = table
                    .stale_before(t, Duration::from_millis(u64::from(a) * 100))
                    .count();
                let _ = table.liveness_deadline(Duration::from_secs(300));
                let _ = lookup.poll_timeout();
                let _ = lookup.closest_responded().count();
            }
        }
        assert!(table.len() <= 32);
        assert!(table.get(&own).is_none());
        for bk in 0..ID_BITS {
            assert!(table.bucket_len(bk) <= K);
        }
        for e in table.iter() {
            assert!(bucket_index(&own, &e.id).is_some());
        }
        assert!(lookup.len() <= 12);
        assert!(lookup.in_flight() <= config.concurrency.max(1));
    }
    // Time running out ends every lookup.
    for _ in 0..1000 {
        now += 3000;
        if lookup.poll(Instant::from_millis(now)) == LookupAction::Finished {
            return;
        }
    }
    panic!("lookup did not finish");
});
