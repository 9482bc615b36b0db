//! Bencode, the encoding of every KRPC datagram.
//!
//! The encoder writes into a caller-provided `&mut [u8]` and never allocates. Dictionary keys
//! must be written in sorted (raw byte) order, as BEP 3 requires and bittorrent-dht does: the
//! typed writers in [`crate::wire::krpc`] do so by construction.
//!
//! The decoder ([`decode`]) is zero-copy: it validates a buffer in one bounded, iterative pass
//! and hands out [`Value`]s that borrow from it. Lists and dictionaries are views over their
//! validated bytes; walking them again cannot fail, so their iterators just yield items.
//!
//! # Leniency (the rules of the Node `bencode` 2.0.3 decoder that grapes use, where they matter)
//! - Integers may carry one leading `+` or `-`, leading zeros and a fractional part of digits
//!   after `.`, which is dropped (truncated towards zero): `i+5e`, `i007e`, `i-0e`, `i1.5e` are
//!   5, 7, 0, 1. They must have at least one digit (Node reads `ie` as 0; no sender emits it) and
//!   fit an `i64` (Node would silently lose precision past 2^53).
//! - String lengths are plain decimal digits, leading zeros allowed (`03:abc`). Node also takes a
//!   sign there, which no encoder emits; it is rejected here. The length must fit the buffer.
//! - Dictionary keys may come in any order and repeat; [`Dict::get`] returns the *last* value of
//!   a repeated key, as Node's object assignment does.
//! - Bytes after the first complete value are ignored (`decode` reports how many it used).
//! - Nesting deeper than [`MAX_DEPTH`] containers is refused.

use core::fmt;

use crate::wire::BufferFull;

/// Writes bencode into a borrowed buffer.
///
/// Each call appends one item; on [`BufferFull`] the encoder's length is left where it was
/// before the call, so a caller may retry with a shorter value.
#[derive(Debug)]
pub struct Encoder<'a> {
    buf: &'a mut [u8],
    len: usize,
}

impl<'a> Encoder<'a> {
    /// An encoder that writes from the start of `buf`.
    pub fn new(buf: &'a mut [u8]) -> Self {
        Encoder { buf, len: 0 }
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

    /// Consumes the encoder and returns the written part of the buffer.
    pub fn finish(self) -> &'a [u8] {
        let len = self.len;
        let buf: &'a [u8] = self.buf;
        buf.get(..len).unwrap_or(&[])
    }

    /// Appends already-encoded bencode (or any bytes) verbatim.
    #[inline]
    pub fn raw(&mut self, bytes: &[u8]) -> Result<(), BufferFull> {
        let end = self.len.checked_add(bytes.len()).ok_or(BufferFull)?;
        let dst = self.buf.get_mut(self.len..end).ok_or(BufferFull)?;
        dst.copy_from_slice(bytes);
        self.len = end;
        Ok(())
    }

    /// Appends a byte string: `<len>:<bytes>`.
    pub fn bytes(&mut self, bytes: &[u8]) -> Result<(), BufferFull> {
        // Check the whole item first so that a failure writes nothing.
        let mut prefix = [0u8; 21];
        let digits = write_decimal(&mut prefix, bytes.len() as u64);
        let total = digits
            .len()
            .checked_add(1)
            .and_then(|n| n.checked_add(bytes.len()))
            .ok_or(BufferFull)?;
        let end = self.len.checked_add(total).ok_or(BufferFull)?;
        let dst = self.buf.get_mut(self.len..end).ok_or(BufferFull)?;
        let (head, body) = dst.split_at_mut(digits.len());
        head.copy_from_slice(digits);
        if let Some((colon, body)) = body.split_first_mut() {
            *colon = b':';
            body.copy_from_slice(bytes);
        }
        self.len = end;
        Ok(())
    }

    /// Appends an integer: `i<n>e`.
    pub fn int(&mut self, n: i64) -> Result<(), BufferFull> {
        let start = self.len;
        let result = self
            .raw(b"i")
            .and_then(|()| self.decimal(n.unsigned_abs(), n < 0))
            .and_then(|()| self.raw(b"e"));
        if result.is_err() {
            self.len = start;
        }
        result
    }

    /// Opens a dictionary (`d`). Keys must follow in sorted order, each followed by its value.
    pub fn dict_begin(&mut self) -> Result<(), BufferFull> {
        self.raw(b"d")
    }

    /// Opens a list (`l`).
    pub fn list_begin(&mut self) -> Result<(), BufferFull> {
        self.raw(b"l")
    }

    /// Closes the innermost open dictionary or list (`e`).
    pub fn end(&mut self) -> Result<(), BufferFull> {
        self.raw(b"e")
    }

