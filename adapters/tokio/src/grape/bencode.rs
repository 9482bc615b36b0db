//! Bencode as the Node grape applies it to BEP 44 values: encoding a JSON value the way
//! bencode 2.0.3 encodes the JavaScript value, and rendering a stored value the way
//! `res.v.toString()` renders what bencode 2.0.3 decodes.
//!
//! Host-side only (allocating); the wire codec of the DHT lives in `grenache_core::wire::bencode`.

use serde_json::Value;

use crate::js::{number_to_string, to_int32};

/// Deeper nesting is not encoded/rendered (serde_json's parser already stops at 128 levels).
const MAX_DEPTH: usize = 256;

/// Appends the bencoding of `value` (bencode 2.0.3 `encode`): strings as UTF-8 byte strings,
/// numbers and booleans through [`encode_number`], arrays as lists and objects as dicts with keys
/// in `Array.prototype.sort` order (UTF-16 code units); `null` list elements and dict members are
/// skipped, a top-level `null` encodes to nothing.
pub(crate) fn encode_value(value: &Value, out: &mut Vec<u8>) {
    encode_at(value, out, 0);
}

fn encode_at(value: &Value, out: &mut Vec<u8>, depth: usize) {
    if depth >= MAX_DEPTH {
        return;
    }
    match value {
        Value::Null => {}
        Value::Bool(b) => encode_number(f64::from(u8::from(*b)), out),
        Value::Number(n) => encode_number(n.as_f64().unwrap_or(f64::NAN), out),
        Value::String(s) => encode_bytes(s.as_bytes(), out),
        Value::Array(items) => {
            out.push(b'l');
            for item in items.iter().filter(|item| !item.is_null()) {
                encode_at(item, out, depth + 1);
            }
            out.push(b'e');
        }
        Value::Object(map) => {
            out.push(b'd');
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort_by(|a, b| a.encode_utf16().cmp(b.encode_utf16()));
            for key in keys {
                match map.get(key.as_str()) {
                    None | Some(Value::Null) => {}
                    Some(member) => {
                        encode_bytes(key.as_bytes(), out);
                        encode_at(member, out, depth + 1);
                    }
                }
            }
            out.push(b'e');
        }
    }
}

fn encode_bytes(bytes: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(bytes.len().to_string().as_bytes());
    out.push(b':');
    out.extend_from_slice(bytes);
}

/// bencode 2.0.3 `encode.number`, including its conversion of non-integers: the value is split
/// as `((x / 2^31) << 0) * 2^31 + ((x % 2^31) << 0)`, which truncates toward zero for
/// |x| < 2^62 (1.9 → 1, -1.9 → -1) and wraps beyond. Node only prints a warning.
pub(crate) fn encode_number(x: f64, out: &mut Vec<u8>) {
    out.push(b'i');
    out.extend_from_slice(bencode_integer_text(x).as_bytes());
    out.push(b'e');
}

/// The digits bencode 2.0.3 writes for the JavaScript number `x`: `'i' + val + 'e'` prints the
/// converted double in JavaScript format, so past 2^53 the digits are the shortest round-trip
/// ones padded with zeros (2^62 is written `4611686018427388000`).
fn bencode_integer_text(x: f64) -> String {
    const MAX_LO: f64 = 2_147_483_648.0;
    let hi = f64::from(to_int32(x / MAX_LO));
    let lo = f64::from(to_int32(x % MAX_LO));
    // |hi * 2^31 + lo| <= 2^62 + 2^31 < 1e21: printed as plain integer digits.
    number_to_string(hi * MAX_LO + lo)
}

/// The integer bencode 2.0.3 puts on the wire for the JavaScript number `x` (see
/// [`encode_number`]); always within i64.
pub(crate) fn bencode_integer(x: f64) -> i64 {
    bencode_integer_text(x).parse().unwrap_or(0)
}

/// `v.toString()` of the value bencode 2.0.3 decodes from `bytes`: a byte string as UTF-8 (invalid
/// sequences replaced by U+FFFD, as Node does), an integer in JavaScript number format, a list
/// joined with commas, a dict as `[object Object]`. `None` when `bytes` is not one bencoded value
/// (the caller then shows the bytes as UTF-8).
pub(crate) fn render_js_string(bytes: &[u8]) -> Option<String> {
    let mut decoder = Decoder {
        data: bytes,
        pos: 0,
    };
    let mut out = String::new();
    decoder.render(&mut out, 0)?;
    Some(out)
}

/// A lenient reader following bencode 2.0.3 `decode` (signs and `.` allowed in integers; trailing
/// data ignored), that renders instead of building values.
struct Decoder<'a> {
    data: &'a [u8],
    pos: usize,
}

