//! The warm upstream pool: connections are reused across client sessions,
//! capped at `max_connections` (a client waits `pool_wait`, then 451 4.4.5),
//! closed by postern before the provider's idle cut, and not kept with
//! `pool = false`.

mod support;

use std::time::Duration;

use support::postern::{Postern, PosternBuilder, Raw};
use support::upstream::{FakeUpstream, UpstreamConfig};

const WAIT: Duration = Duration::from_secs(10);

async fn start(pool_keys: &str) -> (FakeUpstream, Postern) {
    let up = FakeUpstream::start(UpstreamConfig::default()).await;
    let hash = postern::auth::hash_password("pw").unwrap();
    let p = PosternBuilder::new(&format!(
        r#"
[[listener]]
name = "plain"
addr = "127.0.0.1:0"
[metrics]
addr = "127.0.0.1:0"
[[upstream]]
name = "fake"
kind = "smtp"
addr = "127.0.0.1:{port}"
tls = "none"
username = "provider-user"
password = "provider-secret"
{pool_keys}
[[user]]
name = "dev"
password_hash = "{hash}"
allowed_senders = ["*"]
"#,
        port = up.addr.port()
    ))
    .start()
    .await;
    up.wait_probe().await;
    (up, p)
}

async fn authed(p: &Postern) -> Raw {
    let mut c = Raw::connect(p.addr("plain")).await;
    assert_eq!(c.code().await, 220);
    c.cmd("EHLO t").await;
    let r = c.cmd("AUTH PLAIN AGRldgBwdw==").await;
    assert!(r.starts_with("235 "), "{r}");
    c
}

async fn send(c: &mut Raw) {
    for (line, want) in [
        ("MAIL FROM:<a@example.com>", "250"),
        ("RCPT TO:<b@example.net>", "250"),
        ("DATA", "354"),
        ("Subject: x\r\n\r\nhi\r\n.", "250"),
    ] {
        let r = c.cmd(line).await;
        assert!(r.starts_with(want), "{line}: {r}");
    }
}

#[tokio::test]
async fn one_connection_serves_sessions_one_after_another() {
    let (up, p) = start("").await;
    for _ in 0..3 {
        let mut c = authed(&p).await;
        send(&mut c).await;
        c.cmd("QUIT").await;
    }
    up.wait_messages(3, WAIT).await;
    // The start-up probe, then one pooled connection for all three sessions.
    assert_eq!(up.connections(), 2);
    assert_eq!(up.auths().len(), 2);
    assert_eq!(
        p.metric("postern_upstream_connections_idle{upstream=\"fake\"}")
            .await,
        1.0
    );
    // The probe is counted apart from traffic.
    assert_eq!(
        p.metric("postern_upstream_connections_opened_total{upstream=\"fake\"}")
            .await,
        1.0
    );
    assert_eq!(
        p.metric("postern_upstream_health_checks_total{result=\"ok\",upstream=\"fake\"}")
            .await,
        1.0
    );
    p.stop().await;
}

#[tokio::test]
async fn without_pooling_each_session_dials_its_own() {
    let (up, p) = start("pool = false").await;
    for _ in 0..2 {
        let mut c = authed(&p).await;
        send(&mut c).await;
        c.cmd("QUIT").await;
    }
    up.wait_messages(2, WAIT).await;
    up.wait_until("every connection closed", WAIT, |u| {
        u.closed_connections() == u.connections()
    })
    .await;
    assert_eq!(up.connections(), 3);
    p.stop().await;
}

#[tokio::test]
async fn a_busy_pool_answers_451_4_4_5_after_pool_wait() {
    let (up, p) = start("max_connections = 1\npool_wait = \"1s\"").await;
    let mut a = authed(&p).await;
    assert!(a.cmd("MAIL FROM:<a@example.com>").await.starts_with("250"));
    // `a` holds the only connection inside its transaction.
    let mut b = authed(&p).await;
    let r = b.cmd("MAIL FROM:<b@example.com>").await;
    assert!(r.starts_with("451 4.4.5 "), "{r}");
    // Once `a` is done, `b` gets it.
    assert!(a.cmd("RSET").await.starts_with("250"));
    a.cmd("QUIT").await;
    assert!(a.closed().await);
    send(&mut b).await;
    up.wait_messages(1, WAIT).await;
    assert_eq!(up.connections(), 2, "probe + the single pooled connection");
    b.cmd("QUIT").await;
    p.stop().await;
}

#[tokio::test]
async fn concurrent_sessions_share_at_most_max_connections() {
    let (up, p) = start("max_connections = 2").await;
    let mut tasks = Vec::new();
    for _ in 0..6 {
        let addr = p.addr("plain");
        tasks.push(tokio::spawn(async move {
            let mut c = Raw::connect(addr).await;
            assert_eq!(c.code().await, 220);
            c.cmd("EHLO t").await;
            assert!(c.cmd("AUTH PLAIN AGRldgBwdw==").await.starts_with("235"));
            send(&mut c).await;
            c.cmd("QUIT").await;
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    up.wait_messages(6, WAIT).await;
    assert!(
        up.connections() <= 3,
        "probe + at most 2: {}",
        up.connections()
    );
    p.stop().await;
}

#[tokio::test]
async fn idle_connections_are_closed_before_the_providers_cut() {
    let (up, p) = start("idle_timeout = \"1s\"").await;
    let mut c = authed(&p).await;
    send(&mut c).await;
    c.cmd("QUIT").await;
    up.wait_until("postern to close its idle connection", WAIT, |u| {
        u.closed_connections() == u.connections()
    })
    .await;
    assert!(
        up.commands().last().is_some_and(|c| c == "QUIT"),
        "closed politely"
    );
    assert_eq!(
        p.metric("postern_upstream_connections_idle{upstream=\"fake\"}")
            .await,
        0.0
    );
    // The next session dials a new one.
    let mut c = authed(&p).await;
    send(&mut c).await;
    c.cmd("QUIT").await;
    up.wait_messages(2, WAIT).await;
    assert_eq!(up.connections(), 3);
    p.stop().await;
}
