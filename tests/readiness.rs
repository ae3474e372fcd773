//! `/readyz` over HTTP follows the provider's verdict on postern's
//! credentials: 503 with the reason once the probe (every second here) is
//! refused, 200 again once the right password is back; `/healthz` stays 200.

mod support;

use std::time::Duration;

use support::postern::{Postern, spawn_postern};
use support::upstream::{FakeUpstream, UpstreamConfig};

const WAIT: Duration = Duration::from_secs(20);

fn config(up: &FakeUpstream, password: &str) -> String {
    let upstream = up.postern_toml().replace(
        "password = \"provider-secret\"",
        &format!("password = \"{password}\""),
    );
    format!(
        r#"
[server]
hostname = "relay.test"

[[listener]]
name = "plain"
addr = "127.0.0.1:0"
auth = "optional"

[metrics]
addr = "127.0.0.1:0"

{upstream}
health_check_interval = "1s"
idle_timeout = "2s"

[[user]]
name = "recorder"
networks = ["192.0.2.1/32"]
allowed_senders = ["*"]
"#
    )
}

/// Polls `/readyz` until its status is `want`; returns the body.
async fn readyz_becomes(p: &Postern, want: u16) -> String {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (status, body) = p.http_get("/readyz").await;
        if status == want {
            return body;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "/readyz stayed {status} ({body:?}), wanted {want}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn readyz_turns_503_when_the_provider_refuses_the_password_and_back() {
    let up = FakeUpstream::start(UpstreamConfig::default()).await;
    let p = spawn_postern(&config(&up, "provider-secret")).await;
    readyz_becomes(&p, 200).await;

    let wrong = postern::Config::from_toml_str(&config(&up, "changed-on-the-recorder"), "t.toml")
        .expect("config");
    p.reloader.reload(wrong).expect("reload");
    let why = readyz_becomes(&p, 503).await;
    assert!(
        why.contains("user recorder: upstream fake down") && why.contains("auth refused"),
        "{why}"
    );
    assert_eq!(p.http_get("/healthz").await.0, 200);
    assert_eq!(
        p.metric("postern_upstream_up{upstream=\"fake\"}").await,
        0.0
    );

    let right =
        postern::Config::from_toml_str(&config(&up, "provider-secret"), "t.toml").expect("config");
    p.reloader.reload(right).expect("reload");
    readyz_becomes(&p, 200).await;
    assert_eq!(
        p.metric("postern_upstream_up{upstream=\"fake\"}").await,
        1.0
    );
    assert_eq!(p.http_get("/nothing-here").await.0, 404);
    p.stop().await;
}
