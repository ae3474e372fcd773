//! `postern doctor` against a recording provider: all good (exit 0), a wrong
//! password (exit 1, the upstream named), a closed port, a self-signed
//! certificate without and with `ca_file`, an expired certificate, and the
//! JSON form; `--send-test` through each account, by DATA and by BDAT, and a
//! provider that refuses the test recipient.

mod support;

use std::path::Path;
use std::process::{Command, Output};

use support::certs::{CertSpec, ca_signed};
use support::upstream::{FakeUpstream, UpTls, UpstreamConfig};

const BIN: &str = env!("CARGO_BIN_EXE_postern");

fn config(dir: &Path, addr: &str, tls: &str, password: &str, ca: Option<&str>) -> String {
    let ca_line = match ca {
        Some(pem) => {
            std::fs::write(dir.join("ca.pem"), pem).unwrap();
            "ca_file = \"ca.pem\"\n"
        }
        None => "",
    };
    let text = format!(
        r#"[[listener]]
name = "local"
addr = "127.0.0.1:2525"
[[upstream]]
name = "provider"
kind = "smtp"
addr = "{addr}"
tls = "{tls}"
{ca_line}username = "provider-user"
password = "{password}"
[[user]]
name = "printer"
password_hash = "$argon2id$v=19$m=19456,t=2,p=1$11q7BUqHKWJ83uSLXqFIbQ$1+psK6zrD2q0blmvQ6t7AkyhliCit7KzoQYjNxofWEM"
allowed_senders = ["*@example.com"]
"#
    );
    let path = dir.join("postern.toml");
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

async fn doctor(path: String, json: bool) -> (i32, String) {
    let out: Output = tokio::task::spawn_blocking(move || {
        let mut cmd = Command::new(BIN);
        cmd.args(["doctor", "--config", &path]);
        if json {
            cmd.arg("--json");
        }
        cmd.output().unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    (out.status.code().unwrap_or(-1), stdout)
}

async fn fake(tls: UpTls, cert: Option<support::certs::TestCert>) -> FakeUpstream {
    FakeUpstream::start(UpstreamConfig {
        tls,
        cert,
        ..UpstreamConfig::default()
    })
    .await
}

#[tokio::test]
async fn a_good_provider_passes_every_step() {
    let f = fake(UpTls::StartTls, None).await;
    let dir = tempfile::tempdir().unwrap();
    let path = config(
        dir.path(),
        &format!("localhost:{}", f.port()),
        "starttls",
        "provider-secret",
        f.ca_pem().as_deref(),
    );
    let (code, out) = doctor(path.clone(), false).await;
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("upstream provider account provider-user: OK"),
        "{out}"
    );
    for s in [
        "resolve  ok",
        "connect  ok",
        "tls      ok",
        "ehlo     ok",
        "auth     ok",
    ] {
        assert!(out.contains(s), "{s:?} missing:\n{out}");
    }
    assert!(out.contains("TLSv1_3"), "{out}");
    assert!(out.contains("days)"), "{out}");
    assert!(out.contains("PIPELINING"), "{out}");
    assert!(!out.contains("provider-secret"), "{out}");
    let (code, json) = doctor(path, true).await;
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v[0]["upstream"], "provider");
    assert_eq!(v[0]["ok"], true);
    assert_eq!(v[0]["steps"].as_array().unwrap().len(), 5);
}

#[tokio::test]
async fn a_wrong_password_fails_the_auth_step_and_names_the_upstream() {
    let f = fake(UpTls::Implicit, None).await;
    let dir = tempfile::tempdir().unwrap();
    let path = config(
        dir.path(),
        &format!("localhost:{}", f.port()),
        "implicit",
        "wrong",
        f.ca_pem().as_deref(),
    );
    let (code, out) = doctor(path, false).await;
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("upstream provider account provider-user: FAILED"),
        "{out}"
    );
    assert!(
        out.contains("auth     FAIL") && out.contains("535"),
        "{out}"
    );
    assert!(out.contains("tls      ok"), "{out}");
}

#[tokio::test]
async fn a_closed_port_fails_the_connect_step() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = tempfile::tempdir().unwrap();
    let path = config(
        dir.path(),
        &format!("127.0.0.1:{port}"),
        "implicit",
        "x",
        None,
    );
    let (code, out) = doctor(path, false).await;
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("connect  FAIL"), "{out}");
}

#[tokio::test]
async fn a_self_signed_certificate_fails_until_it_is_in_ca_file() {
    let f = fake(UpTls::Implicit, None).await;
    let dir = tempfile::tempdir().unwrap();
    let addr = format!("localhost:{}", f.port());
    let (code, out) = doctor(
        config(dir.path(), &addr, "implicit", "provider-secret", None),
        false,
    )
    .await;
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("tls      FAIL")
            && out.contains("self-signed")
            && out.contains("put it in ca_file"),
        "{out}"
    );
    let (code, out) = doctor(
        config(
            dir.path(),
            &addr,
            "implicit",
            "provider-secret",
            f.ca_pem().as_deref(),
        ),
        false,
    )
    .await;
    assert_eq!(code, 0, "{out}");
}

#[tokio::test]
async fn an_expired_certificate_says_when() {
    let (ca, cert) = ca_signed(&CertSpec {
        not_before: (2019, 1, 1),
        not_after: (2021, 3, 4),
        ..CertSpec::default()
    });
    let f = fake(UpTls::Implicit, Some(cert)).await;
    let dir = tempfile::tempdir().unwrap();
    let path = config(
        dir.path(),
        &format!("localhost:{}", f.port()),
        "implicit",
        "provider-secret",
        Some(&ca),
    );
    let (code, out) = doctor(path, false).await;
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("expired on 2021-03-04"), "{out}");
    assert!(out.contains("issued by \"Test Private CA\""), "{out}");
}

