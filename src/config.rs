//! Configuration: the TOML schema (documented key by key in docs/configuration.md), parsed once and validated whole.
//!
//! A file goes through two passes, and every mistake of both is reported in
//! one run, each naming the file, the line of the key and the key:
//! - `shape` checks every table and key against the schema in `keys`
//!   (unknown keys with "did you mean", values of the wrong type in words,
//!   `[user]` for `[[user]]`); wrong keys are blanked for the second pass.
//! - serde fills the types of `types`, and `validate` checks the rules that
//!   span keys (names unique, users point at existing upstreams, TLS listeners
//!   have a certificate, a listener somebody can use, ...).
//!
//! Relative paths resolve against the config file's directory (`paths`).
//! Secrets are not read here: `Secret::resolve` reads them when `run` starts,
//! so `check` works on a machine that does not hold them. `summary` is what
//! `postern check` prints, with the limits the server enforces; `runtime`
//! holds the checks that touch the machine (directories, ports).

mod cluster;
pub mod keys;
mod paths;
mod reference;
mod runtime;
mod shape;
pub mod spool;
mod suggest;
mod summary;
mod types;
mod units;
mod upstream_rules;
mod validate;
mod values;

use std::path::{Path, PathBuf};
use std::time::Duration;

pub use cluster::{
    ClusterConfig, DEFAULT_CLUSTER_TIMEOUT, DEFAULT_KEY_PREFIX, DEFAULT_LEASE_TTL, OnRedisError,
};
pub use keys::{Key, Kind, TABLES, Table};
pub use paths::resolve;
pub use reference::markdown_reference;
pub use runtime::{bind_hint, cores, one_fewer_than};
pub use spool::{Delivery, SpoolConfig, SpoolSettings};
pub use summary::EffectiveLimits;
pub use types::*;
pub use units::{ByteSize, Seconds};
pub use upstream_rules::check_token_url;

use types::RawConfig;
use validate::Validator;

/// The default config file for `run` and `check` when neither `--config` nor
/// `POSTERN_CONFIG` is given. A build may bake in another one
/// (`POSTERN_DEFAULT_CONFIG=/etc/postern/postern.toml cargo build`, as the
/// Debian package does).
pub const DEFAULT_CONFIG_PATH: &str = match option_env!("POSTERN_DEFAULT_CONFIG") {
    Some(p) => p,
    None => "config/postern.toml",
};
/// The environment variable that names the config file when `--config` is not given.
pub const CONFIG_ENV: &str = "POSTERN_CONFIG";
pub const DEFAULT_HOSTNAME: &str = "postern.localdomain";
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(30);
pub const DEFAULT_AUTH_CACHE_TTL: Duration = Duration::from_secs(600);
/// `[server] auth_queue`: password checks that may wait for a worker.
pub const DEFAULT_AUTH_QUEUE: u32 = 64;
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
    /// TOML syntax: toml's message names the line and column.
    #[error("{path}: {message}")]
    Parse { path: String, message: String },
    /// A key that is wrong, alone or with others.
    #[error("{path}: line {line}: {key}: {message}")]
    Invalid {
        path: String,
        line: usize,
        key: String,
        message: String,
    },
    /// Several of the above, in line order.
    #[error("{}", render_all(.0))]
    Several(Vec<ConfigError>),
}

