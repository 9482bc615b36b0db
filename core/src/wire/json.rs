//! A bounded, allocation-free JSON scanner and writer (RFC 8259).
//!
//! Grenache frames are JSON (`[rid, key, payload]`, `[rid, err, result]`, the grape envelope
//! `{"rid":…,"data":…}`), but the payloads are the application's business: this module never
//! builds a tree. It checks the grammar and hands out *raw* byte slices of values, which the
//! caller can forward verbatim, look into ([`array()`], [`object`], [`get`]) or convert
//! ([`decode_str`], [`parse_u64`], [`parse_i64`]).
//!
//! Why not serde-json-core: no Grenache shape is fixed enough for it. The `rid` must be echoed
//! with whatever JSON type the client sent (string or number), the payload and result are
//! arbitrary JSON that a worker forwards or answers verbatim, and typed deserialisation would
//! copy what a raw slice gives for free. A board that wants typed payloads can still run
//! serde-json-core on the raw `payload` slice this module hands out.
//!
//! Bounds: nesting is limited to [`MAX_DEPTH`] and tracked in a bit stack, so scanning uses no
//! recursion and constant stack space; every function is total on arbitrary bytes.
//!
//! Strictness (RFC 8259, as `serde_json` and `JSON.parse` on valid UTF-8 text):
//! * the whole text must be UTF-8, strings must not contain raw control characters (< 0x20);
//! * whitespace is only space, tab, LF and CR; no byte-order mark, no comments, no trailing
//!   commas, no leading zeros, no `+`, `NaN` or `Infinity`;
//! * `\uXXXX` escapes of lone surrogates are *grammatical* (RFC 8259 §8.2, and `JSON.parse`
//!   accepts them), so [`validate`] accepts them; [`decode_str`] cannot turn them into a
//!   `&str` and reports [`JsonError::LoneSurrogate`].
//!
//! Node's `JSON.parse` of a *binary* WebSocket frame first converts invalid UTF-8 into U+FFFD
//! and then accepts it; we reject such text instead (a deliberate fix: the bytes are not JSON).

use core::fmt;

/// Deepest nesting of arrays and objects accepted, counting the outermost container as 1.
///
/// Grenache frames use 1 level for the frame itself plus whatever the payload needs; 32 is
/// far above what RPC payloads use and keeps the nesting state in one `u64` bit stack.
pub const MAX_DEPTH: usize = 32;

// The bit stack that remembers "object or array" per level is a u64.
const _: () = assert!(MAX_DEPTH <= 64 && MAX_DEPTH >= 2);

/// Why a JSON text, value or conversion was rejected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum JsonError {
    /// The input ended before the value was complete (this includes an empty input).
    Eof,
    /// A byte that the grammar does not allow at this position.
    Unexpected,
    /// Arrays and objects nested deeper than [`MAX_DEPTH`].
    TooDeep,
    /// Something other than whitespace follows the value.
    TrailingData,
    /// The text is not valid UTF-8.
    InvalidUtf8,
    /// A raw control character (below 0x20) inside a string.
    ControlChar,
    /// A backslash escape that JSON does not define, or a malformed `\uXXXX`.
    BadEscape,
    /// A `\uXXXX` escape of a surrogate that has no partner; grammatical, but not a `&str`.
    LoneSurrogate,
    /// The value is of another kind than the operation needs (e.g. a number for a string).
    WrongKind,
    /// The number has a fractional part, so it is not an integer.
    NotInteger,
    /// The integer does not fit the requested type.
    Overflow,
    /// The output buffer is too small.
    BufferTooSmall,
}

impl fmt::Display for JsonError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            JsonError::Eof => "unexpected end of JSON input",
            JsonError::Unexpected => "unexpected byte in JSON",
            JsonError::TooDeep => "JSON nested too deeply",
            JsonError::TrailingData => "trailing data after JSON value",
            JsonError::InvalidUtf8 => "JSON text is not UTF-8",
            JsonError::ControlChar => "control character in JSON string",
            JsonError::BadEscape => "invalid escape in JSON string",
            JsonError::LoneSurrogate => "lone surrogate in JSON string",
            JsonError::WrongKind => "JSON value of the wrong kind",
            JsonError::NotInteger => "JSON number is not an integer",
            JsonError::Overflow => "JSON integer out of range",
            JsonError::BufferTooSmall => "output buffer too small",
        })
    }
}

impl core::error::Error for JsonError {}

/// The kind of a JSON value, read from its first byte.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Kind {
    /// `{…}`
    Object,
    /// `[…]`
    Array,
    /// `"…"`
    String,
    /// `-1.5e3` and friends.
    Number,
    /// `true` or `false`.
    Bool,
    /// `null`.
    Null,
}

fn is_ws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

fn skip_ws(buf: &[u8], i: usize) -> usize {
    let rest = buf.get(i..).unwrap_or(&[]);
    i + rest.iter().position(|&b| !is_ws(b)).unwrap_or(rest.len())
}

/// `raw` without the JSON whitespace around it.
pub fn trim(raw: &[u8]) -> &[u8] {
    let start = skip_ws(raw, 0);
    let mut end = raw.len();
    while end > start && raw.get(end - 1).is_some_and(|&b| is_ws(b)) {
        end -= 1;
    }
    raw.get(start..end).unwrap_or(&[])
}

/// The kind of the value `raw` starts with (after whitespace), or `None` for a byte that
/// starts no JSON value.
///
/// Only the first byte is looked at, so this is O(1) and meant for values that were already
/// checked ([`validate`], [`array()`], [`object`] and the frame parsers hand out checked values).
pub fn kind(raw: &[u8]) -> Option<Kind> {
    match raw.get(skip_ws(raw, 0))? {
        b'{' => Some(Kind::Object),
        b'[' => Some(Kind::Array),
        b'"' => Some(Kind::String),
        b'-' | b'0'..=b'9' => Some(Kind::Number),
        b't' | b'f' => Some(Kind::Bool),
        b'n' => Some(Kind::Null),
        _ => None,
    }
}

/// Checks that `buf` is exactly one JSON value, optionally surrounded by whitespace.
pub fn validate(buf: &[u8]) -> Result<(), JsonError> {
    let start = skip_ws(buf, 0);
    let end = scan_value(buf, start, MAX_DEPTH)?;
    if skip_ws(buf, end) == buf.len() {
        Ok(())
    } else {
        Err(JsonError::TrailingData)
    }
}

/// Splits the first JSON value off `buf` (after leading whitespace): returns the value and
/// what follows it. Useful for the element-by-element walk of a text that is still arriving.
pub fn split_value(buf: &[u8]) -> Result<(&[u8], &[u8]), JsonError> {
    let start = skip_ws(buf, 0);
    let end = scan_value(buf, start, MAX_DEPTH)?;
    let value = buf.get(start..end).ok_or(JsonError::Eof)?;
    let rest = buf.get(end..).unwrap_or(&[]);
    Ok((value, rest))
}

/// Scans the value that starts at `buf[start]` (no whitespace skipping there) and returns the
/// index just past it. `max_depth` is the nesting budget left for this value.
///
/// The loop keeps one bit per open container (1 = object, 0 = array) instead of recursing.
fn scan_value(buf: &[u8], start: usize, max_depth: usize) -> Result<usize, JsonError> {
    let mut i = start;
    let mut depth = 0usize;
    let mut stack: u64 = 0;
    'value: loop {
        // Here `i` is at the first byte of a value.
        match buf.get(i) {
            None => return Err(JsonError::Eof),
            Some(&open @ (b'{' | b'[')) => {
                let is_object = open == b'{';
                if depth >= max_depth {
                    return Err(JsonError::TooDeep);
                }
                i = skip_ws(buf, i + 1);
                let close = if is_object { b'}' } else { b']' };
                if buf.get(i) == Some(&close) {
                    // An empty container is a complete value at this level.
                    i += 1;
                } else {
                    depth += 1;
                    stack = (stack << 1) | u64::from(is_object);
                    if is_object {
                        i = scan_member_key(buf, i)?;
                    }
                    continue 'value;
                }
            }
            Some(b'"') => i = scan_string(buf, i)?,
            Some(b'-' | b'0'..=b'9') => i = scan_number(buf, i)?,
            Some(b't') => i = scan_literal(buf, i, b"true")?,
            Some(b'f') => i = scan_literal(buf, i, b"false")?,
            Some(b'n') => i = scan_literal(buf, i, b"null")?,
            Some(_) => return Err(JsonError::Unexpected),
        }
        // A value just ended at `i`: close containers until one continues with a comma.
        loop {
            if depth == 0 {
                return Ok(i);
            }
            i = skip_ws(buf, i);
            let in_object = stack & 1 == 1;
            match buf.get(i) {
                None => return Err(JsonError::Eof),
                Some(b',') => {
                    i = skip_ws(buf, i + 1);
                    if in_object {
                        i = scan_member_key(buf, i)?;
                    }
                    continue 'value;
                }
                Some(b']') if !in_object => {}
                Some(b'}') if in_object => {}
                Some(_) => return Err(JsonError::Unexpected),
            }
            i += 1;
            depth -= 1;
            stack >>= 1;
        }
    }
}

