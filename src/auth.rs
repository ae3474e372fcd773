//! Local users: their password hashes (`password`), trusted networks, sender
//! policy and limits, and verification off the async runtime.
//!
//! An unknown user name is verified against a dummy argon2 hash, so the reply
//! (535 5.7.8) and its timing are the same as for a wrong password: the relay
//! does not tell an attacker which device accounts exist.
//!
//! A successful check is remembered for `[server] auth_cache_ttl` (`cache`):
//! the same user, stored hash and password within it are answered without
//! argon2. Everything else is checked as if there were no cache, on a bounded
//! pool with a bounded queue (`pool`); when the queue is full the AUTH is
//! answered 454 4.7.0 without a check.

pub mod cache;
pub mod pool;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use cache::AuthCache;
use pool::{CheckPool, PoolSize};

pub use crate::addr::canonical_ip;
use crate::config::{Config, Limits, UpstreamConfig, UserConfig};
use crate::password::unmatchable_hash;
pub use crate::password::{PasswordHash, hash_password};
use crate::policy::SenderPattern;

/// One local account, resolved from the config.
#[derive(Debug)]
pub struct User {
    pub name: Arc<str>,
    pub hash: Option<PasswordHash>,
    pub networks: Vec<ipnet::IpNet>,
    /// Index of the user's upstream in `Config::upstreams`.
    pub upstream: usize,
    pub allowed_senders: Vec<SenderPattern>,
    pub rewrite_sender: Option<String>,
    pub rewrite_header_from: bool,
    pub limits: Limits,
    /// Message and recipient rates, counted from when this policy was loaded.
    pub rates: crate::limits::UserRates,
}

/// The user table, and the cache of successful checks it shares with the
/// tables that replace it on reload.
pub struct Users {
    users: Vec<Arc<User>>,
    cache: Arc<AuthCache>,
    cache_ttl: Duration,
    /// Where checks run; kept across reloads unless its size changes.
    pool: Arc<CheckPool>,
}

/// The hash unknown users are checked against: one per process, with the
/// parameters `postern hash-password` uses, so an unknown name costs what a
/// known one does (`password::unmatchable_hash`: no password matches it).
static DUMMY: std::sync::OnceLock<PasswordHash> = std::sync::OnceLock::new();

fn dummy() -> Result<&'static PasswordHash, String> {
    if let Some(d) = DUMMY.get() {
        return Ok(d);
    }
    let made = PasswordHash::Argon2(unmatchable_hash()?);
    Ok(DUMMY.get_or_init(|| made))
}

/// Outcome of a password check.
#[derive(Debug, Clone)]
pub enum Verdict {
    Ok(Arc<User>),
    /// Unknown user or wrong password: the same to the client.
    Denied,
    /// The check queue was full: nothing was checked (454 4.7.0).
    Busy,
}

/// What the verified-credential cache did for one check
/// (`postern_auth_cache_total{result}`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CacheUse {
    /// Answered from the cache: no hash was computed.
    Hit,
    /// The password hash was checked (a first or expired success, a wrong
    /// password, an unknown user).
    Miss,
    /// `auth_cache_ttl = 0`: the hash is checked every time.
    Off,
}

impl CacheUse {
    /// The metric label, `None` when the cache is off.
    pub fn label(self) -> Option<&'static str> {
        match self {
            CacheUse::Hit => Some("hit"),
            CacheUse::Miss => Some("miss"),
            CacheUse::Off => None,
        }
    }
}

impl Users {
    /// Builds the table from a validated config. With `previous` (a reload)
    /// its cache of successful checks is kept, less the entries of users who
    /// are gone or whose stored hash changed (all of them when the new
    /// `auth_cache_ttl` is 0).
    ///
    /// # Errors
    /// If a hash that passed validation fails to parse (not expected), hashing
    /// the dummy fails, or no random key can be drawn for the cache.
    pub fn from_config(config: &Config, previous: Option<&Users>) -> Result<Users, String> {
        let mut users = Vec::new();
        for u in &config.users {
            users.push(Arc::new(user_from_config(config, u)?));
        }
        dummy()?;
        let cache_ttl = config.server.auth_cache_ttl.0;
        let cache = match previous {
            Some(old) => old.cache.clone(),
            None => Arc::new(AuthCache::new()?),
        };
        let size = PoolSize::new(config.server.auth_workers, config.server.auth_queue);
        let pool = match previous {
            Some(old) if old.pool.size() == size => old.pool.clone(),
            _ => CheckPool::new(size),
        };
        let table = Users {
            users,
            cache,
            cache_ttl,
            pool,
        };
        if cache_ttl.is_zero() {
            table.cache.clear();
        } else {
            table.cache.retain(|name, hash| {
                table
                    .get(name)
                    .and_then(|u| u.hash.as_ref())
                    .is_some_and(|h| h.as_str() == hash)
            });
        }
        Ok(table)
    }

