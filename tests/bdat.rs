//! BDAT toward the provider (RFC 3030 CHUNKING). Against a recording upstream
//! that offers CHUNKING: a one-recipient message's MAIL, RCPT and `BDAT n LAST`
//! with the body reach it in one read (the next device session's too, on the
//! pooled connection, with nothing before it), the body byte-exact and not dot-stuffed;
//! the provider's verdict on a deferred recipient comes back at end-of-data;
//! refusals of a chunk map to the device's reply; a connection lost mid-BDAT is
//! 451 with nothing accepted. Against one without CHUNKING, DATA as before.

// Wall-clock deadlines of a test run, not postern's timeouts.
#![allow(clippy::disallowed_types)]

mod support;

use std::time::Duration;

use support::postern::{Postern, Raw, spawn_postern};
use support::relay::{login, relay_config, transaction};
use support::upstream::{FakeUpstream, UpstreamConfig};

const WAIT: Duration = Duration::from_secs(10);

const USER: &str = r#"
[[user]]
name = "scanner"
password_hash = "{hash}"
allowed_senders = ["*@example.com"]
"#;

/// The fake upstream's default extensions, with CHUNKING.
fn chunking() -> UpstreamConfig {
    let mut cfg = UpstreamConfig::default();
    cfg.extensions.push("CHUNKING".to_owned());
    cfg
}

async fn start(cfg: UpstreamConfig) -> (FakeUpstream, Postern) {
    let up = FakeUpstream::start(cfg).await;
    let p = spawn_postern(&relay_config(&up, USER)).await;
    up.wait_probe().await;
    (up, p)
}

/// `n` bytes of body in 78-character lines, some starting with a dot.
fn body(n: usize) -> Vec<u8> {
    let mut out = b"Subject: big\r\n\r\n".to_vec();
    let mut i = 0u64;
    while out.len() < n {
        let lead = if i.is_multiple_of(7) { "." } else { "x" };
        out.extend_from_slice(format!("{lead}{i:076}\r\n").as_bytes());
        i += 1;
    }
    out
}

/// The wire form of `content` in DATA: every line starting with '.' doubled.
fn stuffed(content: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(content.len() + 64);
    for line in content.split_inclusive(|&b| b == b'\n') {
        if line.first() == Some(&b'.') {
            out.push(b'.');
        }
        out.extend_from_slice(line);
    }
    out
}

/// The read on which the upstream got `needle`, with its connection number.
fn read_with(up: &FakeUpstream, needle: &[u8]) -> (usize, Vec<u8>) {
    up.reads()
        .into_iter()
        .find(|(_, r)| r.windows(needle.len()).any(|w| w == needle))
        .unwrap_or_else(|| panic!("no read holds {:?}", String::from_utf8_lossy(needle)))
}

