//! The TOML schema as Rust types: one struct per table, serde with
//! `deny_unknown_fields`. Keys whose line matters in messages are `Spanned`.
//! Secrets are only named here; `Secret::resolve` reads them when `run` starts.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::ops::Range;
use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;
use serde::Deserialize;
use serde::de::{self, Deserializer};
use toml::Spanned;

use super::units::{ByteSize, Seconds};
use super::*;
use crate::secret::SecretString;

/// TLS on a listener or toward an upstream.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TlsMode {
    None,
    Starttls,
    Implicit,
}

/// Whether MAIL needs AUTH on a listener.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    /// Every client must AUTH before MAIL.
    Required,
    /// A client in a user's `networks` is that user without AUTH; others must AUTH.
    Optional,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UpstreamKind {
    Smtp,
    Outbox,
}

/// How postern authenticates to an SMTP provider.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UpstreamAuth {
    /// PLAIN, else LOGIN, as offered.
    Auto,
    Plain,
    Login,
    /// Google's and Microsoft's SASL XOAUTH2, with a token from `[upstream.oauth2]`.
    Xoauth2,
    /// RFC 7628 OAUTHBEARER, with a token from `[upstream.oauth2]`.
    Oauthbearer,
}

impl UpstreamAuth {
    /// Whether the mechanism takes an OAuth2 bearer token.
    pub fn is_oauth(self) -> bool {
        matches!(self, UpstreamAuth::Xoauth2 | UpstreamAuth::Oauthbearer)
    }
}

/// The OAuth2 grant that gets tokens.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Grant {
    /// App-only (Microsoft 365): client id and secret.
    ClientCredentials,
    /// Delegated (Gmail, Microsoft 365): a refresh token from a file.
    RefreshToken,
}

/// `[upstream.oauth2]` (or `[upstream.account.oauth2]`): where and how tokens
/// are fetched.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OAuth2Config {
    pub token_url: Spanned<String>,
    pub grant: Spanned<Grant>,
    pub client_id: Spanned<String>,
    pub client_secret_env: Option<Spanned<String>>,
    pub client_secret_file: Option<Spanned<PathBuf>>,
    /// grant = "refresh_token": the file holding it; a rotated one is written back.
    pub refresh_token_file: Option<Spanned<PathBuf>>,
    pub scope: Option<Spanned<String>>,
}

impl OAuth2Config {
    /// Where the client secret comes from, if anywhere.
    pub fn client_secret(&self) -> Option<Secret> {
        if let Some(v) = &self.client_secret_env {
            return Some(Secret::Env(v.get_ref().clone()));
        }
        self.client_secret_file
            .as_ref()
            .map(|p| Secret::File(p.get_ref().clone()))
    }
}

/// `[[upstream.account]]`: one provider credential, used for the envelope
/// sender equal to its `username` (DirectMail: one SMTP password per sender).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccountConfig {
    pub username: Spanned<String>,
    pub password: Option<InlinePassword>,
    pub password_env: Option<Spanned<String>>,
    pub password_file: Option<Spanned<PathBuf>>,
    /// This account's SASL mechanism (`auto` when absent).
    pub auth: Option<Spanned<UpstreamAuth>>,
    /// `[upstream.account.oauth2]`: this account's token settings, for
    /// `auth = "xoauth2" | "oauthbearer"`; its tokens are cached apart.
    pub oauth2: Option<OAuth2Config>,
}

impl AccountConfig {
    /// The mechanism asked for; `Auto` when not given.
    pub fn auth_mode(&self) -> UpstreamAuth {
        self.auth
            .as_ref()
            .map_or(UpstreamAuth::Auto, |a| *a.get_ref())
    }

    /// The configured secret, if any (validation guarantees exactly one source).
    pub fn secret(&self) -> Option<Secret> {
        if let Some(p) = &self.password {
            return Some(Secret::Inline(p.0.get_ref().clone()));
        }
        if let Some(v) = &self.password_env {
            return Some(Secret::Env(v.get_ref().clone()));
        }
        self.password_file
            .as_ref()
            .map(|p| Secret::File(p.get_ref().clone()))
    }
}

