//! The running state built from a configuration, and its reload. One builder
//! (`Policy::build`) turns a `Config` into users, upstreams (secrets read now)
//! and the AUTH throttle; start-up (`State::build`) and SIGHUP (`Reloader`)
//! both use it, so a reload cannot miss a part.
//!
//! # Concurrency
//! `Shared` is one `Arc` for the whole server. Its `policy` is an
//! `RwLock<Arc<Policy>>` held only to clone or swap the `Arc`: a session takes
//! the policy it starts with and keeps it to its end, new sessions get the
//! newest. `limiters` (live connection counts) outlive reloads; everything in
//! `Policy` is replaced whole.

mod carry;
mod certs;

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};

use prometheus::Registry;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use crate::auth::Users;
use crate::cluster::Cluster;
use crate::config::{AuthMode, Config, ListenerConfig, TlsMode};
use crate::error::Error;
use crate::limits::{AuthThrottle, Limiters};
use crate::metrics::{Metrics, unix_now};
use crate::net::{Connector, TcpConnector};
use crate::spool::Spool;
use crate::tls::server::ServerCerts;
use crate::upstream::Upstream;
use crate::upstream::pool::{Health, Pool};

/// What a configuration reload replaces: the config itself, the users, the
/// upstreams (with their credentials and pools) and the AUTH throttle.
pub struct Policy {
    pub config: Arc<Config>,
    pub users: Arc<Users>,
    pub upstreams: Vec<Arc<Upstream>>,
    pub auth_throttle: Arc<AuthThrottle>,
    /// The spool, with `[spool]`; one per directory, kept across reloads.
    pub spool: Option<Arc<Spool>>,
}

impl Policy {
    /// Builds the running policy of `config`. With `previous` (a reload), what
    /// the same upstreams already told us is kept, and so are AUTH lockouts.
    ///
    /// # Errors
    /// A missing secret or another set-up failure, as a message.
    pub fn build(
        config: Config,
        metrics: &Metrics,
        connector: &Arc<dyn Connector>,
        previous: Option<&Policy>,
        cluster: Option<&Arc<Cluster>>,
    ) -> Result<Policy, String> {
        let users = Arc::new(Users::from_config(&config, previous.map(|p| &*p.users))?);
        metrics.prepare(&config);
        let mut upstreams = Upstream::all_from_config(&config, metrics, connector)?;
        if let Some(cluster) = cluster {
            carry::share_quotas(cluster, &mut upstreams);
        }
        if let Some(old) = previous {
            carry::keep_quotas(&mut upstreams, &old.upstreams);
            carry::keep_tokens(&upstreams, &old.upstreams);
        }
        carry::link_failover(&config, &upstreams);
        let spool = open_spool(&config, metrics, previous)?;
        if let Some(cluster) = cluster {
            for up in &upstreams {
                let Some(u) = config.upstream(&up.name) else {
                    continue;
                };
                let max = u
                    .max_connections
                    .unwrap_or(crate::config::DEFAULT_UPSTREAM_MAX_CONNECTIONS);
                let cap = crate::cluster::SharedCap::new(cluster, &up.name, max);
                for pool in up.pools() {
                    pool.share_cap(cap.clone());
                }
            }
        }
        // With [cluster] this throttle is the fallback: this replica's share.
        let per_minute = match cluster {
            Some(c) => c.share_of(config.limits.auth_failures_per_ip_per_minute),
            None => config.limits.auth_failures_per_ip_per_minute,
        };
        let auth_throttle = match previous {
            Some(old) => old.auth_throttle.renewed(per_minute),
            None => Arc::new(AuthThrottle::new(per_minute)),
        };
        if let Some(old) = previous {
            for up in &upstreams {
                let Some(prev) = old
                    .upstreams
                    .iter()
                    .find(|o| o.name == up.name && o.addr == up.addr)
                else {
                    continue;
                };
                if let Some(caps) = prev.capabilities() {
                    up.learn(&caps);
                }
                if let (Some(new), Some(old)) = (up.pool(), prev.pool()) {
                    new.inherit_health(old);
                }
            }
        }
        Ok(Policy {
            config: Arc::new(config),
            users,
            upstreams,
            auth_throttle,
            spool,
        })
    }

