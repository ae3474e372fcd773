//! Where accepted mail goes: an SMTP provider or the local outbox. `Upstream`
//! is the runtime view of one `[[upstream]]`; its `Target` is what delivers:
//! a `Pool` of connections (`pool`, `client`) reached through an immutable
//! `Dial` (`dial`), or an `Outbox` directory (`outbox`).
//!
//! Ownership runs one way: `Upstream → Pool → Client → Dial`. Nothing below
//! points back up.

pub mod client;
pub mod dial;
pub mod oauth2;
pub mod outbox;
pub mod pool;
pub mod quota;

use std::sync::Arc;

use crate::config::{Config, TlsMode, UpstreamConfig, UpstreamKind};
use crate::metrics::Metrics;
use crate::net::Connector;
use crate::refusal::{Refusal, SetupFailure};
use crate::smtp::reply::Reply;

/// What an upstream's EHLO reply offered.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Capabilities {
    pub pipelining: bool,
    /// RFC 3030 CHUNKING: the body may go in BDAT chunks.
    pub chunking: bool,
    pub size: Option<u64>,
    pub eightbitmime: bool,
    pub smtputf8: bool,
    pub dsn: bool,
    pub starttls: bool,
    pub enhanced_status_codes: bool,
    pub auth_plain: bool,
    pub auth_login: bool,
    pub auth_xoauth2: bool,
    pub auth_oauthbearer: bool,
}

impl Capabilities {
    /// Reads the keywords of a 250 EHLO reply (the first line is the greeting).
    pub fn from_ehlo(reply: &Reply) -> Capabilities {
        let mut caps = Capabilities::default();
        for line in reply.lines.iter().skip(1) {
            // Old servers say "AUTH=PLAIN LOGIN".
            let line = line
                .replacen("AUTH=", "AUTH ", 1)
                .replacen("auth=", "auth ", 1);
            let mut words = line.split_ascii_whitespace();
            let Some(keyword) = words.next() else {
                continue;
            };
            match keyword.to_ascii_uppercase().as_str() {
                "PIPELINING" => caps.pipelining = true,
                "CHUNKING" => caps.chunking = true,
                "SIZE" => caps.size = Some(words.next().and_then(|n| n.parse().ok()).unwrap_or(0)),
                "8BITMIME" => caps.eightbitmime = true,
                "SMTPUTF8" => caps.smtputf8 = true,
                "DSN" => caps.dsn = true,
                "STARTTLS" => caps.starttls = true,
                "ENHANCEDSTATUSCODES" => caps.enhanced_status_codes = true,
                "AUTH" => {
                    for mech in words {
                        match mech.to_ascii_uppercase().as_str() {
                            "PLAIN" => caps.auth_plain = true,
                            "LOGIN" => caps.auth_login = true,
                            "XOAUTH2" => caps.auth_xoauth2 = true,
                            "OAUTHBEARER" => caps.auth_oauthbearer = true,
                            _ => {}
                        }
                    }
                }
                _ => {}
            }
        }
        caps
    }

    /// What the outbox can take: everything is stored as received.
    pub fn outbox() -> Capabilities {
        Capabilities {
            pipelining: true,
            size: None,
            eightbitmime: true,
            smtputf8: true,
            ..Capabilities::default()
        }
    }
}

