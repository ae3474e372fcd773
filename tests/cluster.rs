//! `[cluster]`: replicas sharing their limits through one real Redis
//! (`redis-server` on a private loopback port, see `support::redis`).
//! Two postern servers in this process stand for two replicas (each has its
//! own state, pools and metrics registry); the crash test runs one as a
//! child process and kills it with SIGKILL.

// Wall-clock deadlines of a test run, not postern's timeouts.
#![allow(clippy::disallowed_types)]

mod support;

use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use support::cluster::{login, replica_toml, send, send_body, with_spool};
use support::postern::{Raw, spawn_postern};
use support::redis::Redis;
use support::relay::PASSWORD;
use support::upstream::{FakeUpstream, UpstreamConfig};

const FALLBACK_RATE: &str = "postern_cluster_fallback_total{decision=\"message_rate\"}";
const REDIS_UP: &str = "postern_cluster_redis_up";

#[tokio::test]
async fn one_users_messages_per_minute_is_shared_by_two_replicas() {
    let Some(redis) = Redis::start() else { return };
    let up = FakeUpstream::start(UpstreamConfig::default()).await;
    let toml = replica_toml(&redis.url(), "", &up, "", "messages_per_minute = 5");
    let a = spawn_postern(&toml).await;
    let b = spawn_postern(&toml).await;
    let (mut ca, mut cb) = (login(&a).await, login(&b).await);
    let mut replies = Vec::new();
    for i in 0..8 {
        let c = if i % 2 == 0 { &mut ca } else { &mut cb };
        replies.push(send(c).await);
    }
    let accepted = replies.iter().filter(|r| r.starts_with("250")).count();
    assert_eq!(accepted, 5, "{replies:#?}");
    assert!(
        replies[5..].iter().all(|r| r.starts_with("450 4.7.1")),
        "{replies:#?}"
    );
    // Each replica alone allows 5 a minute; only the shared count gives 5 in all.
    assert_eq!(up.wait_messages(5, Duration::from_secs(5)).await.len(), 5);
    assert_eq!(a.metric(FALLBACK_RATE).await, 0.0);
    assert_eq!(b.metric(FALLBACK_RATE).await, 0.0);
    assert_eq!(a.metric(REDIS_UP).await, 1.0);
}

#[tokio::test]
async fn two_replicas_never_open_more_than_max_connections_together() {
    let Some(redis) = Redis::start() else { return };
    let up = FakeUpstream::start(UpstreamConfig {
        data_end_delay: Some(Duration::from_millis(400)),
        ..UpstreamConfig::default()
    })
    .await;
    let toml = replica_toml(
        &redis.url(),
        "",
        &up,
        "max_connections = 2\npool_wait = \"20s\"\n",
        "",
    );
    let a = spawn_postern(&toml).await;
    let b = spawn_postern(&toml).await;
    up.wait_until("both start-up probes", Duration::from_secs(10), |u| {
        u.closed_connections() >= 2
    })
    .await;
    up.reset_peak();
    let mut tasks = Vec::new();
    for i in 0..6 {
        let mut c = login(if i % 2 == 0 { &a } else { &b }).await;
        tasks.push(tokio::spawn(async move { send(&mut c).await }));
    }
    for t in tasks {
        let r = t.await.expect("session task");
        assert!(r.starts_with("250"), "{r:?}");
    }
    assert_eq!(up.messages().len(), 6);
    let peak = up.peak_connections();
    // Each replica alone may open 2: without the shared cap the peak is 4.
    assert!(peak <= 2, "the provider saw {peak} connections at once");
    assert_eq!(peak, 2, "the cap was used");
}

