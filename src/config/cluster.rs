//! `[cluster]`: several replicas sharing their limits through one Redis
//! (DESIGN.md "More than one machine"). Only named here; `crate::cluster`
//! connects and decides. Without the table nothing of it exists.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::types::Secret;
use super::units::Seconds;

/// How long one Redis decision may take before the replica decides alone.
pub const DEFAULT_CLUSTER_TIMEOUT: Duration = Duration::from_millis(250);
/// How long a connection lease lives unless its holder renews it.
pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(15);
pub const DEFAULT_KEY_PREFIX: &str = "postern";

/// What a replica does when Redis does not answer in time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum OnRedisError {
    /// Decide with this replica's own limits, divided by `replicas`; counted
    /// in `postern_cluster_fallback_total` and logged once per episode.
    #[default]
    Local,
    /// Answer `451 4.3.0` rather than risk exceeding a shared limit.
    Refuse,
}

/// `[cluster]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// `redis://host:port/db` or `rediss://host:port/db` (TLS). No password
    /// in the URL: it comes from `password_env` or `password_file`.
    pub redis: Spanned<String>,
    /// The ACL user (Redis 6+); without it AUTH sends only the password.
    pub username: Option<String>,
    pub password_env: Option<Spanned<String>>,
    pub password_file: Option<Spanned<PathBuf>>,
    /// PEM CA (or the server's own certificate) for `rediss://`, instead of the system roots.
    pub ca_file: Option<Spanned<PathBuf>>,
    #[serde(default)]
    pub on_redis_error: OnRedisError,
    /// How many replicas share the limits: the local fallback divides by it.
    pub replicas: Option<Spanned<u32>>,
    pub timeout: Option<Seconds>,
    pub lease_ttl: Option<Spanned<Seconds>>,
    /// The first part of every key, so several sites can share one Redis.
    pub key_prefix: Option<String>,
}

impl ClusterConfig {
    /// Where the Redis password comes from, if anywhere.
    pub fn secret(&self) -> Option<Secret> {
        if let Some(v) = &self.password_env {
            return Some(Secret::Env(v.get_ref().clone()));
        }
        self.password_file
            .as_ref()
            .map(|p| Secret::File(p.get_ref().clone()))
    }

    pub fn replicas(&self) -> u32 {
        self.replicas.as_ref().map_or(1, |r| *r.get_ref()).max(1)
    }

    pub fn timeout(&self) -> Duration {
        self.timeout.map_or(DEFAULT_CLUSTER_TIMEOUT, |s| s.0)
    }

    pub fn lease_ttl(&self) -> Duration {
        self.lease_ttl
            .as_ref()
            .map_or(DEFAULT_LEASE_TTL, |s| s.get_ref().0)
    }

    pub fn key_prefix(&self) -> &str {
        self.key_prefix.as_deref().unwrap_or(DEFAULT_KEY_PREFIX)
    }

    /// The URL's problems, in words: scheme, and a password written into it.
    pub fn url_problem(&self) -> Option<String> {
        let url = self.redis.get_ref();
        let Some(rest) = url
            .strip_prefix("redis://")
            .or_else(|| url.strip_prefix("rediss://"))
        else {
            return Some(
                "must start with redis:// or rediss:// (TLS), e.g. \"redis://127.0.0.1:6379/0\""
                    .to_owned(),
            );
        };
        let authority = rest.split('/').next().unwrap_or_default();
        if let Some((userinfo, _)) = authority.rsplit_once('@') {
            if userinfo.contains(':') {
                return Some(
                    "the URL holds a password: put it in password_env or password_file instead"
                        .to_owned(),
                );
            }
            return Some("put the user name in `username`, not in the URL".to_owned());
        }
        if authority.is_empty() {
            return Some("names no host".to_owned());
        }
        None
    }
}