    /// Appends one byte string whose content is the concatenation of `chunks`.
    ///
    /// The total length need not be known in advance: the content is written after room for
    /// the longest possible length prefix and then moved down next to the real prefix. This
    /// lets callers stream, say, compact node entries out of a routing table with one pass.
    pub fn bytes_concat<I, C>(&mut self, chunks: I) -> Result<(), BufferFull>
    where
        I: IntoIterator<Item = C>,
        C: AsRef<[u8]>,
    {
        let start = self.len;
        let room = self.buf.len().saturating_sub(start);
        // Even an empty string needs `0:`.
        if room < 2 {
            return Err(BufferFull);
        }
        // The longest content that fits with its prefix: `n + digits(n) + 1 <= room`. Starting
        // from a value that fits, at most a few steps up find the largest.
        let fits = |n: usize| {
            n.checked_add(decimal_len(n as u64) + 1)
                .is_some_and(|total| total <= room)
        };
        let mut longest = room - (decimal_len(room as u64) + 1).min(room);
        while fits(longest + 1) {
            longest += 1;
        }
        // Any content that fits is at most `longest` long, so its prefix is at most this long,
        // and `body + longest <= buf.len()`.
        let reserve = decimal_len(longest as u64) + 1;
        let body = start + reserve;
        self.len = body;
        for chunk in chunks {
            if let Err(e) = self.raw(chunk.as_ref()) {
                self.len = start;
                return Err(e);
            }
        }
        let n = self.len - body;
        self.len = start;
        if n > longest {
            // It was written, but its longer prefix would not fit in front of it.
            return Err(BufferFull);
        }
        // `decimal(n) + ':'` fits in `reserve` bytes, so it ends before `body`.
        let result = self.decimal(n as u64, false).and_then(|()| self.raw(b":"));
        if let Err(e) = result {
            self.len = start;
            return Err(e);
        }
        let dst = self.len;
        self.buf.copy_within(body..body + n, dst);
        self.len = dst + n;
        Ok(())
    }

    fn decimal(&mut self, n: u64, negative: bool) -> Result<(), BufferFull> {
        // u64::MAX has 20 digits, plus one for the sign.
        let mut digits = [0u8; 21];
        let len = write_decimal(&mut digits, n).len();
        let mut start = digits.len() - len;
        if negative {
            // At most 20 digits were written, so there is room for the sign.
            start -= 1;
            if let Some(sign) = digits.get_mut(start) {
                *sign = b'-';
            }
        }
        self.raw(digits.get(start..).unwrap_or(&[]))
    }
}

/// Writes `n` in decimal at the end of `out` (20 bytes hold any u64) and returns the digits.
fn write_decimal(out: &mut [u8], mut n: u64) -> &[u8] {
    let mut i = out.len();
    while let Some(slot) = i.checked_sub(1).and_then(|j| out.get_mut(j)) {
        i -= 1;
        // `n % 10` is below 10, so the cast cannot truncate.
        *slot = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.get(i..).unwrap_or(&[])
}

/// Number of decimal digits of `n` (1 for 0).
fn decimal_len(mut n: u64) -> usize {
    let mut digits = 1;
    while n >= 10 {
        n /= 10;
        digits += 1;
    }
    digits
}

/// Deepest nesting of lists and dictionaries [`decode`] accepts (the top-level container counts
/// as 1). KRPC needs 2 plus whatever a BEP 44 value nests; 32 is far beyond any real message and
/// keeps the validator's per-level state in one `u32`.
pub const MAX_DEPTH: usize = 32;

/// Why a buffer is not bencode.
///
/// - `Truncated`: the input ends inside a value (or is empty), or a string length runs past it.
/// - `Invalid`: a byte that cannot start or continue a value at that place (an unknown type
///   byte, a non-string dictionary key, a key without a value, a malformed integer or length).
/// - `TooDeep`: more than [`MAX_DEPTH`] nested containers.
/// - `IntOverflow`: an integer outside the `i64` range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum DecodeError {
    /// The input ends before the value does.
    Truncated,
    /// A byte that does not fit the grammar at its place.
    Invalid,
    /// Containers nested deeper than [`MAX_DEPTH`].
    TooDeep,
    /// An integer that does not fit an `i64`.
    IntOverflow,
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DecodeError::Truncated => "bencode truncated",
            DecodeError::Invalid => "invalid bencode",
            DecodeError::TooDeep => "bencode nested too deep",
            DecodeError::IntOverflow => "bencode integer out of range",
        })
    }
}

impl core::error::Error for DecodeError {}

/// A decoded bencode value, borrowing from the decoded buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Value<'a> {
    /// `i<n>e`.
    Int(i64),
    /// `<len>:<bytes>`: the bytes, without the length prefix.
    Bytes(&'a [u8]),
    /// `l…e`.
    List(List<'a>),
    /// `d…e`.
    Dict(Dict<'a>),
}

impl<'a> Value<'a> {
    /// The integer, if this is one.
    pub fn as_int(&self) -> Option<i64> {
        match *self {
            Value::Int(n) => Some(n),
            _ => None,
        }
    }

    /// The byte string, if this is one.
    pub fn as_bytes(&self) -> Option<&'a [u8]> {
        match *self {
            Value::Bytes(b) => Some(b),
            _ => None,
        }
    }

    /// The list, if this is one.
    pub fn as_list(&self) -> Option<List<'a>> {
        match *self {
            Value::List(l) => Some(l),
            _ => None,
        }
    }

    /// The dictionary, if this is one.
    pub fn as_dict(&self) -> Option<Dict<'a>> {
        match *self {
            Value::Dict(d) => Some(d),
            _ => None,
        }
    }

    /// Whether the value Node's decoder makes of this is truthy in JavaScript: everything but
    /// the integer 0 (byte strings become `Buffer`s, which are objects, so even an empty one is
    /// truthy). bittorrent-dht tests arguments with `if (!a.x)`, so this decides its answers.
    pub fn is_truthy(&self) -> bool {
        !matches!(self, Value::Int(0))
    }

    /// The exact encoded bytes of a list or dictionary (`None` for scalars, whose encoding is
    /// not kept; use [`Encoded`] when the bytes of any value are needed).
    pub fn raw(&self) -> Option<&'a [u8]> {
        match *self {
            Value::List(l) => Some(l.raw),
            Value::Dict(d) => Some(d.raw),
            _ => None,
        }
    }
}

