//! Limits shared by several replicas through one Redis (`[cluster]`,
//! DESIGN.md "More than one machine").
//!
//! What is shared: per-user `messages_per_minute` and `recipients_per_hour`,
//! per-address `auth_failures_per_ip_per_minute` and per-upstream
//! `messages_per_day` and `recipients_per_day` (`upstream::quota`) as GCRA
//! rates (the same arithmetic as governor, on Redis's clock), and per-user
//! `max_connections_per_user` and per-upstream `max_connections` as leases: a
//! holder is a member of a sorted set scored by its expiry, renewed by this
//! replica every third of `lease_ttl`, so the slots of a replica that dies or
//! is cut off come free within the TTL. The decisions of one SMTP command
//! are one script call, one round trip (`decide`: at MAIL the user's lease,
//! the message rate and the first RCPT's unit of the recipient rate taken
//! ahead; at a later RCPT its recipient rate), and what is given back (a
//! lease, a unit taken ahead and not used) rides on the next call, or goes
//! alone within 5 ms. A lease that could
//! not be renewed is lost: the provider connection holding it closes after
//! its transaction, the session holding a user's lease at its next MAIL
//! (`421 4.3.0`).
//!
//! When Redis is down or slower than `timeout`, the decision falls back
//! (`on_redis_error`): `local` decides with this replica's own limiters,
//! whose limits were divided by `replicas`, counted in
//! `postern_cluster_fallback_total{decision}`; `refuse` answers `451 4.3.0`.
//! An episode is logged once when it starts and once when it ends. While
//! Redis is down the replica does not ask it on every decision: it tries again
//! after a backoff (0.5 s doubling to 10 s), and the `redis` crate's
//! connection manager reconnects with its own backoff underneath.
//!
//! Client choice: the `redis` crate (1.x) with its tokio `ConnectionManager`
//! — one multiplexed connection shared by every session (requests are
//! pipelined on it, so concurrency needs no pool), reconnection built in, and
//! `Script` does EVALSHA with the NOSCRIPT reload. It adds 45 crates to the
//! build with TLS (rustls on ring, no aws-lc); `fred` adds 55 and brings its
//! own pool and command surface we do not need; `deadpool-redis` is a pool
//! over an older `redis` and a multiplexed connection needs no pool.
//!
//! # Concurrency
//! `Cluster` is one `Arc` for the server (it outlives reloads; `[cluster]`
//! changes need a restart). `link`, `leases` and `releases` are short-held
//! locks, never held across an await; the connection manager is cloned per
//! request.

mod decide;
mod lease;
mod scripts;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts, Registry};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{IntoConnectionInfo, TlsCertificates};
use tokio::sync::Notify;
use tokio::time::Instant;

pub use decide::{Answer, Ask, Taken};
pub use lease::{CapError, Hold, Lease, SharedCap};

use crate::config::{ClusterConfig, OnRedisError};

/// The `decision` words of `postern_cluster_fallback_total`.
pub const DECISIONS: &[&str] = &[
    "message_rate",
    "recipient_rate",
    "auth_failures",
    "user_connections",
    "upstream_connections",
    "daily_messages",
    "daily_recipients",
];

/// What Redis said about a rate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Allowed,
    /// Over the shared rate: wait this long.
    Wait(Duration),
    /// Redis did not answer in time: decide per `on_redis_error`.
    Unavailable,
}

/// Whether Redis is reachable, as this replica last saw it.
struct Link {
    up: bool,
    /// While down: the next request goes to Redis only after this.
    retry_at: Instant,
    backoff: Duration,
}

const BACKOFF_MIN: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(10);

struct ClusterMetrics {
    fallback: IntCounterVec,
    up: IntGauge,
    leases_lost: IntCounter,
}

impl ClusterMetrics {
    fn register(r: &Registry) -> prometheus::Result<ClusterMetrics> {
        let fallback = IntCounterVec::new(
            Opts::new(
                "cluster_fallback_total",
                "Shared-limit decisions taken without Redis (down or slow), by decision",
            ),
            &["decision"],
        )?;
        let up = IntGauge::new(
            "cluster_redis_up",
            "1 while the shared Redis answers in time, 0 during a fallback episode",
        )?;
        let leases_lost = IntCounter::new(
            "cluster_leases_lost_total",
            "Connection leases that could not be renewed (their connections close after the transaction)",
        )?;
        r.register(Box::new(fallback.clone()))?;
        r.register(Box::new(up.clone()))?;
        r.register(Box::new(leases_lost.clone()))?;
        for d in DECISIONS {
            fallback.with_label_values(&[d]);
        }
        Ok(ClusterMetrics {
            fallback,
            up,
            leases_lost,
        })
    }
}

