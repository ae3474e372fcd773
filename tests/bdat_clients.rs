//! BDAT from the device (RFC 3030 CHUNKING): postern offers CHUNKING and takes
//! `BDAT n [LAST]`, counting the octets. Checked against the exact bytes the
//! recording upstream got: relayed byte-exact in BDAT toward a CHUNKING
//! provider and dot-stuffed in DATA toward one without; bare LF, bare CR and
//! NUL refused before anything is delivered; the size limit (552 5.3.4) and
//! chunk octets of a refused BDAT read and dropped, never run as commands;
//! 503 for BDAT without MAIL or RCPT and for DATA after BDAT; RSET mid-message;
//! `BDAT 0 LAST`; a bad chunk size closes the session; the header `From:`
//! rewrite; the LAST chunk answered with the provider's own verdict; python's
//! smtplib as a real client.

// Wall-clock deadlines of a test run, not postern's timeouts.
#![allow(clippy::disallowed_types)]

mod support;

use std::time::{Duration, Instant};

use support::postern::{Postern, Raw, spawn_postern};
use support::relay::{PASSWORD, login, relay_config};
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

async fn start_with(cfg: UpstreamConfig, extra: &str) -> (FakeUpstream, Postern) {
    let up = FakeUpstream::start(cfg).await;
    let p = spawn_postern(&format!("{}\n{extra}", relay_config(&up, USER))).await;
    up.wait_probe().await;
    (up, p)
}

async fn start(cfg: UpstreamConfig) -> (FakeUpstream, Postern) {
    start_with(cfg, "").await
}

/// The wire form of `content` in DATA: every line starting with '.' doubled.
fn stuffed(content: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for line in content.split_inclusive(|&b| b == b'\n') {
        if line.first() == Some(&b'.') {
            out.push(b'.');
        }
        out.extend_from_slice(line);
    }
    out
}

/// `BDAT` commands with their octets, one per chunk, the last one `LAST`.
fn bdat(chunks: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, c) in chunks.iter().enumerate() {
        let last = if i + 1 == chunks.len() { " LAST" } else { "" };
        out.extend_from_slice(format!("BDAT {}{last}\r\n", c.len()).as_bytes());
        out.extend_from_slice(c);
    }
    out
}

/// MAIL, RCPT and every chunk in one write; the replies, in order.
async fn send_chunked(c: &mut Raw, chunks: &[&[u8]]) -> Vec<String> {
    let mut wire = b"MAIL FROM:<a@example.com>\r\nRCPT TO:<office@example.net>\r\n".to_vec();
    wire.extend_from_slice(&bdat(chunks));
    c.send(&wire).await;
    let mut replies = Vec::new();
    for _ in 0..chunks.len() + 2 {
        replies.push(c.reply().await);
    }
    replies
}

/// A message whose chunks hold what would end or smuggle a DATA message: a
/// lone dot line, dot-started lines, and a line split between chunks.
const CHUNKS: &[&[u8]] = &[
    b"Subject: chunks\r\n\r\n.\r\n..two\r\nsplit ac",
    b"ross chunks\r\n.\r\nMAIL FROM:<evil@example.org>\r\n",
    b"end\r\n",
];

fn joined(chunks: &[&[u8]]) -> Vec<u8> {
    chunks.concat()
}

#[tokio::test]
async fn ehlo_offers_chunking() {
    let (_up, p) = start(UpstreamConfig::default()).await;
    let mut c = Raw::connect(p.addr("smtp")).await;
    c.reply().await;
    let ehlo = c.cmd("EHLO client.test").await;
    assert!(ehlo.lines().any(|l| l == "250-CHUNKING"), "{ehlo}");
    assert!(!ehlo.contains("BINARYMIME"), "{ehlo}");
    p.stop().await;
}

