//! The two pool defects of issue 12, item 9, in paused time against the
//! in-memory provider: a kept connection the provider closed at its idle cut
//! with a `421` is not used for the next message, and the health probe never
//! takes the provider's connections over `max_connections`; and the fair
//! share: one user holding `max_upstream_connections_per_user` provider
//! connections leaves the rest to other users.

mod support;

use std::time::Duration;

use support::memory_upstream::MemoryUpstream;
use support::spool::{logged_in, send};
use support::transcript::Server;

fn relay_server(up: &MemoryUpstream, keys: &str) -> Server {
    // The spool helpers' config, in relay mode.
    let s = Server::build(&support::spool::config("", keys), up.connector());
    s.state.shared.policy().start_upstreams();
    s
}

#[tokio::test(start_paused = true)]
async fn a_421_at_the_providers_idle_cut_does_not_fail_the_next_message() {
    let up = MemoryUpstream::default();
    // The provider cuts at 10 s; postern would keep the connection 25 s.
    up.set_idle_cut(Some(Duration::from_secs(10)));
    let s = relay_server(&up, "health_check_interval = \"0s\"");
    let mut t = logged_in(&s).await;
    let r = send(&mut t, &["a@example.net"], "one").await;
    assert!(r.starts_with("250 2.0.0 upstream mem:"), "{r}");
    t.cmd("QUIT", "221").await;
    let before = up.connections();
    tokio::time::sleep(Duration::from_secs(15)).await;
    let mut t = logged_in(&s).await;
    let r = send(&mut t, &["b@example.net"], "two").await;
    assert!(r.starts_with("250 2.0.0 upstream mem:"), "{r}");
    assert_eq!(up.messages().len(), 2);
    assert_eq!(
        up.connections(),
        before + 1,
        "the cut connection was replaced, once"
    );
}

#[tokio::test(start_paused = true)]
async fn the_health_probe_stays_within_max_connections_when_the_pool_is_full() {
    let up = MemoryUpstream::default();
    let s = relay_server(
        &up,
        "max_connections = 2\nmax_upstream_connections_per_user = 2\nhealth_check_interval = \"2s\"\nidle_timeout = \"60s\"",
    );
    // Two sessions at once fill the pool; both connections then wait idle.
    let mut a = logged_in(&s).await;
    let mut b = logged_in(&s).await;
    a.cmd("MAIL FROM:<scanner@example.com>", "250").await;
    b.cmd("MAIL FROM:<scanner@example.com>", "250").await;
    for t in [&mut a, &mut b] {
        t.cmd("RCPT TO:<x@example.net>", "250").await;
        t.cmd("DATA", "354").await;
        t.line("Subject: x\r\n\r\nx\r\n.").await;
        t.expect("250").await;
        t.cmd("QUIT", "221").await;
    }
    assert_eq!(up.peak_connections(), 2);
    let opened = up.connections();
    // Several probe rounds against a pool full of idle connections.
    tokio::time::sleep(Duration::from_secs(11)).await;
    assert!(up.connections() > opened, "the probe ran");
    assert!(
        up.peak_connections() <= 2,
        "peak {} connections against a cap of 2",
        up.peak_connections()
    );
}

#[tokio::test(start_paused = true)]
async fn one_user_holding_its_share_does_not_starve_another() {
    use base64::Engine as _;
    let up = MemoryUpstream::default();
    let toml = format!(
        "{}\n[[user]]\nname = \"other\"\npassword_hash = \"{}\"\nallowed_senders = [\"*@example.com\"]\n",
        support::spool::config(
            "",
            "max_connections = 4\nmax_upstream_connections_per_user = 2\npool_wait = \"2s\"\nhealth_check_interval = \"0s\""
        ),
        support::spool::hash()
    );
    let s = Server::build(&toml, up.connector());
    // "dev" holds two slow transactions: its share.
    let mut slow = Vec::new();
    for _ in 0..2 {
        let mut t = logged_in(&s).await;
        t.cmd("MAIL FROM:<scanner@example.com>", "250").await;
        t.cmd("RCPT TO:<x@example.net>", "250").await;
        t.cmd("DATA", "354").await;
        t.line("Subject: slow").await;
        slow.push(t);
    }
    // A third transaction of the same user waits pool_wait, then 451 4.4.5.
    let mut third = logged_in(&s).await;
    third
        .cmd("MAIL FROM:<scanner@example.com>", "451 4.4.5")
        .await;
    // Another user still relays: the provider has slots left for it.
    let mut other = s.connect();
    other.expect("220").await;
    other.cmd("EHLO cam", "250").await;
    let auth = base64::engine::general_purpose::STANDARD
        .encode(format!("\0other\0{}", support::spool::PASSWORD));
    other.cmd(&format!("AUTH PLAIN {auth}"), "235").await;
    let r = send(&mut other, &["y@example.net"], "alarm").await;
    assert!(r.starts_with("250 2.0.0 upstream mem:"), "{r}");
    // One refusal, one limit hit: the user's share, not also the pool's cap.
    assert_eq!(
        s.metric("postern_limit_hits_total{limit=\"upstream_connections_per_user\",upstream=\"mem\",user=\"dev\"}"),
        1.0
    );
    let all_hits: f64 = s
        .metrics()
        .lines()
        .filter(|l| l.starts_with("postern_limit_hits_total{") && l.contains("user=\"dev\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert_eq!(all_hits, 1.0, "{}", s.metrics());
    // The slow ones finish normally.
    for t in &mut slow {
        t.line("\r\nbody\r\n.").await;
        t.expect("250").await;
    }
    assert_eq!(up.messages().len(), 3);
}
