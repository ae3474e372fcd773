//! A relaying postern in front of a recording upstream, and a raw client that
//! logs in: the set-up the hardening tests (header rewrite, NUL) share, so each
//! can check the exact bytes that reach the upstream.

use std::sync::OnceLock;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;

use super::postern::{Postern, Raw, spawn_postern};
use super::upstream::{FakeUpstream, UpstreamConfig};

/// The password of every user in `relay_config`.
pub const PASSWORD: &str = "pw";

/// The argon2 hash of `PASSWORD`, computed once per test binary.
pub fn password_hash() -> &'static str {
    static HASH: OnceLock<String> = OnceLock::new();
    HASH.get_or_init(|| postern::auth::hash_password(PASSWORD).expect("hash_password"))
}

/// One loopback listener "smtp", metrics, the fake upstream and `users`
/// (`{hash}` in them stands for the hash of `PASSWORD`).
pub fn relay_config(up: &FakeUpstream, users: &str) -> String {
    format!(
        "[[listener]]\nname = \"smtp\"\naddr = \"127.0.0.1:0\"\n\n\
         [metrics]\naddr = \"127.0.0.1:0\"\n\n{}\n{}\n",
        up.postern_toml(),
        users.replace("{hash}", password_hash())
    )
}

/// A recording upstream and postern relaying to it for `users`, its probe done.
pub async fn start_relay(users: &str) -> (FakeUpstream, Postern) {
    let up = FakeUpstream::start(UpstreamConfig::default()).await;
    let p = spawn_postern(&relay_config(&up, users)).await;
    up.wait_probe().await;
    (up, p)
}

/// Connects to "smtp", reads the greeting, EHLO, AUTH PLAIN as `user`.
pub async fn login(p: &Postern, user: &str) -> Raw {
    let mut c = Raw::connect(p.addr("smtp")).await;
    let greeting = c.reply().await;
    assert!(greeting.starts_with("220 "), "greeting {greeting:?}");
    let ehlo = c.cmd("EHLO client.test").await;
    assert!(ehlo.starts_with("250"), "EHLO {ehlo:?}");
    let token = B64.encode(format!("\0{user}\0{PASSWORD}"));
    let auth = c.cmd(&format!("AUTH PLAIN {token}")).await;
    assert!(auth.starts_with("235 "), "AUTH {auth:?}");
    c
}

/// MAIL, RCPT and DATA in one write (each must get 250/250/354), then `content`
/// as the wire carries it (dot-stuffed, without the final dot) and the final
/// dot. Returns the reply to the end of data, whatever it is.
pub async fn transaction(c: &mut Raw, from: &str, to: &str, content: &[u8]) -> String {
    c.send(format!("MAIL FROM:<{from}>\r\nRCPT TO:<{to}>\r\nDATA\r\n").as_bytes())
        .await;
    for what in ["250 ", "250 ", "354"] {
        let r = c.reply().await;
        assert!(r.starts_with(what), "expected {what:?}, got {r:?}");
    }
    let mut wire = content.to_vec();
    wire.extend_from_slice(b".\r\n");
    c.send(&wire).await;
    c.reply().await
}
