//! Failover to `fallback = [...]` upstreams and the providers' daily quotas
//! (`messages_per_day`, `recipients_per_day`), in each delivery mode, against
//! two in-memory providers told apart by address, in paused time.

mod support;

use std::time::Duration;

use support::memory_upstream::{ByAddr, MemoryUpstream};
use support::spool::*;
use support::transcript::Server;

/// "mem" (provider.test:25, with `mem_keys`) and "backup" (backup.test:25).
fn two_upstreams(primary: &MemoryUpstream, backup: &MemoryUpstream, mem_keys: &str) -> Server {
    two_upstreams_with(primary, backup, mem_keys, "")
}

/// As `two_upstreams`, with `backup_keys` added to "backup".
fn two_upstreams_with(
    primary: &MemoryUpstream,
    backup: &MemoryUpstream,
    mem_keys: &str,
    backup_keys: &str,
) -> Server {
    let toml = format!(
        "{}\n[[upstream]]\nname = \"backup\"\nkind = \"smtp\"\naddr = \"backup.test:25\"\n\
         tls = \"none\"\nusername = \"backup-user\"\npassword = \"backup-secret\"\n{backup_keys}\n",
        config("", mem_keys).replace(
            "allowed_senders = [\"*@example.com\"]",
            "allowed_senders = [\"*@example.com\"]\nupstream = \"mem\"",
        )
    );
    let connector = ByAddr::default()
        .with("provider.test:25", primary)
        .with("backup.test:25", backup)
        .connector();
    let s = Server::build(&toml, connector);
    s.state.shared.policy().start_upstreams();
    s
}

fn one_upstream(up: &MemoryUpstream, keys: &str) -> Server {
    server(up, "", keys)
}

const FAILOVERS: &str = "postern_upstream_failovers_total{fallback=\"backup\",upstream=\"mem\"}";

#[tokio::test(start_paused = true)]
async fn relay_mode_fails_over_to_the_backup_when_the_provider_is_down() {
    let (primary, backup) = (MemoryUpstream::default(), MemoryUpstream::default());
    primary.set_down(true);
    let s = two_upstreams(&primary, &backup, "fallback = [\"backup\"]");
    let mut t = logged_in(&s).await;
    let r = send(&mut t, &["you@example.net"], "via backup").await;
    assert!(r.starts_with("250 "), "{r}");
    assert!(primary.messages().is_empty());
    let got = backup.messages();
    assert_eq!(got.len(), 1);
    assert!(String::from_utf8_lossy(&got[0].data).contains("via backup"));
    assert_eq!(s.metric(FAILOVERS), 1.0);
    // The provider is back: the next message goes to it again.
    primary.set_down(false);
    let r = send(&mut t, &["you@example.net"], "via provider").await;
    assert!(r.starts_with("250 "), "{r}");
    assert_eq!(primary.messages().len(), 1);
    assert_eq!(backup.messages().len(), 1);
    assert_eq!(s.metric(FAILOVERS), 1.0);
}

#[tokio::test(start_paused = true)]
async fn refused_provider_credentials_fail_over_too() {
    let (primary, backup) = (MemoryUpstream::default(), MemoryUpstream::default());
    primary.refuse_auth(true);
    let s = two_upstreams(&primary, &backup, "fallback = [\"backup\"]");
    let mut t = logged_in(&s).await;
    let r = send(&mut t, &["you@example.net"], "x").await;
    assert!(r.starts_with("250 "), "{r}");
    assert_eq!(backup.messages().len(), 1);
    assert!(primary.messages().is_empty());
}

#[tokio::test(start_paused = true)]
async fn with_every_upstream_down_relay_mode_still_answers_4xx() {
    let (primary, backup) = (MemoryUpstream::default(), MemoryUpstream::default());
    primary.set_down(true);
    backup.set_down(true);
    let s = two_upstreams(&primary, &backup, "fallback = [\"backup\"]");
    let mut t = logged_in(&s).await;
    let r = t.cmd("MAIL FROM:<scanner@example.com>", "4").await;
    assert!(r.starts_with("451 "), "{r}");
    assert_eq!(s.metric(FAILOVERS), 0.0);
}

#[tokio::test(start_paused = true)]
async fn without_fallback_no_backup_is_used() {
    let (primary, backup) = (MemoryUpstream::default(), MemoryUpstream::default());
    primary.set_down(true);
    let s = two_upstreams(&primary, &backup, "");
    let mut t = logged_in(&s).await;
    t.cmd("MAIL FROM:<scanner@example.com>", "451").await;
    assert!(backup.messages().is_empty());
    // (It was probed at start, as every upstream is; it carried no mail.)
    assert_eq!(backup.transactions(), 0);
}