    /// Starts each upstream's background work: a first probe (so the EHLO
    /// postern offers mirrors the provider from the first client on) and the
    /// pool's upkeep, which ends when the pool is retired or dropped.
    pub fn start_upstreams(&self) {
        for up in &self.upstreams {
            // With accounts, only the first is probed at start (that learns the
            // capabilities; probing them all at once could pass the shared
            // cap); the health checks probe each within it.
            if let Some(pool) = up.pool() {
                tokio::spawn(probe(up.name.clone(), pool.clone()));
            }
            for pool in up.pools() {
                tokio::spawn(Pool::maintain(Arc::downgrade(pool)));
            }
        }
        if let Some(spool) = &self.spool {
            spool.start_housekeeping();
            for up in &self.upstreams {
                if let (Some(pool), true) = (up.pool(), up.delivery.uses_spool()) {
                    let share = self
                        .config
                        .upstream(&up.name)
                        .map_or(1, crate::config::spool::fair_share);
                    let max_recipients = up
                        .max_recipients
                        .unwrap_or(crate::config::DEFAULT_MAX_RECIPIENTS);
                    let accounts = up
                        .accounts
                        .iter()
                        .map(|(user, p)| (user.clone(), Arc::downgrade(p)))
                        .collect();
                    tokio::spawn(crate::spool::deliver::run(
                        Arc::downgrade(spool),
                        Arc::downgrade(pool),
                        Arc::new(accounts),
                        up.quota.clone(),
                        max_recipients,
                        share as usize,
                    ));
                }
            }
        }
    }

    /// Whether every user can send: `Err` names each user whose every route
    /// is down (today a user has one route, its upstream), with the reason.
    ///
    /// # Errors
    /// The reasons, one per line.
    pub fn readiness(&self) -> Result<(), String> {
        let mut down = Vec::new();
        for user in self.users.all() {
            let Some(up) = self.upstreams.get(user.upstream) else {
                continue;
            };
            if let Some(pool) = up.pool()
                && let Health::Down(why) = pool.health()
            {
                down.push(format!(
                    "user {}: upstream {} down: {why}",
                    user.name, up.name
                ));
            }
        }
        if down.is_empty() {
            Ok(())
        } else {
            Err(down.join("\n"))
        }
    }
}

/// The spool of `config`: the previous policy's when the directory is the
/// same (a second one on the same directory would deliver twice), else opened
/// and recovered now.
fn open_spool(
    config: &Config,
    metrics: &Metrics,
    previous: Option<&Policy>,
) -> Result<Option<Arc<Spool>>, String> {
    let Some(sc) = &config.spool else {
        return Ok(None);
    };
    let settings = sc.settings();
    if let Some(old) = previous.and_then(|p| p.spool.as_ref())
        && old.settings.dir == settings.dir
    {
        if old.settings != settings {
            tracing::warn!("[spool] changes other than dir take effect after a restart");
        }
        return Ok(Some(old.clone()));
    }
    Spool::open(&settings, metrics.spool.clone())
        .map(|s| Some(Arc::new(s)))
        .map_err(|e| format!("spool {}: {e}", settings.dir.display()))
}

async fn probe(name: Arc<str>, pool: Arc<Pool>) {
    match pool.probe().await {
        Ok(true) => tracing::info!(upstream = %name, "upstream reachable; capabilities learned"),
        Ok(false) => tracing::debug!(upstream = %name, "every pool slot busy; no start-up probe"),
        Err(e) => {
            tracing::warn!(upstream = %name, error = %e, "upstream probe failed; will retry on first use")
        }
    }
}

