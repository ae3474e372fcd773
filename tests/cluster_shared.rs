//! `[cluster]`, continued: the providers' daily quotas shared by replicas,
//! Redis over TLS (`rediss://`) with a password, and what happens to a
//! session whose leases cannot be renewed. Real `redis-server` processes on
//! private loopback ports (`support::redis`); two postern servers in this
//! process stand for two replicas.

// Wall-clock deadlines of a test run, not postern's timeouts.
#![allow(clippy::disallowed_types)]

mod support;

use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use support::cluster::{greeted, login, replica_toml, send, trusted};
use support::postern::{PosternBuilder, Raw, spawn_postern};
use support::redis::Redis;
use support::relay::PASSWORD;
use support::upstream::{FakeUpstream, UpstreamConfig};

const REDIS_UP: &str = "postern_cluster_redis_up";

#[tokio::test]
async fn an_upstreams_messages_per_day_is_one_quota_across_replicas() {
    let Some(redis) = Redis::start() else { return };
    let up = FakeUpstream::start(UpstreamConfig::default()).await;
    let toml = replica_toml(&redis.url(), "", &up, "messages_per_day = 3\n", "");
    let a = spawn_postern(&toml).await;
    let b = spawn_postern(&toml).await;
    let (mut ca, mut cb) = (login(&a).await, login(&b).await);
    let mut replies = Vec::new();
    for i in 0..6 {
        let c = if i % 2 == 0 { &mut ca } else { &mut cb };
        replies.push(send(c).await);
    }
    // Each replica alone would allow 3 (6 in all).
    let accepted = replies.iter().filter(|r| r.starts_with("250")).count();
    assert_eq!(accepted, 3, "{replies:#?}");
    assert!(
        replies[3..]
            .iter()
            .all(|r| r.starts_with("451 4.7.1") && r.contains("messages_per_day")),
        "{replies:#?}"
    );
    assert_eq!(up.wait_messages(3, Duration::from_secs(5)).await.len(), 3);
    let fell_back = "postern_cluster_fallback_total{decision=\"daily_messages\"}";
    assert_eq!(a.metric(fell_back).await, 0.0);
    assert_eq!(b.metric(fell_back).await, 0.0);
}

#[tokio::test]
async fn an_upstreams_recipients_per_day_is_one_quota_across_replicas() {
    let Some(redis) = Redis::start() else { return };
    let up = FakeUpstream::start(UpstreamConfig::default()).await;
    let toml = replica_toml(&redis.url(), "", &up, "recipients_per_day = 3\n", "");
    let a = spawn_postern(&toml).await;
    let b = spawn_postern(&toml).await;
    let (mut ca, mut cb) = (login(&a).await, login(&b).await);
    for c in [&mut ca, &mut cb] {
        assert!(
            c.cmd("MAIL FROM:<dev@example.com>")
                .await
                .starts_with("250")
        );
    }
    let mut replies = Vec::new();
    for i in 0..6 {
        let c = if i % 2 == 0 { &mut ca } else { &mut cb };
        replies.push(c.cmd(&format!("RCPT TO:<to{i}@example.net>")).await);
    }
    let accepted = replies.iter().filter(|r| r.starts_with("250")).count();
    assert_eq!(accepted, 3, "{replies:#?}");
    assert!(
        replies[3..].iter().all(|r| r.starts_with("451 4.7.1")),
        "{replies:#?}"
    );
}

#[tokio::test]
async fn without_redis_the_daily_quota_falls_back_to_this_replicas_share() {
    let Some(mut redis) = Redis::start() else {
        return;
    };
    let up = FakeUpstream::start(UpstreamConfig::default()).await;
    // 4 a day among 2 replicas: 2 for this one while Redis is away.
    let toml = replica_toml(&redis.url(), "", &up, "messages_per_day = 4\n", "");
    let a = spawn_postern(&toml).await;
    let mut c = login(&a).await;
    assert!(send(&mut c).await.starts_with("250"), "shared, Redis up");
    redis.kill();
    let first = send(&mut c).await;
    let second = send(&mut c).await;
    let third = send(&mut c).await;
    assert!(first.starts_with("250"), "{first:?}");
    assert!(second.starts_with("250"), "{second:?}");
    assert!(third.starts_with("451 4.7.1"), "{third:?}");
    let fell_back = "postern_cluster_fallback_total{decision=\"daily_messages\"}";
    assert!(a.metric(fell_back).await >= 3.0);
    assert_eq!(a.metric(REDIS_UP).await, 0.0);
}