#[tokio::test]
async fn two_spooling_replicas_deliver_each_message_once_within_max_connections_together() {
    let Some(redis) = Redis::start() else { return };
    let up = FakeUpstream::start(UpstreamConfig {
        data_end_delay: Some(Duration::from_millis(300)),
        ..UpstreamConfig::default()
    })
    .await;
    // Each replica's delivery workers alone would open 2 (4 in all).
    let upstream = "delivery = \"spool\"\nmax_connections = 2\n\
                    max_upstream_connections_per_user = 2\npool_wait = \"20s\"\n";
    let toml = with_spool(&replica_toml(&redis.url(), "", &up, upstream, ""));
    let a = spawn_postern(&toml).await;
    let b = spawn_postern(&toml).await;
    up.wait_until("both start-up probes", Duration::from_secs(10), |u| {
        u.closed_connections() >= 2
    })
    .await;
    up.reset_peak();
    let (mut ca, mut cb) = (login(&a).await, login(&b).await);
    let n = 12;
    for i in 0..n {
        let c = if i % 2 == 0 { &mut ca } else { &mut cb };
        let r = send_body(c, &format!("Subject: m{i}\r\n\r\nmessage {i}\r\n")).await;
        assert!(r.starts_with("250 2.0.0 Queued as "), "{r:?}");
    }
    let delivered = up.wait_messages(n, Duration::from_secs(60)).await;
    assert_eq!(delivered.len(), n);
    // Both spools empty, and nothing delivered twice (a second attempt
    // would come after the entry was done).
    let deadline = Instant::now() + Duration::from_secs(10);
    while !(a.files("spool/queue", "eml").is_empty() && b.files("spool/queue", "eml").is_empty()) {
        assert!(Instant::now() < deadline, "the spools did not empty");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut seen: Vec<String> = up
        .messages()
        .iter()
        .map(|m| {
            let text = String::from_utf8_lossy(&m.data);
            let subject = text.lines().find(|l| l.starts_with("Subject: m"));
            subject.expect("a test message").to_owned()
        })
        .collect();
    seen.sort();
    let mut expected: Vec<String> = (0..n).map(|i| format!("Subject: m{i}")).collect();
    expected.sort();
    assert_eq!(seen, expected, "each message delivered exactly once");
    let peak = up.peak_connections();
    assert!(peak <= 2, "the provider saw {peak} connections at once");
    assert_eq!(peak, 2, "the cap was used");
}

#[tokio::test]
async fn redis_down_with_local_keeps_mail_flowing_on_the_divided_limit_then_resumes() {
    let Some(mut redis) = Redis::start() else {
        return;
    };
    let up = FakeUpstream::start(UpstreamConfig::default()).await;
    let toml = replica_toml(
        &redis.url(),
        "on_redis_error = \"local\"",
        &up,
        "",
        "messages_per_minute = 4",
    );
    let a = spawn_postern(&toml).await;
    let mut c = login(&a).await;
    assert!(send(&mut c).await.starts_with("250"), "shared, Redis up");
    redis.kill();
    // This replica's share of 4 a minute among 2 replicas: 2, fresh.
    let first = send(&mut c).await;
    let second = send(&mut c).await;
    let third = send(&mut c).await;
    assert!(first.starts_with("250"), "{first:?}");
    assert!(second.starts_with("250"), "{second:?}");
    assert!(third.starts_with("450 4.7.1"), "{third:?}");
    assert!(a.metric(FALLBACK_RATE).await >= 3.0);
    assert_eq!(a.metric(REDIS_UP).await, 0.0);
    assert_eq!(up.wait_messages(3, Duration::from_secs(5)).await.len(), 3);

    redis.restart();
    let deadline = Instant::now() + Duration::from_secs(20);
    while a.metric(REDIS_UP).await != 1.0 {
        assert!(
            Instant::now() < deadline,
            "postern did not see Redis come back"
        );
        let r = c.cmd("MAIL FROM:<dev@example.com>").await;
        if r.starts_with("250") {
            assert!(c.cmd("RSET").await.starts_with("250"));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Shared again: a fresh window of 4 in Redis, whatever the probes took.
    redis.flush_all();
    for _ in 0..4 {
        let r = send(&mut c).await;
        assert!(r.starts_with("250"), "{r:?}");
    }
    let over = send(&mut c).await;
    assert!(over.starts_with("450 4.7.1"), "{over:?}");
}

#[tokio::test]
async fn a_slow_redis_falls_back_within_the_timeout() {
    let Some(redis) = Redis::start() else { return };
    let up = FakeUpstream::start(UpstreamConfig::default()).await;
    let toml = replica_toml(&redis.url(), "timeout = \"200ms\"", &up, "", "");
    let a = spawn_postern(&toml).await;
    let mut c = login(&a).await;
    assert!(send(&mut c).await.starts_with("250"));
    redis.freeze();
    let started = Instant::now();
    let r = send(&mut c).await;
    let took = started.elapsed();
    redis.thaw();
    assert!(r.starts_with("250"), "{r:?}");
    assert!(took < Duration::from_secs(3), "took {took:?}");
    assert!(a.metric(FALLBACK_RATE).await >= 1.0);
}

#[tokio::test]
async fn redis_down_with_refuse_answers_451_4_3_0() {
    let Some(mut redis) = Redis::start() else {
        return;
    };
    let up = FakeUpstream::start(UpstreamConfig::default()).await;
    let toml = replica_toml(&redis.url(), "on_redis_error = \"refuse\"", &up, "", "");
    let a = spawn_postern(&toml).await;
    let mut c = login(&a).await;
    assert!(send(&mut c).await.starts_with("250"));
    redis.kill();
    let r = send(&mut c).await;
    assert!(r.starts_with("451 4.3.0"), "{r:?}");
    assert_eq!(
        a.metric("postern_messages_total{result=\"shared_limits_unavailable\",user=\"dev\"}")
            .await,
        1.0
    );
    // A new session cannot take its user's shared connection slot either.
    let mut d = Raw::connect(a.addr("smtp")).await;
    assert!(d.reply().await.starts_with("220 "));
    assert!(d.cmd("EHLO client.test").await.starts_with("250"));
    let token = B64.encode(format!("\0dev\0{PASSWORD}"));
    let auth = d.cmd(&format!("AUTH PLAIN {token}")).await;
    assert!(auth.starts_with("451 4.3.0"), "{auth:?}");
    assert_eq!(
        a.metric(FALLBACK_RATE).await,
        0.0,
        "refused, not fallen back"
    );
}

#[tokio::test]
async fn a_killed_replicas_connection_slots_come_free_within_the_lease_ttl() {
    let Some(redis) = Redis::start() else { return };
    let up = FakeUpstream::start(UpstreamConfig::default()).await;
    // One user holds both slots: its share must be the whole cap.
    let upstream =
        "max_connections = 2\nmax_upstream_connections_per_user = 2\npool_wait = \"20s\"\n";
    let toml = replica_toml(&redis.url(), "", &up, upstream, "");
    // Replica A: a child process on a port of its own, killed with SIGKILL.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let dir = tempfile::tempdir().expect("tempdir");
    let a_toml = toml.replacen("127.0.0.1:0", &format!("127.0.0.1:{port}"), 1);
    let path = dir.path().join("a.toml");
    std::fs::write(&path, a_toml).expect("write config");
    let log = std::fs::File::create(dir.path().join("a.log")).expect("log");
    let mut a = std::process::Command::new(env!("CARGO_BIN_EXE_postern"))
        .args(["run", "--config"])
        .arg(&path)
        .stdin(std::process::Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start replica A");
    let a_addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    let deadline = Instant::now() + Duration::from_secs(20);
    while tokio::net::TcpStream::connect(a_addr).await.is_err() {
        assert!(Instant::now() < deadline, "replica A did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A's two sessions hold both provider slots: they stop in the middle of DATA.
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut c = Raw::connect(a_addr).await;
        assert!(c.reply().await.starts_with("220 "));
        assert!(c.cmd("EHLO client.test").await.starts_with("250"));
        let token = B64.encode(format!("\0dev\0{PASSWORD}"));
        assert!(
            c.cmd(&format!("AUTH PLAIN {token}"))
                .await
                .starts_with("235")
        );
        assert!(
            c.cmd("MAIL FROM:<dev@example.com>")
                .await
                .starts_with("250")
        );
        assert!(c.cmd("RCPT TO:<to@example.net>").await.starts_with("250"));
        assert!(c.cmd("DATA").await.starts_with("354"));
        c.send(b"Subject: held\r\n\r\nstill writing\r\n").await;
        held.push(c);
    }
    let b = spawn_postern(&toml).await;
    let mut cb = login(&b).await;
    let waiting = tokio::spawn(async move { send(&mut cb).await });
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        !waiting.is_finished(),
        "B got a third slot while A held both"
    );
    assert!(up.peak_connections() <= 2);
    let _ = a.kill();
    let _ = a.wait();
    let killed = Instant::now();
    let r = tokio::time::timeout(Duration::from_secs(15), waiting)
        .await
        .expect("B still waiting")
        .expect("task");
    let took = killed.elapsed();
    assert!(r.starts_with("250"), "{r:?}");
    // lease_ttl = 3s; the waiter retries every 200 ms at most.
    assert!(
        took < Duration::from_secs(5),
        "slots came free after {took:?}"
    );
    assert!(up.peak_connections() <= 2, "peak {}", up.peak_connections());
    drop(held);
}
