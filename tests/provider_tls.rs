//! TLS toward the provider that just works: `tls` follows the port when it is
//! left out, `ca_file` holds a private CA or the provider's own self-signed
//! certificate (pinned, even one marked as a CA), and every certificate problem
//! reaches the device's 4xx in words an administrator can act on.

mod support;

use std::sync::OnceLock;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;

use support::certs::{CertSpec, ca_signed};
use support::postern::{Postern, PosternBuilder, Raw};
use support::upstream::{FakeUpstream, UpTls, UpstreamConfig};

fn password_hash() -> &'static str {
    static HASH: OnceLock<String> = OnceLock::new();
    HASH.get_or_init(|| postern::auth::hash_password("pw").expect("hash_password"))
}

/// Postern toward `fake` at `host`, with `tls` written only when given, and
/// `ca_file` holding `ca` when given.
async fn postern(fake: &FakeUpstream, host: &str, tls: Option<&str>, ca: Option<&str>) -> Postern {
    let tls = tls.map_or(String::new(), |t| format!("tls = \"{t}\"\n"));
    let ca_line = if ca.is_some() {
        "ca_file = \"{upstream_ca}\"\n"
    } else {
        ""
    };
    let toml = format!(
        r#"
[server]
hostname = "postern.test"
[[listener]]
name = "plain"
addr = "127.0.0.1:0"
[[upstream]]
name = "provider"
kind = "smtp"
addr = "{host}:{port}"
{tls}{ca_line}username = "provider-user"
password = "provider-secret"
[[user]]
name = "printer"
password_hash = "{hash}"
allowed_senders = ["*@example.com"]
"#,
        port = fake.port(),
        hash = password_hash(),
    );
    let mut b = PosternBuilder::new(&toml);
    if let Some(pem) = ca {
        b = b.with_file("upstream_ca", "upstream-ca.pem", pem);
    }
    b.start().await
}

async fn fake(tls: UpTls, cert: Option<support::certs::TestCert>) -> FakeUpstream {
    FakeUpstream::start(UpstreamConfig {
        tls,
        cert,
        ..UpstreamConfig::default()
    })
    .await
}

async fn client(p: &Postern) -> Raw {
    let mut c = Raw::connect(p.addr("plain")).await;
    assert!(c.reply().await.starts_with("220 "));
    assert!(c.cmd("EHLO client.test").await.starts_with("250"));
    let r = c
        .cmd(&format!("AUTH PLAIN {}", B64.encode("\0printer\0pw")))
        .await;
    assert!(r.starts_with("235 "), "{r}");
    c
}

/// Sends one message; returns the reply to MAIL, or to the final dot if MAIL passed.
async fn send(p: &Postern) -> String {
    let mut c = client(p).await;
    let r = c.cmd("MAIL FROM:<a@example.com>").await;
    if !r.starts_with("250") {
        return r;
    }
    assert!(c.cmd("RCPT TO:<b@example.net>").await.starts_with("250"));
    assert!(c.cmd("DATA").await.starts_with("354"));
    c.send(b"Subject: t\r\n\r\nhello\r\n.\r\n").await;
    c.reply().await
}

/// The message relayed, over TLS, authenticated.
async fn assert_relayed(fake: &FakeUpstream, p: &Postern) {
    let r = send(p).await;
    assert!(r.starts_with("250 "), "{r}");
    let msgs = fake.wait_messages(1, Duration::from_secs(10)).await;
    assert_eq!(msgs.len(), 1);
    assert_eq!(fake.auths()[0].0, "provider-user");
}

/// A 451 4.7.5 naming the problem, and nothing of the credentials sent.
async fn assert_refused(fake: &FakeUpstream, p: &Postern, words: &[&str]) -> String {
    let r = send(p).await;
    assert!(r.starts_with("451 4.7.5 "), "{r}");
    for w in words {
        assert!(r.contains(w), "{w:?} not in {r:?}");
    }
    assert!(fake.auths().is_empty(), "AUTH went out: {:?}", fake.auths());
    assert!(fake.messages().is_empty());
    r
}

#[tokio::test]
async fn tls_left_out_on_a_submission_port_means_starttls() {
    let f = fake(UpTls::StartTls, None).await;
    let p = postern(&f, "localhost", None, f.ca_pem().as_deref()).await;
    assert_relayed(&f, &p).await;
    assert!(
        f.commands().iter().any(|c| c == "STARTTLS"),
        "{:?}",
        f.commands()
    );
}

