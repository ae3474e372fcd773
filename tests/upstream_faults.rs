//! The upstream misbehaves: rejects recipients, fails at end-of-data, drops the
//! connection, refuses postern's credentials, is unreachable, strips or abuses
//! STARTTLS. Whatever it does, a client must never hear 250 for a message the
//! upstream did not accept, and postern must never fall back to sending its
//! provider credentials in clear text.

// Wall-clock measurements and deadlines of a test run, not postern's timeouts.
#![allow(clippy::disallowed_types)]

mod support;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use support::postern::{Postern, PosternBuilder, Raw};
use support::upstream::{FakeUpstream, UpTls, UpstreamConfig};

const T: Duration = Duration::from_secs(10);
const PROVIDER: (&str, &str) = ("provider-user", "provider-secret");

fn password_hash() -> &'static str {
    static HASH: OnceLock<String> = OnceLock::new();
    HASH.get_or_init(|| postern::auth::hash_password("pw").expect("hash_password"))
}

/// How postern is configured toward its upstream.
struct Up<'a> {
    addr: String,
    tls: &'a str,
    password: &'a str,
    /// PEM of the CA to trust (the fake upstream's certificate).
    ca: Option<String>,
}

impl Up<'_> {
    /// Postern pointed at `fake` with the right credentials and TLS mode.
    fn to(fake: &FakeUpstream, tls: UpTls) -> Up<'static> {
        Up {
            addr: format!("localhost:{}", fake.port()),
            tls: match tls {
                UpTls::None => "none",
                UpTls::StartTls => "starttls",
                UpTls::Implicit => "implicit",
            },
            password: PROVIDER.1,
            ca: fake.ca_pem(),
        }
    }
}

/// Starts postern with one plaintext loopback listener ("plain") and one smtp upstream.
async fn postern(up: Up<'_>) -> Postern {
    let ca = if up.ca.is_some() {
        "ca_file = \"{upstream_ca}\"\n"
    } else {
        ""
    };
    let toml = format!(
        r#"
[server]
hostname = "postern.test"
[[listener]]
name = "plain"
addr = "127.0.0.1:0"
[[upstream]]
name = "provider"
kind = "smtp"
addr = "{addr}"
tls = "{tls}"
{ca}username = "provider-user"
password = "{password}"
[[user]]
name = "printer"
password_hash = "{hash}"
allowed_senders = ["*@example.com"]
"#,
        addr = up.addr,
        tls = up.tls,
        password = up.password,
        hash = password_hash(),
    );
    let mut b = PosternBuilder::new(&toml);
    if let Some(pem) = &up.ca {
        b = b.with_file("upstream_ca", "upstream-ca.pem", pem);
    }
    b.start().await
}

/// A fake upstream (plaintext unless `cfg.tls` says otherwise) and postern relaying to it,
/// after postern's start-up probe of it has finished.
async fn start(cfg: UpstreamConfig) -> (FakeUpstream, Postern) {
    let tls = cfg.tls;
    let fake = FakeUpstream::start(cfg).await;
    let p = postern(Up::to(&fake, tls)).await;
    fake.wait_probe().await;
    (fake, p)
}

/// A client session on the "plain" listener, greeted and authenticated as printer.
async fn client(p: &Postern) -> Raw {
    let mut c = Raw::connect(p.addr("plain")).await;
    let greeting = c.reply().await;
    assert!(greeting.starts_with("220 "), "{greeting}");
    let ehlo = c.cmd("EHLO client.test").await;
    assert!(ehlo.starts_with("250"), "{ehlo}");
    let r = c
        .cmd(&format!("AUTH PLAIN {}", B64.encode("\0printer\0pw")))
        .await;
    assert!(r.starts_with("235 2.7.0"), "{r}");
    c
}

fn assert_starts(reply: &str, prefix: &str) {
    assert!(
        reply.starts_with(prefix),
        "expected a reply starting {prefix:?}, got {reply:?}"
    );
}

