//! OAuth2 toward the provider: XOAUTH2 and OAUTHBEARER with tokens from a
//! loopback token endpoint (client_credentials and refresh_token grants).
//! A token is fetched once for many messages, again after it expires and
//! once after the provider refuses it; a rotated refresh token is written
//! back; an endpoint that errs or is down gives the device 451 4.7.0; and
//! neither the client secret nor any token nor the refresh token reaches a
//! log line (at trace level), the metrics, or a reply.

mod support;

use std::io::Write;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;

use support::postern::{Postern, PosternBuilder, Raw};
use support::token::{CLIENT_ID, CLIENT_SECRET, FIRST_REFRESH_TOKEN, TokenConfig, TokenEndpoint};
use support::upstream::{FakeUpstream, UpTls, UpstreamConfig};

const T: Duration = Duration::from_secs(10);
/// Every secret the test endpoint hands out carries one of these.
const SECRET_MARKS: &[&str] = &["Vb9w", "Kp02", "Jd73", CLIENT_SECRET];

/// Everything logged by this test binary, at every level.
fn logs() -> &'static Mutex<Vec<u8>> {
    static LOGS: OnceLock<Mutex<Vec<u8>>> = OnceLock::new();
    LOGS.get_or_init(|| Mutex::new(Vec::new()))
}

struct LogWriter;

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        logs().lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn capture_logs() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new("trace"))
            .with_writer(|| LogWriter)
            .with_ansi(false)
            .try_init();
    });
}

/// No secret in the logs, the metrics or `replies`; and something was logged.
async fn assert_no_secrets(p: &Postern, replies: &[String]) {
    let logs = String::from_utf8_lossy(&logs().lock().unwrap()).into_owned();
    assert!(
        logs.contains("postern"),
        "nothing was logged: the check would be empty"
    );
    let metrics = p.metrics_text().await;
    for mark in SECRET_MARKS {
        assert!(!logs.contains(mark), "{mark:?} in the logs:\n{logs}");
        assert!(!metrics.contains(mark), "{mark:?} in the metrics");
        for r in replies {
            assert!(!r.contains(mark), "{mark:?} in a reply: {r}");
        }
    }
    // Nor the SASL initial responses carrying the tokens.
    for n in 1..5 {
        let token = format!("access-token-{n}-Vb9w");
        for ir in [
            format!("user=provider-user\x01auth=Bearer {token}\x01\x01"),
            format!("n,a=provider-user,\x01auth=Bearer {token}\x01\x01"),
        ] {
            assert!(
                !logs.contains(&B64.encode(ir)),
                "a SASL response in the logs"
            );
        }
    }
}

fn password_hash() -> &'static str {
    static HASH: OnceLock<String> = OnceLock::new();
    HASH.get_or_init(|| postern::auth::hash_password("pw").expect("hash_password"))
}

