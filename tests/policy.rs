//! Users and senders: allowed_senders, rewrite_sender (envelope and header),
//! trusted networks on `auth = "optional"` listeners, SMTPUTF8 senders.

mod support;

use std::sync::OnceLock;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;

use support::postern::{Postern, Raw, outbox_toml, spawn_postern};
use support::upstream::{FakeUpstream, Message, UpstreamConfig};

const WAIT: Duration = Duration::from_secs(10);
const PASSWORD: &str = "pw";

fn hash() -> &'static str {
    static HASH: OnceLock<String> = OnceLock::new();
    HASH.get_or_init(|| postern::auth::hash_password(PASSWORD).expect("hash_password"))
}

/// One listener "smtp" (with `listener_keys`), metrics, the `upstream` block, then `users`
/// (`{hash}` in it stands for the hash of `PASSWORD`).
fn config(listener_keys: &str, upstream: &str, users: &str) -> String {
    let users = users.replace("{hash}", hash());
    format!(
        r#"
[[listener]]
name = "smtp"
addr = "127.0.0.1:0"
{listener_keys}

[metrics]
addr = "127.0.0.1:0"

[limits]
auth_failures_per_ip_per_minute = 1000

{upstream}

{users}
"#
    )
}

fn plain(user: &str, pass: &str) -> String {
    B64.encode(format!("\0{user}\0{pass}"))
}

async fn expect(c: &mut Raw, line: &str, want: &str) -> String {
    let r = c.cmd(line).await;
    assert!(
        r.starts_with(want),
        "{line:?}: expected a reply starting with {want:?}, got {r:?}"
    );
    r
}

async fn next(c: &mut Raw, want: &str, what: &str) -> String {
    let r = c.reply().await;
    assert!(
        r.starts_with(want),
        "{what}: expected a reply starting with {want:?}, got {r:?}"
    );
    r
}

/// Connect to "smtp", greeting, EHLO; returns the EHLO reply too.
async fn connect(p: &Postern) -> (Raw, String) {
    let mut c = Raw::connect(p.addr("smtp")).await;
    next(&mut c, "220 ", "greeting").await;
    let ehlo = c.cmd("EHLO client.test").await;
    assert!(ehlo.starts_with("250-"), "EHLO reply {ehlo:?}");
    (c, ehlo)
}

/// Connect, EHLO, AUTH PLAIN as `user`.
async fn login(p: &Postern, user: &str) -> Raw {
    let (mut c, _) = connect(p).await;
    expect(
        &mut c,
        &format!("AUTH PLAIN {}", plain(user, PASSWORD)),
        "235 2.7.0",
    )
    .await;
    c
}

/// Sends one whole message: MAIL (`mail` is the full command), RCPT, DATA, `content`
/// (dot-stuffed, without the final dot). Expects 250/250/354/250.
async fn send_message(c: &mut Raw, mail: &str, rcpt: &str, content: &[u8]) -> String {
    c.send(format!("{mail}\r\nRCPT TO:<{rcpt}>\r\nDATA\r\n").as_bytes())
        .await;
    next(c, "250 ", mail).await;
    next(c, "250 ", "RCPT").await;
    next(c, "354", "DATA").await;
    let mut body = content.to_vec();
    body.extend_from_slice(b".\r\n");
    c.send(&body).await;
    next(c, "250 ", "end of data").await
}

fn mail_commands(up: &FakeUpstream) -> Vec<String> {
    up.commands()
        .into_iter()
        .filter(|c| c.to_ascii_uppercase().starts_with("MAIL"))
        .collect()
}

async fn only_message(up: &FakeUpstream) -> Message {
    let msgs = up.wait_messages(1, WAIT).await;
    assert_eq!(msgs.len(), 1, "expected one message upstream: {msgs:#?}");
    msgs.into_iter().next().expect("one message")
}

/// Splits a message into its header lines (without CRLF) and its body (after the blank line).
fn split_message(data: &[u8]) -> (Vec<String>, Vec<u8>) {
    let at = data
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("no blank line after the header");
    let header = String::from_utf8(data[..at].to_vec()).expect("UTF-8 header");
    (
        header.split("\r\n").map(str::to_owned).collect(),
        data[at + 4..].to_vec(),
    )
}