/// Sends a body (already dot-safe, CRLF lines) and the final dot; returns the reply.
async fn send_body(c: &mut Raw, body: &[u8]) -> String {
    c.send(body).await;
    c.send(b".\r\n").await;
    c.reply().await
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

fn no_auth_sent(fake: &FakeUpstream) {
    assert!(
        fake.auths().is_empty(),
        "AUTH reached the upstream: {:?}",
        fake.auths()
    );
    let cmds = fake.commands();
    assert!(
        !cmds
            .iter()
            .any(|c| c.to_ascii_uppercase().starts_with("AUTH")),
        "{cmds:?}"
    );
    assert!(!contains(&fake.raw(), PROVIDER.1.as_bytes()));
    assert!(!contains(
        &fake.raw(),
        B64.encode(format!("\0{}\0{}", PROVIDER.0, PROVIDER.1))
            .as_bytes()
    ));
}

fn rcpt_replies(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(a, r)| (a.to_string(), r.to_string()))
        .collect()
}

const BODY: &[u8] = b"Subject: fault test\r\n\r\nhello\r\n";

// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn rejected_recipient_gets_the_upstream_550_and_the_others_get_the_message() {
    let (fake, p) = start(UpstreamConfig {
        rcpt_replies: rcpt_replies(&[("bad@example.net", "550 5.1.1 no such user here")]),
        ..UpstreamConfig::default()
    })
    .await;
    let mut c = client(&p).await;
    assert_starts(&c.cmd("MAIL FROM:<a@example.com>").await, "250 ");
    assert_starts(&c.cmd("RCPT TO:<one@example.net>").await, "250 ");
    assert_eq!(
        c.cmd("RCPT TO:<bad@example.net>").await,
        "550 5.1.1 upstream provider: no such user here"
    );
    assert_starts(&c.cmd("RCPT TO:<two@example.net>").await, "250 ");
    assert_starts(&c.cmd("DATA").await, "354 ");
    let r = send_body(&mut c, BODY).await;
    assert_starts(&r, "250 2.0.0 upstream provider:");
    let msgs = fake.wait_messages(1, T).await;
    assert_eq!(msgs.len(), 1);
    assert_eq!(
        msgs[0].rcpts,
        ["RCPT TO:<one@example.net>", "RCPT TO:<two@example.net>"]
    );
    assert_eq!(msgs[0].data, BODY);
    assert_eq!(msgs[0].auth_user.as_deref(), Some(PROVIDER.0));
}

#[tokio::test]
async fn every_recipient_rejected_means_no_354() {
    let (fake, p) = start(UpstreamConfig {
        rcpt_replies: rcpt_replies(&[("bad@example.net", "550 5.1.1 no such user here")]),
        ..UpstreamConfig::default()
    })
    .await;
    let mut c = client(&p).await;
    assert_starts(&c.cmd("MAIL FROM:<a@example.com>").await, "250 ");
    assert_eq!(
        c.cmd("RCPT TO:<bad@example.net>").await,
        "550 5.1.1 upstream provider: no such user here"
    );
    let r = c.cmd("DATA").await;
    assert_starts(&r, "554 5.5.1");
    assert_eq!(fake.data_commands(), 0);
    // The session goes on.
    assert_starts(&c.cmd("RSET").await, "250 ");
    assert_starts(&c.cmd("NOOP").await, "250 ");
}

#[tokio::test]
async fn upstream_refusing_mail_from_is_passed_on_at_rcpt() {
    let (fake, p) = start(UpstreamConfig {
        mail_reply: Some("451 4.3.0 busy, come back later".into()),
        ..UpstreamConfig::default()
    })
    .await;
    let mut c = client(&p).await;
    // MAIL ahead: answered at once, sent with the first RCPT, whose reply is
    // the provider's refusal of MAIL; so is every later RCPT's.
    assert_eq!(c.cmd("MAIL FROM:<a@example.com>").await, AHEAD);
    let refused = "451 4.3.0 upstream provider: busy, come back later";
    assert_eq!(c.cmd("RCPT TO:<b@example.net>").await, refused);
    assert_eq!(c.cmd("RCPT TO:<c@example.net>").await, refused);
    assert_starts(&c.cmd("DATA").await, "554 5.5.1");
    assert_eq!(fake.data_commands(), 0);
    assert!(fake.messages().is_empty());
    // A new transaction starts clean.
    assert_starts(&c.cmd("RSET").await, "250 ");
    assert_starts(&c.cmd("RCPT TO:<b@example.net>").await, "503 ");
}