/// Scans `"key" :` plus the whitespace after the colon; `i` is at the opening quote.
fn scan_member_key(buf: &[u8], i: usize) -> Result<usize, JsonError> {
    match buf.get(i) {
        Some(b'"') => {}
        None => return Err(JsonError::Eof),
        Some(_) => return Err(JsonError::Unexpected),
    }
    let i = skip_ws(buf, scan_string(buf, i)?);
    match buf.get(i) {
        Some(b':') => Ok(skip_ws(buf, i + 1)),
        None => Err(JsonError::Eof),
        Some(_) => Err(JsonError::Unexpected),
    }
}

fn scan_literal(buf: &[u8], i: usize, lit: &[u8]) -> Result<usize, JsonError> {
    let end = i.checked_add(lit.len()).ok_or(JsonError::Eof)?;
    match buf.get(i..end) {
        Some(s) if s == lit => Ok(end),
        Some(_) => Err(JsonError::Unexpected),
        None => {
            // A truncated but so far correct literal is an early end, anything else is wrong.
            let have = buf.get(i..).unwrap_or(&[]);
            if lit.starts_with(have) {
                Err(JsonError::Eof)
            } else {
                Err(JsonError::Unexpected)
            }
        }
    }
}

fn digits_end(buf: &[u8], i: usize) -> usize {
    let rest = buf.get(i..).unwrap_or(&[]);
    i + rest
        .iter()
        .position(|b| !b.is_ascii_digit())
        .unwrap_or(rest.len())
}

/// `-? (0 | [1-9][0-9]*) (\.[0-9]+)? ([eE][+-]?[0-9]+)?`; `i` is at `-` or a digit.
fn scan_number(buf: &[u8], mut i: usize) -> Result<usize, JsonError> {
    if buf.get(i) == Some(&b'-') {
        i += 1;
    }
    match buf.get(i) {
        Some(b'0') => i += 1,
        Some(b'1'..=b'9') => i = digits_end(buf, i + 1),
        None => return Err(JsonError::Eof),
        Some(_) => return Err(JsonError::Unexpected),
    }
    if buf.get(i) == Some(&b'.') {
        i += 1;
        match buf.get(i) {
            Some(b'0'..=b'9') => i = digits_end(buf, i),
            None => return Err(JsonError::Eof),
            Some(_) => return Err(JsonError::Unexpected),
        }
    }
    if matches!(buf.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(buf.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        match buf.get(i) {
            Some(b'0'..=b'9') => i = digits_end(buf, i),
            None => return Err(JsonError::Eof),
            Some(_) => return Err(JsonError::Unexpected),
        }
    }
    Ok(i)
}

fn hex_val(b: u8) -> Option<u16> {
    match b {
        b'0'..=b'9' => Some(u16::from(b - b'0')),
        b'a'..=b'f' => Some(u16::from(b - b'a' + 10)),
        b'A'..=b'F' => Some(u16::from(b - b'A' + 10)),
        _ => None,
    }
}

/// The four hex digits at `buf[i..i + 4]` as a UTF-16 code unit.
fn hex4(buf: &[u8], i: usize) -> Result<u16, JsonError> {
    let end = i.checked_add(4).ok_or(JsonError::Eof)?;
    let Some(digits) = buf.get(i..end) else {
        // Truncated: an error only if the digits that are there are hex.
        let have = buf.get(i..).unwrap_or(&[]);
        return if have.iter().all(|&b| hex_val(b).is_some()) {
            Err(JsonError::Eof)
        } else {
            Err(JsonError::BadEscape)
        };
    };
    let mut v = 0u16;
    for &b in digits {
        v = (v << 4) | hex_val(b).ok_or(JsonError::BadEscape)?;
    }
    Ok(v)
}

/// Index of the first byte at or after `i` that ends a run of plain string bytes
/// (a quote, a backslash or a control character), and whether the run had non-ASCII bytes.
fn plain_run_end(buf: &[u8], i: usize) -> (usize, bool) {
    let rest = buf.get(i..).unwrap_or(&[]);
    let n = rest
        .iter()
        .position(|&b| b == b'"' || b == b'\\' || b < 0x20)
        .unwrap_or(rest.len());
    let non_ascii = !rest.get(..n).unwrap_or(&[]).is_ascii();
    (i + n, non_ascii)
}

/// Checks that `buf[start..end]` is UTF-8. A multi-byte sequence never contains a quote, a
/// backslash or a control byte, so the runs between those can be checked one by one.
fn check_utf8(buf: &[u8], start: usize, end: usize) -> Result<(), JsonError> {
    let run = buf.get(start..end).ok_or(JsonError::Eof)?;
    core::str::from_utf8(run)
        .map(|_| ())
        .map_err(|_| JsonError::InvalidUtf8)
}

/// Scans a string; `i` is at the opening quote. Returns the index past the closing quote.
fn scan_string(buf: &[u8], mut i: usize) -> Result<usize, JsonError> {
    i += 1;
    loop {
        let (end, non_ascii) = plain_run_end(buf, i);
        if non_ascii {
            check_utf8(buf, i, end)?;
        }
        i = end;
        match buf.get(i) {
            None => return Err(JsonError::Eof),
            Some(b'"') => return Ok(i + 1),
            Some(b'\\') => {
                i += 1;
                match buf.get(i) {
                    None => return Err(JsonError::Eof),
                    Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => i += 1,
                    Some(b'u') => {
                        hex4(buf, i + 1)?;
                        i += 5;
                    }
                    Some(_) => return Err(JsonError::BadEscape),
                }
            }
            Some(_) => return Err(JsonError::ControlChar),
        }
    }
}

/// The elements of a JSON array, as raw byte slices without surrounding whitespace.
///
/// Each element is checked as it is reached; a syntax error is yielded once as `Err` and ends
/// the iteration. After the iterator returned `None` without an error, [`ArrayIter::rest`] is
/// what followed the closing `]`.
#[derive(Clone, Debug)]
pub struct ArrayIter<'a> {
    buf: &'a [u8],
    pos: usize,
    state: IterState,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum IterState {
    First,
    Next,
    Done,
}

/// Iterates over the array `raw` (leading whitespace allowed).
///
/// Fails at once with [`JsonError::WrongKind`] (or [`JsonError::Eof`] when empty) if `raw`
/// does not start with `[`. Elements get a nesting budget of `MAX_DEPTH - 1`, so walking a
/// top-level array rejects exactly what [`validate`] rejects.
pub fn array(raw: &[u8]) -> Result<ArrayIter<'_>, JsonError> {
    let pos = open(raw, b'[')?;
    Ok(ArrayIter {
        buf: raw,
        pos,
        state: IterState::First,
    })
}

fn open(raw: &[u8], bracket: u8) -> Result<usize, JsonError> {
    let i = skip_ws(raw, 0);
    match raw.get(i) {
        None => Err(JsonError::Eof),
        Some(&b) if b == bracket => Ok(i + 1),
        Some(_) => Err(JsonError::WrongKind),
    }
}

impl<'a> ArrayIter<'a> {
    /// The bytes after the closing `]` once the iteration is complete; before that, the
    /// unread part of the array.
    pub fn rest(&self) -> &'a [u8] {
        self.buf.get(self.pos..).unwrap_or(&[])
    }

    fn fail(&mut self, e: JsonError) -> Option<Result<&'a [u8], JsonError>> {
        self.state = IterState::Done;
        Some(Err(e))
    }
}

/// Where a container walk stands after skipping to the next item: an item starts at the
/// returned index, or the container closed there.
enum Step {
    Item(usize),
    Closed(usize),
}

/// Shared by arrays and objects: skip whitespace, then `,` or the closing bracket (or the
/// first item / an immediate close on the first call).
fn step(buf: &[u8], pos: usize, first: bool, close: u8) -> Result<Step, JsonError> {
    let i = skip_ws(buf, pos);
    match buf.get(i) {
        None => Err(JsonError::Eof),
        Some(&b) if b == close => Ok(Step::Closed(i + 1)),
        Some(_) if first => Ok(Step::Item(i)),
        Some(b',') => Ok(Step::Item(skip_ws(buf, i + 1))),
        Some(_) => Err(JsonError::Unexpected),
    }
}

impl<'a> Iterator for ArrayIter<'a> {
    type Item = Result<&'a [u8], JsonError>;

    fn next(&mut self) -> Option<Self::Item> {
        let first = match self.state {
            IterState::Done => return None,
            IterState::First => true,
            IterState::Next => false,
        };
        let start = match step(self.buf, self.pos, first, b']') {
            Err(e) => return self.fail(e),
            Ok(Step::Closed(end)) => {
                self.pos = end;
                self.state = IterState::Done;
                return None;
            }
            Ok(Step::Item(start)) => start,
        };
        let end = match scan_value(self.buf, start, MAX_DEPTH - 1) {
            Ok(end) => end,
            Err(e) => return self.fail(e),
        };
        match self.buf.get(start..end) {
            Some(item) => {
                self.pos = end;
                self.state = IterState::Next;
                Some(Ok(item))
            }
            None => self.fail(JsonError::Eof),
        }
    }
}

