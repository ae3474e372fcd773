//! What `postern check` prints: listeners, upstreams, users with their
//! networks and the limits the server will enforce for them, and warnings.
//!
//! The enforced limits are computed as the session computes them
//! (`session/mail.rs` with `Upstream::effective_max_size`): a user's
//! `[user.limits]` over `[limits]`, capped by its upstream's
//! `max_message_size` and `max_recipients`. An SMTP provider's advertised
//! SIZE can lower the size further at run time; `check` does not connect, so
//! it says so instead.

use std::fmt::Write as _;

use super::*;

/// The limits a user's transactions get.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EffectiveLimits {
    /// SIZE for this user's transactions, before any provider-advertised SIZE.
    pub max_message_size: u64,
    pub max_recipients: u32,
    pub messages_per_minute: u32,
    pub recipients_per_hour: u32,
    pub max_connections_per_user: u32,
}

/// `8388608` → `8 MiB`, `1500000` → `1500000 bytes`.
pub fn human_size(n: u64) -> String {
    for (unit, m) in [("GiB", 1u64 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)] {
        if n >= m && n.is_multiple_of(m) {
            return format!("{} {unit}", n / m);
        }
    }
    format!("{n} bytes")
}

impl Config {
    /// The limits enforced for `user`'s transactions.
    pub fn effective_limits(&self, user: &UserConfig) -> EffectiveLimits {
        let l = self.user_limits(user);
        let up = self.user_upstream(user);
        let max_message_size = up
            .and_then(|u| u.max_message_size)
            .map_or(l.max_message_size, |cap| cap.0.min(l.max_message_size));
        let max_recipients = up
            .and_then(|u| u.max_recipients)
            .map_or(l.max_recipients, |cap| cap.min(l.max_recipients));
        EffectiveLimits {
            max_message_size,
            max_recipients,
            messages_per_minute: l.messages_per_minute,
            recipients_per_hour: l.recipients_per_hour,
            max_connections_per_user: l.max_connections_per_user,
        }
    }

    /// The SIZE advertised at EHLO, before a user is known: `[limits]` capped by every upstream.
    pub fn advertised_size(&self) -> u64 {
        self.upstreams
            .iter()
            .filter_map(|u| u.max_message_size.map(|s| s.0))
            .chain([self.limits.max_message_size])
            .min()
            .unwrap_or(self.limits.max_message_size)
    }