#[tokio::test]
async fn upstream_refusing_mail_from_without_pipelining_is_passed_on_at_mail() {
    let mut cfg = UpstreamConfig {
        mail_reply: Some("451 4.3.0 busy, come back later".into()),
        ..UpstreamConfig::default()
    };
    cfg.extensions.retain(|e| e != "PIPELINING");
    let (fake, p) = start(cfg).await;
    let mut c = client(&p).await;
    assert_eq!(
        c.cmd("MAIL FROM:<a@example.com>").await,
        "451 4.3.0 upstream provider: busy, come back later"
    );
    assert_starts(&c.cmd("RCPT TO:<b@example.net>").await, "503 ");
    assert_starts(&c.cmd("DATA").await, "503 ");
    assert_eq!(fake.data_commands(), 0);
}

#[tokio::test]
async fn upstream_refusing_data_sent_ahead_is_the_end_of_data_verdict() {
    let (fake, p) = start(UpstreamConfig {
        data_reply: Some("452 4.3.1 out of storage".into()),
        ..UpstreamConfig::default()
    })
    .await;
    let mut c = client(&p).await;
    assert_eq!(c.cmd("MAIL FROM:<a@example.com>").await, AHEAD);
    assert_starts(&c.cmd("RCPT TO:<b@example.net>").await, "250 ");
    // DATA ahead: our 354 before the provider's answer to DATA.
    assert_starts(&c.cmd("DATA").await, "354 ");
    assert_eq!(
        send_body(&mut c, BODY).await,
        "452 4.3.1 upstream provider: out of storage"
    );
    assert!(fake.messages().is_empty());
    // No byte of the body went to the provider, which was not in DATA.
    let cmds = fake.commands();
    assert!(
        !cmds.iter().any(|l| l.contains("Subject") || l == "."),
        "{cmds:?}"
    );
    // The session goes on, on another connection: on that one the refused
    // transaction is still open, and MAIL would be a nested one (503).
    assert_eq!(c.cmd("MAIL FROM:<a@example.com>").await, AHEAD);
    assert_starts(&c.cmd("RCPT TO:<b@example.net>").await, "250 ");
}

#[tokio::test]
async fn tempfail_at_end_of_data_is_451_never_250() {
    let (fake, p) = start(UpstreamConfig {
        data_end_reply: Some("451 4.3.0 try again later".into()),
        ..UpstreamConfig::default()
    })
    .await;
    let mut c = client(&p).await;
    assert_starts(&c.cmd("MAIL FROM:<a@example.com>").await, "250 ");
    assert_starts(&c.cmd("RCPT TO:<b@example.net>").await, "250 ");
    assert_starts(&c.cmd("DATA").await, "354 ");
    let r = send_body(&mut c, BODY).await;
    assert_eq!(r, "451 4.3.0 upstream provider: try again later");
    assert_eq!(fake.data_commands(), 1);
    assert!(fake.messages().is_empty());
    // The client may try again in the same session; the upstream says the same.
    assert_starts(&c.cmd("MAIL FROM:<a@example.com>").await, "250 ");
    assert_starts(&c.cmd("RCPT TO:<b@example.net>").await, "250 ");
    assert_starts(&c.cmd("DATA").await, "354 ");
    assert_starts(&send_body(&mut c, BODY).await, "451 4.3.0");
    assert!(fake.messages().is_empty());
}

#[tokio::test]
async fn slow_permanent_rejection_at_end_of_data_is_passed_on() {
    let (fake, p) = start(UpstreamConfig {
        data_end_reply: Some("554 5.7.1 looks like spam".into()),
        data_end_delay: Some(Duration::from_millis(300)),
        ..UpstreamConfig::default()
    })
    .await;
    let mut c = client(&p).await;
    assert_starts(&c.cmd("MAIL FROM:<a@example.com>").await, "250 ");
    assert_starts(&c.cmd("RCPT TO:<b@example.net>").await, "250 ");
    assert_starts(&c.cmd("DATA").await, "354 ");
    let r = send_body(&mut c, BODY).await;
    assert_eq!(r, "554 5.7.1 upstream provider: looks like spam");
    assert!(fake.messages().is_empty());
}