/// The members of a JSON object as `(raw key, raw value)`: the key still in quotes and
/// escaped (compare it with [`str_eq`], decode it with [`decode_str`]).
///
/// Errors and [`ObjectIter::rest`] behave as for [`ArrayIter`]. Duplicate keys are all
/// yielded, in order.
#[derive(Clone, Debug)]
pub struct ObjectIter<'a> {
    buf: &'a [u8],
    pos: usize,
    state: IterState,
}

/// Iterates over the object `raw` (leading whitespace allowed); [`JsonError::WrongKind`] if it
/// does not start with `{`.
pub fn object(raw: &[u8]) -> Result<ObjectIter<'_>, JsonError> {
    let pos = open(raw, b'{')?;
    Ok(ObjectIter {
        buf: raw,
        pos,
        state: IterState::First,
    })
}

impl<'a> ObjectIter<'a> {
    /// The bytes after the closing `}` once the iteration is complete.
    pub fn rest(&self) -> &'a [u8] {
        self.buf.get(self.pos..).unwrap_or(&[])
    }

    fn fail(&mut self, e: JsonError) -> Option<<Self as Iterator>::Item> {
        self.state = IterState::Done;
        Some(Err(e))
    }
}

impl<'a> Iterator for ObjectIter<'a> {
    type Item = Result<(&'a [u8], &'a [u8]), JsonError>;

    fn next(&mut self) -> Option<Self::Item> {
        let first = match self.state {
            IterState::Done => return None,
            IterState::First => true,
            IterState::Next => false,
        };
        let key_start = match step(self.buf, self.pos, first, b'}') {
            Err(e) => return self.fail(e),
            Ok(Step::Closed(end)) => {
                self.pos = end;
                self.state = IterState::Done;
                return None;
            }
            Ok(Step::Item(start)) => start,
        };
        let value_start = match scan_member_key(self.buf, key_start) {
            Ok(v) => v,
            Err(e) => return self.fail(e),
        };
        // scan_member_key succeeded, so the key is a complete string token here.
        let key_end = match scan_string(self.buf, key_start) {
            Ok(e) => e,
            Err(e) => return self.fail(e),
        };
        let value_end = match scan_value(self.buf, value_start, MAX_DEPTH - 1) {
            Ok(end) => end,
            Err(e) => return self.fail(e),
        };
        match (
            self.buf.get(key_start..key_end),
            self.buf.get(value_start..value_end),
        ) {
            (Some(k), Some(v)) => {
                self.pos = value_end;
                self.state = IterState::Next;
                Some(Ok((k, v)))
            }
            _ => self.fail(JsonError::Eof),
        }
    }
}

/// The raw value of member `key` in the object `raw`, `None` if absent.
///
/// With duplicate keys the **last** one wins, as with `JSON.parse` (and `serde_json`'s map):
/// the object is always walked to its end, which also checks it.
pub fn get<'a>(raw: &'a [u8], key: &str) -> Result<Option<&'a [u8]>, JsonError> {
    let mut found = None;
    for member in object(raw)? {
        let (k, v) = member?;
        if str_eq(k, key) {
            found = Some(v);
        }
    }
    Ok(found)
}

/// Decodes one escape starting just after the backslash at `buf[i]`. Returns the character
/// (or `Err(LoneSurrogate)` etc.) and the index after the escape.
fn decode_escape(buf: &[u8], i: usize) -> Result<(char, usize), JsonError> {
    let c = match buf.get(i) {
        None => return Err(JsonError::Eof),
        Some(b'"') => '"',
        Some(b'\\') => '\\',
        Some(b'/') => '/',
        Some(b'b') => '\u{8}',
        Some(b'f') => '\u{c}',
        Some(b'n') => '\n',
        Some(b'r') => '\r',
        Some(b't') => '\t',
        Some(b'u') => {
            let hi = hex4(buf, i + 1)?;
            let after = i + 5;
            return match hi {
                0xD800..=0xDBFF => {
                    // A high surrogate must be followed by `\u` and a low surrogate.
                    if buf.get(after) != Some(&b'\\') || buf.get(after + 1) != Some(&b'u') {
                        return Err(JsonError::LoneSurrogate);
                    }
                    let lo = hex4(buf, after + 2)?;
                    if !(0xDC00..=0xDFFF).contains(&lo) {
                        return Err(JsonError::LoneSurrogate);
                    }
                    let cp = 0x10000 + ((u32::from(hi) - 0xD800) << 10) + (u32::from(lo) - 0xDC00);
                    let c = char::from_u32(cp).ok_or(JsonError::LoneSurrogate)?;
                    Ok((c, after + 6))
                }
                0xDC00..=0xDFFF => Err(JsonError::LoneSurrogate),
                _ => {
                    let c = char::from_u32(u32::from(hi)).ok_or(JsonError::LoneSurrogate)?;
                    Ok((c, after))
                }
            };
        }
        Some(_) => return Err(JsonError::BadEscape),
    };
    Ok((c, i + 1))
}

/// Checks that `raw` (whitespace around it allowed) starts with a quote; returns the index
/// after it and the index where the trimmed token ends.
fn string_bounds(raw: &[u8]) -> Result<(usize, usize), JsonError> {
    let t = trim(raw);
    let start = skip_ws(raw, 0);
    match t.first() {
        Some(b'"') => Ok((start + 1, start + t.len())),
        Some(_) => Err(JsonError::WrongKind),
        None => Err(JsonError::Eof),
    }
}

/// Decodes the JSON string `raw` (quotes included, whitespace around it allowed) into `out`
/// and returns the text, handling every escape including `\uXXXX` surrogate pairs.
///
/// Fails on anything that is not exactly one string token, on a lone surrogate, and with
/// [`JsonError::BufferTooSmall`] when `out` is shorter than the decoded text (which is never
/// longer than `raw`).
pub fn decode_str<'b>(raw: &[u8], out: &'b mut [u8]) -> Result<&'b str, JsonError> {
    let (mut i, end) = string_bounds(raw)?;
    let mut n = 0usize;
    loop {
        let (run_end, non_ascii) = plain_run_end(raw, i);
        if non_ascii {
            check_utf8(raw, i, run_end)?;
        }
        let run = raw.get(i..run_end).ok_or(JsonError::Eof)?;
        let dst_end = n.checked_add(run.len()).ok_or(JsonError::BufferTooSmall)?;
        out.get_mut(n..dst_end)
            .ok_or(JsonError::BufferTooSmall)?
            .copy_from_slice(run);
        n = dst_end;
        i = run_end;
        match raw.get(i) {
            None => return Err(JsonError::Eof),
            Some(b'"') => {
                if i + 1 != end {
                    return Err(JsonError::TrailingData);
                }
                break;
            }
            Some(b'\\') => {
                let (c, next) = decode_escape(raw, i + 1)?;
                let mut tmp = [0u8; 4];
                let enc = c.encode_utf8(&mut tmp).as_bytes();
                let dst_end = n.checked_add(enc.len()).ok_or(JsonError::BufferTooSmall)?;
                out.get_mut(n..dst_end)
                    .ok_or(JsonError::BufferTooSmall)?
                    .copy_from_slice(enc);
                n = dst_end;
                i = next;
            }
            Some(_) => return Err(JsonError::ControlChar),
        }
    }
    let text = out.get(..n).ok_or(JsonError::BufferTooSmall)?;
    // Runs were checked and escapes produce whole characters, so this cannot fail; it is the
    // safe way to get a `&str` without `unsafe`.
    core::str::from_utf8(text).map_err(|_| JsonError::InvalidUtf8)
}

/// The text of the JSON string `raw` without copying, when it has no escapes.
///
/// `None` if `raw` is not a valid string token or contains a backslash (then use
/// [`decode_str`]).
pub fn str_borrowed(raw: &[u8]) -> Option<&str> {
    let (start, end) = string_bounds(raw).ok()?;
    let (run_end, _) = plain_run_end(raw, start);
    if run_end.checked_add(1) != Some(end) || raw.get(run_end) != Some(&b'"') {
        return None;
    }
    core::str::from_utf8(raw.get(start..run_end)?).ok()
}

/// Whether the JSON string `raw` (quotes included) decodes to exactly `s`.
///
/// No buffer needed: escapes are decoded on the fly. `false` for anything that is not a
/// valid string token, including strings with lone surrogates.
pub fn str_eq(raw: &[u8], s: &str) -> bool {
    let Ok((mut i, end)) = string_bounds(raw) else {
        return false;
    };
    let s = s.as_bytes();
    let mut j = 0usize;
    loop {
        let (run_end, non_ascii) = plain_run_end(raw, i);
        let Some(run) = raw.get(i..run_end) else {
            return false;
        };
        let Some(want) = s.get(j..j + run.len()) else {
            return false;
        };
        // Equal bytes to a `&str` that are cut at character boundaries are UTF-8 themselves,
        // but the run may end inside a character of `s`; check it like decode_str does.
        if run != want || (non_ascii && core::str::from_utf8(run).is_err()) {
            return false;
        }
        j += run.len();
        i = run_end;
        match raw.get(i) {
            Some(b'"') => return i + 1 == end && j == s.len(),
            Some(b'\\') => {
                let Ok((c, next)) = decode_escape(raw, i + 1) else {
                    return false;
                };
                let mut tmp = [0u8; 4];
                let enc = c.encode_utf8(&mut tmp).as_bytes();
                if s.get(j..j + enc.len()) != Some(enc) {
                    return false;
                }
                j += enc.len();
                i = next;
            }
            _ => return false,
        }
    }
}

