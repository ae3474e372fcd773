//! Configuration: the TOML schema of DESIGN.md, parsed once and validated whole.
//!
//! Parsing is serde with `deny_unknown_fields`, so an unknown key is an error
//! that names the key and its line. `validate` then checks the rules that span
//! several keys (names unique, users point at existing upstreams, TLS listeners
//! have a certificate, ...) and reports the key and line of the offending value.
//! Secrets are not read here: `Secret::resolve` reads them when `run` starts, so
//! `check` works on a machine that does not hold them.

use std::fmt;
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;
use serde::Deserialize;
use serde::de::{self, Deserializer};
use toml::Spanned;

/// The default config file for `run` and `check`.
pub const DEFAULT_CONFIG_PATH: &str = "config/postern.toml";
pub const DEFAULT_HOSTNAME: &str = "postern.localdomain";
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(30);
pub const DEFAULT_MAX_MESSAGE_SIZE: u64 = 8 * 1024 * 1024;
pub const DEFAULT_MAX_RECIPIENTS: u32 = 100;
pub const DEFAULT_MESSAGES_PER_MINUTE: u32 = 60;
pub const DEFAULT_RECIPIENTS_PER_HOUR: u32 = 1000;
pub const DEFAULT_MAX_CONNECTIONS_PER_USER: u32 = 10;
pub const DEFAULT_MAX_CONNECTIONS_PER_IP: u32 = 20;
pub const DEFAULT_MAX_CONNECTIONS: u32 = 1000;
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(300);
pub const DEFAULT_AUTH_FAILURES_PER_IP_PER_MINUTE: u32 = 10;
pub const DEFAULT_UPSTREAM_MAX_CONNECTIONS: u32 = 10;
pub const DEFAULT_POOL_WAIT: Duration = Duration::from_secs(10);
pub const DEFAULT_HEALTH_CHECK_INTERVAL: Duration = Duration::from_secs(300);
pub const DEFAULT_UPSTREAM_IDLE_TIMEOUT: Duration = Duration::from_secs(25);

/// A configuration error: where it is and what is wrong.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: cannot read: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    /// TOML syntax, an unknown key, a bad value: toml's message names the line and key.
    #[error("{path}: {message}")]
    Parse { path: String, message: String },
    /// A rule that spans keys.
    #[error("{path}: line {line}: {key}: {message}")]
    Invalid {
        path: String,
        line: usize,
        key: String,
        message: String,
    },
}

/// A size in bytes: an integer or `"8MiB"`, `"512KiB"`, `"10MB"`, `"1GiB"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ByteSize(pub u64);

/// A duration: integer seconds or `"30s"`, `"5m"`, `"1h"`, `"250ms"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Seconds(pub Duration);

impl ByteSize {
    /// Parses `"8MiB"`-style sizes (binary and decimal units, case-insensitive).
    pub fn parse(text: &str) -> Result<ByteSize, String> {
        let t = text.trim();
        let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        let n: u64 = num
            .parse()
            .map_err(|_| format!("invalid size {text:?}: expected e.g. 8MiB or 1048576"))?;
        let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "k" | "kb" => 1000,
            "kib" => 1 << 10,
            "m" | "mb" => 1_000_000,
            "mib" => 1 << 20,
            "g" | "gb" => 1_000_000_000,
            "gib" => 1 << 30,
            other => return Err(format!("invalid size unit {other:?} in {text:?}")),
        };
        n.checked_mul(mult)
            .map(ByteSize)
            .ok_or_else(|| format!("size {text:?} is too large"))
    }
}

impl Seconds {
    /// Parses `"30s"`-style durations.
    pub fn parse(text: &str) -> Result<Seconds, String> {
        let t = text.trim();
        let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        let n: u64 = num
            .parse()
            .map_err(|_| format!("invalid duration {text:?}: expected e.g. 30s, 5m or 60"))?;
        let d = match unit.trim() {
            "" | "s" => Duration::from_secs(n),
            "ms" => Duration::from_millis(n),
            "m" => Duration::from_secs(n.saturating_mul(60)),
            "h" => Duration::from_secs(n.saturating_mul(3600)),
            other => return Err(format!("invalid duration unit {other:?} in {text:?}")),
        };
        Ok(Seconds(d))
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Int(i64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Int(n) if n >= 0 => Ok(ByteSize(n as u64)),
            Raw::Int(n) => Err(de::Error::custom(format!(
                "size must not be negative, got {n}"
            ))),
            Raw::Text(t) => ByteSize::parse(&t).map_err(de::Error::custom),
        }
    }
}