/// Why talking to an upstream failed. Never carries a password.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("cannot connect: {0}")]
    Connect(std::io::Error),
    /// TLS toward the provider failed; the words come from `tls::explain`.
    #[error("TLS toward the provider failed: {0}")]
    Tls(String),
    #[error("timed out ({0})")]
    Timeout(&'static str),
    #[error("connection closed by the upstream")]
    Closed,
    #[error("I/O error: {0}")]
    Io(std::io::Error),
    #[error("unreadable reply: {0}")]
    BadReply(String),
    #[error("{0}")]
    Protocol(&'static str),
    /// The upstream refused a set-up step (greeting, EHLO, STARTTLS, AUTH).
    #[error("{0} refused: {1}")]
    Rejected(&'static str, Reply),
    #[error("outbox: {0}")]
    Outbox(std::io::Error),
    /// Every allowed connection stayed busy for `pool_wait`.
    #[error("no upstream connection free")]
    PoolTimeout,
    /// The session's user held `max_upstream_connections_per_user` for `pool_wait`.
    #[error("the user holds its share of upstream connections")]
    UserShareFull,
    /// No OAuth2 token could be had (the endpoint is down or refused).
    #[error("OAuth2: {0}")]
    Token(String),
    /// `[cluster]` with `on_redis_error = "refuse"`: Redis did not answer.
    #[error("shared limits unavailable (Redis)")]
    SharedLimits,
}

impl UpstreamError {
    /// Every `stage` a connection set-up can fail at (`Client::connect`).
    pub const CONNECT_STAGES: &'static [&'static str] = &[
        "connect", "tls", "timeout", "io", "protocol", "auth", "rejected", "token",
    ];

    /// A fixed word for the metrics label.
    pub fn stage(&self) -> &'static str {
        match self {
            UpstreamError::Connect(_) => "connect",
            UpstreamError::Tls(_) => "tls",
            UpstreamError::Timeout(_) => "timeout",
            UpstreamError::Closed | UpstreamError::Io(_) => "io",
            UpstreamError::BadReply(_) | UpstreamError::Protocol(_) => "protocol",
            UpstreamError::Rejected("auth", _) => "auth",
            UpstreamError::Rejected(..) => "rejected",
            UpstreamError::Outbox(_) => "outbox",
            UpstreamError::PoolTimeout | UpstreamError::UserShareFull => "pool_wait",
            UpstreamError::Token(_) => "token",
            UpstreamError::SharedLimits => "shared_limits",
        }
    }

    /// What a client is told when an upstream cannot be reached or set up.
    /// Never 535: the client's own credentials were fine.
    pub fn setup_refusal(&self, upstream: &Arc<str>) -> Refusal {
        let failure = match self {
            UpstreamError::Rejected("auth", _) => SetupFailure::Credentials,
            UpstreamError::PoolTimeout => SetupFailure::PoolFull,
            UpstreamError::UserShareFull => SetupFailure::UserShare,
            UpstreamError::Token(_) => SetupFailure::Token,
            UpstreamError::SharedLimits => return Refusal::SharedLimitsUnavailable,
            UpstreamError::Tls(words) => {
                return Refusal::UpstreamTls {
                    upstream: upstream.clone(),
                    problem: Arc::from(words.as_str()),
                };
            }
            UpstreamError::Protocol(words) => {
                return Refusal::UpstreamTls {
                    upstream: upstream.clone(),
                    problem: Arc::from(*words),
                };
            }
            _ => SetupFailure::Unavailable,
        };
        Refusal::UpstreamSetup {
            upstream: upstream.clone(),
            failure,
        }
    }
}

/// What delivers an upstream's mail.
pub enum Target {
    /// An SMTP provider, through warm connections.
    Smtp(Arc<pool::Pool>),
    /// Files in a directory.
    Outbox(outbox::Outbox),
}

/// One configured upstream, ready to use.
pub struct Upstream {
    pub name: Arc<str>,
    pub kind: UpstreamKind,
    pub addr: String,
    pub max_recipients: Option<u32>,
    pub max_message_size: Option<u64>,
    pub target: Target,
    /// `[[upstream.account]]`: (lower-case sender address, its pool); the
    /// pools share the upstream's `max_connections`. Empty: one account.
    pub accounts: Vec<(String, Arc<pool::Pool>)>,
    /// `delivery`: relay, spool or fallback (issue 12).
    pub delivery: crate::config::Delivery,
    /// `messages_per_day` and `recipients_per_day`; `None` when both are off.
    /// A reload keeps the same numbers' quota (`Policy::build`).
    pub quota: Option<Arc<quota::Quota>>,
}