/// A JSON string token (quotes and escapes included) borrowed from a checked text.
///
/// Keeps the raw bytes so that nothing is copied until the caller asks: most keys have no
/// escapes and are read in place with [`JsonStr::borrowed`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct JsonStr<'a> {
    raw: &'a [u8],
}

impl<'a> JsonStr<'a> {
    /// Wraps `raw` if it is exactly one valid JSON string token (whitespace around it is
    /// trimmed).
    pub fn new(raw: &'a [u8]) -> Option<Self> {
        let t = trim(raw);
        if t.first() != Some(&b'"') {
            return None;
        }
        match scan_string(t, 0) {
            Ok(end) if end == t.len() => Some(JsonStr { raw: t }),
            _ => None,
        }
    }

    /// The token as it appeared on the wire, quotes included.
    pub fn raw(&self) -> &'a [u8] {
        self.raw
    }

    /// The text without copying, if the token has no escapes.
    pub fn borrowed(&self) -> Option<&'a str> {
        str_borrowed(self.raw)
    }

    /// The text, decoded into `out` ([`decode_str`]).
    pub fn decode<'b>(&self, out: &'b mut [u8]) -> Result<&'b str, JsonError> {
        decode_str(self.raw, out)
    }

    /// Whether the text equals `s` ([`str_eq`]).
    pub fn eq_str(&self, s: &str) -> bool {
        str_eq(self.raw, s)
    }
}

/// Parses the JSON number `raw` as a `u64`.
///
/// Any spelling of an integer is accepted, as `Number.isInteger` would: `1337`, `1337.0`,
/// `1.337e3`, `-0`. A fractional value gives [`JsonError::NotInteger`], a value above
/// `u64::MAX` or below zero [`JsonError::Overflow`]. Unlike JavaScript numbers, the result is
/// exact (no rounding above 2^53).
pub fn parse_u64(raw: &[u8]) -> Result<u64, JsonError> {
    let (negative, magnitude) = parse_integer(raw)?;
    if negative && magnitude != 0 {
        return Err(JsonError::Overflow);
    }
    u64::try_from(magnitude).map_err(|_| JsonError::Overflow)
}

/// Parses the JSON number `raw` as an `i64`; see [`parse_u64`] for what is accepted.
pub fn parse_i64(raw: &[u8]) -> Result<i64, JsonError> {
    let (negative, magnitude) = parse_integer(raw)?;
    if negative {
        // i64::MIN has magnitude 2^63, one more than i64::MAX.
        0i128
            .checked_sub_unsigned(magnitude)
            .and_then(|v| i64::try_from(v).ok())
            .ok_or(JsonError::Overflow)
    } else {
        i64::try_from(magnitude).map_err(|_| JsonError::Overflow)
    }
}

/// Sign and magnitude of an integral JSON number. The magnitude is capped well below
/// `u128::MAX` (anything above 2^64 is an overflow for both callers anyway).
fn parse_integer(raw: &[u8]) -> Result<(bool, u128), JsonError> {
    let t = trim(raw);
    if t.is_empty() {
        return Err(JsonError::Eof);
    }
    match t.first() {
        Some(b'-' | b'0'..=b'9') => {}
        Some(_) => return Err(JsonError::WrongKind),
        None => return Err(JsonError::Eof),
    }
    let end = scan_number(t, 0)?;
    if end != t.len() {
        return Err(JsonError::TrailingData);
    }
    let negative = t.first() == Some(&b'-');
    let body = if negative {
        t.get(1..).unwrap_or(&[])
    } else {
        t
    };
    // Split into integer digits, fraction digits and the exponent.
    let int_end = digits_end(body, 0);
    let int_digits = body.get(..int_end).unwrap_or(&[]);
    let mut k = int_end;
    let mut frac_digits: &[u8] = &[];
    if body.get(k) == Some(&b'.') {
        let f_end = digits_end(body, k + 1);
        frac_digits = body.get(k + 1..f_end).unwrap_or(&[]);
        k = f_end;
    }
    // The exponent, saturated: beyond ±10^6 the result is 0 or an overflow either way.
    const EXP_CAP: i64 = 1_000_000;
    let mut exp: i64 = 0;
    if matches!(body.get(k), Some(b'e' | b'E')) {
        k += 1;
        let exp_negative = body.get(k) == Some(&b'-');
        if matches!(body.get(k), Some(b'+' | b'-')) {
            k += 1;
        }
        for &d in body.get(k..).unwrap_or(&[]) {
            exp = (exp * 10 + i64::from(d - b'0')).min(EXP_CAP);
        }
        if exp_negative {
            exp = -exp;
        }
    }
    // value = digits(int ++ frac) * 10^(exp - frac_len), with the digit string's trailing
    // zeros moved into the exponent and its leading zeros dropped.
    let all = || int_digits.iter().chain(frac_digits.iter()).copied();
    let total = int_digits.len() + frac_digits.len();
    let trailing_zeros = all().rev().take_while(|&d| d == b'0').count();
    if trailing_zeros == total {
        return Ok((negative, 0));
    }
    let frac_len = i64::try_from(frac_digits.len()).map_err(|_| JsonError::Overflow)?;
    let tz = i64::try_from(trailing_zeros).map_err(|_| JsonError::Overflow)?;
    let scale = exp - frac_len + tz;
    if scale < 0 {
        return Err(JsonError::NotInteger);
    }
    let mut magnitude: u128 = 0;
    for d in all().take(total - trailing_zeros) {
        magnitude = magnitude
            .checked_mul(10)
            .and_then(|m| m.checked_add(u128::from(d - b'0')))
            .filter(|&m| m <= u128::from(u64::MAX))
            .ok_or(JsonError::Overflow)?;
    }
    for _ in 0..scale {
        magnitude = magnitude
            .checked_mul(10)
            .filter(|&m| m <= u128::from(u64::MAX))
            .ok_or(JsonError::Overflow)?;
    }
    Ok((negative, magnitude))
}

/// Writes compact JSON into a borrowed buffer, as `JSON.stringify` spells it.
///
/// Each call appends one piece; on [`JsonError::BufferTooSmall`] the length is left where it
/// was before the call.
#[derive(Debug)]
pub struct Writer<'a> {
    buf: &'a mut [u8],
    len: usize,
}

impl<'a> Writer<'a> {
    /// A writer that starts at the beginning of `buf`.
    pub fn new(buf: &'a mut [u8]) -> Self {
        Writer { buf, len: 0 }
    }

    /// Bytes written so far.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing has been written yet.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The bytes written so far.
    pub fn as_bytes(&self) -> &[u8] {
        self.buf.get(..self.len).unwrap_or(&[])
    }

    /// Consumes the writer and returns the written part of the buffer.
    pub fn finish(self) -> &'a [u8] {
        let len = self.len;
        let buf: &'a [u8] = self.buf;
        buf.get(..len).unwrap_or(&[])
    }

    /// Appends bytes verbatim: punctuation, or a raw JSON value taken from a parsed text.
    pub fn raw(&mut self, bytes: &[u8]) -> Result<(), JsonError> {
        let end = self
            .len
            .checked_add(bytes.len())
            .ok_or(JsonError::BufferTooSmall)?;
        self.buf
            .get_mut(self.len..end)
            .ok_or(JsonError::BufferTooSmall)?
            .copy_from_slice(bytes);
        self.len = end;
        Ok(())
    }

    /// Appends `s` as a JSON string with `JSON.stringify`'s escapes: `\"`, `\\`, `\b`, `\f`,
    /// `\n`, `\r`, `\t`, other control characters as `\u00xx` (lowercase hex); everything
    /// else, `/`, DEL, U+2028 and U+2029 included, verbatim.
    pub fn string(&mut self, s: &str) -> Result<(), JsonError> {
        let start = self.len;
        let r = self.string_inner(s);
        if r.is_err() {
            self.len = start;
        }
        r
    }

    fn string_inner(&mut self, s: &str) -> Result<(), JsonError> {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        self.raw(b"\"")?;
        let bytes = s.as_bytes();
        let mut run_start = 0;
        for (i, &b) in bytes.iter().enumerate() {
            let short: Option<&[u8]> = match b {
                b'"' => Some(b"\\\""),
                b'\\' => Some(b"\\\\"),
                0x08 => Some(b"\\b"),
                0x0c => Some(b"\\f"),
                b'\n' => Some(b"\\n"),
                b'\r' => Some(b"\\r"),
                b'\t' => Some(b"\\t"),
                0x00..=0x1f => None,
                _ => continue,
            };
            self.raw(bytes.get(run_start..i).unwrap_or(&[]))?;
            match short {
                Some(esc) => self.raw(esc)?,
                None => self.raw(&[
                    b'\\',
                    b'u',
                    b'0',
                    b'0',
                    HEX[usize::from(b >> 4)],
                    HEX[usize::from(b & 0xf)],
                ])?,
            }
            run_start = i + 1;
        }
        self.raw(bytes.get(run_start..).unwrap_or(&[]))?;
        self.raw(b"\"")
    }

    /// Appends an unsigned integer.
    pub fn u64(&mut self, n: u64) -> Result<(), JsonError> {
        self.decimal(n, false)
    }

    /// Appends a signed integer.
    pub fn i64(&mut self, n: i64) -> Result<(), JsonError> {
        self.decimal(n.unsigned_abs(), n < 0)
    }

    fn decimal(&mut self, mut n: u64, negative: bool) -> Result<(), JsonError> {
        // u64::MAX has 20 digits, plus one for the sign.
        let mut digits = [0u8; 21];
        let mut i = digits.len();
        loop {
            i -= 1;
            // `n % 10` is below 10, so the cast cannot truncate.
            digits[i] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        if negative {
            i -= 1;
            digits[i] = b'-';
        }
        self.raw(digits.get(i..).unwrap_or(&[]))
    }
}