/// The shared state's client: one per server.
pub struct Cluster {
    conn: ConnectionManager,
    prefix: String,
    pub on_error: OnRedisError,
    /// The local fallback divides every shared limit by this.
    pub replicas: u32,
    timeout: Duration,
    lease_ttl: Duration,
    /// This process's name among lease holders (random, per start).
    holder: String,
    next_lease: AtomicU64,
    link: Mutex<Link>,
    leases: Mutex<HashMap<u64, Arc<lease::Held>>>,
    /// Leases given back, waiting to ride on the next decision (`decide`).
    releases: Mutex<Vec<decide::Giving>>,
    release_wake: Arc<Notify>,
    metrics: ClusterMetrics,
    scripts: scripts::Scripts,
}

impl Cluster {
    /// Sets up the client from `[cluster]` (reading the password now) and
    /// registers its metrics. Connects lazily: a Redis that is down at start
    /// is a fallback episode, not a start-up failure.
    ///
    /// # Errors
    /// A missing secret, an unreadable CA file, a URL the client refuses, a
    /// metrics registry failure; as a message without the password.
    pub fn new(c: &ClusterConfig, registry: &Registry) -> Result<Arc<Cluster>, String> {
        let mut info = c
            .redis
            .get_ref()
            .as_str()
            .into_connection_info()
            .map_err(|e| format!("[cluster] redis: {e}"))?;
        let mut settings = info.redis_settings().clone();
        if let Some(user) = &c.username {
            settings = settings.set_username(user);
        }
        if let Some(secret) = c.secret() {
            let password = secret.resolve().map_err(|e| format!("[cluster]: {e}"))?;
            settings = settings.set_password(password.expose());
        }
        info = info.set_redis_settings(settings);
        let client = match &c.ca_file {
            Some(ca) => {
                let pem = std::fs::read(ca.get_ref())
                    .map_err(|e| format!("[cluster] ca_file {}: {e}", ca.get_ref().display()))?;
                redis::Client::build_with_tls(
                    info,
                    TlsCertificates {
                        client_tls: None,
                        root_cert: Some(pem),
                    },
                )
            }
            None => redis::Client::open(info),
        }
        .map_err(|e| format!("[cluster] redis: {e}"))?;
        let timeout = c.timeout();
        let manager_config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout.max(Duration::from_secs(1))))
            .set_response_timeout(Some(timeout))
            .set_min_delay(Duration::from_millis(100))
            .set_max_delay(BACKOFF_MAX)
            .set_number_of_retries(6);
        let conn = ConnectionManager::new_lazy_with_config(client, manager_config)
            .map_err(|e| format!("[cluster] redis: {e}"))?;
        let metrics =
            ClusterMetrics::register(registry).map_err(|e| format!("[cluster] metrics: {e}"))?;
        metrics.up.set(1);
        let mut id = [0u8; 8];
        getrandom::fill(&mut id).map_err(|e| format!("[cluster] random: {e}"))?;
        let holder: String = id.iter().map(|b| format!("{b:02x}")).collect();
        Ok(Arc::new(Cluster {
            conn,
            prefix: c.key_prefix().to_owned(),
            on_error: c.on_redis_error,
            replicas: c.replicas(),
            timeout,
            lease_ttl: c.lease_ttl(),
            holder,
            next_lease: AtomicU64::new(1),
            link: Mutex::new(Link {
                up: true,
                retry_at: Instant::now(),
                backoff: BACKOFF_MIN,
            }),
            leases: Mutex::new(HashMap::new()),
            releases: Mutex::new(Vec::new()),
            release_wake: Arc::new(Notify::new()),
            metrics,
            scripts: scripts::Scripts::new(),
        }))
    }

    /// Starts the lease renewal (it ends when the last `Arc` is dropped) and
    /// the first connection to Redis.
    pub fn start(self: &Arc<Self>) {
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(lease::renew_loop(Arc::downgrade(self)));
            rt.spawn(decide::release_loop(
                Arc::downgrade(self),
                self.release_wake.clone(),
            ));
            let mut conn = self.conn.clone();
            // The connection manager makes its first connection only while a
            // request waits on it, and a decision waits `timeout` at most:
            // a TLS handshake on a loaded machine may take longer, and would
            // then never complete. This request waits for it.
            rt.spawn(async move {
                let ping = redis::cmd("PING").clone();
                let _ = tokio::time::timeout(
                    Duration::from_secs(30),
                    ping.query_async::<String>(&mut conn),
                )
                .await;
            });
        }
    }

    /// Waits up to `wait` for Redis to answer a PING (at start, so the first
    /// decisions do not fall back while the connection is being made).
    pub async fn connected(&self, wait: Duration) -> bool {
        let mut conn = self.conn.clone();
        let ping = redis::cmd("PING").clone();
        let answered = matches!(
            tokio::time::timeout(wait, ping.query_async::<String>(&mut conn)).await,
            Ok(Ok(_))
        );
        if answered {
            self.went_well();
        }
        answered
    }

    /// Whether a decision Redis could not take is refused (`on_redis_error = "refuse"`).
    pub fn refuses(&self) -> bool {
        self.on_error == OnRedisError::Refuse
    }

    /// Counts one decision taken locally because Redis did not answer.
    pub fn fell_back(&self, decision: &'static str) {
        self.metrics.fallback.with_label_values(&[decision]).inc();
    }

    /// A local limit for the fallback: `limit` divided by `replicas`, at least 1.
    pub fn share_of(&self, limit: u32) -> u32 {
        (limit / self.replicas).max(1)
    }

    /// Whether Redis answered the last request (or the backoff has not yet
    /// been tried again).
    pub fn is_up(&self) -> bool {
        self.link.lock().unwrap_or_else(|p| p.into_inner()).up
    }

    fn key(&self, parts: &[&str]) -> String {
        let mut k = self.prefix.clone();
        for p in parts {
            k.push(':');
            k.push_str(p);
        }
        k
    }

    /// Whether a request may go to Redis now (not in a backoff).
    fn may_ask(&self) -> bool {
        let link = self.link.lock().unwrap_or_else(|p| p.into_inner());
        link.up || Instant::now() >= link.retry_at
    }

    fn went_well(&self) {
        let mut link = self.link.lock().unwrap_or_else(|p| p.into_inner());
        if !link.up {
            link.up = true;
            link.backoff = BACKOFF_MIN;
            self.metrics.up.set(1);
            tracing::info!("shared Redis answers again; shared limits resume");
        }
    }

    fn went_wrong(&self, why: &str) {
        let mut link = self.link.lock().unwrap_or_else(|p| p.into_inner());
        if link.up {
            link.up = false;
            link.backoff = BACKOFF_MIN;
            self.metrics.up.set(0);
            let fallback = match self.on_error {
                OnRedisError::Local => "this replica's own limits, divided by replicas",
                OnRedisError::Refuse => "refusing with 451 4.3.0",
            };
            tracing::warn!(error = why, fallback, "shared Redis unavailable");
        } else {
            link.backoff = (link.backoff * 2).min(BACKOFF_MAX);
        }
        link.retry_at = Instant::now() + link.backoff;
    }

    /// Runs one request within `timeout`, keeping `link` up to date. `None`:
    /// Redis did not answer (or is in its backoff).
    async fn ask<T, F>(&self, request: F) -> Option<T>
    where
        F: std::future::Future<Output = redis::RedisResult<T>>,
    {
        if !self.may_ask() {
            return None;
        }
        match tokio::time::timeout(self.timeout, request).await {
            Ok(Ok(v)) => {
                self.went_well();
                Some(v)
            }
            Ok(Err(e)) => {
                self.went_wrong(&e.to_string());
                None
            }
            Err(_) => {
                self.went_wrong("timed out");
                None
            }
        }
    }

    /// Records a failed AUTH from `ip` (its `ip_key`); past `per_minute` the
    /// address is locked for every replica. `false`: Redis did not answer.
    pub async fn auth_failed(&self, ip: IpAddr, per_minute: u32) -> bool {
        let ip = ip.to_string();
        let burst = per_minute.max(1);
        let interval = 60_000_000 / u64::from(burst);
        let mut conn = self.conn.clone();
        let mut call = self.scripts.auth_failure.prepare_invoke();
        call.key(self.key(&["authfail", &ip]))
            .key(self.key(&["authlock", &ip]))
            .arg(interval.max(1))
            .arg(burst);
        self.ask(call.invoke_async::<u64>(&mut conn))
            .await
            .is_some()
    }

    /// Whether AUTH from `ip` (its `ip_key`) is locked by failures seen by
    /// any replica. `None`: Redis did not answer.
    pub async fn auth_locked(&self, ip: IpAddr) -> Option<bool> {
        let key = self.key(&["authlock", &ip.to_string()]);
        let mut conn = self.conn.clone();
        let cmd = redis::cmd("EXISTS").arg(&key).clone();
        self.ask(cmd.query_async::<u32>(&mut conn))
            .await
            .map(|n| n > 0)
    }
}

impl Cluster {
    /// Whether some replica was refused one of the slots of `parts` in the
    /// last second (so a holder with an idle connection should close it).
    /// Asked only by a replica that has idle connections to give.
    pub async fn slot_wanted(&self, parts: &[&str]) -> bool {
        let key = format!("{}:want", self.key(parts));
        let mut conn = self.conn.clone();
        let cmd = redis::cmd("GETDEL").arg(&key).clone();
        self.ask(cmd.query_async::<Option<u32>>(&mut conn))
            .await
            .flatten()
            .is_some()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // Ends `release_loop`.
        self.release_wake.notify_one();
    }
}

/// What Redis said about a lease.
pub enum LeaseVerdict {
    Granted(Lease),
    /// Every slot is held (by this replica or others).
    Full,
    Unavailable,
}