#[tokio::test]
async fn toward_a_chunking_provider_the_content_is_byte_exact_in_bdat() {
    let (up, p) = start(chunking()).await;
    let mut c = login(&p, "scanner").await;
    let replies = send_chunked(&mut c, CHUNKS).await;
    assert!(replies[0].starts_with("250 2.1.0"), "{replies:?}");
    assert!(replies[1].starts_with("250 2.1.5"), "{replies:?}");
    assert_eq!(
        replies[2],
        format!("250 2.0.0 {} octets received", CHUNKS[0].len())
    );
    assert_eq!(
        replies[3],
        format!("250 2.0.0 {} octets received", CHUNKS[1].len())
    );
    assert!(
        replies[4].starts_with("250 2.0.0 upstream fake: queued as"),
        "{replies:?}"
    );
    let content = joined(CHUNKS);
    let msgs = up.wait_messages(1, WAIT).await;
    assert_eq!(
        String::from_utf8_lossy(&msgs[0].data),
        String::from_utf8_lossy(&content)
    );
    assert_eq!(msgs[0].raw_data, content, "no dot-stuffing in BDAT");
    assert_eq!(msgs[0].chunks.iter().sum::<usize>(), content.len());
    assert_eq!(up.data_commands(), 0);
    // Nothing of the chunks was taken for a command.
    assert_eq!(msgs[0].mail_from, "MAIL FROM:<a@example.com>");
    assert_eq!(up.messages().len(), 1);
    let m = p.metrics_text().await;
    assert!(
        m.contains(r#"postern_messages_total{result="accepted",user="scanner"} 1"#),
        "{m}"
    );
    // The session goes on, with DATA too.
    c.send(b"MAIL FROM:<a@example.com>\r\nRCPT TO:<two@example.net>\r\nDATA\r\n")
        .await;
    for what in ["250 ", "250 ", "354"] {
        let r = c.reply().await;
        assert!(r.starts_with(what), "{r}");
    }
    c.send(b"again\r\n.\r\n").await;
    assert!(c.reply().await.starts_with("250 2.0.0 upstream fake:"));
    assert_eq!(up.wait_messages(2, WAIT).await[1].data, b"again\r\n");
    p.stop().await;
}

#[tokio::test]
async fn toward_a_provider_without_chunking_the_content_goes_dot_stuffed_in_data() {
    let (up, p) = start(UpstreamConfig::default()).await;
    let mut c = login(&p, "scanner").await;
    let replies = send_chunked(&mut c, CHUNKS).await;
    assert!(
        replies[4].starts_with("250 2.0.0 upstream fake: queued as"),
        "{replies:?}"
    );
    let content = joined(CHUNKS);
    let msgs = up.wait_messages(1, WAIT).await;
    assert_eq!(msgs[0].data, content);
    assert_eq!(
        String::from_utf8_lossy(&msgs[0].raw_data),
        String::from_utf8_lossy(&stuffed(&content)),
        "dot-stuffed on the wire"
    );
    assert!(msgs[0].chunks.is_empty());
    assert_eq!(up.data_commands(), 1);
    assert_eq!(up.bdat_commands(), 0);
    p.stop().await;
}

#[tokio::test]
async fn the_last_chunk_gets_the_providers_verdict_after_it_came() {
    for cfg in [chunking(), UpstreamConfig::default()] {
        let mut cfg = cfg;
        cfg.data_end_delay = Some(Duration::from_millis(300));
        cfg.data_end_reply = Some("451 4.3.0 try later".to_owned());
        let (up, p) = start(cfg).await;
        let mut c = login(&p, "scanner").await;
        let t = Instant::now();
        let replies = send_chunked(&mut c, &[b"one\r\n", b"two\r\n"]).await;
        assert!(t.elapsed() >= Duration::from_millis(300));
        assert_eq!(replies[3], "451 4.3.0 upstream fake: try later");
        assert!(up.messages().is_empty());
        p.stop().await;
    }
}

#[tokio::test]
async fn bare_lf_bare_cr_and_nul_in_bdat_are_refused_and_nothing_is_delivered() {
    for cfg in [chunking(), UpstreamConfig::default()] {
        let has_chunking = cfg.extensions.iter().any(|e| e == "CHUNKING");
        let (up, p) = start(cfg).await;
        let mut c = login(&p, "scanner").await;
        let cases: [(&[&[u8]], &str); 5] = [
            (
                &[
                    &b"Subject: s\r\n\r\nline\n.\nMAIL FROM:<x@y>\r\n"[..],
                    &b"end\r\n"[..],
                ][..],
                "554 5.6.0 Message refused: bare CR or LF",
            ),
            (
                &[&b"a\r\n\r"[..], &b"x\r\n"[..]][..],
                "554 5.6.0 Message refused: bare CR",
            ),
            (
                &[&b"one\r"[..], &b"two\r\n"[..]][..],
                "554 5.6.0 Message refused: bare CR",
            ),
            (
                &[&b"ok\r\n"[..], &b"no\0\r\n"[..]][..],
                "554 5.6.0 Message refused: NUL",
            ),
            (
                &[&b"ends in a CR\r"[..]][..],
                "554 5.6.0 Message refused: bare CR",
            ),
        ];
        for (chunks, expected) in cases {
            let mut wire =
                b"MAIL FROM:<a@example.com>\r\nRCPT TO:<office@example.net>\r\n".to_vec();
            wire.extend_from_slice(&bdat(chunks));
            wire.extend_from_slice(b"NOOP\r\n");
            c.send(&wire).await;
            assert!(c.reply().await.starts_with("250 "));
            assert!(c.reply().await.starts_with("250 "));
            // The refused chunk ends the message; a chunk after it has no transaction.
            let mut refused = None;
            for _ in 0..chunks.len() {
                let r = c.reply().await;
                if r.starts_with("554 ") && refused.is_none() {
                    refused = Some(r);
                } else if r.starts_with("250 2.0.0 ") && refused.is_none() {
                    assert!(r.ends_with("octets received"), "{r}");
                } else {
                    assert!(r.starts_with("503 5.5.1 Need MAIL before BDAT"), "{r}");
                }
            }
            let refused = refused.unwrap_or_default();
            assert!(refused.starts_with(expected), "{chunks:?}: {refused}");
            assert_eq!(c.reply().await, "250 2.0.0 OK", "NOOP after {chunks:?}");
            assert!(up.messages().is_empty(), "{chunks:?} delivered");
        }
        if !has_chunking {
            // Nothing after the bad line ever reached the provider in DATA form.
            assert!(
                !up.reads()
                    .iter()
                    .any(|(_, r)| r.windows(4).any(|w| w == b"x@y>")),
                "smuggled bytes reached the provider"
            );
        }
        let m = p.metrics_text().await;
        assert!(
            m.contains(
                r#"postern_messages_total{result="rejected_bare_line_ending",user="scanner"} 4"#
            ),
            "{m}"
        );
        assert!(
            m.contains(r#"postern_messages_total{result="rejected_nul",user="scanner"} 1"#),
            "{m}"
        );
        p.stop().await;
    }
}

#[tokio::test]
async fn an_oversize_chunk_is_552_and_its_octets_are_dropped_not_run() {
    let (up, p) = start_with(chunking(), "[limits]\nmax_message_size = \"64KiB\"\n").await;
    let mut c = login(&p, "scanner").await;
    // 64 000 octets fit; 1537 more do not. The second chunk is full of commands.
    let mut first = Vec::new();
    for _ in 0..64 {
        first.extend_from_slice(&[b'x'; 998]);
        first.extend_from_slice(b"\r\n");
    }
    let mut second = Vec::new();
    while second.len() < 1537 {
        second.extend_from_slice(b"RSET\r\nMAIL FROM:<evil@example.org>\r\nQUIT\r\n");
    }
    let second = &second[..1537];
    let replies = send_chunked(&mut c, &[&first, second]).await;
    assert_eq!(replies[2], "250 2.0.0 64000 octets received");
    assert_eq!(
        replies[3],
        "552 5.3.4 Message size exceeds fixed maximum message size"
    );
    assert_eq!(c.cmd("NOOP").await, "250 2.0.0 OK");
    // A chunk size far beyond the limit: refused without reading it into memory.
    c.send(b"MAIL FROM:<a@example.com>\r\nRCPT TO:<office@example.net>\r\nBDAT 18446744073709551615 LAST\r\n")
        .await;
    assert!(c.reply().await.starts_with("250 "));
    assert!(c.reply().await.starts_with("250 "));
    let junk = vec![b'z'; 256 * 1024];
    for _ in 0..8 {
        c.send(&junk).await;
    }
    // Still reading the chunk: nothing is answered, nothing relayed.
    assert!(
        tokio::time::timeout(Duration::from_millis(300), c.reply())
            .await
            .is_err()
    );
    drop(c);
    assert!(up.messages().is_empty());
    let m = p.metrics_text().await;
    assert!(
        m.contains(r#"postern_messages_total{result="rejected_too_big",user="scanner"} 1"#),
        "{m}"
    );
    // Another device is served as usual.
    let mut c = login(&p, "scanner").await;
    let replies = send_chunked(&mut c, &[b"small\r\n"]).await;
    assert!(
        replies[2].starts_with("250 2.0.0 upstream fake:"),
        "{replies:?}"
    );
    p.stop().await;
}

#[tokio::test]
async fn bdat_without_mail_or_rcpt_is_503_and_its_octets_are_dropped() {
    let (up, p) = start(chunking()).await;
    let mut c = login(&p, "scanner").await;
    c.send(b"BDAT 6 LAST\r\nQUIT\r\nNOOP\r\n").await;
    assert_eq!(c.reply().await, "503 5.5.1 Need MAIL before BDAT");
    assert_eq!(c.reply().await, "250 2.0.0 OK");
    c.send(b"MAIL FROM:<a@example.com>\r\nBDAT 6\r\nQUIT\r\nNOOP\r\n")
        .await;
    assert!(c.reply().await.starts_with("250 "));
    assert_eq!(c.reply().await, "503 5.5.1 Need RCPT before BDAT");
    assert_eq!(c.reply().await, "250 2.0.0 OK");
    // The transaction is still open: RCPT, then the message.
    c.send(b"RCPT TO:<office@example.net>\r\nBDAT 4 LAST\r\nhi\r\n")
        .await;
    assert!(c.reply().await.starts_with("250 "));
    assert!(c.reply().await.starts_with("250 2.0.0 upstream fake:"));
    // After LAST, a BDAT has no transaction.
    c.send(b"BDAT 3\r\nabc").await;
    assert_eq!(c.reply().await, "503 5.5.1 Need MAIL before BDAT");
    let msgs = up.wait_messages(1, WAIT).await;
    assert_eq!(msgs[0].data, b"hi\r\n");
    assert_eq!(up.messages().len(), 1);
    p.stop().await;
}

#[tokio::test]
async fn data_after_bdat_is_503_and_rset_drops_the_message() {
    for cfg in [chunking(), UpstreamConfig::default()] {
        let (up, p) = start(cfg).await;
        let mut c = login(&p, "scanner").await;
        c.send(b"MAIL FROM:<a@example.com>\r\nRCPT TO:<office@example.net>\r\nBDAT 7\r\nfirst\r\nDATA\r\nMAIL FROM:<b@example.com>\r\nRSET\r\n")
            .await;
        assert!(c.reply().await.starts_with("250 "));
        assert!(c.reply().await.starts_with("250 "));
        assert_eq!(c.reply().await, "250 2.0.0 7 octets received");
        assert_eq!(
            c.reply().await,
            "503 5.5.1 DATA cannot follow BDAT in one transaction; send RSET"
        );
        assert!(
            c.reply()
                .await
                .starts_with("503 5.5.1 Message in BDAT chunks")
        );
        assert_eq!(c.reply().await, "250 2.0.0 OK");
        // RSET dropped it: a BDAT now has no transaction.
        c.send(b"BDAT 5 LAST\r\nlast\n").await;
        assert_eq!(c.reply().await, "503 5.5.1 Need MAIL before BDAT");
        // And a new message goes through.
        let replies = send_chunked(&mut c, &[b"new\r\n"]).await;
        assert!(
            replies[2].starts_with("250 2.0.0 upstream fake:"),
            "{replies:?}"
        );
        let msgs = up.wait_messages(1, WAIT).await;
        assert_eq!(up.messages().len(), 1);
        assert_eq!(msgs[0].data, b"new\r\n");
        let m = p.metrics_text().await;
        assert!(
            m.contains(r#"postern_messages_total{result="abandoned",user="scanner"} 1"#),
            "{m}"
        );
        p.stop().await;
    }
}

#[tokio::test]
async fn bdat_zero_last_ends_the_message() {
    for cfg in [chunking(), UpstreamConfig::default()] {
        let (up, p) = start(cfg).await;
        let mut c = login(&p, "scanner").await;
        let replies = send_chunked(&mut c, &[b"Subject: z\r\n\r\nbody\r\n", b""]).await;
        assert!(
            replies[3].starts_with("250 2.0.0 upstream fake:"),
            "{replies:?}"
        );
        // An empty message, and one whose last line has no CRLF.
        let replies = send_chunked(&mut c, &[b""]).await;
        assert!(
            replies[2].starts_with("250 2.0.0 upstream fake:"),
            "{replies:?}"
        );
        let replies = send_chunked(&mut c, &[b"no line end"]).await;
        assert!(
            replies[2].starts_with("250 2.0.0 upstream fake:"),
            "{replies:?}"
        );
        let msgs = up.wait_messages(3, WAIT).await;
        assert_eq!(msgs[0].data, b"Subject: z\r\n\r\nbody\r\n");
        assert_eq!(msgs[1].data, b"");
        assert_eq!(msgs[2].data, b"no line end\r\n");
        p.stop().await;
    }
}

#[tokio::test]
async fn a_bdat_line_without_a_usable_size_closes_the_session() {
    let (up, p) = start(chunking()).await;
    for line in [
        "BDAT",
        "BDAT x",
        "BDAT 99999999999999999999 LAST",
        "BDAT 5 NOW",
    ] {
        let mut c = login(&p, "scanner").await;
        c.send(
            format!(
                "MAIL FROM:<a@example.com>\r\nRCPT TO:<office@example.net>\r\n{line}\r\nQUIT\r\n"
            )
            .as_bytes(),
        )
        .await;
        for _ in 0..2 {
            let r = c.reply().await;
            assert!(r.starts_with("250 "), "{line}: {r}");
        }
        let r = c.reply().await;
        assert!(r.starts_with("501 5.5.4 Syntax error"), "{line}: {r}");
        assert!(c.closed().await, "{line}: still open");
    }
    assert!(up.messages().is_empty());
    p.stop().await;
}

#[tokio::test]
async fn the_header_from_is_rewritten_across_chunks() {
    let users = r#"
[[user]]
name = "scanner"
password_hash = "{hash}"
allowed_senders = ["*@example.com"]
rewrite_sender = "noreply@mail.example.com"
rewrite_header_from = true
"#;
    for cfg in [chunking(), UpstreamConfig::default()] {
        let up = FakeUpstream::start(cfg).await;
        let p = spawn_postern(&relay_config(&up, users)).await;
        up.wait_probe().await;
        let mut c = login(&p, "scanner").await;
        let replies = send_chunked(
            &mut c,
            &[
                b"Subject: s\r\nFr",
                b"om: Scanner <scanner@exa",
                b"mple.com>\r\n\r\n.body\r\n",
            ],
        )
        .await;
        assert!(
            replies[4].starts_with("250 2.0.0 upstream fake:"),
            "{replies:?}"
        );
        let msgs = up.wait_messages(1, WAIT).await;
        assert_eq!(
            String::from_utf8_lossy(&msgs[0].data),
            "Subject: s\r\nFrom: <noreply@mail.example.com>\r\nReply-To: Scanner <scanner@example.com>\r\n\r\n.body\r\n"
        );
        assert_eq!(msgs[0].mail_from, "MAIL FROM:<noreply@mail.example.com>");
        p.stop().await;
    }
}

const PY_BDAT: &str = r#"
import smtplib, sys
port = int(sys.argv[1]); password = sys.argv[2]
s = smtplib.SMTP("127.0.0.1", port, timeout=10)
s.ehlo("python.test")
assert s.has_extn("chunking"), s.esmtp_features
s.login("scanner", password)
s.mail("a@example.com")
s.rcpt("office@example.net")
chunks = [b"Subject: from python\r\n\r\n.dot\r\n", b"second chunk\r\n"]
for i, c in enumerate(chunks):
    last = " LAST" if i == len(chunks) - 1 else ""
    s.send(("BDAT %d%s\r\n" % (len(c), last)).encode() + c)
    code, msg = s.getreply()
    print(code, msg.decode())
    assert code == 250, (code, msg)
s.quit()
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_smtplib_sends_bdat() {
    let (up, p) = start(chunking()).await;
    let port = p.addr("smtp").port().to_string();
    let out = tokio::process::Command::new("python3")
        .args(["-c", PY_BDAT, &port, PASSWORD])
        .output()
        .await
        .expect("python3");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("250 2.0.0 30 octets received"), "{stdout}");
    assert!(stdout.contains("upstream fake: queued"), "{stdout}");
    let msgs = up.wait_messages(1, WAIT).await;
    assert_eq!(
        msgs[0].data,
        b"Subject: from python\r\n\r\n.dot\r\nsecond chunk\r\n"
    );
    p.stop().await;
}