/// Writes `s` as a JSON string (see [`Writer::string`]) at the start of `out`; returns the
/// number of bytes written.
pub fn write_str(out: &mut [u8], s: &str) -> Result<usize, JsonError> {
    let mut w = Writer::new(out);
    w.string(s)?;
    Ok(w.len())
}

/// A number as JavaScript's `String(n)` writes it (ECMA-262 `Number::toString`, radix 10):
/// what a Node peer shows for a number it turns into text, e.g. a non-string error slot that
/// becomes `new Error(err).message`.
///
/// The digits are the shortest that read back as the same double; plain notation from 1e-6 up to
/// below 1e21 (`0.000001`, `123456789012345680000`, `0.1`), exponent notation outside it
/// (`1e+21`, `1.5e-7`); `-0` is `0`, and `NaN`, `Infinity`, `-Infinity` as in JavaScript.
/// Allocation-free: `write!` it into any [`fmt::Write`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct JsNumber(pub f64);

impl fmt::Display for JsNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let x = self.0;
        if x.is_nan() {
            return f.write_str("NaN");
        }
        if x == 0.0 {
            return f.write_str("0");
        }
        if x.is_infinite() {
            return f.write_str(if x > 0.0 { "Infinity" } else { "-Infinity" });
        }
        if x < 0.0 {
            f.write_str("-")?;
        }
        // Rust's `{:e}` without a precision prints the shortest digit string that reads back
        // as the same double, as ECMA-262 requires: `d[.ddd]e<exp>`, at most 24 bytes.
        let mut sci = SciDigits::default();
        fmt::write(&mut sci, format_args!("{:e}", x.abs()))?;
        let (digits, exponent) = sci.split()?;
        // n: where the decimal point goes, counted from the start of the digit string.
        let n = exponent + 1;
        let k = i32::try_from(digits.len()).map_err(|_| fmt::Error)?;
        let zeros = |f: &mut fmt::Formatter<'_>, count: i32| -> fmt::Result {
            (0..count).try_for_each(|_| f.write_str("0"))
        };
        let digits = core::str::from_utf8(digits).map_err(|_| fmt::Error)?;
        if k <= n && n <= 21 {
            f.write_str(digits)?;
            zeros(f, n - k)
        } else if 0 < n && n <= 21 {
            let (int, frac) = digits.split_at(usize::try_from(n).map_err(|_| fmt::Error)?);
            write!(f, "{int}.{frac}")
        } else if -6 < n && n <= 0 {
            f.write_str("0.")?;
            zeros(f, -n)?;
            f.write_str(digits)
        } else {
            let (first, rest) = digits.split_at(1);
            f.write_str(first)?;
            if !rest.is_empty() {
                write!(f, ".{rest}")?;
            }
            let sign = if exponent >= 0 { '+' } else { '-' };
            write!(f, "e{sign}{}", exponent.unsigned_abs())
        }
    }
}

/// The text of `{:e}` for a finite positive double, caught in a fixed buffer: the longest is
/// `2.2250738585072014e-308` (23 bytes).
#[derive(Default)]
struct SciDigits {
    buf: [u8; 32],
    len: usize,
}

