//! Limits that span connections: message and recipient rates per user,
//! connections per user and per address, the server-wide cap, and the AUTH
//! brute-force throttle (refused before any password is checked).

// Wall-clock measurements and deadlines of a test run, not postern's timeouts.
#![allow(clippy::disallowed_types)]

mod support;

use support::postern::{Postern, Raw, outbox_toml, spawn_postern};

/// "\0dev\0pw" and "\0dev\0wrong".
const AUTH_OK: &str = "AUTH PLAIN AGRldgBwdw==";
const AUTH_BAD: &str = "AUTH PLAIN AGRldgB3cm9uZw==";

async fn start(limits: &str, user_limits: &str) -> Postern {
    let hash = postern::auth::hash_password("pw").unwrap();
    spawn_postern(&format!(
        r#"
[[listener]]
name = "plain"
addr = "127.0.0.1:0"
[metrics]
addr = "127.0.0.1:0"
[limits]
{limits}
{outbox}
[[user]]
name = "dev"
password_hash = "{hash}"
allowed_senders = ["*"]
[user.limits]
{user_limits}
"#,
        outbox = outbox_toml()
    ))
    .await
}

async fn greeted(p: &Postern) -> Raw {
    let mut c = Raw::connect(p.addr("plain")).await;
    assert_eq!(c.code().await, 220);
    assert!(c.cmd("EHLO t").await.starts_with("250"));
    c
}

async fn authed(p: &Postern) -> Raw {
    let mut c = greeted(p).await;
    let r = c.cmd(AUTH_OK).await;
    assert!(r.starts_with("235 "), "{r}");
    c
}

async fn send_one(c: &mut Raw) -> String {
    let r = c.cmd("MAIL FROM:<a@example.com>").await;
    if !r.starts_with("250") {
        return r;
    }
    assert!(c.cmd("RCPT TO:<b@example.net>").await.starts_with("250"));
    assert!(c.cmd("DATA").await.starts_with("354"));
    c.cmd("Subject: x\r\n\r\nhi\r\n.").await
}

#[tokio::test]
async fn messages_per_minute_answers_450_with_a_retry_hint() {
    let p = start("", "messages_per_minute = 2").await;
    let mut c = authed(&p).await;
    assert!(send_one(&mut c).await.starts_with("250 "));
    assert!(send_one(&mut c).await.starts_with("250 "));
    let r = send_one(&mut c).await;
    assert!(r.starts_with("450 4.7.1 "), "{r}");
    assert!(r.contains("retry in") && r.contains(" s"), "{r}");
    assert_eq!(p.files("outbox", "eml").len(), 2);
    assert_eq!(
        p.metric(
            "postern_limit_hits_total{limit=\"messages_per_minute\",upstream=\"-\",user=\"dev\"}"
        )
        .await,
        1.0
    );
    c.cmd("QUIT").await;
    p.stop().await;
}

#[tokio::test]
async fn recipients_per_hour_refuses_the_extra_recipient() {
    let p = start("", "recipients_per_hour = 3").await;
    let mut c = authed(&p).await;
    assert!(c.cmd("MAIL FROM:<a@example.com>").await.starts_with("250"));
    for i in 0..3 {
        let r = c.cmd(&format!("RCPT TO:<r{i}@example.net>")).await;
        assert!(r.starts_with("250"), "{r}");
    }
    let r = c.cmd("RCPT TO:<r3@example.net>").await;
    assert!(r.starts_with("450 4.7.1 "), "{r}");
    // The message still goes to the three accepted recipients.
    assert!(c.cmd("DATA").await.starts_with("354"));
    assert!(c.cmd("Subject: x\r\n\r\nhi\r\n.").await.starts_with("250 "));
    let json = std::fs::read_to_string(p.files("outbox", "json")[0].clone()).unwrap();
    let envelope: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(envelope["rcpt_to"].as_array().unwrap().len(), 3);
    c.cmd("QUIT").await;
    p.stop().await;
}

#[tokio::test]
async fn connections_per_user_are_capped_and_released() {
    let p = start("", "max_connections_per_user = 1").await;
    let mut first = authed(&p).await;
    let mut second = greeted(&p).await;
    let r = second.cmd(AUTH_OK).await;
    assert!(r.starts_with("421 4.7.0 "), "{r}");
    assert!(second.closed().await, "the refused connection is closed");
    assert_eq!(
        p.metric(
            "postern_limit_hits_total{limit=\"connections_per_user\",upstream=\"-\",user=\"dev\"}"
        )
        .await,
        1.0
    );
    // Once the first one is gone, the user may connect again.
    first.cmd("QUIT").await;
    assert!(first.closed().await);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let mut again = greeted(&p).await;
        let r = again.cmd(AUTH_OK).await;
        if r.starts_with("235") {
            again.cmd("QUIT").await;
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "slot never released: {r}"
        );
        tokio::task::yield_now().await;
    }
    p.stop().await;
}

#[tokio::test]
async fn connections_per_ip_are_capped_at_accept() {
    let p = start("max_connections_per_ip = 2", "").await;
    let mut a = greeted(&p).await;
    let mut b = greeted(&p).await;
    let mut c = Raw::connect(p.addr("plain")).await;
    let r = c.reply().await;
    assert!(r.starts_with("421 4.7.0 "), "{r}");
    assert!(c.closed().await);
    assert_eq!(
        p.metric(
            "postern_connections_rejected_total{listener=\"plain\",reason=\"connections_per_ip\"}"
        )
        .await,
        1.0
    );
    a.cmd("QUIT").await;
    b.cmd("QUIT").await;
    p.stop().await;
}

#[tokio::test]
async fn server_wide_cap_refuses_the_extra_connection() {
    let p = start("max_connections = 1", "").await;
    let mut a = greeted(&p).await;
    let mut b = Raw::connect(p.addr("plain")).await;
    let r = b.reply().await;
    assert!(r.starts_with("421 4.7.0 "), "{r}");
    a.cmd("QUIT").await;
    p.stop().await;
}

#[tokio::test]
async fn auth_failures_per_address_lock_out_even_the_right_password() {
    let p = start("auth_failures_per_ip_per_minute = 2", "").await;
    // Three failures (the quota, then one over it), over two connections since a
    // session closes after three.
    let mut c = greeted(&p).await;
    for _ in 0..2 {
        let r = c.cmd(AUTH_BAD).await;
        assert!(r.starts_with("535 5.7.8"), "{r}");
    }
    c.cmd("QUIT").await;
    let mut c = greeted(&p).await;
    let r = c.cmd(AUTH_BAD).await;
    assert!(r.starts_with("535 5.7.8"), "{r}");
    // Now locked: even the right password is refused, without being checked.
    let r = c.cmd(AUTH_OK).await;
    assert!(r.starts_with("454 4.7.0 "), "{r}");
    assert_eq!(
        p.metric("postern_auth_attempts_total{mechanism=\"plain\",result=\"throttled\"}")
            .await,
        1.0
    );
    assert_eq!(
        p.metric("postern_auth_attempts_total{mechanism=\"plain\",result=\"ok\"}")
            .await,
        0.0
    );
    // AUTH LOGIN is refused at once too, before any prompt.
    let r = c.cmd("AUTH LOGIN").await;
    assert!(r.starts_with("454 4.7.0 "), "{r}");
    c.cmd("QUIT").await;
    p.stop().await;
}
