//! What the two HTTP/1.1 servers of this crate, the grape API (`grape::conn`) and the HTTP RPC
//! worker (`rpc::http::conn`), do alike around grenache-core's HTTP/1.1 codec: read more bytes
//! of a connection, and write an answer's head the way Node's http server does.
//!
//! Why not hyper for these servers: both answer small bodies, and their cost per request was
//! mostly HTTP machinery (header maps, boxed bodies, a timer per request, a `Date` formatted per
//! answer). The core's parser borrows the read buffer and the head is written from a cache
//! refreshed once per second (docs/BENCHMARKS.md, "Serving loops").

use std::cell::RefCell;
use std::io;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use grenache_core::wire::http::{write_response_head, BodyKind, Header};
use tokio::io::{AsyncRead, AsyncReadExt};

/// Bytes asked of the socket per read.
pub(crate) const READ_CHUNK: usize = 4096;
/// The largest request head: Node's default `--max-http-header-size` (16 KiB). Larger → 431.
pub(crate) const MAX_HEAD: usize = 16 * 1024;
/// Header fields per request (hyper's and many servers' default); more → 431.
pub(crate) const MAX_HEADERS: usize = 100;

/// Appends up to [`READ_CHUNK`] bytes from `stream` to `buf`; 0 means end of stream.
pub(crate) async fn read_more<S: AsyncRead + Unpin + ?Sized>(
    stream: &mut S,
    buf: &mut Vec<u8>,
) -> io::Result<usize> {
    buf.reserve(READ_CHUNK);
    stream.read_buf(buf).await
}

/// An answer to write: status, an optional `Content-Type` and the body.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Answer<'a> {
    /// HTTP status code (100..=999).
    pub status: u16,
    /// A `Content-Type` header, if any (Node's Grenache answers have none).
    pub content_type: Option<&'a str>,
    /// The body; `Content-Length` is its length.
    pub body: &'a [u8],
}

/// Writes `answer` into `out` (cleared first) with Node's headers in Node's order
/// (docs/protocol.md §3.1): `Date`, `Connection`, `Keep-Alive` (only when the connection stays
/// open: `keep_alive` is its idle timeout then), `Content-Length`.
///
/// The most frequent answer, a `200` without `Content-Type` on a connection that stays open,
/// takes its head up to the length from a per-second cache ([`with_ok_head`]) rather than
/// writing every field again.
pub(crate) fn encode_answer(out: &mut Vec<u8>, answer: &Answer<'_>, keep_alive: Option<Duration>) {
    if let (200, None, Some(idle)) = (answer.status, answer.content_type, keep_alive) {
        let cached = with_ok_head(idle, |prefix| {
            out.clear();
            out.extend_from_slice(prefix);
            !prefix.is_empty()
        });
        if cached {
            let mut digits = [0u8; 32];
            let len = write_decimal(&mut digits, b"", answer.body.len() as u64);
            out.extend_from_slice(digits.get(..len).unwrap_or(&[]));
            out.extend_from_slice(b"\r\n\r\n");
            out.extend_from_slice(answer.body);
            return;
        }
    }
    encode_head(out, answer, keep_alive);
    out.extend_from_slice(answer.body);
}

