//! `delivery = "fallback"`: relayed as in relay mode while the provider takes
//! the message; spooled (and answered `250 Queued as`) when it cannot take it
//! now: unreachable, pool wait exceeded, connection lost, any 4xx — at MAIL,
//! at RCPT (for that recipient), at DATA or after the body. A 5xx is passed back.

mod support;

use std::time::Duration;

use support::memory_upstream::MemoryUpstream;
use support::spool::*;
use support::transcript::Server;

const FALLBACK: &str = "delivery = \"fallback\"";

fn entries(s: &Server) -> Vec<serde_json::Value> {
    let dir = spool_dir(s).join("queue");
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "json") {
            out.push(serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap());
        }
    }
    out
}

fn recipients(entry: &serde_json::Value) -> Vec<String> {
    entry["recipients"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["address"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(start_paused = true)]
async fn a_provider_that_takes_the_message_hears_it_relayed() {
    let up = MemoryUpstream::default();
    let s = server(&up, "", FALLBACK);
    let mut t = logged_in(&s).await;
    let r = send(&mut t, &["you@example.net"], "relayed").await;
    assert!(r.starts_with("250 2.0.0 upstream mem:"), "{r}");
    assert_eq!(up.messages().len(), 1);
    assert!(entries(&s).is_empty());
    // The copy kept while it streamed is gone.
    assert_eq!(count(&spool_dir(&s).join("tmp"), ""), 0);
    assert_eq!(
        s.metric("postern_messages_total{result=\"accepted\",user=\"dev\"}"),
        1.0
    );
}

#[tokio::test(start_paused = true)]
async fn an_unreachable_provider_means_spooled_then_delivered() {
    let up = MemoryUpstream::default();
    up.set_down(true);
    let s = server(&up, "", FALLBACK);
    let mut t = logged_in(&s).await;
    let id = queued_id(&send(&mut t, &["you@example.net"], "later").await);
    assert_eq!(entries(&s).len(), 1);
    up.set_down(false);
    until(Duration::from_secs(120), || up.messages().len() == 1).await;
    assert!(String::from_utf8_lossy(&up.messages()[0].data).contains("later"));
    until(Duration::from_secs(5), || {
        !spool_dir(&s).join(format!("queue/{id}.json")).exists()
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn a_4xx_to_mail_spools_the_message() {
    let up = MemoryUpstream::default();
    up.set_mail_reply(Some("451 4.7.1 sending quota exceeded"));
    let s = server(&up, "", FALLBACK);
    let mut t = logged_in(&s).await;
    queued_id(&send(&mut t, &["a@example.net", "b@example.net"], "x").await);
    let e = entries(&s);
    assert_eq!(e.len(), 1);
    assert_eq!(recipients(&e[0]), vec!["a@example.net", "b@example.net"]);
    up.set_mail_reply(None);
    until(Duration::from_secs(120), || up.messages().len() == 1).await;
    assert_eq!(up.messages()[0].to, vec!["a@example.net", "b@example.net"]);
}

#[tokio::test(start_paused = true)]
async fn a_4xx_recipient_is_spooled_and_the_others_relayed() {
    let up = MemoryUpstream::default();
    let s = server(&up, "", FALLBACK);
    let mut t = logged_in(&s).await;
    t.cmd("MAIL FROM:<scanner@example.com>", "250").await;
    t.cmd("RCPT TO:<ok@example.net>", "250 2.1.5 upstream mem:")
        .await;
    t.cmd(
        "RCPT TO:<busy@example.net>",
        "250 2.1.5 Recipient OK (queued",
    )
    .await;
    t.cmd("RCPT TO:<reject@example.net>", "550 5.1.1").await;
    t.cmd("DATA", "354").await;
    t.line("Subject: x\r\n\r\nbody\r\n.").await;
    let r = t.reply().await;
    assert!(r.starts_with("250 2.0.0 upstream mem:"), "{r}");
    let got = up.messages();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].to, vec!["ok@example.net"]);
    let e = entries(&s);
    assert_eq!(e.len(), 1, "{e:?}");
    assert_eq!(recipients(&e[0]), vec!["busy@example.net"]);
}

#[tokio::test(start_paused = true)]
async fn a_4xx_after_the_body_spools_it_for_everyone() {
    let up = MemoryUpstream::default();
    up.set_data_reply(Some("452 4.3.1 provider out of storage"));
    let s = server(&up, "", FALLBACK);
    let mut t = logged_in(&s).await;
    let id = queued_id(&send(&mut t, &["a@example.net", "b@example.net"], "big scan").await);
    let e = entries(&s);
    assert_eq!(recipients(&e[0]), vec!["a@example.net", "b@example.net"]);
    let eml = std::fs::read(spool_dir(&s).join(format!("queue/{id}.eml"))).unwrap();
    assert_eq!(eml, b"Subject: scan\r\n\r\nbig scan\r\n");
    up.set_data_reply(None);
    until(Duration::from_secs(120), || up.messages().len() == 1).await;
    assert_eq!(up.messages()[0].data, eml);
}

#[tokio::test(start_paused = true)]
async fn a_5xx_after_the_body_is_passed_back_and_nothing_is_kept() {
    let up = MemoryUpstream::default();
    up.set_data_reply(Some("554 5.7.1 message refused"));
    let s = server(&up, "", FALLBACK);
    let mut t = logged_in(&s).await;
    let r = send(&mut t, &["a@example.net"], "x").await;
    assert!(r.starts_with("554 5.7.1 upstream mem:"), "{r}");
    assert!(entries(&s).is_empty());
    assert_eq!(count(&spool_dir(&s).join("tmp"), ""), 0);
}

#[tokio::test(start_paused = true)]
async fn a_connection_lost_at_rcpt_spools_the_transaction() {
    let up = MemoryUpstream::default();
    let s = server(&up, "", FALLBACK);
    let mut t = logged_in(&s).await;
    t.cmd("MAIL FROM:<scanner@example.com>", "250").await;
    t.cmd("RCPT TO:<ok@example.net>", "250").await;
    t.cmd(
        "RCPT TO:<drop@example.net>",
        "250 2.1.5 Recipient OK (queued",
    )
    .await;
    // The provider is gone: the rest of the transaction is postern's.
    t.cmd("RCPT TO:<more@example.net>", "250").await;
    t.cmd("DATA", "354").await;
    t.line("Subject: x\r\n\r\nbody\r\n.").await;
    queued_id(&t.reply().await);
    let e = entries(&s);
    let mut rc = recipients(&e[0]);
    rc.sort();
    assert_eq!(
        rc,
        vec!["drop@example.net", "more@example.net", "ok@example.net"]
    );
}

#[tokio::test(start_paused = true)]
async fn pool_wait_exceeded_spools_instead_of_451() {
    let up = MemoryUpstream::default();
    let s = server(
        &up,
        "",
        &format!("{FALLBACK}\nmax_connections = 1\npool_wait = \"2s\""),
    );
    // One device holds the only connection in an open transaction.
    let mut a = logged_in(&s).await;
    a.cmd("MAIL FROM:<scanner@example.com>", "250").await;
    a.cmd("RCPT TO:<x@example.net>", "250").await;
    let mut b = logged_in(&s).await;
    queued_id(&send(&mut b, &["y@example.net"], "waited").await);
    assert_eq!(entries(&s).len(), 1);
    // The first finishes through the provider as usual.
    a.cmd("DATA", "354").await;
    a.line("Subject: a\r\n\r\nfirst\r\n.").await;
    a.expect("250 2.0.0 upstream mem:").await;
    a.cmd("QUIT", "221").await;
    until(Duration::from_secs(120), || up.messages().len() == 2).await;
}