/// A value together with its exact encoding, as received.
///
/// BEP 44 keys immutable items by `sha1(bencode(v))`; `raw` is what to hash (it equals the
/// canonical encoding whenever the sender encoded canonically, as every known DHT does).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Encoded<'a> {
    /// The bytes of the value on the wire, from its first to its last byte.
    pub raw: &'a [u8],
    /// The decoded value.
    pub value: Value<'a>,
}

impl<'a> Encoded<'a> {
    /// Decodes the first value of `buf`; `raw` covers exactly that value (trailing bytes are
    /// ignored, as by [`decode`]).
    pub fn decode(buf: &'a [u8]) -> Result<Encoded<'a>, DecodeError> {
        let (value, used) = decode(buf)?;
        Ok(Encoded {
            raw: buf.get(..used).unwrap_or(buf),
            value,
        })
    }
}

/// A validated list: `l`, items, `e`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct List<'a> {
    raw: &'a [u8],
}

impl<'a> List<'a> {
    /// The exact encoded bytes, `l` to `e`.
    pub fn raw(&self) -> &'a [u8] {
        self.raw
    }

    /// Whether the list has no items.
    pub fn is_empty(&self) -> bool {
        self.raw.len() <= 2
    }

    /// The items in order.
    pub fn iter(&self) -> ListIter<'a> {
        ListIter {
            buf: self.raw,
            pos: 1,
        }
    }

    /// The items in order, each with its exact encoding.
    pub fn iter_encoded(&self) -> ListEncodedIter<'a> {
        ListEncodedIter { inner: self.iter() }
    }
}

impl<'a> IntoIterator for List<'a> {
    type Item = Value<'a>;
    type IntoIter = ListIter<'a>;
    fn into_iter(self) -> ListIter<'a> {
        self.iter()
    }
}

/// Iterator over the items of a [`List`] (the default one is empty).
#[derive(Clone, Debug, Default)]
pub struct ListIter<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> ListIter<'a> {
    fn next_encoded(&mut self) -> Option<Encoded<'a>> {
        // The buffer was validated, so a failed read means the end (`e`) was reached.
        let (value, end) = read_value(self.buf, self.pos, &EndIndex::EMPTY)?;
        let raw = self.buf.get(self.pos..end)?;
        self.pos = end;
        Some(Encoded { raw, value })
    }
}

impl<'a> Iterator for ListIter<'a> {
    type Item = Value<'a>;
    fn next(&mut self) -> Option<Value<'a>> {
        self.next_encoded().map(|e| e.value)
    }
}

/// Iterator over the items of a [`List`] with their encodings.
#[derive(Clone, Debug)]
pub struct ListEncodedIter<'a> {
    inner: ListIter<'a>,
}

impl<'a> Iterator for ListEncodedIter<'a> {
    type Item = Encoded<'a>;
    fn next(&mut self) -> Option<Encoded<'a>> {
        self.inner.next_encoded()
    }
}

/// A validated dictionary: `d`, key/value pairs, `e`. Keys are byte strings, in wire order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Dict<'a> {
    raw: &'a [u8],
}

impl<'a> Dict<'a> {
    /// The exact encoded bytes, `d` to `e`.
    pub fn raw(&self) -> &'a [u8] {
        self.raw
    }

    /// Whether the dictionary has no entries.
    pub fn is_empty(&self) -> bool {
        self.raw.len() <= 2
    }

    /// The value of `key`; for a repeated key the last one, like Node's decoder.
    pub fn get(&self, key: &[u8]) -> Option<Value<'a>> {
        self.get_encoded(key).map(|e| e.value)
    }

    /// The value of `key` with its exact encoding; for a repeated key the last one.
    pub fn get_encoded(&self, key: &[u8]) -> Option<Encoded<'a>> {
        self.iter_encoded()
            .filter(|(k, _)| *k == key)
            .last()
            .map(|(_, v)| v)
    }

    /// The entries in wire order (repeated keys included).
    pub fn iter(&self) -> DictIter<'a> {
        DictIter {
            buf: self.raw,
            pos: 1,
        }
    }

    /// The entries in wire order, values with their exact encodings.
    pub fn iter_encoded(&self) -> DictEncodedIter<'a> {
        DictEncodedIter { inner: self.iter() }
    }
}

impl<'a> IntoIterator for Dict<'a> {
    type Item = (&'a [u8], Value<'a>);
    type IntoIter = DictIter<'a>;
    fn into_iter(self) -> DictIter<'a> {
        self.iter()
    }
}

/// Iterator over the entries of a [`Dict`].
#[derive(Clone, Debug)]
pub struct DictIter<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> DictIter<'a> {
    fn next_encoded(&mut self) -> Option<(&'a [u8], Encoded<'a>)> {
        // Validated: a failed read means the closing `e`.
        let (key, value_start) = read_bytes(self.buf, self.pos)?;
        let (value, end) = read_value(self.buf, value_start, &EndIndex::EMPTY)?;
        let raw = self.buf.get(value_start..end)?;
        self.pos = end;
        Some((key, Encoded { raw, value }))
    }
}

impl<'a> Iterator for DictIter<'a> {
    type Item = (&'a [u8], Value<'a>);
    fn next(&mut self) -> Option<(&'a [u8], Value<'a>)> {
        self.next_encoded().map(|(k, e)| (k, e.value))
    }
}

