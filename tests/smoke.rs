//! A first end-to-end check: AUTH, one message into the outbox, metrics.

mod support;

use support::postern::{Raw, spawn_postern};

const CONFIG: &str = r#"
[[listener]]
name = "local"
addr = "127.0.0.1:0"
[metrics]
addr = "127.0.0.1:0"
[[upstream]]
name = "outbox"
kind = "outbox"
dir = "{dir}/outbox"
[[user]]
name = "demo"
password_hash = "$argon2id$v=19$m=19456,t=2,p=1$HhmSndMIFnC36bhx5rvSWg$TMuz1DbDMcPtAQI96m13A463eNnAPsdTV9Vrt1TMUsY"
allowed_senders = ["*@example.com"]
"#;

#[tokio::test]
async fn raw_client_delivers_into_the_outbox() {
    let p = spawn_postern(CONFIG).await;
    let mut c = Raw::connect(p.addr("local")).await;
    assert_eq!(c.code().await, 220);
    assert!(c.cmd("EHLO t").await.contains("AUTH PLAIN LOGIN"));
    // "\0demo\0demo-password"
    assert!(
        c.cmd("AUTH PLAIN AGRlbW8AZGVtby1wYXNzd29yZA==")
            .await
            .starts_with("235 2.7.0")
    );
    c.send(b"MAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.net>\r\nDATA\r\n")
        .await;
    assert_eq!(c.code().await, 250);
    assert_eq!(c.code().await, 250);
    assert_eq!(c.code().await, 354);
    let r = c.cmd("Subject: hi\r\n\r\n..dot\r\n.").await;
    assert!(r.starts_with("250 2.0.0"), "{r}");
    let eml = p.files("outbox", "eml");
    assert_eq!(eml.len(), 1);
    assert_eq!(
        std::fs::read(&eml[0]).unwrap(),
        b"Subject: hi\r\n\r\n.dot\r\n"
    );
    assert_eq!(
        p.metric("postern_messages_total{result=\"accepted\",user=\"demo\"}")
            .await,
        1.0
    );
    assert_eq!(p.http_get("/readyz").await.0, 200);
    p.stop().await;
}
