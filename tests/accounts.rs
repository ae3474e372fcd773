//! One provider account per sender (`[[upstream.account]]`, DirectMail's
//! model): each envelope sender (after rewrite_sender) authenticates as its
//! own account; a sender with no account is refused at MAIL with 550 5.7.1
//! before anything reaches the provider; all accounts together stay within the
//! upstream's max_connections.

mod support;

use std::collections::HashMap;
use std::sync::OnceLock;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;

use support::postern::{Postern, PosternBuilder, Raw};
use support::upstream::{FakeUpstream, UpstreamConfig};

const T: Duration = Duration::from_secs(10);

fn password_hash() -> &'static str {
    static HASH: OnceLock<String> = OnceLock::new();
    HASH.get_or_init(|| postern::auth::hash_password("pw").expect("hash_password"))
}

async fn start(max_connections: u32) -> (FakeUpstream, Postern) {
    let fake = FakeUpstream::start(UpstreamConfig {
        accounts: HashMap::from([
            (
                "alerts@mail.example.com".to_string(),
                "pw-alerts".to_string(),
            ),
            ("Scans@mail.example.com".to_string(), "pw-scans".to_string()),
        ]),
        ..UpstreamConfig::default()
    })
    .await;
    let toml = format!(
        r#"
[server]
hostname = "postern.test"
[[listener]]
name = "plain"
addr = "127.0.0.1:0"
[[upstream]]
name = "directmail"
kind = "smtp"
addr = "127.0.0.1:{port}"
tls = "none"
max_connections = {max_connections}
health_check_interval = 0
[[upstream.account]]
username = "alerts@mail.example.com"
password = "pw-alerts"
[[upstream.account]]
username = "Scans@mail.example.com"
password_file = "{{scans}}"
[[user]]
name = "nas"
password_hash = "{hash}"
allowed_senders = ["*@mail.example.com"]
[[user]]
name = "scanner"
password_hash = "{hash}"
allowed_senders = ["*@lan.example"]
rewrite_sender = "scans@mail.example.com"
"#,
        port = fake.port(),
        hash = password_hash(),
    );
    let p = PosternBuilder::new(&toml)
        .with_file("scans", "scans.secret", "pw-scans\n")
        .start()
        .await;
    (fake, p)
}

async fn client(p: &Postern, user: &str) -> Raw {
    let mut c = Raw::connect(p.addr("plain")).await;
    assert!(c.reply().await.starts_with("220 "));
    assert!(c.cmd("EHLO client.test").await.starts_with("250"));
    let r = c
        .cmd(&format!(
            "AUTH PLAIN {}",
            B64.encode(format!("\0{user}\0pw"))
        ))
        .await;
    assert!(r.starts_with("235 "), "{r}");
    c
}

async fn send(c: &mut Raw, from: &str) -> String {
    let r = c.cmd(&format!("MAIL FROM:<{from}>")).await;
    if !r.starts_with("250") {
        return r;
    }
    assert!(c.cmd("RCPT TO:<x@example.net>").await.starts_with("250"));
    assert!(c.cmd("DATA").await.starts_with("354"));
    c.send(b"Subject: t\r\n\r\nhi\r\n.\r\n").await;
    c.reply().await
}

#[tokio::test]
async fn each_sender_authenticates_as_its_own_account() {
    let (fake, p) = start(4).await;
    let mut nas = client(&p, "nas").await;
    let r = send(&mut nas, "alerts@mail.example.com").await;
    assert!(r.starts_with("250 "), "{r}");
    // Sender case does not matter; the account named "Scans@..." matches.
    let r = send(&mut nas, "SCANS@mail.example.com").await;
    assert!(r.starts_with("250 "), "{r}");
    // rewrite_sender picks the account: the device's own address has none.
    let mut scanner = client(&p, "scanner").await;
    let r = send(&mut scanner, "mfp-2f@lan.example").await;
    assert!(r.starts_with("250 "), "{r}");
    let msgs = fake.wait_messages(3, T).await;
    let seen: Vec<(String, Option<String>)> = msgs
        .iter()
        .map(|m| (m.mail_from.clone(), m.auth_user.clone()))
        .collect();
    assert_eq!(
        seen,
        [
            (
                "MAIL FROM:<alerts@mail.example.com>".to_string(),
                Some("alerts@mail.example.com".to_string())
            ),
            (
                "MAIL FROM:<SCANS@mail.example.com>".to_string(),
                Some("Scans@mail.example.com".to_string())
            ),
            (
                "MAIL FROM:<scans@mail.example.com>".to_string(),
                Some("Scans@mail.example.com".to_string())
            ),
        ]
    );
}

#[tokio::test]
async fn a_sender_without_an_account_is_refused_before_the_provider_hears_of_it() {
    let (fake, p) = start(4).await;
    // Let the start-up probe finish, then count what reaches the provider.
    fake.wait_probe().await;
    let before = fake.connections();
    let mut nas = client(&p, "nas").await;
    let r = send(&mut nas, "ops@mail.example.com").await;
    assert!(r.starts_with("550 5.7.1 "), "{r}");
    assert!(r.contains("no account"), "{r}");
    assert_eq!(fake.connections(), before, "a connection was opened for it");
    assert!(!fake.commands().iter().any(|c| c.contains("ops@")));
    // The session goes on.
    let r = send(&mut nas, "alerts@mail.example.com").await;
    assert!(r.starts_with("250 "), "{r}");
}

#[tokio::test]
async fn accounts_share_the_upstreams_connection_cap() {
    // One connection for the whole upstream: the second account must take
    // the first one's idle connection's slot, never open a second.
    let (fake, p) = start(1).await;
    fake.wait_probe().await;
    fake.reset_peak();
    let mut nas = client(&p, "nas").await;
    for from in [
        "alerts@mail.example.com",
        "scans@mail.example.com",
        "alerts@mail.example.com",
    ] {
        let r = send(&mut nas, from).await;
        assert!(r.starts_with("250 "), "{from}: {r}");
    }
    let msgs = fake.wait_messages(3, T).await;
    assert_eq!(msgs.len(), 3);
    assert_eq!(
        fake.peak_connections(),
        1,
        "more than one provider connection at once (cap 1)"
    );
    // Each switch of account cost a new connection, the old one closed first.
    assert!(fake.connections() >= 4, "{}", fake.connections());
}
