//! `[spool]` and the delivery keys of `[[upstream]]` (`delivery`, `fallback`,
//! `max_upstream_connections_per_user`, `messages_per_day`,
//! `recipients_per_day`): their serde shapes, defaults and validation.
//!
//! Kept apart from the rest of the schema so the spool's keys live in one
//! place; `config.rs` only names them.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::validate::Validator;
use super::{ByteSize, Seconds, UpstreamKind};

pub const DEFAULT_SPOOL_MAX_SIZE: u64 = 1 << 30;
pub const DEFAULT_SPOOL_MAX_AGE: Duration = Duration::from_secs(5 * 24 * 3600);
pub const DEFAULT_RETRY_INITIAL: Duration = Duration::from_secs(60);
pub const DEFAULT_RETRY_MAX: Duration = Duration::from_secs(3600);

/// How an upstream's mail is delivered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Delivery {
    /// The device hears the provider's verdict (no local queue).
    #[default]
    Relay,
    /// 250 once the message is durably in the spool; delivered in the background.
    Spool,
    /// Relay; when the provider cannot take it now, spool it and say 250.
    Fallback,
}

impl Delivery {
    /// Whether this mode keeps messages in the spool.
    pub fn uses_spool(self) -> bool {
        !matches!(self, Delivery::Relay)
    }
}

/// `[spool]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpoolConfig {
    /// The spool directory; created if missing.
    pub dir: Spanned<PathBuf>,
    /// Over this many bytes queued, new messages get 452 4.3.1.
    pub max_size: Option<ByteSize>,
    /// Undelivered this long: dead letter.
    pub max_age: Option<Seconds>,
    /// First retry delay; doubles per attempt, with jitter, up to `retry_max`.
    pub retry_initial: Option<Seconds>,
    pub retry_max: Option<Seconds>,
    /// A notice for each dead letter goes to this address (never to the sender).
    pub notify: Option<Spanned<String>>,
}

/// `[spool]` with every default filled in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpoolSettings {
    pub dir: PathBuf,
    pub max_size: u64,
    pub max_age: Duration,
    pub retry_initial: Duration,
    pub retry_max: Duration,
    pub notify: Option<String>,
}

impl SpoolConfig {
    pub fn settings(&self) -> SpoolSettings {
        SpoolSettings {
            dir: self.dir.get_ref().clone(),
            max_size: self.max_size.map_or(DEFAULT_SPOOL_MAX_SIZE, |s| s.0),
            max_age: self.max_age.map_or(DEFAULT_SPOOL_MAX_AGE, |s| s.0),
            retry_initial: self.retry_initial.map_or(DEFAULT_RETRY_INITIAL, |s| s.0),
            retry_max: self.retry_max.map_or(DEFAULT_RETRY_MAX, |s| s.0),
            notify: self.notify.as_ref().map(|n| n.get_ref().clone()),
        }
    }
}

impl Validator<'_> {
    /// The delivery keys of every upstream and `[spool]` together: a spooling
    /// upstream needs `[spool]`, only SMTP upstreams spool, fallbacks exist.
    pub(super) fn spool(&mut self) {
        if let Some(s) = self.config.spool.clone() {
            let at = s.dir.span();
            if s.dir.get_ref().as_os_str().is_empty() {
                self.err(&at, "spool.dir", "must not be empty");
            }
            let set = s.settings();
            for (key, d) in [
                ("max_age", set.max_age),
                ("retry_initial", set.retry_initial),
                ("retry_max", set.retry_max),
            ] {
                if d.is_zero() {
                    self.err(&at, format!("spool.{key}"), "must be longer than 0s");
                }
            }
            if set.retry_max < set.retry_initial {
                self.err(
                    &at,
                    "spool.retry_max",
                    "must not be shorter than retry_initial",
                );
            }
            if set.max_size == 0 {
                self.err(&at, "spool.max_size", "must be at least 1");
            }
            if let Some(n) = &s.notify
                && !n.get_ref().contains('@')
            {
                self.err(n.span(), "spool.notify", "must be an e-mail address");
            }
        }
        let upstreams = self.config.upstreams.clone();
        let has_spool = self.config.spool.is_some();
        for u in &upstreams {
            let delivery = u.delivery_mode();
            let span = u.delivery.as_ref().map_or(u.name.span(), |d| d.span());
            if delivery.uses_spool() {
                if *u.kind.get_ref() != UpstreamKind::Smtp {
                    self.err(
                        &span,
                        "upstream.delivery",
                        format!(
                            "upstream {:?} is an outbox; delivery applies only to kind = \"smtp\"",
                            u.name()
                        ),
                    );
                } else if !has_spool {
                    self.err(
                        &span,
                        "upstream.delivery",
                        format!(
                            "upstream {:?} has delivery = {:?} but there is no [spool] with dir",
                            u.name(),
                            if delivery == Delivery::Spool {
                                "spool"
                            } else {
                                "fallback"
                            }
                        ),
                    );
                }
            }
            for f in &u.fallback {
                let other = upstreams.iter().find(|o| o.name() == f.get_ref());
                match other {
                    None => self.err(
                        f.span(),
                        "upstream.fallback",
                        format!("no upstream named {:?}", f.get_ref()),
                    ),
                    Some(o) if o.name() == u.name() || *o.kind.get_ref() != UpstreamKind::Smtp => {
                        self.err(
                            f.span(),
                            "upstream.fallback",
                            format!(
                                "{:?} cannot be a fallback of {:?}: it must be another smtp upstream",
                                f.get_ref(),
                                u.name()
                            ),
                        )
                    }
                    Some(_) => {}
                }
            }
            if u.max_upstream_connections_per_user == Some(0) {
                self.err(
                    u.name.span(),
                    "upstream.max_upstream_connections_per_user",
                    "must be at least 1",
                );
            }
        }
    }
}

impl super::UpstreamConfig {
    /// `delivery`, defaulting to relay.
    pub fn delivery_mode(&self) -> Delivery {
        self.delivery
            .as_ref()
            .map_or(Delivery::Relay, |d| *d.get_ref())
    }
}

/// `max_upstream_connections_per_user`: given, or half the upstream's
/// `max_connections`, at least 1. Also the delivery workers' share.
pub fn fair_share(u: &super::UpstreamConfig) -> u32 {
    u.max_upstream_connections_per_user.unwrap_or_else(|| {
        (u.max_connections
            .unwrap_or(super::DEFAULT_UPSTREAM_MAX_CONNECTIONS)
            / 2)
        .max(1)
    })
}
