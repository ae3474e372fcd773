//! Reloading (what SIGHUP does): users, limits and upstream credentials change
//! for new connections; open ones keep what they started with; a reload that
//! fails changes nothing.

mod support;

use support::postern::{PosternBuilder, Raw};
use support::upstream::{FakeUpstream, UpstreamConfig};

fn config(up: &FakeUpstream, provider_password: &str, hash: &str, extra_limits: &str) -> String {
    format!(
        r#"
[[listener]]
name = "plain"
addr = "127.0.0.1:0"
[metrics]
addr = "127.0.0.1:0"
[limits]
{extra_limits}
[[upstream]]
name = "fake"
kind = "smtp"
addr = "127.0.0.1:{port}"
tls = "none"
username = "provider-user"
{provider_password}
[[user]]
name = "dev"
password_hash = "{hash}"
allowed_senders = ["*"]
"#,
        port = up.addr.port()
    )
}

/// Greets, authenticates as dev/pw and returns the client.
async fn session(addr: std::net::SocketAddr) -> Raw {
    let mut c = Raw::connect(addr).await;
    assert_eq!(c.code().await, 220);
    c.cmd("EHLO t").await;
    // "\0dev\0pw"
    let r = c.cmd("AUTH PLAIN AGRldgBwdw==").await;
    assert!(r.starts_with("235 "), "{r}");
    c
}

#[tokio::test]
async fn reload_replaces_credentials_and_limits_for_new_connections() {
    let up = FakeUpstream::start(UpstreamConfig::default()).await;
    let hash = postern::auth::hash_password("pw").unwrap();
    let wrong = config(&up, "password = \"not-the-secret\"", &hash, "");
    let p = PosternBuilder::new(&wrong).start().await;

    let mut before = session(p.addr("plain")).await;
    let r = before.cmd("MAIL FROM:<a@example.com>").await;
    assert!(r.starts_with("451 4.3.0"), "wrong provider password: {r}");

    // Right password, and at most one recipient per message.
    let right = config(
        &up,
        "password = \"provider-secret\"",
        &hash,
        "max_recipients = 1",
    );
    let cfg = postern::Config::from_toml_str(&right, "reload.toml").unwrap();
    p.reloader.reload(cfg).unwrap();

    let mut after = session(p.addr("plain")).await;
    assert!(
        after
            .cmd("MAIL FROM:<a@example.com>")
            .await
            .starts_with("250")
    );
    assert!(
        after
            .cmd("RCPT TO:<b@example.net>")
            .await
            .starts_with("250")
    );
    let r = after.cmd("RCPT TO:<c@example.net>").await;
    assert!(r.starts_with("452 4.5.3"), "new limit applies: {r}");
    assert!(after.cmd("DATA").await.starts_with("354"));
    assert!(
        after
            .cmd("Subject: x\r\n\r\nhi\r\n.")
            .await
            .starts_with("250")
    );
    let msgs = up
        .wait_messages(1, std::time::Duration::from_secs(10))
        .await;
    assert_eq!(msgs[0].rcpts.len(), 1);

    // The connection opened before the reload is still the old policy, and still up.
    assert!(before.cmd("NOOP").await.starts_with("250"));

    // A reload whose secret cannot be read fails whole; the running policy stays.
    let broken = config(
        &up,
        "password_env = \"POSTERN_TEST_UNSET_VARIABLE\"",
        &hash,
        "",
    );
    let cfg = postern::Config::from_toml_str(&broken, "broken.toml").unwrap();
    let err = p.reloader.reload(cfg).unwrap_err();
    assert!(err.contains("POSTERN_TEST_UNSET_VARIABLE"), "{err}");
    let mut third = session(p.addr("plain")).await;
    assert!(
        third
            .cmd("MAIL FROM:<a@example.com>")
            .await
            .starts_with("250")
    );

    assert_eq!(
        p.metric("postern_config_reloads_total{result=\"ok\"}")
            .await,
        1.0
    );
    assert_eq!(
        p.metric("postern_config_reloads_total{result=\"error\"}")
            .await,
        1.0
    );
    for c in [&mut before, &mut after, &mut third] {
        c.cmd("QUIT").await;
    }
    p.stop().await;
}