/// Iterator over the entries of a [`Dict`] with the values' encodings.
#[derive(Clone, Debug)]
pub struct DictEncodedIter<'a> {
    inner: DictIter<'a>,
}

impl<'a> Iterator for DictEncodedIter<'a> {
    type Item = (&'a [u8], Encoded<'a>);
    fn next(&mut self) -> Option<(&'a [u8], Encoded<'a>)> {
        self.inner.next_encoded()
    }
}

/// Decodes the first bencode value of `buf`.
///
/// Returns the value and the number of bytes it spans; bytes after it are ignored (as Node does
/// with a datagram's trailing bytes). One iterative pass validates the whole value, with at most
/// [`MAX_DEPTH`] nested containers, so walking the returned value afterwards cannot fail.
pub fn decode(buf: &[u8]) -> Result<(Value<'_>, usize), DecodeError> {
    let mut index = EndIndex::EMPTY;
    decode_indexed(buf, &mut index)
}

/// How many container ends a validating pass remembers in an [`EndIndex`].
const INDEX_LEN: usize = 8;
/// The deepest level whose container ends are remembered (1 = the top-level container). KRPC
/// needs three: the message, its `a`/`r`/`e`, and `values`/`nodes`/`v` inside those.
const INDEX_DEPTH: usize = 3;

/// The end offsets of the first [`INDEX_LEN`] containers (at most [`INDEX_DEPTH`] deep) that
/// the validating pass closed, so that walking past them afterwards is O(1) instead of a
/// rescan. Without it, reading one field after a 100-entry list would walk that list again.
#[derive(Clone, Debug)]
pub(crate) struct EndIndex {
    /// `(start, end)` offsets into the decoded buffer.
    entries: [(usize, usize); INDEX_LEN],
    len: usize,
}

impl EndIndex {
    /// An index that knows nothing (and is filled by [`decode_indexed`]).
    pub(crate) const EMPTY: EndIndex = EndIndex {
        entries: [(0, 0); INDEX_LEN],
        len: 0,
    };

    fn push(&mut self, start: usize, end: usize) {
        if let Some(slot) = self.entries.get_mut(self.len) {
            *slot = (start, end);
            self.len += 1;
        }
    }

    fn end_of(&self, start: usize) -> Option<usize> {
        self.entries
            .get(..self.len)?
            .iter()
            .find(|e| e.0 == start)
            .map(|e| e.1)
    }
}

/// [`decode`], also filling `index` with the ends of shallow containers (offsets into `buf`),
/// for [`entries_indexed`].
pub(crate) fn decode_indexed<'a>(
    buf: &'a [u8],
    index: &mut EndIndex,
) -> Result<(Value<'a>, usize), DecodeError> {
    let used = validate(buf, index)?;
    let raw = buf.get(..used).ok_or(DecodeError::Truncated)?;
    // A value `validate` accepted always reads back; `Invalid` here would be a bug, not a panic.
    let (value, _) = read_value(raw, 0, index).ok_or(DecodeError::Invalid)?;
    Ok((value, used))
}

/// The entries of the dictionary that starts at offset `start` of `buf`, a buffer validated by
/// [`decode_indexed`] with `index`. Yields each key, the offset of its value and the value.
pub(crate) fn entries_indexed<'a, 'i>(
    buf: &'a [u8],
    start: usize,
    index: &'i EndIndex,
) -> IndexedEntries<'a, 'i> {
    IndexedEntries {
        buf,
        pos: start + 1,
        index,
    }
}

/// Iterator of [`entries_indexed`].
pub(crate) struct IndexedEntries<'a, 'i> {
    buf: &'a [u8],
    pos: usize,
    index: &'i EndIndex,
}

impl<'a> Iterator for IndexedEntries<'a, '_> {
    type Item = (&'a [u8], usize, Encoded<'a>);
    fn next(&mut self) -> Option<Self::Item> {
        let (key, value_start) = read_bytes(self.buf, self.pos)?;
        let (value, end) = read_value(self.buf, value_start, self.index)?;
        let raw = self.buf.get(value_start..end)?;
        self.pos = end;
        Some((key, value_start, Encoded { raw, value }))
    }
}

/// Checks that `buf` starts with one well-formed value and returns its length; records the
/// ends of shallow containers in `index`.
fn validate(buf: &[u8], index: &mut EndIndex) -> Result<usize, DecodeError> {
    let mut pos = 0usize;
    let mut depth = 0usize;
    // Bit `i` set: the container at depth `i + 1` is a dictionary.
    let mut dict_bits = 0u32;
    // Inside a dictionary: whether the next item is a key (else it is that key's value).
    let mut expect_key = false;
    // Start offsets of the open containers that `index` may record.
    let mut open = [0usize; INDEX_DEPTH];
    loop {
        let b = *buf.get(pos).ok_or(DecodeError::Truncated)?;
        let in_dict = depth > 0 && (dict_bits >> (depth - 1)) & 1 == 1;
        if b.is_ascii_digit() {
            // The common case first: a string (a key, a value or a list item).
            pos = scan_bytes(buf, pos)?;
            if depth == 0 {
                return Ok(pos);
            }
            if in_dict {
                expect_key = !expect_key;
            }
            continue;
        }
        if in_dict && expect_key && b != b'e' {
            // Keys are strings.
            return Err(DecodeError::Invalid);
        }
        match b {
            b'e' if depth > 0 => {
                if in_dict && !expect_key {
                    // A key without a value.
                    return Err(DecodeError::Invalid);
                }
                pos += 1;
                depth -= 1;
                if let Some(&start) = open.get(depth) {
                    index.push(start, pos);
                }
                if depth == 0 {
                    return Ok(pos);
                }
                // The closed container was a value of its parent: a dictionary parent now
                // wants a key.
                expect_key = (dict_bits >> (depth - 1)) & 1 == 1;
            }
            b'i' => {
                pos = parse_int(buf, pos)?.1;
                if depth == 0 {
                    return Ok(pos);
                }
                expect_key = in_dict;
            }
            b'l' | b'd' => {
                if depth >= MAX_DEPTH {
                    return Err(DecodeError::TooDeep);
                }
                if let Some(slot) = open.get_mut(depth) {
                    *slot = pos;
                }
                let bit = 1u32 << depth;
                if b == b'd' {
                    dict_bits |= bit;
                } else {
                    dict_bits &= !bit;
                }
                depth += 1;
                pos += 1;
                expect_key = b == b'd';
            }
            _ => return Err(DecodeError::Invalid),
        }
    }
}

