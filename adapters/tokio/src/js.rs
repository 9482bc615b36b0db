//! JavaScript value semantics over `serde_json` values: the one place in this crate that says
//! what Node would make of a JSON value.
//!
//! Two kinds of users:
//! * the grape (`grape::handlers`): the Node grape never validates its input: it reads
//!   properties, tests truthiness, calls `Buffer.from` and `JSON.parse`, and lets V8 throw.
//!   Clients see the outcome (which bytes are announced, which key a put gets, which `TypeError`
//!   text comes back), so the API reproduces these operations instead of approximating them.
//!   `None` stands for JavaScript `undefined`.
//! * the clients (`link`, `rpc`): Node peers test an error slot for truthiness and build
//!   `new Error(err)` from it, so [`truthy`] and [`string`] decide what a Rust client reports.
//!
//! Numbers are printed by `grenache_core::wire::json::JsNumber`, so this crate and the core
//! write `String(n)` the same way.
//!
//! Not emulated: own `valueOf`/`toString` members of a JSON object (V8 would call them, or throw
//! `Cannot convert object to primitive value` when they are not functions); such an object is
//! treated like any other plain object.
//!
//! Every function is total: arbitrary JSON gives a value or a [`JsThrow`], never a panic.
//! Recursion follows the nesting of the value, which `serde_json` bounds (128 levels) when it
//! parses; the functions add their own depth cap for values built elsewhere.

use grenache_core::wire::json::JsNumber;
use serde_json::Value;

/// Deeper values are treated as empty by the recursive conversions (serde_json refuses to parse
/// more than 128 levels, so this only guards values that were not parsed).
const MAX_DEPTH: usize = 256;

/// The largest array-like length [`buffer_from`] materialises. Node allocates whatever `length`
/// says (`{"length":1e9}` makes a 1 GB buffer); we refuse past this, with V8's message for an
/// impossible length. Any real name, key or salt is far shorter (a UDP datagram holds < 64 KiB).
pub(crate) const MAX_ARRAY_LIKE: usize = 65_536;

/// An exception the emulated JavaScript code throws: its `message`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct JsThrow(pub String);

impl JsThrow {
    /// V8's `TypeError` for a property read on `undefined`/`null`.
    fn read_of(base: &str, key: &str) -> Self {
        JsThrow(format!(
            "Cannot read properties of {base} (reading '{key}')"
        ))
    }
}

/// `value[key]` for the keys the grape reads (`data`, `k`, `v`, `salt`, …): an object member, or
/// `undefined` on the other types (none of those keys exists on a string, number, boolean or
/// array, nor on `Object.prototype`). Throws V8's `TypeError` on `undefined` and `null`.
pub(crate) fn prop<'a>(value: Option<&'a Value>, key: &str) -> Result<Option<&'a Value>, JsThrow> {
    match value {
        None => Err(JsThrow::read_of("undefined", key)),
        Some(Value::Null) => Err(JsThrow::read_of("null", key)),
        Some(Value::Object(map)) => Ok(map.get(key)),
        Some(_) => Ok(None),
    }
}

/// `value.length`: UTF-16 length of a string, element count of an array, the `length` member of
/// an object, `undefined` for numbers and booleans. Throws on `undefined`/`null`.
pub(crate) fn length_of(value: Option<&Value>) -> Result<Option<Value>, JsThrow> {
    match value {
        None => Err(JsThrow::read_of("undefined", "length")),
        Some(Value::Null) => Err(JsThrow::read_of("null", "length")),
        Some(Value::String(s)) => Ok(Some(Value::from(s.encode_utf16().count()))),
        Some(Value::Array(items)) => Ok(Some(Value::from(items.len()))),
        Some(Value::Object(map)) => Ok(map.get("length").cloned()),
        Some(_) => Ok(None),
    }
}

/// JavaScript truthiness of a value (`undefined`, absent from the JSON, is falsy: callers with
/// an `Option` write `value.is_some_and(truthy)`). `null`, `false`, `0`, `-0` and `""` are
/// falsy; arrays and objects, even empty, are truthy.
pub(crate) fn truthy(value: &Value) -> bool {
    match value {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|x| x != 0.0 && !x.is_nan()),
        Value::String(s) => !s.is_empty(),
        Value::Array(_) | Value::Object(_) => true,
    }
}