impl Upstream {
    /// Builds every upstream of a config, reading secrets now. Connections are
    /// opened with `connector` (TCP outside tests).
    ///
    /// # Errors
    /// A message naming the upstream and what is missing (an unset environment variable, a bad CA file).
    pub fn all_from_config(
        config: &Config,
        metrics: &Metrics,
        connector: &Arc<dyn Connector>,
    ) -> Result<Vec<Arc<Upstream>>, String> {
        config
            .upstreams
            .iter()
            .map(|u| Upstream::from_config(config, u, metrics, connector).map(Arc::new))
            .collect()
    }

    /// Builds one upstream of `config` (as `all_from_config` does each).
    ///
    /// # Errors
    /// As `all_from_config`.
    pub fn from_config(
        config: &Config,
        u: &UpstreamConfig,
        metrics: &Metrics,
        connector: &Arc<dyn Connector>,
    ) -> Result<Upstream, String> {
        let name: Arc<str> = Arc::from(u.name());
        let addr = u
            .addr
            .as_ref()
            .map(|a| a.get_ref().clone())
            .unwrap_or_default();
        let mut accounts = Vec::new();
        let target = match (u.kind.get_ref(), &u.dir) {
            (UpstreamKind::Outbox, Some(dir)) => Target::Outbox(
                outbox::Outbox::open(dir.get_ref())
                    .map_err(|e| format!("upstream {name:?}: {e}"))?,
            ),
            (UpstreamKind::Outbox, None) => {
                return Err(format!("upstream {name:?}: an outbox needs `dir`"));
            }
            (UpstreamKind::Smtp, _) => {
                let max = u
                    .max_connections
                    .unwrap_or(crate::config::DEFAULT_UPSTREAM_MAX_CONNECTIONS);
                let settings = pool::Settings {
                    enabled: u.pool.unwrap_or(true),
                    wait: u
                        .pool_wait
                        .map_or(crate::config::DEFAULT_POOL_WAIT, |s| s.0),
                    health_check: u
                        .health_check_interval
                        .map_or(crate::config::DEFAULT_HEALTH_CHECK_INTERVAL, |s| s.0),
                    fair_share: crate::config::spool::fair_share(u),
                    limits: pool::Limits {
                        max_recipients: u.max_recipients,
                        max_message_size: u.max_message_size.map(|s| s.0),
                    },
                };
                let dial = dial_from_config(config, u, &name, &addr, metrics, connector)?;
                if u.account.is_empty() {
                    Target::Smtp(Arc::new(
                        pool::Pool::new(
                            Arc::new(dial),
                            settings.enabled,
                            max,
                            settings.wait,
                            settings.health_check,
                        )
                        .with_fair_share(settings.fair_share)
                        .with_limits(settings.limits),
                    ))
                } else {
                    let group = pool::Group::new(max);
                    for a in &u.account {
                        let dial = account_dial(&dial, a, &name, metrics, connector)?;
                        let user = a.username.get_ref().clone();
                        let p = pool::Pool::in_group(Arc::new(dial), &settings, &group);
                        accounts.push((user.to_ascii_lowercase(), p));
                    }
                    Target::Smtp(accounts[0].1.clone())
                }
            }
        };
        Ok(Upstream {
            name,
            kind: *u.kind.get_ref(),
            addr,
            max_recipients: u.max_recipients,
            max_message_size: u.max_message_size.map(|s| s.0),
            target,
            accounts,
            delivery: u.delivery_mode(),
            quota: quota::Quota::new(
                u.messages_per_day.unwrap_or(0),
                u.recipients_per_day.unwrap_or(0),
            )
            .map(Arc::new),
        })
    }

    /// The pool, for an SMTP upstream.
    pub fn pool(&self) -> Option<&Arc<pool::Pool>> {
        match &self.target {
            Target::Smtp(p) => Some(p),
            Target::Outbox(_) => None,
        }
    }

    /// Whether senders choose among `[[upstream.account]]` entries.
    pub fn has_accounts(&self) -> bool {
        !self.accounts.is_empty()
    }