#[tokio::test]
async fn upstream_421_at_end_of_data_is_a_4xx() {
    let (fake, p) = start(UpstreamConfig {
        data_end_reply: Some("421 4.3.2 shutting down".into()),
        ..UpstreamConfig::default()
    })
    .await;
    let mut c = client(&p).await;
    assert_starts(&c.cmd("MAIL FROM:<a@example.com>").await, "250 ");
    assert_starts(&c.cmd("RCPT TO:<b@example.net>").await, "250 ");
    assert_starts(&c.cmd("DATA").await, "354 ");
    let r = send_body(&mut c, BODY).await;
    assert_starts(&r, "451 ");
    assert!(r.contains("shutting down"), "{r}");
    assert!(fake.messages().is_empty());
}

#[tokio::test]
async fn connection_dropped_mid_data_is_451_and_the_session_recovers() {
    let (fake, p) = start(UpstreamConfig {
        drop_after_data_bytes: Some(1000),
        ..UpstreamConfig::default()
    })
    .await;
    let mut c = client(&p).await;
    let mut big = b"Subject: first\r\n\r\n".to_vec();
    for i in 0..50 {
        big.extend_from_slice(format!("line {i:03} {}\r\n", "x".repeat(90)).as_bytes());
    }
    assert!(big.len() > 4000);
    assert_starts(&c.cmd("MAIL FROM:<a@example.com>").await, "250 ");
    assert_starts(&c.cmd("RCPT TO:<b@example.net>").await, "250 ");
    assert_starts(&c.cmd("DATA").await, "354 ");
    let r = send_body(&mut c, &big).await;
    assert_starts(&r, "451 4.4.2");
    assert!(fake.messages().is_empty());

    // Same session: a new transaction goes through a fresh upstream connection.
    let before = fake.connections();
    assert_starts(&c.cmd("RSET").await, "250 ");
    assert_starts(&c.cmd("MAIL FROM:<a@example.com>").await, "250 ");
    assert_starts(&c.cmd("RCPT TO:<c@example.net>").await, "250 ");
    assert_starts(&c.cmd("DATA").await, "354 ");
    let small = b"Subject: second\r\n\r\nsmall\r\n";
    let r = send_body(&mut c, small).await;
    assert_starts(&r, "250 2.0.0 upstream provider:");
    let msgs = fake.wait_messages(1, T).await;
    assert_eq!(msgs.len(), 1);
    assert_eq!(msgs[0].data, small);
    assert_eq!(msgs[0].rcpts, ["RCPT TO:<c@example.net>"]);
    assert!(fake.connections() > before, "no reconnection");
    assert!(c.cmd("QUIT").await.starts_with("221"));
}

#[tokio::test]
async fn upstream_refusing_the_relay_credentials_is_451_not_535() {
    let fake = FakeUpstream::start(UpstreamConfig::default()).await;
    let p = postern(Up {
        password: "wrong-secret",
        ..Up::to(&fake, UpTls::None)
    })
    .await;
    let mut c = client(&p).await;
    let r = c.cmd("MAIL FROM:<a@example.com>").await;
    assert_starts(&r, "451 4.3.0");
    assert!(r.contains("provider"), "{r}");
    // postern did try, with its own (wrong) provider password, never the local one.
    let auths = fake.auths();
    assert!(!auths.is_empty());
    assert!(
        auths
            .iter()
            .all(|(u, pw)| u == PROVIDER.0 && pw == "wrong-secret"),
        "{auths:?}"
    );
    assert!(
        !fake
            .commands()
            .iter()
            .any(|l| l.to_ascii_uppercase().starts_with("MAIL"))
    );
    assert!(fake.messages().is_empty());
}

#[tokio::test]
async fn unreachable_upstream_is_451_4_4_1() {
    let closed_port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let p = postern(Up {
        addr: format!("127.0.0.1:{closed_port}"),
        tls: "none",
        password: PROVIDER.1,
        ca: None,
    })
    .await;
    let mut c = client(&p).await;
    let r = c.cmd("MAIL FROM:<a@example.com>").await;
    assert_starts(&r, "451 4.4.1");
    // Still a working session.
    assert_starts(&c.cmd("NOOP").await, "250 ");
    assert_starts(&c.cmd("MAIL FROM:<a@example.com>").await, "451 4.4.1");
}