/// `Number.isInteger(value)`.
pub(crate) fn is_integer(value: Option<&Value>) -> bool {
    match value {
        Some(Value::Number(n)) => n.as_f64().is_some_and(|x| x.is_finite() && x.trunc() == x),
        _ => false,
    }
}

/// The value of a JSON number as JavaScript holds it (a double).
pub(crate) fn number_value(value: &Value) -> Option<f64> {
    match value {
        Value::Number(n) => n.as_f64(),
        _ => None,
    }
}

/// `ToNumber(value)` (with `ToPrimitive` for arrays and objects).
pub(crate) fn to_number(value: Option<&Value>) -> f64 {
    match value {
        None => f64::NAN,
        Some(Value::Null) => 0.0,
        Some(Value::Bool(b)) => f64::from(u8::from(*b)),
        Some(Value::Number(n)) => n.as_f64().unwrap_or(f64::NAN),
        Some(Value::String(s)) => string_to_number(s),
        Some(v @ Value::Array(_)) => string_to_number(&string(v)),
        Some(Value::Object(_)) => f64::NAN,
    }
}

/// `String(value)` (`ToString`): what template literals, `Array.prototype.join`,
/// `JSON.parse(value)` and `new Error(value).message` see: `[object Object]` for objects,
/// comma-joined elements for arrays.
pub(crate) fn string(value: &Value) -> String {
    let mut out = String::new();
    write_string(value, &mut out, 0);
    out
}

fn write_string(value: &Value, out: &mut String, depth: usize) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => out.push_str(&number_to_string(n.as_f64().unwrap_or(f64::NAN))),
        Value::String(s) => out.push_str(s),
        Value::Object(_) => out.push_str("[object Object]"),
        Value::Array(items) => {
            if depth >= MAX_DEPTH {
                return;
            }
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                // join() renders null and undefined elements as empty strings.
                if !item.is_null() {
                    write_string(item, out, depth + 1);
                }
            }
        }
    }
}

/// `Number.prototype.toString()` (ECMA-262 Number::toString with radix 10), as the core writes
/// it.
pub(crate) fn number_to_string(x: f64) -> String {
    JsNumber(x).to_string()
}

/// JavaScript's `WhiteSpace` and `LineTerminator` code points (what `\s` and `trim` strip).
pub(crate) fn is_js_whitespace(c: char) -> bool {
    matches!(
        c,
        '\u{9}' | '\u{a}' | '\u{b}' | '\u{c}' | '\u{d}' | ' ' | '\u{a0}' | '\u{1680}' | '\u{2000}'
            ..='\u{200a}'
                | '\u{2028}'
                | '\u{2029}'
                | '\u{202f}'
                | '\u{205f}'
                | '\u{3000}'
                | '\u{feff}'
    )
}

/// `StringToNumber`: trimmed decimal, `0x`/`0o`/`0b` integers, `Infinity`; anything else NaN.
pub(crate) fn string_to_number(s: &str) -> f64 {
    let t = s.trim_matches(is_js_whitespace);
    if t.is_empty() {
        return 0.0;
    }
    let radix = match t.get(..2) {
        Some("0x") | Some("0X") => Some(16),
        Some("0o") | Some("0O") => Some(8),
        Some("0b") | Some("0B") => Some(2),
        _ => None,
    };
    if let (Some(radix), Some(body)) = (radix, t.get(2..)) {
        if body.is_empty() {
            return f64::NAN;
        }
        let mut acc = 0.0f64;
        for c in body.chars() {
            match c.to_digit(radix) {
                Some(d) => acc = acc * f64::from(radix) + f64::from(d),
                None => return f64::NAN,
            }
        }
        return acc;
    }
    let (sign, unsigned) = match t.as_bytes().first() {
        Some(b'+') => (1.0, t.get(1..).unwrap_or("")),
        Some(b'-') => (-1.0, t.get(1..).unwrap_or("")),
        _ => (1.0, t),
    };
    if unsigned == "Infinity" {
        return sign * f64::INFINITY;
    }
    if !is_decimal_literal(unsigned) {
        return f64::NAN;
    }
    unsigned.parse::<f64>().map_or(f64::NAN, |x| sign * x)
}