/// What a session knows of its listener.
#[derive(Clone, Debug)]
pub struct ListenerInfo {
    pub name: Arc<str>,
    pub tls: TlsMode,
    pub auth: AuthMode,
    pub plaintext_auth: bool,
    /// With `proxy_protocol = true`: the sources allowed to send the PROXY header.
    pub proxy_from: Option<Arc<Vec<ipnet::IpNet>>>,
}

impl ListenerInfo {
    pub fn from_config(l: &ListenerConfig) -> ListenerInfo {
        ListenerInfo {
            name: Arc::from(l.name.get_ref().as_str()),
            tls: *l.tls.get_ref(),
            auth: l.auth,
            plaintext_auth: l.plaintext_auth_allowed(),
            proxy_from: l
                .proxy_protocol
                .as_ref()
                .is_some_and(|p| *p.get_ref())
                .then(|| Arc::new(l.proxy_from.clone())),
        }
    }
}

/// Everything sessions share.
pub struct Shared {
    /// The current policy; swapped whole by a reload.
    policy: RwLock<Arc<Policy>>,
    pub metrics: Metrics,
    /// Connection counts; kept across reloads.
    pub limiters: Limiters,
    pub tls: Option<TlsAcceptor>,
    /// The certificate `tls` answers with; a reload replaces it.
    pub server_certs: Option<Arc<ServerCerts>>,
    /// Turns true when the server begins to stop.
    pub shutdown: watch::Receiver<bool>,
    /// How upstream connections are opened (TCP outside tests).
    pub connector: Arc<dyn Connector>,
    /// `[cluster]`: the limits shared with other replicas; kept across reloads.
    pub cluster: Option<Arc<Cluster>>,
}

