//! Write tokens for `announce_peer` and `put` (docs/protocol.md §6.4, §13.10).
//!
//! A node hands a token to whoever asks `get_peers`/`get` and accepts an `announce_peer`/`put`
//! only with a token it issued to the same source IP recently. bittorrent-dht computes it as
//! `sha1(Buffer.from(host) ‖ secret)` (`dht:706-724`), where `host` is the dotted IPv4 string of
//! the UDP source (`"127.0.0.1"`) and `secret` is 20 random bytes. Two secrets are kept, the
//! current one (used to issue) and the previous one (still accepted); they rotate every 5
//! minutes, so a token stays valid between 5 and 10 minutes. Tokens are per IP, not per
//! `info_hash`. This module reproduces that byte for byte, so tokens issued by a Node grape's
//! scheme and by this one look alike (they are opaque to everyone else anyway).

use crate::rng::Rng;
use crate::time::{Duration, Instant};

/// Length of a secret (the SHA-1 length, like bittorrent-dht's `_hashLength`).
pub const SECRET_LEN: usize = 20;

/// Length of a token (a SHA-1 digest).
pub const TOKEN_LEN: usize = 20;

/// How often the secret rotates (bittorrent-dht's `ROTATE_INTERVAL`, 5 minutes).
pub const ROTATION_PERIOD: Duration = Duration::from_secs(5 * 60);

/// Issues and checks write tokens, with a rotating secret.
///
/// `Debug` prints the rotation deadline only, never the secrets.
#[derive(Clone)]
pub struct TokenIssuer {
    current: [u8; SECRET_LEN],
    previous: [u8; SECRET_LEN],
    next_rotation: Instant,
}

impl core::fmt::Debug for TokenIssuer {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("TokenIssuer")
            .field("next_rotation", &self.next_rotation)
            .finish_non_exhaustive()
    }
}

impl TokenIssuer {
    /// A new issuer with two fresh random secrets (like bittorrent-dht's first
    /// `_rotateSecrets`), next rotating at `now + 5 min`.
    ///
    /// The secrets are what keeps others from forging tokens: on a real node `rng` must be a
    /// real random source, not a fixed-seed test generator.
    pub fn new<R: Rng + ?Sized>(now: Instant, rng: &mut R) -> Self {
        let mut current = [0u8; SECRET_LEN];
        let mut previous = [0u8; SECRET_LEN];
        rng.fill_bytes(&mut current);
        rng.fill_bytes(&mut previous);
        Self::from_secrets(now, current, previous)
    }

    /// An issuer with the given secrets, next rotating at `now + 5 min` (for tests and replay).
    pub fn from_secrets(
        now: Instant,
        current: [u8; SECRET_LEN],
        previous: [u8; SECRET_LEN],
    ) -> Self {
        TokenIssuer {
            current,
            previous,
            next_rotation: now.saturating_add(ROTATION_PERIOD),
        }
    }

    /// The token for source address `ip`: `sha1("a.b.c.d" ‖ current secret)`.
    pub fn token(&self, ip: [u8; 4]) -> [u8; TOKEN_LEN] {
        token_with(ip, &self.current)
    }

    /// Whether `token` was issued to `ip` with the current or the previous secret.
    ///
    /// Any length is accepted as input (the wire can carry anything) and anything but the 20
    /// right bytes is refused. The comparison does not stop at the first differing byte.
    pub fn verify(&self, ip: [u8; 4], token: &[u8]) -> bool {
        let Ok(token) = <&[u8; TOKEN_LEN]>::try_from(token) else {
            return false;
        };
        let a = ct_eq(token, &token_with(ip, &self.current));
        let b = ct_eq(token, &token_with(ip, &self.previous));
        a | b
    }

    /// Rotates the secret when the deadline has passed; returns whether it did.
    ///
    /// The schedule stays on a fixed 5-minute grid from the creation time, as `setInterval`
    /// does. If two or more rotations were due (the caller slept past a deadline), both secrets
    /// are replaced, as that many interval ticks would have done, so no token outlives 10
    /// minutes of schedule.
    pub fn rotate_if_due<R: Rng + ?Sized>(&mut self, now: Instant, rng: &mut R) -> bool {
        if now < self.next_rotation {
            return false;
        }
        let period = crate::time::duration_millis(ROTATION_PERIOD);
        let late = now
            .as_millis()
            .saturating_sub(self.next_rotation.as_millis());
        let extra = late.checked_div(period).unwrap_or(0);
        if extra >= 1 {
            rng.fill_bytes(&mut self.previous);
        } else {
            self.previous = self.current;
        }
        rng.fill_bytes(&mut self.current);
        let steps = extra.saturating_add(1);
        self.next_rotation = Instant::from_millis(
            self.next_rotation
                .as_millis()
                .saturating_add(steps.saturating_mul(period)),
        );
        true
    }

    /// When the secret next rotates: a deadline for the caller's timer.
    pub fn next_rotation(&self) -> Instant {
        self.next_rotation
    }
}

fn token_with(ip: [u8; 4], secret: &[u8; SECRET_LEN]) -> [u8; TOKEN_LEN] {
    let mut h = crate::wire::sha1::Sha1::new();
    h.update(&dotted(ip));
    h.update(secret);
    h.digest()
}