    /// The text of `postern check`, ending with every warning (config
    /// warnings, secrets `run` would not find, directories it could not write).
    pub fn summary(&self) -> String {
        let mut out = String::new();
        let mut warnings = self.warnings.clone();
        let _ = writeln!(out, "{}: OK", self.source);
        let _ = writeln!(out, "server: hostname {}", self.server.hostname);
        for l in &self.listeners {
            let _ = writeln!(
                out,
                "listener {}: {} tls={:?} auth={:?} plaintext_auth={}{}",
                l.name.get_ref(),
                l.addr.get_ref(),
                l.tls.get_ref(),
                l.auth,
                l.plaintext_auth_allowed(),
                if l.proxy_protocol.as_ref().is_some_and(|p| *p.get_ref()) {
                    format!(
                        " proxy_protocol from [{}]",
                        l.proxy_from
                            .iter()
                            .map(ToString::to_string)
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                } else {
                    String::new()
                }
            );
        }
        if let Some(t) = &self.tls {
            let _ = writeln!(
                out,
                "tls: cert {} key {}",
                t.cert.get_ref().display(),
                t.key.get_ref().display()
            );
        }
        if let Some(m) = &self.metrics {
            let _ = writeln!(out, "metrics: http://{}/metrics", m.addr);
        }
        for u in &self.upstreams {
            self.upstream_summary(u, &mut out, &mut warnings);
        }
        for u in &self.users {
            let up = self.user_upstream(u).map_or("?", UpstreamConfig::name);
            let networks = u
                .networks
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ");
            let _ = writeln!(
                out,
                "user {}: upstream {} auth={} networks=[{}] senders=[{}] rewrite_sender={}",
                u.name(),
                up,
                if u.password_hash.is_some() {
                    "password"
                } else {
                    "none"
                },
                networks,
                u.allowed_senders
                    .iter()
                    .map(|s| s.get_ref().as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
                u.rewrite_sender
                    .as_ref()
                    .map_or("-", |s| s.get_ref().as_str()),
            );
            let e = self.effective_limits(u);
            let smtp = self
                .user_upstream(u)
                .is_some_and(|x| *x.kind.get_ref() == UpstreamKind::Smtp);
            let _ = writeln!(
                out,
                "  limits (enforced): max_message_size={} ({}){} max_recipients={} messages_per_minute={} recipients_per_hour={} max_connections_per_user={}",
                e.max_message_size,
                human_size(e.max_message_size),
                if smtp {
                    " or the provider's SIZE if smaller"
                } else {
                    ""
                },
                e.max_recipients,
                e.messages_per_minute,
                e.recipients_per_hour,
                e.max_connections_per_user,
            );
        }
        let l = &self.limits;
        let _ = writeln!(
            out,
            "limits: max_message_size={} max_recipients={} max_connections={} max_connections_per_ip={} idle_timeout={}s auth_failures_per_ip_per_minute={}",
            l.max_message_size,
            l.max_recipients,
            l.max_connections,
            l.max_connections_per_ip,
            l.idle_timeout.as_secs(),
            l.auth_failures_per_ip_per_minute,
        );
        let _ = writeln!(
            out,
            "EHLO SIZE before AUTH: {} ({})",
            self.advertised_size(),
            human_size(self.advertised_size())
        );
        warnings.extend(self.check_dirs(false).iter().map(ToString::to_string));
        for w in &warnings {
            let _ = writeln!(out, "warning: {w}");
        }
        out
    }

    fn upstream_summary(&self, u: &UpstreamConfig, out: &mut String, warnings: &mut Vec<String>) {
        match u.kind.get_ref() {
            UpstreamKind::Outbox => {
                let _ = writeln!(
                    out,
                    "upstream {}: outbox in {}",
                    u.name(),
                    u.dir
                        .as_ref()
                        .map(|d| d.get_ref().display().to_string())
                        .unwrap_or_default()
                );
            }
            UpstreamKind::Smtp => {
                let credential = match &u.oauth2 {
                    Some(o) if u.auth_mode().is_oauth() => format!(
                        "auth={:?} token from {} (grant {:?}, client secret from {})",
                        u.auth_mode(),
                        o.token_url.get_ref(),
                        o.grant.get_ref(),
                        o.client_secret()
                            .as_ref()
                            .map_or("nowhere".to_owned(), ToString::to_string),
                    ),
                    _ => format!(
                        "password from {}",
                        u.secret()
                            .as_ref()
                            .map_or("nowhere".to_owned(), ToString::to_string)
                    ),
                };
                let _ = writeln!(
                    out,
                    "upstream {}: smtp {} tls={:?} user={} {credential}",
                    u.name(),
                    u.addr.as_ref().map_or("", |a| a.get_ref().as_str()),
                    u.tls_mode(),
                    u.username
                        .as_ref()
                        .map_or("(none)", |s| s.get_ref().as_str()),
                );
                let _ = writeln!(
                    out,
                    "  pool={} max_connections={} pool_wait={}s idle_timeout={}s health_check_interval={}s",
                    u.pool.unwrap_or(true),
                    u.max_connections
                        .unwrap_or(DEFAULT_UPSTREAM_MAX_CONNECTIONS),
                    u.pool_wait.map_or(DEFAULT_POOL_WAIT, |s| s.0).as_secs(),
                    u.idle_timeout
                        .map_or(DEFAULT_UPSTREAM_IDLE_TIMEOUT, |s| s.0)
                        .as_secs(),
                    u.health_check_interval
                        .map_or(DEFAULT_HEALTH_CHECK_INTERVAL, |s| s.0)
                        .as_secs(),
                );
                let secret = match &u.oauth2 {
                    Some(o) if u.auth_mode().is_oauth() => o.client_secret(),
                    _ => u.secret(),
                };
                for a in &u.account {
                    let _ = writeln!(
                        out,
                        "  account {}: password from {}",
                        a.username.get_ref(),
                        a.secret()
                            .as_ref()
                            .map_or("nowhere".to_owned(), ToString::to_string)
                    );
                    if let Some(Err(e)) = a.secret().map(|s| s.resolve()) {
                        warnings.push(format!(
                            "upstream {} account {}: {e} (needed by `postern run`)",
                            u.name(),
                            a.username.get_ref()
                        ));
                    }
                }
                if let Some(Err(e)) = secret.map(|s| s.resolve()) {
                    warnings.push(format!(
                        "upstream {}: {e} (needed by `postern run`)",
                        u.name()
                    ));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_well() {
        assert_eq!(human_size(8 << 20), "8 MiB");
        assert_eq!(human_size(1 << 10), "1 KiB");
        assert_eq!(human_size(1_500_000), "1500000 bytes");
    }
}