/// `[server]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Name in the greeting and the EHLO reply, and the EHLO name postern gives upstream.
    #[serde(default = "default_hostname")]
    pub hostname: String,
    /// On SIGTERM, transactions in flight may finish for this long.
    #[serde(default = "default_shutdown_grace")]
    pub shutdown_grace: Seconds,
    #[serde(default)]
    pub log_format: LogFormat,
    /// How long a successful AUTH is remembered, so the same user, stored
    /// hash and password skip argon2 (0: every AUTH checks the hash).
    #[serde(default = "default_auth_cache_ttl")]
    pub auth_cache_ttl: Seconds,
    /// Password checks run at once (0: one fewer than the cores, at least one).
    #[serde(default)]
    pub auth_workers: u32,
    /// Password checks that may wait for a worker; an AUTH beyond them is
    /// answered 454 4.7.0 without a check.
    #[serde(default = "default_auth_queue")]
    pub auth_queue: u32,
    /// Threads that run the sessions, read at start (0: one fewer than the
    /// cores, at least one).
    #[serde(default)]
    pub worker_threads: u32,
}

fn default_auth_queue() -> u32 {
    DEFAULT_AUTH_QUEUE
}

fn default_auth_cache_ttl() -> Seconds {
    Seconds(DEFAULT_AUTH_CACHE_TTL)
}

fn default_hostname() -> String {
    DEFAULT_HOSTNAME.to_owned()
}
fn default_shutdown_grace() -> Seconds {
    Seconds(DEFAULT_SHUTDOWN_GRACE)
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            hostname: default_hostname(),
            shutdown_grace: default_shutdown_grace(),
            log_format: LogFormat::Text,
            auth_cache_ttl: default_auth_cache_ttl(),
            auth_workers: 0,
            auth_queue: DEFAULT_AUTH_QUEUE,
            worker_threads: 0,
        }
    }
}

/// `[[listener]]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerConfig {
    pub name: Spanned<String>,
    pub addr: Spanned<SocketAddr>,
    #[serde(default = "default_listener_tls")]
    pub tls: Spanned<TlsMode>,
    #[serde(default = "default_auth_mode")]
    pub auth: AuthMode,
    /// AUTH before TLS. When absent: allowed only on loopback listen addresses.
    pub allow_plaintext_auth: Option<bool>,
    pub proxy_protocol: Option<Spanned<bool>>,
    #[serde(default, deserialize_with = "networks")]
    pub proxy_from: Vec<IpNet>,
}

fn default_listener_tls() -> Spanned<TlsMode> {
    Spanned::new(0..0, TlsMode::None)
}
fn default_auth_mode() -> AuthMode {
    AuthMode::Required
}

impl ListenerConfig {
    /// Whether AUTH may run before TLS on this listener.
    pub fn plaintext_auth_allowed(&self) -> bool {
        self.allow_plaintext_auth
            .unwrap_or_else(|| self.addr.get_ref().ip().is_loopback())
    }
}

/// `[tls]`: the server certificate for STARTTLS and implicit-TLS listeners.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    pub cert: Spanned<PathBuf>,
    pub key: Spanned<PathBuf>,
}

/// `[metrics]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    pub addr: SocketAddr,
}

/// `[limits]` and `[user.limits]`: every key optional so a user can override one.
/// Enforcement of rates and connection caps lives in `limits.rs` (a later step);
/// sizes and recipient counts are enforced by the session.
#[derive(Clone, Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    pub max_message_size: Option<ByteSize>,
    pub max_recipients: Option<u32>,
    pub messages_per_minute: Option<u32>,
    pub recipients_per_hour: Option<u32>,
    pub max_connections_per_user: Option<u32>,
    pub max_connections_per_ip: Option<u32>,
    pub max_connections: Option<u32>,
    pub idle_timeout: Option<Seconds>,
    pub auth_failures_per_ip_per_minute: Option<u32>,
}

/// Limits with every default filled in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    pub max_message_size: u64,
    pub max_recipients: u32,
    pub messages_per_minute: u32,
    pub recipients_per_hour: u32,
    pub max_connections_per_user: u32,
    pub max_connections_per_ip: u32,
    pub max_connections: u32,
    pub idle_timeout: Duration,
    pub auth_failures_per_ip_per_minute: u32,
}