#[tokio::test]
async fn starttls_required_but_not_offered_never_falls_back_to_clear_text() {
    // The fake speaks plaintext only and offers AUTH in clear; postern wants STARTTLS.
    let fake = FakeUpstream::start(UpstreamConfig::default()).await;
    let p = postern(Up {
        tls: "starttls",
        ..Up::to(&fake, UpTls::None)
    })
    .await;
    fake.wait_probe().await;
    let mut c = client(&p).await;
    let r = c.cmd("MAIL FROM:<a@example.com>").await;
    assert_starts(&r, "451 4.7.5");
    assert!(
        fake.connections() >= 2,
        "the session never tried the upstream"
    );
    no_auth_sent(&fake);
    assert!(
        !fake
            .commands()
            .iter()
            .any(|l| l.to_ascii_uppercase().starts_with("MAIL"))
    );
}

#[tokio::test]
async fn starttls_response_injection_aborts_the_upstream_connection() {
    let fake = FakeUpstream::start(UpstreamConfig {
        tls: UpTls::StartTls,
        inject_after_starttls_220: Some(b"250-injected\r\n250 AUTH PLAIN LOGIN\r\n".to_vec()),
        ..UpstreamConfig::default()
    })
    .await;
    let p = postern(Up::to(&fake, UpTls::StartTls)).await;
    fake.wait_probe().await;
    let mut c = client(&p).await;
    let r = c.cmd("MAIL FROM:<a@example.com>").await;
    assert_starts(&r, "451 4.7.5");
    assert!(
        fake.connections() >= 2,
        "the session never tried the upstream"
    );
    no_auth_sent(&fake);
    let cmds = fake.commands();
    assert!(cmds.iter().any(|l| l == "STARTTLS"), "{cmds:?}");
    assert!(
        !cmds
            .iter()
            .any(|l| l.to_ascii_uppercase().starts_with("MAIL")),
        "{cmds:?}"
    );
}

/// One write from the client: MAIL, three RCPTs (one refused, one 251), DATA.
/// MAIL hears `mail`: postern's own 250 toward a pipelining provider (MAIL
/// ahead, its verdict comes with the RCPTs), the provider's otherwise.
async fn pipelined_transaction(fake: &FakeUpstream, p: &Postern, mail: &str) {
    let mut c = client(p).await;
    c.send(
        b"MAIL FROM:<a@example.com>\r\n\
          RCPT TO:<r1@example.net>\r\n\
          RCPT TO:<r2@example.net>\r\n\
          RCPT TO:<r3@example.net>\r\n\
          DATA\r\n",
    )
    .await;
    assert_eq!(c.reply().await, mail);
    assert_eq!(c.reply().await, "250 2.1.5 upstream provider: ok");
    assert_eq!(
        c.reply().await,
        "550 5.1.1 upstream provider: no such user here"
    );
    assert_eq!(c.reply().await, "251 2.1.5 upstream provider: will forward");
    assert_starts(&c.reply().await, "354 ");
    assert_starts(
        &send_body(&mut c, BODY).await,
        "250 2.0.0 upstream provider:",
    );
    let msgs = fake.wait_messages(1, T).await;
    assert_eq!(
        msgs[0].rcpts,
        ["RCPT TO:<r1@example.net>", "RCPT TO:<r3@example.net>"]
    );
    assert_eq!(msgs[0].data, BODY);

    let cmds = fake.commands();
    let at = cmds
        .iter()
        .position(|l| l.starts_with("MAIL FROM:<a@example.com>"))
        .unwrap_or_else(|| panic!("no MAIL upstream: {cmds:?}"));
    assert_eq!(
        cmds[at..at + 5],
        [
            "MAIL FROM:<a@example.com>",
            "RCPT TO:<r1@example.net>",
            "RCPT TO:<r2@example.net>",
            "RCPT TO:<r3@example.net>",
            "DATA",
        ]
    );
}

/// Postern's answer to a MAIL it sends ahead with the first RCPT.
const AHEAD: &str = "250 2.1.0 Sender OK";