impl Shared {
    /// The current policy.
    pub fn policy(&self) -> Arc<Policy> {
        match self.policy.read() {
            Ok(p) => p.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Installs a new policy for sessions that start from now on.
    pub fn set_policy(&self, policy: Policy) {
        let policy = Arc::new(policy);
        match self.policy.write() {
            Ok(mut p) => *p = policy,
            Err(poisoned) => *poisoned.into_inner() = policy,
        }
    }
}

/// The server's state before anything listens: shared state, the registry
/// its metrics live in, and the switch that starts the shutdown.
pub struct State {
    pub shared: Arc<Shared>,
    pub registry: Registry,
    pub shutdown: watch::Sender<bool>,
}

impl State {
    /// Builds everything but the sockets, with upstream connections over TCP.
    ///
    /// # Errors
    /// A missing secret, a bad certificate, a metrics registry failure.
    pub fn build(config: Config) -> Result<State, Error> {
        State::build_with(config, Arc::new(TcpConnector))
    }

    /// As `build`, opening upstream connections with `connector`.
    ///
    /// # Errors
    /// As `build`.
    pub fn build_with(config: Config, connector: Arc<dyn Connector>) -> Result<State, Error> {
        let (registry, metrics) = Metrics::new_registry()?;
        let (tls, server_certs) = match &config.tls {
            Some(t) => {
                let loaded = crate::tls::load_server_cert(t.cert.get_ref(), t.key.get_ref())?;
                if let Some(why) = loaded.unfit_at(unix_now()) {
                    tracing::warn!(cert = %t.cert.get_ref().display(), "{why}; serving it anyway");
                }
                certs::set_certificate_expiry(&metrics, &config, loaded.not_after);
                let certs = Arc::new(ServerCerts::new(loaded));
                let acceptor = TlsAcceptor::from(crate::tls::server_config(certs.clone())?);
                (Some(acceptor), Some(certs))
            }
            None => (None, None),
        };
        let cluster = match &config.cluster {
            Some(c) => {
                let cluster = Cluster::new(c, &registry).map_err(Error::Setup)?;
                cluster.start();
                Some(cluster)
            }
            None => None,
        };
        let policy = Policy::build(config, &metrics, &connector, None, cluster.as_ref())
            .map_err(Error::Setup)?;
        let (shutdown, shutdown_rx) = watch::channel(false);
        let shared = Arc::new(Shared {
            policy: RwLock::new(Arc::new(policy)),
            metrics,
            limiters: Limiters::default(),
            tls,
            server_certs,
            shutdown: shutdown_rx,
            connector,
            cluster,
        });
        Ok(State {
            shared,
            registry,
            shutdown,
        })
    }
}

/// Reloads the parts of the configuration that can change while serving
/// (SIGHUP): users, limits, the AUTH throttle and upstreams with their
/// credentials, and the listener certificate (`[tls] cert`, `key`, read again
/// for new handshakes). Open connections keep the policy they started with;
/// new ones get the new one. Listeners, `[metrics]`, `[cluster]` and adding
/// or removing `[tls]` need a restart.
#[derive(Clone)]
pub struct Reloader {
    shared: Arc<Shared>,
}

impl Reloader {
    pub fn new(shared: Arc<Shared>) -> Reloader {
        Reloader { shared }
    }

    /// Installs `config`. On error nothing changes.
    ///
    /// # Errors
    /// A missing secret or another set-up failure, as a message.
    pub fn reload(&self, config: Config) -> Result<(), String> {
        let result = self.apply(config);
        self.shared.metrics.reload_result(result.is_ok());
        result
    }

    /// Reads `path` and installs it; a config that does not load counts as a failed reload.
    ///
    /// # Errors
    /// The config error or the set-up failure, as a message.
    pub fn reload_file(&self, path: &std::path::Path) -> Result<(), String> {
        match Config::load(path) {
            Ok(config) => self.reload(config),
            Err(e) => {
                self.shared.metrics.reload_result(false);
                if e.in_tls() && self.shared.server_certs.is_some() {
                    certs::refused(&self.shared.metrics, &e.to_string());
                }
                Err(e.to_string())
            }
        }
    }

    fn apply(&self, config: Config) -> Result<(), String> {
        let old = self.shared.policy();
        if restart_needed(&old.config, &config) {
            tracing::warn!(
                "listener, [metrics] or [cluster] changes, and adding or removing [tls], take effect only after a restart"
            );
        }
        let warnings = config.warnings.clone();
        let policy = Policy::build(
            config,
            &self.shared.metrics,
            &self.shared.connector,
            Some(&old),
            self.shared.cluster.as_ref(),
        )?;
        policy.start_upstreams();
        for old_up in &old.upstreams {
            old_up.retire();
        }
        for w in &warnings {
            tracing::warn!("{w}");
        }
        tracing::info!(
            users = policy.config.users.len(),
            upstreams = policy.upstreams.len(),
            "configuration reloaded"
        );
        if let Some(server_certs) = &self.shared.server_certs {
            certs::reload(server_certs, &policy.config, &self.shared.metrics);
        }
        self.shared.set_policy(policy);
        Ok(())
    }
}

/// Whether `b` changes what only a restart applies: listeners, `[tls]`'s
/// presence, `[metrics]`, `[cluster]`.
fn restart_needed(a: &Config, b: &Config) -> bool {
    let listeners = |c: &Config| -> Vec<(String, SocketAddr)> {
        c.listeners
            .iter()
            .map(|l| (l.name.get_ref().clone(), *l.addr.get_ref()))
            .collect()
    };
    // A changed `[tls] cert` or `key` is read by the reload; adding or
    // removing `[tls]` needs a restart.
    let tls = |c: &Config| c.tls.is_some();
    let metrics = |c: &Config| c.metrics.as_ref().map(|m| m.addr);
    let cluster = |c: &Config| {
        c.cluster
            .as_ref()
            .map(|k| (k.redis.get_ref().clone(), k.on_redis_error, k.replicas()))
    };
    listeners(a) != listeners(b)
        || tls(a) != tls(b)
        || metrics(a) != metrics(b)
        || cluster(a) != cluster(b)
}