fn render_all(errors: &[ConfigError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

impl ConfigError {
    /// One error as itself, several as `Several`, sorted by line.
    pub(crate) fn from_list(mut errors: Vec<ConfigError>) -> ConfigError {
        errors.sort_by_key(|e| match e {
            ConfigError::Invalid { line, .. } => *line,
            _ => 0,
        });
        if errors.len() == 1 {
            errors.remove(0)
        } else {
            ConfigError::Several(errors)
        }
    }

    /// Whether one of the errors is in `[tls]` (the listener certificate or key).
    pub fn in_tls(&self) -> bool {
        self.problems()
            .iter()
            .any(|e| matches!(e, ConfigError::Invalid { key, .. } if key.starts_with("tls.")))
    }

    /// Every single error in this one.
    pub fn problems(&self) -> Vec<&ConfigError> {
        match self {
            ConfigError::Several(list) => list.iter().flat_map(ConfigError::problems).collect(),
            other => vec![other],
        }
    }
}

/// A loaded, validated configuration.
#[derive(Clone, Debug)]
pub struct Config {
    /// Where it came from, for messages.
    pub source: String,
    /// The directory relative paths were resolved against (`None`: left as written).
    pub base_dir: Option<PathBuf>,
    pub server: ServerConfig,
    pub listeners: Vec<ListenerConfig>,
    pub tls: Option<TlsConfig>,
    pub metrics: Option<MetricsConfig>,
    /// `[limits]` with defaults filled in.
    pub limits: Limits,
    pub upstreams: Vec<UpstreamConfig>,
    pub users: Vec<UserConfig>,
    /// `[spool]`, when any upstream spools.
    pub spool: Option<SpoolConfig>,
    /// `[cluster]`: limits shared with other replicas through Redis.
    pub cluster: Option<ClusterConfig>,
    /// Things worth saying that are not errors (inline passwords, ...).
    pub warnings: Vec<String>,
}

impl Config {
    /// Reads and validates a config file; relative paths in it resolve against its directory.
    ///
    /// # Errors
    /// `ConfigError` naming the file, the line and the key of every mistake.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
        let base = absolute
            .parent()
            .map_or_else(|| PathBuf::from("/"), Path::to_path_buf);
        Config::parse(&text, &path.display().to_string(), Some(&base))
    }

    /// Parses and validates TOML text; `source` names it in messages. Relative
    /// paths are left as written (relative to the working directory).
    ///
    /// # Errors
    /// `ConfigError` naming the line and the key of every mistake.
    pub fn from_toml_str(text: &str, source: &str) -> Result<Config, ConfigError> {
        Config::parse(text, source, None)
    }

    /// Parses and validates TOML text whose relative paths resolve against `base`.
    ///
    /// # Errors
    /// `ConfigError` naming the line and the key of every mistake.
    pub fn from_toml_str_in(text: &str, source: &str, base: &Path) -> Result<Config, ConfigError> {
        Config::parse(text, source, Some(base))
    }

    fn parse(text: &str, source: &str, base: Option<&Path>) -> Result<Config, ConfigError> {
        let shape = shape::check(text, source)?;
        let mut errors = shape.errors;
        if !shape.second_pass {
            return Err(ConfigError::from_list(errors));
        }
        let raw: RawConfig = match toml::from_str(&shape.cleaned) {
            Ok(raw) => raw,
            Err(e) => {
                // With first-pass errors, a missing key is their consequence: say only those.
                if errors.is_empty() {
                    errors.push(ConfigError::Parse {
                        path: source.to_owned(),
                        message: e.to_string().trim_end().to_owned(),
                    });
                }
                return Err(ConfigError::from_list(errors));
            }
        };
        let mut config = Config {
            source: source.to_owned(),
            base_dir: base.map(Path::to_path_buf),
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
            spool: raw.spool,
            cluster: raw.cluster,
            warnings: Vec::new(),
        };
        if let Some(base) = base {
            paths::resolve_all(&mut config, base);
        }
        let limits_span = raw.limits.as_ref().map_or(0..0, |l| l.span());
        let validated = Validator {
            text: &shape.cleaned,
            config,
            limits_span,
            lines: shape.lines,
            blanked: shape.blanked,
            blanked_at: shape.blanked_at,
            errors: Vec::new(),
        }
        .run();
        match validated {
            Ok(c) if errors.is_empty() => Ok(c),
            Ok(_) => Err(ConfigError::from_list(errors)),
            Err(more) => {
                errors.extend(more);
                Err(ConfigError::from_list(errors))
            }
        }
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

#[cfg(test)]
mod schema_tests;
#[cfg(test)]
mod tests;
