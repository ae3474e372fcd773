//! Self-test of the fake upstream SMTP server in tests/support/upstream.rs.

// Wall-clock measurements and deadlines of a test run, not postern's timeouts.
#![allow(clippy::disallowed_types)]

mod support;

use std::collections::HashMap;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use lettre::message::Mailbox;
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use support::certs::test_cert;
use support::upstream::{FakeUpstream, UpTls, UpstreamConfig};

const T: Duration = Duration::from_secs(10);

fn transport(
    up: &FakeUpstream,
    tls: Tls,
    mechanism: Mechanism,
    user: &str,
    pass: &str,
) -> AsyncSmtpTransport<Tokio1Executor> {
    AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous("127.0.0.1")
        .port(up.port())
        .tls(tls)
        .credentials(Credentials::new(user.into(), pass.into()))
        .authentication(vec![mechanism])
        .timeout(Some(T))
        .build()
}

fn tls_params(up: &FakeUpstream) -> TlsParameters {
    let pem = up.ca_pem().expect("TLS is on, so there is a cert");
    TlsParameters::builder("localhost".into())
        .add_root_certificate(Certificate::from_pem(pem.as_bytes()).expect("cert PEM"))
        .build_rustls()
        .expect("TLS parameters")
}

fn email(to: &str, body: &str) -> lettre::Message {
    lettre::Message::builder()
        .from("Alice <alice@example.test>".parse::<Mailbox>().unwrap())
        .to(to.parse::<Mailbox>().unwrap())
        .subject("selftest")
        .body(body.to_string())
        .unwrap()
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// Independent reference implementation of undoing dot-stuffing.
fn unstuff(raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut at_line_start = true;
    for (i, &b) in raw.iter().enumerate() {
        if !(at_line_start && b == b'.') {
            out.push(b);
        }
        at_line_start = b == b'\n' && i > 0 && raw[i - 1] == b'\r';
    }
    out
}

const BODY: &str = "hello\r\n.leading dot\r\n..two dots\r\nend\r\n";

fn check_body(msg: &support::upstream::Message) {
    assert!(
        contains(
            &msg.data,
            b"\r\nhello\r\n.leading dot\r\n..two dots\r\nend\r\n"
        ),
        "data: {:?}",
        String::from_utf8_lossy(&msg.data)
    );
    // lettre always terminates with "\r\n.\r\n", even after a body that ends in CRLF,
    // so the message content gains one empty line at the end.
    assert!(msg.data.ends_with(b"\r\nend\r\n\r\n"));
    assert!(
        contains(
            &msg.raw_data,
            b"\r\nhello\r\n..leading dot\r\n...two dots\r\nend\r\n"
        ),
        "raw_data: {:?}",
        String::from_utf8_lossy(&msg.raw_data)
    );
    assert!(msg.raw_data.ends_with(b"\r\nend\r\n\r\n"));
    assert_eq!(msg.data, unstuff(&msg.raw_data));
}

#[tokio::test]
async fn plain_auth_plain_delivers_message() {
    let up = FakeUpstream::start(UpstreamConfig::default()).await;
    assert!(up.cert.is_none() && up.ca_pem().is_none());
    let t = transport(
        &up,
        Tls::None,
        Mechanism::Plain,
        "provider-user",
        "provider-secret",
    );
    t.send(email("Bob <bob@example.test>", BODY))
        .await
        .expect("send");

    let msgs = up.wait_messages(1, T).await;
    assert_eq!(msgs.len(), 1);
    let m = &msgs[0];
    assert_eq!(m.auth_user.as_deref(), Some("provider-user"));
    assert_eq!(m.mail_from, "MAIL FROM:<alice@example.test>");
    assert_eq!(m.rcpts, vec!["RCPT TO:<bob@example.test>".to_string()]);
    assert!(contains(&m.data, b"Subject: selftest\r\n"));
    check_body(m);

    assert_eq!(
        up.auths(),
        vec![("provider-user".to_string(), "provider-secret".to_string())]
    );
    let cmds = up.commands();
    let verbs: Vec<&str> = cmds
        .iter()
        .map(|c| c.split([' ', ':']).next().unwrap())
        .collect();
    assert_eq!(verbs, ["EHLO", "AUTH", "MAIL", "RCPT", "DATA", "QUIT"]);
    assert!(cmds[1].starts_with("AUTH PLAIN "), "{cmds:?}");
    assert_eq!(up.connections(), 1);
    assert_eq!(up.data_commands(), 1);
    assert!(contains(&up.raw(), b"\r\nend\r\n\r\n.\r\nQUIT\r\n"));
}

#[tokio::test]
async fn starttls_with_auth_login() {
    let up = FakeUpstream::start(UpstreamConfig {
        tls: UpTls::StartTls,
        ..Default::default()
    })
    .await;
    let t = transport(
        &up,
        Tls::Required(tls_params(&up)),
        Mechanism::Login,
        "provider-user",
        "provider-secret",
    );
    t.send(email("carol@example.test", BODY))
        .await
        .expect("send");

    let msgs = up.wait_messages(1, T).await;
    check_body(&msgs[0]);
    assert_eq!(msgs[0].auth_user.as_deref(), Some("provider-user"));
    assert_eq!(msgs[0].rcpts, vec!["RCPT TO:<carol@example.test>"]);
    assert_eq!(
        up.auths(),
        vec![("provider-user".to_string(), "provider-secret".to_string())]
    );
    let cmds = up.commands();
    let starttls = cmds.iter().position(|c| c == "STARTTLS").expect("STARTTLS");
    assert!(cmds[0].starts_with("EHLO "));
    assert!(cmds[starttls + 1].starts_with("EHLO "), "{cmds:?}");
    assert_eq!(cmds[starttls + 2], "AUTH LOGIN");
    // SASL continuation lines are not commands, but they are in raw().
    assert!(!cmds.iter().any(|c| c == "cHJvdmlkZXItdXNlcg=="));
    assert!(contains(
        &up.raw(),
        b"AUTH LOGIN\r\ncHJvdmlkZXItdXNlcg==\r\n"
    ));
}

#[tokio::test]
async fn implicit_tls() {
    let up = FakeUpstream::start(UpstreamConfig {
        tls: UpTls::Implicit,
        ..Default::default()
    })
    .await;
    let t = transport(
        &up,
        Tls::Wrapper(tls_params(&up)),
        Mechanism::Plain,
        "provider-user",
        "provider-secret",
    );
    t.send(email("dave@example.test", BODY))
        .await
        .expect("send");
    let msgs = up.wait_messages(1, T).await;
    check_body(&msgs[0]);
    assert!(!up.commands().iter().any(|c| c == "STARTTLS"));
}

#[tokio::test]
async fn wrong_password_is_recorded_and_rejected() {
    let up = FakeUpstream::start(UpstreamConfig::default()).await;
    let t = transport(&up, Tls::None, Mechanism::Plain, "provider-user", "nope");
    let err = t
        .send(email("bob@example.test", BODY))
        .await
        .expect_err("bad password must fail");
    assert_eq!(err.status().map(|c| c.to_string()).as_deref(), Some("535"));
    assert_eq!(
        up.auths(),
        vec![("provider-user".to_string(), "nope".to_string())]
    );
    assert!(up.messages().is_empty());
}

#[tokio::test]
async fn rcpt_rejection_reaches_lettre() {
    let up = FakeUpstream::start(UpstreamConfig {
        rcpt_replies: HashMap::from([(
            "Bad@Example.test".to_string(),
            "550 5.1.1 no such user".to_string(),
        )]),
        ..Default::default()
    })
    .await;
    let t = transport(
        &up,
        Tls::None,
        Mechanism::Plain,
        "provider-user",
        "provider-secret",
    );
    let err = t
        .send(email("bad@EXAMPLE.test", BODY))
        .await
        .expect_err("rejected recipient");
    assert!(err.is_permanent(), "{err:?}");
    assert_eq!(err.status().map(|c| c.to_string()).as_deref(), Some("550"));
    assert!(err.to_string().contains("no such user"), "{err}");
    assert!(up.messages().is_empty());
    assert_eq!(up.data_commands(), 0);
}

#[tokio::test]
async fn data_end_451_fails_send() {
    let up = FakeUpstream::start(UpstreamConfig {
        data_end_reply: Some("451 4.3.0 try again later".into()),
        ..Default::default()
    })
    .await;
    let t = transport(
        &up,
        Tls::None,
        Mechanism::Plain,
        "provider-user",
        "provider-secret",
    );
    let err = t
        .send(email("bob@example.test", BODY))
        .await
        .expect_err("451 at end of data");
    assert!(err.is_transient(), "{err:?}");
    assert_eq!(err.status().map(|c| c.to_string()).as_deref(), Some("451"));
    assert!(up.messages().is_empty());
    assert_eq!(up.data_commands(), 1);
}

// ---------------------------------------------------------------------------------------
// Raw TCP client

struct Raw {
    r: BufReader<TcpStream>,
}

impl Raw {
    async fn connect(up: &FakeUpstream) -> Raw {
        let s = TcpStream::connect(up.addr).await.unwrap();
        Raw {
            r: BufReader::new(s),
        }
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.r.get_mut().write_all(bytes).await.unwrap();
    }

    /// Reads one (possibly multi-line) reply; returns (code, all lines).
    async fn reply(&mut self) -> (u16, Vec<String>) {
        let mut lines = Vec::new();
        loop {
            let mut line = String::new();
            let n = tokio::time::timeout(T, self.r.read_line(&mut line))
                .await
                .expect("reply timeout")
                .unwrap();
            assert!(n > 0, "EOF while reading a reply; got so far {lines:?}");
            assert!(line.ends_with("\r\n"), "{line:?}");
            let line = line.trim_end_matches("\r\n").to_string();
            let last = line.as_bytes().get(3) != Some(&b'-');
            let code = line[..3].parse::<u16>().unwrap();
            lines.push(line);
            if last {
                return (code, lines);
            }
        }
    }

    async fn code(&mut self) -> u16 {
        self.reply().await.0
    }

    async fn expect_eof(&mut self) {
        let mut rest = Vec::new();
        let r = tokio::time::timeout(T, self.r.read_to_end(&mut rest))
            .await
            .expect("waiting for close");
        // A close with unread data may arrive as a reset: that is a close too.
        if r.is_ok() {
            assert!(
                rest.is_empty(),
                "expected close, got {:?}",
                String::from_utf8_lossy(&rest)
            );
        }
    }
}

fn plain(user: &str, pass: &str) -> String {
    B64.encode(format!("\0{user}\0{pass}"))
}

#[tokio::test]
async fn raw_pipelined_commands_answered_in_order() {
    let up = FakeUpstream::start(UpstreamConfig::default()).await;
    let mut c = Raw::connect(&up).await;
    assert_eq!(
        c.reply().await,
        (220, vec!["220 fake-upstream.test ESMTP".to_string()])
    );
    let pipelined = format!(
        "EHLO x\r\nAUTH PLAIN {}\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\n",
        plain("provider-user", "provider-secret")
    );
    c.send(pipelined.as_bytes()).await;
    let (code, ehlo) = c.reply().await;
    assert_eq!(code, 250);
    assert_eq!(
        ehlo,
        [
            "250-fake-upstream.test",
            "250-PIPELINING",
            "250-8BITMIME",
            "250-SMTPUTF8",
            "250-DSN",
            "250-ENHANCEDSTATUSCODES",
            "250-SIZE 10485760",
            "250 AUTH PLAIN LOGIN",
        ]
    );
    assert_eq!(c.reply().await, (235, vec!["235 2.7.0 ok".to_string()]));
    assert_eq!(c.code().await, 250);
    assert_eq!(c.code().await, 250);
    assert_eq!(c.reply().await, (354, vec!["354 go ahead".to_string()]));
    // A bare LF followed by ".\r\n" must not end the message (smuggling shape).
    c.send(b"Subject: x\r\n\r\n..hidden\r\nbare\n.\r\nstill data\r\n.\r\nQUIT\r\n")
        .await;
    let (code, lines) = c.reply().await;
    assert_eq!(code, 250);
    assert_eq!(lines, ["250 2.0.0 queued as 1"]);
    assert_eq!(c.code().await, 221);
    c.expect_eof().await;

    let m = &up.messages()[0];
    assert_eq!(m.mail_from, "MAIL FROM:<a@b>");
    assert_eq!(m.rcpts, ["RCPT TO:<c@d>"]);
    assert_eq!(
        m.data,
        b"Subject: x\r\n\r\n.hidden\r\nbare\n.\r\nstill data\r\n"
    );
    assert_eq!(
        m.raw_data,
        b"Subject: x\r\n\r\n..hidden\r\nbare\n.\r\nstill data\r\n"
    );
    assert_eq!(m.auth_user.as_deref(), Some("provider-user"));
}

#[tokio::test]
async fn raw_sasl_variants_and_state_checks() {
    let up = FakeUpstream::start(UpstreamConfig::default()).await;
    let mut c = Raw::connect(&up).await;
    assert_eq!(c.code().await, 220);
    c.send(b"MAIL FROM:<a@b>\r\n").await;
    assert_eq!(c.code().await, 503); // no EHLO yet
    c.send(b"HELO x\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\n")
        .await;
    assert_eq!(c.code().await, 250);
    assert_eq!(c.code().await, 530); // not authenticated
    assert_eq!(c.code().await, 503); // RCPT before MAIL
    assert_eq!(c.code().await, 554); // DATA with no recipient

    // AUTH PLAIN without initial response, wrong password.
    c.send(b"AUTH PLAIN\r\n").await;
    assert_eq!(c.reply().await, (334, vec!["334 ".to_string()]));
    c.send(format!("{}\r\n", plain("provider-user", "wrong")).as_bytes())
        .await;
    assert_eq!(
        c.reply().await,
        (535, vec!["535 5.7.8 bad credentials".to_string()])
    );
    // AUTH LOGIN with initial response.
    c.send(format!("AUTH LOGIN {}\r\n", B64.encode("provider-user")).as_bytes())
        .await;
    assert_eq!(c.reply().await, (334, vec!["334 UGFzc3dvcmQ6".to_string()]));
    c.send(format!("{}\r\n", B64.encode("provider-secret")).as_bytes())
        .await;
    assert_eq!(c.code().await, 235);
    c.send(b"AUTH PLAIN\r\nNOOP\r\nRSET\r\nFOO\r\nQUIT\r\n")
        .await;
    assert_eq!(c.code().await, 503); // already authenticated
    assert_eq!(c.code().await, 250);
    assert_eq!(c.code().await, 250);
    assert_eq!(c.code().await, 500);
    assert_eq!(c.code().await, 221);
    c.expect_eof().await;

    assert_eq!(
        up.auths(),
        vec![
            ("provider-user".to_string(), "wrong".to_string()),
            ("provider-user".to_string(), "provider-secret".to_string()),
        ]
    );
    // AUTH LOGIN without initial response asks for the username first.
    let mut c = Raw::connect(&up).await;
    assert_eq!(c.code().await, 220);
    c.send(b"EHLO y\r\nAUTH LOGIN\r\n").await;
    assert_eq!(c.code().await, 250);
    assert_eq!(c.reply().await, (334, vec!["334 VXNlcm5hbWU6".to_string()]));
    c.send(b"*\r\n").await;
    assert_eq!(c.code().await, 501);
    up.wait_until("2 connections", T, |u| u.connections() == 2)
        .await;
}

#[tokio::test]
async fn raw_mail_reply_and_username_optional() {
    let up = FakeUpstream::start(UpstreamConfig {
        username: String::new(),
        mail_reply: Some("451 4.3.0 busy".into()),
        ..Default::default()
    })
    .await;
    let mut c = Raw::connect(&up).await;
    assert_eq!(c.code().await, 220);
    c.send(b"EHLO x\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\n")
        .await;
    assert_eq!(c.code().await, 250);
    assert_eq!(c.reply().await, (451, vec!["451 4.3.0 busy".to_string()]));
    assert_eq!(c.code().await, 503);
}

#[tokio::test]
async fn drop_after_data_bytes_closes_without_reply() {
    let up = FakeUpstream::start(UpstreamConfig {
        drop_after_data_bytes: Some(100),
        ..Default::default()
    })
    .await;
    let mut c = Raw::connect(&up).await;
    assert_eq!(c.code().await, 220);
    c.send(
        format!(
            "EHLO x\r\nAUTH PLAIN {}\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\n",
            plain("provider-user", "provider-secret")
        )
        .as_bytes(),
    )
    .await;
    for want in [250, 235, 250, 250, 354] {
        assert_eq!(c.code().await, want);
    }
    // Send 60 bytes: not enough, the server waits.
    c.send(&[b'a'; 58]).await;
    c.send(b"\r\n").await;
    // Then a partial line that crosses 100 bytes: the server closes without replying.
    c.send(&[b'b'; 50]).await;
    c.expect_eof().await;
    up.wait_until("the connection to close", T, |u| {
        u.closed_connections() == 1
    })
    .await;
    assert!(up.messages().is_empty());
    assert_eq!(up.data_commands(), 1);
}

#[tokio::test]
async fn injection_after_greeting_in_same_write() {
    let up = FakeUpstream::start(UpstreamConfig {
        inject_after_greeting: Some(b"250 injected\r\n".to_vec()),
        ..Default::default()
    })
    .await;
    let mut c = Raw::connect(&up).await;
    assert_eq!(c.code().await, 220);
    assert_eq!(c.reply().await, (250, vec!["250 injected".to_string()]));
}

#[tokio::test]
async fn injection_after_starttls_220() {
    let up = FakeUpstream::start(UpstreamConfig {
        tls: UpTls::StartTls,
        inject_after_starttls_220: Some(b"250 evil\r\n".to_vec()),
        ..Default::default()
    })
    .await;
    let mut c = Raw::connect(&up).await;
    assert_eq!(c.code().await, 220);
    c.send(b"EHLO x\r\nAUTH PLAIN AGEAYg==\r\nSTARTTLS\r\n")
        .await;
    let (code, ehlo) = c.reply().await;
    assert_eq!(code, 250);
    assert_eq!(ehlo.last().unwrap(), "250 STARTTLS");
    assert!(!ehlo.iter().any(|l| l.contains("AUTH")), "{ehlo:?}");
    assert_eq!(c.code().await, 530); // no AUTH before TLS
    assert_eq!(c.reply().await, (220, vec!["220 2.0.0 ready".to_string()]));
    assert_eq!(c.reply().await, (250, vec!["250 evil".to_string()]));
}

#[tokio::test]
async fn data_end_delay_delays_the_reply() {
    let delay = Duration::from_millis(150);
    let up = FakeUpstream::start(UpstreamConfig {
        data_end_delay: Some(delay),
        username: String::new(),
        ..Default::default()
    })
    .await;
    let mut c = Raw::connect(&up).await;
    assert_eq!(c.code().await, 220);
    c.send(b"EHLO x\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\n")
        .await;
    for want in [250, 250, 250, 354] {
        assert_eq!(c.code().await, want);
    }
    let t0 = tokio::time::Instant::now();
    c.send(b"x\r\n.\r\n").await;
    assert_eq!(c.code().await, 250);
    assert!(t0.elapsed() >= delay);
    let m = &up.messages()[0];
    assert_eq!(m.auth_user, None);
    assert_eq!(m.data, b"x\r\n");
}

#[tokio::test]
async fn overlong_line_is_refused() {
    let up = FakeUpstream::start(UpstreamConfig::default()).await;
    let mut c = Raw::connect(&up).await;
    assert_eq!(c.code().await, 220);
    let mut long = vec![b'N'; support::upstream::MAX_LINE + 10];
    long.extend_from_slice(b"\r\n");
    c.send(&long).await;
    assert_eq!(c.code().await, 500);
    c.expect_eof().await;
}

#[tokio::test]
#[should_panic(expected = "timed out after")]
async fn wait_messages_times_out_with_a_clear_panic() {
    let up = FakeUpstream::start(UpstreamConfig::default()).await;
    up.wait_messages(1, Duration::from_millis(50)).await;
}

#[test]
fn test_cert_writes_pem_files() {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let cert = test_cert();
    let dir = tempfile::tempdir().unwrap();
    let (c, k) = cert.write_to(dir.path());
    assert_eq!(c, dir.path().join("cert.pem"));
    assert_eq!(k, dir.path().join("key.pem"));
    let certs: Vec<_> = CertificateDer::pem_file_iter(&c)
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(certs.len(), 1);
    PrivateKeyDer::from_pem_file(&k).unwrap();
}
