//! Real SMTP clients that we did not write (lettre, Python's smtplib, curl, swaks)
//! submit mail to postern with a LOCAL account; postern relays it to a recording
//! fake upstream with the PROVIDER's credentials. Every test checks that the
//! upstream saw only the provider's credentials and exactly the bytes the
//! client meant to send.

mod support;

use std::path::Path;
use std::process::Output;
use std::sync::OnceLock;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use lettre::address::Envelope;
use lettre::message::Mailbox;
use lettre::message::header::{ContentTransferEncoding, ContentType};
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};

use support::postern::{Postern, PosternBuilder, Raw};
use support::upstream::{FakeUpstream, Message, UpTls, UpstreamConfig};

const T: Duration = Duration::from_secs(10);
/// The credentials postern must use upstream (FakeUpstream's defaults).
const PROVIDER: (&str, &str) = ("provider-user", "provider-secret");
/// The local account the clients use.
const LOCAL_USER: &str = "printer";
const LOCAL_PASS: &str = "pw";

/// A body with dot lines (leading ".", "..", a lone "." and "..."), 8-bit UTF-8
/// text, and no final CRLF (the client adds one before its final dot).
const RAW_BODY: &[u8] = "From: Scanner <a@example.com>\r\n\
To: b@example.net\r\n\
Subject: dots and 8bit\r\n\
MIME-Version: 1.0\r\n\
Content-Type: text/plain; charset=utf-8\r\n\
Content-Transfer-Encoding: 8bit\r\n\
\r\n\
.leading dot\r\n\
..two leading dots\r\n\
.\r\n\
...\r\n\
Grüße aus Köln — 日本語のテキスト ✓\r\n\
last line"
    .as_bytes();

/// `RAW_BODY` as the upstream must record it: lettre ends the data with "\r\n.\r\n".
fn raw_body_relayed() -> Vec<u8> {
    [RAW_BODY, b"\r\n"].concat()
}

fn password_hash() -> &'static str {
    static HASH: OnceLock<String> = OnceLock::new();
    HASH.get_or_init(|| postern::auth::hash_password(LOCAL_PASS).expect("hash_password"))
}

fn tls_word(t: UpTls) -> &'static str {
    match t {
        UpTls::None => "none",
        UpTls::StartTls => "starttls",
        UpTls::Implicit => "implicit",
    }
}

/// Starts a fake upstream with `up`, and postern (three listeners) relaying to it;
/// waits until postern's start-up probe of the upstream has finished, so postern's
/// EHLO already mirrors the upstream's capabilities (8BITMIME).
async fn start(up: UpstreamConfig) -> (FakeUpstream, Postern) {
    let up_tls = up.tls;
    let fake = FakeUpstream::start(up).await;
    let ca = if fake.cert.is_some() {
        "ca_file = \"{upstream_ca}\"\n"
    } else {
        ""
    };
    let toml = format!(
        r#"
[server]
hostname = "postern.test"
[metrics]
addr = "127.0.0.1:0"
[tls]
cert = "{{cert}}"
key = "{{key}}"
[[listener]]
name = "starttls"
addr = "127.0.0.1:0"
tls = "starttls"
[[listener]]
name = "implicit"
addr = "127.0.0.1:0"
tls = "implicit"
[[listener]]
name = "plain"
addr = "127.0.0.1:0"
[[upstream]]
name = "provider"
kind = "smtp"
addr = "localhost:{port}"
tls = "{tls}"
{ca}username = "provider-user"
password = "provider-secret"
[[user]]
name = "{LOCAL_USER}"
password_hash = "{hash}"
allowed_senders = ["*@example.com"]
"#,
        port = fake.port(),
        tls = tls_word(up_tls),
        hash = password_hash(),
    );
    let mut builder = PosternBuilder::new(&toml);
    if let Some(pem) = fake.ca_pem() {
        builder = builder.with_file("upstream_ca", "upstream-ca.pem", &pem);
    }
    let p = builder.start().await;
    fake.wait_until("postern's start-up probe to finish", T, |f| {
        f.closed_connections() >= 1
    })
    .await;
    (fake, p)
}

