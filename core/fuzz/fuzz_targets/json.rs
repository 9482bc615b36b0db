//! Differential fuzzing of the JSON scanner against serde_json, plus never-panics for every
//! walking and decoding function.
#![no_main]

use grenache_core::wire::json;
use libfuzzer_sys::fuzz_target;

/// Nesting depth of a text serde_json accepted (strings are skipped).
fn depth(buf: &[u8]) -> usize {
    let (mut d, mut max, mut in_str, mut esc) = (0usize, 0usize, false, false);
    for &b in buf {
        if in_str {
            if esc {
                esc = false;
            } else if b == b'\\' {
                esc = true;
            } else if b == b'"' {
                in_str = false;
            }
            continue;
        }
        match b {
            b'"' => in_str = true,
            b'[' | b'{' => {
                d += 1;
                max = max.max(d);
            }
            b']' | b'}' => d = d.saturating_sub(1),
            _ => {}
        }
    }
    max
}

fuzz_target!(|data: &[u8]| {
    let ours = json::validate(data);
    let text = std::str::from_utf8(data).ok();
    let theirs = text.is_some_and(|s| serde_json::from_str::<serde::de::IgnoredAny>(s).is_ok())
        && depth(data) <= json::MAX_DEPTH;
    assert_eq!(
        ours.is_ok(),
        theirs,
        "validate disagrees with serde_json: {ours:?}"
    );

    if let Ok(it) = json::array(data) {
        for item in it {
            if let Ok(item) = item {
                assert!(json::validate(item).is_ok());
            }
        }
    }
    if let Ok(it) = json::object(data) {
        for (k, v) in it.flatten() {
            assert!(json::validate(k).is_ok() && json::validate(v).is_ok());
        }
    }
    let _ = json::get(data, "data");
    let _ = json::kind(data);
    let _ = json::split_value(data);
    let _ = json::parse_u64(data);
    let _ = json::parse_i64(data);
    let _ = json::str_borrowed(data);

    let mut out = [0u8; 512];
    let decoded = json::decode_str(data, &mut out).ok().map(str::to_owned);
    if data.len() <= out.len() {
        let serde = text.and_then(|s| serde_json::from_str::<String>(s).ok());
        let ours_is_string = json::kind(data) == Some(json::Kind::String);
        if ours_is_string || serde.is_none() {
            assert_eq!(decoded, serde, "decode_str disagrees with serde_json");
        }
        if let Some(s) = &decoded {
            assert!(json::str_eq(data, s));
            let mut again = [0u8; 4096];
            let n = json::write_str(&mut again, s).expect("6x is enough");
            let mut back = [0u8; 512];
            assert_eq!(
                json::decode_str(&again[..n], &mut back).ok(),
                Some(s.as_str())
            );
        }
    }
});
