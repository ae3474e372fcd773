//! What the spool's delivery workers put on the wire, against the recording
//! upstream over real sockets: the device's DSN parameters (`RET`, `ENVID`,
//! `NOTIFY`, `ORCPT`) kept in the spool entry and sent on when the provider
//! offers DSN, and left out when it does not; the body in BDAT chunks toward
//! a provider that offers CHUNKING.

// Wall-clock deadlines of a test run, not postern's timeouts.
#![allow(clippy::disallowed_types)]

mod support;

use std::time::Duration;

use support::postern::{Postern, spawn_postern};
use support::relay::{login, relay_config};
use support::upstream::{FakeUpstream, UpstreamConfig};

const WAIT: Duration = Duration::from_secs(20);

const USER: &str = r#"
[[user]]
name = "scanner"
password_hash = "{hash}"
allowed_senders = ["*@example.com"]
"#;

/// postern in spool mode toward `up` (named "fake").
async fn spooling(up: &FakeUpstream) -> Postern {
    let toml = relay_config(up, USER).replace(
        "password = \"provider-secret\"\n",
        "password = \"provider-secret\"\ndelivery = \"spool\"\nhealth_check_interval = \"0s\"\n",
    );
    let toml = format!("{toml}\n[spool]\ndir = \"{{dir}}/spool\"\nretry_initial = \"1s\"\n");
    spawn_postern(&toml).await
}

/// One message with DSN parameters on MAIL and on the first of two RCPTs.
async fn send_with_dsn(p: &Postern) {
    let mut c = login(p, "scanner").await;
    c.send(
        b"MAIL FROM:<scanner@example.com> RET=HDRS ENVID=QQ314159+2Bx\r\n\
          RCPT TO:<a@example.net> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;a+2Bx@example.net\r\n\
          RCPT TO:<b@example.net>\r\n\
          DATA\r\n",
    )
    .await;
    for what in ["250 ", "250 ", "250 ", "354"] {
        let r = c.reply().await;
        assert!(r.starts_with(what), "expected {what:?}, got {r:?}");
    }
    c.send(b"Subject: dsn\r\n\r\nbody\r\n.\r\n").await;
    let r = c.reply().await;
    assert!(r.starts_with("250 2.0.0 Queued as "), "{r}");
    c.cmd("QUIT").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dsn_parameters_are_kept_in_the_spool_and_sent_to_a_dsn_provider() {
    let up = FakeUpstream::start(UpstreamConfig::default()).await;
    let p = spooling(&up).await;
    send_with_dsn(&p).await;
    let got = up.wait_messages(1, WAIT).await;
    assert_eq!(got.len(), 1);
    assert_eq!(
        got[0].mail_from,
        "MAIL FROM:<scanner@example.com> SIZE=22 RET=HDRS ENVID=QQ314159+2Bx"
    );
    assert_eq!(
        got[0].rcpts,
        vec![
            "RCPT TO:<a@example.net> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;a+2Bx@example.net",
            "RCPT TO:<b@example.net>",
        ]
    );
    assert_eq!(got[0].data, b"Subject: dsn\r\n\r\nbody\r\n");
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dsn_parameters_are_left_out_toward_a_provider_without_dsn() {
    let mut cfg = UpstreamConfig::default();
    cfg.extensions.retain(|e| e != "DSN");
    let up = FakeUpstream::start(cfg).await;
    let p = spooling(&up).await;
    send_with_dsn(&p).await;
    let got = up.wait_messages(1, WAIT).await;
    assert_eq!(got[0].mail_from, "MAIL FROM:<scanner@example.com> SIZE=22");
    assert_eq!(
        got[0].rcpts,
        vec!["RCPT TO:<a@example.net>", "RCPT TO:<b@example.net>"]
    );
    let raw = String::from_utf8_lossy(&up.raw()).into_owned();
    assert!(!raw.contains("NOTIFY=") && !raw.contains("RET="), "{raw}");
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spool_workers_send_the_body_in_bdat_to_a_chunking_provider() {
    let mut cfg = UpstreamConfig::default();
    cfg.extensions.push("CHUNKING".to_owned());
    let up = FakeUpstream::start(cfg).await;
    let p = spooling(&up).await;
    send_with_dsn(&p).await;
    let got = up.wait_messages(1, WAIT).await;
    assert_eq!(got[0].data, b"Subject: dsn\r\n\r\nbody\r\n");
    assert_eq!(got[0].rcpts.len(), 2);
    assert_eq!(up.data_commands(), 0);
    assert_eq!(up.bdat_commands(), 1);
    let commands = up.commands();
    assert!(commands.iter().any(|c| c == "BDAT 22 LAST"), "{commands:?}");
    p.stop().await;
}