/// `ip` as Node prints an IPv4 address (`"10.0.0.1"`, no leading zeros; at most 15 bytes).
fn dotted(ip: [u8; 4]) -> heapless::Vec<u8, 15> {
    let mut out = heapless::Vec::new();
    // Four octets of at most three digits and three dots: 15 bytes, never more.
    let mut push = |b: u8| {
        let _ = out.push(b);
    };
    for (i, octet) in ip.into_iter().enumerate() {
        if i > 0 {
            push(b'.');
        }
        if octet >= 100 {
            push(b'0' + octet / 100);
        }
        if octet >= 10 {
            push(b'0' + octet / 10 % 10);
        }
        push(b'0' + octet % 10);
    }
    out
}

fn ct_eq(a: &[u8; TOKEN_LEN], b: &[u8; TOKEN_LEN]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::SplitMix64;

    fn secret(seq: u8) -> [u8; SECRET_LEN] {
        core::array::from_fn(|i| seq.wrapping_add(i as u8))
    }

    #[test]
    fn token_is_sha1_of_dotted_ip_and_secret_as_node_computes_it() {
        // Golden values from Node:
        // crypto.createHash('sha1').update(Buffer.from('127.0.0.1')).update(secret).digest('hex')
        let t = TokenIssuer::from_secrets(Instant::ZERO, secret(0), [0xab; 20]);
        assert_eq!(
            hex::encode(t.token([127, 0, 0, 1])),
            "a8919942ce4771a0d318b8bd924adf3ee73778df"
        );
        let t = TokenIssuer::from_secrets(Instant::ZERO, [0xab; 20], secret(0));
        assert_eq!(
            hex::encode(t.token([192, 168, 100, 7])),
            "863aee2f809b673ed9151003b1ed3d1cf8444f84"
        );
    }

    #[test]
    fn dotted_ipv4_has_no_leading_zeros() {
        for (ip, text) in [
            ([0, 0, 0, 0], "0.0.0.0"),
            ([255, 255, 255, 255], "255.255.255.255"),
            ([10, 100, 9, 199], "10.100.9.199"),
        ] {
            assert_eq!(dotted(ip).as_slice(), text.as_bytes());
        }
    }

    #[test]
    fn verify_accepts_current_and_previous_only() {
        let mut rng = SplitMix64::new(9);
        let mut t = TokenIssuer::new(Instant::ZERO, &mut rng);
        let ip = [127, 0, 0, 1];
        let first = t.token(ip);
        assert!(t.verify(ip, &first));
        assert!(!t.verify([127, 0, 0, 2], &first), "tokens are per IP");
        assert!(!t.verify(ip, &first[..19]));
        let mut longer = [0u8; 21];
        longer[..20].copy_from_slice(&first);
        assert!(!t.verify(ip, &longer));
        let mut flipped = first;
        flipped[19] ^= 1;
        assert!(!t.verify(ip, &flipped));

        assert_eq!(t.next_rotation(), Instant::from_millis(300_000));
        assert!(!t.rotate_if_due(Instant::from_millis(299_999), &mut rng));
        assert!(t.verify(ip, &first));
        assert!(t.rotate_if_due(Instant::from_millis(300_000), &mut rng));
        assert_eq!(t.next_rotation(), Instant::from_millis(600_000));
        let second = t.token(ip);
        assert_ne!(first, second);
        assert!(
            t.verify(ip, &first),
            "previous secret still accepted (5-10 min)"
        );
        assert!(t.verify(ip, &second));
        assert!(t.rotate_if_due(Instant::from_millis(600_001), &mut rng));
        assert!(!t.verify(ip, &first), "two rotations later it is refused");
        assert!(t.verify(ip, &second));
        assert_eq!(t.next_rotation(), Instant::from_millis(900_000));
    }

    #[test]
    fn late_rotation_replaces_both_secrets_and_stays_on_the_grid() {
        let mut rng = SplitMix64::new(10);
        let mut t = TokenIssuer::new(Instant::ZERO, &mut rng);
        let ip = [10, 0, 0, 1];
        let old = t.token(ip);
        // 12 minutes later: rotations at 5 and 10 min were due.
        assert!(t.rotate_if_due(Instant::from_millis(720_000), &mut rng));
        assert!(!t.verify(ip, &old));
        assert!(t.verify(ip, &t.token(ip)));
        assert_eq!(t.next_rotation(), Instant::from_millis(900_000));
    }

    #[test]
    fn issuers_with_other_secrets_disagree() {
        let mut rng = SplitMix64::new(11);
        let a = TokenIssuer::new(Instant::ZERO, &mut rng);
        let b = TokenIssuer::new(Instant::ZERO, &mut rng);
        let ip = [1, 2, 3, 4];
        assert!(!b.verify(ip, &a.token(ip)));
        assert!(!std::format!("{a:?}").contains("current"));
    }

    proptest::proptest! {
        #[test]
        fn verify_never_panics(ip: [u8; 4], token in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..40)) {
            let t = TokenIssuer::from_secrets(Instant::ZERO, secret(1), secret(2));
            let ok = t.verify(ip, &token);
            proptest::prop_assert_eq!(ok, token == t.token(ip) || token == token_with(ip, &secret(2)));
        }
    }
}
