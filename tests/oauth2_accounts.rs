//! OAuth2 per `[[upstream.account]]`: each account with its own
//! `[upstream.account.oauth2]` authenticates as itself with a token of its
//! own, fetched once for many messages (cached per account); and a reload
//! (what SIGHUP does) with unchanged token settings keeps the cached tokens,
//! so the loopback token endpoint is not asked again, while an account whose
//! settings changed fetches anew.

mod support;

use std::collections::HashSet;
use std::sync::OnceLock;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;

use support::postern::{Postern, PosternBuilder, Raw};
use support::token::{CLIENT_ID, CLIENT_SECRET, FIRST_REFRESH_TOKEN, TokenConfig, TokenEndpoint};
use support::upstream::{FakeUpstream, UpTls, UpstreamConfig};

const T: Duration = Duration::from_secs(10);

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
        // The account users a bearer token is taken for (their passwords are unused).
        accounts: ["alerts@example.com", "scans@example.com"]
            .iter()
            .map(|u| (u.to_string(), String::new()))
            .collect(),
        ..UpstreamConfig::default()
    })
    .await
}

/// Two accounts: alerts@ by XOAUTH2 with client credentials (scope
/// `alerts_scope`), scans@ by OAUTHBEARER with a refresh token; `pool =
/// false`, so every message authenticates anew. Placeholders as in
/// `PosternBuilder` (`{ca}`, `{secret}`, `{refresh}`).
fn config(fake: &FakeUpstream, token_url: &str, alerts_scope: &str) -> String {
    format!(
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
pool = false
[[upstream.account]]
username = "alerts@example.com"
auth = "xoauth2"
[upstream.account.oauth2]
token_url = "{token_url}"
grant = "client_credentials"
client_id = "{CLIENT_ID}"
client_secret_file = "{{secret}}"
scope = "{alerts_scope}"
[[upstream.account]]
username = "scans@example.com"
auth = "oauthbearer"
[upstream.account.oauth2]
token_url = "{token_url}"
grant = "refresh_token"
client_id = "{CLIENT_ID}"
refresh_token_file = "{{refresh}}"
scope = "https://mail.google.com/"
[[user]]
name = "printer"
password_hash = "{hash}"
allowed_senders = ["*@example.com"]
upstream = "provider"
"#,
        port = fake.port(),
        hash = password_hash(),
    )
}

const FILES: &[(&str, &str)] = &[
    ("ca", "provider-ca.pem"),
    ("secret", "client.secret"),
    ("refresh", "gmail.refresh"),
];

async fn start(fake: &FakeUpstream, toml: &str) -> Postern {
    let contents = [
        fake.ca_pem().expect("TLS on"),
        format!("{CLIENT_SECRET}\n"),
        format!("{FIRST_REFRESH_TOKEN}\n"),
    ];
    let mut b = PosternBuilder::new(toml);
    for ((placeholder, name), body) in FILES.iter().zip(&contents) {
        b = b.with_file(placeholder, name, body);
    }
    b.start().await
}

/// Reloads `toml` as SIGHUP would, its placeholders pointing at the files
/// the first start wrote.
fn reload(p: &Postern, toml: &str) {
    let mut text = toml.to_owned();
    for (placeholder, name) in FILES {
        let path = p.dir.path().join(name);
        text = text.replace(&format!("{{{placeholder}}}"), &path.display().to_string());
    }
    let cfg = postern::Config::from_toml_str(&text, "reload.toml").expect("reload config");
    p.reloader.reload(cfg).expect("reload");
}

/// One message from `sender`; the final reply.
async fn send(p: &Postern, sender: &str) -> String {
    let mut c = Raw::connect(p.addr("plain")).await;
    c.reply().await;
    c.cmd("EHLO client.test").await;
    let auth = c
        .cmd(&format!("AUTH PLAIN {}", B64.encode("\0printer\0pw")))
        .await;
    assert!(auth.starts_with("235 "), "{auth}");
    let mail = c.cmd(&format!("MAIL FROM:<{sender}>")).await;
    assert!(mail.starts_with("250 "), "{mail}");
    let rcpt = c.cmd("RCPT TO:<someone@example.net>").await;
    assert!(rcpt.starts_with("250 "), "{rcpt}");
    assert!(c.cmd("DATA").await.starts_with("354"));
    c.send(b"Subject: scan\r\n\r\nattached\r\n.\r\n").await;
    let end = c.reply().await;
    c.cmd("QUIT").await;
    end
}

