//! The tutorial's Fibonacci worker ("Microservices with Grenache") as a grenache-embassy
//! [`Handler`]: payload `{"number": n}`, result fib(n) with fib(0) = fib(1) = 1.

use grenache_core::json;
use grenache_embassy::worker::Handler;

/// The `fibonacci_worker` service.
pub struct Fib;

/// fib(0) = fib(1) = 1 as in the tutorial; `None` once it no longer fits a u64 (n > 92).
fn fibonacci(n: u64) -> Option<u64> {
    let (mut a, mut b) = (1u64, 1u64);
    for _ in 1..n {
        (a, b) = (b, a.checked_add(b)?);
    }
    Some(b)
}

/// Writes `v` in decimal into `out`; `None` if it does not fit.
fn write_decimal(mut v: u64, out: &mut [u8]) -> Option<usize> {
    let mut digits = [0u8; 20];
    let mut n = 0;
    loop {
        *digits.get_mut(n)? = b'0' + (v % 10) as u8;
        n += 1;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    let dst = out.get_mut(..n)?;
    for (d, s) in dst.iter_mut().zip(digits[..n].iter().rev()) {
        *d = *s;
    }
    Some(n)
}

impl Handler for Fib {
    fn handle(
        &mut self,
        _key: &str,
        payload: &[u8],
        out: &mut [u8],
    ) -> Result<usize, &'static str> {
        let number = json::get(payload, "number")
            .ok()
            .flatten()
            .and_then(|raw| json::parse_u64(raw).ok())
            .ok_or("ERR_BAD_NUMBER")?;
        let value = fibonacci(number).ok_or("ERR_BAD_NUMBER")?;
        write_decimal(value, out).ok_or("ERR_REPLY_TOO_LARGE")
    }
}