#[tokio::test]
async fn a_bad_config_exits_64() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, "[[listener]]\n").unwrap();
    let (code, _) = doctor(path.display().to_string(), false).await;
    assert_eq!(code, 64);
}

async fn doctor_args(path: String, args: &[&str]) -> (i32, String, String) {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let out: Output = tokio::task::spawn_blocking(move || {
        Command::new(BIN)
            .args(["doctor", "--config", &path])
            .args(&args)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// An upstream with two sender accounts, each its own password.
fn accounts_config(dir: &Path, port: u16) -> String {
    let text = format!(
        r#"[[listener]]
name = "local"
addr = "127.0.0.1:2525"
[[upstream]]
name = "dm"
kind = "smtp"
addr = "127.0.0.1:{port}"
tls = "none"
[[upstream.account]]
username = "alerts@mail.example.com"
password = "alerts-secret"
[[upstream.account]]
username = "scans@mail.example.com"
password = "scans-secret"
[[user]]
name = "printer"
password_hash = "$argon2id$v=19$m=19456,t=2,p=1$11q7BUqHKWJ83uSLXqFIbQ$1+psK6zrD2q0blmvQ6t7AkyhliCit7KzoQYjNxofWEM"
allowed_senders = ["*@example.com"]
"#
    );
    let path = dir.join("postern.toml");
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

#[tokio::test]
async fn send_test_relays_one_message_per_account_and_prints_the_providers_reply() {
    for chunking in [false, true] {
        let mut cfg = UpstreamConfig {
            username: String::new(),
            ..UpstreamConfig::default()
        };
        cfg.accounts
            .insert("alerts@mail.example.com".into(), "alerts-secret".into());
        cfg.accounts
            .insert("scans@mail.example.com".into(), "scans-secret".into());
        if chunking {
            cfg.extensions.push("CHUNKING".into());
        }
        let f = FakeUpstream::start(cfg).await;
        let dir = tempfile::tempdir().unwrap();
        let path = accounts_config(dir.path(), f.port());
        let (code, out, err) = doctor_args(path.clone(), &["--send-test", "ops@example.net"]).await;
        assert_eq!(code, 0, "{out}{err}");
        let msgs = f.messages();
        assert_eq!(msgs.len(), 2, "{out}");
        let mut froms: Vec<_> = msgs.iter().map(|m| m.mail_from.clone()).collect();
        froms.sort();
        assert_eq!(
            froms,
            vec![
                "MAIL FROM:<alerts@mail.example.com>",
                "MAIL FROM:<scans@mail.example.com>"
            ]
        );
        for m in &msgs {
            assert_eq!(m.rcpts, vec!["RCPT TO:<ops@example.net>".to_owned()]);
            let text = String::from_utf8_lossy(&m.data);
            assert!(text.contains("Subject: postern doctor test\r\n"), "{text}");
            assert!(
                text.contains("\r\nDate: ") || text.starts_with("Date: "),
                "{text}"
            );
            assert_eq!(m.chunks.is_empty(), !chunking);
            // Each message went as its own account.
            assert_eq!(
                m.auth_user.as_deref(),
                Some(&m.mail_from["MAIL FROM:<".len()..m.mail_from.len() - 1])
            );
        }
        assert_eq!(out.matches("send     ok").count(), 2, "{out}");
        // The provider's own reply, with its queue id.
        assert!(out.contains("250 2.0.0 queued as 1"), "{out}");
        assert!(out.contains("250 2.0.0 queued as 2"), "{out}");
        assert!(!out.contains("secret"), "{out}");

        let (code, json, _) =
            doctor_args(path, &["--json", "--send-test", "ops@example.net"]).await;
        assert_eq!(code, 0, "{json}");
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        for row in v.as_array().unwrap() {
            let send = row["steps"]
                .as_array()
                .unwrap()
                .iter()
                .find(|s| s["step"] == "send")
                .expect("a send step");
            assert_eq!(send["ok"], true);
            assert!(
                send["detail"].as_str().unwrap().contains("queued as"),
                "{send}"
            );
        }
    }
}

#[tokio::test]
async fn send_test_reports_a_refusal_and_exits_1() {
    let mut cfg = UpstreamConfig::default();
    cfg.rcpt_replies
        .insert("ops@example.net".into(), "550 5.1.1 mailbox unknown".into());
    let f = FakeUpstream::start(cfg).await;
    let dir = tempfile::tempdir().unwrap();
    let path = config(
        dir.path(),
        &format!("127.0.0.1:{}", f.port()),
        "none",
        "provider-secret",
        None,
    );
    let (code, out, err) = doctor_args(
        path.clone(),
        &[
            "--send-test",
            "ops@example.net",
            "--from",
            "printer@example.com",
        ],
    )
    .await;
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.contains("send     FAIL"), "{out}");
    assert!(
        out.contains("from printer@example.com to ops@example.net: 550 5.1.1 mailbox unknown"),
        "{out}"
    );
    assert!(f.messages().is_empty());
    // A recipient that is not an address is a usage error.
    let (code, _, err) = doctor_args(path, &["--send-test", "not an address"]).await;
    assert_eq!(code, 64, "{err}");
}