/// The head of [`encode_answer`], written field by field into `out` (cleared first).
fn encode_head(out: &mut Vec<u8>, answer: &Answer<'_>, keep_alive: Option<Duration>) {
    let mut timeout_text = [0u8; 32];
    let keep_alive_value = keep_alive.map(|idle| {
        let len = write_decimal(&mut timeout_text, b"timeout=", idle.as_secs());
        &timeout_text[..len]
    });
    let length = BodyKind::Length(u64::try_from(answer.body.len()).unwrap_or(u64::MAX));
    with_date(|date| {
        let connection: &[u8] = if keep_alive.is_some() {
            b"keep-alive"
        } else {
            b"close"
        };
        let mut headers = [Header::new("", b""); 4];
        let mut count = 0;
        // Node's order; a `Content-Type` (the grape's operator endpoints) first.
        let fields = [
            answer
                .content_type
                .map(|ct| Header::new("Content-Type", ct.as_bytes())),
            Some(Header::new("Date", date.as_bytes())),
            Some(Header::new("Connection", connection)),
            keep_alive_value.map(|value| Header::new("Keep-Alive", value)),
        ];
        for field in fields.into_iter().flatten() {
            if let Some(slot) = headers.get_mut(count) {
                *slot = field;
                count += 1;
            }
        }
        let mut head = [0u8; 256];
        let written = write_response_head(
            &mut head,
            answer.status,
            None,
            headers.get(..count).unwrap_or(&[]),
            length,
        );
        out.clear();
        // The head is a few short fields and a status from 100..=999: it always fits and is
        // always valid; a 500 head is the fallback all the same.
        match written {
            Ok(len) => out.extend_from_slice(head.get(..len).unwrap_or(&[])),
            Err(_) => out.extend_from_slice(b"HTTP/1.1 500 Internal Server Error\r\n"),
        }
    });
}

/// Writes `prefix` and `value` in decimal into `out`; returns the length.
fn write_decimal(out: &mut [u8; 32], prefix: &[u8], value: u64) -> usize {
    let mut digits = [0u8; 20];
    let mut n = value;
    let mut count = 0;
    loop {
        digits[count] = b'0' + (n % 10) as u8;
        count += 1;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    let mut len = 0;
    for &byte in prefix.iter().chain(digits[..count].iter().rev()) {
        out[len] = byte;
        len += 1;
    }
    len
}

thread_local! {
    /// The `Date` value of the current second, per thread: formatting it for every answer
    /// cost more than the rest of the head.
    static DATE: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
    /// The head of a `200` keep-alive answer up to the value of its `Content-Length`, for the
    /// second and the idle timeout it was written for: (second, idle, head).
    static OK_HEAD: RefCell<(u64, Duration, Vec<u8>)> =
        const { RefCell::new((u64::MAX, Duration::ZERO, Vec::new())) };
}

/// Calls `f` with the head of a `200` answer on a connection kept open for `idle`, up to the
/// value of `Content-Length` (empty if it could not be made). Made by [`encode_head`] itself,
/// once per second, so that both ways give the same bytes.
fn with_ok_head<T>(idle: Duration, f: impl FnOnce(&[u8]) -> T) -> T {
    let second = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    OK_HEAD.with(|cell| {
        let mut cached = cell.borrow_mut();
        if cached.0 != second || cached.1 != idle {
            let mut head = Vec::with_capacity(160);
            let empty = Answer {
                status: 200,
                content_type: None,
                body: b"",
            };
            encode_head(&mut head, &empty, Some(idle));
            let prefix_len = head.strip_suffix(b"0\r\n\r\n").map_or(0, <[u8]>::len);
            head.truncate(prefix_len);
            *cached = (second, idle, head);
        }
        f(&cached.2)
    })
}

/// Calls `f` with the `Date` header value of this second.
fn with_date(f: impl FnOnce(&str)) {
    let now = SystemTime::now();
    let second = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    DATE.with(|cell| {
        let mut cached = cell.borrow_mut();
        if cached.0 != second {
            *cached = (second, http_date(now));
        }
        f(&cached.1);
    });
}

/// An IMF-fixdate (`Tue, 25 Nov 2026 18:43:00 GMT`), the format of Node's `Date` header.
fn http_date(now: SystemTime) -> String {
    const WEEKDAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let secs = now
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs());
    let days = secs / 86_400;
    let of_day = secs % 86_400;
    // 1970-01-01 was a Thursday.
    let weekday = WEEKDAYS.get((days % 7) as usize).copied().unwrap_or("Thu");
    let (year, month, day) = civil_from_days(days);
    let month = MONTHS
        .get(month.saturating_sub(1) as usize)
        .copied()
        .unwrap_or("Jan");
    format!(
        "{weekday}, {day:02} {month} {year} {:02}:{:02}:{:02} GMT",
        of_day / 3600,
        of_day % 3600 / 60,
        of_day % 60
    )
}