impl LimitsConfig {
    /// `self` over `base`.
    pub fn over(&self, base: &Limits) -> Limits {
        Limits {
            max_message_size: self.max_message_size.map_or(base.max_message_size, |s| s.0),
            max_recipients: self.max_recipients.unwrap_or(base.max_recipients),
            messages_per_minute: self.messages_per_minute.unwrap_or(base.messages_per_minute),
            recipients_per_hour: self.recipients_per_hour.unwrap_or(base.recipients_per_hour),
            max_connections_per_user: self
                .max_connections_per_user
                .unwrap_or(base.max_connections_per_user),
            max_connections_per_ip: self
                .max_connections_per_ip
                .unwrap_or(base.max_connections_per_ip),
            max_connections: self.max_connections.unwrap_or(base.max_connections),
            idle_timeout: self.idle_timeout.map_or(base.idle_timeout, |s| s.0),
            auth_failures_per_ip_per_minute: self
                .auth_failures_per_ip_per_minute
                .unwrap_or(base.auth_failures_per_ip_per_minute),
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
            max_recipients: DEFAULT_MAX_RECIPIENTS,
            messages_per_minute: DEFAULT_MESSAGES_PER_MINUTE,
            recipients_per_hour: DEFAULT_RECIPIENTS_PER_HOUR,
            max_connections_per_user: DEFAULT_MAX_CONNECTIONS_PER_USER,
            max_connections_per_ip: DEFAULT_MAX_CONNECTIONS_PER_IP,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            auth_failures_per_ip_per_minute: DEFAULT_AUTH_FAILURES_PER_IP_PER_MINUTE,
        }
    }
}

/// Where a secret comes from. `Debug` never shows an inline password.
#[derive(Clone, PartialEq, Eq)]
pub enum Secret {
    Inline(String),
    Env(String),
    File(PathBuf),
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Secret::Inline(_) => f.write_str("Inline(<redacted>)"),
            Secret::Env(v) => write!(f, "Env({v})"),
            Secret::File(p) => write!(f, "File({})", p.display()),
        }
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Secret::Inline(_) => f.write_str("inline password (demo only)"),
            Secret::Env(v) => write!(f, "environment variable {v}"),
            Secret::File(p) => write!(f, "file {}", p.display()),
        }
    }
}

impl Secret {
    /// Reads the secret. The error names where it looked, never the value.
    pub fn resolve(&self) -> Result<SecretString, String> {
        match self {
            Secret::Inline(p) => Ok(SecretString::from(p.as_str())),
            Secret::Env(var) => std::env::var(var)
                .map(SecretString::new)
                .map_err(|_| format!("environment variable {var} is not set")),
            Secret::File(path) => std::fs::read_to_string(path)
                .map(|s| {
                    let s = SecretString::new(s);
                    SecretString::from(s.expose().trim_end_matches(['\r', '\n']))
                })
                .map_err(|e| format!("cannot read password file {}: {e}", path.display())),
        }
    }
}

/// An inline `password = "..."`; `Debug` prints `<redacted>`.
#[derive(Clone, Deserialize)]
#[serde(transparent)]
pub struct InlinePassword(pub Spanned<String>);

impl InlinePassword {
    pub fn span(&self) -> Range<usize> {
        self.0.span()
    }
}

impl fmt::Debug for InlinePassword {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// `[[upstream]]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    pub name: Spanned<String>,
    pub kind: Spanned<UpstreamKind>,
    /// `host:port` (smtp).
    pub addr: Option<Spanned<String>>,
    pub tls: Option<Spanned<TlsMode>>,
    pub tls_verify: Option<bool>,
    /// Extra trust anchors (PEM) instead of the webpki roots.
    pub ca_file: Option<Spanned<PathBuf>>,
    pub username: Option<Spanned<String>>,
    /// The SASL mechanism toward the provider; default `auto`.
    pub auth: Option<Spanned<UpstreamAuth>>,
    /// Token settings for `auth = "xoauth2" | "oauthbearer"`.
    pub oauth2: Option<OAuth2Config>,
    /// One credential per sender address, instead of `username` and a password.
    #[serde(default)]
    pub account: Vec<AccountConfig>,
    /// Inline password (demos only): never shown by `Debug`.
    pub password: Option<InlinePassword>,
    pub password_env: Option<Spanned<String>>,
    pub password_file: Option<Spanned<PathBuf>>,
    pub max_connections: Option<u32>,
    pub pool: Option<bool>,
    pub pool_wait: Option<Seconds>,
    pub health_check_interval: Option<Seconds>,
    pub idle_timeout: Option<Seconds>,
    pub max_recipients: Option<u32>,
    pub max_message_size: Option<ByteSize>,
    /// Outbox directory (outbox).
    pub dir: Option<Spanned<PathBuf>>,
    // Delivery keys (spool, fallback, fair share, quotas): see `config/spool.rs`.
    pub delivery: Option<Spanned<super::Delivery>>,
    #[serde(default)]
    pub fallback: Vec<Spanned<String>>,
    pub max_upstream_connections_per_user: Option<u32>,
    pub messages_per_day: Option<u32>,
    pub recipients_per_day: Option<u32>,
}

impl UpstreamConfig {
    pub fn name(&self) -> &str {
        self.name.get_ref()
    }