fn fields<'a>(header: &'a [String], name: &str) -> Vec<&'a String> {
    header
        .iter()
        .filter(|l| {
            l.split_once(':')
                .is_some_and(|(n, _)| n.eq_ignore_ascii_case(name))
        })
        .collect()
}

// ---------------------------------------------------------------------------------------
// allowed_senders

#[tokio::test]
async fn allowed_senders_exact_domain_and_any() {
    let up = FakeUpstream::start(UpstreamConfig::default()).await;
    let p = spawn_postern(&config(
        "",
        &up.postern_toml(),
        r#"
[[user]]
name = "exact"
password_hash = "{hash}"
allowed_senders = ["scanner@example.com"]

[[user]]
name = "domain"
password_hash = "{hash}"
allowed_senders = ["*@alerts.example.com"]

[[user]]
name = "any"
password_hash = "{hash}"
allowed_senders = ["*"]
"#,
    ))
    .await;
    up.wait_probe().await;

    // (user, sender, allowed)
    let cases: &[(&str, &str, bool)] = &[
        ("exact", "other@example.com", false),
        ("exact", "Scanner@example.com", false),
        ("exact", "scanner@example.com.evil.test", false),
        ("exact", "", false),
        ("exact", "scanner@example.com", true),
        ("domain", "ups@example.com", false),
        ("domain", "ups@evil-alerts.example.com", false),
        ("domain", "ups@alerts.example.com", true),
        ("any", "whoever@anywhere.test", true),
        ("any", "", true),
    ];
    let mut want_upstream = Vec::new();
    for &(user, sender, allowed) in cases {
        let mut c = login(&p, user).await;
        let line = format!("MAIL FROM:<{sender}>");
        if allowed {
            expect(&mut c, &line, "250 ").await;
            expect(&mut c, "RSET", "250 ").await;
            want_upstream.push(line);
        } else {
            expect(&mut c, &line, "550 5.7.1").await;
            // The refusal does not open a transaction.
            expect(&mut c, "RCPT TO:<r@example.net>", "503 ").await;
        }
        expect(&mut c, "QUIT", "221 ").await;
        assert!(c.closed().await);
    }
    // The upstream connection stays in postern's pool; wait for the last RSET.
    let rsets = want_upstream.len();
    up.wait_until("the last RSET", WAIT, |u| {
        u.commands().iter().filter(|c| *c == "RSET").count() >= rsets
    })
    .await;
    assert_eq!(mail_commands(&up), want_upstream);
    assert!(up.messages().is_empty());
    let raw = String::from_utf8_lossy(&up.raw()).into_owned();
    assert!(
        !raw.contains("other@") && !raw.contains(".evil.test") && !raw.contains("ups@example"),
        "a refused sender reached the upstream: {raw:?}"
    );
    p.stop().await;
}

// ---------------------------------------------------------------------------------------
// rewrite_sender

const REWRITE_USER: &str = r#"
[[user]]
name = "scanner"
password_hash = "{hash}"
allowed_senders = ["*@example.com"]
rewrite_sender = "noreply@mail.example.com"
"#;

#[tokio::test]
async fn rewrite_sender_replaces_the_envelope_sender_and_drops_auth_param() {
    let up = FakeUpstream::start(UpstreamConfig::default()).await;
    let p = spawn_postern(&config("", &up.postern_toml(), REWRITE_USER)).await;
    up.wait_probe().await;
    let mut c = login(&p, "scanner").await;
    let content = b"From: Scanner <scanner@example.com>\r\nSubject: s\r\n\r\nbody\r\n";
    send_message(
        &mut c,
        "MAIL FROM:<scanner@example.com> SIZE=64 AUTH=<>",
        "office@example.net",
        content,
    )
    .await;
    let m = only_message(&up).await;
    assert_eq!(m.mail_from, "MAIL FROM:<noreply@mail.example.com> SIZE=64");
    assert_eq!(m.rcpts, ["RCPT TO:<office@example.net>"]);
    // rewrite_header_from is off: the content is untouched.
    assert_eq!(m.data, content);
    let raw = String::from_utf8_lossy(&up.raw()).into_owned();
    assert!(!raw.contains("AUTH=<>"), "AUTH= forwarded: {raw:?}");
    assert!(
        !mail_commands(&up).iter().any(|l| l.contains("scanner@")),
        "the client's sender reached the upstream envelope: {:?}",
        mail_commands(&up)
    );
    p.stop().await;
}