/// Days since 1970-01-01 → (year, month 1..=12, day 1..=31), proleptic Gregorian
/// (H. Hinnant's `civil_from_days`, for non-negative day counts).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(status: u16, body: &str) -> Answer<'_> {
        Answer {
            status,
            content_type: None,
            body: body.as_bytes(),
        }
    }

    #[test]
    fn dates_format_like_node() {
        assert_eq!(http_date(UNIX_EPOCH), "Thu, 01 Jan 1970 00:00:00 GMT");
        let t = UNIX_EPOCH + Duration::from_secs(1_795_632_180);
        assert_eq!(http_date(t), "Wed, 25 Nov 2026 18:43:00 GMT");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400);
        assert_eq!(http_date(leap), "Tue, 29 Feb 2000 00:00:00 GMT");
    }

    #[test]
    fn answers_carry_nodes_headers_in_nodes_order() {
        let mut out = Vec::new();
        encode_answer(
            &mut out,
            &answer(200, "[\"127.0.0.1:1337\"]"),
            Some(Duration::from_secs(5)),
        );
        let text = String::from_utf8(out.clone()).unwrap();
        let date = &text["HTTP/1.1 200 OK\r\nDate: ".len()..][..29];
        assert_eq!(
            text,
            format!(
                "HTTP/1.1 200 OK\r\nDate: {date}\r\nConnection: keep-alive\r\n\
                 Keep-Alive: timeout=5\r\nContent-Length: 18\r\n\r\n[\"127.0.0.1:1337\"]"
            )
        );
        assert!(date.ends_with(" GMT"), "{date}");

        // The cached head of a 200 keep-alive answer and the one written field by field agree.
        for body in ["", "[]", &"x".repeat(12_345)] {
            let reply = answer(200, body);
            let mut fields = Vec::new();
            encode_head(&mut fields, &reply, Some(Duration::from_secs(5)));
            fields.extend_from_slice(body.as_bytes());
            encode_answer(&mut out, &reply, Some(Duration::from_secs(5)));
            // Unless the second turned between the two.
            if out != fields {
                encode_head(&mut fields, &reply, Some(Duration::from_secs(5)));
                fields.extend_from_slice(body.as_bytes());
            }
            assert_eq!(
                String::from_utf8_lossy(&out),
                String::from_utf8_lossy(&fields)
            );
        }
        encode_answer(&mut out, &answer(200, "[]"), Some(Duration::from_secs(7)));
        assert!(String::from_utf8_lossy(&out).contains("\r\nKeep-Alive: timeout=7\r\n"));

        encode_answer(&mut out, &answer(413, "ERR_GRAPE_PAYLOAD_SIZE"), None);
        let text = String::from_utf8(out.clone()).unwrap();
        assert!(text.starts_with("HTTP/1.1 413 Payload Too Large\r\nDate: "));
        assert!(text.ends_with(
            "\r\nConnection: close\r\nContent-Length: 22\r\n\r\nERR_GRAPE_PAYLOAD_SIZE"
        ));

        // A typed 200 is written field by field, its `Content-Type` first.
        let typed = Answer {
            status: 200,
            content_type: Some("text/html"),
            body: b"<p>",
        };
        encode_answer(&mut out, &typed, Some(Duration::from_secs(5)));
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nDate: "));
        assert!(text.ends_with("\r\nContent-Length: 3\r\n\r\n<p>"), "{text}");
    }

    #[test]
    fn decimals() {
        let mut out = [0u8; 32];
        let len = write_decimal(&mut out, b"timeout=", 0);
        assert_eq!(&out[..len], b"timeout=0");
        let len = write_decimal(&mut out, b"", u64::MAX);
        assert_eq!(&out[..len], b"18446744073709551615");
    }
}