/// `StrUnsignedDecimalLiteral`: digits with an optional fraction and exponent, at least one digit
/// in the mantissa. Checked by hand because Rust's parser also takes `inf`, `NaN`, etc.
fn is_decimal_literal(s: &str) -> bool {
    let b = s.as_bytes();
    let mut i = 0;
    let int_start = i;
    while b.get(i).is_some_and(u8::is_ascii_digit) {
        i += 1;
    }
    let mut mantissa_digits = i - int_start;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let frac_start = i;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        mantissa_digits += i - frac_start;
    }
    if mantissa_digits == 0 {
        return false;
    }
    if matches!(b.get(i), Some(b'e') | Some(b'E')) {
        i += 1;
        if matches!(b.get(i), Some(b'+') | Some(b'-')) {
            i += 1;
        }
        let exp_start = i;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        if i == exp_start {
            return false;
        }
    }
    i == b.len()
}

/// `ToUint8`: what a `Uint8Array` stores for a number.
pub(crate) fn to_uint8(x: f64) -> u8 {
    if !x.is_finite() {
        return 0;
    }
    let m = x.trunc() % 256.0;
    let m = if m < 0.0 { m + 256.0 } else { m };
    // m is an integer in 0..256 here.
    m as u8
}

/// `ToInt32`: what `x << 0` computes.
pub(crate) fn to_int32(x: f64) -> i32 {
    if !x.is_finite() {
        return 0;
    }
    const TWO_32: f64 = 4_294_967_296.0;
    let m = x.trunc().rem_euclid(TWO_32);
    let m = if m >= TWO_32 / 2.0 { m - TWO_32 } else { m };
    // m is an integer in -2^31..2^31 here.
    m as i32
}

/// How `Buffer.from(string, encoding)` reads a string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Encoding {
    /// UTF-8 (`Buffer.from(s)`, `Buffer.from(s, '')`).
    Utf8,
    /// Hex pairs, stopping at the first invalid pair; an odd last digit is dropped.
    Hex,
}

/// Node's hex decoding (`Buffer.from(s, 'hex')`): never fails, stops at the first pair that is
/// not two hex digits.
pub(crate) fn hex_decode_lenient(s: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len() / 2);
    let mut chars = s.chars();
    while let (Some(a), Some(b)) = (chars.next(), chars.next()) {
        match (a.to_digit(16), b.to_digit(16)) {
            // Both digits are < 16, so the byte fits.
            (Some(hi), Some(lo)) => out.push((hi * 16 + lo) as u8),
            _ => break,
        }
    }
    out
}

/// Node 20's `ERR_INVALID_ARG_TYPE` text for `Buffer.from(value)`.
fn invalid_buffer_arg(value: Option<&Value>) -> JsThrow {
    let received = match value {
        None => "undefined".to_owned(),
        Some(Value::Null) => "null".to_owned(),
        Some(Value::Bool(b)) => format!("type boolean ({b})"),
        Some(Value::Number(n)) => {
            let x = n.as_f64().unwrap_or(f64::NAN);
            // util.inspect writes -0 as "-0"; it cuts anything over 28 characters to 25 + "...".
            let mut shown = if x == 0.0 && x.is_sign_negative() {
                "-0".to_owned()
            } else {
                number_to_string(x)
            };
            if shown.chars().count() > 28 {
                shown = format!("{}...", shown.chars().take(25).collect::<String>());
            }
            format!("type number ({shown})")
        }
        Some(Value::String(s)) => format!("type string ('{s}')"),
        Some(Value::Array(_)) => "an instance of Array".to_owned(),
        Some(Value::Object(_)) => "an instance of Object".to_owned(),
    };
    JsThrow(format!(
        "The first argument must be of type string or an instance of Buffer, ArrayBuffer, or \
         Array or an Array-like Object. Received {received}"
    ))
}

/// `Buffer.from(value)` (strings as UTF-8).
pub(crate) fn buffer_from(value: Option<&Value>) -> Result<Vec<u8>, JsThrow> {
    buffer_from_encoded(value, Encoding::Utf8)
}