/// Validates `<len>:<bytes>` at `pos` and returns the position after it.
#[inline(always)]
fn scan_bytes(buf: &[u8], pos: usize) -> Result<usize, DecodeError> {
    let mut i = pos;
    let mut len = 0usize;
    loop {
        let b = *buf.get(i).ok_or(DecodeError::Truncated)?;
        if b.is_ascii_digit() {
            // `len <= buf.len()` below, so this cannot overflow before it is caught.
            len = len.saturating_mul(10).saturating_add(usize::from(b - b'0'));
            if len > buf.len() {
                // Longer than the whole buffer: it cannot end inside it.
                return Err(DecodeError::Truncated);
            }
        } else if b == b':' && i > pos {
            break;
        } else {
            return Err(DecodeError::Invalid);
        }
        i += 1;
    }
    let end = (i + 1).saturating_add(len);
    if end > buf.len() {
        return Err(DecodeError::Truncated);
    }
    Ok(end)
}

/// Parses `i…e` at `pos`; returns the integer and the position after `e`.
fn parse_int(buf: &[u8], pos: usize) -> Result<(i64, usize), DecodeError> {
    let mut i = pos + 1;
    let mut negative = false;
    match buf.get(i) {
        Some(b'-') => {
            negative = true;
            i += 1;
        }
        Some(b'+') => i += 1,
        Some(_) => {}
        None => return Err(DecodeError::Truncated),
    }
    let mut n: i64 = 0;
    let mut digits = 0usize;
    let mut fraction = false;
    loop {
        let b = *buf.get(i).ok_or(DecodeError::Truncated)?;
        i += 1;
        match b {
            b'e' if digits > 0 => return Ok((n, i)),
            b'0'..=b'9' if fraction => {}
            b'0'..=b'9' => {
                let d = i64::from(b - b'0');
                // Accumulate towards the sign so that i64::MIN is reachable.
                n = n
                    .checked_mul(10)
                    .and_then(|n| {
                        if negative {
                            n.checked_sub(d)
                        } else {
                            n.checked_add(d)
                        }
                    })
                    .ok_or(DecodeError::IntOverflow)?;
                digits += 1;
            }
            // Node stops at a `.` (a float) and keeps the integer part.
            b'.' if digits > 0 && !fraction => fraction = true,
            _ => return Err(DecodeError::Invalid),
        }
    }
}

/// Reads the value at `pos` of an already validated buffer; `None` at an `e` (or on bytes that
/// were never validated, which only turns into an early end of iteration). Container ends come
/// from `index` when it knows them.
#[inline]
fn read_value<'a>(buf: &'a [u8], pos: usize, index: &EndIndex) -> Option<(Value<'a>, usize)> {
    match *buf.get(pos)? {
        b'i' => parse_int(buf, pos)
            .ok()
            .map(|(n, end)| (Value::Int(n), end)),
        b'0'..=b'9' => read_bytes(buf, pos).map(|(b, end)| (Value::Bytes(b), end)),
        b'l' => {
            let end = index.end_of(pos).or_else(|| skip_container(buf, pos))?;
            Some((
                Value::List(List {
                    raw: buf.get(pos..end)?,
                }),
                end,
            ))
        }
        b'd' => {
            let end = index.end_of(pos).or_else(|| skip_container(buf, pos))?;
            Some((
                Value::Dict(Dict {
                    raw: buf.get(pos..end)?,
                }),
                end,
            ))
        }
        _ => None,
    }
}

/// Reads `<len>:<bytes>` at `pos` of an already validated buffer (lengths are not re-checked
/// against limits: this is the hot path of every walk). `None` at anything that is not a
/// string, e.g. the `e` that closes a dictionary; out-of-range lengths give `None` too.
#[inline]
pub(crate) fn read_bytes(buf: &[u8], mut pos: usize) -> Option<(&[u8], usize)> {
    let mut len = 0usize;
    loop {
        let b = *buf.get(pos)?;
        pos += 1;
        if b == b':' {
            break;
        }
        // Digits only: this is also how a walk finds a container's closing `e` (the validated
        // data may go on after it, e.g. trailing bytes after the top-level dictionary).
        if !b.is_ascii_digit() {
            return None;
        }
        len = len.checked_mul(10)?.checked_add(usize::from(b - b'0'))?;
    }
    let end = pos.checked_add(len)?;
    Some((buf.get(pos..end)?, end))
}