fn pipelining_cfg(pipelining: bool) -> UpstreamConfig {
    let mut cfg = UpstreamConfig {
        rcpt_replies: rcpt_replies(&[
            ("r2@example.net", "550 5.1.1 no such user here"),
            ("r3@example.net", "251 2.1.5 will forward"),
        ]),
        ..UpstreamConfig::default()
    };
    if !pipelining {
        cfg.extensions.retain(|e| e != "PIPELINING");
    }
    cfg
}

#[tokio::test]
async fn pipelined_client_transaction_is_pipelined_upstream_in_order() {
    let (fake, p) = start(pipelining_cfg(true)).await;
    pipelined_transaction(&fake, &p, AHEAD).await;
    // MAIL, the RCPTs and DATA went upstream back to back.
    assert!(
        contains(
            &fake.raw(),
            b"MAIL FROM:<a@example.com>\r\n\
              RCPT TO:<r1@example.net>\r\n\
              RCPT TO:<r2@example.net>\r\n\
              RCPT TO:<r3@example.net>\r\n\
              DATA\r\n"
        ),
        "{}",
        String::from_utf8_lossy(&fake.raw())
    );
}

/// A TCP relay in front of the fake upstream that records each read from postern's side:
/// bytes that arrive in one read were written without waiting for a reply in between.
struct ChunkProxy {
    port: u16,
    chunks: Arc<Mutex<Vec<Vec<u8>>>>,
    task: tokio::task::JoinHandle<()>,
    conns: Arc<Mutex<Vec<tokio::task::AbortHandle>>>,
}

impl Drop for ChunkProxy {
    fn drop(&mut self) {
        self.task.abort();
        self.cut_all();
    }
}

impl ChunkProxy {
    async fn start(target: std::net::SocketAddr) -> ChunkProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let chunks: Arc<Mutex<Vec<Vec<u8>>>> = Arc::default();
        let conns: Arc<Mutex<Vec<tokio::task::AbortHandle>>> = Arc::default();
        let rec = chunks.clone();
        let handles = conns.clone();
        let task = tokio::spawn(async move {
            while let Ok((down, _)) = listener.accept().await {
                let rec = rec.clone();
                let conn = tokio::spawn(async move {
                    let Ok(up) = TcpStream::connect(target).await else {
                        return;
                    };
                    let _ = up.set_nodelay(true);
                    let _ = down.set_nodelay(true);
                    let (mut dr, mut dw) = down.into_split();
                    let (mut ur, mut uw) = up.into_split();
                    let to_up = async {
                        let mut buf = vec![0u8; 64 * 1024];
                        while let Ok(n) = dr.read(&mut buf).await {
                            if n == 0 {
                                break;
                            }
                            rec.lock().unwrap().push(buf[..n].to_vec());
                            if uw.write_all(&buf[..n]).await.is_err() {
                                break;
                            }
                        }
                        let _ = uw.shutdown().await;
                    };
                    let to_down = async {
                        let _ = tokio::io::copy(&mut ur, &mut dw).await;
                        let _ = dw.shutdown().await;
                    };
                    tokio::join!(to_up, to_down);
                });
                handles.lock().unwrap().push(conn.abort_handle());
            }
        });
        ChunkProxy {
            port,
            chunks,
            task,
            conns,
        }
    }

    /// Cuts every relayed connection (both sides see the TCP connection close).
    fn cut_all(&self) {
        for c in self.conns.lock().unwrap().drain(..) {
            c.abort();
        }
    }
}

/// A fake upstream with `cfg`, the recording proxy in front of it, and postern
/// relaying through the proxy, its probe done.
async fn behind_proxy(cfg: UpstreamConfig) -> (FakeUpstream, ChunkProxy, Postern) {
    let fake = FakeUpstream::start(cfg).await;
    let proxy = ChunkProxy::start(fake.addr).await;
    let p = postern(Up {
        addr: format!("127.0.0.1:{}", proxy.port),
        ..Up::to(&fake, UpTls::None)
    })
    .await;
    fake.wait_probe().await;
    (fake, proxy, p)
}