/// `start` with a given upstream TLS mode and otherwise default behaviour.
async fn start_tls(tls: UpTls) -> (FakeUpstream, Postern) {
    start(UpstreamConfig {
        tls,
        ..UpstreamConfig::default()
    })
    .await
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
}

/// The upstream saw AUTH only with the provider's credentials, never the local ones.
fn assert_provider_credentials_only(fake: &FakeUpstream) {
    let auths = fake.auths();
    assert!(!auths.is_empty(), "the upstream saw no AUTH at all");
    for (user, pass) in &auths {
        assert_eq!(
            (user.as_str(), pass.as_str()),
            PROVIDER,
            "upstream AUTH with other than the provider's credentials: {auths:?}"
        );
    }
    let raw = fake.raw();
    let local_plain = B64.encode(format!("\0{LOCAL_USER}\0{LOCAL_PASS}"));
    for leak in [
        LOCAL_USER.as_bytes(),
        local_plain.as_bytes(),
        B64.encode(LOCAL_USER).as_bytes(),
    ] {
        assert!(
            !contains(&raw, leak),
            "the local credentials ({:?}) reached the upstream",
            String::from_utf8_lossy(leak)
        );
    }
}

/// The only message relayed, with its envelope and the provider as the AUTH user.
async fn one_message(fake: &FakeUpstream, from: &str, to: &[&str]) -> Message {
    let msgs = fake.wait_messages(1, T).await;
    assert_eq!(msgs.len(), 1, "messages: {msgs:?}");
    let m = msgs.into_iter().next().unwrap();
    assert!(
        m.mail_from
            .to_ascii_uppercase()
            .starts_with(&format!("MAIL FROM:<{}>", from.to_ascii_uppercase())),
        "{}",
        m.mail_from
    );
    let rcpts: Vec<String> = to.iter().map(|t| format!("RCPT TO:<{t}>")).collect();
    assert_eq!(m.rcpts, rcpts);
    assert_eq!(m.auth_user.as_deref(), Some(PROVIDER.0));
    m
}

fn assert_bytes_eq(got: &[u8], want: &[u8]) {
    if got != want {
        let at = got
            .iter()
            .zip(want)
            .position(|(a, b)| a != b)
            .unwrap_or(got.len().min(want.len()));
        let lo = at.saturating_sub(40);
        panic!(
            "bytes differ at {at} (got {} bytes, want {}):\n got: {:?}\nwant: {:?}",
            got.len(),
            want.len(),
            String::from_utf8_lossy(&got[lo..(at + 40).min(got.len())]),
            String::from_utf8_lossy(&want[lo..(at + 40).min(want.len())]),
        );
    }
}

// ---------------------------------------------------------------------------------------
// lettre

fn postern_tls(p: &Postern) -> TlsParameters {
    TlsParameters::builder("localhost".into())
        .add_root_certificate(
            Certificate::from_pem(p.cert.cert_pem.as_bytes()).expect("postern cert PEM"),
        )
        .build_rustls()
        .expect("TLS parameters")
}

fn lettre(
    port: u16,
    tls: Tls,
    mechanism: Mechanism,
    password: &str,
) -> AsyncSmtpTransport<Tokio1Executor> {
    AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous("localhost")
        .port(port)
        .tls(tls)
        .credentials(Credentials::new(LOCAL_USER.into(), password.into()))
        .authentication(vec![mechanism])
        .timeout(Some(T))
        .build()
}

fn envelope() -> Envelope {
    Envelope::new(
        Some("a@example.com".parse().unwrap()),
        vec!["b@example.net".parse().unwrap()],
    )
    .unwrap()
}

