//! `rewrite_header_from`: whatever `From:` fields a device sends (none, several,
//! folded, any case, `From :`), the message reaches the provider with exactly one
//! `From:`, the rewritten one, and the device's first `From:` as `Reply-To:` when it
//! had none. Each case is checked against the exact bytes the recording upstream got.

mod support;

use std::time::Duration;

use support::relay::{PASSWORD, login, start_relay, transaction};

const WAIT: Duration = Duration::from_secs(10);

const USER: &str = r#"
[[user]]
name = "scanner"
password_hash = "{hash}"
allowed_senders = ["*@example.com"]
rewrite_sender = "noreply@mail.example.com"
rewrite_header_from = true
"#;

/// (what, content as sent, content the upstream must receive (unstuffed)).
const CASES: &[(&str, &[u8], &[u8])] = &[
    (
        "space before the colon",
        b"From : Scanner <scanner@example.com>\r\nSubject: s\r\n\r\nFrom : body line\r\n",
        b"From: <noreply@mail.example.com>\r\nSubject: s\r\nReply-To: Scanner <scanner@example.com>\r\n\r\nFrom : body line\r\n",
    ),
    (
        "two From fields",
        b"From: a@example.com\r\nTo: office@example.net\r\nFROM: b@example.com\r\n\r\nbody\r\n",
        b"From: <noreply@mail.example.com>\r\nTo: office@example.net\r\nReply-To: a@example.com\r\n\r\nbody\r\n",
    ),
    (
        "folded, lower case",
        b"Subject: s\r\nfrom:\r\n Scanner\r\n\t<scanner@example.com>\r\n\r\nbody\r\n",
        b"Subject: s\r\nFrom: <noreply@mail.example.com>\r\nReply-To:\r\n Scanner\r\n\t<scanner@example.com>\r\n\r\nbody\r\n",
    ),
    (
        "mixed case with a tab before the colon, and an existing Reply-To",
        b"rEpLy-To: owner@example.com\r\nfRoM\t: scanner@example.com\r\n\r\nbody\r\n",
        b"rEpLy-To: owner@example.com\r\nFrom: <noreply@mail.example.com>\r\n\r\nbody\r\n",
    ),
    (
        "no From at all",
        b"Subject: s\r\n\r\nbody\r\n",
        b"Subject: s\r\nFrom: <noreply@mail.example.com>\r\n\r\nbody\r\n",
    ),
    (
        "header section without a body",
        b"From: scanner@example.com\r\nSubject: s\r\n",
        b"From: <noreply@mail.example.com>\r\nSubject: s\r\nReply-To: scanner@example.com\r\n",
    ),
    (
        "a dot-stuffed header line",
        b"..X-Dot: d\r\nFrom: scanner@example.com\r\n\r\n..body\r\n",
        b".X-Dot: d\r\nFrom: <noreply@mail.example.com>\r\nReply-To: scanner@example.com\r\n\r\n.body\r\n",
    ),
];

#[tokio::test]
async fn every_from_shape_leaves_as_exactly_one_rewritten_from() {
    let (up, p) = start_relay(USER).await;
    let mut c = login(&p, "scanner").await;
    for (what, content, _) in CASES {
        let r = transaction(&mut c, "scanner@example.com", "office@example.net", content).await;
        assert!(r.starts_with("250 "), "{what}: end of data got {r:?}");
    }
    let msgs = up.wait_messages(CASES.len(), WAIT).await;
    assert_eq!(msgs.len(), CASES.len());
    for ((what, _, want), m) in CASES.iter().zip(&msgs) {
        assert_eq!(
            String::from_utf8_lossy(&m.data),
            String::from_utf8_lossy(want),
            "{what}"
        );
        assert_eq!(
            m.mail_from, "MAIL FROM:<noreply@mail.example.com>",
            "{what}"
        );
        let header_end = m
            .data
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .map_or(m.data.len(), |i| i + 2);
        let froms = postern::smtp::header::fields(&m.data[..header_end])
            .iter()
            .filter(|f| postern::smtp::header::is_field(f, "from"))
            .count();
        assert_eq!(froms, 1, "{what}: From fields upstream");
    }
    p.stop().await;
}

#[tokio::test]
async fn a_header_section_over_the_buffer_limit_is_refused_and_nothing_is_delivered() {
    let (up, p) = start_relay(USER).await;
    let mut c = login(&p, "scanner").await;
    let mut content = b"From: scanner@example.com\r\n".to_vec();
    let pad = format!("X-Pad: {}\r\n", "p".repeat(200));
    while content.len() <= postern::smtp::header::MAX_HEADER_SECTION {
        content.extend_from_slice(pad.as_bytes());
    }
    content.extend_from_slice(b"\r\nbody\r\n");
    let r = transaction(
        &mut c,
        "scanner@example.com",
        "office@example.net",
        &content,
    )
    .await;
    assert!(r.starts_with("552 5.3.4"), "oversize header got {r:?}");

    // A line over 1000 octets inside the header section: refused too.
    let mut long = b"From: scanner@example.com\r\nSubject: ".to_vec();
    long.extend_from_slice(&[b's'; 1000]);
    long.extend_from_slice(b"\r\n\r\nbody\r\n");
    let r = transaction(&mut c, "scanner@example.com", "office@example.net", &long).await;
    assert!(r.starts_with("500 5.5.2"), "long header line got {r:?}");

    // The session is still good, and only this message reaches the upstream.
    let ok = b"From: scanner@example.com\r\n\r\nok\r\n";
    let r = transaction(&mut c, "scanner@example.com", "office@example.net", ok).await;
    assert!(r.starts_with("250 "), "good message got {r:?}");
    let msgs = up.wait_messages(1, WAIT).await;
    assert_eq!(msgs.len(), 1, "{msgs:#?}");
    assert_eq!(
        msgs[0].data,
        b"From: <noreply@mail.example.com>\r\nReply-To: scanner@example.com\r\n\r\nok\r\n"
    );
    assert!(
        !up.raw().windows(6).any(|w| w == b"X-Pad:"),
        "part of the refused header section reached the upstream"
    );
    p.stop().await;
}

/// Python's smtplib, a real client, sending several `From:` shapes in one message.
const PY_SEND: &str = r#"
import smtplib, sys
port, user, password, path = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
with smtplib.SMTP("127.0.0.1", port, timeout=10) as s:
    s.login(user, password)
    s.sendmail("scanner@example.com", ["office@example.net"], open(path, "rb").read())
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smtplib_message_with_several_from_shapes_leaves_with_one() {
    let (up, p) = start_relay(USER).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("msg.eml");
    std::fs::write(
        &path,
        b"From : Scanner <scanner@example.com>\r\nSubject: scan\r\nFROM:\r\n second@example.com\r\nfrom:third@example.com\r\n\r\n.dot line\r\n",
    )
    .unwrap();
    let port = p.addr("smtp").port().to_string();
    let out = tokio::process::Command::new("python3")
        .args(["-c", PY_SEND, &port, "scanner", PASSWORD])
        .arg(&path)
        .output()
        .await
        .expect("run python3");
    assert!(
        out.status.success(),
        "smtplib failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let msgs = up.wait_messages(1, WAIT).await;
    assert_eq!(msgs.len(), 1);
    assert_eq!(
        String::from_utf8_lossy(&msgs[0].data),
        "From: <noreply@mail.example.com>\r\nSubject: scan\r\nReply-To: Scanner <scanner@example.com>\r\n\r\n.dot line\r\n"
    );
    assert!(msgs[0].raw_data.ends_with(b"\r\n..dot line\r\n"));
    p.stop().await;
}
