//! Wire behaviour and hostile input, over raw sockets: SMTP smuggling, STARTTLS
//! injection, AUTH before TLS, line limits, SASL edge cases, command order,
//! pipelining, SIZE, recipient limits, idle timeout, open relay, metrics.
//!
//! Every reply postern gives (except the greeting, EHLO/HELO, 334 and 354) is
//! also checked for an RFC 3463 enhanced status code of the matching class.

// Wall-clock measurements and deadlines of a test run, not postern's timeouts.
#![allow(clippy::disallowed_types)]

mod support;

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls;

use support::postern::{Postern, Raw, outbox_toml, spawn_postern};
use support::upstream::{FakeUpstream, Message, UpstreamConfig};

const WAIT: Duration = Duration::from_secs(10);
const PASSWORD: &str = "pw";

// ---------------------------------------------------------------------------------------
// Config

/// The argon2 hash of `PASSWORD`, computed once per test binary.
fn hash() -> &'static str {
    static HASH: OnceLock<String> = OnceLock::new();
    HASH.get_or_init(|| postern::auth::hash_password(PASSWORD).expect("hash_password"))
}

/// A postern config: one listener "smtp" on loopback (with `listener_keys`), TLS
/// material, metrics, `[limits]` (a generous AUTH-failure throttle so that tests
/// doing several failed AUTHs are not cut by it, plus `limits`), the `upstream`
/// block, user "dev" (password `PASSWORD`, any sender) and `more` (further tables).
fn config(listener_keys: &str, limits: &str, upstream: &str, more: &str) -> String {
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

fn plain(authzid: &str, user: &str, pass: &str) -> String {
    B64.encode(format!("{authzid}\0{user}\0{pass}"))
}

fn b64(s: &str) -> String {
    B64.encode(s)
}

// ---------------------------------------------------------------------------------------
// Clients

/// What the tests need from a client connection, plain or TLS.
trait Smtp {
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
struct TlsClient {
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
async fn tls_upgrade(tcp: TcpStream, p: &Postern) -> TlsClient {
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
fn assert_enhanced(reply: &str) {
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
fn check(reply: &str, want: &str, what: &str) {
    assert!(
        reply.starts_with(want),
        "{what}: expected a reply starting with {want:?}, got {reply:?}"
    );
    if !reply.starts_with("334") && !reply.starts_with("354") {
        assert_enhanced(reply);
    }
}

/// Sends `line`, checks the reply (see `check`) and returns it.
async fn expect(c: &mut impl Smtp, line: &str, want: &str) -> String {
    let r = c.cmd(line).await;
    check(&r, want, line);
    r
}

/// Reads the next reply and checks it (see `check`).
async fn next(c: &mut impl Smtp, want: &str, what: &str) -> String {
    let r = c.reply().await;
    check(&r, want, what);
    r
}

/// Proves that no reply is pending: the next reply must be HELP's 214.
async fn nothing_pending(c: &mut impl Smtp, after: &str) {
    let r = c.cmd("HELP").await;
    assert!(
        r.starts_with("214 "),
        "after {after}: an extra reply was pending (HELP got {r:?})"
    );
}

/// The EHLO keywords (every line after the first, without "250-"/"250 ").
fn keywords(ehlo: &str) -> Vec<String> {
    assert!(ehlo.starts_with("250"), "EHLO reply {ehlo:?}");
    ehlo.split('\n')
        .skip(1)
        .map(|l| l.get(4..).unwrap_or("").to_owned())
        .collect()
}

/// Asserts that every LF in `bytes` follows a CR and every CR precedes an LF.
fn assert_no_bare_cr_lf(bytes: &[u8], what: &str) {
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
async fn connect(p: &Postern) -> (Raw, String) {
    let mut c = Raw::connect(p.addr("smtp")).await;
    let greeting = c.reply().await;
    assert!(greeting.starts_with("220 "), "greeting {greeting:?}");
    let ehlo = c.cmd("EHLO client.test").await;
    assert!(ehlo.starts_with("250-"), "EHLO reply {ehlo:?}");
    (c, ehlo)
}

/// Connects, EHLO, AUTH PLAIN as dev.
async fn login(p: &Postern) -> Raw {
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
async fn only_message(up: &FakeUpstream) -> Message {
    let msgs = up.wait_messages(1, WAIT).await;
    assert_eq!(
        msgs.len(),
        1,
        "expected exactly one message upstream: {msgs:#?}"
    );
    msgs.into_iter().next().expect("one message")
}

fn mail_commands(up: &FakeUpstream) -> Vec<String> {
    up.commands()
        .into_iter()
        .filter(|c| c.to_ascii_uppercase().starts_with("MAIL"))
        .collect()
}

// ---------------------------------------------------------------------------------------
// 1. SMTP smuggling

#[tokio::test]
async fn smuggling_end_of_data_variants_are_refused_and_never_relayed() {
    let variants: [(&str, &[u8]); 5] = [
        ("LF.LF", b"\n.\n"),
        ("LF.CRLF", b"\n.\r\n"),
        ("CRLF.LF", b"\r\n.\n"),
        ("CR.CRLF", b"\r.\r\n"),
        ("CRLF.CR", b"\r\n.\r"),
    ];
    for (name, seq) in variants {
        let up = FakeUpstream::start(UpstreamConfig::default()).await;
        let p = spawn_postern(&config("", "", &up.postern_toml(), "")).await;
        up.wait_probe().await;
        let mut c = login(&p).await;

        c.send(b"MAIL FROM:<dev@example.com>\r\nRCPT TO:<rcpt@example.net>\r\nDATA\r\n")
            .await;
        next(&mut c, "250 ", name).await;
        next(&mut c, "250 ", name).await;
        next(&mut c, "354", name).await;
        let mut body = b"Subject: smuggling\r\n\r\nfirst line".to_vec();
        body.extend_from_slice(seq);
        body.extend_from_slice(
            b"MAIL FROM:<evil@example.com>\r\nRCPT TO:<v@example.net>\r\nDATA\r\nsmuggled\r\n",
        );
        body.extend_from_slice(b"\r\n.\r\n");
        c.send(&body).await;
        next(&mut c, "554 5.6.0 ", &format!("{name}: end of data")).await;
        nothing_pending(&mut c, &format!("{name}: the smuggling attempt")).await;

        // The upstream transaction was abandoned (connection closed, no final dot).
        up.wait_until(
            &format!("{name}: the abandoned upstream connection to close"),
            WAIT,
            |u| u.closed_connections() >= 2,
        )
        .await;
        assert!(
            up.messages().is_empty(),
            "{name}: a message reached the upstream: {:#?}",
            up.messages()
        );
        assert_eq!(
            mail_commands(&up),
            ["MAIL FROM:<dev@example.com>"],
            "{name}: upstream MAIL commands"
        );
        assert_no_bare_cr_lf(&up.raw(), name);

        // The session is still usable.
        c.send(b"MAIL FROM:<dev@example.com>\r\nRCPT TO:<rcpt@example.net>\r\nDATA\r\n")
            .await;
        next(&mut c, "250 ", name).await;
        next(&mut c, "250 ", name).await;
        next(&mut c, "354", name).await;
        c.send(b"Subject: clean\r\n\r\nclean body\r\n.\r\n").await;
        next(&mut c, "250 ", &format!("{name}: clean message")).await;
        let m = only_message(&up).await;
        assert_eq!(m.mail_from, "MAIL FROM:<dev@example.com>", "{name}");
        assert_eq!(m.rcpts, ["RCPT TO:<rcpt@example.net>"], "{name}");
        assert_eq!(
            m.data, b"Subject: clean\r\n\r\nclean body\r\n",
            "{name}: clean message content"
        );
        let cmds = up.commands();
        assert!(
            !cmds
                .iter()
                .any(|l| l.contains("evil") || l.contains("v@example.net")),
            "{name}: smuggled commands reached the upstream: {cmds:#?}"
        );
        assert_eq!(mail_commands(&up).len(), 2, "{name}: {cmds:#?}");
        assert_no_bare_cr_lf(&up.raw(), name);
        expect(&mut c, "QUIT", "221 ").await;
        p.stop().await;
    }
}

// ---------------------------------------------------------------------------------------
// 2. STARTTLS injection

#[tokio::test]
async fn starttls_discards_pipelined_plaintext_and_resets_the_session() {
    let p = spawn_postern(&config("tls = \"starttls\"", "", &outbox_toml(), "")).await;
    let (mut c, ehlo) = connect(&p).await;
    assert!(
        keywords(&ehlo).iter().any(|k| k == "STARTTLS"),
        "STARTTLS not offered before TLS: {ehlo:?}"
    );
    c.send(b"STARTTLS\r\nMAIL FROM:<evil@example.com>\r\n")
        .await;
    next(&mut c, "220 2.0.0", "STARTTLS").await;
    let mut t = tls_upgrade(c.stream, &p).await;

    // The first thing postern says inside TLS answers what is sent inside TLS.
    // No EHLO since the handshake: MAIL is out of sequence (the session was reset).
    expect(&mut t, "MAIL FROM:<a@example.com>", "503 5.5.1").await;
    expect(&mut t, "NOOP", "250 2.0.0").await;
    nothing_pending(&mut t, "NOOP over TLS").await;

    let ehlo = t.cmd("EHLO client.test").await;
    let kw = keywords(&ehlo);
    assert!(
        !kw.iter().any(|k| k.eq_ignore_ascii_case("STARTTLS")),
        "STARTTLS offered again inside TLS: {ehlo:?}"
    );
    assert!(
        kw.iter().any(|k| k == "AUTH PLAIN LOGIN"),
        "AUTH not offered inside TLS: {ehlo:?}"
    );
    expect(&mut t, "STARTTLS", "503 5.5.1").await;
    expect(
        &mut t,
        &format!("AUTH PLAIN {}", plain("", "dev", PASSWORD)),
        "235 2.7.0",
    )
    .await;
    expect(&mut t, "MAIL FROM:<a@example.com>", "250 ").await;
    expect(&mut t, "QUIT", "221 ").await;
    p.stop().await;
}

// ---------------------------------------------------------------------------------------
// 3. AUTH before TLS

#[tokio::test]
async fn auth_needs_tls_where_plaintext_auth_is_off() {
    let p = spawn_postern(&config(
        "tls = \"starttls\"\nallow_plaintext_auth = false",
        "",
        &outbox_toml(),
        "",
    ))
    .await;
    let (mut c, ehlo) = connect(&p).await;
    let kw = keywords(&ehlo);
    assert!(
        !kw.iter()
            .any(|k| k.to_ascii_uppercase().starts_with("AUTH")),
        "AUTH offered before TLS: {ehlo:?}"
    );
    assert!(kw.iter().any(|k| k == "STARTTLS"), "{ehlo:?}");
    let creds = plain("", "dev", PASSWORD);
    expect(&mut c, &format!("AUTH PLAIN {creds}"), "538 5.7.11").await;
    expect(&mut c, "AUTH LOGIN", "538 5.7.11").await;
    expect(&mut c, "MAIL FROM:<a@example.com>", "530 5.7.0").await;

    expect(&mut c, "STARTTLS", "220 2.0.0").await;
    let mut t = tls_upgrade(c.stream, &p).await;
    let ehlo = t.cmd("EHLO client.test").await;
    assert!(
        keywords(&ehlo).iter().any(|k| k == "AUTH PLAIN LOGIN"),
        "AUTH not offered after STARTTLS: {ehlo:?}"
    );
    expect(&mut t, &format!("AUTH PLAIN {creds}"), "235 2.7.0").await;
    expect(&mut t, "MAIL FROM:<a@example.com>", "250 ").await;
    expect(&mut t, "QUIT", "221 ").await;
    p.stop().await;
}

// ---------------------------------------------------------------------------------------
// 4. Line limits

#[tokio::test]
async fn over_long_and_bare_lf_lines_are_refused_and_the_session_continues() {
    let p = spawn_postern(&config("", "", &outbox_toml(), "")).await;
    let (mut c, _) = connect(&p).await;

    // A 600-byte command line.
    let long = format!("NOOP {}", "x".repeat(600 - 5 - 2));
    assert_eq!(long.len() + 2, 600);
    expect(&mut c, &long, "500 5.5.2").await;
    expect(&mut c, "NOOP", "250 ").await;

    // 1 MiB without a line end, in chunks, then CRLF and a NOOP.
    let chunk = vec![b'A'; 64 * 1024];
    for _ in 0..16 {
        c.send(&chunk).await;
    }
    c.send(b"\r\nNOOP\r\n").await;
    next(&mut c, "500 5.5.2", "1 MiB line").await;
    next(&mut c, "250 ", "NOOP after the 1 MiB line").await;
    nothing_pending(&mut c, "the 1 MiB line").await;

    // A command ended by a bare LF.
    c.send(b"NOOP\n").await;
    next(&mut c, "500 5.5.2", "NOOP<LF>").await;
    nothing_pending(&mut c, "NOOP<LF>").await;

    // A SASL response over 12288 bytes.
    expect(&mut c, "AUTH PLAIN", "334").await;
    let huge = "A".repeat(13_000);
    expect(&mut c, &huge, "500 5.5.6").await;
    expect(&mut c, "NOOP", "250 ").await;
    p.stop().await;
}

#[tokio::test]
async fn data_line_over_1000_octets_refuses_the_message() {
    let p = spawn_postern(&config("", "", &outbox_toml(), "")).await;
    let mut c = login(&p).await;

    // 999 octets + CRLF = 1001: refused at end of data, not stored.
    c.send(b"MAIL FROM:<dev@example.com>\r\nRCPT TO:<r@example.net>\r\nDATA\r\n")
        .await;
    next(&mut c, "250 ", "MAIL").await;
    next(&mut c, "250 ", "RCPT").await;
    next(&mut c, "354", "DATA").await;
    let mut body = b"Subject: long\r\n\r\n".to_vec();
    body.extend(std::iter::repeat_n(b'x', 999));
    body.extend_from_slice(b"\r\nafter\r\n.\r\n");
    c.send(&body).await;
    next(&mut c, "500 5.5.2", "end of data after a 1001-octet line").await;
    nothing_pending(&mut c, "the refused message").await;
    assert!(
        p.files("outbox", "eml").is_empty(),
        "refused message stored"
    );

    // 998 octets + CRLF = 1000: accepted, byte-exact.
    c.send(b"MAIL FROM:<dev@example.com>\r\nRCPT TO:<r@example.net>\r\nDATA\r\n")
        .await;
    next(&mut c, "250 ", "MAIL").await;
    next(&mut c, "250 ", "RCPT").await;
    next(&mut c, "354", "DATA").await;
    let mut body = b"Subject: long\r\n\r\n".to_vec();
    body.extend(std::iter::repeat_n(b'y', 998));
    body.extend_from_slice(b"\r\n");
    let content = body.clone();
    body.extend_from_slice(b".\r\n");
    c.send(&body).await;
    next(&mut c, "250 ", "end of data after a 1000-octet line").await;
    let eml = p.files("outbox", "eml");
    assert_eq!(eml.len(), 1, "{eml:?}");
    assert_eq!(std::fs::read(&eml[0]).expect("read eml"), content);
    p.stop().await;
}

// ---------------------------------------------------------------------------------------
// 5. SASL edge cases

/// A config with the normal listener and an `auth = "optional"` one ("lan"), where
/// user "lan" may send from 127.0.0.1 without AUTH.
fn sasl_config() -> String {
    config(
        "",
        "",
        &outbox_toml(),
        r#"
[[user]]
name = "lan"
networks = ["127.0.0.1/32"]
allowed_senders = ["*@example.com"]
"#,
    )
    .replacen(
        "[tls]",
        "[[listener]]\nname = \"lan\"\naddr = \"127.0.0.1:0\"\nauth = \"optional\"\n\n[tls]",
        1,
    )
}

#[tokio::test]
async fn sasl_cancel_and_bad_base64() {
    let p = spawn_postern(&sasl_config()).await;
    let good = format!("AUTH PLAIN {}", plain("", "dev", PASSWORD));

    // PLAIN, then '*' at the prompt: cancelled; not a failure, AUTH still works.
    let (mut c, _) = connect(&p).await;
    let r = expect(&mut c, "AUTH PLAIN", "334").await;
    assert!(r == "334" || r == "334 ", "PLAIN challenge {r:?}");
    expect(&mut c, "*", "501 ").await;
    expect(&mut c, &good, "235 2.7.0").await;

    // Bad base64 at the prompt and as the initial response.
    let (mut c, _) = connect(&p).await;
    expect(&mut c, "AUTH PLAIN", "334").await;
    expect(&mut c, "not base64!", "501 5.5.2").await;
    // Base64 alphabet, but the padding is missing.
    expect(&mut c, "AUTH PLAIN AGRldgBwdw", "501 5.5.2").await;
    expect(&mut c, &good, "235 2.7.0").await;

    // LOGIN, '*' at the user-name prompt and at the password prompt.
    let (mut c, _) = connect(&p).await;
    expect(&mut c, "AUTH LOGIN", "334 VXNlcm5hbWU6").await;
    expect(&mut c, "*", "501 ").await;
    expect(&mut c, "AUTH LOGIN", "334 VXNlcm5hbWU6").await;
    expect(&mut c, &b64("dev"), "334 UGFzc3dvcmQ6").await;
    expect(&mut c, "*", "501 ").await;
    expect(&mut c, "MAIL FROM:<a@example.com>", "530 5.7.0").await;
    p.stop().await;
}

#[tokio::test]
async fn sasl_login_initial_response_twice_and_in_transaction() {
    let p = spawn_postern(&sasl_config()).await;

    // LOGIN with the user name as initial response, then AUTH again.
    let (mut c, _) = connect(&p).await;
    expect(
        &mut c,
        &format!("AUTH LOGIN {}", b64("dev")),
        "334 UGFzc3dvcmQ6",
    )
    .await;
    expect(&mut c, &b64(PASSWORD), "235 2.7.0").await;
    expect(
        &mut c,
        &format!("AUTH PLAIN {}", plain("", "dev", PASSWORD)),
        "503 5.5.1",
    )
    .await;
    expect(&mut c, "MAIL FROM:<a@example.com>", "250 ").await;
    expect(&mut c, "QUIT", "221 ").await;

    // AUTH inside a transaction (opened without AUTH on the trusted-network listener).
    let mut c = Raw::connect(p.addr("lan")).await;
    assert!(c.reply().await.starts_with("220 "));
    assert!(c.cmd("EHLO client.test").await.starts_with("250-"));
    expect(&mut c, "MAIL FROM:<lan@example.com>", "250 ").await;
    expect(
        &mut c,
        &format!("AUTH PLAIN {}", plain("", "dev", PASSWORD)),
        "503 5.5.1",
    )
    .await;
    expect(&mut c, "RSET", "250 ").await;
    expect(&mut c, "QUIT", "221 ").await;
    p.stop().await;
}

#[tokio::test]
async fn sasl_identity_mechanism_and_pipelining_edges() {
    let p = spawn_postern(&sasl_config()).await;

    // authzid different from authcid: no impersonation. Equal: fine.
    let (mut c, _) = connect(&p).await;
    expect(
        &mut c,
        &format!("AUTH PLAIN {}", plain("lan", "dev", PASSWORD)),
        "535 5.7.8",
    )
    .await;
    expect(
        &mut c,
        &format!("AUTH PLAIN {}", plain("dev", "dev", PASSWORD)),
        "235 2.7.0",
    )
    .await;

    // Unknown mechanism.
    let (mut c, _) = connect(&p).await;
    expect(&mut c, "AUTH CRAM-MD5", "504 5.5.4").await;

    // While a SASL exchange is open, the next line is a response, not a command.
    let (mut c, _) = connect(&p).await;
    c.send(b"AUTH LOGIN\r\nMAIL FROM:<a@example.com>\r\n").await;
    next(&mut c, "334 VXNlcm5hbWU6", "AUTH LOGIN").await;
    next(&mut c, "501 5.5.2", "MAIL line read as a SASL response").await;
    nothing_pending(&mut c, "pipelined AUTH LOGIN + MAIL").await;
    expect(&mut c, "MAIL FROM:<a@example.com>", "530 5.7.0").await;
    p.stop().await;
}

#[tokio::test]
async fn sasl_failures_look_alike_and_three_close_the_session() {
    let p = spawn_postern(&sasl_config()).await;

    // Wrong password and unknown user: the same reply, word for word.
    let (mut c, _) = connect(&p).await;
    let wrong = expect(
        &mut c,
        &format!("AUTH PLAIN {}", plain("", "dev", "wrong-password")),
        "535 5.7.8 ",
    )
    .await;
    let unknown = expect(
        &mut c,
        &format!("AUTH PLAIN {}", plain("", "nobody", PASSWORD)),
        "535 5.7.8 ",
    )
    .await;
    assert_eq!(
        wrong, unknown,
        "unknown user distinguishable from wrong password"
    );

    // Three failures: 421 and close.
    let (mut c, _) = connect(&p).await;
    for i in 1..=2 {
        expect(
            &mut c,
            &format!("AUTH PLAIN {}", plain("", "dev", &format!("bad{i}"))),
            "535 5.7.8",
        )
        .await;
    }
    c.send(format!("AUTH PLAIN {}\r\n", plain("", "dev", "bad3")).as_bytes())
        .await;
    let mut replies = Vec::new();
    loop {
        let r = c.reply().await;
        let done = r.starts_with("421");
        replies.push(r);
        if done || replies.len() > 2 {
            break;
        }
    }
    let (last, before) = replies.split_last().expect("a reply");
    check(last, "421 4.7.0", "third failed AUTH");
    assert!(
        before.iter().all(|r| r.starts_with("535 5.7.8")) && before.len() <= 1,
        "third failed AUTH: replies {replies:?}"
    );
    assert!(c.closed().await, "connection still open after 421");
    p.stop().await;
}

// ---------------------------------------------------------------------------------------
// 6. Command order and the simple commands

#[tokio::test]
async fn command_order_and_simple_commands() {
    let p = spawn_postern(&config("", "", &outbox_toml(), "")).await;
    let mut c = Raw::connect(p.addr("smtp")).await;
    assert!(c.reply().await.starts_with("220 "));
    expect(&mut c, "MAIL FROM:<a@example.com>", "503 5.5.1").await;
    assert!(c.cmd("EHLO client.test").await.starts_with("250-"));
    expect(&mut c, "RCPT TO:<b@example.net>", "503 5.5.1").await;
    expect(&mut c, "DATA", "503 5.5.1").await;
    expect(&mut c, "FROB x", "500 ").await;
    expect(&mut c, "EXPN x", "502 ").await;
    expect(&mut c, "VRFY someone", "252 ").await;
    expect(&mut c, "HELP", "214 ").await;
    expect(&mut c, "NOOP", "250 ").await;
    expect(&mut c, "RSET", "250 ").await;
    expect(
        &mut c,
        &format!("AUTH PLAIN {}", plain("", "dev", PASSWORD)),
        "235 2.7.0",
    )
    .await;
    expect(&mut c, "MAIL FROM:<a@example.com>", "250 ").await;
    expect(&mut c, "MAIL FROM:<a@example.com>", "503 5.5.1").await;
    expect(&mut c, "RCPT TO:<b@example.net>", "250 ").await;
    expect(&mut c, "RSET", "250 ").await;
    expect(&mut c, "DATA", "503 5.5.1").await;
    expect(&mut c, "QUIT", "221 ").await;
    assert!(c.closed().await, "connection open after QUIT");
    assert!(p.files("outbox", "eml").is_empty());
    p.stop().await;
}

/// RFC 5321 §3.3/§4.1.4: DATA with no RCPT at all is out of sequence (503). The
/// contract (DESIGN.md "Wrong order: 503") keeps 554 for "all RCPTs were refused".
#[tokio::test]
async fn data_after_mail_without_rcpt_is_out_of_sequence() {
    let p = spawn_postern(&config("", "", &outbox_toml(), "")).await;
    let mut c = login(&p).await;
    expect(&mut c, "MAIL FROM:<a@example.com>", "250 ").await;
    expect(&mut c, "DATA", "503 5.5.1").await;
    nothing_pending(&mut c, "DATA without RCPT").await;
    expect(&mut c, "QUIT", "221 ").await;
    p.stop().await;
}

#[tokio::test]
async fn helo_only_client_can_send() {
    let p = spawn_postern(&config("", "", &outbox_toml(), "")).await;
    let mut c = Raw::connect(p.addr("smtp")).await;
    assert!(c.reply().await.starts_with("220 "));
    let helo = c.cmd("HELO printer.lan").await;
    assert!(
        helo.starts_with("250 ") && !helo.contains('\n'),
        "HELO reply {helo:?}"
    );
    expect(
        &mut c,
        &format!("AUTH PLAIN {}", plain("", "dev", PASSWORD)),
        "235 2.7.0",
    )
    .await;
    expect(&mut c, "MAIL FROM:<printer@example.com>", "250 ").await;
    expect(&mut c, "RCPT TO:<office@example.net>", "250 ").await;
    expect(&mut c, "DATA", "354").await;
    expect(&mut c, "Subject: scan\r\n\r\npage 1\r\n.", "250 ").await;
    expect(&mut c, "QUIT", "221 ").await;
    let eml = p.files("outbox", "eml");
    assert_eq!(eml.len(), 1);
    assert_eq!(
        std::fs::read(&eml[0]).expect("eml"),
        b"Subject: scan\r\n\r\npage 1\r\n"
    );
    p.stop().await;
}

// ---------------------------------------------------------------------------------------
// 7. Pipelining

#[tokio::test]
async fn pipelined_transaction_and_all_recipients_rejected() {
    let rejected = "550 5.1.1 no such user".to_owned();
    let up = FakeUpstream::start(UpstreamConfig {
        rcpt_replies: HashMap::from([
            ("nobody1@example.net".to_owned(), rejected.clone()),
            ("nobody2@example.net".to_owned(), rejected),
        ]),
        ..UpstreamConfig::default()
    })
    .await;
    let p = spawn_postern(&config("", "", &up.postern_toml(), "")).await;
    up.wait_probe().await;
    let mut c = login(&p).await;

    c.send(
        b"MAIL FROM:<dev@example.com>\r\nRCPT TO:<a@example.net>\r\nRCPT TO:<b@example.net>\r\nDATA\r\n",
    )
    .await;
    next(&mut c, "250 ", "pipelined MAIL").await;
    next(&mut c, "250 ", "pipelined RCPT a").await;
    next(&mut c, "250 ", "pipelined RCPT b").await;
    next(&mut c, "354", "pipelined DATA").await;
    c.send(b"Subject: p\r\n\r\npipelined\r\n.\r\n").await;
    next(&mut c, "250 ", "end of data").await;
    let m = only_message(&up).await;
    assert_eq!(m.mail_from, "MAIL FROM:<dev@example.com>");
    assert_eq!(
        m.rcpts,
        ["RCPT TO:<a@example.net>", "RCPT TO:<b@example.net>"]
    );
    assert_eq!(m.data, b"Subject: p\r\n\r\npipelined\r\n");
    let raw = String::from_utf8_lossy(&up.raw()).into_owned();
    assert!(
        raw.contains(
            "MAIL FROM:<dev@example.com>\r\nRCPT TO:<a@example.net>\r\nRCPT TO:<b@example.net>\r\nDATA\r\n"
        ),
        "upstream did not get MAIL, RCPTs and DATA in order: {raw:?}"
    );

    // Every RCPT refused: DATA gets 554 5.5.1, never 354.
    c.send(
        b"MAIL FROM:<dev@example.com>\r\nRCPT TO:<nobody1@example.net>\r\nRCPT TO:<nobody2@example.net>\r\nDATA\r\n",
    )
    .await;
    next(&mut c, "250 ", "MAIL").await;
    next(&mut c, "550 5.1.1", "RCPT nobody1").await;
    next(&mut c, "550 5.1.1", "RCPT nobody2").await;
    next(&mut c, "554 5.5.1", "DATA with no valid recipient").await;
    nothing_pending(&mut c, "DATA with no valid recipient").await;
    expect(&mut c, "NOOP", "250 ").await;
    assert_eq!(up.messages().len(), 1);
    p.stop().await;
}

// ---------------------------------------------------------------------------------------
// 8. SIZE

#[tokio::test]
async fn size_is_advertised_and_enforced_declared_and_streamed() {
    let up = FakeUpstream::start(UpstreamConfig::default()).await;
    let p = spawn_postern(&config(
        "",
        "max_message_size = \"64KiB\"",
        &up.postern_toml(),
        "",
    ))
    .await;
    up.wait_probe().await;
    let (mut c, ehlo) = connect(&p).await;
    assert!(
        keywords(&ehlo).iter().any(|k| k == "SIZE 65536"),
        "EHLO does not advertise SIZE 65536: {ehlo:?}"
    );
    expect(
        &mut c,
        &format!("AUTH PLAIN {}", plain("", "dev", PASSWORD)),
        "235 2.7.0",
    )
    .await;
    expect(
        &mut c,
        "MAIL FROM:<dev@example.com> SIZE=65537",
        "552 5.3.4",
    )
    .await;
    expect(&mut c, "MAIL FROM:<dev@example.com> SIZE=65536", "250 ").await;
    expect(&mut c, "RSET", "250 ").await;

    // Undeclared, streamed: 100 KiB of 80-octet lines.
    c.send(b"MAIL FROM:<dev@example.com>\r\nRCPT TO:<r@example.net>\r\nDATA\r\n")
        .await;
    next(&mut c, "250 ", "MAIL").await;
    next(&mut c, "250 ", "RCPT").await;
    next(&mut c, "354", "DATA").await;
    let line = format!("{}\r\n", "z".repeat(78));
    let body = line.repeat(100 * 1024 / 80);
    c.send(body.as_bytes()).await;
    c.send(b".\r\n").await;
    next(&mut c, "552 5.3.4", "end of a 100 KiB message").await;
    nothing_pending(&mut c, "the oversized message").await;
    up.wait_until("the abandoned upstream connection to close", WAIT, |u| {
        u.closed_connections() >= 2
    })
    .await;
    assert!(
        up.messages().is_empty(),
        "oversized message delivered upstream"
    );
    assert!(up.data_commands() <= 1);

    expect(&mut c, "RSET", "250 ").await;
    c.send(b"MAIL FROM:<dev@example.com>\r\nRCPT TO:<r@example.net>\r\nDATA\r\n")
        .await;
    next(&mut c, "250 ", "MAIL").await;
    next(&mut c, "250 ", "RCPT").await;
    next(&mut c, "354", "DATA").await;
    c.send(b"Subject: small\r\n\r\nsmall\r\n.\r\n").await;
    next(&mut c, "250 ", "small message").await;
    let m = only_message(&up).await;
    assert_eq!(m.data, b"Subject: small\r\n\r\nsmall\r\n");
    p.stop().await;
}

// ---------------------------------------------------------------------------------------
// 9. Recipients

#[tokio::test]
async fn the_101st_recipient_gets_452_and_100_are_delivered() {
    let up = FakeUpstream::start(UpstreamConfig::default()).await;
    let p = spawn_postern(&config("", "", &up.postern_toml(), "")).await;
    up.wait_probe().await;
    let mut c = login(&p).await;
    let mut batch = b"MAIL FROM:<dev@example.com>\r\n".to_vec();
    for i in 1..=101 {
        batch.extend_from_slice(format!("RCPT TO:<r{i}@example.net>\r\n").as_bytes());
    }
    c.send(&batch).await;
    next(&mut c, "250 ", "MAIL").await;
    for i in 1..=100 {
        next(&mut c, "250 ", &format!("RCPT {i}")).await;
    }
    next(&mut c, "452 4.5.3", "RCPT 101").await;
    expect(&mut c, "DATA", "354").await;
    expect(&mut c, "Subject: many\r\n\r\nhello all\r\n.", "250 ").await;
    let m = only_message(&up).await;
    let want: Vec<String> = (1..=100)
        .map(|i| format!("RCPT TO:<r{i}@example.net>"))
        .collect();
    assert_eq!(m.rcpts, want);
    assert!(
        !up.commands().iter().any(|l| l.contains("r101@")),
        "the 101st recipient reached the upstream"
    );
    p.stop().await;
}

// ---------------------------------------------------------------------------------------
// 10. Idle timeout

#[tokio::test]
async fn idle_client_gets_421_and_is_disconnected() {
    let p = spawn_postern(&config("", "idle_timeout = \"1s\"", &outbox_toml(), "")).await;
    let mut c = Raw::connect(p.addr("smtp")).await;
    assert!(c.reply().await.starts_with("220 "));
    let started = Instant::now();
    let r = c.reply().await;
    check(&r, "421 4.4.2", "idle session");
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "421 came after {:?}, before the 1 s idle timeout",
        started.elapsed()
    );
    assert!(c.closed().await, "connection open after the idle 421");
    p.stop().await;
}

// ---------------------------------------------------------------------------------------
// 11. Open relay

#[tokio::test]
async fn no_relaying_without_auth() {
    let up = FakeUpstream::start(UpstreamConfig::default()).await;
    let p = spawn_postern(&config("auth = \"required\"", "", &up.postern_toml(), "")).await;
    up.wait_probe().await;
    let (mut c, _) = connect(&p).await;
    expect(&mut c, "MAIL FROM:<dev@example.com>", "530 5.7.0").await;
    c.send(b"MAIL FROM:<dev@example.com>\r\nRCPT TO:<victim@example.net>\r\nDATA\r\n")
        .await;
    next(&mut c, "530 5.7.0", "pipelined MAIL").await;
    next(&mut c, "503 5.5.1", "pipelined RCPT").await;
    next(&mut c, "503 5.5.1", "pipelined DATA").await;
    nothing_pending(&mut c, "unauthenticated MAIL/RCPT/DATA").await;
    expect(&mut c, "QUIT", "221 ").await;
    assert!(c.closed().await);
    assert_eq!(
        up.connections(),
        1,
        "postern connected upstream for an unauthenticated client"
    );
    assert!(mail_commands(&up).is_empty(), "{:#?}", up.commands());
    assert!(up.messages().is_empty());
    p.stop().await;
}

// ---------------------------------------------------------------------------------------
// 12. Metrics

#[tokio::test]
async fn metrics_count_messages_and_auth_and_hold_no_secrets() {
    const LOCAL_PW: &str = "Local-Secret-7d1e";
    let up = FakeUpstream::start(UpstreamConfig::default()).await;
    let local_hash = postern::auth::hash_password(LOCAL_PW).expect("hash");
    let p = spawn_postern(&config(
        "",
        "",
        &up.postern_toml(),
        &format!(
            "[[user]]\nname = \"scanner\"\npassword_hash = \"{local_hash}\"\nallowed_senders = [\"*@example.com\"]\n"
        ),
    ))
    .await;
    up.wait_probe().await;

    let (mut c, _) = connect(&p).await;
    expect(
        &mut c,
        &format!("AUTH PLAIN {}", plain("", "scanner", "wrong-guess")),
        "535 5.7.8",
    )
    .await;
    expect(
        &mut c,
        &format!("AUTH PLAIN {}", plain("", "scanner", LOCAL_PW)),
        "235 2.7.0",
    )
    .await;
    expect(&mut c, "MAIL FROM:<scanner@example.com>", "250 ").await;
    expect(&mut c, "RCPT TO:<r@example.net>", "250 ").await;
    expect(&mut c, "DATA", "354").await;
    expect(&mut c, "Subject: m\r\n\r\nmetrics\r\n.", "250 ").await;
    expect(&mut c, "QUIT", "221 ").await;
    only_message(&up).await;

    assert_eq!(
        p.metric("postern_messages_total{result=\"accepted\",user=\"scanner\"}")
            .await,
        1.0
    );
    assert!(
        p.metric("postern_auth_attempts_total{mechanism=\"plain\",result=\"fail\"}")
            .await
            >= 1.0
    );
    assert!(
        p.metric("postern_auth_attempts_total{mechanism=\"plain\",result=\"ok\"}")
            .await
            >= 1.0
    );
    assert!(
        p.metric("postern_connections_opened_total{listener=\"smtp\"}")
            .await
            >= 1.0
    );
    let text = p.metrics_text().await;
    for secret in [
        LOCAL_PW.to_owned(),
        "provider-secret".to_owned(),
        plain("", "scanner", LOCAL_PW),
        local_hash.clone(),
    ] {
        assert!(
            !text.contains(&secret),
            "/metrics contains a secret ({secret})"
        );
    }
    assert_eq!(p.http_get("/healthz").await.0, 200);
    assert_eq!(p.http_get("/readyz").await.0, 200);
    p.stop().await;
}
