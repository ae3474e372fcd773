//! Replicas of one `[cluster]` for tests: the config of one and a logged-in
//! session (user "dev" through the fake upstream "fake").

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;

use super::postern::{Postern, Raw};
use super::relay::{PASSWORD, password_hash};
use super::upstream::FakeUpstream;

/// One replica's config: listener "smtp", metrics, `[cluster]` on `redis`
/// with `cluster` extra lines, the fake upstream with `upstream` extra lines,
/// and user "dev" with `limits` in `[user.limits]`.
pub fn replica_toml(
    redis: &str,
    cluster: &str,
    up: &FakeUpstream,
    upstream: &str,
    limits: &str,
) -> String {
    format!(
        "[[listener]]\nname = \"smtp\"\naddr = \"127.0.0.1:0\"\n\n\
         [metrics]\naddr = \"127.0.0.1:0\"\n\n\
         [cluster]\nredis = \"{redis}\"\nreplicas = 2\nlease_ttl = \"3s\"\n{cluster}\n\
         {}{upstream}\n\
         [[user]]\nname = \"dev\"\npassword_hash = \"{}\"\nallowed_senders = [\"*\"]\n\
         [user.limits]\n{limits}\n",
        up.postern_toml(),
        password_hash()
    )
}

/// `toml` (a `replica_toml`) with a `[spool]` of its own in `{dir}/spool`,
/// for upstreams with `delivery = "spool"`.
pub fn with_spool(toml: &str) -> String {
    format!("{toml}\n[spool]\ndir = \"{{dir}}/spool\"\n")
}

/// `toml` (a `replica_toml`) with user "dev" sending from 127.0.0.1 without
/// AUTH (its `networks`, the listener's `auth = "optional"`): a session's
/// MAIL takes its connection lease and its message rate together.
pub fn trusted(toml: &str) -> String {
    toml.replacen(
        "name = \"smtp\"\n",
        "name = \"smtp\"\nauth = \"optional\"\n",
        1,
    )
    .replacen(
        "name = \"dev\"\n",
        "name = \"dev\"\nnetworks = [\"127.0.0.1/32\"]\n",
        1,
    )
}

/// A session after EHLO, without AUTH (see `trusted`).
pub async fn greeted(p: &Postern) -> Raw {
    let mut c = Raw::connect(p.addr("smtp")).await;
    assert!(c.reply().await.starts_with("220 "));
    assert!(c.cmd("EHLO client.test").await.starts_with("250"));
    c
}

/// A session of user "dev" after EHLO and AUTH.
pub async fn login(p: &Postern) -> Raw {
    let mut c = Raw::connect(p.addr("smtp")).await;
    assert!(c.reply().await.starts_with("220 "));
    assert!(c.cmd("EHLO client.test").await.starts_with("250"));
    let token = B64.encode(format!("\0dev\0{PASSWORD}"));
    let auth = c.cmd(&format!("AUTH PLAIN {token}")).await;
    assert!(auth.starts_with("235 "), "AUTH {auth:?}");
    c
}

/// One message; the reply that decided it (MAIL's when MAIL was refused).
pub async fn send(c: &mut Raw) -> String {
    send_body(c, "Subject: t\r\n\r\nhello\r\n").await
}

/// `send` with `body` (CRLF-terminated lines) as the message.
pub async fn send_body(c: &mut Raw, body: &str) -> String {
    let mail = c.cmd("MAIL FROM:<dev@example.com>").await;
    if !mail.starts_with("250") {
        return mail;
    }
    let rcpt = c.cmd("RCPT TO:<to@example.net>").await;
    assert!(rcpt.starts_with("250"), "RCPT {rcpt:?}");
    let data = c.cmd("DATA").await;
    assert!(data.starts_with("354"), "DATA {data:?}");
    c.cmd(&format!("{body}.")).await
}

/// A replica as a process of its own (`postern run`), on a free port, from
/// a `replica_toml`; waits until it accepts. Kill or stop it by its PID.
pub async fn spawn_process(
    toml: &str,
) -> (std::process::Child, std::net::SocketAddr, tempfile::TempDir) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let dir = tempfile::tempdir().expect("tempdir");
    let toml = toml
        .replacen("127.0.0.1:0", &format!("127.0.0.1:{port}"), 1)
        .replace("{dir}", &dir.path().display().to_string());
    let path = dir.path().join("replica.toml");
    std::fs::write(&path, toml).expect("write config");
    let log = std::fs::File::create(dir.path().join("replica.log")).expect("log");
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_postern"))
        .args(["run", "--config"])
        .arg(&path)
        .stdin(std::process::Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start a replica");
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    while tokio::net::TcpStream::connect(addr).await.is_err() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the replica did not start"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    (child, addr, dir)
}