    /// The pool of the account for `sender` (compared without case).
    pub fn account_pool(&self, sender: &str) -> Option<&Arc<pool::Pool>> {
        self.accounts
            .iter()
            .find(|(user, _)| user.eq_ignore_ascii_case(sender))
            .map(|(_, p)| p)
    }

    /// The pool that carries `sender`'s mail: its account's with
    /// `[[upstream.account]]`, else the upstream's; `None` for an outbox or a
    /// sender without an account.
    pub fn pool_for(&self, sender: &str) -> Option<&Arc<pool::Pool>> {
        if self.has_accounts() {
            self.account_pool(sender)
        } else {
            self.pool()
        }
    }

    /// Every pool: one per account, or the upstream's one.
    pub fn pools(&self) -> Vec<&Arc<pool::Pool>> {
        if self.accounts.is_empty() {
            self.pool().into_iter().collect()
        } else {
            self.accounts.iter().map(|(_, p)| p).collect()
        }
    }

    /// Records what the upstream offered (a reload keeps what the old one learned).
    pub fn learn(&self, caps: &Capabilities) {
        for p in self.pools() {
            p.learn(caps);
        }
    }

    /// What the upstream is known to offer, if it was reached yet. The outbox
    /// stores everything as received.
    pub fn capabilities(&self) -> Option<Capabilities> {
        match &self.target {
            Target::Smtp(p) => p.capabilities(),
            Target::Outbox(_) => Some(Capabilities::outbox()),
        }
    }

    /// The largest message this upstream takes, given postern's own `limit`:
    /// its configured `max_message_size` and the SIZE it advertised cap it.
    pub fn effective_max_size(&self, limit: u64) -> u64 {
        let advertised = self.capabilities().and_then(|c| c.size).filter(|&n| n > 0);
        [Some(limit), self.max_message_size, advertised]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(limit)
    }

    /// The most recipients one message may have here, given the user's own limit.
    pub fn effective_max_recipients(&self, limit: u32) -> u32 {
        self.max_recipients.map_or(limit, |m| m.min(limit))
    }

    /// Connects once (EHLO, AUTH), learns the capabilities and says QUIT.
    /// Used at start-up so the first client's EHLO is already right.
    ///
    /// # Errors
    /// What connecting reports.
    pub async fn probe(&self) -> Result<(), UpstreamError> {
        match self.pool() {
            Some(p) => p.probe().await.map(|_| ()),
            None => Ok(()),
        }
    }

    /// After a reload replaced this upstream: close what is idle, keep nothing more.
    pub fn retire(&self) {
        for p in self.pools() {
            p.retire();
        }
    }

    /// At shutdown: say QUIT on every idle connection.
    pub async fn close_pool(&self) {
        for p in self.pools() {
            p.close().await;
        }
    }

    /// Connections waiting in the pool now.
    pub fn idle_connections(&self) -> usize {
        self.pools().iter().map(|p| p.idle_connections()).sum()
    }
}

/// The dial of one `[[upstream.account]]`: the upstream's settings with the
/// account's own credentials, a password or (`auth = "xoauth2" |
/// "oauthbearer"`) a token source of its own, so its tokens are cached apart.
fn account_dial(
    base: &dial::Dial,
    a: &crate::config::AccountConfig,
    name: &Arc<str>,
    metrics: &Metrics,
    connector: &Arc<dyn Connector>,
) -> Result<dial::Dial, String> {
    let user = a.username.get_ref().clone();
    let auth = a.auth_mode();
    if auth.is_oauth() {
        let o = a.oauth2.as_ref().ok_or_else(|| {
            format!("upstream {name:?}: account {user:?} has no [upstream.account.oauth2]")
        })?;
        let source = oauth2::TokenSource::from_config(name, o, connector, metrics)
            .map_err(|e| format!("upstream {name:?}: account {user:?}: {e}"))?;
        return Ok(dial::Dial {
            auth,
            oauth: Some((user, Arc::new(source))),
            ..base.clone_settings()
        });
    }
    let secret = a
        .secret()
        .ok_or_else(|| format!("upstream {name:?}: an account has no password"))?
        .resolve()
        .map_err(|e| format!("upstream {name:?}: {e}"))?;
    Ok(dial::Dial {
        auth,
        credentials: Some((user, secret)),
        ..base.clone_settings()
    })
}

