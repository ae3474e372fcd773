//! The label sets of the metrics, and the series created at 0 from the config
//! (`Metrics::prepare`).
//!
//! Label sets are bounded: listener, upstream and user names come from the
//! config; results and reasons are fixed words. Nothing is labelled by client
//! address, sender or recipient.

use super::Metrics;
use crate::config::{Config, TlsMode, UpstreamKind};

/// `mechanism` words of `postern_auth_attempts_total`.
pub const AUTH_MECHANISMS: &[&str] = &["plain", "login", "other"];
/// `result` words of `postern_auth_attempts_total`.
pub const AUTH_RESULTS: &[&str] = &["ok", "fail", "cancelled", "throttled", "busy"];
/// `result` words of `postern_auth_cache_total`.
pub const AUTH_CACHE_RESULTS: &[&str] = &["hit", "miss"];
/// `result` words of `postern_tls_handshakes_total`.
pub const TLS_RESULTS: &[&str] = &["ok", "error", "timeout"];
/// `version` words of `postern_tls_sessions_total` (rustls speaks only these).
pub const TLS_VERSIONS: &[&str] = &["TLSv1.2", "TLSv1.3"];
/// `reason` words of `postern_connections_rejected_total` on every listener.
pub const REJECT_REASONS: &[&str] = &["max_connections", "connections_per_ip"];
/// More `reason` words on listeners with `proxy_protocol`.
pub const PROXY_REJECT_REASONS: &[&str] = &["proxy_source", "proxy_header"];
/// `command` words of the upstream reply and latency families.
pub const UPSTREAM_COMMANDS: &[&str] = &[
    "EHLO", "HELO", "STARTTLS", "AUTH", "MAIL", "RCPT", "DATA", "DATA_END", "BDAT", "RSET",
];
/// `class` words of `postern_upstream_replies_total`.
pub const REPLY_CLASSES: &[&str] = &["2xx", "3xx", "4xx", "5xx"];
/// `result` words of `postern_config_reloads_total`.
pub const RELOAD_RESULTS: &[&str] = &["ok", "error"];
/// Limits that belong to a user (`postern_limit_hits_total{user=...}`).
pub const USER_LIMITS: &[&str] = &[
    "connections_per_user",
    "message_size",
    "messages_per_minute",
    "recipients_per_hour",
    "max_recipients",
];
/// Limits of the whole server or of a client address (`user="-"`).
pub const SERVER_LIMITS: &[&str] = &["max_connections", "connections_per_ip", "auth_failures"];
/// The limit that belongs to an upstream (its pool's cap), counted per user.
pub const UPSTREAM_LIMIT: &str = "upstream_connections";
/// An upstream's daily quotas (relay mode refuses over them), counted per user.
pub const UPSTREAM_QUOTAS: &[&str] = &["messages_per_day", "recipients_per_day"];
/// The label value where a label does not apply (no user, no upstream).
pub const NONE: &str = "-";

impl Metrics {
    /// Creates, at 0, every series whose labels `config` determines: per
    /// listener, user and upstream, and every fixed word. Run at start and at
    /// each reload (new users and upstreams get their series; old ones stay).
    pub fn prepare(&self, config: &Config) {
        for l in &config.listeners {
            let name = l.name.get_ref().as_str();
            self.connections_opened.with_label_values(&[name]);
            self.connections_active.with_label_values(&[name]);
            let proxy = l.proxy_protocol.as_ref().is_some_and(|p| *p.get_ref());
            let reasons = REJECT_REASONS
                .iter()
                .chain(proxy.then_some(PROXY_REJECT_REASONS).into_iter().flatten());
            for reason in reasons {
                self.connections_rejected.with_label_values(&[name, reason]);
            }
            if *l.tls.get_ref() != TlsMode::None {
                for result in TLS_RESULTS {
                    self.tls_handshakes.with_label_values(&[name, result]);
                }
                for version in TLS_VERSIONS {
                    self.tls_versions.with_label_values(&[name, version]);
                }
            }
        }
        for mechanism in AUTH_MECHANISMS {
            for result in AUTH_RESULTS {
                self.auth_attempts.with_label_values(&[mechanism, result]);
            }
        }
        for result in AUTH_CACHE_RESULTS {
            self.auth_cache.with_label_values(&[result]);
        }
        for result in RELOAD_RESULTS {
            self.config_reloads.with_label_values(&[result]);
            self.tls_certificate_reloads.with_label_values(&[result]);
        }
        for limit in SERVER_LIMITS {
            self.limit_hits.with_label_values(&[limit, NONE, NONE]);
        }
        self.messages
            .with_label_values(&[NONE, crate::refusal::NO_USER_RESULT]);
        for u in &config.users {
            let user = u.name();
            for result in crate::refusal::MESSAGE_RESULTS {
                self.messages.with_label_values(&[user, result]);
            }
            for result in crate::refusal::RECIPIENT_RESULTS {
                self.recipients.with_label_values(&[user, result]);
            }
            self.message_bytes.with_label_values(&[user]);
            for limit in USER_LIMITS {
                self.limit_hits.with_label_values(&[limit, user, NONE]);
            }
            if let Some(up) = config.user_upstream(u)
                && *up.kind.get_ref() == UpstreamKind::Smtp
            {
                self.limit_hits
                    .with_label_values(&[UPSTREAM_LIMIT, user, up.name()]);
                let quotas = [up.messages_per_day, up.recipients_per_day];
                for (limit, n) in UPSTREAM_QUOTAS.iter().zip(quotas) {
                    if n.is_some_and(|n| n > 0) {
                        self.limit_hits.with_label_values(&[limit, user, up.name()]);
                    }
                }
            }
        }
        for up in &config.upstreams {
            let name = up.name();
            self.relay_duration.with_label_values(&[name]);
            if *up.kind.get_ref() != UpstreamKind::Smtp {
                continue;
            }
            self.upstream_connections_opened.with_label_values(&[name]);
            self.upstream_connections_active.with_label_values(&[name]);
            self.upstream_connections_idle.with_label_values(&[name]);
            for stage in crate::upstream::UpstreamError::CONNECT_STAGES {
                self.upstream_connections_failed
                    .with_label_values(&[name, stage]);
                self.upstream_health_checks
                    .with_label_values(&[name, stage]);
            }
            self.upstream_health_checks.with_label_values(&[name, "ok"]);
            // At 0 for every SMTP upstream, so a dashboard over it has data
            // before the first fetch (and stays 0 without OAuth2).
            for result in ["ok", "error"] {
                self.oauth2_token_fetches.with_label_values(&[name, result]);
            }
            for command in UPSTREAM_COMMANDS {
                self.upstream_command_duration
                    .with_label_values(&[name, command]);
                for class in REPLY_CLASSES {
                    self.upstream_replies
                        .with_label_values(&[name, command, class]);
                }
            }
            self.upstream_up.with_label_values(&[name]);
            self.upstream_last_auth_success.with_label_values(&[name]);
            self.upstream_connection_setup_duration
                .with_label_values(&[name]);
            self.upstream_pool_max.with_label_values(&[name]);
            self.upstream_pool_in_use.with_label_values(&[name]);
            for f in &up.fallback {
                self.upstream_failovers
                    .with_label_values(&[name, f.get_ref()]);
            }
            self.upstream_pool_waiters.with_label_values(&[name]);
            self.upstream_pool_wait_duration.with_label_values(&[name]);
        }
    }
}