/// `Buffer.from(value, encoding)` in Node 20 for a JSON value: strings are decoded with
/// `encoding`; arrays and array-like objects (`length` member) map each element through
/// `ToNumber`/`ToUint8`; `{"type":"Buffer","data":[…]}` (what `JSON.stringify(buffer)` makes)
/// gives its data; numbers, booleans, `null` and other objects throw `ERR_INVALID_ARG_TYPE`.
pub(crate) fn buffer_from_encoded(
    value: Option<&Value>,
    encoding: Encoding,
) -> Result<Vec<u8>, JsThrow> {
    match value {
        Some(Value::String(s)) => Ok(match encoding {
            Encoding::Utf8 => s.as_bytes().to_vec(),
            Encoding::Hex => hex_decode_lenient(s),
        }),
        Some(Value::Array(items)) => from_array_like(items.len() as f64, |i| items.get(i)),
        Some(Value::Object(map)) => {
            // fromObject(): an own `length` (any value but undefined) makes it array-like.
            if let Some(length) = map.get("length") {
                return match length {
                    Value::Number(n) => {
                        let len = n.as_f64().unwrap_or(f64::NAN);
                        from_array_like(len, |i| map.get(&i.to_string()))
                    }
                    _ => Ok(Vec::new()),
                };
            }
            if map.get("type").and_then(Value::as_str) == Some("Buffer") {
                if let Some(Value::Array(data)) = map.get("data") {
                    return from_array_like(data.len() as f64, |i| data.get(i));
                }
            }
            Err(invalid_buffer_arg(value))
        }
        _ => Err(invalid_buffer_arg(value)),
    }
}

/// `fromArrayLike`: `length` elements, each `ToUint8(ToNumber(element))`.
fn from_array_like<'a>(
    length: f64,
    element: impl Fn(usize) -> Option<&'a Value>,
) -> Result<Vec<u8>, JsThrow> {
    // `length <= 0` and NaN give an empty buffer; fractions are floored (ToIndex/ToLength).
    if length.is_nan() || length <= 0.0 {
        return Ok(Vec::new());
    }
    let floored = length.floor();
    if floored > MAX_ARRAY_LIKE as f64 {
        return Err(JsThrow(format!(
            "Invalid typed array length: {}",
            number_to_string(floored)
        )));
    }
    // floored is an integer in 0..=MAX_ARRAY_LIKE here.
    let n = floored as usize;
    Ok((0..n).map(|i| to_uint8(to_number(element(i)))).collect())
}