    pub fn get(&self, name: &str) -> Option<&Arc<User>> {
        self.users.iter().find(|u| &*u.name == name)
    }

    pub fn all(&self) -> &[Arc<User>] {
        &self.users
    }

    /// The user whose `networks` contain `ip` (most specific network wins).
    pub fn by_network(&self, ip: IpAddr) -> Option<&Arc<User>> {
        let ip = canonical_ip(ip);
        self.users
            .iter()
            .filter_map(|u| {
                u.networks
                    .iter()
                    .filter(|n| n.contains(&ip))
                    .map(|n| n.prefix_len())
                    .max()
                    .map(|len| (len, u))
            })
            .max_by_key(|(len, _)| *len)
            .map(|(_, u)| u)
    }

    /// Verifies a user name and password: from the cache of recent
    /// successes, else on the bounded check pool (`pool`), or not at all
    /// (`Verdict::Busy`) when its queue is full.
    /// `queued` counts the check while it runs or waits.
    pub async fn verify(
        self: &Arc<Self>,
        username: &str,
        password: &str,
        queued: &prometheus::IntGauge,
    ) -> (Verdict, CacheUse) {
        let ttl = self.cache_ttl;
        let cache_use = if ttl.is_zero() {
            CacheUse::Off
        } else {
            CacheUse::Miss
        };
        let Ok(dummy) = dummy() else {
            return (Verdict::Denied, cache_use);
        };
        let user = self.get(username).filter(|u| u.hash.is_some()).cloned();
        let hash = match user.as_ref().and_then(|u| u.hash.clone()) {
            Some(h) => h,
            // Unknown users, and users who may only send from their networks, cost the same.
            None => dummy.clone(),
        };
        // The lookup runs for every name (against the dummy hash for the
        // unknown, which nothing is remembered for), so it costs the same
        // whoever asks; a hit counts only for a user with a hash.
        let hit = self
            .cache
            .hit(username, hash.as_str(), password, ttl, Instant::now());
        if let (true, Some(u)) = (hit, &user) {
            return (Verdict::Ok(u.clone()), CacheUse::Hit);
        }
        // Admitted or not before anything depends on the name: known and
        // unknown users queue, and are refused, alike.
        let Ok(place) = self.pool.admit(queued) else {
            return (Verdict::Busy, cache_use);
        };
        let ok = self
            .pool
            .check(
                place,
                hash.clone(),
                crate::secret::SecretString::from(password),
            )
            .await;
        match (ok, user) {
            (true, Some(u)) => {
                self.cache
                    .remember(&u.name, hash.as_str(), password, ttl, Instant::now());
                (Verdict::Ok(u), cache_use)
            }
            _ => (Verdict::Denied, cache_use),
        }
    }

    /// How many successful checks the cache holds now.
    pub fn cached(&self) -> usize {
        self.cache.len()
    }
}

fn user_from_config(config: &Config, u: &UserConfig) -> Result<User, String> {
    let upstream_name = config
        .user_upstream(u)
        .map(UpstreamConfig::name)
        .ok_or_else(|| format!("user {:?}: no upstream", u.name()))?;
    let upstream = config
        .upstreams
        .iter()
        .position(|x| x.name() == upstream_name)
        .ok_or_else(|| format!("user {:?}: no upstream", u.name()))?;
    Ok(User {
        name: Arc::from(u.name()),
        hash: u
            .password_hash
            .as_ref()
            .map(|h| PasswordHash::parse(h.get_ref()))
            .transpose()?,
        networks: u.networks.clone(),
        upstream,
        allowed_senders: u
            .allowed_senders
            .iter()
            .map(|s| SenderPattern::parse(s.get_ref()))
            .collect::<Result<_, _>>()?,
        rewrite_sender: u.rewrite_sender.as_ref().map(|s| s.get_ref().clone()),
        rewrite_header_from: u.rewrite_header_from,
        limits: config.user_limits(u),
        // With [cluster] these are the fallback: this replica's share.
        rates: crate::limits::UserRates::new(
            &config.user_limits(u),
            config.cluster.as_ref().map_or(1, |c| c.replicas()),
        ),
    })
}