    /// The configured secret, if any (validation guarantees at most one source).
    pub fn secret(&self) -> Option<Secret> {
        if let Some(p) = &self.password {
            return Some(Secret::Inline(p.0.get_ref().clone()));
        }
        if let Some(v) = &self.password_env {
            return Some(Secret::Env(v.get_ref().clone()));
        }
        self.password_file
            .as_ref()
            .map(|p| Secret::File(p.get_ref().clone()))
    }

    /// Host part of `addr`, for SNI and certificate checks.
    pub fn host(&self) -> Option<String> {
        let addr = self.addr.as_ref()?.get_ref();
        let host = addr.rsplit_once(':').map_or(addr.as_str(), |(h, _)| h);
        Some(
            host.trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned(),
        )
    }

    /// `auth`, or `auto`.
    pub fn auth_mode(&self) -> UpstreamAuth {
        self.auth
            .as_ref()
            .map_or(UpstreamAuth::Auto, |a| *a.get_ref())
    }

    /// The port of `addr`, if it has one that parses.
    pub fn port(&self) -> Option<u16> {
        let addr = self.addr.as_ref()?.get_ref();
        addr.rsplit_once(':')?.1.parse().ok()
    }

    /// `tls` as written; else implicit TLS on port 465 (SMTPS, RFC 8314) and
    /// STARTTLS on any other port. Clear text is never a default: `"none"`
    /// must be written out.
    pub fn tls_mode(&self) -> TlsMode {
        match &self.tls {
            Some(t) => *t.get_ref(),
            None if self.port() == Some(465) => TlsMode::Implicit,
            None => TlsMode::Starttls,
        }
    }
}

/// `[[user]]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserConfig {
    pub name: Spanned<String>,
    /// argon2 PHC string (`$argon2id$...`) or a bcrypt hash (`$2b$...`).
    pub password_hash: Option<Spanned<String>>,
    /// May send from these networks without AUTH on an `auth = "optional"` listener.
    #[serde(default, deserialize_with = "networks")]
    pub networks: Vec<IpNet>,
    /// Upstream name; may be left out when there is exactly one upstream.
    pub upstream: Option<Spanned<String>>,
    /// Envelope senders the user may use: `a@b`, `*@domain`, `*`. Empty: only `rewrite_sender`'s
    /// effect matters, any sender is accepted when rewrite_sender is set, none otherwise.
    #[serde(default)]
    pub allowed_senders: Vec<Spanned<String>>,
    /// Envelope MAIL FROM sent upstream instead of the client's.
    pub rewrite_sender: Option<Spanned<String>>,
    /// Also rewrite the header `From:` (original kept as `Reply-To:`).
    #[serde(default)]
    pub rewrite_header_from: bool,
    #[serde(default)]
    pub limits: LimitsConfig,
}

impl UserConfig {
    pub fn name(&self) -> &str {
        self.name.get_ref()
    }
}

/// The whole file as serde sees it; `Config::from_toml_str` turns it into a `Config`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    #[serde(default)]
    pub(super) server: ServerConfig,
    #[serde(default)]
    pub(super) listener: Vec<ListenerConfig>,
    pub(super) tls: Option<TlsConfig>,
    pub(super) metrics: Option<MetricsConfig>,
    pub(super) limits: Option<Spanned<LimitsConfig>>,
    #[serde(default)]
    pub(super) upstream: Vec<UpstreamConfig>,
    #[serde(default)]
    pub(super) user: Vec<UserConfig>,
    pub(super) spool: Option<super::SpoolConfig>,
    pub(super) cluster: Option<super::cluster::ClusterConfig>,
}

/// Parses one `networks` / `proxy_from` entry: a network (`192.168.10.0/24`) or a
/// bare address (`192.168.10.23`, taken as /32 or /128).
///
/// # Errors
/// A message proposing both readings when the network has host bits set.
pub fn parse_network(text: &str) -> Result<IpNet, String> {
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Ok(IpNet::from(ip));
    }
    let net: IpNet = text.parse().map_err(|_| {
        format!(
            "{text:?} is not an address or a network, e.g. \"192.168.10.23\" or \"192.168.10.0/24\""
        )
    })?;
    if net.addr() != net.network() {
        let host = IpNet::from(net.addr());
        return Err(format!(
            "{text:?} has host bits set: write {:?} for that one address, or {:?} for the whole network",
            host.to_string(),
            net.trunc().to_string()
        ));
    }
    Ok(net)
}

fn networks<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<IpNet>, D::Error> {
    let raw: Vec<String> = Vec::deserialize(d)?;
    raw.iter()
        .map(|s| parse_network(s).map_err(de::Error::custom))
        .collect()
}