impl fmt::Write for SciDigits {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let end = self.len + s.len();
        self.buf
            .get_mut(self.len..end)
            .ok_or(fmt::Error)?
            .copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

impl SciDigits {
    /// The significant digits (without the point, never empty) and the decimal exponent.
    fn split(&mut self) -> Result<(&[u8], i32), fmt::Error> {
        let text = self.buf.get_mut(..self.len).ok_or(fmt::Error)?;
        let e = text.iter().position(|&b| b == b'e').ok_or(fmt::Error)?;
        let (mantissa, exponent) = text.split_at_mut(e);
        let exponent = core::str::from_utf8(exponent.get(1..).ok_or(fmt::Error)?)
            .map_err(|_| fmt::Error)?
            .parse::<i32>()
            .map_err(|_| fmt::Error)?;
        // Drop the point by moving the digits after it one place left, in place.
        let mut len = 0;
        for i in 0..mantissa.len() {
            let b = mantissa.get(i).copied().ok_or(fmt::Error)?;
            if b.is_ascii_digit() {
                *mantissa.get_mut(len).ok_or(fmt::Error)? = b;
                len += 1;
            }
        }
        match mantissa.get(..len) {
            Some(digits) if !digits.is_empty() => Ok((digits, exponent)),
            _ => Err(fmt::Error),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::string::{String, ToString};
    use std::vec::Vec;

    // ---- JsNumber

    /// `String(n)` in Node for the doubles these literals denote.
    pub(crate) const JS_NUMBERS: &[(&str, &str)] = &[
        ("0", "0"),
        ("-0", "0"),
        ("1", "1"),
        ("-1", "-1"),
        ("12", "12"),
        ("0.1", "0.1"),
        ("-0.5", "-0.5"),
        ("1.5", "1.5"),
        ("100", "100"),
        ("123.456", "123.456"),
        ("1e21", "1e+21"),
        ("1e20", "100000000000000000000"),
        ("123456789012345678901", "123456789012345680000"),
        ("12345678901234567890", "12345678901234567000"),
        ("9007199254740993", "9007199254740992"),
        ("1.5e-7", "1.5e-7"),
        ("1e-7", "1e-7"),
        ("0.000001", "0.000001"),
        ("0.0000015", "0.0000015"),
        ("1.7976931348623157e308", "1.7976931348623157e+308"),
        ("5e-324", "5e-324"),
        ("2.2250738585072014e-308", "2.2250738585072014e-308"),
        ("-1.5e300", "-1.5e+300"),
        ("0.30000000000000004", "0.30000000000000004"),
        ("1.0", "1"),
        ("25e-1", "2.5"),
    ];

    #[test]
    fn js_numbers_print_as_javascript_string() {
        for (literal, js) in JS_NUMBERS {
            let x: f64 = literal.parse().unwrap();
            assert_eq!(JsNumber(x).to_string(), *js, "String({literal})");
        }
        assert_eq!(JsNumber(f64::NAN).to_string(), "NaN");
        assert_eq!(JsNumber(f64::INFINITY).to_string(), "Infinity");
        assert_eq!(JsNumber(f64::NEG_INFINITY).to_string(), "-Infinity");
    }

    // ---- validate: accepted texts

    #[test]
    fn accepts_every_kind_of_value() {
        for text in [
            "null",
            "true",
            "false",
            "0",
            "-0",
            "12",
            "-12.5e+3",
            "1E-7",
            "0.0",
            "\"\"",
            "\"a\\\"b\\\\c\\/d\\b\\f\\n\\r\\t\\u00e9\\uD83D\\uDE00\"",
            "\"é€😀\"",
            "[]",
            "{}",
            "[1,[2,[3]],{\"a\":{\"b\":[]}}]",
            " \t\r\n[ 1 , 2 ] \n",
            "{ \"a\" : 1 , \"b\" : [ ] }",
            "\"\\ud800\"",
            "\"\\udc00\\ud800\"",
            "\"\u{7f}\u{2028}\"",
        ] {
            assert_eq!(validate(text.as_bytes()), Ok(()), "{text}");
        }
    }

    // ---- validate: rejected texts, with the reason

    #[test]
    fn rejects_bad_texts_with_their_reason() {
        use JsonError::*;
        let cases: &[(&[u8], JsonError)] = &[
            (b"", Eof),
            (b"  \n", Eof),
            (b"[1,]", Unexpected),
            (b"[,1]", Unexpected),
            (b"{\"a\":1,}", Unexpected),
            (b"{\"a\"}", Unexpected),
            (b"{\"a\":}", Unexpected),
            (b"{1:2}", Unexpected),
            (b"{'a':1}", Unexpected),
            (b"01", TrailingData),
            (b"[01]", Unexpected),
            (b"1.", Eof),
            (b"1.e3", Unexpected),
            (b".5", Unexpected),
            (b"+1", Unexpected),
            (b"-", Eof),
            (b"-a", Unexpected),
            (b"1e", Eof),
            (b"1e+", Eof),
            (b"NaN", Unexpected),
            (b"Infinity", Unexpected),
            (b"tru", Eof),
            (b"trux", Unexpected),
            (b"nul", Eof),
            (b"nulll", TrailingData),
            (b"[1", Eof),
            (b"[1 2]", Unexpected),
            (b"{\"a\":1", Eof),
            (b"\"abc", Eof),
            (b"\"a\nb\"", ControlChar),
            (b"\"a\x00\"", ControlChar),
            (b"\"\\x\"", BadEscape),
            (b"\"\\u12g4\"", BadEscape),
            (b"\"\\u12", Eof),
            (b"\"\xff\"", InvalidUtf8),
            (b"\"\xc0\xaf\"", InvalidUtf8),
            (b"\"\xed\xa0\x80\"", InvalidUtf8),
            (b"\"\xe2\x82\"", InvalidUtf8),
            (b"\xef\xbb\xbf[1]", Unexpected),
            (b"[1] /* c */", TrailingData),
            (b"1 2", TrailingData),
            (b"[1]]", TrailingData),
            (b"\x0b1", Unexpected),
            (b"\xc2\xa01", Unexpected),
        ];
        for (text, want) in cases {
            assert_eq!(
                validate(text),
                Err(*want),
                "{:?}",
                String::from_utf8_lossy(text)
            );
        }
    }

    fn nested(depth: usize, open: &str, inner: &str, close: &str) -> String {
        let mut s = String::new();
        for _ in 0..depth {
            s.push_str(open);
        }
        s.push_str(inner);
        for _ in 0..depth {
            s.push_str(close);
        }
        s
    }

    #[test]
    fn depth_limit_is_max_depth_for_arrays_and_objects() {
        assert_eq!(
            validate(nested(MAX_DEPTH, "[", "1", "]").as_bytes()),
            Ok(())
        );
        assert_eq!(validate(nested(MAX_DEPTH, "[", "", "]").as_bytes()), Ok(()));
        assert_eq!(
            validate(nested(MAX_DEPTH + 1, "[", "", "]").as_bytes()),
            Err(JsonError::TooDeep)
        );
        assert_eq!(
            validate(nested(MAX_DEPTH, "{\"k\":", "{}", "}").as_bytes()),
            Err(JsonError::TooDeep)
        );
        assert_eq!(
            validate(nested(MAX_DEPTH - 1, "{\"k\":", "{}", "}").as_bytes()),
            Ok(())
        );
        // Mixed nesting is tracked per level: closing with the wrong bracket is an error.
        assert_eq!(validate(b"[{\"a\":[1}]}"), Err(JsonError::Unexpected));
        assert_eq!(validate(b"{\"a\":[1]]"), Err(JsonError::Unexpected));
    }

    #[test]
    fn oracle_agrees_on_lone_surrogates() {
        // serde_json's ignoring parser, like JSON.parse, takes lone surrogate escapes.
        assert!(oracle_valid(b"\"\\ud800\""));
        assert_eq!(validate(b"\"\\ud800\""), Ok(()));
    }

    #[test]
    fn very_deep_input_is_rejected_without_recursion() {
        let deep = nested(100_000, "[", "", "]");
        assert_eq!(validate(deep.as_bytes()), Err(JsonError::TooDeep));
    }

    #[test]
    fn array_iteration_keeps_the_depth_budget_of_the_whole_text() {
        let inner = nested(MAX_DEPTH - 1, "[", "", "]");
        let ok = std::format!("[{inner}]");
        assert_eq!(array(ok.as_bytes()).unwrap().count(), 1);
        let deeper = nested(MAX_DEPTH, "[", "", "]");
        let bad = std::format!("[{deeper}]");
        let items: Vec<_> = array(bad.as_bytes()).unwrap().collect();
        assert_eq!(items, [Err(JsonError::TooDeep)]);
    }

    #[test]
    fn kind_reads_the_first_byte() {
        assert_eq!(kind(b" {\"a\":1}"), Some(Kind::Object));
        assert_eq!(kind(b"[]"), Some(Kind::Array));
        assert_eq!(kind(b"\"x\""), Some(Kind::String));
        assert_eq!(kind(b"-1"), Some(Kind::Number));
        assert_eq!(kind(b"7"), Some(Kind::Number));
        assert_eq!(kind(b"true"), Some(Kind::Bool));
        assert_eq!(kind(b"false"), Some(Kind::Bool));
        assert_eq!(kind(b"null"), Some(Kind::Null));
        assert_eq!(kind(b""), None);
        assert_eq!(kind(b"  "), None);
        assert_eq!(kind(b"x"), None);
    }

    #[test]
    fn split_value_returns_the_value_and_the_rest() {
        assert_eq!(
            split_value(b"  [1, 2] {\"a\":3}"),
            Ok((&b"[1, 2]"[..], &b" {\"a\":3}"[..]))
        );
        assert_eq!(split_value(b"12"), Ok((&b"12"[..], &b""[..])));
        assert_eq!(split_value(b"[1"), Err(JsonError::Eof));
    }

    #[test]
    fn trim_strips_json_whitespace_only() {
        assert_eq!(trim(b" \t\r\n1 \n"), b"1");
        assert_eq!(trim(b"   "), b"");
        assert_eq!(trim(b"\x0b1"), b"\x0b1");
    }

    // ---- iteration

    #[test]
    fn array_yields_raw_elements_without_whitespace() {
        let text = b" [ 1 , \"a b\" ,{\"k\": [ 2 ]}, null,[] ] tail";
        let mut it = array(text).unwrap();
        let items: Vec<&[u8]> = it.by_ref().map(Result::unwrap).collect();
        assert_eq!(
            items,
            [&b"1"[..], b"\"a b\"", b"{\"k\": [ 2 ]}", b"null", b"[]"]
        );
        assert_eq!(it.rest(), b" tail");
        assert_eq!(it.next(), None);
    }

    #[test]
    fn empty_array_and_errors() {
        assert_eq!(array(b"[ ]").unwrap().count(), 0);
        assert_eq!(array(b"{}").err(), Some(JsonError::WrongKind));
        assert_eq!(array(b"").err(), Some(JsonError::Eof));
        let items: Vec<_> = array(b"[1,,2]").unwrap().collect();
        assert_eq!(items, [Ok(&b"1"[..]), Err(JsonError::Unexpected)]);
        let items: Vec<_> = array(b"[1 2]").unwrap().collect();
        assert_eq!(items, [Ok(&b"1"[..]), Err(JsonError::Unexpected)]);
        let items: Vec<_> = array(b"[1,").unwrap().collect();
        assert_eq!(items, [Ok(&b"1"[..]), Err(JsonError::Eof)]);
        let items: Vec<_> = array(b"[1,]").unwrap().collect();
        assert_eq!(items, [Ok(&b"1"[..]), Err(JsonError::Unexpected)]);
    }

    #[test]
    fn object_yields_raw_keys_and_values() {
        let text = br#"{ "a" : 1, "b\n":{"c":[true]} ,"":""}"#;
        let mut it = object(text).unwrap();
        let members: Vec<(&[u8], &[u8])> = it.by_ref().map(Result::unwrap).collect();
        assert_eq!(
            members,
            [
                (&br#""a""#[..], &b"1"[..]),
                (br#""b\n""#, br#"{"c":[true]}"#),
                (br#""""#, br#""""#)
            ]
        );
        assert_eq!(it.rest(), b"");
        assert_eq!(object(b"{}").unwrap().count(), 0);
        assert_eq!(object(b"[]").err(), Some(JsonError::WrongKind));
        let members: Vec<_> = object(b"{\"a\":1,\"b\"}").unwrap().collect();
        assert_eq!(
            members,
            [Ok((&b"\"a\""[..], &b"1"[..])), Err(JsonError::Unexpected)]
        );
    }

    #[test]
    fn get_finds_members_and_the_last_duplicate_wins() {
        let text = br#"{"rid":"x","data":[1,2],"d\u0061ta2":3,"data":{"v":1}}"#;
        assert_eq!(get(text, "rid"), Ok(Some(&br#""x""#[..])));
        assert_eq!(get(text, "data"), Ok(Some(&br#"{"v":1}"#[..])));
        assert_eq!(get(text, "data2"), Ok(Some(&b"3"[..])));
        assert_eq!(get(text, "nope"), Ok(None));
        assert_eq!(get(b"[1]", "a"), Err(JsonError::WrongKind));
        assert_eq!(get(b"{\"a\":1,", "a"), Err(JsonError::Eof));
    }

    // ---- strings

    #[test]
    fn decode_str_unescapes_everything() {
        let mut out = [0u8; 64];
        let raw = r#""a\"b\\c\/d\b\f\n\r\t\u00e9\u20AC\ud83d\ude00é""#.as_bytes();
        assert_eq!(
            decode_str(raw, &mut out),
            Ok("a\"b\\c/d\u{8}\u{c}\n\r\t\u{e9}€😀é")
        );
        assert_eq!(decode_str(b" \"\" ", &mut out), Ok(""));
        assert_eq!(decode_str(b"\"\\u0000\"", &mut out), Ok("\0"));
    }

    #[test]
    fn decode_str_rejects_what_is_not_one_good_string() {
        use JsonError::*;
        let mut out = [0u8; 64];
        let cases: &[(&[u8], JsonError)] = &[
            (b"\"\\ud800\"", LoneSurrogate),
            (b"\"\\udc00\"", LoneSurrogate),
            (b"\"\\ud800\\u0041\"", LoneSurrogate),
            (b"\"\\ud800x\"", LoneSurrogate),
            (b"\"\\ud800\\ud800\"", LoneSurrogate),
            (b"\"\\ud800\\", LoneSurrogate),
            (b"\"\\ud800\\u12", Eof),
            (b"\"abc", Eof),
            (b"\"abc\"x", TrailingData),
            (b"\"a\"\"", TrailingData),
            (b"\"\\q\"", BadEscape),
            (b"\"\\u00g0\"", BadEscape),
            (b"\"\t\"", ControlChar),
            (b"\"\xff\"", InvalidUtf8),
            (b"12", WrongKind),
            (b"", Eof),
        ];
        for (raw, want) in cases {
            assert_eq!(
                decode_str(raw, &mut out),
                Err(*want),
                "{:?}",
                String::from_utf8_lossy(raw)
            );
        }
    }

    #[test]
    fn decode_str_needs_room_for_the_text() {
        let mut out = [0u8; 3];
        assert_eq!(decode_str(b"\"abc\"", &mut out), Ok("abc"));
        assert_eq!(
            decode_str(b"\"abcd\"", &mut out),
            Err(JsonError::BufferTooSmall)
        );
        assert_eq!(
            decode_str(b"\"ab\\u00e9\"", &mut out),
            Err(JsonError::BufferTooSmall)
        );
        assert_eq!(decode_str(b"\"a\\u00e9\"", &mut out), Ok("aé"));
    }

    #[test]
    fn str_eq_compares_decoded_text() {
        assert!(str_eq(b"\"rpc_test\"", "rpc_test"));
        assert!(str_eq(b" \"rpc_test\" ", "rpc_test"));
        assert!(str_eq(br#""rpc\u005ftest""#, "rpc_test"));
        assert!(str_eq(br#""\ud83d\ude00\n""#, "😀\n"));
        assert!(str_eq(b"\"\"", ""));
        assert!(!str_eq(b"\"rpc_test\"", "rpc_tes"));
        assert!(!str_eq(b"\"rpc_tes\"", "rpc_test"));
        assert!(!str_eq(b"\"a\"x", "a"));
        assert!(!str_eq(b"\"a\nb\"", "a\nb"));
        assert!(!str_eq(br#""\ud800""#, "\u{fffd}"));
        assert!(!str_eq(b"rpc_test", "rpc_test"));
        assert!(!str_eq(b"\"\xff\"", "\u{fffd}"));
    }

    #[test]
    fn str_borrowed_only_without_escapes() {
        assert_eq!(str_borrowed(b"\"rpc_test\""), Some("rpc_test"));
        assert_eq!(str_borrowed(" \"é\" ".as_bytes()), Some("é"));
        assert_eq!(str_borrowed(b"\"a\\nb\""), None);
        assert_eq!(str_borrowed(b"\"a\""), Some("a"));
        assert_eq!(str_borrowed(b"\"a\"b"), None);
        assert_eq!(str_borrowed(b"\"a"), None);
        assert_eq!(str_borrowed(b"1"), None);
        let s = JsonStr::new(b" \"k\\u0065y\" ").unwrap();
        assert_eq!(s.raw(), b"\"k\\u0065y\"");
        assert_eq!(s.borrowed(), None);
        let mut out = [0u8; 8];
        assert_eq!(s.decode(&mut out), Ok("key"));
        assert!(s.eq_str("key"));
        assert_eq!(JsonStr::new(b"\"a\" \"b\""), None);
        assert_eq!(JsonStr::new(b"null"), None);
    }

    #[test]
    fn write_str_matches_json_stringify() {
        // Bytes printed by Node v20: JSON.stringify("a\"b\\c/d\b\f\n\r\t\x00\x01\x1f\x7f
        // é€😀\u2028\u2029")
        let node = hex::decode(
            "22615c22625c5c632f645c625c665c6e5c725c745c75303030305c75303030315c75303031667f20c3a9e282acf09f9880e280a8e280a922",
        )
        .unwrap();
        let mut out = [0u8; 128];
        let n = write_str(
            &mut out,
            "a\"b\\c/d\u{8}\u{c}\n\r\t\u{0}\u{1}\u{1f}\u{7f} é€😀\u{2028}\u{2029}",
        )
        .unwrap();
        assert_eq!(&out[..n], &node[..]);
        assert_eq!(write_str(&mut out, ""), Ok(2));
        assert_eq!(&out[..2], b"\"\"");
    }

    #[test]
    fn writer_leaves_length_unchanged_on_overflow() {
        let mut buf = [0u8; 8];
        let mut w = Writer::new(&mut buf);
        w.raw(b"[").unwrap();
        assert_eq!(w.string("too long"), Err(JsonError::BufferTooSmall));
        assert_eq!(w.len(), 1);
        w.u64(42).unwrap();
        w.raw(b",").unwrap();
        assert_eq!(w.i64(-1234), Err(JsonError::BufferTooSmall));
        w.i64(-12).unwrap();
        assert_eq!(w.finish(), b"[42,-12");
        let mut buf = [0u8; 1];
        assert_eq!(write_str(&mut buf, ""), Err(JsonError::BufferTooSmall));
    }

    #[test]
    fn writer_integers() {
        let mut buf = [0u8; 64];
        let mut w = Writer::new(&mut buf);
        w.u64(u64::MAX).unwrap();
        w.raw(b",").unwrap();
        w.i64(i64::MIN).unwrap();
        w.raw(b",").unwrap();
        w.u64(0).unwrap();
        assert_eq!(w.as_bytes(), b"18446744073709551615,-9223372036854775808,0");
    }

    // ---- numbers

    #[test]
    fn parse_integers_in_every_spelling() {
        assert_eq!(parse_u64(b"1337"), Ok(1337));
        assert_eq!(parse_u64(b" 1337 "), Ok(1337));
        assert_eq!(parse_u64(b"1337.000"), Ok(1337));
        assert_eq!(parse_u64(b"1.337e3"), Ok(1337));
        assert_eq!(parse_u64(b"13370E-1"), Ok(1337));
        assert_eq!(parse_u64(b"0.01337e5"), Ok(1337));
        assert_eq!(parse_u64(b"0"), Ok(0));
        assert_eq!(parse_u64(b"-0"), Ok(0));
        assert_eq!(parse_u64(b"0e999999999999999999999"), Ok(0));
        assert_eq!(parse_u64(b"0.000e-5"), Ok(0));
        assert_eq!(parse_u64(b"18446744073709551615"), Ok(u64::MAX));
        assert_eq!(parse_u64(b"1.8446744073709551615e19"), Ok(u64::MAX));
        assert_eq!(parse_u64(b"18446744073709551616"), Err(JsonError::Overflow));
        assert_eq!(parse_u64(b"1e20"), Err(JsonError::Overflow));
        assert_eq!(parse_u64(b"1e999999999999999999"), Err(JsonError::Overflow));
        assert_eq!(parse_u64(b"-1"), Err(JsonError::Overflow));
        assert_eq!(parse_u64(b"1.5"), Err(JsonError::NotInteger));
        assert_eq!(parse_u64(b"1e-1"), Err(JsonError::NotInteger));
        assert_eq!(
            parse_u64(b"1e-99999999999999999999"),
            Err(JsonError::NotInteger)
        );
        assert_eq!(parse_u64(b"\"1\""), Err(JsonError::WrongKind));
        assert_eq!(parse_u64(b"01"), Err(JsonError::TrailingData));
        assert_eq!(parse_u64(b"1."), Err(JsonError::Eof));
        assert_eq!(parse_u64(b""), Err(JsonError::Eof));
        assert_eq!(parse_i64(b"-9223372036854775808"), Ok(i64::MIN));
        assert_eq!(parse_i64(b"9223372036854775807"), Ok(i64::MAX));
        assert_eq!(parse_i64(b"-9223372036854775809"), Err(JsonError::Overflow));
        assert_eq!(parse_i64(b"9223372036854775808"), Err(JsonError::Overflow));
        assert_eq!(parse_i64(b"-12.5e1"), Ok(-125));
        assert_eq!(parse_i64(b"-0.0"), Ok(0));
    }

    // ---- oracle-based properties

    /// What serde_json says, with our depth limit on top (serde_json allows 128 levels).
    fn oracle_valid(buf: &[u8]) -> bool {
        let Ok(s) = std::str::from_utf8(buf) else {
            return false;
        };
        serde_json::from_str::<serde::de::IgnoredAny>(s).is_ok() && max_depth(buf) <= MAX_DEPTH
    }

    /// Nesting depth of a valid JSON text.
    fn max_depth(buf: &[u8]) -> usize {
        let (mut depth, mut max, mut in_str, mut esc) = (0usize, 0usize, false, false);
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
                    depth += 1;
                    max = max.max(depth);
                }
                b']' | b'}' => depth = depth.saturating_sub(1),
                _ => {}
            }
        }
        max
    }

    /// Any JSON value, for the frame tests too.
    pub(crate) fn arb_value() -> impl Strategy<Value = serde_json::Value> {
        use serde_json::Value;
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(Value::from),
            any::<String>().prop_map(Value::String),
            "[a-z\\\\\"\u{0}-\u{1f}\u{7f}-\u{10ffff}]{0,8}".prop_map(Value::String),
        ];
        leaf.prop_recursive(6, 64, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::vec(("[a-z\"\\\\é]{0,4}", inner), 0..6)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    fn arb_text() -> impl Strategy<Value = Vec<u8>> {
        (arb_value(), any::<bool>()).prop_map(|(v, pretty)| {
            if pretty {
                serde_json::to_vec_pretty(&v).unwrap()
            } else {
                serde_json::to_vec(&v).unwrap()
            }
        })
    }

    #[derive(Clone, Debug)]
    pub(crate) enum Edit {
        Set(usize, u8),
        Insert(usize, u8),
        Delete(usize),
        Truncate(usize),
    }

    pub(crate) fn arb_byte() -> impl Strategy<Value = u8> {
        prop_oneof![
            prop::sample::select(b"[]{}\",:\\ \t\n0123456789eE.+-tfnulx/bru".to_vec()),
            any::<u8>(),
        ]
    }

    pub(crate) fn arb_edit() -> impl Strategy<Value = Edit> {
        prop_oneof![
            (any::<usize>(), arb_byte()).prop_map(|(i, b)| Edit::Set(i, b)),
            (any::<usize>(), arb_byte()).prop_map(|(i, b)| Edit::Insert(i, b)),
            any::<usize>().prop_map(Edit::Delete),
            any::<usize>().prop_map(Edit::Truncate),
        ]
    }

    pub(crate) fn apply(text: &mut Vec<u8>, edits: &[Edit]) {
        for e in edits {
            let len = text.len();
            match *e {
                Edit::Set(i, b) if len > 0 => text[i % len] = b,
                Edit::Insert(i, b) => text.insert(i % (len + 1), b),
                Edit::Delete(i) if len > 0 => {
                    text.remove(i % len);
                }
                Edit::Truncate(i) => text.truncate(i % (len + 1)),
                _ => {}
            }
        }
    }

    /// Checks every walking function on `text` against `validate` and never panics.
    fn exercise(text: &[u8]) {
        let valid = validate(text).is_ok();
        let _ = kind(text);
        let _ = split_value(text);
        if let Ok(it) = array(text) {
            let mut it = it;
            let all_ok = it.by_ref().all(|r| r.is_ok());
            if valid {
                assert!(all_ok);
                assert!(trim(it.rest()).is_empty());
            }
        }
        if let Ok(it) = object(text) {
            let mut it = it;
            let all_ok = it.by_ref().all(|r| r.is_ok());
            if valid {
                assert!(all_ok);
            }
        }
        let _ = get(text, "data");
        let mut out = [0u8; 64];
        let _ = decode_str(text, &mut out);
        let _ = str_eq(text, "rpc_test");
        let _ = str_borrowed(text);
        let _ = parse_u64(text);
        let _ = parse_i64(text);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1000))]

        #[test]
        fn generated_json_is_valid(text in arb_text()) {
            prop_assert_eq!(validate(&text), Ok(()));
            exercise(&text);
        }

        #[test]
        fn mutated_json_agrees_with_serde_json(
            mut text in arb_text(),
            edits in prop::collection::vec(arb_edit(), 1..4),
        ) {
            apply(&mut text, &edits);
            prop_assert_eq!(
                validate(&text).is_ok(),
                oracle_valid(&text),
                "{:?}", String::from_utf8_lossy(&text)
            );
            exercise(&text);
        }

        #[test]
        fn arbitrary_bytes_agree_with_serde_json(text in prop::collection::vec(arb_byte(), 0..48)) {
            prop_assert_eq!(
                validate(&text).is_ok(),
                oracle_valid(&text),
                "{:?}", String::from_utf8_lossy(&text)
            );
            exercise(&text);
        }

        #[test]
        fn walking_agrees_with_serde_json(v in arb_value()) {
            use serde_json::Value;
            let text = serde_json::to_vec(&v).unwrap();
            match &v {
                Value::Array(items) => {
                    let raw: Vec<&[u8]> = array(&text).unwrap().map(Result::unwrap).collect();
                    prop_assert_eq!(raw.len(), items.len());
                    for (r, want) in raw.iter().zip(items) {
                        // Compact output of a sub-value is the same bytes as inside the whole.
                        prop_assert_eq!(r.to_vec(), serde_json::to_vec(want).unwrap());
                    }
                }
                Value::Object(map) => {
                    let mut n = 0;
                    for member in object(&text).unwrap() {
                        let (k, val) = member.unwrap();
                        let mut buf = [0u8; 64];
                        let key = decode_str(k, &mut buf).unwrap();
                        let want = map.get(key).map(|w| serde_json::to_vec(w).unwrap());
                        prop_assert_eq!(Some(val.to_vec()), want);
                        prop_assert_eq!(get(&text, key).unwrap(), Some(val));
                        n += 1;
                    }
                    prop_assert_eq!(n, map.len());
                }
                Value::String(_) => prop_assert_eq!(kind(&text), Some(Kind::String)),
                Value::Number(_) => prop_assert_eq!(kind(&text), Some(Kind::Number)),
                Value::Bool(_) => prop_assert_eq!(kind(&text), Some(Kind::Bool)),
                Value::Null => prop_assert_eq!(kind(&text), Some(Kind::Null)),
            }
        }

        #[test]
        fn write_str_is_serde_json_and_decodes_back(s in any::<String>()) {
            let mut out = std::vec![0u8; s.len() * 6 + 2];
            let n = write_str(&mut out, &s).unwrap();
            let raw = &out[..n];
            let want = serde_json::to_string(&s).unwrap();
            prop_assert_eq!(raw, want.as_bytes());
            prop_assert_eq!(validate(raw), Ok(()));
            let mut dec = std::vec![0u8; s.len()];
            prop_assert_eq!(decode_str(raw, &mut dec), Ok(s.as_str()));
            prop_assert!(str_eq(raw, &s));
            prop_assert_eq!(str_borrowed(raw).is_some(), !raw[1..n - 1].contains(&b'\\'));
        }

        #[test]
        fn decode_str_agrees_with_serde_json(
            pieces in prop::collection::vec(prop_oneof![
                "[a-zé😀 ]{1,3}".prop_map(String::into_bytes),
                prop::sample::select(std::vec![
                    "\\\"", "\\\\", "\\/", "\\b", "\\f", "\\n", "\\r", "\\t", "\\x", "\t", "\"",
                ]).prop_map(|s| s.as_bytes().to_vec()),
                any::<u16>().prop_map(|u| std::format!("\\u{u:04x}").into_bytes()),
                (0xd800u16..0xdc00, 0xdc00u16..0xe000)
                    .prop_map(|(h, l)| std::format!("\\u{h:04X}\\u{l:04x}").into_bytes()),
                any::<u8>().prop_map(|b| std::vec![b]),
            ], 0..8)
        ) {
            let mut raw = std::vec![b'"'];
            for p in &pieces {
                raw.extend_from_slice(p);
            }
            raw.push(b'"');
            let want: Option<String> = std::str::from_utf8(&raw)
                .ok()
                .and_then(|s| serde_json::from_str::<String>(s).ok());
            let mut out = std::vec![0u8; raw.len()];
            let got = decode_str(&raw, &mut out).ok().map(|s| s.to_string());
            prop_assert_eq!(&got, &want, "{:?}", String::from_utf8_lossy(&raw));
            if let Some(text) = &want {
                prop_assert!(str_eq(&raw, text));
                prop_assert_eq!(validate(&raw), Ok(()));
            }
        }

        #[test]
        fn integers_parse_in_every_spelling(n in any::<i64>(), zeros in 0usize..4, shift in 0u32..5) {
            let plain = n.to_string();
            prop_assert_eq!(parse_i64(plain.as_bytes()), Ok(n));
            let with_frac = std::format!("{plain}.{}", "0".repeat(zeros + 1));
            prop_assert_eq!(parse_i64(with_frac.as_bytes()), Ok(n));
            // n = m * 10^shift written as "m.dddd" + "e<shift>".
            let digits = n.unsigned_abs().to_string();
            if digits.len() > shift as usize {
                let (a, b) = digits.split_at(digits.len() - shift as usize);
                let sign = if n < 0 { "-" } else { "" };
                let sci = if b.is_empty() { std::format!("{sign}{a}e0") } else { std::format!("{sign}{a}.{b}e{shift}") };
                prop_assert_eq!(parse_i64(sci.as_bytes()), Ok(n), "{}", sci);
            }
            match u64::try_from(n) {
                Ok(u) => prop_assert_eq!(parse_u64(plain.as_bytes()), Ok(u)),
                Err(_) => prop_assert_eq!(parse_u64(plain.as_bytes()), Err(JsonError::Overflow)),
            }
            let v: serde_json::Value = serde_json::from_str(&plain).unwrap();
            prop_assert_eq!(v.as_i64(), Some(n));
        }

        #[test]
        fn never_panics_on_arbitrary_bytes(text in prop::collection::vec(any::<u8>(), 0..64)) {
            exercise(&text);
        }

        #[test]
        fn js_numbers_read_back_as_the_same_double(x in any::<f64>().prop_filter("finite", |x| x.is_finite())) {
            let text = JsNumber(x).to_string();
            let back: f64 = text.parse().unwrap();
            // `-0` prints as `0`, which reads back as +0: equal as numbers.
            prop_assert_eq!(back, x, "{}", text);
        }
    }
}