/// Sends `RAW_BODY` with lettre and checks what the upstream got.
async fn lettre_raw_roundtrip(fake: &FakeUpstream, transport: AsyncSmtpTransport<Tokio1Executor>) {
    let resp = transport
        .send_raw(&envelope(), RAW_BODY)
        .await
        .expect("lettre send_raw through postern");
    assert!(resp.is_positive(), "{resp:?}");
    let text = resp.message().collect::<Vec<_>>().join(" ");
    assert!(text.contains("upstream provider:"), "{text}");
    let m = one_message(fake, "a@example.com", &["b@example.net"]).await;
    // Non-ASCII content: lettre asks for BODY=8BITMIME, postern passes it on.
    assert!(m.mail_from.contains("BODY=8BITMIME"), "{}", m.mail_from);
    assert_bytes_eq(&m.data, &raw_body_relayed());
    assert_provider_credentials_only(fake);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lettre_plain_over_starttls_to_plaintext_upstream() {
    let (fake, p) = start_tls(UpTls::None).await;
    let t = lettre(
        p.addr("starttls").port(),
        Tls::Required(postern_tls(&p)),
        Mechanism::Plain,
        LOCAL_PASS,
    );
    lettre_raw_roundtrip(&fake, t).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lettre_plain_over_starttls_to_implicit_tls_upstream() {
    let (fake, p) = start_tls(UpTls::Implicit).await;
    let t = lettre(
        p.addr("starttls").port(),
        Tls::Required(postern_tls(&p)),
        Mechanism::Plain,
        LOCAL_PASS,
    );
    lettre_raw_roundtrip(&fake, t).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lettre_login_over_implicit_tls_to_starttls_upstream() {
    let (fake, p) = start_tls(UpTls::StartTls).await;
    let t = lettre(
        p.addr("implicit").port(),
        Tls::Wrapper(postern_tls(&p)),
        Mechanism::Login,
        LOCAL_PASS,
    );
    let body = "Grüße aus Köln!\n.leading dot\n..two dots\n.\n日本語のテキスト\nend\n".to_string();
    let email = lettre::Message::builder()
        .from("Scanner <a@example.com>".parse::<Mailbox>().unwrap())
        .to("b@example.net".parse::<Mailbox>().unwrap())
        .subject("Grüße")
        .header(ContentType::TEXT_PLAIN)
        .header(ContentTransferEncoding::EightBit)
        .body(body)
        .expect("build message");
    let formatted = email.formatted();
    // The body really is sent as 8-bit text with the dot lines (lettre made the LFs CRLF).
    assert!(contains(
        &formatted,
        "Grüße aus Köln!\r\n.leading dot\r\n..two dots\r\n.\r\n日本語のテキスト\r\nend\r\n"
            .as_bytes()
    ));
    let resp = t.send(email).await.expect("lettre send through postern");
    assert!(resp.is_positive(), "{resp:?}");
    let m = one_message(&fake, "a@example.com", &["b@example.net"]).await;
    assert!(m.mail_from.contains("BODY=8BITMIME"), "{}", m.mail_from);
    assert_bytes_eq(&m.data, &[formatted.as_slice(), b"\r\n"].concat());
    assert_provider_credentials_only(&fake);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lettre_login_over_implicit_tls_to_implicit_tls_upstream() {
    let (fake, p) = start_tls(UpTls::Implicit).await;
    let t = lettre(
        p.addr("implicit").port(),
        Tls::Wrapper(postern_tls(&p)),
        Mechanism::Login,
        LOCAL_PASS,
    );
    lettre_raw_roundtrip(&fake, t).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_local_password_gets_535_and_never_reaches_the_upstream() {
    let (fake, p) = start_tls(UpTls::None).await;
    for (listener, tls, mechanism) in [
        ("starttls", Tls::Required(postern_tls(&p)), Mechanism::Plain),
        ("implicit", Tls::Wrapper(postern_tls(&p)), Mechanism::Login),
    ] {
        let t = lettre(p.addr(listener).port(), tls, mechanism, "not-the-password");
        let err = t
            .send_raw(&envelope(), RAW_BODY)
            .await
            .expect_err("a wrong password must not be accepted");
        assert_eq!(
            err.status().map(|c| c.to_string()).as_deref(),
            Some("535"),
            "{listener}/{mechanism:?}: {err}"
        );
        assert!(err.is_permanent(), "{err}");
    }
    // And with the exact reply text, from a raw client.
    let mut c = Raw::connect(p.addr("plain")).await;
    assert_eq!(c.code().await, 220);
    c.cmd("EHLO raw.test").await;
    let bad = B64.encode(format!("\0{LOCAL_USER}\0wrong"));
    let r = c.cmd(&format!("AUTH PLAIN {bad}")).await;
    assert!(r.starts_with("535 5.7.8"), "{r}");
    let r = c.cmd("MAIL FROM:<a@example.com>").await;
    assert!(r.starts_with("530 5.7.0"), "{r}");
    assert!(c.cmd("QUIT").await.starts_with("221"));

    assert!(fake.messages().is_empty());
    // No AUTH for any of it reached the upstream: every AUTH there is postern's own
    // (its probe), and no byte of the local credentials.
    assert_provider_credentials_only(&fake);
    assert!(!contains(&fake.raw(), b"not-the-password"));
    assert!(!contains(
        &fake.raw(),
        B64.encode("not-the-password").as_bytes()
    ));
}

// ---------------------------------------------------------------------------------------
// A 7 MiB message, byte-exact.

fn big_body() -> Vec<u8> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let target = 7 * 1024 * 1024;
    let mut body = b"Subject: big\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n".to_vec();
    let mut x: u32 = 0x2545_f491;
    let mut n = 0usize;
    while body.len() < target {
        let mut line = [0u8; 76];
        for b in line.iter_mut() {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            *b = ALPHABET[(x % 64) as usize];
        }
        // Every so often a line that needs dot-stuffing.
        if n.is_multiple_of(997) {
            line[0] = b'.';
        }
        body.extend_from_slice(&line);
        body.extend_from_slice(b"\r\n");
        n += 1;
    }
    body
}

fn dot_stuff(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + body.len() / 1000);
    for line in body.split_inclusive(|&b| b == b'\n') {
        if line.first() == Some(&b'.') {
            out.push(b'.');
        }
        out.extend_from_slice(line);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seven_mib_message_is_relayed_byte_exact() {
    let (fake, p) = start_tls(UpTls::None).await;
    let body = big_body();
    assert!(body.len() >= 7 * 1024 * 1024);
    let mut c = Raw::connect(p.addr("plain")).await;
    assert_eq!(c.code().await, 220);
    let ehlo = c.cmd("EHLO raw.test").await;
    assert!(ehlo.contains("SIZE"), "{ehlo}");
    let creds = B64.encode(format!("\0{LOCAL_USER}\0{LOCAL_PASS}"));
    let r = c.cmd(&format!("AUTH PLAIN {creds}")).await;
    assert!(r.starts_with("235"), "{r}");
    let r = c
        .cmd(&format!("MAIL FROM:<a@example.com> SIZE={}", body.len()))
        .await;
    assert!(r.starts_with("250"), "{r}");
    let r = c.cmd("RCPT TO:<b@example.net>").await;
    assert!(r.starts_with("250"), "{r}");
    let r = c.cmd("DATA").await;
    assert!(r.starts_with("354"), "{r}");
    let mut wire = dot_stuff(&body);
    wire.extend_from_slice(b".\r\n");
    c.send(&wire).await;
    let r = c.reply().await;
    assert!(r.starts_with("250 2.0.0 upstream provider:"), "{r}");
    let m = one_message(&fake, "a@example.com", &["b@example.net"]).await;
    assert!(
        m.mail_from.contains(&format!("SIZE={}", body.len())),
        "{}",
        m.mail_from
    );
    assert_eq!(m.data.len(), body.len());
    assert_bytes_eq(&m.data, &body);
    assert_provider_credentials_only(&fake);
    assert!(c.cmd("QUIT").await.starts_with("221"));
}

// ---------------------------------------------------------------------------------------
// Python's smtplib

const PY_SCRIPT: &str = r#"
import smtplib, ssl, sys
mode, port, cafile, body_path = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
with open(body_path, 'rb') as f:
    body = f.read()
if mode == 'plain':
    s = smtplib.SMTP('127.0.0.1', port, timeout=20)
    s.ehlo()
elif mode == 'starttls':
    s = smtplib.SMTP('localhost', port, timeout=20)
    s.ehlo()
    s.starttls(context=ssl.create_default_context(cafile=cafile))
    s.ehlo()
elif mode == 'ssl':
    s = smtplib.SMTP_SSL('localhost', port, timeout=20,
                         context=ssl.create_default_context(cafile=cafile))
    s.ehlo()
else:
    sys.exit('bad mode ' + mode)
s.login('printer', 'pw')
refused = s.sendmail('a@example.com', ['b@example.net'], body)
if refused:
    sys.exit('refused: %r' % (refused,))
s.quit()
print('sent')
"#;

/// A body smtplib sends unchanged (CRLF line ends, ending in CRLF) with dot lines.
const PY_BODY: &[u8] = "From: a@example.com\r\n\
To: b@example.net\r\n\
Subject: from smtplib\r\n\
\r\n\
hello from python\r\n\
.leading dot line\r\n\
..two\r\n\
Grüße\r\n"
    .as_bytes();

async fn run(cmd: &mut tokio::process::Command) -> Output {
    cmd.kill_on_drop(true);
    tokio::time::timeout(Duration::from_secs(30), cmd.output())
        .await
        .expect("client process timed out")
        .expect("spawning the client process")
}

fn assert_success(what: &str, out: &Output) {
    assert!(
        out.status.success(),
        "{what} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Writes postern's certificate and `body` into `dir`; returns their paths.
fn client_files(p: &Postern, dir: &Path, body: &[u8]) -> (String, String) {
    let ca = dir.join("postern-ca.pem");
    std::fs::write(&ca, &p.cert.cert_pem).unwrap();
    let b = dir.join("body.eml");
    std::fs::write(&b, body).unwrap();
    (ca.display().to_string(), b.display().to_string())
}

async fn smtplib(mode: &str, listener: &str) {
    let (fake, p) = start_tls(UpTls::None).await;
    let dir = tempfile::tempdir().unwrap();
    let (ca, body) = client_files(&p, dir.path(), PY_BODY);
    let port = p.addr(listener).port().to_string();
    let out =
        run(tokio::process::Command::new("python3")
            .args(["-c", PY_SCRIPT, mode, &port, &ca, &body]))
        .await;
    assert_success(&format!("python smtplib ({mode})"), &out);
    let m = one_message(&fake, "a@example.com", &["b@example.net"]).await;
    assert_bytes_eq(&m.data, PY_BODY);
    assert_provider_credentials_only(&fake);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_smtplib_plaintext_auth_on_loopback() {
    smtplib("plain", "plain").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_smtplib_starttls() {
    smtplib("starttls", "starttls").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_smtplib_smtp_ssl_implicit_tls() {
    smtplib("ssl", "implicit").await;
}

/// A device that opens a session per message (STARTTLS, AUTH, one message):
/// its second login is answered from the verified-credential cache.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_smtplib_returning_device_is_answered_from_the_auth_cache() {
    let (fake, p) = start_tls(UpTls::None).await;
    let dir = tempfile::tempdir().unwrap();
    let (ca, body) = client_files(&p, dir.path(), PY_BODY);
    let port = p.addr("starttls").port().to_string();
    for _ in 0..2 {
        let out = run(tokio::process::Command::new("python3")
            .args(["-c", PY_SCRIPT, "starttls", &port, &ca, &body]))
        .await;
        assert_success("python smtplib (starttls)", &out);
    }
    let msgs = fake.wait_messages(2, T).await;
    assert_eq!(msgs.len(), 2);
    assert_eq!(
        p.metric("postern_auth_cache_total{result=\"miss\"}").await,
        1.0
    );
    assert_eq!(
        p.metric("postern_auth_cache_total{result=\"hit\"}").await,
        1.0
    );
    assert_provider_credentials_only(&fake);
}

// ---------------------------------------------------------------------------------------
// curl

const CURL_BODY: &[u8] = "From: a@example.com\r\n\
To: b@example.net\r\n\
Subject: from curl\r\n\
\r\n\
hello from curl\r\n\
.leading dot line\r\n\
..two\r\n\
.\r\n\
Grüße\r\n\
last\r\n"
    .as_bytes();

async fn curl(scheme: &str, listener: &str, upstream: UpTls) {
    let (fake, p) = start_tls(upstream).await;
    let dir = tempfile::tempdir().unwrap();
    let (ca, body) = client_files(&p, dir.path(), CURL_BODY);
    let port = p.addr(listener).port();
    let out = run(tokio::process::Command::new("curl").args([
        "--silent",
        "--show-error",
        "--max-time",
        "20",
        "--url",
        &format!("{scheme}://localhost:{port}"),
        "--resolve",
        &format!("localhost:{port}:127.0.0.1"),
        "--ssl-reqd",
        "--cacert",
        &ca,
        "--mail-from",
        "a@example.com",
        "--mail-rcpt",
        "b@example.net",
        "--user",
        &format!("{LOCAL_USER}:{LOCAL_PASS}"),
        "--upload-file",
        &body,
    ]))
    .await;
    assert_success(&format!("curl {scheme}"), &out);
    let m = one_message(&fake, "a@example.com", &["b@example.net"]).await;
    assert_bytes_eq(&m.data, CURL_BODY);
    assert_provider_credentials_only(&fake);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_smtp_starttls() {
    curl("smtp", "starttls", UpTls::StartTls).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_smtps_implicit_tls() {
    curl("smtps", "implicit", UpTls::None).await;
}

// ---------------------------------------------------------------------------------------
// swaks (optional)

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swaks_pipelined_submission() {
    let found = std::process::Command::new("which")
        .arg("swaks")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        eprintln!("swaks is not installed; skipping");
        return;
    }
    let (fake, p) = start_tls(UpTls::None).await;
    let out = run(tokio::process::Command::new("swaks").args([
        "--server",
        &p.addr("plain").to_string(),
        "--ehlo",
        "swaks.test",
        "--auth",
        "PLAIN",
        "--auth-user",
        LOCAL_USER,
        "--auth-password",
        LOCAL_PASS,
        "--from",
        "a@example.com",
        "--to",
        "b@example.net,c@example.net",
        "--pipeline",
        "--header",
        "Subject: swaks pipelined",
        "--body",
        "hello from swaks",
        "--timeout",
        "20",
    ]))
    .await;
    assert_success("swaks --pipeline", &out);
    let transcript = String::from_utf8_lossy(&out.stdout);
    assert!(transcript.contains("PIPELINING"), "{transcript}");
    let m = one_message(&fake, "a@example.com", &["b@example.net", "c@example.net"]).await;
    assert!(
        contains(&m.data, b"Subject: swaks pipelined\r\n"),
        "{:?}",
        String::from_utf8_lossy(&m.data)
    );
    assert!(
        contains(&m.data, b"\r\n\r\nhello from swaks\r\n"),
        "{:?}",
        String::from_utf8_lossy(&m.data)
    );
    assert_provider_credentials_only(&fake);
}
