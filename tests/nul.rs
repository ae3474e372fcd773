//! NUL bytes: RFC 5322 text and 8BITMIME exclude them, and a receiver that drops
//! NULs would read `CRLF NUL . CRLF` as end-of-data. postern refuses a message with
//! a NUL like one with a bare CR or LF (554 5.6.0, its own `result` word), and a
//! command line with a NUL (500 5.5.2); no NUL ever reaches the provider.

mod support;

use std::time::Duration;

use support::relay::{login, start_relay, transaction};

const WAIT: Duration = Duration::from_secs(10);

const USER: &str = r#"
[[user]]
name = "scanner"
password_hash = "{hash}"
allowed_senders = ["*@example.com"]
"#;

const GOOD: &[u8] = b"From: scanner@example.com\r\nSubject: ok\r\n\r\nfine\r\n";

#[tokio::test]
async fn crlf_nul_dot_crlf_is_no_end_of_data_and_the_message_is_refused() {
    let (up, p) = start_relay(USER).await;
    let mut c = login(&p, "scanner").await;
    // The smuggling attempt: a fake end-of-data with a NUL, then a second transaction.
    let smuggle = b"From: scanner@example.com\r\nSubject: s\r\n\r\nhello\r\n\0.\r\n\
MAIL FROM:<ceo@example.com>\r\nRCPT TO:<victim@example.net>\r\nDATA\r\nSubject: forged\r\n\r\nevil\r\n";
    let r = transaction(&mut c, "scanner@example.com", "office@example.net", smuggle).await;
    assert!(r.starts_with("554 5.6.0"), "smuggling attempt got {r:?}");
    // NUL anywhere else in a line: the same.
    for content in [
        &b"Subject: a\0b\r\n\r\nx\r\n"[..],
        b"Subject: s\r\n\r\n\0\r\n",
        b"Subject: s\r\n\r\n..\0\r\n",
    ] {
        let r = transaction(&mut c, "scanner@example.com", "office@example.net", content).await;
        assert!(r.starts_with("554 5.6.0"), "{content:?} got {r:?}");
        assert!(r.contains("NUL"), "{r:?}");
    }
    // The session goes on; a clean message is delivered byte for byte.
    let r = transaction(&mut c, "scanner@example.com", "office@example.net", GOOD).await;
    assert!(r.starts_with("250 "), "clean message got {r:?}");

    let msgs = up.wait_messages(1, WAIT).await;
    assert_eq!(msgs.len(), 1, "{msgs:#?}");
    assert_eq!(msgs[0].data, GOOD);
    let raw = up.raw();
    assert!(!raw.contains(&0), "a NUL reached the upstream");
    let text = String::from_utf8_lossy(&raw);
    assert!(
        !text.contains("ceo@") && !text.contains("victim@") && !text.contains("evil"),
        "the smuggled transaction reached the upstream: {text:?}"
    );
    assert_eq!(
        p.metric("postern_messages_total{result=\"rejected_nul\",user=\"scanner\"}")
            .await,
        4.0
    );
    assert_eq!(
        p.metric("postern_messages_total{result=\"accepted\",user=\"scanner\"}")
            .await,
        1.0
    );
    p.stop().await;
}

#[tokio::test]
async fn nul_in_a_command_line_is_refused_and_never_forwarded() {
    let (up, p) = start_relay(USER).await;
    let mut c = login(&p, "scanner").await;
    for line in [
        &b"MAIL FROM:<scanner@example.com>\0\r\n"[..],
        b"MAIL FROM:<scan\0ner@example.com>\r\n",
        b"\0.\r\n",
        b"NOOP\0\r\n",
    ] {
        c.send(line).await;
        let r = c.reply().await;
        assert_eq!(
            r, "500 5.5.2 NUL bytes are not allowed in commands",
            "{line:?}"
        );
    }
    // No transaction was opened by any of them.
    let r = c.cmd("RCPT TO:<office@example.net>").await;
    assert!(r.starts_with("503 "), "RCPT after refused MAILs got {r:?}");
    let r = transaction(&mut c, "scanner@example.com", "office@example.net", GOOD).await;
    assert!(r.starts_with("250 "), "clean message got {r:?}");
    let msgs = up.wait_messages(1, WAIT).await;
    assert_eq!(msgs.len(), 1);
    assert_eq!(msgs[0].mail_from, "MAIL FROM:<scanner@example.com>");
    assert!(!up.raw().contains(&0), "a NUL reached the upstream");
    p.stop().await;
}
