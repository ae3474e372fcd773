//! A cache of recent successful password checks, so a device that opens a new
//! session (STARTTLS, AUTH, one message) every minute pays the argon2 check
//! (~30 ms of a core, 19 MiB) once per `[server] auth_cache_ttl`, not once
//! per session. The same idea as Dovecot's `auth_cache`; the safety argument
//! is in docs/architecture.md ("The verified-credential cache").
//!
//! What is kept, per user name: an HMAC-SHA256 tag of (user name, the stored
//! hash string, password) under a key drawn at random when the cache is made
//! (never written anywhere), the stored hash string itself (so a reload can
//! drop entries whose hash changed), and when the check succeeded. Never the
//! password. Only successes are remembered; a password that does not match a
//! remembered tag is checked with argon2 as if there were no cache, so a wrong
//! password costs what it did before and the AUTH-failure throttle sees it.
//!
//! Bounded: one entry per user name; a success can only be for a configured
//! user, reloads drop entries of removed users, and `MAX_ENTRIES` caps the
//! map whatever happens (expired entries go first, then the oldest).
//!
//! # Concurrency
//! One `std` mutex around the map, held for a lookup or an insert (no
//! `.await`, no hashing under it beyond the map's own).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ring::hmac;
use tokio::time::Instant;

/// The most entries kept, whatever the number of users.
pub const MAX_ENTRIES: usize = 10_000;

/// Recent successful verifications; see the module comment.
pub struct AuthCache {
    key: hmac::Key,
    entries: Mutex<HashMap<Arc<str>, Entry>>,
    max_entries: usize,
}

struct Entry {
    /// The stored hash the password was checked against.
    hash: Box<str>,
    tag: hmac::Tag,
    verified: Instant,
}

impl AuthCache {
    /// An empty cache with a fresh random key.
    ///
    /// # Errors
    /// If the system's random number generator fails.
    pub fn new() -> Result<AuthCache, String> {
        AuthCache::with_capacity(MAX_ENTRIES)
    }

    /// `new`, holding at most `max_entries` (at least one).
    ///
    /// # Errors
    /// If the system's random number generator fails.
    pub fn with_capacity(max_entries: usize) -> Result<AuthCache, String> {
        let rng = ring::rand::SystemRandom::new();
        let key = hmac::Key::generate(hmac::HMAC_SHA256, &rng)
            .map_err(|_| "cannot draw a random key for the AUTH cache".to_owned())?;
        Ok(AuthCache {
            key,
            entries: Mutex::new(HashMap::new()),
            max_entries: max_entries.max(1),
        })
    }

    /// Every field length-prefixed, so no two (user, hash, password) triples
    /// feed the MAC the same bytes.
    fn tag(&self, user: &str, hash: &str, password: &str) -> hmac::Tag {
        let mut ctx = hmac::Context::with_key(&self.key);
        for field in [user, hash] {
            ctx.update(&(field.len() as u64).to_be_bytes());
            ctx.update(field.as_bytes());
        }
        ctx.update(password.as_bytes());
        ctx.sign()
    }

    /// Whether `password` was verified against `hash` for `user` less than
    /// `ttl` ago. An expired entry is dropped. `ttl` zero: never.
    pub fn hit(&self, user: &str, hash: &str, password: &str, ttl: Duration, now: Instant) -> bool {
        if ttl.is_zero() {
            return false;
        }
        let tag = self.tag(user, hash, password);
        let Ok(mut map) = self.entries.lock() else {
            return false;
        };
        let Some(entry) = map.get(user) else {
            return false;
        };
        if now.saturating_duration_since(entry.verified) >= ttl {
            map.remove(user);
            return false;
        }
        same_bytes(entry.tag.as_ref(), tag.as_ref()) && *entry.hash == *hash
    }

    /// Remembers that `password` matched `hash` for `user` (call only after a
    /// successful check). `ttl` zero: nothing is kept.
    pub fn remember(
        &self,
        user: &Arc<str>,
        hash: &str,
        password: &str,
        ttl: Duration,
        now: Instant,
    ) {
        if ttl.is_zero() {
            return;
        }
        let tag = self.tag(user, hash, password);
        let Ok(mut map) = self.entries.lock() else {
            return;
        };
        if map.len() >= self.max_entries && !map.contains_key(&**user) {
            map.retain(|_, e| now.saturating_duration_since(e.verified) < ttl);
            if map.len() >= self.max_entries
                && let Some(oldest) = map
                    .iter()
                    .min_by_key(|(_, e)| e.verified)
                    .map(|(name, _)| name.clone())
            {
                map.remove(&oldest);
            }
        }
        map.insert(
            user.clone(),
            Entry {
                hash: hash.into(),
                tag,
                verified: now,
            },
        );
    }

    /// Keeps only the entries for which `keep(user name, stored hash)` holds
    /// (a reload: entries of removed users and of changed hashes are dropped).
    pub fn retain(&self, keep: impl Fn(&str, &str) -> bool) {
        if let Ok(mut map) = self.entries.lock() {
            map.retain(|name, e| keep(name, &e.hash));
        }
    }

    /// Drops every entry.
    pub fn clear(&self) {
        if let Ok(mut map) = self.entries.lock() {
            map.clear();
        }
    }

    /// How many entries are held now.
    pub fn len(&self) -> usize {
        self.entries.lock().map_or(0, |m| m.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Compares two tags in time that depends only on their length.
fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len()
        && std::hint::black_box(a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y))) == 0
}

#[cfg(test)]
mod tests;
