//! Arbitrary datagrams into the KRPC parser: never panics; every lazily decoded part can be
//! walked; errors re-encode to what was parsed.
#![no_main]

use grenache_core::wire::bencode;
use grenache_core::wire::krpc::{self, Message, Query};
use libfuzzer_sys::fuzz_target;

/// `parse` reads fields through an index of container ends; the plain `Dict` API must agree.
fn agrees_with_plain_lookup(data: &[u8], m: &Message<'_>) {
    let (top, _) = bencode::decode(data).expect("parsed, so it decodes");
    let top = top.as_dict().expect("parsed, so a dict");
    assert_eq!(Some(m.t()), top.get(b"t").and_then(|v| v.as_bytes()));
    let sub = |key: &[u8]| top.get(key).and_then(|v| v.as_dict());
    match m {
        Message::Response { r, .. } => {
            let d = sub(b"r");
            let get = |k: &[u8]| d.and_then(|d| d.get_encoded(k));
            assert_eq!(r.token, get(b"token").and_then(|e| e.value.as_bytes()));
            assert_eq!(r.v, get(b"v"));
            assert_eq!(r.nodes.map(|n| n.raw()), get(b"nodes").and_then(|e| e.value.as_bytes()));
            assert_eq!(
                r.values.map(|v| v.list().raw()),
                get(b"values").and_then(|e| e.value.as_list()).map(|l| l.raw())
            );
        }
        Message::Query { query: Query::Put(p), .. } => {
            let d = sub(b"a");
            let get = |k: &[u8]| d.and_then(|d| d.get_encoded(k));
            assert_eq!(p.v, get(b"v"));
            assert_eq!(p.token, get(b"token").and_then(|e| e.value.as_bytes()));
        }
        _ => {}
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(message) = krpc::parse(data) else {
        return;
    };
    agrees_with_plain_lookup(data, &message);
    match message {
        Message::Query { query, .. } => match query {
            Query::Put(p) => {
                if let Some(v) = p.v {
                    assert!(!v.raw.is_empty());
                }
                let _ = p.is_mutable();
            }
            Query::AnnouncePeer(a) | Query::Unannounce(a) => {
                let _ = a.effective_port(1);
            }
            _ => {}
        },
        Message::Response { r, .. } => {
            if let Some(nodes) = r.nodes {
                assert!(nodes.iter().count() <= nodes.raw().len() / krpc::COMPACT_NODE_LEN);
            }
            if let Some(values) = r.values {
                for peer in values.iter() {
                    assert_ne!(peer.port, 0);
                }
            }
        }
        Message::Error { t, code, msg } => {
            let mut buf = [0u8; 2048];
            if let Ok(n) = krpc::encode_error(&mut buf, t, code, msg) {
                assert_eq!(
                    krpc::parse(&buf[..n]),
                    Ok(Message::Error { t, code, msg })
                );
            }
        }
    }
});
