//! Secrets in memory: local and provider passwords, AUTH payloads, Redis and
//! OAuth2 credentials. `SecretString` wipes its bytes when dropped (zeroize)
//! and never formats them: `Debug` prints `<redacted>` and there is no
//! `Display`, so a secret cannot reach a log line or a reply by `{}` or `{:?}`.
//! Reading it is explicit (`expose`), which makes every use easy to find.
//!
//! What this does not cover: copies that other crates make of a secret they
//! are handed (rustls buffers, the Redis client's connection info, hyper's
//! request buffers), and bytes the kernel or the allocator moved before the
//! wipe. It keeps postern's own copies short-lived and wiped.

use std::fmt;

use zeroize::{Zeroize, Zeroizing};

/// A string that is wiped on drop and never printed.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct SecretString(Zeroizing<String>);

impl SecretString {
    pub fn new(s: String) -> SecretString {
        SecretString(Zeroizing::new(s))
    }

    /// The secret itself, for the one place that must send or check it.
    pub fn expose(&self) -> &str {
        self.0.as_str()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<String> for SecretString {
    fn from(s: String) -> SecretString {
        SecretString::new(s)
    }
}

impl From<&str> for SecretString {
    fn from(s: &str) -> SecretString {
        SecretString::new(s.to_owned())
    }
}

impl fmt::Debug for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Bytes that are wiped on drop (decoded SASL responses, request bodies).
pub type SecretBytes = Zeroizing<Vec<u8>>;

/// Wipes `buf` in place (a consumed AUTH line in a read buffer).
pub fn wipe(buf: &mut [u8]) {
    buf.zeroize();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_secret() {
        let s = SecretString::from("hunter2");
        assert_eq!(format!("{s:?}"), "<redacted>");
        assert_eq!(format!("{:?}", Some(s.clone())), "Some(<redacted>)");
        assert_eq!(s.expose(), "hunter2");
    }

    #[test]
    fn wipe_zeroes_the_bytes() {
        let mut b = *b"AUTH PLAIN AGRldgBwdw==\r\n";
        wipe(&mut b[11..]);
        assert_eq!(&b[..11], b"AUTH PLAIN ");
        assert!(b[11..].iter().all(|&x| x == 0));
    }
}