/// A replica of `redis` (TLS, password `password` in a file), with
/// `cluster` extra lines and `messages_per_minute = 2`.
async fn tls_replica(
    redis: &Redis,
    up: &FakeUpstream,
    password: &str,
    cluster: &str,
) -> support::postern::Postern {
    let cluster = format!(
        "ca_file = \"{}\"\npassword_file = \"{{redis_pw}}\"\n{cluster}",
        redis.ca_file().display()
    );
    let toml = replica_toml(&redis.url(), &cluster, up, "", "messages_per_minute = 2");
    PosternBuilder::new(&toml)
        .with_file("redis_pw", "redis.pw", &format!("{password}\n"))
        .start()
        .await
}

#[tokio::test]
async fn a_shared_limit_works_over_rediss_with_a_password_from_a_file_or_the_environment() {
    let password = "s3cret-redis-pass";
    let Some(redis) = Redis::start_tls(password) else {
        return;
    };
    assert!(redis.url().starts_with("rediss://"));
    let up = FakeUpstream::start(UpstreamConfig::default()).await;
    let a = tls_replica(&redis, &up, password, "").await;
    let b = tls_replica(&redis, &up, password, "").await;
    let (mut ca, mut cb) = (login(&a).await, login(&b).await);
    let replies = [
        send(&mut ca).await,
        send(&mut cb).await,
        send(&mut ca).await,
    ];
    assert!(replies[0].starts_with("250"), "{replies:#?}");
    assert!(replies[1].starts_with("250"), "{replies:#?}");
    // The third is over the shared 2 a minute (each replica alone allows 2,
    // and its fallback share would be 1: only Redis gives exactly this).
    assert!(replies[2].starts_with("450 4.7.1"), "{replies:#?}");
    for p in [&a, &b] {
        assert_eq!(p.metric(REDIS_UP).await, 1.0);
        assert_eq!(
            p.metric("postern_cluster_fallback_total{decision=\"message_rate\"}")
                .await,
            0.0
        );
    }
    // A third replica, a process of its own, reads the password from its
    // environment: it is over the same shared 2 a minute at once (its
    // fallback share would have let one through).
    let cluster = format!(
        "ca_file = \"{}\"\npassword_env = \"POSTERN_TEST_REDIS_PASSWORD\"\n",
        redis.ca_file().display()
    );
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let toml = replica_toml(&redis.url(), &cluster, &up, "", "messages_per_minute = 2").replacen(
        "127.0.0.1:0",
        &format!("127.0.0.1:{port}"),
        1,
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("c.toml");
    std::fs::write(&path, toml).expect("write config");
    let log = std::fs::File::create(dir.path().join("c.log")).expect("log");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_postern"))
        .args(["run", "--config"])
        .arg(&path)
        .env("POSTERN_TEST_REDIS_PASSWORD", password)
        .stdin(std::process::Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start replica C");
    let c_addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    let deadline = Instant::now() + Duration::from_secs(20);
    while tokio::net::TcpStream::connect(c_addr).await.is_err() {
        assert!(Instant::now() < deadline, "replica C did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut cc = Raw::connect(c_addr).await;
    assert!(cc.reply().await.starts_with("220 "));
    assert!(cc.cmd("EHLO client.test").await.starts_with("250"));
    let token = B64.encode(format!("\0dev\0{PASSWORD}"));
    assert!(
        cc.cmd(&format!("AUTH PLAIN {token}"))
            .await
            .starts_with("235 ")
    );
    let over = send(&mut cc).await;
    let _ = child.kill();
    let _ = child.wait();
    let c_log = std::fs::read_to_string(dir.path().join("c.log")).unwrap_or_default();
    assert!(over.starts_with("450 4.7.1"), "{over:?}\n{c_log}");
    assert!(!c_log.contains(password), "the password reached the log");
    // The password is what lets a replica in: a wrong one is refused by
    // Redis, and with `refuse` the session hears 451 4.3.0 at AUTH.
    let wrong = tls_replica(
        &redis,
        &up,
        "not-the-password",
        "on_redis_error = \"refuse\"",
    )
    .await;
    let mut c = Raw::connect(wrong.addr("smtp")).await;
    assert!(c.reply().await.starts_with("220 "));
    assert!(c.cmd("EHLO client.test").await.starts_with("250"));
    let token = B64.encode(format!("\0dev\0{PASSWORD}"));
    let auth = c.cmd(&format!("AUTH PLAIN {token}")).await;
    assert!(auth.starts_with("451 4.3.0"), "{auth:?}");
    assert_eq!(wrong.metric(REDIS_UP).await, 0.0);
    // Nor does the password leak into the metrics.
    assert!(!wrong.metrics_text().await.contains(password));
}

#[tokio::test]
async fn lost_leases_end_the_provider_connection_after_the_transaction_then_the_session() {
    let Some(mut redis) = Redis::start() else {
        return;
    };
    let up = FakeUpstream::start(UpstreamConfig::default()).await;
    let toml = replica_toml(&redis.url(), "", &up, "", "max_connections_per_user = 3");
    let a = spawn_postern(&toml).await;
    up.wait_probe().await;
    let mut c = login(&a).await;
    assert!(send(&mut c).await.starts_with("250"), "a first message");
    // The second transaction is in its DATA when Redis goes away.
    assert!(
        c.cmd("MAIL FROM:<dev@example.com>")
            .await
            .starts_with("250")
    );
    assert!(c.cmd("RCPT TO:<to@example.net>").await.starts_with("250"));
    assert!(c.cmd("DATA").await.starts_with("354"));
    c.send(b"Subject: t\r\n\r\nwritten while Redis goes away\r\n")
        .await;
    let closed_before = up.closed_connections();
    redis.kill();
    // lease_ttl = 3s: renewed every second; the user's lease and the
    // provider connection's lease are both lost at the next renewal.
    let lost = "postern_cluster_leases_lost_total";
    let deadline = Instant::now() + Duration::from_secs(10);
    while a.metric(lost).await < 2.0 {
        assert!(Instant::now() < deadline, "no lease was marked lost");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        up.closed_connections(),
        closed_before,
        "the connection stays while its transaction runs"
    );
    let end = c.cmd(".").await;
    assert!(end.starts_with("250"), "the transaction completes: {end:?}");
    assert_eq!(up.wait_messages(2, Duration::from_secs(5)).await.len(), 2);
    // Then the provider connection closes rather than going back to the pool.
    up.wait_until(
        "the provider connection to close",
        Duration::from_secs(5),
        |u| u.closed_connections() > closed_before,
    )
    .await;
    // And the session, whose user slot may be another replica's by now,
    // ends at its next transaction.
    let next = c.cmd("MAIL FROM:<dev@example.com>").await;
    assert!(next.starts_with("421 4.3.0"), "{next:?}");
    assert!(c.closed().await);
    // A new session is counted locally (on_redis_error = "local") and relays.
    let mut d = login(&a).await;
    assert!(send(&mut d).await.starts_with("250"));
    assert_eq!(up.wait_messages(3, Duration::from_secs(5)).await.len(), 3);
}

#[tokio::test]
async fn mail_takes_the_users_lease_and_message_rate_together_and_a_refused_lease_takes_no_message()
{
    let Some(redis) = Redis::start() else { return };
    let up = FakeUpstream::start(UpstreamConfig::default()).await;
    let limits = "max_connections_per_user = 1\nmessages_per_minute = 3";
    let toml = trusted(&replica_toml(&redis.url(), "", &up, "", limits));
    let a = spawn_postern(&toml).await;
    let b = spawn_postern(&toml).await;
    // A's session holds the user's one slot, taken at its MAIL.
    let mut ca = greeted(&a).await;
    assert!(send(&mut ca).await.starts_with("250"));
    // B's session is refused the slot at MAIL, and the message it would
    // have sent is not taken from the rate.
    let mut cb = greeted(&b).await;
    let refused = cb.cmd("MAIL FROM:<dev@example.com>").await;
    assert!(refused.starts_with("421 4.7.0"), "{refused:?}");
    assert!(cb.closed().await);
    // A's slot is given back when its session ends (with the next decision,
    // or alone within a few ms): B's next session has it at once.
    assert!(ca.cmd("QUIT").await.starts_with("221"));
    assert!(ca.closed().await);
    let started = Instant::now();
    let mut replies = Vec::new();
    loop {
        let mut cb = greeted(&b).await;
        let r = send(&mut cb).await;
        if !r.starts_with("421") {
            replies.push(r);
            replies.push(send(&mut cb).await);
            replies.push(send(&mut cb).await);
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "A's slot was not given back: {r:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // 3 a minute: A's one, then two of B's; the refused MAIL took none.
    assert!(replies[0].starts_with("250"), "{replies:#?}");
    assert!(replies[1].starts_with("250"), "{replies:#?}");
    assert!(replies[2].starts_with("450 4.7.1"), "{replies:#?}");
    for p in [&a, &b] {
        for d in ["message_rate", "user_connections"] {
            let fell_back = format!("postern_cluster_fallback_total{{decision=\"{d}\"}}");
            assert_eq!(p.metric(&fell_back).await, 0.0, "{d}");
        }
    }
}

#[tokio::test]
async fn recipients_per_hour_is_shared_and_a_unit_taken_at_mail_comes_back_unused() {
    let Some(redis) = Redis::start() else { return };
    let up = FakeUpstream::start(UpstreamConfig::default()).await;
    let toml = replica_toml(&redis.url(), "", &up, "", "recipients_per_hour = 3");
    let a = spawn_postern(&toml).await;
    let b = spawn_postern(&toml).await;
    let (mut ca, mut cb) = (login(&a).await, login(&b).await);
    // Each MAIL takes the first RCPT's unit ahead, in its own round trip;
    // a transaction that ends without a RCPT gives it back.
    for i in 0..4 {
        let c = if i % 2 == 0 { &mut ca } else { &mut cb };
        assert!(
            c.cmd("MAIL FROM:<dev@example.com>")
                .await
                .starts_with("250")
        );
        assert!(c.cmd("RSET").await.starts_with("250"));
    }
    let mut replies = Vec::new();
    for i in 0..3 {
        let c = if i % 2 == 0 { &mut ca } else { &mut cb };
        replies.push(send(c).await);
    }
    assert!(replies.iter().all(|r| r.starts_with("250")), "{replies:#?}");
    // The fourth recipient is over the shared 3 an hour (each replica alone
    // allows 3): its MAIL is accepted, its RCPT refused.
    assert!(
        cb.cmd("MAIL FROM:<dev@example.com>")
            .await
            .starts_with("250")
    );
    let over = cb.cmd("RCPT TO:<to@example.net>").await;
    assert!(over.starts_with("450 4.7.1"), "{over:?}");
    assert_eq!(up.wait_messages(3, Duration::from_secs(5)).await.len(), 3);
    for p in [&a, &b] {
        let fell_back = "postern_cluster_fallback_total{decision=\"recipient_rate\"}";
        assert_eq!(p.metric(fell_back).await, 0.0);
    }
}

#[tokio::test]
async fn a_replica_stopped_gracefully_gives_its_provider_slot_back_at_once() {
    let Some(redis) = Redis::start() else { return };
    let up = FakeUpstream::start(UpstreamConfig::default()).await;
    let upstream = "max_connections = 1\npool_wait = \"20s\"\n";
    let toml = replica_toml(&redis.url(), "", &up, upstream, "");
    // Replica A, a process: its one pooled provider connection holds the
    // only slot, idle, when A gets SIGTERM.
    let (mut a, a_addr, _dir) = support::cluster::spawn_process(&toml).await;
    let mut c = Raw::connect(a_addr).await;
    assert!(c.reply().await.starts_with("220 "));
    assert!(c.cmd("EHLO client.test").await.starts_with("250"));
    let token = B64.encode(format!("\0dev\0{PASSWORD}"));
    assert!(
        c.cmd(&format!("AUTH PLAIN {token}"))
            .await
            .starts_with("235")
    );
    assert!(send(&mut c).await.starts_with("250"));
    assert!(c.cmd("QUIT").await.starts_with("221"));
    let pid = a.id().to_string();
    let term = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status();
    assert!(term.is_ok_and(|s| s.success()));
    let _ = a.wait();
    // lease_ttl = 3s: B has the slot well before A's lease would expire.
    let b = spawn_postern(&toml).await;
    let mut cb = login(&b).await;
    let started = Instant::now();
    let r = send(&mut cb).await;
    assert!(r.starts_with("250"), "{r:?}");
    let took = started.elapsed();
    assert!(
        took < Duration::from_millis(1500),
        "B waited {took:?} for the slot"
    );
}
