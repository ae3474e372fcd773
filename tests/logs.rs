//! The log lines an operator reads: one `transaction` line per outcome with
//! every field, in JSON (top-level fields) and text (quoted values), with no
//! secret at any level, and `relay_ms` from end-of-data. The tests here share
//! tracing's global callsite state, so they run one at a time.

mod support;

use std::time::Duration;

use base64::Engine as _;
use support::memory_upstream::MemoryUpstream;
use support::observe::{Capture, PASSWORD, auth_plain, logged_in, provider, send};

/// Held by each test: capture subscribers are per thread, but tracing's
/// interest cache is global and races when several come and go at once.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test(start_paused = true)]
async fn relay_time_starts_at_end_of_data_not_at_the_upload() {
    let up = MemoryUpstream::default();
    let s = provider(&up, "", "");
    let _one = ONE_AT_A_TIME.lock().await;
    let log = Capture::default();
    let _guard = log.install(postern::config::LogFormat::Json);
    let mut t = logged_in(&s).await;
    t.cmd("MAIL FROM:<dev@example.com>", "250").await;
    t.cmd("RCPT TO:<you@example.net>", "250").await;
    t.cmd("DATA", "354").await;
    t.send(b"Subject: slow scanner\r\n\r\n").await;
    // A slow device: 120 s of upload before the final dot.
    tokio::time::sleep(Duration::from_secs(120)).await;
    t.send(b"page\r\n.\r\n").await;
    t.expect("250").await;
    let sum = s.metric("postern_message_relay_duration_seconds_sum{upstream=\"mem\"}");
    assert!(sum < 1.0, "relay duration includes the upload: {sum}");
    let line = log.transaction("accepted");
    let relay_ms = line["relay_ms"].as_u64().expect("relay_ms");
    let total_ms = line["total_ms"].as_u64().expect("total_ms");
    assert!(relay_ms < 1000, "{line}");
    assert!(total_ms >= 120_000, "{line}");
}

#[tokio::test(start_paused = true)]
async fn the_json_log_has_one_line_per_transaction_with_every_field_and_no_secret() {
    let up = MemoryUpstream::default();
    let s = provider(&up, "", "");
    let _one = ONE_AT_A_TIME.lock().await;
    let log = Capture::default();
    let _guard = log.install(postern::config::LogFormat::Json);
    let mut t = logged_in(&s).await;
    let body = "Subject: confidential scan\r\n\r\nsecret-body-text\r\n.\r\n";
    send(&mut t, "dev@example.com", body, "250").await;
    t.cmd("MAIL FROM:<x@elsewhere.org>", "550 5.7.1").await;
    t.cmd("MAIL FROM:<dev@example.com>", "250").await;
    t.cmd("RCPT TO:<reject@example.net>", "550").await;
    t.cmd("QUIT", "221").await;
    t.finished().await;
    // A failed AUTH on another session.
    let mut bad = s.connect();
    bad.expect("220").await;
    bad.cmd("EHLO x", "250").await;
    let wrong = base64::engine::general_purpose::STANDARD.encode("\0evil\"user\0wrong-password");
    bad.cmd(&format!("AUTH PLAIN {wrong}"), "535").await;

    let ok = log.transaction("accepted");
    for field in [
        "id",
        "user",
        "client",
        "tls",
        "client_from",
        "sender",
        "rcpt_accepted",
        "rcpt_refused",
        "size",
        "upstream",
        "route",
        "reply",
        "relay_ms",
        "total_ms",
        "result",
    ] {
        assert!(!ok[field].is_null(), "no {field}: {ok}");
    }
    assert_eq!(ok["level"], "INFO");
    assert_eq!(ok["user"], "dev");
    assert_eq!(ok["client"], "127.0.0.1:40000");
    assert_eq!(ok["tls"], "none");
    assert_eq!(ok["client_from"], "dev@example.com");
    assert_eq!(ok["upstream"], "mem");
    assert_eq!(ok["route"], "relay");
    assert_eq!(ok["rcpt_accepted"], 1);
    assert!(
        ok["reply"]
            .as_str()
            .unwrap_or("")
            .starts_with("250 2.0.0 upstream mem: ")
    );
    assert!(ok["id"].as_str().is_some_and(|id| id.len() > 20), "{ok}");

    let refused = log.transaction("rejected_sender");
    assert_eq!(refused["user"], "dev");
    assert_eq!(refused["client_from"], "x@elsewhere.org");
    assert!(
        refused["reply"]
            .as_str()
            .unwrap_or("")
            .starts_with("550 5.7.1")
    );

    let none = log.transaction("rejected_no_recipients");
    assert_eq!(none["rcpt_refused"], 1);
    let rcpt: Vec<_> = log
        .json()
        .into_iter()
        .filter(|v| v["message"] == "recipient refused")
        .collect();
    assert_eq!(rcpt.len(), 1, "{}", log.text());
    assert_eq!(rcpt[0]["result"], "upstream_rejected");

    let failed: Vec<_> = log
        .json()
        .into_iter()
        .filter(|v| v["message"] == "authentication failed")
        .collect();
    assert_eq!(failed.len(), 1, "{}", log.text());
    assert_eq!(failed[0]["username"], "evil\"user");
    assert_eq!(failed[0]["client"], "127.0.0.1:40000");

    let text = log.text();
    for secret in [
        PASSWORD,
        "wrong-password",
        "provider-secret",
        wrong.as_str(),
        &auth_plain()[11..],
        "secret-body-text",
        "confidential scan",
    ] {
        assert!(!text.contains(secret), "the log contains {secret:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn the_text_log_quotes_what_needs_quoting() {
    let up = MemoryUpstream::default();
    let s = provider(&up, "", "");
    let _one = ONE_AT_A_TIME.lock().await;
    let log = Capture::default();
    let _guard = log.install(postern::config::LogFormat::Text);
    let mut t = logged_in(&s).await;
    send(&mut t, "dev@example.com", "Subject: x\r\n\r\n.\r\n", "250").await;
    let text = log.text();
    let line = text
        .lines()
        .find(|l| l.contains(" transaction ") && l.contains("result=\"accepted\""))
        .unwrap_or_else(|| panic!("no transaction line: {text}"));
    for want in [
        "user=\"dev\"",
        "client=\"127.0.0.1:40000\"",
        "route=\"relay\"",
        "rcpt_accepted=1",
        "reply=\"250 2.0.0 upstream mem: queued as M1\"",
    ] {
        assert!(line.contains(want), "{want} not in {line}");
    }
    // Client-chosen text with quotes, spaces and a newline stays one quoted value.
    let mut bad = s.connect();
    bad.expect("220").await;
    bad.cmd("EHLO x", "250").await;
    let user = "evil \"user\" x=1\nfake=line";
    let token = base64::engine::general_purpose::STANDARD.encode(format!("\0{user}\0nope"));
    bad.cmd(&format!("AUTH PLAIN {token}"), "535").await;
    let text = log.text();
    let line = text
        .lines()
        .find(|l| l.contains("authentication failed"))
        .unwrap_or_else(|| panic!("no AUTH line: {text}"));
    assert!(
        line.contains(r#"username="evil \"user\" x=1\nfake=line""#),
        "{line}"
    );
    assert!(!text.lines().any(|l| l.starts_with("fake=line")), "{text}");
}