fn dial_from_config(
    config: &Config,
    u: &UpstreamConfig,
    name: &Arc<str>,
    addr: &str,
    metrics: &Metrics,
    connector: &Arc<dyn Connector>,
) -> Result<dial::Dial, String> {
    let credentials = match (&u.username, u.secret()) {
        (Some(user), Some(secret)) if !u.auth_mode().is_oauth() => Some((
            user.get_ref().clone(),
            secret
                .resolve()
                .map_err(|e| format!("upstream {name:?}: {e}"))?,
        )),
        _ => None,
    };
    let auth = u.auth_mode();
    let oauth = match (&u.oauth2, &u.username) {
        (Some(o), Some(user)) if auth.is_oauth() => Some((
            user.get_ref().clone(),
            Arc::new(
                oauth2::TokenSource::from_config(name, o, connector, metrics)
                    .map_err(|e| format!("upstream {name:?}: {e}"))?,
            ),
        )),
        _ => None,
    };
    let tls_mode = u.tls_mode();
    let tls = match tls_mode {
        TlsMode::Starttls | TlsMode::Implicit => Some(
            crate::tls::client_config(
                u.ca_file.as_ref().map(|p| p.get_ref().as_path()),
                u.tls_verify.unwrap_or(true),
            )
            .map_err(|e| format!("upstream {name:?}: {e}"))?,
        ),
        TlsMode::None => None,
    };
    Ok(dial::Dial {
        name: name.clone(),
        addr: addr.to_owned(),
        host: u.host().unwrap_or_default(),
        tls_mode,
        tls,
        credentials,
        auth,
        oauth,
        helo_name: config.server.hostname.clone(),
        idle_timeout: u
            .idle_timeout
            .map_or(crate::config::DEFAULT_UPSTREAM_IDLE_TIMEOUT, |s| s.0),
        connector: connector.clone(),
        metrics: metrics.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ehlo_keywords_table() {
        let reply =
            |lines: &[&str]| Reply::multi(250, lines.iter().map(|l| l.to_string()).collect());
        let rows: Vec<(Reply, Capabilities)> = vec![
            (reply(&["mx greets you"]), Capabilities::default()),
            (
                reply(&[
                    "mx",
                    "PIPELINING",
                    "SIZE 10485760",
                    "8BITMIME",
                    "SMTPUTF8",
                    "DSN",
                    "ENHANCEDSTATUSCODES",
                    "AUTH PLAIN LOGIN",
                    "STARTTLS",
                ]),
                Capabilities {
                    pipelining: true,
                    size: Some(10_485_760),
                    eightbitmime: true,
                    smtputf8: true,
                    dsn: true,
                    starttls: true,
                    enhanced_status_codes: true,
                    auth_plain: true,
                    auth_login: true,
                    ..Default::default()
                },
            ),
            (
                reply(&["mx", "auth=login", "size"]),
                Capabilities {
                    auth_login: true,
                    size: Some(0),
                    ..Default::default()
                },
            ),
            (
                reply(&["mx", "AUTH CRAM-MD5 XOAUTH2", "X-UNKNOWN"]),
                Capabilities {
                    auth_xoauth2: true,
                    ..Default::default()
                },
            ),
            (
                reply(&["mx", "AUTH OAUTHBEARER", "AUTH=XOAUTH2"]),
                Capabilities {
                    auth_xoauth2: true,
                    auth_oauthbearer: true,
                    ..Default::default()
                },
            ),
        ];
        for (r, want) in rows {
            assert_eq!(Capabilities::from_ehlo(&r), want, "{r}");
        }
    }
}