#[tokio::test(start_paused = true)]
async fn spool_workers_fail_over_as_well() {
    let (primary, backup) = (MemoryUpstream::default(), MemoryUpstream::default());
    primary.set_down(true);
    let s = two_upstreams(
        &primary,
        &backup,
        "delivery = \"spool\"\nfallback = [\"backup\"]",
    );
    let mut t = logged_in(&s).await;
    queued_id(&send(&mut t, &["you@example.net"], "spooled, via backup").await);
    until(Duration::from_secs(60), || backup.messages().len() == 1).await;
    assert!(primary.messages().is_empty());
    assert!(s.metric(FAILOVERS) >= 1.0);
}

#[tokio::test(start_paused = true)]
async fn relay_mode_refuses_over_the_daily_message_quota_with_the_wait() {
    let up = MemoryUpstream::default();
    let s = one_upstream(&up, "messages_per_day = 2");
    let mut t = logged_in(&s).await;
    for _ in 0..2 {
        let r = send(&mut t, &["you@example.net"], "x").await;
        assert!(r.starts_with("250 "), "{r}");
    }
    let r = t.cmd("MAIL FROM:<scanner@example.com>", "451 4.7.1").await;
    assert!(
        r.contains("messages_per_day") && r.contains("retry in"),
        "{r}"
    );
    assert_eq!(up.messages().len(), 2);
    assert_eq!(
        s.metric(
            "postern_limit_hits_total{limit=\"messages_per_day\",upstream=\"mem\",user=\"dev\"}"
        ),
        1.0
    );
    // Two a day: one more every twelve hours.
    tokio::time::advance(Duration::from_secs(12 * 3600)).await;
    let mut t = logged_in(&s).await;
    let r = send(&mut t, &["you@example.net"], "x").await;
    assert!(r.starts_with("250 "), "{r}");
    assert_eq!(up.messages().len(), 3);
}

#[tokio::test(start_paused = true)]
async fn relay_mode_refuses_a_recipient_over_the_daily_recipient_quota() {
    let up = MemoryUpstream::default();
    let s = one_upstream(&up, "recipients_per_day = 3");
    let mut t = logged_in(&s).await;
    t.cmd("MAIL FROM:<scanner@example.com>", "250").await;
    for r in ["a", "b", "c"] {
        t.cmd(&format!("RCPT TO:<{r}@example.net>"), "250").await;
    }
    let r = t.cmd("RCPT TO:<d@example.net>", "451 4.7.1").await;
    assert!(r.contains("recipients_per_day"), "{r}");
    t.cmd("DATA", "354").await;
    t.line("Subject: q\r\n\r\nbody\r\n.").await;
    let r = t.reply().await;
    assert!(r.starts_with("250 "), "{r}");
    assert_eq!(up.messages()[0].to.len(), 3);
}

#[tokio::test(start_paused = true)]
async fn spool_mode_holds_mail_over_the_quota_until_the_window_allows() {
    let up = MemoryUpstream::default();
    let s = one_upstream(&up, "delivery = \"spool\"\nmessages_per_day = 1");
    let mut t = logged_in(&s).await;
    queued_id(&send(&mut t, &["a@example.net"], "first").await);
    queued_id(&send(&mut t, &["b@example.net"], "second").await);
    until(Duration::from_secs(30), || up.messages().len() == 1).await;
    // Well past the retry delays, the second still waits for the quota.
    tokio::time::sleep(Duration::from_secs(3600)).await;
    assert_eq!(up.messages().len(), 1);
    let waiting = queue(&s, &["list"]).await.unwrap();
    assert!(waiting.contains("messages_per_day"), "{waiting}");
    // A day after the first, it goes.
    until(Duration::from_secs(24 * 3600), || up.messages().len() == 2).await;
    assert!(String::from_utf8_lossy(&up.messages()[1].data).contains("second"));
}

#[tokio::test(start_paused = true)]
async fn fallback_mode_spools_what_is_over_the_quota() {
    let up = MemoryUpstream::default();
    let s = one_upstream(&up, "delivery = \"fallback\"\nmessages_per_day = 1");
    let mut t = logged_in(&s).await;
    let r = send(&mut t, &["a@example.net"], "relayed").await;
    assert!(r.starts_with("250 2.0.0 upstream mem:"), "{r}");
    let r = send(&mut t, &["b@example.net"], "spooled").await;
    queued_id(&r);
    tokio::time::sleep(Duration::from_secs(600)).await;
    assert_eq!(up.messages().len(), 1);
    until(Duration::from_secs(24 * 3600), || up.messages().len() == 2).await;
}

#[tokio::test(start_paused = true)]
async fn a_reload_with_the_same_quota_does_not_grant_a_second_day() {
    let up = MemoryUpstream::default();
    let keys = "messages_per_day = 1";
    let s = one_upstream(&up, keys);
    let mut t = logged_in(&s).await;
    let r = send(&mut t, &["a@example.net"], "x").await;
    assert!(r.starts_with("250 "), "{r}");
    let again = support::transcript::load(&config("", keys), s.dir.path(), &s.cert);
    s.reloader().reload(again).expect("reload");
    let mut t = logged_in(&s).await;
    t.cmd("MAIL FROM:<scanner@example.com>", "451 4.7.1").await;
    // A changed quota is a new one.
    let raised =
        support::transcript::load(&config("", "messages_per_day = 5"), s.dir.path(), &s.cert);
    s.reloader().reload(raised).expect("reload");
    let mut t = logged_in(&s).await;
    t.cmd("MAIL FROM:<scanner@example.com>", "250").await;
}

