//! Arbitrary bytes into the bencode decoder: never panics, and a decoded value walks back
//! exactly over the bytes it was decoded from.
#![no_main]

use grenache_core::wire::bencode::{decode, Encoded, Value};
use libfuzzer_sys::fuzz_target;

/// Checks every item of `v` against its own encoding. Recursion is bounded by MAX_DEPTH.
fn check(v: Value<'_>) {
    match v {
        Value::Int(_) | Value::Bytes(_) => {}
        Value::List(l) => {
            let mut covered = 2;
            for item in l.iter_encoded() {
                same_alone(item);
                covered += item.raw.len();
                check(item.value);
            }
            assert_eq!(covered, l.raw().len(), "list items must cover the list");
        }
        Value::Dict(d) => {
            let mut covered = 2;
            for (key, item) in d.iter_encoded() {
                same_alone(item);
                // At least `<len>:` before the key bytes.
                covered += key.len() + 2 + item.raw.len();
                check(item.value);
            }
            assert!(covered <= d.raw().len(), "dict entries exceed the dict");
            if let Some((last_key, _)) = d.iter().last() {
                assert!(d.get(last_key).is_some());
            }
        }
    }
}

/// An item re-decoded on its own is the same value and spans all of its bytes.
fn same_alone(item: Encoded<'_>) {
    let again = Encoded::decode(item.raw).expect("an item decodes alone");
    assert_eq!(again.raw.len(), item.raw.len());
    match (again.value, item.value) {
        (Value::List(a), Value::List(b)) => assert_eq!(a.raw(), b.raw()),
        (Value::Dict(a), Value::Dict(b)) => assert_eq!(a.raw(), b.raw()),
        (a, b) => assert_eq!(a, b),
    }
}

fuzz_target!(|data: &[u8]| {
    if let Ok((value, used)) = decode(data) {
        assert!(used <= data.len());
        let whole = Encoded::decode(&data[..used]).expect("the consumed prefix decodes");
        assert_eq!(whole.raw.len(), used);
        check(value);
    }
});