/// The Node grape's `str2buf(val, enc)` (`Grape.js:117-123`): `Buffer.from(JSON.parse(val))`,
/// and if either step throws, `Buffer.from(val, enc)` (which may throw in turn).
///
/// Reproduced as is (docs/protocol.md §13.16, kept): a salt `"\"abc\""` becomes `abc`, `"[1,2]"`
/// the bytes 1, 2, `'{"type":"Buffer","data":[…]}'` its data, so the key of a mutable item is the
/// one a Node grape computes for the same request.
pub(crate) fn str2buf(value: &Value, encoding: Encoding) -> Result<Vec<u8>, JsThrow> {
    let text = string(value);
    if let Ok(parsed) = serde_json::from_str::<Value>(&text) {
        if let Ok(bytes) = buffer_from(Some(&parsed)) {
            return Ok(bytes);
        }
    }
    buffer_from_encoded(Some(value), encoding)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn number_to_string_matches_ecma262() {
        let cases: &[(f64, &str)] = &[
            (0.0, "0"),
            (-0.0, "0"),
            (1.0, "1"),
            (-5.0, "-5"),
            (1.5, "1.5"),
            (0.1, "0.1"),
            (123456789.0, "123456789"),
            (1e21, "1e+21"),
            (1e20, "100000000000000000000"),
            (123e18, "123000000000000000000"),
            (1.5e21, "1.5e+21"),
            (1e-6, "0.000001"),
            (1e-7, "1e-7"),
            (1.25e-7, "1.25e-7"),
            (0.000123, "0.000123"),
            (9007199254740993.0, "9007199254740992"),
            (f64::INFINITY, "Infinity"),
            (f64::NEG_INFINITY, "-Infinity"),
            (f64::NAN, "NaN"),
            (1.7976931348623157e308, "1.7976931348623157e+308"),
            (5e-324, "5e-324"),
        ];
        for (x, want) in cases {
            assert_eq!(number_to_string(*x), *want, "for {x}");
        }
    }

    #[test]
    fn string_to_number_follows_js_grammar() {
        let cases: &[(&str, f64)] = &[
            ("", 0.0),
            ("  ", 0.0),
            ("12", 12.0),
            (" 12 ", 12.0),
            ("+12", 12.0),
            ("-12", -12.0),
            ("1.5", 1.5),
            (".5", 0.5),
            ("5.", 5.0),
            ("1e3", 1000.0),
            ("0x1f", 31.0),
            ("0b101", 5.0),
            ("0o17", 15.0),
            ("Infinity", f64::INFINITY),
            ("-Infinity", f64::NEG_INFINITY),
        ];
        for (s, want) in cases {
            assert_eq!(string_to_number(s), *want, "for {s:?}");
        }
        for s in [
            "abc", "inf", "NaN", "1e", "0x", "-0x1", "1 2", ".", "e5", "infinity",
        ] {
            assert!(string_to_number(s).is_nan(), "for {s:?}");
        }
    }

    #[test]
    fn uint8_and_int32_wrap_like_typed_arrays() {
        assert_eq!(to_uint8(256.0), 0);
        assert_eq!(to_uint8(257.9), 1);
        assert_eq!(to_uint8(-1.0), 255);
        assert_eq!(to_uint8(-1.5), 255);
        assert_eq!(to_uint8(f64::NAN), 0);
        assert_eq!(to_uint8(1e300), 0);
        assert_eq!(to_int32(2147483648.0), -2147483648);
        assert_eq!(to_int32(4294967297.0), 1);
        assert_eq!(to_int32(-1.9), -1);
        assert_eq!(to_int32(f64::INFINITY), 0);
    }

    #[test]
    fn property_reads_throw_like_v8() {
        assert_eq!(
            prop(Some(&Value::Null), "data"),
            Err(JsThrow(
                "Cannot read properties of null (reading 'data')".into()
            ))
        );
        assert_eq!(
            prop(None, "k"),
            Err(JsThrow(
                "Cannot read properties of undefined (reading 'k')".into()
            ))
        );
        assert_eq!(prop(Some(&json!(5)), "data"), Ok(None));
        assert_eq!(prop(Some(&json!({"data": 1})), "data"), Ok(Some(&json!(1))));
        assert_eq!(length_of(Some(&json!("é😀"))), Ok(Some(json!(3))));
    }

    #[test]
    fn buffer_from_covers_node_cases() {
        assert_eq!(
            buffer_from(Some(&json!("hé"))),
            Ok("hé".as_bytes().to_vec())
        );
        assert_eq!(
            buffer_from(Some(&json!([1, 256, -1, "2", "x", null, true, [3]]))),
            Ok(vec![1, 0, 255, 2, 0, 0, 1, 3])
        );
        assert_eq!(
            buffer_from(Some(&json!({"type": "Buffer", "data": [104, 105]}))),
            Ok(b"hi".to_vec())
        );
        assert_eq!(
            buffer_from(Some(&json!({"length": 2, "1": 7}))),
            Ok(vec![0, 7])
        );
        assert_eq!(buffer_from(Some(&json!({"length": "x"}))), Ok(vec![]));
        assert_eq!(buffer_from(Some(&json!({"length": 1.9}))), Ok(vec![0]));
        assert_eq!(
            buffer_from(Some(&json!(5))),
            Err(JsThrow(
                "The first argument must be of type string or an instance of Buffer, \
                 ArrayBuffer, or Array or an Array-like Object. Received type number (5)"
                    .into()
            ))
        );
        let null = buffer_from(Some(&Value::Null)).err().map(|t| t.0);
        assert!(null.is_some_and(|m| m.ends_with("Received null")));
        let obj = buffer_from(Some(&json!({}))).err().map(|t| t.0);
        assert!(obj.is_some_and(|m| m.ends_with("Received an instance of Object")));
        let b = buffer_from(Some(&json!(true))).err().map(|t| t.0);
        assert!(b.is_some_and(|m| m.ends_with("Received type boolean (true)")));
        let big = buffer_from(Some(&json!({"length": 1e9})))
            .err()
            .map(|t| t.0);
        assert_eq!(
            big.as_deref(),
            Some("Invalid typed array length: 1000000000")
        );
    }

    #[test]
    fn hex_decoding_stops_at_first_bad_pair() {
        assert_eq!(hex_decode_lenient("0aFf"), vec![0x0a, 0xff]);
        assert_eq!(hex_decode_lenient("0a1"), vec![0x0a]);
        assert_eq!(hex_decode_lenient("0azz11"), vec![0x0a]);
        assert_eq!(hex_decode_lenient("zz"), Vec::<u8>::new());
        assert_eq!(hex_decode_lenient("é0"), Vec::<u8>::new());
    }

    #[test]
    fn str2buf_tries_json_first() {
        // Plain hex and plain text take the fallback.
        assert_eq!(str2buf(&json!("0a0b"), Encoding::Hex), Ok(vec![10, 11]));
        assert_eq!(
            str2buf(&json!("mysalt"), Encoding::Utf8),
            Ok(b"mysalt".to_vec())
        );
        // All-digit hex parses as a JSON number, Buffer.from(number) throws: fallback to hex.
        assert_eq!(str2buf(&json!("1234"), Encoding::Hex), Ok(vec![0x12, 0x34]));
        // JSON strings and arrays are taken as JSON (docs/protocol.md §13.16, reproduced).
        assert_eq!(str2buf(&json!("\"ab\""), Encoding::Hex), Ok(b"ab".to_vec()));
        assert_eq!(str2buf(&json!("[1,2]"), Encoding::Utf8), Ok(vec![1, 2]));
        // Non-strings: JSON.parse(String(x)), then Buffer.from(x, enc).
        assert_eq!(str2buf(&json!([1, 2]), Encoding::Hex), Ok(vec![1, 2]));
        assert_eq!(str2buf(&json!(["[7]"]), Encoding::Hex), Ok(vec![7]));
        assert_eq!(
            str2buf(&json!({"type": "Buffer", "data": [1]}), Encoding::Hex),
            Ok(vec![1])
        );
        let t = str2buf(&json!(5), Encoding::Utf8).err().map(|t| t.0);
        assert!(t.is_some_and(|m| m.ends_with("Received type number (5)")));
    }

    #[test]
    fn js_string_of_arrays_joins() {
        assert_eq!(
            string(&json!([1, null, [2, 3], "x", {}])),
            "1,,2,3,x,[object Object]"
        );
        assert_eq!(to_number(Some(&json!([" 7 "]))), 7.0);
        assert!(to_number(Some(&json!([1, 2]))).is_nan());
        assert_eq!(to_number(Some(&json!([]))), 0.0);
    }

    #[test]
    fn string_matches_javascript() {
        assert_eq!(string(&json!("boom")), "boom");
        assert_eq!(string(&json!({"a": 1})), "[object Object]");
        assert_eq!(string(&json!([1, null, "x"])), "1,,x");
        assert_eq!(string(&json!(true)), "true");
        assert_eq!(string(&json!(null)), "null");
        assert_eq!(string(&json!(12)), "12");
    }

    #[test]
    fn truthy_matches_javascript() {
        for falsy in [
            json!(null),
            json!(false),
            json!(0),
            json!(""),
            json!(0.0),
            json!(-0.0),
        ] {
            assert!(!truthy(&falsy), "{falsy} should be falsy");
        }
        for truthy_value in [
            json!(true),
            json!(1),
            json!("x"),
            json!([]),
            json!({}),
            json!(-1),
        ] {
            assert!(truthy(&truthy_value), "{truthy_value} should be truthy");
        }
    }

    /// One table of JSON numbers, each with `String(JSON.parse(text))` from Node: the text
    /// parsed by serde_json and printed here, and the double printed by the core's
    /// `JsNumber`, must both give Node's string. Integers beyond 2^53 and 1e21 are where a
    /// plain `to_string` of the parsed number (serde_json's own printing) goes wrong.
    #[test]
    fn numbers_print_as_the_core_prints_them() {
        let table: &[(&str, &str)] = &[
            ("0", "0"),
            ("-0", "0"),
            ("-0.0", "0"),
            ("12", "12"),
            ("-7", "-7"),
            ("0.1", "0.1"),
            ("1.5", "1.5"),
            ("1.0", "1"),
            ("1e21", "1e+21"),
            ("1E21", "1e+21"),
            ("1e20", "100000000000000000000"),
            ("1.5e-7", "1.5e-7"),
            ("0.000001", "0.000001"),
            ("12345678901234567890", "12345678901234567000"),
            ("-9223372036854775808", "-9223372036854776000"),
            ("9007199254740993", "9007199254740992"),
            ("1.7976931348623157e308", "1.7976931348623157e+308"),
            ("5e-324", "5e-324"),
        ];
        for (text, node) in table {
            let value: Value = serde_json::from_str(text).unwrap();
            let tokio = string(&value);
            let core = JsNumber(text.parse::<f64>().unwrap()).to_string();
            assert_eq!(tokio, core, "tokio and core disagree on {text}");
            assert_eq!(tokio, *node, "String({text})");
            // Inside an error array as well: `String([n])` is `String(n)`.
            assert_eq!(string(&json!([value])), *node, "String([{text}])");
        }
    }
}
