//! The AUTH queue (`[server] auth_workers`, `auth_queue`): when every worker
//! is busy and the queue is full, an AUTH is answered 454 4.7.0 without a
//! password check, for a known user with the right password and an unknown
//! one alike, counted as `result="busy"` (the reply held back for
//! `auth::pool::busy_delay()`); once the checks drain, AUTH works
//! again. Deterministic: the places are held by checks against a deliberately
//! slow hash, and the test waits for the queue gauge before it asks.

mod support;

use std::time::Duration;

use argon2::password_hash::PasswordHasher;
use argon2::{Algorithm, Argon2, Params, Version};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;

use support::postern::{Postern, Raw, spawn_postern};
use support::relay::{PASSWORD, password_hash, relay_config};
use support::upstream::{FakeUpstream, UpstreamConfig};

/// An argon2id hash of `PASSWORD` that takes seconds to check (16 MiB, 200
/// passes), so two of them hold the pool while the test asks.
fn slow_hash() -> String {
    let params = Params::new(16 * 1024, 200, 1, None).expect("params");
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
        .hash_password(PASSWORD.as_bytes())
        .expect("hash")
        .to_string()
}

fn plain(user: &str, password: &str) -> String {
    format!("AUTH PLAIN {}", B64.encode(format!("\0{user}\0{password}")))
}

async fn greeted(p: &Postern) -> Raw {
    let mut c = Raw::connect(p.addr("smtp")).await;
    assert!(c.reply().await.starts_with("220 "));
    assert!(c.cmd("EHLO client.test").await.starts_with("250"));
    c
}

async fn wait_metric(p: &Postern, sample: &str, want: f64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let got = p.metric(sample).await;
        if got == want {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{sample} stayed {got}, expected {want}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_answers_454_unchecked_for_known_and_unknown_users() {
    let up = FakeUpstream::start(UpstreamConfig::default()).await;
    let users = format!(
        "[[user]]\nname = \"slow\"\npassword_hash = \"{}\"\nallowed_senders = [\"*\"]\n\n\
         [[user]]\nname = \"dev\"\npassword_hash = \"{}\"\nallowed_senders = [\"*\"]\n",
        slow_hash(),
        password_hash()
    );
    let toml = format!(
        "[server]\nauth_workers = 1\nauth_queue = 1\nauth_cache_ttl = 0\n\n{}",
        relay_config(&up, &users)
    );
    let p = spawn_postern(&toml).await;
    up.wait_probe().await;

    // One check running, one waiting: the pool (1 worker + 1 queued) is full.
    let mut running = greeted(&p).await;
    running
        .send(format!("{}\r\n", plain("slow", PASSWORD)).as_bytes())
        .await;
    wait_metric(&p, "postern_auth_checks_queued", 1.0).await;
    let mut waiting = greeted(&p).await;
    waiting
        .send(format!("{}\r\n", plain("slow", PASSWORD)).as_bytes())
        .await;
    wait_metric(&p, "postern_auth_checks_queued", 2.0).await;

    // A known user with the right password and an unknown user: the same
    // temporary failure, and nothing checked (the gauge never goes past 2).
    let mut known = greeted(&p).await;
    let mut unknown = greeted(&p).await;
    known
        .send(format!("{}\r\n", plain("dev", PASSWORD)).as_bytes())
        .await;
    unknown
        .send(format!("{}\r\n", plain("nobody", "guess")).as_bytes())
        .await;
    // Refused on arrival (counted then), answered after `busy_delay()`.
    wait_metric(
        &p,
        "postern_auth_attempts_total{mechanism=\"plain\",result=\"busy\"}",
        2.0,
    )
    .await;
    assert_eq!(p.metric("postern_auth_checks_queued").await, 2.0);
    let busy_known = known.reply().await;
    let busy_unknown = unknown.reply().await;
    assert!(busy_known.starts_with("454 4.7.0 "), "{busy_known}");
    assert_eq!(busy_known, busy_unknown, "no hint which names exist");

    // The queued checks finish in order, and are not failures.
    assert!(running.reply().await.starts_with("235 "));
    assert!(waiting.reply().await.starts_with("235 "));
    wait_metric(&p, "postern_auth_checks_queued", 0.0).await;
    assert_eq!(
        p.metric("postern_auth_attempts_total{mechanism=\"plain\",result=\"fail\"}")
            .await,
        0.0
    );

    // A busy answer is temporary: the same sessions may AUTH again now.
    assert!(known.cmd(&plain("dev", PASSWORD)).await.starts_with("235 "));
    assert!(
        unknown
            .cmd(&plain("nobody", "guess"))
            .await
            .starts_with("535 5.7.8 ")
    );
}
