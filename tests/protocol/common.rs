//! Helpers shared by the protocol tests: the config, real TLS clients, reply checks.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls;

use crate::support::postern::{Postern, Raw};
use crate::support::upstream::{FakeUpstream, Message};

pub(crate) const WAIT: Duration = Duration::from_secs(10);
pub(crate) const PASSWORD: &str = "pw";

// ---------------------------------------------------------------------------------------
// Config

/// The argon2 hash of `PASSWORD`, computed once per test binary.
pub(crate) fn hash() -> &'static str {
    static HASH: OnceLock<String> = OnceLock::new();
    HASH.get_or_init(|| postern::auth::hash_password(PASSWORD).expect("hash_password"))
}

/// A postern config: one listener "smtp" on loopback (with `listener_keys`), TLS
/// material, metrics, `[limits]` (a generous AUTH-failure throttle so that tests
/// doing several failed AUTHs are not cut by it, plus `limits`), the `upstream`
/// block, user "dev" (password `PASSWORD`, any sender) and `more` (further tables).
pub(crate) fn config(listener_keys: &str, limits: &str, upstream: &str, more: &str) -> String {
    let hash = hash();
    format!(
        r#"
[[listener]]
name = "smtp"
addr = "127.0.0.1:0"
{listener_keys}

[tls]
cert = "{{cert}}"
key = "{{key}}"

[metrics]
addr = "127.0.0.1:0"

[limits]
auth_failures_per_ip_per_minute = 1000
{limits}

{upstream}

[[user]]
name = "dev"
password_hash = "{hash}"
allowed_senders = ["*"]

{more}
"#
    )
}

pub(crate) fn plain(authzid: &str, user: &str, pass: &str) -> String {
    B64.encode(format!("{authzid}\0{user}\0{pass}"))
}

pub(crate) fn b64(s: &str) -> String {
    B64.encode(s)
}

// ---------------------------------------------------------------------------------------
// Clients

/// What the tests need from a client connection, plain or TLS.
pub(crate) trait Smtp {
    async fn send(&mut self, bytes: &[u8]);
    /// One whole reply, lines joined with '\n'; panics after 10 s or on EOF.
    async fn reply(&mut self) -> String;

    async fn cmd(&mut self, line: &str) -> String {
        self.send(format!("{line}\r\n").as_bytes()).await;
        self.reply().await
    }
}

impl Smtp for Raw {
    async fn send(&mut self, bytes: &[u8]) {
        Raw::send(self, bytes).await
    }
    async fn reply(&mut self) -> String {
        Raw::reply(self).await
    }
}

/// A line client over TLS (after STARTTLS).
pub(crate) struct TlsClient {
    stream: TlsStream<TcpStream>,
    buf: Vec<u8>,
}

impl Smtp for TlsClient {
    async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("TLS write");
        self.stream.flush().await.expect("TLS flush");
    }

    async fn reply(&mut self) -> String {
        let mut lines = Vec::new();
        loop {
            let line = loop {
                if let Some(i) = self.buf.windows(2).position(|w| w == b"\r\n") {
                    let line = String::from_utf8_lossy(&self.buf[..i]).into_owned();
                    self.buf.drain(..i + 2);
                    break line;
                }
                let mut chunk = [0u8; 4096];
                let n = tokio::time::timeout(WAIT, self.stream.read(&mut chunk))
                    .await
                    .expect("timed out waiting for a reply over TLS")
                    .expect("TLS read");
                assert!(
                    n > 0,
                    "TLS connection closed; unread: {:?}",
                    String::from_utf8_lossy(&self.buf)
                );
                self.buf.extend_from_slice(&chunk[..n]);
            };
            let last = line.as_bytes().get(3) != Some(&b'-');
            lines.push(line);
            if last {
                return lines.join("\n");
            }
        }
    }
}