#[tokio::test]
async fn size_param_is_not_forwarded_to_an_upstream_without_size() {
    let mut cfg = UpstreamConfig::default();
    cfg.extensions.retain(|e| !e.starts_with("SIZE"));
    let up = FakeUpstream::start(cfg).await;
    let p = spawn_postern(&config("", &up.postern_toml(), REWRITE_USER)).await;
    up.wait_probe().await;
    let mut c = login(&p, "scanner").await;
    send_message(
        &mut c,
        "MAIL FROM:<scanner@example.com> SIZE=64 AUTH=<>",
        "office@example.net",
        b"Subject: s\r\n\r\nbody\r\n",
    )
    .await;
    let m = only_message(&up).await;
    assert_eq!(m.mail_from, "MAIL FROM:<noreply@mail.example.com>");
    p.stop().await;
}

// ---------------------------------------------------------------------------------------
// rewrite_header_from

const HEADER_USER: &str = r#"
[[user]]
name = "scanner"
password_hash = "{hash}"
allowed_senders = ["*@example.com"]
rewrite_sender = "noreply@mail.example.com"
rewrite_header_from = true
"#;

#[tokio::test]
async fn rewrite_header_from_replaces_from_and_adds_reply_to() {
    let up = FakeUpstream::start(UpstreamConfig::default()).await;
    let p = spawn_postern(&config("", &up.postern_toml(), HEADER_USER)).await;
    up.wait_probe().await;
    let mut c = login(&p, "scanner").await;

    let body: &[u8] =
        b"scanned page\r\nFrom: not a header\r\n.leading dot\r\n\r\nlast \xc3\xbc line\r\n";
    // Dot-stuffed for the wire.
    let wire_body: &[u8] =
        b"scanned page\r\nFrom: not a header\r\n..leading dot\r\n\r\nlast \xc3\xbc line\r\n";
    let mut content =
        b"From: Scanner <scanner@example.com>\r\nSubject: scan\r\nTo: office@example.net\r\n\r\n"
            .to_vec();
    content.extend_from_slice(wire_body);
    send_message(
        &mut c,
        "MAIL FROM:<scanner@example.com>",
        "office@example.net",
        &content,
    )
    .await;
    let m = only_message(&up).await;
    assert_eq!(m.mail_from, "MAIL FROM:<noreply@mail.example.com>");
    let (header, got_body) = split_message(&m.data);
    assert_eq!(
        fields(&header, "From"),
        ["From: <noreply@mail.example.com>"],
        "header {header:#?}"
    );
    assert_eq!(
        fields(&header, "Reply-To"),
        ["Reply-To: Scanner <scanner@example.com>"],
        "header {header:#?}"
    );
    assert_eq!(fields(&header, "Subject"), ["Subject: scan"]);
    assert_eq!(fields(&header, "To"), ["To: office@example.net"]);
    assert_eq!(header.len(), 4, "header {header:#?}");
    assert_eq!(got_body, body, "body changed");
    assert!(
        m.raw_data.ends_with(wire_body),
        "body not dot-stuffed upstream: {:?}",
        String::from_utf8_lossy(&m.raw_data)
    );
    p.stop().await;
}

#[tokio::test]
async fn rewrite_header_from_keeps_an_existing_reply_to() {
    let up = FakeUpstream::start(UpstreamConfig::default()).await;
    let p = spawn_postern(&config("", &up.postern_toml(), HEADER_USER)).await;
    up.wait_probe().await;
    let mut c = login(&p, "scanner").await;
    let content = b"Reply-To: owner@example.com\r\nFrom: scanner@example.com\r\nSubject: scan\r\n\r\nFrom: not a header\r\n";
    send_message(
        &mut c,
        "MAIL FROM:<scanner@example.com>",
        "office@example.net",
        content,
    )
    .await;
    let m = only_message(&up).await;
    let (header, got_body) = split_message(&m.data);
    assert_eq!(
        fields(&header, "From"),
        ["From: <noreply@mail.example.com>"]
    );
    assert_eq!(
        fields(&header, "Reply-To"),
        ["Reply-To: owner@example.com"],
        "header {header:#?}"
    );
    assert_eq!(fields(&header, "Subject"), ["Subject: scan"]);
    assert_eq!(header.len(), 3, "header {header:#?}");
    assert_eq!(got_body, b"From: not a header\r\n");
    p.stop().await;
}

