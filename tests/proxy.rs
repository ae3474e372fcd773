//! The PROXY protocol on a listener behind a load balancer: the address in the
//! header is the client's for trusted networks and limits; connections without
//! a header, or from sources not in `proxy_from`, are closed unanswered.

mod support;

use support::postern::{Postern, Raw, outbox_toml, spawn_postern};

async fn start(proxy_from: &str) -> Postern {
    spawn_postern(&format!(
        r#"
[[listener]]
name = "lb"
addr = "127.0.0.1:0"
auth = "optional"
proxy_protocol = true
proxy_from = [{proxy_from}]
[metrics]
addr = "127.0.0.1:0"
{outbox}
[[user]]
name = "printer"
networks = ["192.168.10.23/32", "2001:db8:10::23/128"]
allowed_senders = ["*@example.com"]
"#,
        outbox = outbox_toml()
    ))
    .await
}

fn v2_tcp4(src: [u8; 4], sport: u16) -> Vec<u8> {
    let mut h = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    h.extend_from_slice(&[0x21, 0x11, 0, 12]);
    h.extend_from_slice(&src);
    h.extend_from_slice(&[10, 0, 0, 1]);
    h.extend_from_slice(&sport.to_be_bytes());
    h.extend_from_slice(&25u16.to_be_bytes());
    h
}

/// After the header: the trusted printer sends without AUTH.
async fn sends_without_auth(c: &mut Raw) {
    assert_eq!(c.code().await, 220);
    assert!(c.cmd("HELO printer").await.starts_with("250"));
    let r = c.cmd("MAIL FROM:<scan@example.com>").await;
    assert!(r.starts_with("250"), "{r}");
    assert!(c.cmd("RCPT TO:<x@example.net>").await.starts_with("250"));
    assert!(c.cmd("DATA").await.starts_with("354"));
    assert!(
        c.cmd("Subject: scan\r\n\r\npage\r\n.")
            .await
            .starts_with("250")
    );
    c.cmd("QUIT").await;
}

#[tokio::test]
async fn v1_header_gives_the_clients_address() {
    let p = start("\"127.0.0.1/32\"").await;
    let mut c = Raw::connect(p.addr("lb")).await;
    c.send(b"PROXY TCP4 192.168.10.23 10.0.0.1 40000 25\r\n")
        .await;
    sends_without_auth(&mut c).await;
    // Header and the first command in one write: the command is not swallowed.
    let mut c = Raw::connect(p.addr("lb")).await;
    c.send(b"PROXY TCP6 2001:db8:10::23 2001:db8::1 5000 25\r\nNOOP\r\n")
        .await;
    assert_eq!(c.code().await, 220);
    assert_eq!(c.code().await, 250);
    c.cmd("QUIT").await;
    assert_eq!(p.files("outbox", "eml").len(), 1);
    p.stop().await;
}

#[tokio::test]
async fn v2_header_gives_the_clients_address() {
    let p = start("\"127.0.0.1/32\"").await;
    let mut c = Raw::connect(p.addr("lb")).await;
    c.send(&v2_tcp4([192, 168, 10, 23], 40000)).await;
    sends_without_auth(&mut c).await;
    assert_eq!(p.files("outbox", "eml").len(), 1);
    p.stop().await;
}

#[tokio::test]
async fn an_address_outside_every_network_must_auth() {
    let p = start("\"127.0.0.1/32\"").await;
    let mut c = Raw::connect(p.addr("lb")).await;
    c.send(b"PROXY TCP4 192.168.10.99 10.0.0.1 40000 25\r\n")
        .await;
    assert_eq!(c.code().await, 220);
    c.cmd("HELO other").await;
    let r = c.cmd("MAIL FROM:<scan@example.com>").await;
    assert!(r.starts_with("530 5.7.0"), "{r}");
    c.cmd("QUIT").await;
    p.stop().await;
}

#[tokio::test]
async fn no_header_or_an_untrusted_source_is_closed_unanswered() {
    let p = start("\"127.0.0.1/32\"").await;
    let mut c = Raw::connect(p.addr("lb")).await;
    c.send(b"EHLO sneaky.example\r\n").await;
    assert!(c.closed().await);
    assert_eq!(
        p.metric("postern_connections_rejected_total{listener=\"lb\",reason=\"proxy_header\"}")
            .await,
        1.0
    );
    p.stop().await;

    let p = start("\"10.0.0.0/8\"").await;
    let mut c = Raw::connect(p.addr("lb")).await;
    c.send(b"PROXY TCP4 192.168.10.23 10.0.0.1 40000 25\r\n")
        .await;
    assert!(c.closed().await);
    assert_eq!(
        p.metric("postern_connections_rejected_total{listener=\"lb\",reason=\"proxy_source\"}")
            .await,
        1.0
    );
    p.stop().await;
}

/// A connection still owing its header when a shutdown's grace ends is
/// closed with the sessions, not left to the header's own 5 s timeout (which
/// would close it as a bad header, long after postern said it had stopped).
#[tokio::test]
async fn the_end_of_a_shutdowns_grace_closes_a_connection_owing_its_header() {
    let log = support::observe::Capture::default();
    let _guard = log.install(postern::config::LogFormat::Text);
    let p = spawn_postern(&format!(
        r#"
[server]
shutdown_grace = "0s"
[[listener]]
name = "lb"
addr = "127.0.0.1:0"
auth = "optional"
proxy_protocol = true
proxy_from = ["127.0.0.1/32"]
{outbox}
"#,
        outbox = outbox_toml()
    ))
    .await;
    let mut c = Raw::connect(p.addr("lb")).await;
    c.send(b"PROXY TCP4 192.168.").await;
    p.stop().await;
    assert!(c.closed().await);
    let text = log.text();
    assert!(text.contains("shutdown grace expired"), "{text}");
    assert!(!text.contains("bad PROXY header"), "{text}");
}