impl<'de> Deserialize<'de> for Seconds {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Int(i64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Int(n) if n >= 0 => Ok(Seconds(Duration::from_secs(n as u64))),
            Raw::Int(n) => Err(de::Error::custom(format!(
                "duration must not be negative, got {n}"
            ))),
            Raw::Text(t) => Seconds::parse(&t).map_err(de::Error::custom),
        }
    }
}

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
    #[serde(default)]
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
    pub fn resolve(&self) -> Result<String, String> {
        match self {
            Secret::Inline(p) => Ok(p.clone()),
            Secret::Env(var) => {
                std::env::var(var).map_err(|_| format!("environment variable {var} is not set"))
            }
            Secret::File(path) => std::fs::read_to_string(path)
                .map(|s| s.trim_end_matches(['\r', '\n']).to_owned())
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

    pub fn tls_mode(&self) -> TlsMode {
        self.tls
            .as_ref()
            .map_or(TlsMode::Implicit, |t| *t.get_ref())
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
    #[serde(default)]
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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    server: ServerConfig,
    #[serde(default)]
    listener: Vec<ListenerConfig>,
    tls: Option<TlsConfig>,
    metrics: Option<MetricsConfig>,
    limits: Option<Spanned<LimitsConfig>>,
    #[serde(default)]
    upstream: Vec<UpstreamConfig>,
    #[serde(default)]
    user: Vec<UserConfig>,
}

/// A loaded, validated configuration.
#[derive(Clone, Debug)]
pub struct Config {
    /// Where it came from, for messages.
    pub source: String,
    pub server: ServerConfig,
    pub listeners: Vec<ListenerConfig>,
    pub tls: Option<TlsConfig>,
    pub metrics: Option<MetricsConfig>,
    /// `[limits]` with defaults filled in.
    pub limits: Limits,
    pub upstreams: Vec<UpstreamConfig>,
    pub users: Vec<UserConfig>,
    /// Things worth saying that are not errors (inline passwords, ...).
    pub warnings: Vec<String>,
}

impl Config {
    /// Reads and validates a config file.
    ///
    /// # Errors
    /// `ConfigError` naming the file, the line and the key.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Config::from_toml_str(&text, &path.display().to_string())
    }

    /// Parses and validates TOML text; `source` names it in messages.
    pub fn from_toml_str(text: &str, source: &str) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: source.to_owned(),
            message: e.to_string().trim_end().to_owned(),
        })?;
        let config = Config {
            source: source.to_owned(),
            server: raw.server,
            listeners: raw.listener,
            tls: raw.tls,
            metrics: raw.metrics,
            limits: raw
                .limits
                .as_ref()
                .map_or_else(Limits::default, |l| l.get_ref().over(&Limits::default())),
            upstreams: raw.upstream,
            users: raw.user,
            warnings: Vec::new(),
        };
        let limits_span = raw.limits.as_ref().map_or(0..0, |l| l.span());
        Validator {
            text,
            config,
            limits_span,
        }
        .run()
    }

    pub fn upstream(&self, name: &str) -> Option<&UpstreamConfig> {
        self.upstreams.iter().find(|u| u.name() == name)
    }

    /// The upstream a user relays through.
    pub fn user_upstream(&self, user: &UserConfig) -> Option<&UpstreamConfig> {
        match &user.upstream {
            Some(name) => self.upstream(name.get_ref()),
            None => self.upstreams.first(),
        }
    }

    /// Effective limits for a user: `[user.limits]` over `[limits]`.
    pub fn user_limits(&self, user: &UserConfig) -> Limits {
        user.limits.over(&self.limits)
    }
}

mod validate;

use validate::Validator;

#[cfg(test)]
mod tests;
