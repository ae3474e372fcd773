//! Command order, pipelining, SIZE, recipient limits, idle timeout, open relay, metrics.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::support::postern::{Raw, outbox_toml, spawn_postern};
use crate::support::upstream::{FakeUpstream, UpstreamConfig};

use crate::common::*;

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
/// wire contract ("Wrong order: 503") keeps 554 for "all RCPTs were refused".
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

/// An idle session holds no read buffer: its next read lands on the stack (4 KiB
/// at most) and the rest waits in the socket. A batch far bigger than that,
/// with a transaction inside and a command split over two writes, is answered
/// whole and in order.
#[tokio::test]
async fn a_pipelined_batch_bigger_than_an_idle_read_is_answered_in_order() {
    let up = FakeUpstream::start(UpstreamConfig::default()).await;
    let p = spawn_postern(&config("", "", &up.postern_toml(), "")).await;
    up.wait_probe().await;
    let mut c = login(&p).await;
    let mut batch = "NOOP\r\n".repeat(1000).into_bytes();
    batch.extend_from_slice(b"MAIL FROM:<dev@example.com>\r\nRCPT TO:<a@example.net>\r\nDATA\r\n");
    batch.extend_from_slice("NOOP\r\n".repeat(10).as_bytes());
    // The DATA's 354 comes after the NOOPs before it; the NOOPs after DATA are
    // message content, then the end of data and one more command, split.
    batch.extend_from_slice(b".\r\nNO");
    c.send(&batch).await;
    for i in 0..1000 {
        next(&mut c, "250 ", &format!("NOOP {i} of the batch")).await;
    }
    next(&mut c, "250 ", "MAIL after the NOOPs").await;
    next(&mut c, "250 ", "RCPT").await;
    next(&mut c, "354", "DATA").await;
    next(&mut c, "250 ", "end of data").await;
    c.send(b"OP\r\n").await;
    next(&mut c, "250 ", "the split NOOP").await;
    nothing_pending(&mut c, "the batch").await;
    let m = only_message(&up).await;
    assert_eq!(m.data, "NOOP\r\n".repeat(10).as_bytes());
    p.stop().await;
}

/// A stop: an idle session hears 421 at once; a transaction that does not end
/// within `shutdown_grace` is cut at its end, and the server then stops; a
/// connection after the stop finds nothing listening.
#[tokio::test]
async fn a_stop_cuts_a_transaction_that_outlasts_the_grace() {
    let more = "[server]\nshutdown_grace = \"1s\"\n";
    let p = spawn_postern(&config("", "", &outbox_toml(), more)).await;
    let addr = p.addr("smtp");
    let mut idle = login(&p).await;
    let mut busy = login(&p).await;
    expect(&mut busy, "MAIL FROM:<dev@example.com>", "250 ").await;
    expect(&mut busy, "RCPT TO:<a@example.net>", "250 ").await;
    expect(&mut busy, "DATA", "354").await;
    busy.send(b"Subject: never ends\r\n").await;
    let started = Instant::now();
    let stopping = tokio::spawn(p.stop());
    next(&mut idle, "421 4.3.0", "the idle session at the stop").await;
    assert!(idle.closed().await, "idle session still open");
    assert!(busy.closed().await, "the transaction was not cut");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(10),
        "cut after {waited:?}, not at the 1 s grace"
    );
    tokio::time::timeout(Duration::from_secs(10), stopping)
        .await
        .expect("the server did not stop after the cut")
        .unwrap();
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
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