/// The end of the (validated) container that starts at `pos`, found with a depth counter.
fn skip_container(buf: &[u8], mut pos: usize) -> Option<usize> {
    let mut depth = 0usize;
    loop {
        match *buf.get(pos)? {
            b'l' | b'd' => {
                depth += 1;
                pos += 1;
            }
            b'e' => {
                depth = depth.checked_sub(1)?;
                pos += 1;
                if depth == 0 {
                    return Some(pos);
                }
            }
            // Validated: the first `e` after `i` closes the integer.
            b'i' => pos += buf.get(pos..)?.iter().position(|&b| b == b'e')? + 1,
            b'0'..=b'9' => pos = read_bytes(buf, pos)?.1,
            _ => return None,
        }
    }
}

#[cfg(test)]
mod encoder_tests {
    use super::*;

    #[test]
    fn writes_every_kind() {
        let mut buf = [0u8; 64];
        let mut e = Encoder::new(&mut buf);
        e.dict_begin().unwrap();
        e.bytes(b"a").unwrap();
        e.list_begin().unwrap();
        e.int(0).unwrap();
        e.int(-42).unwrap();
        e.int(i64::MIN).unwrap();
        e.end().unwrap();
        e.bytes(b"b").unwrap();
        e.bytes(b"").unwrap();
        e.end().unwrap();
        assert_eq!(
            e.finish(),
            b"d1:ali0ei-42ei-9223372036854775808ee1:b0:e".as_slice()
        );
    }

    #[test]
    fn full_buffer_leaves_length_unchanged() {
        let mut buf = [0u8; 6];
        let mut e = Encoder::new(&mut buf);
        e.bytes(b"ab").unwrap();
        assert_eq!(e.len(), 4);
        assert_eq!(e.bytes(b"cd"), Err(BufferFull));
        assert_eq!(e.int(123), Err(BufferFull));
        assert_eq!(e.len(), 4);
        e.raw(b"xy").unwrap();
        assert_eq!(e.finish(), b"2:abxy".as_slice());
    }
}

#[cfg(test)]
mod decoder_tests {
    use super::*;
    use proptest::prelude::*;
    use std::vec;
    use std::vec::Vec;

    fn int(s: &[u8]) -> Result<i64, DecodeError> {
        decode(s).map(|(v, _)| v.as_int().unwrap())
    }

    #[test]
    fn scalars() {
        assert_eq!(decode(b"i42e"), Ok((Value::Int(42), 4)));
        assert_eq!(decode(b"i-42e"), Ok((Value::Int(-42), 5)));
        assert_eq!(decode(b"4:spam"), Ok((Value::Bytes(b"spam"), 6)));
        assert_eq!(decode(b"0:"), Ok((Value::Bytes(b""), 2)));
        assert_eq!(int(b"i9223372036854775807e"), Ok(i64::MAX));
        assert_eq!(int(b"i-9223372036854775808e"), Ok(i64::MIN));
    }

    #[test]
    fn lenient_integers_like_node() {
        assert_eq!(int(b"i+5e"), Ok(5));
        assert_eq!(int(b"i007e"), Ok(7));
        assert_eq!(int(b"i-0e"), Ok(0));
        assert_eq!(int(b"i1.5e"), Ok(1));
        assert_eq!(int(b"i-1.9e"), Ok(-1));
        assert_eq!(int(b"i12.e"), Ok(12));
        assert_eq!(decode(b"03:abc"), Ok((Value::Bytes(b"abc"), 6)));
    }

    #[test]
    fn bad_integers() {
        for bad in [
            &b"ie"[..],
            b"i-e",
            b"i+e",
            b"i.5e",
            b"i1.5.5e",
            b"i--1e",
            b"i+-1e",
            b"i1x",
            b"i 1e",
            b"i1.xe",
        ] {
            assert_eq!(decode(bad), Err(DecodeError::Invalid), "{bad:?}");
        }
        assert_eq!(int(b"i9223372036854775808e"), Err(DecodeError::IntOverflow));
        assert_eq!(
            int(b"i-9223372036854775809e"),
            Err(DecodeError::IntOverflow)
        );
        assert_eq!(
            int(b"i99999999999999999999999999e"),
            Err(DecodeError::IntOverflow)
        );
    }

    #[test]
    fn bad_strings_and_types() {
        for bad in [&b"-1:a"[..], b"+1:a", b":a", b"x", b"e", b"1x:a", b"\xff"] {
            assert_eq!(decode(bad), Err(DecodeError::Invalid), "{bad:?}");
        }
    }

    #[test]
    fn truncated_input() {
        for bad in [
            &b""[..],
            b"i",
            b"i12",
            b"i-",
            b"5:abc",
            b"12",
            b"l",
            b"li1e",
            b"d",
            b"d1:a",
            b"d1:ai1e",
            b"99999999999999999999999999:x",
            b"18446744073709551616:x",
        ] {
            assert_eq!(decode(bad), Err(DecodeError::Truncated), "{bad:?}");
        }
    }

    #[test]
    fn dictionary_keys_must_be_strings_with_values() {
        assert_eq!(decode(b"di1ei2ee"), Err(DecodeError::Invalid));
        assert_eq!(decode(b"dlei2ee"), Err(DecodeError::Invalid));
        assert_eq!(decode(b"d1:ae"), Err(DecodeError::Invalid));
        assert_eq!(decode(b"d1:ai1e1:be"), Err(DecodeError::Invalid));
        // A key right after a nested container value.
        assert_eq!(decode(b"d1:ali1ee1:bi2ee").map(|r| r.1), Ok(16));
        assert_eq!(decode(b"d1:aleli1eee"), Err(DecodeError::Invalid));
    }

