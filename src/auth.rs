//! Local users: their password hashes (`password`), trusted networks, sender
//! policy and limits, and verification off the async runtime.
//!
//! An unknown user name is verified against a dummy argon2 hash, so the reply
//! (535 5.7.8) and its timing are the same as for a wrong password: the relay
//! does not tell an attacker which device accounts exist.
//!
//! A successful check is remembered for `[server] auth_cache_ttl` (`cache`):
//! the same user, stored hash and password within it are answered without
//! argon2. Everything else is checked as if there were no cache.

pub mod cache;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio::time::Instant;

use cache::AuthCache;

pub use crate::addr::canonical_ip;
use crate::config::{Config, Limits, UpstreamConfig, UserConfig};
use crate::password::Scratch;
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
}

/// What every password check in the process shares, whatever policy its
/// session started with: a bound on concurrent checks (each costs ~19 MiB and
/// ~30 ms of a core), argon2 working memory reused from check to check (see
/// `password::Scratch`), and the dummy hash unknown users are checked against.
/// Process-wide so that a reload allocates none of it again: per-policy copies
/// left freed 19 MiB blocks in malloc arenas at every SIGHUP, and RSS grew by
/// about that much per reload under the soak with glibc's default tuning.
struct Verifier {
    permits: Semaphore,
    /// A short-held `std` lock, taken on the blocking thread, never across an `.await`.
    scratch: std::sync::Mutex<Vec<Scratch>>,
    max_scratch: usize,
    dummy: PasswordHash,
}

static VERIFIER: std::sync::OnceLock<Verifier> = std::sync::OnceLock::new();

fn verifier() -> Result<&'static Verifier, String> {
    if let Some(v) = VERIFIER.get() {
        return Ok(v);
    }
    let dummy = PasswordHash::Argon2(hash_password("postern-dummy-password-for-unknown-users")?);
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    Ok(VERIFIER.get_or_init(|| Verifier {
        permits: Semaphore::new(cores),
        scratch: std::sync::Mutex::new(Vec::new()),
        max_scratch: cores,
        dummy,
    }))
}

/// Outcome of a password check.
#[derive(Debug, Clone)]
pub enum Verdict {
    Ok(Arc<User>),
    /// Unknown user or wrong password: the same to the client.
    Denied,
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
        verifier()?;
        let cache_ttl = config.server.auth_cache_ttl.0;
        let cache = match previous {
            Some(old) => old.cache.clone(),
            None => Arc::new(AuthCache::new()?),
        };
        let table = Users {
            users,
            cache,
            cache_ttl,
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
    /// successes, else on a blocking thread (one of a bounded number at once).
    pub async fn verify(self: &Arc<Self>, username: &str, password: &str) -> (Verdict, CacheUse) {
        let ttl = self.cache_ttl;
        let cache_use = if ttl.is_zero() {
            CacheUse::Off
        } else {
            CacheUse::Miss
        };
        let Ok(v) = verifier() else {
            return (Verdict::Denied, cache_use);
        };
        let user = self.get(username).filter(|u| u.hash.is_some()).cloned();
        let hash = match user.as_ref().and_then(|u| u.hash.clone()) {
            Some(h) => h,
            // Unknown users, and users who may only send from their networks, cost the same.
            None => v.dummy.clone(),
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
        let Ok(_permit) = v.permits.acquire().await else {
            return (Verdict::Denied, cache_use);
        };
        let owned = crate::secret::SecretString::from(password);
        let checked = hash.clone();
        let ok = tokio::task::spawn_blocking(move || {
            let mut scratch = v.take_scratch();
            let ok = checked.verify_with(owned.expose(), &mut scratch);
            v.give_scratch(scratch);
            ok
        })
        .await
        .unwrap_or(false);
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

impl Verifier {
    fn take_scratch(&self) -> Scratch {
        self.scratch
            .lock()
            .map(|mut free| free.pop().unwrap_or_default())
            .unwrap_or_default()
    }

    fn give_scratch(&self, scratch: Scratch) {
        // Kept for at most as many checks as may run at once; a blocking check
        // that outlived its session (and so its permit) may leave one more,
        // which is dropped here.
        if let Ok(mut free) = self.scratch.lock()
            && free.len() < self.max_scratch
        {
            free.push(scratch);
        }
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