/// The tokens each account authenticated with, in order.
fn tokens_of(fake: &FakeUpstream, user: &str) -> Vec<String> {
    fake.auths()
        .into_iter()
        .filter(|(u, _)| u == user)
        .map(|(_, secret)| {
            secret
                .strip_prefix("bearer:")
                .unwrap_or_else(|| panic!("not a bearer AUTH: {secret:?}"))
                .to_owned()
        })
        .collect()
}

#[tokio::test]
async fn each_account_authenticates_with_a_token_of_its_own_cached_apart() {
    let endpoint = TokenEndpoint::start(TokenConfig {
        expires_in: 3600,
        rotate: false,
    })
    .await;
    let fake = provider(&endpoint).await;
    let p = start(
        &fake,
        &config(
            &fake,
            &endpoint.url(),
            "https://outlook.office365.com/.default",
        ),
    )
    .await;
    for sender in ["alerts@example.com", "scans@example.com"].repeat(3) {
        let end = send(&p, sender).await;
        assert!(end.starts_with("250 "), "{sender}: {end}");
    }
    assert_eq!(fake.wait_messages(6, T).await.len(), 6);
    assert_eq!(endpoint.issued(), 2, "one token per account");
    let alerts = tokens_of(&fake, "alerts@example.com");
    let scans = tokens_of(&fake, "scans@example.com");
    assert!(alerts.len() >= 3, "{alerts:?}");
    assert!(scans.len() >= 3, "{scans:?}");
    assert_eq!(alerts.iter().collect::<HashSet<_>>().len(), 1, "{alerts:?}");
    assert_eq!(scans.iter().collect::<HashSet<_>>().len(), 1, "{scans:?}");
    assert_ne!(alerts[0], scans[0], "the accounts share no token");
    let commands = fake.commands();
    assert!(commands.iter().any(|c| c.starts_with("AUTH XOAUTH2 ")));
    assert!(commands.iter().any(|c| c.starts_with("AUTH OAUTHBEARER ")));
    let grants: HashSet<String> = endpoint
        .requests()
        .iter()
        .map(|r| r["grant_type"].clone())
        .collect();
    assert_eq!(
        grants,
        HashSet::from(["client_credentials".to_owned(), "refresh_token".to_owned()])
    );
    // Each account's messages went out as that account.
    for m in fake.messages() {
        let user = m.auth_user.clone().unwrap_or_default();
        assert!(m.mail_from.contains(&user), "{} by {user}", m.mail_from);
    }
    p.stop().await;
}

#[tokio::test]
async fn a_reload_keeps_the_cached_tokens_of_unchanged_accounts() {
    let endpoint = TokenEndpoint::start(TokenConfig {
        expires_in: 3600,
        rotate: false,
    })
    .await;
    let fake = provider(&endpoint).await;
    let same = config(
        &fake,
        &endpoint.url(),
        "https://outlook.office365.com/.default",
    );
    let p = start(&fake, &same).await;
    for sender in ["alerts@example.com", "scans@example.com"] {
        assert!(send(&p, sender).await.starts_with("250 "));
    }
    assert_eq!(endpoint.issued(), 2);
    // The same settings: no token endpoint request after the reload.
    reload(&p, &same);
    for sender in ["alerts@example.com", "scans@example.com"] {
        assert!(send(&p, sender).await.starts_with("250 "));
    }
    assert_eq!(endpoint.issued(), 2, "a reload refetched a cached token");
    assert_eq!(
        p.metric("postern_config_reloads_total{result=\"ok\"}")
            .await,
        1.0
    );
    // A new scope for alerts@: its token is fetched anew; scans@ keeps its own.
    let changed = config(
        &fake,
        &endpoint.url(),
        "https://outlook.office.com/SMTP.Send",
    );
    reload(&p, &changed);
    for sender in ["alerts@example.com", "scans@example.com"] {
        assert!(send(&p, sender).await.starts_with("250 "));
    }
    assert_eq!(endpoint.issued(), 3);
    let last = endpoint.requests().last().cloned().unwrap();
    assert_eq!(last["scope"], "https://outlook.office.com/SMTP.Send");
    let scans = tokens_of(&fake, "scans@example.com");
    assert_eq!(scans.iter().collect::<HashSet<_>>().len(), 1, "{scans:?}");
    let alerts = tokens_of(&fake, "alerts@example.com");
    assert_eq!(alerts.iter().collect::<HashSet<_>>().len(), 2, "{alerts:?}");
    assert_eq!(fake.wait_messages(6, T).await.len(), 6);
    p.stop().await;
}