    #[test]
    fn trailing_data_is_ignored() {
        let (v, used) = decode(b"d1:ai1eeGARBAGE").unwrap();
        assert_eq!(used, 8);
        assert_eq!(v.as_dict().unwrap().raw(), b"d1:ai1ee");
        assert_eq!(decode(b"i1ei2e"), Ok((Value::Int(1), 3)));
    }

    #[test]
    fn containers_iterate_and_lookup() {
        let buf = b"d1:ali1e3:xyzd1:kleee1:bi-3e1:cdee";
        let (v, used) = decode(buf).unwrap();
        assert_eq!(used, buf.len());
        let d = v.as_dict().unwrap();
        let keys: Vec<&[u8]> = d.iter().map(|(k, _)| k).collect();
        assert_eq!(keys, [&b"a"[..], b"b", b"c"]);
        let a = d.get(b"a").unwrap().as_list().unwrap();
        assert_eq!(a.raw(), b"li1e3:xyzd1:kleee");
        let items: Vec<Value> = a.iter().collect();
        assert_eq!(items.len(), 3);
        assert_eq!(items[0], Value::Int(1));
        assert_eq!(items[1], Value::Bytes(b"xyz"));
        let inner = items[2].as_dict().unwrap();
        assert_eq!(inner.raw(), b"d1:klee");
        assert!(inner.get(b"k").unwrap().as_list().unwrap().is_empty());
        assert_eq!(d.get(b"b"), Some(Value::Int(-3)));
        assert!(d.get(b"c").unwrap().as_dict().unwrap().is_empty());
        assert_eq!(d.get(b"zz"), None);
        let raws: Vec<&[u8]> = a.iter_encoded().map(|e| e.raw).collect();
        assert_eq!(raws, [&b"i1e"[..], b"3:xyz", b"d1:klee"]);
        assert_eq!(d.get_encoded(b"b").unwrap().raw, b"i-3e");
        assert_eq!(v.raw(), Some(&buf[..]));
        assert_eq!(Value::Int(1).raw(), None);
    }

    #[test]
    fn unsorted_and_repeated_keys_last_wins() {
        let (v, _) = decode(b"d1:bi1e1:ai2e1:bi3ee").unwrap();
        let d = v.as_dict().unwrap();
        assert_eq!(d.iter().count(), 3);
        assert_eq!(d.get(b"b"), Some(Value::Int(3)));
        assert_eq!(d.get(b"a"), Some(Value::Int(2)));
    }

    #[test]
    fn depth_limit() {
        let mut ok = Vec::new();
        ok.extend(core::iter::repeat_n(b'l', MAX_DEPTH));
        ok.extend(core::iter::repeat_n(b'e', MAX_DEPTH));
        assert_eq!(decode(&ok).map(|r| r.1), Ok(2 * MAX_DEPTH));
        let mut deep = Vec::new();
        deep.extend(core::iter::repeat_n(b'l', MAX_DEPTH + 1));
        deep.extend(core::iter::repeat_n(b'e', MAX_DEPTH + 1));
        assert_eq!(decode(&deep), Err(DecodeError::TooDeep));
        // Alternating dicts and lists keep their kinds across the whole depth.
        let mut mixed = Vec::new();
        for _ in 0..MAX_DEPTH / 2 {
            mixed.extend_from_slice(b"d1:kl");
        }
        mixed.extend_from_slice(b"i1e");
        for _ in 0..MAX_DEPTH / 2 {
            mixed.extend_from_slice(b"ee");
        }
        assert_eq!(decode(&mixed).map(|r| r.1), Ok(mixed.len()));
        // A megabyte of `l` is refused early, without recursion.
        let huge = std::vec![b'l'; 1 << 20];
        assert_eq!(decode(&huge), Err(DecodeError::TooDeep));
    }

    #[test]
    fn truthiness_follows_javascript() {
        assert!(!Value::Int(0).is_truthy());
        assert!(Value::Int(-1).is_truthy());
        assert!(Value::Bytes(b"").is_truthy());
        let (l, _) = decode(b"le").unwrap();
        assert!(l.is_truthy());
    }

    #[test]
    fn encoded_decode_trims_to_the_value() {
        let e = Encoded::decode(b"11:hello worldXX").unwrap();
        assert_eq!(e.raw, b"11:hello world");
        assert_eq!(e.value, Value::Bytes(b"hello world"));
    }

    #[test]
    fn bytes_concat_streams_one_string() {
        let mut buf = [0u8; 64];
        let mut e = Encoder::new(&mut buf);
        e.bytes_concat([&b"abc"[..], b"", b"defghijkl", b"m"])
            .unwrap();
        e.bytes_concat(core::iter::empty::<&[u8]>()).unwrap();
        assert_eq!(e.finish(), b"13:abcdefghijklm0:".as_slice());
    }

    /// A bencode tree for tests.
    #[derive(Clone, Debug)]
    enum Tree {
        Int(i64),
        Bytes(Vec<u8>),
        List(Vec<Tree>),
        Dict(Vec<(Vec<u8>, Tree)>),
    }