#[tokio::test]
async fn mail_rcpts_and_data_go_upstream_in_one_write() {
    let (fake, proxy, p) = behind_proxy(pipelining_cfg(true)).await;
    pipelined_transaction(&fake, &p, AHEAD).await;
    let chunks = proxy.chunks.lock().unwrap().clone();
    let batch: &[u8] = b"MAIL FROM:<a@example.com>\r\n\
          RCPT TO:<r1@example.net>\r\n\
          RCPT TO:<r2@example.net>\r\n\
          RCPT TO:<r3@example.net>\r\n\
          DATA\r\n";
    assert!(
        chunks.iter().any(|c| contains(c, batch)),
        "MAIL, RCPTs and DATA were not sent together; reads: {:#?}",
        chunks
            .iter()
            .map(|c| String::from_utf8_lossy(c).into_owned())
            .collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn no_pipelining_toward_an_upstream_without_pipelining() {
    let (fake, proxy, p) = behind_proxy(pipelining_cfg(false)).await;
    pipelined_transaction(&fake, &p, "250 2.1.0 upstream provider: ok").await;
    // RFC 2920: no pipelining toward a server that does not offer it; every command
    // waited for the reply to the one before.
    let chunks = proxy.chunks.lock().unwrap().clone();
    let commands: [&[u8]; 5] = [
        b"MAIL FROM:<a@example.com>\r\n",
        b"RCPT TO:<r1@example.net>\r\n",
        b"RCPT TO:<r2@example.net>\r\n",
        b"RCPT TO:<r3@example.net>\r\n",
        b"DATA\r\n",
    ];
    for c in &chunks {
        let together = commands.iter().filter(|cmd| contains(c, cmd)).count();
        assert!(
            together <= 1,
            "{together} commands in one write to an upstream without PIPELINING: {:?}",
            String::from_utf8_lossy(c)
        );
    }
}

// ---------------------------------------------------------------------------------------
// EHLO mirrors what the upstream offers.

/// The EHLO keywords (lines after the first), upper-cased.
fn ehlo_keywords(reply: &str) -> Vec<String> {
    reply
        .lines()
        .skip(1)
        .map(|l| l.get(4..).unwrap_or("").to_ascii_uppercase())
        .collect()
}

/// EHLO postern (new connection each time) until `ready` holds, for up to 5 s.
async fn ehlo_until(p: &Postern, ready: impl Fn(&[String]) -> bool) -> Vec<String> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let mut c = Raw::connect(p.addr("plain")).await;
        c.reply().await;
        let kw = ehlo_keywords(&c.cmd("EHLO client.test").await);
        if ready(&kw) || tokio::time::Instant::now() >= deadline {
            return kw;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn ehlo_lacks_what_the_upstream_lacks() {
    let (_fake, p) = start(UpstreamConfig {
        extensions: ["ENHANCEDSTATUSCODES", "SIZE 1048576", "AUTH PLAIN LOGIN"]
            .iter()
            .map(|s| s.to_string())
            .collect(),
        ..UpstreamConfig::default()
    })
    .await;
    // The upstream's smaller SIZE shows that postern has learned its capabilities.
    let kw = ehlo_until(&p, |kw| kw.iter().any(|k| k == "SIZE 1048576")).await;
    assert!(kw.iter().any(|k| k == "SIZE 1048576"), "{kw:?}");
    for missing in ["8BITMIME", "SMTPUTF8", "DSN"] {
        assert!(!kw.iter().any(|k| k == missing), "{missing} in {kw:?}");
    }
    // postern's own extensions stay.
    for own in ["PIPELINING", "ENHANCEDSTATUSCODES", "AUTH PLAIN LOGIN"] {
        assert!(kw.iter().any(|k| k == own), "{own} missing from {kw:?}");
    }
}

#[tokio::test]
async fn ehlo_offers_what_the_upstream_offers() {
    let (_fake, p) = start(UpstreamConfig::default()).await;
    let kw = ehlo_until(&p, |kw| kw.iter().any(|k| k == "8BITMIME")).await;
    for present in [
        "8BITMIME",
        "SMTPUTF8",
        "DSN",
        "PIPELINING",
        "ENHANCEDSTATUSCODES",
    ] {
        assert!(
            kw.iter().any(|k| k == present),
            "{present} missing from {kw:?}"
        );
    }
    // postern's own limit (8 MiB) is below the upstream's 10 MiB.
    assert!(kw.iter().any(|k| k == "SIZE 8388608"), "{kw:?}");
}

#[tokio::test]
async fn upstream_closing_between_transactions_is_invisible_to_the_client() {
    // The provider cuts an idle connection (its idle timeout, a restart): the next
    // transaction of the same client session must go through a new connection
    // (the pool contract: a broken connection is replaced without the client noticing when no
    // byte of its transaction was accepted yet).
    let (fake, proxy, p) = behind_proxy(UpstreamConfig::default()).await;
    let mut c = client(&p).await;
    assert_starts(&c.cmd("MAIL FROM:<a@example.com>").await, "250 ");
    assert_starts(&c.cmd("RCPT TO:<b@example.net>").await, "250 ");
    assert_starts(&c.cmd("DATA").await, "354 ");
    assert_starts(
        &send_body(&mut c, BODY).await,
        "250 2.0.0 upstream provider:",
    );
    fake.wait_messages(1, T).await;

    let closed = fake.closed_connections();
    proxy.cut_all();
    fake.wait_until("the cut connection to close", T, |f| {
        f.closed_connections() > closed
    })
    .await;

    assert_starts(&c.cmd("MAIL FROM:<a@example.com>").await, "250 ");
    assert_starts(&c.cmd("RCPT TO:<c@example.net>").await, "250 ");
    assert_starts(&c.cmd("DATA").await, "354 ");
    assert_starts(
        &send_body(&mut c, BODY).await,
        "250 2.0.0 upstream provider:",
    );
    let msgs = fake.wait_messages(2, T).await;
    assert_eq!(msgs[1].rcpts, ["RCPT TO:<c@example.net>"]);
}

/// A provider certificate postern cannot verify (no `ca_file`, so the webpki
/// roots, which do not hold the test CA): no AUTH, no MAIL, no clear-text fallback.
#[tokio::test]
async fn an_unverifiable_upstream_certificate_is_refused() {
    for tls in [UpTls::Implicit, UpTls::StartTls] {
        let fake = FakeUpstream::start(UpstreamConfig {
            tls,
            ..UpstreamConfig::default()
        })
        .await;
        let p = postern(Up {
            ca: None,
            ..Up::to(&fake, tls)
        })
        .await;
        fake.wait_probe().await;
        let mut c = client(&p).await;
        let r = c.cmd("MAIL FROM:<a@example.com>").await;
        assert_starts(&r, "451 4.7.5");
        no_auth_sent(&fake);
        assert!(fake.messages().is_empty());
        assert!(
            !fake
                .commands()
                .iter()
                .any(|l| l.to_ascii_uppercase().starts_with("MAIL")),
            "{:?}",
            fake.commands()
        );
        c.cmd("QUIT").await;
        p.stop().await;
    }
}

#[tokio::test]
async fn a_client_that_waits_for_each_reply_sends_mail_with_rcpt_and_data_ahead() {
    let (fake, proxy, p) = behind_proxy(UpstreamConfig::default()).await;
    let mut c = client(&p).await;
    // MAIL ahead: answered here, held until the RCPT, and sent with it.
    assert_eq!(c.cmd("MAIL FROM:<a@example.com>").await, AHEAD);
    assert_eq!(
        c.cmd("RCPT TO:<b@example.net>").await,
        "250 2.1.5 upstream provider: ok"
    );
    // DATA ahead: our 354 at once; the body waits for the provider's.
    assert_starts(&c.cmd("DATA").await, "354 ");
    assert_starts(
        &send_body(&mut c, BODY).await,
        "250 2.0.0 upstream provider:",
    );
    assert_eq!(fake.wait_messages(1, T).await[0].data, BODY);
    let reads: Vec<String> = proxy
        .chunks
        .lock()
        .unwrap()
        .iter()
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect();
    let at = reads
        .iter()
        .position(|r| r.contains("MAIL FROM:<a@example.com>"))
        .unwrap_or_else(|| panic!("no MAIL: {reads:#?}"));
    assert_eq!(
        reads[at..at + 3],
        [
            "MAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.net>\r\n",
            "DATA\r\n",
            "Subject: fault test\r\n\r\nhello\r\n.\r\n",
        ],
        "{reads:#?}"
    );
}