/// About 72 KiB of body, over a fallback's 64 KiB `max_message_size`.
fn big() -> String {
    format!("{}\r\n", "x".repeat(70)).repeat(1000)
}

#[tokio::test(start_paused = true)]
async fn spool_workers_keep_to_the_fallbacks_own_recipient_cap() {
    let (primary, backup) = (MemoryUpstream::default(), MemoryUpstream::default());
    primary.set_down(true);
    let s = two_upstreams_with(
        &primary,
        &backup,
        "delivery = \"spool\"\nfallback = [\"backup\"]\nmax_recipients = 5",
        "max_recipients = 2",
    );
    let mut t = logged_in(&s).await;
    let rcpts: Vec<String> = (1..=5).map(|i| format!("r{i}@example.net")).collect();
    let refs: Vec<&str> = rcpts.iter().map(String::as_str).collect();
    queued_id(&send(&mut t, &refs, "five").await);
    until(Duration::from_secs(30), || backup.messages().len() == 3).await;
    tokio::time::sleep(Duration::from_secs(60)).await;
    let got = backup.messages();
    assert_eq!(backup.transactions(), 3);
    assert!(got.iter().all(|m| m.to.len() <= 2), "{got:?}");
    let mut all: Vec<String> = got.iter().flat_map(|m| m.to.clone()).collect();
    all.sort();
    assert_eq!(all, rcpts);
    assert!(primary.messages().is_empty());
    assert_eq!(
        s.metric("postern_delivery_attempts_total{result=\"delivered\",upstream=\"mem\"}"),
        3.0
    );
}

#[tokio::test(start_paused = true)]
async fn spool_workers_do_not_send_a_fallback_more_than_its_max_message_size() {
    let (primary, backup) = (MemoryUpstream::default(), MemoryUpstream::default());
    primary.set_down(true);
    let s = two_upstreams_with(
        &primary,
        &backup,
        "delivery = \"spool\"\nfallback = [\"backup\"]",
        "max_message_size = \"64KiB\"",
    );
    let mut t = logged_in(&s).await;
    let id = queued_id(&send(&mut t, &["you@example.net"], &big()).await);
    let path = spool_dir(&s).join(format!("queue/{id}.json"));
    let last_error = || -> String {
        std::fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .and_then(|r| r["last_error"].as_str().map(str::to_owned))
            .unwrap_or_default()
    };
    until(Duration::from_secs(60), || !last_error().is_empty()).await;
    assert!(
        last_error().contains("max_message_size"),
        "{}",
        last_error()
    );
    assert!(
        s.metric("postern_delivery_attempts_total{result=\"deferred\",upstream=\"mem\"}") >= 1.0
    );
    assert!(backup.messages().is_empty());
    assert_eq!(backup.transactions(), 0);
    // The provider is back: it takes the message.
    primary.set_down(false);
    until(Duration::from_secs(600), || primary.messages().len() == 1).await;
    assert!(backup.messages().is_empty());
}

#[tokio::test(start_paused = true)]
async fn relay_mode_keeps_to_the_fallbacks_own_caps() {
    let (primary, backup) = (MemoryUpstream::default(), MemoryUpstream::default());
    primary.set_down(true);
    let s = two_upstreams_with(
        &primary,
        &backup,
        "fallback = [\"backup\"]",
        "max_recipients = 2\nmax_message_size = \"64KiB\"",
    );
    let mut t = logged_in(&s).await;
    // Recipients: the third is over the fallback's cap (RFC 5321: the client
    // sends it in another transaction).
    t.cmd("MAIL FROM:<scanner@example.com>", "250").await;
    t.cmd("RCPT TO:<a@example.net>", "250").await;
    t.cmd("RCPT TO:<b@example.net>", "250").await;
    t.cmd("RCPT TO:<c@example.net>", "452 4.5.3").await;
    t.cmd("DATA", "354").await;
    t.line("Subject: two\r\n\r\nshort\r\n.").await;
    t.expect("250").await;
    let got = backup.messages();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].to, vec!["a@example.net", "b@example.net"]);
    // A declared size over the fallback's cap: 451, the device tries later.
    t.cmd("MAIL FROM:<scanner@example.com> SIZE=70000", "451 4.4.1")
        .await;
    // An undeclared one: 451 at the end of data, nothing delivered.
    t.cmd("MAIL FROM:<scanner@example.com>", "250").await;
    t.cmd("RCPT TO:<a@example.net>", "250").await;
    t.cmd("DATA", "354").await;
    t.line(&format!("Subject: big\r\n\r\n{}\r\n.", big())).await;
    t.expect("451 4.4.1").await;
    assert_eq!(backup.messages().len(), 1);
    assert!(primary.messages().is_empty());
}
