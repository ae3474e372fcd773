//! BDAT from the device into the durable spool (`delivery = "spool"`): the
//! `LAST` chunk is answered only once the message is durable, and the message
//! the provider gets later is the device's content, byte for byte.

mod support;

use std::time::Duration;

use support::memory_upstream::MemoryUpstream;
use support::spool::*;

#[tokio::test(start_paused = true)]
async fn a_message_in_bdat_chunks_is_spooled_then_delivered_byte_exact() {
    let up = MemoryUpstream::default();
    up.set_down(true);
    let s = server(&up, "", "delivery = \"spool\"");
    let mut t = logged_in(&s).await;
    t.cmd("MAIL FROM:<scanner@example.com>", "250").await;
    t.cmd("RCPT TO:<you@example.net>", "250").await;
    let first: &[u8] = b"Subject: s\r\n\r\n.\r\n..x";
    let last: &[u8] = b"\r\nend\r\n";
    t.send(format!("BDAT {}\r\n", first.len()).as_bytes()).await;
    t.send(first).await;
    t.expect("250 2.0.0 20 octets received").await;
    t.send(format!("BDAT {} LAST\r\n", last.len()).as_bytes())
        .await;
    t.send(last).await;
    let id = queued_id(&t.reply().await);
    t.cmd("QUIT", "221").await;
    let content = [first, last].concat();
    let eml = std::fs::read(spool_dir(&s).join(format!("queue/{id}.eml"))).unwrap();
    assert!(
        eml.ends_with(&content),
        "{:?}",
        String::from_utf8_lossy(&eml)
    );
    assert_eq!(
        s.metric("postern_messages_total{result=\"spooled\",user=\"dev\"}"),
        1.0
    );
    up.set_down(false);
    until(Duration::from_secs(200), || !up.messages().is_empty()).await;
    let got = up.messages();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].to, vec!["you@example.net"]);
    // The in-memory provider records DATA as it came: dot-stuffed.
    let stuffed: &[u8] = b"Subject: s\r\n\r\n..\r\n...x\r\nend\r\n";
    assert!(
        got[0].data.ends_with(stuffed),
        "{:?}",
        String::from_utf8_lossy(&got[0].data)
    );
}