// ---------------------------------------------------------------------------------------
// Trusted networks

#[tokio::test]
async fn trusted_network_user_sends_without_auth_on_an_optional_listener() {
    let p = spawn_postern(&config(
        "auth = \"optional\"",
        &outbox_toml(),
        r#"
[[user]]
name = "printer"
networks = ["127.0.0.1/32"]
allowed_senders = ["printer@example.com"]

[[user]]
name = "dev"
password_hash = "{hash}"
allowed_senders = ["*"]
"#,
    ))
    .await;
    let (mut c, _) = connect(&p).await;
    // The network user's sender policy applies.
    expect(&mut c, "MAIL FROM:<someone@example.com>", "550 5.7.1").await;
    send_message(
        &mut c,
        "MAIL FROM:<printer@example.com>",
        "office@example.net",
        b"Subject: print\r\n\r\njob done\r\n",
    )
    .await;
    expect(&mut c, "QUIT", "221 ").await;
    assert_eq!(p.files("outbox", "eml").len(), 1);
    assert_eq!(
        p.metric("postern_messages_total{result=\"accepted\",user=\"printer\"}")
            .await,
        1.0
    );
    assert_eq!(
        p.metric("postern_messages_total{result=\"accepted\",user=\"dev\"}")
            .await,
        0.0
    );
    p.stop().await;
}

#[tokio::test]
async fn client_outside_every_network_must_auth_on_an_optional_listener() {
    let p = spawn_postern(&config(
        "auth = \"optional\"",
        &outbox_toml(),
        r#"
[[user]]
name = "printer"
networks = ["10.9.8.0/24"]
password_hash = "{hash}"
allowed_senders = ["printer@example.com"]
"#,
    ))
    .await;
    let (mut c, _) = connect(&p).await;
    expect(&mut c, "MAIL FROM:<printer@example.com>", "530 5.7.0").await;
    expect(&mut c, "RCPT TO:<office@example.net>", "503 ").await;
    // With AUTH the same user may send.
    expect(
        &mut c,
        &format!("AUTH PLAIN {}", plain("printer", PASSWORD)),
        "235 2.7.0",
    )
    .await;
    expect(&mut c, "MAIL FROM:<printer@example.com>", "250 ").await;
    expect(&mut c, "QUIT", "221 ").await;
    assert!(p.files("outbox", "eml").is_empty());
    p.stop().await;
}

// ---------------------------------------------------------------------------------------
// SMTPUTF8

#[tokio::test]
async fn non_ascii_sender_needs_smtputf8() {
    let up = FakeUpstream::start(UpstreamConfig::default()).await;
    let p = spawn_postern(&config(
        "",
        &up.postern_toml(),
        r#"
[[user]]
name = "dev"
password_hash = "{hash}"
allowed_senders = ["*@example.com"]
"#,
    ))
    .await;
    up.wait_probe().await;
    let (mut c, ehlo) = connect(&p).await;
    assert!(
        ehlo.split('\n').any(|l| &l[4..] == "SMTPUTF8"),
        "SMTPUTF8 not advertised although the upstream has it: {ehlo:?}"
    );
    expect(
        &mut c,
        &format!("AUTH PLAIN {}", plain("dev", PASSWORD)),
        "235 2.7.0",
    )
    .await;
    expect(&mut c, "MAIL FROM:<jürgen@example.com>", "550 5.6.7").await;
    assert!(
        mail_commands(&up).is_empty(),
        "refused MAIL reached the upstream"
    );
    send_message(
        &mut c,
        "MAIL FROM:<jürgen@example.com> SMTPUTF8",
        "office@example.net",
        "Subject: grüße\r\n\r\nhallo\r\n".as_bytes(),
    )
    .await;
    let m = only_message(&up).await;
    assert_eq!(m.mail_from, "MAIL FROM:<jürgen@example.com> SMTPUTF8");
    assert_eq!(m.data, "Subject: grüße\r\n\r\nhallo\r\n".as_bytes());
    p.stop().await;
}