#[tokio::test]
async fn one_recipient_goes_in_one_flight_byte_exact() {
    let (up, p) = start(chunking()).await;
    let mut c = login(&p, "scanner").await;
    let content = b"Subject: dots\r\n\r\n.leading dot\r\n..two dots\r\nplain\r\n.\r\n";
    let end = transaction(
        &mut c,
        "a@example.com",
        "office@example.net",
        &stuffed(content),
    )
    .await;
    assert!(
        end.starts_with("250 2.0.0 upstream fake: queued as 1"),
        "{end}"
    );
    let msgs = up.wait_messages(1, WAIT).await;
    assert_eq!(
        msgs[0].data, content,
        "the provider got exactly the device's content"
    );
    assert_eq!(
        msgs[0].chunks,
        vec![content.len()],
        "one chunk, BDAT n LAST"
    );
    assert_eq!(up.data_commands(), 0, "no DATA went upstream");
    // MAIL, RCPT and BDAT with the whole body in one read.
    let (_, flight) = read_with(&up, b"MAIL FROM:<a@example.com>");
    let head = format!("BDAT {} LAST\r\n", content.len());
    let mut expected = b"MAIL FROM:<a@example.com>\r\nRCPT TO:<office@example.net>\r\n".to_vec();
    expected.extend_from_slice(head.as_bytes());
    expected.extend_from_slice(content);
    assert_eq!(
        String::from_utf8_lossy(&flight),
        String::from_utf8_lossy(&expected)
    );
    // The same connection serves the next message, again in one flight.
    let end = transaction(&mut c, "a@example.com", "two@example.net", b"second\r\n").await;
    assert!(end.starts_with("250 "), "{end}");
    let msgs = up.wait_messages(2, WAIT).await;
    assert_eq!(msgs[1].data, b"second\r\n");
    let (conn, flight) = read_with(&up, b"RCPT TO:<two@example.net>");
    assert!(
        flight.starts_with(b"MAIL FROM:<a@example.com>\r\n"),
        "{flight:?}"
    );
    assert!(flight.ends_with(b"BDAT 8 LAST\r\nsecond\r\n"), "{flight:?}");
    assert_eq!(conn, read_with(&up, b"RCPT TO:<office@example.net>").0);
    // A new device session takes that connection from the pool, and its
    // message is again one flight with nothing before it (no RSET, NOOP or
    // EHLO of its own): one round trip per message (scripts/bench.sh counts it).
    c.cmd("QUIT").await;
    let mut c = login(&p, "scanner").await;
    let end = transaction(&mut c, "a@example.com", "three@example.net", b"third\r\n").await;
    assert!(end.starts_with("250 "), "{end}");
    up.wait_messages(3, WAIT).await;
    assert_eq!(
        up.connections(),
        2,
        "the start-up probe, then one pooled connection"
    );
    let on_conn: Vec<Vec<u8>> = up
        .reads()
        .into_iter()
        .filter(|(n, _)| *n == conn)
        .map(|(_, r)| r)
        .skip_while(|r| !r.starts_with(b"MAIL FROM:"))
        .collect();
    assert_eq!(
        on_conn.len(),
        3,
        "after the first message, only the messages' flights: {:?}",
        on_conn
            .iter()
            .map(|r| String::from_utf8_lossy(r).into_owned())
            .collect::<Vec<_>>()
    );
    assert!(
        on_conn[2].starts_with(
            b"MAIL FROM:<a@example.com>\r\nRCPT TO:<three@example.net>\r\nBDAT 7 LAST\r\nthird\r\n"
        ),
        "{:?}",
        String::from_utf8_lossy(&on_conn[2])
    );
    c.cmd("QUIT").await;
    let m = p.metrics_text().await;
    assert!(
        m.contains(
            r#"postern_upstream_replies_total{class="2xx",command="DATA_END",upstream="fake"} 3"#
        ),
        "{m}"
    );
    assert!(
        m.contains(r#"postern_recipients_total{result="accepted",user="scanner"} 3"#),
        "{m}"
    );
    assert!(
        m.contains(r#"postern_messages_total{result="accepted",user="scanner"} 3"#),
        "{m}"
    );
    p.stop().await;
}

#[tokio::test]
async fn deferred_recipient_refusal_is_the_end_of_data_reply() {
    let mut cfg = chunking();
    cfg.rcpt_replies.insert(
        "nobody@example.net".to_owned(),
        "550 5.1.1 no such user".to_owned(),
    );
    let (up, p) = start(cfg).await;
    let mut c = login(&p, "scanner").await;
    let end = transaction(&mut c, "a@example.com", "nobody@example.net", b"hello\r\n").await;
    assert_eq!(end, "550 5.1.1 upstream fake: no such user");
    // The provider's transaction was cleared; the next message goes through on it.
    let end = transaction(&mut c, "a@example.com", "office@example.net", b"again\r\n").await;
    assert!(end.starts_with("250 "), "{end}");
    let msgs = up.wait_messages(1, WAIT).await;
    assert_eq!(msgs.len(), 1);
    assert_eq!(msgs[0].data, b"again\r\n");
    assert_eq!(
        msgs[0].rcpts,
        vec!["RCPT TO:<office@example.net>".to_owned()]
    );
    let m = p.metrics_text().await;
    assert!(
        m.contains(r#"postern_messages_total{result="upstream_rejected",user="scanner"} 1"#),
        "{m}"
    );
    assert!(
        m.contains(r#"postern_recipients_total{result="upstream_rejected",user="scanner"} 1"#),
        "{m}"
    );
    p.stop().await;
}

#[tokio::test]
async fn a_refused_sender_is_the_end_of_data_reply() {
    let mut cfg = chunking();
    cfg.mail_reply = Some("451 4.3.0 busy".to_owned());
    let (up, p) = start(cfg).await;
    let mut c = login(&p, "scanner").await;
    let end = transaction(&mut c, "a@example.com", "office@example.net", b"hello\r\n").await;
    assert_eq!(end, "451 4.3.0 upstream fake: busy");
    assert!(up.messages().is_empty());
    p.stop().await;
}

#[tokio::test]
async fn several_recipients_get_the_providers_replies_then_bdat() {
    let mut cfg = chunking();
    cfg.rcpt_replies.insert(
        "nobody@example.net".to_owned(),
        "550 5.1.1 no such user".to_owned(),
    );
    let (up, p) = start(cfg).await;
    let mut c = login(&p, "scanner").await;
    c.send(
        b"MAIL FROM:<a@example.com>\r\nRCPT TO:<one@example.net>\r\n\
          RCPT TO:<nobody@example.net>\r\nRCPT TO:<two@example.net>\r\nDATA\r\n",
    )
    .await;
    // MAIL ahead: postern's own 250; the provider's verdict on it rides with the RCPTs.
    assert_eq!(c.reply().await, "250 2.1.0 Sender OK");
    assert!(c.reply().await.starts_with("250 2.1.5 upstream fake:"));
    assert_eq!(c.reply().await, "550 5.1.1 upstream fake: no such user");
    assert!(c.reply().await.starts_with("250 2.1.5 upstream fake:"));
    assert!(c.reply().await.starts_with("354 "));
    c.send(b"Subject: s\r\n\r\n..dot\r\n.\r\n").await;
    let end = c.reply().await;
    assert!(end.starts_with("250 2.0.0 upstream fake: queued"), "{end}");
    let msgs = up.wait_messages(1, WAIT).await;
    assert_eq!(msgs[0].data, b"Subject: s\r\n\r\n.dot\r\n");
    assert_eq!(msgs[0].rcpts.len(), 2);
    assert_eq!(msgs[0].chunks.len(), 1);
    assert_eq!(up.data_commands(), 0);
    p.stop().await;
}

#[tokio::test]
async fn a_large_body_goes_in_bounded_pipelined_chunks() {
    let (up, p) = start(chunking()).await;
    let mut c = login(&p, "scanner").await;
    let content = body(900 * 1024);
    let end = transaction(
        &mut c,
        "a@example.com",
        "office@example.net",
        &stuffed(&content),
    )
    .await;
    assert!(end.starts_with("250 "), "{end}");
    let msgs = up.wait_messages(1, WAIT).await;
    assert!(msgs[0].data == content, "body not byte-exact");
    let chunks = &msgs[0].chunks;
    assert!(chunks.len() >= 4, "{chunks:?}");
    assert!(chunks.iter().all(|&n| n <= 256 * 1024 + 1000), "{chunks:?}");
    assert_eq!(chunks.iter().sum::<usize>(), content.len());
    assert_eq!(up.bdat_commands(), chunks.len());
    p.stop().await;
}

#[tokio::test]
async fn refusals_of_bdat_map_to_the_devices_reply() {
    for (last, reply, expected) in [
        (
            true,
            "452 4.3.1 out of space",
            "452 4.3.1 upstream fake: out of space",
        ),
        (true, "554 5.7.1 spam", "554 5.7.1 upstream fake: spam"),
        (
            false,
            "452 4.3.1 out of space",
            "452 4.3.1 upstream fake: out of space",
        ),
        (
            false,
            "552 5.3.4 too big",
            "552 5.3.4 upstream fake: too big",
        ),
    ] {
        let mut cfg = chunking();
        if last {
            cfg.data_end_reply = Some(reply.to_owned());
        } else {
            cfg.bdat_reply = Some(reply.to_owned());
        }
        let (up, p) = start(cfg).await;
        let mut c = login(&p, "scanner").await;
        // Large enough for several chunks when an early one is refused.
        let content = if last {
            b"short\r\n".to_vec()
        } else {
            body(700 * 1024)
        };
        let end = transaction(
            &mut c,
            "a@example.com",
            "office@example.net",
            &stuffed(&content),
        )
        .await;
        assert_eq!(end, expected, "last={last} {reply}");
        assert!(up.messages().is_empty(), "nothing accepted for {reply}");
        // The session goes on: the provider's transaction was cleared.
        let rset = c.cmd("RSET").await;
        assert!(rset.starts_with("250 "), "{rset}");
        let _ = (up, p.stop().await);
    }
}

#[tokio::test]
async fn a_connection_lost_mid_bdat_is_451_and_nothing_accepted() {
    for size in [2000, 700 * 1024] {
        let mut cfg = chunking();
        cfg.drop_after_data_bytes = Some(size / 2);
        let (up, p) = start(cfg).await;
        let mut c = login(&p, "scanner").await;
        let content = body(size);
        let end = transaction(
            &mut c,
            "a@example.com",
            "office@example.net",
            &stuffed(&content),
        )
        .await;
        assert!(end.starts_with("451 4."), "size {size}: {end}");
        assert!(up.messages().is_empty());
        let m = p.metrics_text().await;
        assert!(
            m.contains(r#"postern_messages_total{result="upstream_failed",user="scanner"} 1"#),
            "{m}"
        );
        p.stop().await;
    }
}

#[tokio::test]
async fn without_chunking_the_body_goes_in_data() {
    let (up, p) = start(UpstreamConfig::default()).await;
    let mut c = login(&p, "scanner").await;
    let content = b"Subject: s\r\n\r\n.dot\r\n";
    let end = transaction(
        &mut c,
        "a@example.com",
        "office@example.net",
        &stuffed(content),
    )
    .await;
    assert!(end.starts_with("250 "), "{end}");
    let msgs = up.wait_messages(1, WAIT).await;
    assert_eq!(msgs[0].data, content);
    assert_eq!(msgs[0].raw_data, stuffed(content));
    assert!(msgs[0].chunks.is_empty());
    assert_eq!(up.bdat_commands(), 0);
    assert_eq!(up.data_commands(), 1);
    p.stop().await;
}

#[tokio::test]
async fn a_non_pipelining_client_gets_the_providers_replies() {
    // MAIL, RCPT and DATA one at a time: MAIL is answered at once and goes
    // with the RCPT, whose reply is the provider's; the body still goes in BDAT.
    let (up, p) = start(chunking()).await;
    let mut c = login(&p, "scanner").await;
    assert_eq!(
        c.cmd("MAIL FROM:<a@example.com>").await,
        "250 2.1.0 Sender OK"
    );
    assert!(
        c.cmd("RCPT TO:<office@example.net>")
            .await
            .starts_with("250 2.1.5 upstream fake:")
    );
    assert!(c.cmd("DATA").await.starts_with("354 "));
    c.send(b"hi\r\n.\r\n").await;
    assert!(c.reply().await.starts_with("250 2.0.0 upstream fake:"));
    let msgs = up.wait_messages(1, WAIT).await;
    assert_eq!(msgs[0].data, b"hi\r\n");
    assert_eq!(msgs[0].chunks, vec![4]);
    let _: Raw = c;
    p.stop().await;
}

#[tokio::test]
async fn a_non_pipelining_client_hears_a_refused_sender_at_rcpt() {
    let mut cfg = chunking();
    cfg.mail_reply = Some("550 5.7.1 sender not registered".to_owned());
    let (up, p) = start(cfg).await;
    let mut c = login(&p, "scanner").await;
    assert_eq!(
        c.cmd("MAIL FROM:<a@example.com>").await,
        "250 2.1.0 Sender OK"
    );
    let refused = "550 5.7.1 upstream fake: sender not registered";
    assert_eq!(c.cmd("RCPT TO:<office@example.net>").await, refused);
    assert_eq!(c.cmd("RCPT TO:<desk@example.net>").await, refused);
    assert!(c.cmd("DATA").await.starts_with("554 5.5.1"));
    assert!(up.messages().is_empty());
    assert_eq!(up.bdat_commands(), 0);
    let m = p.metrics_text().await;
    assert!(
        m.contains(r#"postern_messages_total{result="upstream_rejected",user="scanner"} 1"#),
        "{m}"
    );
    p.stop().await;
}