    fn tree() -> impl Strategy<Value = Tree> {
        let leaf = prop_oneof![
            any::<i64>().prop_map(Tree::Int),
            proptest::collection::vec(any::<u8>(), 0..24).prop_map(Tree::Bytes),
        ];
        leaf.prop_recursive(6, 64, 6, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..6).prop_map(Tree::List),
                proptest::collection::vec(
                    (proptest::collection::vec(any::<u8>(), 0..6), inner),
                    0..6
                )
                .prop_map(Tree::Dict),
            ]
        })
    }

    fn encode_tree(t: &Tree, e: &mut Encoder<'_>) {
        match t {
            Tree::Int(n) => e.int(*n).unwrap(),
            Tree::Bytes(b) => e.bytes(b).unwrap(),
            Tree::List(items) => {
                e.list_begin().unwrap();
                for i in items {
                    encode_tree(i, e);
                }
                e.end().unwrap();
            }
            Tree::Dict(entries) => {
                e.dict_begin().unwrap();
                for (k, v) in entries {
                    e.bytes(k).unwrap();
                    encode_tree(v, e);
                }
                e.end().unwrap();
            }
        }
    }

    fn encoded(t: &Tree) -> Vec<u8> {
        let mut buf = std::vec![0u8; 1 << 16];
        let mut e = Encoder::new(&mut buf);
        encode_tree(t, &mut e);
        e.as_bytes().to_vec()
    }

    fn same(t: &Tree, v: Value<'_>) -> bool {
        match (t, v) {
            (Tree::Int(a), Value::Int(b)) => *a == b,
            (Tree::Bytes(a), Value::Bytes(b)) => a.as_slice() == b,
            (Tree::List(a), Value::List(l)) => {
                let items: Vec<_> = l.iter_encoded().collect();
                items.len() == a.len()
                    && a.iter()
                        .zip(&items)
                        .all(|(t, e)| same(t, e.value) && e.raw == encoded(t).as_slice())
            }
            (Tree::Dict(a), Value::Dict(d)) => {
                let items: Vec<_> = d.iter_encoded().collect();
                items.len() == a.len()
                    && a.iter().zip(&items).all(|((tk, tv), (k, e))| {
                        tk.as_slice() == *k && same(tv, e.value) && e.raw == encoded(tv).as_slice()
                    })
            }
            _ => false,
        }
    }

    /// Walks everything and checks that each container's iteration ends exactly at its closing
    /// `e` (so iteration never stops early on validated input). Returns the number of values.
    fn walk(v: Value<'_>) -> usize {
        match v {
            Value::Int(_) | Value::Bytes(_) => 1,
            Value::List(l) => {
                let mut it = l.iter();
                let mut count = 1;
                for item in it.by_ref() {
                    count += walk(item);
                }
                assert_eq!(it.pos, l.raw().len() - 1);
                count
            }
            Value::Dict(d) => {
                let mut it = d.iter();
                let mut count = 1;
                for (_, item) in it.by_ref() {
                    count += walk(item);
                }
                assert_eq!(it.pos, d.raw().len() - 1);
                count
            }
        }
    }

    proptest! {
        #[test]
        fn roundtrip_encoded_trees(t in tree()) {
            let bytes = encoded(&t);
            let (v, used) = decode(&bytes).unwrap();
            prop_assert_eq!(used, bytes.len());
            prop_assert!(same(&t, v));
            walk(v);
            // Any strict prefix is truncated, never something else.
            for cut in 0..bytes.len() {
                prop_assert_eq!(decode(&bytes[..cut]).map(|r| r.1), Err(DecodeError::Truncated));
            }
        }

        #[test]
        fn trailing_bytes_change_nothing(t in tree(), tail in proptest::collection::vec(any::<u8>(), 1..32)) {
            let mut bytes = encoded(&t);
            let len = bytes.len();
            bytes.extend_from_slice(&tail);
            let (v, used) = decode(&bytes).unwrap();
            prop_assert_eq!(used, len);
            prop_assert!(same(&t, v));
            walk(v);
        }

        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            if let Ok((v, used)) = decode(&bytes) {
                prop_assert!(used <= bytes.len());
                walk(v);
            }
        }

        #[test]
        fn decode_never_panics_on_bencode_alphabet(
            bytes in proptest::collection::vec(
                prop_oneof![Just(b'i'), Just(b'l'), Just(b'd'), Just(b'e'), Just(b':'),
                            Just(b'-'), Just(b'+'), Just(b'.'), Just(b'0'), Just(b'1'),
                            Just(b'2'), Just(b'9')],
                0..128)
        ) {
            if let Ok((v, used)) = decode(&bytes) {
                prop_assert!(used <= bytes.len());
                walk(v);
            }
        }

        #[test]
        fn bytes_concat_matches_bytes(
            chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..16), 0..12),
            size in 0usize..200,
            offset in 0usize..4,
        ) {
            let joined: Vec<u8> = chunks.concat();
            let mut a = std::vec![0u8; size];
            let mut b = std::vec![0u8; size];
            let mut ea = Encoder::new(&mut a);
            let mut eb = Encoder::new(&mut b);
            let pad = &b"xyz"[..offset.min(3)];
            let pa = ea.raw(pad);
            let pb = eb.raw(pad);
            prop_assert_eq!(pa, pb);
            let ra = ea.bytes_concat(chunks.iter());
            let rb = eb.bytes(&joined);
            prop_assert_eq!(ra, rb);
            prop_assert_eq!(ea.as_bytes(), eb.as_bytes());
        }
    }
}