/// TLS handshake on a connection whose STARTTLS got 220, trusting postern's test cert.
pub(crate) async fn tls_upgrade(tcp: TcpStream, p: &Postern) -> TlsClient {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(p.cert.cert_pem.as_bytes()) {
        roots.add(cert.expect("cert PEM")).expect("add root");
    }
    let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("protocol versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    let name = ServerName::try_from("localhost").expect("server name");
    let stream = tokio::time::timeout(WAIT, TlsConnector::from(Arc::new(cfg)).connect(name, tcp))
        .await
        .expect("TLS handshake timed out")
        .expect("TLS handshake with postern failed");
    TlsClient {
        stream,
        buf: Vec::new(),
    }
}

// ---------------------------------------------------------------------------------------
// Assertions

/// Checks the RFC 3463 enhanced code on every line of `reply`: the 4th character is
/// ' ' or '-', then "X.Y.Z " where X is the first digit of the reply code.
pub(crate) fn assert_enhanced(reply: &str) {
    for line in reply.split('\n') {
        let b = line.as_bytes();
        assert!(
            b.len() > 4 && b[..3].iter().all(u8::is_ascii_digit) && matches!(b[3], b' ' | b'-'),
            "not a reply line: {line:?} (in {reply:?})"
        );
        let rest = &line[4..];
        let Some((code, _text)) = rest.split_once(' ') else {
            panic!("no enhanced status code followed by text in {line:?}");
        };
        let parts: Vec<&str> = code.split('.').collect();
        assert_eq!(parts.len(), 3, "enhanced code {code:?} in {line:?}");
        assert_eq!(
            parts[0].as_bytes(),
            &b[..1],
            "enhanced code class differs from the reply class in {line:?}"
        );
        for p in &parts[1..] {
            assert!(
                (1..=3).contains(&p.len()) && p.bytes().all(|c| c.is_ascii_digit()),
                "enhanced code {code:?} in {line:?}"
            );
        }
    }
}

/// Asserts that `reply` starts with `want`; checks its enhanced code unless it is a 334/354.
pub(crate) fn check(reply: &str, want: &str, what: &str) {
    assert!(
        reply.starts_with(want),
        "{what}: expected a reply starting with {want:?}, got {reply:?}"
    );
    if !reply.starts_with("334") && !reply.starts_with("354") {
        assert_enhanced(reply);
    }
}

/// Sends `line`, checks the reply (see `check`) and returns it.
pub(crate) async fn expect(c: &mut impl Smtp, line: &str, want: &str) -> String {
    let r = c.cmd(line).await;
    check(&r, want, line);
    r
}

/// Reads the next reply and checks it (see `check`).
pub(crate) async fn next(c: &mut impl Smtp, want: &str, what: &str) -> String {
    let r = c.reply().await;
    check(&r, want, what);
    r
}

/// Proves that no reply is pending: the next reply must be HELP's 214.
pub(crate) async fn nothing_pending(c: &mut impl Smtp, after: &str) {
    let r = c.cmd("HELP").await;
    assert!(
        r.starts_with("214 "),
        "after {after}: an extra reply was pending (HELP got {r:?})"
    );
}

/// The EHLO keywords (every line after the first, without "250-"/"250 ").
pub(crate) fn keywords(ehlo: &str) -> Vec<String> {
    assert!(ehlo.starts_with("250"), "EHLO reply {ehlo:?}");
    ehlo.split('\n')
        .skip(1)
        .map(|l| l.get(4..).unwrap_or("").to_owned())
        .collect()
}

/// Asserts that every LF in `bytes` follows a CR and every CR precedes an LF.
pub(crate) fn assert_no_bare_cr_lf(bytes: &[u8], what: &str) {
    for (i, &b) in bytes.iter().enumerate() {
        if b == b'\n' {
            assert!(
                i > 0 && bytes[i - 1] == b'\r',
                "{what}: bare LF at byte {i}: {:?}",
                String::from_utf8_lossy(&bytes[i.saturating_sub(40)..(i + 40).min(bytes.len())])
            );
        }
        if b == b'\r' {
            assert!(
                bytes.get(i + 1) == Some(&b'\n'),
                "{what}: bare CR at byte {i}: {:?}",
                String::from_utf8_lossy(&bytes[i.saturating_sub(40)..(i + 40).min(bytes.len())])
            );
        }
    }
}

/// Connects to listener "smtp", reads the greeting, says EHLO; returns the EHLO reply too.
pub(crate) async fn connect(p: &Postern) -> (Raw, String) {
    let mut c = Raw::connect(p.addr("smtp")).await;
    let greeting = c.reply().await;
    assert!(greeting.starts_with("220 "), "greeting {greeting:?}");
    let ehlo = c.cmd("EHLO client.test").await;
    assert!(ehlo.starts_with("250-"), "EHLO reply {ehlo:?}");
    (c, ehlo)
}

/// Connects, EHLO, AUTH PLAIN as dev.
pub(crate) async fn login(p: &Postern) -> Raw {
    let (mut c, _) = connect(p).await;
    expect(
        &mut c,
        &format!("AUTH PLAIN {}", plain("", "dev", PASSWORD)),
        "235 2.7.0",
    )
    .await;
    c
}

/// The one message of `up`, after waiting for it; fails if there are more.
pub(crate) async fn only_message(up: &FakeUpstream) -> Message {
    let msgs = up.wait_messages(1, WAIT).await;
    assert_eq!(
        msgs.len(),
        1,
        "expected exactly one message upstream: {msgs:#?}"
    );
    msgs.into_iter().next().expect("one message")
}

pub(crate) fn mail_commands(up: &FakeUpstream) -> Vec<String> {
    up.commands()
        .into_iter()
        .filter(|c| c.to_ascii_uppercase().starts_with("MAIL"))
        .collect()
}