impl Decoder<'_> {
    fn render(&mut self, out: &mut String, depth: usize) -> Option<()> {
        if depth >= MAX_DEPTH {
            return None;
        }
        match self.data.get(self.pos)? {
            b'i' => {
                let value = self.integer()?;
                out.push_str(&number_to_string(value));
            }
            b'l' => {
                self.pos += 1;
                let mut first = true;
                while *self.data.get(self.pos)? != b'e' {
                    if !first {
                        out.push(',');
                    }
                    first = false;
                    self.render(out, depth + 1)?;
                }
                self.pos += 1;
            }
            b'd' => {
                self.pos += 1;
                let mut ignored = String::new();
                while *self.data.get(self.pos)? != b'e' {
                    self.bytes()?;
                    ignored.clear();
                    self.render(&mut ignored, depth + 1)?;
                }
                self.pos += 1;
                out.push_str("[object Object]");
            }
            _ => {
                let bytes = self.bytes()?;
                out.push_str(&String::from_utf8_lossy(bytes));
            }
        }
        Some(())
    }

    /// `getIntFromBuffer` over `data[start..end]`: digits accumulated in a double, a leading `+`
    /// or `-`, a `.` ends the number, anything else is an error.
    fn parse_int(&self, start: usize, end: usize) -> Option<f64> {
        let digits = self.data.get(start..end)?;
        let mut sum = 0.0f64;
        let mut sign = 1.0f64;
        for (i, &c) in digits.iter().enumerate() {
            match c {
                b'0'..=b'9' => sum = sum * 10.0 + f64::from(c - b'0'),
                b'+' if i == 0 => {}
                b'-' if i == 0 => sign = -1.0,
                b'.' => break,
                _ => return None,
            }
        }
        Some(sum * sign)
    }

    fn find(&self, delimiter: u8) -> Option<usize> {
        let rest = self.data.get(self.pos..)?;
        rest.iter()
            .position(|&c| c == delimiter)
            .map(|i| self.pos + i)
    }

    fn integer(&mut self) -> Option<f64> {
        let end = self.find(b'e')?;
        let value = self.parse_int(self.pos + 1, end)?;
        self.pos = end + 1;
        Some(value)
    }

    fn bytes(&mut self) -> Option<&[u8]> {
        let colon = self.find(b':')?;
        let length = self.parse_int(self.pos, colon)?;
        if length.is_nan() || length < 0.0 || length > self.data.len() as f64 {
            return None;
        }
        // length is a non-negative integer-valued double no larger than the input here
        // (a fraction after '.' was dropped by parse_int).
        let start = colon + 1;
        let end = start.checked_add(length as usize)?;
        let bytes = self.data.get(start..end)?;
        self.pos = end;
        Some(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn enc(v: Value) -> Vec<u8> {
        let mut out = Vec::new();
        encode_value(&v, &mut out);
        out
    }

    #[test]
    fn encodes_like_bencode_2_0_3() {
        assert_eq!(enc(json!("hello world")), b"11:hello world");
        assert_eq!(enc(json!("é")), b"2:\xc3\xa9");
        assert_eq!(enc(json!(5)), b"i5e");
        assert_eq!(enc(json!(-5)), b"i-5e");
        assert_eq!(enc(json!(1.9)), b"i1e");
        assert_eq!(enc(json!(-1.9)), b"i-1e");
        assert_eq!(enc(json!(-0.5)), b"i0e");
        assert_eq!(enc(json!(true)), b"i1e");
        assert_eq!(enc(json!(false)), b"i0e");
        assert_eq!(enc(json!({"a": 1})), b"d1:ai1ee");
        assert_eq!(
            enc(json!({"b": 1, "a": [1, null, "x"], "c": null})),
            b"d1:ali1e1:xe1:bi1ee"
        );
        assert_eq!(enc(json!([])), b"le");
        assert_eq!(enc(json!({})), b"de");
        assert_eq!(enc(Value::Null), b"");
        // 2^62: (x / 2^31) << 0 wraps to -2^31, and the result prints in JavaScript format.
        assert_eq!(enc(json!(4611686018427387904.0)), b"i-4611686018427388000e");
        assert_eq!(enc(json!(9007199254740993.0)), b"i9007199254740992e");
        assert_eq!(enc(json!(1e300)), b"i0e");
        // Keys sort by UTF-16 code units: U+FF5E sorts after U+1F600 (a surrogate pair).
        assert_eq!(
            enc(json!({"\u{ff5e}": 1, "\u{1f600}": 2})),
            "d4:\u{1f600}i2e3:\u{ff5e}i1ee".as_bytes()
        );
    }

    #[test]
    fn integers_convert_like_bencode() {
        assert_eq!(bencode_integer(3.0), 3);
        assert_eq!(bencode_integer(2147483648.5), 2147483648);
        assert_eq!(bencode_integer(-2147483649.0), -2147483649);
        assert_eq!(bencode_integer(9007199254740993.0), 9007199254740992);
        assert_eq!(bencode_integer(1e18), 1_000_000_000_000_000_000);
        assert_eq!(
            bencode_integer(4611686018427387904.0),
            -4_611_686_018_427_388_000
        );
        assert_eq!(bencode_integer(f64::NAN), 0);
    }

    #[test]
    fn renders_decoded_values_like_to_string() {
        assert_eq!(
            render_js_string(b"11:hello world").as_deref(),
            Some("hello world")
        );
        assert_eq!(render_js_string(b"i5e").as_deref(), Some("5"));
        assert_eq!(render_js_string(b"i-5e").as_deref(), Some("-5"));
        assert_eq!(render_js_string(b"i+5.9e").as_deref(), Some("5"));
        assert_eq!(
            render_js_string(b"i12345678901234567890e").as_deref(),
            Some("12345678901234570000")
        );
        assert_eq!(
            render_js_string(b"li1e1:xli2ei3eee").as_deref(),
            Some("1,x,2,3")
        );
        assert_eq!(
            render_js_string(b"d1:ai1ee").as_deref(),
            Some("[object Object]")
        );
        assert_eq!(
            render_js_string(b"2:\xff\xfe").as_deref(),
            Some("\u{fffd}\u{fffd}")
        );
        assert_eq!(render_js_string(b"0:").as_deref(), Some(""));
        for bad in [
            &b""[..],
            b"5:abc",
            b"i5",
            b"l",
            b"d1:a",
            b"ixe",
            b"99999999999999999999:",
            b"-1:",
        ] {
            assert_eq!(render_js_string(bad), None, "{:?}", bad);
        }
    }
}