#[tokio::test]
async fn implicit_tls_toward_a_plain_port_says_the_mode_is_wrong() {
    let f = fake(UpTls::StartTls, None).await;
    let p = postern(&f, "localhost", Some("implicit"), f.ca_pem().as_deref()).await;
    assert_refused(&f, &p, &["did not answer in TLS", "\"starttls\""]).await;
}

#[tokio::test]
async fn a_self_signed_provider_without_ca_file_is_named_as_such() {
    let f = fake(UpTls::Implicit, None).await;
    let p = postern(&f, "localhost", Some("implicit"), None).await;
    assert_refused(&f, &p, &["self-signed", "put it in ca_file"]).await;
}

#[tokio::test]
async fn a_self_signed_certificate_marked_as_ca_can_be_pinned() {
    // What `openssl req -x509` makes by default: basicConstraints cA=TRUE, which
    // webpki alone refuses as an end-entity certificate.
    let cert = CertSpec {
        is_ca: true,
        ..CertSpec::default()
    }
    .self_signed();
    let pem = cert.cert_pem.clone();
    let f = fake(UpTls::StartTls, Some(cert)).await;
    let p = postern(&f, "localhost", Some("starttls"), Some(&pem)).await;
    assert_relayed(&f, &p).await;
}

#[tokio::test]
async fn a_pinned_certificate_is_trusted_for_whatever_names_it_has() {
    let cert = CertSpec {
        names: vec!["internal-relay.lan".to_string()],
        ..CertSpec::default()
    }
    .self_signed();
    let pem = cert.cert_pem.clone();
    let f = fake(UpTls::Implicit, Some(cert)).await;
    let p = postern(&f, "127.0.0.1", Some("implicit"), Some(&pem)).await;
    assert_relayed(&f, &p).await;
}

#[tokio::test]
async fn another_self_signed_certificate_than_the_pinned_one_is_refused() {
    let f = fake(UpTls::Implicit, None).await;
    let other = CertSpec::default().self_signed();
    let p = postern(&f, "localhost", Some("implicit"), Some(&other.cert_pem)).await;
    assert_refused(&f, &p, &["self-signed", "not the one in ca_file"]).await;
}

#[tokio::test]
async fn a_private_ca_in_ca_file_verifies_the_provider() {
    let (ca, cert) = ca_signed(&CertSpec::default());
    let f = fake(UpTls::Implicit, Some(cert)).await;
    let p = postern(&f, "localhost", Some("implicit"), Some(&ca)).await;
    assert_relayed(&f, &p).await;
}

#[tokio::test]
async fn an_expired_certificate_says_when_it_expired() {
    let spec = CertSpec {
        not_before: (2019, 1, 1),
        not_after: (2021, 3, 4),
        ..CertSpec::default()
    };
    let (ca, cert) = ca_signed(&spec);
    let f = fake(UpTls::Implicit, Some(cert)).await;
    let p = postern(&f, "localhost", Some("implicit"), Some(&ca)).await;
    assert_refused(&f, &p, &["expired on 2021-03-04"]).await;
}

#[tokio::test]
async fn an_expired_pinned_certificate_is_refused_too() {
    let cert = CertSpec {
        not_before: (2019, 1, 1),
        not_after: (2022, 5, 6),
        ..CertSpec::default()
    }
    .self_signed();
    let pem = cert.cert_pem.clone();
    let f = fake(UpTls::Implicit, Some(cert)).await;
    let p = postern(&f, "localhost", Some("implicit"), Some(&pem)).await;
    assert_refused(&f, &p, &["expired on 2022-05-06"]).await;
}

#[tokio::test]
async fn a_name_mismatch_names_what_the_certificate_is_for() {
    let (ca, cert) = ca_signed(&CertSpec {
        names: vec!["smtp.other.test".to_string()],
        ..CertSpec::default()
    });
    let f = fake(UpTls::Implicit, Some(cert)).await;
    let p = postern(&f, "localhost", Some("implicit"), Some(&ca)).await;
    assert_refused(
        &f,
        &p,
        &["name mismatch", "smtp.other.test", "not localhost"],
    )
    .await;
}

#[tokio::test]
async fn a_certificate_from_an_unknown_ca_asks_for_ca_file() {
    let (_ca, cert) = ca_signed(&CertSpec::default());
    let f = fake(UpTls::Implicit, Some(cert)).await;
    let unrelated = CertSpec {
        common_name: "someone else".to_string(),
        ..CertSpec::default()
    }
    .self_signed();
    let p = postern(&f, "localhost", Some("implicit"), Some(&unrelated.cert_pem)).await;
    assert_refused(&f, &p, &["not signed by a CA postern trusts", "ca_file"]).await;
}