/// A provider that takes bearer tokens issued by `endpoint`.
async fn provider(endpoint: &TokenEndpoint) -> FakeUpstream {
    FakeUpstream::start(UpstreamConfig {
        tls: UpTls::StartTls,
        extensions: [
            "PIPELINING",
            "8BITMIME",
            "ENHANCEDSTATUSCODES",
            "AUTH LOGIN PLAIN XOAUTH2 OAUTHBEARER",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect(),
        oauth_tokens: Some(endpoint.accepted.clone()),
        ..UpstreamConfig::default()
    })
    .await
}

/// Postern toward `fake` with `auth` and an `[upstream.oauth2]` of `grant`
/// at `token_url`; `pool = false`, so every message authenticates anew.
fn builder(fake: &FakeUpstream, auth: &str, grant: &str, token_url: &str) -> PosternBuilder {
    let grant_keys = match grant {
        "client_credentials" => {
            "client_secret_file = \"{secret}\"\nscope = \"https://outlook.office365.com/.default\"\n"
        }
        _ => "refresh_token_file = \"{refresh}\"\nscope = \"https://mail.google.com/\"\n",
    };
    let toml = format!(
        r#"
[server]
hostname = "postern.test"
[metrics]
addr = "127.0.0.1:0"
[[listener]]
name = "plain"
addr = "127.0.0.1:0"
[[upstream]]
name = "provider"
kind = "smtp"
addr = "localhost:{port}"
ca_file = "{{ca}}"
auth = "{auth}"
username = "provider-user"
pool = false
[upstream.oauth2]
token_url = "{token_url}"
grant = "{grant}"
client_id = "{CLIENT_ID}"
{grant_keys}
[[user]]
name = "printer"
password_hash = "{hash}"
allowed_senders = ["*@example.com"]
upstream = "provider"
"#,
        port = fake.port(),
        hash = password_hash(),
    );
    PosternBuilder::new(&toml)
        .with_file("ca", "provider-ca.pem", &fake.ca_pem().expect("TLS on"))
        .with_file("secret", "client.secret", &format!("{CLIENT_SECRET}\n"))
        .with_file(
            "refresh",
            "gmail.refresh",
            &format!("{FIRST_REFRESH_TOKEN}\n"),
        )
}

/// One message through postern; every reply of the dialogue.
async fn send(p: &Postern) -> Vec<String> {
    let mut c = Raw::connect(p.addr("plain")).await;
    let mut replies = vec![c.reply().await];
    replies.push(c.cmd("EHLO client.test").await);
    replies.push(
        c.cmd(&format!("AUTH PLAIN {}", B64.encode("\0printer\0pw")))
            .await,
    );
    let mail = c.cmd("MAIL FROM:<scanner@example.com>").await;
    replies.push(mail.clone());
    if mail.starts_with("250") {
        replies.push(c.cmd("RCPT TO:<someone@example.net>").await);
        replies.push(c.cmd("DATA").await);
        c.send(b"Subject: scan\r\n\r\nattached\r\n.\r\n").await;
        replies.push(c.reply().await);
    }
    replies.push(c.cmd("QUIT").await);
    replies
}

fn last_verdict(replies: &[String]) -> &str {
    &replies[replies.len() - 2]
}

fn bearer_auths(fake: &FakeUpstream) -> Vec<String> {
    fake.auths()
        .into_iter()
        .map(|(user, secret)| {
            assert_eq!(user, "provider-user");
            secret
                .strip_prefix("bearer:")
                .unwrap_or_else(|| panic!("not a bearer AUTH: {secret:?}"))
                .to_owned()
        })
        .collect()
}

#[tokio::test]
async fn client_credentials_xoauth2_fetches_one_token_for_many_messages() {
    capture_logs();
    let endpoint = TokenEndpoint::start(TokenConfig {
        expires_in: 3600,
        rotate: false,
    })
    .await;
    let fake = provider(&endpoint).await;
    let p = builder(&fake, "xoauth2", "client_credentials", &endpoint.url())
        .start()
        .await;
    let mut all = Vec::new();
    for _ in 0..3 {
        let r = send(&p).await;
        assert!(last_verdict(&r).starts_with("250 "), "{r:?}");
        all.extend(r);
    }
    assert_eq!(fake.wait_messages(3, T).await.len(), 3);
    assert_eq!(endpoint.issued(), 1, "one token for every connection");
    let auths = bearer_auths(&fake);
    assert!(auths.len() >= 3, "{auths:?}");
    assert!(
        auths.iter().all(|t| t == "access-token-1-Vb9w"),
        "{auths:?}"
    );
    assert!(
        fake.commands()
            .iter()
            .any(|c| c.starts_with("AUTH XOAUTH2 ")),
        "{:?}",
        fake.commands()
    );
    let req = &endpoint.requests()[0];
    assert_eq!(req["grant_type"], "client_credentials");
    assert_eq!(req["client_id"], CLIENT_ID);
    assert_eq!(req["client_secret"], CLIENT_SECRET);
    assert_eq!(req["scope"], "https://outlook.office365.com/.default");
    assert_eq!(
        p.metric("postern_oauth2_token_fetches_total{result=\"ok\",upstream=\"provider\"}")
            .await,
        1.0
    );
    assert_no_secrets(&p, &all).await;
}

#[tokio::test]
async fn refresh_token_oauthbearer_renews_after_expiry_and_saves_the_rotated_token() {
    capture_logs();
    let endpoint = TokenEndpoint::start(TokenConfig {
        expires_in: 1,
        rotate: true,
    })
    .await;
    let fake = provider(&endpoint).await;
    let p = builder(&fake, "oauthbearer", "refresh_token", &endpoint.url())
        .start()
        .await;
    let mut all = send(&p).await;
    assert!(last_verdict(&all).starts_with("250 "), "{all:?}");
    let first = endpoint.issued();
    assert!(first >= 1);
    // Let the token run out (its lifetime is the thing under test).
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let r = send(&p).await;
    assert!(last_verdict(&r).starts_with("250 "), "{r:?}");
    all.extend(r);
    assert!(endpoint.issued() > first, "no new token after expiry");
    let reqs = endpoint.requests();
    assert_eq!(reqs[0]["grant_type"], "refresh_token");
    assert_eq!(reqs[0]["refresh_token"], FIRST_REFRESH_TOKEN);
    // Each refresh used the token the previous one rotated in.
    for (i, r) in reqs.iter().enumerate().skip(1) {
        assert_eq!(r["refresh_token"], format!("refresh-token-{i}-Kp02"));
    }
    let saved = std::fs::read_to_string(p.dir.path().join("gmail.refresh")).unwrap();
    assert_eq!(saved.trim(), endpoint.current_refresh_token());
    assert!(
        fake.commands()
            .iter()
            .any(|c| c.starts_with("AUTH OAUTHBEARER ")),
        "{:?}",
        fake.commands()
    );
    let auths = bearer_auths(&fake);
    assert!(auths.contains(&"access-token-1-Vb9w".to_string()));
    assert!(
        auths.iter().any(|t| t != "access-token-1-Vb9w"),
        "{auths:?}"
    );
    assert_no_secrets(&p, &all).await;
}

#[tokio::test]
async fn a_refused_cached_token_is_replaced_once_and_the_message_goes() {
    capture_logs();
    let endpoint = TokenEndpoint::start(TokenConfig {
        expires_in: 3600,
        rotate: false,
    })
    .await;
    let fake = provider(&endpoint).await;
    let p = builder(&fake, "xoauth2", "client_credentials", &endpoint.url())
        .start()
        .await;
    let mut all = send(&p).await;
    assert!(last_verdict(&all).starts_with("250 "), "{all:?}");
    endpoint.revoke_all();
    let r = send(&p).await;
    assert!(last_verdict(&r).starts_with("250 "), "{r:?}");
    all.extend(r);
    assert_eq!(endpoint.issued(), 2);
    let auths = bearer_auths(&fake);
    let n = auths.len();
    assert_eq!(
        auths[n - 2..],
        [
            "access-token-1-Vb9w".to_string(),
            "access-token-2-Vb9w".to_string()
        ],
        "the refused token, then the new one on the same connection"
    );
    assert_eq!(fake.wait_messages(2, T).await.len(), 2);
    assert_no_secrets(&p, &all).await;
}

#[tokio::test]
async fn a_token_endpoint_that_refuses_gives_451_and_nothing_reaches_the_provider() {
    capture_logs();
    let endpoint = TokenEndpoint::start(TokenConfig {
        expires_in: 3600,
        rotate: false,
    })
    .await;
    endpoint.fail_with(Some((
        401,
        r#"{"error":"invalid_client","error_description":"AADSTS7000215: Invalid client secret provided."}"#,
    )));
    let fake = provider(&endpoint).await;
    let p = builder(&fake, "xoauth2", "client_credentials", &endpoint.url())
        .start()
        .await;
    let r = send(&p).await;
    let mail = &r[3];
    assert!(mail.starts_with("451 4.7.0 "), "{r:?}");
    assert!(mail.contains("OAuth2 token"), "{mail}");
    assert!(fake.auths().is_empty(), "{:?}", fake.auths());
    assert!(
        p.metric("postern_oauth2_token_fetches_total{result=\"error\",upstream=\"provider\"}")
            .await
            >= 1.0
    );
    let logs = String::from_utf8_lossy(&logs().lock().unwrap()).into_owned();
    assert!(
        logs.contains("invalid_client") && logs.contains("Invalid client secret provided"),
        "the endpoint's words are not in the log"
    );
    assert_no_secrets(&p, &r).await;
    // It recovers once the endpoint does.
    endpoint.fail_with(None);
    let r = send(&p).await;
    assert!(last_verdict(&r).starts_with("250 "), "{r:?}");
}

#[tokio::test]
async fn a_token_endpoint_that_is_down_gives_451() {
    capture_logs();
    let endpoint = TokenEndpoint::start(TokenConfig {
        expires_in: 3600,
        rotate: false,
    })
    .await;
    let fake = provider(&endpoint).await;
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let url = format!("http://127.0.0.1:{closed}/token");
    let p = builder(&fake, "xoauth2", "client_credentials", &url)
        .start()
        .await;
    let r = send(&p).await;
    assert!(r[3].starts_with("451 4.7.0 "), "{r:?}");
    assert!(fake.auths().is_empty());
    assert_no_secrets(&p, &r).await;
}
